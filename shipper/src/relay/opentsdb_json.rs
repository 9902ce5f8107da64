//! OpenTSDB `/api/put` JSON bodies (<http://opentsdb.net/docs/build/html/api_http/put.html>): one
//! object or an array of
//! `{"metric": "…", "timestamp": s|ms, "value": number|"number", "tags": {"k": "v"}}`.
//!
//! As OpenTSDB documents it, each data point is taken on its own: the good ones are kept and the
//! bad ones refused, each with its index and reason; only a body that is not JSON (or not an object
//! or array) loses every point. The per-point rules are the telnet input's ([`super::telnet`]).

use puypuy_common::{Point, Value};
use serde_json::Value as Json;

use super::telnet::{check_name, check_tags, parse_timestamp, parse_value};

/// The points of a body, and the data points refused: index, the data point, why.
#[derive(Debug, Default)]
pub struct PutBody {
    pub points: Vec<Point>,
    pub refused: Vec<(usize, Json, String)>,
}

/// `Err` only when the body itself cannot be read.
pub fn parse_put_json(body: &[u8]) -> Result<PutBody, String> {
    let json: Json = serde_json::from_slice(body).map_err(|e| format!("unable to parse the JSON body: {e}"))?;
    let items = match json {
        Json::Array(items) => items,
        object @ Json::Object(_) => vec![object],
        _ => return Err("expected a datapoint object or an array of them".into()),
    };
    let mut out = PutBody::default();
    for (i, item) in items.into_iter().enumerate() {
        match parse_one(&item) {
            Ok(p) => out.points.push(p),
            Err(e) => out.refused.push((i, item, e)),
        }
    }
    Ok(out)
}

fn parse_one(item: &Json) -> Result<Point, String> {
    let name = match &item["metric"] {
        Json::String(m) => m.as_str(),
        Json::Null => return Err("missing metric".into()),
        _ => return Err("metric is not a string".into()),
    };
    check_name("metric", name)?;
    let timestamp = match &item["timestamp"] {
        Json::Number(n) => parse_timestamp(&n.to_string())?,
        Json::String(s) => parse_timestamp(s)?,
        Json::Null => return Err("missing timestamp".into()),
        _ => return Err("invalid timestamp".into()),
    };
    let value = match &item["value"] {
        Json::Number(n) => parse_value(&n.to_string())?,
        Json::String(s) => parse_value(s)?,
        Json::Null => return Err("missing value".into()),
        _ => return Err("invalid value".into()),
    };
    let mut point = Point::new(name, timestamp, Value::Float(value), "relay");
    match &item["tags"] {
        Json::Object(tags) => {
            for (k, v) in tags {
                let v = match v {
                    Json::String(s) => s.clone(),
                    Json::Number(n) => n.to_string(),
                    _ => return Err(format!("tag {k:?} is not a string")),
                };
                point.tags.push((k.clone(), v));
            }
        }
        Json::Null => {}
        _ => return Err("tags is not an object".into()),
    }
    check_tags(&point.tags)?;
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
                .unwrap()
                .points;
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].tags, vec![("host".into(), "web01".into())]);
        let many = parse_put_json(
            br#"[{"metric":"a","timestamp":1700000000123,"value":"77"},{"metric":"b","timestamp":1,"value":1}]"#,
        )
        .unwrap()
        .points;
        assert_eq!(many[0].timestamp, 1700000000);
        assert_eq!(many[0].value, Value::Float(77.0));
        let body = parse_put_json(br#"[{"metric":"a","timestamp":1,"value":1},{"metric":"b","timestamp":1}]"#).unwrap();
        assert_eq!(body.points.len(), 1);
        assert_eq!((body.refused[0].0, body.refused[0].2.as_str()), (1, "missing value"));
        assert!(parse_put_json(b"[{").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_put_json(&b);
        }
    }
}
