//! Sending encoded batches to the one configured backend: HTTP for OpenTSDB, KairosDB and
//! InfluxDB, a persistent TCP connection for Carbon, an append-only file for `File`.
//!
//! Every send has a connect and a total timeout. Failures are sorted into [`SendError::Retryable`]
//! (unreachable, timeout, 5xx, 408, 429, and 401/403/404, which an operator fixes by correcting the
//! credentials or creating the database — the points must wait for that) and
//! [`SendError::Rejected`] (the backend refused the data itself, e.g. 400: resending cannot help).
//!
//! What each backend reports on bad data: InfluxDB answers 400 `partial write: … dropped=N` and
//! keeps the valid lines; OpenTSDB and KairosDB answer 400 and keep nothing of the request, so the
//! delivery loop bisects such a batch to keep its good points; Carbon never answers.
//!
//! `[TSDB] ca_file` replaces the built-in roots, so it is read strictly: a file that cannot be read,
//! holds a malformed PEM block or no certificate is a [`TransportError`], never an empty trust store
//! (with which every https:// send would fail with an unhelpful certificate error).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::write::GzEncoder;
use puypuy_common::config::{Backend, Tsdb};
use puypuy_common::Point;

use crate::backends;
use crate::tags::{HostTagging, HostTags};

/// Why a retryable send failed, for the `puypuy_shipper_backend_errors` self-metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused, reset, name not resolved, …
    Unreachable,
    Timeout,
    /// A retryable HTTP status (5xx, 429, 401, 403, 404, …).
    Status,
    /// A local file: the File backend's, or `[TSDB] ca_file` when it cannot be read.
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [ErrorKind::Unreachable, ErrorKind::Timeout, ErrorKind::Status, ErrorKind::Io];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Status => "status",
            ErrorKind::Io => "io",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{1}")]
    Retryable(ErrorKind, String),
    #[error("{0}")]
    Rejected(String),
}

/// What to do with a batch the backend refused as invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRejection {
    /// Split it and resend the halves, down to single points, to keep the good points
    /// (OpenTSDB and KairosDB refuse a whole request for one bad point).
    Bisect,
    /// Set the whole batch aside: the backend already kept what it could (InfluxDB answers
    /// `partial write` and stores the valid lines) or never refuses data (Carbon, File).
    SetAside,
}

pub trait Transport: Send {
    /// Sends the points in one request, so that its answer is about all of them; the delivery loop
    /// gives it at most [`Transport::max_points_per_request`] points. `tagging` says whose host
    /// tags they leave with: this host's, or the ones they carry from a PuyPuy agent.
    fn send(&mut self, points: &[Point], tagging: HostTagging) -> Result<(), SendError>;
    /// The most points one request holds (`batch_points` for the HTTP backends). A batch can hold
    /// more (a frame is never split, a relay body is one input, a spool file may be from before a
    /// reload): the delivery loop then sends it in several requests and keeps each one's outcome.
    fn max_points_per_request(&self) -> usize {
        usize::MAX
    }
    fn describe(&self) -> String;
    /// The backend's name as `tsdtype` spells it, recorded in spool files.
    fn describe_backend(&self) -> String;
    fn on_rejection(&self) -> OnRejection {
        OnRejection::SetAside
    }
}

/// Why the transport for `[TSDB]` cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("[TSDB] ca_file: cannot read {}: {source} (fix the path or the file's permissions)", path.display())]
    CaFileUnreadable { path: PathBuf, source: std::io::Error },
    #[error("[TSDB] ca_file: {} is not valid PEM: {detail}", path.display())]
    CaFileBadPem { path: PathBuf, detail: String },
    #[error("[TSDB] ca_file: {} holds no certificate (expected -----BEGIN CERTIFICATE----- blocks)", path.display())]
    CaFileNoCertificate { path: PathBuf },
    #[error("[WebServer] webaddress: cannot listen on {address}: {detail} (is another process on that port?)")]
    Listen { address: String, detail: String },
}

/// The transport for `[TSDB]`; `host` are the tags every point leaves with.
pub fn try_from_config(
    tsdb: &Tsdb,
    max_points_per_request: usize,
    host: HostTags,
) -> Result<Box<dyn Transport>, TransportError> {
    Ok(match tsdb.backend {
        Backend::Carbon => Box::new(CarbonTransport::new(tsdb, host)),
        Backend::Prometheus => Box::new(crate::exposition::ExpositionTransport::start(&tsdb.web, host)?),
        Backend::PrometheusRemoteWrite => {
            Box::new(crate::remote_write::RemoteWriteTransport::new(tsdb, max_points_per_request, host)?)
        }
        Backend::PuyPuy => Box::new(crate::forward::ForwardTransport::new(tsdb, max_points_per_request, host)),
        Backend::File => Box::new(FileTransport {
            path: tsdb.path.clone().unwrap_or_else(|| PathBuf::from("puypuy-metrics.txt")),
            file: None,
            buf: Vec::new(),
            host,
        }),
        _ => Box::new(HttpTransport::new(tsdb, max_points_per_request, host)?),
    })
}

/// [`try_from_config`] for callers that must have a transport: when it cannot be made, one whose
/// every send fails with that error (retryable, so the points are spooled, not lost, until a
/// corrected config is loaded).
pub fn from_config(tsdb: &Tsdb, max_points_per_request: usize, host: HostTags) -> Box<dyn Transport> {
    try_from_config(tsdb, max_points_per_request, host).unwrap_or_else(|e| {
        Box::new(UnusableTransport { backend: tsdb.backend.name().to_string(), error: e.to_string() })
    })
}

/// The HTTP client of the HTTP backends: `[TSDB]`'s timeouts and TLS (`ca_file`, `insecure`),
/// status codes as answers rather than errors, and no resolver thread for an IP literal.
pub(crate) fn http_agent(tsdb: &Tsdb) -> Result<ureq::Agent, TransportError> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &tsdb.ca_file {
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&read_ca_file(ca)?));
    }
    if tsdb.insecure {
        log::warn!(
            "[TSDB] insecure: certificate verification is OFF; anyone on the path can read and change the metrics"
        );
        tls = tls.disable_verification(true);
    }
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(tsdb.connect_timeout))
        .timeout_global(Some(tsdb.timeout))
        .http_status_as_error(false)
        .tls_config(tls.build())
        .build();
    Ok(ureq::Agent::with_parts(config, ureq::unversioned::transport::DefaultConnector::new(), LiteralFirst::default()))
}

/// `Authorization: Basic …` from `user` and `pass` when `auth` is on.
pub(crate) fn basic_authorization(tsdb: &Tsdb) -> Option<String> {
    tsdb.auth.then(|| {
        let credentials =
            format!("{}:{}", tsdb.user.as_deref().unwrap_or_default(), tsdb.pass.as_deref().unwrap_or_default());
        format!("Basic {}", base64_encode(credentials.as_bytes()))
    })
}

/// The certificates of a PEM file, all of them; an error rather than an empty list.
pub fn read_ca_file(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, TransportError> {
    let pem =
        std::fs::read(path).map_err(|source| TransportError::CaFileUnreadable { path: path.to_path_buf(), source })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            // A private key beside the certificates is not ours to trust: skipped.
            Ok(_) => {}
            Err(e) => {
                return Err(TransportError::CaFileBadPem { path: path.to_path_buf(), detail: e.to_string() });
            }
        }
    }
    if certs.is_empty() {
        return Err(TransportError::CaFileNoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// What [`from_config`] gives when the transport cannot be made: each send reports why.
struct UnusableTransport {
    backend: String,
    error: String,
}

impl Transport for UnusableTransport {
    fn send(&mut self, _points: &[Point], _tagging: HostTagging) -> Result<(), SendError> {
        Err(SendError::Retryable(ErrorKind::Io, format!("{}: {}", self.backend, self.error)))
    }

    fn describe(&self) -> String {
        format!("{} (unusable: {})", self.backend, self.error)
    }

    fn describe_backend(&self) -> String {
        self.backend.clone()
    }
}

pub struct HttpTransport {
    agent: ureq::Agent,
    backend: Backend,
    url: String,
    authorization: Option<String>,
    gzip: bool,
    max_points: usize,
    /// The encoded batch, and the gzipped body when gzip is on; both reused from batch to batch.
    raw: Vec<u8>,
    body: Vec<u8>,
    host: HostTags,
}

impl HttpTransport {
    pub fn new(tsdb: &Tsdb, max_points: usize, host: HostTags) -> Result<HttpTransport, TransportError> {
        let agent = http_agent(tsdb)?;
        let mut url = format!("{}{}", tsdb.address, tsdb.datapoints);
        if tsdb.backend == Backend::InfluxDb {
            let db = tsdb.database.as_deref().unwrap_or_default();
            url.push_str(if url.contains('?') { "&" } else { "?" });
            url.push_str("db=");
            url.push_str(&percent_encode(db));
            url.push_str("&precision=s");
        }
        if tsdb.backend == Backend::InfluxDb2 {
            let (org, bucket) = (tsdb.organization.as_deref(), tsdb.bucket.as_deref());
            url = backends::influxdb2::write_url(
                &tsdb.address,
                &tsdb.datapoints,
                org.unwrap_or_default(),
                bucket.unwrap_or_default(),
            );
        }
        let authorization = if let (Backend::InfluxDb2, Some(token)) = (tsdb.backend, &tsdb.token) {
            Some(backends::influxdb2::authorization(token))
        } else {
            basic_authorization(tsdb)
        };
        Ok(HttpTransport {
            agent,
            backend: tsdb.backend,
            url,
            authorization,
            gzip: tsdb.gzip,
            max_points: max_points.max(1),
            raw: Vec::new(),
            body: Vec::new(),
            host,
        })
    }

    fn post(&mut self, points: &[Point], tagging: HostTagging) -> Result<(), SendError> {
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let host = self.host.for_points(tagging);
        match self.backend {
            Backend::OpenTsdb => backends::opentsdb::encode(points, host, &mut raw),
            Backend::KairosDb => backends::kairosdb::encode(points, host, &mut raw),
            _ => backends::influxdb::encode(points, host, &mut raw),
        }
        let content_type = match self.backend {
            Backend::InfluxDb | Backend::InfluxDb2 => "text/plain; charset=utf-8",
            _ => "application/json",
        };
        let mut request = self.agent.post(&self.url);
        if self.gzip {
            self.body.clear();
            let mut gz = GzEncoder::new(std::mem::take(&mut self.body), flate2::Compression::fast());
            // Into memory this cannot fail; if it did, an empty or cut body must not be sent.
            let zipped = gz.write_all(&raw).and_then(|()| gz.finish());
            self.raw = raw;
            self.body = zipped.map_err(|e| SendError::Retryable(ErrorKind::Io, format!("gzip of the batch: {e}")))?;
            request = if self.backend == Backend::KairosDb {
                request.header("Content-Type", "application/gzip")
            } else {
                request.header("Content-Type", content_type).header("Content-Encoding", "gzip")
            };
        } else {
            // The encoded batch is the body: swap the buffers, keeping both allocations.
            self.raw = std::mem::replace(&mut self.body, raw);
            request = request.header("Content-Type", content_type);
        }
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let mut response = match request.send(&self.body[..]) {
            Ok(r) => r,
            Err(e) => {
                let kind = match e {
                    ureq::Error::Timeout(_) => ErrorKind::Timeout,
                    _ => ErrorKind::Unreachable,
                };
                return Err(SendError::Retryable(kind, format!("{}: {e}", self.backend.name())));
            }
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let mut text = String::new();
        if let Err(e) = response.body_mut().as_reader().take(2048).read_to_string(&mut text) {
            text = format!("(the answer's body could not be read: {e})");
        }
        let text = text.trim().replace('\n', " ");
        let message = format!("{} answered {status}: {text}", self.backend.name());
        match status {
            400 | 413 | 422 => Err(SendError::Rejected(message)),
            _ => Err(SendError::Retryable(ErrorKind::Status, message)),
        }
    }
}

impl Transport for HttpTransport {
    fn send(&mut self, points: &[Point], tagging: HostTagging) -> Result<(), SendError> {
        self.post(points, tagging)
    }

    fn max_points_per_request(&self) -> usize {
        self.max_points
    }

    fn describe(&self) -> String {
        format!("{} at {}", self.backend.name(), self.url)
    }

    fn describe_backend(&self) -> String {
        self.backend.name().to_string()
    }

    fn on_rejection(&self) -> OnRejection {
        match self.backend {
            Backend::OpenTsdb | Backend::KairosDb => OnRejection::Bisect,
            _ => OnRejection::SetAside,
        }
    }
}

/// ureq's resolver, except that an address given as an IP literal is used as is. ureq resolves
/// the host before every request, even on a pooled connection, and with a timeout set it does
/// so in a new thread each time: for `http://127.0.0.1:8086` that was a thread spawned per batch.
#[derive(Debug, Default)]
pub(crate) struct LiteralFirst(ureq::unversioned::resolver::DefaultResolver);

impl ureq::unversioned::resolver::Resolver for LiteralFirst {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let literal =
            uri.host().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok());
        let port = uri.port_u16().or_else(|| match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        match (literal, port) {
            (Some(ip), Some(port)) => {
                let mut out = self.empty();
                out.push(std::net::SocketAddr::new(ip, port));
                Ok(out)
            }
            _ => self.0.resolve(uri, config, timeout),
        }
    }
}

/// How long, and how much of, what was written to carbon is kept to be written again after the
/// connection broke: see [`CarbonTransport`].
const CARBON_RESEND_WINDOW: Duration = Duration::from_secs(5);
const CARBON_RESEND_BYTES: usize = 16 << 20;

/// Carbon never acknowledges: bytes written just before carbon-cache died sit unread in its socket
/// buffer and are lost with it, although the write succeeded. So what was written in the last
/// [`CARBON_RESEND_WINDOW`] (at most [`CARBON_RESEND_BYTES`]) is kept, and when the connection is
/// found broken it is written again first on the next one. Carbon keeps one value per metric and
/// timestamp, so the points it did read are overwritten with the same values.
pub struct CarbonTransport {
    address: String,
    connect_timeout: Duration,
    timeout: Duration,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    host: HostTags,
    relay_prefix: bool,
    /// What was written on the current connection lately, with when.
    recent: std::collections::VecDeque<(std::time::Instant, Vec<u8>)>,
    recent_bytes: usize,
    /// What to write again first on the next connection.
    resend: Vec<u8>,
}

impl CarbonTransport {
    fn new(tsdb: &Tsdb, host: HostTags) -> CarbonTransport {
        CarbonTransport::to_address(&tsdb.address, tsdb, host)
    }

    /// One carbon-cache of a ring (`address` is its `host:port`), with `tsdb`'s other settings.
    pub fn to_address(address: &str, tsdb: &Tsdb, host: HostTags) -> CarbonTransport {
        CarbonTransport {
            address: address.to_string(),
            connect_timeout: tsdb.connect_timeout,
            timeout: tsdb.timeout,
            stream: None,
            buf: Vec::new(),
            host,
            relay_prefix: tsdb.routing.relay_prefix,
            recent: Default::default(),
            recent_bytes: 0,
            resend: Vec::new(),
        }
    }

    /// The connection broke: what was written on it lately is to be written again.
    fn broken(&mut self) {
        self.stream = None;
        for (_, bytes) in self.recent.drain(..) {
            self.resend.extend_from_slice(&bytes);
        }
        self.recent_bytes = 0;
        if self.resend.len() > CARBON_RESEND_BYTES {
            // Whole messages only: a resend cut in the middle of a pickle would be garbage.
            self.resend.clear();
        }
    }

    fn remember(&mut self) {
        let now = std::time::Instant::now();
        self.recent.push_back((now, self.buf.clone()));
        self.recent_bytes += self.buf.len();
        while let Some((at, bytes)) = self.recent.front() {
            if now.duration_since(*at) <= CARBON_RESEND_WINDOW && self.recent_bytes <= CARBON_RESEND_BYTES {
                break;
            }
            self.recent_bytes -= bytes.len();
            self.recent.pop_front();
        }
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing");
        for addr in self.address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(s) => {
                    s.set_write_timeout(Some(self.timeout))?;
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Carbon never answers on the pickle port; a peer that closed shows up as a readable EOF.
    /// A socket that cannot be switched to non-blocking and back counts as closed: probing it
    /// blocking would wait for ever, and leaving it non-blocking would cut writes short.
    fn peer_closed(stream: &TcpStream) -> bool {
        if stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut probe = [0u8; 1];
        let closed = match (&*stream).read(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::Interrupted,
        };
        stream.set_nonblocking(false).is_err() || closed
    }
}

impl Transport for CarbonTransport {
    fn send(&mut self, points: &[Point], tagging: HostTagging) -> Result<(), SendError> {
        self.buf.clear();
        backends::carbon::encode_paths(points, self.host.for_points(tagging), self.relay_prefix, &mut self.buf);
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.stream.as_ref().is_some_and(Self::peer_closed) {
            self.broken();
        }
        if self.stream.is_none() {
            let stream = self.connect().map_err(|e| {
                SendError::Retryable(ErrorKind::Unreachable, format!("Carbon at {}: cannot connect: {e}", self.address))
            })?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(SendError::Retryable(ErrorKind::Unreachable, "no connection".into()));
        };
        let written = if self.resend.is_empty() {
            stream.write_all(&self.buf)
        } else {
            stream.write_all(&self.resend).and_then(|()| stream.write_all(&self.buf))
        };
        if let Err(e) = written {
            self.broken();
            return Err(SendError::Retryable(
                ErrorKind::Unreachable,
                format!("Carbon at {}: write failed: {e}", self.address),
            ));
        }
        if !self.resend.is_empty() {
            log::info!(
                "Carbon at {}: wrote again the {} bytes sent just before the connection broke",
                self.address,
                self.resend.len()
            );
            self.resend.clear();
        }
        self.remember();
        Ok(())
    }

    fn describe(&self) -> String {
        format!("Carbon at {}", self.address)
    }

    fn describe_backend(&self) -> String {
        "Carbon".into()
    }
}

pub struct FileTransport {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
    host: HostTags,
}

impl Transport for FileTransport {
    fn send(&mut self, points: &[Point], tagging: HostTagging) -> Result<(), SendError> {
        self.buf.clear();
        backends::influxdb::encode(points, self.host.for_points(tagging), &mut self.buf);
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    SendError::Retryable(ErrorKind::Io, format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            let file = OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| {
                SendError::Retryable(ErrorKind::Io, format!("cannot open {}: {e}", self.path.display()))
            })?;
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else { return Err(SendError::Retryable(ErrorKind::Io, "no file".into())) };
        if let Err(e) = file.write_all(&self.buf) {
            self.file = None;
            return Err(SendError::Retryable(ErrorKind::Io, format!("cannot write {}: {e}", self.path.display())));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn describe_backend(&self) -> String {
        "File".into()
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64_encode(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_header_is_standard_base64() {
        assert_eq!(base64_encode(b"admin:secret"), "YWRtaW46c2VjcmV0");
    }

    // Regression: a ca_file that could not be read became an empty trust store (unwrap_or_default),
    // and every https:// send then failed with a certificate error that did not name the file.
    #[test]
    fn unreadable_ca_file_is_an_error_naming_the_key_and_the_os_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing-ca.pem");
        let e = read_ca_file(&missing).expect_err("a missing file").to_string();
        assert!(e.starts_with("[TSDB] ca_file: cannot read "), "{e}");
        assert!(e.contains("missing-ca.pem") && e.contains("No such file or directory"), "{e}");
    }

    #[test]
    fn ca_file_without_certificate_is_an_error_not_an_empty_trust_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = read_ca_file(&empty).expect_err("no certificate").to_string();
        assert!(e.starts_with("[TSDB] ca_file: ") && e.contains("holds no certificate"), "{e}");
    }

    fn https_tsdb(ca_file: PathBuf) -> Tsdb {
        Tsdb {
            name: String::new(),
            backend: Backend::InfluxDb,
            address: "https://127.0.0.1:1".into(),
            datapoints: "/write".into(),
            auth: false,
            user: None,
            pass: None,
            database: Some("puypuy".into()),
            path: None,
            gzip: false,
            ca_file: Some(ca_file),
            insecure: false,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            organization: None,
            bucket: None,
            token: None,
            client_cert: None,
            tls: true,
            web: Default::default(),
            routing: Default::default(),
        }
    }

    #[test]
    fn transport_with_an_unreadable_ca_file_is_refused_or_fails_every_send_saying_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tsdb = https_tsdb(dir.path().join("gone.pem"));
        let e = try_from_config(&tsdb, 100, HostTags::empty()).err().expect("refused").to_string();
        assert!(e.starts_with("[TSDB] ca_file: cannot read "), "{e}");
        let mut t = from_config(&tsdb, 100, HostTags::empty());
        match t.send(&[Point::int("a", 1, 1, "t")], HostTagging::ThisHost) {
            Err(SendError::Retryable(ErrorKind::Io, m)) => assert!(m.contains("[TSDB] ca_file: cannot read "), "{m}"),
            other => panic!("expected a retryable io error, got {other:?}"),
        }
        assert!(t.describe().contains("[TSDB] ca_file"));
    }

    #[test]
    fn database_names_are_percent_encoded() {
        assert_eq!(percent_encode("my db&x"), "my%20db%26x");
    }
}
