//! `puypuy-bench-ring`: the shipper as a Graphite relay against `carbon-c-relay` (issue 19, goal 1),
//! side by side in one run, printed as the markdown of BENCHMARKS.md (and written to `--out DIR`
//! as `ring.md` and `ring.json`).
//!
//! Each row: 4 TCP connections push Graphite plaintext over 100 000 names as fast as the relay
//! reads it, for 20 s, then the relay is given time to deliver what it holds. Two set-ups, each
//! run with PuyPuy (`graphite_listen`, Carbon backend, pickles out) and then with carbon-c-relay
//! (plaintext out, the only TCP output it has) in the same round:
//!
//! - **one destination**: PuyPuy `address = 127.0.0.1:P`; carbon-c-relay a `forward` cluster;
//! - **the ring**: three destinations on 127.0.0.1, .2 and .3 (carbon's ring keys a node by server
//!   and instance, not port), PuyPuy `hashing = carbon_ch`, carbon-c-relay a `carbon_ch` cluster of
//!   the same three. Each sink counts what it got, so the split between them shows both placed
//!   the names alike.
//!
//! Delivered points are counted at the sinks once nothing more arrives; dropped is sent − delivered.
//! CPU is the relay's threads' run time over the send and the drain (schedstat), peak RSS its
//! VmHWM. Every row runs `--rounds` times (default 3) and the median is reported, with the ratio
//! of the medians. carbon-c-relay runs with `-w 4 -b 10000 -q 1000000 -L 15` (issue 19's least
//! lossy setting; its defaults drop most of this load); `--crelay-args` replaces them.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use puypuy_tests::measure::{cpu_seconds, line_sink, mib, pickle_sink, rss, SinkCount};
use puypuy_tests::{bin, free_port, require, wait_for, Agent, Proc};
use serde_json::json;

const CONNECTIONS: usize = 4;
const NAMES: usize = 100_000;
const LINES_PER_CHUNK: usize = 10_000;
const SERVERS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
const CRELAY_ARGS: &str = "-w 4 -b 10000 -q 1000000 -L 15";

/// One run of one relay in one set-up.
#[derive(Clone)]
struct Run {
    sent: u64,
    delivered: u64,
    per_sink: Vec<u64>,
    send_seconds: f64,
    cpu_seconds: f64,
    wall_seconds: f64,
    peak_rss: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.send_seconds
    }

    fn dropped(&self) -> u64 {
        self.sent.saturating_sub(self.delivered)
    }
}

/// The plaintext the connections send: `NAMES` names in chunks of `LINES_PER_CHUNK` lines.
fn chunks() -> Arc<Vec<Vec<u8>>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Arc::new(
        (0..NAMES / LINES_PER_CHUNK)
            .map(|c| {
                (c * LINES_PER_CHUNK..(c + 1) * LINES_PER_CHUNK)
                    .map(|i| format!("bench.ring.host{}.metric{} {} {now}\n", i % 100, i, i % 1000))
                    .collect::<String>()
                    .into_bytes()
            })
            .collect(),
    )
}

/// `CONNECTIONS` connections writing chunks to `port` for `d`; the lines written.
fn load(port: u16, d: Duration, chunks: &Arc<Vec<Vec<u8>>>) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..CONNECTIONS)
        .map(|k| {
            let (chunks, sent) = (Arc::clone(chunks), Arc::clone(&sent));
            thread::spawn(move || {
                use std::io::Write;
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return };
                let end = Instant::now() + d;
                let mut j = k;
                while Instant::now() < end {
                    if s.write_all(&chunks[j % chunks.len()]).is_err() {
                        return;
                    }
                    sent.fetch_add(LINES_PER_CHUNK as u64, Ordering::Relaxed);
                    j += 1;
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    sent.load(Ordering::Relaxed)
}

/// Waits until the sinks hold `sent` points or nothing arrived for 3 s (at most 120 s).
fn drain(sinks: &[Arc<SinkCount>], before: &[u64], sent: u64) -> Vec<u64> {
    let total = || sinks.iter().zip(before).map(|(s, b)| s.points() - b).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut since) = (total(), Instant::now());
    while Instant::now() < deadline && last < sent && since.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(100));
        let now = total();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    sinks.iter().zip(before).map(|(s, b)| s.points() - b).collect()
}

/// Loads a relay listening on `port` (process `pid`) and measures it.
fn measure(pid: u32, port: u16, sinks: &[Arc<SinkCount>], d: Duration, chunks: &Arc<Vec<Vec<u8>>>) -> Run {
    let before: Vec<u64> = sinks.iter().map(|s| s.points()).collect();
    let c0 = cpu_seconds(pid);
    let started = Instant::now();
    let sent = load(port, d, chunks);
    let send_seconds = started.elapsed().as_secs_f64();
    let per_sink = drain(sinks, &before, sent);
    let wall_seconds = started.elapsed().as_secs_f64();
    Run {
        sent,
        delivered: per_sink.iter().sum(),
        per_sink,
        send_seconds,
        cpu_seconds: cpu_seconds(pid) - c0,
        wall_seconds,
        peak_rss: rss(pid).1,
    }
}

fn puypuy(destinations: &[(&str, u16)], sinks: &[Arc<SinkCount>], d: Duration, chunks: &Arc<Vec<Vec<u8>>>) -> Run {
    let gport = free_port();
    let addresses: Vec<String> = destinations.iter().map(|(ip, port)| format!("{ip}:{port}")).collect();
    let agent = Agent::new(
        "self_metrics: no\nmax_cache: 1000000",
        &format!(
            "[TSDB]\ntsdtype = Carbon\naddress = {}\nhashing = carbon_ch\n[Relay]\ngraphite_listen = {gport}\n",
            addresses.join(", ")
        ),
    );
    let shipper = agent.start_shipper();
    wait_for(Duration::from_secs(5), "the shipper's graphite input", || {
        TcpStream::connect(("127.0.0.1", gport)).ok().map(|_| ())
    });
    let run = measure(shipper.pid(), gport, sinks, d, chunks);
    if run.delivered < run.sent {
        let log = agent.log();
        let notes: Vec<&str> = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).take(8).collect();
        eprintln!("  the shipper's warnings and errors:\n  {}", notes.join("\n  "));
    }
    run
}

fn carbon_c_relay(
    destinations: &[(&str, u16)],
    sinks: &[Arc<SinkCount>],
    d: Duration,
    chunks: &Arc<Vec<Vec<u8>>>,
    args: &str,
) -> Run {
    let relay = require("carbon-c-relay");
    let dir = tempfile::tempdir().expect("tempdir");
    let lport = free_port();
    let members: Vec<String> = destinations.iter().map(|(ip, port)| format!("{ip}:{port}")).collect();
    let kind = if destinations.len() == 1 { "forward" } else { "carbon_ch" };
    let conf = dir.path().join("relay.conf");
    std::fs::write(
        &conf,
        format!(
            "cluster sinks {kind} {};\ncluster devnull file /dev/null;\n\
             statistics submit every 60 seconds send to devnull stop;\n\
             listen type linemode 127.0.0.1:{lport} proto tcp;\nmatch * send to sinks stop;\n",
            members.join(" ")
        ),
    )
    .expect("relay.conf");
    let cr = Proc::spawn(
        "carbon-c-relay",
        Command::new(relay)
            .arg("-f")
            .arg(&conf)
            .args(args.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for(Duration::from_secs(10), "carbon-c-relay", || TcpStream::connect(("127.0.0.1", lport)).ok().map(|_| ()));
    measure(cr.pid(), lport, sinks, d, chunks)
}

fn crelay_version() -> String {
    Command::new(require("carbon-c-relay"))
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Other benchmarks or compilers running beside this one (they make the numbers noisy).
fn others() -> Vec<String> {
    let me = std::process::id();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let first = cmd.split_whitespace().next().unwrap_or("");
        if first.ends_with("/rustc") || first == "rustc" || first.contains("puypuy-bench") {
            found.push(format!("{pid} {}", cmd.chars().take(60).collect::<String>()));
        }
    }
    found
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The run whose delivered rate is the median one (the lower middle for an even count).
fn median_run(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    sorted[(sorted.len() - 1) / 2].clone()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut out, mut quick, mut rounds, mut seconds) = (None::<PathBuf>, false, 3usize, 20u64);
    let mut crelay_args = CRELAY_ARGS.to_string();
    let mut only: Option<String> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = args.next().map(PathBuf::from),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(3).max(1),
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(20),
            "--crelay-args" => crelay_args = args.next().unwrap_or_default(),
            "--only" => only = args.next(),
            _ => {
                eprintln!(
                    "usage: puypuy-bench-ring [--quick] [--out DIR] [--rounds N] [--seconds S] [--crelay-args \"{CRELAY_ARGS}\"] [--only one|ring]"
                );
                std::process::exit(2);
            }
        }
    }
    if quick {
        (rounds, seconds) = (1, 1);
    }
    let _ = bin("puypuy-shipper");
    let d = Duration::from_secs(seconds);
    let chunks = chunks();
    let pickles: Vec<(u16, Arc<SinkCount>)> = SERVERS.iter().map(|ip| pickle_sink(ip)).collect();
    let lines: Vec<(u16, Arc<SinkCount>)> = SERVERS.iter().map(|ip| line_sink(ip)).collect();
    let setups: Vec<(&str, usize)> = [("one destination", 1usize), ("three destinations, carbon_ch ring", 3)]
        .into_iter()
        .filter(|(_, n)| only.as_deref().is_none_or(|o| (o == "one") == (*n == 1)))
        .collect();
    // runs[set-up][0 PuyPuy, 1 carbon-c-relay]: one per round
    let mut runs: Vec<[Vec<Run>; 2]> = setups.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    let mut busy: Vec<String> = Vec::new();
    for round in 0..rounds {
        for (s, (name, n)) in setups.iter().enumerate() {
            busy.extend(others());
            let targets = |sinks: &[(u16, Arc<SinkCount>)]| -> (Vec<(&str, u16)>, Vec<Arc<SinkCount>>) {
                (
                    SERVERS.iter().zip(sinks).take(*n).map(|(ip, (port, _))| (*ip, *port)).collect(),
                    sinks.iter().take(*n).map(|(_, c)| Arc::clone(c)).collect(),
                )
            };
            let (dest, counts) = targets(&pickles);
            eprintln!("puypuy-bench-ring: round {} {name}: PuyPuy…", round + 1);
            let ours = puypuy(&dest, &counts, d, &chunks);
            eprintln!("  {:.0} points/s, {} dropped", ours.rate(), ours.dropped());
            let (dest, counts) = targets(&lines);
            eprintln!("puypuy-bench-ring: round {} {name}: carbon-c-relay…", round + 1);
            let theirs = carbon_c_relay(&dest, &counts, d, &chunks, &crelay_args);
            eprintln!("  {:.0} points/s, {} dropped", theirs.rate(), theirs.dropped());
            runs[s][0].push(ours);
            runs[s][1].push(theirs);
        }
    }
    busy.sort();
    busy.dedup();

    let version = crelay_version();
    let mut md = format!(
        "## Relay ring: Graphite plaintext in, one destination and a three-cache carbon_ch ring \
         ({seconds} s, {CONNECTIONS} connections, {NAMES} names, median of {rounds} rounds){}\n\n\
         | set-up | relay | out | lines sent | points delivered | points/s (delivered ÷ send time) | dropped | \
         CPU cores | CPU µs/point | peak RSS MiB | split over the sinks |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        if quick { " — **--quick: numbers not meaningful**" } else { "" }
    );
    let mut summary = String::new();
    let mut json_rows = Vec::new();
    for (s, (name, _)) in setups.iter().enumerate() {
        let mut rates = [0.0f64; 2];
        for (r, relay) in
            ["PuyPuy shipper".to_string(), format!("carbon-c-relay {version} (`{crelay_args}`)")].iter().enumerate()
        {
            let all = &runs[s][r];
            let m = median_run(all);
            rates[r] = median(all.iter().map(Run::rate).collect());
            let split: Vec<String> =
                m.per_sink.iter().map(|p| format!("{:.1}%", 100.0 * *p as f64 / m.delivered.max(1) as f64)).collect();
            md.push_str(&format!(
                "| {name} | {relay} | {} | {} | {} | {:.0} | {} | {:.2} | {:.2} | {} | {} |\n",
                if r == 0 { "pickle" } else { "plaintext" },
                m.sent,
                m.delivered,
                rates[r],
                m.dropped(),
                m.cpu_seconds / m.wall_seconds,
                m.cpu_seconds * 1e6 / m.delivered.max(1) as f64,
                mib(m.peak_rss),
                split.join(" / "),
            ));
            json_rows.push(json!({
                "setup": name, "relay": relay,
                "rounds": all.iter().map(|x| json!({
                    "sent": x.sent, "delivered": x.delivered, "per_sink": x.per_sink,
                    "points_per_second": x.rate(), "cpu_seconds": x.cpu_seconds,
                    "wall_seconds": x.wall_seconds, "peak_rss_bytes": x.peak_rss})).collect::<Vec<_>>(),
            }));
        }
        let ratios: Vec<String> =
            runs[s][0].iter().zip(&runs[s][1]).map(|(a, b)| format!("{:.1}", a.rate() / b.rate().max(1.0))).collect();
        let peaks = |r: usize| median(runs[s][r].iter().map(|x| mib(x.peak_rss)).collect());
        let drops = |r: usize| runs[s][r].iter().map(Run::dropped).max().unwrap_or(0);
        summary.push_str(&format!(
            "- {name}: delivered points/s, PuyPuy ÷ carbon-c-relay: **{:.1}×** (rounds: {}); dropped at most {} \
             against {}; peak RSS {} against {} MiB.\n",
            rates[0] / rates[1].max(1.0),
            ratios.join(", "),
            drops(0),
            drops(1),
            peaks(0),
            peaks(1),
        ));
    }
    md.push('\n');
    md.push_str(&summary);
    md.push_str(&if busy.is_empty() {
        "\nNothing else (no rustc, no other puypuy-bench) was running at the start of any row.\n".to_string()
    } else {
        format!("\nAlso running at the start of some rows: {}.\n", busy.join("; "))
    });
    println!("{md}");
    if let Some(out) = out {
        std::fs::create_dir_all(&out).expect("out dir");
        std::fs::write(out.join("ring.md"), &md).expect("ring.md");
        std::fs::write(out.join("ring.json"), serde_json::to_string_pretty(&json!(json_rows)).expect("json"))
            .expect("ring.json");
    }
}
