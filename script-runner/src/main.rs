//! `puypuy-script-runner`: runs every executable `check_*` of the scripts folder every
//! `check_period_seconds`, concurrently (at most `script_concurrency` at a time) and each with a
//! timeout, and hands each script's points to the shipper as soon as that script is done — a slow
//! or hanging script never delays the others. The old agent's Python check modules of
//! `checks_dir` run in a thread of their own, through one supervised Python host
//! (puypuy_script_runner::python), on the same ticks.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use puypuy_common::config::Config;
use puypuy_common::producer::{Cycle, Producer, ONCE_TIMEOUT};
use puypuy_common::{hostname, Point};
use puypuy_script_runner::discover::Discovery;
use puypuy_script_runner::parse::parse_output;
use puypuy_script_runner::python::{self, HostSettings, Supervisor};
use puypuy_script_runner::run::{run_script, Groups, RunSettings};
use puypuy_script_runner::throttle::{Problem, Warnings};

struct Job {
    name: String,
    path: PathBuf,
    tick: u64,
    settings: Arc<RunSettings>,
}

/// What the Python thread is told.
enum PythonMessage {
    Tick(u64),
    Reload(Box<HostSettings>),
}

/// The names of the scripts running now: a script still running at the next tick is not started
/// a second time.
type Running = Arc<Mutex<HashSet<String>>>;

/// The threads that run the scripts, started as jobs need them, up to `script_concurrency`: a
/// runner with no scripts has none, one with three scripts three (it used to start all 16 at
/// once). A job takes a worker that is waiting if there is one, else a new worker is started;
/// at the limit it waits in the queue for the first worker free.
struct Workers {
    tx: crossbeam_channel::Sender<Job>,
    rx: crossbeam_channel::Receiver<Job>,
    /// Workers waiting for a job less the jobs waiting for a worker (negative at the limit).
    idle: Arc<AtomicIsize>,
    handles: Vec<thread::JoinHandle<()>>,
    producer: Arc<Producer>,
    running: Running,
    warnings: Warnings,
}

impl Workers {
    fn new(producer: Arc<Producer>, running: Running, warnings: Warnings) -> Workers {
        let (tx, rx) = crossbeam_channel::unbounded();
        Workers { tx, rx, idle: Arc::default(), handles: Vec::new(), producer, running, warnings }
    }

    /// Queues `job`, starting a worker for it when none is waiting and fewer than `max` run.
    fn submit(&mut self, job: Job, max: usize) {
        if self.idle.fetch_sub(1, Ordering::AcqRel) <= 0 && self.handles.len() < max {
            self.spawn();
        }
        let _ = self.tx.send(job);
    }

    fn spawn(&mut self) {
        let (rx, idle) = (self.rx.clone(), Arc::clone(&self.idle));
        let (producer, running, warnings) =
            (Arc::clone(&self.producer), Arc::clone(&self.running), self.warnings.clone());
        let spawned = thread::Builder::new().name(format!("script-{}", self.handles.len())).spawn(move || {
            // Started for a job: it counts as waiting once a job is done.
            while let Ok(job) = rx.recv() {
                let points = run_one(&job, &job.settings, &warnings);
                producer.emit(points);
                running.lock().unwrap_or_else(|e| e.into_inner()).remove(&job.name);
                warnings.flush();
                idle.fetch_add(1, Ordering::AcqRel);
            }
        });
        match spawned {
            Ok(h) => {
                // The new worker is the one this job waits for.
                self.idle.fetch_add(1, Ordering::AcqRel);
                self.handles.push(h);
            }
            Err(e) => log::error!("cannot start a script worker: {e}"),
        }
    }

    /// No more jobs: waits for the queued ones to be run.
    fn finish(self) {
        drop(self.tx);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

fn main() -> ExitCode {
    // First, while the process has one thread: the guardian that kills the running scripts if
    // this process dies without doing it (see puypuy_script_runner::guard).
    let groups = Groups::new();
    let guardian = groups.start_guardian();
    let producer = match Producer::init("puypuy-script-runner", "script-runner") {
        Ok(p) => Arc::new(p),
        Err(code) => return code,
    };
    // Held until exit: when it closes, however this process ends, the guardian acts.
    let _guardian_pipe = match guardian {
        Ok(fd) => Some(fd),
        Err(e) => {
            log::warn!("cannot start the guardian process ({e}): if this process is killed with SIGKILL, the scripts it runs go on until they end");
            None
        }
    };
    let mut s = producer.config.self_config.clone();
    let mut settings = match settings_of(&s, &producer.config.file, &groups) {
        Ok(settings) => settings,
        Err(e) => {
            log::error!("{e}");
            eprintln!("puypuy-script-runner: {e}");
            return ExitCode::from(2);
        }
    };

    let running: Running = Arc::default();
    // A script's repeated warnings: the first logged, then a count per minute.
    let warnings = Warnings::default();
    let mut workers = Workers::new(Arc::clone(&producer), Arc::clone(&running), warnings.clone());

    // The Python modules: one thread that owns the supervised host; a tick it is still busy
    // with is not queued twice.
    let (python_tx, python_rx) = crossbeam_channel::bounded::<PythonMessage>(1);
    let python_thread = match host_settings(&producer.config, &groups) {
        Ok(first) => {
            let (producer, once) = (Arc::clone(&producer), producer.cli.once);
            thread::Builder::new()
                .name("python".into())
                .spawn(move || python_loop(*first, python_rx, &producer, once))
                .map_err(|e| log::error!("cannot start the Python modules' thread: {e}"))
                .ok()
        }
        Err(e) => {
            log::error!("python modules not run: {e}");
            None
        }
    };

    let mut discovery = Discovery::default();
    // Whether the Python thread is given ticks: only once there are modules to run, so that a
    // runner without any (the folder empty or missing) does not wake that thread every cycle for
    // nothing. Once set it stays until a reload, as the host keeps what it imported.
    let mut python_ticks = false;
    loop {
        if let Some(config) = producer.reloaded_config() {
            match settings_of(&config.self_config, &config.file, &groups) {
                Ok(new) => {
                    settings = new;
                    s = config.self_config.clone();
                }
                Err(e) => log::error!("SIGHUP: {e}; the running settings stay"),
            }
            match host_settings(&config, &groups) {
                Ok(new) => {
                    let _ = python_tx.send(PythonMessage::Reload(new));
                    python_ticks = false;
                }
                Err(e) => log::error!("SIGHUP: python modules: {e}; the running settings stay"),
            }
        }
        let tick = match producer.next_cycle(Duration::from_secs(s.check_period_seconds)) {
            Cycle::Tick(tick) => tick,
            Cycle::Reload => continue,
            Cycle::Stop => break,
        };
        for (name, path) in discovery.scan(&s.scripts_dir) {
            {
                let mut r = running.lock().unwrap_or_else(|e| e.into_inner());
                if !r.insert(name.clone()) {
                    let line = format!("{name} is still running from an earlier cycle; not started again at {tick}");
                    warnings.warn(&name, Problem::StillRunning, line);
                    continue;
                }
            }
            workers.submit(Job { name, path, tick, settings: Arc::clone(&settings) }, s.script_concurrency);
        }
        python_ticks = python_ticks || !python::modules_in(&s.checks_dir).is_empty();
        if python_ticks {
            if let Err(crossbeam_channel::TrySendError::Full(_)) = python_tx.try_send(PythonMessage::Tick(tick)) {
                log::warn!("python modules still busy with an earlier cycle; the cycle of {tick} is skipped for them");
            }
        }
        if producer.cli.once {
            workers.finish();
            drop(python_tx);
            if let Some(t) = python_thread {
                let _ = t.join();
            }
            warnings.finish();
            return producer.finish(ONCE_TIMEOUT);
        }
        // Nothing to run (no `check_*` in either folder, no Python host ticking): sleep until one
        // of the folders changes instead of waking every cycle to look. A change, a SIGHUP, a stop
        // or IDLE_LOOK (for changes inotify does not see: a folder swapped under a symlink, NFS)
        // ends the sleep, and the next cycle looks as usual.
        if !python_ticks && !has_checks(&s.scripts_dir) && !has_checks(&s.checks_dir) {
            match FolderWatch::new(&[&s.scripts_dir, &s.checks_dir]) {
                // Looked at again once watched: a script added in between is not missed.
                Ok(watch) if !has_checks(&s.scripts_dir) && !has_checks(&s.checks_dir) => {
                    if !producer.sleep_until_readable(watch.fd(), IDLE_LOOK) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => log::debug!("cannot watch the scripts folders ({e}); looking every cycle"),
            }
        }
    }
    log::info!("stopping; killing the scripts still running");
    drop(python_tx);
    groups.kill_all();
    warnings.finish();
    let _ = producer.finish(Duration::from_secs(2));
    ExitCode::SUCCESS
}

/// The longest an idle runner sleeps on its folder watch before it looks at the folders again.
const IDLE_LOOK: Duration = Duration::from_secs(60);

/// Whether `folder` has an entry named `check_*` (a script, or a Python module), whatever its mode.
fn has_checks(folder: &Path) -> bool {
    std::fs::read_dir(folder)
        .is_ok_and(|entries| entries.flatten().any(|e| e.file_name().as_encoded_bytes().starts_with(b"check_")))
}

/// An inotify watch on folders for entries created or moved in; a missing folder is watched
/// through its nearest existing parent (its own creation is an entry there). It becomes readable
/// at the first such event, or when a watched folder goes away.
struct FolderWatch(Inotify);

impl FolderWatch {
    fn new(folders: &[&Path]) -> std::io::Result<FolderWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let mut watched = 0;
        for folder in folders {
            let mut dir = folder.to_path_buf();
            while !dir.is_dir() && dir.pop() {}
            let mask = AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_ONLYDIR;
            if inotify.add_watch(dir.as_path(), mask).is_ok() {
                watched += 1;
            }
        }
        if watched == 0 {
            return Err(std::io::Error::other("no folder could be watched"));
        }
        Ok(FolderWatch(inotify))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// The settings every script run gets, from `[SelfConfig]`.
fn settings_of(
    s: &puypuy_common::config::SelfConfig,
    config_file: &std::path::Path,
    groups: &Groups,
) -> Result<Arc<RunSettings>, String> {
    let timeout = Duration::from_secs(s.script_timeout_seconds.unwrap_or(s.check_period_seconds));
    let user = run_as(s.run_user.as_deref())?;
    log::info!(
        "scripts folder {}, period {} s, timeout {timeout:?}, {} at a time",
        s.scripts_dir.display(),
        s.check_period_seconds,
        s.script_concurrency
    );
    Ok(Arc::new(RunSettings {
        timeout,
        max_output: s.script_max_output_bytes,
        env: vec![
            ("PUYPUY_PERIOD".into(), s.check_period_seconds.to_string()),
            ("PUYPUY_TIMEOUT".into(), timeout.as_secs().to_string()),
            ("PUYPUY_HOSTNAME".into(), hostname::host_name(s.shorthostname)),
            ("PUYPUY_CONFIG".into(), config_file.display().to_string()),
        ],
        user,
        groups: groups.clone(),
    }))
}

/// The Python thread: starts the modules' cycle at each tick and ships their points as they come,
/// without waiting for a slow one; restarts the host on SIGHUP. Ends when the ticks end (`--once`,
/// stop) and every module started has answered or reached its deadline.
fn python_loop(first: HostSettings, rx: crossbeam_channel::Receiver<PythonMessage>, producer: &Producer, once: bool) {
    let mut supervisor = Supervisor::new(first, !once);
    supervisor.ensure_started();
    let emit = &mut |points: Vec<puypuy_common::Point>| producer.emit(points);
    let mut ticks = rx;
    let mut ticks_open = true;
    while ticks_open || supervisor.busy() {
        let events = supervisor.events();
        let wait = supervisor
            .next_deadline()
            .map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
        crossbeam_channel::select! {
            recv(ticks) -> message => match message {
                Ok(PythonMessage::Tick(tick)) => supervisor.start_cycle(tick),
                Ok(PythonMessage::Reload(settings)) => {
                    supervisor.reload(*settings);
                    supervisor.ensure_started();
                }
                Err(_) => {
                    ticks_open = false;
                    ticks = crossbeam_channel::never();
                }
            },
            recv(events) -> event => supervisor.on_event(event.ok().flatten(), emit),
            default(wait) => supervisor.check_deadlines(emit),
        }
    }
}

/// The Python host's settings from the config: the interpreter, the modules' folder, and what the
/// host's first line carries (every section for `lib.getconfig`, the host name, the state file).
fn host_settings(config: &Config, groups: &Groups) -> Result<Box<HostSettings>, String> {
    let s = &config.self_config;
    let timeout = Duration::from_secs(s.script_timeout_seconds.unwrap_or(s.check_period_seconds));
    let mut sections = serde_json::Map::new();
    for (name, keys) in &config.sections {
        let entry = sections.entry(name.clone()).or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let serde_json::Value::Object(map) = entry {
            for (k, v) in keys {
                map.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
        }
    }
    // The [SelfConfig] values old modules read, resolved as the agent uses them.
    let resolved = [
        ("cluster_name", s.cluster_name.clone()),
        ("host_group", s.host_group.clone()),
        ("location", s.location.clone()),
        ("tmpdir", s.tmpdir.display().to_string()),
        ("log_file", s.log_file.display().to_string()),
        ("check_period_seconds", s.check_period_seconds.to_string()),
        ("max_cache", s.max_cache.to_string()),
        ("shorthostname", if s.shorthostname { "yes".into() } else { "no".into() }),
    ];
    let self_section =
        sections.entry("SelfConfig".to_string()).or_insert_with(|| serde_json::Value::Object(Default::default()));
    if let serde_json::Value::Object(map) = self_section {
        for (k, v) in resolved {
            map.entry(k.to_string()).or_insert(serde_json::Value::String(v));
        }
    }
    let configured: Vec<&str> = config.services.iter().map(|c| c.kind.section()).collect();
    let replaced = python::replaced_by_builtin(&configured);
    let mut skip = Vec::new();
    for module in python::modules_in(&s.checks_dir) {
        if let Some(section) = replaced.get(&module) {
            log::info!("python module {module} not loaded: [{section}] is configured, and the built-in check ships the same series (remove [{section}] to run the module instead)");
            skip.push(module);
        }
    }
    let init = serde_json::json!({
        "cmd": "init",
        "config": sections,
        "hostname": hostname::host_name(s.shorthostname),
        "checks_dir": s.checks_dir.display().to_string(),
        "state_file": s.tmpdir.join("python-state.json").display().to_string(),
        "import_timeout": timeout.as_secs(),
        "skip": skip,
        "debug": s.debug_log,
    });
    Ok(Box::new(HostSettings {
        python: s.python.clone(),
        python_dir: python::python_dir(),
        checks_dir: s.checks_dir.clone(),
        init,
        timeout,
        user: run_as(s.run_user.as_deref())?,
        groups: groups.clone(),
    }))
}

/// Runs one script and returns its points followed by its self-metrics.
fn run_one(job: &Job, settings: &RunSettings, warnings: &Warnings) -> Vec<Point> {
    let name = &job.name;
    let result = match run_script(&job.path, settings) {
        Ok(r) => r,
        Err(e) => {
            warnings.warn(name, Problem::CannotRun, format!("{name}: cannot run it: {e}"));
            return vec![self_metric("puypuy_script_exit_status", job, -1.0, true)];
        }
    };
    let mut points = Vec::new();
    let mut bad = 0i64;
    for (line, parsed) in parse_output(&result.stdout, job.tick) {
        match parsed {
            Ok(p) => points.push(p),
            Err(e) => {
                bad += 1;
                warnings.warn(name, Problem::BadLine, format!("{name} line {line}: {e}; line skipped"));
            }
        }
    }
    if result.truncated {
        warnings.warn(
            name,
            Problem::Truncated,
            format!("{name}: output over {} bytes; the rest was cut", settings.max_output),
        );
    }
    let stderr = String::from_utf8_lossy(&result.stderr_tail).trim().replace('\n', " | ");
    if result.timed_out {
        let line = format!(
            "{name}: still running after {:?}; killed its process group ({} points printed before are kept)",
            settings.timeout,
            points.len()
        );
        warnings.warn(name, Problem::Timeout, line);
    } else if let Some(code) = result.exit_code.filter(|c| *c != 0) {
        warnings.warn(name, Problem::NonZeroExit, format!("{name}: exited with status {code}: {stderr}"));
    } else if let Some(sig) = result.signal {
        warnings.warn(name, Problem::Signal, format!("{name}: killed by signal {sig}: {stderr}"));
    }
    let status = result.exit_code.map(i64::from).or(result.signal.map(|s| -i64::from(s))).unwrap_or(-1);
    points.push(self_metric(
        "puypuy_script_duration",
        job,
        (result.duration.as_secs_f64() * 1000.0).round() / 1000.0,
        false,
    ));
    points.push(self_metric("puypuy_script_exit_status", job, status as f64, true));
    points.push(self_metric("puypuy_script_timeout", job, f64::from(u8::from(result.timed_out)), true));
    points.push(self_metric("puypuy_script_bad_lines", job, bad as f64, true));
    points
}

fn self_metric(name: &str, job: &Job, value: f64, integer: bool) -> Point {
    let p = if integer {
        Point::int(name, job.tick, value as i64, "puypuy")
    } else {
        Point::float(name, job.tick, value, "puypuy")
    };
    p.with_tag("script", job.name.clone())
}

/// uid and gid for the scripts when the runner runs as root and `run_user` names another user.
fn run_as(user: Option<&str>) -> Result<Option<(u32, u32)>, String> {
    let Some(name) = user else { return Ok(None) };
    if !nix::unistd::geteuid().is_root() || name == "root" {
        return Ok(None);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(Some((u.uid.as_raw(), u.gid.as_raw()))),
        Ok(None) => Err(format!("[SelfConfig] run_user: no user {name:?} on this host")),
        Err(e) => Err(format!("[SelfConfig] run_user: cannot look up {name:?}: {e}")),
    }
}
