//! What the benchmark binaries measure with: a process's CPU and memory from /proc, and sinks that
//! answer at once and count what reaches them (Carbon pickles, Graphite plaintext lines), bound to
//! any loopback address so that a ring of destinations can be told apart by server (127.0.0.1-3).
//!
//! CPU is the run time of the process's threads from `/proc/PID/task/*/schedstat` (children
//! excluded); memory is VmRSS and VmHWM (peak) from `/proc/PID/status`.

use std::io::{BufReader, Read};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

/// CPU time of a process's threads, in seconds (schedstat run time).
pub fn cpu_seconds(pid: u32) -> f64 {
    let mut ns: u64 = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Some(v) = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                ns += v;
            }
        }
    }
    ns as f64 / 1e9
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
