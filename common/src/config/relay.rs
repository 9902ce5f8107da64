//! `[Relay]`: the shipper's inputs for other programs (OpenTSDB telnet, Graphite, HTTP, StatsD) and
//! the group of its Unix socket, and the door of each network input: who may connect (`allow`,
//! CIDR lists), TLS (`tls_cert`, `tls_key`) and the HTTP input's users and tokens.
//!
//! Secrets (passwords, tokens) are read here and never printed: the `Debug` of [`HttpAuth`]
//! shows how many there are, not what they are.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::Ini;

use super::reader::{resolve, warn_unknown_keys, ConfigError, SectionReader};
use super::tsdb::IpRange;

/// `[Relay]`: the shipper's inputs for other programs.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// Who may connect to each input, and whether it speaks TLS.
    pub doors: Doors,
    /// `tls_cert`, `tls_key`: the certificate chain and key (PEM) of the TLS inputs.
    pub tls: Option<TlsFiles>,
    /// The HTTP input's users and bearer tokens; empty lets every request in.
    pub http_auth: HttpAuth,
    /// `frames_listen`: the frame protocol from other PuyPuy agents, over TLS with a token.
    pub frames: Option<FramesInput>,
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

/// `frames_listen` and its keys: agents' frames over TCP+TLS, each connection opened with a token
/// of `tokens` (or `tokens_file`, one a line; several for rotation) and, with `client_ca`, a
/// client certificate that CA signed.
#[derive(Clone, PartialEq, Eq)]
pub struct FramesInput {
    pub listen: SocketAddr,
    pub tokens: Vec<String>,
    pub client_ca: Option<PathBuf>,
}

impl fmt::Debug for FramesInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a token.
        f.debug_struct("FramesInput")
            .field("listen", &self.listen)
            .field("tokens", &self.tokens.len())
            .field("client_ca", &self.client_ca)
            .finish()
    }
}

/// The network inputs, each with its own door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputName {
    OpenTsdb,
    Graphite,
    Http,
    Statsd,
    Frames,
}

impl InputName {
    pub const ALL: [InputName; 5] =
        [InputName::OpenTsdb, InputName::Graphite, InputName::Http, InputName::Statsd, InputName::Frames];

    /// The prefix of its keys (`opentsdb_listen`, `opentsdb_allow`, `opentsdb_tls`).
    pub fn key(self) -> &'static str {
        match self {
            InputName::OpenTsdb => "opentsdb",
            InputName::Graphite => "graphite",
            InputName::Http => "http",
            InputName::Statsd => "statsd",
            InputName::Frames => "frames",
        }
    }
}

/// Who may use one input and how it is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Door {
    /// `NAME_allow`, else `allow`: the peers served; empty serves every peer that can reach it.
    pub allow: Vec<IpRange>,
    /// The input speaks TLS (with `tls_cert`/`tls_key`); UDP never does.
    pub tls: bool,
}

impl Door {
    /// Whether `ip` may use the input (an empty list lets everyone in).
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|r| r.contains(ip))
    }
}

/// One door per network input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Doors {
    pub opentsdb: Door,
    pub graphite: Door,
    pub http: Door,
    pub statsd: Door,
    pub frames: Door,
}

impl Doors {
    pub fn of(&self, input: InputName) -> &Door {
        match input {
            InputName::OpenTsdb => &self.opentsdb,
            InputName::Graphite => &self.graphite,
            InputName::Http => &self.http,
            InputName::Statsd => &self.statsd,
            InputName::Frames => &self.frames,
        }
    }

    fn of_mut(&mut self, input: InputName) -> &mut Door {
        match input {
            InputName::OpenTsdb => &mut self.opentsdb,
            InputName::Graphite => &mut self.graphite,
            InputName::Http => &mut self.http,
            InputName::Statsd => &mut self.statsd,
            InputName::Frames => &mut self.frames,
        }
    }
}

/// `tls_cert` and `tls_key`, resolved against the config's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `http_users` (`user:password`, comma-separated, or one a line in `http_users_file`) and
/// `http_tokens` (likewise, `http_tokens_file`): Basic auth as InfluxDB's and OpenTSDB's clients
/// send it (and InfluxDB's `?u=&p=`), or `Authorization: Bearer TOKEN`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HttpAuth {
    pub users: Vec<(String, String)>,
    pub tokens: Vec<String>,
}

impl HttpAuth {
    pub fn is_open(&self) -> bool {
        self.users.is_empty() && self.tokens.is_empty()
    }
}

impl fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a password or a token; user names are not secret.
        let users: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("HttpAuth").field("users", &users).field("tokens", &self.tokens.len()).finish()
    }
}

/// Splits a list of secrets: one a line in a file, else separated by commas (never logged).
fn split_secrets(raw: &str, from_file: bool) -> Vec<String> {
    let items: Vec<&str> = if from_file { raw.lines().collect() } else { raw.split(',').collect() };
    items.into_iter().map(str::trim).filter(|s| !s.is_empty() && !s.starts_with('#')).map(str::to_string).collect()
}

/// Reads `KEY` or the file named by `KEY_file`: the list and where it came from.
fn secret_list(r: &mut SectionReader, base: &Path, key: &str) -> Vec<String> {
    let file_key = format!("{key}_file");
    if let Some(path) = r.get(&file_key).filter(|p| !p.is_empty()) {
        let full = resolve(base, path);
        return match std::fs::read_to_string(&full) {
            Ok(text) => split_secrets(&text, true),
            Err(e) => {
                r.error(Some(&file_key), format!("cannot read {}: {e}", full.display()));
                Vec::new()
            }
        };
    }
    r.get(key).map(|raw| split_secrets(raw, false)).unwrap_or_default()
}

/// A CIDR list (`10.0.0.0/8, 192.168.1.7, fd00::/8`); each bad entry is an error naming it.
pub fn parse_allow(raw: &str) -> Result<Vec<IpRange>, String> {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for entry in raw.split([',', ' ', '\t']).filter(|e| !e.is_empty()) {
        match IpRange::parse(entry) {
            Some(range) => good.push(range),
            None => bad.push(format!("{entry:?}")),
        }
    }
    match bad.is_empty() {
        true => Ok(good),
        false => Err(format!(
            "{} not an address or network (expected e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8)",
            bad.join(", ") + if bad.len() == 1 { " is" } else { " are" }
        )),
    }
}

pub const RELAY_KEYS: &[&str] = &[
    "frames_listen",
    "frames_allow",
    "tokens",
    "tokens_file",
    "client_ca",
    "allow",
    "opentsdb_allow",
    "graphite_allow",
    "http_allow",
    "statsd_allow",
    "tls_cert",
    "tls_key",
    "opentsdb_tls",
    "graphite_tls",
    "http_tls",
    "statsd_tls",
    "frames_tls",
    "http_users",
    "http_users_file",
    "http_tokens",
    "http_tokens_file",
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
    base: &Path,
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
    let (doors, tls) = read_doors(&mut r, base);
    let mut http_auth = HttpAuth { users: Vec::new(), tokens: secret_list(&mut r, base, "http_tokens") };
    for entry in secret_list(&mut r, base, "http_users") {
        match entry.split_once(':') {
            Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
                http_auth.users.push((user.to_string(), pass.to_string()))
            }
            // The entry holds a password: name the user only.
            _ => r.error(
                Some("http_users"),
                format!(
                    "an entry for {:?} is not user:password",
                    entry.split_once(':').map_or("(no colon)", |(u, _)| u)
                ),
            ),
        }
    }
    let frames_listen = listen(&mut r, "frames_listen");
    let frames = frames_listen.map(|listen| {
        let tokens = secret_list(&mut r, base, "tokens");
        if tokens.is_empty() {
            r.error(
                Some("tokens"),
                "missing (frames_listen needs the agents' tokens: tokens = … or tokens_file = PATH, one a line)".into(),
            );
        }
        if tls.is_none() && doors.frames.tls {
            r.error(
                Some("frames_listen"),
                "needs tls_cert and tls_key (or frames_tls = False for plain TCP, on loopback or a trusted network)"
                    .into(),
            );
        }
        let client_ca = r.get("client_ca").filter(|v| !v.is_empty()).map(|v| resolve(base, v));
        if client_ca.is_some() && !doors.frames.tls {
            // Plain TCP has no client certificate to check: agents would be let in without one.
            r.error(
                Some("client_ca"),
                "has no use with frames_tls = False: agents would be let in without a certificate (remove it, or set frames_tls = True)"
                    .into(),
            );
        }
        FramesInput { listen, tokens, client_ca }
    });
    let graphite_udp = r.boolean("graphite_udp", false);
    let listens = [
        (InputName::OpenTsdb, opentsdb_listen, false),
        (InputName::Graphite, graphite_listen, graphite_udp),
        (InputName::Http, http_listen, false),
        (InputName::Statsd, statsd_listen, true),
        (InputName::Frames, frames_listen, false),
    ];
    for (input, addr, udp) in listens {
        if let Some(addr) = addr {
            if let Some(w) = open_door_warning(input, addr, doors.of(input), udp) {
                warnings.push(w);
            }
        }
    }
    if tls.is_none() && (doors.http.tls && http_listen.is_some()) {
        r.error(Some("http_tls"), "TLS asked for but tls_cert and tls_key are not set".into());
    }
    RelayConfig {
        doors,
        tls,
        http_auth,
        frames,
        opentsdb_listen,
        graphite_listen,
        graphite_udp,
        http_listen,
        max_line_bytes: r.number("max_line_bytes", 65_536usize, 64),
        max_connections: r.number("max_connections", 1024usize, 1),
        idle_timeout: Duration::from_secs(r.number("idle_timeout_seconds", 300u64, 1)),
        socket_group: r.get("socket_group").filter(|g| !g.is_empty()).map(str::to_string),
        statsd: statsd_listen.map(|_| statsd),
    }
}

/// `allow`/`NAME_allow`, `tls_cert`/`tls_key` and `NAME_tls`.
fn read_doors(r: &mut SectionReader, base: &Path) -> (Doors, Option<TlsFiles>) {
    let allow = |r: &mut SectionReader, key: &str| -> Option<Vec<IpRange>> {
        let raw = r.get(key)?;
        match parse_allow(raw) {
            Ok(list) => Some(list),
            Err(e) => {
                r.error(Some(key), e);
                Some(Vec::new())
            }
        }
    };
    let common = allow(r, "allow").unwrap_or_default();
    let file = |r: &mut SectionReader, key: &str| r.get(key).filter(|v| !v.is_empty()).map(|v| resolve(base, v));
    let tls = match (file(r, "tls_cert"), file(r, "tls_key")) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => {
            r.error(Some("tls_key"), "missing (tls_cert is set; both are needed for TLS)".into());
            None
        }
        (None, Some(_)) => {
            r.error(Some("tls_cert"), "missing (tls_key is set; both are needed for TLS)".into());
            None
        }
    };
    let mut doors = Doors::default();
    for input in InputName::ALL {
        let key = input.key();
        let list = allow(r, &format!("{key}_allow")).unwrap_or_else(|| common.clone());
        // HTTP speaks TLS once there is a certificate; the line inputs when asked (their clients
        // are often plain netcat-style senders); the frames input unless `frames_tls = False`.
        let tls_default = (input == InputName::Http && tls.is_some()) || input == InputName::Frames;
        let wants_tls = r.boolean(&format!("{key}_tls"), tls_default);
        if wants_tls && tls.is_none() && !matches!(input, InputName::Http | InputName::Frames) {
            r.error(Some(&format!("{key}_tls")), "TLS asked for but tls_cert and tls_key are not set".into());
        }
        let door = doors.of_mut(input);
        door.allow = list;
        door.tls = wants_tls;
    }
    (doors, tls)
}

/// `check-config`'s warning for an input reachable beyond loopback with neither TLS nor `allow`.
/// UDP (StatsD, `graphite_udp`) has no TLS: only `allow` closes it.
pub fn open_door_warning(input: InputName, addr: SocketAddr, door: &Door, udp: bool) -> Option<String> {
    if addr.ip().is_loopback() || !door.allow.is_empty() {
        return None;
    }
    let key = input.key();
    if !door.tls {
        return Some(format!(
            "[Relay] {key}_listen = {addr} is reachable beyond this host with neither TLS nor an allow list: anyone who can reach it can write metrics (set allow or {key}_allow to the senders' networks, or {key}_tls with tls_cert and tls_key)"
        ));
    }
    udp.then(|| {
        format!(
            "[Relay] {key}_listen = {addr}: its UDP port is reachable beyond this host with no allow list (UDP has no TLS; set allow or {key}_allow to the senders' networks)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(text: &str) -> (RelayConfig, Vec<ConfigError>) {
        let ini = super::super::reader::parse_ini(text).expect("syntax");
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let config = read_relay(Path::new("config.ini"), Path::new("."), &ini, &mut errors, &mut warnings, 7);
        (config, errors)
    }

    fn relay_warnings(text: &str) -> (RelayConfig, Vec<ConfigError>, Vec<String>) {
        let ini = super::super::reader::parse_ini(text).expect("syntax");
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let config = read_relay(Path::new("config.ini"), Path::new("."), &ini, &mut errors, &mut warnings, 7);
        (config, errors, warnings)
    }

    #[test]
    fn allow_applies_to_every_input_unless_an_input_has_its_own() {
        let (config, errors, _) =
            relay_warnings("[Relay]\nallow = 10.0.0.0/8, 192.168.1.7\nhttp_allow = fd00::/8\nopentsdb_listen = 4242\n");
        assert!(errors.is_empty(), "{errors:?}");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        for input in [InputName::OpenTsdb, InputName::Graphite, InputName::Statsd] {
            let door = config.doors.of(input);
            assert!(door.admits(ip("10.1.2.3")) && door.admits(ip("192.168.1.7")), "{input:?}");
            assert!(!door.admits(ip("192.168.1.8")) && !door.admits(ip("127.0.0.1")), "{input:?}");
        }
        assert!(config.doors.http.admits(ip("fd00::1")) && !config.doors.http.admits(ip("10.1.2.3")));
        let (_, errors, _) = relay_warnings("[Relay]\nallow = 10.0.0.0/33, nope\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.starts_with("\"10.0.0.0/33\", \"nope\" are not an address"), "{}", errors[0]);
    }

    #[test]
    fn an_input_beyond_loopback_with_neither_tls_nor_allow_is_warned_about() {
        let (_, errors, warnings) = relay_warnings(
            "[Relay]\nopentsdb_listen = 0.0.0.0:4242\nhttp_listen = 127.0.0.1:8086\ngraphite_listen = 0.0.0.0:2003\ngraphite_allow = 10.0.0.0/8\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("[Relay] opentsdb_listen = 0.0.0.0:4242 is reachable beyond this host"));
        // TLS closes a TCP input, not StatsD's UDP port.
        let (_, errors, warnings) = relay_warnings(
            "[Relay]\ntls_cert = c.pem\ntls_key = k.pem\nhttp_listen = 0.0.0.0:8086\nstatsd_listen = 0.0.0.0:8125\nstatsd_tcp = yes\nstatsd_tls = yes\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("statsd_listen") && warnings[0].contains("UDP"), "{warnings:?}");
    }

    #[test]
    fn tls_needs_both_files_and_secrets_are_never_printed() {
        let (config, errors, _) = relay_warnings("[Relay]\ntls_cert = c.pem\nhttp_listen = 8086\n");
        assert_eq!(errors.iter().filter_map(|e| e.key.as_deref()).collect::<Vec<_>>(), vec!["tls_key"]);
        assert!(!config.doors.http.tls);
        let (_, errors, _) = relay_warnings("[Relay]\nopentsdb_tls = yes\n");
        assert_eq!(errors.iter().filter_map(|e| e.key.as_deref()).collect::<Vec<_>>(), vec!["opentsdb_tls"]);
        let (config, errors, _) = relay_warnings(
            "[Relay]\nhttp_users = alice:s3cr3t-pass, bob:hunter22\nhttp_tokens = tok-abc123\nhttp_listen = 8086\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.http_auth.users[1], ("bob".to_string(), "hunter22".to_string()));
        assert_eq!(config.http_auth.tokens, vec!["tok-abc123".to_string()]);
        let shown = format!("{config:?}");
        for secret in ["s3cr3t-pass", "hunter22", "tok-abc123"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let (_, errors, _) = relay_warnings("[Relay]\nhttp_users = alice-with-no-password-s3cr3t\n");
        assert_eq!(errors.len(), 1);
        assert!(!errors[0].to_string().contains("s3cr3t"), "{}", errors[0]);
    }

    #[test]
    fn frames_listen_needs_tls_and_tokens_and_never_prints_them() {
        let (config, errors, warnings) = relay_warnings(
            "[Relay]\ntls_cert = c.pem\ntls_key = k.pem\nframes_listen = 0.0.0.0:5999\ntokens = tok-one, tok-two\nclient_ca = ca.pem\n",
        );
        assert!(errors.is_empty() && warnings.is_empty(), "{errors:?} {warnings:?}");
        let frames = config.frames.clone().expect("frames");
        assert_eq!(frames.tokens, vec!["tok-one".to_string(), "tok-two".to_string()]);
        assert_eq!(frames.client_ca, Some(PathBuf::from("./ca.pem")));
        assert!(config.doors.frames.tls);
        assert!(!format!("{config:?}").contains("tok-"), "{config:?}");
        let (_, errors, _) = relay_warnings("[Relay]\nframes_listen = 5999\n");
        let keys: Vec<_> = errors.iter().filter_map(|e| e.key.as_deref()).collect();
        assert_eq!(keys, vec!["tokens", "frames_listen"]);
    }

    #[test]
    fn frames_tls_false_is_plain_tcp_without_certificates_and_warned_about_beyond_loopback() {
        let (config, errors, warnings) =
            relay_warnings("[Relay]\nframes_listen = 5999\nframes_tls = False\ntokens = t\n");
        assert!(errors.is_empty() && warnings.is_empty(), "{errors:?} {warnings:?}");
        assert!(config.frames.is_some() && !config.doors.frames.tls);
        let (_, errors, warnings) =
            relay_warnings("[Relay]\nframes_listen = 0.0.0.0:5999\nframes_tls = no\ntokens = t\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert!(warnings.iter().any(|w| w.contains("frames_listen")), "{warnings:?}");
        // Regression: client_ca was silently ignored in plain TCP (and the start-up line still
        // said "client certificates required").
        let (_, errors, _) =
            relay_warnings("[Relay]\nframes_listen = 5999\nframes_tls = False\ntokens = t\nclient_ca = ca.pem\n");
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(errors.iter().any(|e| e.contains("client_ca") && e.contains("frames_tls = False")), "{errors:?}");
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
