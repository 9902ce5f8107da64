//! What a check gets to read: a proc and sys root (`/proc`, `/sys`, or a recorded snapshot in
//! tests), the cycle's timestamp, a way to ask a filesystem's usage (statvfs, or a table in
//! tests), and the /proc files kept open from one cycle to the next ([`OpenFiles`]).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    /// The files read every cycle, kept open (the collector's loop); `None` opens each anew.
    pub files: Option<&'a OpenFiles>,
}

impl Context<'_> {
    pub fn read_proc(&self, rel: &str) -> io::Result<String> {
        let path = self.proc_root.join(rel);
        match self.files {
            Some(files) => files.read(&path),
            None => read_small(&path),
        }
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
    read_with(|buf, _| file.read(buf))
}

/// Reads to the end with `read(buffer, offset)`: one buffer of 16 KiB, doubled while it fills.
fn read_with(mut read: impl FnMut(&mut [u8], u64) -> io::Result<usize>) -> io::Result<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match read(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The /proc files the system checks read every cycle (`stat`, `meminfo`, `net/dev`…), kept open
/// from one cycle to the next: reading one again from offset 0 gives its content anew, and
/// saves the open and close of each (a path lookup, a file allocated and freed), a sixth of an
/// idle collector's CPU. Only files of a procfs are held (a recorded snapshot's regular files may
/// be replaced under their name, and are opened each time); the set is small and fixed by the
/// checks, and at most [`OpenFiles::MAX`] are held.
#[derive(Default)]
pub struct OpenFiles(Mutex<HashMap<PathBuf, File>>);

impl OpenFiles {
    pub const MAX: usize = 32;

    pub fn read(&self, path: &Path) -> io::Result<String> {
        let mut files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = files.get(path) {
            match read_all_at(file) {
                Ok(text) => return Ok(text),
                // Gone or broken (a module unloaded): open it anew below.
                Err(_) => {
                    files.remove(path);
                }
            }
        }
        let file = File::open(path)?;
        let text = read_all_at(&file)?;
        if files.len() < Self::MAX && on_procfs(&file) {
            files.insert(path.to_path_buf(), file);
        }
        Ok(text)
    }

    /// How many files are held open.
    pub fn held(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Whether `file` is on procfs (a file the kernel generates anew at each read).
pub(crate) fn on_procfs(file: &File) -> bool {
    use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};
    fstatfs(file).is_ok_and(|s| s.filesystem_type() == PROC_SUPER_MAGIC)
}

/// Reads a file from offset 0 to its end with positioned reads, as [`read_all`] does from where
/// it is.
fn read_all_at(file: &File) -> io::Result<String> {
    read_with(|buf, at| file.read_at(buf, at))
}

/// A context for tests: `/proc` read from `proc_root` and `/sys` from `sys_root`, no filesystem
/// usage (statfs fails), no pid files, each file opened anew.
#[cfg(test)]
pub(crate) fn test_context<'a>(proc_root: &'a Path, sys_root: &'a Path) -> Context<'a> {
    fn no_statfs(_: &Path) -> io::Result<FsUsage> {
        Err(io::Error::other("no statfs in this test"))
    }
    Context { proc_root, sys_root, timestamp: 1, statfs: &no_statfs, pid_files: &[], files: None }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A procfs file is held open and read anew each time; a regular file (a recorded snapshot)
    /// is opened each time, so that one replaced under its name is read as it is now.
    #[test]
    fn open_files_give_the_content_of_now() {
        let files = OpenFiles::default();
        // /proc/self/io counts the bytes this process read, these reads included: each read of the
        // held file must show a larger count than the one before.
        let io = Path::new("/proc/self/io");
        let rchar = |text: String| -> u64 {
            text.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|v| v.parse().ok()).expect("rchar")
        };
        let first = rchar(files.read(io).expect("read"));
        let second = rchar(files.read(io).expect("read"));
        assert_eq!(files.held(), 1);
        assert!(second > first, "{first} then {second}: the held file was not read anew");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stat");
        std::fs::write(&path, "first\n").expect("write");
        assert_eq!(files.read(&path).expect("read"), "first\n");
        let replacement = dir.path().join("stat.new");
        std::fs::write(&replacement, "second\n").expect("write");
        std::fs::rename(&replacement, &path).expect("rename");
        assert_eq!(files.read(&path).expect("read"), "second\n");
        assert_eq!(files.held(), 1);
    }
}
