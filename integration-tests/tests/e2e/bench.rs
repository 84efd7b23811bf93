//! A smoke run of the fleet benchmark, so it cannot rot. No thresholds: the
//! figures are for the issue notes, measured in release builds.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Proc, TempDir, bin, wait_for_or_report};

#[test]
fn the_fleet_benchmark_runs_and_prints_json_figures() {
    let dir = TempDir::new("fleet-bench");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = Command::new(bin("fleet-bench"))
        .arg("--smoke")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .expect("start fleet-bench");
    // Killed when the test ends, however it ends.
    let mut bench = Proc { child, name: "fleet-bench".into(), log: err_path.clone() };
    // Only keeps a regression from hanging the test suite.
    let status = wait_for_or_report(
        "fleet-bench --smoke to finish",
        Duration::from_secs(180),
        || bench.child.try_wait().expect("wait for fleet-bench"),
        || std::fs::read_to_string(&err_path).unwrap_or_default(),
    );
    let stdout = std::fs::read_to_string(&out_path).expect("read stdout");
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "fleet-bench --smoke failed ({status}):\n{stderr}");
    let figures: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    for metric in ["run_to_first_step_ms_p50", "run_to_first_step_ms_p99", "trivial_jobs_per_second"] {
        let f = figures.iter().find(|f| f["metric"] == metric).unwrap_or_else(|| panic!("{metric} missing: {stdout}"));
        assert!(f["value"].as_f64().is_some_and(|v| v > 0.0), "{f}");
    }
}
