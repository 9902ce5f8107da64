//! The Prometheus side of a point, shared by the `/metrics` page (`tsdtype: Prometheus`) and remote
//! write: a metric name and labels cleaned to Prometheus' rules, and the text exposition format
//! 0.0.4 (<https://prometheus.io/docs/instrumenting/exposition_formats/>) of the latest values:
//! ```text
//! # HELP sys_load_1 PuyPuy metric sys_load_1
//! # TYPE sys_load_1 gauge
//! sys_load_1{cluster="prod",host="web01",type="system"} 0.5
//! ```
//! Names: a character outside `[a-zA-Z0-9_:]` becomes `_`, and a name that starts with a digit gets
//! a `_` in front (`drive_sda-1_bytes_read` → `drive_sda_1_bytes_read`). Label names take
//! `[a-zA-Z0-9_]` the same way; `__` starts names Prometheus reserves, so a tag named `__x` is
//! sent as `_x`. Labels are the host's tags, `type` and the point's own tags, sorted by name; of
//! two that clean to the same name the first is kept.
//!
//! Every family is a `gauge`: PuyPuy sends the latest value of each series, and a counter the
//! agent turned into a rate (style `rate`) is a per-second figure, not a counter any more. The one
//! exception is a name ending in `_total` (`mem_total`): Prometheus reserves that suffix for
//! counters and `promtool check metrics` refuses a gauge named so, so the family is declared
//! `untyped`, keeping its name. The page carries no timestamps, so Prometheus stamps each scrape
//! itself and its staleness handling works.

use std::io::Write;

use puypuy_common::{Point, Value};

use crate::tags::{EncodedTags, HostTags};

/// A series: its cleaned metric name and its labels, sorted by name (no `__name__`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

/// Appends `name` cleaned to a Prometheus metric name; nothing for an empty name.
pub fn push_metric_name(name: &str, out: &mut String) {
    push_clean(name, out, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
}

/// Appends `name` cleaned to a Prometheus label name; nothing for an empty name.
pub fn push_label_name(name: &str, out: &mut String) {
    let start = out.len();
    push_clean(name, out, |c| c.is_ascii_alphanumeric() || c == '_');
    if out[start..].starts_with("__") {
        let extra = out[start..].len() - out[start..].trim_start_matches('_').len() - 1;
        out.replace_range(start..start + extra, "");
    }
}

fn push_clean(name: &str, out: &mut String, allowed: impl Fn(char) -> bool) {
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if allowed(c) { c } else { '_' }));
}

/// Makes the [`Series`] of points: the host's tags are taken apart once per batch.
pub struct SeriesMaker {
    host: EncodedTags,
    scratch: Vec<u8>,
}

/// A tag as `u32 LE key length, key, u32 LE value length, value`, so that any bytes survive.
fn raw_tag(out: &mut Vec<u8>, k: &str, v: &str) {
    for part in [k, v] {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part.as_bytes());
    }
}

impl SeriesMaker {
    pub fn new(host: &HostTags) -> SeriesMaker {
        SeriesMaker { host: host.encoded(raw_tag), scratch: Vec::new() }
    }

    /// The series `p` belongs to, or `None` when its name cleans to nothing.
    pub fn series(&mut self, p: &Point) -> Option<Series> {
        let mut name = String::with_capacity(p.name.len());
        push_metric_name(&p.name, &mut name);
        if name.is_empty() {
            return None;
        }
        self.scratch.clear();
        self.host.write(p, &mut self.scratch, raw_tag);
        let mut labels: Vec<(String, String)> = Vec::with_capacity(8);
        let mut rest = &self.scratch[..];
        while let Some((k, after)) = take_part(rest) {
            let Some((v, after)) = take_part(after) else { break };
            rest = after;
            let mut key = String::with_capacity(k.len());
            push_label_name(k, &mut key);
            if !key.is_empty() && !v.is_empty() {
                labels.push((key, v.to_string()));
            }
        }
        // Stable: of two tags that clean to one name, the first (the host's, then type) stays.
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|later, earlier| later.0 == earlier.0);
        Some(Series { name, labels })
    }
}

fn take_part(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let part = std::str::from_utf8(bytes.get(4..4 + len)?).ok()?;
    Some((part, &bytes[4 + len..]))
}

/// Appends a label value escaped as the format asks: `\` `"` and line feed.
fn push_label_value(v: &str, out: &mut Vec<u8>) {
    for b in v.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

/// Appends a sample value as Prometheus parses it (a Go float: `0.5`, `42`, `1e+300` all parse).
pub fn push_value(value: Value, out: &mut Vec<u8>) {
    match value {
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        Value::Float(f) if f.is_nan() => out.extend_from_slice(b"NaN"),
        Value::Float(f) if f.is_infinite() => out.extend_from_slice(if f > 0.0 { b"+Inf" } else { b"-Inf" }),
        Value::Float(f) => {
            let _ = write!(out, "{f}");
        }
    }
}

/// The exposition page of `series`, which must come sorted by name (a `BTreeMap`'s order): one
/// HELP and TYPE line per family, then its samples.
pub fn encode_page<'a>(series: impl IntoIterator<Item = (&'a Series, Value)>, out: &mut Vec<u8>) {
    let mut family: Option<&str> = None;
    for (s, value) in series {
        if family != Some(s.name.as_str()) {
            family = Some(s.name.as_str());
            // `_total` is the counters' suffix by Prometheus' conventions (promtool flags a gauge
            // named so); a name like `mem_total` is kept and declared untyped instead.
            let kind = if s.name.ends_with("_total") { "untyped" } else { "gauge" };
            let _ = write!(out, "# HELP {0} PuyPuy metric {0}\n# TYPE {0} {kind}\n", s.name);
        }
        out.extend_from_slice(s.name.as_bytes());
        if !s.labels.is_empty() {
            out.push(b'{');
            for (i, (k, v)) in s.labels.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(b"=\"");
                push_label_value(v, out);
                out.push(b'"');
            }
            out.push(b'}');
        }
        out.push(b' ');
        push_value(value, out);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostTags {
        HostTags::new(vec![("host".into(), "web01".into()), ("cluster".into(), "prod".into())])
    }

    fn metric(name: &str) -> String {
        let mut s = String::new();
        push_metric_name(name, &mut s);
        s
    }

    fn label(name: &str) -> String {
        let mut s = String::new();
        push_label_name(name, &mut s);
        s
    }

    #[test]
    fn names_are_cleaned_to_prometheus_rules() {
        assert_eq!(metric("sys_load_1"), "sys_load_1");
        assert_eq!(metric("drive_sda-1_bytes_read"), "drive_sda_1_bytes_read");
        assert_eq!(metric("jvm.gc:count"), "jvm_gc:count");
        assert_eq!(metric("5xx"), "_5xx");
        assert_eq!(metric("é"), "_");
        assert_eq!(label("if-name"), "if_name");
        assert_eq!(label("a:b"), "a_b");
        assert_eq!(label("__name__"), "_name__");
        assert_eq!(label("___x"), "_x");
        assert_eq!(label("1st"), "_1st");
    }

    #[test]
    fn labels_are_host_tags_type_and_own_tags_sorted_first_of_a_clash_kept() {
        let mut maker = SeriesMaker::new(&host());
        let p = Point::int("net.bytes", 1, 1, "system").with_tag("if-name", "eth0").with_tag("if_name", "eth1");
        let s = maker.series(&p).expect("series");
        assert_eq!(s.name, "net_bytes");
        let want: Vec<(String, String)> =
            [("cluster", "prod"), ("host", "web01"), ("if_name", "eth0"), ("type", "system")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(s.labels, want);
        assert_eq!(maker.series(&Point::int("", 1, 1, "t")), None);
    }

    /// A relay adds none of its labels to points a PuyPuy agent forwarded (the page and remote write).
    #[test]
    fn carried_points_keep_exactly_their_labels() {
        use crate::tags::{relayed, HostTagging};
        let labels = |tagging| {
            let s = SeriesMaker::new(relayed::relay().for_points(tagging)).series(&relayed::point()).expect("series");
            s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()
        };
        assert_eq!(labels(HostTagging::Carried), ["group=ag", "host=agent", "type=system"]);
        assert_eq!(
            labels(HostTagging::ThisHost),
            ["cluster=rc", "group=ag", "host=agent", "location=dc1", "owner=ops", "type=system"]
        );
    }

    #[test]
    fn page_has_one_help_and_type_per_family_and_escaped_values() {
        let a1 = Series { name: "a".into(), labels: vec![("k".into(), "x\"y\\z\nw".into())] };
        let a2 = Series { name: "a".into(), labels: vec![("k".into(), "2".into())] };
        let b = Series { name: "b".into(), labels: vec![] };
        let t = Series { name: "mem_total".into(), labels: vec![] };
        let mut out = Vec::new();
        let page = [(&a1, Value::Int(1)), (&a2, Value::Float(0.5)), (&b, Value::Float(1e21)), (&t, Value::Int(8))];
        encode_page(page, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "# HELP a PuyPuy metric a\n# TYPE a gauge\na{k=\"x\\\"y\\\\z\\nw\"} 1\na{k=\"2\"} 0.5\n\
             # HELP b PuyPuy metric b\n# TYPE b gauge\nb 1000000000000000000000\n\
             # HELP mem_total PuyPuy metric mem_total\n# TYPE mem_total untyped\nmem_total 8\n"
        );
    }

    proptest::proptest! {
        #[test]
        fn cleaned_names_always_match_prometheus_patterns(name in "(?s).{1,16}") {
            let m = metric(&name);
            proptest::prop_assert!(m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'));
            proptest::prop_assert!(!m.starts_with(|c: char| c.is_ascii_digit()));
            let l = label(&name);
            proptest::prop_assert!(l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            proptest::prop_assert!(!l.starts_with(|c: char| c.is_ascii_digit()) && !l.starts_with("__"));
        }
    }
}
