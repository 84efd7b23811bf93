//! `drover rerun`: a new run of a finished run's pipeline, at the same
//! commit, that runs again what failed (and what comes after it) and reuses
//! the results of the jobs that succeeded.

use std::time::Duration;

use crate::harness::{Fleet, text};

#[test]
fn rerun_failed_reuses_the_succeeded_jobs_and_runs_the_rest() {
    let mut fleet = Fleet::start("rerun");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let marks = fleet.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.display();
    // `flaky` fails until the file `fixed` exists; every job leaves a mark
    // each time it runs.
    let pipeline = format!(
        "name: rerun
jobs:
  build:
    steps: [{{run: 'echo $DROVER_RUN_ID >> {m}/build'}}]
  flaky:
    needs: [build]
    steps: [{{run: 'echo $DROVER_RUN_ID >> {m}/flaky; test -e {m}/fixed'}}]
  publish:
    needs: [flaky]
    steps: [{{run: 'echo $DROVER_RUN_ID >> {m}/publish'}}]
  lint:
    steps: [{{run: 'echo $DROVER_RUN_ID >> {m}/lint'}}]
"
    );
    let file = fleet.dir.path().join("rerun.yml");
    std::fs::write(&file, pipeline).unwrap();
    let out = fleet.drover(&["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = text(&out.stdout).trim().to_string();
    let status = fleet.wait_run(&first, Duration::from_secs(60));
    assert_eq!(status["state"], "failed", "{status:#}");

    // A job that does not exist is named.
    let out = fleet.drover(&["rerun", &first, "--job", "nope"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("has no job `nope`; its jobs are: build, flaky, publish, lint"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(marks.join("fixed"), "").unwrap();
    let out = fleet.drover(&["rerun", &first, "--failed", "--follow"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "the rerun succeeds: {stdout}{stderr}{}", fleet.logs());
    assert!(stderr.contains(&format!("(a rerun of run {first})")), "{stderr}");
    assert!(stdout.contains(&format!("[build] succeeded — reused from run {first}")), "{stdout}");
    let second = stderr
        .lines()
        .find_map(|l| l.strip_prefix("started run ")?.split_whitespace().next().map(str::to_string))
        .expect("the new run's id");
    let status = fleet.status(&second);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(status["rerun_of"], first.as_str(), "{status:#}");
    for job in status["jobs"].as_array().unwrap() {
        let reused = matches!(job["name"].as_str(), Some("build" | "lint"));
        let want = if reused { first.as_str() } else { "" };
        assert_eq!(job["reused_from"], want, "{job:#}");
    }
    // What ran where: build and lint once (in the first run), flaky in
    // both, publish only in the rerun.
    let ran = |job: &str| std::fs::read_to_string(marks.join(job)).unwrap_or_default();
    assert_eq!(ran("build"), format!("{first}\n"));
    assert_eq!(ran("lint"), format!("{first}\n"));
    assert_eq!(ran("flaky"), format!("{first}\n{second}\n"));
    assert_eq!(ran("publish"), format!("{second}\n"));

    // A run that has not finished cannot be rerun.
    let waiting = fleet.dir.path().join("waiting.yml");
    std::fs::write(&waiting, "name: waiting\njobs:\n  gpu:\n    runs-on: {gpu: a100}\n    steps: [{run: 'true'}]\n")
        .unwrap();
    let out = fleet.drover(&["run", waiting.to_str().unwrap()]);
    let running = text(&out.stdout).trim().to_string();
    let out = fleet.drover(&["rerun", &running]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("run {running} has not finished")), "{}", text(&out.stderr));
    assert!(fleet.drover(&["cancel", &running]).status.success());

    // Nothing failed any more: --failed says so; a whole rerun runs all.
    let out = fleet.drover(&["rerun", &second, "--failed"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("run {second} has no failed jobs")), "{}", text(&out.stderr));
    let out = fleet.drover(&["rerun", &second]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let third = text(&out.stdout).trim().to_string();
    assert_eq!(fleet.wait_run(&third, Duration::from_secs(60))["state"], "succeeded");
    assert_eq!(ran("build"), format!("{first}\n{third}\n"));
}
