//! memcached `stats` (`[Memcached] host port`): counters (sent as rates) `memcached_cmd_get
//! memcached_cmd_set memcached_get_hits memcached_get_misses memcached_bytes_read
//! memcached_bytes_written memcached_total_connections memcached_evictions memcached_total_items`,
//! gauges `memcached_curr_connections memcached_curr_items memcached_bytes memcached_limit_maxbytes
//! memcached_threads memcached_uptime`.

use puypuy_common::services::{ServiceConfig, ServiceKind};
use puypuy_common::Point;

use super::service::{connect, int_of, request_lines, Metrics, ServiceCheck};

const COUNTERS: [&str; 9] = [
    "cmd_get",
    "cmd_set",
    "get_hits",
    "get_misses",
    "bytes_read",
    "bytes_written",
    "total_connections",
    "evictions",
    "total_items",
];
const GAUGES: [&str; 6] = ["curr_connections", "curr_items", "bytes", "limit_maxbytes", "threads", "uptime"];

pub fn parse(text: &str, m: &mut Metrics) -> Result<(), String> {
    let stat = |key: &str| {
        text.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("STAT") && f.next() == Some(key)).then(|| f.next().and_then(int_of)).flatten()
        })
    };
    if stat("uptime").is_none() {
        return Err("no STAT lines".into());
    }
    for key in COUNTERS {
        if let Some(v) = stat(key) {
            m.counter(format!("memcached_{key}"), v);
        }
    }
    for key in GAUGES {
        if let Some(v) = stat(key) {
            m.int(format!("memcached_{key}"), v);
        }
    }
    Ok(())
}

pub struct Memcached(pub ServiceConfig);

impl ServiceCheck for Memcached {
    fn collect(&mut self, timestamp: u64) -> Result<Vec<Point>, String> {
        let c = &self.0;
        let mut stream = connect(&c.host, c.port, c.timeout)?;
        let text =
            request_lines(&mut stream, b"stats\r\n", "END", 1000).map_err(|e| format!("{}:{}: {e}", c.host, c.port))?;
        let mut m = Metrics::new(ServiceKind::Memcached, c.instance.clone(), timestamp);
        parse(&text, &mut m).map_err(|e| format!("{}:{}: not memcached stats: {e}", c.host, c.port))?;
        Ok(m.points)
    }
}
