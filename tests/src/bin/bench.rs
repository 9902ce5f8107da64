//! `puypuy-bench`: the benchmarks of BENCHMARKS.md, side by side in one run, on loopback. Writes
//! `report.md` and `report.json` into `--out DIR`. `--quick` runs every part at a tiny size (the
//! test suite does, so the bench keeps working); the numbers are then meaningless.
//!
//! CPU is the run time of the process's threads from /proc/PID/task/*/schedstat (children
//! excluded; utime+stime when schedstat is missing), RSS is
//! VmRSS (steady, at the end) and VmHWM (peak) from /proc/PID/status. The footprint part measures
//! whole agents instead: each runs in a cgroup of its own (`cpuacct.usage`: every process, thread
//! and child), PuyPuy as `./puypuy.sh start` leaves it, beside collectd, all at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use puypuy_common::client::SenderClient;
use puypuy_common::Point;
use puypuy_tests::measure::{self, cpu_seconds, mib, rss, Cgroup};
use puypuy_tests::{bin, bin_dir, free_port, repo_root, require, wait_for, Agent, Proc, StopOnDrop};
use serde_json::{json, Value as Json};

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

// ------------------------------------------------------------------ sinks that answer at once

#[derive(Default)]
struct SinkStats {
    points: AtomicU64,
    bytes: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

/// HTTP/1.1 keep-alive sink: answers 204 at once; counts line-protocol lines or OpenTSDB datapoints.
fn http_sink() -> (u16, Arc<SinkStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("sink");
    let port = listener.local_addr().expect("addr").port();
    let stats = Arc::new(SinkStats::default());
    let s = Arc::clone(&stats);
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let s = Arc::clone(&s);
            thread::spawn(move || serve_http(conn, &s));
        }
    });
    (port, stats)
}

fn serve_http(conn: TcpStream, stats: &SinkStats) {
    let mut reader = BufReader::with_capacity(1 << 20, conn.try_clone().expect("clone"));
    let mut writer = conn;
    let mut body = Vec::new();
    loop {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let arrived = now_micros();
        stats.bytes.fetch_add(length as u64, Ordering::Relaxed);
        let points = if body.first() == Some(&b'[') {
            body.windows(9).filter(|w| w == b"\"metric\":").count()
        } else {
            body.iter().filter(|b| **b == b'\n').count()
        };
        stats.points.fetch_add(points as u64, Ordering::Relaxed);
        if body.starts_with(b"bench_latency") || body.windows(14).any(|w| w == b"\nbench_latency") {
            for line in body.split(|b| *b == b'\n').filter(|l| l.starts_with(b"bench_latency")) {
                let text = String::from_utf8_lossy(line);
                if let Some(v) =
                    text.split("value=").nth(1).and_then(|r| r.split(' ').next()).and_then(|v| v.parse::<f64>().ok())
                {
                    stats.latencies_us.lock().expect("lock").push(arrived.saturating_sub(v as u64));
                }
            }
        }
        if writer.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

/// Carbon pickle sink: length-prefixed pickles, each a list whose items are counted.
fn pickle_sink() -> (u16, Arc<SinkStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("sink");
    let port = listener.local_addr().expect("addr").port();
    let stats = Arc::new(SinkStats::default());
    let s = Arc::clone(&stats);
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let mut r = BufReader::with_capacity(1 << 20, conn);
                let mut buf = Vec::new();
                loop {
                    let mut len = [0u8; 4];
                    if r.read_exact(&mut len).is_err() {
                        return;
                    }
                    buf.resize(u32::from_be_bytes(len) as usize, 0);
                    if r.read_exact(&mut buf).is_err() {
                        return;
                    }
                    s.bytes.fetch_add(buf.len() as u64 + 4, Ordering::Relaxed);
                    let items = count_pickle_strings(&buf);
                    s.points.fetch_add(items as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (port, stats)
}

/// The number of strings in a carbon pickle (one metric path per datapoint), by walking its
/// opcodes without building the objects: a sink that deserialized everything would be the
/// bottleneck of the throughput it measures.
fn count_pickle_strings(p: &[u8]) -> usize {
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
                i += 4 + u32_at(i);
            }
            0x8c | b'U' | b'C' => {
                n += usize::from(op != b'C');
                i += 1 + p.get(i).copied().unwrap_or(0) as usize;
            }
            0x8d | 0x8e => {
                n += usize::from(op == 0x8d);
                i += 8 + p
                    .get(i..i + 8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
                    .unwrap_or(0);
            }
            0x80 | b'K' | b'q' | b'h' => i += 1,
            b'M' => i += 2,
            b'J' | b'r' | b'j' => i += 4,
            b'G' | 0x95 => i += 8,
            0x8a => i += 1 + p.get(i).copied().unwrap_or(0) as usize,
            0x8b => i += 4 + u32_at(i),
            b'.' => break,
            _ => {}
        }
    }
    n
}

/// Graphite plaintext sink (collectd's write_graphite): counts lines.
fn line_sink() -> (u16, Arc<SinkStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("sink");
    let port = listener.local_addr().expect("addr").port();
    let stats = Arc::new(SinkStats::default());
    let s = Arc::clone(&stats);
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let mut r = conn;
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    s.points.fetch_add(buf[..n].iter().filter(|b| **b == b'\n').count() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (port, stats)
}

// ------------------------------------------------------------------ the parts

struct Bench {
    quick: bool,
    md: String,
    json: serde_json::Map<String, Json>,
}

impl Bench {
    fn secs(&self, full: u64) -> Duration {
        Duration::from_secs(if self.quick { 1 } else { full })
    }

    fn section(&mut self, title: &str, header: &str) {
        self.md.push_str(&format!("\n## {title}\n\n{header}\n"));
        let cols = header.matches('|').count().saturating_sub(1);
        self.md.push_str(&format!("|{}\n", "---|".repeat(cols)));
    }

    fn row(&mut self, cells: &[String]) {
        self.md.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
}

fn influx_tsdb(port: u16) -> String {
    format!("[TSDB]\ntsdtype = InfluxDB\naddress = http://127.0.0.1:{port}\ndatabase = bench\ngzip = False\n")
}

/// The check set that matches collectd's `cpu memory load interface df disk`.
const COLLECTD_SET: &str = "cpustats, memory, load_average, network_bytes, disks";

/// An agent running in a cgroup of its own, and the sink that counts what it sends.
struct Resident {
    label: String,
    cgroup: Cgroup,
    sink: Arc<SinkStats>,
}

/// One reading of a [`Resident`]: the cgroup's CPU, the sink's count, and each process's CPU and
/// wake-ups by pid.
struct Reading {
    cpu: f64,
    points: u64,
    processes: Vec<(u32, f64, u64)>,
}

impl Resident {
    fn read(&self) -> Reading {
        Reading {
            cpu: self.cgroup.cpu_seconds(),
            points: self.sink.points.load(Ordering::Relaxed),
            processes: self.cgroup.pids().into_iter().map(|p| (p, cpu_seconds(p), measure::wakeups(p))).collect(),
        }
    }
}

/// A process of a resident agent over the run: per-cycle CPU and wake-ups, memory at the end.
struct ProcessRow {
    label: String,
    cpu: f64,
    wakeups: f64,
    threads: usize,
    rss: u64,
    pss: u64,
}

/// A resident agent over the run, per cycle (1 s cycles).
struct Footprint {
    label: String,
    values: f64,
    cpu: f64,
    processes: Vec<ProcessRow>,
}

impl Footprint {
    fn of(r: &Resident, before: &Reading, after: &Reading, cycles: f64) -> Footprint {
        let mut processes: Vec<ProcessRow> = after
            .processes
            .iter()
            .filter_map(|&(pid, cpu, wakeups)| {
                let &(_, cpu0, wakeups0) = before.processes.iter().find(|p| p.0 == pid)?;
                Some(ProcessRow {
                    label: measure::process_label(pid),
                    cpu: (cpu - cpu0) / cycles,
                    wakeups: wakeups.saturating_sub(wakeups0) as f64 / cycles,
                    threads: measure::threads(pid),
                    rss: rss(pid).0,
                    pss: measure::pss(pid),
                })
            })
            .collect();
        processes.sort_by(|a, b| b.cpu.total_cmp(&a.cpu));
        Footprint {
            label: r.label.clone(),
            values: (after.points - before.points) as f64 / cycles,
            cpu: (after.cpu - before.cpu) / cycles,
            processes,
        }
    }

    fn per_value(&self) -> f64 {
        per_value(self.cpu, self.values)
    }

    fn wakeups(&self) -> f64 {
        self.processes.iter().map(|p| p.wakeups).sum()
    }

    /// RSS of the processes whose label starts with one of `names`.
    fn rss_of(&self, names: &[&str]) -> u64 {
        self.processes.iter().filter(|p| names.iter().any(|n| p.label.starts_with(n))).map(|p| p.rss).sum()
    }

    fn json(&self) -> serde_json::Value {
        let processes: Vec<Json> = self
            .processes
            .iter()
            .map(|p| json!({"process": p.label, "cpu_ms_per_cycle": p.cpu * 1000.0, "wakeups_per_cycle": p.wakeups, "threads": p.threads, "rss_bytes": p.rss, "pss_bytes": p.pss}))
            .collect();
        json!({"values_per_cycle": self.values, "cpu_ms_per_cycle": self.cpu * 1000.0, "cpu_us_per_value": self.per_value(),
               "wakeups_per_cycle": self.wakeups(), "processes": processes,
               "collector_shipper_rss_bytes": self.rss_of(&["puypuy-collector", "puypuy-shipper"])})
    }
}

/// `./puypuy.sh start` with a config of its own, from inside a new cgroup: every process it leaves
/// running (the watchdogs, the binaries, their children) is charged to that cgroup.
fn start_puypuy(label: &str, name: &str, dir: &Path, tsdb: &str, sink: Arc<SinkStats>) -> (Resident, StopOnDrop) {
    let config = dir.join("config.ini");
    let tmp = dir.join("tmp");
    std::fs::write(
        &config,
        format!(
            "[SelfConfig]\ncheck_period_seconds: 1\nlog_file: {0}/puypuy.log\npid_file: {0}/puypuy.pid\ntmpdir: {0}\n\
             cluster_name: bench\nhost_group: bench\nlocation: bench\nself_metrics: no\nsystem_checks: {COLLECTD_SET}\n\n{tsdb}",
            tmp.display()
        ),
    )
    .expect("config.ini");
    let cgroup =
        Cgroup::create(&format!("puypuy-bench-{}-{name}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
    let stop = StopOnDrop(config.clone());
    let out = cgroup
        .command(&repo_root().join("puypuy.sh"))
        .arg("--config")
        .arg(&config)
        .arg("start")
        .env("PUYPUY_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .output()
        .expect("puypuy.sh start");
    assert!(
        out.status.success(),
        "puypuy.sh start failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (Resident { label: label.to_string(), cgroup, sink }, stop)
}

fn footprint(b: &mut Bench) {
    let d = b.secs(40);
    let warm = Duration::from_secs(if b.quick { 2 } else { 5 });
    let dir = tempfile::tempdir().expect("tempdir");
    let subdir = |name: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    };
    // PuyPuy as ./puypuy.sh start leaves it, twice: InfluxDB line protocol over HTTP, and Carbon
    // pickles over one TCP connection, the kind of connection collectd's write_graphite uses.
    let (hport, hsink) = http_sink();
    let (influx, _stop_influx) =
        start_puypuy("PuyPuy, InfluxDB over HTTP", "influx", &subdir("influx"), &influx_tsdb(hport), hsink);
    let (pport, psink) = pickle_sink();
    let (carbon, _stop_carbon) = start_puypuy(
        "PuyPuy, Carbon pickle over TCP",
        "carbon",
        &subdir("carbon"),
        &format!("[TSDB]\ntsdtype = Carbon\naddress = 127.0.0.1:{pport}\n"),
        psink,
    );

    // collectd with cpu, memory, load, interface, df, disk → write_graphite to a local sink.
    let collectd = require("collectd");
    let (gport, gsink) = line_sink();
    let cdir = subdir("collectd");
    let conf = cdir.join("collectd.conf");
    std::fs::write(
        &conf,
        format!(
            "Interval 1\nFQDNLookup false\nBaseDir \"{0}\"\nPIDFile \"{0}/collectd.pid\"\nPluginDir \"/usr/lib/collectd\"\nTypesDB \"/usr/share/collectd/types.db\"\n\
             LoadPlugin cpu\nLoadPlugin memory\nLoadPlugin load\nLoadPlugin interface\nLoadPlugin df\nLoadPlugin disk\nLoadPlugin write_graphite\n\
             <Plugin write_graphite>\n  <Node \"sink\">\n    Host \"127.0.0.1\"\n    Port \"{gport}\"\n    Protocol \"tcp\"\n  </Node>\n</Plugin>\n",
            cdir.display()
        ),
    )
    .expect("collectd.conf");
    let cgroup =
        Cgroup::create(&format!("puypuy-bench-{}-collectd", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
    let cd = Proc::spawn(
        "collectd",
        cgroup.command(&collectd).arg("-f").arg("-C").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()),
    );
    let collectd = Resident { label: "collectd 5.12 (cpu memory load interface df disk)".into(), cgroup, sink: gsink };

    let residents = [&influx, &carbon, &collectd];
    thread::sleep(warm);
    let before: Vec<Reading> = residents.iter().map(|r| r.read()).collect();
    thread::sleep(d);
    let after: Vec<Reading> = residents.iter().map(|r| r.read()).collect();
    let cycles = d.as_secs_f64();
    let runs: Vec<Footprint> =
        residents.iter().zip(before.iter().zip(&after)).map(|(r, (b0, b1))| Footprint::of(r, b0, b1, cycles)).collect();
    drop(cd);

    b.section(
        &format!("1. Host footprint: the whole agent at rest beside collectd, 1 s cycles for {} s", d.as_secs()),
        "| agent | values/cycle | CPU ms/cycle (cgroup) | CPU µs/value | ÷ collectd | wake-ups/cycle | processes (threads) | RSS MiB, collector + shipper | PSS MiB, all processes |",
    );
    let theirs = runs[2].per_value();
    for f in &runs {
        b.row(&[
            f.label.clone(),
            format!("{:.0}", f.values),
            format!("{:.2}", f.cpu * 1000.0),
            format!("{:.1}", f.per_value()),
            format!("{:.2}", f.per_value() / theirs),
            format!("{:.1}", f.wakeups()),
            format!("{} ({})", f.processes.len(), f.processes.iter().map(|p| p.threads).sum::<usize>()),
            if f.label.starts_with("PuyPuy") {
                format!("{}", mib(f.rss_of(&["puypuy-collector", "puypuy-shipper"])))
            } else {
                format!("{} (collectd)", mib(f.rss_of(&[""])))
            },
            format!("{}", mib(f.processes.iter().map(|p| p.pss).sum())),
        ]);
    }
    b.md.push_str("\nPer process (wake-ups: voluntary + involuntary context switches of its threads):\n\n");
    b.md.push_str("| agent | process | CPU ms/cycle | wake-ups/cycle | threads | RSS MiB | PSS MiB |\n|---|---|---|---|---|---|---|\n");
    for f in &runs {
        for p in &f.processes {
            b.row(&[
                f.label.clone(),
                p.label.clone(),
                format!("{:.3}", p.cpu * 1000.0),
                format!("{:.1}", p.wakeups),
                p.threads.to_string(),
                format!("{}", mib(p.rss)),
                format!("{}", mib(p.pss)),
            ]);
        }
    }
    let (ratio, ratio_carbon) = (runs[0].per_value() / theirs, runs[1].per_value() / theirs);
    b.md.push_str(&format!(
        "\nCPU per value, PuyPuy ÷ collectd: **{ratio:.2}** writing InfluxDB line protocol over HTTP, **{ratio_carbon:.2}** writing Carbon pickles over TCP (target ≤ 1.0, then 0.5); collector + shipper RSS: {} MiB (target ≤ 6).\n",
        mib(runs[0].rss_of(&["puypuy-collector", "puypuy-shipper"]))
    ));
    b.json.insert(
        "footprint".into(),
        json!({"seconds": d.as_secs(), "puypuy": runs[0].json(), "puypuy_carbon": runs[1].json(), "collectd": runs[2].json(),
               "cpu_per_value_ratio": ratio, "cpu_per_value_ratio_carbon": ratio_carbon}),
    );
}

/// CPU seconds per cycle over values per cycle, in µs per value.
fn per_value(cpu: f64, values: f64) -> f64 {
    if values > 0.0 {
        cpu * 1e6 / values
    } else {
        f64::NAN
    }
}

/// Producers pushing frames of 1000 points as fast as acks allow (at most 16 frames in flight each).
fn push(socket: &Path, producers: usize, d: Duration) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for p in 0..producers {
        let (socket, stop) = (socket.to_path_buf(), Arc::clone(&stop));
        thread::spawn(move || {
            let client = SenderClient::start(&socket, &format!("bench-{p}"), 64);
            let mut t = 1_700_000_000u64;
            while !stop.load(Ordering::Relaxed) {
                if client.stats().queued_frames >= 16 {
                    thread::sleep(Duration::from_micros(200));
                    continue;
                }
                t += 1;
                let frame: Vec<Point> = (0..1000)
                    .map(|i| {
                        Point::int(format!("bench_m{}", i % 100), t, i as i64, "bench").with_tag("p", p.to_string())
                    })
                    .collect();
                client.send(frame);
            }
        });
    }
    let s = Arc::clone(&stop);
    thread::spawn(move || {
        thread::sleep(d);
        s.store(true, Ordering::Relaxed);
    });
    stop
}

fn throughput(b: &mut Bench) {
    let d = b.secs(10);
    b.section(
        &format!("2. Shipper throughput ({} s per row, frames of 1000 points, sink answering at once)", d.as_secs()),
        "| backend | producers | points/s | shipper CPU µs/point | M points per shipper core-second | shipper CPU cores | peak RSS MiB |",
    );
    let mut rows = Vec::new();
    let mut line_per_core = Vec::new();
    let counts: &[usize] = if b.quick { &[1] } else { &[1, 4, 16] };
    for backend in ["InfluxDB line", "OpenTSDB JSON", "Carbon pickle"] {
        for &producers in counts {
            let (port, sink) = if backend == "Carbon pickle" { pickle_sink() } else { http_sink() };
            let tsdb = match backend {
                "InfluxDB line" => influx_tsdb(port),
                "OpenTSDB JSON" => {
                    format!("[TSDB]\ntsdtype = OpenTSDB\naddress = http://127.0.0.1:{port}\ngzip = False\n")
                }
                _ => format!("[TSDB]\ntsdtype = Carbon\naddress = 127.0.0.1:{port}\n"),
            };
            let agent = Agent::new("self_metrics: no\nmax_cache: 1000000", &tsdb);
            let shipper = agent.start_shipper();
            let warm = push(&agent.socket(), producers, Duration::from_millis(500));
            while !warm.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
            }
            thread::sleep(Duration::from_millis(300));
            let (c0, p0) = (cpu_seconds(shipper.pid()), sink.points.load(Ordering::Relaxed));
            let started = Instant::now();
            let stop = push(&agent.socket(), producers, d);
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
            }
            let elapsed = started.elapsed().as_secs_f64();
            let (c1, p1) = (cpu_seconds(shipper.pid()), sink.points.load(Ordering::Relaxed));
            let points = (p1 - p0) as f64;
            let (_, peak) = rss(shipper.pid());
            let rate = points / elapsed;
            let cpu_us = if points > 0.0 { (c1 - c0) * 1e6 / points } else { f64::NAN };
            if backend == "InfluxDB line" {
                line_per_core.push(format!("{:.2}", 1.0 / cpu_us));
            }
            b.row(&[
                backend.into(),
                producers.to_string(),
                format!("{rate:.0}"),
                format!("{cpu_us:.2}"),
                format!("{:.2}", 1.0 / cpu_us),
                format!("{:.2}", (c1 - c0) / elapsed),
                format!("{}", mib(peak)),
            ]);
            rows.push(json!({"backend": backend, "producers": producers, "points_per_second": rate, "cpu_us_per_point": cpu_us, "peak_rss_bytes": peak}));
            drop(shipper);
        }
    }
    b.md.push_str(&format!(
        "\nInfluxDB line protocol, M points per shipper core-second with {} producers: {} (target ≥ 2, peak RSS flat as producers are added).\n",
        counts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "),
        line_per_core.join(", ")
    ));
    b.json.insert("throughput".into(), Json::from(rows));
}

fn relay(b: &mut Bench) {
    let d = b.secs(20);
    let (sink_port, sink) = pickle_sink();
    // Pre-built plaintext lines, sent by 4 connections as fast as the relay reads them.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|x| x.as_secs()).unwrap_or(0);
    let chunk: Vec<u8> =
        (0..10_000).map(|i| format!("bench.relay.m{} {} {}\n", i % 500, i, now)).collect::<String>().into_bytes();
    let chunk = Arc::new(chunk);
    let load = |port: u16, d: Duration| -> u64 {
        let sent = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (chunk, sent) = (Arc::clone(&chunk), Arc::clone(&sent));
                thread::spawn(move || {
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return };
                    let end = Instant::now() + d;
                    while Instant::now() < end {
                        if s.write_all(&chunk).is_err() {
                            return;
                        }
                        sent.fetch_add(10_000, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        sent.load(Ordering::Relaxed)
    };
    let drain = |stats: &SinkStats, before: u64| {
        let mut last = u64::MAX;
        for _ in 0..100 {
            let now = stats.points.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
            thread::sleep(Duration::from_millis(300));
        }
        stats.points.load(Ordering::Relaxed) - before
    };
    b.section(
        &format!("3. Relay: Graphite plaintext in, Carbon pickle out ({} s, 4 connections sending as fast as accepted)", d.as_secs()),
        "| relay | lines sent | points delivered | points/s (delivered ÷ send time) | dropped | relay CPU cores | peak RSS MiB |",
    );
    // PuyPuy
    let gport = free_port();
    let agent = Agent::new(
        "self_metrics: no\nmax_cache: 1000000",
        &format!("[TSDB]\ntsdtype = Carbon\naddress = 127.0.0.1:{sink_port}\n[Relay]\ngraphite_listen = {gport}\n"),
    );
    let shipper = agent.start_shipper();
    wait_for(Duration::from_secs(5), "the graphite input", || {
        TcpStream::connect(("127.0.0.1", gport)).ok().map(|_| ())
    });
    let (c0, p0) = (cpu_seconds(shipper.pid()), sink.points.load(Ordering::Relaxed));
    let started = Instant::now();
    let sent = load(gport, d);
    let send_time = started.elapsed().as_secs_f64();
    let delivered = drain(&sink, p0);
    let c1 = cpu_seconds(shipper.pid());
    let (_, peak) = rss(shipper.pid());
    let ours = delivered as f64 / send_time;
    b.row(&[
        "PuyPuy shipper".into(),
        sent.to_string(),
        delivered.to_string(),
        format!("{ours:.0}"),
        (sent - delivered.min(sent)).to_string(),
        format!("{:.2}", (c1 - c0) / started.elapsed().as_secs_f64()),
        mib(peak).to_string(),
    ]);
    drop(shipper);
    // carbon-relay
    let relay = require("carbon-relay");
    let dir = tempfile::tempdir().expect("tempdir");
    let (lport, pport) = (free_port(), free_port());
    let dd = dir.path().display();
    std::fs::write(
        dir.path().join("carbon.conf"),
        format!(
            "[relay]\nLINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {lport}\nPICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {pport}\nRELAY_METHOD = rules\n\
             DESTINATIONS = 127.0.0.1:{sink_port}\nUSE_FLOW_CONTROL = True\nLOG_DIR = {dd}/\nPID_DIR = {dd}/\nSTORAGE_DIR = {dd}/\nUSER =\n[cache]\nSTORAGE_DIR = {dd}/\nLOG_DIR = {dd}/\nPID_DIR = {dd}/\n"
        ),
    )
    .expect("carbon.conf");
    std::fs::write(
        dir.path().join("relay-rules.conf"),
        format!("[default]\ndefault = true\ndestinations = 127.0.0.1:{sink_port}\n"),
    )
    .expect("rules");
    std::fs::write(dir.path().join("storage-schemas.conf"), "[default]\npattern = .*\nretentions = 1s:1d\n")
        .expect("schemas");
    let cr = Proc::spawn(
        "carbon-relay",
        Command::new(relay)
            .arg(format!("--config={dd}/carbon.conf"))
            .arg(format!("--pidfile={dd}/relay.pid"))
            .args(["--logfile=-", "--nodaemon", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for(Duration::from_secs(30), "carbon-relay", || TcpStream::connect(("127.0.0.1", lport)).ok().map(|_| ()));
    thread::sleep(Duration::from_millis(500));
    let (k0, q0) = (cpu_seconds(cr.pid()), sink.points.load(Ordering::Relaxed));
    let started = Instant::now();
    let sent_r = load(lport, d);
    let send_time_r = started.elapsed().as_secs_f64();
    let delivered_r = drain(&sink, q0);
    let k1 = cpu_seconds(cr.pid());
    let (_, peak_r) = rss(cr.pid());
    let theirs = delivered_r as f64 / send_time_r;
    b.row(&[
        "carbon-relay (graphite-carbon 1.1.7, stock queue)".into(),
        sent_r.to_string(),
        delivered_r.to_string(),
        format!("{theirs:.0}"),
        (sent_r - delivered_r.min(sent_r)).to_string(),
        format!("{:.2}", (k1 - k0) / started.elapsed().as_secs_f64()),
        mib(peak_r).to_string(),
    ]);
    drop(cr);
    b.md.push_str(&format!(
        "\nDelivered points/s, PuyPuy ÷ carbon-relay: **{:.1}×** (target ≥ 20×).\n",
        ours / theirs.max(1.0)
    ));
    b.json.insert(
        "relay".into(),
        json!({"puypuy": {"sent": sent, "delivered": delivered, "points_per_second": ours, "peak_rss_bytes": peak},
               "carbon_relay": {"sent": sent_r, "delivered": delivered_r, "points_per_second": theirs, "peak_rss_bytes": peak_r}}),
    );
}

fn scripts(b: &mut Bench) {
    let d = b.secs(20);
    let agent = Agent::new("", "[TSDB]\ntsdtype: File\npath: out.txt\n");
    let dir = agent.path("scripts_enabled");
    std::fs::create_dir_all(&dir).expect("dir");
    for i in 0..100 {
        let p = dir.join(format!("check_trivial_{i:03}"));
        std::fs::write(&p, format!("#!/bin/sh\necho trivial_{i} 1 bench stack\n")).expect("script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let runner = Proc::spawn("puypuy-script-runner", agent.command("puypuy-script-runner").arg("--dry-run"));
    thread::sleep(Duration::from_secs(if b.quick { 1 } else { 3 }));
    let c0 = cpu_seconds(runner.pid());
    thread::sleep(d);
    let c1 = cpu_seconds(runner.pid());
    let runs = 100.0 * d.as_secs_f64();
    let per_run_ms = (c1 - c0) * 1000.0 / runs;
    let (steady, peak) = rss(runner.pid());
    b.section(
        "4. script-runner: 100 trivial scripts per 1 s cycle",
        "| runs | runner CPU per script run (ms, the scripts' own excluded) | steady RSS MiB | peak RSS MiB |",
    );
    b.row(&[format!("{runs:.0}"), format!("{per_run_ms:.3}"), mib(steady).to_string(), mib(peak).to_string()]);
    b.md.push_str("\nTarget ≤ 0.2 ms per script run.\n");
    b.json.insert(
        "scripts".into(),
        json!({"runs": runs, "runner_cpu_ms_per_run": per_run_ms, "rss_bytes": steady, "peak_rss_bytes": peak}),
    );
}

fn jmx(b: &mut Bench) {
    let d = b.secs(20);
    let target = puypuy_tests::services::JavaTarget::start(false);
    let agent = Agent::new("", &format!("[TSDB]\ntsdtype: File\npath: out.txt\n[JMX:app]\nurl: {}\n", target.url()));
    let bridge = Proc::spawn("puypuy-jmx-bridge", agent.command("puypuy-jmx-bridge").arg("--dry-run"));
    thread::sleep(Duration::from_secs(if b.quick { 2 } else { 5 }));
    let c0 = cpu_seconds(bridge.pid());
    thread::sleep(d);
    let c1 = cpu_seconds(bridge.pid());
    let (steady, peak) = rss(bridge.pid());
    let per_cycle = (c1 - c0) * 1000.0 / d.as_secs_f64();
    b.section("5. jmx-bridge: one remote target at 1 s", "| CPU ms/cycle | steady RSS MiB | peak RSS MiB |");
    b.row(&[format!("{per_cycle:.2}"), mib(steady).to_string(), mib(peak).to_string()]);
    b.json.insert("jmx".into(), json!({"cpu_ms_per_cycle": per_cycle, "rss_bytes": steady, "peak_rss_bytes": peak}));
}

fn latency(b: &mut Bench) {
    let samples = if b.quick { 3 } else { 60 };
    let (port, sink) = http_sink();
    // The shipped default batch_ms (the test helper's own default is 50).
    let agent = Agent::new("self_metrics: no\nbatch_ms: 20", &influx_tsdb(port));
    let _shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "latency", 100);
    for i in 0..samples {
        let sent = now_micros();
        client.send(vec![Point::float("bench_latency", 1_700_000_000 + i, sent as f64, "bench")]);
        thread::sleep(Duration::from_secs(1));
    }
    let mut lat = sink.latencies_us.lock().expect("lock").clone();
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0) as f64 / 1000.0;
    b.section(
        "6. End-to-end latency, producer send → backend received (1 point per second, default batching)",
        "| samples | p50 ms | p99 ms | max ms |",
    );
    b.row(&[
        lat.len().to_string(),
        format!("{:.1}", pct(0.5)),
        format!("{:.1}", pct(0.99)),
        format!("{:.1}", pct(1.0)),
    ]);
    b.md.push_str("\nTarget p99 < 50 ms.\n");
    b.json.insert(
        "latency".into(),
        json!({"samples": lat.len(), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}),
    );
}

/// A CA and a certificate for 127.0.0.1 made with `openssl` in `dir`: (ca.pem, cert.pem, key.pem).
fn bench_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new(require("openssl")).current_dir(dir).args(args).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]
        .iter()
        .chain(&["-subj", "/CN=bench CA"])
        .copied()
        .collect::<Vec<_>>());
    std::fs::write(dir.join("s.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "s.csr", "-subj", "/CN=relay"]);
    run(&["x509", "-req", "-in", "s.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem"]
        .iter()
        .chain(&["-days", "2", "-extfile", "s.ext"])
        .copied()
        .collect::<Vec<_>>());
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

/// Issue 20: agent shippers → one relay shipper → a line-protocol sink, the agents forwarding
/// frames over TLS (`tsdtype: PuyPuy` into `frames_listen`) or InfluxDB `/write` over plain HTTP
/// (into `http_listen`). Each agent is fed by one producer as fast as it acknowledges.
fn fleet(b: &mut Bench) {
    let d = b.secs(10);
    b.section(
        &format!(
            "12. Agents → relay → sink ({} s per row, one producer per agent, frames of 1000 points)",
            d.as_secs()
        ),
        "| agents → relay | agents | points/s at the sink | relay CPU µs/point | relay CPU cores |",
    );
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = bench_certificates(certs_dir.path());
    let counts: &[usize] = if b.quick { &[1] } else { &[1, 16] };
    let mut rows = Vec::new();
    const PLAIN_FRAMES: &str = "frames over plain TCP (tls = False)";
    for mode in ["frames over TLS", PLAIN_FRAMES, "InfluxDB /write, plain HTTP"] {
        for &agents in counts {
            let (sink_port, sink) = http_sink();
            let port = free_port();
            let input = if mode == "frames over TLS" {
                format!(
                    "tls_cert = {}\ntls_key = {}\nframes_listen = {port}\ntokens = bench-token\n",
                    cert.display(),
                    key.display()
                )
            } else if mode == PLAIN_FRAMES {
                format!("frames_listen = {port}\nframes_tls = False\ntokens = bench-token\n")
            } else {
                format!("http_listen = {port}\n")
            };
            let relay = Agent::new(
                "self_metrics: no\nmax_cache: 1000000",
                &format!("{}\n[Relay]\n{input}", influx_tsdb(sink_port)),
            );
            let relay_proc = relay.start_shipper();
            wait_for(Duration::from_secs(15), "the relay input", || {
                relay.log().contains(&format!(":{port}")).then_some(())
            });
            let output = if mode == "frames over TLS" {
                format!(
                    "[TSDB]\ntsdtype = PuyPuy\naddress = 127.0.0.1:{port}\nca_file = {}\ntoken = bench-token\n",
                    ca.display()
                )
            } else if mode == PLAIN_FRAMES {
                format!("[TSDB]\ntsdtype = PuyPuy\naddress = 127.0.0.1:{port}\ntls = False\ntoken = bench-token\n")
            } else {
                influx_tsdb(port)
            };
            let fleet: Vec<Agent> =
                (0..agents).map(|_| Agent::new("self_metrics: no\nmax_cache: 1000000", &output)).collect();
            let _shippers: Vec<Proc> = fleet.iter().map(|a| a.start_shipper()).collect();
            let warm: Vec<_> = fleet.iter().map(|a| push(&a.socket(), 1, Duration::from_millis(500))).collect();
            while !warm.iter().all(|w| w.load(Ordering::Relaxed)) {
                thread::sleep(Duration::from_millis(50));
            }
            thread::sleep(Duration::from_millis(500));
            let (c0, p0) = (cpu_seconds(relay_proc.pid()), sink.points.load(Ordering::Relaxed));
            let started = Instant::now();
            let stops: Vec<_> = fleet.iter().map(|a| push(&a.socket(), 1, d)).collect();
            while !stops.iter().all(|s| s.load(Ordering::Relaxed)) {
                thread::sleep(Duration::from_millis(50));
            }
            let elapsed = started.elapsed().as_secs_f64();
            let (c1, p1) = (cpu_seconds(relay_proc.pid()), sink.points.load(Ordering::Relaxed));
            let points = (p1 - p0) as f64;
            let rate = points / elapsed;
            let cpu_us = if points > 0.0 { (c1 - c0) * 1e6 / points } else { f64::NAN };
            b.row(&[
                mode.into(),
                agents.to_string(),
                format!("{rate:.0}"),
                format!("{cpu_us:.2}"),
                format!("{:.2}", (c1 - c0) / elapsed),
            ]);
            rows.push(
                json!({"mode": mode, "agents": agents, "points_per_second": rate, "relay_cpu_us_per_point": cpu_us}),
            );
        }
    }
    b.json.insert("fleet".into(), Json::from(rows));

    // Latency, producer send → sink, through the relay: one point a second, default batching.
    let samples = if b.quick { 3 } else { 30 };
    b.section(
        &format!("12b. Latency through the relay, producer send → sink ({samples} points, one a second, batch_ms 20 on both)"),
        "| agents → relay | p50 ms | p99 ms | max ms |",
    );
    let mut rows = Vec::new();
    for mode in ["frames over TLS", "InfluxDB /write, plain HTTP"] {
        let (sink_port, sink) = http_sink();
        let port = free_port();
        let (input, output) = if mode == "frames over TLS" {
            (
                format!(
                    "tls_cert = {}\ntls_key = {}\nframes_listen = {port}\ntokens = t\n",
                    cert.display(),
                    key.display()
                ),
                format!(
                    "[TSDB]\ntsdtype = PuyPuy\naddress = 127.0.0.1:{port}\nca_file = {}\ntoken = t\n",
                    ca.display()
                ),
            )
        } else {
            (format!("http_listen = {port}\n"), influx_tsdb(port))
        };
        let relay =
            Agent::new("self_metrics: no\nbatch_ms: 20", &format!("{}\n[Relay]\n{input}", influx_tsdb(sink_port)));
        let _relay = relay.start_shipper();
        wait_for(Duration::from_secs(15), "the relay input", || {
            relay.log().contains(&format!(":{port}")).then_some(())
        });
        let agent = Agent::new("self_metrics: no\nbatch_ms: 20", &output);
        let _agent = agent.start_shipper();
        let client = SenderClient::start(&agent.socket(), "latency", 100);
        for i in 0..samples {
            client.send(vec![Point::float("bench_latency", 1_700_000_000 + i, now_micros() as f64, "bench")]);
            thread::sleep(Duration::from_secs(1));
        }
        let mut lat = sink.latencies_us.lock().expect("lock").clone();
        lat.sort_unstable();
        let pct =
            |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0) as f64 / 1000.0;
        b.row(&[mode.into(), format!("{:.1}", pct(0.5)), format!("{:.1}", pct(0.99)), format!("{:.1}", pct(1.0))]);
        rows.push(
            json!({"mode": mode, "samples": lat.len(), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}),
        );
    }
    b.json.insert("fleet_latency".into(), Json::from(rows));
}

/// A part of the report: its `--only` name and the function that runs it.
type Part = (&'static str, fn(&mut Bench));

fn main() {
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("bench-results");
    let mut quick = false;
    let mut only: Vec<String> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = PathBuf::from(args.next().expect("--out DIR")),
            "--only" => only.push(args.next().expect("--only PART")),
            _ => {
                eprintln!(
                    "usage: puypuy-bench [--quick] [--out DIR] [--only footprint|throughput|relay|scripts|jmx|latency|statsd|statsd-memory|fleet]"
                );
                std::process::exit(2);
            }
        }
    }
    let _ = bin("puypuy-shipper");
    let mut b = Bench { quick, md: String::new(), json: serde_json::Map::new() };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    b.md.push_str(&format!(
        "# PuyPuy benchmark report\n\nOne run, side by side, on this machine ({cpus} cores), loopback only{}.\n",
        if quick { " — **--quick: tiny sizes, numbers not meaningful**" } else { "" }
    ));
    let parts: [Part; 9] = [
        ("footprint", footprint),
        ("throughput", throughput),
        ("relay", relay),
        ("scripts", scripts),
        ("jmx", jmx),
        ("latency", latency),
        ("statsd", statsd),
        ("statsd-memory", statsd_memory),
        ("fleet", fleet),
    ];
    for (name, part) in parts {
        // `--only statsd` runs its memory part too.
        if only.is_empty()
            || only.iter().any(|o| o == name || name.strip_prefix(o.as_str()).is_some_and(|r| r.starts_with('-')))
        {
            eprintln!("puypuy-bench: {name}…");
            part(&mut b);
        }
    }
    std::fs::create_dir_all(&out).expect("out dir");
    std::fs::write(out.join("report.md"), &b.md).expect("report.md");
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&Json::Object(b.json)).expect("json"))
        .expect("report.json");
    println!("{}", b.md);
}

/// `RcvbufErrors` of the `Udp:` lines in /proc/net/snmp: datagrams the kernel dropped because a
/// socket's receive buffer was full (machine-wide).
fn udp_rcvbuf_errors() -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors");
    at.and_then(|i| values.split_whitespace().nth(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// One StatsD daemon under test: where to send and how many datagrams it says it received.
struct StatsdDaemon {
    name: &'static str,
    pid: u32,
    port: u16,
    received: Box<dyn Fn() -> u64>,
    /// How long after a send its count is up to date (a status file or a flush later).
    settle: Duration,
}

/// Datagrams handed to the kernel per call at most.
const SEND_BURST: usize = 64;
/// Bytes per call at most (UDP's limit is 65 507).
const SEND_BYTES: usize = 60_000;
/// How often a sending thread wakes: every wake-up costs this VM 40–85 µs of CPU, so a thread
/// that woke for every few datagrams spent more on waking than on sending.
const SEND_TICK: Duration = Duration::from_millis(1);
/// Sending threads.
const SENDERS: usize = 1;
/// `UDP_SEGMENT` of `<linux/udp.h>` (Linux 4.18), which the libc crate does not export for glibc.
const UDP_SEGMENT: libc::c_int = 103;

/// The datagrams to send, laid out for UDP segmentation offload (GSO): datagrams of one length
/// are stored back to back, and one `sendmsg` with a `UDP_SEGMENT` of that length hands up to
/// [`SEND_BURST`] of them to the kernel, which cuts them apart before they reach the receiving
/// socket: the daemon receives the same datagrams as from one `send` each. On loopback the
/// sender's kernel path costs more per datagram than either daemon (2–4 µs with `sendmmsg`, about
/// 0.5 µs with GSO), and with one line per datagram two `sendmmsg` threads could not find the
/// shipper's limit.
struct SendPlan {
    bytes: Vec<u8>,
    /// Runs of datagrams of one length, in sending order: byte offset, length, count.
    runs: Vec<(usize, usize, usize)>,
    /// Datagrams in all.
    total: usize,
}

impl SendPlan {
    /// Groups `packets` by length (in order of first appearance); each group is split into runs
    /// of at most [`SEND_BURST`] datagrams and [`SEND_BYTES`].
    fn new(packets: &[Vec<u8>]) -> SendPlan {
        let mut groups: Vec<(usize, Vec<&[u8]>)> = Vec::new();
        for p in packets {
            match groups.iter_mut().find(|(len, _)| *len == p.len()) {
                Some((_, members)) => members.push(p),
                None => groups.push((p.len(), vec![p])),
            }
        }
        let mut plan = SendPlan { bytes: Vec::new(), runs: Vec::new(), total: packets.len() };
        for (len, members) in groups {
            let per_run = SEND_BURST.min(SEND_BYTES / len.max(1)).max(1);
            for run in members.chunks(per_run) {
                plan.runs.push((plan.bytes.len(), len, run.len()));
                run.iter().for_each(|p| plan.bytes.extend_from_slice(p));
            }
        }
        plan
    }

    /// The run and the datagram in it at position `at` of the sending order.
    fn locate(&self, mut at: usize) -> (usize, usize) {
        at %= self.total.max(1);
        for (i, (_, _, count)) in self.runs.iter().enumerate() {
            if at < *count {
                return (i, at);
            }
            at -= count;
        }
        (0, 0)
    }
}

/// Sends `packets` (each datagram in turn, grouped by length, see [`SendPlan`]) at `rate`
/// datagrams/s for `d` from [`SENDERS`] threads, each paced by the clock; returns the datagrams
/// sent and the rate achieved.
fn statsd_send(port: u16, packets: &[Vec<u8>], rate: f64, d: Duration) -> (u64, f64, f64) {
    let plan = SendPlan::new(packets);
    let start = Instant::now();
    let (sent, cpu) = thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|i| {
                let plan = &plan;
                let first = i * plan.total / SENDERS;
                scope.spawn(move || {
                    let sent = send_paced(port, plan, first, rate / SENDERS as f64, d);
                    (sent, thread_cpu_seconds())
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().expect("sender")).fold((0, 0.0), |(n, c), (m, d)| (n + m, c + d))
    });
    (sent, sent as f64 / start.elapsed().as_secs_f64(), cpu)
}

/// CPU seconds of the calling thread (user and system, including the kernel's work on its behalf
/// such as loopback delivery into the receiving socket).
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// One sending thread: the plan's datagrams in turn from position `first`, each call one run
/// (or the part of it that is due) with GSO; it sleeps while ahead, [`SEND_TICK`] at least.
/// Returns the datagrams sent.
fn send_paced(port: u16, plan: &SendPlan, first: usize, rate: f64, d: Duration) -> u64 {
    use std::os::fd::AsRawFd;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket.connect(("127.0.0.1", port)).expect("connect");
    let fd = socket.as_raw_fd();
    let (mut run, mut within) = plan.locate(first);
    let mut gso = true;
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= d {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate) as u64;
        if sent >= due {
            let ahead = (rate * SEND_TICK.as_secs_f64()).max(1.0);
            thread::sleep(Duration::from_secs_f64((sent as f64 + ahead) / rate).saturating_sub(elapsed));
            continue;
        }
        while sent < due {
            let (offset, len, count) = plan.runs[run];
            let n = (count - within).min((due - sent) as usize);
            let data = &plan.bytes[offset + within * len..offset + (within + n) * len];
            let done = if gso { send_segments(fd, data, len) } else { -1 };
            let done = match done {
                d if d >= 0 => d as usize / len,
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => continue,
                // No GSO (a kernel before 4.18): one `send` per datagram.
                _ => {
                    gso = false;
                    data.chunks(len).filter(|p| socket.send(p).is_ok()).count()
                }
            };
            sent += done as u64;
            within += done;
            if within >= count {
                (run, within) = ((run + 1) % plan.runs.len(), 0);
            }
            if done == 0 {
                break;
            }
        }
    }
    sent
}

/// One `sendmsg` of `data` on the connected socket `fd`, cut by the kernel into datagrams of
/// `segment` bytes (`UDP_SEGMENT` in a control message); bytes sent, or -1 with `errno` set.
fn send_segments(fd: std::os::fd::RawFd, data: &[u8], segment: usize) -> isize {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // Room for one control message carrying a u16, aligned as `cmsghdr` needs.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is a plain C struct for which all zeroes is a valid (empty) value; the
    // control buffer is large enough for CMSG_SPACE(2) (checked below), `iov` and `data` outlive
    // the call, and the socket is connected, so the message carries no address.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        assert!(space <= std::mem::size_of_val(&control));
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
        libc::sendmsg(fd, &msg, 0)
    }
}

/// One step at a fixed rate.
struct Step {
    sent: u64,
    /// Sent less the daemon's own count.
    lost: u64,
    /// `RcvbufErrors` during the step.
    drops: u64,
    /// Datagrams/s the sender reached.
    achieved: f64,
    /// The daemon's and the sending threads' CPU seconds.
    daemon_cpu: f64,
    sender_cpu: f64,
    seconds: f64,
}

fn statsd_step(daemon: &StatsdDaemon, packets: &[Vec<u8>], rate: f64, d: Duration) -> Step {
    let (r0, k0, c0) = ((daemon.received)(), udp_rcvbuf_errors(), cpu_seconds(daemon.pid));
    let start = Instant::now();
    let (sent, achieved, sender_cpu) = statsd_send(daemon.port, packets, rate, d);
    let seconds = start.elapsed().as_secs_f64();
    let c1 = cpu_seconds(daemon.pid);
    let k1 = udp_rcvbuf_errors();
    thread::sleep(daemon.settle);
    let received = (daemon.received)() - r0;
    Step {
        sent,
        lost: sent.saturating_sub(received),
        drops: k1 - k0,
        achieved,
        daemon_cpu: c1 - c0,
        sender_cpu,
        seconds,
    }
}

/// The highest rate (datagrams/s) with nothing lost: doubling from 2000/s until a loss, then
/// three halvings of the gap; whether the sender could not go faster; the step at that rate.
fn lossless_rate(daemon: &StatsdDaemon, packets: &[Vec<u8>], d: Duration, quick: bool) -> (f64, bool, Option<Step>) {
    let (mut good, mut bad, mut best) = (0.0f64, None::<f64>, None);
    let mut rate = 2000.0;
    let mut sender_bound = false;
    let mut short_tries = 0;
    for _ in 0..if quick { 2 } else { 16 } {
        let step = statsd_step(daemon, packets, rate, d);
        let ok = step.lost == 0 && step.drops == 0;
        eprintln!(
            "  {} at {rate:.0}/s: sent {}, lost {}, kernel drops {}, achieved {:.0}/s, CPU daemon {:.0}% sender {:.0}%",
            daemon.name,
            step.sent,
            step.lost,
            step.drops,
            step.achieved,
            step.daemon_cpu / step.seconds * 100.0,
            step.sender_cpu / step.seconds * 100.0,
        );
        if ok {
            let achieved = step.achieved;
            if achieved > good {
                good = achieved;
                best = Some(step);
            }
            if achieved < rate * 0.95 {
                // A sender that fell behind once may have been held up by another process on
                // the shared cores: the same rate is tried twice more before calling it the limit.
                short_tries += 1;
                if short_tries < 3 {
                    continue;
                }
                sender_bound = true;
                break;
            }
            short_tries = 0;
        } else {
            bad = Some(rate);
        }
        rate = match bad {
            None => rate * 2.0,
            Some(b) if b - good > good * 0.1 => (good + b) / 2.0,
            Some(_) => break,
        };
    }
    (good, sender_bound, best)
}

fn statsd_lines(n: usize, lines_per_packet: usize) -> Vec<Vec<u8>> {
    let line = |i: usize| match i % 4 {
        0 => format!("bench.requests.{}:1|c", i % 250),
        1 => format!("bench.latency.{}:{}|ms", i % 250, i % 1000),
        2 => format!("bench.depth.{}:{}|g", i % 250, i % 100),
        _ => format!("bench.sampled.{}:2|c|@0.5", i % 250),
    };
    (0..n)
        .map(|p| {
            (0..lines_per_packet).map(|l| line(p * lines_per_packet + l)).collect::<Vec<_>>().join("\n").into_bytes()
        })
        .collect()
}

/// The shipper's StatsD input (flush 1 s, InfluxDB sink answering at once) and the reference
/// daemon (flush 1 s, Graphite sink), freshly started, and how each counts what it received.
struct StatsdPair {
    agent: Arc<Agent>,
    ours: StatsdDaemon,
    theirs: StatsdDaemon,
    reference_sink: puypuy_tests::statsd::GraphiteSink,
    _shipper: Proc,
    /// Holds the reference's process and its config dir (which it watches).
    _reference: puypuy_tests::statsd::ReferenceStatsd,
}

impl StatsdPair {
    fn start() -> StatsdPair {
        let (sink_port, _sink) = http_sink();
        let port = free_port();
        let agent = Arc::new(Agent::new(
            "self_metrics: no\nmax_cache: 1000000",
            &format!(
                "{}[Relay]\nstatsd_listen = {port}\nstatsd_flush_seconds = 1\nstatsd_max_series = 200000\n",
                influx_tsdb(sink_port)
            ),
        ));
        let shipper = agent.start_shipper();
        wait_for(Duration::from_secs(10), "the StatsD input", || agent.log().contains("StatsD input on").then_some(()));
        let pid = shipper.pid();
        // Its counts from the status file (rewritten every 1 s).
        let status_agent = Arc::clone(&agent);
        let ours = StatsdDaemon {
            name: "PuyPuy shipper",
            pid,
            port,
            received: Box::new(move || {
                status_agent.status_metric(pid, "puypuy_relay_packets{input=statsd}").map_or(0, |v| v as u64)
            }),
            settle: Duration::from_millis(2200),
        };
        // The reference's counts from its own flushes into its sink.
        let reference = puypuy_tests::statsd::ReferenceStatsd::start(1, &[90.0]);
        let reference_sink = reference.sink.clone();
        let counted = reference.sink.clone();
        let theirs = StatsdDaemon {
            name: "statsd 0.9 (node)",
            pid: reference.proc.pid(),
            port: reference.port,
            received: Box::new(move || {
                counted
                    .flushes()
                    .iter()
                    .flatten()
                    .filter(|(n, _, _)| n == "stats_counts.statsd.packets_received")
                    .map(|(_, v, _)| *v as u64)
                    .sum()
            }),
            settle: Duration::from_millis(2500),
        };
        StatsdPair { agent, ours, theirs, reference_sink, _shipper: shipper, _reference: reference }
    }
}

fn statsd(b: &mut Bench) {
    let d = if b.quick { Duration::from_millis(300) } else { Duration::from_secs(3) };
    let pair = StatsdPair::start();
    let (ours, theirs) = (&pair.ours, &pair.theirs);
    b.section(
        &format!("7. StatsD input: lossless UDP rate, same stream to both ({} s per step)", d.as_secs_f64()),
        "| daemon | lines per datagram | datagrams/s lossless | lines/s lossless | CPU at that rate: daemon, sender (% of a core) | CPU µs per line at the reference's rate |",
    );
    let mut json = serde_json::Map::new();
    let mut ratios = Vec::new();
    let percent = |step: &Option<Step>| {
        step.as_ref().map_or((0.0, 0.0), |s| (s.daemon_cpu / s.seconds * 100.0, s.sender_cpu / s.seconds * 100.0))
    };
    for lines_per_packet in [1usize, 20] {
        let packets = statsd_lines(1000, lines_per_packet);
        let (ref_rate, ref_bound, ref_step) = lossless_rate(theirs, &packets, d, b.quick);
        let (our_rate, our_bound, our_step) = lossless_rate(ours, &packets, d, b.quick);
        // CPU per line, both at the reference's lossless rate.
        let per_line = |daemon: &StatsdDaemon| {
            let step = statsd_step(daemon, &packets, ref_rate.max(1000.0), d);
            step.daemon_cpu / (step.sent * lines_per_packet as u64).max(1) as f64 * 1e6
        };
        let (ref_cpu, our_cpu) = (per_line(theirs), per_line(ours));
        for (name, rate, bound, step, cpu) in [
            (theirs.name, ref_rate, ref_bound, &ref_step, ref_cpu),
            (ours.name, our_rate, our_bound, &our_step, our_cpu),
        ] {
            let mark = if bound { " (sender-bound: at least)" } else { "" };
            let (daemon_pct, sender_pct) = percent(step);
            b.row(&[
                name.into(),
                lines_per_packet.to_string(),
                format!("{rate:.0}{mark}"),
                format!("{:.0}", rate * lines_per_packet as f64),
                format!("{daemon_pct:.0}%, {sender_pct:.0}%"),
                format!("{cpu:.2}"),
            ]);
        }
        ratios.push((lines_per_packet, our_rate / ref_rate.max(1.0), our_bound));
        let (ref_pct, our_pct) = (percent(&ref_step), percent(&our_step));
        json.insert(
            format!("lines_per_datagram_{lines_per_packet}"),
            json!({"reference": {"datagrams_per_second": ref_rate, "sender_bound": ref_bound, "cpu_us_per_line": ref_cpu,
                                 "daemon_cpu_percent": ref_pct.0, "sender_cpu_percent": ref_pct.1},
                   "puypuy": {"datagrams_per_second": our_rate, "sender_bound": our_bound, "cpu_us_per_line": our_cpu,
                              "daemon_cpu_percent": our_pct.0, "sender_cpu_percent": our_pct.1}}),
        );
    }
    for (lines, ratio, bound) in &ratios {
        let at_least = if *bound { "≥ " } else { "" };
        b.md.push_str(&format!(
            "\nLossless rate, {lines} line(s) per datagram, PuyPuy ÷ reference: **{at_least}{ratio:.1}×** (target ≥ 20×).\n"
        ));
    }
    b.json.insert("statsd".into(), Json::Object(json));
}

/// RSS with 10^5 series: 100 000 distinct names (a quarter of each type), 20 lines per datagram,
/// sent slowly enough for both to keep every datagram, then two flushes; each daemon fresh.
fn statsd_memory(b: &mut Bench) {
    let pair = StatsdPair::start();
    let n = if b.quick { 1000 } else { 100_000 };
    let series: Vec<Vec<u8>> = (0..n / 20)
        .map(|p| {
            (0..20)
                .map(|l| {
                    let i = p * 20 + l;
                    match i % 4 {
                        0 => format!("series.c{i}:1|c"),
                        1 => format!("series.t{i}:{}|ms", i % 500),
                        2 => format!("series.g{i}:{i}|g"),
                        _ => format!("series.s{i}:u{}|s", i % 7),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        })
        .collect();
    let rate = 500.0;
    b.section(
        &format!("8. StatsD memory with {n} series ({rate} datagrams/s of 20 lines, RSS two flushes later)"),
        "| daemon | series held | steady RSS MiB | peak RSS MiB |",
    );
    let mut rss_json = serde_json::Map::new();
    for daemon in [&pair.theirs, &pair.ours] {
        // Ten datagrams more than the series (the first ten again): a late last wake-up of the
        // sender must not leave series unsent.
        let step = statsd_step(daemon, &series, rate, Duration::from_secs_f64((series.len() + 10) as f64 / rate));
        let (sent, lost, drops) = (step.sent, step.lost, step.drops);
        thread::sleep(Duration::from_millis(2500));
        let held = if daemon.name == pair.ours.name {
            pair.agent.status_metric(daemon.pid, "puypuy_statsd_series").map_or(0, |v| v as u64)
        } else {
            pair.reference_sink
                .flushes()
                .last()
                .and_then(|f| f.iter().find(|(n, _, _)| n == "statsd.numStats").map(|(_, v, _)| *v as u64))
                .unwrap_or(0)
        };
        let (steady, peak) = rss(daemon.pid);
        eprintln!("  {}: sent {sent}, lost {lost}, kernel drops {drops}, series {held}", daemon.name);
        b.row(&[daemon.name.into(), held.to_string(), mib(steady).to_string(), mib(peak).to_string()]);
        rss_json.insert(daemon.name.into(), json!({"series": held, "rss_bytes": steady, "peak_rss_bytes": peak}));
    }
    b.json.insert("statsd_memory".into(), Json::Object(rss_json));
}
