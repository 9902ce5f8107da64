//! `puypuy-shipper`: receives producers' frames on the Unix socket and delivers them to the
//! backend named in `[TSDB]` and to each output `[TSDB:NAME]`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use puypuy_common::cli::{Cli, Supports};
use puypuy_common::{hostname, logging, Config};
use puypuy_shipper::batch::{self, BatcherSettings, Input};
use puypuy_shipper::route::{DeliveryEnv, Plan, Router};
use puypuy_shipper::spool::DropPolicy;
use puypuy_shipper::stats::{DestinationList, Stats};
use puypuy_shipper::{receive, relay, self_metrics, send, tags::HostTags};

/// Every point received is a handful of small strings allocated on a connection thread and freed
/// on the delivery thread; glibc's malloc spent 40% of the shipper's time on that
/// (`./tests/bench.sh --only throughput` under perf). mimalloc frees across threads cheaply.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: puypuy-shipper [--config PATH]\n       puypuy-shipper [--config PATH] send NAME VALUE [--type T] [--rate] [--timestamp TS] [tag=value ...]";

const SUPPORTS: Supports = Supports { one_cycle: false, subcommand: Some("send") };

fn main() -> ExitCode {
    let cli = match Cli::parse(std::env::args().skip(1), SUPPORTS) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("puypuy-shipper: {e}\n{}", Cli::usage(USAGE, SUPPORTS));
            return ExitCode::from(2);
        }
    };
    if let Some(code) = cli.answer_and_exit("puypuy-shipper", USAGE, SUPPORTS) {
        return code;
    }
    let send_args = cli.rest.first().map(|_| cli.rest[1..].to_vec());
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("puypuy-shipper: invalid configuration:\n{errors}");
            return ExitCode::from(2);
        }
    };
    if let Some(args) = send_args {
        return send::run(&config, &args);
    }
    if let Err(e) = logging::init("puypuy-shipper", &config.self_config.log_file, config.self_config.debug_log) {
        eprintln!("puypuy-shipper: {e}");
        return ExitCode::from(2);
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("puypuy-shipper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What each destination's delivery loop is given, from `[SelfConfig]` and the host's tags.
fn delivery_env(config: &Config, host: &HostTags) -> DeliveryEnv {
    let s = &config.self_config;
    DeliveryEnv {
        tmpdir: s.tmpdir.clone(),
        max_cache: s.max_cache,
        max_cache_bytes: s.max_cache_bytes,
        policy: if s.cache_drop_newest { DropPolicy::Newest } else { DropPolicy::Oldest },
        rejected_max_files: s.rejected_max_files,
        batch_points: s.batch_points,
        host: host.clone(),
    }
}

/// Applies what a reload can change while running: tags, batching, the outputs and their
/// destinations. The rest is logged as needing a restart.
fn apply_reload(
    old: &Config,
    new: &Config,
    input: &crossbeam_channel::Sender<Input>,
    routes: &crossbeam_channel::Sender<(Plan, DeliveryEnv)>,
) {
    let s = &new.self_config;
    let host = HostTags::from_config(new, &hostname::host_name(s.shorthostname));
    let _ = input.send(Input::Reload { batch_points: s.batch_points, batch_wait: Duration::from_millis(s.batch_ms) });
    // New transports carry the new backend settings and the new host tags.
    let _ = routes.send((Plan::new(&new.tsdb, &new.outputs, &host), delivery_env(new, &host)));
    let o = &old.self_config;
    let mut restart = Vec::new();
    if o.socket != s.socket {
        restart.push("socket");
    }
    if o.tmpdir != s.tmpdir {
        restart.push("tmpdir");
    }
    if o.max_cache != s.max_cache
        || o.max_cache_bytes != s.max_cache_bytes
        || o.cache_drop_newest != s.cache_drop_newest
    {
        restart.push("max_cache/max_cache_bytes/cache_drop");
    }
    if old.relay != new.relay {
        restart.push("[Relay]");
    }
    if !restart.is_empty() {
        log::warn!("SIGHUP: {} changed; these take effect at the next restart of the shipper", restart.join(", "));
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    for w in &config.warnings {
        log::warn!("{}: {w}", config.file.display());
    }
    // The main thread sleeps in here until a signal comes: no polling while idle. SIGUSR1 asks
    // for the status file now.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
    ])
    .context("cannot install the signal handlers")?;
    let s = &config.self_config;
    let socket = s.socket.clone();
    let bound = receive::bind(&socket, config.relay.socket_group.as_deref()).map_err(anyhow::Error::msg)?;
    let host = hostname::host_name(s.shorthostname);
    let host_tags = HostTags::from_config(&config, &host);

    let stats = Arc::new(Stats::default());
    // Both queues are short: when delivery is behind, the batcher waits, the readers wait, and the
    // producers and relay clients feel it (their own bounded queues, TCP backpressure) instead of
    // the shipper's memory growing.
    let (input_tx, input_rx) = crossbeam_channel::bounded::<Input>(8);
    let (batch_tx, batch_rx) = crossbeam_channel::bounded(4);
    let batcher_settings = BatcherSettings {
        batch_points: s.batch_points,
        batch_wait: Duration::from_millis(s.batch_ms),
        rate_file: Some(s.tmpdir.join("rates.state")),
    };
    let grace = std::iter::once(&config.tsdb)
        .chain(&config.outputs)
        .map(|t| (t.timeout + t.connect_timeout).max(Duration::from_secs(5)))
        .max()
        .unwrap_or(Duration::from_secs(5));
    let destinations = DestinationList::default();
    let router = Router::start(
        Plan::new(&config.tsdb, &config.outputs, &host_tags),
        delivery_env(&config, &host_tags),
        Arc::clone(&stats),
        Arc::clone(&destinations),
        grace,
    );
    log::info!(
        "started (pid {}), listening on {}, host {host}, delivering to {}",
        std::process::id(),
        socket.display(),
        router.describe()
    );
    let outlet = batch::Outlet::new(batch_tx, router.direct());
    let (routes_tx, routes_rx) = crossbeam_channel::unbounded();
    let delivery = thread::Builder::new()
        .name("router".into())
        .spawn(move || router.run(batch_rx, routes_rx))
        .context("cannot start the routing thread")?;
    let accept_tx = input_tx.clone();
    let listener = bound.listener.try_clone().context("cannot clone the listener")?;
    let accept_stats = Arc::clone(&stats);
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || receive::serve(listener, accept_tx, accept_stats))
        .context("cannot start the accept thread")?;
    let relay_stats = relay::start(&config.relay, &input_tx).map_err(anyhow::Error::msg)?;
    let batcher_stats = Arc::clone(&stats);
    let batcher = thread::Builder::new()
        .name("batcher".into())
        .spawn(move || batch::run_batcher(input_rx, outlet, batcher_settings, batcher_stats))
        .context("cannot start the batcher")?;
    let self_metrics = Arc::new(Mutex::new(
        self_metrics::SelfMetrics::new(
            Arc::clone(&stats),
            relay_stats,
            config.period(),
            s.tmpdir.join("shipper-status.json"),
            s.self_metrics,
        )
        .with_destinations(Arc::clone(&destinations)),
    ));
    let lock_self_metrics = || self_metrics.lock().unwrap_or_else(|e| e.into_inner());
    // The status file at once, in both modes: `puypuy.sh status --json` signals a shipper only
    // once the file carries its pid (its SIGUSR1 handler is in place by then).
    lock_self_metrics().write_status();
    if lock_self_metrics().sends() {
        let (shared, tx) = (Arc::clone(&self_metrics), input_tx.clone());
        thread::Builder::new()
            .name("self-metrics".into())
            .spawn(move || self_metrics::run(shared, tx))
            .context("cannot start the self-metrics thread")?;
    }

    let mut running = config.clone();
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGUSR1 {
            // `./puypuy.sh status --json` (and the tests) ask for a fresh status file.
            lock_self_metrics().write_status();
            continue;
        }
        if signal != signal_hook::consts::SIGHUP {
            break;
        }
        if let Some(new) = puypuy_common::producer::reload(&running.file) {
            apply_reload(&running, &new, &input_tx, &routes_tx);
            running = new;
        }
    }
    log::info!("stopping: no new connections, delivering what is held (up to {grace:.0?})");
    let _ = std::fs::remove_file(&socket);
    let _ = input_tx.send(Input::Shutdown);
    drop(input_tx);
    let _ = batcher.join();
    let deadline = Instant::now() + grace + Duration::from_secs(1);
    while !delivery.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    // Each point received in this run, by its first fate; it adds up once delivery has stopped.
    let balance = stats.balance();
    for d in destinations.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        log::info!("{} {}: points {}", d.output, d.destination, d.stats.balance());
    }
    if delivery.is_finished() {
        log::info!("stopped: points {balance}");
    } else {
        log::warn!(
            "stopped while delivery still waits on the backend: points {balance}, and {} in its hands (their producers still hold them)",
            balance.received.saturating_sub(balance.accounted())
        );
    }
    drop(bound);
    Ok(())
}
