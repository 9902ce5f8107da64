//! openfiles: system-wide `open_files` (allocated file handles) and `open_files_max` from
//! `/proc/sys/fs/file-nr`; and, as the old check did, `openfiles_NAME` = the number of open
//! descriptors of the process whose pid file is given as `NAME: /path/to/pidfile` in the optional
//! `[Open Files]` section.

use puypuy_common::Point;

use crate::context::Context;

/// `(allocated, max)` from file-nr's three fields `allocated unused max`.
pub fn parse(file_nr: &str) -> Result<(i64, i64), String> {
    let f: Vec<i64> = file_nr.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    match f.as_slice() {
        [allocated, _, max] => Ok((*allocated, *max)),
        _ => Err(format!("unexpected file-nr content {:?}", file_nr.trim())),
    }
}

pub fn collect(ctx: &Context) -> Result<Vec<Point>, String> {
    let text = ctx.read_proc("sys/fs/file-nr").map_err(|e| format!("cannot read sys/fs/file-nr: {e}"))?;
    let (open, max) = parse(&text)?;
    let mut points = vec![ctx.int("open_files", open), ctx.int("open_files_max", max)];
    let mut problems = Vec::new();
    for (name, pid_file) in ctx.pid_files {
        let pid = match std::fs::read_to_string(pid_file) {
            Ok(p) => p.trim().to_string(),
            Err(e) => {
                problems.push(format!("{}: {e}", pid_file.display()));
                continue;
            }
        };
        match std::fs::read_dir(ctx.proc_root.join(&pid).join("fd")) {
            Ok(entries) => points.push(ctx.int(format!("openfiles_{name}"), entries.count() as i64)),
            Err(e) => problems.push(format!("process {pid} from {}: {e}", pid_file.display())),
        }
    }
    if !problems.is_empty() {
        log::debug!("openfiles: {}", problems.join("; "));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_file_nr() {
        assert_eq!(super::parse("1824\t0\t9223372036854775807\n").expect("parses"), (1824, 9223372036854775807));
        assert!(super::parse("x").is_err());
    }
}
