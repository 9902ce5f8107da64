//! The old agent's Python check modules (tests/fixtures/python_checks/) run by the script-runner's
//! Python host against real servers, into a real InfluxDB: both styles and both import forms, the
//! old README's two examples, rates owned by the shipper, and the broken modules (one that hangs,
//! one that raises at import, one without its driver, one printing to stdout, one sending None and
//! text) without harm to the others.

use std::time::Duration;

use puypuy_tests::services::{memcached, nginx, redis, MariaDb};
use puypuy_tests::{repo_root, wait_for, Agent, Influx, Proc};

fn copy_modules(agent: &Agent, names: &[&str]) {
    let dir = agent.path("checks_enabled");
    std::fs::create_dir_all(&dir).expect("checks_enabled");
    for name in names {
        let from = repo_root().join("tests/fixtures/python_checks").join(name);
        std::fs::copy(&from, dir.join(name)).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

fn first(influx: &Influx, name: &str) -> (u64, serde_json::Value, serde_json::Map<String, serde_json::Value>) {
    wait_for(Duration::from_secs(30), name, || influx.points(name).first().cloned())
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn modules_of_both_styles_against_real_servers_and_broken_ones_beside_them() {
    let influx = Influx::start(false);
    let redis = redis(None);
    let memcached = memcached();
    let nginx = nginx(None);
    let db = MariaDb::start();
    let agent = Agent::new(
        "script_timeout_seconds: 2\npython: /usr/bin/python3",
        &format!(
            "[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n\
             [PyProc]\nenabled: True\nlabel: x\n\
             [PyNginx]\naddress: http://127.0.0.1:{}\nauth: True\nuser: agent\npass: s3cret\n\
             [PyMySQL]\nhost: 127.0.0.1\nport: {}\nuser: {}\npass: {}\n",
            influx.url(),
            Influx::DB,
            nginx.port,
            db.port,
            MariaDb::USER,
            MariaDb::PASS
        ),
    );
    // Sections in conf.d, as the old agent's conf/*.ini.
    std::fs::create_dir_all(agent.path("conf.d")).expect("conf.d");
    std::fs::write(agent.path("conf.d/10-redis.ini"), format!("[PyRedis]\nhost: 127.0.0.1\nport: {}\n", redis.port))
        .expect("conf.d/10-redis.ini");
    std::fs::write(
        agent.path("conf.d/20-memcached.ini"),
        format!("[PyMemcached]\nhost: 127.0.0.1\nport: {}\n", memcached.port),
    )
    .expect("conf.d/20-memcached.ini");
    copy_modules(
        &agent,
        &[
            "check_pyredis.py",
            "check_pymemcached.py",
            "check_pynginx.py",
            "check_pymysql.py",
            "check_pyproc.py",
            "check_checkname.py",
            "check_hang.py",
            "check_raise_at_import.py",
            "check_no_driver.py",
            "check_prints.py",
            "check_badvalues.py",
        ],
    );
    let _shipper = agent.start_shipper();
    let _runner = Proc::spawn("puypuy-script-runner", &mut agent.command("puypuy-script-runner"));

    // Class style, Redis through socketget: the whole INFO answer, tags, a host override.
    let used = first(&influx, "pyredis_used_memory");
    assert!(used.1.as_i64().is_some_and(|v| v > 0), "{used:?}");
    assert_eq!(used.2["type"], "pyredis");
    assert_eq!(used.2["role"], "master");
    assert_eq!(used.2["cluster"], "testcluster");
    let info_keys = first(&influx, "pyredis_info_keys").1.as_i64().expect("a count");
    assert!(info_keys > 60, "only {info_keys} INFO keys: the answer was cut");
    assert_eq!(first(&influx, "pyredis_other_host").2["host"], "elsewhere.example");
    let base = first(&influx, "pyredis_base");
    assert_eq!((base.1.as_i64(), base.2["type"].as_str()), (Some(0), Some("none")));
    assert_eq!(base.2["cluster_from_base"], "testcluster");
    // Rates: computed by the shipper from the second sample on; the first sample gave no point.
    let commands = first(&influx, "pyredis_commands");
    assert!(commands.1.as_f64().is_some_and(|v| v > 0.0), "{commands:?}");
    let doubled = first(&influx, "pyredis_commands_x2");
    assert!(doubled.1.as_f64().is_some_and(|v| v > 0.0), "{doubled:?}");
    // Function style, the old README's import form, memcached, sharedvars across cycles.
    assert_eq!(first(&influx, "pymemcached_curr_connections").2["type"], "pymemcached");
    wait_for(Duration::from_secs(30), "pymemcached_runs >= 3", || {
        influx.points("pymemcached_runs").iter().any(|p| p.1.as_i64() >= Some(3)).then_some(())
    });
    first(&influx, "pymemcached_cmd_get");
    // nginx through httpget with basic auth; a 401 gives None; httppost.
    assert!(first(&influx, "pynginx_active").1.as_i64().is_some_and(|v| v >= 1));
    assert_eq!(first(&influx, "pynginx_refused_is_none").1.as_i64(), Some(1));
    assert_eq!(first(&influx, "pynginx_post_ok").1.as_i64(), Some(1), "{}", agent.log());
    // MariaDB through pymysql.
    assert!(first(&influx, "pymysql_threads_connected").1.as_i64().is_some_and(|v| v >= 1));
    first(&influx, "pymysql_questions");
    // /proc readers, two run_* functions, getsection/getparam, delta and previous value.
    assert!(first(&influx, "pyproc_load1").1.as_f64().is_some());
    assert!(first(&influx, "pyproc_uptime").1.as_f64().is_some_and(|v| v > 0.0));
    assert_eq!(first(&influx, "pyproc_keys").1.as_i64(), Some(2));
    assert_eq!(first(&influx, "pyproc_flag_is_bool").1.as_i64(), Some(1));
    first(&influx, "pyproc_label_x");
    assert!(first(&influx, "pyproc_ctxt_delta").1.as_i64().is_some_and(|v| v > 0));
    first(&influx, "pyproc_ctxt_prev");
    // The old README's two examples.
    let checkname = first(&influx, "CheckName");
    assert_eq!((checkname.1.as_i64(), checkname.2["type"].as_str()), (Some(10), Some("test")));
    assert_eq!(first(&influx, "some_metric").1.as_f64(), Some(0.0), "a constant counter: rate 0");
    // Values: numeric text becomes a number, None and text are not sent; points appended before
    // an exception in precheck are sent.
    assert_eq!(first(&influx, "good_numeric_text").1.as_i64(), Some(42));
    assert_eq!(first(&influx, "good_float").1.as_f64(), Some(7.5));
    first(&influx, "prints_ok");
    // The hanging module is stopped at its timeout, every cycle, and the others keep shipping.
    let timeouts = wait_for(Duration::from_secs(30), "two timeouts of check_hang", || {
        let t: Vec<_> = influx
            .points("puypuy_script_timeout")
            .into_iter()
            .filter(|p| p.2["script"] == "check_hang.py" && p.1.as_i64() == Some(1))
            .collect();
        (t.len() >= 2).then_some(t)
    });
    let after_second_timeout = timeouts[1].0;
    wait_for(Duration::from_secs(30), "pyproc_uptime after the host was restarted", || {
        influx.points("pyproc_uptime").iter().any(|p| p.0 > after_second_timeout).then_some(())
    });

    let (_, rows) = influx.select("SHOW MEASUREMENTS");
    let names: Vec<&str> = rows.iter().filter_map(|r| r[0].as_str()).collect();
    for never in ["bad_none", "bad_text", "pyredis_impossible", "printed_metric"] {
        assert!(!names.contains(&never), "{never} was sent: {names:?}");
    }
    let bad = wait_for(Duration::from_secs(10), "bad values counted", || {
        influx.points("puypuy_script_bad_lines").into_iter().find(|p| p.2["script"] == "check_badvalues.py")
    });
    assert_eq!(bad.1.as_i64(), Some(2));

    let log = agent.log();
    let import = "check_raise_at_import.py not loaded: RuntimeError: this module is broken at import (check_raise_at_import.py line 2)";
    assert_eq!(count(&log, import), 1, "import error logged once, even across host restarts:\n{log}");
    assert_eq!(
        count(&log, "check_no_driver.py not loaded: ModuleNotFoundError: No module named 'MySQLdb_not_installed_here'"),
        1,
        "{log}"
    );
    assert_eq!(count(&log, "python module check_badvalues: ValueError: badvalues fails after its points"), 1, "{log}");
    assert_eq!(count(&log, "check_badvalues: bad_none: value not sent: None"), 1, "{log}");
    assert_eq!(count(&log, "check_badvalues: bad_text: value not sent: text 'n/a'"), 1, "{log}");
    assert!(log.contains("python module check_prints: printed_metric 1 t stack"), "{log}");
    assert!(log.contains("python module check_prints: a line on stderr from check_prints"), "{log}");
    assert!(log.contains("python host: {\"ev\":\"result\",\"module\":\"check_prints\"} from os.write"), "{log}");
    assert!(log.contains("python module check_pynginx: pynginx read"), "{log}");
    assert!(log.contains("python module check_hang: still running after 2s"), "{log}");
    assert!(!log.contains("unknown section"), "the modules' sections are not warned about:\n{log}");
}

#[test]
fn once_and_dry_run_include_the_modules_and_sighup_loads_new_ones() {
    let agent = Agent::new("", "[TSDB]\ntsdtype: File\npath: out.txt\n[PyProc]\nenabled: False\nlabel: y\n");
    copy_modules(&agent, &["check_pyproc.py"]);
    let out = agent
        .command("puypuy-script-runner")
        .args(["--once", "--dry-run"])
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("--once --dry-run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("pyproc_label_y ") && l.contains(" type=pyproc")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("pyproc_flag_is_bool ") && l.contains(" 0 ")), "{text}");
    // A first sample gives no point.
    assert!(!text.contains("pyproc_ctxt_delta"), "{text}");

    let influx = Influx::start(false);
    std::fs::write(
        &agent.config,
        format!(
            "[SelfConfig]\ncheck_period_seconds: 1\ntmpdir: spool\nlog_file: puypuy.log\nbatch_ms: 50\n\
             [TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n[PyProc]\nenabled: False\nlabel: y\n",
            influx.url(),
            Influx::DB
        ),
    )
    .expect("config");
    let _shipper = agent.start_shipper();
    let runner = Proc::spawn("puypuy-script-runner", &mut agent.command("puypuy-script-runner"));
    first(&influx, "pyproc_label_y");
    copy_modules(&agent, &["check_checkname.py"]);
    runner.signal(nix::sys::signal::Signal::SIGHUP);
    first(&influx, "CheckName");
}
