//! The shipper alone as a relay: every input end to end into a real backend, limits, slow and
//! silent clients, the `send` command, the Python frame client, and loopback-only binding.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use puypuy_tests::{free_port, http_post, poll_for, repo_root, wait_for, Agent, Carbon, Influx};
use serde_json::Value as Json;

struct Ports {
    opentsdb: u16,
    graphite: u16,
    http: u16,
}

fn relay_agent(tsdb: &str, extra: &str) -> (Agent, Ports) {
    let ports = Ports { opentsdb: free_port(), graphite: free_port(), http: free_port() };
    let relay = format!(
        "[Relay]\nopentsdb_listen = {}\ngraphite_listen = {}\ngraphite_udp = true\nhttp_listen = 127.0.0.1:{}\n{extra}\n",
        ports.opentsdb, ports.graphite, ports.http
    );
    (Agent::new("", &format!("{tsdb}\n{relay}")), ports)
}

/// Whether the shipper's log says that an input (`what`: the log's words before the address)
/// listens on `port`, on whatever address.
fn logged_listening(log: &str, what: &str, port: u16) -> bool {
    let suffix = format!(":{port}");
    log.lines()
        .filter_map(|l| l.split_once(what))
        .any(|(_, rest)| rest.split_whitespace().next().is_some_and(|address| address.ends_with(&suffix)))
}

/// Starts the shipper and waits until its TCP inputs listen too (they open after the socket),
/// as its log says: a connection of the test's own would count against `max_connections` until
/// the shipper has seen it close. A port taken meanwhile by another test (free ports are only
/// free when chosen) makes the shipper exit: then new ports are chosen and it is started again.
fn start_relay(agent: &Agent, ports: &mut Ports) -> puypuy_tests::Proc {
    for _ in 0..5 {
        let mut shipper = puypuy_tests::Proc::spawn("puypuy-shipper", &mut agent.command("puypuy-shipper"));
        let ready = wait_for(Duration::from_secs(15), "the shipper or its exit", || {
            if !shipper.is_running() {
                return Some(false);
            }
            let log = agent.log();
            let all = std::os::unix::net::UnixStream::connect(agent.socket()).is_ok()
                && logged_listening(&log, "relay: OpenTSDB telnet input on ", ports.opentsdb)
                && logged_listening(&log, "relay: Graphite plaintext input on ", ports.graphite)
                && logged_listening(&log, "relay: HTTP input (InfluxDB /write, OpenTSDB /api/put) on ", ports.http);
            all.then_some(true)
        });
        if ready {
            return shipper;
        }
        assert!(agent.log().contains("cannot listen"), "the shipper exited:\n{}", agent.log());
        let text = std::fs::read_to_string(&agent.config).expect("config");
        let fresh = Ports { opentsdb: free_port(), graphite: free_port(), http: free_port() };
        let text = text
            .replace(&format!("opentsdb_listen = {}", ports.opentsdb), &format!("opentsdb_listen = {}", fresh.opentsdb))
            .replace(&format!("graphite_listen = {}", ports.graphite), &format!("graphite_listen = {}", fresh.graphite))
            .replace(
                &format!("http_listen = 127.0.0.1:{}", ports.http),
                &format!("http_listen = 127.0.0.1:{}", fresh.http),
            );
        std::fs::write(&agent.config, text).expect("config");
        *ports = fresh;
    }
    panic!("the relay could not get free ports in five tries");
}

fn influx_tsdb(influx: &Influx) -> String {
    format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB)
}

fn tcp_send(port: u16, text: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(text.as_bytes()).expect("write");
}

fn one(influx: &Influx, name: &str) -> (u64, Json, serde_json::Map<String, Json>) {
    wait_for(Duration::from_secs(15), name, || influx.points(name).into_iter().next())
}

#[test]
fn every_input_delivers_into_influxdb() {
    let influx = Influx::start(false);
    let (agent, mut ports) = relay_agent(&influx_tsdb(&influx), "");
    let _shipper = start_relay(&agent, &mut ports);
    let t = 1_700_000_000u64;

    tcp_send(
        ports.opentsdb,
        &format!("put relay.telnet {t} 42.5 host=app01 dc=eu\nput bad\nput relay.telnet2 {t}123 7\n"),
    );
    tcp_send(
        ports.graphite,
        &format!("relay.graphite.tcp 1.25 {t}\nnot a line at all\nrelay.graphite.tagged;dc=eu 2 {t}\n"),
    );
    UdpSocket::bind("127.0.0.1:0")
        .expect("udp")
        .send_to(format!("relay.graphite.udp 3 {t}\n").as_bytes(), ("127.0.0.1", ports.graphite))
        .expect("send");

    let body =
        format!("cpu_relay,host=web01,region=eu value=0.64,idle=12i {t}000000000\nmem_relay used=5 {t}000000000\n");
    let (status, text) =
        http_post(&format!("http://127.0.0.1:{}/write?db=any", ports.http), &body, None).expect("write");
    assert_eq!(status, 204, "{text}");
    // gzip body
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(format!("gz_relay value=9 {t}\n").as_bytes()).expect("gzip");
    let compressed = gz.finish().expect("gzip");
    let agent_http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let resp = agent_http
        .post(&format!("http://127.0.0.1:{}/write?db=any&precision=s", ports.http))
        .header("Content-Encoding", "gzip")
        .send(&compressed[..])
        .expect("gzip write");
    assert_eq!(resp.status().as_u16(), 204);
    // a bad line: 400 naming it, like InfluxDB
    let (status, text) =
        http_post(&format!("http://127.0.0.1:{}/write?db=any", ports.http), "ok value=1\nbroken value=\n", None)
            .expect("write");
    assert_eq!(status, 400);
    let err: Json = serde_json::from_str(&text).expect("json error");
    let error = err["error"].as_str().unwrap_or("");
    assert!(error.starts_with("partial write: ") && error.contains("unable to parse 'broken value='"), "{text}");
    let (status, _) = http_post(
        &format!("http://127.0.0.1:{}/api/put", ports.http),
        &format!(r#"[{{"metric":"relay.put","timestamp":{t},"value":5.5,"tags":{{"dc":"us"}}}}]"#),
        None,
    )
    .expect("put");
    assert_eq!(status, 204);
    let (status, text) =
        http_post(&format!("http://127.0.0.1:{}/api/put", ports.http), r#"{"metric":"x"}"#, None).expect("put");
    assert_eq!(status, 400, "{text}");

    let telnet = one(&influx, "relay.telnet");
    assert_eq!((telnet.0, telnet.1.as_f64()), (t, Some(42.5)));
    assert_eq!(telnet.2["host"], "app01", "a point's own host tag wins");
    assert_eq!(telnet.2["type"], "relay");
    assert_eq!(telnet.2["cluster"], "testcluster", "the relay's tags apply");
    assert_eq!(one(&influx, "relay.telnet2").0, t);
    let g = one(&influx, "relay.graphite.tcp");
    assert_eq!(g.1.as_f64(), Some(1.25));
    assert_eq!(g.2["host"], Json::from(Agent::host()), "without its own host tag, the relay's host applies");
    assert_eq!(one(&influx, "relay.graphite.tagged").2["dc"], "eu");
    assert_eq!(one(&influx, "relay.graphite.udp").1.as_f64(), Some(3.0));
    let cpu = one(&influx, "cpu_relay");
    assert_eq!((cpu.0, cpu.1.as_f64()), (t, Some(0.64)));
    assert_eq!(cpu.2["region"], "eu");
    assert_eq!(one(&influx, "cpu_relay_idle").1.as_f64(), Some(12.0));
    assert_eq!(one(&influx, "mem_relay_used").1.as_f64(), Some(5.0));
    assert_eq!(one(&influx, "gz_relay").1.as_f64(), Some(9.0));
    assert_eq!(one(&influx, "relay.put").2["dc"], "us");
    let ok = one(&influx, "ok");
    assert_eq!(ok.1.as_f64(), Some(1.0), "the good line of a body with a bad one is written, like InfluxDB's");

    // Self-metrics per input.
    let rejected = wait_for(Duration::from_secs(10), "relay self-metrics", || {
        let p = influx.points("puypuy_relay_lines_rejected");
        let of = |input: &str| p.iter().rev().find(|x| x.2["input"] == input).and_then(|x| x.1.as_i64());
        match (of("opentsdb"), of("graphite")) {
            (Some(o), Some(g)) if o >= 1 && g >= 1 => Some((o, g)),
            _ => None,
        }
    });
    assert_eq!(rejected, (1, 1));
    assert!(agent.log().contains("opentsdb input: bad line"), "{}", agent.log());
}

/// Relayed paths pass through unchanged, as carbon-relay forwards them (issue 16);
/// `graphite_relay_prefix = True` puts the usual `cluster.group.HOST.` in front.
#[test]
fn graphite_plaintext_in_carbon_pickle_out() {
    let host = Agent::host().replace('.', "_");
    for (prefix_key, path) in [
        ("", "app.requests".to_string()),
        ("graphite_relay_prefix: True\n", format!("testcluster.testgroup.{host}.app.requests")),
    ] {
        let carbon = Carbon::start();
        let (agent, mut ports) = relay_agent(
            &format!("[TSDB]\ntsdtype: Carbon\naddress: 127.0.0.1:{}\n{prefix_key}", carbon.pickle_port),
            "",
        );
        let _shipper = start_relay(&agent, &mut ports);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
        tcp_send(ports.graphite, &format!("app.requests 17 {}\napp.requests 19 {}\n", now - 5, now - 4));
        let values = wait_for(Duration::from_secs(20), &format!("{path} in whisper"), || {
            let v = carbon.fetch(&path, 60);
            (v.len() == 2).then_some(v)
        });
        assert_eq!(values, vec![(now - 5, 17.0), (now - 4, 19.0)]);
    }
}

#[test]
fn many_clients_a_silent_one_and_a_slow_one() {
    let influx = Influx::start(false);
    let (agent, mut ports) = relay_agent(&influx_tsdb(&influx), "idle_timeout_seconds = 30\nmax_line_bytes = 1024");
    let _shipper = start_relay(&agent, &mut ports);
    let t = 1_700_000_000u64;
    // A client that connects and says nothing, and one that sends a byte a second.
    let _silent = TcpStream::connect(("127.0.0.1", ports.graphite)).expect("silent");
    let mut slow = TcpStream::connect(("127.0.0.1", ports.graphite)).expect("slow");
    let slow_thread = std::thread::spawn(move || {
        for b in b"slow.metric 1 1700000000\n" {
            if slow.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    // 500 concurrent clients, each with its own series.
    let clients: Vec<std::thread::JoinHandle<()>> = (0..500)
        .map(|i| {
            let port = ports.graphite;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.write_all(format!("many.clients;client={i} {i} {t}\n").as_bytes()).expect("write");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    // InfluxDB 1.6 creates 500 series here; with the whole suite running on 2 cores that took
    // over 20 s once. The count says how many arrived if they do not all.
    let count = || {
        let (_, rows) = influx.select("SELECT count(value) FROM \"many.clients\"");
        rows.first().and_then(|r| r[1].as_i64()).unwrap_or(0)
    };
    let got = poll_for(Duration::from_secs(60), || Some(count()).filter(|n| *n == 500)).unwrap_or_else(count);
    assert_eq!(got, 500, "points of the 500 clients in InfluxDB; the shipper's log:\n{}", agent.log());
    slow_thread.join().expect("slow");
    wait_for(Duration::from_secs(10), "the slow client's point", || {
        (!influx.points("slow.metric").is_empty()).then_some(())
    });
    // An over-long line is refused, the connection goes on.
    let mut s = TcpStream::connect(("127.0.0.1", ports.graphite)).expect("connect");
    s.write_all(format!("{} 1 {t}\nafter.long 1 {t}\n", "x".repeat(5000)).as_bytes()).expect("write");
    drop(s);
    wait_for(Duration::from_secs(10), "the line after the long one", || {
        (!influx.points("after.long").is_empty()).then_some(())
    });
    assert!(agent.log().contains("over max_line_bytes (1024)"), "{}", agent.log());
}

/// Connections the relay's TCP inputs are serving now: one `relay-conn` thread each (named by
/// itself once started, so a count may lag a new connection, never an ended one).
fn served_connections(shipper: &puypuy_tests::Proc) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", shipper.pid())).expect("the shipper's threads");
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "relay-conn"))
        .count()
}

#[test]
fn max_connections_and_idle_timeout() {
    let influx = Influx::start(false);
    let (agent, mut ports) = relay_agent(&influx_tsdb(&influx), "max_connections = 2\nidle_timeout_seconds = 1");
    let shipper = start_relay(&agent, &mut ports);
    let a = TcpStream::connect(("127.0.0.1", ports.opentsdb)).expect("a");
    let b = TcpStream::connect(("127.0.0.1", ports.opentsdb)).expect("b");
    wait_for(Duration::from_secs(10), "both connections served", || (served_connections(&shipper) == 2).then_some(()));
    assert!(!agent.log().contains("over max_connections"), "{}", agent.log());
    let mut c = TcpStream::connect(("127.0.0.1", ports.opentsdb)).expect("c");
    wait_for(Duration::from_secs(10), "the third connection refused", || {
        agent.log().contains("over max_connections (2)").then_some(())
    });
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 8];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)), "third connection should be closed at once");
    // Idle connections are closed after idle_timeout_seconds.
    for mut conn in [a, b] {
        conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        assert!(matches!(conn.read(&mut buf), Ok(0)), "idle connection not closed");
    }
    let mut d = TcpStream::connect(("127.0.0.1", ports.opentsdb)).expect("d");
    d.write_all(b"put after.limit 1700000000 1\n").expect("write");
    drop(d);
    wait_for(Duration::from_secs(10), "a point once connections were free", || {
        (!influx.points("after.limit").is_empty()).then_some(())
    });
}

#[test]
fn send_command_and_python_client() {
    let influx = Influx::start(false);
    let (agent, mut ports) = relay_agent(&influx_tsdb(&influx), "");
    // With no shipper running, send fails with a clear message.
    let out = agent
        .command("puypuy-shipper")
        .args(["send", "x", "1"])
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("send");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no shipper is running on"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let _shipper = start_relay(&agent, &mut ports);
    let status = agent
        .command("puypuy-shipper")
        .args(["send", "backup_bytes", "1234", "--type", "backup", "--timestamp", "1700000000", "job=db"])
        .status()
        .expect("send");
    assert!(status.success());
    let p = one(&influx, "backup_bytes");
    assert_eq!((p.0, p.1.as_f64()), (1_700_000_000, Some(1234.0)));
    assert_eq!(p.2["type"], "backup");
    assert_eq!(p.2["job"], "db");

    let out = Command::new("python3")
        .arg(repo_root().join("examples/puypuy_client.py"))
        .arg(agent.socket())
        .args(["python_example", "3.5", "lang=python"])
        .output()
        .expect("python client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = one(&influx, "python_example");
    assert_eq!(p.1.as_f64(), Some(3.5));
    assert_eq!(p.2["lang"], "python");
    assert_eq!(p.2["type"], "python");
}

/// Whether something accepts TCP connections on `address`.
fn accepts(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
}

/// Regression: this read /proc/net/tcp and took a missing file for "no listener", which failed
/// with no word of why on hosts without it. Connections need nothing from the host: a listener
/// on 127.0.0.1 alone refuses 127.0.0.2 (the rest of 127/8, which 0.0.0.0 would accept) and ::1
/// (which [::] would accept).
#[test]
fn listeners_without_an_address_bind_loopback_only() {
    let influx = Influx::start(false);
    let (agent, mut ports) = relay_agent(&influx_tsdb(&influx), "");
    let _shipper = start_relay(&agent, &mut ports);
    for port in [ports.opentsdb, ports.graphite] {
        assert!(accepts(([127, 0, 0, 1], port).into()), "port {port} must listen on 127.0.0.1");
        let elsewhere: [SocketAddr; 2] = [([127, 0, 0, 2], port).into(), (Ipv6Addr::LOCALHOST, port).into()];
        for other in elsewhere {
            assert!(!accepts(other), "port {port} must listen on 127.0.0.1 only, but {other} accepts");
        }
    }
}
