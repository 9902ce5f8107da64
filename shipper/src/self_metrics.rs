//! The shipper's self-metrics, sent through its own pipeline every `check_period_seconds` with
//! `type=puypuy` (so they are batched, spooled and replayed like any point). All are totals since
//! the shipper started, except the spool's current size and the last send's duration:
//!
//! | metric | meaning |
//! |---|---|
//! | `puypuy_shipper_points_received` | points taken from producers (and these self-metrics) |
//! | `puypuy_shipper_points_invalid` | points refused on arrival (empty name, NaN/inf) |
//! | `puypuy_shipper_points_rate_first` | first samples of rate series: they start the series and make no point |
//! | `puypuy_shipper_points_rate_skipped` | other rate samples without a point: counter reset, not newer than the last |
//! | `puypuy_shipper_points_sent` | points the backend accepted |
//! | `puypuy_shipper_points_spooled` | points written to the spool |
//! | `puypuy_shipper_points_replayed` | spooled points the backend then accepted |
//! | `puypuy_shipper_points_dropped` | producers' points dropped because every bound was full |
//! | `puypuy_shipper_self_points_dropped` | the same, for these self-metrics (also when the shipper's input queue was full) |
//! | `puypuy_shipper_points_rejected` | points the backend refused as invalid (set aside) |
//! | `puypuy_shipper_spool_files`, `puypuy_shipper_spool_bytes` | the spool now |
//! | `puypuy_shipper_backend_errors` (tag `kind`: unreachable, timeout, status, io) | failed sends |
//! | `puypuy_shipper_connections` | producer connections accepted |
//! | `puypuy_shipper_last_send_seconds` | duration of the last send (float) |
//! | `puypuy_shipper_destination_points_received`, `_points_sent`, `_points_spooled`, `_points_replayed`, `_points_dropped`, `_points_rejected`, `_spool_files`, `_up` (tags `output`, `destination`) | with several destinations, each one's (received: the points routed to it; up: 1, or 0 while its sends fail); the `puypuy_shipper_points_*` totals above then add up every destination's |
//! | `puypuy_relay_lines_accepted`, `puypuy_relay_lines_rejected`, `puypuy_relay_connections` (tag `input`: opentsdb, graphite, http, statsd) | per relay input |
//! | `puypuy_relay_refused` (tag `input`) | peers and requests refused at the door: outside `allow`, failed TLS handshake, missing or wrong credentials |
//! | `puypuy_relay_strings_skipped` (tag `input=http`) | string fields of InfluxDB lines, skipped |
//! | `puypuy_relay_packets` (tag `input`: statsd) | UDP datagrams received |
//! | `puypuy_statsd_series` | StatsD series held after the last flush (now) |
//! | `puypuy_statsd_dropped` (tag `reason`: max_series, max_samples) | StatsD samples refused by a bound |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;

use puypuy_common::{schedule, Point};

use crate::batch::Input;
use crate::relay::InputStats;
use crate::stats::{DestinationList, Stats};
use crate::transport::ErrorKind;

/// Each destination's counters, when there are several, and their sums added into the shipper's
/// totals of the same name in `out`.
pub fn destination_points(list: &DestinationList, timestamp: u64, out: &mut Vec<Point>) {
    let list = list.lock().unwrap_or_else(|e| e.into_inner());
    for d in list.iter() {
        let s = &d.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        for (name, a) in [
            ("points_received", &s.points_received),
            ("points_sent", &s.points_sent),
            ("points_spooled", &s.points_spooled),
            ("points_replayed", &s.points_replayed),
            ("points_dropped", &s.points_dropped),
            ("points_rejected", &s.points_rejected),
            ("spool_files", &s.spool_files),
            ("spool_bytes", &s.spool_bytes),
        ] {
            if name != "points_received" {
                let total = format!("puypuy_shipper_{name}");
                if let Some(p) = out.iter_mut().find(|p| p.name == total && p.tags.is_empty()) {
                    if let puypuy_common::Value::Int(v) = &mut p.value {
                        *v += get(a);
                    }
                }
            }
            out.push(
                Point::int(format!("puypuy_shipper_destination_{name}"), timestamp, get(a), "puypuy")
                    .with_tag("output", &d.output)
                    .with_tag("destination", &d.destination),
            );
        }
        out.push(
            Point::int("puypuy_shipper_destination_up", timestamp, 1 - get(&s.backend_down).min(1), "puypuy")
                .with_tag("output", &d.output)
                .with_tag("destination", &d.destination),
        );
    }
}

pub fn points(stats: &Stats, relay: &[Arc<InputStats>], timestamp: u64) -> Vec<Point> {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
    let counters: [(&str, &AtomicU64); 13] = [
        ("puypuy_shipper_points_received", &stats.points_received),
        ("puypuy_shipper_points_invalid", &stats.points_invalid),
        ("puypuy_shipper_points_rate_first", &stats.points_rate_first),
        ("puypuy_shipper_points_rate_skipped", &stats.points_rate_skipped),
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
            ("puypuy_relay_refused", &input.refused),
        ] {
            out.push(Point::int(name, timestamp, get(a), "puypuy").with_tag("input", input.name));
        }
        if input.name == "http" {
            out.push(
                Point::int("puypuy_relay_strings_skipped", timestamp, get(&input.strings_skipped), "puypuy")
                    .with_tag("input", input.name),
            );
        }
        if let Some(statsd) = &input.statsd {
            out.push(
                Point::int("puypuy_relay_packets", timestamp, get(&statsd.packets), "puypuy")
                    .with_tag("input", input.name),
            );
            out.push(Point::int("puypuy_statsd_series", timestamp, get(&statsd.series), "puypuy"));
            for (reason, a) in
                [("max_series", &statsd.dropped_max_series), ("max_samples", &statsd.dropped_max_samples)]
            {
                out.push(Point::int("puypuy_statsd_dropped", timestamp, get(a), "puypuy").with_tag("reason", reason));
            }
        }
    }
    let micros = stats.last_send_micros.load(Ordering::Relaxed) as f64;
    out.push(Point::float("puypuy_shipper_last_send_seconds", timestamp, micros / 1e6, "puypuy"));
    out
}

/// The current self-metrics as JSON: `{"timestamp":…,"pid":…,"metrics":{"name{tag=v}":value,…}}`.
pub fn status_json(points: &[Point], timestamp: u64) -> String {
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
    serde_json::json!({ "timestamp": timestamp, "pid": std::process::id(), "metrics": metrics }).to_string()
}

/// `tmpdir/shipper-status.json`, for `./puypuy.sh status --json`, replaced atomically at start,
/// every period with self-metrics on, and on SIGUSR1.
///
/// Creating a file and renaming it over the old one every second cost about 0.3 ms of CPU each
/// time (a new inode, and the old one freed); that was a fifth of an idle shipper's CPU. Instead
/// two files are kept open, the status and a scratch file beside it: the new text is written
/// into the scratch file and the two names are swapped with `renameat2(RENAME_EXCHANGE)`. A
/// reader always opens a complete file. Text shorter than what a file held is padded with spaces
/// (JSON allows trailing whitespace), so a file is never truncated. Where the filesystem cannot
/// exchange names, it falls back to write-and-rename.
pub struct StatusFile {
    path: std::path::PathBuf,
    scratch_path: std::path::PathBuf,
    /// (scratch file, its length), (status file, its length) once both exist.
    open: Option<[(std::fs::File, usize); 2]>,
}

impl StatusFile {
    pub fn new(path: std::path::PathBuf) -> StatusFile {
        let scratch_path = path.with_extension("tmp");
        StatusFile { path, scratch_path, open: None }
    }

    pub fn write(&mut self, text: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Some([(scratch, scratch_len), _]) = &mut self.open {
            let mut bytes = text.as_bytes().to_vec();
            if bytes.len() < *scratch_len {
                bytes.resize(*scratch_len, b' ');
            }
            let swapped = scratch.write_all_at(&bytes, 0).and_then(|()| {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &self.scratch_path,
                    nix::fcntl::AT_FDCWD,
                    &self.path,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .map_err(std::io::Error::from)
            });
            match swapped {
                Ok(()) => {
                    *scratch_len = bytes.len();
                    if let Some(files) = &mut self.open {
                        files.swap(0, 1);
                    }
                    return Ok(());
                }
                // Deleted behind our back, or a filesystem without RENAME_EXCHANGE: start over.
                Err(e) => {
                    log::debug!("status file: {e}; writing it anew");
                    self.open = None;
                }
            }
        }
        std::fs::write(&self.scratch_path, text)?;
        std::fs::rename(&self.scratch_path, &self.path)?;
        std::fs::write(&self.scratch_path, text)?;
        let open = |p: &std::path::Path| std::fs::OpenOptions::new().write(true).open(p);
        self.open = Some([(open(&self.scratch_path)?, text.len()), (open(&self.path)?, text.len())]);
        Ok(())
    }
}

/// Every period, on the same wall-clock ticks as the collector, when `self_metrics` is on: the
/// self-metrics into the pipeline, and the status file. With them off nothing runs on a timer:
/// the status file is written at start and whenever SIGUSR1 asks for it ([`SelfMetrics::write_status`],
/// which `./puypuy.sh status --json` and the tests send first), since a file rewritten every second
/// for nobody to read cost an idle shipper a wake-up and a tenth of its CPU per cycle.
///
/// This runs in a thread of its own rather than in the batcher, which would save a wake-up per
/// period: the batcher waits whenever delivery is slow (backpressure), and `status --json` must
/// stay fresh exactly then. For the same reason the points are offered to the pipeline without
/// waiting; when its input queue is full they are counted in
/// `puypuy_shipper_self_points_dropped`.
pub struct SelfMetrics {
    stats: Arc<Stats>,
    relay: Vec<Arc<InputStats>>,
    period: Duration,
    status: StatusFile,
    send: bool,
    next: u64,
    destinations: Option<DestinationList>,
}

impl SelfMetrics {
    pub fn new(
        stats: Arc<Stats>,
        relay: Vec<Arc<InputStats>>,
        period: Duration,
        status_file: std::path::PathBuf,
        send: bool,
    ) -> SelfMetrics {
        let next = schedule::next_tick(SystemTime::now(), period);
        SelfMetrics { stats, relay, period, status: StatusFile::new(status_file), send, next, destinations: None }
    }

    /// Reports each destination's counters too (several destinations, see `route`).
    pub fn with_destinations(mut self, list: DestinationList) -> SelfMetrics {
        self.destinations = Some(list);
        self
    }

    /// Whether the self-metrics are sent (`self_metrics`), and so [`run`] has work every period.
    pub fn sends(&self) -> bool {
        self.send
    }

    /// Writes the status file now, with the counters as they are (SIGUSR1).
    pub fn write_status(&mut self) {
        let tick = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.sample(tick);
    }

    /// Once the tick has come: writes the status file and returns the points to send, if any.
    fn run_if_due(&mut self) -> Option<Vec<Point>> {
        let now = SystemTime::now();
        let wait = schedule::until(self.next, now);
        if wait > self.period {
            // The wall clock was set back: follow it rather than wait for the old tick.
            self.next = schedule::next_tick(now, self.period);
            return None;
        }
        if !wait.is_zero() {
            return None;
        }
        let tick = self.next;
        self.next = schedule::next_tick(now, self.period);
        let points = self.sample(tick);
        self.send.then_some(points)
    }

    /// The self-metrics at `tick`, also written to the status file.
    fn sample(&mut self, tick: u64) -> Vec<Point> {
        let mut points = points(&self.stats, &self.relay, tick);
        if let Some(list) = &self.destinations {
            destination_points(list, tick, &mut points);
        }
        if let Err(e) = self.status.write(&status_json(&points, tick)) {
            log::debug!("cannot write {}: {e}", self.status.path.display());
        }
        points
    }
}

/// The self-metrics thread: sleeps to each tick, one sleep per period (no polling), and offers the
/// points to the pipeline; the process exits without waiting for this thread. Shared with the
/// main thread, which writes the status file on SIGUSR1.
pub fn run(shared: Arc<Mutex<SelfMetrics>>, tx: Sender<Input>) {
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let next = lock().next;
        std::thread::sleep(schedule::until(next, SystemTime::now()));
        let mut metrics = lock();
        let Some(points) = metrics.run_if_due() else { continue };
        let stats = Arc::clone(&metrics.stats);
        drop(metrics);
        let count = points.len() as u64;
        match tx.try_send(Input::SelfMetrics(points)) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                stats.self_points_dropped.fetch_add(count, Ordering::Relaxed);
                stats.self_points_unqueued.fetch_add(count, Ordering::Relaxed);
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StatusFile;

    #[test]
    fn status_file_is_replaced_whole_and_shorter_text_padded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shipper-status.json");
        let mut status = StatusFile::new(path.clone());
        let texts = [r#"{"a":1000000}"#, r#"{"a":2}"#, r#"{"a":3,"b":44444444}"#, r#"{"a":4}"#];
        for text in texts {
            status.write(text).expect("write");
            let read = std::fs::read_to_string(&path).expect("read");
            assert_eq!(read.trim_end_matches(' '), text);
            let value: serde_json::Value = serde_json::from_str(&read).expect("valid JSON");
            assert_eq!(value, serde_json::from_str::<serde_json::Value>(text).expect("json"));
        }
        // Removed behind its back (a cleaned tmpdir): written anew.
        std::fs::remove_file(&path).expect("remove");
        status.write(r#"{"a":5}"#).expect("write after removal");
        assert_eq!(std::fs::read_to_string(&path).expect("read").trim_end(), r#"{"a":5}"#);
    }
}
