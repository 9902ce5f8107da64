//! The metric model: one datapoint as producers build it and the shipper ships it.
//!
//! A point carries its own check type (it becomes the `type` tag) and its style: `Stack` values are
//! sent as they are, `Rate` values are counters that the shipper turns into a per-second rate.
//! Host-wide tags (host, cluster, group, location, `[Tags]`) are added by the shipper, so producers
//! only carry the tags that are specific to the point.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A datapoint value. Checks declare whether a metric is an integer (counts, bytes) or a float
/// (rates, percentages) and keep it so: InfluxDB refuses a field whose type changes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        }
    }

    /// NaN and ±inf cannot be stored by any backend; producers refuse them.
    pub fn is_finite(self) -> bool {
        match self {
            Value::Int(_) => true,
            Value::Float(f) => f.is_finite(),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

/// How the shipper treats a value: as is, or as a counter to turn into a per-second rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Style {
    Stack,
    Rate,
}

impl Style {
    pub fn parse(s: &str) -> Option<Style> {
        match s {
            "stack" => Some(Style::Stack),
            "rate" => Some(Style::Rate),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub name: String,
    /// Unix time in seconds.
    pub timestamp: u64,
    pub value: Value,
    /// Becomes the `type` tag (`system`, `mysql`, a script's third field…). A fixed type costs
    /// no allocation: a relay makes millions of points a second, all of one type.
    pub check_type: Cow<'static, str>,
    pub style: Style,
    /// Tags specific to this point, in the order the producer gave them.
    pub tags: Vec<(String, String)>,
}

impl Point {
    pub fn new(
        name: impl Into<String>,
        timestamp: u64,
        value: Value,
        check_type: impl Into<Cow<'static, str>>,
    ) -> Point {
        Point {
            name: name.into(),
            timestamp,
            value,
            check_type: check_type.into(),
            style: Style::Stack,
            tags: Vec::new(),
        }
    }

    pub fn int(name: impl Into<String>, timestamp: u64, value: i64, check_type: impl Into<Cow<'static, str>>) -> Point {
        Point::new(name, timestamp, Value::Int(value), check_type)
    }

    pub fn float(
        name: impl Into<String>,
        timestamp: u64,
        value: f64,
        check_type: impl Into<Cow<'static, str>>,
    ) -> Point {
        Point::new(name, timestamp, Value::Float(value), check_type)
    }

    pub fn with_style(mut self, style: Style) -> Point {
        self.style = style;
        self
    }

    pub fn rate(self) -> Point {
        self.with_style(Style::Rate)
    }

    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Point {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// The `--dry-run` line: `name timestamp value tag=value… [rate]`.
    pub fn dry_run_line(&self) -> String {
        self.dry_run_line_with(&[])
    }

    /// [`Point::dry_run_line`] with the host's tags after the point's own (a host tag the point
    /// brings itself is not repeated), as the shipper would send them.
    pub fn dry_run_line_with(&self, host_tags: &[(String, String)]) -> String {
        let mut line = format!("{} {} {} type={}", self.name, self.timestamp, self.value, self.check_type);
        let own = self.tags.iter();
        let host = host_tags.iter().filter(|(k, _)| !self.tags.iter().any(|(own, _)| own == k));
        for (k, v) in own.chain(host) {
            line.push(' ');
            line.push_str(k);
            line.push('=');
            line.push_str(v);
        }
        if self.style == Style::Rate {
            line.push_str(" rate");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_line_shows_tags_and_rate_style() {
        let p = Point::int("bytes_rx_eth0", 1700000000, 42, "system").rate().with_tag("core", "1");
        assert_eq!(p.dry_run_line(), "bytes_rx_eth0 1700000000 42 type=system core=1 rate");
        let q = Point::float("sys_load_1", 1700000000, 0.5, "system");
        assert_eq!(q.dry_run_line(), "sys_load_1 1700000000 0.5 type=system");
        let host = [("host".to_string(), "web1".to_string()), ("core".to_string(), "9".to_string())];
        assert_eq!(p.dry_run_line_with(&host), "bytes_rx_eth0 1700000000 42 type=system core=1 host=web1 rate");
    }
}
