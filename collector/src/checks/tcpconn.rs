//! tcpconn: connections per state, IPv4 and IPv6 together, every state sent even when zero.
//!
//! On the live system the counts come from netlink `sock_diag` dumps (IPv4, then IPv6): reading
//! `/proc/net/tcp` and `/proc/net/tcp6` makes the kernel walk its whole TCP hash table (sized by
//! RAM, not by the number of sockets) in small steps, which cost ~10 ms per cycle on a 24 GiB
//! host; the netlink dump walks it in one go. With a recorded proc root, or when netlink is refused, the two files
//! are parsed instead.

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
    dump(libc::AF_INET as u8, &mut counts)?;
    dump(libc::AF_INET6 as u8, &mut counts)?;
    Some(counts)
}

fn dump(family: u8, counts: &mut [i64; 11]) -> Option<()> {
    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_DONE: u16 = 3;
    const NLMSG_ERROR: u16 = 2;
    // SAFETY: plain socket calls on an fd owned here and closed on every path; buffers are
    // sized and only read within what recv returned.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if fd < 0 {
            return None;
        }
        let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes)
        let mut req = [0u8; 72];
        req[0..4].copy_from_slice(&72u32.to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
        req[8..12].copy_from_slice(&1u32.to_ne_bytes());
        req[16] = family;
        req[17] = libc::IPPROTO_TCP as u8;
        req[20..24].copy_from_slice(&0xfffu32.to_ne_bytes());
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd,
            req.as_ptr() as *const libc::c_void,
            req.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        if sent < 0 {
            libc::close(fd);
            return None;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
            if n <= 0 {
                libc::close(fd);
                return None;
            }
            let data = &buf[..n as usize];
            let mut off = 0usize;
            while off + 16 <= data.len() {
                let len = u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
                let kind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
                if len < 16 || off + len > data.len() {
                    break;
                }
                match kind {
                    NLMSG_DONE => {
                        libc::close(fd);
                        return Some(());
                    }
                    NLMSG_ERROR => {
                        libc::close(fd);
                        return None;
                    }
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
        if let Ok(text) = ctx.read_proc(file) {
            parse(&text, &mut counts);
            read_any = true;
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

    #[test]
    fn netlink_and_proc_agree_on_listening_sockets() {
        // A listener of our own, so that both views have at least one LISTEN socket to count.
        let _l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let netlink = netlink_counts().expect("sock_diag works on Linux");
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
