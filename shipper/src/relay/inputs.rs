//! The relay's inputs: starts the listeners `[Relay]` configures (TCP in [`super::tcp`], UDP in
//! [`super::udp`], HTTP in [`super::http`], StatsD in [`super::statsd_input`], other agents'
//! frames in [`super::frames`]), the counters of
//! each input for the self-metrics, and the handling of one text line that TCP and UDP share.
//!
//! A malformed line is counted and logged (at most every 10 s per input) and the connection goes
//! on. A peer outside the input's `allow` list, a client that fails the TLS handshake and an HTTP
//! request without valid credentials are refused at once, counted in `refused` and logged (each,
//! up to 20 lines per 10 s per input); nothing they sent is read.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use puypuy_common::config::relay::{Door, InputName};
use puypuy_common::config::RelayConfig;
use puypuy_common::Point;

use super::{frames, graphite, http, statsd_input, tcp, telnet, udp};
use crate::batch::Input;

/// Counters of one input, for the self-metrics.
pub struct InputStats {
    pub name: &'static str,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub connections: AtomicU64,
    /// Peers and requests turned away at the door: outside `allow`, failed TLS, no credentials.
    pub refused: AtomicU64,
    /// String fields of InfluxDB lines, skipped (PuyPuy carries numbers).
    pub strings_skipped: AtomicU64,
    pub(crate) open: AtomicUsize,
    last_log: Mutex<Option<Instant>>,
    refusal_log: Mutex<RefusalLog>,
    last_strings_log: Mutex<Option<Instant>>,
    /// The StatsD input's own counters (`None` for the other inputs).
    pub statsd: Option<StatsdStats>,
}

/// Refusals logged per input in a 10 s window at most.
pub const REFUSALS_LOGGED: u32 = 20;

/// What `refuse` logged in the current window.
#[derive(Default)]
struct RefusalLog {
    window: Option<Instant>,
    logged: u32,
    unlogged: u64,
}

/// Counters of the StatsD input beyond lines and connections.
#[derive(Default)]
pub struct StatsdStats {
    /// UDP datagrams received.
    pub packets: AtomicU64,
    /// Series held after the last flush.
    pub series: AtomicU64,
    /// Samples of new series refused because `statsd_max_series` series are held.
    pub dropped_max_series: AtomicU64,
    /// Timer samples and set members refused beyond `statsd_max_samples` in one flush.
    pub dropped_max_samples: AtomicU64,
}

impl InputStats {
    fn new(name: &'static str) -> Arc<InputStats> {
        Arc::new(InputStats {
            name,
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            refusal_log: Mutex::new(RefusalLog::default()),
            strings_skipped: AtomicU64::new(0),
            last_strings_log: Mutex::new(None),
            open: AtomicUsize::new(0),
            last_log: Mutex::new(None),
            statsd: None,
        })
    }

    fn new_statsd() -> Arc<InputStats> {
        let mut stats = InputStats::new("statsd");
        if let Some(s) = Arc::get_mut(&mut stats) {
            s.statsd = Some(StatsdStats::default());
        }
        stats
    }

    /// Counts a bad line; logs it unless this input logged one in the last 10 s.
    pub(crate) fn reject(&self, peer: &str, line: &str, why: &str) {
        let total = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            let shown: String = line.chars().take(200).collect();
            log::warn!("{} input: bad line from {peer}: {why}: {shown:?} ({total} rejected so far)", self.name);
            *last = Some(Instant::now());
        }
    }
}

impl InputStats {
    /// Counts a refused peer or request and logs why: every refusal, up to
    /// [`REFUSALS_LOGGED`] per 10 s per input (a scanner must not flood the log); the first line
    /// after a quiet spell says how many were not logged. `why` never holds what the client sent
    /// as credentials.
    pub(crate) fn refuse(&self, peer: &str, why: &str) {
        let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut log = self.refusal_log.lock().unwrap_or_else(|e| e.into_inner());
        if log.window.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            log.window = Some(Instant::now());
            log.logged = 0;
        }
        if log.logged >= REFUSALS_LOGGED {
            log.unlogged += 1;
            return;
        }
        log.logged += 1;
        let unlogged = std::mem::take(&mut log.unlogged);
        let note = if unlogged > 0 { format!("; {unlogged} earlier refusals not logged") } else { String::new() };
        log::warn!("{} input: refused {peer}: {why} ({total} refused so far{note})", self.name);
    }

    /// Whether the peer of `stream` may use an input behind `door`; counts and logs it if not.
    pub(crate) fn admits(&self, door: &Door, stream: &std::net::TcpStream) -> bool {
        match stream.peer_addr() {
            Ok(peer) if door.admits(peer.ip()) => true,
            Ok(peer) => {
                self.refuse(&peer.to_string(), "not in the input's allow list");
                false
            }
            Err(_) => false,
        }
    }
}

impl InputStats {
    /// Logs skipped string fields, at most every 10 minutes (a client that writes strings
    /// writes them all the time; the count is in the self-metrics).
    pub(crate) fn note_strings(&self, peer: &str, skipped: u64) {
        let mut last = self.last_strings_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
            log::info!(
                "{} input: {skipped} string fields from {peer} skipped (PuyPuy carries numbers; {} so far)",
                self.name,
                self.strings_skipped.load(Ordering::Relaxed)
            );
            *last = Some(Instant::now());
        }
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A pure parser of one line of a text protocol.
pub(crate) type LineParser = fn(&str, u64) -> Result<Point, String>;

fn telnet_line(line: &str, _now: u64) -> Result<Point, String> {
    telnet::parse_put(line)
}

/// The TLS configuration of an input behind `door`, if it speaks TLS.
pub(crate) fn tls_of(
    config: &RelayConfig,
    door: &Door,
    input: InputName,
) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    match (&config.tls, door.tls) {
        (Some(files), true) => crate::tls::server_config(&files.cert, &files.key, None)
            .map(Some)
            .map_err(|e| format!("[Relay] {}_tls: {e}", input.key())),
        _ => Ok(None),
    }
}

/// How an input's door reads in its start-up line.
fn door_note(door: &Door, tls: bool) -> String {
    let mut note = String::new();
    if tls {
        note.push_str(", TLS");
    }
    if !door.allow.is_empty() {
        note.push_str(&format!(", {} allowed networks", door.allow.len()));
    }
    note
}

/// Starts every configured input; returns their counters.
pub fn start(config: &RelayConfig, tx: &Sender<Input>) -> Result<Vec<Arc<InputStats>>, String> {
    let mut all = Vec::new();
    let doors = &config.doors;
    if let Some(addr) = config.opentsdb_listen {
        let stats = InputStats::new("opentsdb");
        let tls = tls_of(config, &doors.opentsdb, InputName::OpenTsdb)?;
        let note = door_note(&doors.opentsdb, tls.is_some());
        let door = tcp::TcpDoor { allow: doors.opentsdb.clone(), tls };
        tcp::start(addr, config, door, tx.clone(), Arc::clone(&stats), telnet_line, true)?;
        log::info!("relay: OpenTSDB telnet input on {addr}{note}");
        all.push(stats);
    }
    if let Some(addr) = config.graphite_listen {
        let stats = InputStats::new("graphite");
        let tls = tls_of(config, &doors.graphite, InputName::Graphite)?;
        let note = door_note(&doors.graphite, tls.is_some());
        let door = tcp::TcpDoor { allow: doors.graphite.clone(), tls };
        tcp::start(addr, config, door, tx.clone(), Arc::clone(&stats), graphite::parse_plain, false)?;
        if config.graphite_udp {
            udp::start(addr, doors.graphite.clone(), tx.clone(), Arc::clone(&stats))?;
        }
        log::info!(
            "relay: Graphite plaintext input on {addr}{}{note}",
            if config.graphite_udp { " (TCP and UDP)" } else { "" }
        );
        all.push(stats);
    }
    if let Some(addr) = config.http_listen {
        let stats = InputStats::new("http");
        let tls = tls_of(config, &doors.http, InputName::Http)?;
        let note = door_note(&doors.http, tls.is_some());
        let auth = if config.http_auth.is_open() { "" } else { ", credentials required" };
        http::start(addr, config, tls, tx.clone(), Arc::clone(&stats))?;
        log::info!("relay: HTTP input (InfluxDB /write, OpenTSDB /api/put) on {addr}{note}{auth}");
        all.push(stats);
    }
    if let Some(frames) = &config.frames {
        let stats = InputStats::new("frames");
        // `frames_tls = False`: plain TCP (the config refuses TLS asked for without its files).
        let tls = match (&config.tls, doors.frames.tls) {
            (Some(files), true) => Some(
                crate::tls::server_config(&files.cert, &files.key, frames.client_ca.as_deref())
                    .map_err(|e| format!("[Relay] frames_listen: {e}"))?,
            ),
            _ => None,
        };
        let note = door_note(&doors.frames, tls.is_some());
        let door = frames::FramesDoor {
            allow: doors.frames.clone(),
            tls,
            tokens: frames.tokens.clone(),
            idle: config.idle_timeout,
        };
        frames::start(frames.listen, door, tx.clone(), Arc::clone(&stats))?;
        let ca = if frames.client_ca.is_some() { ", client certificates required" } else { "" };
        log::info!("relay: frames input (PuyPuy agents) on {}{note}{ca}", frames.listen);
        all.push(stats);
    }
    if let Some(statsd) = &config.statsd {
        let stats = InputStats::new_statsd();
        let tls = tls_of(config, &doors.statsd, InputName::Statsd)?;
        let note = door_note(&doors.statsd, tls.is_some() && statsd.tcp);
        statsd_input::start(statsd, config, tls, tx.clone(), Arc::clone(&stats))?;
        log::info!(
            "relay: StatsD input on {}{}, flushed every {}s{note}",
            statsd.listen,
            if statsd.tcp { " (UDP and TCP)" } else { " (UDP)" },
            statsd.flush.as_secs()
        );
        all.push(stats);
    }
    Ok(all)
}

/// Parses one line (or counts an over-long one) into `points`; returns why a line was refused.
/// `now` is the time a line without a timestamp gets: the caller reads the clock once for all the
/// lines of a read (per line it was 4% of a relay's time at millions of lines a second).
pub(crate) fn handle_line(
    raw: Result<&[u8], usize>,
    parse: LineParser,
    stats: &InputStats,
    peer: &str,
    points: &mut Vec<Point>,
    max_line: usize,
    now: u64,
) -> Option<String> {
    let why = match raw {
        Err(len) => format!("line of {len}+ bytes is over max_line_bytes ({max_line})"),
        Ok(bytes) => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                stats.reject(peer, &String::from_utf8_lossy(bytes), "not valid UTF-8");
                return Some("not valid UTF-8".into());
            };
            let text = text.trim_end_matches('\r');
            if text.trim().is_empty() {
                return None;
            }
            match parse(text, now) {
                Ok(p) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    points.push(p);
                    return None;
                }
                Err(e) => {
                    stats.reject(peer, text, &e);
                    return Some(e);
                }
            }
        }
    };
    stats.reject(peer, "", &why);
    Some(why)
}

/// A TCP listener with the kernel's largest accept queue (`somaxconn`, 4096 on Debian 12) instead
/// of std's 128: when hundreds of clients connect at once and the accepting thread is slow to run
/// (a busy host), a full queue drops their handshakes, and what they wrote waits for the kernel's
/// retransmissions, seconds to a minute late, or is lost with them.
pub(crate) fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std's bind does: a restarted shipper may listen again at once on its port.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    // Capped by the kernel at net.core.somaxconn.
    socket.listen(4096)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    /// 300 clients connect while nothing accepts (a busy accepting thread): every handshake
    /// completes at once. With std's queue of 128 the 130th waits for retransmissions.
    #[test]
    fn hundreds_of_clients_connect_before_any_is_accepted() {
        let listener = tcp_listener("127.0.0.1:0".parse().expect("address")).expect("listen");
        let addr = listener.local_addr().expect("address");
        let clients: Vec<TcpStream> = (0..300)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("client {i} not connected: {e}"))
            })
            .collect();
        assert_eq!(clients.len(), 300);
    }
}
