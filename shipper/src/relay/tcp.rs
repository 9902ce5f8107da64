//! The relay's TCP inputs: OpenTSDB telnet and Graphite plaintext.
//!
//! The telnet input answers as OpenTSDB's does: nothing for a good line, `put: illegal argument:
//! WHY` for a bad one, the version for `version`, and it closes the connection on `exit`. The
//! Graphite input answers nothing, as carbon.
//!
//! Each connection has its own thread, a read timeout (`idle_timeout_seconds`), and lines are cut
//! at `max_line_bytes`; a slow or silent client holds only its own thread. Beyond
//! `max_connections` open connections per input, new ones are closed at once. Points of one read
//! go to the pipeline together; when it is behind, reading waits (TCP backpressure) rather than
//! dropping.
//!
//! Each input has a door ([`TcpDoor`]): a peer outside its `allow` list is closed before anything
//! is read, and with TLS the handshake is completed first, so a plain-text client or one that
//! fails the handshake is refused (logged, counted in `refused`) with none of its lines read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use puypuy_common::config::relay::Door;
use puypuy_common::config::RelayConfig;

use super::inputs::{handle_line, InputStats, LineParser};
use crate::batch::Input;

/// Who may connect to a TCP input, and its TLS configuration when it speaks TLS.
#[derive(Clone)]
pub(crate) struct TcpDoor {
    pub allow: Door,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A connection through the door: plain, or TLS once the handshake is done.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<crate::tls::TlsStream>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl TcpDoor {
    /// The connection, once through: the handshake (with TLS) is done on the calling thread, so
    /// call it on the connection's own. `None` when refused (counted and logged).
    pub(crate) fn open(&self, stream: TcpStream, stats: &InputStats) -> Option<(Conn, String)> {
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        match &self.tls {
            None => Some((Conn::Plain(stream), peer)),
            Some(config) => match crate::tls::accept(config, stream, crate::tls::HANDSHAKE_TIMEOUT) {
                Ok(tls) => Some((Conn::Tls(Box::new(tls)), peer)),
                Err(why) => {
                    stats.refuse(&peer, &why);
                    None
                }
            },
        }
    }
}

pub(crate) fn start(
    addr: SocketAddr,
    config: &RelayConfig,
    door: TcpDoor,
    tx: Sender<Input>,
    stats: Arc<InputStats>,
    parse: LineParser,
    telnet: bool,
) -> Result<(), String> {
    let listener = super::inputs::tcp_listener(addr).map_err(|e| format!("[Relay] cannot listen on {addr}: {e}"))?;
    let (max_line, max_conns, idle) = (config.max_line_bytes, config.max_connections, config.idle_timeout);
    thread::Builder::new()
        .name(format!("relay-{}", stats.name))
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                if !stats.admits(&door.allow, &stream) {
                    continue;
                }
                if stats.open.load(Ordering::Relaxed) >= max_conns {
                    stats.reject("-", "", &format!("over max_connections ({max_conns}); connection closed"));
                    continue;
                }
                stats.connections.fetch_add(1, Ordering::Relaxed);
                stats.open.fetch_add(1, Ordering::Relaxed);
                let (tx, stats, door) = (tx.clone(), Arc::clone(&stats), door.clone());
                let spawned = thread::Builder::new().name("relay-conn".into()).spawn(move || {
                    let _ = stream.set_read_timeout(Some(idle));
                    if let Some((mut conn, peer)) = door.open(stream, &stats) {
                        serve_lines(&mut conn, &peer, &tx, &stats, parse, max_line, idle, telnet);
                        // The slot is free before the client sees the connection close.
                        stats.open.fetch_sub(1, Ordering::Relaxed);
                        drop(conn);
                    } else {
                        stats.open.fetch_sub(1, Ordering::Relaxed);
                    }
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

/// The telnet input's answer to a line that is a command rather than a `put`, if it is one.
fn telnet_command(line: Result<&[u8], usize>) -> Option<&'static str> {
    match line.ok().map(|l| l.trim_ascii()) {
        Some(b"version") => Some("version"),
        Some(b"exit") => Some("exit"),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn serve_lines(
    stream: &mut Conn,
    peer: &str,
    tx: &Sender<Input>,
    stats: &InputStats,
    parse: LineParser,
    max_line: usize,
    idle: Duration,
    telnet: bool,
) {
    let mut splitter = LineSplitter::new(max_line);
    let mut buf = vec![0u8; 64 * 1024];
    let mut exit = false;
    let mut answers = Vec::new();
    // The points of the last read: the next one's vector is made that large at once (grown by
    // doubling, a 64 KiB read of short lines moved its points eleven times).
    let mut last_points = 0;
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
        let mut points = Vec::with_capacity(last_points);
        let now = super::inputs::now();
        splitter.feed(&buf[..n], &mut |l| {
            if exit {
                return;
            }
            if telnet {
                match telnet_command(l) {
                    Some("version") => {
                        answers.extend_from_slice(
                            format!("puypuy-shipper {} (OpenTSDB telnet input)\n", env!("CARGO_PKG_VERSION"))
                                .as_bytes(),
                        );
                        return;
                    }
                    Some(_) => {
                        exit = true;
                        return;
                    }
                    None => {}
                }
            }
            if let Some(why) = handle_line(l, parse, stats, peer, &mut points, max_line, now) {
                if telnet {
                    answers.extend_from_slice(format!("put: illegal argument: {why}\n").as_bytes());
                }
            }
        });
        last_points = points.len();
        // The points of a read go on before the answers to it, so an answer follows its line's fate.
        if !points.is_empty() && tx.send(Input::Points { points, ack: None }).is_err() {
            return;
        }
        if !answers.is_empty() && stream.write_all(&std::mem::take(&mut answers)).is_err() {
            exit = true;
        }
        if exit {
            return;
        }
    }
    let mut points = Vec::new();
    let now = super::inputs::now();
    splitter.finish(&mut |l| {
        let _ = handle_line(l, parse, stats, peer, &mut points, max_line, now);
    });
    if !points.is_empty() {
        let _ = tx.send(Input::Points { points, ack: None });
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
}
