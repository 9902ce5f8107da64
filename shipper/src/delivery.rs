//! The delivery loop: sends batches to the backend, spools them while it is down, replays the
//! spool once it answers, sets refused points aside and acknowledges frames.
//!
//! A frame is acknowledged only once each of its points (all in one batch) was accepted by the
//! backend, or written and fsynced to the spool, or refused by the backend as invalid (set aside in
//! `tmpdir/rejected/`: resending could not help), or dropped because every bound was reached
//! (counted). Until then the producer keeps the frame and resends it after a reconnect, so a
//! shipper killed with -9 loses nothing. Its ack's status comes from its own points, not from the
//! other frames of its batch (see [`crate::batch::BatchAck`]).
//!
//! While the backend is down, new batches go straight to the spool. Once it answers again, spooled
//! batches are replayed oldest first, taking turns with new batches so that neither starves. If the
//! spool cannot be written (disk full, read-only), batches wait in memory, unacknowledged, within
//! `max_cache`; the spool is tried again for each new batch.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use puypuy_common::Point;

use crate::batch::Batch;
use crate::rejected::RejectedDir;
use crate::spool::{Pushed, Spool};
use crate::stats::Stats;
use crate::tags::HostTagging;
use crate::transport::{ErrorKind, OnRejection, SendError, Transport};

pub struct DeliverySettings {
    /// Most batches held in memory when the spool cannot be written (`max_cache`).
    pub max_batches: usize,
    /// How long to keep delivering (or spooling) after shutdown began.
    pub shutdown_grace: Duration,
    /// `None` when the spool folder could not be opened at start: memory only.
    pub spool: Option<Spool>,
    pub rejected: RejectedDir,
    /// A new transport to use from now on (a SIGHUP changed `[TSDB]`).
    pub new_transport: Arc<std::sync::Mutex<Option<Box<dyn Transport>>>>,
    /// How long to wait before retrying a backend that failed.
    pub backoff: Backoff,
}

/// Retries back off exponentially from `first` to `max`, with a jitter below `first`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    /// Capped so that a recovered backend is noticed quickly.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { first: Duration::from_millis(200), max: Duration::from_secs(5) }
    }
}

struct Outage {
    since: Instant,
    last_logged: Instant,
    last_message: String,
}

/// Where the batch being sent came from.
enum Source {
    Memory(Batch),
    Spool {
        seq: u64,
        /// How many points the file holds, whether they are the shipper's own, and whose host
        /// tags they leave with.
        in_file: u64,
        own: bool,
        tagging: HostTagging,
        points: Vec<Point>,
    },
}

/// What is left to send of the oldest spool file after an attempt that failed.
struct Remainder {
    seq: u64,
    in_file: u64,
    own: bool,
    points: Vec<Point>,
}

impl Source {
    fn points(&self) -> &[Point] {
        match self {
            Source::Memory(b) => &b.points,
            Source::Spool { points, .. } => points,
        }
    }

    fn tagging(&self) -> HostTagging {
        match self {
            Source::Memory(b) => b.tagging,
            Source::Spool { tagging, .. } => *tagging,
        }
    }
}

/// What became of one point of the batch being sent.
#[derive(Clone)]
enum Fate {
    Pending,
    Sent,
    /// Refused by the backend, with its message.
    Rejected(String),
}

/// The points whose fate is still pending.
fn pending(points: Vec<Point>, fates: &[Fate]) -> Vec<Point> {
    points.into_iter().zip(fates).filter(|(_, f)| matches!(f, Fate::Pending)).map(|(p, _)| p).collect()
}

/// Records in the acks of the batch's frames which of their points the backend refused, and keeps
/// only the points still pending.
fn settle(batch: &mut Batch, fates: &[Fate]) {
    let fate = |i: usize| fates.get(i).unwrap_or(&Fate::Pending);
    batch.keep_pending(|i| matches!(fate(i), Fate::Pending), |i| matches!(fate(i), Fate::Rejected(_)));
}

/// The delivery loop's state; [`Delivery::run`] drives it from the batcher's channel.
pub struct Delivery {
    transport: Box<dyn Transport>,
    new_transport: Arc<std::sync::Mutex<Option<Box<dyn Transport>>>>,
    shutdown_grace: Duration,
    backoff_settings: Backoff,
    spool: Option<Spool>,
    rejected: RejectedDir,
    memory: VecDeque<Batch>,
    max_batches: usize,
    stats: Arc<Stats>,
    outage: Option<Outage>,
    backoff: Duration,
    next_attempt: Instant,
    replay_turn: bool,
    spool_failing: bool,
    last_drop_log: Option<Instant>,
    last_backend_note: String,
    /// What is left to send of the oldest spool file after an attempt that failed, so that a retry
    /// does not resend what the backend already took, and so that only that is counted as dropped
    /// when the spool deletes the file to make room.
    replay_remainder: Option<Remainder>,
    /// One of several destinations: never push back on the batches coming in (that would hold
    /// the others back); what it cannot send at once goes to its spool. See [`Delivery::with_spill`].
    spill: bool,
    /// The last send took over [`SLOW_SEND`]: with `spill`, this destination is the slow one.
    slow: bool,
    /// Set by the router when this destination fell behind the others (see [`Delivery::with_lag_flag`]).
    lagging: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Batches one of several destinations holds in memory before it stops taking more (and the
/// router, and with it the inputs, wait: backpressure, as with one destination). Spooling every
/// batch beyond two, as first built, made destinations that all merely kept pace under a flood
/// spool nearly every batch, an fsync each, until their spools filled and dropped (the ring bench
/// in BENCHMARKS.md). Only a destination that fails ([`Outage`]) or whose sends take over
/// [`SLOW_SEND`] spools what comes, so that it never holds the others back.
pub const SPILL_AFTER: usize = 32;

/// A send slower than this makes one of several destinations the slow one: it spools what comes.
pub const SLOW_SEND: Duration = Duration::from_secs(2);

pub fn run_delivery(rx: Receiver<Batch>, transport: Box<dyn Transport>, settings: DeliverySettings, stats: Arc<Stats>) {
    Delivery::new(transport, settings, stats).run(rx);
}

impl Delivery {
    pub fn new(transport: Box<dyn Transport>, settings: DeliverySettings, stats: Arc<Stats>) -> Delivery {
        let d = Delivery {
            transport,
            new_transport: settings.new_transport,
            shutdown_grace: settings.shutdown_grace,
            backoff_settings: settings.backoff,
            spool: settings.spool,
            rejected: settings.rejected,
            memory: VecDeque::new(),
            max_batches: settings.max_batches.max(1),
            stats,
            outage: None,
            backoff: settings.backoff.first,
            next_attempt: Instant::now(),
            replay_turn: false,
            spool_failing: false,
            last_drop_log: None,
            last_backend_note: String::new(),
            replay_remainder: None,
            spill: false,
            slow: false,
            lagging: None,
        };
        if let Some(s) = &d.spool {
            if !s.is_empty() {
                log::info!("{} spooled batches ({} points) from an earlier run will be replayed", s.len(), s.points());
            }
        }
        d.update_spool_stats();
        d
    }

    /// For one of several destinations: up to [`SPILL_AFTER`] batches wait in memory; one that
    /// fails or is slow ([`SLOW_SEND`]) takes every batch and spools (and acknowledges) what it
    /// cannot send, as during an outage, so that it never makes the router, and with it every other
    /// destination, wait. Without it (one destination), a slow backend slows the producers
    /// (backpressure) after two batches.
    pub fn with_spill(mut self, spill: bool) -> Delivery {
        self.spill = spill;
        self
    }

    /// For one of several destinations: the flag the router sets when this destination's queue is
    /// full while another's is not. It then takes every batch and spools what it cannot send, as
    /// a slow one does, until it has caught up (nothing in memory or in the spool), and clears it.
    pub fn with_lag_flag(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Delivery {
        self.lagging = Some(flag);
        self
    }

    /// Clears the router's flag once nothing waits, in memory or in the spool.
    fn note_caught_up(&self) {
        if let Some(flag) = &self.lagging {
            if self.memory.is_empty() && self.spool.as_ref().is_none_or(|s| s.is_empty()) {
                flag.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Behind: its last send was slow, or the router saw it fall behind the others.
    fn behind(&self) -> bool {
        self.slow || self.lagging.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Delivers what comes from `rx` until the batcher closes it, then what is held, within
    /// `shutdown_grace`.
    pub fn run(mut self, rx: Receiver<Batch>) {
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            let reloaded = self.new_transport.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(t) = reloaded {
                self.replace_transport(t);
            }
            let has_work = !self.memory.is_empty() || self.spool.as_ref().is_some_and(|s| !s.is_empty());
            // While the backend keeps up, take a new batch only when the one in hand is sent, so that
            // a slow backend slows the producers (backpressure) instead of filling memory. During an
            // outage every batch goes to the spool at once.
            let can_take = self.can_take();
            if shutdown_deadline.is_none() && can_take {
                let received = if has_work {
                    match crate::wait::recv_until(&rx, Some(self.next_attempt.max(Instant::now()))) {
                        Ok(b) => Some(b),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            shutdown_deadline = Some(Instant::now() + self.shutdown_grace);
                            None
                        }
                    }
                } else {
                    match crate::wait::recv_until(&rx, None) {
                        Ok(b) => Some(b),
                        Err(_) => {
                            shutdown_deadline = Some(Instant::now() + self.shutdown_grace);
                            None
                        }
                    }
                };
                if let Some(b) = received {
                    self.accept(b);
                }
                while self.can_take() {
                    match rx.try_recv() {
                        Ok(b) => self.accept(b),
                        Err(_) => break,
                    }
                }
            } else if shutdown_deadline.is_none() {
                if let Some(wait) = self.next_attempt.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait.min(Duration::from_millis(100)));
                }
            }
            if let Some(deadline) = shutdown_deadline {
                if self.shutdown_step(deadline) {
                    return;
                }
                continue;
            }
            if Instant::now() >= self.next_attempt {
                self.attempt();
            }
            self.note_caught_up();
        }
    }
}

impl Delivery {
    /// Switches to the transport of a reloaded config. Every reload brings one (the host's tags may
    /// have changed); only a change of backend is worth a line in the log. True when it changed.
    fn replace_transport(&mut self, t: Box<dyn Transport>) -> bool {
        let changed = t.describe() != self.transport.describe();
        if changed {
            log::info!("delivering to {} from now on", t.describe());
        } else {
            log::debug!("reloaded: still delivering to {}", t.describe());
        }
        if let Some(s) = self.spool.as_mut() {
            s.set_backend(&t.describe_backend());
        }
        self.transport = t;
        self.outage = None;
        self.next_attempt = Instant::now();
        changed
    }

    /// Whether a new batch is taken in now (else the channel fills and the sender waits).
    fn can_take(&self) -> bool {
        let held = if self.spill && !self.behind() { SPILL_AFTER } else { 2 };
        self.outage.is_some() || (self.spill && self.behind()) || self.memory.len() < held
    }

    fn accept(&mut self, batch: Batch) {
        if self.outage.is_some()
            || (self.spill && self.behind() && self.memory.len() >= 2 && self.spool.is_some() && !self.spool_failing)
        {
            self.store(batch);
        } else {
            self.memory.push_back(batch);
            self.bound_memory();
        }
    }

    /// Spools a batch and acknowledges it; keeps it in memory when the spool cannot be written.
    fn store(&mut self, batch: Batch) {
        let Some(spool) = self.spool.as_mut() else {
            self.memory.push_back(batch);
            self.bound_memory();
            return;
        };
        let files_before = spool.len();
        match spool.push(&batch.points, batch.own, batch.tagging) {
            Ok(Pushed::Stored { mut dropped_points, mut dropped_own }) => {
                // Room is made by deleting the oldest file first, which is the one partly replayed
                // if any: of it, only the points not yet sent are lost.
                if spool.len() <= files_before {
                    if let Some(r) = self.replay_remainder.take() {
                        let sent = r.in_file.saturating_sub(r.points.len() as u64);
                        let dropped = if r.own { &mut dropped_own } else { &mut dropped_points };
                        *dropped = dropped.saturating_sub(sent);
                    }
                }
                if self.spool_failing {
                    log::info!("the spool is writable again");
                    self.spool_failing = false;
                }
                self.stats.points_spooled.fetch_add(batch.points.len() as u64, Ordering::Relaxed);
                self.stats.points_spool_evicted.fetch_add(dropped_points + dropped_own, Ordering::Relaxed);
                self.count_dropped(dropped_points, dropped_own, "spool full: dropped its oldest batch");
                batch.ack_settled();
            }
            Ok(Pushed::Refused) => {
                let (p, o) = if batch.own { (0, batch.points.len() as u64) } else { (batch.points.len() as u64, 0) };
                self.count_dropped(p, o, "spool full (cache_drop: newest): dropped the new batch");
                batch.ack_dropped();
            }
            Err(e) => {
                if !self.spool_failing {
                    log::error!(
                        "cannot write to the spool: {e}; holding batches in memory (at most {}) until it can",
                        self.max_batches
                    );
                    self.spool_failing = true;
                }
                self.memory.push_back(batch);
                self.bound_memory();
            }
        }
        self.update_spool_stats();
    }

    fn bound_memory(&mut self) {
        while self.memory.len() > self.max_batches {
            if let Some(old) = self.memory.pop_front() {
                let (p, o) = if old.own { (0, old.points.len() as u64) } else { (old.points.len() as u64, 0) };
                self.count_dropped(p, o, "memory queue full: dropped its oldest batch");
                old.ack_dropped();
            }
        }
    }

    fn count_dropped(&mut self, points: u64, own: u64, why: &str) {
        if points == 0 && own == 0 {
            return;
        }
        let total = self.stats.points_dropped.fetch_add(points, Ordering::Relaxed) + points;
        self.stats.self_points_dropped.fetch_add(own, Ordering::Relaxed);
        if self.last_drop_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            log::error!("{why} ({} points); {total} points dropped since start", points + own);
            self.last_drop_log = Some(Instant::now());
        }
    }

    fn update_spool_stats(&self) {
        let (files, bytes) = self.spool.as_ref().map(|s| (s.len() as u64, s.bytes())).unwrap_or((0, 0));
        self.stats.spool_files.store(files, Ordering::Relaxed);
        self.stats.spool_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Takes the next batch to send: new data and replayed data take turns.
    fn next_source(&mut self) -> Option<Source> {
        let spool_has = self.spool.as_ref().is_some_and(|s| !s.is_empty());
        self.replay_turn = !self.replay_turn;
        if !(self.memory.is_empty() || spool_has && self.replay_turn) {
            return self.memory.pop_front().map(Source::Memory);
        }
        if let Some(sp) = self.spool.as_mut().and_then(Spool::oldest) {
            if sp.backend != self.transport.describe_backend() && self.last_backend_note != sp.backend {
                log::info!(
                    "replaying spool files written for {} to the configured {}",
                    sp.backend,
                    self.transport.describe_backend()
                );
                self.last_backend_note = sp.backend.clone();
            }
            let (in_file, points) = match self.replay_remainder.take() {
                Some(r) if r.seq == sp.seq => (r.in_file, r.points),
                _ => (sp.points.len() as u64, sp.points),
            };
            return Some(Source::Spool { seq: sp.seq, in_file, own: sp.own, tagging: sp.tagging, points });
        }
        self.update_spool_stats();
        self.memory.pop_front().map(Source::Memory)
    }

    fn attempt(&mut self) {
        let Some(source) = self.next_source() else { return };
        let started = Instant::now();
        let mut fates = vec![Fate::Pending; source.points().len()];
        let result = self.send_in_requests(source.points(), source.tagging(), &mut fates);
        self.stats.last_send_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.slow = started.elapsed() > SLOW_SEND;
        // What a split got through is counted even when a later part failed: it is never resent.
        let sent = fates.iter().filter(|f| matches!(f, Fate::Sent)).count() as u64;
        let rejected: Vec<(Point, String)> = source
            .points()
            .iter()
            .zip(&fates)
            .filter_map(|(p, f)| match f {
                Fate::Rejected(message) => Some((p.clone(), message.clone())),
                _ => None,
            })
            .collect();
        self.stats.points_sent.fetch_add(sent, Ordering::Relaxed);
        if !rejected.is_empty() {
            self.set_aside(&rejected, source.tagging());
        }
        if let Source::Spool { .. } = source {
            self.stats.points_replayed.fetch_add(sent, Ordering::Relaxed);
            self.stats.points_replay_rejected.fetch_add(rejected.len() as u64, Ordering::Relaxed);
        }
        match result {
            Ok(()) => {
                self.stats.backend_down.store(0, Ordering::Relaxed);
                if let Some(o) = self.outage.take() {
                    log::info!(
                        "{} accepts data again after {:.0?}; replaying {} spooled batches",
                        self.transport.describe(),
                        o.since.elapsed(),
                        self.spool.as_ref().map(Spool::len).unwrap_or(0)
                    );
                }
                self.backoff = self.backoff_settings.first;
                match source {
                    Source::Memory(mut batch) => {
                        log::debug!("sent {sent} points in {:.1?}", started.elapsed());
                        settle(&mut batch, &fates);
                        batch.ack_settled();
                    }
                    Source::Spool { seq, .. } => {
                        if let Some(s) = self.spool.as_mut() {
                            s.remove(seq);
                        }
                        self.update_spool_stats();
                    }
                }
            }
            Err((kind, message)) => {
                self.stats.error(kind).fetch_add(1, Ordering::Relaxed);
                self.stats.backend_down.store(1, Ordering::Relaxed);
                let spooled = self.spool.as_ref().map(Spool::len).unwrap_or(0);
                match &mut self.outage {
                    None => {
                        log::warn!("{message}; spooling and retrying ({spooled} batches spooled)");
                        self.outage =
                            Some(Outage { since: Instant::now(), last_logged: Instant::now(), last_message: message });
                    }
                    Some(o) => {
                        if o.last_message != message || o.last_logged.elapsed() >= Duration::from_secs(60) {
                            log::warn!(
                                "{message}; still failing after {:.0?}, {spooled} batches spooled",
                                o.since.elapsed()
                            );
                            o.last_logged = Instant::now();
                            o.last_message = message;
                        }
                    }
                }
                // Exponential backoff with a jitter below `first` (from the clock), capped by `max`.
                let first = self.backoff_settings.first.as_nanos().max(1) as u64;
                let noise = u64::from(started.elapsed().subsec_nanos()).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
                let jitter = Duration::from_nanos(noise % first);
                self.next_attempt = Instant::now() + self.backoff + jitter;
                self.backoff = (self.backoff * 2).min(self.backoff_settings.max);
                // Only the points still pending wait for the next attempt.
                match source {
                    Source::Memory(mut batch) => {
                        settle(&mut batch, &fates);
                        self.store(batch);
                        // Everything else waiting in memory goes to the spool too.
                        let waiting: Vec<Batch> = self.memory.drain(..).collect();
                        for b in waiting {
                            self.store(b);
                        }
                    }
                    // The file stays as it is (a crash replays it whole); until it is replayed
                    // again in this run, what is left of it is remembered.
                    Source::Spool { seq, in_file, own, points, .. } => {
                        self.replay_remainder = Some(Remainder { seq, in_file, own, points: pending(points, &fates) });
                    }
                }
            }
        }
    }

    /// Sends the points in requests of at most the transport's `max_points_per_request`, one after
    /// the other, so that each answer is about the points of one request: what a request got
    /// through keeps its fate when a later one fails or is refused, and is never sent again.
    fn send_in_requests(
        &mut self,
        points: &[Point],
        tagging: HostTagging,
        fates: &mut [Fate],
    ) -> Result<(), (ErrorKind, String)> {
        let max = self.transport.max_points_per_request().max(1);
        for (request, request_fates) in points.chunks(max).zip(fates.chunks_mut(max)) {
            self.send_keeping_good(request, tagging, request_fates)?;
        }
        Ok(())
    }

    /// Sends the points in one request; on a rejection of a backend that refuses whole requests, bisects to keep
    /// the good points. Records in `fates` what became of each point: on a retryable error, the
    /// parts sent or refused before it keep their fate and the rest stays pending.
    fn send_keeping_good(
        &mut self,
        points: &[Point],
        tagging: HostTagging,
        fates: &mut [Fate],
    ) -> Result<(), (ErrorKind, String)> {
        match self.transport.send(points, tagging) {
            Ok(()) => {
                fates.fill(Fate::Sent);
                Ok(())
            }
            Err(SendError::Retryable(kind, message)) => Err((kind, message)),
            Err(SendError::Rejected(message)) => {
                if points.len() == 1 || self.transport.on_rejection() == OnRejection::SetAside {
                    fates.fill(Fate::Rejected(message));
                    return Ok(());
                }
                let half = points.len() / 2;
                let ((a, b), (fates_a, fates_b)) = (points.split_at(half), fates.split_at_mut(half));
                self.send_keeping_good(a, tagging, fates_a)?;
                self.send_keeping_good(b, tagging, fates_b)
            }
        }
    }

    fn set_aside(&mut self, rejected: &[(Point, String)], tagging: HostTagging) {
        let points: Vec<Point> = rejected.iter().map(|(p, _)| p.clone()).collect();
        let message = &rejected[0].1;
        self.stats.points_rejected.fetch_add(points.len() as u64, Ordering::Relaxed);
        match self.rejected.store(&points, message, tagging) {
            Ok(path) => log::error!("{message}; {} points refused and set aside in {}", points.len(), path.display()),
            Err(e) => log::error!("{message}; {} points refused (cannot set them aside: {e})", points.len()),
        }
    }

    /// One step of the shutdown: deliver what memory holds while the backend answers, spool it
    /// when it does not. Spooled batches wait for the next start. True when done.
    fn shutdown_step(&mut self, deadline: Instant) -> bool {
        if self.memory.is_empty() {
            return true;
        }
        if self.outage.is_some() || Instant::now() >= deadline {
            let waiting: Vec<Batch> = self.memory.drain(..).collect();
            let mut kept = VecDeque::new();
            for b in waiting {
                if self.spool.is_some() && !self.spool_failing {
                    self.store(b);
                } else {
                    kept.push_back(b);
                }
            }
            kept.extend(self.memory.drain(..));
            if !kept.is_empty() {
                let held: usize = kept.iter().map(|b| b.points.len()).sum();
                self.stats.points_unsent.fetch_add(held as u64, Ordering::Relaxed);
                log::error!("stopping with {held} points neither delivered nor spooled; their producers still hold them unacknowledged");
            }
            return true;
        }
        // The toggle in next_source flips this to "new data first".
        self.replay_turn = true;
        self.attempt();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{AckHandle, AckTo};
    use crate::fake_transport::{is_bad, Answer, FakeBackend, Refusal};
    use crate::spool::DropPolicy;
    use puypuy_common::frame::{Ack, ACK_DELIVERED, ACK_DROPPED, ACK_REJECTED};
    use std::path::Path;

    const FAST: Backoff = Backoff { first: Duration::from_millis(1), max: Duration::from_millis(5) };

    fn settings(dir: &Path, max_batches: usize) -> DeliverySettings {
        DeliverySettings {
            max_batches,
            shutdown_grace: Duration::from_secs(5),
            spool: Some(Spool::open(&dir.join("spool"), "Fake", 1000, 1 << 30, DropPolicy::Oldest).expect("spool")),
            rejected: RejectedDir::new(dir.join("rejected"), 1000),
            new_transport: Arc::default(),
            backoff: FAST,
        }
    }

    fn delivery(dir: &Path, backend: &FakeBackend, refusal: Refusal, max_batches: usize) -> (Delivery, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let d = Delivery::new(
            backend.transport(refusal, Duration::from_millis(5)),
            settings(dir, max_batches),
            stats.clone(),
        );
        (d, stats)
    }

    /// Points `m{id=…}`; the ids in `bad` are tagged `bad=1`.
    fn points(ids: std::ops::Range<u64>, bad: &[u64]) -> Vec<Point> {
        ids.map(|i| {
            let p = Point::int("m", 1_700_000_000 + i, i as i64, "t").with_tag("id", i.to_string());
            if bad.contains(&i) {
                p.with_tag("bad", "1")
            } else {
                p
            }
        })
        .collect()
    }

    /// A batch of one frame whose ack arrives on `acks`.
    fn batch(points: Vec<Point>, seq: u64, acks: &crossbeam_channel::Sender<Ack>) -> Batch {
        let mut b = Batch::default();
        b.add_frame(points, Some(AckHandle { to: AckTo::Channel(acks.clone()), seq }));
        b
    }

    fn ids(points: &[Point]) -> Vec<u64> {
        let id = |p: &Point| p.tags.iter().find(|(k, _)| k == "id").and_then(|(_, v)| v.parse().ok());
        points.iter().filter_map(id).collect()
    }

    fn acks(rx: &crossbeam_channel::Receiver<Ack>) -> Vec<(u64, u8)> {
        rx.try_iter().map(|a| (a.seq, a.status)).collect()
    }

    /// The points in `tmpdir/rejected/`, as line protocol lines.
    fn rejected_lines(dir: &Path) -> Vec<String> {
        let Ok(files) = std::fs::read_dir(dir.join("rejected")) else { return Vec::new() };
        let mut lines = Vec::new();
        for f in files.flatten() {
            let text = std::fs::read_to_string(f.path()).expect("rejected file");
            lines.extend(text.lines().filter(|l| !l.starts_with('#')).map(String::from));
        }
        lines
    }

    #[test]
    fn each_batch_is_one_request_and_its_frames_are_acked_once_delivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (mut d, stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        let (tx, rx) = crossbeam_channel::unbounded();
        d.accept(batch(points(0..3, &[]), 1, &tx));
        d.accept(batch(points(3..5, &[]), 2, &tx));
        assert!(acks(&rx).is_empty(), "acked before delivery");
        d.attempt();
        d.attempt();
        assert_eq!(backend.state().requests, vec![3, 2]);
        assert_eq!(ids(&backend.state().kept), vec![0, 1, 2, 3, 4]);
        assert_eq!(acks(&rx), vec![(1, ACK_DELIVERED), (2, ACK_DELIVERED)]);
        assert_eq!(stats.points_sent.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn after_an_outage_spooled_batches_are_replayed_taking_turns_with_new_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (mut d, stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        let (tx, rx) = crossbeam_channel::unbounded();
        backend.script([Answer::Fail, Answer::Fail]);
        // The first batch fails and is spooled; during the outage the next ones go to the spool.
        d.accept(batch(points(0..2, &[]), 1, &tx));
        d.attempt();
        d.accept(batch(points(2..4, &[]), 2, &tx));
        d.accept(batch(points(4..6, &[]), 3, &tx));
        assert_eq!(acks(&rx).len(), 3, "spooled batches are acknowledged");
        assert_eq!(d.spool.as_ref().map(Spool::len), Some(3));
        // Still down: the oldest spooled batch stays.
        d.attempt();
        assert_eq!(d.spool.as_ref().map(Spool::len), Some(3));
        // Back: the first replay ends the outage, then new batches and replay take turns.
        d.attempt();
        assert!(d.outage.is_none());
        for (i, seq) in (10..13).enumerate() {
            d.accept(batch(points(100 + 2 * i as u64..102 + 2 * i as u64, &[]), seq, &tx));
        }
        for _ in 0..5 {
            d.attempt();
        }
        let kept = ids(&backend.state().kept);
        assert_eq!(kept, vec![0, 1, 100, 101, 2, 3, 102, 103, 4, 5, 104, 105]);
        assert_eq!(d.spool.as_ref().map(Spool::len), Some(0));
        assert_eq!(stats.points_replayed.load(Ordering::Relaxed), 6);
        assert_eq!(stats.points_spooled.load(Ordering::Relaxed), 6);
        assert_eq!(stats.errors_of(ErrorKind::Unreachable), 2);
    }

    #[test]
    fn a_batch_refused_for_one_bad_point_is_split_and_its_good_points_delivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (mut d, stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        let (tx, rx) = crossbeam_channel::unbounded();
        d.accept(batch(points(0..8, &[2, 5]), 1, &tx));
        d.attempt();
        let mut kept = ids(&backend.state().kept);
        kept.sort_unstable();
        assert_eq!(kept, vec![0, 1, 3, 4, 6, 7]);
        let rejected = rejected_lines(dir.path());
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        assert!(rejected.iter().all(|l| l.contains("bad=1")), "{rejected:?}");
        assert_eq!(acks(&rx), vec![(1, ACK_REJECTED)]);
        assert_eq!((stats.points_sent.load(Ordering::Relaxed), stats.points_rejected.load(Ordering::Relaxed)), (6, 2));
    }

    /// Regression (found by the conservation property): a split whose second half met a failure
    /// kept the whole batch, so the first half, already accepted, was sent again.
    #[test]
    fn a_split_cut_short_by_a_failure_does_not_send_the_accepted_half_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (mut d, stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        let (tx, rx) = crossbeam_channel::unbounded();
        // Refused whole, first half [0, 1] taken, second half [2 (bad), 3] fails: [2, 3] is spooled.
        backend.script([Answer::Accept, Answer::Accept, Answer::Fail]);
        d.accept(batch(points(0..4, &[2]), 1, &tx));
        d.attempt();
        assert_eq!(acks(&rx), vec![(1, ACK_DELIVERED)]);
        assert_eq!(stats.points_spooled.load(Ordering::Relaxed), 2);
        // The same from the spool: a file of [10, 11, 12 (bad), 13]; [10, 11] taken, then a failure.
        if let Some(s) = d.spool.as_mut() {
            let seq = s.oldest().expect("spooled").seq;
            s.remove(seq);
            s.push(&points(10..14, &[12]), false, HostTagging::ThisHost).expect("push");
        }
        backend.script([Answer::Accept, Answer::Accept, Answer::Fail]);
        d.attempt();
        // Then [12, 13] is refused whole, 12 refused alone and 13 taken; the file is done.
        d.attempt();
        assert_eq!(d.spool.as_ref().map(Spool::len), Some(0));
        assert_eq!(ids(&backend.state().kept), vec![0, 1, 10, 11, 13]);
        assert_eq!(rejected_lines(dir.path()).len(), 1);
        assert_eq!(stats.points_replayed.load(Ordering::Relaxed), 3);
    }

    /// Regression: a batch over the transport's `max_points` went to it whole, and it posted it in
    /// several requests; the one answer of the send then spoke for requests already accepted. With
    /// the first request accepted and the second failing, the first was sent again; refused, the
    /// bisection posted it again; a partial write set it aside in `rejected/` as refused.
    #[test]
    fn a_batch_over_max_points_is_sent_request_by_request_and_each_request_keeps_its_fate() {
        struct Case {
            refusal: Refusal,
            answers: Vec<Answer>,
            /// What the backend holds, in order, and what `rejected/` holds, after two attempts.
            kept: Vec<u64>,
            rejected: usize,
            sent: u64,
        }
        let cases = [
            // [0, 1] taken, [2, 3 (bad)] fails: [2, 3, 4] is spooled, then replayed as below.
            Case {
                refusal: Refusal::WholeRequest,
                answers: vec![Answer::Accept, Answer::Fail],
                kept: vec![0, 1, 2, 4],
                rejected: 1,
                sent: 4,
            },
            // [0, 1] taken, [2, 3 (bad)] refused and bisected: 2 taken, 3 refused; then [4].
            Case { refusal: Refusal::WholeRequest, answers: vec![], kept: vec![0, 1, 2, 4], rejected: 1, sent: 4 },
            // [0, 1] taken, [2, 3 (bad)] a partial write: 2 kept by the backend, both set aside.
            Case { refusal: Refusal::PartialWrite, answers: vec![], kept: vec![0, 1, 2, 4], rejected: 2, sent: 3 },
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let dir = tempfile::tempdir().expect("tempdir");
            let backend = FakeBackend::default();
            backend.state().max_points = Some(2);
            let (mut d, stats) = delivery(dir.path(), &backend, case.refusal, 10);
            let (tx, _rx) = crossbeam_channel::unbounded();
            backend.script(case.answers);
            d.accept(batch(points(0..5, &[3]), 1, &tx));
            d.attempt();
            d.attempt();
            let state = backend.state();
            assert!(state.requests.iter().all(|n| *n <= 2), "case {i}: requests {:?}", state.requests);
            assert_eq!(ids(&state.kept), case.kept, "case {i}");
            assert_eq!(rejected_lines(dir.path()).len(), case.rejected, "case {i}");
            assert_eq!(stats.points_sent.load(Ordering::Relaxed), case.sent, "case {i}");
        }
    }

    /// Regression: one refused point made every frame of its batch acknowledged as refused, and a
    /// relay client whose points were all delivered was answered 400 for another client's point.
    #[test]
    fn each_frame_is_acknowledged_by_the_fate_of_its_own_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (mut d, _stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        let (tx, rx) = crossbeam_channel::unbounded();
        // Frames 1 (good), 2 (one bad point of two), 3 (all bad), points without an ack, 4 (good).
        let mut b = Batch::default();
        for (seq, ids, bad) in [
            (Some(1), 0..3, &[][..]),
            (Some(2), 3..5, &[4]),
            (Some(3), 5..6, &[5]),
            (None, 6..7, &[]),
            (Some(4), 7..9, &[]),
        ] {
            b.add_frame(points(ids, bad), seq.map(|seq| AckHandle { to: AckTo::Channel(tx.clone()), seq }));
        }
        d.accept(b);
        d.attempt();
        assert_eq!(ids(&backend.state().kept), vec![0, 1, 2, 3, 6, 7, 8]);
        // Some of its points refused: the frame protocol has no "partly" status; see batch.rs.
        assert_eq!(acks(&rx), vec![(1, ACK_DELIVERED), (2, ACK_REJECTED), (3, ACK_REJECTED), (4, ACK_DELIVERED)]);
        // The same when a failure cuts the split short: frame 1's bad point was refused, frame 2's
        // points are spooled.
        // Refused whole, [10, 11] refused, [10] refused, [11] taken, then [12, 13] fails.
        backend.script([Answer::Accept, Answer::Accept, Answer::Accept, Answer::Accept, Answer::Fail]);
        let mut b = Batch::default();
        b.add_frame(points(10..12, &[10]), Some(AckHandle { to: AckTo::Channel(tx.clone()), seq: 5 }));
        b.add_frame(points(12..14, &[]), Some(AckHandle { to: AckTo::Channel(tx.clone()), seq: 6 }));
        d.accept(b);
        d.attempt();
        assert_eq!(acks(&rx), vec![(5, ACK_REJECTED), (6, ACK_DELIVERED)]);
    }

    /// Regression: when the spool made room by deleting the oldest file while the rest of it waited
    /// to be replayed, the whole file counted as dropped, the points already sent from it included.
    #[test]
    fn evicting_a_partly_replayed_spool_file_counts_only_its_unsent_points_as_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let stats = Arc::new(Stats::default());
        let mut settings = settings(dir.path(), 10);
        settings.spool =
            Some(Spool::open(&dir.path().join("spool"), "Fake", 2, 1 << 30, DropPolicy::Oldest).expect("spool"));
        let mut d = Delivery::new(backend.transport(Refusal::WholeRequest, Duration::ZERO), settings, stats.clone());
        // A file of [0, 1, 2 (bad), 3]: refused whole, [0, 1] taken, then a failure: [2, 3] wait.
        if let Some(s) = d.spool.as_mut() {
            s.push(&points(0..4, &[2]), false, HostTagging::ThisHost).expect("push");
        }
        backend.script([Answer::Accept, Answer::Accept, Answer::Fail]);
        d.attempt();
        assert!(d.outage.is_some());
        // During the outage, the second new batch makes room by deleting that file.
        let (tx, _rx) = crossbeam_channel::unbounded();
        d.accept(batch(points(10..12, &[]), 1, &tx));
        d.accept(batch(points(12..14, &[]), 2, &tx));
        assert_eq!(d.spool.as_ref().map(Spool::len), Some(2));
        assert_eq!(stats.points_dropped.load(Ordering::Relaxed), 2);
        assert_eq!(stats.points_spool_evicted.load(Ordering::Relaxed), 2);
        d.attempt();
        d.attempt();
        assert_eq!(ids(&backend.state().kept), vec![0, 1, 10, 11, 12, 13]);
    }

    /// A batch from a PuyPuy agent leaves with the agent's host tags whether it is sent at once,
    /// spooled and replayed (after a restart too) or set aside.
    #[test]
    fn a_batch_of_carried_points_stays_carried_through_the_spool_and_the_rejected_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (mut d, _stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        let (tx, _rx) = crossbeam_channel::unbounded();
        let carried = |points, seq| Batch { tagging: HostTagging::Carried, ..batch(points, seq, &tx) };
        d.accept(carried(points(0..2, &[]), 1));
        d.attempt();
        backend.script([Answer::Fail]);
        d.accept(carried(points(2..4, &[]), 2));
        d.attempt();
        d.accept(batch(points(4..6, &[]), 3, &tx));
        assert_eq!(d.spool.as_ref().map(Spool::len), Some(2));
        drop(d);
        let (mut d, _stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        d.attempt();
        d.attempt();
        d.accept(carried(points(6..8, &[7]), 4));
        d.attempt();
        let state = backend.state();
        assert_eq!(ids(&state.kept), vec![0, 1, 2, 3, 4, 5, 6]);
        use HostTagging::{Carried, ThisHost};
        // Sent; failed; replayed after the restart (carried, then local); bisected: 3 sends.
        assert_eq!(state.taggings, [Carried, Carried, Carried, ThisHost, Carried, Carried, Carried]);
        let files: Vec<_> = std::fs::read_dir(dir.path().join("rejected")).expect("rejected").flatten().collect();
        let text = std::fs::read_to_string(files[0].path()).expect("rejected file");
        assert_eq!(text.lines().nth(1), Some(crate::rejected::CARRIED_NOTE));
    }

    #[test]
    fn a_partial_write_is_not_split_and_the_batch_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (mut d, _stats) = delivery(dir.path(), &backend, Refusal::PartialWrite, 10);
        let (tx, rx) = crossbeam_channel::unbounded();
        d.accept(batch(points(0..8, &[2, 5]), 1, &tx));
        d.attempt();
        assert_eq!(backend.state().requests, vec![8]);
        assert_eq!(backend.state().kept.len(), 6);
        assert!(backend.state().kept.iter().all(|p| !is_bad(p)));
        // InfluxDB does not say which lines it dropped: the whole batch is kept for the operator.
        assert_eq!(rejected_lines(dir.path()).len(), 8);
        assert_eq!(acks(&rx), vec![(1, ACK_REJECTED)]);
    }

    #[test]
    fn an_unwritable_spool_holds_batches_in_memory_up_to_max_cache_then_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (mut d, stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 3);
        if let Some(s) = d.spool.as_mut() {
            s.fail_writes = true;
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        backend.script([Answer::Fail]);
        d.accept(batch(points(0..2, &[]), 1, &tx));
        d.attempt();
        assert!(d.outage.is_some());
        for seq in 2..=5 {
            d.accept(batch(points(seq * 10..seq * 10 + 2, &[]), seq, &tx));
        }
        assert_eq!(d.memory.len(), 3);
        // The two oldest were dropped (and said so), the others wait unacknowledged.
        assert_eq!(acks(&rx), vec![(1, ACK_DROPPED), (2, ACK_DROPPED)]);
        assert_eq!(stats.points_dropped.load(Ordering::Relaxed), 4);
        // The backend is back: what memory holds is delivered, even with the spool still broken.
        for _ in 0..3 {
            d.attempt();
        }
        assert_eq!(ids(&backend.state().kept), vec![30, 31, 40, 41, 50, 51]);
        assert_eq!(acks(&rx), vec![(3, ACK_DELIVERED), (4, ACK_DELIVERED), (5, ACK_DELIVERED)]);
    }

    /// One of several destinations keeps up to SPILL_AFTER batches in memory (then pushes back);
    /// flagged by the router as behind the others, it spools what comes beyond two and
    /// acknowledges it, and clears the flag once it has caught up.
    #[test]
    fn a_destination_behind_the_others_spools_its_share_until_it_has_caught_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (d, _stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 100);
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut d = d.with_spill(true).with_lag_flag(Arc::clone(&flag));
        let (tx, rx) = crossbeam_channel::unbounded();
        for seq in 0..5 {
            d.accept(batch(points(seq * 10..seq * 10 + 2, &[]), seq, &tx));
        }
        assert_eq!((d.memory.len(), d.spool.as_ref().map(|s| s.len())), (5, Some(0)), "keeping pace: no spooling");
        assert!(d.can_take());
        flag.store(true, Ordering::Relaxed);
        for seq in 5..8 {
            d.accept(batch(points(seq * 10..seq * 10 + 2, &[]), seq, &tx));
        }
        assert_eq!((d.memory.len(), d.spool.as_ref().map(|s| s.len())), (5, Some(3)), "behind: spooled");
        assert_eq!(acks(&rx), vec![(5, ACK_DELIVERED), (6, ACK_DELIVERED), (7, ACK_DELIVERED)]);
        assert!(d.can_take(), "behind, it takes every batch so the router never waits on it");
        let deadline = Instant::now() + Duration::from_secs(10);
        while (!d.memory.is_empty() || d.spool.as_ref().is_some_and(|s| !s.is_empty())) && Instant::now() < deadline {
            d.note_caught_up();
            assert!(flag.load(Ordering::Relaxed), "cleared before it caught up");
            d.attempt();
        }
        let mut kept = ids(&backend.state().kept);
        kept.sort_unstable();
        assert_eq!(kept, (0..8).flat_map(|b| b * 10..b * 10 + 2).collect::<Vec<_>>());
        d.note_caught_up();
        assert!(!flag.load(Ordering::Relaxed), "caught up: the flag is cleared");
        assert_eq!(d.memory.len(), 0);
    }

    /// A transport that only has a name, as a reloaded `[TSDB]` would bring.
    struct Named(&'static str);

    impl Transport for Named {
        fn send(&mut self, _points: &[Point], _tagging: HostTagging) -> Result<(), SendError> {
            Ok(())
        }

        fn describe(&self) -> String {
            self.0.into()
        }

        fn describe_backend(&self) -> String {
            "File".into()
        }
    }

    #[test]
    fn a_reload_announces_the_backend_only_when_it_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (mut d, _stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        assert!(d.replace_transport(Box::new(Named("file tmp/metrics.txt"))));
        assert!(!d.replace_transport(Box::new(Named("file tmp/metrics.txt"))), "same backend, new tags only");
        assert!(d.replace_transport(Box::new(Named("file tmp/other.txt"))));
    }

    #[test]
    fn shutdown_delivers_what_it_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (d, stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        let (batches, rx) = crossbeam_channel::unbounded();
        let (tx, acked) = crossbeam_channel::unbounded();
        // The batcher has already closed the channel: the last batches are taken in the shutdown.
        for seq in 0..5 {
            batches.send(batch(points(seq * 10..seq * 10 + 3, &[]), seq, &tx)).expect("send");
        }
        drop(batches);
        d.run(rx);
        assert_eq!(ids(&backend.state().kept), (0..5).flat_map(|b| b * 10..b * 10 + 3).collect::<Vec<_>>());
        assert_eq!(acks(&acked), (0..5).map(|seq| (seq, ACK_DELIVERED)).collect::<Vec<_>>());
        assert_eq!(stats.points_spooled.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_stalled_backend_is_retried_and_nothing_is_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (d, stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        let (batches, rx) = crossbeam_channel::unbounded();
        let (tx, acked) = crossbeam_channel::unbounded();
        backend.script([Answer::Stall, Answer::Stall, Answer::Fail]);
        let worker = std::thread::spawn(move || d.run(rx));
        for seq in 0..4 {
            batches.send(batch(points(seq * 10..seq * 10 + 3, &[]), seq, &tx)).expect("send");
        }
        // Wait for the backend to take everything (spooled first, then replayed) before stopping.
        let deadline = Instant::now() + Duration::from_secs(10);
        while backend.state().kept.len() < 12 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(batches);
        worker.join().expect("delivery thread");
        let mut kept = ids(&backend.state().kept);
        kept.sort_unstable();
        assert_eq!(kept, (0..4).flat_map(|b| b * 10..b * 10 + 3).collect::<Vec<_>>());
        assert_eq!(acks(&acked).len(), 4);
        assert_eq!(stats.errors_of(ErrorKind::Timeout), 2);
    }

    #[test]
    fn shutdown_spools_what_the_backend_does_not_take() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let (d, stats) = delivery(dir.path(), &backend, Refusal::WholeRequest, 10);
        let (batches, rx) = crossbeam_channel::unbounded();
        let (tx, acked) = crossbeam_channel::unbounded();
        backend.script([Answer::Fail; 100]);
        for seq in 0..4 {
            batches.send(batch(points(seq * 10..seq * 10 + 3, &[]), seq, &tx)).expect("send");
        }
        drop(batches);
        d.run(rx);
        assert!(backend.state().kept.is_empty());
        assert!(acks(&acked).iter().all(|(_, status)| *status == ACK_DELIVERED));
        assert_eq!(stats.points_spooled.load(Ordering::Relaxed), 12);
        let spool = Spool::open(&dir.path().join("spool"), "Fake", 1000, 1 << 30, DropPolicy::Oldest).expect("spool");
        assert_eq!(spool.points(), 12, "the next start replays them");
    }
}
