//! Apache `mod_status` machine-readable page (`[Apache] url auth user pass`, `?auto`). Old names:
//! counters `apache_totalaccesses apache_totalkbytes` (sent as rates), gauges `apache_reqpersec
//! apache_bytespersec apache_bytesperreq` (floats), `apache_busyworkers apache_idleworkers`; new:
//! `apache_connstotal apache_uptime`.

use super::service::{int_of, Metrics};

pub fn parse(text: &str, m: &mut Metrics) -> Result<(), String> {
    let get = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim));
    let accesses = get("Total Accesses").and_then(int_of).ok_or("no \"Total Accesses\" (is ExtendedStatus on?)")?;
    m.counter("apache_totalaccesses", accesses);
    if let Some(kb) = get("Total kBytes").and_then(int_of) {
        m.counter("apache_totalkbytes", kb);
    }
    for (key, name) in [
        ("ReqPerSec", "apache_reqpersec"),
        ("BytesPerSec", "apache_bytespersec"),
        ("BytesPerReq", "apache_bytesperreq"),
    ] {
        // Apache omits these while they are zero, and prints ".5" for 0.5.
        let v = get(key).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        m.float(name, v);
    }
    for (key, name) in [
        ("BusyWorkers", "apache_busyworkers"),
        ("IdleWorkers", "apache_idleworkers"),
        ("ConnsTotal", "apache_connstotal"),
        ("Uptime", "apache_uptime"),
    ] {
        if let Some(v) = get(key).and_then(int_of) {
            m.int(name, v);
        }
    }
    Ok(())
}
