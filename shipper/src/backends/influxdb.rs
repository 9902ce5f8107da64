//! InfluxDB 1.x line protocol, one line per point, timestamps in seconds (sent with
//! `precision=s`), integers with the `i` suffix
//! (<https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/>):
//! ```text
//! sys_load_1,host=web01,type=system value=0.5 1700000000
//! mem_total,host=web01,type=system value=8589934592i 1700000000
//! ```
//! Escaping per the spec: in measurements `,` and space get a backslash; in tag keys and values
//! `,`, `=` and space do. Line breaks and other control characters cannot be escaped and become `_`,
//! as does a trailing backslash (it would escape the separator after it).

use std::io::Write;

use puypuy_common::{Point, Value};

use crate::tags::HostTags;

/// The bytes to escape in one part of a line, and for each byte whether it can be copied as is
/// (printable ASCII, not one of them).
struct Specials {
    bytes: &'static [u8],
    plain: [bool; 256],
}

impl Specials {
    const fn new(bytes: &'static [u8]) -> Specials {
        let mut plain = [false; 256];
        let mut b = 0x20;
        while b < 0x7f {
            plain[b] = true;
            b += 1;
        }
        let mut i = 0;
        while i < bytes.len() {
            plain[bytes[i] as usize] = false;
            i += 1;
        }
        Specials { bytes, plain }
    }
}

const MEASUREMENT: Specials = Specials::new(b", ");
const TAG: Specials = Specials::new(b",= ");

/// Appends `s` escaped. Most names and tags are plain printable ASCII without specials: those are
/// copied in one go; only the others are walked character by character.
fn escape(out: &mut Vec<u8>, s: &str, specials: &Specials) {
    let bytes = s.as_bytes();
    if bytes.iter().all(|&b| specials.plain[b as usize]) && bytes.last() != Some(&b'\\') {
        out.extend_from_slice(bytes);
        return;
    }
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        if c.is_control() || (c == '\\' && i == last) {
            out.push(b'_');
            continue;
        }
        if c.is_ascii() && specials.bytes.contains(&(c as u8)) {
            out.push(b'\\');
        }
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// Appends one line per point.
pub fn encode(points: &[Point], host: &HostTags, out: &mut Vec<u8>) {
    let mut numbers = itoa::Buffer::new();
    let tag = |out: &mut Vec<u8>, k: &str, v: &str| {
        out.push(b',');
        escape(out, k, &TAG);
        out.push(b'=');
        escape(out, v, &TAG);
    };
    // The host-wide tags escaped once per batch.
    let host = host.encoded(tag);
    // The points of a batch mostly share their timestamp: written once.
    let mut timestamp = itoa::Buffer::new();
    let mut last: Option<(u64, &str)> = None;
    for p in points {
        if !p.value.is_finite() || p.name.is_empty() {
            continue;
        }
        escape(out, &p.name, &MEASUREMENT);
        host.write(p, out, tag);
        out.extend_from_slice(b" value=");
        match p.value {
            Value::Int(i) => {
                out.extend_from_slice(numbers.format(i).as_bytes());
                out.push(b'i');
            }
            Value::Float(f) => {
                let _ = write!(out, "{f}");
            }
        }
        out.push(b' ');
        let text = match last {
            Some((t, text)) if t == p.timestamp => text,
            _ => timestamp.format(p.timestamp),
        };
        out.extend_from_slice(text.as_bytes());
        last = Some((p.timestamp, text));
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_integers_with_i_and_floats_plain() {
        let points = vec![
            Point::float("sys_load_1", 1700000000, 0.5, "system"),
            Point::int("mem_total", 1700000000, 8589934592, "system"),
            Point::float("whole", 1700000000, 2.0, ""),
        ];
        let mut out = Vec::new();
        encode(&points, &HostTags::new(vec![("host".into(), "web01".into())]), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "sys_load_1,host=web01,type=system value=0.5 1700000000\nmem_total,host=web01,type=system value=8589934592i 1700000000\nwhole,host=web01 value=2 1700000000\n"
        );
    }

    /// A relay adds none of its tags to points a PuyPuy agent forwarded (InfluxDB 2 too: same lines).
    #[test]
    fn carried_points_keep_exactly_their_tags() {
        use crate::tags::{relayed, HostTagging};
        let line = |tagging| {
            let mut out = Vec::new();
            encode(&[relayed::point()], relayed::relay().for_points(tagging), &mut out);
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(line(HostTagging::Carried), "sys_load_1,type=system,host=agent,group=ag value=0.5 1700000000\n");
        assert_eq!(
            line(HostTagging::ThisHost),
            "sys_load_1,cluster=rc,location=dc1,owner=ops,type=system,host=agent,group=ag value=0.5 1700000000\n"
        );
    }

    #[test]
    fn each_line_has_its_own_timestamp_when_they_change_within_a_batch() {
        let points: Vec<Point> = [5, 5, 17, 5, 1700000000].iter().map(|&t| Point::int("m", t, 1, "")).collect();
        let mut out = Vec::new();
        encode(&points, &HostTags::empty(), &mut out);
        let stamps: Vec<String> =
            String::from_utf8(out).unwrap().lines().map(|l| l.rsplit(' ').next().unwrap_or("").to_string()).collect();
        assert_eq!(stamps, ["5", "5", "17", "5", "1700000000"]);
    }

    #[test]
    fn escapes_per_spec() {
        let points = vec![Point::int("my m,x=1", 1, 1, "t").with_tag("k ey", "a,b=c d").with_tag("nl", "x\ny\\")];
        let mut out = Vec::new();
        encode(&points, &HostTags::empty(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "my\\ m\\,x=1,type=t,k\\ ey=a\\,b\\=c\\ d,nl=x_y_ value=1i 1\n");
    }

    /// The character-by-character escaping the fast path must agree with.
    fn escape_slowly(s: &str, specials: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let last = s.chars().count().saturating_sub(1);
        for (i, c) in s.chars().enumerate() {
            if c.is_control() || (c == '\\' && i == last) {
                out.push(b'_');
                continue;
            }
            if c.is_ascii() && specials.contains(&(c as u8)) {
                out.push(b'\\');
            }
            out.extend_from_slice(c.to_string().as_bytes());
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn fast_path_escapes_like_the_slow_one(s in "(?s).{0,24}", plain in "[a-zA-Z0-9_.\\\\-]{0,24}") {
            for specials in [&MEASUREMENT, &TAG] {
                for text in [&s, &plain] {
                    let mut out = Vec::new();
                    escape(&mut out, text, specials);
                    proptest::prop_assert_eq!(out, escape_slowly(text, specials.bytes));
                }
            }
        }
    }
}
