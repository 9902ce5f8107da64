//! The shipper's counters, shared by the socket readers, the batcher, the delivery loop and the
//! self-metrics thread (which reports them as `puypuy_shipper_*`, see `self_metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::transport::ErrorKind;

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
    pub(crate) fn error(&self, kind: ErrorKind) -> &AtomicU64 {
        &self.errors[ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)]
    }

    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.error(kind).load(Ordering::Relaxed)
    }
}
