//! Acknowledgements: where the ack of a frame (or of a relay request) goes once its points are
//! delivered, spooled, refused or dropped. A producer keeps a frame until its ack arrives, so this
//! is what makes a frame's points the shipper's responsibility.
//!
//! The connection side ([`AckSocket`]) lives here rather than in `receive`, so that the socket
//! reader and the delivery loop both depend on this module and not on each other.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use puypuy_common::frame::Ack;

/// Where the ack of one frame goes.
pub enum AckTo {
    /// A waiting relay request.
    Channel(Sender<Ack>),
    /// The producer connection the frame came on.
    Socket(Arc<AckSocket>),
    /// One part of a frame whose points went to several destinations: see [`JointAck`].
    Joint(Arc<JointAck>),
}

/// The ack of a frame whose points were split between destinations (the servers of a Carbon ring,
/// several outputs). Each destination acknowledges its part; the frame's own ack goes out once
/// every part was, with the worst status of the parts (dropped, else refused, else delivered:
/// the statuses' order). A part never acknowledged (its destination stopped holding it) leaves the
/// frame unacknowledged, and the producer resends it.
pub struct JointAck {
    frame: std::sync::Mutex<Option<AckHandle>>,
    remaining: AtomicUsize,
    worst: AtomicU8,
}

impl JointAck {
    /// `parts` handles (at least one) that together acknowledge `frame`.
    pub fn split(frame: AckHandle, parts: usize) -> Vec<AckHandle> {
        if parts <= 1 {
            return vec![frame];
        }
        let seq = frame.seq;
        let joint = Arc::new(JointAck {
            frame: std::sync::Mutex::new(Some(frame)),
            remaining: AtomicUsize::new(parts),
            worst: AtomicU8::new(0),
        });
        (0..parts).map(|_| AckHandle { to: AckTo::Joint(Arc::clone(&joint)), seq }).collect()
    }

    fn part_done(&self, status: u8) {
        self.worst.fetch_max(status, Ordering::AcqRel);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let frame = self.frame.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(frame) = frame {
                frame.ack(self.worst.load(Ordering::Acquire));
            }
        }
    }
}

pub struct AckHandle {
    pub to: AckTo,
    pub seq: u64,
}

impl AckHandle {
    pub fn ack(self, status: u8) {
        // The connection may be gone; the producer then resends and the duplicate is harmless.
        let ack = Ack::new(self.seq, status);
        match self.to {
            AckTo::Channel(tx) => {
                let _ = tx.send(ack);
            }
            AckTo::Socket(socket) => socket.send(ack),
            AckTo::Joint(joint) => joint.part_done(status),
        }
    }
}

/// The ack side of one producer connection. The delivery thread writes an ack straight into the
/// socket when that cannot block (`MSG_DONTWAIT`), which is nearly always: it saves waking a
/// thread for every batch, and a wake-up costs more CPU than the write on small hosts. When the
/// producer does not read its acks fast enough, what could not be written waits in `backlog` and
/// the connection's ack thread writes it, blocking, so a stuck producer never holds up delivery.
/// Bytes always leave in order: nothing is written directly while the thread has bytes in hand.
pub struct AckSocket {
    stream: UnixStream,
    state: std::sync::Mutex<AckBacklog>,
    wake: Sender<()>,
}

#[derive(Default)]
struct AckBacklog {
    bytes: Vec<u8>,
    /// The ack thread is writing bytes it took from `bytes`.
    writing: bool,
    /// The connection failed; acks are dropped (the producer resends on its next connection).
    broken: bool,
}

impl AckSocket {
    /// The ack side of `stream`, with its thread.
    pub fn start(stream: &UnixStream) -> std::io::Result<Arc<AckSocket>> {
        let (direct, blocking) = (stream.try_clone()?, stream.try_clone()?);
        let (wake, woken) = crossbeam_channel::bounded::<()>(1);
        let acks = Arc::new(AckSocket { stream: direct, state: Default::default(), wake });
        let weak = Arc::downgrade(&acks);
        thread::Builder::new().name("acks".into()).spawn(move || write_backlog(weak, blocking, woken))?;
        Ok(acks)
    }

    pub fn send(&self, ack: Ack) {
        use std::os::fd::AsRawFd;
        let mut bytes = Vec::with_capacity(15);
        ack.encode(&mut bytes);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.broken {
            return;
        }
        if state.bytes.is_empty() && !state.writing {
            let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL;
            match nix::sys::socket::send(self.stream.as_raw_fd(), &bytes, flags) {
                Ok(n) if n == bytes.len() => return,
                Ok(n) => {
                    bytes.drain(..n);
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    state.broken = true;
                    return;
                }
            }
        }
        state.bytes.extend_from_slice(&bytes);
        drop(state);
        let _ = self.wake.try_send(());
    }
}

/// The connection's ack thread. It holds the socket weakly: once the connection's reader and every
/// frame awaiting its ack let go of it, the wake-up channel closes and the thread ends.
fn write_backlog(socket: std::sync::Weak<AckSocket>, mut writer: UnixStream, rx: Receiver<()>) {
    while rx.recv().is_ok() {
        let Some(socket) = socket.upgrade() else { return };
        loop {
            let chunk = {
                let mut state = socket.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.bytes.is_empty() {
                    state.writing = false;
                    break;
                }
                state.writing = true;
                std::mem::take(&mut state.bytes)
            };
            if writer.write_all(&chunk).is_err() {
                let mut state = socket.state.lock().unwrap_or_else(|e| e.into_inner());
                state.broken = true;
                state.writing = false;
                state.bytes.clear();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_split_frame_is_acknowledged_once_every_part_was_with_the_worst_status() {
        use puypuy_common::frame::{ACK_DELIVERED, ACK_DROPPED, ACK_REJECTED};
        for (parts, expected) in [
            (vec![ACK_DELIVERED, ACK_DELIVERED, ACK_DELIVERED], ACK_DELIVERED),
            (vec![ACK_DELIVERED, ACK_REJECTED, ACK_DELIVERED], ACK_REJECTED),
            (vec![ACK_REJECTED, ACK_DROPPED], ACK_DROPPED),
        ] {
            let (tx, rx) = crossbeam_channel::unbounded();
            let handles = JointAck::split(AckHandle { to: AckTo::Channel(tx), seq: 9 }, parts.len());
            let last = parts.len() - 1;
            for (i, (h, status)) in handles.into_iter().zip(parts).enumerate() {
                h.ack(status);
                let got: Vec<(u64, u8)> = rx.try_iter().map(|a| (a.seq, a.status)).collect();
                if i < last {
                    assert!(got.is_empty(), "acknowledged before its last part");
                } else {
                    assert_eq!(got, vec![(9, expected)]);
                }
            }
        }
    }

    #[test]
    fn acks_to_a_producer_that_does_not_read_never_block_and_arrive_in_order() {
        let (ours, mut producer) = UnixStream::pair().expect("pair");
        let acks = AckSocket::start(&ours).expect("start");
        // Far more than a socket buffer holds, while the producer reads nothing: every call must
        // return (the test would hang otherwise) and the rest wait in the backlog.
        let n = 100_000u64;
        for seq in 0..n {
            acks.send(Ack::new(seq, (seq % 3) as u8));
        }
        assert!(!acks.state.lock().expect("lock").bytes.is_empty() || acks.state.lock().expect("lock").writing);
        let mut got = vec![0u8; 15 * n as usize];
        producer.read_exact(&mut got).expect("all acks");
        for (seq, chunk) in got.chunks(15).enumerate() {
            let mut expected = Vec::new();
            Ack::new(seq as u64, (seq % 3) as u8).encode(&mut expected);
            assert_eq!(chunk, &expected[..], "ack {seq}");
        }
        // Once every holder lets go, the ack thread ends and closes its copy of the socket.
        drop(acks);
        drop(ours);
        let mut rest = Vec::new();
        producer.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("timeout");
        assert_eq!(producer.read_to_end(&mut rest).expect("eof"), 0);
    }
}
