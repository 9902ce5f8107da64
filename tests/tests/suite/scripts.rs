//! The script-runner with real scripts into a real InfluxDB: the old README's bash example
//! unchanged, Python and Perl, garbage lines, hanging scripts, 200 scripts, and a kill -9 under
//! puypuy.sh.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use puypuy_tests::{repo_root, wait_for, Agent, Influx, Proc};
use serde_json::Value as Json;

pub fn influx_agent(influx: &Influx, self_extra: &str) -> Agent {
    let agent = Agent::new(
        self_extra,
        &format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB),
    );
    std::fs::create_dir_all(agent.path("scripts_enabled")).expect("scripts dir");
    agent
}

pub fn add_script(agent: &Agent, name: &str, body: &str) {
    let path = agent.path("scripts_enabled").join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn start_runner(agent: &Agent) -> Proc {
    Proc::spawn("puypuy-script-runner", &mut agent.command("puypuy-script-runner"))
}

#[test]
fn old_bash_example_unchanged_python_and_perl() {
    let influx = Influx::start(false);
    let agent = influx_agent(&influx, "");
    let bash = std::fs::read_to_string(repo_root().join("scripts_available/check_bash_random.sh")).expect("example");
    add_script(&agent, "check_bash_random.sh", &bash);
    let perl = std::fs::read_to_string(repo_root().join("scripts_available/check_perl_random.pl")).expect("example");
    add_script(&agent, "check_perl_random.pl", &perl);
    add_script(&agent, "check_python.py", "#!/usr/bin/env python3\nimport os\nprint('py_metric 42.5 my_python stack dc=' + 'eu')\nprint('py_period', os.environ['PUYPUY_PERIOD'], 'my_python stack')\n");
    let _shipper = agent.start_shipper();
    let _runner = start_runner(&agent);

    let first = wait_for(Duration::from_secs(15), "random_gen", || {
        let p = influx.points("random_gen");
        (!p.is_empty()).then_some(p)
    });
    assert_eq!(first[0].2["type"], "my_bash_random");
    let v = first[0].1.as_f64().expect("number");
    assert!((0.0..32768.0).contains(&v));
    // random_gen2 is a rate: from the second cycle on, whenever $RANDOM went up.
    let rate = wait_for(Duration::from_secs(30), "random_gen2 as a rate", || {
        let p = influx.points("random_gen2");
        (!p.is_empty()).then_some(p)
    });
    assert_eq!(rate[0].2["type"], "my_bash_random2");
    let (_, fields) = influx.select("SHOW FIELD KEYS FROM random_gen");
    assert_eq!(fields[0][1], Json::from("float"), "script values are floats");

    let py = wait_for(Duration::from_secs(15), "py_metric", || {
        let p = influx.points("py_metric");
        (!p.is_empty()).then_some(p)
    });
    assert_eq!(py[0].1.as_f64(), Some(42.5));
    assert_eq!(py[0].2["type"], "my_python");
    assert_eq!(py[0].2["dc"], "eu");
    let period = wait_for(Duration::from_secs(15), "py_period", || influx.points("py_period").first().cloned());
    assert_eq!(period.1.as_f64(), Some(1.0), "PUYPUY_PERIOD in the script's environment");
    let perl =
        wait_for(Duration::from_secs(15), "perl_random_gen", || influx.points("perl_random_gen").first().cloned());
    assert_eq!(perl.2["type"], "my_perl_random");
}

#[test]
fn garbage_lines_are_logged_and_good_lines_ship() {
    let influx = Influx::start(false);
    let agent = influx_agent(&influx, "");
    add_script(
        &agent,
        "check_mixed",
        "#!/bin/sh\necho 'good_one 1 mixed stack'\necho 'only two'\necho 'good_two 2 mixed stack'\necho 'bad_value abc mixed stack'\necho 'bad_style 3 mixed gauge'\necho 'nan_value NaN mixed stack'\nprintf 'bad_utf8 \\377 mixed stack\\n'\necho 'good_three 3 mixed stack 1700000000 k=v'\nexit 4\n",
    );
    let _shipper = agent.start_shipper();
    let status = agent.command("puypuy-script-runner").arg("--once").status().expect("runner --once");
    assert!(status.success());
    wait_for(Duration::from_secs(10), "good_three", || (!influx.points("good_three").is_empty()).then_some(()));
    let (_, rows) = influx.select("SHOW MEASUREMENTS");
    let names: BTreeSet<String> = rows.iter().filter_map(|r| r[0].as_str().map(String::from)).collect();
    let user: BTreeSet<String> = names.into_iter().filter(|n| !n.starts_with("puypuy_")).collect();
    assert_eq!(user, ["good_one", "good_three", "good_two"].into_iter().map(String::from).collect());
    let three = influx.points("good_three");
    assert_eq!(three[0].0, 1_700_000_000);
    assert_eq!(three[0].2["k"], "v");
    let log = agent.log();
    for line in [2, 4, 5, 6, 7] {
        assert!(log.contains(&format!("check_mixed line {line}:")), "line {line} not logged:\n{log}");
    }
    assert!(log.contains("check_mixed: exited with status 4"), "{log}");
    let bad = wait_for(Duration::from_secs(5), "bad-lines self-metric", || {
        influx.points("puypuy_script_bad_lines").first().cloned()
    });
    assert_eq!(bad.1.as_i64(), Some(5));
    assert_eq!(bad.2["script"], "check_mixed");
}

fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker)
            && !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z')
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn hanging_scripts_are_killed_and_never_delay_the_others() {
    let influx = Influx::start(false);
    let agent = influx_agent(&influx, "script_timeout_seconds: 2");
    let marker = format!("puypuy-hang-{}", std::process::id());
    // `exec -a` gives the sleeping processes a name we can find in /proc.
    add_script(
        &agent,
        "check_hang",
        &format!("#!/bin/bash\necho 'hang_before 1 hang stack'\nexec -a {marker}-child sleep 1000\n"),
    );
    add_script(
        &agent,
        "check_fork",
        &format!("#!/bin/bash\n(exec -a {marker}-grandchild sleep 1000) &\necho 'fork_before 1 fork stack'\nwait\n"),
    );
    add_script(&agent, "check_fast", "#!/bin/sh\necho \"fast 1 fast stack\"\n");
    let _shipper = agent.start_shipper();
    let _runner = start_runner(&agent);
    // Points printed before the kill ship.
    wait_for(Duration::from_secs(15), "hang_before", || (!influx.points("hang_before").is_empty()).then_some(()));
    wait_for(Duration::from_secs(15), "fork_before", || (!influx.points("fork_before").is_empty()).then_some(()));
    // The fast script ships every cycle, on time, while the others hang.
    let times = wait_for(Duration::from_secs(20), "six cycles of fast", || {
        let t: Vec<u64> = influx.points("fast").into_iter().map(|p| p.0).collect();
        (t.len() >= 6).then_some(t)
    });
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 1, "fast missed a cycle: {times:?}");
    }
    let timeouts = influx.points("puypuy_script_timeout");
    assert!(timeouts.iter().any(|p| p.2["script"] == "check_hang" && p.1.as_i64() == Some(1)), "{timeouts:?}");
    assert!(timeouts.iter().any(|p| p.2["script"] == "check_fork" && p.1.as_i64() == Some(1)), "{timeouts:?}");
    let log = agent.log();
    assert!(log.contains("check_hang: still running after 2s; killed its process group"), "{log}");
    assert!(log.contains("is still running from an earlier cycle"), "the overlapping cycle was not reported:\n{log}");
    // Stop the runner: the scripts it is running are killed with it, and nothing is left.
    let mut runner = _runner;
    runner.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(runner.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    wait_for(Duration::from_secs(5), "no hanging process left", || processes_with(&marker).is_empty().then_some(()));
}

#[test]
fn killed_scripts_leave_no_process_between_cycles() {
    let influx = Influx::start(false);
    let agent = influx_agent(&influx, "script_timeout_seconds: 1\ncheck_period_seconds: 3");
    let marker = format!("puypuy-leftover-{}", std::process::id());
    add_script(&agent, "check_fork", &format!("#!/bin/bash\n(exec -a {marker} sleep 1000) &\nwait\n"));
    let _shipper = agent.start_shipper();
    let _runner = start_runner(&agent);
    // Timeout 1 s in a 3 s period: between the kill and the next start nothing may be left.
    wait_for(Duration::from_secs(10), "a first timeout", || {
        influx.points("puypuy_script_timeout").iter().any(|p| p.1.as_i64() == Some(1)).then_some(())
    });
    // Cycles start at multiples of 3 s and the kill comes 1 s (+0.5 s grace) later: 2.2 s into a
    // cycle, nothing of the script may be left. Check at that point of two cycles.
    for _ in 0..2 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time");
        let into_cycle = now.as_millis() % 3000;
        let wait = (2200 + 3000 - into_cycle) % 3000;
        std::thread::sleep(Duration::from_millis(wait as u64));
        assert!(processes_with(&marker).is_empty(), "grandchild still running between cycles");
        std::thread::sleep(Duration::from_millis(1000));
    }
}

#[test]
fn scripts_of_a_runner_killed_with_sigkill_die_with_it() {
    let influx = Influx::start(false);
    let agent = influx_agent(&influx, "script_timeout_seconds: 600\ncheck_period_seconds: 2");
    let marker = format!("puypuy-orphan-{}", std::process::id());
    add_script(
        &agent,
        "check_hang",
        &format!("#!/bin/bash\necho 'orphan_before 1 hang stack'\nexec -a {marker}-child sleep 1000\n"),
    );
    add_script(&agent, "check_fork", &format!("#!/bin/bash\n(exec -a {marker}-grandchild sleep 1000) &\nwait\n"));
    let _shipper = agent.start_shipper();
    let mut runner = start_runner(&agent);
    // (Its output ships only when the script ends: stdout stays open in the sleeping process.)
    wait_for(Duration::from_secs(15), "the script and the grandchild running", || {
        (processes_with(&marker).len() == 2).then_some(())
    });
    let config = agent.config.display().to_string();
    let guardians = || {
        processes_with(&config)
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "puypuy-guardian")
            })
            .count()
    };
    assert_eq!(guardians(), 1, "one guardian per runner");
    // No SIGTERM, no chance to clean up: the guardian must kill both process groups' members.
    runner.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(runner.wait_exit(Duration::from_secs(10)).is_some());
    wait_for(Duration::from_secs(5), "no script process left after the runner's SIGKILL", || {
        processes_with(&marker).is_empty().then_some(())
    });
    // The guardian leaves too.
    wait_for(Duration::from_secs(5), "the guardian gone", || (guardians() == 0).then_some(()));
}

#[test]
fn two_hundred_scripts_complete_within_the_period() {
    let influx = Influx::start(false);
    let agent = influx_agent(&influx, "check_period_seconds: 2");
    for i in 0..200 {
        add_script(&agent, &format!("check_many_{i:03}"), &format!("#!/bin/sh\necho many {i} many stack n={i}\n"));
    }
    let _shipper = agent.start_shipper();
    let _runner = start_runner(&agent);
    // Three consecutive cycles, each with all 200 scripts' points at the cycle's timestamp.
    let counts = wait_for(Duration::from_secs(30), "three complete cycles", || {
        let (_, rows) = influx.select("SELECT count(value) FROM many GROUP BY time(2s)");
        let full: Vec<(u64, i64)> =
            rows.iter().filter_map(|r| Some((r[0].as_u64()?, r[1].as_i64()?))).filter(|(_, c)| *c > 0).collect();
        (full.len() >= 5).then_some(full)
    });
    // The first cycle may have started before all scripts were written, and the last may still be
    // arriving; the three in between must be complete and consecutive.
    let middle = &counts[1..counts.len() - 1];
    for (t, c) in middle {
        assert_eq!(*c, 200, "cycle {t} had {c} of 200 scripts: {counts:?}");
    }
    for pair in middle.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 2, "a cycle was skipped: {counts:?}");
    }
}

/// A runner with nothing to run sleeps on its folders (inotify) instead of looking every cycle:
/// a scripts folder created afterwards, then a script dropped into it, still run from the next
/// cycle on, without a restart.
#[test]
fn an_idle_runner_runs_a_script_added_to_a_folder_created_later() {
    let agent = Agent::new("", "[TSDB]\ntsdtype: File\npath: out.txt\n");
    let _shipper = agent.start_shipper();
    let _runner = start_runner(&agent);
    wait_for(Duration::from_secs(15), "the runner's first cycle", || {
        agent.log().contains("cannot read the scripts folder").then_some(())
    });
    std::fs::create_dir_all(agent.path("scripts_enabled")).expect("scripts dir");
    add_script(&agent, "check_late.sh", "#!/bin/sh\necho late_metric 7 late stack\n");
    let line = wait_for(Duration::from_secs(15), "late_metric in out.txt", || {
        let out = std::fs::read_to_string(agent.path("out.txt")).unwrap_or_default();
        out.lines().find(|l| l.starts_with("late_metric")).map(str::to_string)
    });
    assert!(line.contains(",type=late value=7 "), "{line}");
}

/// The script workers of the runner's process, by thread name.
fn script_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("script-")))
        .count()
}

#[test]
fn script_workers_start_as_scripts_need_them_up_to_script_concurrency() {
    let agent =
        Agent::new("check_period_seconds: 1\nscript_concurrency: 2", "[TSDB]\ntsdtype = File\npath = out.txt\n");
    std::fs::create_dir_all(agent.path("scripts_enabled")).expect("scripts dir");
    let _shipper = agent.start_shipper();
    let runner = start_runner(&agent);
    // Three cycles with nothing to run: no worker.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(script_workers(runner.pid()), 0, "workers started with no script");
    // Three scripts that overlap: two workers (the limit), and the third script still runs.
    for i in 0..3 {
        add_script(
            &agent,
            &format!("check_lazy_{i}.sh"),
            &format!("#!/bin/sh\nsleep 0.3\necho \"lazy_{i} 1 test stack\"\n"),
        );
    }
    let out = agent.path("out.txt");
    wait_for(Duration::from_secs(20), "the three scripts' points", || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        (0..3).all(|i| text.contains(&format!("lazy_{i},"))).then_some(())
    });
    assert_eq!(script_workers(runner.pid()), 2);
}
