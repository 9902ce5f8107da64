//! HAProxy stats CSV (`[HAProxy] url auth user pass upstream`), one set per frontend, backend and
//! server row, with the tag `proxy` (the proxy's name). Old names, per row: `haproxy_sessions_SV`
//! (current sessions) and `haproxy_connrate_SV` (sessions per second over the last second), where
//! SV is the server name, or `frontend` / `backend`; new: counters (sent as rates)
//! `haproxy_sessions_total_SV haproxy_bytes_in_SV haproxy_bytes_out_SV`, and `haproxy_queue_SV`.
//! `upstream: a,b` keeps the rows whose proxy or server name is listed (the old filter); empty
//! keeps all.

use super::service::{int_of, Metrics};

pub fn parse(text: &str, upstream: &[String], m: &mut Metrics) -> Result<(), String> {
    let mut lines = text.lines();
    let header = lines.next().and_then(|h| h.strip_prefix("# ")).ok_or("no \"# pxname,svname,…\" header")?;
    let columns: Vec<&str> = header.split(',').collect();
    let col = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(px), Some(sv)) = (col("pxname"), col("svname")) else { return Err("header lacks pxname/svname".into()) };
    let (scur, rate, stot, bin, bout, qcur) =
        (col("scur"), col("rate"), col("stot"), col("bin"), col("bout"), col("qcur"));
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(proxy), Some(server)) = (f.get(px), f.get(sv)) else { continue };
        if !upstream.is_empty() && !upstream.iter().any(|u| u == proxy || u == server) {
            continue;
        }
        let name = match *server {
            "FRONTEND" => "frontend".to_string(),
            "BACKEND" => "backend".to_string(),
            s => s.to_string(),
        };
        let value = |c: Option<usize>| c.and_then(|i| f.get(i)).and_then(|v| int_of(v));
        let tags = [("proxy", *proxy)];
        for (metric, column, counter) in [
            ("sessions", scur, false),
            ("connrate", rate, false),
            ("queue", qcur, false),
            ("sessions_total", stot, true),
            ("bytes_in", bin, true),
            ("bytes_out", bout, true),
        ] {
            if let Some(v) = value(column) {
                let full = format!("haproxy_{metric}_{name}");
                if counter {
                    m.counter_tagged(full, v, &tags);
                } else {
                    m.int_tagged(full, v, &tags);
                }
            }
        }
    }
    Ok(())
}
