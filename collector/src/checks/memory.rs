//! memory: `/proc/meminfo` in bytes — `mem_total mem_available mem_buffers mem_cached mem_active
//! mem_inactive` (integers) and `mem_used_percent` = (total − available) / total × 100 (float).

use puypuy_common::Point;

use crate::context::{round2, Context};

const FIELDS: [(&str, &str); 6] = [
    ("MemTotal", "mem_total"),
    ("MemAvailable", "mem_available"),
    ("Buffers", "mem_buffers"),
    ("Cached", "mem_cached"),
    ("Active", "mem_active"),
    ("Inactive", "mem_inactive"),
];

/// `(metric name, bytes)` for each known field present.
pub fn parse(meminfo: &str) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for (field, name) in FIELDS {
        let value = meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            let kb: i64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kb * 1024)
        });
        if let Some(v) = value {
            out.push((name, v));
        }
    }
    out
}

pub fn collect(ctx: &Context) -> Result<Vec<Point>, String> {
    let text = ctx.read_proc("meminfo").map_err(|e| format!("cannot read meminfo: {e}"))?;
    let values = parse(&text);
    if values.is_empty() {
        return Err("no known field in meminfo".into());
    }
    let get = |n: &str| values.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    let mut points: Vec<Point> = values.iter().map(|(name, v)| ctx.int(*name, *v)).collect();
    if let (Some(total), Some(available)) = (get("mem_total"), get("mem_available")) {
        if total > 0 {
            points.push(ctx.float("mem_used_percent", round2((total - available) as f64 * 100.0 / total as f64)));
        }
    }
    Ok(points)
}
