//! `if:` on jobs and steps, and `${{ }}` in `run`, on the real binaries: a
//! failed job's dependents are skipped unless their condition asks for
//! failure() or always(); a step after a failure runs only when its own
//! condition says so; a job skipped by its condition counts as skipped;
//! expressions are filled in before the step runs.

use std::time::Duration;

use crate::harness::{Fleet, text};

const PIPELINE: &str = r#"name: conditions
env: {TARGET: staging}
jobs:
  build:
    steps: [{run: 'exit 1'}]
  report:
    needs: [build]
    if: failure()
    steps: [{run: 'echo "report for ${{ env.TARGET }} after ${{ needs.build.result }}"'}]
  deploy:
    needs: [build]
    steps: [{run: 'echo deploying'}]
  tidy:
    needs: [build]
    if: always()
    steps:
      - run: echo tidying
      - run: exit 2
      - run: echo not after a failure
      - if: failure()
        run: echo cleanup after the failure
  prod-only:
    if: env.TARGET == 'prod'
    steps: [{run: 'echo never'}]
"#;

#[test]
fn conditions_decide_which_jobs_and_steps_run() {
    let mut fleet = Fleet::start("conditions");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let run = fleet.submit("conditions.yml", PIPELINE);
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "failed", "{status:#}");
    let state = |job: &str| fleet.job(&run, job)["state"].as_str().unwrap().to_string();
    assert_eq!(state("build"), "failed");
    assert_eq!(state("report"), "succeeded", "failure() runs after a failed need");
    assert_eq!(state("deploy"), "skipped");
    assert_eq!(state("tidy"), "failed", "always() ran it, and its own step failed");
    assert_eq!(state("prod-only"), "skipped");
    let prod = fleet.job(&run, "prod-only");
    assert_eq!(prod["message"], "skipped: its condition `env.TARGET == 'prod'` is false", "{prod:#}");

    let report = text(&fleet.drover(&["logs", &run, "report"]).stdout);
    assert!(report.contains("report for staging after failure"), "${{{{ }}}} filled in: {report}");
    let tidy = text(&fleet.drover(&["logs", &run, "tidy"]).stdout);
    assert!(tidy.contains("tidying") && tidy.contains("cleanup after the failure"), "{tidy}");
    assert!(!tidy.contains("\nnot after a failure"), "{tidy}");
    assert!(tidy.contains("step 3: skipped (its condition is false)"), "{tidy}");
}

#[test]
fn a_job_skipped_by_its_condition_leaves_the_run_succeeded() {
    let mut fleet = Fleet::start("conditions-ok");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let run = fleet.submit(
        "ok.yml",
        "name: ok\nenv: {DEPLOY: 'no'}\njobs:\n  build: {steps: [{run: 'true'}]}\n  deploy:\n    needs: [build]\n    if: env.DEPLOY == 'yes'\n    steps: [{run: ./deploy}]\n",
    );
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(fleet.job(&run, "deploy")["state"], "skipped");
}

#[test]
fn a_bad_expression_is_refused_at_its_column() {
    let fleet = Fleet::start("conditions-bad");
    let file = fleet.dir.path().join("bad.yml");
    std::fs::write(&file, "name: p\njobs:\n  a:\n    if: sucess()\n    steps: [{run: 'true'}]\n").unwrap();
    let out = fleet.drover(&["run", "--detach", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("bad.yml:4:9:") && err.contains("sucess"), "{err}");
    assert!(err.contains("did you mean `success`"), "{err}");
}
