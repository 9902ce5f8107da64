//! Prometheus remote write 1.0: a `WriteRequest` protobuf, one `TimeSeries` with one sample per
//! point (<https://prometheus.io/docs/concepts/remote_write_spec/>, messages from
//! `prompb/remote.proto` and `prompb/types.proto`):
//! ```text
//! WriteRequest { repeated TimeSeries timeseries = 1; }
//! TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//! Label        { string name = 1; string value = 2; }
//! Sample       { double value = 1; int64 timestamp = 2; }   // timestamp in milliseconds
//! ```
//! The labels are `__name__` plus those of [`super::prometheus`], sorted by name as the spec asks.
//! `sys_load_1{host="h"} 0.5 @ 1700000000 s` is these 55 bytes (before the transport's snappy):
//! ```text
//! 0a 35                       timeseries, 53 bytes
//!   0a 16 0a 08 "__name__" 12 0a "sys_load_1"   label
//!   0a 09 0a 04 "host" 12 01 "h"                label
//!   12 10 09 <0.5 as f64 LE> 10 80 d0 95 ff bc 31  sample: value, timestamp 1700000000000
//! ```
//! The encoder writes the protobuf wire format itself (varints, length prefixes, fixed64): the
//! four messages are too small to need generated code, and sizes are computed before writing so no
//! message is built twice. Points whose value cannot be a sample (NaN, infinities) are left out.

use puypuy_common::Point;

use super::prometheus::{Series, SeriesMaker};
use crate::tags::HostTags;

/// Field 1 or 2, wire type 2 (length-delimited): `(field << 3) | 2`.
const LEN_1: u8 = 0x0a;
const LEN_2: u8 = 0x12;
/// Sample.value: field 1, wire type 1 (fixed64).
const DOUBLE_1: u8 = 0x09;
/// Sample.timestamp: field 2, wire type 0 (varint).
const VARINT_2: u8 = 0x10;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn push_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field's size: tag, length, bytes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn push_field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    push_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn label_len(name: &str, value: &str) -> usize {
    field_len(name.len()) + field_len(value.len())
}

fn push_label(name: &str, value: &str, out: &mut Vec<u8>) {
    out.push(LEN_1);
    push_varint(label_len(name, value) as u64, out);
    push_field(LEN_1, name.as_bytes(), out);
    push_field(LEN_2, value.as_bytes(), out);
}

/// Appends one `TimeSeries` of `series` with one sample.
fn push_series(series: &Series, value: f64, timestamp_ms: i64, out: &mut Vec<u8>) {
    // __name__ sorts among the labels by its bytes: after upper-case names, before lower-case ones.
    let name_at = series.labels.partition_point(|(k, _)| k.as_str() < "__name__");
    let labels = series.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let sorted = labels.clone().take(name_at).chain([("__name__", series.name.as_str())]).chain(labels.skip(name_at));
    let sample_len = 1 + 8 + 1 + varint_len(timestamp_ms as u64);
    let series_len: usize =
        sorted.clone().map(|(k, v)| field_len(label_len(k, v))).sum::<usize>() + field_len(sample_len);
    out.push(LEN_1);
    push_varint(series_len as u64, out);
    for (k, v) in sorted {
        push_label(k, v, out);
    }
    out.push(LEN_2);
    push_varint(sample_len as u64, out);
    out.push(DOUBLE_1);
    out.extend_from_slice(&value.to_le_bytes());
    out.push(VARINT_2);
    push_varint(timestamp_ms as u64, out);
}

/// Appends the `WriteRequest` of `points` (uncompressed).
pub fn encode(points: &[Point], host: &HostTags, out: &mut Vec<u8>) {
    let mut maker = SeriesMaker::new(host);
    for p in points {
        let value = p.value.as_f64();
        if !value.is_finite() {
            continue;
        }
        let Some(series) = maker.series(p) else { continue };
        let timestamp_ms = i64::try_from(p.timestamp).unwrap_or(i64::MAX / 1000).saturating_mul(1000);
        push_series(&series, value, timestamp_ms, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_bytes() {
        let mut out = Vec::new();
        let host = HostTags::new(vec![("host".into(), "h".into())]);
        encode(&[Point::float("sys_load_1", 1700000000, 0.5, "")], &host, &mut out);
        let mut want = vec![0x0a, 0x35, 0x0a, 0x16, 0x0a, 0x08];
        want.extend_from_slice(b"__name__");
        want.extend_from_slice(&[0x12, 0x0a]);
        want.extend_from_slice(b"sys_load_1");
        want.extend_from_slice(&[0x0a, 0x09, 0x0a, 0x04]);
        want.extend_from_slice(b"host");
        want.extend_from_slice(&[0x12, 0x01, b'h', 0x12, 0x10, 0x09]);
        want.extend_from_slice(&0.5f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31]);
        assert_eq!(out, want);
        assert_eq!(out.len(), 55);
    }

    /// A minimal protobuf reader, to check the encoder's structure on arbitrary points.
    fn read_varint(b: &[u8], at: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn fields(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < b.len() {
            let tag = b[at];
            at += 1;
            match tag & 7 {
                2 => {
                    let len = read_varint(b, &mut at) as usize;
                    out.push((tag, b[at..at + len].to_vec()));
                    at += len;
                }
                1 => {
                    out.push((tag, b[at..at + 8].to_vec()));
                    at += 8;
                }
                _ => {
                    let start = at;
                    read_varint(b, &mut at);
                    out.push((tag, b[start..at].to_vec()));
                }
            }
        }
        out
    }

    /// A relay adds none of its labels to points a PuyPuy agent forwarded.
    #[test]
    fn carried_points_keep_exactly_their_labels() {
        use crate::tags::{relayed, HostTagging};
        let labels = |tagging| {
            let mut out = Vec::new();
            encode(&[relayed::point()], relayed::relay().for_points(tagging), &mut out);
            let series = fields(&out);
            fields(&series[0].1)
                .iter()
                .filter(|(tag, _)| *tag == LEN_1)
                .map(|(_, label)| {
                    let kv = fields(label);
                    format!("{}={}", String::from_utf8_lossy(&kv[0].1), String::from_utf8_lossy(&kv[1].1))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(HostTagging::Carried), ["__name__=sys_load_1", "group=ag", "host=agent", "type=system"]);
        assert_eq!(labels(HostTagging::ThisHost).len(), 7);
    }

    #[test]
    fn upper_case_labels_sort_before_the_name_label() {
        let mut out = Vec::new();
        encode(&[Point::int("m", 1, 7, "t").with_tag("Zone", "a")], &HostTags::empty(), &mut out);
        let series = fields(&out);
        let names: Vec<String> = fields(&series[0].1)
            .iter()
            .filter(|(tag, _)| *tag == LEN_1)
            .map(|(_, label)| String::from_utf8(fields(label)[0].1.clone()).expect("utf-8"))
            .collect();
        assert_eq!(names, ["Zone", "__name__", "type"]);
    }

    proptest::proptest! {
        #[test]
        fn every_point_becomes_one_series_with_sorted_labels_and_its_value(
            points in proptest::collection::vec(
                ("[a-z_.-]{1,12}", 0u64..4_000_000_000, proptest::num::f64::NORMAL, "[a-zA-Z_ -]{0,6}", "(?s).{0,6}"),
                0..20,
            )
        ) {
            let points: Vec<Point> = points
                .into_iter()
                .map(|(n, t, v, k, tv)| Point::float(n, t, v, "check").with_tag(k, tv))
                .collect();
            let mut out = Vec::new();
            encode(&points, &HostTags::new(vec![("host".into(), "h".into())]), &mut out);
            let series = fields(&out);
            proptest::prop_assert_eq!(series.len(), points.len());
            for ((tag, body), p) in series.iter().zip(&points) {
                proptest::prop_assert_eq!(*tag, LEN_1);
                let parts = fields(body);
                let labels: Vec<Vec<u8>> = parts
                    .iter()
                    .filter(|(t, _)| *t == LEN_1)
                    .map(|(_, l)| fields(l)[0].1.clone())
                    .collect();
                proptest::prop_assert!(labels.windows(2).all(|w| w[0] < w[1]), "labels not sorted: {:?}", labels);
                let sample = fields(&parts.last().expect("sample").1);
                let value = f64::from_le_bytes(sample[0].1.clone().try_into().expect("8 bytes"));
                proptest::prop_assert_eq!(value, p.value.as_f64());
                proptest::prop_assert_eq!(read_varint(&sample[1].1, &mut 0), p.timestamp * 1000);
            }
        }
    }
}
