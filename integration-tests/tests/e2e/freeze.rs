//! Freezes (issue 17), end to end: a deploy to a frozen environment waits,
//! and when the freeze ends only the newest waiting one deploys; a freeze
//! that starts in the middle of a rollout holds its next batch; a
//! rollback passes a freeze; a closed deploy window holds a deploy until an
//! admin overrides it, with a reason kept.

use std::time::Duration;

use serde_json::Value;

use crate::deploys::{Web, json};
use crate::harness::{text, wait_for_or_report};

const ONE_BY_ONE: &str = "{rolling: {max_parallel: 1}}";

fn rollouts(web: &Web) -> Vec<Value> {
    json(&web.fleet, &["rollouts", "-o", "json"]).as_array().unwrap().clone()
}

fn freeze(web: &Web, args: &[&str]) {
    let mut all = vec!["env", "freeze", "staging", "--reason", "the quarter closes"];
    all.extend_from_slice(args);
    let out = web.fleet.drover(&all);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn unfreeze(web: &Web) {
    let out = web.fleet.drover(&["env", "unfreeze", "staging"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_freeze_holds_deploys_and_then_only_the_newest_goes() {
    let web = Web::start("freeze", 2);
    web.deployed("v1", ONE_BY_ONE);
    freeze(&web, &["--for", "1h"]);
    let listed = json(&web.fleet, &["env", "freezes", "-o", "json"]);
    assert_eq!(listed[0]["reason"], "the quarter closes", "{listed:#}");

    // Two deploys wait, saying why.
    let v2 = web.fleet.submit("v2.yml", &web.pipeline("v2", ONE_BY_ONE));
    let v3 = web.fleet.submit("v3.yml", &web.pipeline("v3", ONE_BY_ONE));
    wait_for_or_report(
        "both deploys to wait for the freeze",
        Duration::from_secs(60),
        || {
            let r = rollouts(&web);
            (r.len() == 3 && r[1]["message"].as_str().unwrap_or_default().contains("is frozen")).then_some(())
        },
        || format!("{:#?}", rollouts(&web)),
    );
    let waiting = &rollouts(&web)[1];
    assert!(waiting["message"].as_str().unwrap().contains("the quarter closes (by admin)"), "{waiting:#}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2], "nothing moves while frozen");

    // Thawed: v3 deploys, v2 ends superseded.
    unfreeze(&web);
    let status = web.fleet.wait_run(&v3, Duration::from_secs(120));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let status = web.fleet.wait_run(&v2, Duration::from_secs(30));
    assert_eq!(status["state"], "failed", "{status:#}");
    let old = rollouts(&web).into_iter().find(|r| r["run_id"] == v2.as_str()).unwrap();
    assert!(old["message"].as_str().unwrap().contains("superseded by rollout"), "{old:#}");
    assert_eq!(web.versions(), vec![Some("v3".to_string()); 2]);
}

#[test]
fn a_freeze_in_the_middle_of_a_rollout_holds_its_next_batch_and_a_rollback_passes_it() {
    let web = Web::start("freeze-mid", 2);
    web.deployed("v1", ONE_BY_ONE);
    let v1 =
        json(&web.fleet, &["services", "--env", "staging", "-o", "json"])[0]["version"].as_str().unwrap().to_owned();
    let run = web.fleet.submit("v2.yml", &web.pipeline("v2", ONE_BY_ONE));
    // Frozen while the first node installs: the second waits.
    wait_for_or_report(
        "the first node to be under way",
        Duration::from_secs(60),
        || {
            let r = rollouts(&web).first().cloned()?;
            (r["run_id"] == run.as_str() && r["nodes"][0]["state"] != "waiting").then_some(())
        },
        || format!("{:#?}", rollouts(&web)),
    );
    freeze(&web, &[]);
    let held = wait_for_or_report(
        "the next batch to wait for the freeze",
        Duration::from_secs(60),
        || {
            Some(rollouts(&web)[0].clone())
                .filter(|r| r["message"].as_str().unwrap_or_default().contains("the next waits"))
        },
        || format!("{:#?}", rollouts(&web)),
    );
    assert_eq!(held["nodes"][0]["state"], "healthy", "{held:#}");
    assert_eq!(held["nodes"][1]["state"], "waiting", "{held:#}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rollouts(&web)[0]["nodes"][1]["state"], "waiting", "still held");

    // A rollback is the way out of a freeze; the held rollout goes back.
    let out = web.fleet.drover(&["rollback", "web", "--env", "staging", "--to", &v1, "--follow"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2]);
    let status = web.fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "failed", "{status:#}");
    unfreeze(&web);
}

#[test]
fn a_closed_deploy_window_holds_a_deploy_until_an_audited_override() {
    let web = Web::start("windows", 1);
    web.deployed("v1", ONE_BY_ONE);
    // A deny window that always holds: every minute, for an hour.
    let file = web.fleet.dir.path().join("environments.yml");
    std::fs::write(
        &file,
        "environments:\n  - name: staging\n    selector: {role: web}\n    windows:\n      - deny: \"* * * * *\"\n        \
         for: 1h\n        reason: change freeze\n",
    )
    .unwrap();
    let out = web.fleet.drover(&["env", "apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let env = json(&web.fleet, &["env", "show", "staging", "-o", "json"]);
    assert_eq!(env["open"], false, "{env:#}");

    let run = web.fleet.submit("v2.yml", &web.pipeline("v2", ONE_BY_ONE));
    let waiting = wait_for_or_report(
        "the deploy to wait for the window",
        Duration::from_secs(60),
        || {
            Some(rollouts(&web)[0].clone())
                .filter(|r| r["message"].as_str().unwrap_or_default().contains("change freeze"))
        },
        || format!("{:#?}", rollouts(&web)),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(web.versions(), vec![Some("v1".to_string())], "nothing moves while the window is closed");

    // An override lets this one deploy, and says who and why.
    let id = waiting["id"].to_string();
    let out = web.fleet.drover(&["rollout", "override", &id, "--reason", "INC-1 hotfix"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = web.fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(web.versions(), vec![Some("v2".to_string())]);
    let r = json(&web.fleet, &["rollout", "status", &id, "-o", "json"]);
    assert_eq!((r["overridden_by"].as_str(), r["override_reason"].as_str()), (Some("admin"), Some("INC-1 hotfix")));
    let out = web.fleet.drover(&["rollout", "override", &id, "--reason", "again"]);
    assert!(!out.status.success() && text(&out.stderr).contains("has finished"), "{}", text(&out.stderr));
}
