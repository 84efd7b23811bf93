//! Waves (issue 17), end to end: a rollout over a canary group, then the
//! rest of the environment, with a gate between the two waves; one
//! approval takes it on to the next wave, and one abort sends every wave
//! back. Waves across two environments are one rollout, approved for the
//! environment that requires it, and each node's release is recorded in
//! its own environment.

use std::time::Duration;

use serde_json::Value;

use crate::deploys::{Web, json};
use crate::harness::{text, wait_for_or_report};

const WAVES: &str = "{rolling: {max_parallel: 2}}\n      waves:\n        - {name: canary, selector: {group: canary}}\n        \
                     - {name: rest}\n      gates:\n        - {name: go-wide, at: before_wave, approval: {approvers: \
                     [admin]}}";

fn newest(web: &Web) -> Value {
    json(&web.fleet, &["rollouts", "-o", "json"])[0].clone()
}

/// The newest rollout, of run `run`, once it waits at the gate between
/// the waves.
fn at_the_gate(web: &Web, run: &str) -> Value {
    wait_for_or_report(
        "the canary wave to be done and the rollout to wait at go-wide",
        Duration::from_secs(90),
        || {
            let r = newest(web);
            (r["run_id"] == run && r["message"].as_str().unwrap_or_default().contains("at gate go-wide")).then_some(r)
        },
        || format!("{:#}\n{}", newest(web), web.fleet.logs()),
    )
}

#[test]
fn two_waves_with_a_gate_between_them_go_on_together_or_go_back_together() {
    let mut web = Web::start("waves", 0);
    web.add_nodes(1, "role=web,group=canary");
    web.add_nodes(2, "role=web,region=a");
    web.deployed("v1", "{rolling: {max_parallel: 3}}");

    // The canary wave rolls out, then the gate holds the rest.
    let run = web.fleet.submit("v2.yml", &web.pipeline("v2", WAVES));
    let r = at_the_gate(&web, &run);
    let nodes: Vec<(&str, &str, &str)> = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["wave"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        nodes,
        [("web-1", "canary", "healthy"), ("web-2", "rest", "waiting"), ("web-3", "rest", "waiting")],
        "{r:#}"
    );
    assert_eq!((r["waves"].clone(), r["wave"].clone()), (serde_json::json!(["canary", "rest"]), 0.into()), "{r:#}");
    assert_eq!(web.versions(), [Some("v2".to_string()), Some("v1".to_string()), Some("v1".to_string())]);
    let id = r["id"].to_string();
    let shown = web.fleet.drover(&["rollout", "status", &id]);
    let shown = text(&shown.stdout);
    assert!(shown.contains("wave:      1 of 2, canary (waves: canary → rest)"), "{shown}");
    assert!(shown.contains("wave canary:") && shown.contains("wave rest:"), "{shown}");
    assert!(shown.contains("go-wide") && shown.contains("before_wave (step 0)"), "{shown}");

    // One approval: the second wave goes.
    let out = web.fleet.drover(&["rollout", "approve", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = web.fleet.wait_run(&run, Duration::from_secs(90));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(web.versions(), vec![Some("v2".to_string()); 3]);

    // One abort at the gate sends the whole rollout back.
    let run = web.fleet.submit("v3.yml", &web.pipeline("v3", WAVES));
    let r = at_the_gate(&web, &run);
    assert_eq!(web.versions()[0].as_deref(), Some("v3"));
    let out = web.fleet.drover(&["rollout", "abort", &r["id"].to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = web.fleet.wait_run(&run, Duration::from_secs(90));
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(web.versions(), vec![Some("v2".to_string()); 3], "every wave back on v2");
}

#[test]
fn waves_across_environments_are_one_rollout_recorded_in_each() {
    let mut web = Web::on(crate::harness::Fleet::start("waves-envs"), 1, "role=web,env=staging", "staging");
    web.add_nodes(2, "role=web,env=eu");
    // prod-eu asks for an approval: a wave into it makes the job ask too.
    let args =
        ["env", "create", "prod-eu", "--selector", "role=web,env=eu", "--require-approval", "--approvers", "admin"];
    let out = web.fleet.drover(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let strategy = "{rolling: {max_parallel: 2}}\n      waves:\n        - {name: canary, environment: staging}\n        \
                    - {name: eu, environment: prod-eu}\n      gates:\n        - {name: go-wide, at: before_wave, \
                    approval: {approvers: [admin]}}";
    // Two environments that require approval by no one in common refuse
    // the run at submit.
    let args = ["env", "create", "prod-us", "--selector", "env=us", "--require-approval", "--approvers", "bob"];
    assert!(web.fleet.drover(&args).status.success());
    let file = web.fleet.dir.path().join("both.yml");
    let both = strategy.replace(
        "{name: eu, environment: prod-eu}",
        "{name: eu, environment: prod-eu}\n        - {name: us, environment: prod-us}",
    );
    std::fs::write(&file, web.pipeline("v0", &both)).unwrap();
    let out = web.fleet.drover(&["run", "--detach", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("goes to environments prod-eu and prod-us that require approval, and no approver"), "{err}");
    assert!(json(&web.fleet, &["runs", "-o", "json"]).as_array().unwrap().is_empty(), "nothing stored");

    let run = web.fleet.submit("v1.yml", &web.pipeline("v1", strategy));
    wait_for_or_report(
        "the deploy job to wait for prod-eu's approval",
        Duration::from_secs(60),
        || {
            let job = web.fleet.job(&run, "deploy");
            job["waiting_for"].as_str().unwrap_or_default().starts_with("approval by admin").then_some(())
        },
        || format!("{:#}\n{}", web.fleet.job(&run, "deploy"), web.fleet.logs()),
    );
    let out = web.fleet.drover(&["approve", &run, "deploy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let r = at_the_gate(&web, &run);
    let nodes: Vec<(&str, &str, &str, &str)> = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let field = |k: &str| n[k].as_str().unwrap();
            (field("name"), field("wave"), field("environment"), field("state"))
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("web-1", "canary", "staging", "healthy"),
            ("web-2", "eu", "prod-eu", "waiting"),
            ("web-3", "eu", "prod-eu", "waiting")
        ],
        "{r:#}"
    );
    let id = r["id"].to_string();
    let shown = text(&web.fleet.drover(&["rollout", "status", &id]).stdout);
    assert!(shown.contains("wave canary:") && shown.contains("wave eu (environment prod-eu):"), "{shown}");
    let listed = json(&web.fleet, &["rollouts", "--env", "prod-eu", "-o", "json"]);
    assert_eq!(listed[0]["id"], r["id"], "listed under every environment it deploys to: {listed:#}");

    let out = web.fleet.drover(&["rollout", "approve", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = web.fleet.wait_run(&run, Duration::from_secs(90));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 3]);
    let services = json(&web.fleet, &["services", "-o", "json"]);
    let mut placed: Vec<(&str, &str)> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["environment"].as_str().unwrap(), s["node"].as_str().unwrap()))
        .collect();
    placed.sort();
    assert_eq!(placed, [("prod-eu", "web-2"), ("prod-eu", "web-3"), ("staging", "web-1")], "{services:#}");
}
