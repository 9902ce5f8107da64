//! Loading and validating `config.ini`, the old PuyPuy's file, read unchanged.
//!
//! The file is Python ConfigParser style: `key: value` or `key = value`, spaces around the separator,
//! `#`/`;` comment lines, backslashes and quotes kept verbatim, indented continuation lines. Every
//! process validates the *whole* file at start, so an operator learns about a broken `[TSDB]` even
//! from the collector, and every problem is reported at once with file, section, key, the bad value
//! and what was expected. Every optional key has a default, listed in README.md.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::{Ini, ParseOption};

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Empty for problems with the file as a whole.
    pub section: String,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `FILE: [SECTION] KEY: MESSAGE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if !self.section.is_empty() {
            write!(f, "[{}]", self.section)?;
            if let Some(k) = &self.key {
                write!(f, " {k}")?;
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one file; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

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

/// The system checks of the collector, in the order they run.
pub const SYSTEM_CHECKS: &[&str] =
    &["cpustats", "memory", "load_average", "network_bytes", "disks", "tcpconn", "ipconntrack", "openfiles"];

#[derive(Debug, Clone)]
pub struct SelfConfig {
    pub check_period_seconds: u64,
    pub log_file: PathBuf,
    pub pid_file: PathBuf,
    pub cluster_name: String,
    pub host_group: String,
    pub location: String,
    pub tmpdir: PathBuf,
    pub max_cache: usize,
    pub debug_log: bool,
    pub run_user: Option<String>,
    pub shorthostname: bool,
    pub socket: PathBuf,
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub system_checks: Vec<String>,
    pub batch_points: usize,
    pub batch_ms: u64,
    pub producer_queue: usize,
    pub scripts_dir: PathBuf,
    /// `None`: the period.
    pub script_timeout_seconds: Option<u64>,
    pub script_concurrency: usize,
    pub script_max_output_bytes: usize,
    pub max_cache_bytes: u64,
    /// `cache_drop: newest` keeps the oldest data when the spool is full.
    pub cache_drop_newest: bool,
    pub rejected_max_files: usize,
    pub self_metrics: bool,
}

#[derive(Clone)]
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

/// `[Relay]`: the shipper's inputs for other programs.
#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub self_config: SelfConfig,
    pub tsdb: Tsdb,
    /// `[Tags]`: extra tags for every point, in file order.
    pub tags: Vec<(String, String)>,
    pub relay: RelayConfig,
    /// Service checks configured by their sections.
    pub services: Vec<crate::services::ServiceConfig>,
    /// `[JMX]` / `[JMX:NAME]` targets and the bridge's JVM settings.
    pub jmx: crate::jmx::JmxConfig,
    /// Lines worth a warning at start (unknown keys, deprecated ones); not errors.
    pub warnings: Vec<String>,
    /// The raw file, for the sections other processes read (service checks, JMX targets, …).
    pub ini: Ini,
}

const SELF_KEYS: &[&str] = &[
    "check_period_seconds",
    "log_file",
    "pid_file",
    "cluster_name",
    "host_group",
    "location",
    "tmpdir",
    "max_cache",
    "debug_log",
    "run_user",
    "puypuy_user",
    "shorthostname",
    "socket",
    "proc_root",
    "sys_root",
    "system_checks",
    "batch_points",
    "batch_ms",
    "producer_queue",
    "scripts_dir",
    "script_timeout_seconds",
    "script_concurrency",
    "script_max_output_bytes",
    "max_cache_bytes",
    "cache_drop",
    "rejected_max_files",
    "self_metrics",
];

const TSDB_KEYS: &[&str] = &[
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

/// Parses text the way Python's `ConfigParser(interpolation=None)` did.
pub fn parse_ini(text: &str) -> Result<Ini, String> {
    let options = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: true,
        ..Default::default()
    };
    Ini::load_from_str_opt(text, options).map_err(|e| e.to_string())
}

/// Reads one section's keys and records problems, so that every problem is reported, not the first.
pub struct SectionReader<'a> {
    pub file: &'a Path,
    pub section: &'a str,
    pub props: Option<&'a ini::Properties>,
    pub errors: &'a mut Vec<ConfigError>,
}

impl<'a> SectionReader<'a> {
    pub fn new(file: &'a Path, ini: &'a Ini, section: &'a str, errors: &'a mut Vec<ConfigError>) -> Self {
        SectionReader { file, section, props: ini.section(Some(section)), errors }
    }

    pub fn error(&mut self, key: Option<&str>, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            section: self.section.to_string(),
            key: key.map(str::to_string),
            message,
        });
    }

    /// The trimmed value, `None` when the key is absent.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.props.and_then(|p| p.get(key)).map(str::trim)
    }

    pub fn string(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    /// A secret: `KEY` itself, or read from the file named by `KEY_file` (relative to the config's
    /// folder; one trailing newline removed), or from the environment variable named by `KEY_env`.
    pub fn secret(&mut self, key: &str, base: &Path) -> Option<String> {
        let file_key = format!("{key}_file");
        let env_key = format!("{key}_env");
        if let Some(path) = self.get(&file_key).filter(|p| !p.is_empty()) {
            let full = resolve(base, path);
            return match std::fs::read_to_string(&full) {
                Ok(text) => Some(text.strip_suffix('\n').unwrap_or(&text).trim_end_matches('\r').to_string()),
                Err(e) => {
                    self.error(Some(&file_key), format!("cannot read {}: {e}", full.display()));
                    None
                }
            };
        }
        if let Some(var) = self.get(&env_key).filter(|v| !v.is_empty()) {
            return match std::env::var(var) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.error(Some(&env_key), format!("environment variable {var} is not set"));
                    None
                }
            };
        }
        self.get(key).map(str::to_string)
    }

    pub fn number<T: std::str::FromStr>(&mut self, key: &str, default: T, min: T) -> T
    where
        T: PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.get(key) else { return default };
        match raw.parse::<T>() {
            Ok(v) if v >= min => v,
            Ok(_) => {
                self.error(Some(key), format!("{raw:?} is too small (expected a whole number of at least {min})"));
                default
            }
            Err(_) => {
                self.error(Some(key), format!("{raw:?} is not a number (expected a whole number of at least {min})"));
                default
            }
        }
    }

    pub fn boolean(&mut self, key: &str, default: bool) -> bool {
        let Some(raw) = self.get(key) else { return default };
        match parse_bool(raw) {
            Some(b) => b,
            None => {
                self.error(Some(key), format!("{raw:?} is not a boolean (expected True/False, yes/no, on/off or 1/0)"));
                default
            }
        }
    }
}

/// ConfigParser's `getboolean`, any case.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Resolves a path from the config: relative paths are relative to the config file's folder.
pub fn resolve(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl Config {
    /// Loads and validates the whole file. Creates `tmpdir` when it is missing.
    pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
        let err = |message: String| {
            ConfigErrors(vec![ConfigError { file: file.to_path_buf(), section: String::new(), key: None, message }])
        };
        let text = std::fs::read_to_string(file).map_err(|e| err(format!("cannot read the config file: {e}")))?;
        // Paths in the config are relative to its folder, whatever the working directory later.
        let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let file = absolute.as_path();
        let base = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let mut config = Config::from_text(file, &base, &text)?;
        // A password in a file others can read is worth a warning.
        let has_password = config
            .ini
            .iter()
            .any(|(_, props)| props.iter().any(|(k, v)| (k == "pass" || k == "jmx_pass") && !v.trim().is_empty()));
        if has_password {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(file) {
                if meta.permissions().mode() & 0o077 != 0 {
                    config.warnings.push(format!(
                        "holds a password and is readable by group or others (mode {:o}): chmod 600 it, or use pass_file",
                        meta.permissions().mode() & 0o777
                    ));
                }
            }
        }
        Ok(config)
    }

    pub fn from_text(file: &Path, base: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let ini = parse_ini(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.to_path_buf(),
                section: String::new(),
                key: None,
                message: format!("not a valid ini file: {e}"),
            }])
        })?;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        check_duplicates(file, &ini, &mut errors);
        let self_config = read_self_config(file, base, &ini, &mut errors, &mut warnings);
        let tsdb = read_tsdb(file, base, &ini, &mut errors, &mut warnings);
        let tags = read_tags(file, &ini, &mut errors);
        let relay = read_relay(file, &ini, &mut errors, &mut warnings);
        let default_timeout = Duration::from_secs(self_config.check_period_seconds.min(5));
        let services = crate::services::read_services(file, base, &ini, default_timeout, &mut errors, &mut warnings);
        let jmx = crate::jmx::read_jmx(file, base, &ini, default_timeout, &mut errors, &mut warnings);
        if errors.is_empty() {
            check_tmpdir(file, &self_config.tmpdir, &mut errors);
        }
        match (errors.is_empty(), tsdb) {
            (true, Some(tsdb)) => {
                Ok(Config { file: file.to_path_buf(), self_config, tsdb, tags, relay, services, jmx, warnings, ini })
            }
            _ => Err(ConfigErrors(errors)),
        }
    }

    pub fn period(&self) -> Duration {
        Duration::from_secs(self.self_config.check_period_seconds)
    }
}

/// Python's ConfigParser refuses a key given twice in a section, and a section given twice; so do
/// we, rather than silently using one of the values.
fn check_duplicates(file: &Path, ini: &Ini, errors: &mut Vec<ConfigError>) {
    let mut error = |section: &str, key: Option<&str>, message: &str| {
        errors.push(ConfigError {
            file: file.to_path_buf(),
            section: section.to_string(),
            key: key.map(str::to_string),
            message: message.to_string(),
        })
    };
    let mut seen_sections = HashSet::new();
    for name in ini.sections().flatten() {
        if !seen_sections.insert(name) {
            continue;
        }
        let all: Vec<&ini::Properties> = ini.section_all(Some(name)).collect();
        if all.len() > 1 {
            error(name, None, "section given more than once (merge them into one)");
        }
        for props in all {
            let mut seen_keys = HashSet::new();
            for (key, _) in props.iter() {
                if seen_keys.insert(key) && props.get_all(key).count() > 1 {
                    error(name, Some(key), "given more than once (keep one)");
                }
            }
        }
    }
}

fn warn_unknown_keys(ini: &Ini, section: &str, known: &[&str], warnings: &mut Vec<String>) {
    if let Some(props) = ini.section(Some(section)) {
        for (key, _) in props.iter() {
            if !known.contains(&key) {
                warnings.push(format!("[{section}] {key}: unknown key, ignored"));
            }
        }
    }
}

fn read_self_config(
    file: &Path,
    base: &Path,
    ini: &Ini,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> SelfConfig {
    warn_unknown_keys(ini, "SelfConfig", SELF_KEYS, warnings);
    let mut r = SectionReader::new(file, ini, "SelfConfig", errors);
    let tmpdir = resolve(base, &r.string("tmpdir", "/tmp/puypuy"));
    let path_or = |r: &SectionReader, key: &str, default: PathBuf| match r.get(key) {
        Some(v) if !v.is_empty() => resolve(base, v),
        _ => default,
    };
    let log_file = path_or(&r, "log_file", tmpdir.join("puypuy.log"));
    let pid_file = path_or(&r, "pid_file", tmpdir.join("puypuy.pid"));
    let socket = path_or(&r, "socket", tmpdir.join("shipper.sock"));
    let proc_root = path_or(&r, "proc_root", PathBuf::from("/proc"));
    let sys_root = path_or(&r, "sys_root", PathBuf::from("/sys"));
    let run_user = r.get("run_user").or(r.get("puypuy_user")).filter(|u| !u.is_empty()).map(str::to_string);
    let system_checks = match r.get("system_checks") {
        None => SYSTEM_CHECKS.iter().map(|s| s.to_string()).collect(),
        Some(raw) => {
            let mut list = Vec::new();
            for name in raw.split([',', ' ', '\t', '\n']).filter(|s| !s.is_empty()) {
                if name == "all" {
                    list.extend(SYSTEM_CHECKS.iter().map(|s| s.to_string()));
                } else if name == "none" {
                } else if SYSTEM_CHECKS.contains(&name) {
                    list.push(name.to_string());
                } else {
                    r.error(
                        Some("system_checks"),
                        format!(
                            "unknown check {name:?} (expected all, none or a list of: {})",
                            SYSTEM_CHECKS.join(", ")
                        ),
                    );
                }
            }
            let mut seen = HashSet::new();
            list.retain(|c| seen.insert(c.clone()));
            list
        }
    };
    let period = r.number("check_period_seconds", 5u64, 1);
    let max_cache = r.number("max_cache", 50_000usize, 1);
    let batch_points = r.number("batch_points", 5_000usize, 1);
    let batch_ms = r.number("batch_ms", 20u64, 0);
    let producer_queue = r.number("producer_queue", 10_000usize, 1);
    let scripts_dir = path_or(&r, "scripts_dir", base.join("scripts_enabled"));
    let script_timeout_seconds = r.get("script_timeout_seconds").map(|_| r.number("script_timeout_seconds", 5u64, 1));
    let script_concurrency = r.number("script_concurrency", 16usize, 1);
    let script_max_output_bytes = r.number("script_max_output_bytes", 1024 * 1024usize, 1);
    let max_cache_bytes = r.number("max_cache_bytes", 256 * 1024 * 1024u64, 1024);
    let cache_drop_newest = match r.get("cache_drop") {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            r.error(Some("cache_drop"), format!("{other:?} is neither oldest nor newest"));
            false
        }
    };
    let rejected_max_files = r.number("rejected_max_files", 100usize, 0);
    let self_metrics = r.boolean("self_metrics", true);
    let debug_log = r.boolean("debug_log", false);
    let shorthostname = r.boolean("shorthostname", false);
    SelfConfig {
        check_period_seconds: period,
        log_file,
        pid_file,
        cluster_name: r.string("cluster_name", ""),
        host_group: r.string("host_group", ""),
        location: r.string("location", ""),
        tmpdir,
        max_cache,
        debug_log,
        run_user,
        shorthostname,
        socket,
        proc_root,
        sys_root,
        system_checks,
        batch_points,
        batch_ms,
        producer_queue,
        scripts_dir,
        script_timeout_seconds,
        script_concurrency,
        script_max_output_bytes,
        max_cache_bytes,
        cache_drop_newest,
        rejected_max_files,
        self_metrics,
    }
}

fn read_tsdb(
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

fn valid_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn read_tags(file: &Path, ini: &Ini, errors: &mut Vec<ConfigError>) -> Vec<(String, String)> {
    let mut r = SectionReader::new(file, ini, "Tags", errors);
    let Some(props) = r.props else { return Vec::new() };
    let mut tags = Vec::new();
    for (key, value) in props.iter() {
        if ["host", "type"].contains(&key) {
            r.error(Some(key), "is set by PuyPuy itself and cannot be overridden here".into());
            continue;
        }
        tags.push((key.to_string(), value.trim().to_string()));
    }
    tags
}

const RELAY_KEYS: &[&str] = &[
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

fn read_relay(file: &Path, ini: &Ini, errors: &mut Vec<ConfigError>, warnings: &mut Vec<String>) -> RelayConfig {
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

fn check_tmpdir(file: &Path, tmpdir: &Path, errors: &mut Vec<ConfigError>) {
    let mut fail = |message: String| {
        errors.push(ConfigError {
            file: file.to_path_buf(),
            section: "SelfConfig".into(),
            key: Some("tmpdir".into()),
            message,
        })
    };
    if let Err(e) = std::fs::create_dir_all(tmpdir) {
        fail(format!("{:?} cannot be created: {e} (expected a writable directory)", tmpdir.display().to_string()));
        return;
    }
    let probe = tmpdir.join(format!(".write-test-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => {
            fail(format!("{:?} is not writable: {e} (expected a writable directory)", tmpdir.display().to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let text = text.replace("TMP", &dir.path().join("spool").display().to_string());
        let r = Config::from_text(Path::new("/etc/puypuy/config.ini"), dir.path(), &text);
        drop(dir);
        r
    }

    const GOOD: &str = "[SelfConfig]\ncheck_period_seconds : 7\ntmpdir= TMP\ncluster_name: netangels\n\n[TSDB]\naddress = http://127.0.0.1:8086\nauth = False\nuser = netangels\npass = bo\\lo\"lo\"\ndatabase = test\ntsdtype = InfluxDB\n# a comment\n; another\n";

    #[test]
    fn reads_the_old_file_with_both_separators() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.self_config.check_period_seconds, 7);
        assert_eq!(c.self_config.cluster_name, "netangels");
        assert_eq!(c.tsdb.backend, Backend::InfluxDb);
        assert_eq!(c.tsdb.pass.as_deref(), Some("bo\\lo\"lo\""));
        assert_eq!(c.tsdb.datapoints, "/write");
        assert_eq!(c.self_config.max_cache, 50_000);
        assert_eq!(c.self_config.system_checks.len(), SYSTEM_CHECKS.len());
    }

    #[test]
    fn missing_tsdb_section_is_named() {
        let e = load("[SelfConfig]\ntmpdir: TMP\n").unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(
            e.0[0].to_string(),
            "/etc/puypuy/config.ini: [TSDB]: section missing (it names the backend: tsdtype and address)"
        );
    }

    #[test]
    fn every_problem_is_reported_with_section_key_and_value() {
        let e = load("[SelfConfig]\ncheck_period_seconds: five\nmax_cache: -1\ntmpdir: TMP\n[TSDB]\ntsdtype: Influx\n")
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("[SelfConfig] check_period_seconds: \"five\" is not a number"), "{text}");
        assert!(text.contains("[SelfConfig] max_cache: \"-1\" is not a number"), "{text}");
        assert!(
            text.contains(
                "[TSDB] tsdtype: unknown backend \"Influx\" (expected OpenTSDB, KairosDB, InfluxDB, Carbon or File)"
            ),
            "{text}"
        );
    }

    #[test]
    fn user_and_pass_may_be_absent_without_auth() {
        let c = load("[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: OpenTSDB\naddress: http://h:4242\n").unwrap();
        assert_eq!(c.tsdb.datapoints, "/api/put");
        let e = load("[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: OpenTSDB\naddress: http://h:4242\nauth: True\n")
            .unwrap_err();
        assert!(e.to_string().contains("[TSDB] user: missing (needed because auth is true)"));
    }

    #[test]
    fn carbon_address_must_be_host_port() {
        let e = load("[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: Carbon\naddress: http://h:2004\n").unwrap_err();
        assert!(e.to_string().contains("[TSDB] address: \"http://h:2004\" is not host:port"), "{e}");
        assert!(load("[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: Carbon\naddress: localhost:2004\n").is_ok());
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[SelfConfig]\ntmpdir: spool\nlog_file: logs/a.log\n[TSDB]\ntsdtype: File\npath: out.txt\n";
        let c = Config::from_text(&dir.path().join("config.ini"), dir.path(), text).unwrap();
        assert_eq!(c.self_config.tmpdir, dir.path().join("spool"));
        assert!(dir.path().join("spool").is_dir());
        assert_eq!(c.self_config.log_file, dir.path().join("logs/a.log"));
        assert_eq!(c.self_config.socket, dir.path().join("spool/shipper.sock"));
        assert_eq!(c.tsdb.path, Some(dir.path().join("out.txt")));
    }

    #[test]
    fn tags_section_adds_tags_and_cannot_override_host() {
        let c =
            load("[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: File\npath: /tmp/x\n[Tags]\ndatacenter: eu-1\n").unwrap();
        assert_eq!(c.tags, vec![("datacenter".to_string(), "eu-1".to_string())]);
        let e = load("[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: File\npath: /tmp/x\n[Tags]\nhost: x\n").unwrap_err();
        assert!(e.to_string().contains("[Tags] host: is set by PuyPuy itself"));
    }

    #[test]
    fn duplicate_keys_are_refused_as_configparser_does() {
        let e = load("[SelfConfig]\ntmpdir: TMP\ncheck_period_seconds: 1\ncheck_period_seconds = 2\n[TSDB]\ntsdtype: File\npath: /tmp/x\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.to_string().ends_with("[SelfConfig] check_period_seconds: given more than once (keep one)"), "{e}");
        let e = load("[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: File\npath: /tmp/x\n[SelfConfig]\nlocation: x\n")
            .unwrap_err();
        assert!(e.to_string().contains("[SelfConfig]: section given more than once"), "{e}");
    }

    #[test]
    fn passwords_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("influx.pass"), "s3cret\n").unwrap();
        std::env::set_var("PUYPUY_TEST_REDIS_PASS", "fromenv");
        let text = format!(
            "[SelfConfig]\ntmpdir: {}\n[TSDB]\ntsdtype: InfluxDB\naddress: http://h:8086\ndatabase: d\nauth: True\nuser: u\npass_file: influx.pass\n[Redis]\npass_env: PUYPUY_TEST_REDIS_PASS\n",
            dir.path().join("spool").display()
        );
        let c = Config::from_text(&dir.path().join("config.ini"), dir.path(), &text).unwrap();
        assert_eq!(c.tsdb.pass.as_deref(), Some("s3cret"));
        assert_eq!(c.services[0].pass, "fromenv");
        let bad =
            text.replace("influx.pass", "missing.pass").replace("PUYPUY_TEST_REDIS_PASS", "PUYPUY_TEST_UNSET_VAR");
        let e = Config::from_text(&dir.path().join("config.ini"), dir.path(), &bad).unwrap_err().to_string();
        assert!(e.contains("[TSDB] pass_file: cannot read"), "{e}");
        assert!(e.contains("[Redis] pass_env: environment variable PUYPUY_TEST_UNSET_VAR is not set"), "{e}");
    }

    #[test]
    fn unknown_system_check_is_an_error() {
        let e = load("[SelfConfig]\ntmpdir: TMP\nsystem_checks: memory, cpu\n[TSDB]\ntsdtype: File\npath: /tmp/x\n")
            .unwrap_err();
        assert!(e.to_string().contains("[SelfConfig] system_checks: unknown check \"cpu\""), "{e}");
    }
}
