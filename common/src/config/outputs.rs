//! Several destinations: the address list of a `[TSDB]` (or `[TSDB:NAME]`) section and how the
//! shipper spreads points over it, and the extra outputs `[TSDB:NAME]` beside `[TSDB]`.
//!
//! - Carbon: `address = host:port[:instance], …` as carbon's `DESTINATIONS`, placed on a
//!   consistent-hash ring equal to carbon's (`hashing = carbon_ch | fnv1a_ch`, `replication = N`
//!   as `REPLICATION_FACTOR`, `diverse_replicas` as `DIVERSE_REPLICAS`, both with carbon's
//!   defaults). Two destinations with the same server and instance are refused, as carbon-relay
//!   refuses them (their ring keys would be the same).
//! - HTTP backends: `address = http://a:8086, http://b:8086` with `balance = failover |
//!   round_robin`.
//! - `graphite_relay_prefix`: whether Graphite paths received by the relay get the
//!   `cluster.group.HOST.` prefix (off: they pass through unchanged, as carbon-relay forwards them).

use std::fmt;

use ini::Ini;

use super::reader::{ConfigError, SectionReader};

/// Carbon's `ROUTER_HASH_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    CarbonCh,
    Fnv1aCh,
}

impl Hashing {
    pub fn name(self) -> &'static str {
        match self {
            Hashing::CarbonCh => "carbon_ch",
            Hashing::Fnv1aCh => "fnv1a_ch",
        }
    }
}

/// How one output with several HTTP servers uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Every request to the server in use; to the next one at once when it fails.
    Failover,
    /// Requests in turn to each server; a failed one goes to the next at once.
    RoundRobin,
}

/// One carbon destination, `server:port[:instance]` as carbon's `parseDestination` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarbonDestination {
    pub server: String,
    pub port: u16,
    pub instance: Option<String>,
}

impl CarbonDestination {
    /// `host:port`, `host:port:instance`, `[v6]:port[:instance]`.
    pub fn parse(s: &str) -> Option<CarbonDestination> {
        let s = s.trim();
        let (server, rest) = match (s.strip_prefix('['), s.rfind("]:")) {
            (Some(_), Some(b)) => (&s[1..b], &s[b + 2..]),
            _ => s.split_once(':')?,
        };
        let (port, instance) = match rest.split_once(':') {
            Some((p, i)) => (p, Some(i.to_string())),
            None => (rest, None),
        };
        let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
        if server.is_empty() || server.contains('/') || instance.as_deref().is_some_and(str::is_empty) {
            return None;
        }
        Some(CarbonDestination { server: server.to_string(), port, instance })
    }

    /// `host:port` to connect to.
    pub fn connect_address(&self) -> String {
        if self.server.contains(':') {
            format!("[{}]:{}", self.server, self.port)
        } else {
            format!("{}:{}", self.server, self.port)
        }
    }
}

impl fmt::Display for CarbonDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.connect_address())?;
        if let Some(i) = &self.instance {
            write!(f, ":{i}")?;
        }
        Ok(())
    }
}

/// How a section's destinations are used; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// Every address listed, trimmed, in order (one for a section with a single address).
    pub addresses: Vec<String>,
    /// The same, parsed, for `tsdtype = Carbon`.
    pub carbon: Vec<CarbonDestination>,
    pub hashing: Hashing,
    pub replication: usize,
    pub diverse_replicas: bool,
    pub balance: Balance,
    pub relay_prefix: bool,
}

impl Default for Routing {
    fn default() -> Routing {
        Routing {
            addresses: Vec::new(),
            carbon: Vec::new(),
            hashing: Hashing::CarbonCh,
            replication: 1,
            diverse_replicas: true,
            balance: Balance::Failover,
            relay_prefix: false,
        }
    }
}

pub const ROUTING_KEYS: &[&str] = &["hashing", "replication", "diverse_replicas", "balance", "graphite_relay_prefix"];

/// The list in `address`, split on commas.
pub fn split_addresses(raw: &str) -> Vec<String> {
    raw.split(',').map(|a| a.trim().trim_end_matches('/').to_string()).filter(|a| !a.is_empty()).collect()
}

/// The routing keys of a section whose addresses were already split (and checked by the caller).
pub fn read_routing(r: &mut SectionReader<'_>, addresses: Vec<String>, carbon: bool) -> Routing {
    let mut routing = Routing { addresses, ..Routing::default() };
    routing.hashing = match r.get("hashing").map(str::trim) {
        None | Some("") | Some("carbon_ch") => Hashing::CarbonCh,
        Some("fnv1a_ch") => Hashing::Fnv1aCh,
        Some(other) => {
            r.error(Some("hashing"), format!("unknown hash {other:?} (expected carbon_ch or fnv1a_ch)"));
            Hashing::CarbonCh
        }
    };
    routing.replication = r.number("replication", 1usize, 1);
    routing.diverse_replicas = r.boolean("diverse_replicas", true);
    routing.relay_prefix = r.boolean("graphite_relay_prefix", false);
    routing.balance = match r.get("balance").map(str::trim) {
        None | Some("") | Some("failover") => Balance::Failover,
        Some("round_robin") => Balance::RoundRobin,
        Some(other) => {
            r.error(Some("balance"), format!("unknown balance {other:?} (expected failover or round_robin)"));
            Balance::Failover
        }
    };
    if carbon {
        for a in &routing.addresses {
            match CarbonDestination::parse(a) {
                Some(d) => {
                    if routing.carbon.iter().any(|o| o.server == d.server && o.instance == d.instance) {
                        r.error(
                            Some("address"),
                            format!(
                                "{a:?}: server {} with instance {} is listed twice (give each carbon-cache of one server its own instance, e.g. {}:{}:b)",
                                d.server,
                                d.instance.as_deref().unwrap_or("(none)"),
                                d.server,
                                d.port
                            ),
                        );
                    }
                    routing.carbon.push(d);
                }
                None => r.error(
                    Some("address"),
                    format!("{a:?} is not host:port[:instance] (expected e.g. localhost:2004 or 10.0.0.5:2004:a, no scheme)"),
                ),
            }
        }
        if routing.replication > routing.carbon.len().max(1) {
            r.error(
                Some("replication"),
                format!(
                    "{} is more than the {} destinations listed in address",
                    routing.replication,
                    routing.carbon.len()
                ),
            );
        }
    } else if r.get("replication").is_some() || r.get("hashing").is_some() {
        r.error(Some("hashing"), "hashing and replication are for tsdtype Carbon (HTTP backends use balance)".into());
    }
    routing
}

/// The names of the `[TSDB:NAME]` sections, in file order; an error for `[TSDB:]` and for a name
/// that could not be a folder name.
pub fn output_sections(file: &std::path::Path, ini: &Ini, errors: &mut Vec<ConfigError>) -> Vec<String> {
    let mut names = Vec::new();
    for section in ini.sections().flatten() {
        let Some(name) = section.strip_prefix("TSDB:") else { continue };
        let ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if ok {
            names.push(name.to_string());
        } else {
            errors.push(ConfigError::in_section(
                file,
                section,
                None,
                "output name must be letters, digits, '-', '_' or '.' (it names the output's spool folder)".into(),
            ));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carbon_destinations_read_as_carbon_reads_them() {
        let d = CarbonDestination::parse(" 10.0.0.5:2004:a ").expect("parse");
        assert_eq!((d.server.as_str(), d.port, d.instance.as_deref()), ("10.0.0.5", 2004, Some("a")));
        let d = CarbonDestination::parse("[::1]:2104").expect("v6");
        assert_eq!((d.server.as_str(), d.connect_address(), d.instance), ("::1", "[::1]:2104".to_string(), None));
        assert_eq!(CarbonDestination::parse("[::1]:2104:b").map(|d| d.to_string()), Some("[::1]:2104:b".into()));
        for bad in ["h", "h:x", "h:0", ":2004", "http://h:2004", "h:2004:"] {
            assert_eq!(CarbonDestination::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn addresses_split_on_commas() {
        assert_eq!(split_addresses("http://a:1/, http://b:2 ,,"), vec!["http://a:1", "http://b:2"]);
    }
}
