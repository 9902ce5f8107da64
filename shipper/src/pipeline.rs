//! The shipper's two stages after the socket: the batcher (rates, host tags, batching) and the
//! delivery loop (send, retry with backoff, bounded queue, acks).
//!
//! A frame is never split between batches, so a frame is acknowledged exactly when the one batch
//! holding its points has been accepted by the backend (or refused by it as invalid: resending could
//! not help), or dropped because the bounded queue was full. Until then the producer keeps the frame
//! and resends it after a reconnect, so a shipper killed with -9 loses nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use puypuy_common::frame::{Ack, ACK_DELIVERED, ACK_DROPPED, ACK_REJECTED};
use puypuy_common::Point;

use crate::rate::RateState;
use crate::tags::HostTags;
use crate::transport::{SendError, Transport};

/// Where to send the ack of one frame: the writer of the connection it came on.
pub struct AckHandle {
    pub tx: Sender<Ack>,
    pub seq: u64,
}

impl AckHandle {
    fn ack(self, status: u8) {
        // The connection may be gone; the producer then resends and the duplicate is harmless.
        let _ = self.tx.send(Ack::new(self.seq, status));
    }
}

pub enum Input {
    Points { points: Vec<Point>, ack: Option<AckHandle> },
    Shutdown,
}

#[derive(Default)]
pub struct Batch {
    pub points: Vec<Point>,
    pub acks: Vec<AckHandle>,
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
    pub points_dropped: AtomicU64,
    pub points_rejected: AtomicU64,
    pub send_errors: AtomicU64,
}

pub struct BatcherSettings {
    pub batch_points: usize,
    pub batch_wait: Duration,
}

pub fn run_batcher(rx: Receiver<Input>, out: Sender<Batch>, tags: HostTags, settings: BatcherSettings, stats: Arc<Stats>) {
    let mut rates = RateState::new();
    let mut batch = Batch::default();
    let mut deadline: Option<Instant> = None;
    let flush = |batch: &mut Batch, deadline: &mut Option<Instant>| {
        *deadline = None;
        if !batch.points.is_empty() || !batch.acks.is_empty() {
            let _ = out.send(std::mem::take(batch));
        }
    };
    loop {
        let message = match deadline {
            Some(d) => rx.recv_deadline(d),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match message {
            Ok(Input::Points { points, ack }) => {
                stats.points_received.fetch_add(points.len() as u64, Ordering::Relaxed);
                for p in points {
                    if p.name.is_empty() || !p.value.is_finite() {
                        stats.points_invalid.fetch_add(1, Ordering::Relaxed);
                        log::warn!("dropped an invalid point (empty name or NaN/inf value): {}", p.dry_run_line());
                        continue;
                    }
                    if let Some(mut p) = rates.apply(p) {
                        tags.apply(&mut p);
                        batch.points.push(p);
                    }
                }
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
            Err(RecvTimeoutError::Timeout) => flush(&mut batch, &mut deadline),
            Ok(Input::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                flush(&mut batch, &mut deadline);
                return;
            }
        }
    }
}

pub struct DeliverySettings {
    /// Most batches held while the backend is down (`max_cache`).
    pub max_batches: usize,
    /// How long to keep trying to deliver held batches after shutdown began.
    pub shutdown_grace: Duration,
}

struct Outage {
    since: Instant,
    last_logged: Instant,
    last_message: String,
}

pub fn run_delivery(rx: Receiver<Batch>, mut transport: Box<dyn Transport>, settings: DeliverySettings, stats: Arc<Stats>) {
    let mut pending: VecDeque<Batch> = VecDeque::new();
    let mut backoff = Duration::from_millis(200);
    let mut next_attempt = Instant::now();
    let mut outage: Option<Outage> = None;
    let mut shutdown_deadline: Option<Instant> = None;
    let mut dropped_logged = Instant::now() - Duration::from_secs(3600);
    loop {
        // Take in what arrived; wait only when there is nothing to do now.
        let wait_until = if pending.is_empty() { None } else { Some(next_attempt) };
        let received = if shutdown_deadline.is_some() {
            rx.try_recv().ok()
        } else {
            match wait_until {
                None => match rx.recv() {
                    Ok(b) => Some(b),
                    Err(_) => {
                        shutdown_deadline = Some(Instant::now() + settings.shutdown_grace);
                        None
                    }
                },
                Some(t) => match rx.recv_deadline(t) {
                    Ok(b) => Some(b),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        shutdown_deadline = Some(Instant::now() + settings.shutdown_grace);
                        None
                    }
                },
            }
        };
        if let Some(batch) = received {
            pending.push_back(batch);
            while let Ok(b) = rx.try_recv() {
                pending.push_back(b);
            }
            while pending.len() > settings.max_batches {
                if let Some(old) = pending.pop_front() {
                    let n = old.points.len() as u64;
                    let total = stats.points_dropped.fetch_add(n, Ordering::Relaxed) + n;
                    if dropped_logged.elapsed() >= Duration::from_secs(10) {
                        log::error!("backend queue full ({} batches): dropped the oldest batch; {total} points dropped so far", settings.max_batches);
                        dropped_logged = Instant::now();
                    }
                    old.ack_all(ACK_DROPPED);
                }
            }
        }
        if let Some(deadline) = shutdown_deadline {
            if pending.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let held: usize = pending.iter().map(|b| b.points.len()).sum();
                log::error!("shutting down with {held} points undelivered; their producers still hold them unacknowledged");
                return;
            }
            if Instant::now() < next_attempt {
                std::thread::sleep((next_attempt - Instant::now()).min(deadline - Instant::now()));
                continue;
            }
        }
        if pending.is_empty() || Instant::now() < next_attempt {
            continue;
        }
        let Some(batch) = pending.front() else { continue };
        let started = Instant::now();
        match transport.send(&batch.points) {
            Ok(()) => {
                if let Some(o) = outage.take() {
                    log::info!(
                        "{} accepts data again after {:.0?}; delivering {} held batches",
                        transport.describe(),
                        o.since.elapsed(),
                        pending.len()
                    );
                }
                backoff = Duration::from_millis(200);
                if let Some(batch) = pending.pop_front() {
                    stats.points_sent.fetch_add(batch.points.len() as u64, Ordering::Relaxed);
                    log::debug!("sent {} points in {:.1?}", batch.points.len(), started.elapsed());
                    batch.ack_all(ACK_DELIVERED);
                }
            }
            Err(SendError::Rejected(message)) => {
                if let Some(batch) = pending.pop_front() {
                    stats.points_rejected.fetch_add(batch.points.len() as u64, Ordering::Relaxed);
                    log::error!("{message}; {} points refused as invalid and not retried", batch.points.len());
                    batch.ack_all(ACK_REJECTED);
                }
            }
            Err(SendError::Retryable(message)) => {
                stats.send_errors.fetch_add(1, Ordering::Relaxed);
                let held = pending.len();
                match &mut outage {
                    None => {
                        log::warn!("{message}; holding {held} batches and retrying");
                        outage = Some(Outage { since: Instant::now(), last_logged: Instant::now(), last_message: message });
                    }
                    Some(o) => {
                        if o.last_message != message || o.last_logged.elapsed() >= Duration::from_secs(60) {
                            log::warn!("{message}; still failing after {:.0?}, holding {held} batches", o.since.elapsed());
                            o.last_logged = Instant::now();
                            o.last_message = message;
                        }
                    }
                }
                // Exponential backoff with jitter, capped so a recovered backend is noticed quickly.
                let jitter = Duration::from_millis(u64::from(started.elapsed().subsec_nanos() % 100));
                next_attempt = Instant::now() + backoff + jitter;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
