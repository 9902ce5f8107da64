//! The Debian package: `./puypuy.sh package` builds it, dpkg installs it on this machine, the
//! installed agent (run by the packaged puypuy.sh, as the `puypuy` user) delivers metrics to a
//! real InfluxDB, and purging removes it cleanly.

use std::process::Command;
use std::time::Duration;

use puypuy_tests::{repo_root, require, wait_for, Influx};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn package_builds_installs_runs_and_purges() {
    let influx = Influx::start(false);
    let built = run(Command::new(repo_root().join("puypuy.sh")).arg("package"));
    let deb = built.lines().rev().find(|l| l.ends_with(".deb")).expect("the .deb path").trim().to_string();
    let dpkg = require("dpkg");
    let _ = Command::new(&dpkg).args(["--purge", "puypuy"]).output();
    run(Command::new(&dpkg).args(["-i", &deb]));

    assert!(run(Command::new("getent").args(["passwd", "puypuy"])).starts_with("puypuy:"));
    for path in [
        "/usr/bin/puypuy-shipper",
        "/usr/bin/puypuy-collector",
        "/etc/puypuy/config.ini",
        "/lib/systemd/system/puypuy-shipper.service",
        "/usr/share/puypuy/scripts_available/check_bash_random.sh",
    ] {
        assert!(std::path::Path::new(path).exists(), "{path} not installed");
    }
    // The Python modules' host and every file of its compatibility package.
    assert!(std::path::Path::new("/usr/share/puypuy/python/puypuy_host.py").exists(), "puypuy_host.py not installed");
    for entry in
        std::fs::read_dir(repo_root().join("script-runner/python/lib")).expect("script-runner/python/lib").flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".py") {
            let installed = format!("/usr/share/puypuy/python/lib/{name}");
            assert_eq!(
                std::fs::read(&installed).ok(),
                std::fs::read(entry.path()).ok(),
                "{installed} not installed as in the source tree"
            );
        }
    }
    if let Ok(analyze) = std::process::Command::new("systemd-analyze")
        .args([
            "verify",
            "/lib/systemd/system/puypuy-shipper.service",
            "/lib/systemd/system/puypuy-collector.service",
            "/lib/systemd/system/puypuy-script-runner.service",
            "/lib/systemd/system/puypuy-jmx-bridge.service",
        ])
        .output()
    {
        let err = String::from_utf8_lossy(&analyze.stderr);
        assert!(!err.lines().any(|l| l.contains("puypuy")), "systemd-analyze verify:\n{err}");
    }

    // Point the installed config at the test InfluxDB and start the installed agent.
    let config = std::fs::read_to_string("/etc/puypuy/config.ini").expect("config");
    let config = config.replace(
        "[TSDB]\ntsdtype: File\npath: /var/lib/puypuy/metrics.txt",
        &format!("[TSDB]\ntsdtype: InfluxDB\naddress: {}\ndatabase: {}", influx.url(), Influx::DB),
    );
    let config = config
        .replace("check_period_seconds: 5", "check_period_seconds: 1")
        .replace("cluster_name: default", "cluster_name: pkg");
    std::fs::write("/etc/puypuy/config.ini", config).expect("write config");
    // An old-style Python module beside the installed config, run by the installed package.
    std::fs::create_dir_all("/etc/puypuy/checks_enabled").expect("checks_enabled");
    std::fs::write(
        "/etc/puypuy/checks_enabled/check_pkg.py",
        "import lib.basecheck\nimport lib.commonclient\nimport lib.getconfig\nimport lib.sharedvars\n\n\n\
         class Check(lib.basecheck.CheckBase):\n    def precheck(self):\n        \
         self.local_vars.append({'name': 'pkg_python_module', 'timestamp': self.timestamp, 'value': 7, 'check_type': 'pkg'})\n",
    )
    .expect("check_pkg.py");
    run(Command::new("/usr/share/puypuy/puypuy.sh").arg("start"));
    let p = wait_for(Duration::from_secs(30), "metrics from the installed agent", || {
        influx.points("mem_total").into_iter().find(|p| p.2.get("cluster").and_then(|v| v.as_str()) == Some("pkg"))
    });
    assert_eq!(p.2["type"], "system");
    let module = wait_for(Duration::from_secs(30), "the Python module's point from the installed agent", || {
        influx.points("pkg_python_module").into_iter().next()
    });
    assert_eq!((module.1.as_i64(), module.2["type"].as_str()), (Some(7), Some("pkg")));
    let pid = std::fs::read_to_string("/var/lib/puypuy/puypuy.shipper.pid").expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).expect("status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("uid")
        .to_string();
    let puypuy_uid = run(Command::new("id").args(["-u", "puypuy"])).trim().to_string();
    assert_eq!(uid, puypuy_uid, "the installed shipper does not run as the puypuy user");

    // Purge: stops it, removes files, user and data.
    run(Command::new(&dpkg).args(["--purge", "puypuy"]));
    for path in
        ["/usr/bin/puypuy-shipper", "/etc/puypuy", "/var/lib/puypuy", "/lib/systemd/system/puypuy-shipper.service"]
    {
        assert!(!std::path::Path::new(path).exists(), "{path} left after purge");
    }
    assert!(
        Command::new("getent").args(["passwd", "puypuy"]).output().map(|o| !o.status.success()).unwrap_or(false),
        "user left"
    );
    assert!(!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(), "the shipper still runs after purge");
}
