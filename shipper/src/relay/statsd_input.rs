//! The StatsD input: a UDP socket (several `\n`-separated lines per datagram), optionally TCP on
//! the same port (one line per `\n`), one aggregation ([`super::statsd_aggregate`]) that both feed,
//! and a flush thread that wakes on wall-clock multiples of `statsd_flush_seconds` and hands the
//! flush's points, stamped with the flush time, to the pipeline (rates, tags, batching, spool).
//!
//! Lines are parsed and added up in the receiving thread under one short lock per datagram (or
//! per TCP read), so a packet costs no allocation and no hand-off. The flush takes the values
//! under the lock and computes the points after releasing it. What is aggregated but not yet
//! flushed lives only in memory: a restart loses at most one flush interval of it (UDP has no
//! acknowledgement to hold it back); points already handed to the pipeline are not lost.

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;
use puypuy_common::config::relay::StatsdConfig;
use puypuy_common::config::RelayConfig;
use puypuy_common::schedule;

use super::inputs::InputStats;
use super::statsd::parse_line;
use super::statsd_aggregate::{Added, Aggregator, FlushSettings};
use crate::batch::Input;

/// Receive buffer asked for the UDP socket (the kernel caps it at `net.core.rmem_max`): bursts
/// wait there while a flush holds the lock.
const UDP_RECEIVE_BUFFER: usize = 8 << 20;
/// Points per message to the pipeline, so a large flush does not arrive as one giant batch.
const POINTS_PER_MESSAGE: usize = 1000;

struct Shared {
    aggregator: Mutex<Aggregator>,
    stats: Arc<InputStats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Aggregator> {
        self.aggregator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parses and adds up every line of `data`; `peer` is formatted only to log a bad line.
    fn take_lines(&self, data: &[u8], peer: impl Fn() -> String) {
        let stats = &self.stats;
        let Some(statsd) = &stats.statsd else { return };
        let (mut accepted, mut over_series, mut over_samples) = (0, 0, 0);
        let mut aggregator = self.lock();
        for raw in data.split(|b| *b == b'\n') {
            if raw.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(raw);
            let line = match parse_line(&text) {
                Ok(line) => line,
                Err(e) => {
                    stats.reject(&peer(), &text, &e.to_string());
                    continue;
                }
            };
            let mut bad = None;
            for sample in line.samples() {
                match sample {
                    Ok(sample) => match aggregator.add(&line.key, sample) {
                        Added::Kept => {}
                        Added::OverMaxSeries => over_series += 1,
                        Added::OverMaxSamples => over_samples += 1,
                    },
                    Err(e) => bad = Some(e),
                }
            }
            match bad {
                None => accepted += 1,
                Some(e) => stats.reject(&peer(), &text, &e.to_string()),
            }
        }
        drop(aggregator);
        stats.accepted.fetch_add(accepted, Ordering::Relaxed);
        if over_series > 0 {
            statsd.dropped_max_series.fetch_add(over_series, Ordering::Relaxed);
        }
        if over_samples > 0 {
            statsd.dropped_max_samples.fetch_add(over_samples, Ordering::Relaxed);
        }
    }
}

/// Binds the sockets (errors name the address) and starts the receiving and flushing threads.
pub(crate) fn start(
    config: &StatsdConfig,
    relay: &RelayConfig,
    tx: Sender<Input>,
    stats: Arc<InputStats>,
) -> Result<(), String> {
    let addr = config.listen;
    let udp = UdpSocket::bind(addr).map_err(|e| format!("[Relay] statsd_listen: cannot listen on UDP {addr}: {e}"))?;
    if let Err(e) = nix::sys::socket::setsockopt(&udp, nix::sys::socket::sockopt::RcvBuf, &UDP_RECEIVE_BUFFER) {
        log::debug!("statsd input: cannot enlarge the UDP receive buffer: {e}");
    }
    let tcp = match config.tcp {
        true => Some(
            TcpListener::bind(addr).map_err(|e| format!("[Relay] statsd_listen: cannot listen on TCP {addr}: {e}"))?,
        ),
        false => None,
    };
    let shared =
        Arc::new(Shared { aggregator: Mutex::new(Aggregator::new(config.max_series, config.max_samples)), stats });
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        thread::Builder::new().name(name.into()).spawn(f).map(drop).map_err(|e| format!("cannot start {name}: {e}"))
    };
    let receiver = Arc::clone(&shared);
    spawn("statsd-udp", Box::new(move || receive_udp(&udp, &receiver)))?;
    if let Some(listener) = tcp {
        let (acceptor, max_line, max_connections, idle) =
            (Arc::clone(&shared), relay.max_line_bytes, relay.max_connections, relay.idle_timeout);
        spawn("statsd-tcp", Box::new(move || accept_tcp(&listener, &acceptor, max_line, max_connections, idle)))?;
    }
    let settings = FlushSettings {
        interval_seconds: config.flush.as_secs_f64(),
        percentiles: config.percentiles.clone(),
        naming: config.names,
    };
    let period = config.flush;
    spawn("statsd-flush", Box::new(move || flush_every(period, &settings, &shared, &tx)))?;
    Ok(())
}

fn receive_udp(socket: &UdpSocket, shared: &Shared) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("statsd input: UDP receive failed: {e}; the input stops");
                return;
            }
        };
        if let Some(statsd) = &shared.stats.statsd {
            statsd.packets.fetch_add(1, Ordering::Relaxed);
        }
        shared.take_lines(&buf[..n], || from.to_string());
    }
}

fn accept_tcp(listener: &TcpListener, shared: &Arc<Shared>, max_line: usize, max_connections: usize, idle: Duration) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let stats = &shared.stats;
        if stats.open.load(Ordering::Relaxed) >= max_connections {
            stats.reject("-", "", &format!("over max_connections ({max_connections}); connection closed"));
            continue;
        }
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(shared);
        let spawned = thread::Builder::new().name("statsd-conn".into()).spawn(move || {
            let mut stream = stream;
            serve_tcp(&mut stream, &shared, max_line, idle);
            shared.stats.open.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            log::error!("statsd input: cannot start a connection thread");
        }
    }
}

/// Reads lines until the peer closes or stays silent for `idle`. The lines completed by one read
/// are added up together; a line longer than `max_line` is refused and skipped to its end.
fn serve_tcp(stream: &mut TcpStream, shared: &Shared, max_line: usize, idle: Duration) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_read_timeout(Some(idle));
    let mut buf = vec![0u8; 64 * 1024];
    let (mut pending, mut complete) = (Vec::new(), Vec::new());
    let mut skipping = false;
    let too_long = |len: usize| {
        shared.stats.reject(
            &peer.to_string(),
            "",
            &format!("line of {len}+ bytes is over max_line_bytes ({max_line})"),
        );
    };
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut data = &buf[..n];
        while let Some(end) = data.iter().position(|b| *b == b'\n') {
            let head = &data[..end];
            if skipping {
                skipping = false;
            } else if pending.len() + head.len() > max_line {
                too_long(pending.len() + head.len());
            } else {
                complete.extend_from_slice(&pending);
                complete.extend_from_slice(head);
                complete.push(b'\n');
            }
            pending.clear();
            data = &data[end + 1..];
        }
        if !skipping {
            if pending.len() + data.len() > max_line {
                too_long(pending.len() + data.len());
                pending.clear();
                skipping = true;
            } else {
                pending.extend_from_slice(data);
            }
        }
        shared.take_lines(&complete, || peer.to_string());
        complete.clear();
    }
    if !skipping {
        shared.take_lines(&pending, || peer.to_string());
    }
}

/// Flushes on every wall-clock multiple of `period` (a clock set back is followed, not waited
/// for); the points carry the flush time.
fn flush_every(period: Duration, settings: &FlushSettings, shared: &Shared, tx: &Sender<Input>) {
    let mut next = schedule::next_tick(SystemTime::now(), period);
    loop {
        thread::sleep(schedule::until(next, SystemTime::now()));
        let now = SystemTime::now();
        let wait = schedule::until(next, now);
        if wait > period {
            next = schedule::next_tick(now, period);
            continue;
        }
        if !wait.is_zero() {
            continue;
        }
        let tick = next;
        next = schedule::next_tick(now, period);
        let (flushed, series) = {
            let mut aggregator = shared.lock();
            (aggregator.flush(), aggregator.series())
        };
        if let Some(statsd) = &shared.stats.statsd {
            statsd.series.store(series as u64, Ordering::Relaxed);
        }
        if flushed.is_empty() {
            continue;
        }
        let mut points = flushed.points(settings, tick);
        log::debug!("statsd input: flushing {} points of {series} series at {tick}", points.len());
        while !points.is_empty() {
            let rest = points.split_off(points.len().min(POINTS_PER_MESSAGE));
            if tx.send(Input::Points { points, ack: None }).is_err() {
                return;
            }
            points = rest;
        }
    }
}
