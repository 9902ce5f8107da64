//! InfluxDB 1.x line protocol
//! (<https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/>):
//!
//! ```text
//! cpu,host=web01,region=eu value=0.64,idle=12i 1700000000000000000
//! ```
//!
//! Each numeric field becomes one point: the field `value` is the metric named after the
//! measurement (`cpu`), any other field `f` the metric `measurement_f` (`cpu_idle`). Integers
//! (`12i`, `12u`), floats and booleans (sent as 1 or 0) are sent as floats; string fields are
//! skipped. A line without any numeric field is refused. The timestamp is in nanoseconds unless
//! the request's `precision` says otherwise (`n`, `u`, `ms`, `s`, `m`, `h`), and is cut to seconds;
//! without one the point takes the time of arrival. Escapes: `\,` `\ ` in the measurement; `\,`
//! `\=` `\ ` in tag keys, tag values and field keys; `\"` and `\\` in string field values.

use puypuy_common::{Point, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    pub fn parse(s: &str) -> Option<Precision> {
        Some(match s {
            "" | "n" | "ns" => Precision::Nanoseconds,
            "u" | "us" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return None,
        })
    }

    fn to_seconds(self, t: i64) -> Option<u64> {
        let s = match self {
            Precision::Nanoseconds => t / 1_000_000_000,
            Precision::Microseconds => t / 1_000_000,
            Precision::Milliseconds => t / 1000,
            Precision::Seconds => t,
            Precision::Minutes => t.checked_mul(60)?,
            Precision::Hours => t.checked_mul(3600)?,
        };
        u64::try_from(s).ok()
    }
}

/// Splits at unescaped `sep` outside double quotes (when `quotes` is true).
fn split_unescaped(s: &str, sep: u8, quotes: bool) -> Vec<&str> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut i, mut in_quotes) = (0, 0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'"' if quotes => in_quotes = !in_quotes,
            b if b == sep && !in_quotes => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[start.min(s.len())..]);
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next) = chars.peek() {
                if matches!(next, ',' | '=' | ' ' | '"' | '\\') {
                    out.push(next);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

fn split_key_value(s: &str) -> Option<(String, &str)> {
    let parts = split_unescaped(s, b'=', false);
    if parts.len() < 2 {
        return None;
    }
    let key_len = parts[0].len();
    Some((unescape(parts[0]), &s[key_len + 1..]))
}

fn field_value(raw: &str) -> Result<Option<f64>, String> {
    if raw.starts_with('"') {
        return if raw.len() >= 2 && raw.ends_with('"') {
            Ok(None)
        } else {
            Err(format!("unterminated string {raw:?}"))
        };
    }
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(Some(1.0)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(Some(0.0)),
        _ => {}
    }
    let number = raw.strip_suffix('i').or_else(|| raw.strip_suffix('u'));
    let parsed = match number {
        Some(int) => int.parse::<i64>().ok().map(|i| i as f64).or_else(|| int.parse::<u64>().ok().map(|u| u as f64)),
        None => raw.parse::<f64>().ok(),
    };
    let v = parsed.ok_or_else(|| format!("invalid field value {raw:?}"))?;
    if !v.is_finite() {
        return Err(format!("field value {raw:?} is not finite"));
    }
    Ok(Some(v))
}

/// Parses one line into its points. `Ok(empty)` for a blank or comment line.
pub fn parse_line(line: &str, precision: Precision, now: u64) -> Result<Vec<Point>, String> {
    let line = line.trim_end_matches('\r');
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(Vec::new());
    }
    let sections: Vec<&str> = split_unescaped(line, b' ', true).into_iter().filter(|s| !s.is_empty()).collect();
    let (series, fields, ts) = match sections.as_slice() {
        [series, fields] => (*series, *fields, None),
        [series, fields, ts] => (*series, *fields, Some(*ts)),
        [_] => return Err("missing fields".into()),
        _ => return Err("too many sections (unescaped space?)".into()),
    };
    let mut series_parts = split_unescaped(series, b',', false).into_iter();
    let measurement = unescape(series_parts.next().unwrap_or(""));
    if measurement.is_empty() {
        return Err("missing measurement".into());
    }
    let mut tags = Vec::new();
    for tag in series_parts {
        match split_key_value(tag) {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => tags.push((k, unescape(v))),
            _ => return Err(format!("invalid tag {tag:?}")),
        }
    }
    let timestamp = match ts {
        None => now,
        Some(t) => {
            let n: i64 = t.parse().map_err(|_| format!("invalid timestamp {t:?}"))?;
            precision.to_seconds(n).ok_or_else(|| format!("invalid timestamp {t:?}"))?
        }
    };
    let mut points = Vec::new();
    for field in split_unescaped(fields, b',', true) {
        let (key, raw) = split_key_value(field).ok_or_else(|| format!("invalid field {field:?}"))?;
        if key.is_empty() {
            return Err(format!("invalid field {field:?}"));
        }
        if let Some(v) = field_value(raw)? {
            let name = if key == "value" { measurement.clone() } else { format!("{measurement}_{key}") };
            let mut p = Point::new(name, timestamp, Value::Float(v), "relay");
            p.tags = tags.clone();
            points.push(p);
        }
    }
    if points.is_empty() {
        return Err("no numeric field".into());
    }
    Ok(points)
}

/// Parses a whole body. On the first bad line, returns its number (from 1), the line and why.
pub fn parse_body(body: &str, precision: Precision, now: u64) -> Result<Vec<Point>, (usize, String, String)> {
    let mut points = Vec::new();
    for (i, line) in body.split('\n').enumerate() {
        match parse_line(line, precision, now) {
            Ok(p) => points.extend(p),
            Err(e) => return Err((i + 1, line.to_string(), e)),
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn value_field_keeps_the_measurement_name_other_fields_are_suffixed() {
        let points = parse_line(
            "cpu,host=web01,region=eu value=0.64,idle=12i,up=t,note=\"x y\" 1700000000000000000",
            Precision::Nanoseconds,
            0,
        )
        .unwrap();
        let names: Vec<(&str, f64)> = points.iter().map(|p| (p.name.as_str(), p.value.as_f64())).collect();
        assert_eq!(names, vec![("cpu", 0.64), ("cpu_idle", 12.0), ("cpu_up", 1.0)]);
        assert_eq!(points[0].timestamp, 1700000000);
        assert_eq!(points[0].tags, vec![("host".into(), "web01".into()), ("region".into(), "eu".into())]);
    }

    #[test]
    fn escapes_and_precision() {
        let p = parse_line("my\\ m\\,x,k\\ ey=a\\,b\\=c value=1 1700000000", Precision::Seconds, 0).unwrap();
        assert_eq!(p[0].name, "my m,x");
        assert_eq!(p[0].tags, vec![("k ey".into(), "a,b=c".into())]);
        assert_eq!(p[0].timestamp, 1700000000);
        let now = parse_line("m value=2", Precision::Nanoseconds, 99).unwrap();
        assert_eq!(now[0].timestamp, 99);
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        assert_eq!(parse_line("cpu", Precision::Nanoseconds, 0).unwrap_err(), "missing fields");
        assert!(parse_line("cpu value=", Precision::Nanoseconds, 0).unwrap_err().contains("invalid field value"));
        assert!(parse_line("cpu value=abc", Precision::Nanoseconds, 0).is_err());
        assert_eq!(parse_line("cpu s=\"only text\"", Precision::Nanoseconds, 0).unwrap_err(), "no numeric field");
        assert!(parse_line("cpu,bad value=1", Precision::Nanoseconds, 0).unwrap_err().contains("invalid tag"));
        let e = parse_body("a value=1\nb value=x\n", Precision::Seconds, 0).unwrap_err();
        assert_eq!((e.0, e.1.as_str()), (2, "b value=x"));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,120}") {
            let _ = parse_body(&s, Precision::Nanoseconds, 1);
        }

        #[test]
        fn arbitrary_bytes_as_lossy_text_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_body(&String::from_utf8_lossy(&b), Precision::Seconds, 1);
        }

        #[test]
        fn valid_lines_round_trip(m in "[a-z][a-z0-9_]{0,10}", tags in proptest::collection::vec(("[a-z]{1,5}", "[a-z0-9]{1,5}"), 0..3),
                                  v in -1e9f64..1e9, ts in 1_000_000_000u64..2_000_000_000) {
            let mut line = m.clone();
            for (k, val) in &tags { line.push_str(&format!(",{k}={val}")); }
            line.push_str(&format!(" value={v} {ts}"));
            let p = parse_line(&line, Precision::Seconds, 0).unwrap();
            prop_assert_eq!(p.len(), 1);
            prop_assert_eq!(&p[0].name, &m);
            prop_assert_eq!(p[0].value, Value::Float(v));
            prop_assert_eq!(p[0].timestamp, ts);
            prop_assert_eq!(&p[0].tags, &tags);
        }
    }
}
