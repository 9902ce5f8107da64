//! `[TSDB]`: the backend the shipper writes to, its address, credentials, TLS and timeouts, and
//! `[WebServer]`: where `tsdtype: Prometheus` serves its `/metrics` page and who may read it.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::Ini;

use super::outputs::{read_routing, split_addresses, Routing, ROUTING_KEYS};
use super::reader::{resolve, warn_unknown_keys, ConfigError, SectionReader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    OpenTsdb,
    KairosDb,
    InfluxDb,
    Carbon,
    /// InfluxDB line protocol appended to a local file (`path:`), for trying PuyPuy with no server.
    File,
    /// A `/metrics` page served from `[WebServer]` for a Prometheus server to scrape.
    Prometheus,
    /// Prometheus remote write 1.0 (protobuf + snappy) to `address` + `datapoints`.
    PrometheusRemoteWrite,
    /// InfluxDB 2 line protocol to `/api/v2/write?org=…&bucket=…` with a token.
    InfluxDb2,
    /// Frames to a relay PuyPuy's `frames_listen` over TLS, acknowledged end to end.
    PuyPuy,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::OpenTsdb => "OpenTSDB",
            Backend::KairosDb => "KairosDB",
            Backend::InfluxDb => "InfluxDB",
            Backend::Carbon => "Carbon",
            Backend::File => "File",
            Backend::Prometheus => "Prometheus",
            Backend::PrometheusRemoteWrite => "PrometheusRemoteWrite",
            Backend::InfluxDb2 => "InfluxDB2",
            Backend::PuyPuy => "PuyPuy",
        }
    }

    fn parse(s: &str) -> Option<Backend> {
        // The old agent compared these exactly; accept any case, as operators type them both ways.
        match s.to_ascii_lowercase().as_str() {
            "opentsdb" => Some(Backend::OpenTsdb),
            "kairosdb" => Some(Backend::KairosDb),
            "influxdb" => Some(Backend::InfluxDb),
            "carbon" => Some(Backend::Carbon),
            "file" => Some(Backend::File),
            "prometheus" => Some(Backend::Prometheus),
            "prometheusremotewrite" => Some(Backend::PrometheusRemoteWrite),
            "influxdb2" => Some(Backend::InfluxDb2),
            "puypuy" => Some(Backend::PuyPuy),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct Tsdb {
    /// `NAME` of `[TSDB:NAME]`; empty for `[TSDB]`.
    pub name: String,
    pub backend: Backend,
    /// `http://host:port` for the REST backends, `host:port` for Carbon; empty for File. The first
    /// of the list when `address` lists several (all are in `routing.addresses`).
    pub address: String,
    pub datapoints: String,
    pub auth: bool,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub database: Option<String>,
    pub path: Option<PathBuf>,
    pub gzip: bool,
    /// PEM file of the CA(s) to trust for an https:// backend instead of the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Certificate verification off (unsafe: anyone on the path can read and change the data).
    pub insecure: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// InfluxDB 2: `organization` and `bucket`.
    pub organization: Option<String>,
    pub bucket: Option<String>,
    /// `token` (or `token_file`, `token_env`): `Authorization: Token …` for InfluxDB 2,
    /// `Authorization: Bearer …` for remote write.
    pub token: Option<String>,
    /// `cert_file` and `key_file`: the client certificate `tsdtype: PuyPuy` presents (PEM).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `tls` (`tsdtype: PuyPuy` only, default true): TLS to the relay; false is plain TCP, for a
    /// relay whose `frames_listen` is plain (on loopback or a trusted network).
    pub tls: bool,
    /// `[WebServer]`, read for `tsdtype: Prometheus`.
    pub web: WebServer,
    /// The destinations listed in `address` and how they are used (ring, balance).
    pub routing: Routing,
}

/// `[WebServer]`: the `/metrics` page of `tsdtype: Prometheus`.
#[derive(Clone, PartialEq)]
pub struct WebServer {
    /// `webaddress`, `host:port` to listen on.
    pub address: String,
    /// `allowedip`: the clients served; empty serves everyone who can reach `address`.
    pub allowed: Vec<IpRange>,
    /// `apikey`: when set, required as `Authorization: Bearer KEY` or `?apikey=KEY`.
    pub apikey: Option<String>,
    /// `staleness_seconds`: a series with no point for this long leaves the page.
    pub staleness: Duration,
}

impl fmt::Debug for WebServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the API key.
        f.debug_struct("WebServer")
            .field("address", &self.address)
            .field("allowed", &self.allowed)
            .field("apikey", &self.apikey.as_ref().map(|_| "…"))
            .field("staleness", &self.staleness)
            .finish()
    }
}

impl Default for WebServer {
    fn default() -> WebServer {
        WebServer {
            address: "127.0.0.1:9898".into(),
            allowed: Vec::new(),
            apikey: None,
            staleness: Duration::from_secs(300),
        }
    }
}

/// One `allowedip` entry: an address (`10.0.0.7`) or a network (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(s: &str) -> Option<IpRange> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        (prefix <= bits).then_some(IpRange { network: addr, prefix })
    }

    /// Whether `ip` is in the range; an IPv4 client seen as `::ffff:a.b.c.d` counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let (a, b, bits) = match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)), u128::from(u32::from(i)), 32u32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

impl fmt::Debug for Tsdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("Tsdb")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("address", &self.address)
            .field("datapoints", &self.datapoints)
            .field("auth", &self.auth)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("path", &self.path)
            .field("organization", &self.organization)
            .field("bucket", &self.bucket)
            .field("tls", &self.tls)
            .field("web", &self.web)
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

pub const TSDB_KEYS: &[&str] = &[
    "tsdtype",
    "address",
    "datapoints",
    "user",
    "pass",
    "pass_file",
    "pass_env",
    "auth",
    "database",
    "path",
    "gzip",
    "ca_file",
    "insecure",
    "connect_timeout_seconds",
    "timeout_seconds",
    "organization",
    "bucket",
    "token",
    "token_file",
    "token_env",
    "cert_file",
    "key_file",
    "tls",
];

pub const WEB_SERVER_KEYS: &[&str] =
    &["webaddress", "allowedip", "apikey", "apikey_file", "apikey_env", "staleness_seconds"];

const BACKENDS: &str =
    "OpenTSDB, KairosDB, InfluxDB, InfluxDB2, Carbon, Prometheus, PrometheusRemoteWrite, PuyPuy or File";

pub fn read_tsdb(
    file: &Path,
    base: &Path,
    ini: &Ini,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<Tsdb> {
    read_tsdb_section(file, base, ini, "TSDB", errors, warnings)
}

/// `[TSDB]` or an output `[TSDB:NAME]`: the same keys, each a full backend.
pub fn read_tsdb_section(
    file: &Path,
    base: &Path,
    ini: &Ini,
    section: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<Tsdb> {
    // [WebServer] is reported once, with [TSDB].
    let (mut web_errors, mut web_warnings) = (Vec::new(), Vec::new());
    let web = read_web_server(file, base, ini, &mut web_errors, &mut web_warnings);
    if section == "TSDB" {
        errors.extend(web_errors);
        warnings.extend(web_warnings);
    }
    let mut r = SectionReader::new(file, ini, section, errors);
    if r.props.is_none() {
        r.error(None, "section missing (it names the backend: tsdtype and address)".into());
        return None;
    }
    let known: Vec<&str> = TSDB_KEYS.iter().chain(ROUTING_KEYS).copied().collect();
    warn_unknown_keys(ini, section, &known, warnings);
    let backend = match r.get("tsdtype") {
        None | Some("") => {
            r.error(Some("tsdtype"), format!("missing (expected {BACKENDS})"));
            None
        }
        Some(raw) => {
            let b = Backend::parse(raw);
            if b.is_none() {
                r.error(Some("tsdtype"), format!("unknown backend {raw:?} (expected {BACKENDS})"));
            }
            b
        }
    };
    let auth = r.boolean("auth", false);
    let gzip = r.boolean("gzip", true);
    let insecure = r.boolean("insecure", false);
    let ca_file = r.pem_file("ca_file", base);
    let connect_timeout = r.number("connect_timeout_seconds", 5u64, 1);
    let timeout = r.number("timeout_seconds", 10u64, 1);
    let user = r.get("user").map(str::to_string);
    let pass = r.secret("pass", base);
    let addresses = split_addresses(&r.string("address", ""));
    let address = addresses.first().cloned().unwrap_or_default();
    let token = r.secret("token", base).filter(|t| !t.is_empty());
    let organization = r.get("organization").filter(|v| !v.is_empty()).map(str::to_string);
    let bucket = r.get("bucket").filter(|v| !v.is_empty()).map(str::to_string);
    let file = |r: &mut SectionReader, key: &str| r.get(key).filter(|v| !v.is_empty()).map(|v| resolve(base, v));
    let client_cert = match (file(&mut r, "cert_file"), file(&mut r, "key_file")) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            r.error(Some("key_file"), "missing (cert_file is set; the client certificate needs its key)".into());
            None
        }
        (None, Some(_)) => {
            r.error(Some("cert_file"), "missing (key_file is set; it goes with a client certificate)".into());
            None
        }
    };
    let tls = r.boolean("tls", true);
    let backend = backend?;
    if backend != Backend::PuyPuy && r.get("tls").is_some() {
        r.error(
            Some("tls"),
            "only for tsdtype PuyPuy (an HTTP backend speaks TLS when its address is https://)".into(),
        );
    }
    if backend == Backend::PuyPuy && !tls {
        // Each of these only means something over TLS: set, it says the operator expects TLS.
        let set = |r: &SectionReader, key: &str| r.get(key).is_some_and(|v| !v.is_empty());
        for key in ["ca_file", "cert_file", "key_file", "insecure"] {
            if set(&r, key) {
                r.error(Some(key), "has no use with tls = False (remove it, or set tls = True)".into());
            }
        }
        let loopback = |a: &str| {
            let host = host_of(a);
            host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        };
        if let Some(a) = addresses.iter().find(|a| !loopback(a)) {
            warnings.push(format!(
                "[{section}] tls = False: the token and the frames travel to {a} in plain text (keep it to loopback or a trusted network)"
            ));
        }
    }
    if auth && !matches!(backend, Backend::File | Backend::Carbon | Backend::Prometheus) {
        if user.as_deref().unwrap_or("").is_empty() {
            r.error(Some("user"), "missing (needed because auth is true)".into());
        }
        if pass.is_none() {
            r.error(Some("pass"), "missing (needed because auth is true)".into());
        }
    }
    let mut database = None;
    let mut path = None;
    match backend {
        Backend::Prometheus => {}
        Backend::File => match r.get("path") {
            Some(p) if !p.is_empty() => path = Some(resolve(base, p)),
            _ => r.error(Some("path"), "missing (the File backend needs the file to write to)".into()),
        },
        Backend::Carbon => {
            if address.is_empty() {
                r.error(
                    Some("address"),
                    "missing (expected host:port of carbon's pickle receiver, e.g. localhost:2004)".into(),
                );
            }
            // Each destination is checked by read_routing (host:port[:instance]).
        }
        Backend::PuyPuy => {
            if address.is_empty() {
                r.error(Some("address"), "missing (expected the relay's frames_listen, host:port)".into());
            }
            for a in &addresses {
                if !valid_host_port(a) {
                    r.error(Some("address"), format!("{a:?} is not host:port (expected e.g. relay.example:5999)"));
                }
            }
            if token.is_none() {
                r.error(Some("token"), "missing (the relay's token: token, token_file or token_env)".into());
            }
        }
        Backend::OpenTsdb
        | Backend::KairosDb
        | Backend::InfluxDb
        | Backend::InfluxDb2
        | Backend::PrometheusRemoteWrite => {
            if address.is_empty() {
                r.error(Some("address"), "missing (expected a URL such as http://localhost:4242)".into());
            }
            for address in &addresses {
                if let Some(rest) = address.strip_prefix("http://") {
                    if rest.is_empty() || rest.contains('@') {
                        r.error(
                            Some("address"),
                            format!("{address:?} is not a usable URL (expected http://host:port; put credentials in user and pass)"),
                        );
                    }
                } else if let Some(rest) = address.strip_prefix("https://") {
                    if rest.is_empty() || rest.contains('@') {
                        r.error(
                            Some("address"),
                            format!("{address:?} is not a usable URL (expected https://host:port)"),
                        );
                    }
                } else {
                    r.error(
                        Some("address"),
                        format!("{address:?} is not an http:// URL (expected e.g. http://localhost:8086 or https://…)"),
                    );
                }
            }
            if backend == Backend::InfluxDb {
                match r.get("database") {
                    Some(d) if !d.is_empty() => database = Some(d.to_string()),
                    _ => r.error(Some("database"), "missing (InfluxDB needs the database to write to)".into()),
                }
            }
            if backend == Backend::InfluxDb2 {
                if organization.is_none() {
                    r.error(
                        Some("organization"),
                        "missing (InfluxDB 2 writes into a bucket of an organization)".into(),
                    );
                }
                if bucket.is_none() {
                    r.error(Some("bucket"), "missing (InfluxDB 2 needs the bucket to write to)".into());
                }
                if token.is_none() {
                    r.error(
                        Some("token"),
                        "missing (InfluxDB 2 needs an API token: token, token_file or token_env)".into(),
                    );
                }
            }
        }
    }
    let datapoints = match (r.get("datapoints"), backend) {
        (Some(d), _) if !d.is_empty() => {
            if !d.starts_with('/') {
                r.error(Some("datapoints"), format!("{d:?} is not a path (expected e.g. /api/put)"));
            }
            d.to_string()
        }
        (_, Backend::OpenTsdb) => "/api/put".to_string(),
        (_, Backend::KairosDb) => "/api/v1/datapoints".to_string(),
        (_, Backend::InfluxDb) => "/write".to_string(),
        (_, Backend::InfluxDb2) => "/api/v2/write".to_string(),
        (_, Backend::PrometheusRemoteWrite) => "/api/v1/write".to_string(),
        _ => String::new(),
    };
    let routing = read_routing(&mut r, addresses, backend == Backend::Carbon);
    Some(Tsdb {
        name: section.strip_prefix("TSDB:").unwrap_or_default().to_string(),
        backend,
        address,
        datapoints,
        auth,
        user,
        pass,
        database,
        path,
        gzip,
        ca_file,
        insecure,
        connect_timeout: Duration::from_secs(connect_timeout),
        timeout: Duration::from_secs(timeout),
        organization,
        bucket,
        token,
        client_cert,
        tls,
        web,
        routing,
    })
}

/// `[WebServer]`; every key optional, the section too.
fn read_web_server(
    file: &Path,
    base: &Path,
    ini: &Ini,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> WebServer {
    let mut web = WebServer::default();
    let mut r = SectionReader::new(file, ini, "WebServer", errors);
    if r.props.is_none() {
        return web;
    }
    warn_unknown_keys(ini, "WebServer", WEB_SERVER_KEYS, warnings);
    if let Some(address) = r.get("webaddress").filter(|a| !a.is_empty()) {
        if valid_host_port(address) {
            web.address = address.to_string();
        } else {
            r.error(Some("webaddress"), format!("{address:?} is not host:port (expected e.g. 127.0.0.1:9898)"));
        }
    }
    for entry in r.string("allowedip", "").split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match IpRange::parse(entry) {
            Some(range) => web.allowed.push(range),
            None => r.error(
                Some("allowedip"),
                format!("{entry:?} is not an IP address or network (expected e.g. 127.0.0.1, 10.0.0.0/8)"),
            ),
        }
    }
    web.apikey = r.secret("apikey", base).filter(|k| !k.is_empty());
    web.staleness = Duration::from_secs(r.number("staleness_seconds", 300u64, 1));
    web
}

/// The host of a `host:port` address, without the brackets of an IPv6 literal.
pub fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(h, _)| h).trim_start_matches('[').trim_end_matches(']')
}

pub fn valid_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigErrors};

    fn load(tsdb: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!("[SelfConfig]\ntmpdir = {}\n\n{tsdb}", dir.path().join("spool").display());
        Config::from_text(&dir.path().join("config.ini"), dir.path(), &text)
    }

    fn messages(e: ConfigErrors) -> Vec<String> {
        e.0.iter().map(|e| format!("{} {}", e.key.as_deref().unwrap_or(""), e.message)).collect()
    }

    #[test]
    fn influxdb2_reads_the_old_keys_and_defaults_to_the_v2_write_path() {
        let c = load("[TSDB]\ntsdtype: InfluxDB2\naddress: http://127.0.0.1:8086\norganization: acme\nbucket: metrics\ntoken: t0k\n")
            .expect("config");
        assert_eq!(c.tsdb.backend, Backend::InfluxDb2);
        assert_eq!(c.tsdb.datapoints, "/api/v2/write");
        assert_eq!(
            (c.tsdb.organization.as_deref(), c.tsdb.bucket.as_deref(), c.tsdb.token.as_deref()),
            (Some("acme"), Some("metrics"), Some("t0k"))
        );
        assert!(!format!("{:?}", c.tsdb).contains("t0k"), "the token must not be printed");
    }

    #[test]
    fn influxdb2_without_organization_bucket_or_token_names_each_key() {
        let e = messages(load("[TSDB]\ntsdtype: influxdb2\naddress: http://127.0.0.1:8086\n").expect_err("errors"));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("organization missing") && e[1].starts_with("bucket missing"), "{e:?}");
        assert!(e[2].contains("token, token_file or token_env"), "{e:?}");
    }

    #[test]
    fn puypuy_output_takes_relays_a_token_and_a_client_certificate() {
        let config = load(
            "[TSDB]\ntsdtype = PuyPuy\naddress = relay-a:5999, relay-b:5999\nbalance = round_robin\ntoken = t\ncert_file = c.pem\nkey_file = k.pem\n",
        )
        .expect("valid");
        assert_eq!(config.tsdb.backend, Backend::PuyPuy);
        assert_eq!(config.tsdb.routing.addresses, vec!["relay-a:5999".to_string(), "relay-b:5999".to_string()]);
        assert!(config.tsdb.client_cert.is_some());
        let e = messages(
            load("[TSDB]\ntsdtype = puypuy\naddress = http://relay:5999\ncert_file = c.pem\n").expect_err("bad"),
        );
        assert!(e.iter().any(|m| m.contains("key_file")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("is not host:port")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("token") || m.contains("token: missing")), "{e:?}");
    }

    #[test]
    fn puypuy_output_speaks_tls_unless_tls_is_false_and_then_takes_no_tls_key() {
        let base = "[TSDB]\ntsdtype = PuyPuy\naddress = 127.0.0.1:5999\ntoken = t\n";
        assert!(load(base).expect("valid").tsdb.tls);
        assert!(!load(&format!("{base}tls = False\n")).expect("valid").tsdb.tls);
        let e = messages(
            load(&format!("{base}tls = no\nca_file = ca.pem\ninsecure = yes\ncert_file = c.pem\nkey_file = k.pem\n"))
                .expect_err("TLS keys without TLS"),
        );
        for key in ["ca_file", "cert_file", "key_file", "insecure"] {
            assert!(e.contains(&format!("{key} has no use with tls = False (remove it, or set tls = True)")), "{e:?}");
        }
        let plain = |address: &str| {
            load(&format!("[TSDB]\ntsdtype = PuyPuy\naddress = {address}\ntoken = t\ntls = False\n"))
                .expect("valid")
                .warnings
        };
        assert!(
            plain("127.0.0.1:5999").is_empty() && plain("[::1]:5999").is_empty() && plain("localhost:1").is_empty()
        );
        assert_eq!(
            plain("127.0.0.1:5999, relay.example:5999"),
            ["[TSDB] tls = False: the token and the frames travel to relay.example:5999 in plain text (keep it to loopback or a trusted network)"]
        );
        let e = messages(load(&format!("{base}tls = maybe\n")).expect_err("not a boolean"));
        assert!(e.iter().any(|m| m.starts_with("tls \"maybe\" is not a boolean")), "{e:?}");
        let e = messages(
            load("[TSDB]\ntsdtype = InfluxDB\naddress = http://127.0.0.1:8086\ndatabase = d\ntls = True\n")
                .expect_err("tls on InfluxDB"),
        );
        assert_eq!(e, ["tls only for tsdtype PuyPuy (an HTTP backend speaks TLS when its address is https://)"]);
    }

    #[test]
    fn token_comes_from_a_file_like_pass_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), "from-file\n").expect("write");
        let text = format!(
            "[SelfConfig]\ntmpdir = {}\n[TSDB]\ntsdtype = PrometheusRemoteWrite\naddress = http://127.0.0.1:8428\ntoken_file = token\n",
            dir.path().join("spool").display()
        );
        let c = Config::from_text(&dir.path().join("config.ini"), dir.path(), &text).expect("config");
        assert_eq!(c.tsdb.token.as_deref(), Some("from-file"));
        assert_eq!(c.tsdb.datapoints, "/api/v1/write");
    }

    #[test]
    fn prometheus_reads_web_server_with_the_old_keys_and_defaults() {
        let c = load("[TSDB]\ntsdtype = Prometheus\n").expect("config");
        assert_eq!(c.tsdb.web, WebServer::default());
        assert_eq!(c.tsdb.web.address, "127.0.0.1:9898");
        let c = load(
            "[TSDB]\ntsdtype = Prometheus\n[WebServer]\nwebaddress = 0.0.0.0:9899\nallowedip = 10.0.0.0/8, 127.0.0.1\napikey = k\nstaleness_seconds = 60\n",
        )
        .expect("config");
        let web = &c.tsdb.web;
        assert_eq!(
            (web.address.as_str(), web.apikey.as_deref(), web.staleness),
            ("0.0.0.0:9899", Some("k"), Duration::from_secs(60))
        );
        assert_eq!(web.allowed, [IpRange::parse("10.0.0.0/8"), IpRange::parse("127.0.0.1")].map(|r| r.expect("range")));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn bad_allowedip_and_webaddress_are_errors() {
        let e = messages(
            load("[TSDB]\ntsdtype = Prometheus\n[WebServer]\nwebaddress = http://x\nallowedip = 10.0.0.0/33, nope\n")
                .expect_err("errors"),
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("webaddress \"http://x\" is not host:port"), "{e:?}");
        assert!(e[1].starts_with("allowedip \"10.0.0.0/33\"") && e[2].starts_with("allowedip \"nope\""), "{e:?}");
    }

    #[test]
    fn ip_ranges_match_addresses_and_networks() {
        let r = |s: &str| IpRange::parse(s).expect("range");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(r("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!r("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(r("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(r("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(!r("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(r("fd00::/8").contains(ip("fd12::1")) && !r("fd00::/8").contains(ip("10.0.0.1")));
        assert_eq!(IpRange::parse("::1/129"), None);
    }
}
