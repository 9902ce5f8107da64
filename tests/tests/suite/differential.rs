//! The relay's text inputs against the servers they imitate, with the real server as the oracle.
//!
//! InfluxDB `/write`: every case of `tests/fixtures/line_protocol.corpus` is sent as one request to
//! a real InfluxDB 1.6 (database `direct`) and to the relay, whose shipper writes into the same
//! InfluxDB (database `puypuy`). Both must give the same verdict (2xx or 4xx) and, for what
//! InfluxDB stored, the relay must have delivered the same numeric values (its names: field
//! `value` → the measurement, field `f` → `measurement_f`; booleans as 1 and 0; strings skipped)
//! at the same second, and nothing InfluxDB did not store. A case marked `[differs=WHY]` is a
//! known, documented difference: the test asserts that the verdicts do differ. A case marked
//! `[verdict-only]` compares verdicts alone.
//!
//! Graphite plaintext: every case of `tests/fixtures/graphite.corpus` goes, on a connection of its
//! own, to a real carbon-cache's line receiver and to the relay's `graphite_listen`, whose shipper
//! writes to a second carbon-cache; the whisper files of both (paths, timestamps, values) must be
//! the same, under the same paths (relayed paths pass through unchanged).
//!
//! OpenTSDB telnet and `/api/put`: no OpenTSDB server can be installed here, and VictoriaMetrics
//! accepts more than OpenTSDB, so the verdicts come from OpenTSDB's documentation, written into
//! `tests/fixtures/opentsdb_telnet.corpus` and `opentsdb_put.corpus` case by case; what the relay
//! accepts must reach VictoriaMetrics with its value.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use puypuy_tests::{free_port, poll_for, repo_root, urlencode, wait_for, Agent, Carbon, Influx, Proc, Victoria};
use serde_json::Value as Json;

/// One case of a corpus file.
struct Case {
    /// Its line in the corpus file, for messages.
    line: usize,
    text: String,
    body: Vec<u8>,
    precision: Option<String>,
    gzip: bool,
    differs: Option<String>,
    /// Only the verdict is compared (names with bytes that are not UTF-8, which InfluxDB's query
    /// answers cannot name).
    verdict_only: bool,
}

impl Case {
    /// `cNNN`, the prefix of every measurement the case writes.
    fn id(&self) -> String {
        self.text.trim_start().chars().take(4).collect()
    }
}

/// Reads a corpus: see the notes at the top of `tests/fixtures/line_protocol.corpus`.
fn read_corpus(name: &str) -> Vec<Case> {
    let path = repo_root().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut cases = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.is_empty() || raw.starts_with("##") {
            continue;
        }
        let mut rest = raw;
        let (mut precision, mut gzip, mut differs, mut verdict_only) = (None, false, None, false);
        // Options come after the measurement (`c045 [differs=…] value=1`) or first (`[gzip] …`).
        let mut prefix = String::new();
        while let Some(open) = rest.find(" [").map(|i| i + 1).or_else(|| rest.starts_with('[').then_some(0)) {
            let Some(close) = rest[open..].find(']').map(|c| open + c) else { break };
            let option = &rest[open + 1..close];
            match option.split_once('=') {
                Some(("precision", p)) => precision = Some(p.to_string()),
                Some(("differs", why)) => differs = Some(why.to_string()),
                None if option == "gzip" => gzip = true,
                None if option == "verdict-only" => verdict_only = true,
                _ => break,
            }
            prefix.push_str(&rest[..open]);
            rest = rest[close + 1..].strip_prefix(' ').unwrap_or(&rest[close + 1..]);
        }
        let case_text = format!("{prefix}{rest}");
        cases.push(Case {
            line: i + 1,
            body: decode(&case_text),
            text: case_text,
            precision,
            gzip,
            differs,
            verdict_only,
        });
    }
    cases
}

/// `{LF}` `{CR}` `{TAB}` `{xHH}` to their bytes.
fn decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..open]);
        let close = rest[open..].find('}').map(|c| open + c).expect("unclosed { in a corpus case");
        match &rest[open + 1..close] {
            "LF" => out.push(b'\n'),
            "CR" => out.push(b'\r'),
            "TAB" => out.push(b'\t'),
            "LB" => out.push(b'{'),
            "RB" => out.push(b'}'),
            hex if hex.starts_with('x') => out.push(u8::from_str_radix(&hex[1..], 16).expect("{xHH}")),
            other => panic!("unknown escape {{{other}}} in a corpus case"),
        }
        rest = &rest[close + 1..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// POSTs raw bytes (HTTP/1.1, one request per connection) and returns the status and body.
fn post(port: u16, path: &str, body: &[u8], gzip: bool) -> (u16, String) {
    let body = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(body).expect("gzip");
        enc.finish().expect("gzip")
    } else {
        body.to_vec()
    };
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(40))).expect("timeout");
    let encoding = if gzip { "Content-Encoding: gzip\r\n" } else { "" };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n{encoding}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(&body).expect("write");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn query(influx: &Influx, db: &str, q: &str) -> Json {
    let url = format!("{}/query?db={db}&epoch=s&q={}", influx.url(), urlencode(q));
    let (status, body) = puypuy_tests::http_get(&url).expect("influx query");
    assert_eq!(status, 200, "{q}: {body}");
    serde_json::from_str(&body).expect("influx json")
}

fn measurements(influx: &Influx, db: &str) -> BTreeSet<String> {
    let v = query(influx, db, "SHOW MEASUREMENTS");
    v["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r[0].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Names as InfluxQL wants them quoted.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `(relay name, time, value)` of every numeric field InfluxDB stored under `measurement`.
fn expected_points(influx: &Influx, measurement: &str) -> Vec<(String, u64, f64)> {
    let fields = query(influx, "direct", &format!("SHOW FIELD KEYS FROM {}", quoted(measurement)));
    let fields: Vec<String> = fields["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r[0].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for field in fields {
        let v = query(influx, "direct", &format!("SELECT {} FROM {}", quoted(&field), quoted(measurement)));
        let rows = v["results"][0]["series"][0]["values"].as_array().cloned().unwrap_or_default();
        let name = if field == "value" { measurement.to_string() } else { format!("{measurement}_{field}") };
        for row in rows {
            let time = row[0].as_i64().unwrap_or(i64::MIN);
            let value = match &row[1] {
                Json::Bool(b) => f64::from(u8::from(*b)),
                Json::Number(n) => n.as_f64().expect("number"),
                _ => continue,
            };
            out.push((name.clone(), u64::try_from(time).unwrap_or(u64::MAX), value));
        }
    }
    out
}

fn relay_points(influx: &Influx, name: &str) -> Vec<(u64, f64)> {
    let v = query(influx, Influx::DB, &format!("SELECT value FROM {}", quoted(name)));
    v["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| Some((r[0].as_u64()?, r[1].as_f64()?))).collect())
        .unwrap_or_default()
}

/// The relay: a shipper with `[SelfConfig]` lines `self_extra`, the `[TSDB]` section `tsdb`, and a
/// `[Relay]` input per entry of `inputs` (`KEY = {}` with a free port put in). Returns the ports in
/// order once every input answers. Retries with other ports when one chosen was taken meanwhile.
fn start_relay(self_extra: &str, tsdb: &str, inputs: &[&str]) -> (Agent, Proc, Vec<u16>) {
    for _ in 0..5 {
        let ports: Vec<u16> = inputs.iter().map(|_| free_port()).collect();
        let relay: String = inputs
            .iter()
            .zip(&ports)
            .map(|(key, port)| format!("{}\n", key.replace("{}", &port.to_string())))
            .collect();
        let agent = Agent::new(
            &format!("self_metrics: False\nbatch_ms: 5\n{self_extra}"),
            &format!("{tsdb}\n[Relay]\n{relay}"),
        );
        let mut shipper = agent.start_shipper();
        let up = wait_for(Duration::from_secs(15), "the relay's ports or the shipper's exit", || {
            if !shipper.is_running() {
                return Some(false);
            }
            ports.iter().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok()).then_some(true)
        });
        if up {
            return (agent, shipper, ports);
        }
        assert!(agent.log().contains("cannot listen"), "the shipper exited:\n{}", agent.log());
    }
    panic!("no free ports for the relay in five tries");
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

#[test]
fn influxdb_write_agrees_with_influxdb() {
    let cases = read_corpus("line_protocol.corpus");
    assert!(cases.len() >= 200, "the corpus has {} cases; the issue asks for at least 200", cases.len());
    let influx = Influx::start(false);
    let create = format!("{}/query?q={}", influx.url(), urlencode("CREATE DATABASE direct"));
    assert_eq!(puypuy_tests::http_post(&create, "", None).map(|r| r.0), Some(200));
    let tsdb = format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = {}", influx.url(), Influx::DB);
    let (_agent, _shipper, ports) = start_relay("", &tsdb, &["http_listen = 127.0.0.1:{}"]);
    let relay_port = ports[0];
    let started = now();

    let mut problems = Vec::new();
    // Relay name → (case line, time, value) that InfluxDB stored, to find at the relay.
    let mut expected: BTreeMap<String, Vec<(usize, u64, f64)>> = BTreeMap::new();
    let mut seen = measurements(&influx, "direct");
    for case in &cases {
        let mut path = String::from("/write?db=direct");
        if let Some(p) = &case.precision {
            path.push_str(&format!("&precision={}", urlencode(p)));
        }
        let (direct_status, direct_body) = post(influx.port, &path, &case.body, case.gzip);
        let (relay_status, relay_body) = post(relay_port, &path, &case.body, case.gzip);
        let accepted = |s: u16| (200..300).contains(&s);
        let at = format!("corpus line {} {:?}", case.line, case.text);
        match &case.differs {
            None if accepted(direct_status) != accepted(relay_status) => problems.push(format!(
                "{at}: InfluxDB answered {direct_status} {direct_body:?}, the relay {relay_status} {relay_body:?}"
            )),
            Some(why) if accepted(direct_status) == accepted(relay_status) => problems.push(format!(
                "{at}: marked differs ({why}), but InfluxDB answered {direct_status} {direct_body:?} and the relay {relay_status} {relay_body:?}"
            )),
            _ => {}
        }
        let after = measurements(&influx, "direct");
        for m in after.difference(&seen).filter(|_| case.differs.is_none() && !case.verdict_only) {
            for (name, time, value) in expected_points(&influx, m) {
                expected.entry(name).or_default().push((case.line, time, value));
            }
        }
        seen = after;
    }

    // Everything InfluxDB stored must arrive through the relay (the shipper batches: wait for it).
    let all_there = || expected.keys().all(|name| !relay_points(&influx, name).is_empty());
    // Missing points are reported below, one by one, rather than as a timeout.
    let _ = poll_for(Duration::from_secs(20), || all_there().then_some(()));
    for (name, points) in &expected {
        let got = relay_points(&influx, name);
        for (line, time, value) in points {
            // A case without a timestamp takes the time of arrival, which may be a second apart.
            let no_timestamp = *time >= started && *time <= now();
            let found = got.iter().any(|(t, v)| {
                (v == value || (v - value).abs() <= value.abs() * 1e-15)
                    && (t == time || (no_timestamp && t.abs_diff(*time) <= 2))
            });
            if !found {
                problems.push(format!(
                    "corpus line {line}: InfluxDB stored {name} = {value} at {time}; the relay delivered {got:?}"
                ));
            }
        }
    }
    let unexpected: Vec<String> = measurements(&influx, Influx::DB)
        .into_iter()
        .filter(|m| !expected.contains_key(m))
        .map(|m| format!("{m} = {:?}", relay_points(&influx, &m)))
        .collect();
    let documented: BTreeSet<String> =
        cases.iter().filter(|c| c.differs.is_some() || c.verdict_only).map(Case::id).collect();
    for m in unexpected {
        if !documented.iter().any(|d| m.starts_with(d.as_str())) {
            problems.push(format!("the relay delivered {m}, which InfluxDB did not store"));
        }
    }
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
}

/// Every whisper file under `dir` as its dotted path → the `(time, value)` slots written in the
/// last hour (values as Python writes them: `1.5`, `inf`), read by the whisper module carbon uses.
fn whisper_dump(dir: &std::path::Path) -> BTreeMap<String, Vec<(u64, String)>> {
    const SCRIPT: &str = r#"
import json, os, sys, time, whisper
root = sys.argv[1]
now = int(time.time())
out = {}
for base, _, files in os.walk(root):
    for f in files:
        if not f.endswith('.wsp'):
            continue
        full = os.path.join(base, f)
        name = os.path.relpath(full, root)[:-4].replace(os.sep, '.')
        name = name.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')
        (start, _, step), values = whisper.fetch(full, now - 3600, now + 60)
        out[name] = [[start + i * step, repr(v)] for i, v in enumerate(values) if v is not None]
print(json.dumps(out))
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .arg(dir)
        .output()
        .expect("python3 with the whisper module (Debian python3-whisper)");
    assert!(out.status.success(), "whisper dump: {}", String::from_utf8_lossy(&out.stderr));
    let v: BTreeMap<String, Vec<(u64, String)>> = serde_json::from_slice(&out.stdout).expect("whisper json");
    v
}

fn tcp_send(port: u16, bytes: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(bytes).expect("write");
}

/// Dotted whisper path → `(time, value)` slots.
type WhisperTree = BTreeMap<String, Vec<(u64, String)>>;

/// Waits until both trees hold `sentinel` and stop changing, then returns them.
fn settled(direct: &Carbon, relay: &Carbon, sentinel: &str) -> (WhisperTree, WhisperTree) {
    let dump = || {
        (
            whisper_dump(&direct.dir.path().join("storage/whisper")),
            whisper_dump(&relay.dir.path().join("storage/whisper")),
        )
    };
    let mut last = wait_for(Duration::from_secs(60), "the sentinel in both whisper trees", || {
        let (d, r) = dump();
        (d.contains_key(sentinel) && r.contains_key(sentinel)).then_some((d, r))
    });
    // carbon writes its cache to whisper in an order of its own and says nothing when it is done:
    // the trees are settled once four readings in a row (each a python whisper dump) agree.
    let mut same = 0;
    wait_for(Duration::from_secs(60), "both whisper trees to stop changing", || {
        let now = dump();
        same = if now == last { same + 1 } else { 0 };
        last = now;
        (same >= 3).then(|| last.clone())
    })
}

#[test]
fn graphite_plaintext_agrees_with_carbon_cache() {
    let cases = read_corpus("graphite.corpus");
    let direct = Carbon::start();
    let relayed = Carbon::start();
    // No cluster or group, so that a relayed path is the path sent.
    let tsdb = format!("[TSDB]\ntsdtype = Carbon\naddress = 127.0.0.1:{}", relayed.pickle_port);
    let (_agent, _shipper, ports) = start_relay("cluster_name:\nhost_group:", &tsdb, &["graphite_listen = {}"]);
    let relay_port = ports[0];
    let now = (now() - 60).to_string();
    for case in &cases {
        let mut bytes = String::from_utf8_lossy(&case.body).replace("NOW", &now).into_bytes();
        // Bytes that are not UTF-8 go through unchanged.
        if case.body.iter().any(|b| !b.is_ascii()) {
            bytes = decode(&case.text.replace("NOW", &now));
        }
        bytes.push(b'\n');
        tcp_send(direct.line_port, &bytes);
        tcp_send(relay_port, &bytes);
    }
    let sentinel = format!("gzzz 1 {now}\n");
    tcp_send(direct.line_port, sentinel.as_bytes());
    tcp_send(relay_port, sentinel.as_bytes());
    let (direct_tree, relay_tree) = settled(&direct, &relayed, "gzzz");

    // Relayed Graphite paths pass through unchanged (issue 16): the two trees have the same paths.
    let mut problems = Vec::new();
    for case in &cases {
        let id = case.id();
        if !id.starts_with('g') {
            continue;
        }
        let of = |tree: &BTreeMap<String, Vec<(u64, String)>>| -> BTreeMap<String, Vec<(u64, String)>> {
            // A file with no point in it (carbon creates one for a time outside its retention)
            // is not data.
            tree.iter()
                .filter(|(k, v)| k.starts_with(&id) && !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let (d, r) = (of(&direct_tree), of(&relay_tree));
        match &case.differs {
            None if d != r => problems
                .push(format!("corpus line {} {:?}: carbon-cache wrote {d:?}, the relay {r:?}", case.line, case.text)),
            Some(why) if d == r => problems.push(format!(
                "corpus line {} {:?}: marked differs ({why}), but both wrote {d:?}",
                case.line, case.text
            )),
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
}

/// A case of the OpenTSDB corpora: the documented verdict, or a documented difference.
struct Documented {
    line: usize,
    accept: bool,
    differs: Option<String>,
    text: String,
}

fn read_documented(name: &str) -> Vec<Documented> {
    let path = repo_root().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let now = now() - 60;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.is_empty() || raw.starts_with("##") {
            continue;
        }
        let raw = raw.replace("NOWMS", &format!("{now}123")).replace("NOW", &now.to_string());
        let (verdict, rest) = raw.split_once(' ').unwrap_or((raw.as_str(), ""));
        let (accept, differs) = match verdict {
            "accept" => (true, None),
            "refuse" => (false, None),
            d if d.starts_with("differs[") => {
                let (why, rest) = raw["differs[".len()..].split_once("] ").expect("differs[WHY] LINE");
                out.push(Documented {
                    line: i + 1,
                    accept: false,
                    differs: Some(why.to_string()),
                    text: rest.to_string(),
                });
                continue;
            }
            other => panic!("{name}:{}: unknown verdict {other:?}", i + 1),
        };
        out.push(Documented { line: i + 1, accept, differs, text: rest.to_string() });
    }
    out
}

/// `name → values` of the `t…`/`j…` series VictoriaMetrics holds.
fn vm_values(vm: &Victoria) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for series in vm.export(r#"{__name__=~"[tj][0-9]{3}.*"}"#) {
        let Some(name) = series["metric"]["__name__"].as_str() else { continue };
        let values = series["values"].as_array().cloned().unwrap_or_default();
        out.entry(name.to_string()).or_default().extend(values.iter().filter_map(Json::as_f64));
    }
    out
}

/// Waits until every name of `expected` holds its value at VictoriaMetrics; returns what it holds
/// then, or at the deadline (the test reports what is missing).
fn wait_for_values(vm: &Victoria, expected: &[(usize, String, f64)]) -> BTreeMap<String, Vec<f64>> {
    let complete =
        |got: &BTreeMap<String, Vec<f64>>| expected.iter().all(|(_, n, v)| got.get(n).is_some_and(|vs| vs.contains(v)));
    poll_for(Duration::from_secs(20), || Some(vm_values(vm)).filter(complete)).unwrap_or_else(|| vm_values(vm))
}

#[test]
fn opentsdb_telnet_follows_opentsdb_documentation() {
    let cases = read_documented("opentsdb_telnet.corpus");
    let vm = Victoria::start();
    let tsdb = format!("[TSDB]\ntsdtype = OpenTSDB\naddress = http://127.0.0.1:{}", vm.otsdb_port);
    // No cluster, group or location tag: a point carries at most the host's tag beside its own.
    let (_agent, _shipper, ports) = start_relay(
        "cluster_name:\nhost_group:\nlocation:",
        &tsdb,
        &["opentsdb_listen = {}", "http_listen = 127.0.0.1:{}"],
    );
    let telnet = ports[0];
    let mut conn = TcpStream::connect(("127.0.0.1", telnet)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut reader = std::io::BufReader::new(conn.try_clone().expect("clone"));
    let mut problems = Vec::new();
    let mut expected = Vec::new();
    for case in &cases {
        // `version` after each line: its answer ends what the line got.
        conn.write_all(format!("{}\nversion\n", case.text).as_bytes()).expect("write");
        let mut answers = Vec::new();
        loop {
            let mut line = String::new();
            let n = std::io::BufRead::read_line(&mut reader, &mut line).expect("the relay's answer");
            assert!(n > 0, "the relay closed the connection after {:?}", case.text);
            if line.starts_with("puypuy-shipper ") {
                break;
            }
            answers.push(line.trim_end().to_string());
        }
        let accepted = answers.is_empty();
        let wanted = case.accept || case.differs.is_some();
        if accepted != wanted {
            problems.push(format!(
                "corpus line {} {:?}: OpenTSDB's documentation says {}, the relay answered {answers:?}",
                case.line,
                case.text,
                if case.accept { "accept" } else { "refuse" }
            ));
        }
        if !accepted && !answers.iter().all(|a| a.starts_with("put: ")) {
            problems.push(format!("corpus line {}: answers {answers:?} are not OpenTSDB's `put: …`", case.line));
        }
        if accepted {
            let words: Vec<&str> = case.text.split_ascii_whitespace().collect();
            expected.push((case.line, words[1].to_string(), words[3].parse::<f64>().expect("a number")));
        }
    }
    let got = wait_for_values(&vm, &expected);
    for (line, name, value) in &expected {
        if !got.get(name).is_some_and(|vs| vs.contains(value)) {
            problems.push(format!(
                "corpus line {line}: {name} = {value} did not reach VictoriaMetrics: {:?}",
                got.get(name)
            ));
        }
    }
    let names: BTreeSet<&String> = expected.iter().map(|(_, n, _)| n).collect();
    for (name, values) in &got {
        if name.starts_with('t') && !names.contains(name) {
            problems.push(format!("{name} = {values:?} reached VictoriaMetrics, though refused"));
        }
    }
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn opentsdb_put_follows_opentsdb_documentation() {
    let cases = read_documented("opentsdb_put.corpus");
    let vm = Victoria::start();
    let tsdb = format!("[TSDB]\ntsdtype = OpenTSDB\naddress = http://127.0.0.1:{}", vm.otsdb_port);
    // No cluster, group or location tag: a point carries at most the host's tag beside its own.
    let (_agent, _shipper, ports) = start_relay(
        "cluster_name:\nhost_group:\nlocation:",
        &tsdb,
        &["opentsdb_listen = {}", "http_listen = 127.0.0.1:{}"],
    );
    let http = ports[1];
    let points: Vec<Json> = cases
        .iter()
        .map(|c| serde_json::from_str(&c.text).unwrap_or_else(|e| panic!("corpus line {}: {e}", c.line)))
        .collect();
    let body = serde_json::to_vec(&points).expect("json");
    let (status, answer) = post(http, "/api/put?details", &body, false);
    let mut problems = Vec::new();
    let answer: Json = serde_json::from_str(&answer).unwrap_or(Json::Null);
    let refused: Vec<&Json> =
        answer["errors"].as_array().map(|e| e.iter().map(|x| &x["datapoint"]).collect()).unwrap_or_default();
    let wanted_refused: Vec<&Json> =
        cases.iter().zip(&points).filter(|(c, _)| !c.accept && c.differs.is_none()).map(|(_, p)| p).collect();
    if status != 400 || refused != wanted_refused {
        problems.push(format!(
            "answered {status}; refused {} data points, the documentation {}: {}",
            refused.len(),
            wanted_refused.len(),
            serde_json::to_string_pretty(&answer["errors"]).unwrap_or_default()
        ));
    }
    let accepted = cases.len() - wanted_refused.len();
    if answer["success"].as_u64() != Some(accepted as u64)
        || answer["failed"].as_u64() != Some(wanted_refused.len() as u64)
    {
        problems.push(format!("success/failed counts: {answer}"));
    }
    let expected: Vec<(usize, String, f64)> = cases
        .iter()
        .zip(&points)
        .filter(|(c, _)| c.accept || c.differs.is_some())
        .map(|(c, p)| {
            let value = match &p["value"] {
                Json::String(s) => s.parse().expect("a number"),
                v => v.as_f64().expect("a number"),
            };
            (c.line, p["metric"].as_str().expect("metric").to_string(), value)
        })
        .collect();
    let got = wait_for_values(&vm, &expected);
    for (line, name, value) in &expected {
        if !got.get(name).is_some_and(|vs| vs.contains(value)) {
            problems.push(format!(
                "corpus line {line}: {name} = {value} did not reach VictoriaMetrics: {:?}",
                got.get(name)
            ));
        }
    }
    let names: BTreeSet<&String> = expected.iter().map(|(_, n, _)| n).collect();
    for (name, values) in &got {
        if name.starts_with('j') && !names.contains(name) {
            problems.push(format!("{name} = {values:?} reached VictoriaMetrics, though refused"));
        }
    }
    // A body that is not JSON loses every point, as documented.
    let (status, _) = post(http, "/api/put", br#"[{"metric":"j099","timestamp":1,"value":1"#, false);
    if status != 400 {
        problems.push(format!("a body that is not JSON was answered {status}"));
    }
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
}
