//! What every producer binary (collector, script-runner, jmx-bridge) does the same way: parse the
//! command line, load and validate the config (exit 2 on any problem), set up logging and
//! SIGTERM/SIGINT, wait for the next tick of the schedule ([`Producer::next_cycle`]), and emit
//! points either to the shipper through the [`SenderClient`] or, with `--dry-run`, to stdout one
//! per line.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::cli::{Cli, Supports};
use crate::client::SenderClient;
use crate::config::Config;
use crate::{hostname, logging, Point};

pub use crate::schedule::{next_tick, until};

/// Loads the config again for a reload; logs and refuses an invalid one.
pub fn reload(path: &std::path::Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => {
            log::info!("SIGHUP: configuration reloaded from {}", c.file.display());
            for w in &c.warnings {
                log::warn!("{}: {w}", c.file.display());
            }
            Some(c)
        }
        Err(errors) => {
            log::error!("SIGHUP: new configuration refused, the running one stays:\n{errors}");
            None
        }
    }
}

/// How long `--once` waits for the shipper to acknowledge the cycle.
pub const ONCE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Producer {
    pub process: &'static str,
    pub cli: Cli,
    pub config: Config,
    pub terminate: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    /// Read end of a socket pair the signal handlers write a byte to, so that a sleep ends at
    /// once on SIGTERM, SIGINT or SIGHUP without waking up to poll the flags.
    wake: std::os::unix::net::UnixStream,
    client: Option<SenderClient>,
    /// The host's tags, shown by `--dry-run` as the shipper would add them.
    host_tags: Vec<(String, String)>,
}

/// What [`Producer::next_cycle`] woke up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cycle {
    /// Run the cycle of this unix second.
    Tick(u64),
    /// A SIGHUP came: apply the new config, then wait again.
    Reload,
    /// SIGTERM or SIGINT: stop.
    Stop,
}

impl Producer {
    /// Everything up to the first cycle. On error the message is printed and the exit code returned.
    pub fn init(process: &'static str, sender: &str) -> Result<Producer, ExitCode> {
        let supports = Supports { one_cycle: true, subcommand: None };
        let usage = format!("usage: {process} [--config PATH] [--once] [--dry-run]");
        let cli = Cli::parse(std::env::args().skip(1), supports).map_err(|e| {
            eprintln!("{process}: {e}\n{}", Cli::usage(&usage, supports));
            ExitCode::from(2)
        })?;
        if let Some(code) = cli.answer_and_exit(process, &usage, supports) {
            return Err(code);
        }
        let config = Config::load(&cli.config).map_err(|errors| {
            eprintln!("{process}: invalid configuration:\n{errors}");
            ExitCode::from(2)
        })?;
        if cli.once && !cli.dry_run {
            // Say at once that nobody will acknowledge, instead of waiting ONCE_TIMEOUT for it.
            let socket = &config.self_config.socket;
            if let Err(e) = std::os::unix::net::UnixStream::connect(socket) {
                eprintln!(
                    "{process}: no shipper is listening on {} ({e}): start it (./puypuy.sh start shipper), or add --dry-run to print the points",
                    socket.display()
                );
                return Err(ExitCode::FAILURE);
            }
        }
        if cli.dry_run {
            // One cycle printed for a person (`./puypuy.sh once`): warnings and errors only, not
            // the start-up lines.
            let level = if cli.once { log::LevelFilter::Warn } else { log::LevelFilter::Info };
            logging::init_stderr(process, config.self_config.debug_log, level);
        } else if let Err(e) = logging::init(process, &config.self_config.log_file, config.self_config.debug_log) {
            eprintln!("{process}: {e}");
            return Err(ExitCode::from(2));
        }
        // The shipper logs the config's warnings at start; a producer run by hand shows them.
        if cli.once || cli.dry_run {
            for w in &config.warnings {
                log::warn!("{}: {w}", config.file.display());
            }
        }
        let host_tags = config.host_tags(&hostname::host_name(config.self_config.shorthostname));
        let terminate = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&terminate)) {
                eprintln!("{process}: cannot install the signal handler: {e}");
                return Err(ExitCode::FAILURE);
            }
        }
        // SIGHUP: fern reopens the log file (its own handler) and this flag asks for a reload.
        let hup = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup)) {
            eprintln!("{process}: cannot install the SIGHUP handler: {e}");
            return Err(ExitCode::FAILURE);
        }
        let (wake, wake_tx) = std::os::unix::net::UnixStream::pair().map_err(|e| {
            eprintln!("{process}: cannot create the wake-up socket: {e}");
            ExitCode::FAILURE
        })?;
        // Non-blocking: a burst of signals must never block a handler on a full socket buffer.
        let _ = wake_tx.set_nonblocking(true);
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
            let tx = wake_tx.try_clone().map_err(|e| {
                eprintln!("{process}: cannot create the wake-up socket: {e}");
                ExitCode::FAILURE
            })?;
            if let Err(e) = signal_hook::low_level::pipe::register(signal, tx) {
                eprintln!("{process}: cannot install the signal handler: {e}");
                return Err(ExitCode::FAILURE);
            }
        }
        let client = (!cli.dry_run)
            .then(|| SenderClient::start(&config.self_config.socket, sender, config.self_config.producer_queue));
        if !cli.once {
            log::info!("started (pid {}), period {} s", std::process::id(), config.self_config.check_period_seconds);
        }
        Ok(Producer { process, cli, config, terminate, hup, wake, client, host_tags })
    }

    /// True when a SIGHUP arrived that [`Producer::reloaded_config`] has not handled yet.
    pub fn reload_pending(&self) -> bool {
        self.hup.load(Ordering::SeqCst)
    }

    /// After a SIGHUP: the config re-read and validated, or `None` (no SIGHUP, or the new file is
    /// invalid: then it is logged and the running config stays).
    pub fn reloaded_config(&self) -> Option<Config> {
        if !self.hup.swap(false, Ordering::SeqCst) {
            return None;
        }
        reload(&self.cli.config)
    }

    pub fn terminated(&self) -> bool {
        self.terminate.load(Ordering::Relaxed)
    }

    /// Sends (or prints) one cycle's points. Never blocks on the shipper.
    pub fn emit(&self, points: Vec<Point>) {
        match &self.client {
            Some(client) => client.send(points),
            None => {
                // One write per cycle, not one per line.
                let mut text = String::with_capacity(points.len() * 64);
                for p in &points {
                    text.push_str(&p.dry_run_line_with(&self.host_tags));
                    text.push('\n');
                }
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
        }
    }

    /// The loop every producer runs: with `--once`, the current second at once; else sleeps until
    /// the next wall-clock multiple of `period` (see [`crate::schedule`]), returning early for a
    /// SIGHUP or a stop.
    pub fn next_cycle(&self, period: Duration) -> Cycle {
        let now = || SystemTime::now();
        if self.cli.once {
            return Cycle::Tick(now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
        }
        let tick = next_tick(now(), period);
        if !self.sleep_until(Instant::now() + until(tick, now())) {
            return Cycle::Stop;
        }
        if self.reload_pending() {
            return Cycle::Reload;
        }
        Cycle::Tick(tick)
    }

    /// Sleeps until `deadline`; false when asked to stop meanwhile. Returns early (true) on SIGHUP
    /// so that a reload is applied at once.
    pub fn sleep_until(&self, deadline: Instant) -> bool {
        use std::io::Read;
        let mut drain = [0u8; 64];
        while !self.terminated() {
            if self.hup.load(Ordering::SeqCst) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            // The flags are set before the handler writes its byte, so they are seen on wake-up.
            // A timeout that cannot be set (zero) falls back to a short sleep.
            if self.wake.set_read_timeout(Some(deadline - now)).is_err() {
                std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
                continue;
            }
            let _ = (&self.wake).read(&mut drain);
        }
        false
    }

    /// Sleeps until `fd` is readable (a producer with nothing to do waiting for a change, see the
    /// script-runner's folder watch), `timeout` passed or a SIGHUP came (true: look again, apply
    /// the reload) or a stop (false).
    pub fn sleep_until_readable(&self, fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::io::Read;
        use std::os::fd::AsFd;
        let mut drain = [0u8; 64];
        let deadline = Instant::now() + timeout;
        while !self.terminated() {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.hup.load(Ordering::SeqCst) || left.is_zero() {
                return true;
            }
            let mut fds = [PollFd::new(self.wake.as_fd(), PollFlags::POLLIN), PollFd::new(fd, PollFlags::POLLIN)];
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            let n = poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)).unwrap_or(0);
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            if n > 0 && ready(&fds[0]) {
                // The handlers set the flags before writing their byte; one read drains it (the
                // socket is readable, so it does not block).
                let _ = (&self.wake).read(&mut drain);
            }
            if n > 0 && ready(&fds[1]) {
                return !self.terminated();
            }
        }
        false
    }

    /// For `--once` and for a clean stop: waits until the shipper acknowledged what was sent.
    pub fn finish(&self, timeout: Duration) -> ExitCode {
        let Some(client) = &self.client else { return ExitCode::SUCCESS };
        if client.flush(timeout) {
            ExitCode::SUCCESS
        } else {
            let msg = format!(
                "the shipper did not acknowledge {} frames within {timeout:.0?} (is it running on {}?)",
                client.stats().queued_frames,
                self.config.self_config.socket.display()
            );
            log::error!("{msg}");
            eprintln!("{}: {msg}", self.process);
            ExitCode::FAILURE
        }
    }

    pub fn client(&self) -> Option<&SenderClient> {
        self.client.as_ref()
    }
}
