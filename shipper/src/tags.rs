//! Host-wide tags: every point leaves with `host`, `cluster`, `group`, `location`, the `[Tags]`
//! section and `type` (its check type), unless the point brings its own tag of that name (a relay
//! client's own `host` wins). Tags with an empty value are left out: OpenTSDB and KairosDB refuse
//! them and InfluxDB cannot parse them.
//!
//! Points a PuyPuy agent forwarded to a relay's `frames_listen` already carry the agent's host
//! tags (`tsdtype: PuyPuy` writes them into each point): they leave the relay with exactly those,
//! none of the relay's added ([`HostTagging::Carried`]). The flag travels with each batch, from the
//! frames input through the batcher, the router, the delivery loop and the spool to the
//! transports, which hand the encoders [`HostTags::for_points`]: no point is copied for it.

use puypuy_common::{Config, Point};

#[derive(Debug, Clone, Default)]
pub struct HostTags {
    tags: Vec<(String, String)>,
}

/// Whose host-wide tags the points of a batch leave with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostTagging {
    /// This host's, each one a point lacks: local producers, the text relay inputs, self-metrics.
    #[default]
    ThisHost,
    /// Their own only: they came from a PuyPuy agent (`frames_listen`), which wrote its host's tags
    /// into them; this host adds none.
    Carried,
}

/// The host tags of a batch whose points carry their own.
static NO_HOST_TAGS: HostTags = HostTags { tags: Vec::new() };

impl HostTags {
    pub fn from_config(config: &Config, host: &str) -> HostTags {
        HostTags { tags: config.host_tags(host) }
    }

    pub fn new(tags: Vec<(String, String)>) -> HostTags {
        HostTags { tags }
    }

    /// No host-wide tags (encoder tests, rejected-points files).
    pub fn empty() -> HostTags {
        HostTags::default()
    }

    /// The host-wide tags encoded once by `encode_tag` (which appends one tag in the backend's
    /// syntax), for an encoder about to write a batch: see [`EncodedTags::write`].
    pub fn encoded(&self, encode_tag: impl Fn(&mut Vec<u8>, &str, &str)) -> EncodedTags {
        let each: Vec<(String, Vec<u8>)> = self
            .tags
            .iter()
            .map(|(k, v)| {
                let mut bytes = Vec::new();
                encode_tag(&mut bytes, k, v);
                (k.clone(), bytes)
            })
            .collect();
        let all = each.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        EncodedTags { each, all }
    }

    /// The host-wide tags points tagged `tagging` leave with: these, or none for points that carry
    /// their own. The transports hand this to the encoders, batch by batch.
    pub fn for_points(&self, tagging: HostTagging) -> &HostTags {
        match tagging {
            HostTagging::ThisHost => self,
            HostTagging::Carried => &NO_HOST_TAGS,
        }
    }

    /// The host-wide tags, in order (the PuyPuy output writes them into each point it forwards).
    pub fn pairs(&self) -> &[(String, String)] {
        &self.tags
    }

    /// The value a point leaves with for one tag (its own first, else the host's), or "".
    pub fn get<'a>(&'a self, p: &'a Point, key: &str) -> &'a str {
        p.tags
            .iter()
            .chain(self.tags.iter())
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Host-wide tags already in a backend's syntax, each and all together.
pub struct EncodedTags {
    each: Vec<(String, Vec<u8>)>,
    all: Vec<u8>,
}

impl EncodedTags {
    /// Appends every tag `p` leaves with, in order: the host-wide ones unless the point has its
    /// own of that name (already encoded, and all at once for the usual point without tags of its
    /// own), then `type` (its check type, unless it has its own), then its own non-empty tags,
    /// these two through `encode_tag`. The encoders call this while writing, so no point carries
    /// a copy of the host's tags.
    pub fn write(&self, p: &Point, out: &mut Vec<u8>, encode_tag: impl Fn(&mut Vec<u8>, &str, &str)) {
        let own = |key: &str| p.tags.iter().any(|(k, _)| k == key);
        if p.tags.is_empty() {
            out.extend_from_slice(&self.all);
        } else {
            for (k, bytes) in &self.each {
                if !own(k) {
                    out.extend_from_slice(bytes);
                }
            }
        }
        if !p.check_type.is_empty() && !own("type") {
            encode_tag(out, "type", &p.check_type);
        }
        for (k, v) in &p.tags {
            if !k.is_empty() && !v.is_empty() {
                encode_tag(out, k, v);
            }
        }
    }
}

/// What the encoders' tests of [`HostTagging`] share.
#[cfg(test)]
pub(crate) mod relayed {
    use super::*;

    /// A relay's host tags: `host`, `cluster`, `location` and a `[Tags]` key.
    pub fn relay() -> HostTags {
        HostTags::new(vec![
            ("host".into(), "relay".into()),
            ("cluster".into(), "rc".into()),
            ("location".into(), "dc1".into()),
            ("owner".into(), "ops".into()),
        ])
    }

    /// A point a PuyPuy agent forwarded: its `host` and `group` written in, no cluster, location or
    /// `[Tags]` (the agent has none).
    pub fn point() -> Point {
        Point::float("sys_load_1", 1_700_000_000, 0.5, "system").with_tag("host", "agent").with_tag("group", "ag")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> HostTags {
        HostTags::new(vec![("host".into(), "web01".into()), ("cluster".into(), "prod".into())])
    }

    /// The tags `EncodedTags::write` gives `p`, read back from a plain `key\0value\0` encoding.
    fn applied(t: &HostTags, p: &Point) -> Vec<(String, String)> {
        let tag = |out: &mut Vec<u8>, k: &str, v: &str| {
            for part in [k, v] {
                out.extend_from_slice(part.as_bytes());
                out.push(0);
            }
        };
        let mut out = Vec::new();
        t.encoded(tag).write(p, &mut out, tag);
        let text = String::from_utf8(out).expect("utf-8");
        let parts: Vec<&str> = text.split_terminator('\0').collect();
        parts.chunks(2).map(|kv| (kv[0].to_string(), kv[1].to_string())).collect()
    }

    #[test]
    fn a_point_without_tags_gets_every_host_tag_then_type() {
        assert_eq!(
            applied(&tags(), &Point::int("x", 1, 1, "system")),
            vec![("host".into(), "web01".into()), ("cluster".into(), "prod".into()), ("type".into(), "system".into())]
        );
        assert_eq!(
            applied(&tags(), &Point::int("x", 1, 1, "")),
            vec![("host".into(), "web01".into()), ("cluster".into(), "prod".into())]
        );
    }

    #[test]
    fn own_type_tag_replaces_the_check_type() {
        let p = Point::int("x", 1, 1, "system").with_tag("type", "custom");
        assert_eq!(
            applied(&tags(), &p),
            vec![("host".into(), "web01".into()), ("cluster".into(), "prod".into()), ("type".into(), "custom".into())]
        );
    }

    #[test]
    fn adds_host_tags_and_type() {
        let p = Point::int("x", 1, 1, "system").with_tag("if", "eth0");
        assert_eq!(
            applied(&tags(), &p),
            vec![
                ("host".into(), "web01".into()),
                ("cluster".into(), "prod".into()),
                ("type".into(), "system".into()),
                ("if".into(), "eth0".into())
            ]
        );
    }

    /// Points from a PuyPuy agent keep its tags: none of this host's is added, not even one the
    /// agent left empty, and `type` still comes from the check type.
    #[test]
    fn carried_points_leave_with_their_own_tags_only() {
        let p = Point::int("x", 1, 1, "system").with_tag("host", "agent").with_tag("dc", "eu");
        let relay = tags();
        assert_eq!(
            applied(relay.for_points(HostTagging::Carried), &p),
            vec![("type".into(), "system".into()), ("host".into(), "agent".into()), ("dc".into(), "eu".into())]
        );
        assert_eq!(relay.for_points(HostTagging::Carried).get(&p, "cluster"), "");
        assert_eq!(relay.for_points(HostTagging::ThisHost).get(&p, "cluster"), "prod");
    }

    #[test]
    fn own_host_tag_wins_and_empty_tags_are_left_out() {
        let p = Point::int("x", 1, 1, "relay").with_tag("host", "other").with_tag("empty", "");
        assert_eq!(tags().get(&p, "host"), "other");
        assert_eq!(tags().get(&p, "cluster"), "prod");
        assert_eq!(
            applied(&tags(), &p),
            vec![("cluster".into(), "prod".into()), ("type".into(), "relay".into()), ("host".into(), "other".into())]
        );
    }
}
