//! `./puypuy.sh` as the supervisor: start, status, a watchdog that brings killed processes back
//! within 5 s, no points lost across a shipper kill -9, and a stop that leaves nothing behind;
//! one puypuy.sh at a time, pid files that name someone else's process (or another config's), a
//! TERM at any moment, a restart that keeps the running processes when the new config is invalid,
//! a stop that finds what runs after the config changed or broke, and a status that tells.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use puypuy_tests::{wait_for, Agent, Influx, Proc};

fn puypuy_sh(agent: &Agent, args: &[&str]) -> Output {
    puypuy_tests::puypuy_sh(&agent.config, args)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A config that needs no server: the memory check, written to a file.
fn file_agent(self_extra: &str) -> Agent {
    Agent::new(&format!("system_checks: memory\n{self_extra}"), "[TSDB]\ntsdtype: File\npath: out.txt\n")
}

/// The watchdogs of this test's config, by process name.
fn watchdogs_of(agent: &Agent, name: &str) -> Vec<i32> {
    processes_of(agent)
        .into_iter()
        .filter(|(_, cmdline)| cmdline.split(' ').collect::<Vec<_>>().windows(2).any(|w| w == ["_watchdog", name]))
        .map(|(pid, _)| pid)
        .collect()
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Processes whose command line mentions this test's config.
fn processes_of(agent: &Agent) -> Vec<(i32, String)> {
    let needle = agent.config.display().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let environ = String::from_utf8_lossy(&environ);
        if (cmdline.contains(&needle) || environ.contains(&needle)) && alive(pid) {
            out.push((pid, cmdline));
        }
    }
    out
}

fn restarted(path: &Path, old: i32) -> i32 {
    wait_for(Duration::from_secs(5), &format!("a new process in {}", path.display()), || {
        read_pid(path).filter(|p| *p != old && alive(*p))
    })
}

#[test]
fn watchdog_restarts_killed_processes_and_stop_leaves_nothing() {
    let influx = Influx::start(false);
    let agent =
        Agent::new("", &format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB));
    let start = puypuy_sh(&agent, &["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(
        start.status.success(),
        "start: {}{}",
        String::from_utf8_lossy(&start.stdout),
        String::from_utf8_lossy(&start.stderr)
    );
    let status = puypuy_sh(&agent, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert_eq!(status.status.code(), Some(0), "{text}");
    assert!(text.contains("shipper") && text.contains("collector") && text.contains("script-runner"), "{text}");
    assert_eq!(text.matches("running").count(), 3, "{text}");

    wait_for(Duration::from_secs(20), "first sys_load_1", || (!influx.points("sys_load_1").is_empty()).then_some(()));
    let collector_pidfile = agent.path("run/puypuy.collector.pid");
    let shipper_pidfile = agent.path("run/puypuy.shipper.pid");

    let old = read_pid(&collector_pidfile).expect("collector pid");
    kill(Pid::from_raw(old), Signal::SIGKILL).expect("kill collector");
    restarted(&collector_pidfile, old);
    let after_collector_restart = influx.points("sys_load_1").last().map(|p| p.0).unwrap_or(0) + 2;

    let old = read_pid(&shipper_pidfile).expect("shipper pid");
    kill(Pid::from_raw(old), Signal::SIGKILL).expect("kill shipper");
    restarted(&shipper_pidfile, old);

    // Every second from after the collector's restart to well after the shipper's must arrive:
    // what the collector queued while the shipper was down, and what the killed shipper held
    // unacknowledged, is resent.
    let end = after_collector_restart + 6;
    let got = wait_for(Duration::from_secs(20), "sys_load_1 points across the shipper kill", || {
        let times: BTreeSet<u64> = influx.points("sys_load_1").into_iter().map(|p| p.0).collect();
        times.range(end..).next().is_some().then_some(times)
    });
    let missing: Vec<u64> = (after_collector_restart..=end).filter(|t| !got.contains(t)).collect();
    assert!(missing.is_empty(), "timestamps missing after the shipper's kill -9: {missing:?} (got {got:?})");

    let status = puypuy_sh(&agent, &["status", "shipper"]);
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(text.contains("restarts 1"), "{text}");

    let stop = puypuy_sh(&agent, &["stop"]);
    assert!(stop.status.success());
    let left = processes_of(&agent);
    assert!(left.is_empty(), "processes left after stop: {left:?}");
    let status = puypuy_sh(&agent, &["status"]);
    assert_eq!(status.status.code(), Some(3), "{}", String::from_utf8_lossy(&status.stdout));
}

#[test]
fn start_with_a_broken_config_fails_with_the_message() {
    let agent = Agent::new("", "");
    std::fs::write(&agent.config, "[SelfConfig]\ntmpdir: spool\npid_file: run/p.pid\nlog_file: p.log\ncheck_period_seconds: soon\n[TSDB]\ntsdtype: File\npath: out.txt\n").expect("write");
    let out = puypuy_sh(&agent, &["start"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[SelfConfig] check_period_seconds: \"soon\" is not a number"), "{err}");
    assert!(processes_of(&agent).is_empty());
}

#[test]
fn killed_script_runner_comes_back_and_collector_points_never_stop() {
    let influx = Influx::start(false);
    let agent =
        Agent::new("", &format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB));
    std::fs::create_dir_all(agent.path("scripts_enabled")).expect("scripts dir");
    let script = agent.path("scripts_enabled/check_one");
    std::fs::write(&script, "#!/bin/sh\necho 'script_point 1 s stack'\n").expect("script");
    Command::new("chmod").arg("755").arg(&script).status().expect("chmod");
    let start = puypuy_sh(&agent, &["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    wait_for(Duration::from_secs(20), "script_point", || (!influx.points("script_point").is_empty()).then_some(()));
    let first =
        wait_for(Duration::from_secs(20), "collector points", || influx.points("sys_load_1").first().map(|p| p.0));
    let runner_pidfile = agent.path("run/puypuy.script-runner.pid");
    let old = read_pid(&runner_pidfile).expect("runner pid");
    kill(Pid::from_raw(old), Signal::SIGKILL).expect("kill runner");
    restarted(&runner_pidfile, old);
    let killed_at = influx.points("sys_load_1").last().map(|p| p.0).expect("points");
    let after = wait_for(Duration::from_secs(20), "script points after the restart", || {
        let t = influx.points("script_point").last().map(|p| p.0)?;
        (t > killed_at + 1).then_some(t)
    });
    let times: BTreeSet<u64> = influx.points("sys_load_1").into_iter().map(|p| p.0).collect();
    let missing: Vec<u64> = (first..=after).filter(|t| !times.contains(t)).collect();
    assert!(missing.is_empty(), "collector points missing while the runner was down: {missing:?}");
    let stop = puypuy_sh(&agent, &["stop"]);
    assert!(stop.status.success());
    assert!(processes_of(&agent).is_empty());
}

/// Regression: two `start`s at once each found no watchdog and started one, so every process ran
/// twice. puypuy.sh now takes a lock beside the pid files around start, stop, restart and reload.
#[test]
fn concurrent_starts_make_one_watchdog_per_process() {
    let agent = file_agent("");
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    let starts: Vec<_> = (0..3)
        .map(|_| {
            Command::new(puypuy_tests::repo_root().join("puypuy.sh"))
                .arg("start")
                .env("PUYPUY_CONFIG", &agent.config)
                .env("PUYPUY_BIN_DIR", puypuy_tests::bin_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("puypuy.sh start")
        })
        .collect();
    for start in starts {
        let out = start.wait_with_output().expect("start");
        assert!(out.status.success(), "{}", text(&out));
    }
    for name in ["shipper", "collector", "script-runner"] {
        let watchdogs = watchdogs_of(&agent, name);
        assert_eq!(watchdogs.len(), 1, "{name}: watchdogs {watchdogs:?} in {:?}", processes_of(&agent));
    }
    let collectors = processes_of(&agent).into_iter().filter(|(_, c)| c.contains("puypuy-collector ")).count();
    assert_eq!(collectors, 1, "{:?}", processes_of(&agent));
    assert!(puypuy_sh(&agent, &["stop"]).status.success());
    assert!(processes_of(&agent).is_empty(), "{:?}", processes_of(&agent));
}

/// Regression: a pid file left by a crash names a pid the system may since have given to another
/// process; `stop` sent it TERM, then KILL. Only a process of ours (the binary or its watchdog) is
/// signalled now.
#[test]
fn stop_leaves_alone_an_unrelated_process_named_by_a_pid_file() {
    let agent = file_agent("");
    std::fs::create_dir_all(agent.path("run")).expect("run dir");
    let mut sleeper = Proc::spawn("sleep", Command::new("sleep").arg("60"));
    let pid = sleeper.pid().to_string();
    std::fs::write(agent.path("run/puypuy.collector.pid"), &pid).expect("pid file");
    std::fs::write(agent.path("run/puypuy.shipper.watchdog.pid"), &pid).expect("pid file");
    let status = puypuy_sh(&agent, &["status", "collector"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    assert!(text(&status).contains("dead (stale pid file)"), "{}", text(&status));
    // Regression: the exit status was the highest of the processes', so dead (1) with stopped (3)
    // gave 3; any dead process makes it 1 (LSB: dead with a pid file left).
    let status = puypuy_sh(&agent, &["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    let stop = puypuy_sh(&agent, &["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(sleeper.is_running(), "stop signalled the unrelated process {pid}: {}", text(&stop));
    assert!(!agent.path("run/puypuy.collector.pid").exists(), "the stale pid file is removed");
    assert_eq!(puypuy_sh(&agent, &["status"]).status.code(), Some(3));
}

/// Regression: a TERM that reached a watchdog after its loop had checked for one but before it had
/// recorded its new child was lost: the child ran on, and `stop` waited 30 s before killing it.
/// A `date` that pauses holds the watchdog in that window: after a child's death the watchdog
/// reads the clock (`date +%s`) once to pick its backoff and once more when it starts the next
/// child, after its loop's test; the second reading pauses.
#[test]
fn a_term_while_the_watchdog_starts_its_process_stops_both() {
    let agent = file_agent("");
    let real_date = puypuy_tests::require("date");
    let wrappers = agent.path("slow-bin");
    std::fs::create_dir_all(&wrappers).expect("dir");
    let (arm, armed, fired) = (agent.path("date.arm"), agent.path("date.armed"), agent.path("date.fired"));
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = +%s ]; then\n  if rm {arm} 2>/dev/null; then touch {armed}\n  \
         elif rm {armed} 2>/dev/null; then touch {fired}; sleep 1; fi\nfi\nexec {date} \"$@\"\n",
        arm = arm.display(),
        armed = armed.display(),
        fired = fired.display(),
        date = real_date.display()
    );
    std::fs::write(wrappers.join("date"), script).expect("date wrapper");
    Command::new("chmod").arg("755").arg(wrappers.join("date")).status().expect("chmod");
    let path = format!("{}:{}", wrappers.display(), std::env::var("PATH").unwrap_or_default());
    let start = Command::new(puypuy_tests::repo_root().join("puypuy.sh"))
        .args(["start", "collector"])
        .env("PUYPUY_CONFIG", &agent.config)
        .env("PUYPUY_BIN_DIR", puypuy_tests::bin_dir())
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("start");
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", text(&start));
    let watchdog = read_pid(&agent.path("run/puypuy.collector.watchdog.pid")).expect("watchdog pid");
    let child = read_pid(&agent.path("run/puypuy.collector.pid")).expect("collector pid");

    std::fs::write(&arm, "").expect("arm");
    kill(Pid::from_raw(child), Signal::SIGKILL).expect("kill collector");
    wait_for(Duration::from_secs(10), "the watchdog in its restart", || fired.exists().then_some(()));
    kill(Pid::from_raw(watchdog), Signal::SIGTERM).expect("TERM the watchdog");
    wait_for(Duration::from_secs(8), "the watchdog to end", || (!alive(watchdog)).then_some(()));
    let left = processes_of(&agent);
    assert!(left.is_empty(), "left after the watchdog's TERM: {left:?}");
}

/// Regression: bash reported the watchdog's killed child in the log (`puypuy.sh: line 125: 31817
/// Killed "$bin" …`), a line in no format of ours.
#[test]
fn a_killed_process_leaves_no_bash_job_notice_in_the_log() {
    let agent = file_agent("");
    let start = puypuy_sh(&agent, &["start", "collector"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", text(&start));
    let pidfile = agent.path("run/puypuy.collector.pid");
    let old = read_pid(&pidfile).expect("collector pid");
    kill(Pid::from_raw(old), Signal::SIGKILL).expect("kill collector");
    restarted(&pidfile, old);
    let log = wait_for(Duration::from_secs(5), "the restart in the log", || {
        Some(agent.log()).filter(|l| l.contains("restarting in"))
    });
    assert!(!log.contains("Killed"), "{log}");
    assert!(puypuy_sh(&agent, &["stop"]).status.success());
}

/// `restart` builds and validates first: with an invalid config it prints the errors, exits 2 and
/// leaves the running processes alone (it used to stop them, then fail to start).
#[test]
fn restart_with_an_invalid_config_keeps_the_running_processes() {
    let agent = file_agent("");
    let start = puypuy_sh(&agent, &["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", text(&start));
    let pids: Vec<i32> = ["shipper", "collector"]
        .iter()
        .map(|n| read_pid(&agent.path(&format!("run/puypuy.{n}.pid"))).expect("pid"))
        .collect();
    let config = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(&agent.config, config.replace("check_period_seconds: 1", "check_period_seconds: soon"))
        .expect("config");
    let restart = puypuy_sh(&agent, &["restart"]);
    assert_eq!(restart.status.code(), Some(2), "{}", text(&restart));
    assert!(text(&restart).contains("check_period_seconds"), "{}", text(&restart));
    for (name, pid) in ["shipper", "collector"].iter().zip(&pids) {
        assert!(alive(*pid), "{name} (pid {pid}) was stopped");
        assert_eq!(read_pid(&agent.path(&format!("run/puypuy.{name}.pid"))), Some(*pid));
    }
    let status = puypuy_sh(&agent, &["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
}

/// The config's warnings (unknown keys, with a did-you-mean) show once at start, on the terminal;
/// they used to be checked once per process and thrown away.
#[test]
fn start_prints_the_config_warnings_once() {
    let agent = file_agent("check_perod_seconds: 5");
    let start = puypuy_sh(&agent, &["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", text(&start));
    let err = String::from_utf8_lossy(&start.stderr);
    assert_eq!(err.matches("check_perod_seconds").count(), 1, "{err}");
    assert!(puypuy_sh(&agent, &["stop"]).status.success());
}

/// Regression: puypuy.sh read its paths with an awk INI parser of its own that could disagree with
/// the binaries' (here on a value given on an indented continuation line, which ConfigParser and
/// the binaries accept): it waited for the shipper's socket where the shipper never made it, and
/// `start` failed. It now asks the binaries (`--print-config`).
#[test]
fn puypuy_sh_finds_the_paths_where_the_binaries_do() {
    let agent = file_agent("socket:\n    sock/shipper.sock");
    std::fs::create_dir_all(agent.path("sock")).expect("sock dir");
    let start = puypuy_sh(&agent, &["start", "shipper"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", text(&start));
    assert!(agent.path("sock/shipper.sock").exists());
    let status = puypuy_sh(&agent, &["status", "shipper"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(puypuy_sh(&agent, &["stop"]).status.success());
    assert!(processes_of(&agent).is_empty(), "{:?}", processes_of(&agent));
}

/// The processes of this test's config whose binary is `puypuy-NAME` (not their watchdogs).
fn binaries_of(agent: &Agent, name: &str) -> Vec<i32> {
    let exe = format!("puypuy-{name}");
    processes_of(agent)
        .into_iter()
        .filter(|(pid, _)| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.to_string_lossy().trim_end_matches(" (deleted)").ends_with(&format!("/{exe}")))
                .unwrap_or(false)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Writes the config back as it was when dropped: declared after `StopOnDrop`, it is dropped
/// before it, so that a failed test's processes are still stopped.
struct RestoreConfig(std::path::PathBuf, String);

impl Drop for RestoreConfig {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, &self.1);
    }
}

/// Regression: stop and restart acted only on the processes the current config names, so after
/// `[JMX]` was removed from config.ini `./puypuy.sh stop` left the running jmx-bridge and its
/// watchdog behind and exited 0. They, and status, now also take every process whose pid file
/// names a live process of ours. No JVM is needed: the "jmx-bridge" here is a copy of the
/// collector under the bridge's name, which puypuy.sh starts and watches like the real one.
#[test]
fn stop_and_restart_take_a_running_process_the_config_no_longer_names() {
    let jmx = "[JMX]\nurl: service:jmx:rmi:///jndi/rmi://127.0.0.1:1/jmxrmi\n";
    let agent = Agent::new("system_checks: memory", &format!("[TSDB]\ntsdtype: File\npath: out.txt\n{jmx}"));
    let bins = agent.path("bin");
    std::fs::create_dir_all(&bins).expect("bin dir");
    for name in ["shipper", "collector", "script-runner"] {
        let binary = format!("puypuy-{name}");
        std::os::unix::fs::symlink(puypuy_tests::bin(&binary), bins.join(&binary)).expect("symlink");
    }
    std::fs::copy(puypuy_tests::bin("puypuy-collector"), bins.join("puypuy-jmx-bridge")).expect("fake bridge");
    let sh = |args: &[&str]| {
        Command::new(puypuy_tests::repo_root().join("puypuy.sh"))
            .args(args)
            .env("PUYPUY_CONFIG", &agent.config)
            .env("PUYPUY_BIN_DIR", &bins)
            .stdin(Stdio::null())
            .output()
            .expect("puypuy.sh")
    };
    let with_jmx = std::fs::read_to_string(&agent.config).expect("config");
    let without_jmx = with_jmx.replace(jmx, "");
    let start = sh(&["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    let _restore = RestoreConfig(agent.config.clone(), with_jmx.clone());
    assert!(start.status.success(), "{}", text(&start));
    let bridge = read_pid(&agent.path("run/puypuy.jmx-bridge.pid")).expect("bridge pid");

    std::fs::write(&agent.config, &without_jmx).expect("config");
    let status = sh(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(text(&status).contains("jmx-bridge     running"), "{}", text(&status));
    let restart = sh(&["restart"]);
    assert!(restart.status.success(), "{}", text(&restart));
    assert!(text(&restart).contains("jmx-bridge: stopped"), "{}", text(&restart));
    assert!(!alive(bridge), "restart left the jmx-bridge (pid {bridge}) running");
    assert!(watchdogs_of(&agent, "jmx-bridge").is_empty(), "{:?}", processes_of(&agent));
    assert_eq!(binaries_of(&agent, "collector").len(), 1, "{:?}", processes_of(&agent));

    std::fs::write(&agent.config, &with_jmx).expect("config");
    let start = sh(&["start", "jmx-bridge"]);
    assert!(start.status.success(), "{}", text(&start));
    std::fs::write(&agent.config, &without_jmx).expect("config");
    let stop = sh(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(text(&stop).contains("jmx-bridge: stopped"), "{}", text(&stop));
    let left = processes_of(&agent);
    assert!(left.is_empty(), "processes left after stop: {left:?}");
}

/// Regression: a syntax error in config.ini made after start made the agent unstoppable:
/// `--print-config` refuses such a file, so stop died before it read a pid file. start now records
/// the paths it used in a state file found from the config's path alone, and stop and status fall
/// back to it.
#[test]
fn stop_finds_the_processes_after_a_syntax_error_in_the_config() {
    let agent = file_agent("");
    let start = puypuy_sh(&agent, &["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    let config = std::fs::read_to_string(&agent.config).expect("config");
    let _restore = RestoreConfig(agent.config.clone(), config.clone());
    assert!(start.status.success(), "{}", text(&start));
    // A line with no separator inside [SelfConfig], where the binaries refuse to print anything.
    std::fs::write(&agent.config, config.replacen("[SelfConfig]\n", "[SelfConfig]\nthis line is not ini\n", 1))
        .expect("config");
    let status = puypuy_sh(&agent, &["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(text(&status).contains("recorded at start"), "{}", text(&status));
    assert_eq!(text(&status).matches("running").count(), 3, "{}", text(&status));
    let stop = puypuy_sh(&agent, &["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    let left = processes_of(&agent);
    assert!(left.is_empty(), "processes left after stop: {left:?}");
    assert!(!agent.path("run/puypuy.collector.pid").exists());
}

/// Regression: start checked only the watchdog: with the watchdog killed (kill -9) and its process
/// running on, start removed the process's pid file and started a second one. It now refuses,
/// says so, and `stop` still finds the orphan.
#[test]
fn start_after_a_killed_watchdog_starts_no_second_copy() {
    let agent = file_agent("");
    let start = puypuy_sh(&agent, &["start", "collector"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", text(&start));
    let watchdog = read_pid(&agent.path("run/puypuy.collector.watchdog.pid")).expect("watchdog pid");
    let collector = read_pid(&agent.path("run/puypuy.collector.pid")).expect("collector pid");
    kill(Pid::from_raw(watchdog), Signal::SIGKILL).expect("kill the watchdog");
    wait_for(Duration::from_secs(5), "the watchdog to end", || (!alive(watchdog)).then_some(()));

    let again = puypuy_sh(&agent, &["start", "collector"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("without its watchdog"), "{}", text(&again));
    assert_eq!(binaries_of(&agent, "collector"), vec![collector], "{:?}", processes_of(&agent));
    let status = puypuy_sh(&agent, &["status", "collector"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(text(&status).contains("watchdog is gone"), "{}", text(&status));

    assert!(puypuy_sh(&agent, &["stop"]).status.success());
    let left = processes_of(&agent);
    assert!(left.is_empty(), "processes left after stop: {left:?}");
}

/// Regression: any process with an argument named puypuy-NAME counted as ours: a debugger holding
/// the binary (`gdb /usr/bin/puypuy-shipper`), or another config's process on a host running two.
/// Now only the binary itself (/proc/PID/exe) run with this config, or a watchdog of this config,
/// is: A's stop, given pid files naming B's processes, leaves them alone.
#[test]
fn stop_leaves_alone_another_configs_processes_and_lookalikes() {
    let a = file_agent("");
    let b = file_agent("");
    let start = puypuy_sh(&b, &["start", "collector"]);
    let _stop_b = puypuy_tests::StopOnDrop(b.config.clone());
    assert!(start.status.success(), "{}", text(&start));
    let b_watchdog = read_pid(&b.path("run/puypuy.collector.watchdog.pid")).expect("watchdog pid");
    let b_collector = read_pid(&b.path("run/puypuy.collector.pid")).expect("collector pid");
    let mut lookalike = Proc::spawn(
        "sh",
        Command::new("sh").args(["-c", "sleep 60; :"]).arg(puypuy_tests::bin("puypuy-shipper")).arg(&a.config),
    );
    std::fs::create_dir_all(a.path("run")).expect("run dir");
    std::fs::write(a.path("run/puypuy.collector.pid"), b_collector.to_string()).expect("pid file");
    std::fs::write(a.path("run/puypuy.collector.watchdog.pid"), b_watchdog.to_string()).expect("pid file");
    std::fs::write(a.path("run/puypuy.shipper.pid"), lookalike.pid().to_string()).expect("pid file");

    let status = puypuy_sh(&a, &["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    assert!(!text(&status).contains("running"), "{}", text(&status));
    let stop = puypuy_sh(&a, &["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(alive(b_watchdog) && alive(b_collector), "A's stop signalled B's collector: {}", text(&stop));
    assert!(lookalike.is_running(), "A's stop signalled a process that only names puypuy-shipper");
    let status = puypuy_sh(&b, &["status", "collector"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(puypuy_sh(&b, &["stop"]).status.success());
    assert!(processes_of(&b).is_empty(), "{:?}", processes_of(&b));
}

/// Regression: a watchdog whose process exits with status 2 (invalid configuration) gives up and
/// removes both pid files, so status showed a clean "stopped" (3). It now leaves a marker: status
/// says what happened and exits 1; start and stop clear it.
#[test]
fn status_reports_a_process_its_watchdog_gave_up_on() {
    let agent = file_agent("");
    let start = puypuy_sh(&agent, &["start", "collector"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    let config = std::fs::read_to_string(&agent.config).expect("config");
    let _restore = RestoreConfig(agent.config.clone(), config.clone());
    assert!(start.status.success(), "{}", text(&start));
    let watchdog = read_pid(&agent.path("run/puypuy.collector.watchdog.pid")).expect("watchdog pid");
    let collector = read_pid(&agent.path("run/puypuy.collector.pid")).expect("collector pid");
    std::fs::write(&agent.config, config.replace("tsdtype: File", "tsdtype: Nope")).expect("config");
    kill(Pid::from_raw(collector), Signal::SIGKILL).expect("kill the collector");
    wait_for(Duration::from_secs(10), "the watchdog to give up", || (!alive(watchdog)).then_some(()));

    let status = puypuy_sh(&agent, &["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    assert!(
        text(&status).contains("collector      exited with status 2 (invalid configuration), not restarted"),
        "{}",
        text(&status)
    );
    let json = puypuy_sh(&agent, &["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status --json");
    let collector = json["processes"].as_array().expect("processes").iter().find(|p| p["name"] == "collector");
    assert_eq!(collector.map(|p| p["state"].clone()), Some("failed".into()), "{json}");

    std::fs::write(&agent.config, &config).expect("config");
    assert!(puypuy_sh(&agent, &["stop"]).status.success());
    let status = puypuy_sh(&agent, &["status"]);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));
}
