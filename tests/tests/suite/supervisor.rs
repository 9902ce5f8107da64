//! `./puypuy.sh` as the supervisor: start, status, a watchdog that brings killed processes back
//! within 5 s, no points lost across a shipper kill -9, and a stop that leaves nothing behind.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use puypuy_tests::{wait_for, Agent, Influx};

fn puypuy_sh(agent: &Agent, args: &[&str]) -> Output {
    puypuy_tests::puypuy_sh(&agent.config, args)
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
