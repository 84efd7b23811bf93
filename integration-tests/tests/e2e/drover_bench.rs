//! A smoke run of `drover-bench` (simulated agents), so it cannot rot: every
//! figure it promises appears as a JSON line with a positive value. No
//! thresholds: the figures are for the issue notes, measured in release
//! builds.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Proc, TempDir, bin, wait_for_or_report};

/// The figures of a run on both stores; failover is measured on etcd only.
const METRICS: [&str; 12] = [
    "dispatch_latency_ms_p50",
    "dispatch_latency_ms_p99",
    "dispatch_latency_ms_max",
    "jobs_per_second",
    "coordinator_peak_rss_mib",
    "coordinator_cpu_seconds",
    "rss_per_agent_kib",
    "rss_per_finished_run_kib",
    "prune_runs_per_second",
    "coordinator_rss_after_prune_mib",
    "failover_seconds_p50",
    "failover_seconds_max",
];

#[test]
fn the_simulated_agent_benchmark_prints_every_figure_for_both_stores() {
    let dir = TempDir::new("drover-bench");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = Command::new(bin("drover-bench"))
        .arg("--smoke")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .expect("start drover-bench");
    // Killed when the test ends, however it ends.
    let mut bench = Proc { child, name: "drover-bench".into(), log: err_path.clone() };
    // The benchmark bounds every wait itself; this only keeps a regression
    // from hanging the test suite.
    let status = wait_for_or_report(
        "drover-bench --smoke to finish",
        Duration::from_secs(180),
        || bench.child.try_wait().expect("wait for drover-bench"),
        || std::fs::read_to_string(&err_path).unwrap_or_default(),
    );
    let stdout = std::fs::read_to_string(&out_path).expect("read stdout");
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "drover-bench --smoke failed ({status}):\n{stderr}");
    let figures: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect();
    for f in &figures {
        let keys: Vec<&str> = f.as_object().expect("an object").keys().map(String::as_str).collect();
        assert_eq!(keys, ["agents", "metric", "store", "unit", "value"], "{f}");
    }
    for store in ["embedded", "etcd"] {
        for metric in METRICS {
            if metric.starts_with("failover") && store != "etcd" {
                continue;
            }
            let f = figures
                .iter()
                .find(|f| f["metric"] == metric && f["store"] == store)
                .unwrap_or_else(|| panic!("{metric} on {store} missing:\n{stdout}\n{stderr}"));
            // Memory growth may be nothing at all (a coordinator on etcd
            // keeps no finished runs); every other figure is positive.
            let least = if metric == "rss_per_finished_run_kib" { 0.0 } else { f64::MIN_POSITIVE };
            assert!(f["value"].as_f64().is_some_and(|v| v >= least), "{f}");
            assert!(f["agents"].as_u64().is_some_and(|n| n > 0), "{f}");
        }
    }
}
