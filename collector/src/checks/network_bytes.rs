//! network_bytes: `/proc/net/dev` as counters `bytes_rx_IFACE bytes_tx_IFACE` (rates in bytes per
//! second), every interface but `lo`.

use puypuy_common::Point;

use crate::context::Context;

/// `(interface, rx bytes, tx bytes)`.
pub fn parse(dev: &str) -> Vec<(String, i64, i64)> {
    dev.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let fields: Vec<i64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            if fields.len() < 16 {
                return None;
            }
            Some((name.trim().to_string(), fields[0], fields[8]))
        })
        .filter(|(name, _, _)| name != "lo")
        .collect()
}

pub fn collect(ctx: &Context) -> Result<Vec<Point>, String> {
    let text = ctx.read_proc("net/dev").map_err(|e| format!("cannot read net/dev: {e}"))?;
    let mut points = Vec::new();
    for (iface, rx, tx) in parse(&text) {
        points.push(ctx.counter(format!("bytes_rx_{iface}"), rx));
        points.push(ctx.counter(format!("bytes_tx_{iface}"), tx));
    }
    Ok(points)
}
