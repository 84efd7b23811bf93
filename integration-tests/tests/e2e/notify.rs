//! Notifications (issue 17), end to end with the real binaries: `drover
//! notify add`, `list -o json` (the URL's path withheld), `test` against a
//! real HTTP listener that receives the notice as JSON or as a Slack
//! message, a target that answers 500 (exit 1), bad targets (exit 2), and
//! `rm` (exit 4 the second time); and what a rollout, its gate and a
//! freeze tell a target as they happen.

use crate::deploys::json;
use crate::harness::hook::Hook;
use crate::harness::{Fleet, text};

/// Where the targets post: a path like a Slack webhook's, whose last part
/// is its token.
const PATH: &str = "/services/T0/B0/secret-token";

fn fails_with(fleet: &Fleet, args: &[&str], code: i32, says: &str) {
    let out = fleet.drover(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "drover {args:?}: {stderr}");
    assert!(stderr.contains(says), "drover {args:?}: {stderr}");
}

#[test]
fn a_target_is_added_listed_tested_and_removed() {
    let fleet = Fleet::start("notify");
    let hook = Hook::start(200);
    let url = hook.url(PATH);
    let added = json(
        &fleet,
        &[
            "notify",
            "add",
            "ops",
            "--url",
            &url,
            "--min-severity",
            "warning",
            "--env",
            "staging,prod",
            "--kinds",
            "rollout_failed,sync_failed",
            "-o",
            "json",
        ],
    );
    assert_eq!(added["name"], "ops", "{added:#}");

    let listed = json(&fleet, &["notify", "list", "-o", "json"]);
    let shown = format!("http://127.0.0.1:{}/…", hook.port);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    let ops = &listed[0];
    assert_eq!(ops["url"], shown.as_str(), "the path (a Slack webhook's token) is withheld: {ops:#}");
    assert_eq!(ops["format"], "json");
    assert_eq!(ops["min_severity"], "warning");
    assert_eq!(ops["environments"], serde_json::json!(["staging", "prod"]));
    assert_eq!(ops["kinds"], serde_json::json!(["rollout_failed", "sync_failed"]));
    assert_eq!(ops["created_by"], "admin");
    assert!(ops["created_ms"].as_u64().unwrap() > 0, "{ops:#}");
    let out = fleet.drover(&["notify", "list"]);
    assert!(!text(&out.stdout).contains("secret-token"), "{}", text(&out.stdout));

    // A test reaches the listener as JSON, whatever the target's filters.
    let tried = json(&fleet, &["notify", "test", "ops", "-o", "json"]);
    assert_eq!((tried["delivered"].as_bool(), tried["http_status"].as_u64()), (Some(true), Some(200)), "{tried:#}");
    let (head, body) = hook.seen().pop().expect("a request");
    assert!(head.starts_with("POST /services/T0/B0/secret-token HTTP/1.1"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    assert_eq!(body["kind"], "test", "{body:#}");
    assert_eq!(body["environment"], "staging", "{body:#}");
    assert!(body["message"].as_str().unwrap().contains("by admin"), "{body:#}");

    // Replaced by name, as a Slack target: a message with a coloured bar.
    json(&fleet, &["notify", "add", "ops", "--url", &url, "--format", "slack", "-o", "json"]);
    let out = fleet.drover(&["notify", "test", "ops"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ops answered 200"), "{}", text(&out.stdout));
    let (_, body) = hook.seen().pop().expect("a request");
    assert!(body["text"].as_str().unwrap().starts_with("Test: a test of notification target ops"), "{body:#}");
    assert_eq!(body["attachments"][0]["color"], "#439FE0", "{body:#}");

    // A target that answers 500: exit 1, saying so.
    hook.answer(500);
    fails_with(&fleet, &["notify", "test", "ops"], 1, "was not delivered: answered 500");

    // Bad targets: exit 2, saying what to do.
    fails_with(&fleet, &["notify", "add", "x", "--url", "ftp://example.com/x"], 2, "http:// or https://");
    fails_with(
        &fleet,
        &["notify", "add", "x", "--url", &url, "--kinds", "deployed"],
        2,
        "the kinds are rollout_started",
    );
    fails_with(&fleet, &["notify", "test", "nobody"], 4, "`drover notify list` lists them");

    let removed = json(&fleet, &["notify", "rm", "ops", "-o", "json"]);
    assert_eq!(removed["name"], "ops");
    assert_eq!(json(&fleet, &["notify", "list", "-o", "json"]), serde_json::json!([]));
    fails_with(&fleet, &["notify", "rm", "ops"], 4, "no notification target \"ops\"");
}

#[test]
fn a_rollout_a_gate_and_a_freeze_are_told_as_they_happen() {
    use std::time::Duration;

    use crate::deploys::Web;
    use crate::harness::wait_for_or_report;

    let web = Web::start("notify-rollouts", 1);
    let hook = Hook::start(200);
    let out = web.fleet.drover(&["notify", "add", "ops", "--url", &hook.url(PATH), "--env", "staging"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kinds =
        || -> Vec<String> { hook.bodies().iter().map(|b| b["kind"].as_str().unwrap_or_default().to_owned()).collect() };
    let told = |kind: &str| {
        wait_for_or_report(
            &format!("a {kind} notice"),
            Duration::from_secs(60),
            || hook.bodies().into_iter().find(|b| b["kind"] == kind),
            || format!("{:?}\n{}", kinds(), web.fleet.logs()),
        )
    };
    let gated = "{rolling: {max_parallel: 1}}\n      gates:\n        - {name: qa, at: before_promotion, approval: \
                 {approvers: [admin]}}";
    let run = web.fleet.submit("v1.yml", &web.pipeline("v1", gated));
    let started = told("rollout_started");
    assert_eq!((started["environment"].clone(), started["service"].clone()), ("staging".into(), "web".into()));
    assert_eq!(started["severity"], "info", "{started:#}");
    let waiting = told("gate_waiting");
    assert!(waiting["message"].as_str().unwrap().contains("waiting at gate qa"), "{waiting:#}");
    let id = waiting["rollout"].to_string();
    let out = web.fleet.drover(&["rollout", "approve", &id, "--comment", "ship it"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let decided = told("gate_decided");
    assert!(decided["message"].as_str().unwrap().contains("gate qa opened by admin: ship it"), "{decided:#}");
    let done = told("rollout_succeeded");
    assert_eq!(done["rollout"].to_string(), id);
    assert_eq!(web.fleet.wait_run(&run, Duration::from_secs(60))["state"], "succeeded");

    // A freeze, then its end.
    let out = web.fleet.drover(&["env", "freeze", "staging", "--reason", "quarter close"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let frozen = told("freeze_started");
    assert!(frozen["message"].as_str().unwrap().contains("quarter close"), "{frozen:#}");
    let out = web.fleet.drover(&["env", "unfreeze", "staging"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    told("freeze_ended");
}
