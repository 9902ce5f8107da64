//! `puypuy-jmx-bridge`: holds one embedded JVM and reads the MBeans of every `[JMX]` /
//! `[JMX:NAME]` target each period. Each target has its own thread, so a slow target never delays
//! the others; a target that is down is logged once per outage and retried every cycle. If the JVM
//! dies, only this process dies and puypuy.sh restarts it.

mod jvm;
mod mbeans;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use puypuy_common::jmx::JmxTarget;
use puypuy_common::producer::{Cycle, Producer, ONCE_TIMEOUT};
use puypuy_common::Point;

fn rss_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: i64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

fn run_target(jvm: &jvm::Jvm, target: &JmxTarget, tick: u64, failing: &mut bool) -> Vec<Point> {
    let label = &target.section;
    let started = Instant::now();
    let answer = jvm.read(&mbeans::spec(target)).and_then(|a| mbeans::parse_answer(&a, target, tick));
    if started.elapsed() > target.timeout {
        log::warn!("[{label}] answered after {:.1?}, over its timeout of {:?}", started.elapsed(), target.timeout);
    }
    match answer {
        Ok(points) => {
            if *failing {
                log::info!("[{label}] reachable again");
                *failing = false;
            }
            points
        }
        Err(e) => {
            if !*failing {
                let hint = match (&target.class, &target.os_user) {
                    (Some(_), Some(u)) => {
                        format!(" (a local JVM can be attached only by its own user: run the bridge as {u})")
                    }
                    _ => String::new(),
                };
                log::warn!("[{label}] cannot read MBeans: {e}{hint}; retrying every cycle, logged once until it works");
                *failing = true;
            }
            Vec::new()
        }
    }
}

type Worker = (String, crossbeam_channel::Sender<u64>, Arc<AtomicBool>, thread::JoinHandle<()>);

/// One worker thread per target, fed one tick at a time; a busy worker skips the tick. Dropping a
/// worker's sender ends it after its current read.
fn spawn_workers(targets: &[JmxTarget], jvm: &Arc<jvm::Jvm>, producer: &Arc<Producer>) -> Vec<Worker> {
    let mut workers = Vec::new();
    for target in targets {
        // `busy` is set when a tick is handed over and cleared when the worker is done with it.
        let (tx, rx) = crossbeam_channel::bounded::<u64>(1);
        let busy = Arc::new(AtomicBool::new(false));
        let label = target.section.clone();
        let (jvm, producer, target, worker_busy) =
            (Arc::clone(jvm), Arc::clone(producer), target.clone(), Arc::clone(&busy));
        let handle = thread::Builder::new().name(format!("jmx-{}", target.section)).spawn(move || {
            let mut failing = false;
            while let Ok(tick) = rx.recv() {
                let points = run_target(&jvm, &target, tick, &mut failing);
                producer.emit(points);
                worker_busy.store(false, Ordering::SeqCst);
            }
        });
        match handle {
            Ok(h) => workers.push((label, tx, busy, h)),
            Err(e) => log::error!("cannot start the worker of [{label}]: {e}"),
        }
    }
    workers
}

fn main() -> ExitCode {
    let producer = match Producer::init("puypuy-jmx-bridge", "jmx-bridge") {
        Ok(p) => Arc::new(p),
        Err(code) => return code,
    };
    let jmx = producer.config.jmx.clone();
    if jmx.targets.is_empty() {
        log::info!("no [JMX] target configured; nothing to do");
        return ExitCode::SUCCESS;
    }
    let libjvm = match jvm::find_libjvm(jmx.java_home.as_deref(), jmx.java.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            log::error!("{e}");
            eprintln!("puypuy-jmx-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    let options: Vec<String> =
        jmx.jvm_options.clone().unwrap_or_else(|| jvm::DEFAULT_OPTIONS.iter().map(|s| s.to_string()).collect());
    let class_dir = producer.config.self_config.tmpdir.join("jmx");
    let jvm = match jvm::Jvm::start(&libjvm, &class_dir, &options) {
        Ok(j) => Arc::new(j),
        Err(e) => {
            log::error!("{e}");
            eprintln!("puypuy-jmx-bridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    match jvm.self_info() {
        Ok(info) => log::info!("JVM started from {} ({info}), options {}", libjvm.display(), options.join(" ")),
        Err(e) => log::warn!("JVM started but the helper class does not answer: {e}"),
    }

    let mut workers = spawn_workers(&jmx.targets, &jvm, &producer);
    let mut period = producer.config.period();
    let mut reported_rss = false;
    loop {
        if let Some(config) = producer.reloaded_config() {
            // The JVM stays (java_home and jvm_options need a restart); targets and period change.
            period = config.period();
            workers = spawn_workers(&config.jmx.targets, &jvm, &producer);
        }
        let tick = match producer.next_cycle(period) {
            Cycle::Tick(tick) => tick,
            Cycle::Reload => continue,
            Cycle::Stop => break,
        };
        for (label, tx, busy, _) in &workers {
            if busy.swap(true, Ordering::SeqCst) {
                log::warn!("[{label}] is still busy with an earlier cycle (over its timeout); skipped at {tick}");
            } else if tx.try_send(tick).is_err() {
                busy.store(false, Ordering::SeqCst);
            }
        }
        if let Some(rss) = rss_bytes() {
            if !reported_rss && !producer.cli.once {
                log::info!("RSS {:.1} MiB with {} targets", rss as f64 / 1048576.0, workers.len());
                reported_rss = true;
            }
            producer.emit(vec![Point::int("puypuy_jmx_rss_bytes", tick, rss, "puypuy")]);
        }
        if producer.cli.once {
            for (_, tx, _, h) in workers {
                drop(tx);
                let _ = h.join();
            }
            return producer.finish(ONCE_TIMEOUT);
        }
    }
    log::info!("stopping");
    let _ = producer.finish(std::time::Duration::from_secs(2));
    // The JVM's threads would keep the process alive; exit now.
    std::process::exit(0);
}
