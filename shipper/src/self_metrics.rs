//! The shipper's self-metrics, sent through its own pipeline every `check_period_seconds` with
//! `type=puypuy` (so they are batched, spooled and replayed like any point). All are totals since
//! the shipper started, except the spool's current size and the last send's duration:
//!
//! | metric | meaning |
//! |---|---|
//! | `puypuy_shipper_points_received` | points taken from producers (and these self-metrics) |
//! | `puypuy_shipper_points_invalid` | points refused on arrival (empty name, NaN/inf) |
//! | `puypuy_shipper_points_sent` | points the backend accepted |
//! | `puypuy_shipper_points_spooled` | points written to the spool |
//! | `puypuy_shipper_points_replayed` | spooled points the backend then accepted |
//! | `puypuy_shipper_points_dropped` | producers' points dropped because every bound was full |
//! | `puypuy_shipper_self_points_dropped` | the same, for these self-metrics |
//! | `puypuy_shipper_points_rejected` | points the backend refused as invalid (set aside) |
//! | `puypuy_shipper_spool_files`, `puypuy_shipper_spool_bytes` | the spool now |
//! | `puypuy_shipper_backend_errors` (tag `kind`: unreachable, timeout, status, io) | failed sends |
//! | `puypuy_shipper_connections` | producer connections accepted |
//! | `puypuy_shipper_last_send_seconds` | duration of the last send (float) |
//! | `puypuy_relay_lines_accepted`, `puypuy_relay_lines_rejected`, `puypuy_relay_connections` (tag `input`: opentsdb, graphite, http) | per relay input |

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;
use puypuy_common::{schedule, Point};

use crate::pipeline::{Input, Stats};
use crate::relay::server::InputStats;
use crate::transport::ErrorKind;

pub fn points(stats: &Stats, relay: &[Arc<InputStats>], timestamp: u64) -> Vec<Point> {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
    let counters: [(&str, &AtomicU64); 11] = [
        ("puypuy_shipper_points_received", &stats.points_received),
        ("puypuy_shipper_points_invalid", &stats.points_invalid),
        ("puypuy_shipper_points_sent", &stats.points_sent),
        ("puypuy_shipper_points_spooled", &stats.points_spooled),
        ("puypuy_shipper_points_replayed", &stats.points_replayed),
        ("puypuy_shipper_points_dropped", &stats.points_dropped),
        ("puypuy_shipper_self_points_dropped", &stats.self_points_dropped),
        ("puypuy_shipper_points_rejected", &stats.points_rejected),
        ("puypuy_shipper_spool_files", &stats.spool_files),
        ("puypuy_shipper_spool_bytes", &stats.spool_bytes),
        ("puypuy_shipper_connections", &stats.connections),
    ];
    let mut out: Vec<Point> = counters.iter().map(|(name, a)| Point::int(*name, timestamp, get(a), "puypuy")).collect();
    for kind in ErrorKind::ALL {
        out.push(
            Point::int("puypuy_shipper_backend_errors", timestamp, stats.errors_of(kind) as i64, "puypuy")
                .with_tag("kind", kind.name()),
        );
    }
    for input in relay {
        for (name, a) in [
            ("puypuy_relay_lines_accepted", &input.accepted),
            ("puypuy_relay_lines_rejected", &input.rejected),
            ("puypuy_relay_connections", &input.connections),
        ] {
            out.push(Point::int(name, timestamp, get(a), "puypuy").with_tag("input", input.name));
        }
    }
    let micros = stats.last_send_micros.load(Ordering::Relaxed) as f64;
    out.push(Point::float("puypuy_shipper_last_send_seconds", timestamp, micros / 1e6, "puypuy"));
    out
}

/// Writes the current self-metrics as JSON (`{"timestamp":…,"metrics":{"name{tag=v}":value,…}}`)
/// to `path` atomically, for `./puypuy.sh status --json`.
pub fn write_status(path: &std::path::Path, points: &[Point], timestamp: u64) -> std::io::Result<()> {
    let mut metrics = serde_json::Map::new();
    for p in points {
        let mut key = p.name.clone();
        if !p.tags.is_empty() {
            let tags: Vec<String> = p.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            key.push_str(&format!("{{{}}}", tags.join(",")));
        }
        let value = match p.value {
            puypuy_common::Value::Int(i) => serde_json::Value::from(i),
            puypuy_common::Value::Float(f) => serde_json::Value::from(f),
        };
        metrics.insert(key, value);
    }
    let body = serde_json::json!({ "timestamp": timestamp, "pid": std::process::id(), "metrics": metrics });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(&tmp, path)
}

/// Every period, on the same wall-clock ticks as the collector, until `stop`: the status file
/// always, the self-metrics into the pipeline when `send` is true.
pub fn run(
    tx: Sender<Input>,
    stats: Arc<Stats>,
    relay: Vec<Arc<InputStats>>,
    period: Duration,
    stop: Arc<AtomicBool>,
    status_file: std::path::PathBuf,
    send: bool,
) {
    loop {
        let tick = schedule::next_tick(SystemTime::now(), period);
        // One sleep per period (no polling); the process exits without waiting for this thread.
        std::thread::sleep(schedule::until(tick, SystemTime::now()));
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let points = points(&stats, &relay, tick);
        if let Err(e) = write_status(&status_file, &points, tick) {
            log::debug!("cannot write {}: {e}", status_file.display());
        }
        if send && tx.send(Input::SelfMetrics(points)).is_err() {
            return;
        }
    }
}
