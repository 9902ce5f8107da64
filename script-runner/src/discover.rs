//! Finding the scripts: every executable `check_*` in the scripts folder, read afresh each cycle so
//! that scripts added, removed or changed are picked up without a restart. Files not named
//! `check_*`, editor backups (`*~`, `*.swp`, `*.bak`) and files without an execute bit are ignored,
//! with one log line each saying why (once per file, not once per cycle: again only if the file
//! goes away and comes back).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct Discovery {
    known: BTreeSet<String>,
    ignored: BTreeSet<String>,
    folder_missing_logged: bool,
}

fn is_backup(name: &str) -> bool {
    name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".bak")
}

impl Discovery {
    /// The scripts to run this cycle, sorted by name; what changed since the last scan is logged.
    pub fn scan(&mut self, folder: &Path) -> Vec<(String, PathBuf)> {
        let (found, notices) = self.scan_noting(folder);
        for notice in notices {
            match notice {
                Notice::Warn(line) => log::warn!("{line}"),
                Notice::Info(line) => log::info!("{line}"),
            }
        }
        found
    }

    /// [`Discovery::scan`] without the logging: the scripts, and the lines to log.
    fn scan_noting(&mut self, folder: &Path) -> (Vec<(String, PathBuf)>, Vec<Notice>) {
        let mut notices = Vec::new();
        let entries = match std::fs::read_dir(folder) {
            Ok(e) => {
                self.folder_missing_logged = false;
                e
            }
            Err(e) => {
                if !self.folder_missing_logged {
                    notices.push(Notice::Warn(format!(
                        "cannot read the scripts folder {}: {e}; no scripts run",
                        folder.display()
                    )));
                    self.folder_missing_logged = true;
                }
                return (Vec::new(), notices);
            }
        };
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        let mut seen_ignored = BTreeSet::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else { continue };
            // Hidden files (`.keep`, an editor's `.check_x.swp`) are nobody's script: no word.
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let reason = if !name.starts_with("check_") {
                Some("only files named check_* are run (rename it check_<name> to run it)")
            } else if is_backup(&name) {
                Some("an editor backup")
            } else {
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => None,
                    Ok(m) if m.is_file() => Some("not executable (chmod +x it to run it)"),
                    Ok(_) => Some("not a file"),
                    Err(_) => Some("a broken link"),
                }
            };
            match reason {
                Some(why) => {
                    if !self.ignored.contains(&name) {
                        notices.push(Notice::Info(format!("ignoring {}: {why}", path.display())));
                    }
                    seen_ignored.insert(name);
                }
                None => found.push((name, path)),
            }
        }
        self.ignored = seen_ignored;
        found.sort();
        let now: BTreeSet<String> = found.iter().map(|(n, _)| n.clone()).collect();
        for added in now.difference(&self.known) {
            notices.push(Notice::Info(format!("script {added} found; running it every cycle")));
        }
        for removed in self.known.difference(&now) {
            notices.push(Notice::Info(format!("script {removed} is gone; no longer running it")));
        }
        self.known = now;
        (found, notices)
    }
}

/// A line [`Discovery::scan`] logs.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    Warn(String),
    Info(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_executable_check_files_that_are_not_backups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        write("check_b", 0o755);
        write("check_a.sh", 0o700);
        write("check_c", 0o644);
        write("check_d~", 0o755);
        write("check_e.swp", 0o755);
        write("check_f.bak", 0o755);
        write("other", 0o755);
        std::fs::create_dir(dir.path().join("check_dir")).expect("mkdir");
        let mut d = Discovery::default();
        let names: Vec<String> = d.scan(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["check_a.sh", "check_b"]);
        write("check_g", 0o755);
        assert_eq!(d.scan(dir.path()).len(), 3);
    }

    #[test]
    fn a_file_without_the_check_prefix_is_reported_once_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        write("check_ok");
        write("disk_usage.sh");
        write(".keep");
        let mut d = Discovery::default();
        let (found, notices) = d.scan_noting(dir.path());
        assert_eq!(found.len(), 1);
        let ignored = format!(
            "ignoring {}: only files named check_* are run (rename it check_<name> to run it)",
            dir.path().join("disk_usage.sh").display()
        );
        assert!(notices.contains(&Notice::Info(ignored.clone())), "{notices:?}");
        assert!(!notices.iter().any(|n| format!("{n:?}").contains(".keep")), "a hidden file is ignored without a word");
        // The next cycles say nothing more about it.
        for _ in 0..3 {
            assert_eq!(d.scan_noting(dir.path()).1, vec![]);
        }
        // Gone, then back: reported again.
        std::fs::remove_file(dir.path().join("disk_usage.sh")).expect("remove");
        assert_eq!(d.scan_noting(dir.path()).1, vec![]);
        write("disk_usage.sh");
        assert_eq!(d.scan_noting(dir.path()).1, vec![Notice::Info(ignored)]);
    }
}
