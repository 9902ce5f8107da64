//! nginx `stub_status` (`[NginX] address stats auth user pass`): gauges `nginx_connections
//! nginx_reading nginx_writing nginx_waiting`, counters (sent as rates) `nginx_accept
//! nginx_handled nginx_requests`.

use super::service::{int_of, Metrics};

pub fn parse(text: &str, m: &mut Metrics) -> Result<(), String> {
    let mut lines = text.lines();
    let active = lines
        .next()
        .and_then(|l| l.strip_prefix("Active connections:"))
        .and_then(int_of)
        .ok_or("no \"Active connections\" line")?;
    let _header = lines.next();
    let counts: Vec<i64> = lines.next().ok_or("no counters line")?.split_whitespace().filter_map(int_of).collect();
    let [accepts, handled, requests] = counts[..] else {
        return Err("counters line is not \"accepts handled requests\"".into());
    };
    let states: Vec<&str> = lines.next().ok_or("no Reading/Writing/Waiting line")?.split_whitespace().collect();
    let state =
        |key: &str| states.iter().position(|s| *s == key).and_then(|i| states.get(i + 1)).and_then(|v| int_of(v));
    let (Some(reading), Some(writing), Some(waiting)) = (state("Reading:"), state("Writing:"), state("Waiting:"))
    else {
        return Err("bad Reading/Writing/Waiting line".into());
    };
    m.int("nginx_connections", active);
    m.int("nginx_reading", reading);
    m.int("nginx_writing", writing);
    m.int("nginx_waiting", waiting);
    m.counter("nginx_accept", accepts);
    m.counter("nginx_handled", handled);
    m.counter("nginx_requests", requests);
    Ok(())
}
