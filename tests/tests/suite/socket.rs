//! Garbage on the shipper's socket closes that connection only; a well-behaved producer on
//! another connection keeps delivering. A second shipper on the same socket refuses to start; a
//! socket left by a killed shipper is replaced.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use puypuy_common::client::SenderClient;
use puypuy_common::Point;
use puypuy_tests::{wait_for, Agent};

fn file_agent() -> Agent {
    Agent::new("", "[TSDB]\ntsdtype: File\npath: out/metrics.txt\n")
}

/// Reads until the shipper closes the connection; true when it did within the timeout.
fn closed_by_peer(mut conn: UnixStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 64];
    matches!(conn.read(&mut buf), Ok(0))
        || matches!(conn.read(&mut buf), Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn garbage_closes_only_its_own_connection() {
    let agent = file_agent();
    std::fs::create_dir_all(agent.path("out")).expect("out dir");
    let mut shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "good", 100);

    let mut random = UnixStream::connect(agent.socket()).expect("connect");
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let _ = random.write_all(&junk);
    // Junk that happens to start with a plausible length then ends: the frame is cut short.
    let _ = random.shutdown(std::net::Shutdown::Write);
    let mut huge = UnixStream::connect(agent.socket()).expect("connect");
    huge.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).expect("write");
    let mut version = UnixStream::connect(agent.socket()).expect("connect");
    let mut bad_version = puypuy_common::frame::Frame::new("x", 1, vec![]).to_bytes();
    bad_version[4] = 99;
    version.write_all(&bad_version).expect("write");
    let mut truncated = UnixStream::connect(agent.socket()).expect("connect");
    let frame = puypuy_common::frame::Frame::new("x", 1, vec![Point::int("cut", 1, 1, "t")]).to_bytes();
    truncated.write_all(&frame[..frame.len() - 3]).expect("write");
    truncated.shutdown(std::net::Shutdown::Write).expect("shutdown");

    for (name, conn) in
        [("random bytes", random), ("4 GiB claim", huge), ("unknown version", version), ("truncated frame", truncated)]
    {
        assert!(closed_by_peer(conn), "the shipper kept the {name} connection open");
    }
    for i in 0..5u64 {
        client.send(vec![Point::int("good_point", 1_700_000_000 + i, i as i64, "test")]);
    }
    assert!(client.flush(Duration::from_secs(10)), "the good producer was not acknowledged");
    let out = wait_for(Duration::from_secs(5), "five good points in the file", || {
        let text = std::fs::read_to_string(agent.path("out/metrics.txt")).unwrap_or_default();
        (text.matches("good_point,").count() == 5).then_some(text)
    });
    assert!(!out.contains("cut,"), "the truncated frame's point was delivered");
    assert!(shipper.is_running());
    let log = agent.log();
    assert!(log.contains("over the 16777216-byte limit; closing this connection"), "{log}");
    assert!(log.contains("unsupported protocol version 99"), "{log}");
    assert!(log.contains("pid "), "peer not named: {log}");
}

#[test]
fn second_shipper_refuses_and_stale_socket_is_replaced() {
    let agent = file_agent();
    let mut first = agent.start_shipper();
    let out = agent.command("puypuy-shipper").stderr(std::process::Stdio::piped()).output().expect("second shipper");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another shipper is already running on"), "{err}");
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5)).expect("killed");
    assert!(agent.socket().exists(), "the killed shipper's socket should still be there");
    let _again = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "good", 10);
    client.send(vec![Point::int("after_restart", 1_700_000_000, 1, "test")]);
    assert!(client.flush(Duration::from_secs(10)));
}

#[test]
fn sigterm_delivers_what_is_held_and_exits_zero() {
    let agent = Agent::new(
        "batch_ms: 60000\nbatch_points: 100000\nself_metrics: no",
        "[TSDB]\ntsdtype: File\npath: metrics.txt\n",
    );
    let mut shipper = agent.start_shipper();
    let client = SenderClient::start(&agent.socket(), "test", 10);
    client.send(vec![Point::int("held", 1_700_000_000, 1, "test")]);
    // The batch waits for batch_ms (a minute); SIGTERM must flush it at once. The signal comes once
    // the shipper holds the point (self-metrics are off: the one point it took in is ours).
    let pid = shipper.pid();
    wait_for(Duration::from_secs(10), "the shipper to take in the point", || {
        (agent.status_metric(pid, "puypuy_shipper_points_received")? == 1).then_some(())
    });
    let before = std::fs::read_to_string(agent.path("metrics.txt")).unwrap_or_default();
    assert!(!before.contains("held,"), "written before SIGTERM, so batch_ms did not hold it: {before}");
    shipper.signal(nix::sys::signal::Signal::SIGTERM);
    let status = shipper.wait_exit(Duration::from_secs(10)).expect("shipper exited");
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(agent.path("metrics.txt")).unwrap_or_default();
    assert!(text.lines().any(|l| l.starts_with("held,")), "{text}");
}

/// Names of the points of each request, in order (InfluxDB line protocol, one point per line).
fn names_per_request(capture: &puypuy_tests::prometheus::Capture) -> Vec<Vec<String>> {
    capture
        .requests()
        .iter()
        .map(|r| {
            String::from_utf8_lossy(&r.body)
                .lines()
                .map(|l| l.split(',').next().unwrap_or_default().to_string())
                .collect()
        })
        .collect()
}

/// `batch_ms`: one producer alone waits for nothing three times, then its frames go at once; two
/// producers sending 100 ms apart (within `batch_ms`) are then split once, which brings the wait
/// back, and share a request every cycle after. Each request is checked point by point.
#[test]
fn a_lone_producer_stops_waiting_and_producers_sending_together_share_requests() {
    let capture = puypuy_tests::prometheus::Capture::start();
    let agent = Agent::new(
        "batch_ms: 400\nself_metrics: no",
        &format!("[TSDB]\ntsdtype = InfluxDB\naddress = {}\ndatabase = t\ngzip = False\n", capture.url()),
    );
    let _shipper = agent.start_shipper();
    let a = SenderClient::start(&agent.socket(), "a", 100);
    let b = SenderClient::start(&agent.socket(), "b", 100);
    let timestamp = 1_700_000_000;
    let arrived = |n: usize| {
        wait_for(Duration::from_secs(20), &format!("{n} requests"), || (capture.requests().len() >= n).then_some(()))
    };
    // Cycles 500 ms apart, longer than batch_ms: nothing waiting could have joined.
    for i in 0..4u64 {
        a.send(vec![Point::int("linger_a", timestamp + i, i as i64, "t")]);
        arrived(i as usize + 1);
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in 4..10u64 {
        a.send(vec![Point::int("linger_a", timestamp + i, i as i64, "t")]);
        std::thread::sleep(Duration::from_millis(100));
        b.send(vec![Point::int("linger_b", timestamp + i, i as i64, "t")]);
        wait_for(Duration::from_secs(20), "both points", || {
            let names: Vec<String> = names_per_request(&capture).concat();
            (names.iter().filter(|n| *n == "linger_b").count() == (i - 3) as usize).then_some(())
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    let (alone, together) = (vec!["linger_a".to_string()], vec!["linger_a".to_string(), "linger_b".to_string()]);
    let mut expected = vec![alone.clone(); 4];
    // The first cycle of the two: a's frame went at once, b's came 100 ms later and waited.
    expected.push(alone);
    expected.push(vec!["linger_b".to_string()]);
    expected.extend(std::iter::repeat_n(together, 5));
    assert_eq!(names_per_request(&capture), expected);
}
