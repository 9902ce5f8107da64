//! Whether a new batch waits `batch_ms` for more points, or goes as soon as the batcher's queue
//! is empty.
//!
//! Waiting pays when several producers send at about the same time (the collector and the
//! script-runner on the same cycle): their frames leave in one request. With one producer at a
//! time it gains nothing and costs a timer wake-up of the batcher per batch, a sixth of an idle
//! shipper's CPU (`batch_ms` 20 against 0, side by side at 1 s cycles: 395 against 331 µs a
//! second). So, as Nagle's algorithm does for TCP segments, the batcher learns from the last
//! batches: after [`IDLE_WAITS`] batches in a row that waited and took no second input, batches
//! go at once; the first input that comes within `batch_ms` of the last batch sent (one that
//! waiting would have joined to it), or a batch that took two inputs queued together, brings
//! the wait back. No more requests are made than with the wait, except the one that brings it
//! back; a batch that fills up (`batch_points`) goes at once either way.

use std::time::{Duration, Instant};

/// Batches in a row that waited for nothing before batches go at once.
pub const IDLE_WAITS: u32 = 3;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Linger {
    /// Batches in a row that waited `batch_ms` and took one input.
    idle_waits: u32,
    /// While batches go at once: when the last one was sent.
    at_once_since: Option<Instant>,
}

impl Linger {
    /// When a batch opened at `now` closes.
    pub fn deadline(&mut self, now: Instant, wait: Duration) -> Instant {
        match self.at_once_since {
            // An input that waiting would have joined to the last batch: wait again.
            Some(last) if now.saturating_duration_since(last) < wait => {
                *self = Linger::default();
                now + wait
            }
            Some(_) => now,
            None => now + wait,
        }
    }

    /// A batch of `inputs` inputs was sent at `now`; `full` when it reached `batch_points`.
    pub fn sent(&mut self, inputs: usize, full: bool, now: Instant) {
        if inputs > 1 || full {
            // Producers sending together, or load: batches wait (a full one would go at once anyway).
            *self = Linger::default();
            return;
        }
        if self.at_once_since.is_none() {
            self.idle_waits += 1;
            if self.idle_waits < IDLE_WAITS {
                return;
            }
        }
        self.at_once_since = Some(now);
    }

    /// Whether batches go at once now.
    #[cfg(test)]
    pub fn at_once(&self) -> bool {
        self.at_once_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(20);

    /// One producer a second: three batches wait for nothing, then batches go at once.
    #[test]
    fn batches_go_at_once_after_three_waits_for_nothing() {
        let t0 = Instant::now();
        let mut l = Linger::default();
        for cycle in 0..IDLE_WAITS as u64 {
            let now = t0 + Duration::from_secs(cycle);
            assert_eq!(l.deadline(now, WAIT), now + WAIT, "cycle {cycle} waits");
            l.sent(1, false, now + WAIT);
        }
        assert!(l.at_once());
        for cycle in IDLE_WAITS as u64..10 {
            let now = t0 + Duration::from_secs(cycle);
            assert_eq!(l.deadline(now, WAIT), now, "cycle {cycle} goes at once");
            l.sent(1, false, now);
        }
        assert!(l.at_once());
    }

    /// Two producers on the same cycle: each batch takes both inputs, and batches keep waiting.
    #[test]
    fn batches_that_take_two_inputs_keep_waiting() {
        let t0 = Instant::now();
        let mut l = Linger::default();
        for cycle in 0..10 {
            let now = t0 + Duration::from_secs(cycle);
            assert_eq!(l.deadline(now, WAIT), now + WAIT);
            l.sent(if cycle == 5 { 1 } else { 2 }, false, now + WAIT);
        }
        assert!(!l.at_once());
    }

    /// At once, an input within batch_ms of the last batch brings the wait back, and it takes
    /// three idle waits again to go at once.
    #[test]
    fn an_input_that_waiting_would_have_joined_brings_the_wait_back() {
        let t0 = Instant::now();
        let mut l = Linger { idle_waits: IDLE_WAITS, at_once_since: Some(t0) };
        let soon = t0 + WAIT / 2;
        assert_eq!(l.deadline(soon, WAIT), soon + WAIT);
        assert!(!l.at_once());
        l.sent(1, false, soon + WAIT);
        assert!(!l.at_once(), "one idle wait is not enough");
        // Exactly batch_ms after the last batch sent is too late to have joined it.
        let mut l = Linger { idle_waits: IDLE_WAITS, at_once_since: Some(t0) };
        assert_eq!(l.deadline(t0 + WAIT, WAIT), t0 + WAIT);
        assert!(l.at_once());
    }

    /// At once, a batch that took two queued inputs, or filled up, brings the wait back.
    #[test]
    fn two_inputs_queued_together_or_a_full_batch_bring_the_wait_back() {
        let t0 = Instant::now();
        for (inputs, full) in [(2, false), (1, true)] {
            let mut l = Linger { idle_waits: IDLE_WAITS, at_once_since: Some(t0) };
            let now = t0 + Duration::from_secs(1);
            assert_eq!(l.deadline(now, WAIT), now);
            l.sent(inputs, full, now);
            assert_eq!(l, Linger::default(), "{inputs} inputs, full {full}");
        }
    }
}
