//! `tmpdir/rejected/`: points the backend refused as invalid. Resending them could not help, so
//! they are set aside where an operator can read them, with the server's answer, instead of being
//! retried forever or silently dropped.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use puypuy_common::Point;

use crate::tags::{HostTagging, HostTags};

/// The second line of a file of points that carry the host tags of the agent that sent them.
pub const CARRIED_NOTE: &str = "# host tags: the PuyPuy agent's, carried by the points (this host adds none)";

/// Rejected batches: `tmpdir/rejected/<time>-<n>.txt` holding the server's answer and the points as
/// InfluxDB line protocol (with their own tags, not the host's), at most `max_files` (the oldest
/// are deleted beyond). Points a PuyPuy agent forwarded carry its host tags among their own, and a
/// second comment line says so.
pub struct RejectedDir {
    dir: PathBuf,
    max_files: usize,
    counter: u64,
}

impl RejectedDir {
    pub fn new(dir: PathBuf, max_files: usize) -> RejectedDir {
        RejectedDir { dir, max_files, counter: 0 }
    }

    pub fn store(&mut self, points: &[Point], error: &str, tagging: HostTagging) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.counter += 1;
        let path = self.dir.join(format!("{now}-{}-{}.txt", std::process::id(), self.counter));
        let mut text = Vec::new();
        writeln!(text, "# {error}")?;
        if tagging == HostTagging::Carried {
            writeln!(text, "{CARRIED_NOTE}")?;
        }
        crate::backends::influxdb::encode(points, &HostTags::empty(), &mut text);
        fs::write(&path, text)?;
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?.flatten().map(|e| e.path()).collect();
        if files.len() > self.max_files {
            files.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
            for old in &files[..files.len() - self.max_files] {
                let _ = fs::remove_file(old);
            }
        }
        Ok(path)
    }
}
