//! Real service servers for the service checks' tests, each from its Debian package, on free
//! loopback ports in a temp dir: MariaDB, nginx (optionally in front of php-fpm), Apache with
//! mod_status, Redis, memcached, php-fpm and HAProxy.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, http_get, require, wait_for, Proc};

fn tcp_ready(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn logged(dir: &Path, name: &str, cmd: &mut Command) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    Proc::spawn(name, cmd.stdout(log.try_clone().expect("log")).stderr(log).stdin(Stdio::null()))
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub proc: Proc,
}

pub struct MariaDb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub socket: std::path::PathBuf,
    pub proc: Proc,
}

impl MariaDb {
    pub const USER: &'static str = "agent";
    pub const PASS: &'static str = "agentpw";

    pub fn start() -> MariaDb {
        let install = require("mariadb-install-db");
        let mariadbd = require("mariadbd");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_port();
        let socket = d.join("mysqld.sock");
        // Its own temporary folder: the bootstrap's temporary tables under a /tmp shared with the
        // rest of the suite were once gone before it removed them ("Could not remove temporary
        // table ... error: 2"), which aborted it.
        let tmp = d.join("tmp");
        std::fs::create_dir_all(&tmp).expect("mariadb tmpdir");
        let out = Command::new(install)
            .env("TMPDIR", &tmp)
            .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"])
            .arg(format!("--datadir={}", d.join("data").display()))
            .output()
            .expect("mariadb-install-db");
        assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
        let proc = logged(
            d,
            "mariadbd",
            Command::new(mariadbd)
                .args([
                    "--no-defaults",
                    "--user=root",
                    "--bind-address=127.0.0.1",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=32M",
                ])
                .arg(format!("--datadir={}", d.join("data").display()))
                .arg(format!("--port={port}"))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
                .arg(format!("--tmpdir={}", tmp.display())),
        );
        wait_for(Duration::from_secs(30), "mariadbd", || tcp_ready(port).then_some(()));
        let db = MariaDb { dir, port, socket, proc };
        db.sql(&format!(
            "CREATE USER '{u}'@'127.0.0.1' IDENTIFIED BY '{p}'; CREATE USER '{u}'@'localhost' IDENTIFIED BY '{p}'; \
             GRANT PROCESS, REPLICATION CLIENT, SELECT ON *.* TO '{u}'@'127.0.0.1'; GRANT PROCESS, REPLICATION CLIENT, SELECT ON *.* TO '{u}'@'localhost';",
            u = Self::USER,
            p = Self::PASS
        ));
        db
    }

    /// Runs SQL as root over the socket.
    pub fn sql(&self, sql: &str) {
        let out = Command::new(require("mariadb"))
            .args(["--no-defaults", "-uroot"])
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-e", sql])
            .output()
            .expect("mariadb client");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

pub fn php_fpm() -> Server {
    let fpm = require("php-fpm8.2");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("fpm.conf"),
        format!("[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm-error.log\ndaemonize = no\n[www]\nlisten = 127.0.0.1:{port}\nuser = www-data\ngroup = www-data\npm = static\npm.max_children = 2\npm.status_path = /status\n"),
    )
    .expect("fpm.conf");
    let proc = logged(dir.path(), "php-fpm", Command::new(fpm).args(["-F", "-y"]).arg(dir.path().join("fpm.conf")));
    wait_for(Duration::from_secs(15), "php-fpm", || tcp_ready(port).then_some(()));
    Server { dir, port, proc }
}

/// nginx with `stub_status` at /nginx_status, basic auth (user `agent`, password `s3cret`) at
/// /auth_status, `ok` at /, and php-fpm's status at /status when a php-fpm port is given.
pub fn nginx(php_fpm_port: Option<u16>) -> Server {
    let nginx = require("nginx");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let d = dir.path().display();
    std::fs::write(dir.path().join("htpasswd"), "agent:{PLAIN}s3cret\n").expect("htpasswd");
    let fpm = php_fpm_port
        .map(|p| format!("location /status {{ fastcgi_pass 127.0.0.1:{p}; include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_NAME /status; fastcgi_param SCRIPT_FILENAME /status; }}"))
        .unwrap_or_default();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
             http {{ access_log off; client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3; uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;\n\
             server {{ listen 127.0.0.1:{port}; location /nginx_status {{ stub_status; }} location /auth_status {{ stub_status; auth_basic \"x\"; auth_basic_user_file {d}/htpasswd; }} {fpm} location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        ),
    )
    .expect("nginx.conf");
    let proc = logged(dir.path(), "nginx", Command::new(nginx).arg("-c").arg(dir.path().join("nginx.conf")));
    wait_for(Duration::from_secs(15), "nginx", || {
        http_get(&format!("http://127.0.0.1:{port}/")).filter(|(s, _)| *s == 200)
    });
    Server { dir, port, proc }
}

pub fn apache() -> Server {
    let apache = require("apache2");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let d = dir.path().display();
    let m = "/usr/lib/apache2/modules";
    std::fs::write(
        dir.path().join("apache.conf"),
        format!(
            "ServerRoot {d}\nDefaultRuntimeDir {d}\nLoadModule mpm_event_module {m}/mod_mpm_event.so\nLoadModule authz_core_module {m}/mod_authz_core.so\n\
             LoadModule status_module {m}/mod_status.so\nListen 127.0.0.1:{port}\nPidFile {d}/apache.pid\nErrorLog {d}/error.log\nServerName localhost\n\
             User www-data\nGroup www-data\nDocumentRoot {d}\nExtendedStatus On\n<Location /server-status>\n  SetHandler server-status\n</Location>\n"
        ),
    )
    .expect("apache.conf");
    std::fs::write(dir.path().join("index.html"), "ok\n").expect("index");
    let proc = logged(
        dir.path(),
        "apache2",
        Command::new(apache).arg("-f").arg(dir.path().join("apache.conf")).arg("-DFOREGROUND"),
    );
    wait_for(Duration::from_secs(15), "apache2", || {
        http_get(&format!("http://127.0.0.1:{port}/server-status?auto")).filter(|(s, _)| *s == 200)
    });
    Server { dir, port, proc }
}

pub fn redis(password: Option<&str>) -> Server {
    let redis = require("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = Command::new(redis);
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--port")
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir.path());
    if let Some(p) = password {
        cmd.args(["--requirepass", p]);
    }
    let proc = logged(dir.path(), "redis", &mut cmd);
    wait_for(Duration::from_secs(15), "redis", || tcp_ready(port).then_some(()));
    Server { dir, port, proc }
}

pub fn memcached() -> Server {
    let memcached = require("memcached");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let proc = logged(
        dir.path(),
        "memcached",
        Command::new(memcached).args(["-l", "127.0.0.1", "-U", "0", "-u", "nobody", "-p"]).arg(port.to_string()),
    );
    wait_for(Duration::from_secs(15), "memcached", || tcp_ready(port).then_some(()));
    Server { dir, port, proc }
}

/// HAProxy with a frontend `web` on `port` in front of backend `app` (server `app1` = the given
/// port) and its stats CSV at `http://127.0.0.1:<stats>/stats;csv`.
pub struct HaProxy {
    pub server: Server,
    pub stats_port: u16,
}

pub fn haproxy(backend_port: u16) -> HaProxy {
    let haproxy = require("haproxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, stats_port) = (free_port(), free_port());
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("haproxy.cfg"),
        format!(
            "global\n  pidfile {d}/haproxy.pid\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             frontend web\n  bind 127.0.0.1:{port}\n  default_backend app\nbackend app\n  server app1 127.0.0.1:{backend_port}\n\
             listen stats\n  bind 127.0.0.1:{stats_port}\n  stats enable\n  stats uri /stats\n"
        ),
    )
    .expect("haproxy.cfg");
    let proc =
        logged(dir.path(), "haproxy", Command::new(haproxy).arg("-f").arg(dir.path().join("haproxy.cfg")).arg("-db"));
    wait_for(Duration::from_secs(15), "haproxy", || tcp_ready(stats_port).then_some(()));
    HaProxy { server: Server { dir, port, proc }, stats_port }
}

/// The Java fixture `tests/fixtures/JmxTarget.java`, compiled with javac and run with JMX remote
/// on a free loopback port (optionally with a password file: user `monitor`, password `jmxpw`).
pub struct JavaTarget {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub auth: bool,
    pub proc: Proc,
}

impl JavaTarget {
    pub fn start(auth: bool) -> JavaTarget {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(require("javac"))
            .arg("-d")
            .arg(dir.path())
            .arg(crate::repo_root().join("tests/fixtures/JmxTarget.java"))
            .output()
            .expect("javac");
        assert!(out.status.success(), "javac: {}", String::from_utf8_lossy(&out.stderr));
        if auth {
            let pw = dir.path().join("jmx.password");
            std::fs::write(&pw, "monitor jmxpw\n").expect("password file");
            std::fs::write(dir.path().join("jmx.access"), "monitor readonly\n").expect("access file");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let port = free_port();
        let proc = Self::spawn(dir.path(), port, auth);
        JavaTarget { dir, port, auth, proc }
    }

    fn spawn(dir: &Path, port: u16, auth: bool) -> Proc {
        let mut cmd = Command::new(require("java"));
        cmd.arg("-cp")
            .arg(dir)
            .arg("-Xmx64m")
            .arg(format!("-Dcom.sun.management.jmxremote.port={port}"))
            .arg(format!("-Dcom.sun.management.jmxremote.rmi.port={port}"))
            .arg("-Dcom.sun.management.jmxremote.ssl=false")
            .arg("-Dcom.sun.management.jmxremote.host=127.0.0.1")
            .arg("-Djava.rmi.server.hostname=127.0.0.1")
            .arg(format!("-Dcom.sun.management.jmxremote.authenticate={auth}"));
        if auth {
            cmd.arg(format!("-Dcom.sun.management.jmxremote.password.file={}", dir.join("jmx.password").display()))
                .arg(format!("-Dcom.sun.management.jmxremote.access.file={}", dir.join("jmx.access").display()));
        }
        cmd.arg("JmxTarget");
        let proc = logged(dir, "java", &mut cmd);
        wait_for(Duration::from_secs(30), "the Java target's JMX port", || tcp_ready(port).then_some(()));
        proc
    }

    pub fn url(&self) -> String {
        format!("service:jmx:rmi:///jndi/rmi://127.0.0.1:{}/jmxrmi", self.port)
    }

    pub fn kill(&mut self) {
        self.proc.signal(nix::sys::signal::Signal::SIGKILL);
        self.proc.wait_exit(Duration::from_secs(10));
    }

    pub fn restart(&mut self) {
        self.proc = Self::spawn(self.dir.path(), self.port, self.auth);
    }
}

/// nginx terminating TLS on a free port in front of `upstream_port` (plain HTTP), with a
/// certificate for 127.0.0.1 and localhost signed by a test CA made here with openssl. Returns the
/// server and the CA's PEM file.
pub fn tls_proxy(upstream_port: u16) -> (Server, std::path::PathBuf) {
    let nginx = require("nginx");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    crate::certs::make_certificates(d);
    let port = free_port();
    let p = d.display();
    std::fs::write(
        d.join("nginx.conf"),
        format!(
            "daemon off; worker_processes 1; pid {p}/nginx.pid; error_log {p}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {p}/t1; proxy_temp_path {p}/t2; fastcgi_temp_path {p}/t3; uwsgi_temp_path {p}/t4; scgi_temp_path {p}/t5;\n\
             server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {p}/server.pem; ssl_certificate_key {p}/server.key;\n\
             location / {{ proxy_pass http://127.0.0.1:{upstream_port}; }} }} }}\n"
        ),
    )
    .expect("nginx.conf");
    let proc = logged(d, "nginx", Command::new(nginx).arg("-c").arg(d.join("nginx.conf")));
    wait_for(Duration::from_secs(15), "nginx TLS", || tcp_ready(port).then_some(()));
    let ca = d.join("ca.pem");
    (Server { dir, port, proc }, ca)
}
