//! The relay's listeners: OpenTSDB telnet and Graphite plaintext over TCP (Graphite over UDP too),
//! and an HTTP server for InfluxDB `/write` and OpenTSDB `/api/put`.
//!
//! Each TCP connection has its own thread, a read timeout (`idle_timeout_seconds`), and lines are
//! cut at `max_line_bytes`; a slow or silent client holds only its own thread. Beyond
//! `max_connections` open connections per input, new ones are closed at once. A malformed line is
//! counted and logged (at most every 10 s per input) and the connection goes on. Points of one read
//! go to the pipeline together; when it is behind, reading waits (TCP backpressure) rather than
//! dropping. HTTP requests are answered only once their points are delivered or spooled, so a 204
//! means the relay has taken responsibility for them.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use puypuy_common::config::RelayConfig;
use puypuy_common::frame::{ACK_DELIVERED, ACK_DROPPED};
use puypuy_common::Point;

use super::line_protocol::{self, Precision};
use super::{graphite, opentsdb_json, telnet};
use crate::pipeline::{AckHandle, AckTo, Input};

/// Counters of one input, for the self-metrics.
pub struct InputStats {
    pub name: &'static str,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub connections: AtomicU64,
    open: AtomicUsize,
    last_log: Mutex<Option<Instant>>,
}

impl InputStats {
    fn new(name: &'static str) -> Arc<InputStats> {
        Arc::new(InputStats {
            name,
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            last_log: Mutex::new(None),
        })
    }

    /// Counts a bad line; logs it unless this input logged one in the last 10 s.
    fn reject(&self, peer: &str, line: &str, why: &str) {
        let total = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            let shown: String = line.chars().take(200).collect();
            log::warn!("{} input: bad line from {peer}: {why}: {shown:?} ({total} rejected so far)", self.name);
            *last = Some(Instant::now());
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

type LineParser = fn(&str, u64) -> Result<Point, String>;

fn telnet_line(line: &str, _now: u64) -> Result<Point, String> {
    telnet::parse_put(line)
}

/// Starts every configured input; returns their counters.
pub fn start(config: &RelayConfig, tx: &Sender<Input>) -> Result<Vec<Arc<InputStats>>, String> {
    let mut all = Vec::new();
    if let Some(addr) = config.opentsdb_listen {
        let stats = InputStats::new("opentsdb");
        start_tcp(addr, config, tx.clone(), Arc::clone(&stats), telnet_line)?;
        log::info!("relay: OpenTSDB telnet input on {addr}");
        all.push(stats);
    }
    if let Some(addr) = config.graphite_listen {
        let stats = InputStats::new("graphite");
        start_tcp(addr, config, tx.clone(), Arc::clone(&stats), graphite::parse_plain)?;
        if config.graphite_udp {
            start_udp(addr, tx.clone(), Arc::clone(&stats))?;
        }
        log::info!(
            "relay: Graphite plaintext input on {addr}{}",
            if config.graphite_udp { " (TCP and UDP)" } else { "" }
        );
        all.push(stats);
    }
    if let Some(addr) = config.http_listen {
        let stats = InputStats::new("http");
        start_http(addr, tx.clone(), Arc::clone(&stats))?;
        log::info!("relay: HTTP input (InfluxDB /write, OpenTSDB /api/put) on {addr}");
        all.push(stats);
    }
    Ok(all)
}

fn start_tcp(
    addr: SocketAddr,
    config: &RelayConfig,
    tx: Sender<Input>,
    stats: Arc<InputStats>,
    parse: LineParser,
) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("[Relay] cannot listen on {addr}: {e}"))?;
    let (max_line, max_conns, idle) = (config.max_line_bytes, config.max_connections, config.idle_timeout);
    thread::Builder::new()
        .name(format!("relay-{}", stats.name))
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                if stats.open.load(Ordering::Relaxed) >= max_conns {
                    stats.reject("-", "", &format!("over max_connections ({max_conns}); connection closed"));
                    continue;
                }
                stats.connections.fetch_add(1, Ordering::Relaxed);
                stats.open.fetch_add(1, Ordering::Relaxed);
                let (tx, stats) = (tx.clone(), Arc::clone(&stats));
                let spawned = thread::Builder::new().name("relay-conn".into()).spawn(move || {
                    let mut stream = stream;
                    serve_lines(&mut stream, &tx, &stats, parse, max_line, idle);
                    // The slot is free before the client sees the connection close.
                    stats.open.fetch_sub(1, Ordering::Relaxed);
                    drop(stream);
                });
                if spawned.is_err() {
                    log::error!("relay: cannot start a connection thread");
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Splits what arrives into lines, parses them and forwards the points of each read together.
struct LineSplitter {
    pending: Vec<u8>,
    skipping: bool,
    max_line: usize,
}

impl LineSplitter {
    fn new(max_line: usize) -> LineSplitter {
        LineSplitter { pending: Vec::new(), skipping: false, max_line }
    }

    /// Feeds bytes; calls `line` for each complete line (or over-long one, as `Err`).
    fn feed(&mut self, mut data: &[u8], line: &mut impl FnMut(Result<&[u8], usize>)) {
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            let (head, rest) = (&data[..pos], &data[pos + 1..]);
            if self.skipping {
                self.skipping = false;
            } else if self.pending.len() + head.len() > self.max_line {
                line(Err(self.pending.len() + head.len()));
            } else if self.pending.is_empty() {
                line(Ok(head));
            } else {
                self.pending.extend_from_slice(head);
                let whole = std::mem::take(&mut self.pending);
                line(Ok(&whole));
            }
            self.pending.clear();
            data = rest;
        }
        if self.skipping {
            return;
        }
        if self.pending.len() + data.len() > self.max_line {
            line(Err(self.pending.len() + data.len()));
            self.pending.clear();
            self.skipping = true;
        } else {
            self.pending.extend_from_slice(data);
        }
    }

    /// The last line when the peer closes without a newline.
    fn finish(&mut self, line: &mut impl FnMut(Result<&[u8], usize>)) {
        if !self.skipping && !self.pending.is_empty() {
            let whole = std::mem::take(&mut self.pending);
            line(Ok(&whole));
        }
    }
}

fn handle_line(
    raw: Result<&[u8], usize>,
    parse: LineParser,
    stats: &InputStats,
    peer: &str,
    points: &mut Vec<Point>,
    max_line: usize,
) {
    match raw {
        Err(len) => stats.reject(peer, "", &format!("line of {len}+ bytes is over max_line_bytes ({max_line})")),
        Ok(bytes) => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                stats.reject(peer, &String::from_utf8_lossy(bytes), "not valid UTF-8");
                return;
            };
            let text = text.trim_end_matches('\r');
            if text.trim().is_empty() {
                return;
            }
            match parse(text, now()) {
                Ok(p) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    points.push(p);
                }
                Err(e) => stats.reject(peer, text, &e),
            }
        }
    }
}

fn serve_lines(
    stream: &mut TcpStream,
    tx: &Sender<Input>,
    stats: &InputStats,
    parse: LineParser,
    max_line: usize,
    idle: Duration,
) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let _ = stream.set_read_timeout(Some(idle));
    let mut splitter = LineSplitter::new(max_line);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                    log::debug!("{} input: {peer} idle for {idle:?}; closing", stats.name);
                }
                break;
            }
        };
        let mut points = Vec::new();
        splitter.feed(&buf[..n], &mut |l| handle_line(l, parse, stats, &peer, &mut points, max_line));
        if !points.is_empty() && tx.send(Input::Points { points, ack: None }).is_err() {
            return;
        }
    }
    let mut points = Vec::new();
    splitter.finish(&mut |l| handle_line(l, parse, stats, &peer, &mut points, max_line));
    if !points.is_empty() {
        let _ = tx.send(Input::Points { points, ack: None });
    }
}

fn start_udp(addr: SocketAddr, tx: Sender<Input>, stats: Arc<InputStats>) -> Result<(), String> {
    let socket = UdpSocket::bind(addr).map_err(|e| format!("[Relay] cannot listen on UDP {addr}: {e}"))?;
    thread::Builder::new()
        .name("relay-udp".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                let peer = from.to_string();
                let mut points = Vec::new();
                for line in buf[..n].split(|b| *b == b'\n') {
                    handle_line(Ok(line), graphite::parse_plain, &stats, &peer, &mut points, 65_536);
                }
                if !points.is_empty() && tx.send(Input::Points { points, ack: None }).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

const HTTP_WORKERS: usize = 8;
const MAX_BODY: u64 = 32 * 1024 * 1024;
const ACK_WAIT: Duration = Duration::from_secs(30);

fn start_http(addr: SocketAddr, tx: Sender<Input>, stats: Arc<InputStats>) -> Result<(), String> {
    let server = Arc::new(tiny_http::Server::http(addr).map_err(|e| format!("[Relay] cannot listen on {addr}: {e}"))?);
    for i in 0..HTTP_WORKERS {
        let (server, tx, stats) = (Arc::clone(&server), tx.clone(), Arc::clone(&stats));
        thread::Builder::new()
            .name(format!("relay-http-{i}"))
            .spawn(move || {
                while let Ok(request) = server.recv() {
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    handle_http(request, &tx, &stats);
                }
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(())
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

/// Hands the points over and waits until they are delivered or spooled.
fn deliver(tx: &Sender<Input>, points: Vec<Point>) -> Result<(), (u16, String)> {
    let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
    tx.send(Input::Points { points, ack: Some(AckHandle { to: AckTo::Channel(ack_tx), seq: 0 }) })
        .map_err(|_| (503, "shipper is stopping".to_string()))?;
    match ack_rx.recv_timeout(ACK_WAIT) {
        Ok(ack) if ack.status == ACK_DELIVERED => Ok(()),
        Ok(ack) if ack.status == ACK_DROPPED => Err((503, "dropped: the relay's buffers are full".into())),
        Ok(_) => Err((400, "the backend refused the points".into())),
        Err(_) => Err((503, format!("not delivered nor spooled within {ACK_WAIT:?}"))),
    }
}

fn handle_http(mut request: tiny_http::Request, tx: &Sender<Input>, stats: &InputStats) {
    let url = request.url().to_string();
    let path = url.split('?').next().unwrap_or("").to_string();
    let method = request.method().clone();
    let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_else(|| "?".into());
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
        (tiny_http::Method::Post, "/write") => write_influx(&mut request, &url, tx, stats, &peer),
        (tiny_http::Method::Post, "/api/put") => put_opentsdb(&mut request, tx, stats, &peer),
        _ => Err((404, format!("unknown path {path} (expected POST /write or POST /api/put)"))),
    };
    let response = match result {
        Ok(()) => {
            let _ = request.respond(empty_response(204));
            return;
        }
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
    let precision = query_param(url, "precision").unwrap_or("n");
    let precision = Precision::parse(precision).ok_or_else(|| (400, format!("invalid precision {precision:?}")))?;
    let body = read_body(request).map_err(|e| (400, e))?;
    let text = String::from_utf8(body).map_err(|_| (400, "body is not valid UTF-8".to_string()))?;
    match line_protocol::parse_body(&text, precision, now()) {
        Ok(points) => {
            let lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count();
            stats.accepted.fetch_add(lines as u64, Ordering::Relaxed);
            if points.is_empty() {
                return Ok(());
            }
            deliver(tx, points)
        }
        Err((n, line, why)) => {
            stats.reject(peer, &line, &format!("line {n}: {why}"));
            Err((400, format!("unable to parse '{line}': {why} (line {n})")))
        }
    }
}

fn put_opentsdb(
    request: &mut tiny_http::Request,
    tx: &Sender<Input>,
    stats: &InputStats,
    peer: &str,
) -> Result<(), (u16, String)> {
    let body = read_body(request).map_err(|e| (400, e))?;
    match opentsdb_json::parse_put_json(&body) {
        Ok(points) => {
            stats.accepted.fetch_add(points.len() as u64, Ordering::Relaxed);
            deliver(tx, points)
        }
        Err(e) => {
            stats.reject(peer, "", &e);
            Err((400, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(splitter: &mut LineSplitter, data: &[u8]) -> Vec<Result<Vec<u8>, usize>> {
        let mut out = Vec::new();
        splitter.feed(data, &mut |l| out.push(l.map(|b| b.to_vec())));
        out
    }

    #[test]
    fn lines_split_across_reads_and_over_long_ones_are_cut() {
        let mut s = LineSplitter::new(8);
        assert_eq!(lines(&mut s, b"ab"), vec![]);
        assert_eq!(lines(&mut s, b"c\nde\n"), vec![Ok(b"abc".to_vec()), Ok(b"de".to_vec())]);
        assert_eq!(lines(&mut s, b"0123456789"), vec![Err(10)]);
        assert_eq!(lines(&mut s, b"more\nok\n"), vec![Ok(b"ok".to_vec())]);
        let mut last = Vec::new();
        lines(&mut s, b"tail");
        s.finish(&mut |l| last.push(l.map(|b| b.to_vec())));
        assert_eq!(last, vec![Ok(b"tail".to_vec())]);
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("/write?db=x&precision=s", "precision"), Some("s"));
        assert_eq!(query_param("/write?db=x", "db"), Some("x"));
        assert_eq!(query_param("/write", "db"), None);
    }
}
