//! One-way doors (issue 17), end to end: a release deployed with
//! `irreversible: true` that fails freezes where it stands rather than
//! roll back, and going back from one, frozen or done, needs `drover
//! rollback --force --reason`.

use std::time::Duration;

use serde_json::Value;

use crate::deploys::{Web, json};
use crate::harness::{text, wait_for_or_report};

const DOOR: &str = "{rolling: {max_parallel: 1}}\n      irreversible: true";

fn newest(web: &Web) -> Value {
    json(&web.fleet, &["rollouts", "-o", "json"])[0].clone()
}

#[test]
fn a_one_way_door_that_fails_freezes_and_going_back_needs_force() {
    let web = Web::start("one-way", 2);
    web.deployed("v1", "{rolling: {max_parallel: 2}}");
    let v1 =
        json(&web.fleet, &["services", "--env", "staging", "-o", "json"])[0]["version"].as_str().unwrap().to_owned();

    // bad-v2 fails its health check on the first node: frozen, not rolled
    // back; the run waits.
    let run = web.fleet.submit("bad-v2.yml", &web.pipeline("bad-v2", DOOR));
    let frozen = wait_for_or_report(
        "the one-way door to freeze",
        Duration::from_secs(90),
        || Some(newest(&web)).filter(|r| r["phase"] == "paused"),
        || format!("{:#}\n{}", newest(&web), web.fleet.logs()),
    );
    let message = frozen["message"].as_str().unwrap();
    assert!(message.contains("frozen where it stands, not rolled back, as a one-way door"), "{frozen:#}");
    assert!(message.contains("--force --reason"), "{frozen:#}");
    assert_eq!(frozen["nodes"][0]["state"], "failed", "{frozen:#}");
    assert_eq!(frozen["nodes"][1]["state"], "waiting", "the second node is not touched: {frozen:#}");
    let status = json(&web.fleet, &["status", &run, "-o", "json"]);
    assert_eq!(status["state"], "running", "the deploy job waits for a person: {status:#}");

    // Going back without --force is refused, saying how.
    let out = web.fleet.drover(&["rollback", "web", "--env", "staging", "--to", &v1]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is a one-way door") && text(&out.stderr).contains("--force --reason"),
        "{}",
        text(&out.stderr)
    );
    let out = web.fleet.drover(&["rollback", "web", "--env", "staging", "--to", &v1, "--force"]);
    assert_eq!(out.status.code(), Some(2), "--force needs --reason: {}", text(&out.stderr));

    // Forced, with a reason: the frozen rollout goes back, and the
    // rollback runs after it.
    let out = web.fleet.drover(&[
        "rollback",
        "web",
        "--env",
        "staging",
        "--to",
        &v1,
        "--force",
        "--reason",
        "the migration is broken",
        "--follow",
    ]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2]);
    let rollback = newest(&web);
    assert!(rollback["started_by"].as_str().unwrap().contains("forced: the migration is broken"), "{rollback:#}");
    let status = web.fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "failed", "{status:#}");

    // A one-way door that succeeds: going back from it needs --force too.
    web.deployed("v3", DOOR);
    let out = web.fleet.drover(&["rollback", "web", "--env", "staging"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("one-way door"), "{}", text(&out.stderr));
    let out =
        web.fleet.drover(&["rollback", "web", "--env", "staging", "--force", "--reason", "v3 is slow", "--follow"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2]);
}
