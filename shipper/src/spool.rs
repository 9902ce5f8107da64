//! The disk spool: batches the backend could not take, kept in `tmpdir/spool/` until it can.
//!
//! # Layout
//! One file per batch, named `<sequence>.spool` with a 20-digit sequence number that only grows
//! (the next one is found from the files present at start). A file is written as `.<name>.tmp`,
//! fsynced, renamed to its final name and the folder fsynced, so a crash leaves either a whole
//! file or a temp file (removed at start). Its bytes:
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `PUYSPOOL` |
//! | 8 | 2 | format version, u16 little-endian (= 1) |
//! | 10 | 1 | flags: bit 0 set when the batch is the shipper's own self-metrics; bit 1 set when its points carry the host tags of the PuyPuy agent that sent them (`frames_listen`), so that none of this host's is added when they are sent |
//! | 11 | 1 | length B of the backend name |
//! | 12 | B | backend name that was configured when written (`InfluxDB`, `Carbon`, …) |
//! | 12+B | 4 | number of points, u32 LE |
//! | 16+B | 4 | payload length P, u32 LE |
//! | 20+B | 4 | CRC-32 (IEEE) of the payload, u32 LE |
//! | 24+B | P | payload: the points in the frame encoding (`common/src/frame.rs`), rates applied; the host's tags are added when they are sent |
//!
//! # Replay order
//! Oldest first, by sequence number. A file is deleted only after the backend accepted its points.
//! Points are stored backend-neutral, so after a `tsdtype` change they are re-encoded for the new
//! backend (logged once per file). A file whose magic, version, lengths or checksum do not match is
//! moved to `tmpdir/spool/corrupt/` and logged; replay goes on with the next file.
//!
//! # Bounds
//! At most `max_cache` files and `max_cache_bytes` bytes. When full, the oldest file is dropped
//! (default) or the new batch is (`cache_drop: newest`); the caller counts and logs the points.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use puypuy_common::frame;
use puypuy_common::Point;

use crate::tags::HostTagging;

const MAGIC: &[u8; 8] = b"PUYSPOOL";
const VERSION: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropPolicy {
    Oldest,
    Newest,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    bytes: u64,
    points: u64,
    own: bool,
}

pub struct Spool {
    dir: PathBuf,
    corrupt_dir: PathBuf,
    backend: String,
    entries: VecDeque<Entry>,
    next_seq: u64,
    total_bytes: u64,
    max_files: usize,
    max_bytes: u64,
    policy: DropPolicy,
    buf: Vec<u8>,
    /// Tests make writes fail as a full or read-only disk would.
    #[cfg(test)]
    pub(crate) fail_writes: bool,
}

/// What became of a batch handed to [`Spool::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Stored; older points were dropped to make room: `dropped_points` of producers,
    /// `dropped_own` of the shipper's self-metrics.
    Stored { dropped_points: u64, dropped_own: u64 },
    /// The spool is full and the policy is `newest`: this batch was not stored.
    Refused,
}

/// The oldest batch, read back.
pub struct Spooled {
    pub seq: u64,
    pub points: Vec<Point>,
    pub backend: String,
    pub own: bool,
    pub tagging: HostTagging,
}

const FLAG_OWN: u8 = 1;
const FLAG_CARRIED: u8 = 2;

fn name_of(seq: u64) -> String {
    format!("{seq:020}.spool")
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    pub fn open(dir: &Path, backend: &str, max_files: usize, max_bytes: u64, policy: DropPolicy) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                // Left by a crash in the middle of a write: never acknowledged, so never lost.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(seq) = name.strip_suffix(".spool").and_then(|s| s.parse::<u64>().ok()) else { continue };
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let (points, own) = read_header(&entry.path()).map(|h| (h.points, h.own)).unwrap_or((0, false));
            entries.push(Entry { seq, bytes, points, own });
        }
        entries.sort_by_key(|e| e.seq);
        let next_seq = entries.last().map(|e| e.seq + 1).unwrap_or(1);
        let total_bytes = entries.iter().map(|e| e.bytes).sum();
        Ok(Spool {
            dir: dir.to_path_buf(),
            corrupt_dir: dir.join("corrupt"),
            backend: backend.to_string(),
            entries: entries.into(),
            next_seq,
            total_bytes,
            max_files: max_files.max(1),
            max_bytes: max_bytes.max(1),
            policy,
            buf: Vec::new(),
            #[cfg(test)]
            fail_writes: false,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The backend recorded in files written from now on.
    pub fn set_backend(&mut self, backend: &str) {
        self.backend = backend.to_string();
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn points(&self) -> u64 {
        self.entries.iter().map(|e| e.points).sum()
    }

    /// Writes a batch durably (fsync of the file and the folder) before returning: its points,
    /// whether they are the shipper's own, and whose host tags they leave with.
    pub fn push(&mut self, points: &[Point], own: bool, tagging: HostTagging) -> io::Result<Pushed> {
        self.buf.clear();
        self.buf.extend_from_slice(MAGIC);
        self.buf.extend_from_slice(&VERSION.to_le_bytes());
        let carried = if tagging == HostTagging::Carried { FLAG_CARRIED } else { 0 };
        self.buf.push(if own { FLAG_OWN } else { 0 } | carried);
        let backend = &self.backend.as_bytes()[..self.backend.len().min(255)];
        self.buf.push(backend.len() as u8);
        self.buf.extend_from_slice(backend);
        self.buf.extend_from_slice(&(points.len() as u32).to_le_bytes());
        let header_len = self.buf.len();
        self.buf.extend_from_slice(&[0; 8]);
        frame::encode_points(points, &mut self.buf);
        let payload_len = self.buf.len() - header_len - 8;
        let crc = crc32fast::hash(&self.buf[header_len + 8..]);
        self.buf[header_len..header_len + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.buf[header_len + 4..header_len + 8].copy_from_slice(&crc.to_le_bytes());
        let size = self.buf.len() as u64;

        let (mut dropped_points, mut dropped_own) = (0, 0);
        while !self.entries.is_empty()
            && (self.entries.len() >= self.max_files || self.total_bytes + size > self.max_bytes)
        {
            match self.policy {
                DropPolicy::Newest => return Ok(Pushed::Refused),
                DropPolicy::Oldest => match self.drop_oldest() {
                    (n, true) => dropped_own += n,
                    (n, false) => dropped_points += n,
                },
            }
        }
        let seq = self.next_seq;
        let tmp = self.dir.join(format!(".{}.tmp", name_of(seq)));
        let result = (|| {
            #[cfg(test)]
            if self.fail_writes {
                return Err(io::Error::other("the spool is not writable (test)"));
            }
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            f.write_all(&self.buf)?;
            f.sync_all()?;
            fs::rename(&tmp, self.dir.join(name_of(seq)))?;
            fsync_dir(&self.dir)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.next_seq += 1;
        self.entries.push_back(Entry { seq, bytes: size, points: points.len() as u64, own });
        self.total_bytes += size;
        Ok(Pushed::Stored { dropped_points, dropped_own })
    }

    /// Removes the oldest file; returns how many points it held and whether they were the
    /// shipper's own.
    fn drop_oldest(&mut self) -> (u64, bool) {
        let Some(e) = self.entries.pop_front() else { return (0, false) };
        let _ = fs::remove_file(self.dir.join(name_of(e.seq)));
        self.total_bytes = self.total_bytes.saturating_sub(e.bytes);
        (e.points, e.own)
    }

    /// Reads the oldest valid batch; corrupt files met on the way are moved aside and logged.
    pub fn oldest(&mut self) -> Option<Spooled> {
        while let Some(e) = self.entries.front() {
            let seq = e.seq;
            let path = self.dir.join(name_of(seq));
            match read_file(&path) {
                Ok((h, points)) => {
                    return Some(Spooled { seq, points, backend: h.backend, own: h.own, tagging: h.tagging })
                }
                Err(why) => {
                    let _ = fs::create_dir_all(&self.corrupt_dir);
                    let aside = self.corrupt_dir.join(name_of(seq));
                    let moved = fs::rename(&path, &aside);
                    log::error!(
                        "spool file {} is unreadable ({why}); {}",
                        path.display(),
                        match moved {
                            Ok(()) => format!("moved to {}", aside.display()),
                            Err(e) => format!("could not move it aside ({e}), skipped"),
                        }
                    );
                    if let Some(e) = self.entries.pop_front() {
                        self.total_bytes = self.total_bytes.saturating_sub(e.bytes);
                    }
                }
            }
        }
        None
    }

    /// Deletes a file once the backend accepted its points.
    pub fn remove(&mut self, seq: u64) {
        if let Some(i) = self.entries.iter().position(|e| e.seq == seq) {
            if let Some(e) = self.entries.remove(i) {
                self.total_bytes = self.total_bytes.saturating_sub(e.bytes);
            }
        }
        if let Err(e) = fs::remove_file(self.dir.join(name_of(seq))) {
            log::warn!("cannot delete delivered spool file {}: {e}", name_of(seq));
        }
    }
}

struct Header {
    own: bool,
    tagging: HostTagging,
    backend: String,
    points: u64,
    payload_len: usize,
    crc: u32,
    len: usize,
}

fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err("not a spool file (bad magic)".into());
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(format!("unknown spool format version {version}"));
    }
    let own = bytes[10] & FLAG_OWN != 0;
    let tagging = if bytes[10] & FLAG_CARRIED != 0 { HostTagging::Carried } else { HostTagging::ThisHost };
    let b = bytes[11] as usize;
    let rest = bytes.get(12..12 + b + 12).ok_or("header cut short")?;
    let backend = String::from_utf8_lossy(&rest[..b]).into_owned();
    let u32_at = |i: usize| u32::from_le_bytes([rest[b + i], rest[b + i + 1], rest[b + i + 2], rest[b + i + 3]]);
    Ok(Header {
        own,
        tagging,
        backend,
        points: u64::from(u32_at(0)),
        payload_len: u32_at(4) as usize,
        crc: u32_at(8),
        len: 12 + b + 12,
    })
}

fn read_header(path: &Path) -> Result<Header, String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 12 + 255 + 12];
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    parse_header(&head[..got])
}

fn read_file(path: &Path) -> Result<(Header, Vec<Point>), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let h = parse_header(&bytes)?;
    let payload = bytes.get(h.len..).ok_or("payload missing")?;
    if payload.len() != h.payload_len {
        return Err(format!("payload is {} bytes where the header says {} (truncated?)", payload.len(), h.payload_len));
    }
    if crc32fast::hash(payload) != h.crc {
        return Err("checksum mismatch".into());
    }
    let points = frame::decode_points(payload).map_err(|e| e.to_string())?;
    if points.len() as u64 != h.points {
        return Err("point count does not match the header".into());
    }
    Ok((h, points))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, tag: &str) -> Vec<Point> {
        (0..n).map(|i| Point::int("m", 1_700_000_000 + i as u64, i as i64, "t").with_tag("b", tag)).collect()
    }

    #[test]
    fn replays_oldest_first_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("spool test");
        let mut s = Spool::open(dir.path(), "InfluxDB", 10, 1 << 20, DropPolicy::Oldest).expect("spool test");
        s.push(&batch(2, "a"), false, HostTagging::ThisHost).expect("spool test");
        s.push(&batch(3, "b"), false, HostTagging::ThisHost).expect("spool test");
        drop(s);
        let mut s = Spool::open(dir.path(), "InfluxDB", 10, 1 << 20, DropPolicy::Oldest).expect("spool test");
        assert_eq!((s.len(), s.points()), (2, 5));
        let first = s.oldest().expect("spool test");
        assert_eq!(first.points, batch(2, "a"));
        assert_eq!(first.backend, "InfluxDB");
        s.remove(first.seq);
        assert_eq!(s.oldest().expect("spool test").points, batch(3, "b"));
        s.push(&batch(1, "c"), false, HostTagging::ThisHost).expect("spool test");
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("spool test")
            .map(|e| e.expect("spool test").file_name().into_string().expect("spool test"))
            .collect();
        assert!(names.contains(&"00000000000000000003.spool".to_string()), "{names:?}");
    }

    /// A relay's batch from a PuyPuy agent must still leave with the agent's host tags only after a
    /// restart: the flag is in the file (flags bit 1), beside the self-metrics bit.
    #[test]
    fn whose_host_tags_survives_reopening() {
        let dir = tempfile::tempdir().expect("spool test");
        let mut s = Spool::open(dir.path(), "InfluxDB", 10, 1 << 20, DropPolicy::Oldest).expect("spool test");
        s.push(&batch(1, "a"), false, HostTagging::Carried).expect("spool test");
        s.push(&batch(1, "b"), true, HostTagging::ThisHost).expect("spool test");
        s.push(&batch(1, "c"), true, HostTagging::Carried).expect("spool test");
        let flags = |seq: u64| fs::read(dir.path().join(name_of(seq))).expect("spool test")[10];
        assert_eq!((flags(1), flags(2), flags(3)), (2, 1, 3));
        drop(s);
        let mut s = Spool::open(dir.path(), "InfluxDB", 10, 1 << 20, DropPolicy::Oldest).expect("spool test");
        let mut read = Vec::new();
        while let Some(b) = s.oldest() {
            read.push((b.points[0].tags[0].1.clone(), b.own, b.tagging));
            s.remove(b.seq);
        }
        assert_eq!(
            read,
            [
                ("a".to_string(), false, HostTagging::Carried),
                ("b".to_string(), true, HostTagging::ThisHost),
                ("c".to_string(), true, HostTagging::Carried)
            ]
        );
    }

    #[test]
    fn full_spool_drops_the_oldest_or_refuses_the_newest() {
        let dir = tempfile::tempdir().expect("spool test");
        let mut s = Spool::open(&dir.path().join("o"), "Carbon", 2, 1 << 20, DropPolicy::Oldest).expect("spool test");
        assert_eq!(
            s.push(&batch(4, "a"), false, HostTagging::ThisHost).expect("spool test"),
            Pushed::Stored { dropped_points: 0, dropped_own: 0 }
        );
        s.push(&batch(5, "b"), true, HostTagging::ThisHost).expect("spool test");
        assert_eq!(
            s.push(&batch(6, "c"), false, HostTagging::ThisHost).expect("spool test"),
            Pushed::Stored { dropped_points: 4, dropped_own: 0 }
        );
        assert_eq!(
            s.push(&batch(1, "d"), false, HostTagging::ThisHost).expect("spool test"),
            Pushed::Stored { dropped_points: 0, dropped_own: 5 }
        );
        assert_eq!(s.oldest().expect("spool test").points, batch(6, "c"));
        let mut n = Spool::open(&dir.path().join("n"), "Carbon", 2, 1 << 20, DropPolicy::Newest).expect("spool test");
        n.push(&batch(4, "a"), false, HostTagging::ThisHost).expect("spool test");
        n.push(&batch(5, "b"), false, HostTagging::ThisHost).expect("spool test");
        assert_eq!(n.push(&batch(6, "c"), false, HostTagging::ThisHost).expect("spool test"), Pushed::Refused);
        assert_eq!(n.len(), 2);
    }

    #[test]
    fn byte_bound_applies_too() {
        let dir = tempfile::tempdir().expect("spool test");
        let mut s = Spool::open(dir.path(), "Carbon", 1000, 400, DropPolicy::Oldest).expect("spool test");
        for i in 0..10 {
            s.push(&batch(3, &i.to_string()), false, HostTagging::ThisHost).expect("spool test");
        }
        assert!(s.bytes() <= 400, "{}", s.bytes());
        assert!(s.len() < 10);
    }

    #[test]
    fn corrupt_and_truncated_files_are_moved_aside() {
        let dir = tempfile::tempdir().expect("spool test");
        let mut s = Spool::open(dir.path(), "InfluxDB", 10, 1 << 20, DropPolicy::Oldest).expect("spool test");
        s.push(&batch(2, "a"), false, HostTagging::ThisHost).expect("spool test");
        s.push(&batch(2, "b"), false, HostTagging::ThisHost).expect("spool test");
        s.push(&batch(2, "c"), false, HostTagging::ThisHost).expect("spool test");
        let first = dir.path().join(name_of(1));
        let mut bytes = fs::read(&first).expect("spool test");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&first, bytes).expect("spool test");
        let second = dir.path().join(name_of(2));
        let len = fs::metadata(&second).expect("spool test").len();
        OpenOptions::new().write(true).open(&second).expect("spool test").set_len(len - 5).expect("spool test");
        let mut s = Spool::open(dir.path(), "InfluxDB", 10, 1 << 20, DropPolicy::Oldest).expect("spool test");
        assert_eq!(s.oldest().expect("spool test").points, batch(2, "c"));
        assert!(dir.path().join("corrupt").join(name_of(1)).exists());
        assert!(dir.path().join("corrupt").join(name_of(2)).exists());
    }

    #[test]
    fn leftover_temp_files_are_removed_at_open() {
        let dir = tempfile::tempdir().expect("spool test");
        fs::write(dir.path().join(".00000000000000000009.spool.tmp"), b"partial").expect("spool test");
        let s = Spool::open(dir.path(), "InfluxDB", 10, 1 << 20, DropPolicy::Oldest).expect("spool test");
        assert!(s.is_empty());
        assert!(!dir.path().join(".00000000000000000009.spool.tmp").exists());
    }
}
