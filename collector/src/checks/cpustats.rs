//! cpustats: the first line of `/proc/stat` (all CPUs together) as counters `cpu_user cpu_nice
//! cpu_system cpu_idle cpu_iowait cpu_irq cpu_softirq`, in jiffies (USER_HZ = 100 per second), so
//! their rates are in percent of one CPU summed over all CPUs (200 = two CPUs fully in that state).

use puypuy_common::Point;

use crate::context::Context;

pub const NAMES: [&str; 7] = ["cpu_user", "cpu_nice", "cpu_system", "cpu_idle", "cpu_iowait", "cpu_irq", "cpu_softirq"];

/// The seven jiffy counters of the aggregate `cpu` line.
pub fn parse(stat: &str) -> Result<[i64; 7], String> {
    let line = stat.lines().find(|l| l.starts_with("cpu ")).ok_or("no aggregate cpu line in /proc/stat")?;
    let mut values = [0i64; 7];
    let mut fields = line.split_whitespace().skip(1);
    for v in values.iter_mut() {
        let field = fields.next().ok_or("short cpu line in /proc/stat")?;
        *v = field.parse().map_err(|_| format!("bad number {field:?} in /proc/stat"))?;
    }
    Ok(values)
}

pub fn collect(ctx: &Context) -> Result<Vec<Point>, String> {
    let text = ctx.read_proc("stat").map_err(|e| format!("cannot read stat: {e}"))?;
    let values = parse(&text)?;
    Ok(NAMES.iter().zip(values).map(|(name, v)| ctx.counter(*name, v)).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_aggregate_line() {
        let text = "cpu  10 20 30 40 50 60 70 0 0 0\ncpu0 1 2 3 4 5 6 7 0 0 0\nintr 1\n";
        assert_eq!(super::parse(text).expect("parses"), [10, 20, 30, 40, 50, 60, 70]);
        assert!(super::parse("intr 1\n").is_err());
    }
}
