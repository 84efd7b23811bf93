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

const GATED: &str = "name: gated
jobs:
  build: {steps: [{run: 'true'}]}
  deploy:
    needs: [build]
    approval: {required: true, approvers: [admin]}
    steps: [{run: echo deployed}]
  notify: {needs: [deploy], steps: [{run: echo notified}]}
";

/// Waits until job `job` of run `run` waits for approval.
fn wait_for_approval(fleet: &Fleet, run: &str, job: &str) -> serde_json::Value {
    crate::harness::wait_for("the job to wait for approval", Duration::from_secs(30), || {
        let j = fleet.job(run, job);
        j["waiting_for"].as_str().unwrap_or_default().starts_with("approval by").then_some(j)
    })
}

#[test]
fn an_approval_gate_blocks_until_approved_and_a_rejection_fails_the_job() {
    let mut fleet = Fleet::start("approvals");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);

    // Approved: it runs, and status says who let it.
    let run = fleet.submit("gated.yml", GATED);
    let waiting = wait_for_approval(&fleet, &run, "deploy");
    assert_eq!(waiting["state"], "pending", "{waiting:#}");
    assert!(
        waiting["waiting_for"].as_str().unwrap().contains(&format!("drover approve {run} deploy")),
        "it says how: {waiting:#}"
    );
    assert_eq!(fleet.status(&run)["state"], "running");
    let out = fleet.drover(&["approve", &run, "deploy", "--comment", "notes checked"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("job deploy of run {run} approved")), "{}", text(&out.stdout));
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");
    assert_eq!(fleet.job(&run, "deploy")["approval"], "approved by admin: notes checked");
    let status = text(&fleet.drover(&["status", &run]).stdout);
    assert!(status.contains("approved by admin: notes checked"), "{status}");
    // Deciding twice is refused.
    let again = fleet.drover(&["approve", &run, "deploy"]);
    assert_eq!(again.status.code(), Some(4), "the run has finished: {}", text(&again.stderr));

    // Rejected: it fails with the reason, and what needs it is skipped.
    let run = fleet.submit("gated.yml", GATED);
    wait_for_approval(&fleet, &run, "deploy");
    let out = fleet.drover(&["reject", &run, "deploy", "--reason", "freeze until Monday", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "failed");
    assert_eq!(fleet.job(&run, "deploy")["message"], "rejected by admin: freeze until Monday");
    assert_eq!(fleet.job(&run, "deploy")["approval"], "rejected by admin: freeze until Monday");
    assert_eq!(fleet.job(&run, "notify")["state"], "skipped");

    // Someone the job does not name may not decide; a job without a gate
    // has nothing to decide.
    let run = fleet.submit("alice.yml", &GATED.replace("[admin]", "[alice, ops-team]"));
    wait_for_approval(&fleet, &run, "deploy");
    let out = fleet.drover(&["approve", &run, "deploy"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("admin may not approve job deploy"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("its approvers are alice, ops-team"), "{}", text(&out.stderr));
    let out = fleet.drover(&["approve", &run, "build"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("has no `approval:`"), "{}", text(&out.stderr));
    let out = fleet.drover(&["cancel", &run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn an_approval_nobody_gives_in_time_fails_its_job() {
    let mut fleet = Fleet::start("approval-timeout");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let run = fleet.submit(
        "late.yml",
        "name: late\njobs:\n  deploy:\n    approval: {approvers: [admin], timeout: 1s}\n    steps: [{run: 'true'}]\n",
    );
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "failed");
    assert_eq!(fleet.job(&run, "deploy")["message"], "nobody approved it within 1s");
}

#[test]
fn a_cancelled_run_runs_the_jobs_that_ask_to_run_when_cancelled() {
    let mut fleet = Fleet::start("conditions-cancel");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let run = fleet.submit(
        "cancel.yml",
        "name: c\njobs:\n  build:\n    steps:\n      - run: sleep 60\n      - run: echo not after a cancel\n      \
         - {if: cancelled(), run: echo the step for a cancel}\n      - {if: always(), run: echo the step for always}\n  \
         deploy: {needs: [build], steps: [{run: 'echo never'}]}\n  \
         cleanup:\n    needs: [build]\n    if: cancelled()\n    steps: [{run: 'echo \"cleaning up after ${{ needs.build.result }}\"'}]\n",
    );
    crate::harness::wait_for("build to run", Duration::from_secs(30), || {
        (fleet.job(&run, "build")["state"] == "running").then_some(())
    });
    let out = fleet.drover(&["cancel", &run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = fleet.wait_run(&run, Duration::from_secs(30));
    assert_eq!(status["state"], "cancelled", "{status:#}");
    assert_eq!(fleet.job(&run, "build")["state"], "cancelled");
    assert_eq!(fleet.job(&run, "deploy")["state"], "cancelled");
    assert_eq!(fleet.job(&run, "cleanup")["state"], "succeeded", "cancelled() ran it");
    let log = text(&fleet.drover(&["logs", &run, "cleanup"]).stdout);
    assert!(log.contains("cleaning up after cancelled"), "{log}");
    // In the cancelled job, the steps that ask to run when cancelled ran,
    // after the one it stopped; the others did not.
    let log = text(&fleet.drover(&["logs", &run, "build"]).stdout);
    assert!(log.contains("cancelled during step 1"), "{log}");
    assert!(log.contains("\nthe step for a cancel") && log.contains("\nthe step for always"), "{log}");
    assert!(log.contains("step 2: skipped (the job is cancelled)") && !log.contains("\nnot after a cancel"), "{log}");
}

/// Reads a nanosecond timestamp a step wrote.
fn stamp(path: &std::path::Path) -> u128 {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().parse().unwrap()
}

#[test]
fn two_runs_of_one_concurrency_group_do_not_overlap() {
    let mut fleet = Fleet::start("concurrency");
    fleet.agent("a1", "", 2);
    fleet.agent("a2", "", 2);
    fleet.wait_agents(2);
    let out = fleet.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = out.display();
    let pipeline = format!(
        "name: deploys
env: {{TARGET: prod}}
concurrency: {{group: \"deploy-${{{{ env.TARGET }}}}\"}}
jobs:
  deploy:
    steps: [{{run: 'date +%s%N > {o}/start-$DROVER_RUN_ID; sleep 1; date +%s%N > {o}/end-$DROVER_RUN_ID'}}]
  db:
    concurrency: migrations
    steps: [{{run: 'date +%s%N > {o}/db-start-$DROVER_RUN_ID; sleep 1; date +%s%N > {o}/db-end-$DROVER_RUN_ID'}}]
"
    );
    let first = fleet.submit("deploys.yml", &pipeline);
    let second = fleet.submit("deploys.yml", &pipeline);
    let waiting = crate::harness::wait_for("the second run to wait for its group", Duration::from_secs(30), || {
        let j = fleet.job(&second, "deploy");
        j["waiting_for"].as_str().unwrap_or_default().contains("concurrency group").then_some(j)
    });
    assert_eq!(waiting["waiting_for"], format!("concurrency group deploy-prod (run {first})"), "{waiting:#}");
    for run in [&first, &second] {
        assert_eq!(fleet.wait_run(run, Duration::from_secs(60))["state"], "succeeded");
    }
    let (end1, start2) = (stamp(&out.join(format!("end-{first}"))), stamp(&out.join(format!("start-{second}"))));
    assert!(start2 >= end1, "the second run started before the first ended");

    // A job-level group across runs of another pipeline: one at a time too.
    let jobs_only = pipeline.replace("concurrency: {group: \"deploy-${{ env.TARGET }}\"}\n", "");
    let (a, b) = (fleet.submit("a.yml", &jobs_only), fleet.submit("a.yml", &jobs_only));
    for run in [&a, &b] {
        assert_eq!(fleet.wait_run(run, Duration::from_secs(60))["state"], "succeeded");
    }
    let (a_end, b_start) = (stamp(&out.join(format!("db-end-{a}"))), stamp(&out.join(format!("db-start-{b}"))));
    assert!(b_start >= a_end, "two jobs of group migrations overlapped");
    // Their deploy jobs, in no group, did overlap.
    let (a_end, b_start) = (stamp(&out.join(format!("end-{a}"))), stamp(&out.join(format!("start-{b}"))));
    assert!(b_start < a_end, "jobs without a group run side by side");
}

#[test]
fn a_newer_run_cancels_the_older_one_when_its_group_says_so() {
    let mut fleet = Fleet::start("concurrency-cancel");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let pipeline = "name: preview
concurrency: {group: preview, cancel-in-progress: true}
jobs:
  build: {steps: [{run: 'sleep 30'}]}
";
    let first = fleet.submit("preview.yml", pipeline);
    crate::harness::wait_for("the first run to start", Duration::from_secs(30), || {
        (fleet.job(&first, "build")["state"] == "running").then_some(())
    });
    let second = fleet.submit("preview.yml", &pipeline.replace("sleep 30", "true"));
    assert_eq!(fleet.wait_run(&first, Duration::from_secs(30))["state"], "cancelled");
    assert_eq!(fleet.wait_run(&second, Duration::from_secs(30))["state"], "succeeded");
}

#[test]
fn conditions_on_the_branch_and_the_tag_of_a_run_from_git() {
    let mut fleet = Fleet::start("conditions-git");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let repo = fleet.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    crate::git::git(&repo, &["init", "-q", "-b", "main"]);
    let pipeline = "name: refs
jobs:
  on-main: {if: \"drover.branch == 'main'\", steps: [{run: 'echo on main'}]}
  on-tag: {if: \"startsWith(drover.tag, 'v')\", steps: [{run: 'echo on a tag'}]}
  steps:
    steps:
      - if: drover.branch == 'main'
        run: echo the main step
      - run: echo branch=${{ drover.branch }} tag=${{ drover.tag }}
";
    std::fs::write(repo.join(".drover.yml"), pipeline).unwrap();
    crate::git::git(&repo, &["add", "."]);
    crate::git::git(&repo, &["commit", "-q", "-m", "one"]);
    crate::git::git(&repo, &["tag", "v1"]);
    let url = repo.to_str().unwrap();
    let run_at = |reference: &str| -> String {
        let cli = fleet.drover(&["run", "--detach", "--repo", url, "--ref", reference]);
        assert!(cli.status.success(), "{}", text(&cli.stderr));
        let run = text(&cli.stdout).trim().to_string();
        assert_eq!(fleet.wait_run(&run, Duration::from_secs(60))["state"], "succeeded");
        run
    };
    let main = run_at("main");
    assert_eq!(fleet.job(&main, "on-main")["state"], "succeeded");
    assert_eq!(fleet.job(&main, "on-tag")["state"], "skipped");
    let log = text(&fleet.drover(&["logs", &main, "steps"]).stdout);
    assert!(log.contains("the main step") && log.contains("branch=main tag=\n"), "{log}");

    let tag = run_at("v1");
    assert_eq!(fleet.job(&tag, "on-main")["state"], "skipped");
    assert_eq!(fleet.job(&tag, "on-tag")["state"], "succeeded");
    let log = text(&fleet.drover(&["logs", &tag, "steps"]).stdout);
    assert!(!log.contains("the main step\n") && log.contains("branch= tag=v1\n"), "{log}");
}
