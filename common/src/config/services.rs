//! The service checks' sections, read and validated with the rest of the config: `[MySQL]`,
//! `[NginX]`, `[Apache]`, `[Redis]`, `[Memcached]`, `[PhpFPM]`, `[HAProxy]`, each also as
//! `[MySQL:NAME]` for several instances (an `instance` tag carries NAME). A check runs when its
//! section is present. `[Prometheus]` / `[Prometheus:NAME]` scrape a `/metrics` page; they add
//! `token`, `include`/`exclude` (name globs), `ca_file` and `insecure`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::Ini;

use super::reader::{split_instance, warn_unknown_keys, ConfigError, SectionReader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    MySql,
    Nginx,
    Apache,
    Redis,
    Memcached,
    PhpFpm,
    HaProxy,
    Prometheus,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 8] = [
        ServiceKind::MySql,
        ServiceKind::Nginx,
        ServiceKind::Apache,
        ServiceKind::Redis,
        ServiceKind::Memcached,
        ServiceKind::PhpFpm,
        ServiceKind::HaProxy,
        ServiceKind::Prometheus,
    ];

    /// The section name as the old agent wrote it.
    pub fn section(self) -> &'static str {
        match self {
            ServiceKind::MySql => "MySQL",
            ServiceKind::Nginx => "NginX",
            ServiceKind::Apache => "Apache",
            ServiceKind::Redis => "Redis",
            ServiceKind::Memcached => "Memcached",
            ServiceKind::PhpFpm => "PhpFPM",
            ServiceKind::HaProxy => "HAProxy",
            ServiceKind::Prometheus => "Prometheus",
        }
    }

    /// The check type (`type` tag) and metric prefix.
    pub fn check_type(self) -> &'static str {
        match self {
            ServiceKind::MySql => "mysql",
            ServiceKind::Nginx => "nginx",
            ServiceKind::Apache => "apache",
            ServiceKind::Redis => "redis",
            ServiceKind::Memcached => "memcached",
            ServiceKind::PhpFpm => "phpfpm",
            ServiceKind::HaProxy => "haproxy",
            ServiceKind::Prometheus => "prometheus",
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            ServiceKind::MySql => &["host", "port", "user", "pass", "pass_file", "pass_env", "socket", "timeout"],
            ServiceKind::Nginx | ServiceKind::PhpFpm => {
                &["address", "stats", "auth", "user", "pass", "pass_file", "pass_env", "timeout"]
            }
            ServiceKind::Apache => &["url", "auth", "user", "pass", "pass_file", "pass_env", "timeout"],
            ServiceKind::Redis => &["host", "port", "pass", "pass_file", "pass_env", "auth", "timeout"],
            ServiceKind::Memcached => &["host", "port", "timeout"],
            ServiceKind::HaProxy => &["url", "auth", "user", "pass", "pass_file", "pass_env", "upstream", "timeout"],
            ServiceKind::Prometheus => &[
                "url",
                "timeout",
                "auth",
                "user",
                "pass",
                "pass_file",
                "pass_env",
                "token",
                "token_file",
                "token_env",
                "include",
                "exclude",
                "ca_file",
                "insecure",
            ],
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct ServiceConfig {
    pub kind: ServiceKind,
    /// `NAME` of `[MySQL:NAME]`.
    pub instance: Option<String>,
    pub section: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub pass: String,
    pub socket: Option<String>,
    /// The full status URL of the HTTP checks.
    pub url: String,
    pub auth: bool,
    pub upstream: Vec<String>,
    pub timeout: Duration,
    /// `[Prometheus]`: a bearer token for the page.
    pub token: Option<String>,
    /// `[Prometheus]`: name globs (`*`, `?`) of the samples to keep (empty: all) and to drop.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// `[Prometheus]`: PEM file of the CA(s) to trust for an https:// page, and no verification.
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("section", &self.section)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn default_port(kind: ServiceKind) -> u16 {
    match kind {
        ServiceKind::MySql => 3306,
        ServiceKind::Redis => 6379,
        ServiceKind::Memcached => 11211,
        _ => 80,
    }
}

pub fn read_services(
    file: &Path,
    base: &Path,
    ini: &Ini,
    default_timeout: Duration,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Vec<ServiceConfig> {
    let mut out = Vec::new();
    for section in ini.sections().flatten() {
        let (base_name, instance) = split_instance(section);
        let instance = instance.map(str::to_string);
        let Some(kind) = ServiceKind::ALL.into_iter().find(|k| k.section() == base_name) else { continue };
        if out.iter().any(|s: &ServiceConfig| s.section == section) {
            continue;
        }
        warn_unknown_keys(ini, section, kind.keys(), warnings);
        let mut r = SectionReader::new(file, ini, section, errors);
        // The old check_redis module read its password from `[Redis] auth`; elsewhere `auth` is
        // a boolean (send user and pass).
        let redis_auth = (kind == ServiceKind::Redis).then(|| r.get("auth")).flatten();
        let auth = if kind == ServiceKind::Redis { false } else { r.boolean("auth", false) };
        let port = r.number("port", default_port(kind), 1);
        let timeout = Duration::from_secs(r.number("timeout", default_timeout.as_secs().max(1), 1));
        let user = r.string("user", if kind == ServiceKind::MySql { "root" } else { "" });
        let pass = match r.secret("pass", base) {
            Some(p) => p,
            None => redis_auth.filter(|a| !matches!(*a, "" | "True" | "False")).unwrap_or_default().to_string(),
        };
        if auth && user.is_empty() {
            r.error(Some("user"), "missing (needed because auth is true)".into());
        }
        let http = |r: &mut SectionReader, default: &str| -> String {
            let url = r.string("url", default);
            if kind == ServiceKind::Prometheus {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    r.error(Some("url"), format!("{url:?} is not an http:// or https:// URL"));
                }
            } else if !url.starts_with("http://") {
                r.error(Some("url"), format!("{url:?} is not an http:// URL"));
            }
            url
        };
        let url = match kind {
            ServiceKind::Nginx | ServiceKind::PhpFpm => {
                let address = r.string("address", "http://127.0.0.1").trim_end_matches('/').to_string();
                if !address.starts_with("http://") {
                    r.error(
                        Some("address"),
                        format!("{address:?} is not an http:// URL (expected e.g. http://127.0.0.1)"),
                    );
                }
                let default_stats = if kind == ServiceKind::Nginx { "/nginx_status" } else { "/status" };
                let stats = r.string("stats", default_stats);
                let mut url = format!("{address}{stats}");
                if kind == ServiceKind::PhpFpm && !url.contains("json") {
                    url.push_str(if url.contains('?') { "&json" } else { "?json" });
                }
                url
            }
            ServiceKind::Apache => {
                let mut url = http(&mut r, "http://127.0.0.1/server-status?auto");
                if !url.contains("auto") {
                    url.push_str(if url.contains('?') { "&auto" } else { "?auto" });
                }
                url
            }
            ServiceKind::HaProxy => http(&mut r, "http://127.0.0.1:8404/stats;csv"),
            ServiceKind::Prometheus => http(&mut r, "http://127.0.0.1:9100/metrics"),
            _ => String::new(),
        };
        let upstream = r
            .get("upstream")
            .map(|u| u.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let globs = |r: &SectionReader, key: &str| -> Vec<String> {
            r.get(key)
                .map(|u| u.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default()
        };
        let (include, exclude) = (globs(&r, "include"), globs(&r, "exclude"));
        let token = r.secret("token", base).filter(|t| !t.is_empty());
        let insecure = r.boolean("insecure", false);
        let ca_file = r.pem_file("ca_file", base);
        out.push(ServiceConfig {
            kind,
            instance,
            section: section.to_string(),
            host: r.string("host", "127.0.0.1"),
            port,
            user,
            pass,
            socket: r.get("socket").filter(|s| !s.is_empty()).map(str::to_string),
            url,
            auth,
            upstream,
            timeout,
            token,
            include,
            exclude,
            ca_file,
            insecure,
        });
    }
    out
}
