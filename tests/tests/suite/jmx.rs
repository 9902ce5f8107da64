//! The jmx-bridge against real JVMs (the `tests/fixtures/JmxTarget.java` program) into a real
//! InfluxDB: remote JMX with and without a password, a local JVM found by main class, a target
//! restarted, and the bridge killed under puypuy.sh while the collector keeps shipping.

use std::collections::BTreeSet;
use std::time::Duration;

use puypuy_tests::services::JavaTarget;
use puypuy_tests::{wait_for, Agent, Influx, Proc};

fn influx_tsdb(influx: &Influx) -> String {
    format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB)
}

fn of_target(influx: &Influx, name: &str, jmx: &str) -> Vec<(u64, f64)> {
    influx
        .points(name)
        .into_iter()
        .filter(|p| p.2.get("jmx").and_then(|v| v.as_str()) == Some(jmx))
        .filter_map(|p| Some((p.0, p.1.as_f64()?)))
        .collect()
}

fn start_bridge(agent: &Agent) -> Proc {
    Proc::spawn("puypuy-jmx-bridge", &mut agent.command("puypuy-jmx-bridge"))
}

#[test]
fn remote_targets_with_and_without_password_and_a_local_one_by_main_class() {
    let influx = Influx::start(false);
    let open = JavaTarget::start(false);
    let locked = JavaTarget::start(true);
    let sections = format!(
        "[JMX:open]\nurl: {}\nbeans: java.lang:type=Memory HeapMemoryUsage.used\n\n[JMX:locked]\nurl: {}\njmx_user: monitor\njmx_pass: jmxpw\n\n[JMX:local]\nclass: JmxTarget\n",
        open.url(),
        locked.url()
    );
    let agent = Agent::new("system_checks: none", &format!("{}\n{sections}", influx_tsdb(&influx)));
    let _shipper = agent.start_shipper();
    let _bridge = start_bridge(&agent);
    for jmx in ["open", "locked", "local"] {
        let heap = wait_for(Duration::from_secs(30), &format!("jmx_heap_used of {jmx}"), || {
            let v = of_target(&influx, "jmx_heap_used", jmx);
            (!v.is_empty()).then_some(v)
        });
        assert!(heap[0].1 > 0.0 || heap.len() > 1, "{jmx}: {heap:?}");
        assert!(!of_target(&influx, "jmx_threadcount", jmx).is_empty(), "{jmx}: no thread count");
        let gc = wait_for(Duration::from_secs(10), "GC counts", || {
            let p: Vec<_> =
                influx.points("jmx_gc_collection_count").into_iter().filter(|p| p.2["jmx"] == jmx).collect();
            (!p.is_empty()).then_some(p)
        });
        assert!(gc.iter().all(|p| p.2.contains_key("gc")), "{gc:?}");
    }
    let extra = wait_for(Duration::from_secs(10), "the extra bean", || {
        let v = of_target(&influx, "jmx_heapmemoryusage_used", "open");
        (!v.is_empty()).then_some(v)
    });
    assert!(extra[0].1 >= 0.0);
    let log = agent.log();
    assert!(!log.contains("cannot read MBeans"), "{log}");
    assert!(log.contains("RSS"), "{log}");
}

#[test]
fn a_reload_that_changes_a_url_reads_the_new_target() {
    let influx = Influx::start(false);
    let first = JavaTarget::start(false);
    let second = JavaTarget::start(false);
    let section = |url: &str| format!("[JMX:app]\nurl: {url}\nbeans: java.lang:type=Runtime Pid\n");
    let agent = Agent::new("system_checks: none", &format!("{}\n{}", influx_tsdb(&influx), section(&first.url())));
    let _shipper = agent.start_shipper();
    let bridge = start_bridge(&agent);
    let pid_of = |target: &JavaTarget| f64::from(target.proc.pid());
    wait_for(Duration::from_secs(30), "the first target's pid", || {
        of_target(&influx, "jmx_pid", "app").iter().any(|p| p.1 == pid_of(&first)).then_some(())
    });
    // Same section, another url: the open connection to the first target (still running) must
    // not be reused.
    let text = std::fs::read_to_string(&agent.config).expect("config").replace(&first.url(), &second.url());
    std::fs::write(&agent.config, text).expect("write config");
    bridge.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(30), "the second target's pid after the reload", || {
        of_target(&influx, "jmx_pid", "app").iter().any(|p| p.1 == pid_of(&second)).then_some(())
    });
}

#[test]
fn a_wrong_jmx_password_is_logged_once() {
    let influx = Influx::start(false);
    let locked = JavaTarget::start(true);
    let sections = format!("[JMX:locked]\nurl: {}\njmx_user: monitor\njmx_pass: Jmx-Secret-9\n", locked.url());
    let agent = Agent::new("system_checks: load_average", &format!("{}\n{sections}", influx_tsdb(&influx)));
    let _shipper = agent.start_shipper();
    let _collector = agent.start_collector();
    let _bridge = start_bridge(&agent);
    wait_for(Duration::from_secs(20), "a few cycles", || (influx.points("sys_load_1").len() >= 4).then_some(()));
    let log = agent.log();
    assert_eq!(log.matches("[JMX:locked] cannot read MBeans").count(), 1, "{log}");
    assert!(!log.contains("Jmx-Secret-9"), "{log}");
}

#[test]
fn a_restarted_target_resumes() {
    let influx = Influx::start(false);
    let mut target = JavaTarget::start(false);
    let agent =
        Agent::new("system_checks: none", &format!("{}\n[JMX:app]\nurl: {}\n", influx_tsdb(&influx), target.url()));
    let _shipper = agent.start_shipper();
    let _bridge = start_bridge(&agent);
    wait_for(Duration::from_secs(30), "first heap points", || {
        (!of_target(&influx, "jmx_heap_used", "app").is_empty()).then_some(())
    });
    target.kill();
    let killed_at = of_target(&influx, "jmx_heap_used", "app").last().map(|p| p.0).unwrap_or(0);
    // Restart only once the bridge has seen the outage.
    wait_for(Duration::from_secs(15), "the outage in the log", || {
        agent.log().contains("[JMX:app] cannot read MBeans").then_some(())
    });
    target.restart();
    wait_for(Duration::from_secs(30), "heap points after the restart", || {
        of_target(&influx, "jmx_heap_used", "app").iter().any(|p| p.0 > killed_at + 2).then_some(())
    });
    let log = agent.log();
    assert_eq!(log.matches("[JMX:app] cannot read MBeans").count(), 1, "{log}");
    assert!(log.contains("[JMX:app] reachable again"), "{log}");
}

#[test]
fn bridge_killed_under_puypuy_sh_comes_back_and_the_collector_never_stops() {
    let influx = Influx::start(false);
    let target = JavaTarget::start(false);
    let agent = Agent::new(
        "system_checks: load_average",
        &format!("{}\n[JMX:app]\nurl: {}\n", influx_tsdb(&influx), target.url()),
    );
    let run = |args: &[&str]| puypuy_tests::puypuy_sh(&agent.config, args);
    let start = run(&["start"]);
    let _stop = puypuy_tests::StopOnDrop(agent.config.clone());
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    assert!(
        String::from_utf8_lossy(&start.stdout).contains("jmx-bridge: started"),
        "{}",
        String::from_utf8_lossy(&start.stdout)
    );
    wait_for(Duration::from_secs(30), "jmx points", || {
        (!of_target(&influx, "jmx_heap_used", "app").is_empty()).then_some(())
    });
    let pidfile = agent.path("run/puypuy.jmx-bridge.pid");
    let read_pid = || std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok());
    let old = read_pid().expect("bridge pid");
    let first =
        wait_for(Duration::from_secs(20), "collector points", || influx.points("sys_load_1").first().map(|p| p.0));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), nix::sys::signal::Signal::SIGKILL).expect("kill");
    wait_for(Duration::from_secs(5), "the bridge back", || {
        read_pid().filter(|p| *p != old && std::path::Path::new(&format!("/proc/{p}")).exists())
    });
    let killed_at = influx.points("sys_load_1").last().map(|p| p.0).unwrap_or(0);
    let after = wait_for(Duration::from_secs(30), "jmx points after the restart", || {
        of_target(&influx, "jmx_heap_used", "app").last().map(|p| p.0).filter(|t| *t > killed_at + 1)
    });
    let times: BTreeSet<u64> = influx.points("sys_load_1").into_iter().map(|p| p.0).collect();
    let missing: Vec<u64> = (first..=after).filter(|t| !times.contains(t)).collect();
    assert!(missing.is_empty(), "collector points missing while the bridge was down: {missing:?}");
    let stop = run(&["stop"]);
    assert!(stop.status.success());
}
