//! The JSON body shared by OpenTSDB (`/api/put`, timestamps in seconds, key `metric`) and KairosDB
//! (`/api/v1/datapoints`, timestamps in milliseconds, key `name`): an array of
//! `{"<name key>":"…","timestamp":…,"value":…,"tags":{…}}`.
//!
//! Both refuse characters outside `a-z A-Z 0-9 - _ . /` and Unicode letters in names, tag keys and
//! tag values, and both refuse empty tag values; every other character becomes `_`.

use puypuy_common::{Point, Value};

use crate::tags::HostTags;

pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    fn ok(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') || (!c.is_ascii() && c.is_alphabetic())
    }
    let ascii_ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/');
    if s.as_bytes().iter().all(ascii_ok) || s.chars().all(ok) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.chars().map(|c| if ok(c) { c } else { '_' }).collect())
    }
}

/// A cleaned string as a JSON string literal: `clean` leaves nothing JSON must escape (no quote,
/// backslash or control character), so it is written as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    let s = clean(s);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

pub fn encode(points: &[Point], host: &HostTags, name_key: &str, timestamp_scale: u64, out: &mut Vec<u8>) {
    let mut numbers = itoa::Buffer::new();
    let tag = |out: &mut Vec<u8>, k: &str, v: &str| {
        string(out, k);
        out.push(b':');
        string(out, v);
        out.push(b',');
    };
    // The host-wide tags written once per batch.
    let host = host.encoded(tag);
    out.push(b'[');
    let mut first = true;
    for p in points {
        if !p.value.is_finite() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(name_key.as_bytes());
        out.extend_from_slice(b"\":");
        string(out, &p.name);
        out.extend_from_slice(b",\"timestamp\":");
        out.extend_from_slice(numbers.format(p.timestamp.saturating_mul(timestamp_scale)).as_bytes());
        out.extend_from_slice(b",\"value\":");
        match p.value {
            Value::Int(i) => out.extend_from_slice(numbers.format(i).as_bytes()),
            Value::Float(f) => {
                let _ = serde_json::to_writer(&mut *out, &f);
            }
        }
        out.extend_from_slice(b",\"tags\":{");
        host.write(p, out, tag);
        // Every tag ends with a comma; the last one must not.
        if out.last() == Some(&b',') {
            out.pop();
        }
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(points: &[Point], host: &HostTags) -> String {
        let mut out = Vec::new();
        encode(points, host, "metric", 1, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    /// A relay adds none of its tags to points a PuyPuy agent forwarded (OpenTSDB and KairosDB).
    #[test]
    fn carried_points_keep_exactly_their_tags() {
        use crate::tags::{relayed, HostTagging};
        let relay = relayed::relay();
        assert_eq!(
            encoded(&[relayed::point()], relay.for_points(HostTagging::Carried)),
            r#"[{"metric":"sys_load_1","timestamp":1700000000,"value":0.5,"tags":{"type":"system","host":"agent","group":"ag"}}]"#
        );
        assert_eq!(
            encoded(&[relayed::point()], relay.for_points(HostTagging::ThisHost)),
            r#"[{"metric":"sys_load_1","timestamp":1700000000,"value":0.5,"tags":{"cluster":"rc","location":"dc1","owner":"ops","type":"system","host":"agent","group":"ag"}}]"#
        );
    }

    #[test]
    fn tags_without_type_or_host_tags_leave_no_stray_comma() {
        let host = HostTags::new(vec![("host".into(), "h1".into()), ("dc".into(), "x y".into())]);
        assert_eq!(
            encoded(&[Point::int("m", 5, 1, "")], &host),
            r#"[{"metric":"m","timestamp":5,"value":1,"tags":{"host":"h1","dc":"x_y"}}]"#
        );
        assert_eq!(
            encoded(&[Point::int("m", 5, 1, "")], &HostTags::empty()),
            r#"[{"metric":"m","timestamp":5,"value":1,"tags":{}}]"#
        );
        assert_eq!(
            encoded(&[Point::float("m", 5, -0.25, "t\"q").with_tag("host", "own")], &host),
            r#"[{"metric":"m","timestamp":5,"value":-0.25,"tags":{"dc":"x_y","type":"t_q","host":"own"}}]"#
        );
    }
}
