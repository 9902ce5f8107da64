//! The script output format, one point per line:
//!
//! ```text
//! name value check_type check_style [timestamp] [key=value …]
//! ```
//!
//! Fields are separated by runs of spaces or tabs; the last line may lack its newline; `\r\n` line
//! ends are accepted; empty lines are ignored. `value` is a float (sent as a float, as the old agent
//! did); `check_style` is `stack` (sent as is) or `rate` (the shipper sends its per-second rate);
//! `check_type` becomes the `type` tag. The optional timestamp is unix seconds, or milliseconds when
//! it has 13 digits or more (it is then cut to seconds); without it the point takes the cycle's
//! time. Tags follow as `key=value`. Anything else on a line makes the whole line bad: it is
//! skipped and reported, and the script's other lines still ship.

use puypuy_common::{Point, Style, Value};

/// Longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    InvalidUtf8,
    TooLong(usize),
    TooFewFields(usize),
    BadValue(String),
    NotFinite(String),
    BadStyle(String),
    BadTimestamp(String),
    BadTag(String),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::InvalidUtf8 => write!(f, "not valid UTF-8"),
            LineError::TooLong(n) => write!(f, "line of {n} bytes is over the {MAX_LINE_BYTES}-byte limit"),
            LineError::TooFewFields(n) => {
                write!(f, "{n} fields where 4 are needed (name value check_type stack|rate)")
            }
            LineError::BadValue(v) => write!(f, "value {v:?} is not a number"),
            LineError::NotFinite(v) => write!(f, "value {v:?} is not a finite number"),
            LineError::BadStyle(s) => write!(f, "check style {s:?} is neither stack nor rate"),
            LineError::BadTimestamp(t) => write!(f, "{t:?} is neither a unix timestamp nor a key=value tag"),
            LineError::BadTag(t) => write!(f, "tag {t:?} is not key=value"),
        }
    }
}

/// Parses one line (without its newline). `Ok(None)` for an empty line.
pub fn parse_line(line: &[u8], default_timestamp: u64) -> Result<Option<Point>, LineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong(line.len()));
    }
    let text = std::str::from_utf8(line).map_err(|_| LineError::InvalidUtf8)?;
    let mut fields = text.split([' ', '\t', '\r']).filter(|f| !f.is_empty());
    let first: Vec<&str> = fields.by_ref().take(4).collect();
    match first.len() {
        0 => return Ok(None),
        1..=3 => return Err(LineError::TooFewFields(first.len())),
        _ => {}
    }
    let (name, raw_value, check_type, raw_style) = (first[0], first[1], first[2], first[3]);
    let value: f64 = raw_value.parse().map_err(|_| LineError::BadValue(raw_value.to_string()))?;
    if !value.is_finite() {
        return Err(LineError::NotFinite(raw_value.to_string()));
    }
    let style = Style::parse(raw_style).ok_or_else(|| LineError::BadStyle(raw_style.to_string()))?;
    let mut timestamp = default_timestamp;
    let mut tags = Vec::new();
    for (i, field) in fields.enumerate() {
        match field.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => tags.push((k.to_string(), v.to_string())),
            Some(_) => return Err(LineError::BadTag(field.to_string())),
            None if i == 0 => timestamp = parse_timestamp(field)?,
            None => return Err(LineError::BadTag(field.to_string())),
        }
    }
    Ok(Some(Point {
        name: name.to_string(),
        timestamp,
        value: Value::Float(value),
        check_type: check_type.to_string().into(),
        style,
        tags,
    }))
}

fn parse_timestamp(field: &str) -> Result<u64, LineError> {
    let bad = || LineError::BadTimestamp(field.to_string());
    if !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let t: u64 = field.parse().map_err(|_| bad())?;
    match field.len() {
        9..=11 => Ok(t),
        12..=14 => Ok(t / 1000),
        _ => Err(bad()),
    }
}

/// Every line of an output: `(line number from 1, result)`. Empty lines are left out.
pub fn parse_output(output: &[u8], default_timestamp: u64) -> Vec<(usize, Result<Point, LineError>)> {
    let mut out = Vec::new();
    for (i, line) in output.split(|b| *b == b'\n').enumerate() {
        match parse_line(line, default_timestamp) {
            Ok(Some(p)) => out.push((i + 1, Ok(p))),
            Ok(None) => {}
            Err(e) => out.push((i + 1, Err(e))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn old_readme_lines_parse() {
        let out = b"random_gen 12345 my_bash_random stack\nrandom_gen2 777 my_bash_random2 rate";
        let points: Vec<Point> = parse_output(out, 100).into_iter().map(|(_, r)| r.expect("a valid line")).collect();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0], Point::float("random_gen", 100, 12345.0, "my_bash_random"));
        assert_eq!(points[1], Point::float("random_gen2", 100, 777.0, "my_bash_random2").rate());
    }

    #[test]
    fn runs_of_spaces_and_tabs_are_one_separator() {
        let p = parse_line(b"  a \t 1.5\t\tt   stack \r", 7).expect("a valid line").expect("a point");
        assert_eq!(p, Point::float("a", 7, 1.5, "t"));
    }

    #[test]
    fn timestamp_and_tags_extension() {
        let p = parse_line(b"a 1 t stack 1700000000 dc=eu host=web", 7).expect("a valid line").expect("a point");
        assert_eq!(p.timestamp, 1700000000);
        assert_eq!(p.tags, vec![("dc".into(), "eu".into()), ("host".into(), "web".into())]);
        let ms = parse_line(b"a 1 t rate 1700000000123", 7).expect("a valid line").expect("a point");
        assert_eq!(ms.timestamp, 1700000000);
        let tags_only = parse_line(b"a 1 t stack k=v", 7).expect("a valid line").expect("a point");
        assert_eq!((tags_only.timestamp, tags_only.tags.len()), (7, 1));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert_eq!(parse_line(b"a 1 t", 0), Err(LineError::TooFewFields(3)));
        assert_eq!(parse_line(b"a x t stack", 0), Err(LineError::BadValue("x".into())));
        assert_eq!(parse_line(b"a NaN t stack", 0), Err(LineError::NotFinite("NaN".into())));
        assert_eq!(parse_line(b"a inf t stack", 0), Err(LineError::NotFinite("inf".into())));
        assert_eq!(parse_line(b"a 1 t gauge", 0), Err(LineError::BadStyle("gauge".into())));
        assert_eq!(parse_line(b"a 1 t stack soon", 0), Err(LineError::BadTimestamp("soon".into())));
        assert_eq!(parse_line(b"a 1 t stack k=v 1700000000", 0), Err(LineError::BadTag("1700000000".into())));
        assert_eq!(parse_line(b"a 1 t stack =v", 0), Err(LineError::BadTag("=v".into())));
        assert_eq!(parse_line(b"a \xff t stack", 0), Err(LineError::InvalidUtf8));
        assert_eq!(parse_line(&[b'a'; 5000], 0), Err(LineError::TooLong(5000)));
        assert_eq!(parse_line(b"   ", 0), Ok(None));
    }

    #[test]
    fn good_lines_survive_between_bad_ones() {
        let out = b"good1 1 t stack\ngarbage\ngood2 2 t rate\n\nbad x t stack\n";
        let results = parse_output(out, 5);
        let good: Vec<usize> = results.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| *n).collect();
        let bad: Vec<usize> = results.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| *n).collect();
        assert_eq!(good, vec![1, 3]);
        assert_eq!(bad, vec![2, 5]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_output(&bytes, 1);
        }

        #[test]
        fn valid_lines_round_trip(name in "[a-z_][a-z0-9_.]{0,20}", value in -1e12f64..1e12, ty in "[a-z_]{1,10}", rate in any::<bool>(),
                                  ts in 1_000_000_000u64..9_999_999_999, tags in proptest::collection::vec(("[a-z]{1,5}", "[a-z0-9]{1,5}"), 0..3)) {
            let style = if rate { "rate" } else { "stack" };
            let mut line = format!("{name} {value} {ty} {style} {ts}");
            for (k, v) in &tags { line.push_str(&format!(" {k}={v}")); }
            let p = parse_line(line.as_bytes(), 0).expect("a valid line").expect("a point");
            prop_assert_eq!(p.name, name);
            prop_assert_eq!(p.value, Value::Float(value));
            prop_assert_eq!(p.check_type, ty);
            prop_assert_eq!(p.timestamp, ts);
            prop_assert_eq!(p.tags, tags);
        }
    }
}
