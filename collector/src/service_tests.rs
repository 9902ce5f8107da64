//! The service parsers against status pages recorded from real servers (`testdata/services/*_0`
//! and `*_1`, the second after some load), through the shipper's rate state as in production
//! (the two readings are taken to be 10 s apart).

use std::path::PathBuf;

use puypuy_common::services::ServiceKind;
use puypuy_shipper::rate::RateState;

use crate::checks::service::Metrics;
use crate::checks::{apache, haproxy, memcached, nginx, phpfpm, redis};

fn read(name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/services").join(name)).unwrap()
}

/// Parses both readings and returns the second one's lines as the shipper would send them.
fn two_readings(
    kind: ServiceKind,
    file: &str,
    ext: &str,
    parse: impl Fn(&str, &mut Metrics) -> Result<(), String>,
) -> Vec<String> {
    let mut rates = RateState::new();
    let mut lines = Vec::new();
    for (i, t) in [(0, 1000), (1, 1010)] {
        let mut m = Metrics::new(kind, Some("main".into()), t);
        parse(&read(&format!("{file}_{i}.{ext}")), &mut m).unwrap();
        lines = m.points.into_iter().filter_map(|p| rates.apply(p)).map(|p| p.dry_run_line()).collect();
    }
    lines
}

fn has(lines: &[String], line: &str) {
    assert!(lines.iter().any(|l| l == line), "{line:?} not in:\n{}", lines.join("\n"));
}

#[test]
fn nginx_stub_status() {
    let l = two_readings(ServiceKind::Nginx, "nginx", "txt", nginx::parse);
    has(&l, "nginx_requests 1010 2.2 type=nginx instance=main");
    has(&l, "nginx_accept 1010 2.2 type=nginx instance=main");
    has(&l, "nginx_connections 1010 3 type=nginx instance=main");
    has(&l, "nginx_waiting 1010 2 type=nginx instance=main");
    assert_eq!(l.len(), 7);
}

#[test]
fn apache_mod_status() {
    let l = two_readings(ServiceKind::Apache, "apache", "txt", apache::parse);
    has(&l, "apache_totalaccesses 1010 2.1 type=apache instance=main");
    has(&l, "apache_totalkbytes 1010 1 type=apache instance=main");
    has(&l, "apache_reqpersec 1010 2.44444 type=apache instance=main");
    has(&l, "apache_busyworkers 1010 1 type=apache instance=main");
    has(&l, "apache_idleworkers 1010 74 type=apache instance=main");
}

#[test]
fn phpfpm_json_status() {
    let l = two_readings(ServiceKind::PhpFpm, "phpfpm", "json", phpfpm::parse);
    has(&l, "phpfpm_accepted_conn 1010 0.1 type=phpfpm instance=main");
    has(&l, "phpfpm_total_processes 1010 2 type=phpfpm instance=main");
    has(&l, "phpfpm_listen_queue_len 1010 4096 type=phpfpm instance=main");
}

#[test]
fn redis_info_with_keyspace() {
    let l = two_readings(ServiceKind::Redis, "redis", "txt", |t, m| redis::parse(&redis::unwrap_bulk(t), m));
    has(&l, "redis_total_commands_processed 1010 5.1 type=redis instance=main");
    has(&l, "redis_used_memory 1010 970440 type=redis instance=main");
    has(&l, "redis_keys 1010 50 type=redis instance=main db=db0");
    has(&l, "redis_keyspace_hits 1010 0 type=redis instance=main");
}

#[test]
fn memcached_stats() {
    let l = two_readings(ServiceKind::Memcached, "memcached", "txt", memcached::parse);
    has(&l, "memcached_cmd_set 1010 3 type=memcached instance=main");
    has(&l, "memcached_curr_items 1010 30 type=memcached instance=main");
    has(&l, "memcached_total_connections 1010 0.2 type=memcached instance=main");
}

#[test]
fn haproxy_csv_with_the_upstream_filter() {
    let all = two_readings(ServiceKind::HaProxy, "haproxy", "csv", |t, m| haproxy::parse(t, &[], m));
    has(&all, "haproxy_sessions_total_app1 1010 2 type=haproxy instance=main proxy=app");
    has(&all, "haproxy_bytes_in_app1 1010 164 type=haproxy instance=main proxy=app");
    has(&all, "haproxy_connrate_frontend 1010 20 type=haproxy instance=main proxy=web");
    has(&all, "haproxy_sessions_frontend 1010 1 type=haproxy instance=main proxy=stats");
    let app = two_readings(ServiceKind::HaProxy, "haproxy", "csv", |t, m| haproxy::parse(t, &["app".to_string()], m));
    assert!(app.iter().all(|l| l.contains("proxy=app")), "{app:?}");
    has(&app, "haproxy_sessions_app1 1010 0 type=haproxy instance=main proxy=app");
}

#[test]
fn garbage_pages_are_errors_not_panics() {
    let mut m = Metrics::new(ServiceKind::Nginx, None, 1);
    assert!(nginx::parse("<html>hello</html>", &mut m).is_err());
    assert!(apache::parse("nothing", &mut m).is_err());
    assert!(phpfpm::parse("{", &mut m).is_err());
    assert!(redis::parse("", &mut m).is_err());
    assert!(memcached::parse("ERROR", &mut m).is_err());
    assert!(haproxy::parse("pxname", &[], &mut m).is_err());
    assert!(m.points.is_empty());
}
