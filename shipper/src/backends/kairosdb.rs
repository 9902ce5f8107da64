//! KairosDB `/api/v1/datapoints` JSON, timestamps in milliseconds
//! (<https://kairosdb.github.io/docs/restapi/AddDataPoints.html>):
//! ```text
//! [{"name":"sys_load_1","timestamp":1700000000000,"value":0.5,"tags":{"host":"web01"}}]
//! ```
//! Gzip bodies go with `Content-Type: application/gzip` (KairosDB reads no Content-Encoding).

use puypuy_common::Point;

use crate::tags::HostTags;

pub fn encode(points: &[Point], host: &HostTags, out: &mut Vec<u8>) {
    super::tsdb_json::encode(points, host, "name", 1000, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_milliseconds_and_name_key() {
        let points = vec![Point::float("sys_load_1", 1700000000, 0.5, "system")];
        let mut out = Vec::new();
        encode(&points, &HostTags::new(vec![("host".into(), "web01".into())]), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[{"name":"sys_load_1","timestamp":1700000000000,"value":0.5,"tags":{"host":"web01","type":"system"}}]"#
        );
    }
}
