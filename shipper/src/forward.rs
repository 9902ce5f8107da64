//! `tsdtype: PuyPuy`: the transport that forwards batches to a relay shipper's `frames_listen`
//! over TLS and counts a batch sent only once the relay acknowledged it (delivered to the relay's
//! destinations or fsynced in its spool). Until then the batch stays with this shipper: a send
//! that fails or is not acknowledged is retryable, so the delivery loop keeps the points (memory,
//! then spool) and sends them again on a new connection. A relay that dropped a frame (its queue
//! full) is retried the same way; a frame the relay's backend refused is set aside as any refusal.
//!
//! TLS is on unless `tls = False`: the server certificate is checked against `ca_file` (else the
//! built-in web roots), or not at all with `insecure` (logged at start); `cert_file`/`key_file`
//! present a client certificate for a relay with `client_ca`. With `tls = False` the connection is
//! plain TCP, for a relay whose `frames_listen` has `frames_tls = False` (a TLS one refuses it). The
//! connection opens with the hello of `relay/frames.rs` carrying `token`, which never appears in a
//! log line.

use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use puypuy_common::config::Tsdb;
use puypuy_common::frame::{self, Ack, ACK_DELIVERED, ACK_REJECTED};
use puypuy_common::Point;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::backends::puypuy;
use crate::relay::frames;
use crate::tags::{HostTagging, HostTags};
use crate::transport::{ErrorKind, SendError, Transport};

/// How long past `timeout_seconds` an ack may take: the relay answers once its own delivery or
/// spooling is done, which includes its backend's timeout.
const ACK_GRACE: Duration = Duration::from_secs(60);

/// A connection to the relay: TLS, or plain TCP with `tls = False`.
trait Connection: Read + Write + Send {}

impl<T: Read + Write + Send> Connection for T {}

type Conn = Box<dyn Connection>;

pub struct ForwardTransport {
    address: String,
    /// The TLS settings; `None` with `tls = False`.
    config: Option<Result<Arc<ClientConfig>, String>>,
    token: String,
    sender: String,
    host: HostTags,
    connect_timeout: Duration,
    ack_timeout: Duration,
    max_points: usize,
    conn: Option<Conn>,
    seq: u64,
    buf: Vec<u8>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS client settings of `tsdb`; the error names the key to fix.
pub fn client_config(tsdb: &Tsdb) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if tsdb.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tsdb.ca_file {
            Some(path) => {
                for cert in crate::tls::read_certificates(path).map_err(|e| format!("ca_file: {e}"))? {
                    roots.add(cert).map_err(|e| format!("ca_file: {}: {e}", path.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    let config = match &tsdb.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cert_file: {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("key_file: {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("cert_file: {}: {e}", cert.display()))?
        }
    };
    Ok(Arc::new(config))
}

impl ForwardTransport {
    /// The transport to `address` (`host:port`, one of `tsdb`'s addresses).
    pub fn new(tsdb: &Tsdb, max_points: usize, host: HostTags) -> ForwardTransport {
        if tsdb.insecure && tsdb.tls {
            log::warn!("[TSDB] insecure: certificate verification is OFF for the relay at {}", tsdb.address);
        }
        let sender = host.pairs().iter().find(|(k, _)| k == "host").map_or("puypuy", |(_, v)| v.as_str()).to_string();
        ForwardTransport {
            address: tsdb.address.clone(),
            config: tsdb.tls.then(|| client_config(tsdb)),
            token: tsdb.token.clone().unwrap_or_default(),
            sender,
            host,
            connect_timeout: tsdb.connect_timeout,
            ack_timeout: tsdb.timeout + ACK_GRACE,
            max_points: max_points.max(1),
            conn: None,
            seq: 0,
            buf: Vec::new(),
        }
    }

    fn retryable(&self, e: &std::io::Error) -> SendError {
        let kind = match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Unreachable,
        };
        SendError::Retryable(kind, format!("PuyPuy relay at {}: {e}", self.address))
    }

    /// The TLS settings and the server name to check, or `None` for plain TCP.
    fn tls_setup(&self) -> Result<Option<(Arc<ClientConfig>, ServerName<'static>)>, SendError> {
        let Some(config) = &self.config else { return Ok(None) };
        let config = config
            .as_ref()
            .map_err(|e| SendError::Retryable(ErrorKind::Io, format!("PuyPuy relay at {}: {e}", self.address)))?;
        let host = puypuy_common::config::tsdb::host_of(&self.address);
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            SendError::Retryable(
                ErrorKind::Io,
                format!("PuyPuy relay at {}: {host:?} is not a server name: {e}", self.address),
            )
        })?;
        Ok(Some((Arc::clone(config), name)))
    }

    fn connect(&self) -> Result<Conn, SendError> {
        let tls = self.tls_setup()?;
        let addrs: Vec<_> = self.address.to_socket_addrs().map_err(|e| self.retryable(&e))?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "resolves to nothing");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.connect_timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| self.retryable(&last))?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(self.connect_timeout)).map_err(|e| self.retryable(&e))?;
        tcp.set_write_timeout(Some(self.ack_timeout)).map_err(|e| self.retryable(&e))?;
        // The same socket, to set the acks' timeout once the stream is wrapped.
        let socket = tcp.try_clone().map_err(|e| self.retryable(&e))?;
        let mut conn: Conn = match tls {
            None => Box::new(tcp),
            Some((config, name)) => {
                let conn = ClientConnection::new(config, name).map_err(|e| {
                    SendError::Retryable(ErrorKind::Io, format!("PuyPuy relay at {}: {e}", self.address))
                })?;
                let mut tls = StreamOwned::new(conn, tcp);
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock).map_err(|e| {
                        // A plain frames_listen answers the TLS hello with a plain refusal.
                        let hint = if e.to_string().contains("InvalidContentType") {
                            " (a relay with frames_tls = False answers so: set tls = False here)"
                        } else {
                            ""
                        };
                        self.retryable(&std::io::Error::new(e.kind(), format!("{e}{hint}")))
                    })?;
                }
                Box::new(tls)
            }
        };
        let mut hello = Vec::new();
        frames::hello(&self.token, &mut hello);
        conn.write_all(&hello).and_then(|()| conn.flush()).map_err(|e| self.retryable(&e))?;
        let answer = frames::read_message(&mut conn).map_err(|e| {
            // A TLS frames_listen closes a plain client without a word.
            let hint = if self.config.is_none() {
                " (closed at the hello: a relay whose frames_listen speaks TLS does so to tls = False)"
            } else {
                ""
            };
            self.retryable(&std::io::Error::new(e.kind(), format!("{e}{hint}")))
        })?;
        if answer != b"OK" {
            // An operator fixes a refused token or certificate; the points wait meanwhile.
            return Err(SendError::Retryable(
                ErrorKind::Status,
                format!("PuyPuy relay at {} refused this agent: {}", self.address, String::from_utf8_lossy(&answer)),
            ));
        }
        socket.set_read_timeout(Some(self.ack_timeout)).map_err(|e| self.retryable(&e))?;
        let plain = if self.config.is_none() { " (plain TCP: tls = False)" } else { "" };
        log::info!("connected to the PuyPuy relay at {}{plain}", self.address);
        Ok(conn)
    }

    /// Writes the frame in `buf` and waits for its ack.
    fn exchange(conn: &mut Conn, bytes: &[u8], seq: u64) -> std::io::Result<Ack> {
        conn.write_all(bytes)?;
        conn.flush()?;
        let mut reader = BufReader::with_capacity(64, conn);
        let mut payload = Vec::new();
        loop {
            match frame::read_payload(&mut reader, &mut payload) {
                Ok(true) => {}
                Ok(false) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Err(frame::FrameError::Io(e)) => return Err(e),
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
            }
            let ack = Ack::decode(&payload)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            // An ack of an earlier frame (from before a timeout) is skipped.
            if ack.seq == seq {
                return Ok(ack);
            }
        }
    }
}

impl Transport for ForwardTransport {
    fn send(&mut self, points: &[Point], tagging: HostTagging) -> Result<(), SendError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        self.seq += 1;
        let seq = self.seq;
        self.buf.clear();
        puypuy::encode(points, self.host.for_points(tagging), &self.sender, seq, &mut self.buf);
        let Some(conn) = self.conn.as_mut() else {
            return Err(SendError::Retryable(ErrorKind::Unreachable, "no connection".into()));
        };
        match Self::exchange(conn, &self.buf, seq) {
            Ok(ack) => match ack.status {
                ACK_DELIVERED => Ok(()),
                ACK_REJECTED => Err(SendError::Rejected(format!(
                    "PuyPuy relay at {}: its destination refused points of this batch",
                    self.address
                ))),
                _ => Err(SendError::Retryable(
                    ErrorKind::Status,
                    format!("PuyPuy relay at {} dropped the frame (its queue is full)", self.address),
                )),
            },
            Err(e) => {
                self.conn = None;
                Err(self.retryable(&e))
            }
        }
    }

    fn max_points_per_request(&self) -> usize {
        self.max_points
    }

    fn describe(&self) -> String {
        format!("PuyPuy relay at {}", self.address)
    }

    fn describe_backend(&self) -> String {
        "PuyPuy".into()
    }
}

/// `insecure`: every server certificate accepted (signatures still checked, so the handshake is
/// sound; only who is at the other end is not).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
