//! load_average: `/proc/loadavg` as `sys_load_1 sys_load_5 sys_load_15` (floats).

use puypuy_common::Point;

use crate::context::Context;

pub fn parse(loadavg: &str) -> Result<[f64; 3], String> {
    let mut it = loadavg.split_whitespace();
    let mut out = [0.0; 3];
    for v in out.iter_mut() {
        let field = it.next().ok_or("short /proc/loadavg")?;
        *v = field.parse().map_err(|_| format!("bad number {field:?} in /proc/loadavg"))?;
    }
    Ok(out)
}

pub fn collect(ctx: &Context) -> Result<Vec<Point>, String> {
    let text = ctx.read_proc("loadavg").map_err(|e| format!("cannot read loadavg: {e}"))?;
    let [a, b, c] = parse(&text)?;
    Ok(vec![ctx.float("sys_load_1", a), ctx.float("sys_load_5", b), ctx.float("sys_load_15", c)])
}
