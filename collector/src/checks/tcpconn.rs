//! tcpconn: connections per state, IPv4 and IPv6 together, every state sent even when zero.
//!
//! On the live system the counts come from netlink `sock_diag` dumps (IPv4, then IPv6): reading
//! `/proc/net/tcp` and `/proc/net/tcp6` makes the kernel walk its whole TCP hash table (sized by
//! RAM, not by the number of sockets) in small steps, which cost ~10 ms per cycle on a 24 GiB
//! host; the netlink dump walks it in one go. With a recorded proc root, or when netlink is refused, the two files
//! are parsed instead. The dump goes through nix's socket calls: no `unsafe`, and the socket is an
//! `OwnedFd`, closed however the dump ends.

use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recv, sendto, setsockopt, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use puypuy_common::Point;

use crate::context::Context;

/// State names in kernel order: state code `i + 1` is `STATES[i]`.
pub const STATES: [&str; 11] = [
    "tcp_established",
    "tcp_syn_sent",
    "tcp_syn_recv",
    "tcp_fin_wait1",
    "tcp_fin_wait2",
    "tcp_time_wait",
    "tcp_close",
    "tcp_close_wait",
    "tcp_last_ack",
    "tcp_listen",
    "tcp_closing",
];

/// Adds the connections of one table to `counts`.
pub fn parse(table: &str, counts: &mut [i64; 11]) {
    for line in table.lines().skip(1) {
        let Some(st) = line.split_whitespace().nth(3) else { continue };
        if let Ok(code) = u8::from_str_radix(st, 16) {
            if (1..=11).contains(&code) {
                counts[code as usize - 1] += 1;
            }
        }
    }
}

/// Counts per state through NETLINK_SOCK_DIAG, IPv4 and IPv6; `None` when the kernel refuses.
pub fn netlink_counts() -> Option<[i64; 11]> {
    let mut counts = [0i64; 11];
    dump(AddressFamily::Inet, &mut counts)?;
    dump(AddressFamily::Inet6, &mut counts)?;
    Some(counts)
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;

/// The `SOCK_DIAG_BY_FAMILY` dump request for every TCP socket of one family: an `nlmsghdr`
/// (16 bytes) followed by an `inet_diag_req_v2` (56 bytes) whose state mask has all 12 bits set.
fn dump_request(family: AddressFamily) -> [u8; 72] {
    let mut req = [0u8; 72];
    req[0..4].copy_from_slice(&72u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = family as i32 as u8;
    req[17] = libc::IPPROTO_TCP as u8;
    req[20..24].copy_from_slice(&0xfffu32.to_ne_bytes());
    req
}

/// Where one datagram of a dump leaves the dump.
#[derive(Debug, PartialEq, Eq)]
enum DumpState {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE`: every socket was counted.
    Done,
    /// `NLMSG_ERROR`: the kernel refused the request.
    Refused,
}

/// Adds the sockets of one datagram of a dump to `counts`: each `inet_diag_msg` carries the state
/// in its second byte, after the 16 bytes of its `nlmsghdr`.
fn count_datagram(data: &[u8], counts: &mut [i64; 11]) -> DumpState {
    let mut off = 0usize;
    while off + 16 <= data.len() {
        let len = u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        let kind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
        if len < 16 || off + len > data.len() {
            break;
        }
        match kind {
            NLMSG_DONE => return DumpState::Done,
            NLMSG_ERROR => return DumpState::Refused,
            SOCK_DIAG_BY_FAMILY if len >= 18 => {
                let state = data[off + 17];
                if (1..=11).contains(&state) {
                    counts[state as usize - 1] += 1;
                }
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    DumpState::More
}

/// One dump over a socket of its own, closed when it is dropped (on every path out).
fn dump(family: AddressFamily, counts: &mut [i64; 11]) -> Option<()> {
    let socket = nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    // Without the timeout a kernel that never ends the dump would hang the check: no socket
    // then, the /proc files instead.
    setsockopt(&socket, sockopt::ReceiveTimeout, &TimeVal::new(2, 0)).ok()?;
    let request = dump_request(family);
    sendto(socket.as_raw_fd(), &request, &NetlinkAddr::new(0, 0), MsgFlags::empty()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
        if n == 0 {
            return None;
        }
        match count_datagram(&buf[..n], counts) {
            DumpState::More => {}
            DumpState::Done => return Some(()),
            DumpState::Refused => return None,
        }
    }
}

pub fn collect(ctx: &Context) -> Result<Vec<Point>, String> {
    if ctx.proc_root == std::path::Path::new("/proc") {
        if let Some(counts) = netlink_counts() {
            return Ok(STATES.iter().zip(counts).map(|(name, n)| ctx.int(*name, n)).collect());
        }
    }
    let mut counts = [0i64; 11];
    let mut read_any = false;
    for file in ["net/tcp", "net/tcp6"] {
        match ctx.read_proc(file) {
            Ok(text) => {
                parse(&text, &mut counts);
                read_any = true;
            }
            // No IPv6 (or no IPv4) in this kernel: the other table has every connection.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Counts from one table only would look right and be wrong.
            Err(e) => return Err(format!("cannot read {file}: {e}")),
        }
    }
    if !read_any {
        return Err("cannot read net/tcp nor net/tcp6".into());
    }
    Ok(STATES.iter().zip(counts).map(|(name, n)| ctx.int(*name, n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message: header (length, type, flags, seq, pid) then `body`, padded to 4 bytes.
    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = 16 + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(body);
        m.resize((len + 3) & !3, 0);
        m
    }

    #[test]
    fn datagram_counts_each_socket_by_state_until_done() {
        let mut data = message(SOCK_DIAG_BY_FAMILY, &[2, 10, 0, 0, 0]);
        data.extend(message(SOCK_DIAG_BY_FAMILY, &[10, 1, 0]));
        data.extend(message(SOCK_DIAG_BY_FAMILY, &[2, 10]));
        let mut counts = [0i64; 11];
        assert_eq!(count_datagram(&data, &mut counts), DumpState::More);
        assert_eq!((counts[9], counts[0]), (2, 1));
        assert_eq!(count_datagram(&message(NLMSG_DONE, &[0; 4]), &mut counts), DumpState::Done);
        assert_eq!(count_datagram(&message(NLMSG_ERROR, &[0; 4]), &mut counts), DumpState::Refused);
    }

    #[test]
    fn datagram_stops_at_a_message_longer_than_what_was_received() {
        let mut data = message(SOCK_DIAG_BY_FAMILY, &[2, 1]);
        data[0] = 200;
        let mut counts = [0i64; 11];
        assert_eq!(count_datagram(&data, &mut counts), DumpState::More);
        assert_eq!(counts, [0; 11]);
    }

    #[test]
    fn dump_request_asks_for_every_tcp_state_of_the_family() {
        let req = dump_request(AddressFamily::Inet6);
        assert_eq!(u32::from_ne_bytes([req[0], req[1], req[2], req[3]]), 72);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!((req[16], req[17]), (libc::AF_INET6 as u8, libc::IPPROTO_TCP as u8));
        assert_eq!(u32::from_ne_bytes([req[20], req[21], req[22], req[23]]), 0xfff);
    }

    #[test]
    fn netlink_and_proc_agree_on_listening_sockets() {
        // A listener of our own, so that both views have at least one LISTEN socket to count.
        let _l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a listener");
        let netlink = netlink_counts().expect(
            "NETLINK_SOCK_DIAG answered (the check falls back to /proc/net/tcp without it, but this test compares the two: run it where netlink sockets are allowed)",
        );
        let mut proc = [0i64; 11];
        for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(t) = std::fs::read_to_string(f) {
                parse(&t, &mut proc);
            }
        }
        assert!(netlink[9] >= 1);
        // Other processes may open or close listeners in between; listeners are stable enough.
        assert!((netlink[9] - proc[9]).abs() <= 2, "netlink {netlink:?} vs proc {proc:?}");
    }
}
