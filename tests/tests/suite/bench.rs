//! The benchmark binary keeps working: every part at a tiny size (`--quick`), the report written.
//! Its numbers are not judged here (performance is measured by `tests/bench.sh`, not by tests).

use std::process::Command;

use puypuy_tests::bin;

#[test]
fn bench_runs_at_a_tiny_size_and_writes_its_report() {
    let out = tempfile::tempdir().expect("tempdir");
    let status = Command::new(bin("puypuy-bench")).arg("--quick").arg("--out").arg(out.path()).output().expect("bench");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let md = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    for part in [
        "1. Host footprint",
        "2. Shipper throughput",
        "3. Relay",
        "4. script-runner",
        "5. jmx-bridge",
        "6. End-to-end latency",
    ] {
        assert!(md.contains(part), "{part} missing from the report:\n{md}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).expect("json"))
            .expect("valid json");
    assert!(json["throughput"].as_array().is_some_and(|rows| rows.len() == 3), "{json}");
    assert!(json["relay"]["puypuy"]["delivered"].as_u64().is_some_and(|d| d > 0), "{json}");
}
