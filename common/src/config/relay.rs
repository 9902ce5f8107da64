//! `[Relay]`: the shipper's inputs for other programs (OpenTSDB telnet, Graphite, HTTP) and the
//! group of its Unix socket.

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

pub fn read_relay(file: &Path, ini: &Ini, errors: &mut Vec<ConfigError>, warnings: &mut Vec<String>) -> RelayConfig {
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
    RelayConfig {
        opentsdb_listen,
        graphite_listen,
        graphite_udp: r.boolean("graphite_udp", false),
        http_listen,
        max_line_bytes: r.number("max_line_bytes", 65_536usize, 64),
        max_connections: r.number("max_connections", 1024usize, 1),
        idle_timeout: Duration::from_secs(r.number("idle_timeout_seconds", 300u64, 1)),
        socket_group: r.get("socket_group").filter(|g| !g.is_empty()).map(str::to_string),
    }
}
