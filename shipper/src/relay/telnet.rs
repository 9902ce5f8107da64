//! OpenTSDB telnet-style lines (<http://opentsdb.net/docs/build/html/api_telnet/put.html>):
//!
//! ```text
//! put sys.cpu.user 1700000000 42.5 host=web01 cpu=0
//! ```
//!
//! The timestamp is unix seconds, or milliseconds with 13 digits (cut to seconds). Values are sent
//! as floats. Tags are optional here (OpenTSDB itself wants one; the shipper adds its own).

use puypuy_common::{Point, Value};

pub fn parse_put(line: &str) -> Result<Point, String> {
    let mut fields = line.split_ascii_whitespace();
    match fields.next() {
        Some("put") => {}
        Some(other) => return Err(format!("unknown command {other:?} (expected put)")),
        None => return Err("empty line".into()),
    }
    let name = fields.next().ok_or("put: missing metric name")?;
    let ts = fields.next().ok_or("put: missing timestamp")?;
    let value = fields.next().ok_or("put: missing value")?;
    let timestamp = parse_timestamp(ts)?;
    let value: f64 = value.parse().map_err(|_| format!("put: invalid value {value:?}"))?;
    if !value.is_finite() {
        return Err(format!("put: value {value} is not finite"));
    }
    let mut point = Point::new(name, timestamp, Value::Float(value), "relay");
    for tag in fields {
        point.tags.push(parse_tag(tag).map_err(|e| format!("put: {e}"))?);
    }
    Ok(point)
}

/// A `key=value` tag of the text inputs (telnet, Graphite); both sides non-empty.
pub fn parse_tag(tag: &str) -> Result<(String, String), String> {
    match tag.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid tag {tag:?} (expected key=value)")),
    }
}

/// Unix seconds, or milliseconds when 13 digits long.
pub fn parse_timestamp(ts: &str) -> Result<u64, String> {
    let t: u64 = ts.parse().map_err(|_| format!("invalid timestamp {ts:?}"))?;
    Ok(if ts.len() >= 13 { t / 1000 } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_put_line() {
        let p = parse_put("put sys.cpu.user 1700000000123 42.5 host=web01 cpu=0").unwrap();
        assert_eq!(p.name, "sys.cpu.user");
        assert_eq!(p.timestamp, 1700000000);
        assert_eq!(p.value, Value::Float(42.5));
        assert_eq!(p.tags, vec![("host".into(), "web01".into()), ("cpu".into(), "0".into())]);
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(parse_put("get x 1 2").unwrap_err().contains("unknown command"));
        assert!(parse_put("put x").unwrap_err().contains("missing timestamp"));
        assert!(parse_put("put x 1 abc").unwrap_err().contains("invalid value"));
        assert!(parse_put("put x 1 1 novalue").unwrap_err().contains("invalid tag"));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,100}") {
            let _ = parse_put(&s);
        }

        #[test]
        fn valid_lines_round_trip(name in "[a-z][a-z0-9._]{0,20}", ts in 1_000_000_000u64..9_999_999_999, v in -1e9f64..1e9,
                                  tags in proptest::collection::vec(("[a-z]{1,5}", "[a-z0-9]{1,5}"), 0..3)) {
            let mut line = format!("put {name} {ts} {v}");
            for (k, val) in &tags { line.push_str(&format!(" {k}={val}")); }
            let p = parse_put(&line).unwrap();
            prop_assert_eq!(p.name, name);
            prop_assert_eq!(p.timestamp, ts);
            prop_assert_eq!(p.value, Value::Float(v));
            prop_assert_eq!(p.tags, tags);
        }
    }
}
