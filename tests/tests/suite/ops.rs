//! Operating PuyPuy: `once`, `check-config [--strict]`, SIGHUP reload (applied, or refused when
//! invalid: by puypuy.sh before any signal, by the processes when signalled directly), log
//! rotation (create + SIGHUP, and copytruncate), `status --json`, a password warning, `run_user`,
//! and puypuy.sh's help, options and usage errors.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use puypuy_tests::{wait_for, Agent, Influx};

fn puypuy_sh(agent: &Agent, args: &[&str]) -> Output {
    puypuy_tests::puypuy_sh(&agent.config, args)
}

/// puypuy.sh with `PUYPUY_CONFIG` set to `env_config` (or unset), for the options and usage.
fn puypuy_sh_bare(env_config: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(puypuy_tests::repo_root().join("puypuy.sh"));
    cmd.args(args).env("PUYPUY_BIN_DIR", puypuy_tests::bin_dir()).env_remove("PUYPUY_CONFIG").stdin(Stdio::null());
    if let Some(config) = env_config {
        cmd.env("PUYPUY_CONFIG", config);
    }
    cmd.output().expect("puypuy.sh")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// SIGHUP straight to a process, as `kill -HUP` would, not through puypuy.sh.
fn hup(agent: &Agent, name: &str) {
    let pid = std::fs::read_to_string(agent.path(&format!("run/puypuy.{name}.pid"))).expect("pid file");
    kill(Pid::from_raw(pid.trim().parse().expect("pid")), Signal::SIGHUP).expect("SIGHUP");
}

fn influx_tsdb(influx: &Influx) -> String {
    format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB)
}

#[test]
fn once_prints_a_table_of_checks_and_scripts_without_sending() {
    let agent = Agent::new("", "[TSDB]\ntsdtype: File\npath: out.txt\n");
    std::fs::create_dir_all(agent.path("scripts_enabled")).expect("dir");
    let script = agent.path("scripts_enabled/check_once");
    std::fs::write(&script, "#!/bin/sh\necho 'once_metric 7 mine rate'\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = puypuy_sh(&agent, &["once"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("PROCESS"), "{text}");
    let row = |metric: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(metric))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    let mem = row("mem_total").expect("mem_total row");
    assert_eq!((mem[0], mem[3], mem[4]), ("collector", "stack", "type=system"));
    let script_row = row("once_metric").expect("script row");
    // One --once run is a single sample: a rate has no point yet, and the table says so.
    assert_eq!(
        (script_row[0], script_row[2], script_row[3], script_row[4]),
        ("script-runner", "7", "rate*", "type=mine")
    );
    assert!(text.contains("* rate: first sample, no point yet"), "{text}");
    assert!(!agent.path("out.txt").exists(), "once must not send anything");
}

/// Regression: `once` threw the producers' stderr away, so a bad config printed an empty table.
/// The config's errors are shown and the exit status is 2; a producer's warnings come through.
#[test]
fn once_shows_the_errors_of_a_bad_config_and_the_producers_warnings() {
    let bad = Agent::new("check_period_seconds: soon", "[TSDB]\ntsdtype: File\npath: out.txt\n");
    let out = puypuy_sh(&bad, &["once"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[SelfConfig] check_period_seconds"), "{err}");

    let warned = Agent::new("system_checks: memory\ncheck_perod_seconds: 5", "[TSDB]\ntsdtype: File\npath: out.txt\n");
    let out = puypuy_sh(&warned, &["once", "collector"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check_perod_seconds"), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mem_total"), "{}", text(&out));
}

#[test]
fn check_config_lists_every_problem() {
    let agent = Agent::new(
        "max_cache: many\ndebug_log: perhaps",
        "[TSDB]\ntsdtype: Nope\n[JMX]\nurl: service:jmx:rmi:///x\nbeans: java.lang HeapMemoryUsage\n",
    );
    let out = puypuy_sh(&agent, &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "[SelfConfig] max_cache",
        "[SelfConfig] debug_log",
        "[TSDB] tsdtype",
        "[JMX] beans: bad ObjectName \"java.lang\"",
    ] {
        assert!(err.contains(expected), "{expected} missing from:\n{err}");
    }
    let good = Agent::new("", "[TSDB]\ntsdtype: File\npath: out.txt\n");
    let out = puypuy_sh(&good, &["check-config"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

/// `check-config --strict` passes `--strict` on: a warning alone fails it (it used to be taken for
/// a process name).
#[test]
fn check_config_strict_fails_on_warnings() {
    let agent = Agent::new("check_perod_seconds: 5", "[TSDB]\ntsdtype: File\npath: out.txt\n");
    let out = puypuy_sh(&agent, &["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check_perod_seconds"), "{}", text(&out));
    let out = puypuy_sh(&agent, &["check-config", "--strict"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check_perod_seconds"), "{}", text(&out));
}

/// `--help` and `help` list every command; `--config FILE` and `--config=FILE` come before the
/// command; an unknown command is a usage error (2); a missing config exits 6 with a message that
/// does not end in the 6 (`die` used to print its exit status into the message).
#[test]
fn help_options_and_usage_errors() {
    for args in [&["--help"][..], &["help"], &["-h"]] {
        let out = puypuy_sh_bare(None, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        let usage = String::from_utf8_lossy(&out.stdout);
        for word in [
            "start",
            "stop",
            "restart",
            "status [--json]",
            "reload",
            "once",
            "check-config [--strict]",
            "package",
            "--config FILE",
        ] {
            assert!(usage.contains(word), "{word} missing from {args:?}:\n{usage}");
        }
    }
    let out = puypuy_sh_bare(None, &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: puypuy.sh"), "{}", text(&out));
    let out = puypuy_sh_bare(None, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let agent = Agent::new("", "[TSDB]\ntsdtype: File\npath: out.txt\n");
    let elsewhere = agent.path("missing.ini");
    let config = agent.config.to_str().expect("utf-8 path");
    let out = puypuy_sh_bare(Some(&elsewhere), &["--config", config, "check-config"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = puypuy_sh_bare(Some(&elsewhere), &[&format!("--config={config}"), "check-config"]);
    assert!(out.status.success(), "{}", text(&out));

    let out = puypuy_sh_bare(Some(&elsewhere), &["status"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.ini not found"), "{err}");
    assert!(!err.trim_end().ends_with('6'), "the exit status leaked into the message: {err}");
}

/// `reload` validates first: with an invalid config it prints the errors and exits 2 without
/// signalling anything (the processes would refuse it, but only in the log).
#[test]
fn reload_with_an_invalid_config_is_refused_before_any_signal() {
    let agent = Agent::new("system_checks: memory", "[TSDB]\ntsdtype: File\npath: out.txt\n");
    let start = puypuy_sh(&agent, &["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", text(&start));
    let config = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(&agent.config, config.replace("check_period_seconds: 1", "check_period_seconds: soon"))
        .expect("config");
    let out = puypuy_sh(&agent, &["reload"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check_period_seconds"), "{}", text(&out));
    assert!(!text(&out).contains("SIGHUP to pid"), "{}", text(&out));
    // The collector's own refusal of a direct SIGHUP is then the first in the log.
    hup(&agent, "collector");
    let log = wait_for(Duration::from_secs(10), "the collector's refusal", || {
        Some(agent.log()).filter(|l| l.contains("new configuration refused"))
    });
    assert_eq!(log.matches("new configuration refused").count(), 1, "{log}");
    assert!(puypuy_sh(&agent, &["stop"]).status.success());
}

#[test]
fn reload_applies_tags_and_period_refuses_a_bad_config_and_reopens_logs() {
    let influx = Influx::start(false);
    let tsdb = influx_tsdb(&influx);
    let agent = Agent::new("system_checks: load_average", &format!("{tsdb}\n[Tags]\nwave: one\n"));
    let start = puypuy_sh(&agent, &["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    let tagged = |wave: &str| {
        influx
            .points("sys_load_1")
            .into_iter()
            .filter(|p| p.2.get("wave").and_then(|v| v.as_str()) == Some(wave))
            .count()
    };
    wait_for(Duration::from_secs(20), "points of wave one", || (tagged("one") > 0).then_some(()));

    // Log rotation, create style: move the file away, reload, a new file appears.
    let log = agent.path("puypuy.log");
    std::fs::rename(&log, agent.path("puypuy.log.1")).expect("rotate");
    let text = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        text.replace("wave: one", "wave: two").replace("check_period_seconds: 1", "check_period_seconds: 2"),
    )
    .expect("config");
    assert!(puypuy_sh(&agent, &["reload"]).status.success());
    wait_for(Duration::from_secs(20), "points of wave two", || (tagged("two") > 0).then_some(()));
    let two: Vec<u64> = wait_for(Duration::from_secs(20), "three points at the new period", || {
        let t: Vec<u64> =
            influx.points("sys_load_1").into_iter().filter(|p| p.2["wave"] == "two").map(|p| p.0).collect();
        (t.len() >= 3).then_some(t)
    });
    for pair in two.windows(2) {
        assert_eq!(pair[1] - pair[0], 2, "period not reloaded: {two:?}");
    }
    let new_log = std::fs::read_to_string(&log).expect("a new log file after SIGHUP");
    assert!(new_log.contains("SIGHUP: configuration reloaded"), "{new_log}");

    // A broken config is refused and the running one stays: by puypuy.sh before any signal, and
    // by the process itself when signalled directly.
    let text = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(&agent.config, text.replace("check_period_seconds: 2", "check_period_seconds: soon"))
        .expect("config");
    assert_eq!(puypuy_sh(&agent, &["reload"]).status.code(), Some(2));
    hup(&agent, "collector");
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("new configuration refused")).map(|_| ())
    });
    let before = tagged("two");
    wait_for(Duration::from_secs(10), "points still flowing", || (tagged("two") > before + 1).then_some(()));

    // copytruncate: the file is truncated in place; later lines go to its start, not past a hole.
    std::fs::OpenOptions::new().write(true).open(&log).expect("open").set_len(0).expect("truncate");
    hup(&agent, "collector");
    let after = wait_for(Duration::from_secs(10), "lines after the truncation", || {
        std::fs::read(&log).ok().filter(|b| !b.is_empty())
    });
    assert!(!after.contains(&0u8), "the log has a hole of NUL bytes after copytruncate");
    assert!(puypuy_sh(&agent, &["stop"]).status.success());
}

#[test]
fn status_json_reports_processes_and_shipper_metrics() {
    let agent = Agent::new("system_checks: memory", "[TSDB]\ntsdtype: File\npath: out.txt\n");
    let start = puypuy_sh(&agent, &["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    let json = wait_for(Duration::from_secs(20), "shipper metrics in status --json", || {
        let out = puypuy_sh(&agent, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["shipper"]["metrics"]["puypuy_shipper_points_sent"].as_i64()? > 0).then_some(v)
    });
    let names: Vec<&str> =
        json["processes"].as_array().expect("processes").iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.contains(&"shipper") && names.contains(&"collector"), "{json}");
    assert!(
        json["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .all(|p| p["state"] == "running" || p["name"] == "script-runner"),
        "{json}"
    );
    assert!(puypuy_sh(&agent, &["stop"]).status.success());
}

#[test]
fn a_readable_config_with_a_password_is_warned_about() {
    let agent = Agent::new("", "[TSDB]\ntsdtype: InfluxDB\naddress: http://127.0.0.1:1\ndatabase: d\nauth: True\nuser: u\npass: Very-Secret-9\n");
    std::fs::set_permissions(&agent.config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = agent
        .command("puypuy-collector")
        .args(["--once", "--dry-run"])
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds a password and is readable by group or others (mode 644)"), "{err}");
    assert!(!err.contains("Very-Secret-9"));
    std::fs::set_permissions(&agent.config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = agent
        .command("puypuy-collector")
        .args(["--once", "--dry-run"])
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("holds a password"));
}

#[test]
fn run_user_owns_the_processes_and_their_files() {
    let user = "puypuy-test";
    let _ =
        Command::new("useradd").args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]).output();
    let uid: u32 = String::from_utf8_lossy(&Command::new("id").args(["-u", user]).output().expect("id").stdout)
        .trim()
        .parse()
        .expect("the test user exists");
    let agent = Agent::new(
        &format!("run_user: {user}\nsystem_checks: memory"),
        "[TSDB]\ntsdtype: File\npath: out/metrics.txt\n",
    );
    // The user must be able to reach its files: the temp dir is private to root otherwise.
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir_all(agent.path("out")).expect("out");
    Command::new("chown").arg(user).arg(agent.path("out")).status().expect("chown");
    let start = puypuy_sh(&agent, &["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    wait_for(Duration::from_secs(20), "metrics written", || {
        std::fs::read_to_string(agent.path("out/metrics.txt")).ok().filter(|t| t.contains("mem_total")).map(|_| ())
    });
    for name in ["shipper", "collector"] {
        let pid = std::fs::read_to_string(agent.path(&format!("run/puypuy.{name}.pid"))).expect("pid");
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).expect("status");
        let real_uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .expect("uid");
        assert_eq!(real_uid, uid, "{name} runs as uid {real_uid}");
    }
    for file in ["spool/shipper.sock", "puypuy.log", "out/metrics.txt"] {
        let meta = wait_for(Duration::from_secs(15), file, || std::fs::metadata(agent.path(file)).ok());
        assert_eq!(meta.uid(), uid, "{file} belongs to uid {}", meta.uid());
    }
    assert!(puypuy_sh(&agent, &["stop"]).status.success());
    // The rate state is written at the latest on SIGTERM.
    let meta = std::fs::metadata(agent.path("spool/rates.state")).expect("rates.state after stop");
    assert_eq!(meta.uid(), uid, "rates.state belongs to uid {}", meta.uid());
}
