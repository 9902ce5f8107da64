//! The relay's HTTP input: InfluxDB `/write` (with `/ping` and an accepted, ignored `/query`) and
//! OpenTSDB `/api/put`. A request is answered only once its points are delivered or spooled, so a
//! 204 means the relay has taken responsibility for them.
//!
//! Its good lines count in `accepted` only then; when they could not be handed over (503) or the
//! backend refused them (400), they count in `rejected`, like its bad lines, so that `accepted`
//! counts what the relay answered for.
//!
//! The door: a client outside `http_allow` (or `allow`) is answered 403; with `http_users` or
//! `http_tokens` set, a request to `/write`, `/api/put` or `/query` without valid credentials is
//! answered 401 as InfluxDB 1.x answers it (`WWW-Authenticate: Basic realm="InfluxDB"`, `{"error":
//! "unable to parse authentication credentials"}` or `{"error":"authorization failed"}`), or as
//! OpenTSDB formats its errors for `/api/put`; `/ping` stays open, as InfluxDB's. Both count in
//! `refused`, and the body is not read. With TLS, tiny_http serves a port on 127.0.0.1 behind a
//! TLS front ([`crate::tls::front`]), which checks `allow` before the handshake; each request's
//! client is the one the front recorded for its connection (logged as the client's address), and
//! a connection the front did not make (a local process skipping TLS) is answered 403.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use puypuy_common::config::relay::{Door, HttpAuth};
use puypuy_common::config::RelayConfig;
use puypuy_common::frame::{ACK_DELIVERED, ACK_DROPPED};
use puypuy_common::Point;

use super::auth::{self, Verdict};
use super::inputs::{now, InputStats};
use super::line_protocol::{self, Precision};
use super::opentsdb_json;
use crate::ack::{AckHandle, AckTo};
use crate::batch::Input;

const HTTP_WORKERS: usize = 8;
const MAX_BODY: u64 = 32 * 1024 * 1024;
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Who may use the HTTP input.
struct HttpDoor {
    allow: Door,
    auth: HttpAuth,
    /// Behind the TLS front: its clients, by the front's connections.
    front: Option<crate::tls::FrontPeers>,
}

pub(crate) fn start(
    addr: SocketAddr,
    config: &RelayConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    tx: Sender<Input>,
    stats: Arc<InputStats>,
) -> Result<(), String> {
    let (server, front) = match tls {
        // The inputs' accept queue (see `tcp_listener`), not the 128 of tiny_http's own listener.
        None => {
            let listener =
                super::inputs::tcp_listener(addr).map_err(|e| format!("[Relay] cannot listen on {addr}: {e}"))?;
            let server = tiny_http::Server::from_listener(listener, None)
                .map_err(|e| format!("[Relay] cannot serve {addr}: {e}"))?;
            (server, None)
        }
        Some(tls) => {
            let listener =
                super::inputs::tcp_listener(addr).map_err(|e| format!("[Relay] cannot listen on {addr}: {e}"))?;
            let inner = super::inputs::tcp_listener(SocketAddr::from(([127, 0, 0, 1], 0)))
                .map_err(|e| format!("[Relay] HTTPS input: cannot listen on 127.0.0.1 behind TLS: {e}"))?;
            let backend = inner.local_addr().map_err(|e| format!("[Relay] HTTPS input: {e}"))?;
            let server = tiny_http::Server::from_listener(inner, None)
                .map_err(|e| format!("[Relay] HTTPS input: cannot serve {backend}: {e}"))?;
            let (door, front_stats, refuse_stats) = (config.doors.http.clone(), Arc::clone(&stats), Arc::clone(&stats));
            let admit = Arc::new(move |s: &std::net::TcpStream| front_stats.admits(&door, s));
            let refused = Arc::new(move |peer: &str, why: &str| refuse_stats.refuse(peer, why));
            let (idle, peers) = (config.idle_timeout, crate::tls::FrontPeers::default());
            let front_peers = peers.clone();
            thread::Builder::new()
                .name("relay-https".into())
                .spawn(move || crate::tls::front(listener, tls, backend, front_peers, idle, admit, refused))
                .map_err(|e| e.to_string())?;
            log::info!("relay: the HTTPS input's TLS front on {addr} serves its clients through {backend}, which answers nothing else");
            (server, Some(peers))
        }
    };
    let server = Arc::new(server);
    let door = Arc::new(HttpDoor { allow: config.doors.http.clone(), auth: config.http_auth.clone(), front });
    for i in 0..HTTP_WORKERS {
        let (server, tx, stats, door) = (Arc::clone(&server), tx.clone(), Arc::clone(&stats), Arc::clone(&door));
        thread::Builder::new()
            .name(format!("relay-http-{i}"))
            .spawn(move || {
                while let Ok(request) = server.recv() {
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    if let Some((request, peer)) = through_the_door(request, &door, &stats) {
                        handle_http(request, &peer, &tx, &stats);
                    }
                }
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The request and its client's address, if the client is allowed and the request carries valid
/// credentials; else it is answered (403, 401), counted and logged, and its body is never read.
fn through_the_door(
    request: tiny_http::Request,
    door: &HttpDoor,
    stats: &InputStats,
) -> Option<(tiny_http::Request, String)> {
    let forbidden = |request: tiny_http::Request, shown: &str, why: &str| {
        stats.refuse(shown, &format!("{why} (answered 403)"));
        let _ = request.respond(json_response(403, r#"{"error":"forbidden: this address is not allowed"}"#.into()));
    };
    let peer = request.remote_addr().copied();
    // Behind the TLS front the peer is the front's connection: the client is the one it recorded.
    let client = match (&door.front, peer) {
        (None, peer) => peer,
        (Some(peers), Some(inner)) => match peers.client_of(&inner) {
            Some(client) => Some(client),
            None => {
                forbidden(request, &inner.to_string(), "reached the HTTPS input's inner port without TLS");
                return None;
            }
        },
        (Some(_), None) => None,
    };
    let shown = client.map_or_else(|| "?".to_string(), |a| a.to_string());
    if let Some(client) = client {
        if !door.allow.admits(client.ip()) {
            forbidden(request, &shown, "not in the input's allow list");
            return None;
        }
    }
    let path = request.url().split('?').next().unwrap_or("");
    if path == "/ping" {
        return Some((request, shown));
    }
    let authorization =
        request.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.as_str().to_string());
    let verdict = auth::check(&door.auth, authorization.as_deref(), request.url());
    let message = match verdict {
        Verdict::Allowed => return Some((request, shown)),
        Verdict::Missing => "unable to parse authentication credentials",
        Verdict::Wrong => "authorization failed",
    };
    stats.refuse(&shown, &format!("{message} (answered 401)"));
    let body = match path {
        "/api/put" => serde_json::json!({ "error": { "code": 401, "message": message } }).to_string(),
        _ => serde_json::json!({ "error": message }).to_string(),
    };
    let mut response = json_response(401, body);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"WWW-Authenticate"[..], &br#"Basic realm="InfluxDB""#[..]) {
        response.add_header(h);
    }
    let _ = request.respond(response);
    None
}

fn json_response(status: u16, body: String) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let mut r = tiny_http::Response::from_string(body).with_status_code(status);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
        r.add_header(h);
    }
    r
}

fn empty_response(status: u16) -> tiny_http::Response<std::io::Empty> {
    tiny_http::Response::empty(status)
}

fn query_param<'a>(url: &'a str, key: &str) -> Option<&'a str> {
    url.split_once('?')?.1.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn read_body(request: &mut tiny_http::Request) -> Result<Vec<u8>, String> {
    let gzip = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Content-Encoding") && h.value.as_str().eq_ignore_ascii_case("gzip"));
    let mut raw = Vec::new();
    request.as_reader().take(MAX_BODY + 1).read_to_end(&mut raw).map_err(|e| format!("cannot read the body: {e}"))?;
    if raw.len() as u64 > MAX_BODY {
        return Err(format!("body over {MAX_BODY} bytes"));
    }
    if !gzip {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(MAX_BODY * 8)
        .read_to_end(&mut out)
        .map_err(|e| format!("body announced as gzip does not decompress: {e}"))?;
    Ok(out)
}

/// Hands the points over and waits until they are delivered or spooled. The answer is about this
/// request's points only, whatever the other requests and frames of their batch met.
fn deliver(tx: &Sender<Input>, points: Vec<Point>) -> Result<(), (u16, String)> {
    let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
    tx.send(Input::Points { points, ack: Some(AckHandle { to: AckTo::Channel(ack_tx), seq: 0 }) })
        .map_err(|_| (503, "shipper is stopping".to_string()))?;
    match ack_rx.recv_timeout(ACK_WAIT) {
        Ok(ack) if ack.status == ACK_DELIVERED => Ok(()),
        Ok(ack) if ack.status == ACK_DROPPED => Err((503, "dropped: the relay's buffers are full".into())),
        Ok(_) => {
            Err((400, "the backend refused some or all of the points (set aside in the shipper's rejected/)".into()))
        }
        Err(_) => Err((503, format!("not delivered nor spooled within {ACK_WAIT:?}"))),
    }
}

/// A successful answer: 204, or a JSON body with its status (OpenTSDB's summary and details).
enum Reply {
    Empty,
    Json(u16, String),
}

fn handle_http(mut request: tiny_http::Request, peer: &str, tx: &Sender<Input>, stats: &InputStats) {
    let url = request.url().to_string();
    let path = url.split('?').next().unwrap_or("").to_string();
    let method = request.method().clone();
    let result = match (&method, path.as_str()) {
        (tiny_http::Method::Get | tiny_http::Method::Head, "/ping") => {
            let _ = request.respond(empty_response(204));
            return;
        }
        (_, "/query") => {
            // Client libraries create their database first; there is nothing to create here.
            let _ = request.respond(json_response(200, r#"{"results":[{"statement_id":0}]}"#.into()));
            return;
        }
        (tiny_http::Method::Post, "/write") => write_influx(&mut request, &url, tx, stats, peer).map(|()| Reply::Empty),
        (tiny_http::Method::Post, "/api/put") => put_opentsdb(&mut request, &url, tx, stats, peer),
        _ => Err((404, format!("unknown path {path} (expected POST /write or POST /api/put)"))),
    };
    let response = match result {
        Ok(Reply::Empty) => {
            let _ = request.respond(empty_response(204));
            return;
        }
        Ok(Reply::Json(status, body)) => json_response(status, body),
        Err((status, message)) => json_response(status, serde_json::json!({ "error": message }).to_string()),
    };
    let _ = request.respond(response);
}

fn write_influx(
    request: &mut tiny_http::Request,
    url: &str,
    tx: &Sender<Input>,
    stats: &InputStats,
    peer: &str,
) -> Result<(), (u16, String)> {
    if query_param(url, "db").is_none_or(str::is_empty) {
        return Err((400, "database is required".into()));
    }
    let precision = Precision::parse(query_param(url, "precision").unwrap_or("n"));
    let body = read_body(request).map_err(|e| (400, e))?;
    // InfluxDB stores bytes that are not UTF-8; the relay carries text, so they become U+FFFD
    // (which is also how InfluxDB's JSON answers show them) instead of losing the body.
    let text = String::from_utf8_lossy(&body);
    let parsed = line_protocol::parse_body(&text, precision, now());
    let good = parsed.lines - parsed.refused.len() as u64;
    if parsed.strings_skipped > 0 {
        stats.strings_skipped.fetch_add(parsed.strings_skipped, Ordering::Relaxed);
        stats.note_strings(peer, parsed.strings_skipped);
    }
    for (n, line, why) in &parsed.refused {
        stats.reject(peer, line, &format!("line {n}: {why}"));
    }
    if !parsed.points.is_empty() {
        deliver(tx, parsed.points).inspect_err(|_| {
            stats.rejected.fetch_add(good, Ordering::Relaxed);
        })?;
    }
    stats.accepted.fetch_add(good, Ordering::Relaxed);
    if parsed.refused.is_empty() {
        return Ok(());
    }
    // As InfluxDB: the good lines are kept and the answer is 400, naming the lines refused.
    let why: Vec<String> =
        parsed.refused.iter().map(|(_, line, why)| format!("unable to parse '{line}': {why}")).collect();
    let partial = if parsed.lines > parsed.refused.len() as u64 { "partial write: " } else { "" };
    Err((400, format!("{partial}{}", why.join("\n"))))
}

fn put_opentsdb(
    request: &mut tiny_http::Request,
    url: &str,
    tx: &Sender<Input>,
    stats: &InputStats,
    peer: &str,
) -> Result<Reply, (u16, String)> {
    let body = read_body(request).map_err(|e| (400, e))?;
    let parsed = opentsdb_json::parse_put_json(&body).map_err(|e| {
        stats.reject(peer, "", &e);
        (400, e)
    })?;
    for (i, _, why) in &parsed.refused {
        stats.reject(peer, "", &format!("datapoint {i}: {why}"));
    }
    let (success, failed) = (parsed.points.len(), parsed.refused.len());
    if success > 0 {
        deliver(tx, parsed.points).inspect_err(|_| {
            stats.rejected.fetch_add(success as u64, Ordering::Relaxed);
        })?;
    }
    stats.accepted.fetch_add(success as u64, Ordering::Relaxed);
    // OpenTSDB's answers: 204, or with ?summary / ?details the counts (and the refused points);
    // 400 when a point was refused.
    let details = has_flag(url, "details");
    let status = if failed == 0 { 200 } else { 400 };
    if details {
        let errors: Vec<serde_json::Value> = parsed
            .refused
            .into_iter()
            .map(|(_, datapoint, error)| serde_json::json!({ "datapoint": datapoint, "error": error }))
            .collect();
        let body = serde_json::json!({ "success": success, "failed": failed, "errors": errors });
        return Ok(Reply::Json(status, body.to_string()));
    }
    if has_flag(url, "summary") {
        return Ok(Reply::Json(status, serde_json::json!({ "success": success, "failed": failed }).to_string()));
    }
    if failed > 0 {
        let body = serde_json::json!({ "error": {
            "code": 400,
            "message": "One or more data points had errors",
            "details": "Please see the TSD logs or append \"details\" to the put request",
        }});
        return Ok(Reply::Json(400, body.to_string()));
    }
    Ok(Reply::Empty)
}

/// A query flag without value (`?details`, `&summary`), or with one.
fn has_flag(url: &str, flag: &str) -> bool {
    url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|kv| kv == flag || kv.starts_with(&format!("{flag}="))))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::batch::{run_batcher, BatcherSettings};
    use crate::delivery::{Backoff, Delivery, DeliverySettings};
    use crate::fake_transport::{FakeBackend, Refusal};
    use crate::rejected::RejectedDir;
    use crate::stats::Stats;

    /// Regression: a client whose points were all delivered was answered 400 "the backend refused
    /// the points" because another client's point in the same batch was refused.
    #[test]
    fn each_request_is_answered_for_its_own_points_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FakeBackend::default();
        let settings = DeliverySettings {
            max_batches: 10,
            shutdown_grace: Duration::from_secs(5),
            spool: None,
            rejected: RejectedDir::new(dir.path().join("rejected"), 10),
            new_transport: Arc::default(),
            backoff: Backoff::default(),
        };
        let stats = Arc::new(Stats::default());
        let delivery = Delivery::new(backend.transport(Refusal::WholeRequest, Duration::ZERO), settings, stats.clone());
        let (tx, rx) = crossbeam_channel::unbounded();
        let (batches_tx, batches) = crossbeam_channel::unbounded();
        // Both requests' four points make one batch: it closes at four points, long before batch_wait.
        let batcher_settings =
            BatcherSettings { batch_points: 4, batch_wait: Duration::from_secs(20), rate_file: None };
        let batcher = std::thread::spawn(move || run_batcher(rx, batches_tx, batcher_settings, stats));
        let delivering = std::thread::spawn(move || delivery.run(batches));
        let point = |id: u32, bad: bool| {
            let p = Point::int("m", 1_700_000_000, 1, "relay").with_tag("id", id.to_string());
            if bad {
                p.with_tag("bad", "1")
            } else {
                p
            }
        };
        let good = std::thread::spawn({
            let tx = tx.clone();
            move || deliver(&tx, vec![point(1, false), point(2, false)])
        });
        let bad = deliver(&tx, vec![point(3, false), point(4, true)]);
        let good = good.join().expect("good client");
        assert_eq!(backend.state().requests[0], 4, "both requests in one batch");
        assert_eq!(good, Ok(()));
        assert!(matches!(&bad, Err((400, m)) if m.contains("refused")), "{bad:?}");
        drop(tx);
        batcher.join().expect("batcher");
        delivering.join().expect("delivery");
    }

    /// Regression: `accepted` counted a request's lines before they were handed over, so a request
    /// answered 503 still counted as accepted.
    #[test]
    fn only_lines_handed_over_count_as_accepted() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
        let config = puypuy_common::config::RelayConfig {
            doors: Default::default(),
            tls: None,
            http_auth: Default::default(),
            frames: None,
            opentsdb_listen: None,
            graphite_listen: None,
            graphite_udp: false,
            http_listen: Some(addr),
            max_line_bytes: 1 << 16,
            max_connections: 10,
            idle_timeout: Duration::from_secs(10),
            socket_group: None,
            statsd: None,
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = super::super::inputs::start(&config, &tx).expect("relay").remove(0);
        // The shipper's side: the first two requests dropped (queue full), then delivered.
        std::thread::spawn(move || {
            let mut n = 0;
            while let Ok(Input::Points { ack: Some(ack), .. }) = rx.recv() {
                ack.ack(if n < 2 { ACK_DROPPED } else { ACK_DELIVERED });
                n += 1;
            }
        });
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let post = |path: &str, body: &str| {
            agent.post(&format!("http://{addr}{path}")).send(body).expect("relay answers").status().as_u16()
        };
        let lines = "m v=1 1700000000000000000\nm v=2 1700000000000000000\nm v=3 1700000000000000000\n";
        let json = r#"[{"metric":"m","timestamp":1700000000,"value":1,"tags":{"h":"a"}},
                       {"metric":"m","timestamp":1700000001,"value":2,"tags":{"h":"a"}}]"#;
        let count = || (stats.accepted.load(Ordering::Relaxed), stats.rejected.load(Ordering::Relaxed));
        assert_eq!(post("/write?db=x", lines), 503);
        assert_eq!(post("/api/put", json), 503);
        assert_eq!(count(), (0, 5));
        assert_eq!(post("/write?db=x", lines), 204);
        assert_eq!(post("/api/put", json), 204);
        assert_eq!(count(), (5, 5));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("/write?db=x&precision=s", "precision"), Some("s"));
        assert_eq!(query_param("/write?db=x", "db"), Some("x"));
        assert_eq!(query_param("/write", "db"), None);
    }
}
