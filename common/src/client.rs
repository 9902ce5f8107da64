//! The one sender client every producer uses to hand points to the shipper.
//!
//! [`SenderClient::send`] never blocks a check cycle: it encodes the frame and queues it. A background
//! thread owns the connection: it connects (with backoff while the shipper is down), writes queued
//! frames in order, and a second thread per connection reads acks and forgets acknowledged frames.
//! After a reconnect every unacknowledged frame is written again, so a shipper killed with -9 costs
//! nothing. The queue is bounded (`producer_queue` frames): when it is full the oldest frame is
//! dropped and counted.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::frame::{self, Ack, Frame};
use crate::point::Point;

struct Pending {
    seq: u64,
    bytes: Arc<Vec<u8>>,
    points: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    /// How many frames at the front of `queue` were written on the current connection.
    sent: usize,
    generation: u64,
    broken_generation: u64,
    connected: bool,
    next_seq: u64,
    dropped_frames: u64,
    dropped_points: u64,
    reconnects: u64,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means another thread panicked while holding it; the state is still a
        // consistent queue, so carry on rather than lose points.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct SenderClient {
    shared: Arc<Shared>,
    sender: String,
    capacity: usize,
}

/// Counters a producer reports as its own self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub queued_frames: usize,
    pub dropped_frames: u64,
    pub dropped_points: u64,
    pub reconnects: u64,
    pub connected: bool,
}

impl SenderClient {
    /// Starts the connection thread. `capacity` is the most unacknowledged frames kept.
    pub fn start(socket: &Path, sender: &str, capacity: usize) -> SenderClient {
        let shared =
            Arc::new(Shared { state: Mutex::new(State { next_seq: 1, ..State::default() }), changed: Condvar::new() });
        let thread_shared = Arc::clone(&shared);
        let socket = socket.to_path_buf();
        let name = sender.to_string();
        let spawned =
            thread::Builder::new().name("sender".into()).spawn(move || connection_loop(&thread_shared, &socket, &name));
        if let Err(e) = spawned {
            log::error!("cannot start the sender thread: {e}");
        }
        SenderClient { shared, sender: sender.to_string(), capacity: capacity.max(1) }
    }

    /// Queues one frame of points; never blocks on the socket.
    pub fn send(&self, points: Vec<Point>) {
        if points.is_empty() {
            return;
        }
        let count = points.len();
        let mut state = self.shared.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        let bytes = Frame::new(&self.sender, seq, points).to_bytes();
        if bytes.len() - 4 > frame::MAX_FRAME_BYTES {
            log::error!("dropped a frame of {count} points: {} bytes is over the frame limit", bytes.len());
            state.dropped_frames += 1;
            state.dropped_points += count as u64;
            return;
        }
        while state.queue.len() >= self.capacity {
            if let Some(old) = state.queue.pop_front() {
                state.sent = state.sent.saturating_sub(1);
                state.dropped_frames += 1;
                state.dropped_points += old.points as u64;
                log::error!(
                    "shipper has not acknowledged {} frames: dropped the oldest ({} points, {} dropped so far)",
                    self.capacity,
                    old.points,
                    state.dropped_points
                );
            }
        }
        state.queue.push_back(Pending { seq, bytes: Arc::new(bytes), points: count });
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Waits until every queued frame is acknowledged; false when `timeout` passed first.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.queue.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }

    pub fn stats(&self) -> ClientStats {
        let s = self.shared.lock();
        ClientStats {
            queued_frames: s.queue.len(),
            dropped_frames: s.dropped_frames,
            dropped_points: s.dropped_points,
            reconnects: s.reconnects,
            connected: s.connected,
        }
    }
}

impl Drop for SenderClient {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
    }
}

fn connection_loop(shared: &Arc<Shared>, socket: &PathBuf, sender: &str) {
    let mut backoff = Duration::from_millis(50);
    let mut outage_logged = false;
    let mut ever_connected = false;
    loop {
        if shared.lock().shutdown {
            return;
        }
        let stream = match UnixStream::connect(socket) {
            Ok(s) => s,
            Err(e) => {
                if !outage_logged {
                    log::warn!(
                        "cannot reach the shipper at {}: {e}; keeping points queued and retrying",
                        socket.display()
                    );
                    outage_logged = true;
                }
                let state = shared.lock();
                let _ = shared.changed.wait_timeout_while(state, backoff, |s| !s.shutdown);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if outage_logged || ever_connected {
            log::info!("connected to the shipper at {}", socket.display());
        }
        outage_logged = false;
        let generation = {
            let mut state = shared.lock();
            state.generation += 1;
            state.sent = 0;
            state.connected = true;
            if ever_connected {
                state.reconnects += 1;
            }
            state.generation
        };
        ever_connected = true;
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        match stream.try_clone() {
            Ok(reader) => {
                let reader_shared = Arc::clone(shared);
                let spawned = thread::Builder::new()
                    .name("sender-acks".into())
                    .spawn(move || ack_loop(&reader_shared, reader, generation));
                if let Err(e) = spawned {
                    log::error!("cannot start the ack reader: {e}");
                    continue;
                }
            }
            Err(e) => {
                log::warn!("cannot clone the shipper connection: {e}");
                continue;
            }
        }
        write_loop(shared, stream, generation, sender);
        let mut state = shared.lock();
        state.connected = false;
        if state.shutdown {
            return;
        }
    }
}

/// Writes queued frames until the connection breaks.
fn write_loop(shared: &Shared, mut stream: UnixStream, generation: u64, sender: &str) {
    loop {
        let bytes = {
            let mut state = shared.lock();
            loop {
                if state.broken_generation >= generation || (state.shutdown && state.queue.is_empty()) {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    return;
                }
                if state.sent < state.queue.len() {
                    break;
                }
                state = shared
                    .changed
                    .wait_timeout(state, Duration::from_secs(1))
                    .map(|(s, _)| s)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            let index = state.sent;
            state.sent += 1;
            Arc::clone(&state.queue[index].bytes)
        };
        if let Err(e) = stream.write_all(&bytes) {
            log::warn!("{sender}: lost the shipper connection while writing: {e}; will resend unacknowledged frames");
            shared.lock().broken_generation = generation;
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

fn ack_loop(shared: &Shared, mut stream: UnixStream, generation: u64) {
    let mut buf = Vec::with_capacity(32);
    loop {
        match frame::read_payload(&mut stream, &mut buf) {
            Ok(true) => match Ack::decode(&buf) {
                Ok(ack) => {
                    let mut state = shared.lock();
                    if state.generation == generation {
                        if let Some(i) = state.queue.iter().position(|p| p.seq == ack.seq) {
                            state.queue.remove(i);
                            if i < state.sent {
                                state.sent -= 1;
                            }
                        }
                    }
                    if ack.status == frame::ACK_DROPPED {
                        log::error!("the shipper dropped frame {} (its queue was full)", ack.seq);
                    }
                    drop(state);
                    shared.changed.notify_all();
                }
                Err(e) => {
                    log::warn!("bad ack from the shipper: {e}; reconnecting");
                    break;
                }
            },
            Ok(false) => break,
            Err(e) => {
                log::debug!("shipper connection closed: {e}");
                break;
            }
        }
    }
    let mut state = shared.lock();
    if state.broken_generation < generation {
        state.broken_generation = generation;
    }
    drop(state);
    shared.changed.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Accepts one connection, acks `ack_count` frames, and returns them with the connection
    /// (kept open by the caller, so the client does not reconnect meanwhile).
    fn serve_one(listener: &UnixListener, ack_count: usize) -> (Vec<Frame>, std::os::unix::net::UnixStream) {
        let (mut conn, _) = listener.accept().unwrap();
        let mut frames = Vec::new();
        let mut buf = Vec::new();
        while frames.len() < ack_count {
            assert!(frame::read_payload(&mut conn, &mut buf).unwrap());
            let f = Frame::decode(&buf).unwrap();
            frame::write_ack(&mut conn, Ack::new(f.seq, frame::ACK_DELIVERED)).unwrap();
            frames.push(f);
        }
        (frames, conn)
    }

    #[test]
    fn queued_frames_are_delivered_once_the_shipper_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let client = SenderClient::start(&path, "test", 100);
        client.send(vec![Point::int("a", 1, 1, "t")]);
        client.send(vec![Point::int("b", 1, 2, "t")]);
        assert!(!client.flush(Duration::from_millis(100)));
        let listener = UnixListener::bind(&path).unwrap();
        let (frames, _conn) = serve_one(&listener, 2);
        assert_eq!(frames.iter().map(|f| f.points[0].name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(client.flush(Duration::from_secs(5)));
    }

    #[test]
    fn unacknowledged_frames_are_resent_after_reconnect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let client = SenderClient::start(&path, "test", 100);
        client.send(vec![Point::int("a", 1, 1, "t")]);
        {
            // read the frame, close without acking
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            assert!(frame::read_payload(&mut conn, &mut buf).unwrap());
        }
        client.send(vec![Point::int("b", 1, 2, "t")]);
        let (frames, _conn) = serve_one(&listener, 2);
        assert_eq!(frames.iter().map(|f| f.points[0].name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(client.flush(Duration::from_secs(5)));
        assert_eq!(client.stats().reconnects, 1);
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let client = SenderClient::start(&dir.path().join("none.sock"), "test", 2);
        for i in 0..5 {
            client.send(vec![Point::int("a", i, 1, "t"), Point::int("b", i, 1, "t")]);
        }
        let stats = client.stats();
        assert_eq!(stats.queued_frames, 2);
        assert_eq!(stats.dropped_frames, 3);
        assert_eq!(stats.dropped_points, 6);
    }
}
