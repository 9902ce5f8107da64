//! The JSON body shared by OpenTSDB (`/api/put`, timestamps in seconds, key `metric`) and KairosDB
//! (`/api/v1/datapoints`, timestamps in milliseconds, key `name`): an array of
//! `{"<name key>":"…","timestamp":…,"value":…,"tags":{…}}`.
//!
//! Both refuse characters outside `a-z A-Z 0-9 - _ . /` and Unicode letters in names, tag keys and
//! tag values, and both refuse empty tag values; every other character becomes `_`.

use std::io::Write;

use puypuy_common::{Point, Value};

use crate::tags::HostTags;

pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    fn ok(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') || (!c.is_ascii() && c.is_alphabetic())
    }
    if s.chars().all(ok) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.chars().map(|c| if ok(c) { c } else { '_' }).collect())
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    // serde_json writes a JSON string literal with the escapes JSON needs; into a Vec it cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

pub fn encode(points: &[Point], host: &HostTags, name_key: &str, timestamp_scale: u64, out: &mut Vec<u8>) {
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
        string(out, &clean(&p.name));
        let _ = write!(out, ",\"timestamp\":{},\"value\":", p.timestamp.saturating_mul(timestamp_scale));
        match p.value {
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => {
                let _ = serde_json::to_writer(&mut *out, &f);
            }
        }
        out.extend_from_slice(b",\"tags\":{");
        for (i, (k, v)) in host.tags_of(p).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, &clean(k));
            out.push(b':');
            string(out, &clean(v));
        }
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
}
