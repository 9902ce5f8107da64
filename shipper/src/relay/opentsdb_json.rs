//! OpenTSDB `/api/put` JSON bodies: one object or an array of
//! `{"metric": "…", "timestamp": s|ms, "value": number|"number", "tags": {"k": "v"}}`.
//! The whole body is refused (400) when one point is invalid, naming its index, as OpenTSDB does.

use puypuy_common::{Point, Value};
use serde_json::Value as Json;

pub fn parse_put_json(body: &[u8]) -> Result<Vec<Point>, String> {
    let json: Json = serde_json::from_slice(body).map_err(|e| format!("unable to parse the JSON body: {e}"))?;
    let items = match json {
        Json::Array(items) => items,
        object @ Json::Object(_) => vec![object],
        _ => return Err("expected a datapoint object or an array of them".into()),
    };
    items.iter().enumerate().map(|(i, item)| parse_one(item).map_err(|e| format!("datapoint {i}: {e}"))).collect()
}

fn parse_one(item: &Json) -> Result<Point, String> {
    let name = item["metric"].as_str().filter(|m| !m.is_empty()).ok_or("missing metric name")?;
    let timestamp = match &item["timestamp"] {
        Json::Number(n) => n.as_u64().ok_or("invalid timestamp")?,
        Json::String(s) => s.parse::<u64>().map_err(|_| "invalid timestamp")?,
        _ => return Err("missing timestamp".into()),
    };
    let timestamp = if timestamp >= 10_000_000_000 { timestamp / 1000 } else { timestamp };
    let value = match &item["value"] {
        Json::Number(n) => n.as_f64().ok_or("invalid value")?,
        Json::String(s) => s.parse::<f64>().map_err(|_| format!("invalid value {s:?}"))?,
        _ => return Err("missing value".into()),
    };
    if !value.is_finite() {
        return Err("value is not finite".into());
    }
    let mut point = Point::new(name, timestamp, Value::Float(value), "relay");
    if let Some(tags) = item["tags"].as_object() {
        for (k, v) in tags {
            let v = match v {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                _ => return Err(format!("tag {k:?} is not a string")),
            };
            point.tags.push((k.clone(), v));
        }
    }
    Ok(point)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_object_and_array() {
        let one =
            parse_put_json(br#"{"metric":"sys.cpu","timestamp":1700000000,"value":18.5,"tags":{"host":"web01"}}"#)
                .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].tags, vec![("host".into(), "web01".into())]);
        let many = parse_put_json(
            br#"[{"metric":"a","timestamp":1700000000123,"value":"77"},{"metric":"b","timestamp":1,"value":1}]"#,
        )
        .unwrap();
        assert_eq!(many[0].timestamp, 1700000000);
        assert_eq!(many[0].value, Value::Float(77.0));
        let e =
            parse_put_json(br#"[{"metric":"a","timestamp":1,"value":1},{"metric":"b","timestamp":1}]"#).unwrap_err();
        assert_eq!(e, "datapoint 1: missing value");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_put_json(&b);
        }
    }
}
