//! Agents → relay (issue 20): the relay's frames input (`frames_listen`) over TLS with tokens and
//! client certificates. A frame is acknowledged only once its points are delivered by the relay or
//! fsynced in its spool (InfluxDB stopped behind it), and points keep the agent's host tag. A wrong
//! token, a missing client certificate, plain TCP on the TLS port and a peer outside
//! `frames_allow` are each refused at once, logged and counted, and nothing they sent arrives.
//!
//! The client here speaks the protocol by hand (hello, frames, acks), as an agent does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use puypuy_common::frame::{Ack, Frame, ACK_DELIVERED};
use puypuy_common::Point;
use puypuy_tests::{free_port, wait_for, Agent, Influx};

use super::doors::{make_certificates, tls_connect_as, Certificates};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn relay_config(influx: &Influx, certs: &Certificates, port: u16, extra: &str) -> String {
    format!(
        "[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n\n[Relay]\ntls_cert = {}\ntls_key = {}\nframes_listen = {port}\ntokens = tok-old-111, tok-new-222\n{extra}\n",
        influx.url(),
        Influx::DB,
        certs.server_cert.display(),
        certs.server_key.display(),
    )
}

fn start_relay(agent: &Agent) -> puypuy_tests::Proc {
    let shipper = agent.start_shipper();
    wait_for(Duration::from_secs(15), "the frames input", || {
        agent.log().contains("relay: frames input (PuyPuy agents) on").then_some(())
    });
    shipper
}

/// The hello as `shipper/src/relay/frames.rs` documents it: length, then "TOKEN " and the token.
fn hello(token: &str) -> Vec<u8> {
    let mut out = ((6 + token.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(b"TOKEN ");
    out.extend_from_slice(token.as_bytes());
    out
}

fn read_message(tls: &mut Tls) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    tls.read_exact(&mut len)?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    tls.read_exact(&mut payload)?;
    Ok(payload)
}

/// Connects, says the token and returns the relay's answer with the connection.
fn open(port: u16, certs: &Certificates, client_cert: bool, token: &str) -> Result<(Tls, String), String> {
    let client = client_cert.then_some((certs.client_cert.as_path(), certs.client_key.as_path()));
    let mut tls = tls_connect_as(port, &certs.ca, client)?;
    tls.write_all(&hello(token)).map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    tls.sock.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let answer = read_message(&mut tls).map_err(|e| e.to_string())?;
    Ok((tls, String::from_utf8_lossy(&answer).into_owned()))
}

fn send_frame(tls: &mut Tls, seq: u64, name: &str, value: i64) {
    let point = Point::int(name, 1_700_000_000 + seq, value, "fleet").with_tag("host", "agent-7");
    tls.write_all(&Frame::new("agent-7", seq, vec![point]).to_bytes()).expect("frame");
    tls.flush().expect("flush");
}

fn read_ack(tls: &mut Tls) -> Ack {
    let mut payload = Vec::new();
    tls.sock.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    puypuy_common::frame::read_payload(&mut std::io::BufReader::new(tls), &mut payload).expect("an ack");
    Ack::decode(&payload).expect("ack decodes")
}

#[test]
fn frames_are_acknowledged_once_delivered_or_spooled_and_keep_the_agents_host() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certificates(certs_dir.path());
    let mut influx = Influx::start(false);
    let port = free_port();
    let relay = Agent::new("self_metrics: no", &relay_config(&influx, &certs, port, ""));
    let _shipper = start_relay(&relay);

    // The rotated-in token works as the old one does.
    let (mut tls, answer) = open(port, &certs, false, "tok-new-222").expect("connect");
    assert_eq!(answer, "OK");
    send_frame(&mut tls, 1, "fleet_delivered", 11);
    let ack = read_ack(&mut tls);
    assert_eq!((ack.seq, ack.status), (1, ACK_DELIVERED));
    // Acknowledged means delivered: it is already in InfluxDB, with the agent's host.
    let points = influx.points("fleet_delivered");
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0].2.get("host").and_then(|h| h.as_str()), Some("agent-7"), "{points:?}");

    // InfluxDB stopped: the relay spools, and the frame is acknowledged once fsynced there.
    influx.stop();
    send_frame(&mut tls, 2, "fleet_spooled", 22);
    let ack = read_ack(&mut tls);
    assert_eq!((ack.seq, ack.status), (2, ACK_DELIVERED));
    influx.restart();
    let p =
        wait_for(Duration::from_secs(60), "the spooled point", || influx.points("fleet_spooled").into_iter().next());
    assert_eq!(p.2.get("host").and_then(|h| h.as_str()), Some("agent-7"));
    assert!(relay.log().contains("spool"), "{}", relay.log());
}

#[test]
fn wrong_token_missing_client_certificate_plain_tcp_and_outside_allow_are_refused() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certificates(certs_dir.path());
    let influx = Influx::start(false);
    let port = free_port();
    let ca = format!("client_ca = {}", certs.ca.display());
    let relay = Agent::new("", &relay_config(&influx, &certs, port, &ca));
    let shipper = start_relay(&relay);
    let closed = |tls: &mut Tls| {
        let mut rest = Vec::new();
        matches!(tls.read_to_end(&mut rest), Ok(0) | Err(_))
    };

    // A wrong token: told so, then closed; the frame sent after is never read.
    let (mut tls, answer) = open(port, &certs, true, "tok-guessed").expect("TLS itself works");
    assert_eq!(answer, "REFUSED wrong token");
    let _ = tls.write_all(&Frame::new("x", 1, vec![Point::int("fleet_wrong_token", 1, 1, "t")]).to_bytes());
    assert!(closed(&mut tls));

    // No client certificate while client_ca is set: the handshake (or the first read) fails.
    match open(port, &certs, false, "tok-old-111") {
        Ok((_, answer)) => panic!("a client without a certificate was answered {answer:?}"),
        Err(e) => assert!(!e.is_empty()),
    }

    // Plain TCP on the TLS port: a frame in the clear is not read.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = plain.write_all(&Frame::new("x", 1, vec![Point::int("fleet_plain", 1, 1, "t")]).to_bytes());
    plain.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest);

    // The right token with a certificate still gets in.
    let (mut tls, answer) = open(port, &certs, true, "tok-old-111").expect("connect");
    assert_eq!(answer, "OK");
    send_frame(&mut tls, 9, "fleet_let_in", 9);
    assert_eq!(read_ack(&mut tls).status, ACK_DELIVERED);

    // A peer outside frames_allow: closed before the handshake.
    let port_b = free_port();
    let outside = Agent::new("self_metrics: no", &relay_config(&influx, &certs, port_b, "frames_allow = 10.0.0.0/8"));
    let _shipper_b = start_relay(&outside);
    assert!(open(port_b, &certs, false, "tok-old-111").is_err());

    let pid = shipper.pid();
    wait_for(Duration::from_secs(15), "three refusals counted", || {
        (relay.status_metric(pid, "puypuy_relay_refused{input=frames}")? >= 3).then_some(())
    });
    let log = relay.log();
    for why in ["wrong token", "not a TLS client", "no client certificate"] {
        assert!(log.contains(why), "{why} not logged:\n{log}");
    }
    assert!(!log.contains("tok-old-111") && !log.contains("tok-guessed"), "a token in the log:\n{log}");
    assert!(outside.log().contains("not in the input's allow list"), "{}", outside.log());
    for name in ["fleet_wrong_token", "fleet_plain"] {
        assert!(influx.points(name).is_empty(), "{name} was refused yet arrived");
    }
}

/// The series keys InfluxDB holds for `measurement` (`name,k=v,…`, tags sorted by key).
fn series_keys(influx: &Influx, measurement: &str) -> Vec<String> {
    let (_, rows) = influx.select(&format!("SHOW SERIES FROM \"{measurement}\""));
    rows.iter().filter_map(|r| r.first().and_then(|k| k.as_str()).map(String::from)).collect()
}

/// Issue 20: "points keep the agent's host tags (the relay adds none of its own)". The relay used
/// to add each of its host-wide tags an agent's point lacked: its `location` where the agent's is
/// empty, its `[Tags]` keys. Its own producers' points and its text inputs' still get them.
#[test]
fn an_agents_points_leave_the_relay_with_exactly_the_agents_tags_and_the_relays_own_with_the_relays() {
    use puypuy_common::client::SenderClient;
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certificates(certs_dir.path());
    let influx = Influx::start(false);
    let (port, telnet) = (free_port(), free_port());
    let relay = Agent::new(
        "cluster_name: relaycluster\nlocation: relayloc\nself_metrics: no",
        &format!(
            "{}opentsdb_listen = {telnet}\n\n[Tags]\nowner = relay-team\n",
            relay_config(&influx, &certs, port, "")
        ),
    );
    let _relay = start_relay(&relay);
    // The agent: no location, no [Tags]; its cluster and group are the suite's defaults.
    let agent = Agent::new(
        "location:\nself_metrics: no",
        &format!(
            "[TSDB]\ntsdtype = PuyPuy\naddress = 127.0.0.1:{port}\nca_file = {}\ntoken = tok-old-111\n",
            certs.ca.display()
        ),
    );
    let _agent_shipper = agent.start_shipper();
    let from_agent = SenderClient::start(&agent.socket(), "agent-check", 10);
    from_agent.send(vec![Point::int("fleet_tags_agent", 1_700_000_000, 7, "fleetcheck").with_tag("if", "eth0")]);
    assert!(from_agent.flush(Duration::from_secs(60)), "the agent did not take its point");
    let on_relay = SenderClient::start(&relay.socket(), "relay-check", 10);
    on_relay.send(vec![Point::int("fleet_tags_relay", 1_700_000_000, 8, "fleetcheck").with_tag("if", "eth1")]);
    assert!(on_relay.flush(Duration::from_secs(60)), "the relay did not take its own point");
    let mut text = wait_for(Duration::from_secs(15), "the relay's telnet input", || {
        TcpStream::connect(("127.0.0.1", telnet)).ok()
    });
    text.write_all(b"put fleet_tags_text 1700000000 9 host=client-9\n").expect("telnet put");
    drop(text);

    let host = Agent::host();
    let expected = [
        ("fleet_tags_agent", format!("fleet_tags_agent,cluster=testcluster,group=testgroup,host={host},if=eth0,type=fleetcheck")),
        (
            "fleet_tags_relay",
            format!("fleet_tags_relay,cluster=relaycluster,group=testgroup,host={host},if=eth1,location=relayloc,owner=relay-team,type=fleetcheck"),
        ),
        (
            "fleet_tags_text",
            "fleet_tags_text,cluster=relaycluster,group=testgroup,host=client-9,location=relayloc,owner=relay-team,type=relay".to_string(),
        ),
    ];
    for (measurement, key) in expected {
        let keys = wait_for(Duration::from_secs(60), measurement, || {
            let keys = series_keys(&influx, measurement);
            (!keys.is_empty()).then_some(keys)
        });
        assert_eq!(keys, [key], "{measurement}");
    }
    let values: Vec<_> = ["fleet_tags_agent", "fleet_tags_relay", "fleet_tags_text"]
        .iter()
        .map(|m| influx.points(m).into_iter().map(|p| (p.0, p.1.as_f64())).collect::<Vec<_>>())
        .collect();
    assert_eq!(values, [[(1_700_000_000, Some(7.0))], [(1_700_000_000, Some(8.0))], [(1_700_000_000, Some(9.0))]]);
}

/// A relay forwarding to another relay (`tsdtype: PuyPuy` on a relay) passes an agent's points on as
/// they came: the last relay stores them with exactly the agent's tags, none of either relay's. The
/// middle relay's own points leave with its tags, none of the last one's.
#[test]
fn through_two_relays_an_agents_points_keep_exactly_the_agents_tags() {
    use puypuy_common::client::SenderClient;
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certificates(certs_dir.path());
    let influx = Influx::start(false);
    let (mid_port, last_port) = (free_port(), free_port());
    let last = Agent::new(
        "cluster_name: lastcluster\nlocation: lastloc\nself_metrics: no",
        &format!("{}\n[Tags]\nowner = last-team\n", relay_config(&influx, &certs, last_port, "")),
    );
    let _last = start_relay(&last);
    let mid = Agent::new(
        "cluster_name: midcluster\nlocation: midloc\nself_metrics: no",
        &format!(
            "[TSDB]\ntsdtype = PuyPuy\naddress = 127.0.0.1:{last_port}\nca_file = {ca}\ntoken = tok-new-222\n\n[Relay]\ntls_cert = {}\ntls_key = {}\nframes_listen = {mid_port}\ntokens = tok-mid\n\n[Tags]\nmid = m1\n",
            certs.server_cert.display(),
            certs.server_key.display(),
            ca = certs.ca.display(),
        ),
    );
    let _mid = start_relay(&mid);
    let agent = Agent::new(
        "location:\nself_metrics: no",
        &format!(
            "[TSDB]\ntsdtype = PuyPuy\naddress = 127.0.0.1:{mid_port}\nca_file = {}\ntoken = tok-mid\n",
            certs.ca.display()
        ),
    );
    let _agent_shipper = agent.start_shipper();
    for (socket, name, value) in [(agent.socket(), "fleet_chain_agent", 1), (mid.socket(), "fleet_chain_mid", 2)] {
        let client = SenderClient::start(&socket, "chain-check", 10);
        client.send(vec![Point::int(name, 1_700_000_000, value, "chaincheck")]);
        assert!(client.flush(Duration::from_secs(60)), "{name}: not taken");
    }
    let host = Agent::host();
    let expected = [
        (
            "fleet_chain_agent",
            format!("fleet_chain_agent,cluster=testcluster,group=testgroup,host={host},type=chaincheck"),
        ),
        (
            "fleet_chain_mid",
            format!(
                "fleet_chain_mid,cluster=midcluster,group=testgroup,host={host},location=midloc,mid=m1,type=chaincheck"
            ),
        ),
    ];
    for (measurement, key) in expected {
        let keys = wait_for(Duration::from_secs(60), measurement, || {
            let keys = series_keys(&influx, measurement);
            (!keys.is_empty()).then_some(keys)
        });
        assert_eq!(keys, [key], "{measurement}");
    }
    let values: Vec<_> = ["fleet_chain_agent", "fleet_chain_mid"]
        .iter()
        .map(|m| influx.points(m).into_iter().map(|p| (p.0, p.1.as_i64())).collect::<Vec<_>>())
        .collect();
    assert_eq!(values, [[(1_700_000_000, Some(1))], [(1_700_000_000, Some(2))]]);
}

/// `tls = False` on the agent: plain TCP, refused by a TLS `frames_listen` (nothing it sends is
/// taken; the agent keeps its points), accepted by a plain one (`frames_tls = False`), which in turn
/// refuses an agent speaking TLS.
#[test]
fn an_agent_with_tls_false_is_refused_by_a_tls_relay_and_delivers_through_a_plain_one() {
    use puypuy_common::client::SenderClient;
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certificates(certs_dir.path());
    let influx = Influx::start(false);
    let (tls_port, plain_port) = (free_port(), free_port());
    let tls_relay = Agent::new("self_metrics: no", &relay_config(&influx, &certs, tls_port, ""));
    let tls_relay_proc = start_relay(&tls_relay);
    let plain_relay = Agent::new(
        "self_metrics: no",
        &format!(
            "[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n\n[Relay]\nframes_listen = {plain_port}\nframes_tls = False\ntokens = tok-plain\n",
            influx.url(),
            Influx::DB
        ),
    );
    let plain_relay_proc = start_relay(&plain_relay);
    let agent_to = |port: u16, tls: &str, token: &str| {
        Agent::new(
            "self_metrics: no",
            &format!("[TSDB]\ntsdtype = PuyPuy\naddress = 127.0.0.1:{port}\n{tls}\ntoken = {token}\n"),
        )
    };
    let plain_to_tls = agent_to(tls_port, "tls = False", "tok-old-111");
    let plain_to_plain = agent_to(plain_port, "tls = False", "tok-plain");
    let tls_to_plain = agent_to(plain_port, &format!("ca_file = {}", certs.ca.display()), "tok-plain");
    let _shippers: Vec<_> = [&plain_to_tls, &plain_to_plain, &tls_to_plain].iter().map(|a| a.start_shipper()).collect();
    for (agent, name, value) in [
        (&plain_to_tls, "fleet_plain_refused", 1),
        (&plain_to_plain, "fleet_plain", 2),
        (&tls_to_plain, "fleet_tls_refused", 3),
    ] {
        let client = SenderClient::start(&agent.socket(), "plain-check", 10);
        client.send(vec![Point::int(name, 1_700_000_000, value, "fleetcheck")]);
        assert!(client.flush(Duration::from_secs(60)), "{name}: the agent did not take its point");
    }

    let points = wait_for(Duration::from_secs(60), "the plain agent's point", || {
        let p = influx.points("fleet_plain");
        (!p.is_empty()).then_some(p)
    });
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!((points[0].0, points[0].1.as_i64()), (1_700_000_000, Some(2)));
    assert_eq!(points[0].2.get("host").and_then(|h| h.as_str()), Some(Agent::host().as_str()), "{points:?}");
    assert!(plain_to_plain.log().contains("(plain TCP: tls = False)"), "{}", plain_to_plain.log());

    // Each relay refuses the agent speaking the other kind, at once and counted.
    wait_for(Duration::from_secs(30), "the TLS relay's refusal", || {
        (tls_relay.status_metric(tls_relay_proc.pid(), "puypuy_relay_refused{input=frames}")? >= 1).then_some(())
    });
    wait_for(Duration::from_secs(30), "the plain relay's refusal", || {
        (plain_relay.status_metric(plain_relay_proc.pid(), "puypuy_relay_refused{input=frames}")? >= 1).then_some(())
    });
    assert!(tls_relay.log().contains("not a TLS client"), "{}", tls_relay.log());
    assert!(plain_relay.log().contains("no hello"), "{}", plain_relay.log());
    let hints = [
        (&plain_to_tls, "fleet_plain_refused", "a relay whose frames_listen speaks TLS does so to tls = False"),
        (&tls_to_plain, "fleet_tls_refused", "a relay with frames_tls = False answers so: set tls = False here"),
    ];
    for (agent, name, hint) in hints {
        assert!(influx.points(name).is_empty(), "{name} was refused yet arrived");
        // The refused agent keeps its point and says why it cannot send it.
        wait_for(Duration::from_secs(30), hint, || agent.log().contains(hint).then_some(()));
    }
}

/// How long the relay stays down in the kill -9 test: the 20 s unless
/// `PUYPUY_FLEET_RELAY_DOWN_SECONDS` says otherwise.
fn relay_down() -> Duration {
    let secs = std::env::var("PUYPUY_FLEET_RELAY_DOWN_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    Duration::from_secs(secs)
}

#[test]
fn agent_to_relay_to_influxdb_survives_kill_9_of_the_relay_and_influxdb_stopped_with_nothing_lost_or_duplicated() {
    use puypuy_common::client::SenderClient;
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certificates(certs_dir.path());
    let mut influx = Influx::start(false);
    let port = free_port();
    let relay = Agent::new("cluster_name: relaycluster\nself_metrics: no", &relay_config(&influx, &certs, port, ""));
    let mut relay_proc = start_relay(&relay);
    let agent = Agent::new(
        "cluster_name: agentcluster\nself_metrics: no",
        &format!(
            "[TSDB]\ntsdtype = PuyPuy\naddress = 127.0.0.1:{port}\nca_file = {}\ntoken = tok-old-111\n",
            certs.ca.display()
        ),
    );
    let _agent_shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "load", 10);
    let t0 = 1_700_000_000u64;
    let send = |range: std::ops::Range<u64>| {
        for i in range {
            client.send(vec![Point::int("fleet_load", t0 + i, i as i64, "load")]);
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    send(0..100);
    wait_for(Duration::from_secs(30), "the first points through the relay", || {
        (!influx.points("fleet_load").is_empty()).then_some(())
    });
    // kill -9 under load: what the relay had not acknowledged stays with the agent.
    relay_proc.signal(nix::sys::signal::Signal::SIGKILL);
    relay_proc.wait_exit(Duration::from_secs(10)).expect("the relay died");
    let down = std::time::Instant::now();
    send(100..200);
    std::thread::sleep(relay_down().saturating_sub(down.elapsed()));
    let _relay_again = start_relay(&relay);
    send(200..300);
    assert!(client.flush(Duration::from_secs(60)), "the agent did not take every point");

    let points = wait_for(Duration::from_secs(120), "all 300 points in InfluxDB", || {
        let p = influx.points("fleet_load");
        (p.len() >= 300).then_some(p)
    });
    let mut values: Vec<i64> = points.iter().filter_map(|p| p.1.as_i64()).collect();
    values.sort_unstable();
    assert_eq!(values, (0..300).collect::<Vec<i64>>(), "lost or duplicated points");
    for p in &points {
        // The agent's host tags, none of the relay's.
        assert_eq!(p.2.get("cluster").and_then(|c| c.as_str()), Some("agentcluster"), "{p:?}");
        assert_eq!(p.2.get("host").and_then(|c| c.as_str()), Some(Agent::host().as_str()), "{p:?}");
    }

    // InfluxDB stopped behind the relay: the relay spools and acknowledges, so the agent keeps
    // nothing (its spool stays empty); the points arrive once InfluxDB is back.
    influx.stop();
    send(300..400);
    assert!(client.flush(Duration::from_secs(60)), "the agent did not take every point");
    wait_for(Duration::from_secs(60), "the relay's spool", || {
        (files_under(&relay.path("spool/spool")) > 0).then_some(())
    });
    assert_eq!(files_under(&agent.path("spool/spool")), 0, "the agent spooled: the relay did not acknowledge");
    influx.restart();
    let points = wait_for(Duration::from_secs(120), "all 400 points in InfluxDB", || {
        let p = influx.points("fleet_load");
        (p.len() >= 400).then_some(p)
    });
    let mut values: Vec<i64> = points.iter().filter_map(|p| p.1.as_i64()).collect();
    values.sort_unstable();
    assert_eq!(values, (0..400).collect::<Vec<i64>>(), "lost or duplicated points");
}

/// Regular files under `dir`, at any depth (0 when it does not exist).
fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// How long the fleet runs: the 2 minutes unless `PUYPUY_FLEET_SECONDS` says otherwise.
fn fleet_seconds() -> u64 {
    std::env::var("PUYPUY_FLEET_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(120)
}

#[test]
fn fifty_agent_shippers_through_one_relay_into_victoriametrics_deliver_every_point() {
    use puypuy_common::client::SenderClient;
    use puypuy_tests::Victoria;
    const AGENTS: usize = 50;
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certificates(certs_dir.path());
    let vm = Victoria::start();
    let port = free_port();
    let relay = Agent::new(
        "cluster_name: relaycluster\nself_metrics: no",
        &format!(
            "[TSDB]\ntsdtype = OpenTSDB\naddress = http://127.0.0.1:{}\n\n[Relay]\ntls_cert = {}\ntls_key = {}\nframes_listen = {port}\ntokens = tok-fleet\n",
            vm.otsdb_port,
            certs.server_cert.display(),
            certs.server_key.display(),
        ),
    );
    let _relay = start_relay(&relay);
    let agents: Vec<Agent> = (0..AGENTS)
        .map(|_| {
            Agent::new(
                "self_metrics: no",
                &format!(
                    "[TSDB]\ntsdtype = PuyPuy\naddress = 127.0.0.1:{port}\nca_file = {}\ntoken = tok-fleet\n",
                    certs.ca.display()
                ),
            )
        })
        .collect();
    let _shippers: Vec<_> = agents.iter().map(|a| a.start_shipper()).collect();
    let clients: Vec<SenderClient> = agents.iter().map(|a| SenderClient::start(&a.socket(), "fleet", 1000)).collect();

    // One point per agent per second, as a 1 s check period makes them.
    let seconds = fleet_seconds();
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    for s in 0..seconds {
        for (i, client) in clients.iter().enumerate() {
            client
                .send(vec![Point::int("fleet_many", start + s, s as i64, "fleet").with_tag("agent", format!("a{i}"))]);
        }
        let next = std::time::UNIX_EPOCH + Duration::from_secs(start + s + 1);
        if let Ok(wait) = next.duration_since(std::time::SystemTime::now()) {
            std::thread::sleep(wait);
        }
    }
    for client in &clients {
        assert!(client.flush(Duration::from_secs(60)), "an agent did not take its points");
    }

    let expected: Vec<u64> = (0..seconds).map(|s| (start + s) * 1000).collect();
    let series = wait_for(Duration::from_secs(120), "every agent's points in VictoriaMetrics", || {
        let series = vm.export("{__name__=\"fleet_many\"}");
        let complete = series.len() == AGENTS
            && series.iter().all(|s| {
                let mut ts: Vec<u64> = s["timestamps"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|t| t.as_u64()).collect())
                    .unwrap_or_default();
                ts.sort_unstable();
                ts.dedup();
                ts == expected
            });
        complete.then_some(series)
    });
    for s in &series {
        // The agents' host tags; the relay added none of its own.
        assert_eq!(s["metric"]["cluster"], "testcluster", "{s}");
        assert_eq!(s["metric"]["host"], serde_json::Value::from(Agent::host()), "{s}");
    }
}
