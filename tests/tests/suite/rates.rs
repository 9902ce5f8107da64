//! Rates computed by the shipper, end to end into InfluxDB: two readings give the right rate; a
//! first sample and a counter reset give no point.

use std::time::Duration;

use puypuy_common::client::SenderClient;
use puypuy_common::Point;
use puypuy_tests::{wait_for, Agent, Influx};
use serde_json::Value as Json;

#[test]
fn counters_become_rates_first_sample_and_reset_give_nothing() {
    let influx = Influx::start(false);
    let agent =
        Agent::new("", &format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}\n", influx.url(), Influx::DB));
    let _shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "test", 100);
    let t0 = 1_700_000_000u64;
    let counter = |v: i64, t: u64| Point::int("test_counter", t, v, "test").rate();
    // first sample: nothing; +300 in 10 s: 30/s; reset: nothing; +50 in 10 s after re-base: 5/s;
    // a resent sample (same timestamp): nothing.
    // Each frame carries a marker of its own time, so that InfluxDB keeps all five. Regression:
    // the markers had the counter's time, the resent sample's marker overwrote its twin, and the
    // test said five but waited for four: it would have passed with the fifth frame lost.
    let samples = [(1000, t0), (1300, t0 + 10), (7, t0 + 20), (57, t0 + 30), (57, t0 + 30)];
    for (i, (v, t)) in (0u64..).zip(samples) {
        client.send(vec![counter(v, t), Point::int("test_marker", t0 + 100 + i, v, "test")]);
    }
    assert!(client.flush(Duration::from_secs(10)), "not acknowledged; shipper log:\n{}", agent.log());
    let markers = wait_for(Duration::from_secs(10), "all five markers", || {
        let m: Vec<u64> = influx.points("test_marker").into_iter().map(|p| p.0 - t0).collect();
        (m.len() >= 5).then_some(m)
    });
    assert_eq!(markers, [100, 101, 102, 103, 104], "one marker per frame");
    let points = influx.points("test_counter");
    let got: Vec<(u64, Option<f64>)> = points.iter().map(|(t, v, _)| (*t, v.as_f64())).collect();
    assert_eq!(got, vec![(t0 + 10, Some(30.0)), (t0 + 30, Some(5.0))]);
    let (_, fields) = influx.select("SHOW FIELD KEYS FROM test_counter");
    assert_eq!(fields[0][1], Json::from("float"), "a rate is always a float field");
    assert_eq!(points[0].2["type"], "test");
}
