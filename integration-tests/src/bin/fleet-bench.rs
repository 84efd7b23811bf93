//! `fleet-bench`: measures the walking fleet on the real binaries and prints
//! one JSON line per figure.
//!
//! - latency: the time from starting `drover run` until the first step of
//!   the run starts on an idle agent (the step records its own start time),
//!   over N runs; prints p50, p99 and max.
//! - throughput: one pipeline of M trivial jobs over 4 agents with 4 slots
//!   each, from submit until the run has finished; prints jobs/s.
//!
//! Build everything in release first, then run it:
//! `cargo build --release --workspace --bins && target/release/fleet-bench`.
//! `--smoke` runs a few seconds' worth, for the test suite.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover_integration_tests::harness::{Fleet, text, wait_for};

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos()
}

fn figure(metric: &str, value: f64, unit: &str, agents: u32) {
    println!(
        "{}",
        serde_json::json!({"metric": metric, "value": (value * 1000.0).round() / 1000.0, "unit": unit, "store": "embedded", "agents": agents})
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn latency(runs: usize) {
    let mut fleet = Fleet::start("bench-latency");
    fleet.agent("idle", "", 1);
    fleet.wait_agents(1);
    let out = fleet.dir.path().join("starts");
    std::fs::create_dir_all(&out).expect("out dir");
    let path = fleet.dir.path().join("one.yml");
    std::fs::write(
        &path,
        format!(
            "name: latency\njobs:\n  one:\n    steps:\n      - run: date +%s%N > {}/$DROVER_RUN_ID\n",
            out.display()
        ),
    )
    .expect("write pipeline");
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = now_ns();
        let cli = fleet.drover(&["run", path.to_str().expect("utf-8")]);
        assert!(cli.status.success(), "{}", text(&cli.stderr));
        let run = text(&cli.stdout).trim().to_string();
        let started: u128 = wait_for("the step to start", Duration::from_secs(30), || {
            std::fs::read_to_string(out.join(&run)).ok().and_then(|s| s.trim().parse().ok())
        });
        samples.push((started.saturating_sub(t0)) as f64 / 1e6);
        // Wait for the run to finish so the agent is idle for the next one.
        let status = fleet.wait_run(&run, Duration::from_secs(30));
        assert_eq!(status["state"], "succeeded");
    }
    samples.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    figure("run_to_first_step_ms_p50", percentile(&samples, 0.5), "ms", 1);
    figure("run_to_first_step_ms_p99", percentile(&samples, 0.99), "ms", 1);
    figure("run_to_first_step_ms_max", samples[samples.len() - 1], "ms", 1);
}

fn throughput(jobs: usize) {
    let mut fleet = Fleet::start("bench-throughput");
    for i in 0..4 {
        fleet.agent(&format!("worker{i}"), "", 4);
    }
    fleet.wait_agents(4);
    let mut yaml = String::from("name: throughput\njobs:\n");
    for i in 0..jobs {
        yaml.push_str(&format!("  j{i}:\n    steps:\n      - run: \"true\"\n"));
    }
    let path = fleet.dir.path().join("many.yml");
    std::fs::write(&path, yaml).expect("write pipeline");
    let t0 = Instant::now();
    let cli = fleet.drover(&["run", path.to_str().expect("utf-8")]);
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    let run = text(&cli.stdout).trim().to_string();
    let status = fleet.wait_run(&run, Duration::from_secs(600));
    let elapsed = t0.elapsed().as_secs_f64();
    assert_eq!(status["state"], "succeeded", "{status}");
    figure("trivial_jobs_per_second", jobs as f64 / elapsed, "jobs/s", 4);
    figure("trivial_jobs_total_seconds", elapsed, "s", 4);
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (runs, jobs) = if smoke { (5, 40) } else { (100, 1000) };
    latency(runs);
    throughput(jobs);
}
