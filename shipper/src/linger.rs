//! Whether a new batch waits `batch_ms` for more points, or goes as soon as the batcher's queue
//! is empty.
//!
//! Waiting pays when several producers send at about the same time (the collector and the
//! script-runner on the same cycle): their frames leave in one request. With one producer at a
//! time it gains nothing and costs a timer wake-up of the batcher per batch, a sixth of an idle
//! shipper's CPU (`batch_ms` 20 against 0, side by side at 1 s cycles: 395 against 331 µs a
//! second). So, as Nagle's algorithm does for TCP segments, the batcher learns from the last
//! batches: after [`IDLE_WAITS`] batches in a row that waited and took one input each, batches
//! go at once. Two things bring the wait back: an input that comes less than `batch_ms` after
//! the last batch opened (waiting would have joined it to that batch), and a batch that took two
//! inputs queued together or filled up. An input that waiting would have joined also doubles the
//! idle waits needed next time (up to [`MAX_IDLE_WAITS`]): producers whose frames meet only every
//! few cycles (a StatsD flush every 10 s beside the collector's 1 s) would otherwise cost a
//! request more each time batches went at once just before they met. A batch that fills up
//! (`batch_points`) goes at once either way.

use std::time::{Duration, Instant};

/// Batches in a row that waited for nothing before batches go at once, at first.
pub const IDLE_WAITS: u32 = 3;
/// The most idle waits ever needed (doubled from [`IDLE_WAITS`] by each input that going at once
/// kept from joining a batch).
pub const MAX_IDLE_WAITS: u32 = 96;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linger {
    /// Batches in a row that waited `batch_ms` and took one input.
    idle_waits: u32,
    /// Idle waits needed before batches go at once.
    needed: u32,
    /// While batches go at once: when the last one opened.
    at_once_since: Option<Instant>,
}

impl Default for Linger {
    fn default() -> Linger {
        Linger { idle_waits: 0, needed: IDLE_WAITS, at_once_since: None }
    }
}

impl Linger {
    /// When a batch opened at `now` closes.
    pub fn deadline(&mut self, now: Instant, wait: Duration) -> Instant {
        match self.at_once_since {
            // An input that waiting would have joined to the last batch: wait again, and longer
            // before going at once next time.
            Some(last) if now.saturating_duration_since(last) < wait => {
                self.at_once_since = None;
                self.idle_waits = 0;
                self.needed = (self.needed * 2).min(MAX_IDLE_WAITS);
                now + wait
            }
            Some(_) => now,
            None => now + wait,
        }
    }

    /// A batch opened at `opened` was sent with `inputs` inputs; `full` when it reached
    /// `batch_points`.
    pub fn sent(&mut self, inputs: usize, full: bool, opened: Instant) {
        if inputs > 1 || full {
            // Producers sending together, or load: batches wait (a full one goes at once anyway).
            self.at_once_since = None;
            self.idle_waits = 0;
            return;
        }
        if self.at_once_since.is_none() {
            self.idle_waits += 1;
            if self.idle_waits < self.needed {
                return;
            }
        }
        self.at_once_since = Some(opened);
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

    /// Batches in a row that waited for nothing, then batches at once: the state after `n` idle
    /// waits of batches opened a second apart from `t0`.
    fn after_idle_waits(t0: Instant, n: u64) -> Linger {
        let mut l = Linger::default();
        for cycle in 0..n {
            let now = t0 + Duration::from_secs(cycle);
            assert_eq!(l.deadline(now, WAIT), now + WAIT, "cycle {cycle} waits");
            l.sent(1, false, now);
        }
        l
    }

    /// One producer a second: three batches wait for nothing, then batches go at once.
    #[test]
    fn batches_go_at_once_after_three_waits_for_nothing() {
        let t0 = Instant::now();
        let mut l = after_idle_waits(t0, IDLE_WAITS as u64 - 1);
        assert!(!l.at_once());
        l = after_idle_waits(t0, IDLE_WAITS as u64);
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
            l.sent(if cycle == 5 { 1 } else { 2 }, false, now);
        }
        assert!(!l.at_once());
    }

    /// At once, an input less than batch_ms after the last batch opened brings the wait back, and
    /// going at once again then takes twice the idle waits.
    #[test]
    fn an_input_that_waiting_would_have_joined_brings_the_wait_back_for_longer() {
        let t0 = Instant::now();
        let mut l = after_idle_waits(t0, IDLE_WAITS as u64);
        let at = t0 + Duration::from_secs(10);
        assert_eq!(l.deadline(at, WAIT), at);
        l.sent(1, false, at);
        let soon = at + WAIT / 2;
        assert_eq!(l.deadline(soon, WAIT), soon + WAIT);
        assert!(!l.at_once());
        for n in 1..=2 * IDLE_WAITS {
            assert!(!l.at_once(), "at once after {} idle waits", n - 1);
            let now = t0 + Duration::from_secs(20 + n as u64);
            assert_eq!(l.deadline(now, WAIT), now + WAIT);
            l.sent(1, false, now);
        }
        assert!(l.at_once());
        // Exactly batch_ms after the last batch opened is too late to have joined it.
        let last = t0 + Duration::from_secs(20 + 2 * IDLE_WAITS as u64);
        assert_eq!(l.deadline(last + WAIT, WAIT), last + WAIT);
        assert!(l.at_once());
    }

    /// The batch that made it go at once had waited: an input that comes after it was sent, but
    /// within batch_ms of that, would not have joined it, and batches stay at once.
    #[test]
    fn an_input_after_a_waited_batch_closed_does_not_bring_the_wait_back() {
        let t0 = Instant::now();
        let mut l = after_idle_waits(t0, IDLE_WAITS as u64);
        let opened = t0 + Duration::from_secs(IDLE_WAITS as u64 - 1);
        let after_it_closed = opened + WAIT + WAIT / 4;
        assert_eq!(l.deadline(after_it_closed, WAIT), after_it_closed);
        assert!(l.at_once());
    }

    /// At once, a batch that took two queued inputs, or filled up, brings the wait back, without
    /// making the next switch slower.
    #[test]
    fn two_inputs_queued_together_or_a_full_batch_bring_the_wait_back() {
        let t0 = Instant::now();
        for (inputs, full) in [(2, false), (1, true)] {
            let mut l = after_idle_waits(t0, IDLE_WAITS as u64);
            let now = t0 + Duration::from_secs(10);
            assert_eq!(l.deadline(now, WAIT), now);
            l.sent(inputs, full, now);
            assert_eq!(l, Linger::default(), "{inputs} inputs, full {full}");
        }
    }

    /// Requests made for inputs at `times` (in order): a batch opens at an input, takes those
    /// that come before its deadline, and goes at the deadline.
    fn requests(times: &[Instant]) -> usize {
        let (mut l, mut requests, mut i) = (Linger::default(), 0, 0);
        while i < times.len() {
            let opened = times[i];
            let deadline = l.deadline(opened, WAIT);
            let inputs = 1 + times[i + 1..].iter().take_while(|&&t| t < deadline).count();
            l.sent(inputs, false, opened);
            requests += 1;
            i += inputs;
        }
        requests
    }

    /// The collector every second and a second producer every `period` seconds, 5 ms later: the
    /// wait makes one request a second; going at once costs a request more each time it goes at
    /// once just before the two meet, and the doubling of the idle waits soon stops that.
    #[test]
    fn producers_that_meet_every_few_cycles_cost_few_requests_more() {
        let t0 = Instant::now();
        for period in [2u64, 4, 10, 60] {
            let mut times = Vec::new();
            for s in 0..1000u64 {
                times.push(t0 + Duration::from_secs(s));
                if s % period == 0 {
                    times.push(t0 + Duration::from_secs(s) + Duration::from_millis(5));
                }
            }
            let extra = requests(&times) - 1000;
            assert!(extra <= 6, "every {period} s: {extra} requests more than the 1000 waiting makes");
        }
        // One producer alone: one request per input, at once after the first three.
        let alone: Vec<Instant> = (0..100).map(|s| t0 + Duration::from_secs(s)).collect();
        assert_eq!(requests(&alone), 100);
    }
}
