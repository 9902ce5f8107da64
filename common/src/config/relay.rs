//! `[Relay]`: the shipper's inputs for other programs (OpenTSDB telnet, Graphite, HTTP, StatsD) and
//! the group of its Unix socket.

use std::path::Path;
use std::time::Duration;

use ini::Ini;

use super::reader::{warn_unknown_keys, ConfigError, SectionReader};

/// `[Relay]`: the shipper's inputs for other programs.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    pub opentsdb_listen: Option<std::net::SocketAddr>,
    pub graphite_listen: Option<std::net::SocketAddr>,
    pub graphite_udp: bool,
    pub http_listen: Option<std::net::SocketAddr>,
    pub max_line_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// Group given to the shipper's Unix socket (mode 0660).
    pub socket_group: Option<String>,
    /// The StatsD input, when `statsd_listen` is set.
    pub statsd: Option<StatsdConfig>,
}

/// The StatsD input (`statsd_*` keys of `[Relay]`).
#[derive(Debug, Clone, PartialEq)]
pub struct StatsdConfig {
    /// UDP, and TCP on the same port when `tcp` is set.
    pub listen: std::net::SocketAddr,
    pub tcp: bool,
    /// The aggregation period; flushes fall on wall-clock multiples of it.
    pub flush: Duration,
    /// Timer percentiles, as given (`90`, `99.9`; a negative one is the reference daemon's "top").
    pub percentiles: Vec<f64>,
    /// Series held at once (counters, timers, gauges and sets together); beyond, new ones are dropped.
    pub max_series: usize,
    /// Timer samples and set members held per flush; beyond, they are dropped (timer counts stay exact).
    pub max_samples: usize,
    pub names: StatsdNames,
}

/// How flushed StatsD series are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsdNames {
    /// The reference daemon's Graphite names: `stats.NAME`, `stats_counts.NAME`, `stats.timers.NAME.mean`…
    Graphite,
    /// Plain `NAME`, `NAME.count`, `NAME.mean`… with the DogStatsD tags as tags.
    Tagged,
}

pub const RELAY_KEYS: &[&str] = &[
    "opentsdb_listen",
    "graphite_listen",
    "graphite_udp",
    "http_listen",
    "max_line_bytes",
    "max_connections",
    "idle_timeout_seconds",
    "socket_group",
    "statsd_listen",
    "statsd_tcp",
    "statsd_flush_seconds",
    "statsd_percentiles",
    "statsd_max_series",
    "statsd_max_samples",
    "statsd_names",
];

/// `PORT` alone binds loopback; `HOST:PORT` binds what it says.
pub fn parse_listen(raw: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(port) = raw.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    raw.to_socket_addrs()
        .map_err(|e| format!("{raw:?} is not an address: {e} (expected PORT or HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("{raw:?} resolves to nothing (expected PORT or HOST:PORT)"))
}

/// `statsd_percentiles`: numbers separated by commas or spaces, each in (0, 100] or [-100, 0).
pub fn parse_percentiles(raw: &str) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    for item in raw.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
        let p: f64 =
            item.parse().map_err(|_| format!("{item:?} is not a number (expected a list such as 50, 90, 99.9)"))?;
        if !(p.is_finite() && p != 0.0 && p.abs() <= 100.0) {
            return Err(format!("{item:?} is out of range (expected a percentile above 0 and at most 100)"));
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err("empty list (expected a list such as 50, 90, 99.9)".into());
    }
    Ok(out)
}

/// Reads `[Relay]`; `check_period_seconds` is the default of `statsd_flush_seconds`.
pub fn read_relay(
    file: &Path,
    ini: &Ini,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
    check_period_seconds: u64,
) -> RelayConfig {
    warn_unknown_keys(ini, "Relay", RELAY_KEYS, warnings);
    let mut r = SectionReader::new(file, ini, "Relay", errors);
    let listen = |r: &mut SectionReader, key: &str| match r.get(key) {
        None | Some("") => None,
        Some(raw) => match parse_listen(raw) {
            Ok(a) => Some(a),
            Err(e) => {
                r.error(Some(key), e);
                None
            }
        },
    };
    let opentsdb_listen = listen(&mut r, "opentsdb_listen");
    let graphite_listen = listen(&mut r, "graphite_listen");
    let http_listen = listen(&mut r, "http_listen");
    let statsd_listen = listen(&mut r, "statsd_listen");
    let percentiles = match r.get("statsd_percentiles") {
        None => vec![90.0],
        Some(raw) => parse_percentiles(raw).unwrap_or_else(|e| {
            r.error(Some("statsd_percentiles"), e);
            vec![90.0]
        }),
    };
    let names = match r.get("statsd_names").map(str::to_ascii_lowercase).as_deref() {
        None | Some("graphite") => StatsdNames::Graphite,
        Some("tagged") => StatsdNames::Tagged,
        Some(other) => {
            r.error(Some("statsd_names"), format!("unknown naming {other:?} (expected graphite or tagged)"));
            StatsdNames::Graphite
        }
    };
    let statsd = StatsdConfig {
        listen: statsd_listen.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8125))),
        tcp: r.boolean("statsd_tcp", false),
        flush: Duration::from_secs(r.number("statsd_flush_seconds", check_period_seconds.max(1), 1)),
        percentiles,
        max_series: r.number("statsd_max_series", 100_000usize, 1),
        max_samples: r.number("statsd_max_samples", 1_000_000usize, 1),
        names,
    };
    RelayConfig {
        opentsdb_listen,
        graphite_listen,
        graphite_udp: r.boolean("graphite_udp", false),
        http_listen,
        max_line_bytes: r.number("max_line_bytes", 65_536usize, 64),
        max_connections: r.number("max_connections", 1024usize, 1),
        idle_timeout: Duration::from_secs(r.number("idle_timeout_seconds", 300u64, 1)),
        socket_group: r.get("socket_group").filter(|g| !g.is_empty()).map(str::to_string),
        statsd: statsd_listen.map(|_| statsd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(text: &str) -> (RelayConfig, Vec<ConfigError>) {
        let ini = super::super::reader::parse_ini(text).expect("syntax");
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let config = read_relay(Path::new("config.ini"), &ini, &mut errors, &mut warnings, 7);
        (config, errors)
    }

    #[test]
    fn statsd_is_off_without_listen_and_defaults_to_the_check_period() {
        assert_eq!(relay("[Relay]\nstatsd_tcp = true\n").0.statsd, None);
        let (config, errors) = relay("[Relay]\nstatsd_listen = 8125\n");
        assert!(errors.is_empty(), "{errors:?}");
        let statsd = config.statsd.expect("statsd");
        assert_eq!(statsd.listen, std::net::SocketAddr::from(([127, 0, 0, 1], 8125)));
        assert_eq!(statsd.flush, Duration::from_secs(7));
        assert_eq!(statsd.percentiles, vec![90.0]);
        assert_eq!((statsd.max_series, statsd.names, statsd.tcp), (100_000, StatsdNames::Graphite, false));
    }

    #[test]
    fn statsd_keys_are_read_and_bad_ones_named() {
        let (config, errors) = relay(
            "[Relay]\nstatsd_listen = 0.0.0.0:9125\nstatsd_tcp = yes\nstatsd_flush_seconds = 10\nstatsd_percentiles = 50, 90 99.9\nstatsd_names = Tagged\nstatsd_max_series = 5\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let statsd = config.statsd.expect("statsd");
        assert_eq!(statsd.percentiles, vec![50.0, 90.0, 99.9]);
        assert_eq!(
            (statsd.flush.as_secs(), statsd.names, statsd.tcp, statsd.max_series),
            (10, StatsdNames::Tagged, true, 5)
        );
        let (_, errors) =
            relay("[Relay]\nstatsd_listen = 8125\nstatsd_percentiles = 90, 150\nstatsd_names = prometheus\n");
        let keys: Vec<_> = errors.iter().filter_map(|e| e.key.as_deref()).collect();
        assert_eq!(keys, vec!["statsd_percentiles", "statsd_names"]);
        assert!(errors[0].message.contains("\"150\""), "{}", errors[0]);
    }
}
