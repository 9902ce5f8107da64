//! Graphite plaintext lines (<https://graphite.readthedocs.io/en/latest/feeding-carbon.html>):
//!
//! ```text
//! servers.web01.load 0.42 1700000000
//! servers.web01.load;dc=eu 0.42 1700000000
//! ```
//!
//! The path is kept whole as the metric name (tags after `;`, Graphite 1.1 style, become tags). A
//! missing timestamp or `-1` means now. Numbers are read as carbon-cache reads them (Python's
//! `float`), except that infinities are refused; `tests/tests/suite/differential.rs` compares what
//! reaches whisper through the relay and through carbon-cache's own line receiver. The points
//! carry the check type [`RELAYED_GRAPHITE`] (`type=graphite`), by which the Carbon backend sends
//! their path unchanged, as carbon-relay forwards it (`graphite_relay_prefix` adds the usual
//! `cluster.group.HOST.` prefix instead); for the other backends the dotted path is the name.

use puypuy_common::{Point, Value};

use crate::backends::carbon::RELAYED_GRAPHITE;

pub fn parse_plain(line: &str, now: u64) -> Result<Point, String> {
    let mut fields = line.split_ascii_whitespace();
    let path = fields.next().ok_or("empty line")?;
    let value = fields.next().ok_or("missing value (expected: path value timestamp)")?;
    let value = python_float(value).ok_or_else(|| format!("invalid value {value:?}"))?;
    if !value.is_finite() {
        // carbon stores inf (and drops nan); no other backend can carry either.
        return Err(format!("value {value} is not finite"));
    }
    let timestamp = match fields.next() {
        None | Some("-1") => now,
        Some(ts) => {
            let t = python_float(ts).ok_or_else(|| format!("invalid timestamp {ts:?}"))?;
            if !(0.0..1e13).contains(&t) {
                return Err(format!("invalid timestamp {ts:?}"));
            }
            t as u64
        }
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected field {extra:?} (expected: path value timestamp)"));
    }
    let mut parts = path.split(';');
    let name = parts.next().filter(|n| !n.is_empty()).ok_or("empty metric path")?;
    let mut point = Point::new(name, timestamp, Value::Float(value), RELAYED_GRAPHITE);
    for tag in parts {
        point.tags.push(super::telnet::parse_tag(tag)?);
    }
    Ok(point)
}

/// A number as carbon reads it, with Python's `float()`: what Rust's parser takes, plus `_`
/// between digits (`1_000`).
fn python_float(s: &str) -> Option<f64> {
    if !s.contains('_') {
        return s.parse().ok();
    }
    let b = s.as_bytes();
    let between_digits = |i: usize| i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit();
    if (0..b.len()).any(|i| b[i] == b'_' && !between_digits(i)) {
        return None;
    }
    s.replace('_', "").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_plain_and_tagged_lines() {
        let p = parse_plain("servers.web01.load 0.42 1700000000", 5).unwrap();
        assert_eq!((p.name.as_str(), p.value, p.timestamp), ("servers.web01.load", Value::Float(0.42), 1700000000));
        let t = parse_plain("a.b;dc=eu;rack=1 1 -1", 5).unwrap();
        assert_eq!(t.timestamp, 5);
        assert_eq!(t.tags, vec![("dc".into(), "eu".into()), ("rack".into(), "1".into())]);
        assert!(parse_plain("a.b x 1", 5).is_err());
        assert!(parse_plain("a.b 1 2 3", 5).is_err());
    }

    /// carbon-cache takes `1_000` (Python's float), found by the differential test.
    #[test]
    fn values_are_read_as_python_reads_them() {
        assert_eq!(parse_plain("a 1_000 7", 0).unwrap().value, Value::Float(1000.0));
        for bad in ["a _1 7", "a 1_ 7", "a 1__0 7", "a inf 7", "a nan 7"] {
            assert!(parse_plain(bad, 0).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,100}") {
            let _ = parse_plain(&s, 1);
        }

        #[test]
        fn valid_lines_round_trip(path in "[a-z][a-z0-9_]{0,8}(\\.[a-z0-9_]{1,8}){0,3}", v in -1e9f64..1e9, ts in 1_000_000_000u64..2_000_000_000) {
            let p = parse_plain(&format!("{path} {v} {ts}"), 0).unwrap();
            prop_assert_eq!(p.name, path);
            prop_assert_eq!(p.value, Value::Float(v));
            prop_assert_eq!(p.timestamp, ts);
        }
    }
}
