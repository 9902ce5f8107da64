//! Every network input's door (issue 20): TLS on the OpenTSDB telnet and HTTP inputs with
//! certificates made here by `openssl`, Basic auth and bearer tokens on HTTP answered 401 as
//! InfluxDB answers, and an `allow` list that shuts out TCP and UDP peers. Each refusal is logged
//! and counted (`puypuy_relay_refused`), and nothing a refused client sent arrives.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

pub use puypuy_tests::certs::{make_certificates, Certificates};
use puypuy_tests::{free_port, require, wait_for, Agent, Influx};

/// A TLS client connection to 127.0.0.1:`port` trusting `ca`, the handshake done.
pub fn tls_connect(port: u16, ca: &Path) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    tls_connect_as(port, ca, None)
}

/// The same, presenting the client certificate and key `client` when given.
pub fn tls_connect_as(
    port: u16,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
                .expect("client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("client key");
            config.with_client_auth_cert(chain, key).expect("client auth")
        }
    };
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// `curl` over HTTPS with the test CA: (status, body).
fn curl(url: &str, ca: &Path, extra: &[&str], body: &str) -> (u16, String) {
    let out = Command::new(require("curl"))
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}", "--data-binary", body])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Whether `port` closes a connection that sent `text` (rather than keep reading it).
fn closed_unanswered(port: u16, text: &str) -> bool {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = s.write_all(text.as_bytes());
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => !String::from_utf8_lossy(&got).contains("put:"),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn tls_auth_and_allow_refuse_at_the_door_and_let_the_right_clients_in() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certificates(certs_dir.path());
    let influx = Influx::start(false);
    let (opentsdb, graphite, http) = (free_port(), free_port(), free_port());
    let agent = Agent::new(
        "",
        &format!(
            "[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n\n[Relay]\ntls_cert = {}\ntls_key = {}\nopentsdb_listen = {opentsdb}\nopentsdb_tls = yes\ngraphite_listen = {graphite}\ngraphite_udp = yes\ngraphite_allow = 10.0.0.0/8\nhttp_listen = 127.0.0.1:{http}\nhttp_users = alice:s3cr3t-pw\nhttp_tokens = tok-0123456789\n",
            influx.url(),
            Influx::DB,
            certs.server_cert.display(),
            certs.server_key.display(),
        ),
    );
    let shipper = agent.start_shipper();
    wait_for(Duration::from_secs(15), "the relay inputs", || {
        agent.log().contains("relay: HTTP input (InfluxDB /write, OpenTSDB /api/put) on").then_some(())
    });
    let t = 1_700_000_000u64;

    // Refused first: plain text on the TLS port, a peer outside allow (TCP and UDP), HTTP with no,
    // wrong, or plain-text credentials.
    assert!(closed_unanswered(opentsdb, &format!("put door.plain {t} 1 host=a\n")));
    assert!(closed_unanswered(graphite, &format!("door.outside.tcp 1 {t}\n")));
    UdpSocket::bind("127.0.0.1:0")
        .expect("udp")
        .send_to(format!("door.outside.udp 1 {t}\n").as_bytes(), ("127.0.0.1", graphite))
        .expect("send");
    let write = format!("https://127.0.0.1:{http}/write?db=x");
    let (status, body) = curl(&write, &certs.ca, &[], &format!("door_none v=1 {t}000000000"));
    assert_eq!((status, body.as_str()), (401, r#"{"error":"unable to parse authentication credentials"}"#));
    let (status, body) = curl(&write, &certs.ca, &["-u", "alice:wrong"], &format!("door_wrong v=1 {t}000000000"));
    assert_eq!((status, body.as_str()), (401, r#"{"error":"authorization failed"}"#));
    let (status, body) = curl(
        &format!("https://127.0.0.1:{http}/api/put"),
        &certs.ca,
        &["-H", "Authorization: Bearer nope"],
        &format!(r#"{{"metric":"door.put.wrong","timestamp":{t},"value":1,"tags":{{"h":"a"}}}}"#),
    );
    assert_eq!((status, body.as_str()), (401, r#"{"error":{"code":401,"message":"authorization failed"}}"#));
    let (status, _) =
        curl(&format!("http://127.0.0.1:{http}/write?db=x"), &certs.ca, &["-u", "alice:s3cr3t-pw"], "x v=1");
    assert_eq!(status, 0, "plain HTTP on the TLS port must not be answered");

    // Let in: TLS telnet, HTTPS with a password, with a token, and InfluxDB's ?u=&p=.
    let mut telnet = tls_connect(opentsdb, &certs.ca).expect("TLS telnet");
    telnet.write_all(format!("put door.tls {t} 7 host=a\n").as_bytes()).expect("put");
    telnet.flush().expect("flush");
    let (status, body) = curl(&write, &certs.ca, &["-u", "alice:s3cr3t-pw"], &format!("door_basic v=2 {t}000000000"));
    assert_eq!(status, 204, "{body}");
    let (status, body) = curl(
        &format!("https://127.0.0.1:{http}/api/put"),
        &certs.ca,
        &["-H", "Authorization: Bearer tok-0123456789"],
        &format!(r#"{{"metric":"door.put","timestamp":{t},"value":3,"tags":{{"h":"a"}}}}"#),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = curl(
        &format!("https://127.0.0.1:{http}/write?db=x&u=alice&p=s3cr3t-pw"),
        &certs.ca,
        &[],
        &format!("door_query v=4 {t}000000000"),
    );
    assert_eq!(status, 204, "{body}");
    drop(telnet);
    // An InfluxDB line's field is named measurement_field.
    for name in ["door.tls", "door_basic_v", "door.put", "door_query_v"] {
        wait_for(Duration::from_secs(15), name, || influx.points(name).into_iter().next());
    }

    // Every refusal counted; nothing refused arrived; no secret in the log.
    let pid = shipper.pid();
    wait_for(Duration::from_secs(15), "the refusals counted", || {
        let get = |input: &str| agent.status_metric(pid, &format!("puypuy_relay_refused{{input={input}}}"));
        (get("opentsdb")? >= 1 && get("graphite")? >= 2 && get("http")? >= 4).then_some(())
    });
    for name in
        ["door.plain", "door.outside.tcp", "door.outside.udp", "door_none_v", "door_wrong_v", "door.put.wrong", "x_v"]
    {
        assert!(influx.points(name).is_empty(), "{name} was refused yet arrived");
    }
    let log = agent.log();
    assert!(log.contains("not a TLS client"), "{log}");
    assert!(log.contains("not in the input's allow list"), "{log}");
    // A 401 behind the TLS front names the client's address (it said "a TLS client").
    for why in ["unable to parse authentication credentials (answered 401)", "authorization failed (answered 401)"] {
        assert!(log.lines().any(|l| l.contains("http input: refused 127.0.0.1:") && l.contains(why)), "{why}:\n{log}");
    }
    // The plain port behind the front answers only the front's connections: a local client that
    // skips TLS is refused even with good credentials.
    let inner = log
        .lines()
        .find_map(|l| l.split("serves its clients through 127.0.0.1:").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|port| port.parse::<u16>().ok())
        .expect("the inner port in the log");
    let (status, body) = curl(
        &format!("http://127.0.0.1:{inner}/write?db=x"),
        &certs.ca,
        &["-u", "alice:s3cr3t-pw"],
        &format!("door_inner v=5 {t}000000000"),
    );
    assert_eq!(status, 403, "{body}");
    wait_for(Duration::from_secs(15), "the inner refusal logged", || {
        agent.log().contains("reached the HTTPS input's inner port without TLS").then_some(())
    });
    assert!(influx.points("door_inner_v").is_empty(), "a request that skipped TLS arrived");
    for secret in ["s3cr3t-pw", "tok-0123456789"] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }
}
