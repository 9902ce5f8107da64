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

fn escape(out: &mut Vec<u8>, s: &str, specials: &[char]) {
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        if c.is_control() || (c == '\\' && i == last) {
            out.push(b'_');
            continue;
        }
        if specials.contains(&c) {
            out.push(b'\\');
        }
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// Appends one line per point.
pub fn encode(points: &[Point], host: &HostTags, out: &mut Vec<u8>) {
    for p in points {
        if !p.value.is_finite() || p.name.is_empty() {
            continue;
        }
        escape(out, &p.name, &[',', ' ']);
        for (k, v) in host.tags_of(p) {
            out.push(b',');
            escape(out, k, &[',', '=', ' ']);
            out.push(b'=');
            escape(out, v, &[',', '=', ' ']);
        }
        let _ = match p.value {
            Value::Int(i) => write!(out, " value={i}i {}", p.timestamp),
            Value::Float(f) => write!(out, " value={f} {}", p.timestamp),
        };
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

    #[test]
    fn escapes_per_spec() {
        let points = vec![Point::int("my m,x=1", 1, 1, "t").with_tag("k ey", "a,b=c d").with_tag("nl", "x\ny\\")];
        let mut out = Vec::new();
        encode(&points, &HostTags::empty(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "my\\ m\\,x=1,type=t,k\\ ey=a\\,b\\=c\\ d,nl=x_y_ value=1i 1\n");
    }
}
