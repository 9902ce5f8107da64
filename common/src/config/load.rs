//! Loading the whole `config.ini`: every section read and validated at once, so that an operator
//! learns about a broken `[TSDB]` even from the collector and sees every problem in one go, plus
//! the warnings (unknown sections and keys, with a did-you-mean) that `--check-config` prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::Ini;

use super::jmx::{read_jmx, JmxConfig};
use super::outputs::output_sections;
use super::reader::{
    check_duplicates, did_you_mean, header_name, only_section, parse_ini, split_instance, ConfigError, ConfigErrors,
};
use super::relay::{read_relay, RelayConfig};
use super::self_config::{check_tmpdir, read_self_config, SelfConfig};
use super::services::{read_services, ServiceConfig, ServiceKind};
use super::tags::{read_open_files, read_tags};
use super::tsdb::{read_tsdb, read_tsdb_section, Tsdb};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub file: PathBuf,
    pub self_config: SelfConfig,
    pub tsdb: Tsdb,
    /// `[TSDB:NAME]`: more outputs, each a full backend; every point goes to `tsdb` and to each.
    pub outputs: Vec<Tsdb>,
    /// `[Tags]`: extra tags for every point, in file order.
    pub tags: Vec<(String, String)>,
    pub relay: RelayConfig,
    /// Service checks configured by their sections.
    pub services: Vec<ServiceConfig>,
    /// `[JMX]` / `[JMX:NAME]` targets and the bridge's JVM settings.
    pub jmx: JmxConfig,
    /// `[Open Files]`: `NAME` and the pid file of the process whose descriptors are counted.
    pub open_files: Vec<(String, PathBuf)>,
    /// Lines worth a warning at start (unknown sections and keys, deprecated ones); not errors.
    pub warnings: Vec<String>,
    /// Every section with its keys (lower-cased) and values as written, config.ini and conf.d
    /// together: what the old Python modules read through `lib.getconfig`.
    pub sections: Vec<(String, Vec<(String, String)>)>,
}

/// The sections with a fixed name (service and JMX sections also take `:NAME`).
const FIXED_SECTIONS: &[&str] = &["SelfConfig", "TSDB", "Tags", "Relay", "Open Files", "WebServer"];

/// The `[SelfConfig]` values `--print-config` prints, for puypuy.sh.
pub const PRINTABLE_KEYS: &[&str] =
    &["tmpdir", "pid_file", "log_file", "socket", "run_user", "check_period_seconds", "jmx_targets"];

impl Config {
    /// Loads and validates the whole file. Creates `tmpdir` when it is missing.
    pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
        let (file, base, text) = read_file(file).map_err(|e| ConfigErrors(vec![e]))?;
        let (text, owners) = with_conf_d(&file, &base, text).map_err(ConfigErrors)?;
        Config::from_text(&file, &base, &text).map_err(|mut e| {
            name_owners(&mut e.0, &owners);
            e
        })
    }

    pub fn from_text(file: &Path, base: &Path, text: &str) -> Result<Config, ConfigErrors> {
        Config::assemble(file, base, text, true).0
    }

    /// What `--check-config` prints: the file's errors and its warnings, the warnings also when
    /// there are errors (`[Mysql]: unknown section …` is often why `[MySQL]` looks missing).
    /// `tmpdir` is checked without being created.
    pub fn check(file: &Path) -> (Vec<ConfigError>, Vec<String>) {
        let (file, base, text) = match read_file(file) {
            Ok(read) => read,
            Err(e) => return (vec![e], Vec::new()),
        };
        let (text, owners) = match with_conf_d(&file, &base, text) {
            Ok(read) => read,
            Err(errors) => return (errors, Vec::new()),
        };
        let (config, warnings) = Config::assemble(&file, &base, &text, false);
        let mut errors = config.err().map(|e| e.0).unwrap_or_default();
        name_owners(&mut errors, &owners);
        (errors, warnings)
    }

    /// Every section read; the config, or every error; and the warnings in both cases.
    fn assemble(
        file: &Path,
        base: &Path,
        text: &str,
        create_tmpdir: bool,
    ) -> (Result<Config, ConfigErrors>, Vec<String>) {
        let ini = match parse_ini(text) {
            Ok(ini) => ini,
            Err(problems) => return (Err(ConfigErrors(syntax_errors(file, problems))), Vec::new()),
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        check_duplicates(file, &ini, &mut errors);
        let mut self_warnings = Vec::new();
        let self_config = read_self_config(file, base, &ini, &mut errors, &mut self_warnings);
        // The old Python modules read sections of their own: with modules present, a section
        // nothing built-in reads may be theirs; only one close to a known name is warned about.
        let only_close = has_python_modules(&self_config.checks_dir);
        warn_unknown_sections(&ini, only_close, &mut warnings);
        warnings.extend(self_warnings);
        let tsdb = read_tsdb(file, base, &ini, &mut errors, &mut warnings);
        let outputs: Vec<Tsdb> = output_sections(file, &ini, &mut errors)
            .iter()
            .filter_map(|name| read_tsdb_section(file, base, &ini, &format!("TSDB:{name}"), &mut errors, &mut warnings))
            .collect();
        let tags = read_tags(file, &ini, &mut errors);
        let relay = read_relay(file, base, &ini, &mut errors, &mut warnings, self_config.check_period_seconds);
        let default_timeout = Duration::from_secs(self_config.check_period_seconds.min(5));
        let services = read_services(file, base, &ini, default_timeout, &mut errors, &mut warnings);
        let jmx = read_jmx(file, base, &ini, default_timeout, &mut errors, &mut warnings);
        let open_files = read_open_files(file, base, &ini, &mut errors);
        warn_readable_password(file, &ini, &mut warnings);
        if errors.is_empty() {
            check_tmpdir(file, &self_config.tmpdir, create_tmpdir, &mut errors);
        }
        let config = match (errors.is_empty(), tsdb) {
            (true, Some(tsdb)) => Ok(Config {
                file: file.to_path_buf(),
                self_config,
                tsdb,
                outputs,
                tags,
                relay,
                services,
                jmx,
                open_files,
                warnings: warnings.clone(),
                sections: ini
                    .iter()
                    .filter_map(|(name, props)| {
                        let keys = props.iter().map(|(k, v)| (k.to_string(), v.trim().to_string())).collect();
                        name.map(|n| (n.to_string(), keys))
                    })
                    .collect(),
            }),
            _ => Err(ConfigErrors(errors)),
        };
        (config, warnings)
    }

    pub fn period(&self) -> Duration {
        Duration::from_secs(self.self_config.check_period_seconds)
    }

    /// The tags every point leaves with unless it brings its own: `host`, `cluster`, `group`,
    /// `location` and `[Tags]`, in that order, those with an empty value left out.
    pub fn host_tags(&self, host: &str) -> Vec<(String, String)> {
        let s = &self.self_config;
        let mut tags = vec![
            ("host".to_string(), host.to_string()),
            ("cluster".to_string(), s.cluster_name.clone()),
            ("group".to_string(), s.host_group.clone()),
            ("location".to_string(), s.location.clone()),
        ];
        tags.extend(self.tags.iter().cloned());
        tags.retain(|(_, v)| !v.is_empty());
        tags
    }
}

/// The file's text, its absolute path and the folder relative paths in it are resolved against
/// (whatever the working directory later).
fn read_file(file: &Path) -> Result<(PathBuf, PathBuf, String), ConfigError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError::whole_file(file, format!("cannot read the config file: {e}")))?;
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let base = absolute.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    Ok((absolute, base, text))
}

/// The folder of extra config files beside the config file, as the old agent read `conf/*.ini`.
pub const CONF_D: &str = "conf.d";

/// Which file each section came from (`conf.d` files and the config file), so that an error in a
/// section names the file to fix.
type SectionOwners = Vec<(String, PathBuf)>;

/// The errors of sections read from a `conf.d` file name that file, not the config file.
fn name_owners(errors: &mut [ConfigError], owners: &SectionOwners) {
    for e in errors.iter_mut().filter(|e| !e.section.is_empty()) {
        if let Some((_, path)) = owners.iter().find(|(name, _)| *name == e.section) {
            e.file.clone_from(path);
        }
    }
}

/// `text` followed by every `conf.d/*.ini` beside the config file, in name order, as if appended,
/// and the file of each section. Each file's syntax is checked on its own (errors name that file
/// and line), and a section defined in two files is an error naming both: which one should win is
/// the operator's call.
fn with_conf_d(file: &Path, base: &Path, text: String) -> Result<(String, SectionOwners), Vec<ConfigError>> {
    let folder = base.join(CONF_D);
    let mut extra: Vec<PathBuf> = match std::fs::read_dir(&folder) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ini") && p.is_file())
            .collect(),
        Err(_) => return Ok((text, Vec::new())),
    };
    if extra.is_empty() {
        return Ok((text, Vec::new()));
    }
    extra.sort();
    let mut errors = Vec::new();
    let mut owner: Vec<(String, PathBuf)> = Vec::new();
    let mut claim = |path: &Path, text: &str, errors: &mut Vec<ConfigError>| {
        let names: Vec<String> = match parse_ini(text) {
            Ok(ini) => ini.sections().flatten().map(str::to_string).collect(),
            Err(problems) => {
                errors.extend(syntax_errors(path, problems));
                return;
            }
        };
        let mut seen = std::collections::HashSet::new();
        for name in names.into_iter().filter(|n| seen.insert(n.clone())) {
            match owner.iter().find(|(n, _)| *n == name) {
                Some((_, first)) => errors.push(ConfigError::whole_file(
                    path,
                    format!(
                        "[{name}]: section defined in both {} and {} (keep it in one file)",
                        first.display(),
                        path.display()
                    ),
                )),
                None => owner.push((name, path.to_path_buf())),
            }
        }
    };
    claim(file, &text, &mut errors);
    let mut all = text;
    for path in extra {
        match std::fs::read_to_string(&path) {
            Ok(more) => {
                claim(&path, &more, &mut errors);
                all.push('\n');
                all.push_str(&more);
            }
            Err(e) => errors.push(ConfigError::whole_file(&path, format!("cannot read it: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok((all, owner))
    } else {
        Err(errors)
    }
}

fn syntax_errors(file: &Path, problems: Vec<(usize, String)>) -> Vec<ConfigError> {
    problems
        .into_iter()
        .map(|(line, message)| ConfigError { line: Some(line), ..ConfigError::whole_file(file, message) })
        .collect()
}

/// `--print-config`: the values of `keys` (see [`PRINTABLE_KEYS`]) as this config resolves them,
/// one string each. Other sections may be invalid (puypuy.sh must still find the pid files of a
/// running agent whose config was broken since); the file's syntax and the keys asked for may not.
pub fn print_values(file: &Path, keys: &[String]) -> Result<Vec<String>, ConfigErrors> {
    let (file, base, text) = read_file(file).map_err(|e| ConfigErrors(vec![e]))?;
    // A syntax error elsewhere does not matter here: read [SelfConfig] alone then.
    let ini = parse_ini(&text)
        .or_else(|_| parse_ini(&only_section(&text, "SelfConfig")))
        .map_err(|problems| ConfigErrors(syntax_errors(&file, problems)))?;
    let mut errors = Vec::new();
    let s = read_self_config(&file, &base, &ini, &mut errors, &mut Vec::new());
    let mut values = Vec::new();
    for key in keys {
        let path = |p: &Path| p.display().to_string();
        values.push(match key.as_str() {
            "tmpdir" => path(&s.tmpdir),
            "pid_file" => path(&s.pid_file),
            "log_file" => path(&s.log_file),
            "socket" => path(&s.socket),
            "run_user" => s.run_user.clone().unwrap_or_default(),
            "check_period_seconds" => s.check_period_seconds.to_string(),
            // From the headers themselves, so that it holds when another section is broken.
            "jmx_targets" => text
                .lines()
                .filter_map(|line| header_name(line.trim()))
                .filter(|name| split_instance(name).0 == "JMX")
                .count()
                .to_string(),
            other => {
                return Err(ConfigErrors(vec![ConfigError::whole_file(
                    &file,
                    format!(
                        "--print-config: unknown key {other:?}{} (expected one of: {})",
                        did_you_mean(other, PRINTABLE_KEYS),
                        PRINTABLE_KEYS.join(", ")
                    ),
                )]))
            }
        });
    }
    // An error in another [SelfConfig] key does not matter here; one in a key asked for does.
    errors.retain(|e| e.key.as_ref().is_some_and(|k| keys.contains(k)));
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A section no part of PuyPuy reads is warned about, with the known name it is closest to
/// (`[Mysql]` → `[MySQL]`), since a typo there silently disables a check. With `only_close`
/// (Python modules present, which read sections of their own), only one close to a known name.
fn warn_unknown_sections(ini: &Ini, only_close: bool, warnings: &mut Vec<String>) {
    let mut known: Vec<&str> = FIXED_SECTIONS.to_vec();
    known.extend(ServiceKind::ALL.iter().map(|k| k.section()));
    known.push("JMX");
    for name in ini.sections().flatten() {
        let (base, instance) = split_instance(name);
        let takes_instance = base == "JMX" || base == "TSDB" || ServiceKind::ALL.iter().any(|k| k.section() == base);
        if FIXED_SECTIONS.contains(&name) || (takes_instance && instance.is_none_or(|i| !i.is_empty())) {
            continue;
        }
        let hint = if instance.is_some() && FIXED_SECTIONS.contains(&base) {
            format!(" ([{base}] takes no :NAME)")
        } else {
            did_you_mean(base, &known).replace("mean ", "mean [").replace("?)", "]?)")
        };
        // A module's section may well look like a built-in's (`[PyNginx]`): then only one a
        // letter away from a known name, or the same in another case, is taken for a typo.
        let typo = || {
            let lower = base.to_lowercase();
            known.iter().any(|k| strsim::levenshtein(&lower, &k.to_lowercase()) <= 1)
        };
        if only_close && (hint.is_empty() || !typo()) {
            continue;
        }
        warnings.push(format!("[{name}]: unknown section, ignored{hint}"));
    }
}

fn has_python_modules(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("check_") && n.ends_with(".py")))
    })
}

/// A password in a file others can read is worth a warning.
fn warn_readable_password(file: &Path, ini: &Ini, warnings: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let has_password = ini
        .iter()
        .any(|(_, props)| props.iter().any(|(k, v)| (k == "pass" || k == "jmx_pass") && !v.trim().is_empty()));
    if !has_password {
        return;
    }
    if let Ok(meta) = std::fs::metadata(file) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "holds a password and is readable by group or others (mode {:o}): chmod 600 it, or use pass_file",
                mode & 0o777
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, SystemCheck};

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
        assert_eq!(c.self_config.system_checks.len(), SystemCheck::ALL.len());
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
                "[TSDB] tsdtype: unknown backend \"Influx\" (expected OpenTSDB, KairosDB, InfluxDB, InfluxDB2, Carbon, Prometheus, PrometheusRemoteWrite, PuyPuy or File)"
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

    /// Regression: `debug_log False` (no separator) was joined to the lines after it, so the next
    /// key was silently lost and the log showed a key name with a newline inside.
    #[test]
    fn a_line_without_separator_is_an_error_with_its_line_number() {
        let e = load(
            "[SelfConfig]\ntmpdir: TMP\ndebug_log False\nshorthostname: yes\n[TSDB]\ntsdtype: File\npath: /tmp/x\n",
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(
            e.to_string(),
            "/etc/puypuy/config.ini:3: \"debug_log False\" is neither `key: value` nor `key = value` (a separator is missing)"
        );
    }

    /// Regression: `[SelfConfig` without its `]` was reported as "[TSDB]: section missing".
    #[test]
    fn a_bad_section_header_is_an_error_with_its_line_number() {
        let e = load("# puypuy\n[SelfConfig\ntmpdir: TMP\n[TSDB]\ntsdtype: File\npath: /tmp/x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/puypuy/config.ini:2: \"[SelfConfig\" is not a section header (expected [NAME])"
        );
        let e = load("tmpdir: TMP\n[TSDB]\ntsdtype: File\npath: /tmp/x\n").unwrap_err();
        assert_eq!(e.to_string(), "/etc/puypuy/config.ini:1: key \"tmpdir\" comes before any [SECTION] header");
        let e = load("[SelfConfig]\n: x\n[]\n").unwrap_err();
        let lines: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(lines[0].starts_with("/etc/puypuy/config.ini:2: "), "{e}");
        assert!(lines[1].starts_with("/etc/puypuy/config.ini:3: "), "{e}");
    }

    #[test]
    fn continuation_lines_comments_and_crlf_are_still_accepted() {
        let c = load("[SelfConfig]\r\ntmpdir: TMP\r\n  # indented comment\r\nsystem_checks: memory,\n    cpustats\n\n[TSDB]\ntsdtype: File\npath: /tmp/x\n")
            .unwrap();
        assert_eq!(c.self_config.system_checks, [SystemCheck::Memory, SystemCheck::CpuStats]);
    }

    #[test]
    fn unknown_sections_and_keys_are_warned_about_with_the_close_name() {
        let c = load("[SelfConfig]\ntmpdir: TMP\nmax_cahce: 10\n[TSDB]\ntsdtype: File\npath: /tmp/x\n[Mysql]\nhost: h\n[Foo]\na: b\n[MySQL:replica]\nhost: r\n[Tags:x]\n")
            .unwrap();
        assert_eq!(
            c.warnings,
            [
                "[Mysql]: unknown section, ignored (did you mean [MySQL]?)",
                "[Foo]: unknown section, ignored",
                "[Tags:x]: unknown section, ignored ([Tags] takes no :NAME)",
                "[SelfConfig] max_cahce: unknown key, ignored (did you mean max_cache?)",
            ]
        );
        assert_eq!(c.services.len(), 1);
    }

    #[test]
    fn open_files_are_typed_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[SelfConfig]\ntmpdir: {}\n[TSDB]\ntsdtype: File\npath: x\n[Open Files]\nnginx: run/nginx.pid\nsshd: /run/sshd.pid\n",
            dir.path().join("t").display()
        );
        let c = Config::from_text(&dir.path().join("config.ini"), dir.path(), &text).unwrap();
        assert_eq!(
            c.open_files,
            [
                ("nginx".to_string(), dir.path().join("run/nginx.pid")),
                ("sshd".to_string(), PathBuf::from("/run/sshd.pid"))
            ]
        );
    }

    #[test]
    fn print_values_reads_selfconfig_even_when_another_section_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.ini");
        std::fs::write(
            &file,
            "[SelfConfig]\ntmpdir: t\npuypuy_user: nobody\n[TSDB]\ntsdtype: Influx\n[JMX:a]\nurl: x\n",
        )
        .unwrap();
        let keys: Vec<String> =
            ["tmpdir", "pid_file", "socket", "run_user", "jmx_targets"].iter().map(|s| s.to_string()).collect();
        let values = print_values(&file, &keys).unwrap();
        let t = dir.path().join("t");
        assert_eq!(
            values,
            [
                t.display().to_string(),
                t.join("puypuy.pid").display().to_string(),
                t.join("shipper.sock").display().to_string(),
                "nobody".to_string(),
                "1".to_string()
            ]
        );
        assert!(!t.exists(), "--print-config must not create tmpdir");
        std::fs::write(&file, "[SelfConfig]\ncheck_period_seconds: x\n").unwrap();
        assert!(print_values(&file, &["tmpdir".to_string()]).is_ok());
        let e = print_values(&file, &["check_period_seconds".to_string()]).unwrap_err();
        assert!(e.to_string().contains("check_period_seconds: \"x\" is not a number"), "{e}");
        assert!(print_values(&file, &["nope".to_string()]).is_err());
    }

    /// ConfigParser takes `[Redis] ; note` as `[Redis]` and lower-cases keys; so do we.
    #[test]
    fn headers_end_at_their_last_bracket_and_keys_are_lower_cased() {
        let c = load("[SelfConfig] ; ours\ntmpdir: TMP\nBatch_Points: 7\n[TSDB]\ntsdtype: File\npath: /tmp/x\n[Redis] # the cache\nHost: r1\n")
            .unwrap();
        assert_eq!(c.self_config.batch_points, 7);
        assert_eq!(c.services[0].section, "Redis");
        assert_eq!(c.services[0].host, "r1");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn check_reports_warnings_beside_errors_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.ini");
        std::fs::write(
            &file,
            "[SelfConfig]\ntmpdir: new/spool\n[TSDB]\ntsdtype: InfluxDB\naddress: http://h:1\n[Mysql]\nhost: x\n",
        )
        .unwrap();
        let (errors, warnings) = Config::check(&file);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("[TSDB] database: missing"), "{errors:?}");
        assert_eq!(warnings, ["[Mysql]: unknown section, ignored (did you mean [MySQL]?)"]);
        assert!(!dir.path().join("new").exists(), "--check-config created tmpdir");
        std::fs::write(&file, "[SelfConfig]\ntmpdir: new/spool\n[TSDB]\ntsdtype: File\npath: x\n").unwrap();
        assert_eq!(Config::check(&file), (vec![], vec![]));
        assert!(!dir.path().join("new").exists(), "--check-config created tmpdir");
    }

    /// Regression: two checks of one config at once (two `puypuy.sh start`), each making the
    /// missing tmpdir and removing it again, failed when one removed it between the other's
    /// making it and writing in it ("is not writable: No such file or directory").
    #[test]
    fn checks_at_once_of_a_missing_tmpdir_all_pass() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.ini");
        std::fs::write(&file, "[SelfConfig]\ntmpdir: new/spool\n[TSDB]\ntsdtype: File\npath: x\n").unwrap();
        let tmpdir = dir.path().join("new/spool");
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let (file, tmpdir) = (file.clone(), tmpdir.clone());
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    for _ in 0..300 {
                        let mut errors = Vec::new();
                        super::super::self_config::check_tmpdir(&file, &tmpdir, false, &mut errors);
                        failures.extend(errors.into_iter().map(|e| e.to_string()));
                    }
                    failures
                })
            })
            .collect();
        let failures: Vec<String> = checks.into_iter().flat_map(|c| c.join().unwrap()).collect();
        // Folders made by checks that overlapped may stay: a check removes only those it made
        // itself, and not while another's probe file is in them (puypuy.sh start makes tmpdir
        // next anyway).
        assert_eq!(failures, Vec::<String>::new());
    }

    /// Regression: a typo in another section made --print-config fail, so `puypuy.sh stop` could
    /// not find the pid files of the running agent.
    #[test]
    fn print_values_reads_selfconfig_past_a_syntax_error_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.ini");
        std::fs::write(&file, "[SelfConfig]\ntmpdir: t\n[TSDB]\ndebug_log False\n[JMX:a]\nurl: x\n").unwrap();
        let keys = vec!["tmpdir".to_string(), "jmx_targets".to_string()];
        assert_eq!(print_values(&file, &keys).unwrap(), [dir.path().join("t").display().to_string(), "1".to_string()]);
        std::fs::write(&file, "[SelfConfig]\ntmpdir t\n").unwrap();
        assert!(print_values(&file, &keys).unwrap_err().to_string().contains(":2: "));
    }

    #[test]
    fn conf_d_files_are_read_in_name_order_and_a_section_in_two_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.ini");
        std::fs::write(&file, "[SelfConfig]\ntmpdir: t\n[TSDB]\ntsdtype: File\npath: x\n").unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/b.ini"), "[PyB]\nkey: b\n").unwrap();
        std::fs::write(dir.path().join("conf.d/a.ini"), "[Redis]\nport: 7000\n[PyA]\nkey: a\n").unwrap();
        std::fs::write(dir.path().join("conf.d/notes.txt"), "[Ignored]\n").unwrap();
        let c = Config::load(&file).unwrap();
        let names: Vec<&str> = c.sections.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["SelfConfig", "TSDB", "Redis", "PyA", "PyB"]);
        assert_eq!(c.services[0].port, 7000);
        std::fs::write(dir.path().join("conf.d/c.ini"), "[PyA]\nkey: again\n").unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        let (a, c_ini) = (dir.path().join("conf.d/a.ini"), dir.path().join("conf.d/c.ini"));
        assert_eq!(
            e,
            format!(
                "{}: [PyA]: section defined in both {} and {} (keep it in one file)",
                c_ini.display(),
                a.display(),
                c_ini.display()
            )
        );
        std::fs::write(dir.path().join("conf.d/c.ini"), "[PyC]\nno separator\n").unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: ", c_ini.display())), "{e}");
    }

    /// Regression: a bad key in a section of a conf.d file was reported in config.ini.
    #[test]
    fn a_key_error_in_a_conf_d_section_names_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.ini");
        std::fs::write(&file, "[SelfConfig]\ntmpdir: t\n[TSDB]\ntsdtype: File\npath: x\n[Redis:a]\nport: 1\n").unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        let redis_ini = dir.path().join("conf.d/10-redis.ini");
        std::fs::write(&redis_ini, "[Redis]\nport: many\n").unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: [Redis] port: ", redis_ini.display())), "{e}");
        let (errors, _) = Config::check(&file);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].file, redis_ini);
        // A section of the config file itself still names the config file.
        std::fs::write(&redis_ini, "[Redis]\nport: 6379\n").unwrap();
        std::fs::write(&file, "[SelfConfig]\ntmpdir: t\n[TSDB]\ntsdtype: File\npath: x\n[Redis:a]\nport: x\n").unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: [Redis:a] port: ", file.display())), "{e}");
    }

    /// Old configs give the Redis password as `[Redis] auth`, which the old module read.
    #[test]
    fn redis_auth_is_the_password_as_the_old_module_read_it() {
        let c = load("[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: File\npath: /tmp/x\n[Redis]\nauth: s3cret\n[Redis:b]\nauth: False\n").unwrap();
        assert_eq!((c.services[0].pass.as_str(), c.services[1].pass.as_str()), ("s3cret", ""));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = load("[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: File\npath: /tmp/x\n[Redis]\nauth: old\npass: new\n")
            .unwrap();
        assert_eq!(c.services[0].pass, "new");
    }

    /// With Python modules present, a section nothing built-in reads may be a module's: only one
    /// close to a known name (a typo) is still warned about.
    #[test]
    fn with_python_modules_only_close_unknown_sections_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("checks_enabled")).unwrap();
        std::fs::write(dir.path().join("checks_enabled/check_es.py"), "").unwrap();
        let text = format!(
            "[SelfConfig]\ntmpdir: {}\n[TSDB]\ntsdtype: File\npath: x\n[Elasticsearch]\nhost: e\n[Mysql]\nhost: m\n",
            dir.path().join("t").display()
        );
        let c = Config::from_text(&dir.path().join("config.ini"), dir.path(), &text).unwrap();
        assert_eq!(c.warnings, ["[Mysql]: unknown section, ignored (did you mean [MySQL]?)"]);
        let c = Config::from_text(&dir.path().join("config.ini"), dir.path(), &text.replace("[Mysql]", "[PyNginx]"))
            .unwrap();
        assert!(c.warnings.is_empty(), "a module's [PyNginx] is not a typo of [NginX]: {:?}", c.warnings);
    }

    /// `[TSDB:NAME]` outputs are validated like `[TSDB]`, each problem named by its section.
    #[test]
    fn each_output_is_validated_and_named_by_its_section() {
        let base = "[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: File\npath: /tmp/x\n";
        let c = load(&format!("{base}[TSDB:influx]\ntsdtype: InfluxDB\naddress: http://h:1\ndatabase: d\n")).unwrap();
        assert_eq!(c.outputs.len(), 1);
        assert_eq!(c.outputs[0].backend, Backend::InfluxDb);
        let e = load(&format!(
            "{base}[TSDB:influx]\ntsdtype: InfluxDB\naddress: http://h:1\n[TSDB:carbon]\ntsdtype: Carbon\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("[TSDB:influx] database: missing"), "{e}");
        assert!(e.contains("[TSDB:carbon] address: missing"), "{e}");
        let e = load(&format!("{base}[TSDB:bad/name]\ntsdtype: File\npath: y\n")).unwrap_err().to_string();
        assert!(e.contains("[TSDB:bad/name]: output name must be"), "{e}");
    }
}
