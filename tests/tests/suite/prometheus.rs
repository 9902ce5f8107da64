//! Issue 18, Prometheus both ways and InfluxDB 2, against real servers: a Prometheus 2.42 scrapes
//! the shipper's `/metrics` page (which `promtool check metrics` must accept) and receives remote
//! write, VictoriaMetrics receives remote write (with basic auth) and InfluxDB 2 line protocol on
//! `/api/v2/write`, and the collector scrapes a node exporter, Prometheus' and VictoriaMetrics' own
//! pages. The exact InfluxDB 2 and remote-write requests are pinned on a capture server.

use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use puypuy_common::client::SenderClient;
use puypuy_common::Point;
use puypuy_tests::prometheus::{promtool_check_metrics, Capture, NodeExporter, Prometheus, VictoriaWith};
use puypuy_tests::{free_port, wait_for, Agent};

const WAIT: Duration = Duration::from_secs(30);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// An answer: status, headers, raw body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// GET with optional headers.
fn get(url: &str, headers: &[(&str, &str)]) -> Option<Answer> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().ok()?;
    let status = resp.status().as_u16();
    let hs = resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let mut body = Vec::new();
    resp.body_mut().as_reader().read_to_end(&mut body).ok()?;
    Some((status, hs, body))
}

fn page_agent(port: u16, web_extra: &str) -> Agent {
    Agent::new(
        "",
        &format!("[TSDB]\ntsdtype = Prometheus\n\n[WebServer]\nwebaddress = 127.0.0.1:{port}\n{web_extra}\n"),
    )
}

#[test]
fn prometheus_scrapes_the_metrics_page_and_promtool_accepts_it() {
    let port = free_port();
    let agent = page_agent(port, "");
    let _shipper = agent.start_shipper();
    let _collector = agent.start_collector();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let page = wait_for(WAIT, "mem_total and a cpu rate on the page", || {
        let (status, _, body) = get(&url, &[])?;
        let text = String::from_utf8(body).ok()?;
        (status == 200 && text.contains("\nmem_total{") && text.contains("\ncpu_user{")).then_some(text)
    });
    assert!(page.contains("# TYPE mem_total untyped\n"), "{page}");
    assert!(page.contains("cluster=\"testcluster\""), "{page}");
    let (ok, said) = promtool_check_metrics(page.as_bytes());
    assert!(ok, "promtool check metrics refused the page: {said}\n{page}");

    // Accept-Encoding: gzip is honoured and the page inside is the same format (a raw request:
    // ureq would decompress the answer and drop the header).
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n").expect("request");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).expect("answer");
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200") || head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\ncontent-encoding: gzip"), "{head}");
    assert!(head.contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&answer[split + 4..]).read_to_string(&mut unzipped).expect("gunzip");
    assert!(unzipped.contains("# TYPE mem_total untyped\n"), "{unzipped}");

    // A real Prometheus scrapes it: the series arrive with the host's tags as labels.
    let prom = Prometheus::start(&format!(
        "  - job_name: puypuy\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    ));
    let host = Agent::host();
    let rows = wait_for(WAIT, "mem_total in Prometheus", || {
        let rows = prom.query("mem_total");
        (!rows.is_empty()).then_some(rows)
    });
    let (labels, value) = &rows[0];
    assert!(*value > 0.0, "{rows:?}");
    assert_eq!(labels["host"], host.as_str(), "{labels:?}");
    assert_eq!(labels["type"], "system");
    assert_eq!(labels["group"], "testgroup");
    assert_eq!(labels["job"], "puypuy");
    let up = prom.query("up{job=\"puypuy\"}");
    assert_eq!(up.first().map(|r| r.1), Some(1.0), "scrape not healthy: {up:?}\n{}", prom.log());
}

#[test]
fn metrics_page_refuses_clients_outside_allowedip_and_requests_without_the_apikey() {
    let port = free_port();
    let agent = page_agent(port, "allowedip = 127.0.0.2, 10.0.0.0/8\n");
    let _shipper = agent.start_shipper();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let (status, _, _) = wait_for(WAIT, "the page to answer", || get(&url, &[]));
    assert_eq!(status, 403, "127.0.0.1 is not in allowedip");

    let port = free_port();
    let agent = page_agent(port, "allowedip = 127.0.0.0/8\napikey = s3cret\n");
    let _shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "test", 100);
    client.send(vec![Point::int("apikey_marker", now(), 7, "test")]);
    assert!(client.flush(WAIT), "the point was not acknowledged");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let status = |u: &str, h: &[(&str, &str)]| get(u, h).map(|r| r.0);
    assert_eq!(wait_for(WAIT, "the page", || status(&url, &[])), 401);
    assert_eq!(status(&url, &[("Authorization", "Bearer wrong")]), Some(401));
    assert_eq!(status(&url, &[("Authorization", "Bearer s3cret")]), Some(200));
    assert_eq!(status(&format!("{url}?apikey=s3cret"), &[]), Some(200));

    // Prometheus with the key as its scrape credentials reads the page.
    let prom = Prometheus::start(&format!(
        "  - job_name: puypuy\n    honor_labels: true\n    authorization:\n      credentials: s3cret\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    ));
    wait_for(WAIT, "apikey_marker in Prometheus", || {
        let rows = prom.query("apikey_marker");
        rows.first().filter(|r| r.1 == 7.0).map(|_| ())
    });
}

#[test]
fn series_that_stop_arriving_leave_the_page_after_the_staleness() {
    let port = free_port();
    let agent = page_agent(port, "staleness_seconds = 2\n");
    let _shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "test", 100);
    client.send(vec![Point::int("stops_now", now(), 1, "test"), Point::float("keeps_going", now(), 0.5, "test")]);
    assert!(client.flush(WAIT));
    let url = format!("http://127.0.0.1:{port}/metrics");
    let page = || get(&url, &[]).and_then(|(_, _, b)| String::from_utf8(b).ok()).unwrap_or_default();
    wait_for(WAIT, "both series on the page", || {
        let p = page();
        (p.contains("stops_now{") && p.contains("keeps_going{")).then_some(())
    });
    // keeps_going is refreshed until stops_now is gone; it must still be there then.
    let gone = wait_for(WAIT, "stops_now to leave the page", || {
        client.send(vec![Point::float("keeps_going", now(), 0.5, "test")]);
        client.flush(WAIT);
        let p = page();
        (!p.contains("stops_now")).then_some(p)
    });
    assert!(gone.contains("keeps_going{"), "{gone}");
}

/// The remote-write config for `address`.
fn remote_write(address: &str, auth: &str) -> String {
    format!("[TSDB]\ntsdtype = PrometheusRemoteWrite\naddress = {address}\n{auth}\n")
}

#[test]
fn remote_write_arrives_in_victoriametrics_with_basic_auth_and_in_prometheus() {
    let vm = VictoriaWith::start(Some(("puy", "pa55")));
    let agent = Agent::new("", &remote_write(&vm.url(), "auth = True\nuser = puy\npass = pa55\n"));
    let _shipper = agent.start_shipper();
    let _collector = agent.start_collector();
    let host = Agent::host();
    let series = wait_for(WAIT, "mem_total in VictoriaMetrics", || {
        let s = vm.export("mem_total");
        (!s.is_empty()).then_some(s)
    });
    assert_eq!(series[0]["metric"]["host"], host.as_str(), "{series:?}");
    assert_eq!(series[0]["metric"]["type"], "system");
    assert!(series[0]["values"][0].as_f64().is_some_and(|v| v > 0.0), "{series:?}");
    let ts = series[0]["timestamps"][0].as_u64().expect("timestamp");
    assert_eq!(ts % 1000, 0, "whole seconds in milliseconds: {ts}");

    let prom = Prometheus::start("");
    let agent = Agent::new("", &remote_write(&prom.url(), "datapoints = /api/v1/write\n"));
    let _shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "test", 100);
    let t = now();
    client.send(vec![
        Point::float("rw_marker", t, 2.5, "test").with_tag("disk", "sda-1"),
        Point::int("drive_sda-1_bytes_used", t, 42, "system"),
    ]);
    assert!(client.flush(WAIT), "the frame was not acknowledged");
    let rows = wait_for(WAIT, "rw_marker in Prometheus", || {
        let rows = prom.query("rw_marker");
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(rows[0].1, 2.5);
    assert_eq!(rows[0].0["disk"], "sda-1");
    assert_eq!(rows[0].0["host"], host.as_str());
    let cleaned = wait_for(WAIT, "the cleaned name in Prometheus", || {
        let rows = prom.query("drive_sda_1_bytes_used");
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(cleaned[0].1, 42.0);
}

#[test]
fn remote_write_request_has_the_spec_headers_and_a_snappy_protobuf_body() {
    let capture = Capture::start();
    let agent = Agent::new("", &remote_write(&capture.url(), "token = t0k3n\n"));
    let _shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "test", 100);
    client.send(vec![Point::float("sys_load_1", 1_700_000_000, 0.5, "")]);
    assert!(client.flush(WAIT));
    let req = wait_for(WAIT, "the remote-write request", || capture.requests().into_iter().next());
    assert_eq!((req.method.as_str(), req.url.as_str()), ("POST", "/api/v1/write"));
    assert_eq!(req.header("Content-Encoding"), Some("snappy"));
    assert_eq!(req.header("Content-Type"), Some("application/x-protobuf"));
    assert_eq!(req.header("X-Prometheus-Remote-Write-Version"), Some("0.1.0"));
    assert_eq!(req.header("Authorization"), Some("Bearer t0k3n"));
    assert!(req.header("User-Agent").is_some_and(|u| u.starts_with("puypuy/")), "{req:?}");
    let raw = snap::raw::Decoder::new().decompress_vec(&req.body).expect("snappy block format");
    // One series: __name__, then the host's tags; one sample of 0.5 at 1700000000000 ms.
    assert_eq!(raw[0], 0x0a);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("__name__") && text.contains("sys_load_1") && text.contains("testcluster"), "{text}");
    assert!(raw.windows(8).any(|w| w == 0.5f64.to_le_bytes()), "{raw:?}");
    assert!(raw.ends_with(&[0x10, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31]), "{raw:?}");
}

fn influxdb2(address: &str) -> String {
    format!(
        "[TSDB]\ntsdtype = InfluxDB2\naddress = {address}\norganization = my org\nbucket = puypuy\ntoken_env = PUYPUY_TEST_INFLUX_TOKEN\ngzip = False\n"
    )
}

#[test]
fn influxdb2_request_is_pinned_byte_for_byte() {
    let capture = Capture::start();
    let agent = Agent::new("", &influxdb2(&capture.url()));
    let shipper = puypuy_tests::Proc::spawn(
        "puypuy-shipper",
        agent.command("puypuy-shipper").env("PUYPUY_TEST_INFLUX_TOKEN", "t0k/3n=="),
    );
    wait_for(WAIT, "the shipper's socket", || std::os::unix::net::UnixStream::connect(agent.socket()).ok());
    let client = SenderClient::start(&agent.socket(), "test", 100);
    client.send(vec![
        Point::float("sys_load_1", 1_700_000_000, 0.5, "system"),
        Point::int("mem_total", 1_700_000_000, 8589934592, "system").with_tag("zone", "a b"),
    ]);
    assert!(client.flush(WAIT));
    let req = wait_for(WAIT, "the InfluxDB 2 request", || capture.requests().into_iter().next());
    drop(shipper);
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, "/api/v2/write?org=my%20org&bucket=puypuy&precision=s");
    assert_eq!(req.header("Authorization"), Some("Token t0k/3n=="));
    assert_eq!(req.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(req.header("Content-Encoding"), None);
    let host = Agent::host();
    let tags = format!("host={host},cluster=testcluster,group=testgroup,location=testloc,type=system");
    assert_eq!(
        String::from_utf8(req.body).expect("utf-8"),
        format!("sys_load_1,{tags} value=0.5 1700000000\nmem_total,{tags},zone=a\\ b value=8589934592i 1700000000\n")
    );
}

#[test]
fn influxdb2_line_protocol_arrives_in_victoriametrics() {
    let vm = VictoriaWith::start(None);
    let agent = Agent::new("", &influxdb2(&vm.url()));
    let _shipper = puypuy_tests::Proc::spawn(
        "puypuy-shipper",
        agent.command("puypuy-shipper").env("PUYPUY_TEST_INFLUX_TOKEN", "any"),
    );
    wait_for(WAIT, "the shipper's socket", || std::os::unix::net::UnixStream::connect(agent.socket()).ok());
    let client = SenderClient::start(&agent.socket(), "test", 100);
    let t = now();
    client.send(vec![Point::float("v2_marker", t, 1.25, "test")]);
    assert!(client.flush(WAIT));
    let series = wait_for(WAIT, "v2_marker in VictoriaMetrics", || {
        let s = vm.export("{__name__=~\"v2_marker.*\"}");
        (!s.is_empty()).then_some(s)
    });
    assert_eq!(series[0]["values"][0].as_f64(), Some(1.25), "{series:?}");
    assert_eq!(series[0]["timestamps"][0].as_u64(), Some(t * 1000), "{series:?}");
    assert_eq!(series[0]["metric"]["type"], "test", "{series:?}");
}

#[test]
fn a_refused_remote_write_batch_goes_to_rejected() {
    let capture = Capture::start();
    *capture.status.lock().expect("lock") = 400;
    let agent = Agent::new("", &remote_write(&capture.url(), ""));
    let _shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "test", 100);
    client.send(vec![Point::int("refused_marker", now(), 1, "test")]);
    assert!(client.flush(WAIT), "a refused frame is acknowledged (set aside, not retried)");
    let rejected = agent.path("spool/rejected");
    let text = wait_for(WAIT, "the point in rejected/", || {
        let text: String = std::fs::read_dir(&rejected)
            .ok()?
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        text.contains("refused_marker").then_some(text)
    });
    assert!(agent.log().contains("PrometheusRemoteWrite answered 400"), "{}", agent.log());
    drop(text);
}

#[test]
fn collector_scrapes_node_exporter_prometheus_and_victoriametrics_pages() {
    let vm = VictoriaWith::start(None);
    let node = NodeExporter::start();
    let prom = Prometheus::start("");
    let agent = Agent::new(
        "",
        &format!(
            "{}\n[Prometheus:node]\nurl = {}\ninclude = node_*\nexclude = node_scrape_*\n\n[Prometheus:prom]\nurl = {}/metrics\n\n[Prometheus:vm]\nurl = {}/metrics\ntimeout = 2\n",
            remote_write(&vm.url(), ""),
            node.url(),
            prom.url(),
            vm.url()
        ),
    );
    let _shipper = agent.start_shipper();
    let _collector = agent.start_collector();
    let load = wait_for(WAIT, "node_load1 of instance node", || {
        let s = vm.export("node_load1{instance=\"node\"}");
        (!s.is_empty()).then_some(s)
    });
    assert_eq!(load[0]["metric"]["type"], "prometheus", "{load:?}");
    // A counter is sent as its per-second rate: CPU seconds per second stay below the CPU count.
    let cpu = wait_for(WAIT, "the idle CPU rate of instance node", || {
        let s = vm.export("node_cpu_seconds_total{instance=\"node\",mode=\"idle\"}");
        (!s.is_empty()).then_some(s)
    });
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    for v in cpu[0]["values"].as_array().expect("values") {
        assert!(v.as_f64().is_some_and(|v| (0.0..=cpus + 0.5).contains(&v)), "not a rate: {cpu:?}");
    }
    wait_for(WAIT, "prometheus_build_info of instance prom", || {
        (!vm.export("prometheus_build_info{instance=\"prom\"}").is_empty()).then_some(())
    });
    wait_for(WAIT, "VictoriaMetrics' own vm_* series of instance vm", || {
        (!vm.export("{__name__=~\"vm_.*\",instance=\"vm\"}").is_empty()).then_some(())
    });
    // include/exclude: only node_* of the node exporter, without node_scrape_*.
    assert!(vm.export("{__name__=~\"go_.*\",instance=\"node\"}").is_empty(), "go_* of node was not filtered");
    assert!(vm.export("{__name__=~\"node_scrape_.*\",instance=\"node\"}").is_empty(), "exclude ignored");
    let samples = wait_for(WAIT, "puypuy_scrape_samples of node", || {
        let s = vm.export("puypuy_scrape_samples{instance=\"node\"}");
        (!s.is_empty()).then_some(s)
    });
    assert!(samples[0]["values"][0].as_f64().is_some_and(|n| n > 100.0), "{samples:?}");
    let malformed = vm.export("puypuy_scrape_malformed_lines{instance=\"node\"}");
    assert_eq!(malformed[0]["values"][0].as_f64(), Some(0.0), "{malformed:?}");
}
