//! `puypuy-collector`: runs the enabled system checks every `check_period_seconds`, on wall-clock
//! multiples of the period, and hands the points to the shipper.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use puypuy_collector::checks::service::ServiceCheck;
use puypuy_collector::checks::{self, CheckFn};
use puypuy_collector::context::{self, Context};
use puypuy_common::producer::{Cycle, Producer, ONCE_TIMEOUT};
use puypuy_common::Config;

/// One configured service and whether its last run failed (to log once per outage).
struct Service {
    label: String,
    check: Mutex<Box<dyn ServiceCheck>>,
    failing: Mutex<bool>,
    busy_logged: Mutex<bool>,
}

/// Runs one service check in its own thread and emits its points when it is done; a check still
/// running from an earlier cycle is not started again.
fn spawn_service(service: &Arc<Service>, producer: &Arc<Producer>, tick: u64) -> Option<thread::JoinHandle<()>> {
    let (service, producer) = (Arc::clone(service), Arc::clone(producer));
    thread::Builder::new()
        .name(format!("check-{}", service.label))
        .spawn(move || {
            let Ok(mut check) = service.check.try_lock() else {
                let mut logged = service.busy_logged.lock().unwrap_or_else(|e| e.into_inner());
                if !*logged {
                    log::warn!("check {} is still running from an earlier cycle; skipped", service.label);
                    *logged = true;
                }
                return;
            };
            *service.busy_logged.lock().unwrap_or_else(|e| e.into_inner()) = false;
            let result = check.collect(tick);
            drop(check);
            let mut failing = service.failing.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(points) => {
                    if *failing {
                        log::info!("check {} works again", service.label);
                        *failing = false;
                    }
                    producer.emit(points);
                }
                Err(e) => {
                    if !*failing {
                        log::warn!("check {} failed: {e}; logged once until it works again", service.label);
                        *failing = true;
                    } else {
                        log::debug!("check {} still failing: {e}", service.label);
                    }
                }
            }
        })
        .ok()
}

/// What one cycle runs, built from the config (again on every reload).
struct Plan {
    config: Config,
    enabled: Vec<(&'static str, CheckFn)>,
    pid_files: Vec<(String, PathBuf)>,
    services: Vec<Arc<Service>>,
}

impl Plan {
    fn new(config: Config) -> Plan {
        let s = &config.self_config;
        let enabled: Vec<(&'static str, CheckFn)> =
            s.system_checks.iter().map(|c| (c.name(), checks::system_check(*c))).collect();
        let pid_files = config.open_files.clone();
        let services: Vec<Arc<Service>> = config
            .services
            .iter()
            .map(|c| {
                Arc::new(Service {
                    label: c.section.clone(),
                    check: Mutex::new(checks::service_check(c)),
                    failing: Mutex::new(false),
                    busy_logged: Mutex::new(false),
                })
            })
            .collect();
        log::info!(
            "period {} s; system checks: {}; service checks: {}",
            s.check_period_seconds,
            enabled.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            if services.is_empty() {
                "none".to_string()
            } else {
                services.iter().map(|s| s.label.as_str()).collect::<Vec<_>>().join(", ")
            }
        );
        Plan { config, enabled, pid_files, services }
    }
}

fn main() -> ExitCode {
    let producer = match Producer::init("puypuy-collector", "collector") {
        Ok(p) => Arc::new(p),
        Err(code) => return code,
    };
    let mut plan = Plan::new(producer.config.clone());
    let mut failing: HashSet<&str> = HashSet::new();
    let open_files = context::OpenFiles::default();
    loop {
        if let Some(config) = producer.reloaded_config() {
            plan = Plan::new(config);
        }
        let tick = match producer.next_cycle(plan.config.period()) {
            Cycle::Tick(tick) => tick,
            Cycle::Reload => continue,
            Cycle::Stop => break,
        };
        let s = &plan.config.self_config;
        let ctx = Context {
            proc_root: &s.proc_root,
            sys_root: &s.sys_root,
            timestamp: tick,
            statfs: &context::statvfs,
            pid_files: &plan.pid_files,
            files: Some(&open_files),
        };
        let started = Instant::now();
        let mut points = Vec::with_capacity(128);
        for (name, check) in &plan.enabled {
            match check(&ctx) {
                Ok(p) => {
                    if failing.remove(name) {
                        log::info!("check {name} works again");
                    }
                    points.extend(p);
                }
                Err(e) => {
                    if failing.insert(name) {
                        log::warn!("check {name} failed: {e}; the other checks go on");
                    }
                }
            }
        }
        log::debug!("cycle {tick}: {} points in {:.1?}", points.len(), started.elapsed());
        producer.emit(points);
        let running: Vec<thread::JoinHandle<()>> =
            plan.services.iter().filter_map(|s| spawn_service(s, &producer, tick)).collect();
        if producer.cli.once {
            for r in running {
                let _ = r.join();
            }
            return producer.finish(ONCE_TIMEOUT);
        }
    }
    log::info!("stopping");
    // A clean stop gives the shipper a moment to acknowledge the last cycle; what it does not
    // acknowledge is lost with this process, as the queue lives in memory.
    let _ = producer.finish(Duration::from_secs(2));
    ExitCode::SUCCESS
}
