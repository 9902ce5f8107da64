//! The service checks against real servers, into a real InfluxDB: every check's metrics arrive,
//! load between cycles moves the rates, a stopped server is logged once while the others ship, a
//! wrong password gives one clear error.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use puypuy_tests::services::{self, MariaDb};
use puypuy_tests::{http_get, wait_for, Agent, Influx};

fn influx_tsdb(influx: &Influx) -> String {
    format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB)
}

/// The latest value of a metric, optionally of the series with a given tag.
fn latest(influx: &Influx, name: &str, tag: Option<(&str, &str)>) -> Option<f64> {
    influx
        .points(name)
        .into_iter()
        .rev()
        .find(|p| tag.is_none_or(|(k, v)| p.2.get(k).and_then(|x| x.as_str()) == Some(v)))
        .and_then(|p| p.1.as_f64())
}

fn wait_positive(influx: &Influx, name: &str, tag: Option<(&str, &str)>, load: &mut dyn FnMut()) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        load();
        if let Some(v) = latest(influx, name, tag).filter(|v| *v > 0.0) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} never rose above 0 under load: {:?}", influx.points(name).last());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_service_check_arrives_and_load_moves_its_rates() {
    let influx = Influx::start(false);
    let db = MariaDb::start();
    let fpm = services::php_fpm();
    let nginx = services::nginx(Some(fpm.port));
    let apache = services::apache();
    let redis = services::redis(None);
    let memcached = services::memcached();
    let haproxy = services::haproxy(nginx.port);
    let sections = format!(
        "[MySQL]\nhost: 127.0.0.1\nport: {}\nuser: {}\npass: {}\n\n\
         [MySQL:sock]\nsocket: {}\nuser: {}\npass: {}\n\n\
         [NginX]\naddress: http://127.0.0.1:{}\nstats: /auth_status\nauth: True\nuser: agent\npass: s3cret\n\n\
         [Apache]\nurl: http://127.0.0.1:{}/server-status?auto\n\n\
         [Redis]\nhost: 127.0.0.1\nport: {}\n\n\
         [Memcached]\nhost: 127.0.0.1\nport: {}\n\n\
         [PhpFPM]\naddress: http://127.0.0.1:{}\nstats: /status\n\n\
         [HAProxy]\nurl: http://127.0.0.1:{}/stats;csv\nupstream: app,web\n",
        db.port,
        MariaDb::USER,
        MariaDb::PASS,
        db.socket.display(),
        MariaDb::USER,
        MariaDb::PASS,
        nginx.port,
        apache.port,
        redis.port,
        memcached.port,
        nginx.port,
        haproxy.stats_port,
    );
    let agent = Agent::new("system_checks: none", &format!("{}\n{sections}", influx_tsdb(&influx)));
    let _shipper = agent.start_shipper();
    let _collector = agent.start_collector();

    // Gauges arrive with their type tag.
    for (name, ty) in [
        ("mysql_threads_connected", "mysql"),
        ("mysql_innodb_buffer_pool_used_percent", "mysql"),
        ("nginx_connections", "nginx"),
        ("apache_idleworkers", "apache"),
        ("redis_used_memory", "redis"),
        ("memcached_curr_connections", "memcached"),
        ("phpfpm_total_processes", "phpfpm"),
        ("haproxy_sessions_app1", "haproxy"),
    ] {
        let p = wait_for(Duration::from_secs(30), name, || influx.points(name).into_iter().next());
        assert_eq!(p.2["type"], ty, "{name}");
    }
    let socket_instance = wait_for(Duration::from_secs(20), "the socket MySQL instance", || {
        influx
            .points("mysql_threads_connected")
            .into_iter()
            .find(|p| p.2.get("instance").and_then(|v| v.as_str()) == Some("sock"))
    });
    assert!(socket_instance.1.as_f64().unwrap_or(0.0) >= 1.0);

    // Load between cycles moves the matching rates.
    let nginx_url = format!("http://127.0.0.1:{}/", nginx.port);
    let apache_url = format!("http://127.0.0.1:{}/index.html", apache.port);
    let haproxy_url = format!("http://127.0.0.1:{}/", haproxy.server.port);
    let (redis_port, memcached_port) = (redis.port, memcached.port);
    let mut load = || {
        for _ in 0..5 {
            let _ = http_get(&nginx_url);
            let _ = http_get(&apache_url);
            let _ = http_get(&haproxy_url);
        }
        if let Ok(mut r) = TcpStream::connect(("127.0.0.1", redis_port)) {
            let _ = r.write_all(b"SET a 1\r\nSET b 2\r\nGET a\r\n");
        }
        if let Ok(mut m) = TcpStream::connect(("127.0.0.1", memcached_port)) {
            let _ = m.write_all(b"set k 0 0 1\r\nv\r\nget k\r\n");
        }
        db.sql("SELECT 1; SELECT 2;");
    };
    wait_positive(&influx, "nginx_requests", None, &mut load);
    wait_positive(&influx, "apache_totalaccesses", None, &mut load);
    wait_positive(&influx, "haproxy_sessions_total_app1", Some(("proxy", "app")), &mut load);
    wait_positive(&influx, "redis_total_commands_processed", None, &mut load);
    wait_positive(&influx, "memcached_cmd_set", None, &mut load);
    wait_positive(&influx, "mysql_com_select", None, &mut load);
    wait_positive(&influx, "phpfpm_accepted_conn", None, &mut load);
    let keys = wait_for(Duration::from_secs(10), "redis_keys", || latest(&influx, "redis_keys", Some(("db", "db0"))));
    assert!(keys >= 2.0);
    let log = agent.log();
    assert!(!log.contains("failed:"), "a check failed:\n{log}");
}

#[test]
fn a_stopped_server_is_logged_once_and_the_others_keep_shipping() {
    let influx = Influx::start(false);
    let nginx = services::nginx(None);
    let mut redis = services::redis(None);
    let sections = format!(
        "[NginX]\naddress: http://127.0.0.1:{}\n\n[Redis]\nhost: 127.0.0.1\nport: {}\n",
        nginx.port, redis.port
    );
    let agent = Agent::new("system_checks: load_average", &format!("{}\n{sections}", influx_tsdb(&influx)));
    let _shipper = agent.start_shipper();
    let _collector = agent.start_collector();
    wait_for(Duration::from_secs(20), "redis metrics", || {
        (!influx.points("redis_used_memory").is_empty()).then_some(())
    });
    redis.proc.signal(nix::sys::signal::Signal::SIGKILL);
    redis.proc.wait_exit(Duration::from_secs(5));
    let stopped_at = latest_time(&influx, "nginx_connections");
    // Five more cycles: nginx and the system check every cycle, one log line for Redis.
    let times = wait_for(Duration::from_secs(20), "five cycles after Redis stopped", || {
        let t: Vec<u64> =
            influx.points("nginx_connections").into_iter().map(|p| p.0).filter(|t| *t > stopped_at).collect();
        (t.len() >= 5).then_some(t)
    });
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 1, "nginx missed a cycle: {times:?}");
    }
    let log = agent.log();
    assert_eq!(log.matches("check Redis failed").count(), 1, "{log}");
}

fn latest_time(influx: &Influx, name: &str) -> u64 {
    influx.points(name).last().map(|p| p.0).unwrap_or(0)
}

#[test]
fn wrong_passwords_give_one_clear_error() {
    let influx = Influx::start(false);
    let db = MariaDb::start();
    let redis = services::redis(Some("right"));
    let nginx = services::nginx(None);
    let sections = format!(
        "[MySQL]\nhost: 127.0.0.1\nport: {}\nuser: {}\npass: Mysql-Secret-9\n\n[Redis]\nport: {}\npass: Redis-Secret-9\n\n[NginX]\naddress: http://127.0.0.1:{}\nstats: /auth_status\nauth: True\nuser: agent\npass: Nginx-Secret-9\n",
        db.port,
        MariaDb::USER,
        redis.port,
        nginx.port
    );
    let agent = Agent::new("system_checks: load_average", &format!("{}\n{sections}", influx_tsdb(&influx)));
    let _shipper = agent.start_shipper();
    let _collector = agent.start_collector();
    // Several cycles of the system check, then read the log.
    wait_for(Duration::from_secs(20), "four cycles", || (influx.points("sys_load_1").len() >= 4).then_some(()));
    let log = agent.log();
    assert_eq!(log.matches("access denied for user \"agent\": check [MySQL] user and pass").count(), 1, "{log}");
    assert_eq!(log.matches("authentication failed").count(), 1, "{log}");
    assert_eq!(log.matches("answered 401: check [NginX] auth, user and pass").count(), 1, "{log}");
    assert!(!log.contains("-Secret-9"), "a password was logged:\n{log}");
}
