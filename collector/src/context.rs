//! What a check gets to read: a proc and sys root (`/proc`, `/sys`, or a recorded snapshot in
//! tests), the cycle's timestamp, and a way to ask a filesystem's usage (statvfs, or a table in
//! tests).

use std::io;
use std::path::{Path, PathBuf};

use puypuy_common::Point;

/// Sizes in bytes of one mounted filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub used: u64,
    pub available: u64,
}

pub type StatFs = dyn Fn(&Path) -> io::Result<FsUsage> + Send + Sync;

pub struct Context<'a> {
    pub proc_root: &'a Path,
    pub sys_root: &'a Path,
    pub timestamp: u64,
    pub statfs: &'a StatFs,
    /// `[Open Files]` entries: metric suffix → pid file.
    pub pid_files: &'a [(String, PathBuf)],
}

impl Context<'_> {
    pub fn read_proc(&self, rel: &str) -> io::Result<String> {
        read_small(&self.proc_root.join(rel))
    }

    pub fn int(&self, name: impl Into<String>, value: i64) -> Point {
        Point::int(name, self.timestamp, value, "system")
    }

    pub fn float(&self, name: impl Into<String>, value: f64) -> Point {
        Point::float(name, self.timestamp, value, "system")
    }

    /// A counter: the shipper sends its per-second rate.
    pub fn counter(&self, name: impl Into<String>, value: i64) -> Point {
        Point::int(name, self.timestamp, value, "system").rate()
    }
}

/// statvfs(3) on a mount point: used = (blocks − free) × fragment size, available = blocks
/// available to unprivileged users × fragment size, as `df` shows them.
pub fn statvfs(path: &Path) -> io::Result<FsUsage> {
    let s = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    let frsize = s.fragment_size() as u64;
    Ok(FsUsage {
        used: (s.blocks() as u64).saturating_sub(s.blocks_free() as u64) * frsize,
        available: s.blocks_available() as u64 * frsize,
    })
}

/// Reads a /proc-like file whole in as few syscalls as possible. Those files report a size of 0,
/// so `fs::read_to_string` asks for their size and then reads 32, 32, 64, 128… bytes at a time:
/// eight syscalls for `/proc/stat`. Here it is one open, usually one read of up to 16 KiB (the
/// kernel fills it in one go) and the read that sees the end.
pub fn read_small(path: &Path) -> io::Result<String> {
    read_all(&mut std::fs::File::open(path)?)
}

/// Reads an open file from where it is to its end, as [`read_small`] does.
pub fn read_all(file: &mut std::fs::File) -> io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
