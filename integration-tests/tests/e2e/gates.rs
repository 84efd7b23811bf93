//! Gates (issue 17), end to end: a deploy waits before its rollout until
//! an approver opens the gate, waits before its next step until a real
//! webhook answers 2xx, and a webhook gate that times out before promotion
//! fails the step, which rolls back. Who or what opened each gate is kept.

use std::time::Duration;

use serde_json::Value;

use crate::deploys::{Web, json};
use crate::harness::hook::Hook;
use crate::harness::{text, wait_for_or_report};

const PATH: &str = "/confirm";

fn newest(web: &Web) -> Value {
    json(&web.fleet, &["rollouts", "-o", "json"])[0].clone()
}

fn status(web: &Web, id: &Value) -> Value {
    json(&web.fleet, &["rollout", "status", &id.to_string(), "-o", "json"])
}

fn waiting_at(web: &Web, run: &str, gate: &str) -> Value {
    wait_for_or_report(
        &format!("the rollout to wait at gate {gate}"),
        Duration::from_secs(60),
        || {
            let r = newest(web);
            (r["run_id"] == run && r["message"].as_str().unwrap_or_default().contains(&format!("at gate {gate}")))
                .then_some(r)
        },
        || format!("{:#}\n{}", newest(web), web.fleet.logs()),
    )
}

#[test]
fn gates_wait_for_an_approver_and_a_webhook_and_one_that_times_out_rolls_back() {
    let web = Web::start("gates", 2);
    web.deployed("v1", "{rolling: {max_parallel: 1}}");
    let hook = Hook::start(503);
    let gated = format!(
        "{{rolling: {{max_parallel: 1}}}}\n      gates:\n        - {{name: qa, at: before_rollout, approval: \
         {{approvers: [admin]}}}}\n        - {{name: ticket, at: before_step, confirm: {{url: '{}', timeout: 1m, \
         interval: 1s}}}}",
        hook.url(PATH)
    );
    let run = web.fleet.submit("v2.yml", &web.pipeline("v2", &gated));

    // Before the rollout: nothing moves until admin approves.
    let r = waiting_at(&web, &run, "qa");
    assert!(r["nodes"].as_array().unwrap().is_empty(), "no node chosen yet: {r:#}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2]);
    let id = r["id"].clone();
    let out = web.fleet.drover(&["rollout", "approve", &id.to_string(), "--gate", "qa", "--comment", "QA signed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Before the second step: the webhook answers 503, so it waits.
    let r = waiting_at(&web, &run, "ticket");
    assert_eq!(r["nodes"][0]["state"], "healthy", "{r:#}");
    assert_eq!(r["nodes"][1]["state"], "waiting", "{r:#}");
    let called = wait_for_or_report(
        "the webhook to be called twice",
        Duration::from_secs(30),
        || {
            let bodies = hook.bodies();
            (bodies.len() >= 2).then(|| bodies[0].clone())
        },
        || format!("{:#?}", hook.bodies()),
    );
    assert_eq!(called["gate"], "ticket", "{called:#}");
    assert_eq!(called["environment"], "staging", "{called:#}");
    assert_eq!(called["step"], 0, "{called:#}");
    assert_eq!(web.versions()[1].as_deref(), Some("v1"), "the second node waits");
    hook.answer(200);
    let done = web.fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(web.versions(), vec![Some("v2".to_string()); 2]);
    let gates = status(&web, &id)["gates"].clone();
    assert_eq!(gates[0]["state"], "opened", "{gates:#}");
    assert_eq!(gates[0]["by"], "admin", "{gates:#}");
    assert_eq!(gates[0]["comment"], "QA signed", "{gates:#}");
    assert_eq!(gates[1]["state"], "opened", "{gates:#}");
    assert_eq!(gates[1]["by"], format!("webhook {}", hook.url(PATH)), "{gates:#}");
    assert_eq!(gates[1]["comment"], "HTTP 200", "{gates:#}");

    // A webhook that never says yes before promotion: refused on its
    // timeout, and the rollout goes back.
    hook.answer(500);
    let timing_out = format!(
        "{{rolling: {{max_parallel: 2}}}}\n      gates:\n        - {{name: cab, at: before_promotion, confirm: {{url: \
         '{}', timeout: 3s, interval: 1s}}}}",
        hook.url(PATH)
    );
    let (run, done) = web.run("v3", &timing_out);
    assert_eq!(done["state"], "failed", "{done:#}");
    assert_eq!(web.versions(), vec![Some("v2".to_string()); 2], "back on v2");
    let r = newest(&web);
    assert_eq!(r["run_id"], run.as_str());
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("gate cab was refused by webhook") && message.contains("HTTP 500"), "{r:#}");
}
