//! `[TSDB]`: the backend the shipper writes to, its address, credentials, TLS and timeouts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::Ini;

use super::reader::{resolve, warn_unknown_keys, ConfigError, SectionReader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    OpenTsdb,
    KairosDb,
    InfluxDb,
    Carbon,
    /// InfluxDB line protocol appended to a local file (`path:`), for trying PuyPuy with no server.
    File,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::OpenTsdb => "OpenTSDB",
            Backend::KairosDb => "KairosDB",
            Backend::InfluxDb => "InfluxDB",
            Backend::Carbon => "Carbon",
            Backend::File => "File",
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
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct Tsdb {
    pub backend: Backend,
    /// `http://host:port` for the REST backends, `host:port` for Carbon; empty for File.
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
}

impl fmt::Debug for Tsdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("Tsdb")
            .field("backend", &self.backend)
            .field("address", &self.address)
            .field("datapoints", &self.datapoints)
            .field("auth", &self.auth)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("path", &self.path)
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
];

pub fn read_tsdb(
    file: &Path,
    base: &Path,
    ini: &Ini,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<Tsdb> {
    let mut r = SectionReader::new(file, ini, "TSDB", errors);
    if r.props.is_none() {
        r.error(None, "section missing (it names the backend: tsdtype and address)".into());
        return None;
    }
    warn_unknown_keys(ini, "TSDB", TSDB_KEYS, warnings);
    let backend = match r.get("tsdtype") {
        None | Some("") => {
            r.error(Some("tsdtype"), "missing (expected OpenTSDB, KairosDB, InfluxDB, Carbon or File)".into());
            None
        }
        Some(raw) => {
            let b = Backend::parse(raw);
            if b.is_none() {
                r.error(
                    Some("tsdtype"),
                    format!("unknown backend {raw:?} (expected OpenTSDB, KairosDB, InfluxDB, Carbon or File)"),
                );
            }
            b
        }
    };
    let auth = r.boolean("auth", false);
    let gzip = r.boolean("gzip", true);
    let insecure = r.boolean("insecure", false);
    let ca_file = match r.get("ca_file").filter(|v| !v.is_empty()) {
        None => None,
        Some(raw) => {
            let path = resolve(base, raw);
            match std::fs::read_to_string(&path) {
                Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => Some(path),
                Ok(_) => {
                    r.error(Some("ca_file"), format!("{} holds no PEM certificate", path.display()));
                    None
                }
                Err(e) => {
                    r.error(Some("ca_file"), format!("cannot read {}: {e}", path.display()));
                    None
                }
            }
        }
    };
    let connect_timeout = r.number("connect_timeout_seconds", 5u64, 1);
    let timeout = r.number("timeout_seconds", 10u64, 1);
    let user = r.get("user").map(str::to_string);
    let pass = r.secret("pass", base);
    let address = r.string("address", "").trim_end_matches('/').to_string();
    let backend = backend?;
    if auth && backend != Backend::File && backend != Backend::Carbon {
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
            } else if !valid_host_port(&address) {
                r.error(
                    Some("address"),
                    format!("{address:?} is not host:port (expected e.g. localhost:2004, no scheme)"),
                );
            }
        }
        Backend::OpenTsdb | Backend::KairosDb | Backend::InfluxDb => {
            if address.is_empty() {
                r.error(Some("address"), "missing (expected a URL such as http://localhost:4242)".into());
            } else if let Some(rest) = address.strip_prefix("http://") {
                if rest.is_empty() || rest.contains('@') {
                    r.error(
                        Some("address"),
                        format!("{address:?} is not a usable URL (expected http://host:port; put credentials in user and pass)"),
                    );
                }
            } else if let Some(rest) = address.strip_prefix("https://") {
                if rest.is_empty() || rest.contains('@') {
                    r.error(Some("address"), format!("{address:?} is not a usable URL (expected https://host:port)"));
                }
            } else {
                r.error(
                    Some("address"),
                    format!("{address:?} is not an http:// URL (expected e.g. http://localhost:8086 or https://…)"),
                );
            }
            if backend == Backend::InfluxDb {
                match r.get("database") {
                    Some(d) if !d.is_empty() => database = Some(d.to_string()),
                    _ => r.error(Some("database"), "missing (InfluxDB needs the database to write to)".into()),
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
        _ => String::new(),
    };
    Some(Tsdb {
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
    })
}

pub fn valid_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}
