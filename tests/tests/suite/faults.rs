//! Fault injection: the backend down, answering 500, the shipper killed, the spool full, corrupt
//! or on a full or read-only disk. Each test counts exactly what arrived.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use puypuy_common::client::SenderClient;
use puypuy_common::Point;
use puypuy_tests::{wait_for, Agent, Carbon, FlakyProxy, Influx};

const BASE: u64 = 1_700_000_000;

fn influx_config(url: &str) -> String {
    format!("[TSDB]\ntsdtype = InfluxDB\naddress = {url}\ndatabase = {}\n", Influx::DB)
}

/// A producer sending point `i` (value i, timestamp BASE + i) every `every`, `count` points, from
/// its own thread.
fn steady_producer(agent: &Agent, name: &'static str, count: u64, every: Duration) -> thread::JoinHandle<SenderClient> {
    let client = SenderClient::start(&agent.socket(), "fault-test", 100_000);
    thread::spawn(move || {
        let start = Instant::now();
        for i in 0..count {
            client.send(vec![Point::int(name, BASE + i, i as i64, "fault")]);
            let next = start + every * (i as u32 + 1);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        client
    })
}

fn arrived(influx: &Influx, name: &str) -> BTreeSet<u64> {
    influx.points(name).into_iter().map(|p| p.0 - BASE).collect()
}

fn wait_all(influx: &Influx, name: &str, count: u64, timeout: Duration) {
    let got = wait_for(timeout, &format!("all {count} {name} points"), || {
        let got = arrived(influx, name);
        (got.len() as u64 >= count).then_some(got)
    });
    let expected: BTreeSet<u64> = (0..count).collect();
    assert_eq!(got, expected);
}

fn latest(influx: &Influx, name: &str) -> Option<i64> {
    influx.points(name).last().and_then(|p| p.1.as_i64())
}

#[test]
fn backend_down_for_a_minute_then_every_point_arrives() {
    let outage =
        Duration::from_secs(std::env::var("PUYPUY_OUTAGE_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60));
    let mut influx = Influx::start(false);
    let agent = Agent::new("", &influx_config(&influx.url()));
    let _shipper = agent.start_shipper();
    let count = (outage.as_secs() + 15) * 10;
    let producer = steady_producer(&agent, "fi_steady", count, Duration::from_millis(100));
    wait_for(Duration::from_secs(10), "the first points", || (!arrived(&influx, "fi_steady").is_empty()).then_some(()));
    influx.stop();
    thread::sleep(outage);
    influx.restart();
    let client = producer.join().expect("producer");
    assert!(client.flush(Duration::from_secs(60)), "producer frames not acknowledged");
    wait_all(&influx, "fi_steady", count, Duration::from_secs(60));
    assert!(agent.log().contains("spooling and retrying"), "{}", agent.log());
    // The spool drained and nothing was dropped.
    wait_for(Duration::from_secs(10), "an empty spool", || {
        (latest(&influx, "puypuy_shipper_spool_files") == Some(0)).then_some(())
    });
    assert_eq!(latest(&influx, "puypuy_shipper_points_dropped"), Some(0));
    assert!(latest(&influx, "puypuy_shipper_points_replayed").unwrap_or(0) > 0);
}

#[test]
fn shipper_killed_repeatedly_under_load_loses_nothing() {
    let influx = Influx::start(false);
    // Without self-metrics every point a shipper takes in is the producer's.
    let agent = Agent::new("self_metrics: no", &influx_config(&influx.url()));
    let mut shipper = agent.start_shipper();
    // 12 s of points: each of the four shipper lifetimes takes up to two status periods (1 s).
    let count = 600;
    let producer = steady_producer(&agent, "fi_kill", count, Duration::from_millis(20));
    for _ in 0..4 {
        // Each shipper is killed only once it has taken in some of the producer's points.
        let pid = shipper.pid();
        wait_for(Duration::from_secs(10), "the shipper to take in points", || {
            (agent.status_metric(pid, "puypuy_shipper_points_received")? > 0).then_some(())
        });
        shipper.signal(nix::sys::signal::Signal::SIGKILL);
        shipper.wait_exit(Duration::from_secs(5));
        shipper = agent.start_shipper();
    }
    let client = producer.join().expect("producer");
    assert!(client.flush(Duration::from_secs(30)), "producer frames not acknowledged");
    wait_all(&influx, "fi_kill", count, Duration::from_secs(30));
    assert!(client.stats().reconnects >= 4);
}

#[test]
fn backend_answering_500_for_a_while_loses_nothing() {
    let influx = Influx::start(false);
    let proxy = FlakyProxy::start(&influx.url());
    let agent = Agent::new("", &influx_config(&proxy.url()));
    let _shipper = agent.start_shipper();
    let count = 150;
    let producer = steady_producer(&agent, "fi_500", count, Duration::from_millis(50));
    wait_for(Duration::from_secs(10), "the first points through the proxy", || {
        (!arrived(&influx, "fi_500").is_empty()).then_some(())
    });
    proxy.failing.store(true, Ordering::SeqCst);
    // Fail long enough for several retries with backoff.
    wait_for(Duration::from_secs(30), "five failed requests", || {
        (proxy.failures.load(Ordering::SeqCst) >= 5).then_some(())
    });
    proxy.failing.store(false, Ordering::SeqCst);
    let client = producer.join().expect("producer");
    assert!(client.flush(Duration::from_secs(30)));
    wait_all(&influx, "fi_500", count, Duration::from_secs(30));
    assert!(proxy.failures.load(Ordering::SeqCst) > 0, "the proxy never failed a request");
    assert!(agent.log().contains("answered 500"), "{}", agent.log());
}

#[test]
fn full_spool_drops_exactly_the_oldest_and_counts_them() {
    let mut influx = Influx::start(false);
    let agent = Agent::new("max_cache: 8\nbatch_ms: 0", &influx_config(&influx.url()));
    influx.stop();
    let _shipper = agent.start_shipper();
    let count = 60;
    let producer = steady_producer(&agent, "fi_cap", count, Duration::from_millis(30));
    let client = producer.join().expect("producer");
    assert!(client.flush(Duration::from_secs(30)), "frames must be acked (spooled or dropped)");
    influx.restart();
    // Wait until the spool is drained: its self-metric reaches 0 after a replay.
    wait_for(Duration::from_secs(60), "the spool to drain", || {
        (latest(&influx, "puypuy_shipper_spool_files") == Some(0)
            && influx.points("puypuy_shipper_spool_files").len() > 1)
            .then_some(())
    });
    let got = arrived(&influx, "fi_cap");
    assert!(!got.is_empty() && (got.len() as u64) < count, "expected some but not all points: {got:?}");
    let first = *got.iter().next().expect("first");
    let expected: BTreeSet<u64> = (first..count).collect();
    assert_eq!(got, expected, "the points kept are not exactly the newest ones");
    let dropped = wait_for(Duration::from_secs(10), "the dropped self-metric", || {
        latest(&influx, "puypuy_shipper_points_dropped")
    });
    assert_eq!(dropped as u64, count - got.len() as u64, "dropped-points self-metric vs points missing");
    assert!(agent.log().contains("spool full: dropped its oldest batch"), "{}", agent.log());
}

#[test]
fn corrupt_spool_file_is_set_aside_and_the_rest_arrives() {
    let mut influx = Influx::start(false);
    let agent = Agent::new("batch_ms: 0\nself_metrics: no", &influx_config(&influx.url()));
    influx.stop();
    let mut shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "test", 100);
    for i in 0..10u64 {
        client.send(vec![Point::int("fi_corrupt", BASE + i, i as i64, "fault")]);
        assert!(client.flush(Duration::from_secs(10)), "frame {i} not spooled");
    }
    shipper.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(shipper.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    let spool = agent.path("spool/spool");
    let mut files: Vec<_> = std::fs::read_dir(&spool)
        .expect("spool dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "spool"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    // Which points the victim holds, read through the documented layout.
    let victim = files[1].clone();
    let mut bytes = std::fs::read(&victim).expect("read");
    let b = bytes[11] as usize;
    let payload = &bytes[12 + b + 12..];
    let lost: BTreeSet<u64> =
        puypuy_common::frame::decode_points(payload).expect("decode").iter().map(|p| p.timestamp - BASE).collect();
    let middle = bytes.len() - 3;
    bytes[middle] ^= 0x5a;
    std::fs::write(&victim, bytes).expect("corrupt");
    influx.restart();
    let _shipper = agent.start_shipper();
    let expected: BTreeSet<u64> = (0..10).filter(|i| !lost.contains(i)).collect();
    let got = wait_for(Duration::from_secs(30), "the other batches", || {
        let got = arrived(&influx, "fi_corrupt");
        (got.len() >= expected.len()).then_some(got)
    });
    assert_eq!(got, expected);
    assert!(spool.join("corrupt").join(victim.file_name().expect("name")).exists());
    assert!(agent.log().contains("is unreadable (checksum mismatch)"), "{}", agent.log());
}

struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(ok.success(), "cannot mount a tmpfs (the suite runs as root)");
        Tmpfs { path: path.to_path_buf() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A folder bind-mounted on itself, so that it can be made read-only alone: `mount -o remount,ro`
/// of a whole filesystem fails (busy) while a process keeps a file on it open for writing, as the
/// shipper keeps its status file.
struct SelfBind {
    path: std::path::PathBuf,
}

impl SelfBind {
    fn mount(path: &std::path::Path) -> SelfBind {
        std::fs::create_dir_all(path).expect("bind point");
        let ok = Command::new("mount").arg("--bind").arg(path).arg(path).status().expect("mount --bind");
        assert!(ok.success(), "cannot bind-mount {} (the suite runs as root)", path.display());
        SelfBind { path: path.to_path_buf() }
    }

    fn remount(&self, options: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,bind,{options}")])
            .arg(&self.path)
            .status()
            .expect("remount");
        assert!(ok.success(), "cannot remount {} {options}", self.path.display());
    }
}

impl Drop for SelfBind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Regression: this test used to wait for `queued_frames >= 10`, which holds as soon as `send`
/// returns, so that "none is acknowledged" was never checked; and it remounted the whole tmpfs
/// read-only, which fails while the shipper keeps its status file open for writing.
#[test]
fn full_or_read_only_spool_holds_frames_unacknowledged_and_recovers() {
    let mut influx = Influx::start(false);
    let work = tempfile::tempdir().expect("tempdir");
    let fs = Tmpfs::mount(&work.path().join("tmpdir"), "512k");
    let spool = SelfBind::mount(&fs.path.join("spool"));
    let agent = Agent::new(
        &format!("tmpdir: {}\nbatch_ms: 0\nself_metrics: no", fs.path.display()),
        &influx_config(&influx.url()),
    );
    let mut shipper = agent.start_shipper();
    // Fill the disk, then take the backend away: the spool cannot be written.
    let filler = fs.path.join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .args(["bs=4k", "count=1000"])
        .output();
    influx.stop();
    let client = SenderClient::start(&agent.socket(), "test", 1000);
    for i in 0..20u64 {
        client.send(vec![Point::int("fi_full", BASE + i, i as i64, "fault")]);
        thread::sleep(Duration::from_millis(20));
    }
    wait_for(Duration::from_secs(15), "the spool error in the log", || {
        agent.log().contains("cannot write to the spool").then_some(())
    });
    // Then read-only with free space: the spool is made read-only before the space is freed, so
    // that it is never writable in between.
    spool.remount("ro");
    std::fs::remove_file(&filler).expect("free space");
    for i in 20..30u64 {
        client.send(vec![Point::int("fi_full", BASE + i, i as i64, "fault")]);
    }
    // The shipper took all 30 points (self-metrics are off, so they are all of them), and tried to
    // deliver, then to spool, after that: a backend error counted after the 30th point.
    let pid = shipper.pid();
    let errors = wait_for(Duration::from_secs(15), "the shipper to take all 30 points", || {
        (agent.status_metric(pid, "puypuy_shipper_points_received")? == 30)
            .then(|| agent.status_sum(pid, "puypuy_shipper_backend_errors"))?
    });
    wait_for(Duration::from_secs(20), "a delivery attempt after the 30th point", || {
        (agent.status_sum(pid, "puypuy_shipper_backend_errors")? > errors).then_some(())
    });
    let stats = client.stats();
    assert_eq!(stats.queued_frames, 30, "frames acknowledged while they could be neither delivered nor spooled");
    assert_eq!(agent.status_metric(pid, "puypuy_shipper_points_spooled"), Some(0));
    assert_eq!(agent.status_metric(pid, "puypuy_shipper_points_dropped"), Some(0));
    assert!(shipper.is_running(), "the shipper died on a full or read-only disk");
    spool.remount("rw");
    influx.restart();
    assert!(client.flush(Duration::from_secs(30)), "frames never acknowledged after recovery");
    wait_all(&influx, "fi_full", 30, Duration::from_secs(30));
    assert!(shipper.is_running());
}

#[test]
fn carbon_down_at_first_then_spooled_points_arrive() {
    let carbon_dir = tempfile::tempdir().expect("tempdir");
    let port = puypuy_tests::free_port();
    let agent = Agent::new("batch_ms: 0", &format!("[TSDB]\ntsdtype: Carbon\naddress: 127.0.0.1:{port}\n"));
    let _shipper = agent.start_shipper();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    let client = SenderClient::start(&agent.socket(), "test", 100);
    for i in 0..20u64 {
        client.send(vec![Point::int("fi_carbon", now - 100 + i, i as i64, "fault")]);
    }
    assert!(client.flush(Duration::from_secs(15)), "points not spooled");
    assert!(agent.log().contains("spooling and retrying"), "{}", agent.log());
    let carbon = Carbon::start_on(carbon_dir, port);
    let host = Agent::host().replace('.', "_");
    let path = format!("testcluster.testgroup.{host}.fi_carbon");
    let values = wait_for(Duration::from_secs(30), "20 points in whisper", || {
        let v = carbon.fetch(&path, 200);
        (v.len() == 20).then_some(v)
    });
    let got: Vec<(u64, f64)> = values.into_iter().map(|(t, v)| (t - (now - 100), v)).collect();
    let expected: Vec<(u64, f64)> = (0..20).map(|i| (i, i as f64)).collect();
    assert_eq!(got, expected);
}

#[test]
fn status_file_stays_fresh_while_delivery_waits_on_a_backend_that_never_answers() {
    // A backend that accepts connections and never answers: each send waits its whole timeout,
    // the batch queue fills and the batcher waits too. The status file must keep its period.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let agent = Agent::new(
        "batch_points: 1\nbatch_ms: 1",
        &format!("[TSDB]\ntsdtype = InfluxDB\naddress = http://127.0.0.1:{port}\ndatabase = x\ntimeout_seconds = 30\n"),
    );
    let _shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "stall", 1000);
    for i in 0..200 {
        client.send(vec![Point::int("stall", 1_700_000_000 + i, i as i64, "t")]);
    }
    let status = || -> Option<(u64, i64)> {
        let text = std::fs::read_to_string(agent.path("spool/shipper-status.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some((v["timestamp"].as_u64()?, v["metrics"]["puypuy_shipper_points_received"].as_i64()?))
    };
    // Wait until the pipeline is stuck: points received stop growing below the 200 sent.
    let (first, received) = wait_for(Duration::from_secs(15), "the pipeline held up by the backend", || {
        let (t, n) = status()?;
        (n > 0 && n < 200).then_some((t, n))
    });
    wait_for(Duration::from_secs(10), "the status file rewritten while delivery waits", || {
        let (t, n) = status()?;
        assert!(n < 200, "the pipeline was not held up ({n} received, {received} before)");
        (t >= first + 3).then_some(())
    });
}
