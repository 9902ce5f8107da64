//! The system checks' points arrive in each of the four backends with the old names and tags.

use std::time::Duration;

use puypuy_common::client::SenderClient;
use puypuy_common::Point;
use puypuy_tests::{wait_for, Agent, Carbon, Influx, KairosMock, Victoria};
use serde_json::Value as Json;

const FIVE_TAGS: [&str; 5] = ["host", "type", "cluster", "group", "location"];

fn influx_tsdb(influx: &Influx, auth: Option<(&str, &str)>) -> String {
    let mut s = format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB);
    match auth {
        Some((u, p)) => s.push_str(&format!("auth = True\nuser = {u}\npass = {p}\n")),
        None => s.push_str("auth = False\n"),
    }
    s
}

#[test]
fn influxdb_gets_system_metrics_with_all_five_tags() {
    let influx = Influx::start(false);
    let agent = Agent::new("", &format!("{}\n[Tags]\ndatacenter: eu-1\n", influx_tsdb(&influx, None)));
    let _shipper = agent.start_shipper();
    let _collector = agent.start_collector();
    let host = Agent::host();
    for name in ["mem_total", "sys_load_1", "cpu_user"] {
        let points = wait_for(Duration::from_secs(20), &format!("{name} in InfluxDB"), || {
            let p = influx.points(name);
            (!p.is_empty()).then_some(p)
        });
        let (time, value, tags) = &points[0];
        assert!(*time > 1_700_000_000, "{name} timestamp {time}");
        assert!(value.is_number(), "{name} value {value}");
        for tag in FIVE_TAGS {
            assert!(tags.contains_key(tag), "{name} lacks tag {tag}: {tags:?}");
        }
        assert_eq!(tags["host"], Json::from(host.clone()));
        assert_eq!(tags["type"], "system");
        assert_eq!(tags["cluster"], "testcluster");
        assert_eq!(tags["group"], "testgroup");
        assert_eq!(tags["location"], "testloc");
        assert_eq!(tags["datacenter"], "eu-1");
    }
    // mem_total is an integer field; cpu_user a float rate.
    let (_, rows) = influx.select("SHOW FIELD KEYS FROM mem_total");
    assert_eq!(rows[0][1], "integer");
    let (_, rows) = influx.select("SHOW FIELD KEYS FROM cpu_user");
    assert_eq!(rows[0][1], "float");
    // Timestamps of one metric are exactly one period apart (wall-clock aligned schedule).
    let loads = wait_for(Duration::from_secs(10), "three sys_load_1 points", || {
        let p = influx.points("sys_load_1");
        (p.len() >= 3).then_some(p)
    });
    for pair in loads.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 1, "timestamps {} then {}", pair[0].0, pair[1].0);
    }
}

#[test]
fn influxdb_auth_right_password_works_and_wrong_one_is_logged() {
    let influx = Influx::start(true);
    let good = Agent::new("", &influx_tsdb(&influx, Some(("admin", "secret"))));
    let _s = good.start_shipper();
    let _c = good.start_collector();
    wait_for(Duration::from_secs(20), "mem_total with auth", || (!influx.points("mem_total").is_empty()).then_some(()));

    let bad = Agent::new("", &influx_tsdb(&influx, Some(("admin", "WRONG"))));
    let mut shipper = bad.start_shipper();
    let _c2 = bad.start_collector();
    let log = wait_for(Duration::from_secs(20), "the 401 in the log", || {
        let log = bad.log();
        log.contains("401").then_some(log)
    });
    assert!(log.contains("authorization failed"), "server error text missing: {log}");
    assert!(!log.contains("WRONG"), "the password was logged: {log}");
    // Still running and still retrying: its status file counts further failed sends.
    wait_for(Duration::from_secs(20), "more failed sends after the 401", || {
        let status = std::fs::read_to_string(bad.path("spool/shipper-status.json")).ok()?;
        let v: Json = serde_json::from_str(&status).ok()?;
        (v["metrics"]["puypuy_shipper_backend_errors{kind=status}"].as_i64()? >= 3).then_some(())
    });
    assert!(shipper.is_running(), "the shipper exited on 401");
}

#[test]
fn carbon_whisper_files_hold_the_values() {
    let carbon = Carbon::start();
    let agent = Agent::new("", &format!("[TSDB]\ntsdtype: Carbon\naddress: 127.0.0.1:{}\n", carbon.pickle_port));
    let _shipper = agent.start_shipper();
    let _collector = agent.start_collector();
    let host = Agent::host().replace('.', "_");
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let total_kb: f64 = meminfo
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    let path = format!("testcluster.testgroup.{host}.mem_total");
    let values = wait_for(Duration::from_secs(30), &format!("{path} in whisper"), || {
        let v = carbon.fetch(&path, 60);
        (!v.is_empty()).then_some(v)
    });
    assert_eq!(values[0].1, total_kb * 1024.0);
    let rates = wait_for(Duration::from_secs(30), "a cpu_idle rate in whisper", || {
        let v = carbon.fetch(&format!("testcluster.testgroup.{host}.cpu_idle"), 60);
        (!v.is_empty()).then_some(v)
    });
    assert!(rates[0].1 >= 0.0);
}

#[test]
fn opentsdb_api_put_into_victoriametrics() {
    let vm = Victoria::start();
    let agent = Agent::new(
        "",
        &format!(
            "[TSDB]\ntsdtype: OpenTSDB\naddress: http://127.0.0.1:{}\ndatapoints: /api/put\nauth: False\n",
            vm.otsdb_port
        ),
    );
    let _shipper = agent.start_shipper();
    let _collector = agent.start_collector();
    let series = wait_for(Duration::from_secs(30), "sys_load_1 in VictoriaMetrics", || {
        let s = vm.export("{__name__=\"sys_load_1\"}");
        (!s.is_empty()).then_some(s)
    });
    let metric = &series[0]["metric"];
    assert_eq!(metric["host"], Json::from(Agent::host()));
    assert_eq!(metric["type"], "system");
    assert_eq!(metric["cluster"], "testcluster");
    assert_eq!(metric["group"], "testgroup");
    assert_eq!(metric["location"], "testloc");
    let loadavg = std::fs::read_to_string("/proc/loadavg").expect("loadavg");
    let value = series[0]["values"][0].as_f64().expect("value");
    let now: f64 = loadavg.split_whitespace().next().and_then(|v| v.parse().ok()).expect("load");
    assert!((value - now).abs() < 5.0, "sys_load_1 {value} far from {now}");
}

#[test]
fn kairosdb_contract_gzip_milliseconds_and_tags() {
    let kairos = KairosMock::start();
    let agent = Agent::new(
        "",
        &format!("[TSDB]\ntsdtype: KairosDB\naddress: {}\ndatapoints: /api/v1/datapoints\n", kairos.url()),
    );
    let _shipper = agent.start_shipper();
    let status = agent.command("puypuy-collector").arg("--once").status().expect("collector --once");
    assert!(status.success());
    let points = kairos.received.lock().expect("lock").clone();
    let mem = points.iter().find(|p| p["name"] == "mem_total").expect("mem_total arrived");
    assert_eq!(mem["tags"]["type"], "system");
    assert_eq!(mem["tags"]["cluster"], "testcluster");
    assert!(mem["timestamp"].as_u64().expect("ts") % 1000 == 0);
    let requests = kairos.requests.lock().expect("lock").clone();
    assert!(requests.iter().all(|(s, _)| *s == 204), "{requests:?}");
}

#[test]
fn kairosdb_400_is_logged_with_the_server_error_and_later_points_go_through() {
    let kairos = KairosMock::start();
    let agent = Agent::new("", &format!("[TSDB]\ntsdtype: KairosDB\naddress: {}\n", kairos.url()));
    let mut shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "test", 100);
    // The double refuses timestamps before 2001 (KairosDB validates them too).
    client.send(vec![Point::int("too_old", 5, 1, "test")]);
    assert!(client.flush(Duration::from_secs(10)), "the rejected frame was not acknowledged");
    let log = wait_for(Duration::from_secs(10), "the 400 in the log", || {
        let log = agent.log();
        log.contains("KairosDB answered 400").then_some(log)
    });
    assert!(log.contains("invalid datapoint"), "server error text missing: {log}");
    client.send(vec![Point::int("fine", 1_700_000_000, 7, "test")]);
    assert!(client.flush(Duration::from_secs(10)));
    let points: Vec<Json> =
        kairos.received.lock().expect("lock").iter().filter(|p| p["tags"]["type"] != "puypuy").cloned().collect();
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0]["name"], "fine");
    assert_eq!(points[0]["timestamp"], 1_700_000_000_000u64);
    assert_eq!(points[0]["value"], 7);
    assert!(shipper.is_running());
}

/// A batch refused whole for two bad points (KairosDB and OpenTSDB refuse a request for one bad
/// point) is split until only the bad ones are left: the good points of the same frame arrive,
/// the bad ones are set aside in rejected/, and the frame is acknowledged.
#[test]
fn a_refused_batch_of_good_and_bad_points_delivers_the_good_ones() {
    let kairos = KairosMock::start();
    let agent = Agent::new(
        "batch_ms: 200\nself_metrics: no",
        &format!("[TSDB]\ntsdtype: KairosDB\naddress: {}\n", kairos.url()),
    );
    let _shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "test", 100);
    let mut points: Vec<Point> = (0..10).map(|i| Point::int(format!("good_{i}"), 1_700_000_000, i, "test")).collect();
    points.insert(3, Point::int("bad_a", 5, 1, "test"));
    points.insert(8, Point::int("bad_b", 6, 1, "test"));
    client.send(points);
    assert!(client.flush(Duration::from_secs(20)), "the frame was not acknowledged");
    let mut got: Vec<(String, i64)> = kairos
        .received
        .lock()
        .expect("lock")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or("").to_string(), p["value"].as_i64().unwrap_or(-1)))
        .collect();
    got.sort();
    let want: Vec<(String, i64)> = (0..10).map(|i| (format!("good_{i}"), i)).collect();
    assert_eq!(got, want, "every good point once, no bad one");
    let rejected: String = std::fs::read_dir(agent.path("spool/rejected"))
        .expect("rejected/")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(rejected.contains("bad_a") && rejected.contains("bad_b"), "{rejected}");
    assert!(!rejected.contains("good_"), "a good point was set aside: {rejected}");
}
