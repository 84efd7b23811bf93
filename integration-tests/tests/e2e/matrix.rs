//! `matrix:` on the real binaries: a 2×2 matrix becomes four jobs, each on
//! an agent its `runs-on` (filled in from the matrix) picks, with its
//! values in `env`, `run` and step conditions; `needs:` on the matrix waits
//! for all four; a failure with `fail-fast` cancels the others; a matrix
//! over the limit is refused with the count, storing nothing.

use std::time::Duration;

use crate::harness::{Fleet, text};

const PIPELINE: &str = r#"name: matrix
jobs:
  test:
    matrix:
      os: [linux, bsd]
      rust: [stable, beta]
    runs-on: {os: "${{ matrix.os }}"}
    env: {TOOLCHAIN: "${{ matrix.rust }}"}
    steps:
      - run: echo "testing $TOOLCHAIN on ${{ matrix.os }} in $(basename "$PWD")"
      - if: matrix.rust == 'beta'
        run: echo "beta only"
  report:
    needs: [test]
    steps: [{run: 'echo "all four: ${{ needs.test.result }}"'}]
"#;

#[test]
fn a_two_by_two_matrix_runs_four_jobs_and_what_needs_it_waits_for_all() {
    let mut fleet = Fleet::start("matrix");
    fleet.agent("linux1", "os=linux", 2);
    fleet.agent("bsd1", "os=bsd", 2);
    fleet.wait_agents(2);
    let run = fleet.submit("matrix.yml", PIPELINE);
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let names: Vec<&str> = status["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    for name in [
        "test (os=linux, rust=stable)",
        "test (os=linux, rust=beta)",
        "test (os=bsd, rust=stable)",
        "test (os=bsd, rust=beta)",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let job = fleet.job(&run, "test (os=bsd, rust=beta)");
    assert_eq!(job["agent"], "bsd1", "runs-on filled in from the matrix: {job:#}");
    let log = text(&fleet.drover(&["logs", &run, "test (os=bsd, rust=beta)"]).stdout);
    assert!(log.contains("testing beta on bsd in"), "{log}");
    assert!(log.contains("\nbeta only"), "a step's condition reads the matrix: {log}");
    let line = log.lines().find(|l| l.starts_with("testing beta on bsd in ")).unwrap();
    let workspace = line.trim_start_matches("testing beta on bsd in ");
    assert!(workspace.contains("test__os_bsd__rust_beta_~") && !workspace.contains([' ', '(', '=']), "{line}");
    let stable = text(&fleet.drover(&["logs", &run, "test (os=linux, rust=stable)"]).stdout);
    assert!(stable.contains("testing stable on linux") && !stable.contains("\nbeta only"), "{stable}");

    let report = fleet.job(&run, "report");
    let started = report["started_ms"].as_u64().unwrap();
    for name in names.iter().filter(|n| n.starts_with("test (")) {
        let finished = fleet.job(&run, name)["finished_ms"].as_u64().unwrap();
        assert!(finished <= started, "report started after {name} finished");
    }
    let log = text(&fleet.drover(&["logs", &run, "report"]).stdout);
    assert!(log.contains("all four: success"), "{log}");
    // The matrix's own name is not a job: the error names its jobs.
    let out = fleet.drover(&["logs", &run, "test"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is a matrix; name one of its jobs: 'test (os=linux, rust=stable)'"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn fail_fast_cancels_the_rest_and_an_oversized_matrix_is_refused() {
    let mut fleet = Fleet::start("matrix-fail-fast");
    fleet.agent("a1", "", 4);
    fleet.wait_agents(1);
    let run = fleet.submit(
        "ff.yml",
        "name: ff\njobs:\n  t:\n    matrix: {n: [1, 2, 3]}\n    steps:\n      - run: 'if [ ${{ matrix.n }} = 1 ]; then exit 1; fi; sleep 60'\n",
    );
    let status = fleet.wait_run(&run, Duration::from_secs(45));
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(fleet.job(&run, "t (n=1)")["state"], "failed");
    for name in ["t (n=2)", "t (n=3)"] {
        let job = fleet.job(&run, name);
        assert_eq!(job["state"], "cancelled", "{job:#}");
        assert!(job["message"].as_str().unwrap().contains("`t (n=1)` failed, and the matrix is fail-fast"), "{job:#}");
    }

    let values: Vec<String> = (0..17).map(|i| format!("v{i}")).collect();
    let file = fleet.dir.path().join("big.yml");
    let big = format!(
        "name: big\njobs:\n  t:\n    matrix: {{a: [{0}], b: [{0}]}}\n    steps: [{{run: 'true'}}]\n",
        values.join(", ")
    );
    std::fs::write(&file, big).unwrap();
    let before = fleet.drover(&["runs", "-o", "json"]);
    let out = fleet.drover(&["run", "--detach", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("big.yml:4:13:") && err.contains("expands into 289 jobs, over the limit of 256"), "{err}");
    assert_eq!(fleet.drover(&["runs", "-o", "json"]).stdout, before.stdout, "nothing stored");
}
