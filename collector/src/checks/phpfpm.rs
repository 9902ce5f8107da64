//! php-fpm status page in JSON (`[PhpFPM] address stats auth user pass`; `?json` is added):
//! counter `phpfpm_accepted_conn` (sent as a rate) and gauges `phpfpm_listen_queue
//! phpfpm_max_listen_queue phpfpm_listen_queue_len phpfpm_idle_processes phpfpm_active_processes
//! phpfpm_total_processes phpfpm_max_active_processes phpfpm_max_children_reached
//! phpfpm_slow_requests phpfpm_start_since`.

use super::service::Metrics;

const GAUGES: [&str; 10] = [
    "listen queue",
    "max listen queue",
    "listen queue len",
    "idle processes",
    "active processes",
    "total processes",
    "max active processes",
    "max children reached",
    "slow requests",
    "start since",
];

pub fn parse(text: &str, m: &mut Metrics) -> Result<(), String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let accepted = json["accepted conn"].as_i64().ok_or("no \"accepted conn\"")?;
    m.counter("phpfpm_accepted_conn", accepted);
    for key in GAUGES {
        if let Some(v) = json[key].as_i64() {
            m.int(format!("phpfpm_{}", key.replace(' ', "_")), v);
        }
    }
    Ok(())
}
