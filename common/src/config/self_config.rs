//! `[SelfConfig]`: the agent's own settings (period, folders, spool bounds, batching, scripts),
//! and the list of the collector's system checks, kept here once so that the config and the
//! collector cannot disagree about their names.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ini::Ini;

use super::reader::{did_you_mean, warn_unknown_keys, ConfigError, SectionReader};
use super::resolve;

/// The system checks of the collector, in the order they run. The collector maps each to its
/// code with an exhaustive `match`, so a check added here and not there does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemCheck {
    CpuStats,
    Memory,
    LoadAverage,
    NetworkBytes,
    Disks,
    TcpConn,
    IpConntrack,
    OpenFiles,
}

impl SystemCheck {
    pub const ALL: [SystemCheck; 8] = [
        SystemCheck::CpuStats,
        SystemCheck::Memory,
        SystemCheck::LoadAverage,
        SystemCheck::NetworkBytes,
        SystemCheck::Disks,
        SystemCheck::TcpConn,
        SystemCheck::IpConntrack,
        SystemCheck::OpenFiles,
    ];

    /// The name in `system_checks`, as the old agent's `check_<name>` script.
    pub fn name(self) -> &'static str {
        match self {
            SystemCheck::CpuStats => "cpustats",
            SystemCheck::Memory => "memory",
            SystemCheck::LoadAverage => "load_average",
            SystemCheck::NetworkBytes => "network_bytes",
            SystemCheck::Disks => "disks",
            SystemCheck::TcpConn => "tcpconn",
            SystemCheck::IpConntrack => "ipconntrack",
            SystemCheck::OpenFiles => "openfiles",
        }
    }

    pub fn from_name(name: &str) -> Option<SystemCheck> {
        SystemCheck::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
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
    pub system_checks: Vec<SystemCheck>,
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
    /// The interpreter of the old Python check modules (`python`, default `python3`).
    pub python: String,
    /// The folder of the old Python check modules (`checks_dir`, default `checks_enabled`).
    pub checks_dir: PathBuf,
    /// `python_tls_insecure`: the modules' `lib.commonclient` skips certificate checks (unsafe).
    pub python_tls_insecure: bool,
}

pub const SELF_KEYS: &[&str] = &[
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
    "python",
    "checks_dir",
    "python_tls_insecure",
];

pub fn read_self_config(
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
        None => SystemCheck::ALL.to_vec(),
        Some(raw) => {
            let names: Vec<&str> = SystemCheck::ALL.iter().map(|c| c.name()).collect();
            let mut list = Vec::new();
            for name in raw.split([',', ' ', '\t', '\n']).filter(|s| !s.is_empty()) {
                if name == "all" {
                    list.extend(SystemCheck::ALL);
                } else if name == "none" {
                } else if let Some(check) = SystemCheck::from_name(name) {
                    list.push(check);
                } else {
                    r.error(
                        Some("system_checks"),
                        format!(
                            "unknown check {name:?}{} (expected all, none or a list of: {})",
                            did_you_mean(name, &names),
                            names.join(", ")
                        ),
                    );
                }
            }
            let mut seen = HashSet::new();
            list.retain(|c| seen.insert(*c));
            list
        }
    };
    let period = r.number("check_period_seconds", 5u64, 1);
    let max_cache = r.number("max_cache", 50_000usize, 1);
    let batch_points = r.number("batch_points", 5_000usize, 1);
    let batch_ms = r.number("batch_ms", 20u64, 0);
    let producer_queue = r.number("producer_queue", 10_000usize, 1);
    let scripts_dir = path_or(&r, "scripts_dir", base.join("scripts_enabled"));
    let checks_dir = path_or(&r, "checks_dir", base.join("checks_enabled"));
    let python = r.string("python", "python3");
    if python.is_empty() {
        r.error(Some("python"), "is empty (expected an interpreter such as python3 or /usr/bin/python3)".into());
    }
    let python_tls_insecure = r.boolean("python_tls_insecure", false);
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
        python,
        checks_dir,
        python_tls_insecure,
    }
}

/// `tmpdir` must be a writable directory. With `create`, a missing one is created (and its
/// parents); without (`--check-config`), whatever had to be created for the check is removed again
/// (unless another check of the same folder, in another process, was in it at the time).
pub fn check_tmpdir(file: &Path, tmpdir: &Path, create: bool, errors: &mut Vec<ConfigError>) {
    let mut fail = |message: String| errors.push(ConfigError::in_section(file, "SelfConfig", Some("tmpdir"), message));
    let shown = tmpdir.display().to_string();
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let existing = tmpdir.ancestors().find(|p| p.exists()).map(Path::to_path_buf);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = tmpdir.join(format!(".write-test-{}-{n}", std::process::id()));
    // Another check of the same config (two `puypuy.sh start` at once) may remove a folder it
    // made while this one makes or writes in it: then make it again.
    use std::io::ErrorKind::{AlreadyExists, NotFound};
    let mut attempts = 0;
    loop {
        attempts += 1;
        match std::fs::create_dir_all(tmpdir) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), AlreadyExists | NotFound) && attempts < 20 => continue,
            Err(e) => {
                fail(format!("{shown:?} cannot be created: {e} (expected a writable directory)"));
                return;
            }
        }
        match std::fs::write(&probe, b"") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
            }
            Err(e) if e.kind() == NotFound && attempts < 20 => continue,
            Err(e) => fail(format!("{shown:?} is not writable: {e} (expected a writable directory)")),
        }
        break;
    }
    if !create {
        // Remove the folders this check made, deepest first, up to the one that existed.
        for dir in tmpdir.ancestors().take_while(|p| Some(p.to_path_buf()) != existing) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
