//! Waves (issue 17), end to end: a rollout over a canary group, then the
//! rest of the environment, with a gate between the two waves; one
//! approval takes it on to the next wave, and one abort sends every wave
//! back.

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
