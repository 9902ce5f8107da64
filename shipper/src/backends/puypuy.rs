//! `tsdtype: PuyPuy`: the frame a shipper forwards to a relay's `frames_listen`. The points leave
//! with this host's tags written into them (a point's own tag of a name wins, as in every
//! encoder), so the relay, which adds none of its own to points from `frames_listen`, delivers
//! them with exactly this host's. A relay forwarding points that already carry an agent's host
//! tags is given no host tags ([`HostTags::for_points`]) and forwards them as they are, uncopied.
//! The bytes are those of `common/src/frame.rs` (4-byte big-endian length, bincode payload).
//!
//! Example: point `x` at 1700000000, `Int(5)`, type `s`, host tags `host=a`, sender `agent`, seq 7:
//! `Frame { version: 1, sender: "agent", seq: 7, points: [x … tags [("host","a")]] }`, pinned byte for
//! byte in the tests below.

use puypuy_common::frame::Frame;
use puypuy_common::Point;

use crate::tags::HostTags;

/// Appends the frame carrying `points` (each with the host's tags it lacks) to `out`.
pub fn encode(points: &[Point], host: &HostTags, sender: &str, seq: u64, out: &mut Vec<u8>) {
    if host.pairs().iter().all(|(_, v)| v.is_empty()) {
        return Frame::encode_borrowed(sender, seq, points, out);
    }
    let tagged = points
        .iter()
        .map(|p| {
            let mut p = p.clone();
            let extra: Vec<(String, String)> = host
                .pairs()
                .iter()
                .filter(|(k, v)| !v.is_empty() && !p.tags.iter().any(|(own, _)| own == k))
                .cloned()
                .collect();
            // The host's tags first, then the point's own, as the other encoders write them.
            let own = std::mem::take(&mut p.tags);
            p.tags = extra.into_iter().chain(own).collect();
            p
        })
        .collect();
    Frame::new(sender, seq, tagged).encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_tags_go_into_each_point_and_a_points_own_wins() {
        let host =
            HostTags::new(vec![("host".into(), "a".into()), ("dc".into(), "eu".into()), ("e".into(), "".into())]);
        let points = vec![Point::int("x", 1_700_000_000, 5, "s"), Point::int("y", 1, 1, "s").with_tag("host", "own")];
        let mut out = Vec::new();
        encode(&points, &host, "agent", 7, &mut out);
        let frame = Frame::decode(&out[4..]).expect("decodes");
        assert_eq!((frame.sender.as_str(), frame.seq), ("agent", 7));
        let tags = |i: usize| frame.points[i].tags.clone();
        assert_eq!(tags(0), vec![("host".to_string(), "a".to_string()), ("dc".to_string(), "eu".to_string())]);
        assert_eq!(tags(1), vec![("dc".to_string(), "eu".to_string()), ("host".to_string(), "own".to_string())]);
    }

    /// A relay forwarding an agent's points (they carry its host tags) adds none of its own.
    #[test]
    fn carried_points_are_forwarded_as_they_are() {
        use crate::tags::HostTagging;
        let relay = HostTags::new(vec![("host".into(), "relay".into()), ("dc".into(), "us".into())]);
        let points = vec![Point::int("x", 1_700_000_000, 5, "s").with_tag("host", "agent")];
        let mut out = Vec::new();
        encode(&points, relay.for_points(HostTagging::Carried), "relay", 3, &mut out);
        assert_eq!(out, Frame::new("relay", 3, points.clone()).to_bytes());
        let mut own = Vec::new();
        encode(&points, relay.for_points(HostTagging::ThisHost), "relay", 3, &mut own);
        let frame = Frame::decode(&own[4..]).expect("decodes");
        assert_eq!(
            frame.points[0].tags,
            vec![("dc".to_string(), "us".to_string()), ("host".to_string(), "agent".to_string())]
        );
    }

    #[test]
    fn bytes_are_the_frame_protocols() {
        let host = HostTags::new(vec![("host".into(), "a".into())]);
        let mut out = Vec::new();
        encode(&[Point::int("x", 1_700_000_000, 5, "s")], &host, "c", 7, &mut out);
        let expected: Vec<u8> = [
            &[0x00, 0x00, 0x00, 0x62][..],
            &[0x01, 0x00],
            &[0x01, 0, 0, 0, 0, 0, 0, 0, b'c'],
            &[0x07, 0, 0, 0, 0, 0, 0, 0],
            &[0x01, 0, 0, 0, 0, 0, 0, 0],
            &[0x01, 0, 0, 0, 0, 0, 0, 0, b'x'],
            &[0x00, 0xf1, 0x53, 0x65, 0, 0, 0, 0],
            &[0, 0, 0, 0, 0x05, 0, 0, 0, 0, 0, 0, 0],
            &[0x01, 0, 0, 0, 0, 0, 0, 0, b's'],
            &[0, 0, 0, 0],
            &[0x01, 0, 0, 0, 0, 0, 0, 0],
            &[0x04, 0, 0, 0, 0, 0, 0, 0, b'h', b'o', b's', b't'],
            &[0x01, 0, 0, 0, 0, 0, 0, 0, b'a'],
        ]
        .concat();
        assert_eq!(out, expected);
    }
}
