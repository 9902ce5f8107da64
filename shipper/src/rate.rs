//! The rate state: counters (style `rate`) become per-second rates, keyed by name, check type and
//! the point's own tags.
//!
//! First sample of a series → no point. A counter that went backwards (reset, wrap) → no point, and
//! the series re-bases on it. Δt ≤ 0 (a resent frame, a clock step back) → no point, state kept.
//! Otherwise `(value - previous) / (t - previous_t)`, rounded to 2 decimals. The old agent sent 0.0
//! for a first sample and 1.0 after a reset; both were wrong data.
//!
//! The state is saved to `tmpdir/rates.state` on shutdown and every 30 s, and loaded at
//! start, so a restart (or kill -9) costs no rate point: the first sample after it is measured
//! against the last saved one. File layout: magic `PUYRATES`, u32 LE CRC-32 of the rest, then per
//! series a u32 LE key length, the key, the last value (f64 LE) and its timestamp (u64 LE).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use puypuy_common::{Point, Style, Value};

#[derive(Default)]
pub struct RateState {
    last: HashMap<String, (f64, u64)>,
    key: String,
}

impl RateState {
    pub fn new() -> RateState {
        RateState::default()
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Writes the state atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut body = Vec::with_capacity(self.last.len() * 64);
        for (key, (value, t)) in &self.last {
            body.extend_from_slice(&(key.len() as u32).to_le_bytes());
            body.extend_from_slice(key.as_bytes());
            body.extend_from_slice(&value.to_le_bytes());
            body.extend_from_slice(&t.to_le_bytes());
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(b"PUYRATES")?;
        f.write_all(&crc32fast::hash(&body).to_le_bytes())?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Loads a saved state; a missing file is an empty state, a damaged one an error.
    pub fn load(path: &Path) -> Result<RateState, String> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RateState::new()),
            Err(e) => return Err(e.to_string()),
        };
        if bytes.len() < 12 || &bytes[..8] != b"PUYRATES" {
            return Err("not a rate state file".into());
        }
        let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let body = &bytes[12..];
        if crc32fast::hash(body) != crc {
            return Err("checksum mismatch".into());
        }
        let mut state = RateState::new();
        let mut rest = body;
        while !rest.is_empty() {
            let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
                if rest.len() < n {
                    return Err("truncated".into());
                }
                let (a, b) = rest.split_at(n);
                *rest = b;
                Ok(a.to_vec())
            };
            let len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().map_err(|_| "bad length")?) as usize;
            let key = String::from_utf8(take(&mut rest, len)?).map_err(|_| "bad key")?;
            let value = f64::from_le_bytes(take(&mut rest, 8)?.try_into().map_err(|_| "bad value")?);
            let t = u64::from_le_bytes(take(&mut rest, 8)?.try_into().map_err(|_| "bad time")?);
            state.last.insert(key, (value, t));
        }
        Ok(state)
    }

    fn key_of(&mut self, p: &Point) {
        self.key.clear();
        self.key.push_str(&p.name);
        self.key.push('\0');
        self.key.push_str(&p.check_type);
        for (k, v) in &p.tags {
            self.key.push('\0');
            self.key.push_str(k);
            self.key.push('=');
            self.key.push_str(v);
        }
    }

    /// Turns a `rate` point into its rate, or `None` when no point should be sent. `stack` points
    /// pass unchanged (inlined: most points are, and the batcher calls this for every point).
    #[inline]
    pub fn apply(&mut self, p: Point) -> Option<Point> {
        if p.style != Style::Rate {
            return Some(p);
        }
        self.rate_of(p)
    }

    fn rate_of(&mut self, mut p: Point) -> Option<Point> {
        self.key_of(&p);
        let value = p.value.as_f64();
        let previous = match self.last.get_mut(self.key.as_str()) {
            Some(entry) => entry,
            None => {
                self.last.insert(self.key.clone(), (value, p.timestamp));
                return None;
            }
        };
        let (prev_value, prev_t) = *previous;
        if p.timestamp <= prev_t {
            return None;
        }
        *previous = (value, p.timestamp);
        if value < prev_value {
            return None;
        }
        let rate = (value - prev_value) / (p.timestamp - prev_t) as f64;
        p.value = Value::Float((rate * 100.0).round() / 100.0);
        p.style = Style::Stack;
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(v: i64, t: u64) -> Point {
        Point::int("bytes_rx_eth0", t, v, "system").rate()
    }

    #[test]
    fn rate_skips_first_sample_then_divides_by_elapsed_time() {
        let mut r = RateState::new();
        assert_eq!(r.apply(counter(100, 10)), None);
        let p = r.apply(counter(400, 20)).unwrap();
        assert_eq!(p.value, Value::Float(30.0));
        assert_eq!(p.style, Style::Stack);
        let p = r.apply(counter(401, 23)).unwrap();
        assert_eq!(p.value, Value::Float(0.33));
    }

    #[test]
    fn rate_skips_counter_reset_and_rebases() {
        let mut r = RateState::new();
        r.apply(counter(1000, 10));
        assert_eq!(r.apply(counter(5, 15)), None);
        assert_eq!(r.apply(counter(55, 20)).unwrap().value, Value::Float(10.0));
    }

    #[test]
    fn rate_skips_resent_and_older_samples() {
        let mut r = RateState::new();
        r.apply(counter(100, 10));
        assert!(r.apply(counter(200, 20)).is_some());
        assert_eq!(r.apply(counter(200, 20)), None);
        assert_eq!(r.apply(counter(150, 15)), None);
        assert_eq!(r.apply(counter(300, 30)).unwrap().value, Value::Float(10.0));
    }

    #[test]
    fn series_are_keyed_by_tags_and_type() {
        let mut r = RateState::new();
        r.apply(counter(100, 10).with_tag("if", "a"));
        assert_eq!(r.apply(counter(100, 20).with_tag("if", "b")), None);
        assert!(r.apply(counter(200, 20).with_tag("if", "a")).is_some());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn saved_state_gives_a_rate_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.state");
        let mut r = RateState::new();
        r.apply(counter(100, 10));
        r.save(&path).unwrap();
        let mut restored = RateState::load(&path).unwrap();
        assert_eq!(restored.apply(counter(200, 20)).unwrap().value, Value::Float(10.0));
        std::fs::write(&path, b"PUYRATES\0\0\0\0garbage").unwrap();
        assert!(RateState::load(&path).is_err());
        assert!(RateState::load(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn stack_points_pass_unchanged() {
        let mut r = RateState::new();
        let p = Point::int("x", 1, 5, "t");
        assert_eq!(r.apply(p.clone()), Some(p));
    }
}
