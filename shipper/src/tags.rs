//! Host-wide tags: every point leaves with `host`, `cluster`, `group`, `location`, the `[Tags]`
//! section and `type` (its check type), unless the point brings its own tag of that name (a relay
//! client's own `host` wins). Tags with an empty value are left out: OpenTSDB and KairosDB refuse
//! them and InfluxDB cannot parse them.

use puypuy_common::{Config, Point};

#[derive(Debug, Clone, Default)]
pub struct HostTags {
    tags: Vec<(String, String)>,
}

impl HostTags {
    pub fn from_config(config: &Config, host: &str) -> HostTags {
        let s = &config.self_config;
        let mut tags = vec![
            ("host".to_string(), host.to_string()),
            ("cluster".to_string(), s.cluster_name.clone()),
            ("group".to_string(), s.host_group.clone()),
            ("location".to_string(), s.location.clone()),
        ];
        tags.extend(config.tags.iter().cloned());
        tags.retain(|(_, v)| !v.is_empty());
        HostTags { tags }
    }

    pub fn new(tags: Vec<(String, String)>) -> HostTags {
        HostTags { tags }
    }

    /// No host-wide tags (encoder tests, rejected-points files).
    pub fn empty() -> HostTags {
        HostTags::default()
    }

    /// Every tag a point leaves with, in order: the host-wide ones (unless the point has its own of
    /// that name), `type` (its check type, unless it has its own), then its own non-empty tags.
    /// The encoders call this while writing, so no point carries a copy of the host's tags.
    pub fn tags_of<'a>(&'a self, p: &'a Point) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let own = |key: &str| p.tags.iter().any(|(k, _)| k == key);
        let host = self.tags.iter().filter(move |(k, _)| !own(k)).map(|(k, v)| (k.as_str(), v.as_str()));
        let kind = (!p.check_type.is_empty() && !own("type")).then_some(("type", p.check_type.as_str()));
        let own_tags = p.tags.iter().filter(|(k, v)| !k.is_empty() && !v.is_empty()).map(|(k, v)| (k.as_str(), v.as_str()));
        host.chain(kind).chain(own_tags)
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
    /// Appends every tag `p` leaves with, in the order and by the rules of [`HostTags::tags_of`]:
    /// the host-wide ones already encoded (all at once for the usual point without tags of its
    /// own), then `type` and the point's own tags through `encode_tag`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> HostTags {
        HostTags::new(vec![("host".into(), "web01".into()), ("cluster".into(), "prod".into())])
    }

    fn applied(t: &HostTags, p: &Point) -> Vec<(String, String)> {
        t.tags_of(p).map(|(k, v)| (k.to_string(), v.to_string())).collect()
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
