//! A job that no connected agent can ever take (none has its labels) does
//! not hang its run: it is shown as blocked at once, with its deadline, and
//! fails at its queue timeout saying why, and the jobs after it are
//! skipped. An agent with the labels connecting in time saves it.

use std::time::Duration;

use crate::harness::{Fleet, text, wait_for};

const BLOCKED: &str = "name: blocked
jobs:
  build:
    steps: [{run: 'true'}]
  train:
    runs-on: {gpu: a100}
    queue-timeout: 3s
    steps: [{run: 'true'}]
  publish:
    needs: [train]
    steps: [{run: 'true'}]
";

#[test]
fn a_job_no_agent_can_take_fails_at_its_queue_timeout_and_the_run_ends() {
    let mut fleet = Fleet::start("blocked");
    fleet.agent("a1", "os=linux", 2);
    fleet.wait_agents(1);
    let file = fleet.dir.path().join("blocked.yml");
    std::fs::write(&file, BLOCKED).unwrap();

    let out = fleet.drover(&["run", "--follow", file.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "the run failed: {stdout}{stderr}{}", fleet.logs());
    assert!(
        stdout.contains(
            "[train] queued: waiting for an agent with labels gpu=a100 (no connected agent matches); fails in"
        ),
        "shown as blocked at once, with its deadline: {stdout}"
    );
    assert!(stdout.contains("[build] succeeded"), "{stdout}");
    assert!(stdout.contains("no agent with labels gpu=a100 connected within 3s"), "{stdout}");
    assert!(stdout.contains("[publish] skipped"), "{stdout}");
    let run = stderr.lines().find_map(|l| l.strip_prefix("submitted run ")).expect("a run id").trim().to_string();
    let status = fleet.status(&run);
    let train = status["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "train").unwrap().clone();
    assert_eq!(train["state"], "failed", "{status:#}");
    assert_eq!(train["message"], "no agent with labels gpu=a100 connected within 3s", "{status:#}");
}

#[test]
fn a_blocked_job_shows_its_deadline_and_an_agent_with_the_labels_saves_it() {
    let mut fleet = Fleet::start("unblocked");
    fleet.agent("a1", "os=linux", 1);
    fleet.wait_agents(1);
    let file = fleet.dir.path().join("wait.yml");
    std::fs::write(&file, "name: wait\njobs:\n  train:\n    runs-on: {gpu: a100}\n    steps: [{run: 'true'}]\n")
        .unwrap();
    // The run's own queue timeout, for jobs that set none.
    let out = fleet.drover(&["run", "--queue-timeout", "2m", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = text(&out.stdout).trim().to_string();
    let detail = wait_for("the job to be shown as blocked", Duration::from_secs(20), || {
        let out = fleet.drover(&["status", &run]);
        let stdout = text(&out.stdout);
        stdout.lines().find(|l| l.starts_with("train") && l.contains("fails in")).map(str::to_string)
    });
    assert!(
        detail.contains("waiting for an agent with labels gpu=a100 (no connected agent matches); fails in "),
        "{detail}"
    );
    // 2m from when it was blocked, rounded up to the second.
    assert!(detail.contains("fails in 2m unless") || detail.contains("fails in 1m5"), "{detail}");
    let status = fleet.status(&run);
    assert!(status["jobs"][0]["blocked_until_ms"].as_u64().unwrap_or(0) > 0, "{status:#}");

    // A job that has not started has no log yet, and `logs` says why.
    let out = fleet.drover(&["logs", &run, "train"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let want = format!("job train of run {run} has not started (queued, waiting for an agent with labels gpu=a100");
    assert!(text(&out.stderr).contains(&want), "{}", text(&out.stderr));

    fleet.agent("gpu1", "gpu=a100", 1);
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_eq!(status["jobs"][0]["agent"], "gpu1", "{status:#}");
}
