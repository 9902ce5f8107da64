//! Conservation of points through the batcher and the delivery loop, against the scripted backend
//! of `fake_transport`: every point received is sent, spooled, rejected, dropped (counted), left
//! unacknowledged with its producer at the stop (counted), or makes no point because it is a rate
//! sample (first of its series, a reset, not newer) or invalid (counted); none is lost, and none
//! is sent twice.
//!
//! # Duplicates
//! Within one lifetime of the shipper a point the backend accepted is never sent again: a spool
//! file is deleted once accepted, and a batch sent in several requests (over the backend's
//! `max_points`) or split after a refusal keeps track of the parts already accepted when the
//! backend then fails or refuses a later part. A duplicate needs the evidence of a delivery to be
//! lost: a crash between the backend's acceptance and the spool file's deletion (the file is
//! replayed at the next start), an ack lost with its connection or with a crashed shipper (the
//! producer resends the frame), or a backend that stored a request whose answer never came (a
//! timeout, which the shipper cannot tell from a failure). The backends overwrite the same series
//! and timestamp, so such a duplicate is harmless.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use puypuy_common::frame::{Ack, ACK_DELIVERED, ACK_DROPPED, ACK_REJECTED};
use puypuy_common::Point;

use crate::ack::{AckHandle, AckTo};
use crate::batch::{run_batcher, BatcherSettings, Input};
use crate::delivery::{Backoff, Delivery, DeliverySettings};
use crate::fake_transport::{is_bad, Answer, FakeBackend, Refusal};
use crate::rate::RateState;
use crate::rejected::RejectedDir;
use crate::spool::{DropPolicy, Spool};
use crate::stats::{Balance, Stats};

/// One point of a generated input.
#[derive(Debug, Clone)]
enum Gen {
    /// A gauge, refused by the backend when `bad`.
    Gauge { bad: bool },
    /// The next sample of counter `series`: `dt` seconds later (0: not newer), `dv` more (< 0: a
    /// reset).
    Counter { series: u8, dt: u64, dv: i64 },
    /// NaN: refused on arrival.
    Invalid,
}

/// A generated run: inputs (a frame each, or the shipper's own self-metrics), the backend's
/// answers, how it refuses bad points, and whether the spool can be written.
#[derive(Debug, Clone)]
struct Scenario {
    inputs: Vec<(bool, Vec<Gen>)>,
    answers: Vec<Answer>,
    refusal: Refusal,
    spool_writable: bool,
    max_batches: usize,
    batch_points: usize,
    /// The most points per request of the backend (`batch_points` when the batch was made, which a
    /// batch exceeds when a frame does not fit or after a reload).
    max_points: usize,
}

fn gen() -> impl Strategy<Value = Gen> {
    prop_oneof![
        6 => prop::bool::weighted(0.1).prop_map(|bad| Gen::Gauge { bad }),
        4 => (0u8..3, prop::sample::select(vec![0u64, 1, 1, 1, 2]), -5i64..20)
            .prop_map(|(series, dt, dv)| Gen::Counter { series, dt, dv }),
        1 => Just(Gen::Invalid),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let answer = prop_oneof![6 => Just(Answer::Accept), 3 => Just(Answer::Fail), 1 => Just(Answer::Stall)];
    (
        prop::collection::vec((prop::bool::weighted(0.1), prop::collection::vec(gen(), 1..6)), 1..30),
        prop::collection::vec(answer, 0..30),
        prop_oneof![Just(Refusal::WholeRequest), Just(Refusal::PartialWrite)],
        prop::bool::weighted(0.8),
        1usize..6,
        1usize..12,
        1usize..6,
    )
        .prop_map(|(inputs, answers, refusal, spool_writable, max_batches, batch_points, max_points)| Scenario {
            inputs,
            answers,
            refusal,
            spool_writable,
            max_batches,
            batch_points,
            max_points,
        })
}

/// What identifies a point whatever the rates did to its value: name, own tags, timestamp.
type Key = (String, Vec<(String, String)>, u64);

fn key(name: &str, tags: impl Iterator<Item = (String, String)>, timestamp: u64) -> Key {
    let mut tags: Vec<(String, String)> = tags.filter(|(k, _)| k != "bad" && k != "type").collect();
    tags.sort();
    (name.to_string(), tags, timestamp)
}

fn key_of(p: &Point) -> Key {
    key(&p.name, p.tags.iter().cloned(), p.timestamp)
}

/// The key of a line of `tmpdir/rejected/` (InfluxDB line protocol, no escaping in these tests).
fn key_of_line(line: &str) -> Key {
    let (series, rest) = line.split_once(' ').unwrap_or((line, ""));
    let timestamp = rest.rsplit(' ').next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let mut parts = series.split(',');
    let name = parts.next().unwrap_or("");
    let tags = parts.filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string()));
    key(name, tags, timestamp)
}

/// The points of the scenario's inputs, with ids and timestamps made unique.
fn points_of(inputs: &[(bool, Vec<Gen>)]) -> Vec<(bool, Vec<Point>)> {
    let mut next_id = 0u64;
    let mut counters: HashMap<u8, (i64, u64)> = HashMap::new();
    let mut out = Vec::new();
    for (own, gens) in inputs {
        let mut points = Vec::new();
        for g in gens {
            next_id += 1;
            points.push(match *g {
                Gen::Gauge { bad } => {
                    let p = Point::int("g", 1_700_000_000, next_id as i64, "t").with_tag("id", next_id.to_string());
                    if bad {
                        p.with_tag("bad", "1")
                    } else {
                        p
                    }
                }
                Gen::Counter { series, dt, dv } => {
                    let (value, t) = counters.entry(series).or_insert((1000, 1_700_000_000));
                    *value = (*value + dv).max(0);
                    *t += dt;
                    Point::int("c", *t, *value, "t").with_tag("s", series.to_string()).rate()
                }
                Gen::Invalid => Point::float("g", 1_700_000_000, f64::NAN, "t").with_tag("id", next_id.to_string()),
            });
        }
        out.push((*own, points));
    }
    out
}

/// What a run left behind.
struct Outcome {
    inputs: Vec<(bool, Vec<Point>)>,
    balance: Balance,
    stats: Arc<Stats>,
    kept: Vec<Point>,
    /// How many of `kept` the backend took from requests it refused (partial writes).
    kept_from_refused: usize,
    /// Every point of a request the backend refused.
    refused: Vec<Point>,
    requests: Vec<usize>,
    spooled: Vec<Point>,
    rejected: Vec<Key>,
    acks: HashMap<u64, Vec<u8>>,
}

fn rejected_keys(dir: &Path) -> Vec<Key> {
    let Ok(files) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut keys = Vec::new();
    for f in files.flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        keys.extend(text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(key_of_line));
    }
    keys
}

/// Runs the batcher and the delivery loop on their own threads, as `main` does, feeds them the
/// inputs, stops them, and collects what the backend, the spool and `rejected/` hold.
fn run(s: &Scenario) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = FakeBackend::default();
    backend.script(s.answers.iter().copied());
    backend.state().max_points = Some(s.max_points);
    let mut spool = Spool::open(&dir.path().join("spool"), "Fake", 10_000, 1 << 30, DropPolicy::Oldest).expect("spool");
    spool.fail_writes = !s.spool_writable;
    let settings = DeliverySettings {
        max_batches: s.max_batches,
        shutdown_grace: Duration::from_secs(10),
        spool: Some(spool),
        rejected: RejectedDir::new(dir.path().join("rejected"), 10_000),
        new_transport: Arc::default(),
        backoff: Backoff { first: Duration::from_millis(1), max: Duration::from_millis(4) },
    };
    let stats = Arc::new(Stats::default());
    let delivery = Delivery::new(backend.transport(s.refusal, Duration::from_millis(2)), settings, Arc::clone(&stats));
    let (input_tx, input_rx) = crossbeam_channel::bounded::<Input>(8);
    let (batch_tx, batch_rx) = crossbeam_channel::bounded(4);
    let batcher_settings =
        BatcherSettings { batch_points: s.batch_points, batch_wait: Duration::from_millis(2), rate_file: None };
    let batcher_stats = Arc::clone(&stats);
    let batcher = std::thread::spawn(move || run_batcher(input_rx, batch_tx, batcher_settings, batcher_stats));
    let delivering = std::thread::spawn(move || delivery.run(batch_rx));
    let inputs = points_of(&s.inputs);
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<Ack>();
    for (seq, (own, points)) in inputs.iter().enumerate() {
        let input = if *own {
            Input::SelfMetrics(points.clone())
        } else {
            let ack = AckHandle { to: AckTo::Channel(ack_tx.clone()), seq: seq as u64 };
            Input::Points { points: points.clone(), ack: Some(ack) }
        };
        input_tx.send(input).expect("batcher running");
    }
    input_tx.send(Input::Shutdown).expect("batcher running");
    batcher.join().expect("batcher");
    delivering.join().expect("delivery");
    let mut acks: HashMap<u64, Vec<u8>> = HashMap::new();
    for a in ack_rx.try_iter() {
        acks.entry(a.seq).or_default().push(a.status);
    }
    let mut spool = Spool::open(&dir.path().join("spool"), "Fake", 10_000, 1 << 30, DropPolicy::Oldest).expect("spool");
    let mut spooled = Vec::new();
    while let Some(batch) = spool.oldest() {
        spooled.extend(batch.points);
        spool.remove(batch.seq);
    }
    let mut state = backend.state();
    Outcome {
        inputs,
        balance: stats.balance(),
        stats,
        kept: std::mem::take(&mut state.kept),
        kept_from_refused: state.kept_from_refused,
        refused: std::mem::take(&mut state.refused),
        requests: std::mem::take(&mut state.requests),
        spooled,
        rejected: rejected_keys(&dir.path().join("rejected")),
        acks,
    }
}

/// Checks the outcome; `Err` says what went wrong.
fn check(s: &Scenario, o: &Outcome) -> Result<(), String> {
    let b = o.balance;
    if b.accounted() != b.received {
        return Err(format!("the balance does not add up: {b}"));
    }
    let total: usize = o.inputs.iter().map(|(_, p)| p.len()).sum();
    if b.received != total as u64 {
        return Err(format!("{total} points given, {b}"));
    }
    let mut sent_count: HashMap<Key, usize> = HashMap::new();
    for p in &o.kept {
        *sent_count.entry(key_of(p)).or_default() += 1;
    }
    if let Some((k, n)) = sent_count.iter().find(|(_, n)| **n > 1) {
        return Err(format!("{k:?} sent {n} times"));
    }
    if let Some(n) = o.requests.iter().find(|n| **n > s.max_points) {
        return Err(format!("a request of {n} points, over max_points {}", s.max_points));
    }
    if let Some(p) = o.kept.iter().find(|p| is_bad(p)) {
        return Err(format!("the backend holds the bad point {:?}", key_of(p)));
    }
    // Exactly the good points were sent: what the backend holds, except the good points of
    // partial writes (InfluxDB does not say which lines it dropped: they are set aside, counted
    // rejected).
    let sent = o.stats.points_sent.load(std::sync::atomic::Ordering::Relaxed);
    if sent != (o.kept.len() - o.kept_from_refused) as u64 {
        return Err(format!(
            "points_sent {sent} is not what the backend holds ({}) less the good points of partial writes ({})",
            o.kept.len(),
            o.kept_from_refused
        ));
    }
    // Only points of requests the backend refused are set aside.
    let refused: std::collections::HashSet<Key> = o.refused.iter().map(key_of).collect();
    if let Some(k) = o.rejected.iter().find(|k| !refused.contains(k)) {
        return Err(format!("{k:?} set aside as refused, but no request holding it was refused"));
    }
    let spooled: std::collections::HashSet<Key> = o.spooled.iter().map(key_of).collect();
    let rejected: std::collections::HashSet<&Key> = o.rejected.iter().collect();
    let nothing_spooled = o.stats.points_spooled.load(std::sync::atomic::Ordering::Relaxed) == 0;
    // The rates as the batcher computes them, in the same order, tell which points exist.
    let mut oracle = RateState::new();
    for (seq, (own, points)) in o.inputs.iter().enumerate() {
        let acks = o.acks.get(&(seq as u64)).cloned().unwrap_or_default();
        if acks.len() > 1 {
            return Err(format!("input {seq} acknowledged {} times: {acks:?}", acks.len()));
        }
        let expected: Vec<Point> =
            points.iter().filter(|p| p.value.as_f64().is_finite()).filter_map(|p| oracle.apply(p.clone())).collect();
        // Dropped (counted) or still held by their producer (unacknowledged): nothing to find.
        // The self-metrics have no ack: their drops are only counted.
        let must_be_found = match acks.first() {
            Some(&ACK_DELIVERED) | Some(&ACK_REJECTED) => true,
            Some(&ACK_DROPPED) | None => false,
            Some(other) => return Err(format!("input {seq}: unknown ack status {other}")),
        };
        if !must_be_found || *own {
            continue;
        }
        for p in &expected {
            let k = key_of(p);
            if !sent_count.contains_key(&k) && !spooled.contains(&k) && !rejected.contains(&k) {
                return Err(format!("input {seq} (acked {acks:?}): {k:?} is lost"));
            }
        }
        // Its ack says what became of its own points, whatever the other frames of its batch met
        // (a point acknowledged as spooled can be refused when replayed).
        let set_aside = expected.iter().filter(|p| rejected.contains(&key_of(p))).count();
        match acks.first() {
            Some(&ACK_DELIVERED) if set_aside > 0 && nothing_spooled => {
                return Err(format!("input {seq} acked delivered, but {set_aside} of its points were set aside"));
            }
            Some(&ACK_REJECTED) if set_aside == 0 => {
                return Err(format!("input {seq} acked rejected, but none of its points was set aside"));
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    // No regression file in the tree: the cases it found are pinned as unit tests in delivery.rs.
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// See the module's documentation: every point is accounted for, none is sent twice.
    #[test]
    fn every_point_is_sent_spooled_rejected_dropped_or_a_rate_sample_and_none_is_sent_twice(s in scenario()) {
        let outcome = run(&s);
        if let Err(why) = check(&s, &outcome) {
            return Err(TestCaseError::fail(why));
        }
    }
}

#[test]
fn the_stop_balance_adds_up_with_rate_first_samples_refusals_and_an_outage() {
    let s = Scenario {
        inputs: vec![
            (false, vec![Gen::Counter { series: 0, dt: 1, dv: 1 }, Gen::Counter { series: 1, dt: 1, dv: 1 }]),
            (false, vec![Gen::Gauge { bad: false }, Gen::Gauge { bad: true }, Gen::Invalid]),
            (false, vec![Gen::Counter { series: 0, dt: 1, dv: 5 }, Gen::Counter { series: 1, dt: 0, dv: 5 }]),
            (true, vec![Gen::Gauge { bad: false }]),
            (false, vec![Gen::Counter { series: 0, dt: 1, dv: -100 }, Gen::Gauge { bad: false }]),
        ],
        answers: vec![Answer::Fail],
        refusal: Refusal::WholeRequest,
        spool_writable: true,
        max_batches: 10,
        batch_points: 100,
        max_points: 100,
    };
    let o = run(&s);
    let b = o.balance;
    assert_eq!(b.received, 10);
    assert_eq!((b.rate_first, b.rate_skipped, b.invalid), (2, 2, 1), "{b}");
    assert_eq!(b.sent + b.spooled + b.rejected + b.dropped + b.unsent, 5, "{b}");
    assert_eq!(b.accounted(), b.received, "{b}");
    assert_eq!(
        b.to_string(),
        format!(
            "received 10 = sent {} + spooled {} + rejected {} + dropped 0 + rate_first 2 + invalid 1 + rate_skipped 2 + unsent 0",
            b.sent, b.spooled, b.rejected
        )
    );
    check(&s, &o).expect("conservation");
}
