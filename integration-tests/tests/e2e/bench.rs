//! A smoke run of the fleet benchmark, so it cannot rot. No thresholds: the
//! figures are for the issue notes, measured in release builds.

use crate::harness::{bin, text};

#[test]
fn the_fleet_benchmark_runs_and_prints_json_figures() {
    let out = std::process::Command::new(bin("fleet-bench")).arg("--smoke").output().expect("run fleet-bench");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let figures: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    for metric in ["run_to_first_step_ms_p50", "run_to_first_step_ms_p99", "trivial_jobs_per_second"] {
        let f = figures.iter().find(|f| f["metric"] == metric).unwrap_or_else(|| panic!("{metric} missing: {stdout}"));
        assert!(f["value"].as_f64().is_some_and(|v| v > 0.0), "{f}");
    }
}
