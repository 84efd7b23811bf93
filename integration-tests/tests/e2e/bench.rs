//! A smoke run of the fleet benchmark, so it cannot rot. No thresholds: the
//! figures are for the issue notes, measured in release builds.

use std::ffi::OsStr;
use std::time::Duration;

use crate::harness::{TempDir, run_to_end};

#[test]
fn the_fleet_benchmark_runs_and_prints_json_figures() {
    let dir = TempDir::new("fleet-bench");
    // A deadline only keeps a regression from hanging the suite.
    let end = run_to_end(dir.path(), "fleet-bench", &[OsStr::new("--smoke")], Duration::from_secs(180));
    let (stdout, stderr) = (end.stdout, end.stderr);
    assert!(end.status.success(), "fleet-bench --smoke failed ({}):\n{stderr}", end.status);
    let figures: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    for metric in [
        "run_to_first_step_ms_p50",
        "run_to_first_step_ms_p99",
        "trivial_jobs_per_second",
        "spawn_limit_per_second",
        "trivial_jobs_share_of_spawn_limit_percent",
        "cache_affinity_off_makespan_s",
        "cache_affinity_on_makespan_s",
        "dag_makespan_fifo_s",
        "dag_makespan_critical_path_s",
    ] {
        let f = figures.iter().find(|f| f["metric"] == metric).unwrap_or_else(|| panic!("{metric} missing: {stdout}"));
        assert!(f["value"].as_f64().is_some_and(|v| v > 0.0), "{f}");
    }
}

#[test]
fn the_fleet_benchmark_runs_one_mode_and_refuses_an_unknown_one() {
    let dir = TempDir::new("fleet-bench-mode");
    let args = ["--smoke", "--store", "embedded", "--mode", "throughput", "--jobs", "12"].map(OsStr::new);
    let end = run_to_end(dir.path(), "fleet-bench", &args, Duration::from_secs(120));
    assert!(end.status.success(), "fleet-bench --mode throughput failed ({}):\n{}", end.status, end.stderr);
    assert_eq!(
        end.field("metric"),
        ["\"spawn_limit_per_second\"", "\"trivial_jobs_per_second\"", "\"trivial_jobs_share_of_spawn_limit_percent\""],
        "{}",
        end.stdout
    );
    let end =
        run_to_end(dir.path(), "fleet-bench", &[OsStr::new("--mode"), OsStr::new("speed")], Duration::from_secs(30));
    assert_eq!(end.status.code(), Some(2), "{}", end.stderr);
    assert!(end.stderr.contains("--mode \"speed\": use latency, throughput"), "{}", end.stderr);
    // --no-fsync measures the embedded store's throughput only.
    let end = run_to_end(dir.path(), "fleet-bench", &[OsStr::new("--no-fsync")], Duration::from_secs(30));
    assert_eq!(end.status.code(), Some(2), "{}", end.stderr);
    assert!(end.stderr.contains("--no-fsync goes with --store embedded --mode throughput"), "{}", end.stderr);
    // More jobs than one pipeline may have is refused before anything runs.
    let end =
        run_to_end(dir.path(), "fleet-bench", &[OsStr::new("--jobs"), OsStr::new("5001")], Duration::from_secs(30));
    assert_eq!(end.status.code(), Some(2), "{}", end.stderr);
    assert!(end.stderr.contains("--jobs takes a whole number from 1 to 5000"), "{}", end.stderr);
    // A mistyped flag is refused before anything runs; --help prints usage.
    let end = run_to_end(dir.path(), "fleet-bench", &[OsStr::new("--job"), OsStr::new("12")], Duration::from_secs(30));
    assert_eq!(end.status.code(), Some(2), "{}", end.stderr);
    assert!(
        end.stderr.contains("unknown argument \"--job\"") && end.stderr.contains("usage: fleet-bench"),
        "{}",
        end.stderr
    );
    let end = run_to_end(dir.path(), "fleet-bench", &[OsStr::new("--help")], Duration::from_secs(30));
    assert!(end.status.success() && end.stdout.starts_with("usage: fleet-bench"), "{}", end.stdout);
}
