//! ipconntrack: `conntrack_cur` and `conntrack_max` from `/proc/sys/net/netfilter`; nothing at all
//! (and no error) when the kernel has no conntrack module loaded.

use puypuy_common::Point;

use crate::context::Context;

pub fn collect(ctx: &Context) -> Result<Vec<Point>, String> {
    let read = |name: &str| -> Option<Result<i64, String>> {
        let text = ctx.read_proc(&format!("sys/net/netfilter/{name}")).ok()?;
        Some(text.trim().parse().map_err(|_| format!("bad number {:?} in {name}", text.trim())))
    };
    match (read("nf_conntrack_count"), read("nf_conntrack_max")) {
        (Some(cur), Some(max)) => Ok(vec![ctx.int("conntrack_cur", cur?), ctx.int("conntrack_max", max?)]),
        _ => Ok(Vec::new()),
    }
}
