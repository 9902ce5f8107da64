//! Rate limiting of a script's repeated warnings, so that a script that prints a bad line, exits
//! non-zero or times out every cycle does not write one log line per cycle for ever.
//!
//! Per script and [`Problem`], the first occurrence is logged in full and opens a window of
//! [`SUMMARY_INTERVAL`] (for bad lines the first [`BAD_LINES_IN_FULL`], so that the few bad lines
//! of a first run are all shown with their line numbers). Further occurrences inside the window are
//! only counted. When the window ends with some counted, one summary line says how many and shows
//! the last one, e.g. `check_x: 57 more bad lines in the last 60 s (last: check_x line 3: …)`, and
//! the next window starts; a window that ends with none counted closes the episode, so that the
//! next occurrence is logged in full again. A problem that persists therefore costs one line per
//! interval. What is still counted when the runner stops is summed up then ([`WarningThrottle::finish`]).
//!
//! [`WarningThrottle`] is pure: the caller passes the time of each call and logs the lines it
//! returns. [`Warnings`] is the shared handle the script workers use, reading the clock and logging.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long repeats of one warning are counted before a summary line.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// Bad lines logged in full at the start of an episode, before they are only counted.
pub const BAD_LINES_IN_FULL: u64 = 10;

/// What went wrong with a run of a script, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// The script could not be started.
    CannotRun,
    /// A line of its output was not a point.
    BadLine,
    /// Its output was over `script_max_output_bytes`.
    Truncated,
    /// It was killed at its timeout.
    Timeout,
    /// It exited with a status other than 0.
    NonZeroExit,
    /// It was killed by a signal (not ours).
    Signal,
    /// It was still running at the next cycle, so not started again.
    StillRunning,
}

impl Problem {
    /// The problem counted in a summary, singular and plural.
    fn noun(self, count: u64) -> &'static str {
        let (one, many) = match self {
            Problem::CannotRun => ("failure to start", "failures to start"),
            Problem::BadLine => ("bad line", "bad lines"),
            Problem::Truncated => ("output cut at the size limit", "outputs cut at the size limit"),
            Problem::Timeout => ("timeout", "timeouts"),
            Problem::NonZeroExit => ("non-zero exit", "non-zero exits"),
            Problem::Signal => ("kill by a signal", "kills by a signal"),
            Problem::StillRunning => ("start skipped (still running)", "starts skipped (still running)"),
        };
        if count == 1 {
            one
        } else {
            many
        }
    }

    /// Occurrences logged in full at the start of an episode.
    fn in_full(self) -> u64 {
        match self {
            Problem::BadLine => BAD_LINES_IN_FULL,
            _ => 1,
        }
    }
}

/// An episode of one problem of one script: since when its current window runs, how many more
/// occurrences are logged in full, how many were counted, and the last one's line.
struct Episode {
    window_start: Instant,
    in_full_left: u64,
    counted: u64,
    last: String,
}

/// The episodes of every script and problem; see the module documentation.
pub struct WarningThrottle {
    interval: Duration,
    episodes: HashMap<(String, Problem), Episode>,
}

impl WarningThrottle {
    pub fn new(interval: Duration) -> WarningThrottle {
        WarningThrottle { interval, episodes: HashMap::new() }
    }

    /// One occurrence of `problem` for `script`, whose log line is `line`. Returns the lines to log
    /// now: `line` when it is logged in full, after the summary of a window that had ended before
    /// it (when [`WarningThrottle::flush`] was not called in between).
    pub fn occurred(&mut self, script: &str, problem: Problem, line: String, now: Instant) -> Vec<String> {
        let key = (script.to_string(), problem);
        let mut lines = Vec::new();
        if let Some(episode) = self.episodes.get_mut(&key) {
            if now.saturating_duration_since(episode.window_start) >= self.interval {
                match summary(script, problem, episode, now) {
                    Some(line) => lines.push(line),
                    // A whole window without a repeat: this occurrence starts a new episode.
                    None => {
                        self.episodes.remove(&key);
                    }
                }
            }
        }
        match self.episodes.get_mut(&key) {
            Some(episode) if episode.in_full_left > 0 => {
                episode.in_full_left -= 1;
                lines.push(line);
            }
            Some(episode) => {
                episode.counted += 1;
                episode.last = line;
            }
            None => {
                let in_full_left = problem.in_full() - 1;
                self.episodes.insert(key, Episode { window_start: now, in_full_left, counted: 0, last: String::new() });
                lines.push(line);
            }
        }
        lines
    }

    /// The summaries of everything still counted, whatever the windows: the runner is stopping.
    pub fn finish(&mut self, now: Instant) -> Vec<String> {
        let mut lines: Vec<String> = self
            .episodes
            .iter_mut()
            .filter_map(|((script, problem), episode)| summary(script, *problem, episode, now))
            .collect();
        self.episodes.clear();
        lines.sort();
        lines
    }

    /// Ends the windows that are over: a summary line for each that counted repeats (and a new
    /// window for it), and the end of the episode for each that counted none.
    pub fn flush(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        let interval = self.interval;
        self.episodes.retain(|(script, problem), episode| {
            if now.saturating_duration_since(episode.window_start) < interval {
                return true;
            }
            match summary(script, *problem, episode, now) {
                Some(line) => {
                    lines.push(line);
                    true
                }
                None => false,
            }
        });
        lines.sort();
        lines
    }
}

/// The summary of an ended window that counted repeats, after which a new window starts; `None`
/// when it counted none.
fn summary(script: &str, problem: Problem, episode: &mut Episode, now: Instant) -> Option<String> {
    if episode.counted == 0 {
        return None;
    }
    let seconds = now.saturating_duration_since(episode.window_start).as_secs();
    let line = format!(
        "{script}: {} more {} in the last {seconds} s (last: {})",
        episode.counted,
        problem.noun(episode.counted),
        episode.last
    );
    *episode = Episode { window_start: now, in_full_left: 0, counted: 0, last: String::new() };
    Some(line)
}

/// A [`WarningThrottle`] shared by the script workers, on the real clock, logging at WARN.
#[derive(Clone)]
pub struct Warnings(Arc<Mutex<WarningThrottle>>);

impl Default for Warnings {
    fn default() -> Warnings {
        Warnings(Arc::new(Mutex::new(WarningThrottle::new(SUMMARY_INTERVAL))))
    }
}

impl Warnings {
    /// Logs `line`, or counts it if the same problem was logged for the script recently.
    pub fn warn(&self, script: &str, problem: Problem, line: String) {
        let lines = self.lock().occurred(script, problem, line, Instant::now());
        for line in lines {
            log::warn!("{line}");
        }
    }

    /// Logs the summaries of the windows that are over; called after every run.
    pub fn flush(&self) {
        let lines = self.lock().flush(Instant::now());
        for line in lines {
            log::warn!("{line}");
        }
    }

    /// Logs the summaries of everything still counted: the runner is stopping.
    pub fn finish(&self) {
        let lines = self.lock().finish(Instant::now());
        for line in lines {
            log::warn!("{line}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WarningThrottle> {
        // A worker that panicked while holding the lock left a usable table of counts.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn first_occurrence_is_logged_and_repeats_are_summed_up_once_per_interval() {
        let t0 = Instant::now();
        let mut t = WarningThrottle::new(MINUTE);
        assert_eq!(
            t.occurred("check_x", Problem::NonZeroExit, "check_x: exited with status 1: a".into(), t0),
            vec!["check_x: exited with status 1: a"]
        );
        // Failing every second for the rest of the minute: counted, not logged.
        for s in 1..58 {
            let line = format!("check_x: exited with status 1: {s}");
            assert!(t.occurred("check_x", Problem::NonZeroExit, line, at(t0, s)).is_empty());
            assert!(t.flush(at(t0, s)).is_empty());
        }
        assert_eq!(
            t.flush(at(t0, 60)),
            vec!["check_x: 57 more non-zero exits in the last 60 s (last: check_x: exited with status 1: 57)"]
        );
        assert!(t.flush(at(t0, 61)).is_empty());
    }

    #[test]
    fn the_first_bad_lines_are_all_logged_then_counted() {
        let t0 = Instant::now();
        let mut t = WarningThrottle::new(MINUTE);
        let mut logged = Vec::new();
        for n in 1..=25 {
            logged.extend(t.occurred("check_x", Problem::BadLine, format!("check_x line {n}: no value"), t0));
        }
        assert_eq!(logged, (1..=BAD_LINES_IN_FULL).map(|n| format!("check_x line {n}: no value")).collect::<Vec<_>>());
        assert_eq!(
            t.flush(at(t0, 60)),
            vec!["check_x: 15 more bad lines in the last 60 s (last: check_x line 25: no value)"]
        );
        // Past the first window, bad lines are only counted.
        assert!(t.occurred("check_x", Problem::BadLine, "check_x line 1: no value".into(), at(t0, 70)).is_empty());
    }

    #[test]
    fn a_problem_that_persists_costs_one_line_per_interval() {
        let t0 = Instant::now();
        let mut t = WarningThrottle::new(MINUTE);
        let mut logged = 0;
        // Times out every 10 s for an hour.
        for s in (0..3600).step_by(10) {
            logged += t.occurred("check_slow", Problem::Timeout, "check_slow: still running".into(), at(t0, s)).len();
            logged += t.flush(at(t0, s)).len();
        }
        assert_eq!(logged, 60);
    }

    #[test]
    fn after_a_quiet_interval_the_next_occurrence_is_logged_in_full_again() {
        let t0 = Instant::now();
        let mut t = WarningThrottle::new(MINUTE);
        assert_eq!(t.occurred("check_x", Problem::NonZeroExit, "a".into(), t0).len(), 1);
        assert!(t.occurred("check_x", Problem::NonZeroExit, "b".into(), at(t0, 10)).is_empty());
        assert_eq!(t.flush(at(t0, 60)), vec!["check_x: 1 more non-zero exit in the last 60 s (last: b)"]);
        // A whole window without a failure ends the episode, without a line.
        assert!(t.flush(at(t0, 120)).is_empty());
        assert_eq!(t.occurred("check_x", Problem::NonZeroExit, "c".into(), at(t0, 130)), vec!["c"]);
    }

    #[test]
    fn an_ended_window_is_summed_up_at_the_next_occurrence_when_not_flushed() {
        let t0 = Instant::now();
        let mut t = WarningThrottle::new(MINUTE);
        t.occurred("check_x", Problem::Timeout, "a".into(), t0);
        t.occurred("check_x", Problem::Timeout, "b".into(), at(t0, 30));
        assert_eq!(
            t.occurred("check_x", Problem::Timeout, "c".into(), at(t0, 90)),
            vec!["check_x: 1 more timeout in the last 90 s (last: b)"]
        );
        assert_eq!(t.flush(at(t0, 150)), vec!["check_x: 1 more timeout in the last 60 s (last: c)"]);
        // Without the flush, a window with no repeat lets the next occurrence through in full.
        let mut t = WarningThrottle::new(MINUTE);
        t.occurred("check_y", Problem::Timeout, "a".into(), t0);
        assert_eq!(t.occurred("check_y", Problem::Timeout, "b".into(), at(t0, 300)), vec!["b"]);
    }

    #[test]
    fn scripts_and_problems_are_counted_apart() {
        let t0 = Instant::now();
        let mut t = WarningThrottle::new(MINUTE);
        assert_eq!(t.occurred("check_a", Problem::Timeout, "x".into(), t0).len(), 1);
        assert_eq!(t.occurred("check_b", Problem::Timeout, "x".into(), t0).len(), 1);
        assert_eq!(t.occurred("check_a", Problem::NonZeroExit, "x".into(), t0).len(), 1);
        assert!(t.occurred("check_a", Problem::Timeout, "y".into(), at(t0, 1)).is_empty());
        assert!(t.occurred("check_a", Problem::Timeout, "z".into(), at(t0, 2)).is_empty());
        assert!(t.occurred("check_b", Problem::Timeout, "y".into(), at(t0, 2)).is_empty());
        assert_eq!(
            t.flush(at(t0, 60)),
            vec![
                "check_a: 2 more timeouts in the last 60 s (last: z)",
                "check_b: 1 more timeout in the last 60 s (last: y)"
            ]
        );
    }

    #[test]
    fn what_is_still_counted_at_stop_is_summed_up() {
        let t0 = Instant::now();
        let mut t = WarningThrottle::new(MINUTE);
        t.occurred("check_a", Problem::Timeout, "x".into(), t0);
        t.occurred("check_a", Problem::Timeout, "y".into(), at(t0, 5));
        t.occurred("check_b", Problem::Timeout, "x".into(), t0);
        assert_eq!(t.finish(at(t0, 10)), vec!["check_a: 1 more timeout in the last 10 s (last: y)"]);
        assert!(t.finish(at(t0, 20)).is_empty());
    }
}
