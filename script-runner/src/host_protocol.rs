//! The Python host's side of the protocol, parsed: one JSON object per line, written by
//! `python/puypuy_host.py` on a descriptor of its own (module output cannot reach it), e.g.
//!
//! ```text
//! {"ev":"result","module":"check_redis","tick":1700000000,"points":[{"n":"redis_used_memory","t":1700000000,"v":1024,"i":true,"c":"redis","r":false,"g":[]}],"dropped":[],"error":null,"seconds":0.004}
//! ```
//!
//! Parsing is pure ([`parse_event`]); [`WirePoint::into_point`] applies the last checks a point
//! needs before it goes to the shipper (a name, a positive time, a finite value).

use puypuy_common::{Point, Style, Value};
use serde::Deserialize;

/// One line from the host.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum HostEvent {
    /// A module was imported; `style` is `class` or `function`.
    Loaded { module: String, style: String },
    /// A module could not be imported (and will not run until the next start or SIGHUP).
    ImportError { module: String, file: String, reason: String },
    /// Every module was tried; cycles may start.
    Ready,
    /// One module's cycle.
    Result(ModuleResult),
    /// A line for the log: a module's print, a `puylogger` or `print_error` call.
    Log { level: String, module: String, text: String },
    /// The answer to a ping: the host's main thread runs. `busy` holds each module whose thread
    /// has not ended, with that thread's CPU seconds.
    Pong { id: u64, busy: Vec<(String, f64)> },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModuleResult {
    pub module: String,
    pub tick: u64,
    pub points: Vec<WirePoint>,
    /// Values not sent: the metric's name and why (None, text, …).
    pub dropped: Vec<(String, String)>,
    /// The exception that ended the module's cycle, with the module's file and line.
    pub error: Option<String>,
    /// Its previous cycle had not ended yet, so it was not started.
    #[serde(default)]
    pub still_running: bool,
    /// With `still_running`: the CPU seconds its thread has used.
    #[serde(default)]
    pub cpu: f64,
    pub seconds: f64,
}

/// A point as the host writes it (short keys: it is the bulk of the traffic).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WirePoint {
    pub n: String,
    pub t: i64,
    pub v: serde_json::Number,
    /// An integer value (stays one: InfluxDB refuses a field whose type changes).
    pub i: bool,
    pub c: String,
    /// A counter: the shipper sends its per-second rate.
    pub r: bool,
    pub g: Vec<(String, String)>,
}

pub fn parse_event(line: &str) -> Result<HostEvent, String> {
    serde_json::from_str(line).map_err(|e| format!("unreadable line from the Python host ({e}): {line:.200}"))
}

impl WirePoint {
    pub fn into_point(self) -> Result<Point, String> {
        if self.n.is_empty() || self.n.chars().any(char::is_control) {
            return Err(format!("metric name {:?} is empty or holds control characters", self.n));
        }
        let timestamp =
            u64::try_from(self.t).ok().filter(|t| *t > 0).ok_or(format!("{}: timestamp {}", self.n, self.t))?;
        let value = match (self.i, self.v.as_i64()) {
            (true, Some(i)) if !self.r => Value::Int(i),
            _ => Value::Float(self.v.as_f64().ok_or(format!("{}: value {}", self.n, self.v))?),
        };
        if !value.is_finite() {
            return Err(format!("{}: value {} is not finite", self.n, self.v));
        }
        let tags = self.g.into_iter().filter(|(k, v)| !k.is_empty() && !v.is_empty()).collect();
        Ok(Point {
            name: self.n,
            timestamp,
            value,
            check_type: self.c.into(),
            style: if self.r { Style::Rate } else { Style::Stack },
            tags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_line_becomes_points() {
        let line = r#"{"ev":"result","module":"check_x","tick":1700000000,"points":[{"n":"a","t":1700000000,"v":5,"i":true,"c":"x","r":false,"g":[["db","0"]]},{"n":"b","t":1700000000,"v":12.5,"i":false,"c":"x","r":true,"g":[]}],"dropped":[["c","None"]],"error":null,"seconds":0.01}"#;
        let HostEvent::Result(r) = parse_event(line).expect("a result") else { panic!("not a result") };
        assert_eq!(r.dropped, vec![("c".to_string(), "None".to_string())]);
        let points: Vec<Point> = r.points.into_iter().map(|p| p.into_point().expect("a point")).collect();
        assert_eq!(points[0], Point::int("a", 1700000000, 5, "x").with_tag("db", "0"));
        assert_eq!(points[1], Point::float("b", 1700000000, 12.5, "x").rate());
    }

    #[test]
    fn a_rate_with_an_integer_counter_is_a_float() {
        let p = WirePoint { n: "c".into(), t: 1, v: 7.into(), i: true, c: "t".into(), r: true, g: vec![] };
        assert_eq!(p.into_point().expect("a point").value, Value::Float(7.0));
    }

    #[test]
    fn bad_points_and_lines_are_refused() {
        let p =
            |n: &str, t: i64| WirePoint { n: n.into(), t, v: 1.into(), i: true, c: "t".into(), r: false, g: vec![] };
        assert!(p("", 1).into_point().is_err());
        assert!(p("a\nb", 1).into_point().is_err());
        assert!(p("a", 0).into_point().is_err());
        assert!(p("a", -5).into_point().is_err());
        assert!(parse_event("hello from a module").is_err());
        assert!(parse_event(r#"{"ev":"nonsense"}"#).is_err());
        assert_eq!(parse_event(r#"{"ev":"ready"}"#), Ok(HostEvent::Ready));
        assert_eq!(
            parse_event(r#"{"ev":"pong","id":3,"busy":[["check_hang",0.01]]}"#),
            Ok(HostEvent::Pong { id: 3, busy: vec![("check_hang".to_string(), 0.01)] })
        );
    }
}
