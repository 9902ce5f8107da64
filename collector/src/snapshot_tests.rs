//! Recorded `/proc` snapshots, two readings per case (`testdata/<case>/proc0`, `proc1`, five
//! seconds apart), run through every check and the shipper's rate state; the points of the second
//! reading must equal `expected.out` line for line.

use std::io;
use std::path::{Path, PathBuf};

use puypuy_shipper::rate::RateState;

use crate::checks;
use crate::context::{Context, FsUsage};
use puypuy_common::config::SystemCheck;

fn fake_statfs(path: &Path) -> io::Result<FsUsage> {
    match path.to_str() {
        Some("/") => Ok(FsUsage { used: 4000, available: 6000 }),
        Some("/srv/my data") => Ok(FsUsage { used: 1, available: 3 }),
        _ => Err(io::Error::new(io::ErrorKind::NotFound, "not in the test table")),
    }
}

fn run_case(case: &str) -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(case);
    let sys = dir.join("sys");
    let mut rates = RateState::new();
    let mut lines = Vec::new();
    for (reading, timestamp) in [("proc0", 1000), ("proc1", 1005)] {
        let proc_root = dir.join(reading);
        let ctx = Context {
            proc_root: &proc_root,
            sys_root: &sys,
            timestamp,
            statfs: &fake_statfs,
            pid_files: &[],
            files: None,
        };
        lines.clear();
        for check in SystemCheck::ALL {
            let name = check.name();
            let points = checks::system_check(check)(&ctx).unwrap_or_else(|e| panic!("{name}: {e}"));
            for p in points {
                if let Some(p) = rates.apply(p) {
                    lines.push(p.dry_run_line());
                }
            }
        }
    }
    lines
}

#[test]
fn basic_snapshot_gives_the_expected_values() {
    let expected =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/basic/expected.out")).unwrap();
    let got = run_case("basic");
    assert_eq!(got.join("\n") + "\n", expected);
}

#[test]
fn missing_conntrack_is_quietly_absent() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::context::test_context(dir.path(), dir.path());
    assert_eq!(checks::ipconntrack::collect(&ctx).unwrap(), vec![]);
    assert!(checks::memory::collect(&ctx).is_err());
}
