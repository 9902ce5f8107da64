//! The shipper's counters, shared by the socket readers, the batcher, the delivery loop and the
//! self-metrics thread (which reports them as `puypuy_shipper_*`, see `self_metrics`).
//!
//! The self-metrics count events (`points_sent` includes replayed points, `points_dropped` includes
//! spooled points dropped later to make room). [`Stats::balance`] turns them into the fate of each
//! point received in this run, which adds up: the stop log line prints it, and the tests check that
//! `received = sent + spooled + rejected + dropped + rate_first + invalid + rate_skipped + unsent`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::transport::ErrorKind;

/// Counters for the shipper's self-metrics, and a few more for [`Stats::balance`].
#[derive(Default)]
pub struct Stats {
    /// Points taken from producers, relay clients and the self-metrics.
    pub points_received: AtomicU64,
    pub points_invalid: AtomicU64,
    /// First samples of rate series: they only start the series and make no point.
    pub points_rate_first: AtomicU64,
    /// Other rate samples that make no point: a counter reset (the series starts over from it) or
    /// a sample not newer than the last one (a resent frame, a clock set back).
    pub points_rate_skipped: AtomicU64,
    /// Points the backend accepted, replayed ones included.
    pub points_sent: AtomicU64,
    pub points_spooled: AtomicU64,
    /// Spooled points the backend then accepted (part of `points_sent`).
    pub points_replayed: AtomicU64,
    /// Producers' points dropped because every bound was reached.
    pub points_dropped: AtomicU64,
    /// The shipper's own self-metric points dropped the same way.
    pub self_points_dropped: AtomicU64,
    /// Points the backend refused as invalid, replayed ones included.
    pub points_rejected: AtomicU64,
    /// Spooled points refused when replayed (part of `points_rejected`).
    pub points_replay_rejected: AtomicU64,
    /// Spooled points (producers' and own) dropped to make room for newer batches (part of
    /// `points_dropped` and `self_points_dropped`).
    pub points_spool_evicted: AtomicU64,
    /// Self-metric points dropped before they were received, the input queue being full (part of
    /// `self_points_dropped`).
    pub self_points_unqueued: AtomicU64,
    /// Points neither delivered nor spooled when delivery stopped; their producers still hold them.
    pub points_unsent: AtomicU64,
    pub spool_files: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub errors: [AtomicU64; 4],
    pub connections: AtomicU64,
    pub last_send_micros: AtomicU64,
    /// 1 while the backend (destination) fails sends, 0 once it accepts them.
    pub backend_down: AtomicU64,
}

/// The counters of one destination when there are several (each carbon-cache of a ring, each
/// output): its delivery loop counts in `stats` (`points_received` being the points routed to it).
pub struct DestinationStats {
    /// `TSDB` for `[TSDB]`, `NAME` for `[TSDB:NAME]`.
    pub output: String,
    /// The carbon-cache (`host:port[:instance]`), or the output's address list.
    pub destination: String,
    pub stats: Arc<Stats>,
}

/// The destinations in use now (replaced on reload), for the self-metrics.
pub type DestinationList = Arc<std::sync::Mutex<Vec<DestinationStats>>>;

impl Stats {
    pub(crate) fn error(&self, kind: ErrorKind) -> &AtomicU64 {
        &self.errors[ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)]
    }

    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.error(kind).load(Ordering::Relaxed)
    }

    /// Where the points received in this run went, each counted once, at its first fate: a point
    /// spooled and replayed later counts as spooled, a spooled point dropped later to make room
    /// counts as spooled. Exact once the batcher and the delivery loop have stopped.
    pub fn balance(&self) -> Balance {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Balance {
            received: get(&self.points_received),
            sent: get(&self.points_sent).saturating_sub(get(&self.points_replayed)),
            spooled: get(&self.points_spooled),
            rejected: get(&self.points_rejected).saturating_sub(get(&self.points_replay_rejected)),
            dropped: (get(&self.points_dropped) + get(&self.self_points_dropped))
                .saturating_sub(get(&self.points_spool_evicted) + get(&self.self_points_unqueued)),
            rate_first: get(&self.points_rate_first),
            invalid: get(&self.points_invalid),
            rate_skipped: get(&self.points_rate_skipped),
            unsent: get(&self.points_unsent),
        }
    }
}

/// The fate of the points received in one run; see [`Stats::balance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub received: u64,
    /// Accepted by the backend straight away (not from the spool).
    pub sent: u64,
    pub spooled: u64,
    /// Refused by the backend straight away and set aside.
    pub rejected: u64,
    /// Dropped because every bound was reached (producers' and self-metrics).
    pub dropped: u64,
    pub rate_first: u64,
    pub invalid: u64,
    pub rate_skipped: u64,
    /// Neither delivered nor spooled at the stop; left unacknowledged with their producers.
    pub unsent: u64,
}

impl Balance {
    /// The sum of the fates; equals `received` when no point is unaccounted for.
    pub fn accounted(&self) -> u64 {
        self.sent
            + self.spooled
            + self.rejected
            + self.dropped
            + self.rate_first
            + self.invalid
            + self.rate_skipped
            + self.unsent
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {} = sent {} + spooled {} + rejected {} + dropped {} + rate_first {} + invalid {} + rate_skipped {} + unsent {}",
            self.received,
            self.sent,
            self.spooled,
            self.rejected,
            self.dropped,
            self.rate_first,
            self.invalid,
            self.rate_skipped,
            self.unsent
        )
    }
}
