//! A smoke run of `drover-bench` (simulated agents), so it cannot rot: every
//! figure it promises appears as a JSON line with a positive value. No
//! thresholds: the figures are for the issue notes, measured in release
//! builds.

use std::ffi::OsStr;
use std::time::Duration;

use crate::harness::{TempDir, run_to_end};

/// The figures of a run on both stores; failover is measured on etcd only.
const METRICS: [&str; 46] = [
    "dispatch_latency_ms_p50",
    "dispatch_latency_ms_p99",
    "dispatch_latency_ms_max",
    "jobs_per_second",
    "jobs_per_second_from_first_assignment",
    "coordinator_peak_rss_mib",
    "coordinator_cpu_seconds",
    "rss_per_agent_kib",
    "coordinator_idle_cpu_percent",
    "carried_agents_percent",
    "follower_peak_rss_mib",
    "follower_rss_per_agent_kib",
    "follower_idle_cpu_percent",
    "scale_dispatch_direct_ms_p50",
    "scale_dispatch_carried_ms_p50",
    "rss_per_finished_run_kib",
    "prune_runs_per_second",
    "coordinator_rss_after_prune_mib",
    "rss_per_retained_log_mib_kib",
    "apps_first_pass_seconds",
    "app_reconcile_cpu_ms_per_interval",
    "apps_coordinator_rss_mib",
    "failover_seconds_p50",
    "failover_seconds_max",
    "enroll_seconds_total",
    "enroll_ms_p50",
    "enroll_ms_p99",
    "renewal_latency_ms_p50",
    "renewal_latency_ms_p99",
    "renewal_latency_ms_max",
    "renewals_failed",
    "renewal_sessions_lost",
    "renewal_burst_jobs_completed",
    "renewal_window_jobs_completed",
    "renewal_window_jobs_failed",
    "renewal_burst_coordinator_cpu_seconds",
    "ui_run_page_ms_p50",
    "ui_run_page_ms_p99",
    "ui_run_page_ms_max",
    "ui_graph_layout_ms_p50",
    "ui_graph_layout_ms_max",
    "ui_log_line_ms_p50",
    "ui_log_line_ms_p99",
    "ui_log_line_ms_max",
    "ui_big_log_load_ms",
    "ui_big_log_rows_in_page",
];

/// Figures that may be nothing at all: memory growth (a coordinator on etcd
/// keeps no finished runs, and no coordinator keeps log bytes in memory),
/// what failed or was lost while agents renewed (the benchmark fails when a
/// job or a renewal does), and results acknowledged during a smoke run's
/// renewal burst, which lasts a fraction of a second.
const MAY_BE_ZERO: [&str; 8] = [
    // A few idle agents for the smoke run's 2 s may not cost a clock tick.
    "coordinator_idle_cpu_percent",
    "follower_idle_cpu_percent",
    "rss_per_finished_run_kib",
    "rss_per_retained_log_mib_kib",
    "renewals_failed",
    "renewal_sessions_lost",
    "renewal_burst_jobs_completed",
    "renewal_window_jobs_failed",
];

#[test]
fn the_simulated_agent_benchmark_prints_every_figure_for_both_stores() {
    let dir = TempDir::new("drover-bench");
    // The benchmark bounds every wait itself; this deadline only keeps a
    // regression from hanging the suite.
    let end = run_to_end(dir.path(), "drover-bench", &[OsStr::new("--smoke")], Duration::from_secs(300));
    let (stdout, stderr) = (end.stdout, end.stderr);
    assert!(end.status.success(), "drover-bench --smoke failed ({}):\n{stderr}", end.status);
    // The scale mode's 200 agents ran in two child processes, the path a
    // fleet larger than one process's open-file limit takes, and all
    // connected.
    for store in ["embedded", "etcd"] {
        let said = format!("[{store}] scale: the agents run in 2 processes of this benchmark, at most 100 in each");
        assert!(stderr.contains(&said), "{said:?} missing:\n{stderr}");
        let connected = format!("[{store}] scale: 200 agents connected in");
        assert!(stderr.contains(&connected), "{connected:?} missing:\n{stderr}");
    }
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
            // Several coordinators run on etcd only: failover, and the
            // scale mode's followers.
            let etcd_only = metric.starts_with("failover")
                || metric.starts_with("follower")
                || metric == "scale_dispatch_carried_ms_p50"
                || metric == "carried_agents_percent";
            if etcd_only && store != "etcd" {
                continue;
            }
            let f = figures
                .iter()
                .find(|f| f["metric"] == metric && f["store"] == store)
                .unwrap_or_else(|| panic!("{metric} on {store} missing:\n{stdout}\n{stderr}"));
            // Every figure but those is positive.
            let least = if MAY_BE_ZERO.contains(&metric) { 0.0 } else { f64::MIN_POSITIVE };
            assert!(f["value"].as_f64().is_some_and(|v| v >= least), "{f}");
            assert!(f["agents"].as_u64().is_some_and(|n| n > 0), "{f}");
        }
    }
}

/// `--no-fsync` runs the embedded coordinator without syncing and labels its
/// figures so; it is the embedded store's, so etcd refuses it.
#[test]
fn the_simulated_agent_benchmark_runs_without_syncs_on_the_embedded_store_only() {
    let dir = TempDir::new("drover-bench-no-fsync");
    let args = ["--smoke", "--mode", "latency", "--store", "embedded", "--no-fsync"].map(OsStr::new);
    let end = run_to_end(dir.path(), "drover-bench", &args, Duration::from_secs(120));
    assert!(end.status.success(), "drover-bench --no-fsync failed ({}):\n{}", end.status, end.stderr);
    assert_eq!(end.field("store"), ["\"embedded+no-fsync\""; 3], "{}", end.stdout);
    let end = run_to_end(dir.path(), "drover-bench", &[OsStr::new("--no-fsync")], Duration::from_secs(30));
    assert_eq!(end.status.code(), Some(2), "{}", end.stderr);
    assert!(end.stderr.contains("--no-fsync is the embedded store's; use it with --store embedded"), "{}", end.stderr);
}

/// `--coordinators` sets how many coordinators the scale mode spreads the
/// fleet over on etcd (a fleet larger than three can hold under the
/// open-file limit); the embedded store has one, so it refuses the flag.
#[test]
fn the_scale_mode_spreads_the_fleet_over_the_coordinators_asked_for() {
    let dir = TempDir::new("drover-bench-coordinators");
    let args = ["--smoke", "--mode", "scale", "--store", "etcd", "--coordinators", "4", "--scale-agents", "120"]
        .map(OsStr::new);
    let end = run_to_end(dir.path(), "drover-bench", &args, Duration::from_secs(240));
    assert!(end.status.success(), "drover-bench --coordinators 4 failed ({}):\n{}", end.status, end.stderr);
    assert!(end.stderr.contains("[etcd] scale: 120 idle agents over 4 coordinator(s)"), "{}", end.stderr);
    assert!(end.stderr.contains("[etcd] scale: 120 agents connected in"), "{}", end.stderr);
    // The agents spread by name (`targets::spread_index`): these 120 names
    // fall 30 on each of four coordinators, so three followers carry three
    // quarters of them (of three coordinators, two would carry two thirds).
    let carried = end
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .find(|f| f["metric"] == "carried_agents_percent")
        .and_then(|f| f["value"].as_f64());
    assert!(carried.is_some_and(|c| c > 70.0), "carried {carried:?}: {}", end.stdout);
    let refusals = [
        (["--store", "embedded", "--coordinators", "4"], "--coordinators is the scale mode's on etcd"),
        (["--store", "etcd", "--coordinators", "0"], "--coordinators, --kills"),
    ];
    for (bad, why) in refusals {
        let end = run_to_end(dir.path(), "drover-bench", &bad.map(OsStr::new), Duration::from_secs(30));
        assert_eq!(end.status.code(), Some(2), "{bad:?}: {}", end.stderr);
        assert!(end.stderr.contains(why), "{bad:?}: {}", end.stderr);
    }
}
