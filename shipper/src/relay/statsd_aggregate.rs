//! StatsD aggregation: samples from [`super::statsd`] added up per series, and each flush turned
//! into points named and valued as the reference daemon (statsd 0.9, `lib/process_metrics.js`)
//! with its Graphite backend (`backends/graphite.js`) and default settings names and values them.
//!
//! With a 10 s flush and `statsd_percentiles = 90`, the lines `api:1|c|@0.1`, `t:10|ms`,
//! `t:30|ms` and `g:5|g` flush as (Graphite names):
//!
//! ```text
//! stats.api 1                 stats_counts.api 10
//! stats.timers.t.count 2      stats.timers.t.count_ps 0.2   stats.timers.t.lower 10
//! stats.timers.t.upper 30     stats.timers.t.mean 20        stats.timers.t.median 20
//! stats.timers.t.std 10       stats.timers.t.sum 40         stats.timers.t.sum_squares 1000
//! stats.timers.t.count_90 2   stats.timers.t.mean_90 20     stats.timers.t.upper_90 30
//! stats.timers.t.sum_90 40    stats.timers.t.sum_squares_90 1000
//! stats.gauges.g 5
//! ```
//!
//! Idle series follow the reference's default (`deleteIdleStats` false): a counter seen once
//! flushes 0 ever after, a timer `count` and `count_ps` 0, a set `count` 0, and a gauge keeps its
//! last value. Tags after `;` in a key are appended after the whole Graphite name
//! (`stats.timers.t.mean;env=prod`), or become point tags with [`Naming::Tagged`].
//!
//! The state is bounded: at most `max_series` series (beyond, samples of new series are dropped
//! and counted), and at most `max_samples` timer samples and set members kept per flush (beyond,
//! dropped and counted; a timer's `count` still counts them). Pure: no clock and no I/O.
//!
//! A flush is taken from the aggregation quickly (the keys are shared, not copied) and then turned
//! into points a chunk at a time ([`Flushed::stream`]): 10^5 series flush as about 450 000
//! points, which never exist all at once.

use std::sync::Arc;

// foldhash instead of SipHash: every received line looks its key up once, and SipHash was 6% of
// the receiving thread's time (perf). Its seed is random per process, and `max_series` bounds
// what colliding keys could cost.
use foldhash::{HashMap, HashSet};

use puypuy_common::{Point, Value};

use super::statsd::{split_key, Sample};

pub use puypuy_common::config::relay::StatsdNames as Naming;

/// What became of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Kept,
    /// Its series is new and `max_series` series are held already.
    OverMaxSeries,
    /// A timer sample or set member beyond `max_samples` this flush.
    OverMaxSamples,
}

#[derive(Default)]
struct Timer {
    samples: Vec<f64>,
    /// Samples seen, each counting `1 / sample_rate`.
    count: f64,
}

/// A series key, shared by the aggregation and the flush that is being turned into points.
type Key = Arc<str>;

/// The series held between flushes, one map per type as in the reference (a name may be a
/// counter and a timer at once).
pub struct Aggregator {
    counters: HashMap<Key, f64>,
    timers: HashMap<Key, Timer>,
    gauges: HashMap<Key, f64>,
    sets: HashMap<Key, HashSet<Box<str>>>,
    max_series: usize,
    max_samples: usize,
    /// Timer samples and set members held now.
    samples: usize,
}

/// The values of one flush, taken from the [`Aggregator`] so the points are computed after the
/// aggregation is free to take the next samples.
#[derive(Debug, Default, PartialEq)]
pub struct Flushed {
    pub counters: Vec<(Key, f64)>,
    /// Key, samples (unsorted), count.
    pub timers: Vec<(Key, Vec<f64>, f64)>,
    pub gauges: Vec<(Key, f64)>,
    /// Key, number of distinct members.
    pub sets: Vec<(Key, usize)>,
}

impl Aggregator {
    pub fn new(max_series: usize, max_samples: usize) -> Aggregator {
        Aggregator {
            counters: HashMap::default(),
            timers: HashMap::default(),
            gauges: HashMap::default(),
            sets: HashMap::default(),
            max_series,
            max_samples,
            samples: 0,
        }
    }

    /// Series held (all types).
    pub fn series(&self) -> usize {
        self.counters.len() + self.timers.len() + self.gauges.len() + self.sets.len()
    }

    pub fn add(&mut self, key: &str, sample: Sample<'_>) -> Added {
        let room = self.series() < self.max_series;
        match sample {
            Sample::Counter { value, sample_rate } => {
                // The reference's arithmetic, so that sums match to the last bit.
                let add = value * (1.0 / sample_rate);
                match self.counters.get_mut(key) {
                    Some(total) => *total += add,
                    None if room => {
                        self.counters.insert(key.into(), add);
                    }
                    None => return Added::OverMaxSeries,
                }
            }
            Sample::Gauge { value, delta } => match self.gauges.get_mut(key) {
                Some(gauge) if delta => *gauge += value,
                Some(gauge) => *gauge = value,
                None if room => {
                    self.gauges.insert(key.into(), value);
                }
                None => return Added::OverMaxSeries,
            },
            Sample::Timer { value, sample_rate } => {
                let timer = match self.timers.get_mut(key) {
                    Some(timer) => timer,
                    None if room => self.timers.entry(key.into()).or_default(),
                    None => return Added::OverMaxSeries,
                };
                timer.count += 1.0 / sample_rate;
                if self.samples >= self.max_samples {
                    return Added::OverMaxSamples;
                }
                timer.samples.push(value);
                self.samples += 1;
            }
            Sample::Set { member } => {
                let set = match self.sets.get_mut(key) {
                    Some(set) => set,
                    None if room => self.sets.entry(key.into()).or_default(),
                    None => return Added::OverMaxSeries,
                };
                if !set.contains(member) {
                    if self.samples >= self.max_samples {
                        return Added::OverMaxSamples;
                    }
                    set.insert(member.into());
                    self.samples += 1;
                }
            }
        }
        Added::Kept
    }

    /// Takes this flush's values and resets the series as the reference does: counters to 0,
    /// timers and sets emptied, gauges kept; no series is forgotten.
    pub fn flush(&mut self) -> Flushed {
        self.samples = 0;
        Flushed {
            counters: self.counters.iter_mut().map(|(k, v)| (Arc::clone(k), std::mem::take(v))).collect(),
            timers: self
                .timers
                .iter_mut()
                .map(|(k, t)| (Arc::clone(k), std::mem::take(&mut t.samples), std::mem::take(&mut t.count)))
                .collect(),
            gauges: self.gauges.iter().map(|(k, v)| (Arc::clone(k), *v)).collect(),
            sets: self
                .sets
                .iter_mut()
                .map(|(k, s)| {
                    let n = s.len();
                    *s = HashSet::default();
                    (Arc::clone(k), n)
                })
                .collect(),
        }
    }
}

/// How a flush is named and computed.
#[derive(Debug, Clone, PartialEq)]
pub struct FlushSettings {
    pub interval_seconds: f64,
    pub percentiles: Vec<f64>,
    pub naming: Naming,
}

/// Where the points of a flush go: gathered into chunks of `chunk` points, each handed to `emit`.
struct Out<'a> {
    points: Vec<Point>,
    settings: &'a FlushSettings,
    timestamp: u64,
    chunk: usize,
    emit: &'a mut dyn FnMut(Vec<Point>) -> bool,
    /// `emit` asked for no more points.
    stopped: bool,
}

impl Out<'_> {
    /// `prefix.NAME.suffix;tags` (Graphite) or `NAME.suffix` with tags (tagged); the tagged name
    /// drops the prefix, and `stats_counts` becomes the suffix `count`.
    fn push(&mut self, graphite_prefix: &str, key: &str, suffix: &str, value: f64) {
        if self.stopped {
            return;
        }
        let (name, tags) = key.split_once(';').map_or((key, ""), |(n, t)| (n, t));
        let mut full = String::with_capacity(graphite_prefix.len() + key.len() + suffix.len() + 2);
        let point = match self.settings.naming {
            Naming::Graphite => {
                full.push_str(graphite_prefix);
                full.push('.');
                full.push_str(name);
                if !suffix.is_empty() {
                    full.push('.');
                    full.push_str(suffix);
                }
                if !tags.is_empty() {
                    full.push(';');
                    full.push_str(tags);
                }
                Point::new(full, self.timestamp, Value::Float(value), "statsd")
            }
            Naming::Tagged => {
                let (name, tags) = split_key(key);
                full.push_str(name);
                let suffix = if graphite_prefix == "stats_counts" { "count" } else { suffix };
                if !suffix.is_empty() {
                    full.push('.');
                    full.push_str(suffix);
                }
                let mut point = Point::new(full, self.timestamp, Value::Float(value), "statsd");
                point.tags = tags;
                point
            }
        };
        self.points.push(point);
        if self.points.len() >= self.chunk {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        let next = Vec::with_capacity(self.points.len());
        if !(self.emit)(std::mem::replace(&mut self.points, next)) {
            self.stopped = true;
        }
    }
}

/// The suffixes of one percentile: `count_90`, `mean_90`, `upper_90` (`lower_top10` for -10),
/// `sum_90`, `sum_squares_90`; made once per flush, not once per timer.
struct PercentileNames {
    pct: f64,
    count: String,
    mean: String,
    boundary: String,
    sum: String,
    sum_squares: String,
}

impl PercentileNames {
    fn new(pct: f64) -> PercentileNames {
        let name = percentile_name(pct);
        PercentileNames {
            pct,
            count: format!("count_{name}"),
            mean: format!("mean_{name}"),
            boundary: format!("{}_{name}", if pct > 0.0 { "upper" } else { "lower" }),
            sum: format!("sum_{name}"),
            sum_squares: format!("sum_squares_{name}"),
        }
    }
}

/// The reference's percentile suffix: `90`, `99_9`, `top10` for -10.
pub fn percentile_name(p: f64) -> String {
    p.to_string().replacen('.', "_", 1).replacen('-', "top", 1)
}

impl Flushed {
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.timers.is_empty() && self.gauges.is_empty() && self.sets.is_empty()
    }

    /// The points of this flush, stamped `timestamp`, all at once (for tests and small flushes).
    pub fn points(self, settings: &FlushSettings, timestamp: u64) -> Vec<Point> {
        let mut all = Vec::new();
        self.stream(settings, timestamp, usize::MAX, |points| {
            all.extend(points);
            true
        });
        all
    }

    /// The points of this flush, stamped `timestamp`, handed to `emit` in chunks of `chunk` points
    /// (the last one shorter), so that a large flush never exists whole. Each series' key and
    /// samples are freed as soon as its points are made. Stops when `emit` returns false.
    pub fn stream(
        self,
        settings: &FlushSettings,
        timestamp: u64,
        chunk: usize,
        mut emit: impl FnMut(Vec<Point>) -> bool,
    ) {
        let chunk = chunk.max(1);
        let mut out = Out {
            points: Vec::with_capacity(chunk.min(4096)),
            settings,
            timestamp,
            chunk,
            emit: &mut emit,
            stopped: false,
        };
        let percentiles: Vec<PercentileNames> = settings.percentiles.iter().map(|p| PercentileNames::new(*p)).collect();
        for (key, count) in self.counters {
            out.push("stats", &key, "", count / settings.interval_seconds);
            out.push("stats_counts", &key, "", count);
        }
        for (key, samples, count) in self.timers {
            timer_points(&mut out, &percentiles, &key, samples, count);
        }
        for (key, value) in self.gauges {
            out.push("stats.gauges", &key, "", value);
        }
        for (key, members) in self.sets {
            out.push("stats.sets", &key, "count", members as f64);
        }
        if !out.points.is_empty() && !out.stopped {
            let last = std::mem::take(&mut out.points);
            (out.emit)(last);
        }
    }
}

/// `process_metrics.js` for one timer, step for step (the order of additions decides the last
/// bits of sums and means).
fn timer_points(out: &mut Out<'_>, percentiles: &[PercentileNames], key: &str, mut values: Vec<f64>, timer_count: f64) {
    const PREFIX: &str = "stats.timers";
    let interval = out.settings.interval_seconds;
    if values.is_empty() {
        out.push(PREFIX, key, "count", timer_count);
        out.push(PREFIX, key, "count_ps", timer_count / interval);
        return;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let count = values.len();
    let (min, max) = (values[0], values[count - 1]);
    let mut cumulative = Vec::with_capacity(count);
    let mut cumulative_squares = Vec::with_capacity(count);
    let (mut running, mut running_squares) = (0.0, 0.0);
    for (i, v) in values.iter().enumerate() {
        // The reference starts from the first value itself, not from 0 + it (same bits).
        (running, running_squares) = if i == 0 { (*v, v * v) } else { (v + running, (v * v) + running_squares) };
        cumulative.push(running);
        cumulative_squares.push(running_squares);
    }
    let (mut sum, mut sum_squares, mut mean, mut boundary) = (min, min * min, min, max);
    for names in percentiles {
        let pct = names.pct;
        let mut in_threshold = count;
        if count > 1 {
            in_threshold = (pct.abs() / 100.0 * count as f64).round() as usize;
            if in_threshold == 0 {
                continue;
            }
            let n = in_threshold;
            if pct > 0.0 {
                boundary = values[n - 1];
                sum = cumulative[n - 1];
                sum_squares = cumulative_squares[n - 1];
            } else {
                // The reference reads index -1 as undefined (NaN) when all values are in; 0 here.
                let before = |c: &[f64]| if count > n { c[count - n - 1] } else { 0.0 };
                boundary = values[count - n];
                sum = cumulative[count - 1] - before(&cumulative);
                sum_squares = cumulative_squares[count - 1] - before(&cumulative_squares);
            }
            mean = sum / n as f64;
        }
        out.push(PREFIX, key, &names.count, in_threshold as f64);
        out.push(PREFIX, key, &names.mean, mean);
        out.push(PREFIX, key, &names.boundary, boundary);
        out.push(PREFIX, key, &names.sum, sum);
        out.push(PREFIX, key, &names.sum_squares, sum_squares);
    }
    let sum = cumulative[count - 1];
    let sum_squares = cumulative_squares[count - 1];
    let mean = sum / count as f64;
    let mut sum_of_diffs = 0.0;
    for v in &values {
        sum_of_diffs += (v - mean) * (v - mean);
    }
    let mid = count / 2;
    let median = if count % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 };
    out.push(PREFIX, key, "std", (sum_of_diffs / count as f64).sqrt());
    out.push(PREFIX, key, "upper", max);
    out.push(PREFIX, key, "lower", min);
    out.push(PREFIX, key, "count", timer_count);
    out.push(PREFIX, key, "count_ps", timer_count / interval);
    out.push(PREFIX, key, "sum", sum);
    out.push(PREFIX, key, "sum_squares", sum_squares);
    out.push(PREFIX, key, "mean", mean);
    out.push(PREFIX, key, "median", median);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::statsd::parse_line;
    use proptest::prelude::*;

    fn feed(agg: &mut Aggregator, lines: &str) -> Vec<Added> {
        let mut added = Vec::new();
        for line in lines.lines() {
            let l = parse_line(line).expect("line");
            for s in l.samples() {
                added.push(agg.add(&l.key, s.expect("sample")));
            }
        }
        added
    }

    fn settings(percentiles: &[f64], naming: Naming) -> FlushSettings {
        FlushSettings { interval_seconds: 10.0, percentiles: percentiles.to_vec(), naming }
    }

    fn flush(agg: &mut Aggregator, s: &FlushSettings) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> =
            agg.flush().points(s, 1_700_000_000).into_iter().map(|p| (p.name, p.value.as_f64())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn get(points: &[(String, f64)], name: &str) -> f64 {
        points.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} missing from {points:?}")).1
    }

    #[test]
    fn the_module_example_flushes_as_documented() {
        let mut agg = Aggregator::new(100, 100);
        feed(&mut agg, "api:1|c|@0.1\nt:10|ms\nt:30|ms\ng:5|g");
        let p = flush(&mut agg, &settings(&[90.0], Naming::Graphite));
        let expect = [
            ("stats.api", 1.0),
            ("stats_counts.api", 10.0),
            ("stats.timers.t.count", 2.0),
            ("stats.timers.t.count_ps", 0.2),
            ("stats.timers.t.lower", 10.0),
            ("stats.timers.t.upper", 30.0),
            ("stats.timers.t.mean", 20.0),
            ("stats.timers.t.median", 20.0),
            ("stats.timers.t.std", 10.0),
            ("stats.timers.t.sum", 40.0),
            ("stats.timers.t.sum_squares", 1000.0),
            ("stats.timers.t.count_90", 2.0),
            ("stats.timers.t.mean_90", 20.0),
            ("stats.timers.t.upper_90", 30.0),
            ("stats.timers.t.sum_90", 40.0),
            ("stats.timers.t.sum_squares_90", 1000.0),
            ("stats.gauges.g", 5.0),
        ];
        assert_eq!(p.len(), expect.len(), "{p:?}");
        for (name, value) in expect {
            assert_eq!(get(&p, name), value, "{name}");
        }
    }

    #[test]
    fn idle_series_flush_zero_and_gauges_keep_their_value() {
        let mut agg = Aggregator::new(100, 100);
        feed(&mut agg, "c:3|c\nt:1|ms\ng:5|g\ng:+2|g\ns:a|s\ns:b|s\ns:a|s");
        let s = settings(&[90.0], Naming::Graphite);
        let first = flush(&mut agg, &s);
        assert_eq!((get(&first, "stats.gauges.g"), get(&first, "stats.sets.s.count")), (7.0, 2.0));
        let idle = flush(&mut agg, &s);
        let names: Vec<&str> = idle.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "stats.c",
                "stats.gauges.g",
                "stats.sets.s.count",
                "stats.timers.t.count",
                "stats.timers.t.count_ps",
                "stats_counts.c"
            ]
        );
        assert_eq!(get(&idle, "stats.gauges.g"), 7.0);
        assert_eq!(idle.iter().filter(|(_, v)| *v == 0.0).count(), 5);
        feed(&mut agg, "g:-10|g");
        assert_eq!(get(&flush(&mut agg, &s), "stats.gauges.g"), -3.0);
    }

    #[test]
    fn percentiles_are_named_and_cut_like_the_reference() {
        let mut agg = Aggregator::new(100, 100);
        let lines: String = (1..=10).map(|i| format!("t:{i}|ms\n")).collect();
        feed(&mut agg, &lines);
        let p = flush(&mut agg, &settings(&[50.0, 99.9, -10.0], Naming::Graphite));
        assert_eq!(get(&p, "stats.timers.t.count_50"), 5.0);
        assert_eq!(get(&p, "stats.timers.t.upper_50"), 5.0);
        assert_eq!(get(&p, "stats.timers.t.sum_50"), 15.0);
        assert_eq!(get(&p, "stats.timers.t.count_99_9"), 10.0);
        assert_eq!(get(&p, "stats.timers.t.upper_99_9"), 10.0);
        assert_eq!(get(&p, "stats.timers.t.lower_top10"), 10.0);
        assert_eq!(get(&p, "stats.timers.t.mean_top10"), 10.0);
        assert_eq!(get(&p, "stats.timers.t.median"), 5.5);
        assert_eq!(percentile_name(99.9), "99_9");
        assert_eq!(percentile_name(90.0), "90");
    }

    #[test]
    fn a_timer_sampled_at_a_rate_counts_more_than_it_keeps() {
        let mut agg = Aggregator::new(100, 100);
        feed(&mut agg, "t:10|ms|@0.25\nt:20|ms|@0.25");
        let p = flush(&mut agg, &settings(&[90.0], Naming::Graphite));
        assert_eq!((get(&p, "stats.timers.t.count"), get(&p, "stats.timers.t.count_ps")), (8.0, 0.8));
        assert_eq!(get(&p, "stats.timers.t.sum"), 30.0);
    }

    #[test]
    fn tags_follow_the_graphite_name_or_become_point_tags() {
        let mut agg = Aggregator::new(100, 100);
        feed(&mut agg, "req:2|c|#env:prod,dc:eu\nlat:5|h|#env:prod");
        let s = settings(&[90.0], Naming::Graphite);
        let p = flush(&mut agg, &s);
        assert_eq!(get(&p, "stats.req;env=prod;dc=eu"), 0.2);
        assert_eq!(get(&p, "stats_counts.req;env=prod;dc=eu"), 2.0);
        assert_eq!(get(&p, "stats.timers.lat.mean;env=prod"), 5.0);

        let mut agg = Aggregator::new(100, 100);
        feed(&mut agg, "req:2|c|#env:prod,dc:eu\nlat:5|d|#env:prod\nu:x|s\ng:1|g");
        let points = agg.flush().points(&settings(&[90.0], Naming::Tagged), 7);
        let find = |name: &str| points.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(find("req").value, Value::Float(0.2));
        assert_eq!(find("req.count").value, Value::Float(2.0));
        assert_eq!(find("req").tags, vec![("env".into(), "prod".into()), ("dc".into(), "eu".into())]);
        assert_eq!(find("lat.upper_90").tags, vec![("env".to_string(), "prod".to_string())]);
        assert_eq!((find("u.count").value, find("g").value), (Value::Float(1.0), Value::Float(1.0)));
        assert!(points.iter().all(|p| p.timestamp == 7 && p.check_type == "statsd"));
    }

    #[test]
    fn new_series_beyond_max_series_are_dropped_and_known_ones_go_on() {
        let mut agg = Aggregator::new(2, 100);
        let added = feed(&mut agg, "a:1|c\nb:1|g\nc:1|c\nd:1|ms\na:1|c");
        assert_eq!(added, [Added::Kept, Added::Kept, Added::OverMaxSeries, Added::OverMaxSeries, Added::Kept]);
        assert_eq!(agg.series(), 2);
        let p = flush(&mut agg, &settings(&[90.0], Naming::Graphite));
        assert_eq!(get(&p, "stats_counts.a"), 2.0);
    }

    #[test]
    fn samples_beyond_max_samples_are_dropped_but_counted_in_the_timer_count() {
        let mut agg = Aggregator::new(10, 3);
        let added = feed(&mut agg, "t:1|ms\nt:2|ms\ns:x|s\nt:3|ms\ns:x|s\ns:y|s");
        let over = added.iter().filter(|a| **a == Added::OverMaxSamples).count();
        assert_eq!(over, 2);
        let p = flush(&mut agg, &settings(&[90.0], Naming::Graphite));
        assert_eq!((get(&p, "stats.timers.t.count"), get(&p, "stats.timers.t.upper")), (3.0, 2.0));
        // A new flush has room again.
        assert_eq!(feed(&mut agg, "t:9|ms"), [Added::Kept]);
    }

    #[test]
    fn a_flush_streams_in_chunks_that_add_up_to_the_whole_and_stops_when_told() {
        let lines: String = (0..40).map(|i| format!("c{i}:1|c\nt{i}:{i}|ms\ng{i}:{i}|g\ns{i}:x|s\n")).collect();
        let mut agg = Aggregator::new(1000, 1000);
        feed(&mut agg, &lines);
        let mut copy = Aggregator::new(1000, 1000);
        feed(&mut copy, &lines);
        let s = settings(&[90.0, 99.0], Naming::Graphite);
        let whole = copy.flush().points(&s, 7);
        // 40 × (2 counter + 19 timer + 1 gauge + 1 set) points.
        assert_eq!(whole.len(), 40 * 23);
        let mut chunks = Vec::new();
        agg.flush().stream(&s, 7, 100, |points| {
            chunks.push(points);
            true
        });
        assert!(
            chunks.iter().all(|c| c.len() <= 100 && !c.is_empty()),
            "{:?}",
            chunks.iter().map(Vec::len).collect::<Vec<_>>()
        );
        // Two aggregations iterate their series in different orders (random hash seeds).
        let sorted = |mut points: Vec<Point>| {
            points.sort_by(|a, b| a.name.cmp(&b.name));
            points
        };
        assert!(sorted(chunks.concat()) == sorted(whole), "the chunks differ from the whole flush");

        let mut handed = 0;
        agg.flush().stream(&s, 7, 100, |points| {
            handed += 1;
            assert_eq!(points.len(), 100);
            false
        });
        assert_eq!(handed, 1, "nothing is made after emit said stop");
    }

    proptest! {
        #[test]
        fn the_state_never_exceeds_its_bounds(lines in proptest::collection::vec("[a-e]:[0-9]{1,3}\\|(c|g|ms|s|h)", 0..200), max_series in 1usize..6, max_samples in 1usize..20) {
            let mut agg = Aggregator::new(max_series, max_samples);
            for line in &lines {
                let l = parse_line(line).expect("line");
                for s in l.samples().flatten() {
                    agg.add(&l.key, s);
                    prop_assert!(agg.series() <= max_series);
                    prop_assert!(agg.samples <= max_samples);
                }
            }
        }

        #[test]
        fn timer_statistics_stay_within_the_samples(values in proptest::collection::vec(0u32..100_000, 1..50), pct in 1.0f64..100.0) {
            let mut agg = Aggregator::new(10, 1000);
            for v in &values {
                agg.add("t", Sample::Timer { value: f64::from(*v), sample_rate: 1.0 });
            }
            let p = flush(&mut agg, &settings(&[pct], Naming::Graphite));
            let (lo, hi) = (get(&p, "stats.timers.t.lower"), get(&p, "stats.timers.t.upper"));
            for name in ["mean", "median"] {
                let v = get(&p, &format!("stats.timers.t.{name}"));
                prop_assert!(lo <= v && v <= hi, "{} {} not in [{}, {}]", name, v, lo, hi);
            }
            prop_assert_eq!(get(&p, "stats.timers.t.count"), values.len() as f64);
        }
    }
}
