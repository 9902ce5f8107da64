//! The old agent's Python check modules (`checks_enabled/check_*.py`), run by one Python host
//! process (`python/puypuy_host.py`) that this module starts, feeds and watches.
//!
//! One host for all modules, not one process per module: a Python interpreter costs about 10 MiB
//! and 20 ms of CPU to start, and modules keep state between cycles (sharedvars, connections);
//! BENCHMARKS.md has the numbers. The host imports every module at start (and again on SIGHUP,
//! since the host is restarted then) and runs each module's cycle in a thread of its own, sending
//! each module's result as soon as it is done, so a slow module never delays the others' points.
//!
//! What the host cannot do for itself, this side does. A module still running at the cycle's
//! deadline (`script_timeout_seconds`) is reported, its points of that cycle are not sent, and it
//! is not started again until its thread ends: Python threads cannot be stopped, and killing the
//! host would cost every module its connections. The host itself (its whole process group) is
//! killed and started again only when it dies, does not answer a ping, has a hung thread that
//! burns CPU (it would slow every module), or when more than half of the modules hang. The host writes the protocol on a descriptor of its own; what modules print goes
//! to the log (see [`crate::host_protocol`]). Rate state lives in the shipper (rate-style points)
//! and in a state file in `tmpdir`, so a restart loses none.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use puypuy_common::Point;

use crate::guard::Groups;
use crate::host_protocol::{parse_event, HostEvent, ModuleResult};

/// The host script, found beside the binary or in the source tree.
pub const HOST_SCRIPT: &str = "puypuy_host.py";

/// Where the compatibility package lives: `$PUYPUY_PYTHON_DIR`, then `../share/puypuy/python`
/// from the binary (the .deb: /usr/bin and /usr/share/puypuy/python), then the source tree this
/// binary was built from (a checkout running from target/release).
pub fn python_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("PUYPUY_PYTHON_DIR") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(bin) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        candidates.push(bin.join("../share/puypuy/python"));
        candidates.push(bin.join("../../script-runner/python"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("python"));
    candidates.into_iter().find(|d| d.join(HOST_SCRIPT).is_file())
}

/// The Python modules of a folder: `check_*.py`, sorted.
pub fn modules_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("check_") && n.ends_with(".py"))
                .map(|n| n.trim_end_matches(".py").to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What a host is started with; replaced as a whole on SIGHUP.
#[derive(Debug, Clone)]
pub struct HostSettings {
    pub python: String,
    pub python_dir: Option<PathBuf>,
    pub checks_dir: PathBuf,
    /// The first line the host reads: config, host name, state file, import timeout, skip list.
    pub init: serde_json::Value,
    pub timeout: Duration,
    pub user: Option<(u32, u32)>,
    pub groups: Groups,
}

struct Host {
    child: Child,
    stdin: ChildStdin,
    pgid: i32,
    events: Receiver<Option<HostEvent>>,
}

impl Host {
    fn spawn(s: &HostSettings) -> Result<(Host, Receiver<String>), String> {
        let dir = s.python_dir.as_ref().ok_or(format!(
            "the Python compatibility package ({HOST_SCRIPT}) is not installed: reinstall the puypuy package, or set PUYPUY_PYTHON_DIR"
        ))?;
        let mut command = Command::new(&s.python);
        command
            .arg("-X")
            .arg("utf8")
            .arg(dir.join(HOST_SCRIPT))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .process_group(0);
        if s.checks_dir.is_dir() {
            command.current_dir(&s.checks_dir);
        }
        if let Some((uid, gid)) = s.user {
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn().map_err(|e| {
            format!("cannot start {:?}: {e} (install python3, or set [SelfConfig] python to the interpreter)", s.python)
        })?;
        let pgid = child.id() as i32;
        s.groups.insert(pgid);
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            let _ = child.wait();
            s.groups.remove(pgid);
            return Err("no pipes to the Python host".into());
        };
        let (tx, events) = crossbeam_channel::unbounded();
        let spawned = std::thread::Builder::new().name("python-events".into()).spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match parse_event(&line) {
                    Ok(ev) => {
                        if tx.send(Some(ev)).is_err() {
                            return;
                        }
                    }
                    Err(e) => log::warn!("{e}"),
                }
            }
            let _ = tx.send(None);
        });
        let (err_tx, err_rx) = crossbeam_channel::unbounded();
        let spawned_err = std::thread::Builder::new().name("python-stderr".into()).spawn(move || {
            // What reaches the host's descriptors 1 and 2 outside Python's own print: a C
            // extension's output, the interpreter's fatal errors.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !line.trim().is_empty() {
                    log::warn!("python host: {line}");
                    let _ = err_tx.send(line);
                }
            }
        });
        let mut host = Host { child, stdin, pgid, events };
        if let Err(e) = spawned.and(spawned_err) {
            host.kill(&s.groups);
            return Err(format!("cannot start a thread to read the Python host: {e}"));
        }
        let mut line = s.init.to_string();
        line.push('\n');
        if let Err(e) = host.stdin.write_all(line.as_bytes()) {
            host.kill(&s.groups);
            return Err(format!("cannot write to the Python host: {e}"));
        }
        Ok((host, err_rx))
    }

    fn kill(&mut self, groups: &Groups) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        let _ = self.child.wait();
        groups.remove(self.pgid);
    }
}

/// What a cycle or a start-up sends the log and the shipper.
pub struct Supervisor {
    settings: HostSettings,
    host: Option<Host>,
    /// Restart a host that had to be killed at once (not with `--once`).
    restart: bool,
    /// Modules the running host loaded.
    loaded: Vec<String>,
    /// Import errors already logged (again only after a SIGHUP).
    import_errors: HashSet<(String, String)>,
    /// Modules whose last cycle raised: logged at the first, then once when they recover.
    failing: HashSet<String>,
    /// (module, metric) whose unsendable values were logged already.
    dropped_logged: HashSet<(String, String)>,
    /// Why the host could not start, logged once until it starts.
    start_failure: Option<String>,
    last_stderr: Option<Receiver<String>>,
    /// Modules whose cycle has not answered yet, and by when it must.
    pending: HashMap<String, Pending>,
    /// Modules whose thread outlived its deadline: left to end on their own, not started meanwhile.
    hung: HashMap<String, Hung>,
    ping_id: u64,
    pub restarts: u64,
}

/// A module's cycle not answered yet.
struct Pending {
    tick: u64,
    started: Instant,
    deadline: Instant,
}

/// A hung module's thread: its CPU seconds when last seen, to tell waiting from spinning.
struct Hung {
    cpu: f64,
    seen: Instant,
}

/// How long a host whose modules hang gets to answer a ping before it is taken for hung itself.
const PING_GRACE: Duration = Duration::from_secs(2);
/// A hung thread using at least this share of one CPU is spinning, and slows every module (low,
/// so that a thread spinning on a busy machine, where it gets a small share, is still seen).
const SPINNING_SHARE: f64 = 0.2;

/// How long the host gets per module to import, and for the whole start beyond that.
const START_GRACE: Duration = Duration::from_secs(5);

impl Supervisor {
    /// With `restart`, a host that had to be killed is started again at once, so that the next
    /// cycle finds the modules imported (`--once` does not).
    pub fn new(settings: HostSettings, restart: bool) -> Supervisor {
        Supervisor {
            settings,
            host: None,
            restart,
            loaded: Vec::new(),
            import_errors: HashSet::new(),
            failing: HashSet::new(),
            dropped_logged: HashSet::new(),
            start_failure: None,
            last_stderr: None,
            pending: HashMap::new(),
            hung: HashMap::new(),
            ping_id: 0,
            restarts: 0,
        }
    }

    /// SIGHUP: the host is started again with the new settings, so modules are imported afresh.
    pub fn reload(&mut self, settings: HostSettings) {
        self.stop();
        self.settings = settings;
        self.import_errors.clear();
        self.start_failure = None;
    }

    pub fn stop(&mut self) {
        if let Some(mut host) = self.host.take() {
            host.kill(&self.settings.groups);
        }
        self.loaded.clear();
        self.pending.clear();
        self.hung.clear();
    }

    /// Starts the host when it is not running; `false` when there is nothing to run.
    pub fn ensure_started(&mut self) -> bool {
        if self.host.is_some() {
            return true;
        }
        if modules_in(&self.settings.checks_dir).is_empty() {
            return false;
        }
        match self.start() {
            Ok(()) => {
                self.start_failure = None;
                true
            }
            Err(e) => {
                if self.start_failure.as_deref() != Some(e.as_str()) {
                    log::error!("python modules not run: {e}");
                    self.start_failure = Some(e);
                }
                false
            }
        }
    }

    fn start(&mut self) -> Result<(), String> {
        let (mut host, stderr) = Host::spawn(&self.settings)?;
        self.last_stderr = Some(stderr);
        let mut loaded = Vec::new();
        let per_module = self.settings.timeout + START_GRACE;
        let mut deadline = Instant::now() + per_module;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match host.events.recv_timeout(wait) {
                Ok(Some(HostEvent::Ready)) => break,
                Ok(Some(HostEvent::Loaded { module, style })) => {
                    log::info!("python module {module} loaded ({style} style)");
                    loaded.push(module);
                    deadline = Instant::now() + per_module;
                }
                Ok(Some(HostEvent::ImportError { module, file, reason })) => {
                    if self.import_errors.insert((module.clone(), reason.clone())) {
                        log::error!("python module {file} not loaded: {reason}; the other modules run");
                    }
                    deadline = Instant::now() + per_module;
                }
                Ok(Some(HostEvent::Log { level, module, text })) => log_line(&level, &module, &text),
                Ok(Some(_)) => {}
                Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                    host.kill(&self.settings.groups);
                    return Err(format!("the Python host ended while loading the modules{}", self.stderr_tail()));
                }
                Err(RecvTimeoutError::Timeout) => {
                    host.kill(&self.settings.groups);
                    return Err(format!("the Python host did not finish loading the modules within {per_module:?}"));
                }
            }
        }
        self.loaded = loaded;
        self.host = Some(host);
        Ok(())
    }

    fn stderr_tail(&self) -> String {
        let lines: Vec<String> = self.last_stderr.as_ref().map(|r| r.try_iter().collect()).unwrap_or_default();
        match lines.last() {
            Some(last) => format!(": {last}"),
            None => String::new(),
        }
    }

    /// Starts a cycle: the host runs every module not hung. Their points come as events
    /// ([`Supervisor::on_event`]); [`Supervisor::check_deadlines`] handles those that do not.
    /// Nothing here waits for a module, so a slow or hung one never delays the others' points nor
    /// the next cycle.
    pub fn start_cycle(&mut self, tick: u64) {
        if !self.ensure_started() {
            return;
        }
        let Some(host) = self.host.as_mut() else { return };
        let command = format!("{{\"cmd\":\"cycle\",\"tick\":{tick}}}\n");
        if let Err(e) = host.stdin.write_all(command.as_bytes()) {
            let why = format!("the Python host crashed (cannot write to it: {e}){}", self.stderr_tail());
            self.restart_host(&why);
            return;
        }
        let started = Instant::now();
        let deadline = started + self.settings.timeout;
        for module in &self.loaded {
            // A module still running from an earlier cycle keeps that cycle's deadline; a hung one
            // answers at once (still running, or run again since its thread ended).
            self.pending.entry(module.clone()).or_insert(Pending { tick, started, deadline });
        }
    }

    /// The host's events, for a `select!` beside the ticks (nothing while no host runs).
    pub fn events(&self) -> Receiver<Option<HostEvent>> {
        self.host.as_ref().map_or_else(crossbeam_channel::never, |h| h.events.clone())
    }

    /// When the earliest module not answered yet reaches its deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Modules of a started cycle have not answered yet.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// One event from [`Supervisor::events`]: `None` when the host ended.
    pub fn on_event(&mut self, event: Option<HostEvent>, emit: &mut dyn FnMut(Vec<Point>)) {
        match event {
            Some(event) => self.take(event, emit),
            None => {
                let why = format!("the Python host crashed (it ended){}", self.stderr_tail());
                self.restart_host(&why);
            }
        }
    }

    fn take(&mut self, event: HostEvent, emit: &mut dyn FnMut(Vec<Point>)) {
        match event {
            HostEvent::Result(r) => {
                let points = self.result(r);
                if !points.is_empty() {
                    emit(points);
                }
            }
            HostEvent::Log { level, module, text } => log_line(&level, &module, &text),
            // A pong come too late, events of the start.
            _ => {}
        }
    }

    fn result(&mut self, r: ModuleResult) -> Vec<Point> {
        let module = r.module.clone();
        let answered = self.pending.get(&module).is_some_and(|p| p.tick == r.tick);
        if r.still_running {
            if self.hung.contains_key(&module) {
                if answered {
                    self.pending.remove(&module);
                }
                return self.hung_again(r);
            }
            if answered {
                // The thread of a hung cycle that sent its late result (which ended the hang) but
                // was not done yet when this cycle came: nothing else comes for this tick, and
                // waiting for it would report a timeout of a module that no longer runs.
                self.pending.remove(&module);
            }
            // Slow, not yet at the deadline of the cycle it runs: not started again, like a script.
            log::debug!("python module {module}: still running from an earlier cycle; not started at {}", r.tick);
            return Vec::new();
        }
        if !answered {
            // The late result of a hung cycle: its deadline passed, so its points are not sent.
            if self.hung.remove(&module).is_some() {
                log::info!(
                    "python module {module}: its hung cycle of {} ended; it runs again from the next cycle",
                    r.tick
                );
            }
            return Vec::new();
        }
        self.pending.remove(&module);
        // It answered in time: whatever hang it had is over (a stale entry would count towards a
        // restart for piled-up modules, and take its next slow cycle for a hang).
        self.hung.remove(&module);
        self.points_of(r)
    }

    /// A hung module's cycle, one period later: a timeout again (logged once, when it began), and
    /// a restart of the host when its thread burns CPU.
    fn hung_again(&mut self, r: ModuleResult) -> Vec<Point> {
        let Some(hung) = self.hung.get_mut(&r.module) else { return Vec::new() };
        let share = (r.cpu - hung.cpu) / hung.seen.elapsed().as_secs_f64().max(0.001);
        *hung = Hung { cpu: r.cpu, seen: Instant::now() };
        let points = self_metrics(&r.module, r.tick, self.settings.timeout.as_secs_f64(), 1, 0, -1);
        if share >= SPINNING_SHARE {
            let why = format!(
                "python module {}: hangs busy on the CPU ({:.0}% of one CPU), which only a restart of the Python host stops",
                r.module,
                share * 100.0
            );
            self.restart_host(&why);
        }
        points
    }

    /// Modules past their deadline (`script_timeout_seconds`). Python threads cannot be stopped,
    /// so when the host answers a ping (its main thread runs), each is left to end on its own and
    /// not started again until it has, and the others go on with their connections. The host is
    /// restarted when it does not answer, when such a thread burns CPU, or when more than half of
    /// the modules hang.
    pub fn check_deadlines(&mut self, emit: &mut dyn FnMut(Vec<Point>)) {
        let now = Instant::now();
        let mut expired: Vec<String> =
            self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(m, _)| m.clone()).collect();
        if expired.is_empty() {
            return;
        }
        expired.sort();
        let busy = if self.restart {
            match self.ping(emit) {
                Ok(busy) => busy,
                Err(why) => {
                    self.restart_host(&why);
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let mut spinning = None;
        for name in expired {
            // It may have answered while the ping was on its way.
            let Some(p) = self.pending.remove(&name) else { continue };
            let cpu = busy.iter().find(|(m, _)| *m == name).map_or(0.0, |(_, cpu)| *cpu);
            log::warn!(
                "python module {name}: still running after {:?} (script_timeout_seconds); its points of this cycle are not sent and it is not started again until it ends (a Python thread cannot be stopped); the other modules go on",
                self.settings.timeout
            );
            emit(self_metrics(&name, p.tick, self.settings.timeout.as_secs_f64(), 1, 0, -1));
            let elapsed = p.started.elapsed().as_secs_f64();
            if cpu >= SPINNING_SHARE * elapsed {
                spinning = Some(format!(
                    "python module {name}: still running after {:?} and busy on the CPU ({cpu:.1} s of CPU in {elapsed:.1} s), which only a restart of the Python host stops",
                    self.settings.timeout
                ));
            }
            self.hung.insert(name, Hung { cpu, seen: Instant::now() });
        }
        if let Some(why) = spinning.or_else(|| self.piled_up()) {
            if self.restart {
                self.restart_host(&why);
            }
        }
    }

    /// Asks the host whether its main thread runs; its busy modules' CPU seconds, or why it must
    /// be restarted. Results arriving meanwhile are taken as usual.
    fn ping(&mut self, emit: &mut dyn FnMut(Vec<Point>)) -> Result<Vec<(String, f64)>, String> {
        self.ping_id += 1;
        let id = self.ping_id;
        let ping = format!("{{\"cmd\":\"ping\",\"id\":{id}}}\n");
        let Some(host) = self.host.as_mut() else { return Err("the Python host is gone".into()) };
        if let Err(e) = host.stdin.write_all(ping.as_bytes()) {
            return Err(format!("the Python host crashed (cannot write to it: {e}){}", self.stderr_tail()));
        }
        let events = host.events.clone();
        let deadline = Instant::now() + PING_GRACE;
        let restarts = self.restarts;
        loop {
            match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(HostEvent::Pong { id: answer, busy })) if answer == id => return Ok(busy),
                Ok(Some(event)) => {
                    self.take(event, emit);
                    if self.restarts != restarts {
                        // Restarted meanwhile (a spinning module): nothing is pending any more.
                        return Ok(Vec::new());
                    }
                }
                Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("the Python host crashed (it ended){}", self.stderr_tail()))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "the Python host does not answer (modules still running after {:?}, and no answer to a ping within {PING_GRACE:?})",
                        self.settings.timeout
                    ))
                }
            }
        }
    }

    /// More than half of the loaded modules hang: a fresh host is worth the connections it costs.
    fn piled_up(&self) -> Option<String> {
        if self.hung.is_empty() || self.hung.len() * 2 <= self.loaded.len() {
            return None;
        }
        let mut names: Vec<&str> = self.hung.keys().map(String::as_str).collect();
        names.sort_unstable();
        Some(format!("{} of {} python modules hang ({})", self.hung.len(), self.loaded.len(), names.join(", ")))
    }

    /// Kills the host (its whole process group) and, with `restart`, starts it again.
    fn restart_host(&mut self, why: &str) {
        let lost = self.pending.len();
        log::error!("{why}; restarting it ({lost} modules' points of this cycle lost)");
        self.stop();
        self.restarts += 1;
        if self.restart {
            self.ensure_started();
        }
    }

    /// One whole cycle, waiting for every module's answer or deadline: what `--once` and tests use.
    pub fn cycle(&mut self, tick: u64, emit: &mut dyn FnMut(Vec<Point>)) {
        self.start_cycle(tick);
        while self.busy() {
            let events = self.events();
            let wait = self.next_deadline().map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
            match events.recv_timeout(wait) {
                Ok(event) => self.on_event(event, emit),
                Err(RecvTimeoutError::Timeout) => self.check_deadlines(emit),
                Err(RecvTimeoutError::Disconnected) => self.on_event(None, emit),
            }
        }
    }

    fn points_of(&mut self, r: ModuleResult) -> Vec<Point> {
        let ModuleResult { module, tick, points: wire, dropped, error, seconds, .. } = r;
        let mut points = Vec::with_capacity(wire.len() + 4);
        let mut bad = dropped.len() as i64;
        let mut reasons: Vec<(String, String)> = dropped;
        for p in wire {
            match p.into_point() {
                Ok(p) => points.push(p),
                Err(e) => {
                    bad += 1;
                    reasons.push((String::new(), e));
                }
            }
        }
        for (metric, why) in reasons {
            if self.dropped_logged.insert((module.clone(), metric.clone())) {
                log::warn!("python module {module}: {metric}: value not sent: {why} (logged once per metric, counted in puypuy_script_bad_lines)");
            }
        }
        let status = match error {
            Some(e) => {
                if self.failing.insert(module.clone()) {
                    log::error!("python module {module}: {e}; its points of this cycle up to the error are sent");
                }
                1
            }
            None => {
                if self.failing.remove(&module) {
                    log::info!("python module {module}: runs without error again");
                }
                0
            }
        };
        points.extend(self_metrics(&module, tick, seconds, 0, bad, status));
        points
    }

    pub fn loaded(&self) -> &[String] {
        &self.loaded
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_line(level: &str, module: &str, text: &str) {
    let who = if module.is_empty() { "python".to_string() } else { format!("python module {module}") };
    match level {
        "error" => log::error!("{who}: {text}"),
        "warn" => log::warn!("{who}: {text}"),
        "debug" => log::debug!("{who}: {text}"),
        _ => log::info!("{who}: {text}"),
    }
}

/// The runner's own metrics for one module's cycle, as for a script (tag `script` = the file).
fn self_metrics(module: &str, tick: u64, seconds: f64, timeout: i64, bad: i64, status: i64) -> Vec<Point> {
    let file = format!("{module}.py");
    vec![
        Point::float("puypuy_script_duration", tick, (seconds * 1000.0).round() / 1000.0, "puypuy"),
        Point::int("puypuy_script_exit_status", tick, status, "puypuy"),
        Point::int("puypuy_script_timeout", tick, timeout, "puypuy"),
        Point::int("puypuy_script_bad_lines", tick, bad, "puypuy"),
    ]
    .into_iter()
    .map(|p| p.with_tag("script", file.clone()))
    .collect()
}

/// The modules a built-in service check replaces: `check_redis` when `[Redis]` is configured, and
/// so on (the built-in ships the same series; running both would ship them twice).
pub fn replaced_by_builtin(sections: &[&str]) -> HashMap<String, String> {
    sections.iter().map(|s| (format!("check_{}", s.to_lowercase()), s.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python3() -> &'static str {
        // Debian's interpreter, the one the .deb runs, when a pyenv shim shadows it on PATH.
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        }
    }

    /// The compatibility package compiles and its own unit tests pass (python/tests/).
    #[test]
    fn python_package_unit_tests() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
        let mut files = vec![dir.join(HOST_SCRIPT)];
        for sub in ["lib", "tests"] {
            for entry in std::fs::read_dir(dir.join(sub)).expect("python folder").flatten() {
                if entry.path().extension().is_some_and(|x| x == "py") {
                    files.push(entry.path());
                }
            }
        }
        let compile = Command::new(python3())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg("-c")
            .arg("import sys, ast\nfor f in sys.argv[1:]:\n    ast.parse(open(f).read(), f)\n")
            .args(&files)
            .output()
            .expect("python3 (apt-get install python3)");
        assert!(compile.status.success(), "{}", String::from_utf8_lossy(&compile.stderr));
        let out = Command::new(python3())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(&dir)
            .args(["-m", "unittest", "discover", "-s", "tests", "-t", "."])
            .output()
            .expect("python3 (apt-get install python3)");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("OK"), "{text}");
    }

    fn supervisor(dir: &Path, timeout: Duration) -> Supervisor {
        let init = serde_json::json!({
            "cmd": "init", "config": {}, "hostname": "h", "checks_dir": dir.display().to_string(),
            "state_file": dir.join("state.json").display().to_string(), "import_timeout": 2, "skip": [],
        });
        let settings = HostSettings {
            python: python3().to_string(),
            python_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("python")),
            checks_dir: dir.to_path_buf(),
            init,
            timeout,
            user: None,
            groups: Groups::new(),
        };
        Supervisor::new(settings, true)
    }

    /// (script tag or point name, value) of what one cycle emitted, sorted.
    fn run_cycle(s: &mut Supervisor, tick: u64) -> Vec<(String, String)> {
        let mut got = Vec::new();
        s.cycle(tick, &mut |points| {
            for p in points {
                let script = p.tags.iter().find(|(k, _)| k == "script").map(|(_, v)| format!("{v} "));
                got.push((format!("{}{}", script.unwrap_or_default(), p.name), format!("{:?}", p.value)));
            }
        });
        got.retain(|(name, _)| !name.ends_with("puypuy_script_duration"));
        got.sort();
        got
    }

    /// A module sleeping past its timeout is left to end on its own: the host is not restarted,
    /// the other module runs every cycle, and the sleeper counts a timeout every cycle until its
    /// thread ends, then runs again.
    #[test]
    fn a_hung_module_is_left_to_end_and_the_host_keeps_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let class = "import lib.basecheck\n\n\nclass Check(lib.basecheck.CheckBase):\n    def precheck(self):\n";
        std::fs::write(
            dir.path().join("check_a.py"),
            format!("{class}        self.local_vars.append({{'name': 'a', 'value': 1, 'check_type': 't'}})\n"),
        )
        .expect("check_a.py");
        // Sleeps 2.5 s in its first cycle only.
        std::fs::write(
            dir.path().join("check_slow.py"),
            format!("import time\nruns = []\n{class}        runs.append(1)\n        if len(runs) == 1:\n            time.sleep(2.5)\n        self.local_vars.append({{'name': 'slow', 'value': len(runs), 'check_type': 't'}})\n"),
        )
        .expect("check_slow.py");
        let mut s = supervisor(dir.path(), Duration::from_millis(1000));
        let timed_out = |n: i64| {
            vec![
                ("a".to_string(), "Int(1)".to_string()),
                ("check_a.py puypuy_script_bad_lines".to_string(), "Int(0)".to_string()),
                ("check_a.py puypuy_script_exit_status".to_string(), "Int(0)".to_string()),
                ("check_a.py puypuy_script_timeout".to_string(), "Int(0)".to_string()),
                ("check_slow.py puypuy_script_bad_lines".to_string(), "Int(0)".to_string()),
                ("check_slow.py puypuy_script_exit_status".to_string(), "Int(-1)".to_string()),
                ("check_slow.py puypuy_script_timeout".to_string(), format!("Int({n})")),
            ]
        };
        assert_eq!(run_cycle(&mut s, 100), timed_out(1));
        assert_eq!(run_cycle(&mut s, 101), timed_out(1));
        // Once its thread has ended, its late points are not sent, and it runs again.
        let mut again = timed_out(0);
        again[5].1 = "Int(0)".to_string();
        again.push(("slow".to_string(), "Int(2)".to_string()));
        again.sort();
        let mut tick = 102;
        loop {
            let got = run_cycle(&mut s, tick);
            if got == again {
                break;
            }
            assert_eq!(got, timed_out(1), "cycle {tick}");
            assert!(tick < 140, "check_slow never ran again");
            tick += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(s.restarts, 0);
    }

    /// Regression: a hung module's thread that sent its late result but had not ended when the
    /// next cycle came answered "still running" for that cycle; the runner then waited for it,
    /// reported a timeout of a module no longer running, and kept it among the hung for good.
    #[test]
    fn a_hang_that_ended_just_before_a_cycle_leaves_nothing_pending_nor_hung() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = supervisor(dir.path(), Duration::from_secs(1));
        let result = |tick: u64, still_running: bool| ModuleResult {
            module: "check_m".into(),
            tick,
            points: Vec::new(),
            dropped: Vec::new(),
            error: None,
            still_running,
            cpu: 0.0,
            seconds: 0.0,
        };
        let (started, deadline) = (Instant::now(), Instant::now() + Duration::from_secs(1));
        s.hung.insert("check_m".into(), Hung { cpu: 0.0, seen: started });
        s.pending.insert("check_m".into(), Pending { tick: 101, started, deadline });
        // The late result of the hung cycle 100, then "still running" for 101.
        assert!(s.result(result(100, false)).is_empty());
        assert!(s.result(result(101, true)).is_empty());
        assert!(s.pending.is_empty() && s.hung.is_empty(), "{:?} {:?}", s.pending.keys(), s.hung.keys());
        // A module taken for hung whose next cycle answers in time is no longer hung.
        s.hung.insert("check_m".into(), Hung { cpu: 0.0, seen: started });
        s.pending.insert("check_m".into(), Pending { tick: 102, started, deadline });
        assert!(!s.result(result(102, false)).is_empty());
        assert!(s.pending.is_empty() && s.hung.is_empty());
    }

    /// A module that hangs holding the interpreter lock (a regular expression that backtracks for
    /// ever: the host cannot even answer a ping) or busy on the CPU cannot be left to end: the
    /// host is restarted, and the other module's points of that cycle are sent before.
    #[test]
    fn a_host_that_does_not_answer_or_a_spinning_module_restarts_the_host() {
        let class =
            "import re\nimport lib.basecheck\n\n\nclass Check(lib.basecheck.CheckBase):\n    def precheck(self):\n";
        // The stuck module starts once check_a's thread has sent its result and ended: a regular
        // expression taking the interpreter lock while check_a still needed it (to save its state
        // or send its result) would hold check_a's points for ever.
        let after_a = "        import threading, time\n        while any(t.name == 'check_a' for t in threading.enumerate()):\n            time.sleep(0.01)\n";
        for (body, why) in [
            ("        re.match(r'(a+)+$', 'a' * 64 + 'b')\n", "holds the lock"),
            ("        while True:\n            pass\n", "spins"),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(
                dir.path().join("check_a.py"),
                format!("{class}        self.local_vars.append({{'name': 'a', 'value': 1, 'check_type': 't'}})\n"),
            )
            .expect("check_a.py");
            std::fs::write(dir.path().join("check_stuck.py"), format!("{class}{after_a}{body}"))
                .expect("check_stuck.py");
            let mut s = supervisor(dir.path(), Duration::from_millis(1000));
            let got = run_cycle(&mut s, 100);
            assert!(got.contains(&("a".to_string(), "Int(1)".to_string())), "{why}: {got:?}");
            // A spinner given less than SPINNING_SHARE of a core by a loaded machine before its
            // deadline is seen from a later cycle (as a period apart in production).
            let mut tick = 101;
            while s.restarts == 0 && tick < 110 {
                std::thread::sleep(Duration::from_millis(300));
                run_cycle(&mut s, tick);
                tick += 1;
            }
            assert_eq!(s.restarts, 1, "{why}: {got:?}");
            assert_eq!(s.loaded(), ["check_a", "check_stuck"], "{why}: started again");
        }
    }

    #[test]
    fn only_check_py_files_are_modules_and_builtins_replace_their_namesakes() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["check_b.py", "check_a.py", "check_c.sh", "other.py", "check_d.pyc"] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        assert_eq!(modules_in(dir.path()), ["check_a", "check_b"]);
        assert!(modules_in(&dir.path().join("missing")).is_empty());
        let replaced = replaced_by_builtin(&["Redis", "MySQL", "NginX"]);
        assert_eq!(replaced.get("check_redis").map(String::as_str), Some("Redis"));
        assert_eq!(replaced.get("check_mysql").map(String::as_str), Some("MySQL"));
        assert_eq!(replaced.get("check_nginx").map(String::as_str), Some("NginX"));
        assert!(!replaced.contains_key("check_pyredis"));
    }
}
