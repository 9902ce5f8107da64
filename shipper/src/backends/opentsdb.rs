//! OpenTSDB `/api/put` JSON, timestamps in seconds
//! (<http://opentsdb.net/docs/build/html/api_http/put.html>):
//! ```text
//! [{"metric":"sys_load_1","timestamp":1700000000,"value":0.5,"tags":{"host":"web01","type":"system"}}]
//! ```
//! Characters OpenTSDB refuses become `_` (see `tsdb_json`).

use puypuy_common::Point;

use crate::tags::HostTags;

pub fn encode(points: &[Point], host: &HostTags, out: &mut Vec<u8>) {
    super::tsdb_json::encode(points, host, "metric", 1, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_json() {
        let points = vec![
            Point::float("sys_load_1", 1700000000, 0.5, "system"),
            Point::int("mem total", 1700000000, 42, "system").with_tag("dc", "eu 1\"x"),
        ];
        let mut out = Vec::new();
        encode(&points, &HostTags::new(vec![("host".into(), "web01".into())]), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[{"metric":"sys_load_1","timestamp":1700000000,"value":0.5,"tags":{"host":"web01","type":"system"}},{"metric":"mem_total","timestamp":1700000000,"value":42,"tags":{"host":"web01","type":"system","dc":"eu_1_x"}}]"#
        );
    }
}
