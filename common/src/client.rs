//! The one sender client every producer uses to hand points to the shipper.
//!
//! [`SenderClient::send`] never blocks a check cycle: it encodes the frame, queues it, and writes
//! what the socket takes at once from the caller's own thread, without blocking. Acks are read the
//! same way, without blocking, at the next call ([`SenderClient::send`], [`SenderClient::stats`],
//! [`SenderClient::flush`]); an acknowledged frame is forgotten then. So a producer whose frames
//! fit in the socket costs no wake-up but its own: no thread is woken to write a frame, none to
//! read its ack (each such hand-off cost a wake-up of 40–85 µs of CPU on a small VM, several per
//! cycle). Only what the caller cannot finish goes to a helper thread, started the first time it
//! is needed: connecting (with backoff while the shipper is down) and writing a frame the socket
//! did not take whole. After a reconnect every unacknowledged frame is written again, so a shipper
//! killed with -9 costs nothing. While frames wait for their acks, the helper thread sleeps on the
//! connection for the shipper closing it (acks arriving do not wake it), so a restarted shipper
//! gets them again at once rather than at the producer's next cycle. The queue is bounded (`producer_queue` frames): when it is full
//! the oldest frame is dropped and counted.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::frame::{self, Ack, Frame};
use crate::point::Point;

struct Pending {
    seq: u64,
    bytes: Vec<u8>,
    points: usize,
}

/// The first retry after a failed connect, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The longest ack payload taken for one (acks are a few bytes).
const MAX_ACK_BYTES: usize = 1024;

struct State {
    socket: PathBuf,
    sender: String,
    queue: VecDeque<Pending>,
    /// The connection (non-blocking), while there is one.
    conn: Option<UnixStream>,
    /// How many frames at the front of `queue` were written whole on the current connection.
    written: usize,
    /// Bytes of `queue[written]` already written.
    partial: usize,
    /// Ack bytes read but not yet a whole ack.
    acks: Vec<u8>,
    next_seq: u64,
    dropped_frames: u64,
    dropped_points: u64,
    reconnects: u64,
    ever_connected: bool,
    outage_logged: bool,
    /// No connect before this (backoff after a failed one).
    retry_at: Option<Instant>,
    backoff: Duration,
    helper_started: bool,
    /// Whether an ack came on the current connection. One closed before any did (a shipper that
    /// refuses a frame closes the connection) is not reconnected at once: the backoff grows
    /// until an ack comes, instead of the same frame going round as fast as both can.
    acked_on_conn: bool,
    /// What the helper thread sleeps on: the condition variable (`Waiting`), or the connection
    /// and the wake socket (`Watching`: frames written, their acks not read yet).
    helper: HelperSleep,
    shutdown: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HelperSleep {
    Busy,
    Waiting,
    Watching,
}

/// Connects without blocking: a shipper whose accept queue is full (stopped, or too busy to
/// accept) answers `EAGAIN` at once instead of holding the producer's thread, which then goes on
/// collecting and queues its frames, retried with the backoff. (A Unix socket's connect is
/// otherwise done at once: it never answers `EINPROGRESS`.)
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(path)?)?;
    Ok(UnixStream::from(fd))
}

impl State {
    /// True while something is left that only waiting can finish: a connection to make, or a
    /// frame the socket did not take whole. Frames written and waiting for their ack are not.
    fn unfinished(&self) -> bool {
        self.written < self.queue.len()
    }

    /// Does, without blocking, everything that can be done now: reads the acks that came, and
    /// connects and writes the frames not written yet.
    fn pump(&mut self) {
        self.read_acks();
        self.push();
    }

    /// Connects when there is something to write and no connection, and writes.
    fn push(&mut self) {
        if self.conn.is_none() && self.unfinished() {
            self.connect();
        }
        self.write();
    }

    fn connect(&mut self) {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let stream = match connect_nonblocking(&self.socket) {
            Ok(s) => s,
            Err(e) => {
                if !self.outage_logged {
                    log::warn!(
                        "cannot reach the shipper at {}: {e}; keeping points queued and retrying",
                        self.socket.display()
                    );
                    self.outage_logged = true;
                }
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                return;
            }
        };
        if self.outage_logged || self.ever_connected {
            log::info!("connected to the shipper at {}", self.socket.display());
        }
        if self.ever_connected {
            self.reconnects += 1;
        }
        self.ever_connected = true;
        self.outage_logged = false;
        self.retry_at = None;
        self.acked_on_conn = false;
        self.conn = Some(stream);
        self.written = 0;
        self.partial = 0;
        self.acks.clear();
    }

    /// Forgets the connection; every frame not acknowledged is written again on the next one.
    fn disconnect(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
            if !self.acked_on_conn {
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.written = 0;
        self.partial = 0;
        self.acks.clear();
    }

    fn write(&mut self) {
        while self.written < self.queue.len() {
            let Some(conn) = &mut self.conn else { return };
            let bytes = &self.queue[self.written].bytes;
            match conn.write(&bytes[self.partial..]) {
                Ok(n) => {
                    self.partial += n;
                    if self.partial == bytes.len() {
                        self.written += 1;
                        self.partial = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!(
                        "{}: lost the shipper connection while writing: {e}; will resend unacknowledged frames",
                        self.sender
                    );
                    self.disconnect();
                    return;
                }
            }
        }
    }

    fn read_acks(&mut self) {
        let Some(conn) = &mut self.conn else { return };
        let mut buf = [0u8; 512];
        let closed = loop {
            match conn.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => self.acks.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("shipper connection closed: {e}");
                    break true;
                }
            }
        };
        let mut at = 0;
        while let Some(len) = self.acks.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) {
            if len > MAX_ACK_BYTES {
                // Not an ack (they are a few bytes): the stream is out of step, and waiting for
                // that many bytes would stop reading acks on this connection for good.
                log::warn!("bad ack from the shipper: a length of {len} bytes; reconnecting");
                self.disconnect();
                return;
            }
            let Some(payload) = self.acks.get(at + 4..at + 4 + len) else { break };
            at += 4 + len;
            match Ack::decode(payload) {
                Ok(ack) => self.acknowledge(ack),
                Err(e) => {
                    log::warn!("bad ack from the shipper: {e}; reconnecting");
                    self.disconnect();
                    return;
                }
            }
        }
        self.acks.drain(..at);
        if closed {
            self.disconnect();
        }
    }

    fn acknowledge(&mut self, ack: Ack) {
        self.acked_on_conn = true;
        self.backoff = FIRST_BACKOFF;
        if let Some(i) = self.queue.iter().position(|p| p.seq == ack.seq) {
            self.queue.remove(i);
            if i < self.written {
                self.written -= 1;
            } else if i == self.written && self.partial > 0 {
                // Cannot happen (the shipper acks only what it read whole). Were it to, the next
                // frame's bytes must not follow half of this one: start a new connection.
                self.disconnect();
            }
        }
        if ack.status == frame::ACK_DROPPED {
            log::error!("the shipper dropped frame {} (its queue was full)", ack.seq);
        }
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// A socket pair: a byte written to the first ends the helper's watch of the connection.
    wake: Option<(UnixStream, UnixStream)>,
}

impl Shared {
    /// Gets the helper going again, wherever it sleeps: called with the lock held, after a change
    /// it must act on.
    fn wake_helper(&self, state: &State) {
        match state.helper {
            HelperSleep::Busy => {}
            HelperSleep::Waiting => self.changed.notify_all(),
            HelperSleep::Watching => {
                if let Some((tx, _)) = &self.wake {
                    let _ = (&*tx).write(&[1]);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means another thread panicked while holding it; the state is still a
        // consistent queue, so carry on rather than lose points.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct SenderClient {
    shared: Arc<Shared>,
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
    /// A client of the shipper listening on `socket`; it connects at the first frame.
    /// `capacity` is the most unacknowledged frames kept.
    pub fn start(socket: &Path, sender: &str, capacity: usize) -> SenderClient {
        let state = State {
            socket: socket.to_path_buf(),
            sender: sender.to_string(),
            queue: VecDeque::new(),
            conn: None,
            written: 0,
            partial: 0,
            acks: Vec::new(),
            next_seq: 1,
            dropped_frames: 0,
            dropped_points: 0,
            reconnects: 0,
            ever_connected: false,
            outage_logged: false,
            retry_at: None,
            backoff: FIRST_BACKOFF,
            helper_started: false,
            acked_on_conn: false,
            helper: HelperSleep::Busy,
            shutdown: false,
        };
        let wake = UnixStream::pair()
            .and_then(|(a, b)| {
                a.set_nonblocking(true)?;
                b.set_nonblocking(true)?;
                Ok((a, b))
            })
            .map_err(|e| {
                log::warn!(
                    "no wake socket for the sender thread ({e}): a lost shipper connection is noticed at the next send"
                )
            })
            .ok();
        SenderClient {
            shared: Arc::new(Shared { state: Mutex::new(state), changed: Condvar::new(), wake }),
            capacity: capacity.max(1),
        }
    }

    /// Queues one frame of points and writes what the socket takes now; never blocks on the socket.
    pub fn send(&self, points: Vec<Point>) {
        if points.is_empty() {
            return;
        }
        let count = points.len();
        let mut state = self.shared.lock();
        state.read_acks();
        let seq = state.next_seq;
        state.next_seq += 1;
        let bytes = Frame::new(&state.sender, seq, points).to_bytes();
        if bytes.len() - 4 > frame::MAX_FRAME_BYTES {
            log::error!("dropped a frame of {count} points: {} bytes is over the frame limit", bytes.len());
            state.dropped_frames += 1;
            state.dropped_points += count as u64;
            return;
        }
        while state.queue.len() >= self.capacity {
            if let Some(old) = state.queue.pop_front() {
                if state.written > 0 {
                    state.written -= 1;
                } else if state.partial > 0 {
                    // Half written: the rest of the connection's bytes would not make a frame.
                    state.disconnect();
                }
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
        state.queue.push_back(Pending { seq, bytes, points: count });
        state.push();
        self.hand_over(state);
    }

    /// What the caller could not finish goes to the helper thread (started the first time). With
    /// frames written but not acknowledged it watches the connection, so that a shipper that
    /// closed it (restarted) gets them again at once, not at this producer's next call.
    fn hand_over(&self, mut state: MutexGuard<'_, State>) {
        let watch = !state.queue.is_empty() && state.conn.is_some();
        if !state.unfinished() && !watch {
            return;
        }
        if !state.helper_started {
            let shared = Arc::clone(&self.shared);
            match thread::Builder::new().name("sender".into()).stack_size(64 * 1024).spawn(move || helper(&shared)) {
                Ok(_) => state.helper_started = true,
                Err(e) => log::error!("cannot start the sender thread: {e}"),
            }
        }
        // Already watching this connection with nothing unfinished: nothing to tell it (so a
        // producer's usual cycle wakes no thread).
        if state.unfinished() || state.helper == HelperSleep::Waiting {
            self.shared.wake_helper(&state);
        }
    }

    /// Waits until every queued frame is acknowledged; false when `timeout` passed first.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut state = self.shared.lock();
            state.pump();
            if state.queue.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let mut wait = deadline - now;
            match state.conn.as_ref().map(UnixStream::try_clone) {
                Some(Ok(conn)) => {
                    let unfinished = state.unfinished();
                    drop(state);
                    wait_for_socket(&conn, unfinished, wait.min(MAX_BACKOFF));
                }
                _ => {
                    if let Some(t) = state.retry_at {
                        wait = wait.min(t.saturating_duration_since(now));
                    }
                    let _ = self.shared.changed.wait_timeout(state, wait.max(Duration::from_millis(1)));
                }
            }
        }
    }

    pub fn stats(&self) -> ClientStats {
        let mut s = self.shared.lock();
        s.pump();
        let stats = ClientStats {
            queued_frames: s.queue.len(),
            dropped_frames: s.dropped_frames,
            dropped_points: s.dropped_points,
            reconnects: s.reconnects,
            connected: s.conn.is_some(),
        };
        self.hand_over(s);
        stats
    }
}

impl Drop for SenderClient {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.shutdown = true;
        self.shared.wake_helper(&state);
    }
}

/// Sleeps until `conn` has something to read (acks, or the shipper closed it) or, when
/// `writable` is asked for, room to write; at most `timeout`.
fn wait_for_socket(conn: &UnixStream, writable: bool, timeout: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let events = if writable { PollFlags::POLLIN | PollFlags::POLLOUT } else { PollFlags::POLLIN };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    let _ = poll(&mut [PollFd::new(conn.as_fd(), events)], PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX));
}

/// Sleeps until the shipper closes `conn` (or it fails) or a byte comes on `wake`, which is then
/// drained.
fn wait_for_close(conn: &UnixStream, wake: &UnixStream) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [
        PollFd::new(conn.as_fd(), PollFlags::from_bits_retain(libc::POLLRDHUP)),
        PollFd::new(wake.as_fd(), PollFlags::POLLIN),
    ];
    let _ = poll(&mut fds, PollTimeout::NONE);
    let mut drain = [0u8; 64];
    while matches!((&*wake).read(&mut drain), Ok(n) if n > 0) {}
}

/// The helper thread: sleeps until the callers leave something unfinished, then connects (with
/// backoff) and writes until nothing is, and sleeps again. It never wakes while there is nothing
/// to do.
fn helper(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        state.pump();
        // Once the client is dropped, what is half written is finished on the connection there
        // is (as before the helper took it over), and nothing is retried without one.
        if state.shutdown && (state.conn.is_none() || !state.unfinished()) {
            return;
        }
        if !state.unfinished() {
            match (&shared.wake, state.conn.as_ref().map(UnixStream::try_clone)) {
                // Frames written, their acks not read yet: sleep until the shipper closes the
                // connection (acks arriving do not wake it) or a caller needs the helper.
                (Some((_, wake)), Some(Ok(conn))) if !state.queue.is_empty() && !state.shutdown => {
                    state.helper = HelperSleep::Watching;
                    drop(state);
                    wait_for_close(&conn, wake);
                    state = shared.lock();
                }
                _ => {
                    state.helper = HelperSleep::Waiting;
                    state = shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
            state.helper = HelperSleep::Busy;
            continue;
        }
        match state.conn.as_ref().map(UnixStream::try_clone) {
            Some(Ok(conn)) => {
                drop(state);
                wait_for_socket(&conn, true, MAX_BACKOFF);
                state = shared.lock();
            }
            _ => {
                let wait = state.retry_at.map_or(FIRST_BACKOFF, |t| t.saturating_duration_since(Instant::now()));
                state = shared
                    .changed
                    .wait_timeout(state, wait.max(Duration::from_millis(1)))
                    .map(|(s, _)| s)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }
    }
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

    /// A shipper that does not accept (stopped with SIGSTOP, or busy) with a full accept queue
    /// does not hold the producer: `send` returns, and the frame arrives once it accepts again.
    #[test]
    fn a_shipper_with_a_full_accept_queue_does_not_block_send() {
        use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(&path).unwrap()).unwrap();
        listen(&fd, Backlog::new(1).unwrap()).unwrap();
        let listener = UnixListener::from(fd);
        // Other clients fill the queue until a connect would have to wait.
        let mut fillers = Vec::new();
        loop {
            match connect_nonblocking(&path) {
                Ok(c) => fillers.push(c),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(fillers.len() < 100, "the accept queue never filled");
        }
        let client = Arc::new(SenderClient::start(&path, "test", 100));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sender = Arc::clone(&client);
        thread::spawn(move || {
            sender.send(vec![Point::int("a", 1, 1, "t")]);
            let _ = done_tx.send(());
        });
        assert!(done_rx.recv_timeout(Duration::from_secs(5)).is_ok(), "send waited for the shipper to accept");
        // The shipper accepts again: the fillers first, then the client (after its backoff).
        for _ in 0..fillers.len() {
            drop(listener.accept().unwrap());
        }
        let (frames, _conn) = serve_one(&listener, 1);
        assert_eq!(frames[0].points[0].name, "a");
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

    /// A frame larger than the socket takes at once is finished by the helper thread, also after
    /// the client was dropped.
    #[test]
    fn a_frame_bigger_than_the_socket_buffer_arrives_whole_after_the_client_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let client = SenderClient::start(&path, "big", 10);
        let points: Vec<Point> = (0..100_000).map(|i| Point::int(format!("m{i}"), 1, i, "t")).collect();
        client.send(points);
        assert_eq!(client.stats().queued_frames, 1);
        drop(client);
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        assert!(frame::read_payload(&mut conn, &mut buf).unwrap());
        let f = Frame::decode(&buf).unwrap();
        assert_eq!(f.points.len(), 100_000);
        assert_eq!(f.points[99_999].name, "m99999");
    }

    /// A shipper restarted after reading a frame it never acknowledged gets it again at once,
    /// though the producer makes no call meanwhile (its next cycle may be a minute away).
    #[test]
    fn a_restarted_shipper_gets_the_unacknowledged_frames_without_a_call_of_the_producer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let client = SenderClient::start(&path, "test", 100);
        client.send(vec![Point::int("a", 1, 1, "t")]);
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        assert!(frame::read_payload(&mut conn, &mut buf).unwrap());
        // The shipper dies (connection and listening socket gone) and a new one listens.
        drop(conn);
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("the client did not come back by itself: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        assert!(frame::read_payload(&mut conn, &mut buf).unwrap());
        assert_eq!(Frame::decode(&buf).unwrap().points[0].name, "a");
    }

    /// A shipper that closes every connection after reading the frame, never acknowledging it
    /// (as one does with a frame it refuses), is not reconnected to as fast as both can go: the
    /// backoff grows from 50 ms, so about six connections come in 1.5 s, not hundreds.
    #[test]
    fn connections_closed_before_any_ack_are_retried_with_a_growing_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let client = SenderClient::start(&path, "test", 100);
        client.send(vec![Point::int("refused", 1, 1, "t")]);
        let (mut connections, mut buf) = (0, Vec::new());
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    connections += 1;
                    conn.set_nonblocking(false).unwrap();
                    assert!(frame::read_payload(&mut conn, &mut buf).unwrap());
                }
                Err(_) => thread::sleep(Duration::from_millis(1)),
            }
        }
        // At 0, 50, 150, 350 and 750 ms (the next at 1550): 5 connections, fewer on a slow machine.
        assert!((1..=8).contains(&connections), "{connections} connections in 1.5 s");
        assert_eq!(client.stats().queued_frames, 1, "the frame is kept");
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
