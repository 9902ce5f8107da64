//! What the service checks share: the [`ServiceCheck`] trait, a builder of the points of one check
//! run ([`Metrics`]), and HTTP and line-protocol helpers with timeouts.
//!
//! Each service check runs in a thread of its own every cycle with its own timeout, so a service
//! that is down, slow or answers garbage never delays the others; failures are logged once per
//! outage by the caller.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use puypuy_common::services::{ServiceConfig, ServiceKind};
use puypuy_common::{Point, Style, Value};

pub trait ServiceCheck: Send {
    fn collect(&mut self, timestamp: u64) -> Result<Vec<Point>, String>;
}

/// The points of one run of one check: type tag, metric prefix and `instance` tag applied.
pub struct Metrics {
    check_type: &'static str,
    instance: Option<String>,
    timestamp: u64,
    pub points: Vec<Point>,
}

impl Metrics {
    pub fn new(kind: ServiceKind, instance: Option<String>, timestamp: u64) -> Metrics {
        Metrics { check_type: kind.check_type(), instance, timestamp, points: Vec::new() }
    }

    fn push(&mut self, name: String, value: Value, style: Style, tags: &[(&str, &str)]) {
        let mut p = Point::new(name, self.timestamp, value, self.check_type).with_style(style);
        if let Some(i) = &self.instance {
            p = p.with_tag("instance", i.clone());
        }
        for (k, v) in tags {
            p = p.with_tag(*k, *v);
        }
        self.points.push(p);
    }

    /// A gauge with an integer value (counts, bytes).
    pub fn int(&mut self, name: impl Into<String>, value: i64) {
        self.push(name.into(), Value::Int(value), Style::Stack, &[]);
    }

    /// A gauge with a float value (ratios, per-second figures the service computes itself).
    pub fn float(&mut self, name: impl Into<String>, value: f64) {
        if value.is_finite() {
            self.push(name.into(), Value::Float(value), Style::Stack, &[]);
        }
    }

    /// A counter: the shipper sends its per-second rate.
    pub fn counter(&mut self, name: impl Into<String>, value: i64) {
        self.push(name.into(), Value::Int(value), Style::Rate, &[]);
    }

    pub fn int_tagged(&mut self, name: impl Into<String>, value: i64, tags: &[(&str, &str)]) {
        self.push(name.into(), Value::Int(value), Style::Stack, tags);
    }

    pub fn counter_tagged(&mut self, name: impl Into<String>, value: i64, tags: &[(&str, &str)]) {
        self.push(name.into(), Value::Int(value), Style::Rate, tags);
    }
}

/// A check that GETs a status page and parses it: nginx, Apache, php-fpm, HAProxy.
pub struct HttpCheck {
    pub config: ServiceConfig,
    /// What the page should be, for the error when it does not parse.
    pub what: &'static str,
    pub parse: fn(&str, &ServiceConfig, &mut Metrics) -> Result<(), String>,
}

impl ServiceCheck for HttpCheck {
    fn collect(&mut self, timestamp: u64) -> Result<Vec<Point>, String> {
        let body = http_get(&self.config)?;
        let mut m = Metrics::new(self.config.kind, self.config.instance.clone(), timestamp);
        (self.parse)(&body, &self.config, &mut m)
            .map_err(|e| format!("{}: not {}: {e}", self.config.url, self.what))?;
        Ok(m.points)
    }
}

/// Integer value of a status field; floats are truncated (some servers print `12.0`).
pub fn int_of(s: &str) -> Option<i64> {
    let s = s.trim();
    s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f as i64))
}

/// GET with a total timeout and optional basic auth; the body on 2xx, a clear error otherwise.
pub fn http_get(config: &ServiceConfig) -> Result<String, String> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(config.timeout)).http_status_as_error(false).build().into();
    let mut request = agent.get(&config.url);
    if config.auth {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", config.user, config.pass));
        request = request.header("Authorization", &format!("Basic {token}"));
    }
    let mut response = request.call().map_err(|e| format!("{}: {e}", config.url))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(|e| format!("{}: reading the answer: {e}", config.url))?;
    match status {
        200..=299 => Ok(body),
        401 | 403 => Err(format!("{} answered {status}: check [{}] auth, user and pass", config.url, config.section)),
        _ => Err(format!("{} answered {status}", config.url)),
    }
}

/// A TCP connection with connect, read and write timeouts.
pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = (host, port).to_socket_addrs().map_err(|e| format!("{host}:{port}: {e}"))?;
    let mut last = format!("{host}:{port}: resolves to nothing");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                // Without them a service that accepts and then says nothing would hold the check
                // for ever: a connection whose timeouts cannot be set is not used.
                s.set_read_timeout(Some(timeout))
                    .and_then(|()| s.set_write_timeout(Some(timeout)))
                    .map_err(|e| format!("{host}:{port}: cannot set a {timeout:?} timeout on the connection: {e}"))?;
                return Ok(s);
            }
            Err(e) => last = format!("{host}:{port}: {e}"),
        }
    }
    Err(last)
}

/// Sends a command and reads lines until `end` (a line equal to it) — memcached's `stats`.
pub fn request_lines(stream: &mut TcpStream, command: &[u8], end: &str, max_lines: usize) -> Result<String, String> {
    stream.write_all(command).map_err(|e| format!("write: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut out = String::new();
    for _ in 0..max_lines {
        let mut line = String::new();
        let n = reader.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before the end of the answer".into());
        }
        if line.trim_end() == end {
            return Ok(out);
        }
        if line.starts_with("ERROR") || line.starts_with("-ERR") {
            return Err(format!("server answered {}", line.trim_end()));
        }
        out.push_str(&line);
    }
    Err(format!("answer longer than {max_lines} lines"))
}
