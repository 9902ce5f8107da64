//! `tsdtype: Prometheus`: instead of sending, the shipper keeps the latest value of every series and
//! serves them on `GET /metrics` at `[WebServer] webaddress` (default `127.0.0.1:9898`) in the
//! text exposition format 0.0.4 ([`crate::backends::prometheus`]) for a Prometheus server to scrape.
//!
//! - `allowedip` (addresses or networks, comma-separated): other clients get 403. Unset, everyone
//!   who can reach `webaddress` is served.
//! - `apikey`: when set, a request must carry `Authorization: Bearer KEY` or `?apikey=KEY`, else
//!   401. In Prometheus: `authorization: {credentials: KEY}` in the scrape config.
//! - `Accept-Encoding: gzip` gets a gzipped page (`Content-Encoding: gzip`).
//! - Staleness: a series whose newest point is older than `staleness_seconds` (default 300, the
//!   5 minutes Prometheus itself looks back) leaves the page, so a stopped check or a gone disk
//!   stops being reported instead of repeating its last value for ever.
//!
//! The page is kept per address while a transport uses it: a reload (SIGHUP) makes a new
//! transport, which takes over the running server and its values and applies the new
//! `allowedip`/`apikey`/staleness; a changed `webaddress` starts a server there, and the old one
//! stops when its last transport is dropped.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use puypuy_common::config::tsdb::WebServer;
use puypuy_common::{Point, Value};

use crate::backends::prometheus::{encode_page, Series, SeriesMaker};
use crate::tags::{HostTagging, HostTags};
use crate::transport::{SendError, Transport, TransportError};

/// The latest value of every series and the unix time (s) of its point.
#[derive(Debug, Default)]
pub struct Latest {
    series: BTreeMap<Series, (Value, u64)>,
}

impl Latest {
    /// Takes in a point of `series`, unless the page already has a newer one.
    pub fn update(&mut self, series: Series, value: Value, timestamp: u64) {
        match self.series.get_mut(&series) {
            Some(held) if held.1 > timestamp => {}
            Some(held) => *held = (value, timestamp),
            None => {
                self.series.insert(series, (value, timestamp));
            }
        }
    }

    /// Forgets the series whose newest point is older than `now - staleness`.
    pub fn drop_stale(&mut self, now: u64, staleness: u64) {
        self.series.retain(|_, (_, t)| t.saturating_add(staleness) >= now);
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The page, appended to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_page(self.series.iter().map(|(s, (v, _))| (s, *v)), out);
    }
}

/// What a request may see: the verdict on one request, from its client, path and headers.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Serve { gzip: bool },
    NotFound,
    MethodNotAllowed,
    Forbidden,
    Unauthorized,
}

/// The pure part of serving: `url` is the request target, `authorization` and `accept_encoding`
/// the headers' values.
pub fn judge(
    web: &WebServer,
    method: &str,
    url: &str,
    client: Option<IpAddr>,
    authorization: Option<&str>,
    accept_encoding: Option<&str>,
) -> Verdict {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    if path != "/metrics" {
        return Verdict::NotFound;
    }
    if method != "GET" && method != "HEAD" {
        return Verdict::MethodNotAllowed;
    }
    if !web.allowed.is_empty() && !client.is_some_and(|ip| web.allowed.iter().any(|r| r.contains(ip))) {
        return Verdict::Forbidden;
    }
    if let Some(key) = &web.apikey {
        let bearer = authorization.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
        let in_query = query.split('&').find_map(|kv| kv.strip_prefix("apikey="));
        let given = bearer.or(in_query).unwrap_or("");
        if !crate::relay::auth::same_secret(key.as_bytes(), given.as_bytes()) {
            return Verdict::Unauthorized;
        }
    }
    let gzip = accept_encoding.is_some_and(|a| {
        a.split(',').any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            name.eq_ignore_ascii_case("gzip") && !refused
        })
    });
    Verdict::Serve { gzip }
}

/// One listening address: its values, its current settings, its server and how many transports
/// use it (a reload makes the new transport before it drops the old one).
struct Shared {
    latest: Mutex<Latest>,
    web: Mutex<WebServer>,
    server: tiny_http::Server,
    users: AtomicUsize,
}

/// The servers started in this process, by address.
type Servers = Vec<(String, Arc<Shared>)>;

fn servers() -> &'static Mutex<Servers> {
    static SERVERS: Mutex<Servers> = Mutex::new(Vec::new());
    &SERVERS
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub struct ExpositionTransport {
    shared: Arc<Shared>,
    address: String,
    host: HostTags,
}

impl ExpositionTransport {
    /// Serves `web.address`, or takes over the server already serving it.
    pub fn start(web: &WebServer, host: HostTags) -> Result<ExpositionTransport, TransportError> {
        let mut servers = servers().lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, shared)) = servers.iter().find(|(a, _)| *a == web.address) {
            *shared.web.lock().unwrap_or_else(|e| e.into_inner()) = web.clone();
            shared.users.fetch_add(1, Ordering::Relaxed);
            return Ok(ExpositionTransport { shared: Arc::clone(shared), address: web.address.clone(), host });
        }
        let server = tiny_http::Server::http(web.address.as_str())
            .map_err(|e| TransportError::Listen { address: web.address.clone(), detail: e.to_string() })?;
        let shared =
            Arc::new(Shared { latest: Mutex::default(), web: Mutex::new(web.clone()), server, users: 1.into() });
        let serving = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("metrics-page".into())
            .spawn(move || serve(&serving.server, &serving))
            .map_err(|e| TransportError::Listen { address: web.address.clone(), detail: e.to_string() })?;
        log::info!("serving /metrics on http://{}", web.address);
        servers.push((web.address.clone(), Arc::clone(&shared)));
        Ok(ExpositionTransport { shared, address: web.address.clone(), host })
    }
}

/// The last transport of an address stops its server: after a reload that moved `webaddress`, the
/// old address no longer serves a page that stopped changing.
impl Drop for ExpositionTransport {
    fn drop(&mut self) {
        let mut servers = servers().lock().unwrap_or_else(|e| e.into_inner());
        if self.shared.users.fetch_sub(1, Ordering::Relaxed) == 1 {
            servers.retain(|(a, _)| *a != self.address);
            self.shared.server.unblock();
            log::info!("no longer serving /metrics on http://{}", self.address);
        }
    }
}

fn header<'a>(request: &'a tiny_http::Request, name: &'static str) -> Option<&'a str> {
    request.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str())
}

fn serve(server: &tiny_http::Server, shared: &Shared) {
    let mut page = Vec::new();
    for request in server.incoming_requests() {
        let web = shared.web.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let verdict = judge(
            &web,
            request.method().as_str(),
            request.url(),
            request.remote_addr().map(|a| a.ip()),
            header(&request, "Authorization"),
            header(&request, "Accept-Encoding"),
        );
        let text = |status: u16, body: &str| tiny_http::Response::from_string(body).with_status_code(status);
        let result = match verdict {
            Verdict::NotFound => request.respond(text(404, "not found: the page is /metrics\n")),
            Verdict::MethodNotAllowed => request.respond(text(405, "only GET\n")),
            Verdict::Forbidden => {
                request.respond(text(403, "forbidden: this address is not in [WebServer] allowedip\n"))
            }
            Verdict::Unauthorized => {
                let mut r = text(401, "unauthorized: send [WebServer] apikey as a bearer token or ?apikey=\n");
                if let Ok(h) = tiny_http::Header::from_bytes("WWW-Authenticate", "Bearer") {
                    r.add_header(h);
                }
                request.respond(r)
            }
            Verdict::Serve { gzip } => {
                page.clear();
                {
                    let mut latest = shared.latest.lock().unwrap_or_else(|e| e.into_inner());
                    latest.drop_stale(now(), web.staleness.as_secs());
                    latest.encode(&mut page);
                }
                let mut body = std::mem::take(&mut page);
                let mut encoding = None;
                if gzip {
                    let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
                    if let Ok(zipped) = gz.write_all(&body).and_then(|()| gz.finish()) {
                        page = std::mem::replace(&mut body, zipped);
                        encoding = Some("gzip");
                    }
                }
                let mut response = tiny_http::Response::from_data(body);
                let mut headers = vec![("Content-Type", "text/plain; version=0.0.4; charset=utf-8")];
                if let Some(e) = encoding {
                    headers.push(("Content-Encoding", e));
                }
                for (k, v) in headers {
                    if let Ok(h) = tiny_http::Header::from_bytes(k, v) {
                        response.add_header(h);
                    }
                }
                request.respond(response)
            }
        };
        if let Err(e) = result {
            log::debug!("/metrics: answering a client failed: {e}");
        }
    }
}

impl Transport for ExpositionTransport {
    fn send(&mut self, points: &[Point], tagging: HostTagging) -> Result<(), SendError> {
        let mut maker = SeriesMaker::new(self.host.for_points(tagging));
        let made: Vec<(Series, Value, u64)> = points
            .iter()
            .filter(|p| p.value.is_finite())
            .filter_map(|p| maker.series(p).map(|s| (s, p.value, p.timestamp)))
            .collect();
        let mut latest = self.shared.latest.lock().unwrap_or_else(|e| e.into_inner());
        for (series, value, timestamp) in made {
            latest.update(series, value, timestamp);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("Prometheus page at http://{}/metrics", self.address)
    }

    fn describe_backend(&self) -> String {
        "Prometheus".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use puypuy_common::config::tsdb::IpRange;

    fn series(name: &str) -> Series {
        Series { name: name.into(), labels: vec![("host".into(), "h".into())] }
    }

    #[test]
    fn newest_point_wins_and_an_older_one_is_ignored() {
        let mut l = Latest::default();
        l.update(series("a"), Value::Int(1), 100);
        l.update(series("a"), Value::Int(2), 90);
        l.update(series("a"), Value::Int(3), 110);
        let mut out = Vec::new();
        l.encode(&mut out);
        assert!(String::from_utf8(out).expect("utf-8").ends_with("a{host=\"h\"} 3\n"));
    }

    #[test]
    fn series_older_than_the_staleness_leave_the_page() {
        let mut l = Latest::default();
        l.update(series("old"), Value::Int(1), 1000);
        l.update(series("fresh"), Value::Int(1), 1290);
        l.drop_stale(1300, 300);
        assert_eq!(l.len(), 2);
        l.drop_stale(1301, 300);
        assert_eq!(l.len(), 1);
        let mut out = Vec::new();
        l.encode(&mut out);
        assert!(!String::from_utf8(out).expect("utf-8").contains("old"));
    }

    fn web(allowed: &[&str], apikey: Option<&str>) -> WebServer {
        WebServer {
            allowed: allowed.iter().map(|a| IpRange::parse(a).expect("range")).collect(),
            apikey: apikey.map(str::to_string),
            ..WebServer::default()
        }
    }

    #[test]
    fn only_allowed_clients_are_served() {
        let w = web(&["10.0.0.0/8", "192.168.1.7"], None);
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        let serve = Verdict::Serve { gzip: false };
        assert_eq!(judge(&w, "GET", "/metrics", ip("10.1.2.3"), None, None), serve);
        assert_eq!(judge(&w, "GET", "/metrics", ip("::ffff:192.168.1.7"), None, None), serve);
        assert_eq!(judge(&w, "GET", "/metrics", ip("192.168.1.8"), None, None), Verdict::Forbidden);
        assert_eq!(judge(&w, "GET", "/metrics", None, None, None), Verdict::Forbidden);
        assert_eq!(judge(&web(&[], None), "GET", "/metrics", ip("8.8.8.8"), None, None), serve);
    }

    #[test]
    fn apikey_is_taken_as_bearer_token_or_query_parameter() {
        let w = web(&[], Some("k3y"));
        let serve = Verdict::Serve { gzip: false };
        assert_eq!(judge(&w, "GET", "/metrics", None, Some("Bearer k3y"), None), serve);
        assert_eq!(judge(&w, "GET", "/metrics?apikey=k3y", None, None, None), serve);
        assert_eq!(judge(&w, "GET", "/metrics", None, Some("Bearer k3"), None), Verdict::Unauthorized);
        assert_eq!(judge(&w, "GET", "/metrics?apikey=", None, None, None), Verdict::Unauthorized);
        assert_eq!(judge(&w, "GET", "/metrics", None, None, None), Verdict::Unauthorized);
    }

    #[test]
    fn gzip_is_used_when_accepted_and_other_paths_are_not_found() {
        let w = web(&[], None);
        assert_eq!(judge(&w, "GET", "/metrics", None, None, Some("deflate, gzip")), Verdict::Serve { gzip: true });
        assert_eq!(judge(&w, "GET", "/metrics", None, None, Some("gzip;q=0")), Verdict::Serve { gzip: false });
        assert_eq!(judge(&w, "GET", "/", None, None, None), Verdict::NotFound);
        assert_eq!(judge(&w, "POST", "/metrics", None, None, None), Verdict::MethodNotAllowed);
    }

    /// What a GET of `/metrics` on `port` gets: the status line and the body, or the error.
    fn get(port: u16) -> Result<(String, String), std::io::Error> {
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut answer = String::new();
        c.read_to_string(&mut answer)?;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        Ok((head.lines().next().unwrap_or("").to_string(), body.to_string()))
    }

    /// Two different free ports (both held until both are known).
    fn two_free_ports() -> (u16, u16) {
        let listen = || std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        let (a, b) = (listen(), listen());
        let port = |l: &std::net::TcpListener| l.local_addr().expect("address").port();
        (port(&a), port(&b))
    }

    #[test]
    fn a_reload_that_moves_webaddress_stops_the_old_server_and_one_that_keeps_it_keeps_serving() {
        let (first, second) = two_free_ports();
        let at = |port: u16| WebServer { address: format!("127.0.0.1:{port}"), ..WebServer::default() };
        let host = HostTags::new(vec![("host".into(), "h".into())]);
        let point = |v: i64| Point::int("m", now(), v, "t");
        let mut old = ExpositionTransport::start(&at(first), host.clone()).expect("first server");
        old.send(&[point(1)], HostTagging::ThisHost).expect("send");
        let (status, body) = get(first).expect("first page");
        assert!(status.contains(" 200 ") && body.contains("m{host=\"h\",type=\"t\"} 1\n"), "{status}\n{body}");

        // The reload's new transport comes first, then the old one is dropped.
        let mut moved = ExpositionTransport::start(&at(second), host.clone()).expect("second server");
        drop(old);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match get(first) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                other => assert!(std::time::Instant::now() < deadline, "the old address still answers: {other:?}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        moved.send(&[point(2)], HostTagging::ThisHost).expect("send");

        // Same address again: the server and its page stay.
        let kept = ExpositionTransport::start(&at(second), host).expect("same address");
        drop(moved);
        let (status, body) = get(second).expect("page after a reload to the same address");
        assert!(status.contains(" 200 ") && body.contains("m{host=\"h\",type=\"t\"} 2\n"), "{status}\n{body}");
        drop(kept);
    }
}
