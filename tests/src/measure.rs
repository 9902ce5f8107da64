//! What the benchmark binaries measure with: a process's CPU and memory from /proc, and sinks that
//! answer at once and count what reaches them (Carbon pickles, Graphite plaintext lines), bound to
//! any loopback address so that a ring of destinations can be told apart by server (127.0.0.1-3).
//!
//! CPU is the run time of the process's threads from `/proc/PID/task/*/schedstat` (children
//! excluded); memory is VmRSS and VmHWM (peak) from `/proc/PID/status`. What a whole agent costs,
//! every process and child it starts included, is measured in a [`Cgroup`] of its own (cgroup v1
//! `cpuacct` and `memory`), and its wake-ups are the context switches of its threads
//! ([`wakeups`]).

use std::io::{BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

/// CPU time of a process's threads, in seconds (schedstat run time), or utime + stime
/// ([`ticks_seconds`]) where schedstat cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let mut ns: u64 = 0;
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Some(v) = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                ns += v;
                found = true;
            }
        }
    }
    if found {
        return ns as f64 / 1e9;
    }
    ticks_seconds(pid)
}

/// utime + stime of a process from `/proc/PID/stat`, in seconds (clock-tick resolution; threads
/// that have exited included, unlike [`cpu_seconds`]).
pub fn ticks_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / if hz > 0 { hz as f64 } else { 100.0 }
}

/// `(VmRSS, VmHWM)` of a process, in bytes.
pub fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// How often a process's threads went to sleep or were preempted: voluntary + involuntary
/// context switches summed over `/proc/PID/task/*/status`. Each is a wake-up (or a preemption) the
/// host pays for; threads that exited are not counted.
pub fn wakeups(pid: u32) -> u64 {
    let mut n = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            n += status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:").or(l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    n
}

/// Threads of a process.
pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

/// Proportional set size (`Pss` of `/proc/PID/smaps_rollup`): pages shared with other processes
/// (libc, a binary two processes run) counted as their share.
pub fn pss(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// What a process is, for a table: its command name, and for a shell its script and what the
/// script was asked to do (`puypuy.sh _watchdog collector` is the collector's watchdog).
pub fn process_label(pid: u32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    if let Some(i) = args.iter().position(|a| a == "_watchdog") {
        return format!("watchdog of {} (bash)", args.get(i + 1).map_or("?", String::as_str));
    }
    let base = |a: &String| a.rsplit('/').next().unwrap_or(a).to_string();
    match args.first().map(base) {
        // A fork that did not exec (the script-runner's guardian) has its parent's command line.
        Some(exe) if exe.starts_with("puypuy-") && parent_cmdline(pid) == cmdline => format!("{exe} (forked child)"),
        Some(exe) if exe.starts_with("puypuy-") => exe,
        Some(exe) if comm.starts_with("python") || exe.starts_with("python") => {
            format!("{exe} {}", args.get(1).map(base).unwrap_or_default())
        }
        _ => comm,
    }
}

fn parent_cmdline(pid: u32) -> Vec<u8> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).unwrap_or("0");
    std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap_or_default()
}

/// A cgroup v1 of the `cpuacct` and `memory` controllers (mounted under /sys/fs/cgroup, written as
/// root): whatever a process put into it starts, it and every child it forks, is charged to it.
/// Removed when dropped, once the processes in it are gone.
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// Creates `NAME` under each controller; an error says what is missing.
    pub fn create(name: &str) -> Result<Cgroup, String> {
        let mut dirs = Vec::new();
        for controller in ["cpuacct", "memory"] {
            let dir = PathBuf::from("/sys/fs/cgroup").join(controller).join(name);
            if !dir.is_dir() {
                std::fs::create_dir(&dir).map_err(|e| {
                    format!(
                        "cannot create the cgroup {} ({e}): needs root and cgroup v1 with {controller} mounted",
                        dir.display()
                    )
                })?;
            }
            dirs.push(dir);
        }
        Ok(Cgroup { dirs })
    }

    /// A command that runs `program ARGS…` inside this cgroup: a shell puts itself in first, then
    /// execs it, so that everything it forks is in the cgroup from its first instruction.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut script = String::new();
        for dir in &self.dirs {
            script.push_str(&format!("echo $$ > '{}/cgroup.procs' || exit 125; ", dir.display()));
        }
        script.push_str("exec \"$@\"");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script).arg("sh").arg(program);
        cmd
    }

    /// CPU time of everything that ran in the cgroup, in seconds (`cpuacct.usage`).
    pub fn cpu_seconds(&self) -> f64 {
        let ns = std::fs::read_to_string(self.dirs[0].join("cpuacct.usage")).unwrap_or_default();
        ns.trim().parse::<u64>().unwrap_or(0) as f64 / 1e9
    }

    /// The processes in the cgroup now.
    pub fn pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.dirs[0].join("cgroup.procs")).unwrap_or_default();
        let mut pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        pids.sort_unstable();
        pids
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // rmdir fails while a process is still inside: give what was stopped a moment to go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.pids().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for dir in &self.dirs {
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("cannot remove the cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(b: u64) -> f64 {
    (b as f64 / 1048576.0 * 10.0).round() / 10.0
}

/// What a sink counted.
#[derive(Default)]
pub struct SinkCount {
    pub points: AtomicU64,
    pub bytes: AtomicU64,
}

impl SinkCount {
    pub fn points(&self) -> u64 {
        self.points.load(Ordering::Relaxed)
    }
}

/// A sink on `ip` (a free port): every accepted connection is read by a thread of its own with
/// `count`, which is given each read's bytes and the carried-over state of the connection.
fn sink(ip: &str, count: fn(&mut Vec<u8>, &SinkCount)) -> (u16, Arc<SinkCount>) {
    let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("cannot bind a sink on {ip}: {e}"));
    let port = listener.local_addr().expect("sink address").port();
    let stats = Arc::new(SinkCount::default());
    let s = Arc::clone(&stats);
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let mut r = BufReader::with_capacity(1 << 20, conn);
                let mut buf = vec![0u8; 1 << 16];
                let mut pending = Vec::new();
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    s.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    pending.extend_from_slice(&buf[..n]);
                    count(&mut pending, &s);
                }
            });
        }
    });
    (port, stats)
}

/// Carbon pickle receiver on `ip`: length-prefixed pickles, the datapoints in each counted by
/// walking its opcodes ([`count_pickle_strings`]).
pub fn pickle_sink(ip: &str) -> (u16, Arc<SinkCount>) {
    sink(ip, |pending, s| {
        let mut at = 0;
        while let Some(len) = pending.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) {
            let Some(pickle) = pending.get(at + 4..at + 4 + len) else { break };
            s.points.fetch_add(count_pickle_strings(pickle) as u64, Ordering::Relaxed);
            at += 4 + len;
        }
        pending.drain(..at);
    })
}

/// Graphite plaintext receiver on `ip`: counts lines.
pub fn line_sink(ip: &str) -> (u16, Arc<SinkCount>) {
    sink(ip, |pending, s| {
        s.points.fetch_add(pending.iter().filter(|b| **b == b'\n').count() as u64, Ordering::Relaxed);
        pending.clear();
    })
}

/// The number of strings in a carbon pickle (one metric path per datapoint), by walking its
/// opcodes without building the objects: a sink that deserialized everything would be the
/// bottleneck of the throughput it measures.
pub fn count_pickle_strings(p: &[u8]) -> usize {
    let (mut i, mut n) = (0usize, 0usize);
    let u32_at = |i: usize| {
        p.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).unwrap_or(usize::MAX / 2)
    };
    while i < p.len() {
        let op = p[i];
        i += 1;
        match op {
            b'X' | b'T' | b'B' => {
                n += usize::from(op != b'B');
                i = i.saturating_add(4 + u32_at(i));
            }
            0x8c | b'U' | b'C' => {
                n += usize::from(op != b'C');
                i += 1 + p.get(i).copied().unwrap_or(0) as usize;
            }
            0x8d | 0x8e => {
                n += usize::from(op == 0x8d);
                i = i.saturating_add(
                    8 + p
                        .get(i..i + 8)
                        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
                        .unwrap_or(0),
                );
            }
            0x80 | b'K' | b'q' | b'h' => i += 1,
            b'M' => i += 2,
            b'J' | b'r' | b'j' => i += 4,
            b'G' | 0x95 => i += 8,
            0x8a => i += 1 + p.get(i).copied().unwrap_or(0) as usize,
            0x8b => i = i.saturating_add(4 + u32_at(i)),
            b'.' => break,
            _ => {}
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pickle_counts_one_point_per_path() {
        let points = vec![("a.b".to_string(), (1_700_000_000u64, 1.5f64)), ("c".to_string(), (1_700_000_000, 2.0))];
        let bytes = serde_pickle::to_vec(&points, serde_pickle::SerOptions::new()).expect("pickle");
        assert_eq!(count_pickle_strings(&bytes), 2);
    }
}
