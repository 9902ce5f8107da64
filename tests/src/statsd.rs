//! The reference StatsD daemon for the suite and the bench: the `statsd` npm package 0.9 (installed
//! by `tests/run.sh` with `npm install` in `tests/node/`) run by Node with its Graphite backend
//! into [`GraphiteSink`], a plaintext receiver that keeps each flush (the backend opens one TCP
//! connection per flush). Also the readers of the shipper's File backend output that the StatsD
//! tests compare with it.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::{free_port, repo_root, require, wait_for, Proc};

pub const NODE_HINT: &str = "run ./tests/run.sh, which installs nodejs and runs `npm install` in tests/node/";

/// One metric as the Graphite plaintext protocol carries it: name, value, timestamp.
pub type GraphiteLine = (String, f64, u64);

/// The folder of the npm packages the suite installs (`tests/node/node_modules`).
pub fn node_modules() -> PathBuf {
    let dir = repo_root().join("tests/node/node_modules");
    assert!(
        dir.join("statsd/stats.js").is_file(),
        "the statsd npm package is missing from {}: {NODE_HINT}",
        dir.display()
    );
    dir
}

pub fn node() -> PathBuf {
    require("node")
}

/// Receives Graphite plaintext; every connection is one flush, kept in arrival order. A clone
/// reads the same flushes.
#[derive(Clone)]
pub struct GraphiteSink {
    pub port: u16,
    flushes: Arc<Mutex<Vec<Vec<GraphiteLine>>>>,
}

impl GraphiteSink {
    pub fn start() -> GraphiteSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("sink bind");
        let port = listener.local_addr().expect("sink addr").port();
        let flushes = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&flushes);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut stream) = conn else { continue };
                let mut text = String::new();
                let _ = stream.read_to_string(&mut text);
                let flush: Vec<GraphiteLine> = text
                    .lines()
                    .filter_map(|l| {
                        let mut f = l.split(' ');
                        Some((f.next()?.to_string(), f.next()?.parse().ok()?, f.next()?.parse().ok()?))
                    })
                    .collect();
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(flush);
            }
        });
        GraphiteSink { port, flushes }
    }

    pub fn flushes(&self) -> Vec<Vec<GraphiteLine>> {
        self.flushes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The reference daemon on a free UDP port, flushing every `flush_seconds` into its sink.
pub struct ReferenceStatsd {
    pub port: u16,
    pub sink: GraphiteSink,
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl ReferenceStatsd {
    pub fn start(flush_seconds: u64, percentiles: &[f64]) -> ReferenceStatsd {
        let modules = node_modules();
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = GraphiteSink::start();
        let (port, mgmt) = (free_port(), free_port());
        let percentiles: Vec<String> = percentiles.iter().map(f64::to_string).collect();
        let config = format!(
            "{{ port: {port}, address: \"127.0.0.1\", mgmt_port: {mgmt}, mgmt_address: \"127.0.0.1\", \
             graphiteHost: \"127.0.0.1\", graphitePort: {}, flushInterval: {}, percentThreshold: [{}], \
             backends: [\"./backends/graphite\"] }}\n",
            sink.port,
            flush_seconds * 1000,
            percentiles.join(", ")
        );
        let config_path = dir.path().join("config.js");
        std::fs::write(&config_path, config).expect("write statsd config");
        let log = std::fs::File::create(dir.path().join("statsd.log")).expect("statsd log");
        let proc = Proc::spawn(
            "statsd (node)",
            Command::new(node())
                .arg(modules.join("statsd/stats.js"))
                .arg(&config_path)
                .current_dir(modules.join("statsd"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        );
        // The management port opens with the UDP server.
        wait_for(Duration::from_secs(20), "the reference statsd's management port", || {
            std::net::TcpStream::connect(("127.0.0.1", mgmt)).is_ok().then_some(())
        });
        ReferenceStatsd { port, sink, proc, _dir: dir }
    }
}

/// Names the reference gives its own counters and timings (`statsd.numStats`,
/// `stats.statsd.processing_time`, `stats_counts.statsd.packets_received`, …): PuyPuy reports these
/// in its self-metrics instead.
pub fn is_reference_internal(name: &str) -> bool {
    ["statsd.", "stats.statsd.", "stats_counts.statsd.", "stats.gauges.statsd."].iter().any(|p| name.starts_with(p))
}

/// A point the File backend wrote: name, tags, value.
pub type FilePoint = (String, BTreeMap<String, String>, f64);

/// One line of the File backend (InfluxDB line protocol, seconds): name, tags, value, timestamp.
pub fn parse_file_line(line: &str) -> Option<(String, BTreeMap<String, String>, f64, u64)> {
    let mut fields = line.rsplitn(3, ' ');
    let timestamp = fields.next()?.parse().ok()?;
    let value = fields.next()?.strip_prefix("value=")?.trim_end_matches('i').parse().ok()?;
    let mut series = fields.next()?.split(',');
    let name = series.next()?.to_string();
    let tags = series.filter_map(|t| t.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Some((name, tags, value, timestamp))
}

/// The StatsD points (`type=statsd`) a File backend wrote, by flush time.
pub fn file_flushes(path: &Path) -> BTreeMap<u64, Vec<FilePoint>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: BTreeMap<u64, Vec<_>> = BTreeMap::new();
    for (name, tags, value, ts) in text.lines().filter_map(parse_file_line) {
        if tags.get("type").map(String::as_str) == Some("statsd") {
            out.entry(ts).or_default().push((name, tags, value));
        }
    }
    out
}
