//! The shipper's Unix socket: one listener, a reader and an ack writer per connection.
//!
//! A connection that sends something that is not a valid frame (over 16 MiB, unknown version,
//! undecodable payload, cut short) is logged with the peer's pid and uid and closed; every other
//! connection goes on. A slow or stuck producer only holds its own threads.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use nix::fcntl::{Flock, FlockArg};
use puypuy_common::frame::{self, Ack, Frame, FrameError};

use crate::pipeline::{AckHandle, Input, Stats};

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
        std::fs::remove_file(socket).map_err(|e| format!("cannot remove the stale socket {}: {e}", socket.display()))?;
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

fn handle(stream: UnixStream, tx: Sender<Input>) {
    let who = peer(&stream);
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            log::warn!("connection from {who}: cannot clone the socket: {e}");
            return;
        }
    };
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<Ack>();
    let writer_thread = thread::Builder::new().name("acks".into()).spawn(move || write_acks(writer, ack_rx));
    if writer_thread.is_err() {
        log::error!("connection from {who}: cannot start its ack writer");
        return;
    }
    let mut reader = BufReader::with_capacity(64 * 1024, &stream);
    let mut buf = Vec::new();
    let mut sender_name = String::new();
    loop {
        match frame::read_payload(&mut reader, &mut buf) {
            Ok(true) => {}
            Ok(false) => break,
            Err(FrameError::Io(e)) => {
                log::debug!("connection from {who} ({sender_name}): {e}");
                break;
            }
            Err(e) => {
                log::warn!("connection from {who} {sender_name}: {e}; closing this connection");
                break;
            }
        }
        match Frame::decode(&buf) {
            Ok(f) => {
                if sender_name != f.sender {
                    sender_name = f.sender.clone();
                    log::debug!("connection from {who} is {sender_name}");
                }
                let ack = AckHandle { tx: ack_tx.clone(), seq: f.seq };
                if tx.send(Input::Points { points: f.points, ack: Some(ack) }).is_err() {
                    break;
                }
            }
            Err(e) => {
                log::warn!("connection from {who} {sender_name}: {e}; closing this connection");
                break;
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn write_acks(stream: UnixStream, rx: Receiver<Ack>) {
    let mut out = BufWriter::new(stream);
    while let Ok(ack) = rx.recv() {
        if frame::write_ack(&mut out, ack).is_err() {
            return;
        }
        // Write everything already waiting in one go, then flush.
        while let Ok(more) = rx.try_recv() {
            if frame::write_ack(&mut out, more).is_err() {
                return;
            }
        }
        if out.flush().is_err() {
            return;
        }
    }
}
