//! Invalid pipeline files are rejected with file:line:column and a hint,
//! and the CLI exits 2: offline by `drover validate` and by `drover run`
//! before it connects, and at submit by the coordinator for a file read
//! from git. Nothing is stored.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{Fleet, TempDir, bin, free_port, text};

/// Each kind of problem: what, the file, what stderr must say.
fn invalid_cases() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "unquoted colon",
            "name: p\njobs:\n  a:\n    steps:\n      - run: echo a: b\n",
            "hint: a value that contains `: ` must be quoted",
        ),
        ("tabs", "name: p\njobs:\n\ta: 1\n", "hint: indent YAML with spaces"),
        (
            "unknown key",
            "name: p\njobs:\n  build:\n    step:\n      - run: make\n",
            ":4:5: unknown key `step` in job `build`",
        ),
        (
            "cycle",
            "name: p\njobs:\n  a:\n    needs: [c]\n    steps: [{run: x}]\n  b:\n    needs: [a]\n    steps: [{run: x}]\n  c:\n    needs: [b]\n    steps: [{run: x}]\n",
            "cycle in needs: a -> c -> b -> a",
        ),
        (
            "missing need",
            "name: p\njobs:\n  test:\n    needs: [build]\n    steps: [{run: x}]\n",
            ":4:13: job `test` needs `build`, which is not defined",
        ),
        (
            "duplicate job",
            "name: p\njobs:\n  build:\n    steps: [{run: x}]\n  build:\n    steps: [{run: y}]\n",
            ":5:3: duplicate job `build` (first defined at line 3)",
        ),
        ("no steps", "name: p\njobs:\n  build:\n    steps: []\n", ":4:12: job `build` has no steps"),
        (
            "bad duration",
            "name: p\njobs:\n  a:\n    timeout: 10 minutes\n    steps: [{run: x}]\n",
            ":4:14: invalid timeout `10 minutes` in job `a`",
        ),
    ]
}

/// `drover` with a coordinator nobody listens on: what runs offline must
/// not need one.
fn offline(args: &[&str]) -> std::process::Output {
    let port = free_port();
    Command::new(bin("drover"))
        .args(["--coordinator", &format!("https://127.0.0.1:{port}")])
        .args(args)
        .env("DROVER_TLS_DIR", "/nonexistent")
        .output()
        .unwrap()
}

fn write_cases(dir: &Path) -> Vec<(&'static str, String, &'static str)> {
    invalid_cases()
        .into_iter()
        .map(|(what, yaml, expect)| {
            let path = dir.join(format!("{}.yml", what.replace(' ', "-")));
            std::fs::write(&path, yaml).unwrap();
            (what, path.to_str().unwrap().to_string(), expect)
        })
        .collect()
}

#[test]
fn validate_and_run_refuse_each_kind_of_invalid_pipeline_offline() {
    let dir = TempDir::new("validate");
    let cases = write_cases(dir.path());
    for (what, path, expect) in &cases {
        for args in [vec!["validate", path.as_str()], vec!["run", path.as_str()]] {
            let out = offline(&args);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what} {args:?}: {stderr}");
            assert!(stderr.contains(expect), "{what} {args:?}: expected {expect:?} in:\n{stderr}");
            assert!(stderr.contains(&format!("{path}:")), "{what}: the file is named: {stderr}");
            assert!(stderr.contains("hint:"), "{what}: a hint is given: {stderr}");
        }
    }
    // Several files: each is checked, the good one said to be fine, and
    // the count of bad ones ends the output.
    let good = dir.path().join("good.yml");
    std::fs::write(&good, "name: good\njobs:\n  a:\n    steps: [{run: x}]\n  b:\n    steps: [{run: y}]\n").unwrap();
    let missing = dir.path().join("missing.yml");
    let (good, missing) = (good.to_str().unwrap(), missing.to_str().unwrap());
    let out = offline(&["validate", good, &cases[0].1, missing]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), format!("{good}: ok, pipeline \"good\" with 2 jobs"));
    assert!(stderr.contains(&format!("cannot read {missing}")), "{stderr}");
    assert!(stderr.trim_end().ends_with("drover: 2 of 3 files are not valid pipelines"), "{stderr}");
    let out = offline(&["validate", good]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn the_coordinator_refuses_each_kind_of_invalid_pipeline_from_git() {
    let fleet = Fleet::start("invalid");
    let repo = fleet.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| crate::git::git(&repo, args);
    git(&["init", "-q", "-b", "main"]);
    let cases = invalid_cases();
    for (what, yaml, _) in &cases {
        std::fs::write(repo.join(format!("{}.yml", what.replace(' ', "-"))), yaml).unwrap();
    }
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "bad pipelines"]);
    for (what, _, expect) in cases {
        let file = format!("{}.yml", what.replace(' ', "-"));
        let out = fleet.drover(&["run", "--repo", repo.to_str().unwrap(), "--file", &file]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(expect), "{what}: expected {expect:?} in:\n{stderr}");
        assert!(stderr.contains(&format!("{file}:")), "{what}: the file is named: {stderr}");
        assert!(stderr.contains("hint:"), "{what}: a hint is given: {stderr}");
    }
    let out = fleet.drover(&["runs"]);
    assert_eq!(text(&out.stdout).lines().count(), 1, "nothing was stored: {}", text(&out.stdout));
}

#[test]
fn usage_errors_exit_2_and_an_unreachable_coordinator_exits_3() {
    let fleet = Fleet::start("usage");
    let out = fleet.drover(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = fleet.drover(&["status", "not-a-number"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a run id"), "{}", text(&out.stderr));
    let out = fleet.drover(&["status", "999"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("run 999 not found"), "{}", text(&out.stderr));
    // A port nobody listens on (from below the ephemeral range, so no
    // parallel test's connection takes it meanwhile).
    let port = crate::harness::free_port();
    let out = std::process::Command::new(crate::harness::bin("drover"))
        .args(["--coordinator", &format!("https://127.0.0.1:{port}"), "runs"])
        .env("DROVER_TLS_DIR", &fleet.tls)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot reach the coordinator"), "{}", text(&out.stderr));
}

/// A deploy job is read and checked offline; submitted, a deploy to an
/// environment that does not exist, or that has no node, fails its job
/// saying why and how to fix it, and the run fails.
#[test]
fn a_deploy_job_validates_offline_and_a_deploy_nowhere_fails_saying_why() {
    let mut fleet = Fleet::start("validation-deploy");
    fleet.agent("builder", "role=build", 1);
    fleet.wait_agents(1);
    let file = fleet.dir.path().join("deploy.yml");
    std::fs::write(
        &file,
        "name: d\njobs:\n  build:\n    artifacts: {paths: [dist]}\n    steps: [{run: mkdir -p dist && echo x > dist/app}]\n  deploy:\n    needs: [build]\n    deploy:\n      environment: staging\n      artifact: build:dist/app\n      service:\n        name: web\n        command: ./app --port $PORT\n        port: 8080\n        health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}\n      strategy: {canary: {steps: [{nodes: 50%}, {pause: manual}, {nodes: 100%}]}}\n",
    )
    .unwrap();
    let out = offline(&["validate", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // (case, what the deploy job's message says)
    let cases = [
        ("no such environment", "there is no environment staging; define it with `drover env create staging"),
        (
            "an environment without nodes",
            "environment staging has no node to deploy to: no connected, ready agent has the labels role=web",
        ),
    ];
    for (i, (case, says)) in cases.into_iter().enumerate() {
        if i == 1 {
            let out = fleet.drover(&["env", "create", "staging", "--selector", "role=web"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        let run = fleet.submit(&format!("deploy-{i}.yml"), &std::fs::read_to_string(&file).unwrap());
        let status = fleet.wait_run(&run, Duration::from_secs(60));
        assert_eq!(status["state"], "failed", "{case}: {status:#}");
        let job = fleet.job(&run, "deploy");
        assert_eq!(job["state"], "failed", "{case}: {job:#}");
        assert!(job["message"].as_str().unwrap_or_default().contains(says), "{case}: {job:#}");
        assert_eq!(fleet.job(&run, "build")["state"], "succeeded", "{case}");
    }
}
