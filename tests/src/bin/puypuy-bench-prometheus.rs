//! Issue 18's numbers, side by side in one run, printed as the markdown of BENCHMARKS.md:
//!
//! 1. Scrape and ship: the collector scrapes a `prometheus-node-exporter` page at 1 s
//!    (`[Prometheus:node]`, no system checks) and the shipper sends the samples as InfluxDB line
//!    protocol to a sink answering 204 at once; CPU of collector + shipper per sample shipped, the
//!    median over 1 s windows. Beside it, a Prometheus 2.42 scraping the same page at 1 s into its
//!    own TSDB: its CPU per sample scraped (`scrape_samples_scraped`), median over 1 s windows.
//! 2. Remote write: producers push frames of 1000 points as fast as acks allow (at most 16 frames in
//!    flight each) into a shipper writing remote write (protobuf + snappy) to a sink that decodes
//!    and counts the series, and the same into one writing InfluxDB line protocol: points/s and
//!    shipper CPU µs per point.
//!
//! CPU is the run time of the process' threads (`/proc/PID/task/*/schedstat`). `--quick` runs a
//! few seconds per row (numbers meaningless), `--seconds N` sets the rows' length.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use puypuy_common::client::SenderClient;
use puypuy_common::Point;
use puypuy_tests::measure::{cpu_seconds, ticks_seconds};
use puypuy_tests::prometheus::{NodeExporter, Prometheus};
use puypuy_tests::{wait_for, Agent};

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Series in a remote-write body: the top-level `timeseries` fields of the decoded protobuf.
fn count_series(raw: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while at < raw.len() {
        if raw[at] != 0x0a {
            break;
        }
        at += 1;
        let (mut len, mut shift) = (0usize, 0);
        while at < raw.len() {
            let b = raw[at];
            at += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        at += len;
        n += 1;
    }
    n
}

/// HTTP/1.1 keep-alive sink answering 204: counts line-protocol lines or remote-write series.
fn sink() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("sink");
    let port = listener.local_addr().expect("addr").port();
    let points = Arc::new(AtomicU64::new(0));
    let p = Arc::clone(&points);
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let p = Arc::clone(&p);
            thread::spawn(move || serve(conn, &p));
        }
    });
    (port, points)
}

fn serve(conn: TcpStream, points: &AtomicU64) {
    let mut reader = BufReader::with_capacity(1 << 20, conn.try_clone().expect("clone"));
    let mut writer = conn;
    let (mut body, mut decoded) = (Vec::new(), Vec::new());
    let mut decoder = snap::raw::Decoder::new();
    loop {
        let (mut length, mut snappy) = (0usize, false);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            snappy |= lower.starts_with("content-encoding: snappy");
        }
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = if snappy {
            decoded.resize(snap::raw::decompress_len(&body).unwrap_or(0), 0);
            decoder.decompress(&body, &mut decoded).map(|len| count_series(&decoded[..len])).unwrap_or(0)
        } else {
            body.iter().filter(|b| **b == b'\n').count()
        };
        points.fetch_add(n as u64, Ordering::Relaxed);
        if writer.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

/// Calls `sample` once a second for `seconds` s and gives the values.
fn per_second<T>(seconds: u64, mut sample: impl FnMut() -> T) -> Vec<T> {
    let start = Instant::now();
    let mut out = vec![sample()];
    for i in 1..=seconds {
        let next = start + Duration::from_secs(i);
        thread::sleep(next.saturating_duration_since(Instant::now()));
        out.push(sample());
    }
    out
}

fn scrape_and_ship(seconds: u64) {
    let node = NodeExporter::start();
    let (port, points) = sink();
    let agent = Agent::new(
        "system_checks = none\nself_metrics: no",
        &format!(
            "[TSDB]\ntsdtype = InfluxDB\naddress = http://127.0.0.1:{port}\ndatabase = bench\ngzip = False\n\n[Prometheus:node]\nurl = {}\n",
            node.url()
        ),
    );
    let shipper = agent.start_shipper();
    let collector = agent.start_collector();
    wait_for(Duration::from_secs(20), "samples at the sink", || (points.load(Ordering::Relaxed) > 0).then_some(()));
    thread::sleep(Duration::from_secs(3));
    // The collector runs each scrape in a thread that exits when it is done, and an exited
    // thread's run time leaves /proc/PID/task: its CPU is read from utime + stime of
    // /proc/PID/stat, which keeps the exited threads' (clock ticks, hence the long window).
    let (c0, s0, p0, t0) =
        (ticks_seconds(collector.pid()), cpu_seconds(shipper.pid()), points.load(Ordering::Relaxed), Instant::now());
    let shipper_windows = per_second(seconds, || (cpu_seconds(shipper.pid()), points.load(Ordering::Relaxed)));
    let (c1, s1, p1) = (ticks_seconds(collector.pid()), cpu_seconds(shipper.pid()), points.load(Ordering::Relaxed));
    let elapsed = t0.elapsed().as_secs_f64();
    let samples = (p1 - p0) as f64 / elapsed;
    let collector_ms = (c1 - c0) * 1e3 / elapsed;
    let shipper_ms = (s1 - s0) * 1e3 / elapsed;
    let ours = (collector_ms + shipper_ms) * 1e3 / samples;
    let shipper_median =
        median(shipper_windows.windows(2).map(|w| (w[1].0 - w[0].0) * 1e6 / (w[1].1 - w[0].1) as f64).collect());
    drop((collector, shipper));

    let prom = Prometheus::start(&format!(
        "  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        node.port
    ));
    wait_for(Duration::from_secs(20), "Prometheus' first scrape", || {
        prom.query("scrape_samples_scraped{job=\"node\"}").first().map(|r| r.1)
    });
    thread::sleep(Duration::from_secs(3));
    let pid = prom.proc.pid();
    let (q0, t0) = (cpu_seconds(pid), Instant::now());
    let windows = per_second(seconds, || cpu_seconds(pid));
    let (q1, elapsed) = (cpu_seconds(pid), t0.elapsed().as_secs_f64());
    let scraped = prom.query("scrape_samples_scraped{job=\"node\"}").first().map(|r| r.1).unwrap_or(f64::NAN);
    let prom_ms = (q1 - q0) * 1e3 / elapsed;
    let theirs = prom_ms * 1e3 / scraped;
    let prom_median = median(windows.windows(2).map(|w| (w[1] - w[0]) * 1e6 / scraped).collect());
    println!("## 9. Prometheus scrape and ship: a node exporter page at 1 s ({seconds} s each, one after the other)\n");
    println!("| scraper | samples/s | CPU ms per 1 s cycle | CPU µs per sample (mean) | median of 1 s windows |");
    println!("|---|---|---|---|---|");
    println!(
        "| PuyPuy collector + shipper → InfluxDB line sink | {samples:.0} | {:.2} ({collector_ms:.2} + {shipper_ms:.2}) | {ours:.2} | shipper alone {shipper_median:.2} |",
        collector_ms + shipper_ms
    );
    println!("| Prometheus 2.42 → its own TSDB | {scraped:.0} | {prom_ms:.2} | {theirs:.2} | {prom_median:.2} |");
    println!("\nratio PuyPuy / Prometheus CPU per sample: {:.2}\n", ours / theirs);
}

/// Producers pushing frames of 1000 points as fast as acks allow (at most 16 frames in flight each).
fn push(socket: &std::path::Path, producers: usize, stop: &Arc<AtomicBool>) {
    for p in 0..producers {
        let (socket, stop) = (socket.to_path_buf(), Arc::clone(stop));
        thread::spawn(move || {
            let client = SenderClient::start(&socket, &format!("bench-{p}"), 64);
            let mut t = 1_700_000_000u64;
            while !stop.load(Ordering::Relaxed) {
                if client.stats().queued_frames >= 16 {
                    thread::sleep(Duration::from_micros(200));
                    continue;
                }
                t += 1;
                let frame: Vec<Point> = (0..1000)
                    .map(|i| {
                        Point::int(format!("bench_m{}", i % 100), t, i as i64, "bench").with_tag("p", p.to_string())
                    })
                    .collect();
                client.send(frame);
            }
        });
    }
}

fn remote_write(seconds: u64) {
    println!("## 10. Remote write beside InfluxDB line protocol ({seconds} s per row, frames of 1000 points, sink answering at once)\n");
    println!("| backend | producers | points/s | shipper CPU µs/point | shipper CPU cores |");
    println!("|---|---|---|---|---|");
    for producers in [1usize, 4] {
        for backend in ["InfluxDB line", "Prometheus remote write"] {
            let (port, points) = sink();
            let tsdb = if backend == "InfluxDB line" {
                format!(
                    "[TSDB]\ntsdtype = InfluxDB\naddress = http://127.0.0.1:{port}\ndatabase = bench\ngzip = False\n"
                )
            } else {
                format!("[TSDB]\ntsdtype = PrometheusRemoteWrite\naddress = http://127.0.0.1:{port}\n")
            };
            let agent = Agent::new("self_metrics: no\nmax_cache: 1000000", &tsdb);
            let shipper = agent.start_shipper();
            let stop = Arc::new(AtomicBool::new(false));
            push(&agent.socket(), producers, &stop);
            thread::sleep(Duration::from_secs(1));
            let (c0, p0, t0) = (cpu_seconds(shipper.pid()), points.load(Ordering::Relaxed), Instant::now());
            thread::sleep(Duration::from_secs(seconds));
            let (c1, p1) = (cpu_seconds(shipper.pid()), points.load(Ordering::Relaxed));
            let elapsed = t0.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            let n = (p1 - p0) as f64;
            println!(
                "| {backend} | {producers} | {:.0} | {:.2} | {:.2} |",
                n / elapsed,
                (c1 - c0) * 1e6 / n,
                (c1 - c0) / elapsed
            );
            drop(shipper);
            thread::sleep(Duration::from_millis(300));
        }
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 3 } else { 30 });
    scrape_and_ship(seconds);
    remote_write(if quick { 2 } else { seconds.min(10) });
    let _ = std::io::stdout().flush();
}
