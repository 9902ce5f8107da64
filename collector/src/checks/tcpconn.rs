//! tcpconn: connections per state from `/proc/net/tcp` and `/proc/net/tcp6` (IPv4 and IPv6
//! together), every state sent even when zero.

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

pub fn collect(ctx: &Context) -> Result<Vec<Point>, String> {
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
