//! Broken configs: every binary exits 2 and names the file, section, key, bad value and what was
//! expected, without a panic.

use std::process::Stdio;

use puypuy_tests::bin;

const BINARIES: [&str; 2] = ["puypuy-shipper", "puypuy-collector"];
const GOOD_TSDB: &str = "[TSDB]\ntsdtype: File\npath: out.txt\n";

fn run(binary: &str, config_text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.ini");
    let text = config_text.replace("TMP", &dir.path().join("spool").display().to_string());
    std::fs::write(&config, text).expect("write");
    // The shipper has no --once (it refuses it); --check-config makes it exit as well.
    let flag = if binary == "puypuy-shipper" { "--check-config" } else { "--once" };
    let out = std::process::Command::new(bin(binary))
        .arg("--config")
        .arg(&config)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&config.display().to_string(), "CONFIG");
    (out.status.code(), stderr)
}

fn assert_refused(config_text: &str, expected: &str) {
    for binary in BINARIES {
        let (code, stderr) = run(binary, config_text);
        assert_eq!(code, Some(2), "{binary} exit code with {config_text:?}: {stderr}");
        assert!(stderr.contains(expected), "{binary}: expected {expected:?} in:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{binary} panicked: {stderr}");
    }
}

#[test]
fn missing_tsdb_section() {
    assert_refused("[SelfConfig]\ntmpdir: TMP\n", "CONFIG: [TSDB]: section missing");
}

#[test]
fn unknown_tsdtype() {
    assert_refused(
        "[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: Influx\naddress: http://127.0.0.1:1\n",
        "CONFIG: [TSDB] tsdtype: unknown backend \"Influx\" (expected OpenTSDB, KairosDB, InfluxDB, InfluxDB2, Carbon, Prometheus, PrometheusRemoteWrite, PuyPuy or File)",
    );
}

#[test]
fn missing_address() {
    assert_refused(
        "[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: OpenTSDB\n",
        "CONFIG: [TSDB] address: missing (expected a URL",
    );
    assert_refused(
        "[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: Carbon\n",
        "CONFIG: [TSDB] address: missing (expected host:port",
    );
}

#[test]
fn influxdb_needs_a_database() {
    assert_refused(
        "[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: InfluxDB\naddress: http://127.0.0.1:1\n",
        "CONFIG: [TSDB] database: missing",
    );
}

#[test]
fn numeric_keys_must_be_numbers() {
    for key in ["check_period_seconds", "max_cache", "batch_points", "batch_ms", "producer_queue"] {
        assert_refused(
            &format!("[SelfConfig]\ntmpdir: TMP\n{key}: lots\n{GOOD_TSDB}"),
            &format!("CONFIG: [SelfConfig] {key}: \"lots\" is not a number"),
        );
    }
    assert_refused(
        &format!("[SelfConfig]\ntmpdir: TMP\ncheck_period_seconds = 0\n{GOOD_TSDB}"),
        "CONFIG: [SelfConfig] check_period_seconds: \"0\" is too small (expected a whole number of at least 1)",
    );
}

#[test]
fn booleans_must_be_booleans() {
    assert_refused(
        &format!("[SelfConfig]\ntmpdir: TMP\ndebug_log: maybe\n{GOOD_TSDB}"),
        "CONFIG: [SelfConfig] debug_log: \"maybe\" is not a boolean",
    );
}

#[test]
fn auth_needs_user_and_pass() {
    assert_refused(
        "[SelfConfig]\ntmpdir: TMP\n[TSDB]\ntsdtype: KairosDB\naddress: http://127.0.0.1:1\nauth: True\n",
        "CONFIG: [TSDB] user: missing (needed because auth is true)",
    );
}

#[test]
fn tmpdir_that_cannot_be_created() {
    assert_refused(
        &format!("[SelfConfig]\ntmpdir: /proc/puypuy-cannot-exist\n{GOOD_TSDB}"),
        "CONFIG: [SelfConfig] tmpdir: \"/proc/puypuy-cannot-exist\" cannot be created",
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let (code, stderr) = run("puypuy-shipper", "[SelfConfig]\ntmpdir: TMP\nmax_cache: x\n[TSDB]\ntsdtype: Nope\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("[SelfConfig] max_cache") && stderr.contains("[TSDB] tsdtype"), "{stderr}");
}

#[test]
fn missing_file_is_named() {
    for binary in BINARIES {
        let out = std::process::Command::new(bin(binary))
            .args(["--config", "/nonexistent/puypuy.ini"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/puypuy.ini: cannot read the config file"));
    }
}

fn run_args(binary: &str, config_text: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.ini");
    std::fs::write(&config, config_text.replace("TMP", &dir.path().join("spool").display().to_string()))
        .expect("write");
    let out = std::process::Command::new(bin(binary))
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&config.display().to_string(), "CONFIG");
    (out.status.code(), clean(&out.stdout), clean(&out.stderr))
}

/// Regression: `debug_log False` was joined to the next line, silently losing `shorthostname`.
#[test]
fn a_line_without_separator_names_its_line() {
    assert_refused(
        "[SelfConfig]\ntmpdir: TMP\ndebug_log False\nshorthostname: yes\n[TSDB]\ntsdtype: File\npath: out.txt\n",
        "CONFIG:3: \"debug_log False\" is neither `key: value` nor `key = value`",
    );
    assert_refused("[SelfConfig\ntmpdir: TMP\n[TSDB]\n", "CONFIG:1: \"[SelfConfig\" is not a section header");
}

/// Regression: the shipper's help advertised --once and --dry-run; --once never exited and
/// --dry-run ran a normal shipper writing to the backend.
#[test]
fn the_shipper_refuses_the_producer_flags() {
    let good = format!("[SelfConfig]\ntmpdir: TMP\n{GOOD_TSDB}");
    for flag in ["--once", "--dry-run", "--bogus"] {
        let (code, _, stderr) = run_args("puypuy-shipper", &good, &[flag]);
        assert_eq!(code, Some(2), "puypuy-shipper {flag}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
    let (code, help, _) = run_args("puypuy-shipper", &good, &["--help"]);
    assert_eq!(code, Some(0));
    assert!(help.contains("--check-config") && !help.contains("--once") && !help.contains("--dry-run"), "{help}");
    let (code, help, _) = run_args("puypuy-collector", &good, &["--help"]);
    assert_eq!(code, Some(0));
    assert!(help.contains("--once") && help.contains("--dry-run"), "{help}");
}

/// Regression: `collector --once` with no shipper waited 30 s in silence.
#[test]
fn once_without_a_shipper_says_so() {
    let good = format!("[SelfConfig]\ntmpdir: TMP\nsystem_checks: load_average\n{GOOD_TSDB}");
    let (code, _, stderr) = run_args("puypuy-collector", &good, &["--once"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no shipper is listening on ") && stderr.contains("shipper.sock"), "{stderr}");
}

#[test]
fn check_config_prints_warnings_and_strict_refuses_them() {
    let text = format!("[SelfConfig]\ntmpdir: TMP\nmax_cahce: 5\n{GOOD_TSDB}[Mysql]\nhost: db\n");
    let (code, stdout, stderr) = run_args("puypuy-shipper", &text, &["--check-config"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("CONFIG: configuration OK"), "{stdout}");
    assert!(stderr.contains("CONFIG: warning: [Mysql]: unknown section, ignored (did you mean [MySQL]?)"), "{stderr}");
    assert!(
        stderr.contains("CONFIG: warning: [SelfConfig] max_cahce: unknown key, ignored (did you mean max_cache?)"),
        "{stderr}"
    );
    let (code, _, stderr) = run_args("puypuy-shipper", &text, &["--check-config", "--strict"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn print_config_answers_from_a_config_whose_other_sections_are_broken() {
    let text = "[SelfConfig]\ntmpdir: TMP\nrun_user: nobody\n[TSDB]\ntsdtype: Influx\n";
    let (code, stdout, stderr) = run_args("puypuy-shipper", text, &["--print-config", "run_user", "jmx_targets"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "nobody\n0\n");
}
