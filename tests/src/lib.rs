//! Helpers for the integration suite: real servers (InfluxDB, carbon-cache, VictoriaMetrics) and
//! the real PuyPuy binaries, each on free loopback ports in a temp dir of its own, plus a KairosDB
//! test double (no KairosDB can be installed here) that checks KairosDB's documented contract.
//!
//! A missing server is a failing test that says how to install it, never a skip.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

pub mod certs;
pub mod measure;
pub mod prometheus;
pub mod services;
pub mod statsd;

pub const INSTALL_HINT: &str =
    "run ./tests/run.sh, which installs influxdb graphite-carbon python3-whisper victoria-metrics";

/// The directory of the PuyPuy binaries built in the same profile as this test.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PUYPUY_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/suite-xxxx for tests, target/<profile>/puypuy-bench for the bench
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --bins, or ./tests/run.sh)",
        path.display()
    );
    path
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// A loopback port free for both TCP and UDP, never handed out before in this process: tests that
/// run at once do not get the same port, and a server given it may listen on either protocol (a
/// StatsD input with `statsd_tcp` listens on both). Something outside the suite may still take it
/// before its server binds; tests that can, start again on another port.
pub fn free_port() -> u16 {
    static HANDED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
        let port = tcp.local_addr().expect("address").port();
        if handed.contains(&port) || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed.push(port);
        return port;
    }
    panic!("no loopback port free for both TCP and UDP in 1000 tries");
}

/// Polls `f` until it gives `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_for(timeout, f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `f` until it gives `Some`, or `None` after `timeout`: for a test that then reports what
/// is missing, item by item, rather than a timeout.
pub fn poll_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn require(command: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/sbin"]) {
        let p = Path::new(dir).join(command);
        if p.is_file() {
            return p;
        }
    }
    panic!("{command} is not installed: {INSTALL_HINT}");
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { child, name: name.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Waits for the exit status, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    /// SIGTERM first, so that a script-runner kills its scripts and servers flush; SIGKILL when it
    /// has not exited within 3 s.
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        if self.wait_exit(Duration::from_secs(3)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `puypuy.sh ARGS` for a config, with this build's binaries.
pub fn puypuy_sh(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(repo_root().join("puypuy.sh"))
        .args(args)
        .env("PUYPUY_CONFIG", config)
        .env("PUYPUY_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .output()
        .expect("puypuy.sh")
}

/// Stops what `puypuy.sh start` started for a config when the test ends, passed or failed: the
/// watchdogs are detached and would outlive a failed test otherwise.
pub struct StopOnDrop(pub PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = puypuy_sh(&self.0, &["stop"]);
    }
}

fn tcp_ready(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

pub fn http_get(url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut resp = agent.get(url).call().ok()?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().ok()?;
    Some((status, body))
}

pub fn http_post(url: &str, body: &str, auth: Option<(&str, &str)>) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut req = agent.post(url);
    if let Some((u, p)) = auth {
        use std::io::Write;
        let mut enc = Vec::new();
        let _ = write!(enc, "{u}:{p}");
        req = req.header("Authorization", &format!("Basic {}", base64(&enc)));
    }
    let mut resp = req.send(body).ok()?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().ok()?;
    Some((status, body))
}

fn base64(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

// ---------------------------------------------------------------- InfluxDB 1.x

pub struct Influx {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub auth: Option<(String, String)>,
    pub proc: Proc,
}

impl Influx {
    pub const DB: &'static str = "puypuy";

    pub fn start(auth: bool) -> Influx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let rpc = free_port();
        let d = dir.path().display();
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[http]\n  enabled = true\n  bind-address = \"127.0.0.1:{port}\"\n  auth-enabled = {auth}\n  log-enabled = false\n[monitor]\n  store-enabled = false\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), conf).expect("write influx conf");
        let proc = Self::spawn(dir.path(), port);
        let mut influx = Influx { dir, port, auth: None, proc };
        if auth {
            influx.query_post("CREATE USER admin WITH PASSWORD 'secret' WITH ALL PRIVILEGES");
            influx.auth = Some(("admin".into(), "secret".into()));
        }
        influx.query_post(&format!("CREATE DATABASE {}", Self::DB));
        influx
    }

    fn spawn(dir: &Path, port: u16) -> Proc {
        let influxd = require("influxd");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("influxd.log")).expect("log");
        let proc = Proc::spawn(
            "influxd",
            Command::new(influxd)
                .args(["run", "-config"])
                .arg(dir.join("influxdb.conf"))
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        );
        wait_for(Duration::from_secs(20), "influxd /ping", || {
            http_get(&format!("http://127.0.0.1:{port}/ping")).filter(|(s, _)| *s == 204)
        });
        proc
    }

    /// Stops the server (SIGTERM) and waits until its port is closed.
    pub fn stop(&mut self) {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM);
        self.proc.wait_exit(Duration::from_secs(10));
        let port = self.port;
        wait_for(Duration::from_secs(10), "influxd's port to close", || (!tcp_ready(port)).then_some(()));
    }

    /// Starts it again on the same data and port.
    pub fn restart(&mut self) {
        self.proc = Self::spawn(self.dir.path(), self.port);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn query_post(&self, q: &str) -> String {
        let url = format!("{}/query?q={}", self.url(), urlencode(q));
        let auth = self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let (status, body) = http_post(&url, "", auth).expect("influx query");
        assert_eq!(status, 200, "influx {q}: {body}");
        body
    }

    /// Rows of `q` as JSON arrays (`epoch=s`), with the column names.
    pub fn select(&self, q: &str) -> (Vec<String>, Vec<Vec<Json>>) {
        let mut url = format!("{}/query?db={}&epoch=s&q={}", self.url(), Self::DB, urlencode(q));
        if let Some((u, p)) = &self.auth {
            url.push_str(&format!("&u={u}&p={p}"));
        }
        let Some((200, body)) = http_get(&url) else { return (vec![], vec![]) };
        let v: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
        let series = &v["results"][0]["series"][0];
        let columns = series["columns"]
            .as_array()
            .map(|c| c.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let rows = series["values"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x.as_array().cloned()).collect())
            .unwrap_or_default();
        (columns, rows)
    }

    /// `(time, value, tags)` of every point of `measurement`.
    pub fn points(&self, measurement: &str) -> Vec<(u64, Json, serde_json::Map<String, Json>)> {
        let (columns, rows) = self.select(&format!("SELECT * FROM \"{measurement}\""));
        rows.into_iter()
            .map(|row| {
                let mut tags = serde_json::Map::new();
                let mut time = 0;
                let mut value = Json::Null;
                for (c, v) in columns.iter().zip(row) {
                    match c.as_str() {
                        "time" => time = v.as_u64().unwrap_or(0),
                        "value" => value = v,
                        _ => {
                            if !v.is_null() {
                                tags.insert(c.clone(), v);
                            }
                        }
                    }
                }
                (time, value, tags)
            })
            .collect()
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------- A failing proxy

/// An HTTP proxy in front of a real server that answers 500 while `failing` is set, for the
/// fault-injection tests. It forwards method, path, query, body and the headers that matter.
pub struct FlakyProxy {
    pub port: u16,
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    pub failures: Arc<std::sync::atomic::AtomicU64>,
    server: Arc<tiny_http::Server>,
}

impl FlakyProxy {
    pub fn start(upstream: &str) -> FlakyProxy {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("proxy bind"));
        let port = server.server_addr().to_ip().expect("ip").port();
        let failing = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let (s, f, n, upstream) =
            (Arc::clone(&server), Arc::clone(&failing), Arc::clone(&failures), upstream.to_string());
        thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            for mut req in s.incoming_requests() {
                let mut body = Vec::new();
                let _ = req.as_reader().read_to_end(&mut body);
                if f.load(Ordering::SeqCst) {
                    n.fetch_add(1, Ordering::SeqCst);
                    let _ = req.respond(
                        tiny_http::Response::from_string("{\"error\":\"injected failure\"}").with_status_code(500),
                    );
                    continue;
                }
                let mut forward = agent.post(&format!("{upstream}{}", req.url()));
                for h in req.headers() {
                    let name = h.field.as_str().as_str().to_string();
                    if ["content-type", "content-encoding", "authorization"]
                        .contains(&name.to_ascii_lowercase().as_str())
                    {
                        forward = forward.header(&name, h.value.as_str());
                    }
                }
                let response = match forward.send(&body[..]) {
                    Ok(mut r) => {
                        let status = r.status().as_u16();
                        let text = r.body_mut().read_to_string().unwrap_or_default();
                        tiny_http::Response::from_string(text).with_status_code(status)
                    }
                    Err(e) => tiny_http::Response::from_string(e.to_string()).with_status_code(502),
                };
                let _ = req.respond(response);
            }
        });
        FlakyProxy { port, failing, failures, server }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

// ---------------------------------------------------------------- Graphite carbon-cache

pub struct Carbon {
    pub dir: tempfile::TempDir,
    pub pickle_port: u16,
    /// The plaintext line receiver.
    pub line_port: u16,
    pub proc: Proc,
}

impl Carbon {
    pub fn start() -> Carbon {
        Self::start_on(tempfile::tempdir().expect("tempdir"), free_port())
    }

    /// Starts carbon-cache with its pickle receiver on a given port.
    pub fn start_on(dir: tempfile::TempDir, pickle: u16) -> Carbon {
        Self::start_with(dir, "127.0.0.1", pickle, "1s:1d,60s:30d")
    }

    /// Starts carbon-cache with its pickle receiver on `interface:pickle` (a loopback address, so
    /// that several caches can be told apart by server as in a real cluster) and the given
    /// whisper retentions (short ones keep thousands of files small).
    pub fn start_with(dir: tempfile::TempDir, interface: &str, pickle: u16, retentions: &str) -> Carbon {
        let carbon = require("carbon-cache");
        require("whisper-fetch");
        let d = dir.path().display();
        let (line, query) = (free_port(), free_port());
        std::fs::create_dir_all(dir.path().join("conf")).expect("conf dir");
        let conf = format!(
            "[cache]\nSTORAGE_DIR = {d}/storage/\nLOCAL_DATA_DIR = {d}/storage/whisper/\nWHITELISTS_DIR = {d}/storage/lists/\nLOG_DIR = {d}/storage/log/\nPID_DIR = {d}/storage/\nDATABASE = whisper\nUSER =\nENABLE_LOGROTATION = False\nMAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = inf\nMAX_CREATES_PER_MINUTE = inf\nLINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {line}\nENABLE_UDP_LISTENER = False\nPICKLE_RECEIVER_INTERFACE = {interface}\nPICKLE_RECEIVER_PORT = {pickle}\nPICKLE_RECEIVER_MAX_LENGTH = 1048576\nUSE_INSECURE_UNPICKLER = False\nCACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {query}\nUSE_FLOW_CONTROL = True\nCACHE_WRITE_STRATEGY = sorted\nWHISPER_AUTOFLUSH = True\nLOG_CREATES = True\nLOG_UPDATES = False\nENABLE_TAGS = False\nCARBON_METRIC_INTERVAL = 0\n"
        );
        std::fs::write(dir.path().join("conf/carbon.conf"), conf).expect("carbon.conf");
        std::fs::write(
            dir.path().join("conf/storage-schemas.conf"),
            format!("[default]\npattern = .*\nretentions = {retentions}\n"),
        )
        .expect("schemas");
        let log = std::fs::File::create(dir.path().join("carbon.log")).expect("log");
        let proc = Proc::spawn(
            "carbon-cache",
            Command::new(carbon)
                .arg(format!("--config={d}/conf/carbon.conf"))
                .arg(format!("--pidfile={d}/carbon.pid"))
                .args(["--logfile=-", "--nodaemon", "start"])
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        );
        wait_for(Duration::from_secs(30), "carbon-cache pickle port", || {
            TcpStream::connect((interface, pickle)).is_ok().then_some(())
        });
        wait_for(Duration::from_secs(30), "carbon-cache line port", || tcp_ready(line).then_some(()));
        Carbon { dir, pickle_port: pickle, line_port: line, proc }
    }

    /// Every metric path with a whisper file, as `a.b.c`.
    pub fn paths(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, root, out);
                } else if let Some(rel) = p.strip_prefix(root).ok().and_then(|r| r.to_str()) {
                    if let Some(m) = rel.strip_suffix(".wsp") {
                        out.push(m.replace('/', "."));
                    }
                }
            }
        }
        let root = self.dir.path().join("storage/whisper");
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }

    /// The timestamps of the non-empty slots of every whisper file under `prefix` (a path prefix
    /// such as `a.b`), read in one python process: `(path, timestamps)`.
    pub fn timestamps_under(&self, prefix: &str) -> Vec<(String, Vec<u64>)> {
        let root = self.dir.path().join("storage/whisper");
        let script = "import sys, os, time, whisper\nroot = sys.argv[1]\nfor d, _, files in os.walk(os.path.join(root, *sys.argv[2].split('.'))):\n    for f in files:\n        if f.endswith('.wsp'):\n            p = os.path.join(d, f)\n            (start, end, step), values = whisper.fetch(p, 0, None)\n            ts = [str(start + i * step) for i, v in enumerate(values) if v is not None]\n            print(os.path.relpath(p, root)[:-4].replace('/', '.'), ' '.join(ts))\n";
        let out = Command::new("/usr/bin/python3").args(["-c", script]).arg(&root).arg(prefix).output();
        let Ok(out) = out else { return Vec::new() };
        let mut all: Vec<(String, Vec<u64>)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let path = f.next()?.to_string();
                Some((path, f.filter_map(|t| t.parse().ok()).collect()))
            })
            .collect();
        all.sort();
        all
    }

    /// Kills this carbon-cache (SIGKILL: it dies as in a crash, with what it had not read).
    pub fn kill(&mut self) {
        self.proc.signal(nix::sys::signal::Signal::SIGKILL);
        self.proc.wait_exit(Duration::from_secs(10));
    }

    /// `(timestamp, value)` of the non-empty slots of a whisper file in the last `seconds`.
    pub fn fetch(&self, metric_path: &str, seconds: u64) -> Vec<(u64, f64)> {
        let file = self.dir.path().join("storage/whisper").join(metric_path.replace('.', "/") + ".wsp");
        if !file.is_file() {
            return Vec::new();
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
        let out = Command::new("whisper-fetch")
            .arg(format!("--from={}", now - seconds))
            .arg(format!("--until={}", now + 1))
            .arg(&file)
            .output();
        let Ok(out) = out else { return Vec::new() };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let t = f.next()?.parse().ok()?;
                let v = f.next()?.parse().ok()?;
                Some((t, v))
            })
            .collect()
    }
}

// ---------------------------------------------------------------- VictoriaMetrics (OpenTSDB API)

pub struct Victoria {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub otsdb_port: u16,
    pub proc: Proc,
}

impl Victoria {
    pub fn start() -> Victoria {
        let vm = require("victoria-metrics");
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, otsdb_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("vm.log")).expect("log");
        let proc = Proc::spawn(
            "victoria-metrics",
            Command::new(vm)
                .arg(format!("-storageDataPath={}/data", dir.path().display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!("-opentsdbHTTPListenAddr=127.0.0.1:{otsdb_port}"))
                .args(["-retentionPeriod=100y", "-search.latencyOffset=0s", "-search.disableCache"])
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        );
        wait_for(Duration::from_secs(20), "victoria-metrics /health", || {
            http_get(&format!("http://127.0.0.1:{port}/health")).filter(|(s, _)| *s == 200)
        });
        wait_for(Duration::from_secs(10), "victoria-metrics OpenTSDB port", || tcp_ready(otsdb_port).then_some(()));
        Victoria { dir, port, otsdb_port, proc }
    }

    /// Exported series matching `selector`, as JSON lines (`{"metric":{…},"values":[…],"timestamps":[…]}`).
    pub fn export(&self, selector: &str) -> Vec<Json> {
        let _ = http_get(&format!("http://127.0.0.1:{}/internal/force_flush", self.port));
        let url = format!("http://127.0.0.1:{}/api/v1/export?match[]={}", self.port, urlencode(selector));
        match http_get(&url) {
            Some((200, body)) => body.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- KairosDB test double

/// Checks KairosDB's documented `/api/v1/datapoints` contract: a JSON array of
/// `{name, timestamp (ms), value, tags (non-empty, no empty values)}`, gzip bodies announced as
/// `Content-Type: application/gzip`; 204 on success, 400 `{"errors":[…]}` for bad input.
pub struct KairosMock {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Json>>>,
    pub requests: Arc<Mutex<Vec<(u16, String)>>>,
    server: Arc<tiny_http::Server>,
}

impl KairosMock {
    pub fn start() -> KairosMock {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("kairos mock bind"));
        let port = server.server_addr().to_ip().expect("ip").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r, q) = (Arc::clone(&server), Arc::clone(&received), Arc::clone(&requests));
        thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let (status, body) = Self::handle(&mut req, &r);
                q.lock().expect("lock").push((status, body.clone()));
                let resp = tiny_http::Response::from_string(body).with_status_code(status);
                let _ = req.respond(resp);
            }
        });
        KairosMock { port, received, requests, server }
    }

    fn handle(req: &mut tiny_http::Request, received: &Mutex<Vec<Json>>) -> (u16, String) {
        let err = |m: String| (400, serde_json::json!({ "errors": [m] }).to_string());
        if req.method() != &tiny_http::Method::Post || req.url() != "/api/v1/datapoints" {
            return (404, String::new());
        }
        let content_type = req
            .headers()
            .iter()
            .find(|h| h.field.equiv("Content-Type"))
            .map(|h| h.value.as_str().to_string())
            .unwrap_or_default();
        let mut raw = Vec::new();
        if req.as_reader().read_to_end(&mut raw).is_err() {
            return err("cannot read body".into());
        }
        let body = if content_type.starts_with("application/gzip") {
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).is_err() {
                return err("body announced as gzip does not decompress".into());
            }
            out
        } else {
            raw
        };
        let Ok(Json::Array(points)) = serde_json::from_slice::<Json>(&body) else {
            return err("body is not a JSON array".into());
        };
        for p in &points {
            let ok_name = p["name"].as_str().is_some_and(|n| !n.is_empty());
            let ok_ts = p["timestamp"].as_u64().is_some_and(|t| t > 1_000_000_000_000);
            let ok_value = p["value"].is_number();
            let ok_tags = p["tags"]
                .as_object()
                .is_some_and(|t| !t.is_empty() && t.values().all(|v| v.as_str().is_some_and(|s| !s.is_empty())));
            if !(ok_name && ok_ts && ok_value && ok_tags) {
                return err(format!("invalid datapoint {p}"));
            }
        }
        received.lock().expect("lock").extend(points);
        (204, String::new())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for KairosMock {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

// ---------------------------------------------------------------- PuyPuy itself

/// A config and a temp dir for one test's PuyPuy processes.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    socket: PathBuf,
    tmpdir: PathBuf,
}

impl Agent {
    /// `self_extra` lines go into `[SelfConfig]`; `rest` is the `[TSDB]` section and any other.
    pub fn new(self_extra: &str, rest: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.ini");
        let defaults = [
            ("check_period_seconds", "1"),
            ("tmpdir", "spool"),
            ("log_file", "puypuy.log"),
            ("pid_file", "run/puypuy.pid"),
            ("cluster_name", "testcluster"),
            ("host_group", "testgroup"),
            ("location", "testloc"),
            ("batch_ms", "50"),
        ];
        let given: Vec<&str> = self_extra.lines().filter_map(|l| l.split([':', '=']).next()).map(str::trim).collect();
        let mut text = String::from("[SelfConfig]\n");
        for (k, v) in defaults {
            if !given.contains(&k) {
                text.push_str(&format!("{k}: {v}\n"));
            }
        }
        text.push_str(&format!("{self_extra}\n\n{rest}\n"));
        let value_of = |key: &str| {
            self_extra.lines().find_map(|l| {
                let (k, v) = l.split_once([':', '='])?;
                (k.trim() == key).then(|| PathBuf::from(v.trim()))
            })
        };
        let tmpdir = value_of("tmpdir").map(|t| dir.path().join(t)).unwrap_or_else(|| dir.path().join("spool"));
        let socket = value_of("socket").map(|s| dir.path().join(s)).unwrap_or_else(|| tmpdir.join("shipper.sock"));
        std::fs::write(&config, text).expect("write config");
        Agent { dir, config, socket, tmpdir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(bin(binary));
        cmd.arg("--config").arg(&self.config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }

    pub fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    pub fn start_shipper(&self) -> Proc {
        let mut p = self.launch_shipper();
        assert!(p.is_running(), "the shipper exited at start:\n{}", self.log());
        p
    }

    /// Starts a shipper and returns once its socket accepts connections or it has exited (a
    /// relay port taken meanwhile by another test ends it at start): the caller tells which.
    pub fn launch_shipper(&self) -> Proc {
        let mut p = Proc::spawn("puypuy-shipper", &mut self.command("puypuy-shipper"));
        let socket = self.socket();
        wait_for(Duration::from_secs(20), "the shipper's socket", || {
            (std::os::unix::net::UnixStream::connect(&socket).is_ok() || !p.is_running()).then_some(())
        });
        p
    }

    pub fn start_collector(&self) -> Proc {
        Proc::spawn("puypuy-collector", &mut self.command("puypuy-collector"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("puypuy.log")).unwrap_or_default()
    }

    /// Asks the shipper `pid` for its status file now (SIGUSR1; with `self_metrics: no` it writes
    /// none on a timer) and waits up to 2 s for the file to be replaced.
    pub fn fresh_status(&self, pid: u32) {
        use std::os::unix::fs::MetadataExt;
        let path = self.tmpdir.join("shipper-status.json");
        let inode = || std::fs::metadata(&path).map(|m| m.ino()).ok();
        // Only a shipper that wrote the file already has its SIGUSR1 handler: before, the
        // signal would end it.
        if self.status().and_then(|s| s["pid"].as_u64()) != Some(u64::from(pid)) {
            return;
        }
        let before = inode();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGUSR1);
        let _ = poll_for(Duration::from_secs(2), || (inode() != before).then_some(()));
    }

    /// The shipper's status file (`tmpdir/shipper-status.json`, rewritten every period with
    /// self-metrics on, else on SIGUSR1: see [`Agent::fresh_status`]), parsed:
    /// `{"timestamp":…,"pid":…,"metrics":{"name{tag=v}":value,…}}`.
    pub fn status(&self) -> Option<Json> {
        let text = std::fs::read_to_string(self.tmpdir.join("shipper-status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// One self-metric of the status file written by the shipper with process id `pid`, by its
    /// key there (`name`, or `name{tag=value}`); `None` until that shipper has written it.
    pub fn status_metric(&self, pid: u32, key: &str) -> Option<i64> {
        self.fresh_status(pid);
        let status = self.status()?;
        (status["pid"].as_u64() == Some(u64::from(pid))).then(|| status["metrics"][key].as_i64())?
    }

    /// The sum of a self-metric over all its tags in the status file of the shipper `pid`
    /// (`puypuy_shipper_backend_errors` over every `kind`).
    pub fn status_sum(&self, pid: u32, name: &str) -> Option<i64> {
        self.fresh_status(pid);
        let status = self.status()?;
        if status["pid"].as_u64() != Some(u64::from(pid)) {
            return None;
        }
        let metrics = status["metrics"].as_object()?;
        let tagged = format!("{name}{{");
        Some(metrics.iter().filter(|(k, _)| *k == name || k.starts_with(&tagged)).filter_map(|(_, v)| v.as_i64()).sum())
    }

    pub fn host() -> String {
        puypuy_common::hostname::host_name(false)
    }
}
