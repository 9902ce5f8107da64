//! The fixed schedule: cycles fall on wall-clock multiples of the period (like Telegraf's
//! `round_interval`), so one metric's timestamps are exactly a period apart whatever the checks
//! cost, and a slow cycle skips ticks instead of drifting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first multiple of `period` strictly after `now`, as unix seconds.
pub fn next_tick(now: SystemTime, period: Duration) -> u64 {
    let period = period.as_secs().max(1);
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    (secs / period + 1) * period
}

/// How long until unix second `tick`.
pub fn until(tick: u64, now: SystemTime) -> Duration {
    (UNIX_EPOCH + Duration::from_secs(tick)).duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_multiples_of_the_period() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms);
        assert_eq!(next_tick(at(1000, 0), Duration::from_secs(5)), 1005);
        assert_eq!(next_tick(at(1003, 999), Duration::from_secs(5)), 1005);
        assert_eq!(next_tick(at(1004, 999), Duration::from_secs(5)), 1005);
        assert_eq!(until(1005, at(1004, 250)), Duration::from_millis(750));
    }
}
