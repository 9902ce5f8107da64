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
//! skipped (counted), and a line with only strings is accepted with no point. The timestamp is in
//! nanoseconds unless the request's `precision` says otherwise, and is cut to seconds; without one
//! the point takes the time of arrival. Escapes as InfluxDB reads them: `\,` `\ ` in the
//! measurement; `\,` `\=` `\ ` in tag keys, tag values and field keys; quotes in string values.
//!
//! What is accepted or refused follows a real InfluxDB 1.6, checked line by line against it by
//! `tests/tests/suite/differential.rs` over `tests/fixtures/line_protocol.corpus`; the few
//! differences that stay are listed in the README's relay section.

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
    /// The `precision` parameter as InfluxDB 1.6 reads it: `u`, `ms`, `s`, `m` and `h`; anything
    /// else (`n`, `ns`, but also `us` or a typo) means nanoseconds, without an error.
    pub fn parse(s: &str) -> Precision {
        match s {
            "u" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => Precision::Nanoseconds,
        }
    }

    fn nanos(self) -> i128 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        }
    }
}

/// A byte is escaped when the byte before it is a backslash, whatever that backslash follows:
/// InfluxDB's own scanner reads `a\\ b` as `a\` + escaped space, and so must we.
fn escaped(bytes: &[u8], i: usize) -> bool {
    i > 0 && bytes[i - 1] == b'\\'
}

/// Splits at unescaped `sep`; with `quotes`, also not inside a double-quoted string (a quote
/// preceded by a backslash does not open or close one).
fn split_unescaped(s: &str, sep: u8, quotes: bool) -> Vec<&str> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut in_quotes) = (0, false);
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' if quotes && !escaped(bytes, i) => in_quotes = !in_quotes,
            b if b == sep && !in_quotes && !escaped(bytes, i) => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Removes the backslash before each of `escapable`; other backslashes stay, as InfluxDB keeps
/// them (`my\\field` is stored with both backslashes).
fn unescape(s: &str, escapable: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next) = chars.peek() {
                if escapable.contains(&next) {
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

/// What a measurement name escapes.
const MEASUREMENT_ESCAPES: &[char] = &[',', ' '];
/// What tag keys, tag values and field keys escape.
const KEY_ESCAPES: &[char] = &[',', '=', ' '];

/// `key=value` at the first unescaped `=`.
fn split_key_value(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let at = (0..bytes.len()).find(|&i| bytes[i] == b'=' && !escaped(bytes, i))?;
    Some((&s[..at], &s[at + 1..]))
}

/// A field value: `Some(number)`, `None` for a string (skipped), or why it is refused. The rules
/// are InfluxDB 1.x's: no leading `+`; `i` integers within int64; `u` integers within uint64
/// (InfluxDB 1.8 and 2 take them; 1.6 refuses them); booleans in the ten spellings it takes.
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
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(int) = raw.strip_suffix('i') {
        let body = int.strip_prefix('-').unwrap_or(int);
        if !digits(body) {
            return Err(format!("invalid integer {raw:?}"));
        }
        return int.parse::<i64>().map(|i| Some(i as f64)).map_err(|_| format!("integer {raw:?} is out of range"));
    }
    if let Some(uint) = raw.strip_suffix('u') {
        if !digits(uint) {
            return Err(format!("invalid unsigned integer {raw:?}"));
        }
        return uint
            .parse::<u64>()
            .map(|u| Some(u as f64))
            .map_err(|_| format!("unsigned integer {raw:?} is out of range"));
    }
    // Rust's parser takes `+1`, `inf` and `nan`; InfluxDB takes none of them.
    if raw.starts_with('+') {
        return Err(format!("invalid number {raw:?}"));
    }
    let v: f64 = raw.parse().map_err(|_| format!("invalid number {raw:?}"))?;
    if !v.is_finite() {
        return Err(format!("field value {raw:?} is not a finite number"));
    }
    Ok(Some(v))
}

/// InfluxDB's time range, in nanoseconds.
const MIN_NANOS: i128 = -9_223_372_036_854_775_806;
const MAX_NANOS: i128 = 9_223_372_036_854_775_806;

fn timestamp(raw: &str, precision: Precision) -> Result<u64, String> {
    let body = raw.strip_prefix('-').unwrap_or(raw);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad timestamp {raw:?}"));
    }
    let t: i64 = raw.parse().map_err(|_| format!("bad timestamp {raw:?}"))?;
    let nanos = i128::from(t) * precision.nanos();
    if !(MIN_NANOS..=MAX_NANOS).contains(&nanos) {
        return Err(format!("time {raw:?} outside the range InfluxDB stores (years 1677 to 2262)"));
    }
    // Points carry unsigned seconds: a time before 1970 cannot be relayed (checked before the
    // division, which would round -5 ns up to 0).
    if nanos < 0 {
        return Err(format!("time {raw:?} is before 1970, which PuyPuy cannot carry"));
    }
    u64::try_from(nanos / 1_000_000_000).map_err(|_| format!("time {raw:?} is out of range"))
}

/// One line's points and how many string fields it had (skipped: PuyPuy carries numbers).
#[derive(Debug, Default, PartialEq)]
pub struct Line {
    pub points: Vec<Point>,
    pub strings_skipped: u64,
}

/// Parses one line. A blank or comment line gives no point; so does a line whose fields are all
/// strings (InfluxDB stores it; PuyPuy skips strings).
pub fn parse_line(line: &str, precision: Precision, now: u64) -> Result<Line, String> {
    let line = line.trim_start_matches([' ', '\t']);
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::default());
    }
    let bytes = line.as_bytes();
    // The series key ends at the first unescaped space; quotes mean nothing in it.
    let key_end = (0..bytes.len()).find(|&i| bytes[i] == b' ' && !escaped(bytes, i)).ok_or("missing fields")?;
    let series = &line[..key_end];
    let rest = line[key_end..].trim_start_matches(' ');
    let sections = split_unescaped(rest, b' ', true);
    let sections: Vec<&str> = sections.into_iter().filter(|s| !s.is_empty()).collect();
    let (fields, ts) = match sections.as_slice() {
        [] => return Err("missing fields".into()),
        [fields] => (*fields, None),
        [fields, ts] => (*fields, Some(*ts)),
        _ => return Err("too many sections (unescaped space?)".into()),
    };
    let mut series_parts = split_unescaped(series, b',', false).into_iter();
    let measurement = unescape(series_parts.next().unwrap_or(""), MEASUREMENT_ESCAPES);
    if measurement.is_empty() {
        return Err("missing measurement".into());
    }
    let mut tags = Vec::new();
    for tag in series_parts {
        match split_key_value(tag) {
            Some((k, v)) if !k.is_empty() && !v.is_empty() && split_key_value(v).is_none() => {
                tags.push((unescape(k, KEY_ESCAPES), unescape(v, KEY_ESCAPES)))
            }
            _ => return Err(format!("invalid tag format {tag:?}")),
        }
    }
    let timestamp = match ts {
        None => now,
        Some(t) => timestamp(t, precision)?,
    };
    let mut out = Line::default();
    for field in split_unescaped(fields, b',', true) {
        let (key, raw) = split_key_value(field).ok_or_else(|| format!("invalid field format {field:?}"))?;
        let key = unescape(key, KEY_ESCAPES);
        if key.is_empty() {
            return Err(format!("invalid field format {field:?}"));
        }
        if key == "time" {
            return Err("invalid field name \"time\" (InfluxDB refuses it)".into());
        }
        match field_value(raw)? {
            Some(v) => {
                let name = if key == "value" { measurement.clone() } else { format!("{measurement}_{key}") };
                let mut p = Point::new(name, timestamp, Value::Float(v), "relay");
                p.tags = tags.clone();
                out.points.push(p);
            }
            None => out.strings_skipped += 1,
        }
    }
    Ok(out)
}

/// The lines of a body: split at line feeds, except inside a double-quoted field value (a string
/// field may hold a line break). As InfluxDB's scanner: a backslash hides the byte after it, the
/// first space starts the fields, and a quote there opens or closes a string only in a field's
/// value (after its `=`). A carriage return is not a line ending: InfluxDB refuses `value=1\r`,
/// and so do we.
fn lines(body: &str) -> Vec<&str> {
    let bytes = body.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let (mut in_fields, mut quoted, mut equals, mut commas) = (false, false, 0u32, 0u32);
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if i + 2 < bytes.len() => {
                    i += 2;
                    continue;
                }
                b' ' => in_fields = true,
                b'=' if in_fields && !quoted => equals += 1,
                b',' if in_fields && !quoted => commas += 1,
                b'"' if in_fields && equals > commas => quoted = !quoted,
                b'\n' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        out.push(&body[start..i]);
        i += 1;
    }
    out
}

/// What a body held: its points, the lines refused (number from 1, the line, why) and the string
/// fields skipped. As InfluxDB does, the good lines of a body with bad ones are kept (a "partial
/// write"), and the answer says which were refused.
#[derive(Debug, Default)]
pub struct Body {
    pub points: Vec<Point>,
    pub refused: Vec<(usize, String, String)>,
    pub strings_skipped: u64,
    /// Lines with data (not blank, not comments), refused ones included.
    pub lines: u64,
}

pub fn parse_body(body: &str, precision: Precision, now: u64) -> Body {
    let mut out = Body::default();
    for (i, line) in lines(body).into_iter().enumerate() {
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        out.lines += 1;
        match parse_line(line, precision, now) {
            Ok(parsed) => {
                out.points.extend(parsed.points);
                out.strings_skipped += parsed.strings_skipped;
            }
            Err(why) => out.refused.push((i + 1, line.to_string(), why)),
        }
    }
    out
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
        .unwrap()
        .points;
        let names: Vec<(&str, f64)> = points.iter().map(|p| (p.name.as_str(), p.value.as_f64())).collect();
        assert_eq!(names, vec![("cpu", 0.64), ("cpu_idle", 12.0), ("cpu_up", 1.0)]);
        assert_eq!(points[0].timestamp, 1700000000);
        assert_eq!(points[0].tags, vec![("host".into(), "web01".into()), ("region".into(), "eu".into())]);
    }

    #[test]
    fn escapes_and_precision() {
        let p = parse_line("my\\ m\\,x,k\\ ey=a\\,b\\=c value=1 1700000000", Precision::Seconds, 0).unwrap().points;
        assert_eq!(p[0].name, "my m,x");
        assert_eq!(p[0].tags, vec![("k ey".into(), "a,b=c".into())]);
        assert_eq!(p[0].timestamp, 1700000000);
        let now = parse_line("m value=2", Precision::Nanoseconds, 99).unwrap().points;
        assert_eq!(now[0].timestamp, 99);
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        assert_eq!(parse_line("cpu", Precision::Nanoseconds, 0).unwrap_err(), "missing fields");
        assert!(parse_line("cpu value=", Precision::Nanoseconds, 0).unwrap_err().contains("invalid number"));
        assert!(parse_line("cpu value=abc", Precision::Nanoseconds, 0).is_err());
        assert!(parse_line("cpu,bad value=1", Precision::Nanoseconds, 0).unwrap_err().contains("invalid tag"));
    }

    /// Regression: a line of string fields only (valid, and stored by InfluxDB) was refused with
    /// "no numeric field", and with it the whole body: the numeric lines beside it were lost.
    #[test]
    fn a_line_of_strings_only_is_accepted_and_its_strings_counted() {
        let body = parse_body("events msg=\"deployed\",who=\"ci\"\ncpu value=1\n", Precision::Seconds, 7);
        assert!(body.refused.is_empty(), "{:?}", body.refused);
        assert_eq!(body.strings_skipped, 2);
        assert_eq!(body.points.len(), 1);
        assert_eq!(body.lines, 2);
    }

    #[test]
    fn the_good_lines_of_a_body_with_bad_ones_are_kept() {
        let body = parse_body("a value=1\nb value=x\nc value=3\n", Precision::Seconds, 0);
        let names: Vec<&str> = body.points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(body.refused.len(), 1);
        assert_eq!((body.refused[0].0, body.refused[0].1.as_str()), (2, "b value=x"));
    }

    /// What InfluxDB 1.6 refuses and Rust's number parsers take (found by the differential test).
    #[test]
    fn what_influxdb_refuses_is_refused() {
        for line in [
            "m value=+1",
            "m value=+1i",
            "m value=9223372036854775808i",
            "m value=-1u",
            "m,k=v=w value=1",
            "m,k=a\\\\ value=1",
            "m value=1 +1700000000",
            "m value=1 9223372036854775807",
            "m time=5",
            "m value=1\r",
        ] {
            assert!(parse_line(line, Precision::Nanoseconds, 0).is_err(), "{line:?} was accepted");
        }
        assert!(parse_line("m value=1 9223372037", Precision::Seconds, 0).is_err());
        // Regression: -5 ns divided to 0 s was taken as 1970-01-01 instead of refused.
        assert!(parse_line("m value=1 -5", Precision::Nanoseconds, 0).is_err());
        assert!(parse_line("m value=1 -1", Precision::Milliseconds, 0).is_err());
        assert!(parse_line("m value=1 9223372036", Precision::Seconds, 0).is_ok());
    }

    #[test]
    fn quotes_in_a_series_key_are_plain_and_a_string_may_hold_a_line_feed() {
        let p = parse_line("m\"q,k=v\"q value=1", Precision::Seconds, 0).unwrap().points;
        assert_eq!(p[0].name, "m\"q");
        assert_eq!(p[0].tags, vec![("k".into(), "v\"q".into())]);
        let body = parse_body("a msg=\"two\nlines\",value=4\nb value=5", Precision::Seconds, 0);
        let values: Vec<(&str, f64)> = body.points.iter().map(|p| (p.name.as_str(), p.value.as_f64())).collect();
        assert_eq!(values, [("a", 4.0), ("b", 5.0)]);
        let p = parse_line("my\\\\m,k=a\\\\b my\\\\f=1", Precision::Seconds, 0).unwrap().points;
        assert_eq!((p[0].name.as_str(), p[0].tags[0].1.as_str()), ("my\\\\m_my\\\\f", "a\\\\b"));
    }

    #[test]
    fn an_unknown_precision_means_nanoseconds_as_in_influxdb_1_6() {
        assert_eq!(Precision::parse("us"), Precision::Nanoseconds);
        assert_eq!(Precision::parse("u"), Precision::Microseconds);
        assert_eq!(Precision::parse("S"), Precision::Nanoseconds);
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
            let p = parse_line(&line, Precision::Seconds, 0).unwrap().points;
            prop_assert_eq!(p.len(), 1);
            prop_assert_eq!(&p[0].name, &m);
            prop_assert_eq!(p[0].value, Value::Float(v));
            prop_assert_eq!(p[0].timestamp, ts);
            prop_assert_eq!(&p[0].tags, &tags);
        }
    }
}
