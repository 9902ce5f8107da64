//! The shipper's two stages after the socket: the batcher (rates, batching) and the delivery loop
//! (send, spool, replay, acks). The host's tags are added by the encoders while writing.
//!
//! A frame is never split between batches, and a frame is acknowledged only once the one batch
//! holding its points was accepted by the backend, or written and fsynced to the spool, or refused
//! by the backend as invalid (set aside in `tmpdir/rejected/`: resending could not help), or
//! dropped because every bound was reached (counted). Until then the producer keeps the frame and
//! resends it after a reconnect, so a shipper killed with -9 loses nothing.
//!
//! While the backend is down, new batches go straight to the spool. Once it answers again, spooled
//! batches are replayed oldest first, taking turns with new batches so that neither starves. If the
//! spool cannot be written (disk full, read-only), batches wait in memory, unacknowledged, within
//! `max_cache`; the spool is tried again for each new batch.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use puypuy_common::frame::{Ack, ACK_DELIVERED, ACK_DROPPED, ACK_REJECTED};
use puypuy_common::Point;

use crate::rate::RateState;
use crate::spool::{Pushed, RejectedDir, Spool};
use crate::transport::{ErrorKind, OnRejection, SendError, Transport};

/// Where the ack of one frame goes.
pub enum AckTo {
    /// A waiting relay request.
    Channel(Sender<Ack>),
    /// The producer connection the frame came on.
    Socket(Arc<crate::receive::AckSocket>),
}

pub struct AckHandle {
    pub to: AckTo,
    pub seq: u64,
}

impl AckHandle {
    fn ack(self, status: u8) {
        // The connection may be gone; the producer then resends and the duplicate is harmless.
        let ack = Ack::new(self.seq, status);
        match self.to {
            AckTo::Channel(tx) => {
                let _ = tx.send(ack);
            }
            AckTo::Socket(socket) => socket.send(ack),
        }
    }
}

pub enum Input {
    Points {
        points: Vec<Point>,
        ack: Option<AckHandle>,
    },
    /// The shipper's own self-metrics: batched alone so that their drops are counted apart.
    SelfMetrics(Vec<Point>),
    /// A producer's frame payload, already checked with `Frame::check`, decoded by the batcher,
    /// which then hands the buffer back to the connection through `back` for its next frame.
    Frame {
        payload: Vec<u8>,
        ack: AckHandle,
        back: Sender<Vec<u8>>,
    },
    /// A reloaded config's batch settings (SIGHUP; new tags come with a new transport).
    Reload {
        batch_points: usize,
        batch_wait: Duration,
    },
    Shutdown,
}

#[derive(Default)]
pub struct Batch {
    pub points: Vec<Point>,
    pub acks: Vec<AckHandle>,
    pub own: bool,
}

impl Batch {
    fn ack_all(self, status: u8) {
        for a in self.acks {
            a.ack(status);
        }
    }
}

/// Counters for the shipper's self-metrics.
#[derive(Default)]
pub struct Stats {
    pub points_received: AtomicU64,
    pub points_invalid: AtomicU64,
    pub points_sent: AtomicU64,
    pub points_spooled: AtomicU64,
    pub points_replayed: AtomicU64,
    /// Producers' points dropped because every bound was reached.
    pub points_dropped: AtomicU64,
    /// The shipper's own self-metric points dropped the same way.
    pub self_points_dropped: AtomicU64,
    pub points_rejected: AtomicU64,
    pub spool_files: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub errors: [AtomicU64; 4],
    pub connections: AtomicU64,
    pub last_send_micros: AtomicU64,
}

impl Stats {
    fn error(&self, kind: ErrorKind) -> &AtomicU64 {
        &self.errors[ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)]
    }

    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.error(kind).load(Ordering::Relaxed)
    }
}

pub struct BatcherSettings {
    pub batch_points: usize,
    pub batch_wait: Duration,
    /// Where the rate state is saved (on shutdown and every [`RATE_SAVE_EVERY`]).
    pub rate_file: Option<PathBuf>,
}

pub const RATE_SAVE_EVERY: Duration = Duration::from_secs(30);

pub fn run_batcher(rx: Receiver<Input>, out: Sender<Batch>, mut settings: BatcherSettings, stats: Arc<Stats>) {
    let mut rates = match &settings.rate_file {
        Some(path) => match RateState::load(path) {
            Ok(r) => {
                if r.len() > 0 {
                    log::info!("restored the rate state of {} series from {}", r.len(), path.display());
                }
                r
            }
            Err(e) => {
                log::warn!("rate state in {} not restored ({e}); counters start afresh", path.display());
                RateState::new()
            }
        },
        None => RateState::new(),
    };
    let mut last_save = Instant::now();
    let rate_file = settings.rate_file.clone();
    let save = |rates: &RateState| {
        if let Some(path) = &rate_file {
            if let Err(e) = rates.save(path) {
                log::warn!("cannot save the rate state to {}: {e}", path.display());
            }
        }
    };
    let mut batch = Batch::default();
    let mut deadline: Option<Instant> = None;
    let flush = |batch: &mut Batch, deadline: &mut Option<Instant>| {
        *deadline = None;
        if !batch.points.is_empty() || !batch.acks.is_empty() {
            let _ = out.send(std::mem::take(batch));
        }
    };
    let prepare = |points: Vec<Point>, into: &mut Vec<Point>, rates: &mut RateState| {
        stats.points_received.fetch_add(points.len() as u64, Ordering::Relaxed);
        for p in points {
            if p.name.is_empty() || !p.value.is_finite() {
                stats.points_invalid.fetch_add(1, Ordering::Relaxed);
                log::warn!("dropped an invalid point (empty name or NaN/inf value): {}", p.dry_run_line());
                continue;
            }
            if let Some(p) = rates.apply(p) {
                into.push(p);
            }
        }
    };
    loop {
        let message = match deadline {
            Some(d) => rx.recv_deadline(d),
            None => rx.recv_timeout(RATE_SAVE_EVERY),
        };
        match message {
            Ok(input @ (Input::Frame { .. } | Input::Points { .. })) => {
                let (points, ack) = match input {
                    Input::Frame { payload, ack, back } => {
                        let decoded = puypuy_common::frame::Frame::decode(&payload);
                        let _ = back.try_send(payload);
                        match decoded {
                            Ok(frame) => (frame.points, Some(ack)),
                            // Cannot happen after the connection thread's check; refused all the same.
                            Err(e) => {
                                log::error!("frame {} does not decode after its check: {e}", ack.seq);
                                ack.ack(puypuy_common::frame::ACK_REJECTED);
                                (Vec::new(), None)
                            }
                        }
                    }
                    Input::Points { points, ack } => (points, ack),
                    _ => (Vec::new(), None),
                };
                prepare(points, &mut batch.points, &mut rates);
                if let Some(a) = ack {
                    batch.acks.push(a);
                }
                if deadline.is_none() {
                    deadline = Some(Instant::now() + settings.batch_wait);
                }
                if batch.points.len() >= settings.batch_points {
                    flush(&mut batch, &mut deadline);
                }
            }
            Ok(Input::Reload { batch_points, batch_wait }) => {
                flush(&mut batch, &mut deadline);
                settings.batch_points = batch_points;
                settings.batch_wait = batch_wait;
            }
            Ok(Input::SelfMetrics(points)) => {
                let mut own = Batch { own: true, ..Batch::default() };
                prepare(points, &mut own.points, &mut rates);
                let _ = out.send(own);
            }
            Err(RecvTimeoutError::Timeout) => flush(&mut batch, &mut deadline),
            Ok(Input::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                flush(&mut batch, &mut deadline);
                save(&rates);
                return;
            }
        }
        if last_save.elapsed() >= RATE_SAVE_EVERY {
            save(&rates);
            last_save = Instant::now();
        }
    }
}

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
