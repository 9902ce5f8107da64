//! The StatsD input: a UDP socket (several `\n`-separated lines per datagram), optionally TCP on
//! the same port (one line per `\n`), one aggregation ([`super::statsd_aggregate`]) that both feed,
//! and a flush thread that wakes on wall-clock multiples of `statsd_flush_seconds` and hands the
//! flush's points, stamped with the flush time, to the pipeline (rates, tags, batching, spool).
//!
//! The UDP thread reads up to [`DATAGRAMS_PER_READ`] datagrams per `recvmmsg` call and parses and
//! adds up their lines under one short lock (a TCP connection: per read), so a packet costs no
//! allocation, no hand-off and, under load, a fraction of a system call. The flush takes the
//! values under the lock (the keys are shared, not copied) and computes the points after
//! releasing it, [`POINTS_PER_MESSAGE`] at a time: each chunk waits for room in the pipeline's
//! bounded queue before the next is made, so memory stays flat however many series flush.
//!
//! What is aggregated but not yet flushed lives only in memory: a restart loses at most one flush
//! interval of it (UDP has no acknowledgement to hold it back); points already handed to the
//! pipeline are not lost.

use std::borrow::Cow;
use std::io::{IoSliceMut, Read};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use puypuy_common::config::relay::{Door, StatsdConfig};
use puypuy_common::config::RelayConfig;
use puypuy_common::schedule;

use super::inputs::InputStats;
use super::statsd::parse_line;
use super::statsd_aggregate::{Added, Aggregator, FlushSettings};
use super::tcp::{Conn, TcpDoor};
use crate::batch::Input;

/// Receive buffer asked for the UDP socket (the kernel caps it at `net.core.rmem_max`): bursts
/// wait there while a flush holds the lock.
const UDP_RECEIVE_BUFFER: usize = 8 << 20;
/// Points per message to the pipeline: a flush is made and handed over this many at a time.
const POINTS_PER_MESSAGE: usize = 2000;
/// Datagrams read per `recvmmsg` call at most.
const DATAGRAMS_PER_READ: usize = 32;
/// Room for the largest UDP payload, so that no datagram is cut. Only the pages that datagrams
/// are written to become resident (a 1 KiB datagram touches one page of its slot).
const DATAGRAM_ROOM: usize = 65_536;
/// How long datagrams may wait in the socket's buffer when they come quickly (see
/// [`receive_udp`]): far below a flush interval; at 10^6 datagrams/s it is 500 datagrams, a
/// small part of the receive buffer asked for ([`UDP_RECEIVE_BUFFER`]).
const GATHER: Duration = Duration::from_micros(500);

/// What one lock's worth of lines came to, added to the input's counters once.
#[derive(Default)]
struct Tally {
    accepted: u64,
    over_series: u64,
    over_samples: u64,
}

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
        let mut tally = Tally::default();
        self.add_lines(&mut self.lock(), data, &peer, &mut tally);
        self.count(&tally);
    }

    fn add_lines(&self, aggregator: &mut Aggregator, data: &[u8], peer: &dyn Fn() -> String, tally: &mut Tally) {
        // Checked once for the whole datagram, not per line: valid UTF-8 is the rule, and a `\n`
        // (one byte) never splits a character. Only a datagram that is not is read with
        // `from_utf8_lossy`, line by line.
        let whole = std::str::from_utf8(data).ok();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', data).chain([data.len()]) {
            let line_start = std::mem::replace(&mut start, end + 1);
            if line_start == end {
                continue;
            }
            let text = match whole {
                Some(whole) => Cow::Borrowed(&whole[line_start..end]),
                None => String::from_utf8_lossy(&data[line_start..end]),
            };
            let line = match parse_line(&text) {
                Ok(line) => line,
                Err(e) => {
                    self.stats.reject(&peer(), &text, &e.to_string());
                    continue;
                }
            };
            let mut bad = None;
            for sample in line.samples() {
                match sample {
                    Ok(sample) => match aggregator.add(&line.key, sample) {
                        Added::Kept => {}
                        Added::OverMaxSeries => tally.over_series += 1,
                        Added::OverMaxSamples => tally.over_samples += 1,
                    },
                    Err(e) => bad = Some(e),
                }
            }
            match bad {
                None => tally.accepted += 1,
                Some(e) => self.stats.reject(&peer(), &text, &e.to_string()),
            }
        }
    }

    fn count(&self, tally: &Tally) {
        let stats = &self.stats;
        let Some(statsd) = &stats.statsd else { return };
        stats.accepted.fetch_add(tally.accepted, Ordering::Relaxed);
        if tally.over_series > 0 {
            statsd.dropped_max_series.fetch_add(tally.over_series, Ordering::Relaxed);
        }
        if tally.over_samples > 0 {
            statsd.dropped_max_samples.fetch_add(tally.over_samples, Ordering::Relaxed);
        }
    }
}

/// Binds the sockets (errors name the address) and starts the receiving and flushing threads.
pub(crate) fn start(
    config: &StatsdConfig,
    relay: &RelayConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
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
            super::inputs::tcp_listener(addr)
                .map_err(|e| format!("[Relay] statsd_listen: cannot listen on TCP {addr}: {e}"))?,
        ),
        false => None,
    };
    let shared =
        Arc::new(Shared { aggregator: Mutex::new(Aggregator::new(config.max_series, config.max_samples)), stats });
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        thread::Builder::new().name(name.into()).spawn(f).map(drop).map_err(|e| format!("cannot start {name}: {e}"))
    };
    let receiver = Arc::clone(&shared);
    let udp_door = relay.doors.statsd.clone();
    spawn("statsd-udp", Box::new(move || receive_udp(&udp, &udp_door, &receiver)))?;
    if let Some(listener) = tcp {
        let door = TcpDoor { allow: relay.doors.statsd.clone(), tls };
        let (acceptor, max_line, max_connections, idle) =
            (Arc::clone(&shared), relay.max_line_bytes, relay.max_connections, relay.idle_timeout);
        spawn(
            "statsd-tcp",
            Box::new(move || accept_tcp(&listener, &door, &acceptor, max_line, max_connections, idle)),
        )?;
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

/// Reads datagrams until the socket fails: each `recvmmsg` waits for one datagram and takes up to
/// [`DATAGRAMS_PER_READ`] of those already queued, and all their lines are added up under one lock.
///
/// When a read empties the queue only moments after the previous one, datagrams come faster than
/// [`GATHER`] apart: the thread then sleeps that long before reading again and takes the lot in a
/// few calls. Waking for every few datagrams cost more than the datagrams themselves (one wake-up
/// per 3.6 datagrams at 170 000/s, each paid by this thread and by the sender's kernel path).
fn receive_udp(socket: &UdpSocket, door: &Door, shared: &Shared) {
    let mut room = vec![0u8; DATAGRAMS_PER_READ * DATAGRAM_ROOM];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(DATAGRAMS_PER_READ, None);
    let mut received: Vec<(usize, Option<SockaddrStorage>)> = Vec::with_capacity(DATAGRAMS_PER_READ);
    let mut last_read = Instant::now();
    loop {
        received.clear();
        {
            let mut slots: Vec<[IoSliceMut<'_>; 1]> =
                room.chunks_exact_mut(DATAGRAM_ROOM).map(|slot| [IoSliceMut::new(slot)]).collect();
            match recvmmsg(socket.as_raw_fd(), &mut headers, slots.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(datagrams) => received.extend(datagrams.map(|d| (d.bytes, d.address))),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("statsd input: UDP receive failed: {e}; the input stops");
                    return;
                }
            }
        }
        let now = Instant::now();
        let gather = received.len() < DATAGRAMS_PER_READ && now.duration_since(last_read) < GATHER;
        last_read = now;
        if let Some(statsd) = &shared.stats.statsd {
            statsd.packets.fetch_add(received.len() as u64, Ordering::Relaxed);
        }
        let mut tally = Tally::default();
        let mut aggregator = shared.lock();
        for (slot, (len, from)) in room.chunks_exact(DATAGRAM_ROOM).zip(&received) {
            let peer = || from.map_or_else(|| "-".to_string(), |a| a.to_string());
            if !door.allow.is_empty() && !from.as_ref().and_then(peer_ip).is_some_and(|ip| door.admits(ip)) {
                shared.stats.refuse(&peer(), "not in the input's allow list (UDP datagram dropped)");
                continue;
            }
            shared.add_lines(&mut aggregator, &slot[..*len], &peer, &mut tally);
        }
        drop(aggregator);
        shared.count(&tally);
        if gather {
            thread::sleep(GATHER);
        }
    }
}

/// The address a datagram came from (read only when the input has an allow list).
fn peer_ip(from: &SockaddrStorage) -> Option<std::net::IpAddr> {
    from.to_string().parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

fn accept_tcp(
    listener: &TcpListener,
    door: &TcpDoor,
    shared: &Arc<Shared>,
    max_line: usize,
    max_connections: usize,
    idle: Duration,
) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let stats = &shared.stats;
        if !stats.admits(&door.allow, &stream) {
            continue;
        }
        if stats.open.load(Ordering::Relaxed) >= max_connections {
            stats.reject("-", "", &format!("over max_connections ({max_connections}); connection closed"));
            continue;
        }
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let (shared, door) = (Arc::clone(shared), door.clone());
        let spawned = thread::Builder::new().name("statsd-conn".into()).spawn(move || {
            let _ = stream.set_read_timeout(Some(idle));
            if let Some((mut conn, peer)) = door.open(stream, &shared.stats) {
                serve_tcp(&mut conn, &peer, &shared, max_line);
            }
            shared.stats.open.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            log::error!("statsd input: cannot start a connection thread");
        }
    }
}

/// Reads lines until the peer closes or stays silent for `idle`. The lines completed by one read
/// are added up together; a line longer than `max_line` is refused and skipped to its end.
fn serve_tcp(stream: &mut Conn, peer: &str, shared: &Shared, max_line: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut pending, mut complete) = (Vec::new(), Vec::new());
    let mut skipping = false;
    let too_long = |len: usize| {
        shared.stats.reject(peer, "", &format!("line of {len}+ bytes is over max_line_bytes ({max_line})"));
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
        // Each chunk waits for room in the bounded queue: the flush is made as fast as it is
        // delivered, never whole.
        let (mut sent, mut open) = (0, true);
        flushed.stream(settings, tick, POINTS_PER_MESSAGE, |points| {
            sent += points.len();
            open = tx.send(Input::Points { points, ack: None }).is_ok();
            open
        });
        log::debug!("statsd input: flushed {sent} points of {series} series at {tick}");
        if !open {
            return;
        }
    }
}
