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
    // The hanging module times out every cycle, alone: the others keep shipping from the same host.
    let timeouts = wait_for(Duration::from_secs(30), "two timeouts of check_hang", || {
        let t: Vec<_> = influx
            .points("puypuy_script_timeout")
            .into_iter()
            .filter(|p| p.2["script"] == "check_hang.py" && p.1.as_i64() == Some(1))
            .collect();
        (t.len() >= 2).then_some(t)
    });
    let after_second_timeout = timeouts[1].0;
    wait_for(Duration::from_secs(30), "pyproc_uptime after the second timeout", || {
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
    assert!(!log.contains("restarting it"), "the host was restarted for a sleeping module:\n{log}");
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

fn influx_section(influx: &Influx) -> String {
    format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB)
}

/// The Python hosts the runner `runner` started (its children running puypuy_host.py).
fn python_hosts(runner: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let parent =
            stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if parent == Some(runner) && String::from_utf8_lossy(&cmdline).contains("puypuy_host.py") {
            pids.push(pid);
        }
    }
    pids
}

/// The times of a measurement's points, sorted.
fn times(influx: &Influx, name: &str) -> Vec<u64> {
    let mut t: Vec<u64> = influx.points(name).into_iter().map(|p| p.0).collect();
    t.sort_unstable();
    t
}

/// Regression: int() and float() of a rate on its first sample gave 0, and a module shipping it
/// sent a false 0. Every way the old modules use a rate gives no point for the first sample and
/// 2048/s from the second on, in both styles; a real 0 is still sent. The Python host killed with
/// signal 9 is restarted, the modules run again, and the rate state survives it: the first cycle of
/// the new host has every rate, int() included (the host's own state, from its state file).
#[test]
fn rates_give_no_false_zero_on_the_first_sample_and_survive_a_host_killed_with_signal_9() {
    let influx = Influx::start(false);
    let agent = Agent::new("python: /usr/bin/python3", &influx_section(&influx));
    copy_modules(&agent, &["check_pyrates.py", "check_pyrates_fn.py"]);
    let _shipper = agent.start_shipper();
    let runner = Proc::spawn("puypuy-script-runner", &mut agent.command("puypuy-script-runner"));
    wait_for(Duration::from_secs(30), "three cycles of both modules", || {
        (times(&influx, "pyrates_cycle").len() >= 3 && times(&influx, "pyrates_fn_cycle").len() >= 3).then_some(())
    });
    let host = wait_for(Duration::from_secs(10), "the Python host", || python_hosts(runner.pid()).first().copied());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(host as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill -9 the Python host");
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    wait_for(Duration::from_secs(30), "a new Python host", || {
        python_hosts(runner.pid()).into_iter().find(|p| *p != host)
    });
    wait_for(Duration::from_secs(30), "four cycles of both modules after the kill", || {
        let after = |name| times(&influx, name).into_iter().filter(|t| *t > killed_at).count();
        (after("pyrates_cycle") >= 4 && after("pyrates_fn_cycle") >= 4).then_some(())
    });

    for (marker, expected) in [
        (
            "pyrates_cycle",
            &[
                ("pyrates_direct", 2048.0, 1),
                ("pyrates_int", 2048.0, 1),
                ("pyrates_float", 2048.0, 1),
                ("pyrates_kib", 2.0, 1),
                ("pyrates_round", 2048.0, 1),
                ("pyrates_float_kib", 2.0, 1),
                // Shipped only once the comparison holds, from the second sample: the shipper's
                // rate of it starts one cycle later.
                ("pyrates_compared", 2048.0, 2),
            ][..],
        ),
        (
            "pyrates_fn_cycle",
            &[("pyrates_fn_direct", 2048.0, 1), ("pyrates_fn_int", 2048.0, 1), ("pyrates_fn_float_kib", 2.0, 1)][..],
        ),
    ] {
        // Every cycle but the first `skip`, up to the one before the last (its rates may be in flight).
        let cycles = times(&influx, marker);
        let upto = cycles[cycles.len() - 2];
        assert!(cycles.iter().any(|t| *t > killed_at && *t < upto), "no cycle after the kill in {cycles:?}");
        for (name, value, skip) in expected {
            let want: Vec<u64> = cycles[*skip..].iter().copied().filter(|t| *t <= upto).collect();
            let got: Vec<(u64, Option<f64>)> =
                influx.points(name).into_iter().filter(|p| p.0 <= upto).map(|p| (p.0, p.1.as_f64())).collect();
            let expected: Vec<(u64, Option<f64>)> = want.iter().map(|t| (*t, Some(*value))).collect();
            assert_eq!(got, expected, "{name}: cycles {cycles:?}, host killed at {killed_at}\n{}", agent.log());
        }
    }
    // A real 0 made before any conversion is sent in every cycle, the first included.
    let zeros: Vec<(u64, Option<f64>)> =
        influx.points("pyrates_zero").into_iter().map(|p| (p.0, p.1.as_f64())).collect();
    let cycles = times(&influx, "pyrates_cycle");
    assert!(cycles.iter().all(|t| zeros.contains(&(*t, Some(0.0)))), "{zeros:?} for cycles {cycles:?}");
    let log = agent.log();
    assert_eq!(count(&log, "the Python host crashed (it ended)"), 1, "{log}");
    assert!(
        !log.contains("python module check_pyrates: ") && !log.contains("python module check_pyrates_fn: "),
        "{log}"
    );
    let bad = influx.points("puypuy_script_bad_lines");
    assert!(bad.iter().all(|p| p.1.as_i64() == Some(0)), "first samples are not bad values: {bad:?}");
}

/// A module that hangs (sleeping) past script_timeout_seconds stops alone: the host keeps
/// running, so the other modules keep their state and connections, and their points come every
/// cycle. A module that hangs busy on the CPU cannot be stopped and slows every module, so the host
/// is restarted for it. A module whose import hangs is not loaded, the others run.
#[test]
fn a_hung_module_stops_alone_a_spinning_one_restarts_the_host_and_a_hung_import_is_skipped() {
    let influx = Influx::start(false);
    let agent = Agent::new("python: /usr/bin/python3\nscript_timeout_seconds: 2", &influx_section(&influx));
    copy_modules(&agent, &["check_hang.py", "check_import_hang.py", "check_pyrates.py", "check_checkname.py"]);
    let _shipper = agent.start_shipper();
    let runner = Proc::spawn("puypuy-script-runner", &mut agent.command("puypuy-script-runner"));
    let host = wait_for(Duration::from_secs(20), "the Python host", || python_hosts(runner.pid()).first().copied());
    let timeouts = |script: &str| -> Vec<u64> {
        influx
            .points("puypuy_script_timeout")
            .into_iter()
            .filter(|p| p.2["script"] == script && p.1.as_i64() == Some(1))
            .map(|p| p.0)
            .collect()
    };
    wait_for(Duration::from_secs(40), "four timeouts of check_hang", || {
        (timeouts("check_hang.py").len() >= 4).then_some(())
    });
    assert_eq!(python_hosts(runner.pid()), [host], "the host was restarted for a sleeping module:\n{}", agent.log());
    // The others ran in every cycle while it hung (the host's start, slowed by the hanging import,
    // may skip a cycle before).
    let hung = timeouts("check_hang.py");
    let cycles: Vec<u64> = times(&influx, "pyrates_cycle").into_iter().filter(|t| *t >= hung[1]).collect();
    let expected: Vec<u64> = (hung[1]..=*cycles.last().expect("cycles")).collect();
    assert_eq!(cycles, expected, "a cycle of check_pyrates is missing while check_hang hung: {hung:?}");
    let log = agent.log();
    assert_eq!(count(&log, "python module check_hang: still running after 2s (script_timeout_seconds)"), 1, "{log}");
    assert!(!log.contains("restarting it"), "{log}");
    assert_eq!(
        count(&log, "check_import_hang.py not loaded: import still running after 2.0 s (a network call at import?)"),
        1,
        "{log}"
    );

    // Now a module spinning on the CPU: the host is restarted, and the others go on after it.
    drop(runner);
    copy_modules(&agent, &["check_spin.py"]);
    std::fs::remove_file(agent.path("checks_enabled/check_hang.py")).expect("remove check_hang.py");
    let runner = Proc::spawn("puypuy-script-runner", &mut agent.command("puypuy-script-runner"));
    // Seen at its deadline ("still running after 2s and busy on the CPU") or, when the loaded
    // machine gave it less than a fifth of a core until then, from a later cycle ("hangs busy").
    wait_for(Duration::from_secs(40), "a restart for check_spin", || {
        agent
            .log()
            .lines()
            .any(|l| l.contains("python module check_spin: ") && l.contains("busy on the CPU"))
            .then_some(())
    });
    let restarted = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    wait_for(Duration::from_secs(30), "CheckName after the restart", || {
        influx.points("CheckName").iter().any(|p| p.0 > restarted + 1).then_some(())
    });
    assert!(!python_hosts(runner.pid()).is_empty());
    let log = agent.log();
    assert!(log.contains("which only a restart of the Python host stops; restarting it"), "{log}");
}

/// The old README's examples (tests/fixtures/python_checks/original_readme_examples.txt: its code
/// lines, byte for byte) with only their slips fixed: a colon after each `def`, each function's body
/// (indented with tabs and spaces mixed, and split into snippets by the README's prose) indented as
/// one block, and `key`, which the rate example uses without defining it, defined as the name.
fn fix_readme_examples(original: &str) -> String {
    let mut out = String::new();
    let mut in_function = false;
    for line in original.lines() {
        // One tab: the README's code-block indentation.
        let code = line.strip_prefix('\t').unwrap_or(line).trim();
        if code.is_empty() {
            continue;
        }
        if let Some(def) = code.strip_prefix("def ") {
            out.push_str(&format!("\ndef {}:\n", def.trim_end_matches(':')));
            in_function = true;
        } else if in_function {
            out.push_str(&format!("    {code}\n"));
            if code == "name='some_metric'" {
                out.push_str("    key = name\n");
            }
        } else {
            out.push_str(&format!("{code}\n"));
        }
    }
    out
}

/// The old README's two function-style examples run as written but for their slips, and README's
/// migration section shows them so fixed.
#[test]
fn the_old_readmes_two_examples_run_with_only_their_slips_fixed() {
    let original =
        std::fs::read_to_string(repo_root().join("tests/fixtures/python_checks/original_readme_examples.txt"))
            .expect("the old README's examples");
    let fixed = fix_readme_examples(&original);
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let section = &readme[readme.find("## Python check modules").expect("README: the Python modules section")..];
    let shown = section.split("```python\n").nth(1).and_then(|b| b.split("```").next()).expect("README: the examples");
    assert_eq!(shown, fixed, "README's migration section shows the old examples with their slips fixed");

    let influx = Influx::start(false);
    let agent = Agent::new("python: /usr/bin/python3", &influx_section(&influx));
    std::fs::create_dir_all(agent.path("checks_enabled")).expect("checks_enabled");
    std::fs::write(agent.path("checks_enabled/check_checkname.py"), &fixed).expect("check_checkname.py");
    let _shipper = agent.start_shipper();
    let _runner = Proc::spawn("puypuy-script-runner", &mut agent.command("puypuy-script-runner"));
    let names = wait_for(Duration::from_secs(30), "three cycles", || {
        let points = influx.points("CheckName");
        (points.len() >= 3 && !influx.points("some_metric").is_empty()).then_some(points)
    });
    for (_, value, tags) in &names {
        assert_eq!((value.as_i64(), tags["type"].as_str()), (Some(10), Some("test")), "{names:?}");
    }
    // A constant counter: no point for the first sample, a rate of 0 from the second on.
    let rates = influx.points("some_metric");
    assert!(rates.iter().all(|p| p.1.as_f64() == Some(0.0) && p.2["type"] == "test"), "{rates:?}");
    assert!(rates.iter().all(|p| p.0 > names[0].0), "a point for the first sample: {rates:?} {names:?}");
    let log = agent.log();
    assert!(log.contains("python module check_checkname loaded (function style)"), "{log}");
    assert!(!log.contains("python module check_checkname: "), "{log}");
}

/// lib.commonclient verifies certificates: one the system does not trust gives None and an error
/// naming the key that turns the check off; with that key set (SIGHUP), the module reads the page.
#[test]
fn commonclient_names_the_key_when_a_certificate_is_not_verified() {
    let influx = Influx::start(false);
    let nginx = nginx(None);
    let (tls, _ca) = puypuy_tests::services::tls_proxy(nginx.port);
    let url = format!("https://127.0.0.1:{}/nginx_status", tls.port);
    let sections = format!("{}[PyTls]\nurl: {url}\n", influx_section(&influx));
    let agent = Agent::new("python: /usr/bin/python3", &sections);
    copy_modules(&agent, &["check_pytls.py"]);
    let _shipper = agent.start_shipper();
    let runner = Proc::spawn("puypuy-script-runner", &mut agent.command("puypuy-script-runner"));
    assert_eq!(first(&influx, "pytls_refused").1.as_i64(), Some(1));
    let log = agent.log();
    let line = log.lines().find(|l| l.contains("python module check_pytls: ")).expect("the module's error");
    let (before, after) = line.split_once(" (").expect("a reason in parentheses");
    assert!(
        before.ends_with(&format!(
            "ERROR puypuy-script-runner: python module check_pytls: pytls: {url}: certificate not verified"
        )),
        "{line}"
    );
    assert!(after.ends_with("); set [SelfConfig] python_tls_insecure = True to skip the check (unsafe)"), "{line}");
    assert!(influx.points("pytls_ok").is_empty());

    let config = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(&agent.config, config.replacen("[SelfConfig]\n", "[SelfConfig]\npython_tls_insecure: True\n", 1))
        .expect("config");
    runner.signal(nix::sys::signal::Signal::SIGHUP);
    assert_eq!(first(&influx, "pytls_ok").1.as_i64(), Some(1), "{}", agent.log());
}

/// `./puypuy.sh once` lists the modules' points beside the built-in ones: a rate's first sample as
/// its counter (rate*), and none of the values int() and float() made of it.
#[test]
fn puypuy_sh_once_includes_the_modules_points() {
    let agent = Agent::new(
        "python: /usr/bin/python3",
        "[TSDB]\ntsdtype: File\npath: out.txt\n[PyProc]\nenabled: True\nlabel: z\n",
    );
    copy_modules(&agent, &["check_pyproc.py", "check_pyrates.py"]);
    let out = puypuy_tests::puypuy_sh(&agent.config, &["once"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let row = |metric: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(metric))
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    };
    let label = row("pyproc_label_z").expect("pyproc_label_z row");
    assert_eq!(label[0], "script-runner");
    assert_eq!(&label[2..5], ["1", "stack", "type=pyproc"]);
    assert_eq!(&row("pyproc_flag_is_bool").expect("pyproc_flag_is_bool row")[2..5], ["1", "stack", "type=pyproc"]);
    assert_eq!(&row("pyrates_zero").expect("pyrates_zero row")[2..5], ["0", "stack", "type=pyrates"]);
    let direct = row("pyrates_direct").expect("pyrates_direct row");
    let counter: f64 = direct[2].parse().expect("a counter");
    assert!(counter > 2048.0 * 1.7e9 && counter % 2048.0 == 0.0, "{direct:?}");
    assert_eq!(&direct[3..5], ["rate*", "type=pyrates"]);
    for none in ["pyrates_int", "pyrates_float", "pyrates_float_kib", "pyrates_compared", "pyproc_ctxt_delta"] {
        assert!(row(none).is_none(), "{none} has a point on its first sample:\n{text}");
    }
    assert!(row("mem_total").is_some(), "{text}");
    assert!(!agent.path("out.txt").exists(), "once must not send anything");
}
