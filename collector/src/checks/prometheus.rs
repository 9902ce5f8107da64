//! `[Prometheus]` / `[Prometheus:NAME]`: scrapes a `/metrics` page in the text exposition format
//! 0.0.4 (<https://prometheus.io/docs/instrumenting/exposition_formats/>) and ships its samples.
//!
//! - The name is kept as the page spells it, labels become tags, and every point gets the `type`
//!   tag `prometheus` and an `instance` tag naming the section (`NAME`, or `Prometheus` for the bare
//!   section). A page label that would clash with a tag PuyPuy sets (`host`, `type`, `cluster`,
//!   `group`, `location`, `instance`) is renamed `exported_<label>`, as Prometheus does.
//! - Counters (`# TYPE … counter`, and untyped samples named `…_total`) are sent as per-second
//!   rates (the shipper's rate rules: nothing for the first scrape or after a reset). Gauges,
//!   histograms and summaries are sent as the page gives them: `_bucket{le=…}`, `_sum`, `_count`
//!   and the quantiles, each its own series (the cumulative values, from which any backend can
//!   compute rates or quantiles).
//! - Values are always floats (InfluxDB refuses a field whose type changes). NaN and ±Inf, which no
//!   backend stores, are left out. A sample's own timestamp (ms) is used when it has one.
//! - `include` / `exclude`: comma-separated name globs (`*`, `?`); a sample is kept when it matches
//!   an `include` (or none is given) and no `exclude`.
//! - A malformed line is skipped and counted; each scrape also sends `puypuy_scrape_samples`,
//!   `puypuy_scrape_malformed_lines` and `puypuy_scrape_duration_seconds` with the same tags.
//!
//! [`parse`] is pure; the check runs in a thread of its own each period like every service check,
//! so a slow target never delays the others.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use puypuy_common::services::ServiceConfig;
use puypuy_common::{Point, Style, Value};

use super::service::ServiceCheck;

/// What a `# TYPE` line says of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            "summary" => Some(Kind::Summary),
            "untyped" | "unknown" => Some(Kind::Untyped),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
    /// The family's type; `Untyped` when no `# TYPE` line covers the sample.
    pub kind: Kind,
}

#[derive(Debug, Default, PartialEq)]
pub struct Page {
    pub samples: Vec<Sample>,
    /// Lines that could not be read: skipped.
    pub malformed: usize,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// Reads a metric name at the start of `s`: the name and the rest.
fn take_name(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if !b.first().is_some_and(|&c| is_name_start(c)) {
        return None;
    }
    let end = b.iter().position(|&c| !is_name_char(c)).unwrap_or(b.len());
    Some((&s[..end], &s[end..]))
}

fn take_label_name(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if !b.first().is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_') {
        return None;
    }
    let end = b.iter().position(|&c| !(c.is_ascii_alphanumeric() || c == b'_')).unwrap_or(b.len());
    Some((&s[..end], &s[end..]))
}

fn skip_blanks(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// Reads `{name="value",…}` (a trailing comma allowed) after the `{`.
fn take_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels: Vec<(String, String)> = Vec::new();
    loop {
        s = skip_blanks(s);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (name, rest) = take_label_name(s)?;
        let rest = skip_blanks(rest).strip_prefix('=')?;
        let rest = skip_blanks(rest).strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()? {
                    (_, '\\') => value.push('\\'),
                    (_, '"') => value.push('"'),
                    (_, 'n') => value.push('\n'),
                    _ => return None,
                },
                (_, c) => value.push(c),
            }
        };
        if labels.iter().any(|(k, _)| k == name) {
            return None;
        }
        labels.push((name.to_string(), value));
        s = skip_blanks(&rest[end + 1..]);
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// A value as Go's ParseFloat reads the page's: decimal and exponent notation, `NaN`, `+Inf`, `-Inf`.
fn parse_value(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    match lower.trim_start_matches(['+', '-']) {
        "nan" | "inf" | "infinity" => {}
        t if t.starts_with(|c: char| c.is_ascii_digit() || c == '.') => {}
        _ => return None,
    }
    s.parse::<f64>().ok()
}

/// A sample line's name, labels, value and timestamp (ms).
type SampleLine = (String, Vec<(String, String)>, f64, Option<i64>);

fn parse_sample(line: &str) -> Option<SampleLine> {
    let (name, rest) = take_name(line)?;
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(after) => take_labels(after)?,
        None => (Vec::new(), rest),
    };
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = parse_value(fields.next()?)?;
    let timestamp = match fields.next() {
        Some(t) => Some(t.parse::<i64>().ok()?),
        None => None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some((name.to_string(), labels, value, timestamp))
}

/// The family a sample belongs to, given the `# TYPE` lines seen: `x_bucket` of histogram `x`…
fn kind_of(name: &str, types: &HashMap<String, Kind>) -> Kind {
    if let Some(k) = types.get(name) {
        return *k;
    }
    for (suffix, kinds) in [
        ("_bucket", &[Kind::Histogram][..]),
        ("_sum", &[Kind::Histogram, Kind::Summary][..]),
        ("_count", &[Kind::Histogram, Kind::Summary][..]),
        ("_total", &[Kind::Counter][..]),
    ] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(k) = types.get(base).filter(|k| kinds.contains(k)) {
                return *k;
            }
        }
    }
    Kind::Untyped
}

/// Reads a page. Blank lines and comments other than `# TYPE` are ignored; a line that is not a
/// sample, or a `# TYPE` line naming no known type, is skipped and counted in `malformed`.
pub fn parse(text: &str) -> Page {
    let mut page = Page::default();
    let mut types: HashMap<String, Kind> = HashMap::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = skip_blanks(line);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split([' ', '\t']).filter(|w| !w.is_empty());
            if words.next() == Some("TYPE") {
                match (words.next().and_then(take_name), words.next().and_then(Kind::parse), words.next()) {
                    (Some((name, "")), Some(kind), None) => {
                        types.insert(name.to_string(), kind);
                    }
                    _ => page.malformed += 1,
                }
            }
            continue;
        }
        match parse_sample(line) {
            Some((name, labels, value, timestamp_ms)) => {
                let kind = kind_of(&name, &types);
                page.samples.push(Sample { name, labels, value, timestamp_ms, kind });
            }
            None => page.malformed += 1,
        }
    }
    page
}

/// `*` any run of characters, `?` one character, everything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Tags PuyPuy sets itself; a page label of one of these names is sent as `exported_<name>`.
const OWN_TAGS: [&str; 6] = ["host", "type", "cluster", "group", "location", "instance"];

/// The points of one scrape: filtered, tagged, counters marked for rates.
pub fn to_points(page: &Page, config: &ServiceConfig, instance: &str, timestamp: u64) -> Vec<Point> {
    let keep = |name: &str| {
        (config.include.is_empty() || config.include.iter().any(|g| glob_match(g, name)))
            && !config.exclude.iter().any(|g| glob_match(g, name))
    };
    let mut points = Vec::with_capacity(page.samples.len());
    for s in &page.samples {
        if !s.value.is_finite() || !keep(&s.name) {
            continue;
        }
        let rate = s.kind == Kind::Counter || (s.kind == Kind::Untyped && s.name.ends_with("_total"));
        let ts = s.timestamp_ms.map(|ms| (ms.max(0) / 1000) as u64).unwrap_or(timestamp);
        let mut p = Point::new(s.name.clone(), ts, Value::Float(s.value), "prometheus")
            .with_style(if rate { Style::Rate } else { Style::Stack })
            .with_tag("instance", instance);
        for (k, v) in &s.labels {
            if v.is_empty() {
                continue;
            }
            if OWN_TAGS.contains(&k.as_str()) {
                p = p.with_tag(format!("exported_{k}"), v.clone());
            } else {
                p = p.with_tag(k.clone(), v.clone());
            }
        }
        points.push(p);
    }
    points
}

/// The largest page read (a node exporter's is ~100 KiB; this guards against a runaway target).
const MAX_PAGE: u64 = 64 * 1024 * 1024;

pub struct PrometheusCheck {
    config: ServiceConfig,
    instance: String,
    agent: Result<ureq::Agent, String>,
}

impl PrometheusCheck {
    pub fn new(config: ServiceConfig) -> PrometheusCheck {
        let instance = config.instance.clone().unwrap_or_else(|| config.section.clone());
        let agent = make_agent(&config);
        PrometheusCheck { config, instance, agent }
    }
}

fn make_agent(config: &ServiceConfig) -> Result<ureq::Agent, String> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &config.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("[{}] ca_file: cannot read {}: {e}", config.section, ca.display()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(format!("[{}] ca_file: {} is not valid PEM: {e}", config.section, ca.display())),
            }
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    if config.insecure {
        tls = tls.disable_verification(true);
    }
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(config.timeout))
        .http_status_as_error(false)
        .tls_config(tls.build())
        .build()
        .into())
}

impl ServiceCheck for PrometheusCheck {
    fn collect(&mut self, timestamp: u64) -> Result<Vec<Point>, String> {
        let agent = self.agent.as_ref().map_err(Clone::clone)?;
        let c = &self.config;
        let started = Instant::now();
        let mut request = agent.get(&c.url).header("Accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1");
        if let Some(token) = &c.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        } else if c.auth {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.user, c.pass));
            request = request.header("Authorization", &format!("Basic {basic}"));
        }
        let mut response = request.call().map_err(|e| format!("{}: {e}", c.url))?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            401 | 403 => {
                return Err(format!("{} answered {status}: check [{}] auth, user, pass or token", c.url, c.section))
            }
            _ => return Err(format!("{} answered {status}", c.url)),
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_PAGE)
            .read_to_vec()
            .map_err(|e| format!("{}: reading the page: {e}", c.url))?;
        let page = parse(&String::from_utf8_lossy(&body));
        let elapsed = started.elapsed();
        if page.malformed > 0 {
            log::debug!("{}: {} malformed lines skipped", c.url, page.malformed);
        }
        let mut points = to_points(&page, c, &self.instance, timestamp);
        let own = |name: &str, value: f64| {
            Point::new(name, timestamp, Value::Float(value), "prometheus").with_tag("instance", self.instance.clone())
        };
        points.push(own("puypuy_scrape_samples", page.samples.len() as f64));
        points.push(own("puypuy_scrape_malformed_lines", page.malformed as f64));
        points.push(own("puypuy_scrape_duration_seconds", round_ms(elapsed)));
        Ok(points)
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64, ts: Option<i64>, kind: Kind) -> Sample {
        Sample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            value,
            timestamp_ms: ts,
            kind,
        }
    }

    #[test]
    fn reads_types_escapes_special_values_and_timestamps() {
        let page = parse(concat!(
            "# HELP http_requests_total The total.\n",
            "# TYPE http_requests_total counter\n",
            "http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n",
            "msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n",
            "metric_without_timestamp_and_labels 12.47\n",
            "something_weird{problem=\"division by zero\"} +Inf -3982045\n",
            "# TYPE rpc_duration_seconds summary\n",
            "rpc_duration_seconds{quantile=\"0.5\",} NaN\n",
            "rpc_duration_seconds_sum 1.7560473e+07\r\n",
            "\n",
            "  # a comment\n",
            "# TYPE h histogram\n",
            "h_bucket{le=\"+Inf\"} 3\n",
            "h_count\t3\n",
        ));
        assert_eq!(page.malformed, 0);
        let s = &page.samples;
        assert_eq!(s.len(), 8);
        assert_eq!(
            s[0],
            sample(
                "http_requests_total",
                &[("method", "post"), ("code", "200")],
                1027.0,
                Some(1395066363000),
                Kind::Counter
            )
        );
        assert_eq!(s[1].labels[0].1, "C:\\DIR\\FILE.TXT");
        assert_eq!(s[1].labels[1].1, "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(s[1].value, 1.458255915e9);
        assert_eq!(s[2], sample("metric_without_timestamp_and_labels", &[], 12.47, None, Kind::Untyped));
        assert_eq!((s[3].value, s[3].timestamp_ms), (f64::INFINITY, Some(-3982045)));
        assert!(s[4].value.is_nan() && s[4].kind == Kind::Summary);
        assert_eq!((s[5].kind, s[5].value), (Kind::Summary, 1.7560473e7));
        assert_eq!((s[6].kind, s[7].kind), (Kind::Histogram, Kind::Histogram));
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let page = parse(concat!(
            "good 1\n",
            "no_value\n",
            "bad{label=\"unterminated} 1\n",
            "bad{a=\"1\",a=\"2\"} 1\n",
            "bad{a=\"\\x\"} 1\n",
            "bad 1 notatimestamp\n",
            "bad 1 2 3\n",
            "1bad 1\n",
            "bad{a=\"1\"}1\n",
            "bad 0x10\n",
            "# TYPE x nonsense\n",
            "also_good{a=\"1\"} -0.5e-3\n",
        ));
        assert_eq!(page.samples.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["good", "also_good"]);
        assert_eq!(page.malformed, 10);
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_match("node_cpu_*", "node_cpu_seconds_total"));
        assert!(glob_match("*_total", "a_total"));
        assert!(glob_match("go_?c_*", "go_gc_duration_seconds"));
        assert!(!glob_match("node_cpu", "node_cpu_seconds_total"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
    }

    fn config(include: &[&str], exclude: &[&str]) -> ServiceConfig {
        let text = format!(
            "[SelfConfig]\ntmpdir = /tmp\n[TSDB]\ntsdtype = File\npath = /tmp/x\n[Prometheus:node]\nurl = http://127.0.0.1:9100/metrics\ninclude = {}\nexclude = {}\n",
            include.join(","),
            exclude.join(",")
        );
        let c =
            puypuy_common::Config::from_text(std::path::Path::new("/tmp/c.ini"), std::path::Path::new("/tmp"), &text)
                .expect("config");
        c.services.into_iter().next().expect("the [Prometheus:node] section")
    }

    #[test]
    fn counters_become_rates_labels_tags_and_clashing_labels_are_exported() {
        let page = parse(concat!(
            "# TYPE c counter\nc{host=\"x\",mode=\"idle\",empty=\"\"} 5\n",
            "untyped_total 1\n",
            "g 2.5 1700000001500\n",
            "nan_gauge NaN\n",
        ));
        let points = to_points(&page, &config(&[], &[]), "node", 1700000000);
        assert_eq!(points.len(), 3);
        let c = &points[0];
        assert_eq!((c.style, c.value, c.check_type.as_ref()), (Style::Rate, Value::Float(5.0), "prometheus"));
        assert_eq!(
            c.tags,
            vec![
                ("instance".into(), "node".into()),
                ("exported_host".into(), "x".into()),
                ("mode".into(), "idle".into())
            ]
        );
        assert_eq!(points[1].style, Style::Rate);
        assert_eq!((points[2].style, points[2].timestamp), (Style::Stack, 1700000001));
    }

    #[test]
    fn include_and_exclude_filter_by_name() {
        let page = parse("node_cpu_seconds_total 1\nnode_load1 2\ngo_goroutines 3\n");
        let names = |inc: &[&str], exc: &[&str]| -> Vec<String> {
            to_points(&page, &config(inc, exc), "n", 1).into_iter().map(|p| p.name).collect()
        };
        assert_eq!(names(&["node_*"], &[]), ["node_cpu_seconds_total", "node_load1"]);
        assert_eq!(names(&["node_*"], &["*_total"]), ["node_load1"]);
        assert_eq!(names(&[], &["go_*"]), ["node_cpu_seconds_total", "node_load1"]);
    }

    /// A sample in the exposition format, with the escapes a label value needs.
    fn format_sample(s: &Sample) -> String {
        let mut line = s.name.clone();
        if !s.labels.is_empty() {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
                .collect();
            line.push_str(&format!("{{{}}}", labels.join(",")));
        }
        line.push_str(&format!(" {:?}", s.value));
        if let Some(t) = s.timestamp_ms {
            line.push_str(&format!(" {t}"));
        }
        line
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_every_line_is_a_sample_or_counted(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)
        ) {
            let text = String::from_utf8_lossy(&bytes);
            let page = parse(&text);
            let lines = text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).trim_start_matches([' ', '\t']))
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count();
            let type_lines = text.split('\n').filter(|l| l.trim_start_matches([' ', '\t']).starts_with('#')).count();
            proptest::prop_assert!(page.samples.len() + page.malformed <= lines + type_lines);
            proptest::prop_assert!(page.samples.len() + page.malformed >= lines);
        }

        #[test]
        fn formatted_samples_read_back_equal(
            samples in proptest::collection::vec(
                (
                    "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
                    proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,6}", "(?s).{0,8}", 0..4),
                    proptest::num::f64::NORMAL | proptest::num::f64::ZERO,
                    proptest::option::of(proptest::num::i64::ANY),
                ),
                0..12,
            )
        ) {
            let samples: Vec<Sample> = samples
                .into_iter()
                .map(|(name, labels, value, ts)| Sample {
                    name,
                    labels: labels.into_iter().collect(),
                    value,
                    timestamp_ms: ts,
                    kind: Kind::Untyped,
                })
                .collect();
            let text: String = samples.iter().map(|s| format_sample(s) + "\n").collect();
            let page = parse(&text);
            proptest::prop_assert_eq!(page.malformed, 0);
            proptest::prop_assert_eq!(page.samples, samples);
        }
    }
}
