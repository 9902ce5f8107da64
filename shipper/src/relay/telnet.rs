//! OpenTSDB telnet-style lines (<http://opentsdb.net/docs/build/html/api_telnet/put.html>):
//!
//! ```text
//! put sys.cpu.user 1700000000 42.5 host=web01 cpu=0
//! ```
//!
//! What is accepted follows OpenTSDB's documented rules (no OpenTSDB server can be installed here,
//! and VictoriaMetrics accepts more than OpenTSDB, so the documentation is the reference), shared
//! with `/api/put` ([`check_name`], [`parse_value`], [`parse_timestamp`], [`check_tags`]):
//! - metric names, tag keys and tag values hold only `a-z A-Z 0-9 - _ . /` and Unicode letters
//!   (<http://opentsdb.net/docs/build/html/user_guide/writing/index.html#metrics-and-tags>);
//! - the timestamp is a positive unix time in seconds, or milliseconds (11 to 13 digits; cut to
//!   seconds here);
//! - the value is an integer within Java's long, or a float `[-]<#>.<#>[e|E][-]<#>`, finite;
//! - tags are `key=value`, a key at most once, at most 8 of them (`tsd.storage.max_tags`).
//!
//! One difference stays, on purpose: OpenTSDB wants at least one tag; the relay takes a point
//! without tags, since the shipper adds the host's own.

use puypuy_common::{Point, Value};

/// `tsd.storage.max_tags`'s default.
pub const MAX_TAGS: usize = 8;

pub fn parse_put(line: &str) -> Result<Point, String> {
    let mut fields = line.split_ascii_whitespace();
    match fields.next() {
        Some("put") => {}
        Some(other) => return Err(format!("unknown command {other:?} (expected put)")),
        None => return Err("empty line".into()),
    }
    let name = fields.next().ok_or("missing metric name")?;
    let ts = fields.next().ok_or("missing timestamp")?;
    let value = fields.next().ok_or("missing value")?;
    check_name("metric", name)?;
    let timestamp = parse_timestamp(ts)?;
    let value = parse_value(value)?;
    let mut point = Point::new(name, timestamp, Value::Float(value), "relay");
    for tag in fields {
        point.tags.push(parse_tag(tag)?);
    }
    check_tags(&point.tags)?;
    Ok(point)
}

/// A `key=value` tag of the text inputs (telnet, Graphite); both sides non-empty.
pub fn parse_tag(tag: &str) -> Result<(String, String), String> {
    match tag.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid tag {tag:?} (expected key=value)")),
    }
}

/// OpenTSDB's character set for metric names, tag keys and tag values.
pub fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("invalid {what}: empty"));
    }
    match s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') || c.is_alphabetic())) {
        Some(c) => Err(format!("invalid {what} {s:?}: illegal character {c:?}")),
        None => Ok(()),
    }
}

/// Tags as OpenTSDB takes them: valid characters, each key once, at most [`MAX_TAGS`].
pub fn check_tags(tags: &[(String, String)]) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("too many tags: {} (at most {MAX_TAGS})", tags.len()));
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        check_name("tag key", k)?;
        check_name("tag value", v)?;
        if tags[..i].iter().any(|(other, _)| other == k) {
            return Err(format!("duplicate tag {k:?}"));
        }
    }
    Ok(())
}

/// Unix seconds, or milliseconds when 11 to 13 digits long; positive.
pub fn parse_timestamp(ts: &str) -> Result<u64, String> {
    if ts.is_empty() || ts.len() > 13 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid timestamp {ts:?} (expected unix seconds, or milliseconds, at most 13 digits)"));
    }
    let t: u64 = ts.parse().map_err(|_| format!("invalid timestamp {ts:?}"))?;
    if t == 0 {
        return Err("invalid timestamp \"0\" (it must be positive)".into());
    }
    Ok(if t > 9_999_999_999 { t / 1000 } else { t })
}

/// An integer within Java's long, or a float in the documented notation; finite.
pub fn parse_value(raw: &str) -> Result<f64, String> {
    let invalid = || format!("invalid value {raw:?} (expected a number such as 42, -1.5 or 1.3E3)");
    let b = raw.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let whole = digits(&mut i);
    let mut fraction = 0;
    let mut float = false;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        float = true;
        fraction = digits(&mut i);
    }
    if whole + fraction == 0 {
        return Err(invalid());
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        float = true;
        if i < b.len() && b[i] == b'-' {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return Err(invalid());
        }
    }
    if i != b.len() {
        return Err(invalid());
    }
    if !float {
        return raw.parse::<i64>().map(|v| v as f64).map_err(|_| format!("value {raw:?} is out of a long's range"));
    }
    let v: f64 = raw.parse().map_err(|_| invalid())?;
    if !v.is_finite() {
        return Err(format!("value {raw:?} is not a finite number"));
    }
    Ok(v)
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
        assert!(parse_put("put x:y 1 1 a=b").unwrap_err().contains("illegal character ':'"));
        assert!(parse_put("put x 1 1 a=b a=c").unwrap_err().contains("duplicate tag"));
        assert!(parse_put("put x 1 +1 a=b").is_err());
        assert!(parse_put("put x 1 1e+3 a=b").is_err());
        assert!(parse_put("put x 1 9223372036854775808 a=b").is_err());
        assert!(parse_put("put x 0 1 a=b").is_err());
        assert!(parse_put("put x 17000000001234 1 a=b").is_err());
        assert!(parse_put("put x 1 1 a=1 b=1 c=1 d=1 e=1 f=1 g=1 h=1 i=1").unwrap_err().contains("too many tags"));
        assert_eq!(parse_put("put x.é/y 1 -1.3E-3 k=v").unwrap().value, Value::Float(-1.3e-3));
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
                                  tags in proptest::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{1,5}", 0..3)) {
            let tags: Vec<(String, String)> = tags.into_iter().collect();
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
