//! Prometheus-side servers for the suite: a real Prometheus (Debian `prometheus`: it scrapes
//! PuyPuy's page and receives remote write), `prometheus-node-exporter`, VictoriaMetrics with
//! extra flags (basic auth), `promtool check metrics`, and a capture server that records each
//! request exactly (method, target, headers, body) for the InfluxDB 2 and remote-write pins.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value as Json;

use crate::{free_port, http_get, require, urlencode, wait_for, Proc};

pub const PROMETHEUS_HINT: &str = "run ./tests/run.sh, which installs prometheus prometheus-node-exporter";

fn need(command: &str) -> std::path::PathBuf {
    let found =
        ["/usr/bin", "/usr/sbin", "/usr/local/bin"].iter().map(|d| Path::new(d).join(command)).find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("{command} is not installed: {PROMETHEUS_HINT}"))
}

/// A Prometheus server with its own config, storage and port; remote write receiving on.
pub struct Prometheus {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub proc: Proc,
}

impl Prometheus {
    /// `scrape_configs` is YAML for the `scrape_configs:` list (may be empty); scrapes every 1 s.
    pub fn start(scrape_configs: &str) -> Prometheus {
        let bin = need("prometheus");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        let scrape = if scrape_configs.trim().is_empty() { " []".to_string() } else { format!("\n{scrape_configs}") };
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:{scrape}\n"),
        )
        .expect("prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let proc = Proc::spawn(
            "prometheus",
            Command::new(bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        );
        wait_for(Duration::from_secs(30), "prometheus /-/ready", || {
            http_get(&format!("http://127.0.0.1:{port}/-/ready")).filter(|(s, _)| *s == 200)
        });
        Prometheus { dir, port, proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The instant vector of `query`: each series' labels and value.
    pub fn query(&self, query: &str) -> Vec<(serde_json::Map<String, Json>, f64)> {
        let url = format!("{}/api/v1/query?query={}", self.url(), urlencode(query));
        let Some((200, body)) = http_get(&url) else { return Vec::new() };
        let json: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
        json["data"]["result"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        let value = r["value"][1].as_str()?.parse::<f64>().ok()?;
                        Some((r["metric"].as_object()?.clone(), value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// `prometheus-node-exporter` on a free loopback port.
pub struct NodeExporter {
    pub port: u16,
    pub proc: Proc,
}

impl NodeExporter {
    pub fn start() -> NodeExporter {
        let bin = need("prometheus-node-exporter");
        let port = free_port();
        let proc = Proc::spawn(
            "prometheus-node-exporter",
            Command::new(bin)
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for(Duration::from_secs(20), "node exporter /metrics", || {
            http_get(&format!("http://127.0.0.1:{port}/metrics")).filter(|(s, b)| *s == 200 && b.contains("node_"))
        });
        NodeExporter { port, proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }
}

/// VictoriaMetrics with `extra` flags (e.g. `-httpAuth.username=…`), HTTP API only.
pub struct VictoriaWith {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub auth: Option<(String, String)>,
    pub proc: Proc,
}

impl VictoriaWith {
    pub fn start(auth: Option<(&str, &str)>) -> VictoriaWith {
        let vm = require("victoria-metrics");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("vm.log")).expect("log");
        let mut cmd = Command::new(vm);
        cmd.arg(format!("-storageDataPath={}/data", dir.path().display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .args(["-retentionPeriod=100y", "-search.latencyOffset=0s", "-search.disableCache"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some((u, p)) = auth {
            cmd.arg(format!("-httpAuth.username={u}")).arg(format!("-httpAuth.password={p}"));
        }
        let proc = Proc::spawn("victoria-metrics", &mut cmd);
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        let vm = VictoriaWith { dir, port, auth, proc };
        wait_for(Duration::from_secs(20), "victoria-metrics /health", || {
            http_get(&format!("http://127.0.0.1:{port}/health")).filter(|(s, _)| *s == 200)
        });
        vm
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut req = agent.get(format!("{}{path}", self.url()));
        if let Some((u, p)) = &self.auth {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            req = req.header("Authorization", &format!("Basic {basic}"));
        }
        let mut resp = req.call().ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.body_mut().read_to_string().ok()?))
    }

    /// Exported series matching `selector`, as JSON lines.
    pub fn export(&self, selector: &str) -> Vec<Json> {
        let _ = self.get("/internal/force_flush");
        match self.get(&format!("/api/v1/export?match[]={}", urlencode(selector))) {
            Some((200, body)) => body.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
            _ => Vec::new(),
        }
    }
}

/// `promtool check metrics` on `page`: its exit success and what it printed.
pub fn promtool_check_metrics(page: &[u8]) -> (bool, String) {
    let mut child = Command::new(need("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().expect("stdin").write_all(page).expect("write page");
    let out = child.wait_with_output().expect("promtool output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An HTTP server that records every request and answers `status` (204 by default).
pub struct Capture {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Captured>>>,
    pub status: Arc<Mutex<u16>>,
    server: Arc<tiny_http::Server>,
}

impl Capture {
    pub fn start() -> Capture {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("capture bind"));
        let port = server.server_addr().to_ip().expect("ip").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(204u16));
        let (s, r, st) = (Arc::clone(&server), Arc::clone(&requests), Arc::clone(&status));
        thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let mut body = Vec::new();
                let _ = req.as_reader().read_to_end(&mut body);
                let captured = Captured {
                    method: req.method().as_str().to_string(),
                    url: req.url().to_string(),
                    headers: req.headers().iter().map(|h| (h.field.to_string(), h.value.to_string())).collect(),
                    body,
                };
                r.lock().expect("lock").push(captured);
                let code = *st.lock().expect("lock");
                let _ = req.respond(tiny_http::Response::empty(code));
            }
        });
        Capture { port, requests, status, server }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.server.unblock();
    }
}
