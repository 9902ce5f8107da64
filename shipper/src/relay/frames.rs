//! The relay's frames input (`frames_listen`): other PuyPuy agents send the frame protocol of
//! `common/src/frame.rs` over TCP+TLS, and each frame is acknowledged only once its points are
//! delivered to this relay's destinations or fsynced in its spool, as on the local Unix socket.
//! The agent keeps every frame until then, so a relay killed with -9 loses nothing.
//!
//! A connection opens with the TLS handshake (a client certificate signed by `client_ca` when it
//! is set), then one hello in each direction, length-prefixed as frames are (4-byte big-endian
//! length, then the payload):
//! ```text
//! agent → relay   00 00 00 0a  "TOKEN tok1"        (the bytes "TOKEN " and the token)
//! relay → agent   00 00 00 02  "OK"                or "REFUSED wrong token", then the relay closes
//! ```
//! With `frames_tls = False` (the agent's `tls = False`) there is no handshake: the same hello and
//! frames travel in plain TCP, for loopback or a trusted network. Each side refuses the other kind:
//! a TLS port reads a plain hello as a failed handshake, a plain port a TLS hello as no hello.
//! After "OK" the connection is a frame connection: the TLS side is copied into one end of a
//! socket pair whose other end goes through the Unix socket's reader and ack writer
//! ([`crate::receive::handle_as`]), so the two paths cannot drift apart. Its points carry the
//! agent's host tags ([`HostTagging::Carried`]): this relay adds none of its own.
//!
//! A peer outside `frames_allow`/`allow`, a failed handshake (plain text, no or a wrong client
//! certificate) and a wrong token are refused at once, logged with the reason (never the token) and
//! counted in `puypuy_relay_refused{input=frames}`; nothing they send is read as a frame.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use puypuy_common::config::relay::Door;

use super::inputs::InputStats;
use crate::batch::Input;
use crate::tags::HostTagging;

/// The longest hello accepted (a token is far shorter).
pub const MAX_HELLO: usize = 4096;
const TOKEN_PREFIX: &[u8] = b"TOKEN ";

/// The agent's hello for `token`.
pub fn hello(token: &str, out: &mut Vec<u8>) {
    let len = (TOKEN_PREFIX.len() + token.len()) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(TOKEN_PREFIX);
    out.extend_from_slice(token.as_bytes());
}

/// The token in a hello payload, if it is one.
pub fn parse_hello(payload: &[u8]) -> Option<&str> {
    std::str::from_utf8(payload.strip_prefix(TOKEN_PREFIX)?).ok()
}

/// The relay's answer: `OK`, or `REFUSED reason`.
pub fn answer(refusal: Option<&str>, out: &mut Vec<u8>) {
    let text = refusal.map_or_else(|| "OK".to_string(), |why| format!("REFUSED {why}"));
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Reads one length-prefixed message of at most [`MAX_HELLO`] bytes.
pub fn read_message(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HELLO {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("hello of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

/// Whether `token` is one of `tokens` (see [`super::auth::same_secret`]).
fn token_matches(tokens: &[String], token: &str) -> bool {
    tokens.iter().fold(false, |found, t| found | super::auth::same_secret(t.as_bytes(), token.as_bytes()))
}

pub(crate) struct FramesDoor {
    pub allow: Door,
    /// `None` with `frames_tls = False`: plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tokens: Vec<String>,
    pub idle: Duration,
}

pub(crate) fn start(
    addr: SocketAddr,
    door: FramesDoor,
    tx: Sender<Input>,
    stats: Arc<InputStats>,
) -> Result<(), String> {
    let listener = super::inputs::tcp_listener(addr)
        .map_err(|e| format!("[Relay] frames_listen: cannot listen on {addr}: {e}"))?;
    let door = Arc::new(door);
    thread::Builder::new()
        .name("relay-frames".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                if !stats.admits(&door.allow, &stream) {
                    continue;
                }
                let (door, tx, stats) = (Arc::clone(&door), tx.clone(), Arc::clone(&stats));
                let spawned = thread::Builder::new().name("frames-conn".into()).spawn(move || {
                    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
                    serve(stream, &peer, &door, tx, &stats);
                });
                if spawned.is_err() {
                    log::error!("frames input: cannot start a connection thread");
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn serve(stream: TcpStream, peer: &str, door: &FramesDoor, tx: Sender<Input>, stats: &InputStats) {
    let _ = stream.set_read_timeout(Some(crate::tls::HANDSHAKE_TIMEOUT));
    let Some(config) = &door.tls else {
        // `frames_tls = False`: the same hello and frames, in the clear.
        if let Some(inner) = admit(&mut &stream, peer, door, tx, stats) {
            let _ = stream.set_read_timeout(None);
            pump_plain(stream, inner, door.idle);
        }
        return;
    };
    let mut tls = match crate::tls::accept(config, stream, crate::tls::HANDSHAKE_TIMEOUT) {
        Ok(t) => t,
        Err(why) => return stats.refuse(peer, &why),
    };
    let _ = tls.sock.set_read_timeout(Some(crate::tls::HANDSHAKE_TIMEOUT));
    let admitted = admit(&mut tls, peer, door, tx, stats);
    let Some(inner) = admitted else {
        tls.conn.send_close_notify();
        let _ = tls.conn.write_tls(&mut tls.sock);
        return;
    };
    let _ = tls.sock.set_read_timeout(None);
    crate::tls::pump(tls, inner, door.idle);
}

/// Reads the hello from `conn` and answers it. An agent let in gets a reader of its frames, and the
/// end of the socket pair to copy its bytes into; a refusal is counted and logged.
fn admit(
    conn: &mut (impl Read + Write),
    peer: &str,
    door: &FramesDoor,
    tx: Sender<Input>,
    stats: &InputStats,
) -> Option<UnixStream> {
    let refusal = match read_message(conn) {
        Err(e) => Some(format!("no hello: {e}")),
        Ok(payload) => match parse_hello(&payload) {
            None => Some("the first message is not a token hello".to_string()),
            Some(token) if token_matches(&door.tokens, token) => None,
            Some(_) => Some("wrong token".to_string()),
        },
    };
    let mut reply = Vec::new();
    answer(refusal.as_deref(), &mut reply);
    let _ = conn.write_all(&reply).and_then(|()| conn.flush());
    if let Some(why) = refusal {
        stats.refuse(peer, &why);
        return None;
    }
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let (ours, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            log::error!("frames input: cannot make a socket pair for {peer}: {e}");
            return None;
        }
    };
    let who = format!("agent {peer}");
    let reader = thread::Builder::new()
        .name("frames-read".into())
        .spawn(move || crate::receive::handle_as(ours, tx, who, HostTagging::Carried));
    if reader.is_err() {
        log::error!("frames input: cannot start a reader for {peer}");
        return None;
    }
    Some(theirs)
}

/// Copies a plain agent connection to and from the frame reader until either side ends or the
/// agent is silent for `idle` (as [`crate::tls::pump`] does for a TLS one).
fn pump_plain(tcp: TcpStream, inner: UnixStream, idle: Duration) {
    let _ = tcp.set_read_timeout(Some(idle));
    let (Ok(mut to_agent), Ok(mut acks)) = (tcp.try_clone(), inner.try_clone()) else { return };
    let back = thread::Builder::new().name("frames-acks".into()).spawn(move || {
        let _ = std::io::copy(&mut acks, &mut to_agent);
        let _ = to_agent.shutdown(std::net::Shutdown::Both);
    });
    let _ = std::io::copy(&mut &tcp, &mut &inner);
    let _ = inner.shutdown(std::net::Shutdown::Both);
    let _ = tcp.shutdown(std::net::Shutdown::Both);
    if let Ok(back) = back {
        let _ = back.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_answers_are_length_prefixed() {
        let mut out = Vec::new();
        hello("tok1", &mut out);
        assert_eq!(out, b"\x00\x00\x00\x0aTOKEN tok1");
        assert_eq!(read_message(&mut &out[..]).ok().as_deref().and_then(parse_hello), Some("tok1"));
        let mut ok = Vec::new();
        answer(None, &mut ok);
        assert_eq!(ok, b"\x00\x00\x00\x02OK");
        let mut refused = Vec::new();
        answer(Some("wrong token"), &mut refused);
        assert_eq!(refused, b"\x00\x00\x00\x13REFUSED wrong token");
        assert_eq!(parse_hello(b"HELLO x"), None);
        assert!(read_message(&mut &b"\x00\x01\x00\x00"[..]).is_err());
    }

    #[test]
    fn tokens_match_whole() {
        let tokens = vec!["abc".to_string(), "rotated".to_string()];
        assert!(token_matches(&tokens, "abc") && token_matches(&tokens, "rotated"));
        assert!(!token_matches(&tokens, "ab") && !token_matches(&tokens, "abcd") && !token_matches(&tokens, ""));
        // The token repeated, as the comparison reads a shorter one round and round.
        assert!(!token_matches(&tokens, "abcabc") && !token_matches(&tokens, "xbc") && !token_matches(&tokens, "abC"));
        assert!(!token_matches(&[String::new()], "a") && !token_matches(&[], "abc"));
    }
}
