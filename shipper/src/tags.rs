//! Host-wide tags: every point leaves with `host`, `cluster`, `group`, `location`, the `[Tags]`
//! section and `type` (its check type), unless the point brings its own tag of that name (a relay
//! client's own `host` wins). Tags with an empty value are left out: OpenTSDB and KairosDB refuse
//! them and InfluxDB cannot parse them.

use puypuy_common::{Config, Point};

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

    /// Adds the host-wide tags and `type`; drops empty tags. Own tags come after the host-wide
    /// ones so that every series of a host lists them in the same order.
    pub fn apply(&self, p: &mut Point) {
        let own = std::mem::take(&mut p.tags);
        let mut tags = Vec::with_capacity(self.tags.len() + own.len() + 1);
        for (k, v) in &self.tags {
            if !own.iter().any(|(ok, _)| ok == k) {
                tags.push((k.clone(), v.clone()));
            }
        }
        if !p.check_type.is_empty() && !own.iter().any(|(k, _)| k == "type") {
            tags.push(("type".to_string(), p.check_type.clone()));
        }
        tags.extend(own.into_iter().filter(|(k, v)| !k.is_empty() && !v.is_empty()));
        p.tags = tags;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> HostTags {
        HostTags::new(vec![("host".into(), "web01".into()), ("cluster".into(), "prod".into())])
    }

    #[test]
    fn adds_host_tags_and_type() {
        let mut p = Point::int("x", 1, 1, "system").with_tag("if", "eth0");
        tags().apply(&mut p);
        assert_eq!(
            p.tags,
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
        let mut p = Point::int("x", 1, 1, "relay").with_tag("host", "other").with_tag("empty", "");
        tags().apply(&mut p);
        assert_eq!(
            p.tags,
            vec![("cluster".into(), "prod".into()), ("type".into(), "relay".into()), ("host".into(), "other".into())]
        );
    }
}
