//! The delivery loop: sends batches to the backend, spools them while it is down, replays the
//! spool once it answers, sets refused points aside and acknowledges frames.
//!
//! A frame is acknowledged only once the one batch holding its points was accepted by the backend,
//! or written and fsynced to the spool, or refused by the backend as invalid (set aside in
//! `tmpdir/rejected/`: resending could not help), or dropped because every bound was reached
//! (counted). Until then the producer keeps the frame and resends it after a reconnect, so a
//! shipper killed with -9 loses nothing.
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
use puypuy_common::frame::{ACK_DELIVERED, ACK_DROPPED, ACK_REJECTED};
use puypuy_common::Point;

use crate::batch::Batch;
use crate::rejected::RejectedDir;
use crate::spool::{Pushed, Spool};
use crate::stats::Stats;
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
}

struct Outage {
    since: Instant,
    last_logged: Instant,
    last_message: String,
}

/// Where the batch being sent came from.
enum Source {
    Memory(Batch),
    Spool { seq: u64, points: Vec<Point> },
}

impl Source {
    fn points(&self) -> &[Point] {
        match self {
            Source::Memory(b) => &b.points,
            Source::Spool { points, .. } => points,
        }
    }
}

struct Delivery {
    transport: Box<dyn Transport>,
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
}

pub fn run_delivery(rx: Receiver<Batch>, transport: Box<dyn Transport>, settings: DeliverySettings, stats: Arc<Stats>) {
    let mut d = Delivery {
        transport,
        spool: settings.spool,
        rejected: settings.rejected,
        memory: VecDeque::new(),
        max_batches: settings.max_batches.max(1),
        stats,
        outage: None,
        backoff: Duration::from_millis(200),
        next_attempt: Instant::now(),
        replay_turn: false,
        spool_failing: false,
        last_drop_log: None,
        last_backend_note: String::new(),
    };
    if let Some(s) = &d.spool {
        if !s.is_empty() {
            log::info!("{} spooled batches ({} points) from an earlier run will be replayed", s.len(), s.points());
        }
    }
    d.update_spool_stats();
    let mut shutdown_deadline: Option<Instant> = None;
    loop {
        if let Some(t) = settings.new_transport.lock().unwrap_or_else(|e| e.into_inner()).take() {
            log::info!("delivering to {} from now on", t.describe());
            if let Some(s) = d.spool.as_mut() {
                s.set_backend(&t.describe_backend());
            }
            d.transport = t;
            d.outage = None;
            d.next_attempt = Instant::now();
        }
        let has_work = !d.memory.is_empty() || d.spool.as_ref().is_some_and(|s| !s.is_empty());
        // While the backend keeps up, take a new batch only when the one in hand is sent, so that
        // a slow backend slows the producers (backpressure) instead of filling memory. During an
        // outage every batch goes to the spool at once.
        let can_take = d.outage.is_some() || d.memory.len() < 2;
        if shutdown_deadline.is_none() && can_take {
            let received = if has_work {
                match rx.recv_deadline(d.next_attempt.max(Instant::now())) {
                    Ok(b) => Some(b),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        shutdown_deadline = Some(Instant::now() + settings.shutdown_grace);
                        None
                    }
                }
            } else {
                match rx.recv() {
                    Ok(b) => Some(b),
                    Err(_) => {
                        shutdown_deadline = Some(Instant::now() + settings.shutdown_grace);
                        None
                    }
                }
            };
            if let Some(b) = received {
                d.accept(b);
            }
            while d.outage.is_some() || d.memory.len() < 2 {
                match rx.try_recv() {
                    Ok(b) => d.accept(b),
                    Err(_) => break,
                }
            }
        } else if shutdown_deadline.is_none() {
            if let Some(wait) = d.next_attempt.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait.min(Duration::from_millis(100)));
            }
        }
        if let Some(deadline) = shutdown_deadline {
            if d.shutdown_step(deadline) {
                return;
            }
            continue;
        }
        if Instant::now() >= d.next_attempt {
            d.attempt();
        }
    }
}

impl Delivery {
    fn accept(&mut self, batch: Batch) {
        if self.outage.is_some() {
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
        match spool.push(&batch.points, batch.own) {
            Ok(Pushed::Stored { dropped_points, dropped_own }) => {
                if self.spool_failing {
                    log::info!("the spool is writable again");
                    self.spool_failing = false;
                }
                self.stats.points_spooled.fetch_add(batch.points.len() as u64, Ordering::Relaxed);
                self.count_dropped(dropped_points, dropped_own, "spool full: dropped its oldest batch");
                batch.ack_all(ACK_DELIVERED);
            }
            Ok(Pushed::Refused) => {
                let (p, o) = if batch.own { (0, batch.points.len() as u64) } else { (batch.points.len() as u64, 0) };
                self.count_dropped(p, o, "spool full (cache_drop: newest): dropped the new batch");
                batch.ack_all(ACK_DROPPED);
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
                old.ack_all(ACK_DROPPED);
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
        if !self.memory.is_empty() && !(spool_has && self.replay_turn) {
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
            return Some(Source::Spool { seq: sp.seq, points: sp.points });
        }
        self.update_spool_stats();
        self.memory.pop_front().map(Source::Memory)
    }

    fn attempt(&mut self) {
        let Some(source) = self.next_source() else { return };
        let started = Instant::now();
        let result = self.send_keeping_good(source.points());
        self.stats.last_send_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(rejected) => {
                if let Some(o) = self.outage.take() {
                    log::info!(
                        "{} accepts data again after {:.0?}; replaying {} spooled batches",
                        self.transport.describe(),
                        o.since.elapsed(),
                        self.spool.as_ref().map(Spool::len).unwrap_or(0)
                    );
                }
                self.backoff = Duration::from_millis(200);
                let total = source.points().len() as u64;
                let good = total - rejected.len() as u64;
                self.stats.points_sent.fetch_add(good, Ordering::Relaxed);
                if !rejected.is_empty() {
                    self.set_aside(&rejected);
                }
                match source {
                    Source::Memory(batch) => {
                        log::debug!("sent {good} points in {:.1?}", started.elapsed());
                        batch.ack_all(if rejected.is_empty() { ACK_DELIVERED } else { ACK_REJECTED });
                    }
                    Source::Spool { seq, .. } => {
                        self.stats.points_replayed.fetch_add(good, Ordering::Relaxed);
                        if let Some(s) = self.spool.as_mut() {
                            s.remove(seq);
                        }
                        self.update_spool_stats();
                    }
                }
            }
            Err((kind, message)) => {
                self.stats.error(kind).fetch_add(1, Ordering::Relaxed);
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
                // Exponential backoff with jitter, capped so a recovered backend is noticed quickly.
                let jitter = Duration::from_millis(u64::from(started.elapsed().subsec_nanos() % 200));
                self.next_attempt = Instant::now() + self.backoff + jitter;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                match source {
                    Source::Memory(batch) => {
                        self.store(batch);
                        // Everything else waiting in memory goes to the spool too.
                        let waiting: Vec<Batch> = self.memory.drain(..).collect();
                        for b in waiting {
                            self.store(b);
                        }
                    }
                    Source::Spool { .. } => {}
                }
            }
        }
    }

    /// Sends the points; on a rejection of a backend that refuses whole requests, bisects to keep
    /// the good points. Returns the rejected points with the server's message.
    fn send_keeping_good(&mut self, points: &[Point]) -> Result<Vec<(Point, String)>, (ErrorKind, String)> {
        match self.transport.send(points) {
            Ok(()) => Ok(Vec::new()),
            Err(SendError::Retryable(kind, message)) => Err((kind, message)),
            Err(SendError::Rejected(message)) => {
                if points.len() == 1 || self.transport.on_rejection() == OnRejection::SetAside {
                    return Ok(points.iter().map(|p| (p.clone(), message.clone())).collect());
                }
                let (a, b) = points.split_at(points.len() / 2);
                let mut rejected = self.send_keeping_good(a)?;
                rejected.extend(self.send_keeping_good(b)?);
                Ok(rejected)
            }
        }
    }

    fn set_aside(&mut self, rejected: &[(Point, String)]) {
        let points: Vec<Point> = rejected.iter().map(|(p, _)| p.clone()).collect();
        let message = &rejected[0].1;
        self.stats.points_rejected.fetch_add(points.len() as u64, Ordering::Relaxed);
        match self.rejected.store(&points, message) {
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
