//! Graphite Carbon pickle protocol: a 4-byte big-endian length, then a pickle (protocol 2) of a
//! list of `(path, (timestamp, value))` tuples
//! (<https://graphite.readthedocs.io/en/latest/feeding-carbon.html#the-pickle-protocol>).
//!
//! The path is `cluster.group.HOST.name` as the old agent built it, HOST being the host tag with
//! `.` turned into `_`; empty components are left out. Characters that would break a path (space,
//! `/`, control characters, and the others outside `A-Z a-z 0-9 - _ . : # @ % + =`) become `_`.
//! A Graphite path received by the relay (check type [`RELAYED_GRAPHITE`]) passes through
//! unchanged, as carbon-relay forwards it: no prefix, no character replaced, its Graphite 1.1 tags
//! put back as `;key=value` in the order they came. `[TSDB] graphite_relay_prefix = True` gives it
//! the prefix and the cleaning of every other point instead.
//! Carbon refuses pickles over 1 MiB (`PICKLE_RECEIVER_MAX_LENGTH`), so [`encode`] splits a batch
//! into several messages that each stay under [`MAX_PICKLE_BYTES`].
//!
//! One point `a.b.web01.sys_load_1` at 1700000000 with value 0.5 is the message
//! `00 00 00 31` followed by the 49-byte pickle (EMPTY_LIST, MARK, MARK, BINUNICODE, MARK, BININT,
//! BINFLOAT, TUPLE, TUPLE, APPENDS, STOP), which Python reads as `[('a.b.web01.sys_load_1', (1700000000, 0.5))]`:
//! `80 02 5d 28 28 58 14 00 00 00 "a.b.web01.sys_load_1" 28 4a 00 f1 53 65 47 3f e0 00 00 00 00 00 00 74 74 65 2e`.

use std::borrow::Cow;

use puypuy_common::Point;

use crate::tags::HostTags;

pub const MAX_PICKLE_BYTES: usize = 1_000_000;

/// The check type of points parsed from the relay's Graphite input (also their `type` tag).
pub const RELAYED_GRAPHITE: &str = "graphite";

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

/// The path a point is sent under: a relayed Graphite path as it came (unless `relay_prefix`),
/// any other point's as [`path`] builds it. The ring hashes this.
pub fn path_of(p: &Point, tags: &HostTags, relay_prefix: bool) -> String {
    path_ref(p, tags, relay_prefix).into_owned()
}

/// [`path_of`], borrowing the point's name when it is the path (a relayed path without tags):
/// the ring places every point by its path, and most relayed paths need no copy for that.
pub fn path_ref<'a>(p: &'a Point, tags: &HostTags, relay_prefix: bool) -> Cow<'a, str> {
    if p.check_type != RELAYED_GRAPHITE || relay_prefix {
        return Cow::Owned(path(p, tags));
    }
    if p.tags.is_empty() {
        return Cow::Borrowed(&p.name);
    }
    let mut out =
        String::with_capacity(p.name.len() + p.tags.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>());
    out.push_str(&p.name);
    for (k, v) in &p.tags {
        out.push(';');
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Cow::Owned(out)
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

fn pickle(items: &[(Cow<'_, str>, (u64, f64))], estimate: usize, out: &mut Vec<u8>) {
    // Room at once: grown by doubling, a batch's pickles were copied over and over.
    out.reserve(estimate + 16);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // Plain lists, tuples, strings and numbers always serialize.
    let _ = serde_pickle::to_writer(&mut *out, &items, serde_pickle::SerOptions::new().proto_v2());
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends one or more length-prefixed pickles to `out`, each under [`MAX_PICKLE_BYTES`].
pub fn encode(points: &[Point], host: &HostTags, out: &mut Vec<u8>) {
    encode_paths(points, host, false, out);
}

/// [`encode`], with `relay_prefix` as `[TSDB] graphite_relay_prefix` (see [`path_of`]).
pub fn encode_paths(points: &[Point], host: &HostTags, relay_prefix: bool, out: &mut Vec<u8>) {
    // A relayed path without tags is borrowed, not copied (most of a relay's points).
    let mut items: Vec<(Cow<'_, str>, (u64, f64))> = Vec::with_capacity(points.len());
    let mut estimate = 0usize;
    for p in points {
        if !p.value.is_finite() {
            continue;
        }
        let path = path_ref(p, host, relay_prefix);
        // A tuple costs its path plus ~30 bytes of opcodes and numbers.
        let cost = path.len() + 32;
        if estimate + cost > MAX_PICKLE_BYTES && !items.is_empty() {
            pickle(&items, estimate, out);
            items.clear();
            estimate = 0;
        }
        estimate += cost;
        items.push((path, (p.timestamp, p.value.as_f64())));
    }
    if !items.is_empty() {
        pickle(&items, estimate, out);
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
    fn a_relayed_graphite_path_passes_through_unless_the_prefix_is_asked_for() {
        let host = HostTags::new(vec![("host".into(), "web01".into()), ("cluster".into(), "prod".into())]);
        let p = Point::float("servers.a b/c", 1, 1.0, RELAYED_GRAPHITE).with_tag("dc", "eu").with_tag("rack", "1");
        assert_eq!(path_of(&p, &host, false), "servers.a b/c;dc=eu;rack=1");
        assert_eq!(path_of(&p, &host, true), "prod.web01.servers.a_b_c");
        let own = Point::float("sys.load", 1, 1.0, "system");
        assert_eq!(path_of(&own, &host, false), "prod.web01.sys.load");
    }

    /// The path of a point a PuyPuy agent forwarded is built from its tags only: the relay's
    /// `cluster` does not slip in where the agent has none (the ring places it by this path too).
    #[test]
    fn carried_points_keep_the_agents_path() {
        use crate::tags::{relayed, HostTagging};
        let relay = relayed::relay();
        assert_eq!(path_of(&relayed::point(), relay.for_points(HostTagging::Carried), false), "ag.agent.sys_load_1");
        assert_eq!(
            path_of(&relayed::point(), relay.for_points(HostTagging::ThisHost), false),
            "rc.ag.agent.sys_load_1"
        );
        let mut out = Vec::new();
        encode(&[relayed::point()], relay.for_points(HostTagging::Carried), &mut out);
        let items: Vec<(String, (u64, f64))> =
            serde_pickle::from_slice(&out[4..], serde_pickle::DeOptions::new()).expect("pickle");
        assert_eq!(items, [("ag.agent.sys_load_1".to_string(), (1_700_000_000, 0.5))]);
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
