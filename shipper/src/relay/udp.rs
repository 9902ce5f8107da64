//! The relay's UDP input: Graphite plaintext, one or more lines per datagram. Nothing is
//! acknowledged over UDP; points of one datagram go to the pipeline together. A datagram from a
//! peer outside the input's `allow` list is dropped unread and counted in `refused`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::Sender;
use puypuy_common::config::relay::Door;

use super::graphite;
use super::inputs::{handle_line, InputStats};
use crate::batch::Input;

pub(crate) fn start(addr: SocketAddr, door: Door, tx: Sender<Input>, stats: Arc<InputStats>) -> Result<(), String> {
    let socket = UdpSocket::bind(addr).map_err(|e| format!("[Relay] cannot listen on UDP {addr}: {e}"))?;
    thread::Builder::new()
        .name("relay-udp".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                let peer = from.to_string();
                if !door.admits(from.ip()) {
                    stats.refuse(&peer, "not in the input's allow list (UDP datagram dropped)");
                    continue;
                }
                let mut points = Vec::new();
                let now = super::inputs::now();
                for line in buf[..n].split(|b| *b == b'\n') {
                    let _ = handle_line(Ok(line), graphite::parse_plain, &stats, &peer, &mut points, 65_536, now);
                }
                if !points.is_empty() && tx.send(Input::Points { points, ack: None }).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
