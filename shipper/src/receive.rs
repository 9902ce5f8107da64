//! The shipper's Unix socket: one listener, a reader and an ack writer per connection.
//!
//! A connection that sends something that is not a valid frame (over 16 MiB, unknown version,
//! undecodable payload, cut short) is logged with the peer's pid and uid and closed; every other
//! connection goes on. A slow or stuck producer only holds its own threads.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::Sender;
use nix::fcntl::{Flock, FlockArg};
use puypuy_common::frame::{self, Frame, FrameError};

use crate::ack::{AckHandle, AckSocket, AckTo};
use crate::batch::Input;
use crate::stats::Stats;
use crate::tags::HostTagging;

/// The bound socket and the lock that makes this shipper the only one on it.
pub struct Listener {
    pub listener: UnixListener,
    _lock: Flock<File>,
}

pub fn bind(socket: &Path, group: Option<&str>) -> Result<Listener, String> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let lock_path = socket.with_extension("lock");
    // Created, then held open read-only: a writable fd would keep the folder's filesystem from
    // being remounted read-only.
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    let lock_file = File::open(&lock_path).map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        format!("another shipper is already running on {} (stop it first: ./puypuy.sh stop shipper)", socket.display())
    })?;
    // We hold the lock, so a socket file still there was left by a shipper that was killed.
    if socket.exists() {
        std::fs::remove_file(socket)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", socket.display()))?;
    }
    let listener = UnixListener::bind(socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set the mode of {}: {e}", socket.display()))?;
    if let Some(name) = group {
        let gid = match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => g.gid,
            _ => return Err(format!("[Relay] socket_group: no group {name:?} on this host")),
        };
        nix::unistd::chown(socket, None, Some(gid))
            .map_err(|e| format!("cannot give {} to group {name}: {e}", socket.display()))?;
    }
    Ok(Listener { listener, _lock: lock })
}

pub fn serve(listener: UnixListener, tx: Sender<Input>, stats: Arc<Stats>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let tx = tx.clone();
                if let Err(e) = thread::Builder::new().name("conn".into()).spawn(move || handle(stream, tx)) {
                    log::error!("cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                log::warn!("accept failed: {e}");
                thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

fn peer(stream: &UnixStream) -> String {
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => format!("pid {} uid {}", c.pid(), c.uid()),
        Err(_) => "unknown peer".into(),
    }
}

/// How long the rest of a frame may take once its first byte arrived. A producer may stay silent
/// between frames as long as it likes; one that stops in the middle of a frame has its connection
/// closed after this (its unacknowledged frames are resent when it reconnects).
pub const FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Payload buffers a connection reads frames into, each handed back by the batcher once decoded.
const PAYLOAD_BUFFERS: usize = 4;

/// How long a connection waits for one of its buffers before it reads into a new one (the
/// batcher's channel also pushes back, so this only matters if the batcher stopped).
const BUFFER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads one frame's payload into `buf`, waiting without limit for its first byte and at most
/// `timeout` for the rest. `Ok(false)` is a clean end of stream between frames.
fn read_frame(
    reader: &mut BufReader<&UnixStream>,
    stream: &UnixStream,
    buf: &mut Vec<u8>,
    timeout: std::time::Duration,
) -> Result<bool, FrameError> {
    let buffered = reader.fill_buf()?;
    if buffered.is_empty() {
        return Ok(false);
    }
    // Most frames are already whole in the buffer: no deadline (and no syscall) needed for those.
    let whole = buffered.len() >= 4
        && buffered.len() >= 4 + u32::from_be_bytes([buffered[0], buffered[1], buffered[2], buffered[3]]) as usize;
    if whole {
        return frame::read_payload(reader, buf);
    }
    stream.set_read_timeout(Some(timeout))?;
    let result = frame::read_payload(reader, buf);
    stream.set_read_timeout(None)?;
    result
}

fn handle(stream: UnixStream, tx: Sender<Input>) {
    let who = peer(&stream);
    handle_as(stream, tx, who, HostTagging::ThisHost)
}

/// Reads the frames of one connection and acknowledges each once its points are delivered or
/// spooled; `who` names the peer in the log. The relay's frames input hands its TLS connections
/// here through a socket pair, so they take the same path, acks included; their points carry the
/// agent's host tags (`tagging`).
pub fn handle_as(stream: UnixStream, tx: Sender<Input>, who: String, tagging: HostTagging) {
    let acks = match AckSocket::start(&stream) {
        Ok(a) => a,
        Err(e) => {
            log::error!("connection from {who}: cannot start its ack writer: {e}");
            return;
        }
    };
    let mut reader = BufReader::with_capacity(64 * 1024, &stream);
    let mut buf = Vec::new();
    // Payload buffers come back from the batcher once decoded: a connection reuses a few buffers
    // instead of allocating one per frame (which, with one allocator heap per thread, kept memory
    // growing with the number of connections).
    let (back_tx, back_rx) = crossbeam_channel::bounded::<Vec<u8>>(PAYLOAD_BUFFERS);
    let mut owned = 0;
    let mut sender_name = String::new();
    loop {
        if buf.capacity() == 0 {
            buf = match back_rx.try_recv() {
                Ok(b) => b,
                Err(_) if owned < PAYLOAD_BUFFERS => {
                    owned += 1;
                    Vec::new()
                }
                // Every buffer of this connection waits in the batcher's queue: wait for one
                // rather than allocate more. Taking a new one whenever none was back yet made
                // connections allocate (and the batcher free) buffers all along under load:
                // 16 producers made 40% of the shipper's page faults and its peak RSS grew
                // for as long as they sent.
                Err(_) => back_rx.recv_timeout(BUFFER_WAIT).unwrap_or_default(),
            };
        }
        match read_frame(&mut reader, &stream, &mut buf, FRAME_TIMEOUT) {
            Ok(true) => {}
            Ok(false) => break,
            Err(FrameError::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                log::warn!(
                    "connection from {who} {sender_name}: stopped in the middle of a frame for {FRAME_TIMEOUT:?}; closing this connection"
                );
                break;
            }
            Err(FrameError::Io(e)) => {
                log::debug!("connection from {who} ({sender_name}): {e}");
                break;
            }
            Err(e) => {
                log::warn!("connection from {who} {sender_name}: {e}; closing this connection");
                break;
            }
        }
        // Checked here (a bad frame closes this connection only), decoded by the batcher: the
        // points are then allocated and freed by the same two threads whatever the number of
        // connections, which keeps the shipper's memory flat as producers are added.
        let seq = match Frame::check(&buf) {
            Ok(head) => {
                if sender_name != head.sender {
                    sender_name = head.sender.to_string();
                    log::debug!("connection from {who} is {sender_name}");
                }
                head.seq
            }
            Err(e) => {
                log::warn!("connection from {who} {sender_name}: {e}; closing this connection");
                break;
            }
        };
        let ack = AckHandle { to: AckTo::Socket(Arc::clone(&acks)), seq };
        if tx.send(Input::Frame { payload: std::mem::take(&mut buf), ack, back: back_tx.clone(), tagging }).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_frame_cut_in_the_middle_times_out_and_silence_between_frames_does_not() {
        use std::time::{Duration, Instant};
        let (ours, mut producer) = UnixStream::pair().expect("pair");
        let mut reader = BufReader::new(&ours);
        let mut buf = Vec::new();
        let timeout = Duration::from_millis(200);
        let bytes = Frame::new("p", 1, vec![puypuy_common::Point::int("x", 1, 2, "t")]).to_bytes();
        // Silent for longer than the timeout, then a whole frame: read, not cut.
        let whole = bytes.clone();
        let writer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(600));
            producer.write_all(&whole).expect("write");
            producer
        });
        assert!(read_frame(&mut reader, &ours, &mut buf, timeout).expect("frame"));
        assert_eq!(Frame::decode(&buf).expect("decode").seq, 1);
        let mut producer = writer.join().expect("writer");
        // Half a frame, then nothing: cut after the timeout.
        producer.write_all(&bytes[..bytes.len() / 2]).expect("write half");
        let started = Instant::now();
        match read_frame(&mut reader, &ours, &mut buf, timeout) {
            Err(FrameError::Io(e)) => {
                assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}")
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() >= timeout);
    }

    /// A connection reads into at most `PAYLOAD_BUFFERS` buffers, waiting for the batcher to hand
    /// one back: it used to take a new one whenever none was back yet, and under load connections
    /// kept allocating buffers that the batcher then freed (peak RSS grew for as long as 16
    /// producers sent).
    #[test]
    fn a_connection_reads_into_a_few_buffers_that_the_batcher_hands_back() {
        let (ours, mut producer) = UnixStream::pair().expect("pair");
        let (tx, rx) = crossbeam_channel::unbounded();
        let conn = thread::spawn(move || handle_as(ours, tx, "test".into(), HostTagging::ThisHost));
        let frames = 12;
        for seq in 0..frames {
            producer
                .write_all(&Frame::new("p", seq, vec![puypuy_common::Point::int("x", 1, 2, "t")]).to_bytes())
                .expect("write");
        }
        // The batcher here hands a buffer back only once it holds PAYLOAD_BUFFERS of them.
        let (mut held, mut seen) = (std::collections::VecDeque::new(), std::collections::HashSet::new());
        for _ in 0..frames {
            match rx.recv_timeout(std::time::Duration::from_secs(5)).expect("a frame") {
                Input::Frame { payload, back, .. } => {
                    seen.insert(payload.as_ptr() as usize);
                    held.push_back((payload, back));
                }
                _ => panic!("not a frame"),
            }
            if held.len() == PAYLOAD_BUFFERS {
                let (payload, back) = held.pop_front().expect("held");
                back.try_send(payload).expect("room to hand it back");
            }
        }
        assert_eq!(seen.len(), PAYLOAD_BUFFERS, "buffers the connection allocated");
        drop(producer);
        drop(held);
        conn.join().expect("connection thread");
    }

    #[test]
    fn socket_group_owns_the_socket_and_an_unknown_group_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("shipper.sock");
        // A group other than our own, that we may give a file to: any, as root; else one of our
        // supplementary groups. (It used to need Debian's `nogroup`.)
        let own = nix::unistd::getegid();
        let mut candidates = nix::unistd::getgroups().unwrap_or_default();
        if nix::unistd::geteuid().is_root() {
            candidates.extend((1..1000).map(nix::unistd::Gid::from_raw));
        }
        let group = candidates
            .into_iter()
            .filter(|g| *g != own)
            .find_map(|g| nix::unistd::Group::from_gid(g).ok().flatten())
            .expect("a group other than our own to give the socket to: run as root, or as a user with a supplementary group");
        let bound = bind(&socket, Some(&group.name)).expect("bind");
        let meta = std::fs::metadata(&socket).expect("socket");
        assert_eq!((meta.gid(), meta.mode() & 0o777), (group.gid.as_raw(), 0o660));
        drop(bound);
        let other = dir.path().join("other.sock");
        let err = bind(&other, Some("no-such-group-puypuy")).err().expect("refused");
        assert_eq!(err, "[Relay] socket_group: no group \"no-such-group-puypuy\" on this host");
    }
}
