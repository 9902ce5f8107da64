//! Graphite Carbon pickle protocol: a 4-byte big-endian length, then a pickle (protocol 2) of a
//! list of `(path, (timestamp, value))` tuples
//! (<https://graphite.readthedocs.io/en/latest/feeding-carbon.html#the-pickle-protocol>).
//!
//! The path is `cluster.group.HOST.name` as the old agent built it, HOST being the host tag with
//! `.` turned into `_`; empty components are left out. Characters that would break a path (space,
//! `/`, control characters, and the others outside `A-Z a-z 0-9 - _ . : # @ % + =`) become `_`.
//! Carbon refuses pickles over 1 MiB (`PICKLE_RECEIVER_MAX_LENGTH`), so [`encode`] splits a batch
//! into several messages that each stay under [`MAX_PICKLE_BYTES`].
//!
//! One point `a.b.web01.sys_load_1` at 1700000000 with value 0.5 is the message
//! `00 00 00 31` followed by the 49-byte pickle (EMPTY_LIST, MARK, MARK, BINUNICODE, MARK, BININT,
//! BINFLOAT, TUPLE, TUPLE, APPENDS, STOP), which Python reads as `[('a.b.web01.sys_load_1', (1700000000, 0.5))]`:
//! `80 02 5d 28 28 58 14 00 00 00 "a.b.web01.sys_load_1" 28 4a 00 f1 53 65 47 3f e0 00 00 00 00 00 00 74 74 65 2e`.

use puypuy_common::Point;

use crate::tags::HostTags;

pub const MAX_PICKLE_BYTES: usize = 1_000_000;

fn push_clean(out: &mut String, s: &str, keep_dots: bool) {
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric()
            || matches!(c, '-' | '_' | ':' | '#' | '@' | '%' | '+' | '=')
            || (c == '.' && keep_dots)
        {
            c
        } else {
            '_'
        }
    }));
}

/// `cluster.group.HOST.name`, built in one allocation.
pub fn path(p: &Point, tags: &HostTags) -> String {
    let (cluster, group, host) = (tags.get(p, "cluster"), tags.get(p, "group"), tags.get(p, "host"));
    let mut out = String::with_capacity(cluster.len() + group.len() + host.len() + p.name.len() + 3);
    for (part, keep_dots) in [(cluster, true), (group, true), (host, false)] {
        if !part.is_empty() {
            push_clean(&mut out, part, keep_dots);
            out.push('.');
        }
    }
    push_clean(&mut out, &p.name, true);
    out
}

fn pickle(items: &[(String, (u64, f64))], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // Plain lists, tuples, strings and numbers always serialize.
    let _ = serde_pickle::to_writer(&mut *out, &items, serde_pickle::SerOptions::new().proto_v2());
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends one or more length-prefixed pickles to `out`, each under [`MAX_PICKLE_BYTES`].
pub fn encode(points: &[Point], host: &HostTags, out: &mut Vec<u8>) {
    let mut items: Vec<(String, (u64, f64))> = Vec::new();
    let mut estimate = 0usize;
    for p in points {
        if !p.value.is_finite() {
            continue;
        }
        let path = path(p, host);
        // A tuple costs its path plus ~30 bytes of opcodes and numbers.
        let cost = path.len() + 32;
        if estimate + cost > MAX_PICKLE_BYTES && !items.is_empty() {
            pickle(&items, out);
            items.clear();
            estimate = 0;
        }
        estimate += cost;
        items.push((path, (p.timestamp, p.value.as_f64())));
    }
    if !items.is_empty() {
        pickle(&items, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point() -> Point {
        Point::float("sys_load_1", 1700000000, 0.5, "system")
            .with_tag("host", "web01")
            .with_tag("cluster", "a")
            .with_tag("group", "b")
    }

    #[test]
    fn path_replaces_dots_in_the_host() {
        let p = Point::int("drive_sda_bytes_read", 1, 1, "system")
            .with_tag("host", "web01.example.com")
            .with_tag("cluster", "prod")
            .with_tag("group", "web servers");
        assert_eq!(path(&p, &HostTags::empty()), "prod.web_servers.web01_example_com.drive_sda_bytes_read");
        let bare = Point::int("x y", 1, 1, "system").with_tag("host", "h");
        assert_eq!(path(&bare, &HostTags::empty()), "h.x_y");
        let host_wide = HostTags::new(vec![("host".into(), "a.b".into()), ("cluster".into(), "c".into())]);
        assert_eq!(path(&Point::int("m", 1, 1, "t"), &host_wide), "c.a_b.m");
    }

    #[test]
    fn encodes_the_documented_bytes() {
        let mut out = Vec::new();
        encode(&[point()], &HostTags::empty(), &mut out);
        let mut expected = vec![0, 0, 0, 0x31, 0x80, 0x02, 0x5d, 0x28, 0x28, 0x58, 0x14, 0, 0, 0];
        expected.extend_from_slice(b"a.b.web01.sys_load_1");
        expected.extend_from_slice(&[0x28, 0x4a, 0x00, 0xf1, 0x53, 0x65, 0x47, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0x74, 0x74, 0x65, 0x2e]);
        assert_eq!(out, expected);
    }

    #[test]
    fn big_batches_split_under_the_carbon_limit() {
        let points: Vec<Point> =
            (0..60_000).map(|i| point().with_style(puypuy_common::Style::Stack).tap_name(i)).collect();
        let mut out = Vec::new();
        encode(&points, &HostTags::empty(), &mut out);
        let mut rest = &out[..];
        let mut total = 0;
        let mut messages = 0;
        while !rest.is_empty() {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            assert!(len <= 1_048_576, "pickle of {len} bytes");
            let items: Vec<(String, (u64, f64))> =
                serde_pickle::from_slice(&rest[4..4 + len], serde_pickle::DeOptions::new()).unwrap();
            total += items.len();
            messages += 1;
            rest = &rest[4 + len..];
        }
        assert_eq!(total, 60_000);
        assert!(messages > 1);
    }

    trait TapName {
        fn tap_name(self, i: usize) -> Self;
    }
    impl TapName for Point {
        fn tap_name(mut self, i: usize) -> Self {
            self.name = format!("metric_number_{i}");
            self
        }
    }
}
