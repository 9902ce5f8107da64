//! HTTPS backends: a real TLS endpoint (nginx with a certificate from a test CA, in front of a real
//! InfluxDB). With `ca_file` the points arrive; without it the certificate is refused with a clear
//! error and nothing is lost; `insecure` works and is warned about.

use std::time::Duration;

use puypuy_common::client::SenderClient;
use puypuy_common::Point;
use puypuy_tests::services::tls_proxy;
use puypuy_tests::{wait_for, Agent, Influx};

#[test]
fn https_backend_with_a_private_ca_a_refused_certificate_and_insecure() {
    let influx = Influx::start(false);
    let (proxy, ca) = tls_proxy(influx.port);
    let tsdb = |extra: &str| {
        format!(
            "[TSDB]\ntsdtype = InfluxDB\naddress = https://127.0.0.1:{}\ndatabase = {}\n{extra}\n",
            proxy.port,
            Influx::DB
        )
    };

    // No ca_file: the test CA is unknown, the certificate is refused, points wait (spooled).
    let refused = Agent::new("self_metrics: no", &tsdb(""));
    let _s = refused.start_shipper();
    let client = SenderClient::start(&refused.socket(), "test", 10);
    client.send(vec![Point::int("tls_refused", 1_700_000_000, 1, "test")]);
    assert!(client.flush(Duration::from_secs(15)), "point neither sent nor spooled");
    let log = wait_for(Duration::from_secs(10), "the certificate error", || {
        let l = refused.log();
        l.to_lowercase().contains("certificate").then_some(l)
    });
    assert!(log.contains("spooling and retrying"), "{log}");
    assert!(influx.points("tls_refused").is_empty());

    // With the CA: delivered.
    let trusted = Agent::new("self_metrics: no", &tsdb(&format!("ca_file = {}", ca.display())));
    let _s2 = trusted.start_shipper();
    let client = SenderClient::start(&trusted.socket(), "test", 10);
    client.send(vec![Point::int("tls_trusted", 1_700_000_000, 2, "test")]);
    assert!(client.flush(Duration::from_secs(15)));
    let p = wait_for(Duration::from_secs(10), "tls_trusted", || influx.points("tls_trusted").into_iter().next());
    assert_eq!(p.1.as_i64(), Some(2));

    // insecure: delivered, with a warning.
    let insecure = Agent::new("self_metrics: no", &tsdb("insecure = True"));
    let _s3 = insecure.start_shipper();
    let client = SenderClient::start(&insecure.socket(), "test", 10);
    client.send(vec![Point::int("tls_insecure", 1_700_000_000, 3, "test")]);
    assert!(client.flush(Duration::from_secs(15)));
    wait_for(Duration::from_secs(10), "tls_insecure", || influx.points("tls_insecure").into_iter().next());
    assert!(insecure.log().contains("certificate verification is OFF"), "{}", insecure.log());
}
