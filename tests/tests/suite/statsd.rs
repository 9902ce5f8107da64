//! The StatsD input against the reference daemon (statsd 0.9 with its Graphite backend, run by
//! Node): the same packets go to both and every name and value of a flush, and of the idle flush
//! after it, must be equal. Then real clients: the `statsd` Python package (UDP and TCP) and
//! hot-shots, a DogStatsD client whose tags reach InfluxDB as tags; and the bounds.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use puypuy_tests::statsd::{
    file_flushes, is_reference_internal, node, node_modules, FilePoint, ReferenceStatsd, NODE_HINT,
};
use puypuy_tests::{free_port, wait_for, Agent, Influx, Proc};

/// The flush period of both daemons in the comparison.
const PERIOD: u64 = 2;
const PERCENTILES: [f64; 3] = [50.0, 90.0, 99.9];

/// A shipper whose `[Relay]` has a StatsD input on a free port, started and listening. A port
/// taken meanwhile by another test (the UDP one, or the TCP one of `statsd_tcp`) makes the
/// shipper exit at start: then another port is tried.
fn statsd_shipper(tsdb: &str, statsd_keys: &str) -> (Agent, Proc, u16) {
    for _ in 0..5 {
        let port = free_port();
        let agent = Agent::new("", &format!("{tsdb}\n[Relay]\nstatsd_listen = {port}\n{statsd_keys}\n"));
        let mut shipper = agent.launch_shipper();
        let listening = wait_for(Duration::from_secs(15), "the StatsD input or the shipper's exit", || {
            if agent.log().contains("relay: StatsD input on") {
                Some(true)
            } else if !shipper.is_running() {
                Some(false)
            } else {
                None
            }
        });
        if listening {
            return (agent, shipper, port);
        }
        assert!(agent.log().contains("cannot listen"), "the shipper exited:\n{}", agent.log());
    }
    panic!("the StatsD input could not get a free port in five tries");
}

const FILE_TSDB: &str = "[TSDB]\ntsdtype = File\npath = out.txt\n";

fn send(port: u16, packets: &[impl AsRef<[u8]>]) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    for p in packets {
        socket.send_to(p.as_ref(), ("127.0.0.1", port)).expect("send");
    }
}

/// The packets of the comparison, framed by two marker counters that show whether all of them
/// landed in one flush.
fn oracle_packets() -> Vec<Vec<u8>> {
    let mut packets = vec![b"oracle.first:1|c".to_vec()];
    packets.extend(
        [
            // Counters, with sample rates, in one datagram; sums that are not exact in binary.
            "oracle.count:1|c\noracle.count:2|c|@0.5\noracle.count:3|c|@0.1",
            "oracle.frac:0.1|c\noracle.frac:0.2|c",
            "oracle.sampled:1|c|@0.3",
            // Gauges: absolute, deltas, a delta first, a delta after 0.
            "oracle.gauge:10|g",
            "oracle.gauge:+5|g\noracle.gauge:-3.5|g",
            "oracle.gdelta:-4|g",
            "oracle.gzero:0|g\noracle.gzero:+2|g",
            // Timers: one value, two, sampled, and several values after one name.
            "oracle.t1:42|ms",
            "oracle.t3:5|ms\noracle.t3:15|ms",
            "oracle.tsampled:100|ms|@0.5\noracle.tsampled:200|ms|@0.25",
            "oracle.multi:1|c:7|ms:9|ms",
            // Sets.
            "oracle.users:alice|s\noracle.users:bob|s\noracle.users:alice|s",
            // DogStatsD tags, and names the reference cleans.
            "oracle.tagged:3|c|#env:prod,dc:eu-1",
            "oracle.tagged.t:12|ms|#env:prod\noracle.tagged.t:4|ms|#env:prod",
            "oracle.url:1|c|#url:http://h/p,production",
            "oracle.weird name/x!:1|c",
            // Bad lines: used by neither.
            "oracle.bad:abc|c\noracle.nocolon\noracle.badrate:1|c|0.5\noracle.badtimer:-1|ms",
        ]
        .map(|p| p.as_bytes().to_vec()),
    );
    // Bytes that are not UTF-8 (read as replacement characters, which the key cleaning removes),
    // and a good line after them in the same datagram: the shipper checks UTF-8 per datagram first.
    packets.push(b"oracle.bin\xff\xfe:2|c\noracle.utf8.after:3|c\noracle.binval:4\xff|c".to_vec());
    // A timer of 25 values, one per datagram, not in order.
    packets.extend(
        (0..25).map(|i| format!("oracle.t25:{}{}|ms", (i * 37) % 101, if i % 5 == 0 { ".5" } else { "" }).into_bytes()),
    );
    packets.push(b"oracle.last:1|c".to_vec());
    packets
}

type Flush = BTreeMap<String, f64>;

/// The flush that holds both markers once, and the flush after it; `None` when the packets were
/// split over two flushes (then the caller tries again).
fn data_and_idle(flushes: &[Flush], marker: impl Fn(&str) -> String) -> Option<(Flush, Flush)> {
    let at = flushes.iter().position(|f| f.contains_key(&marker("first")) || f.contains_key(&marker("last")))?;
    let data = &flushes[at];
    let whole = data.get(&marker("first")) == Some(&1.0) && data.get(&marker("last")) == Some(&1.0);
    if !whole {
        return None;
    }
    Some((data.clone(), flushes.get(at + 1)?.clone()))
}

fn reference_flushes(packets: &[Vec<u8>]) -> (Flush, Flush) {
    for _ in 0..3 {
        let reference = ReferenceStatsd::start(PERIOD, &PERCENTILES);
        // Right after a flush, so that the packets land in the next one.
        wait_for(Duration::from_secs(4 * PERIOD), "the reference's first flush", || {
            (!reference.sink.flushes().is_empty()).then_some(())
        });
        send(reference.port, packets);
        let flushes = wait_for(Duration::from_secs(5 * PERIOD), "the reference's data and idle flushes", || {
            let flushes: Vec<Flush> = reference
                .sink
                .flushes()
                .into_iter()
                .map(|f| f.into_iter().filter(|(n, _, _)| !is_reference_internal(n)).map(|(n, v, _)| (n, v)).collect())
                .collect();
            let at = flushes.iter().position(|f| f.contains_key("stats_counts.oracle.last"))?;
            (flushes.len() > at + 1).then_some(flushes)
        });
        if let Some(found) = data_and_idle(&flushes, |m| format!("stats_counts.oracle.{m}")) {
            return found;
        }
    }
    panic!("the packets were split over two reference flushes three times");
}

fn puypuy_flushes(packets: &[Vec<u8>]) -> (Flush, Flush) {
    let keys = format!("statsd_flush_seconds = {PERIOD}\nstatsd_percentiles = 50, 90, 99.9\n");
    for _ in 0..3 {
        let (agent, _shipper, port) = statsd_shipper(FILE_TSDB, &keys);
        // Flushes fall on multiples of the period: send just after one.
        wait_for(Duration::from_secs(2 * PERIOD), "the start of a flush period", || {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
            (now % (PERIOD * 1000) < 300).then_some(())
        });
        send(port, packets);
        let out = agent.path("out.txt");
        let flushes = wait_for(Duration::from_secs(5 * PERIOD), "the shipper's data and idle flushes", || {
            let by_time = file_flushes(&out);
            let with_last =
                by_time.iter().position(|(_, f)| f.iter().any(|(n, _, _)| n == "stats_counts.oracle.last"))?;
            let flushes: Vec<Flush> =
                by_time.into_values().map(|f| f.into_iter().map(|(n, _, v)| (n, v)).collect()).collect();
            (flushes.len() > with_last + 1).then_some(flushes)
        });
        if let Some(found) = data_and_idle(&flushes, |m| format!("stats_counts.oracle.{m}")) {
            return found;
        }
    }
    panic!("the packets were split over two shipper flushes three times");
}

fn assert_same(what: &str, reference: &Flush, puypuy: &Flush) {
    let mut differences = Vec::new();
    for (name, value) in reference {
        match puypuy.get(name) {
            None => differences.push(format!("missing {name} {value}")),
            Some(v) if v != value => differences.push(format!("{name}: reference {value}, PuyPuy {v}")),
            Some(_) => {}
        }
    }
    for (name, value) in puypuy {
        if !reference.contains_key(name) {
            differences.push(format!("extra {name} {value}"));
        }
    }
    assert!(differences.is_empty(), "{what} differs from the reference statsd:\n{}", differences.join("\n"));
}

#[test]
fn statsd_flushes_match_the_reference_daemon_name_for_name_and_value_for_value() {
    let packets = oracle_packets();
    let (reference_data, reference_idle) = reference_flushes(&packets);
    let (data, idle) = puypuy_flushes(&packets);
    // The comparison covers what it means to: every kind of series made it into both.
    for name in [
        "stats.oracle.count",
        "stats.gauges.oracle.gdelta",
        "stats.timers.oracle.t25.upper_99_9",
        "stats.timers.oracle.t25.sum_squares_50",
        "stats.sets.oracle.users.count",
        "stats.oracle.tagged;env=prod;dc=eu-1",
        "stats.timers.oracle.tagged.t.mean_90;env=prod",
    ] {
        assert!(reference_data.contains_key(name), "{name} missing from the reference's flush: {reference_data:?}");
    }
    assert_same("the flush of the packets", &reference_data, &data);
    assert_same("the idle flush after it", &reference_idle, &idle);
    assert!(idle.contains_key("stats.gauges.oracle.gauge") && idle["stats.timers.oracle.t1.count"] == 0.0);
}

/// Sums a counter over every flush written so far (a client's sends may fall in two flushes).
fn counter_total(flushes: &BTreeMap<u64, Vec<FilePoint>>, name: &str) -> f64 {
    flushes.values().flatten().filter(|(n, _, _)| n == name).map(|(_, _, v)| v).sum()
}

#[test]
fn the_python_statsd_client_is_aggregated_over_udp_and_tcp() {
    let (agent, _shipper, port) = statsd_shipper(FILE_TSDB, "statsd_tcp = true\nstatsd_flush_seconds = 1\n");
    let script = format!(
        "import statsd\n\
         for c in (statsd.StatsClient('127.0.0.1', {port}), statsd.TCPStatsClient('127.0.0.1', {port})):\n\
         \x20   c.incr('py.requests', 3)\n\
         \x20   c.timing('py.latency', 320)\n\
         \x20   c.gauge('py.depth', 7)\n\
         \x20   c.set('py.users', 'alice')\n\
         \x20   with c.pipeline() as p:\n\
         \x20       p.incr('py.requests')\n\
         \x20       p.timing('py.latency', 80)\n\
         \x20   if hasattr(c, 'close'):\n\
         \x20       c.close()\n"
    );
    let out = Command::new("/usr/bin/python3").args(["-c", &script]).stderr(Stdio::piped()).output().expect("python3");
    assert!(
        out.status.success(),
        "the statsd Python client failed (install python3-statsd; ./tests/run.sh does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = agent.path("out.txt");
    let flushes = wait_for(Duration::from_secs(15), "the Python client's counts", || {
        let f = file_flushes(&path);
        (counter_total(&f, "stats_counts.py.requests") == 8.0).then_some(f)
    });
    let all: Vec<_> = flushes.values().flatten().collect();
    let max = |name: &str| all.iter().filter(|(n, _, _)| n == name).map(|(_, _, v)| *v).fold(f64::MIN, f64::max);
    assert_eq!(max("stats.timers.py.latency.upper"), 320.0);
    assert_eq!(counter_total(&flushes, "stats.timers.py.latency.count"), 4.0);
    assert_eq!(max("stats.gauges.py.depth"), 7.0);
    assert_eq!(max("stats.sets.py.users.count"), 1.0);
    let status = wait_for(Duration::from_secs(10), "the StatsD self-metrics", || {
        let s = agent.status()?;
        (s["metrics"]["puypuy_relay_connections{input=statsd}"].as_i64()? >= 1).then_some(s)
    });
    assert!(status["metrics"]["puypuy_relay_packets{input=statsd}"].as_i64() >= Some(1), "{status}");
    assert!(status["metrics"]["puypuy_relay_lines_accepted{input=statsd}"].as_i64() >= Some(12), "{status}");
}

#[test]
fn a_dogstatsd_client_s_tags_reach_influxdb_as_tags_with_tagged_names() {
    let influx = Influx::start(false);
    let tsdb = format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB);
    let (_agent, _shipper, port) = statsd_shipper(&tsdb, "statsd_names = tagged\nstatsd_flush_seconds = 1\n");
    let hot_shots = node_modules().join("hot-shots");
    let script = format!(
        "const StatsD = require({:?});\n\
         const c = new StatsD({{ host: '127.0.0.1', port: {port}, globalTags: {{ env: 'test' }}, errorHandler: e => {{ console.error(e); process.exit(1); }} }});\n\
         c.increment('dog.requests', 2, {{ route: 'home' }});\n\
         c.histogram('dog.size', 10, ['kind:x']);\n\
         c.distribution('dog.size', 30, ['kind:x']);\n\
         c.gauge('dog.temp', 21.5);\n\
         c.close(() => process.exit(0));\n",
        hot_shots.display().to_string()
    );
    let out = Command::new(node()).args(["-e", &script]).stderr(Stdio::piped()).output().expect("node");
    assert!(out.status.success(), "hot-shots failed ({NODE_HINT}): {}", String::from_utf8_lossy(&out.stderr));
    let requests = wait_for(Duration::from_secs(15), "dog.requests.count in InfluxDB", || {
        let p = influx.points("dog.requests.count");
        (p.iter().filter_map(|(_, v, _)| v.as_f64()).sum::<f64>() == 2.0).then_some(p)
    });
    let tags = &requests[0].2;
    assert_eq!(
        (tags["route"].as_str(), tags["env"].as_str(), tags["type"].as_str()),
        (Some("home"), Some("test"), Some("statsd"))
    );
    let upper = wait_for(Duration::from_secs(15), "dog.size.upper", || {
        influx.points("dog.size.upper").into_iter().find(|(_, v, _)| v.as_f64() == Some(30.0))
    });
    assert_eq!(upper.2["kind"], "x", "histograms and distributions are timers, tags kept");
    let temp = wait_for(Duration::from_secs(15), "dog.temp", || influx.points("dog.temp").into_iter().next());
    assert_eq!((temp.1.as_f64(), temp.2["env"].as_str()), (Some(21.5), Some("test")));
}

#[test]
fn beyond_max_series_new_series_are_dropped_and_bad_lines_counted() {
    let (agent, shipper, port) = statsd_shipper(FILE_TSDB, "statsd_max_series = 3\nstatsd_flush_seconds = 1\n");
    let packets: Vec<String> =
        (0..5).map(|i| format!("bound.s{i}:1|c")).chain(["bound.s0:1|c\nbad|c\nx:y|c".into()]).collect();
    send(port, &packets);
    let pid = shipper.pid();
    wait_for(Duration::from_secs(15), "the drops and rejections in the self-metrics", || {
        let dropped = agent.status_metric(pid, "puypuy_statsd_dropped{reason=max_series}")?;
        let rejected = agent.status_metric(pid, "puypuy_relay_lines_rejected{input=statsd}")?;
        let series = agent.status_metric(pid, "puypuy_statsd_series")?;
        (dropped == 2 && rejected == 2 && series == 3).then_some(())
    });
    let path = agent.path("out.txt");
    let flushes = wait_for(Duration::from_secs(10), "bound.s0 flushed", || {
        let f = file_flushes(&path);
        (counter_total(&f, "stats_counts.bound.s0") == 2.0).then_some(f)
    });
    let names: std::collections::BTreeSet<&str> = flushes.values().flatten().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("stats_counts.")).count(), 3, "{names:?}");
}
