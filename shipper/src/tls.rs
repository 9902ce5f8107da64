//! TLS for the shipper's network inputs, with rustls (the version ureq already brings, so there is
//! one TLS library in the tree): the server configuration from `tls_cert`/`tls_key` (and a
//! `client_ca` that clients must then be signed by), the handshake done as soon as a connection is
//! accepted, so a plain-text client, a client with no certificate or one that fails verification
//! is refused there with a reason, and a front that puts TLS before the HTTP input.
//!
//! The HTTP input is tiny_http, which speaks plain HTTP only (its own TLS feature would bring a
//! second, older rustls). With TLS, tiny_http serves a port of its own on 127.0.0.1 and [`front`]
//! accepts the TCP connections, checks the peer, completes the handshake and copies bytes both ways
//! between the client and a connection to that port, whose local address it records with the
//! client's in [`FrontPeers`]. tiny_http sees only 127.0.0.1 and that local port: the HTTP input
//! looks the client up there (to log and check its real address) and refuses any connection the
//! front did not make (another local process reaching the inner port directly, skipping TLS).
//! (It was a Unix socket in a private folder, which hid every client's address from the logs, as
//! tiny_http gives no peer for one, and was left behind at exit.)

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// How long a client has to complete the handshake once connected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS stream over TCP, as the inputs read and write it.
pub type TlsStream = StreamOwned<ServerConnection, TcpStream>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (a chain, or a bundle of CAs).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)", path.display()));
    }
    Ok(certs)
}

/// The server side: `cert` (chain, PEM), `key` (PEM, PKCS#8, PKCS#1 or SEC1), and when `client_ca`
/// is given, clients must present a certificate it signed.
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Arc<ServerConfig>, String> {
    let chain = read_certificates(cert)?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: no usable private key: {e}", key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certificates(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: does not go with its key: {e}", cert.display()))?;
    Ok(Arc::new(config))
}

/// Completes the handshake on a freshly accepted connection, waiting at most `timeout` for the
/// client; the socket's own read timeout is put back afterwards. The error says why the client was
/// refused, for the log.
pub fn accept(config: &Arc<ServerConfig>, mut tcp: TcpStream, timeout: Duration) -> Result<TlsStream, String> {
    let mut conn = ServerConnection::new(Arc::clone(config)).map_err(|e| format!("TLS setup: {e}"))?;
    let before = tcp.read_timeout().map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) => return Err("closed the connection during the TLS handshake".into()),
            Ok(_) => {}
            Err(e) => return Err(refusal(&e)),
        }
    }
    tcp.set_read_timeout(before).map_err(|e| e.to_string())?;
    Ok(StreamOwned::new(conn, tcp))
}

/// The reason logged for a failed handshake, in the operator's words.
fn refusal(e: &std::io::Error) -> String {
    let text = e.to_string();
    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
        format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")
    } else if text.contains("InvalidContentType") || text.contains("corrupt message") {
        format!("not a TLS client (plain text on a TLS port?): {text}")
    } else if text.contains("NoCertificatesPresented") || text.contains("no certificates") {
        format!("presented no client certificate (client_ca requires one): {text}")
    } else {
        format!("TLS handshake failed: {text}")
    }
}

/// Copies bytes both ways between a TLS client and the plain server behind it until either side
/// closes or the client is silent for `idle`. One thread per connection, no blocking read: each
/// side is read only when `poll` says it is readable.
pub fn pump(mut tls: TlsStream, mut inner: impl Read + Write + AsFd, idle: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = vec![0u8; 64 * 1024];
    let timeout = PollTimeout::try_from(idle).unwrap_or(PollTimeout::MAX);
    // What the client sent with its last handshake message (TLS 1.3 clients send their request
    // right behind it) is already decrypted inside rustls: the socket will not say so.
    if !forward_plaintext(&mut tls, &mut inner, &mut buf) {
        return;
    }
    loop {
        let (client, server) = {
            let mut fds =
                [PollFd::new(tls.sock.as_fd(), PollFlags::POLLIN), PollFd::new(inner.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => return,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if client {
            match tls.conn.read_tls(&mut tls.sock) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if tls.conn.process_new_packets().is_err() {
                let _ = tls.conn.write_tls(&mut tls.sock);
                return;
            }
            if !forward_plaintext(&mut tls, &mut inner, &mut buf) {
                return;
            }
        }
        if server {
            match inner.read(&mut buf) {
                Ok(0) | Err(_) => {
                    tls.conn.send_close_notify();
                    let _ = tls.conn.write_tls(&mut tls.sock);
                    return;
                }
                Ok(n) => {
                    if tls.conn.writer().write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        while tls.conn.wants_write() {
            if tls.conn.write_tls(&mut tls.sock).is_err() {
                return;
            }
        }
    }
}

/// Writes to `inner` what rustls holds decrypted; `false` once the client closed or `inner` failed.
fn forward_plaintext(tls: &mut TlsStream, inner: &mut impl Write, buf: &mut [u8]) -> bool {
    loop {
        match tls.conn.reader().read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if inner.write_all(&buf[..n]).is_err() {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// Decides on a peer before its handshake (and counts it when refused).
pub type Admit = dyn Fn(&TcpStream) -> bool + Send + Sync;

/// Told the peer and the reason of a failed handshake.
pub type Refused = dyn Fn(&str, &str) + Send + Sync;

/// The clients of the TLS front, by the local address of the front's connection to the plain
/// server behind it (all the server sees), for as long as that connection is open.
#[derive(Clone, Default)]
pub struct FrontPeers(Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>);

impl FrontPeers {
    /// The client whose requests come from the front's connection at `inner` (the peer address the
    /// server was given); `None` for a connection the front did not make.
    pub fn client_of(&self, inner: &SocketAddr) -> Option<SocketAddr> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(inner).copied()
    }

    fn set(&self, inner: SocketAddr, client: Option<SocketAddr>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match client {
            Some(c) => map.insert(inner, c),
            None => map.remove(&inner),
        };
    }
}

/// How long the server behind the front may take to answer what a client sent before it closed
/// (the HTTP input answers once the points are delivered or spooled).
const FRONT_DRAIN: Duration = Duration::from_secs(60);

/// Accepts TLS clients on `listener` for the plain server at `backend` (on 127.0.0.1), recording
/// each in `peers`. `admit` decides on the peer before the handshake and `refused` is told why a
/// client was turned away.
pub fn front(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    backend: SocketAddr,
    peers: FrontPeers,
    idle: Duration,
    admit: Arc<Admit>,
    refused: Arc<Refused>,
) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        if !admit(&stream) {
            continue;
        }
        let (config, peers, refused) = (Arc::clone(&config), peers.clone(), Arc::clone(&refused));
        let spawned = thread::Builder::new().name("tls-front".into()).spawn(move || {
            let client = stream.peer_addr().ok();
            let shown = client.map_or_else(|| "?".to_string(), |a| a.to_string());
            let tls = match accept(&config, stream, HANDSHAKE_TIMEOUT) {
                Ok(t) => t,
                Err(why) => return refused(&shown, &why),
            };
            let inner = match TcpStream::connect(backend) {
                Ok(inner) => inner,
                Err(e) => return log::error!("TLS front: cannot reach {backend}: {e}"),
            };
            let Ok(local) = inner.local_addr() else { return };
            // Recorded before the first byte goes through, so the server always finds it.
            peers.set(local, client);
            pump(tls, &inner, idle);
            // What the client sent before it closed is still answered (into the void) before the
            // record goes: the server must not take it for a connection the front did not make.
            let _ = inner.shutdown(std::net::Shutdown::Write);
            let _ = inner.set_read_timeout(Some(FRONT_DRAIN));
            let _ = std::io::copy(&mut &inner, &mut std::io::sink());
            peers.set(local, None);
        });
        if spawned.is_err() {
            log::error!("TLS front: cannot start a connection thread");
        }
    }
}
