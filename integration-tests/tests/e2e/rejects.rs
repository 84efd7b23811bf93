//! The reject list (issue 17), end to end: a rejected release is installed
//! by nothing (a rollback to it fails, an app's auto-sync refuses it with
//! the reason), `drover services` marks a node serving one, and an
//! automatic rollback goes past it to the last release that is not
//! rejected.

use std::time::Duration;

use serde_json::Value;

use crate::deploys::{Web, json};
use crate::gitops::{Repo, app, create, history};
use crate::harness::{text, wait_for_or_report};

const ROLLING: &str = "{rolling: {max_parallel: 2}}";

fn reject(web: &Web, release: &str, reason: &str) -> Value {
    json(&web.fleet, &["release", "reject", "web", release, "--reason", reason, "-o", "json"])
}

/// The version and the artifact digest every node serves.
fn serving(web: &Web) -> (String, String) {
    let s = json(&web.fleet, &["services", "--env", "staging", "-o", "json"]);
    (s[0]["version"].as_str().unwrap().to_owned(), s[0]["sha256"].as_str().unwrap().to_owned())
}

#[test]
fn a_rejected_release_is_deployed_by_nothing_and_a_rollback_goes_past_it() {
    let web = Web::start("rejects", 2);
    web.deployed("v1", ROLLING);
    let (v1, _) = serving(&web);
    web.deployed("v2", ROLLING);
    let (v2, _) = serving(&web);

    // Bad input is refused, saying what is wrong.
    for (release, reason, want) in [("not-hex", "x", "neither a version"), (v2.as_str(), " ", "give a --reason")] {
        let out = web.fleet.drover(&["release", "reject", "web", release, "--reason", reason]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    }
    let out = web.fleet.drover(&["release", "unreject", "web", &v2]);
    assert_eq!(out.status.code(), Some(4), "nothing to lift: {}", text(&out.stderr));

    // v2 found bad while it runs: services marks it.
    let r = reject(&web, &v2, "leaks memory under load");
    assert_eq!((r["kind"].as_str(), r["release"].as_str()), (Some("version"), Some(v2.as_str())));
    let services = json(&web.fleet, &["services", "--env", "staging", "-o", "json"]);
    assert_eq!(services[0]["rejected"], "leaks memory under load", "{services:#}");
    let shown = text(&web.fleet.drover(&["services", "--env", "staging"]).stdout);
    assert!(shown.contains("REJECTED: leaks memory under load"), "{shown}");

    // v3 fails its health check on both nodes: they go back past the
    // rejected v2, to v1.
    let (_, status) = web.run("bad-v3", ROLLING);
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2], "back to v1, past the rejected v2");
    assert_eq!(serving(&web).0, v1);

    // Going back to v2 by hand is refused too, with the reason.
    let out = web.fleet.drover(&["rollback", "web", "--env", "staging", "--to", &v2, "--follow"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("is rejected") && said.contains("leaks memory under load"), "{said}");
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2], "nothing moved");
    let listed = json(&web.fleet, &["release", "rejects", "web", "-o", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
}

#[test]
fn auto_sync_will_not_install_a_rejected_release_until_the_reject_is_lifted() {
    let web = Web::start("rejects-sync", 1);
    let (b1, b2) = (crate::gitops::build(&web, "v1"), crate::gitops::build(&web, "v2"));
    let repo = Repo::new(web.fleet.dir.path());
    repo.commit("main", &crate::gitops::service_file(&web, &b1), "web v1");
    create(&web, &repo, &["--auto-sync"]);
    wait_for_or_report(
        "v1 synced",
        Duration::from_secs(90),
        || (web.versions() == [Some("v1".to_string())]).then_some(()),
        || format!("{:#}", app(&web)),
    );
    // v2's artifact rejected by its digest, then named in git.
    let v2_sha =
        json(&web.fleet, &["status", &b2, "-o", "json"])["jobs"][0]["artifact"]["sha256"].as_str().unwrap().to_owned();
    let r = reject(&web, &v2_sha, "CVE-2026-1234 in a dependency");
    assert_eq!(r["kind"], "digest");
    repo.commit("main", &crate::gitops::service_file(&web, &b2), "web v2");
    let failed = wait_for_or_report(
        "the sync of the rejected release to fail",
        Duration::from_secs(60),
        || history(&web).into_iter().find(|s| s["outcome"] == "failed"),
        || format!("{:#}\n{:#?}", app(&web), history(&web)),
    );
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("is rejected") && message.contains("CVE-2026-1234"), "{failed:#}");
    assert_eq!(web.versions(), [Some("v1".to_string())], "what runs stays");

    // Lifted: a sync by hand installs it.
    let out = web.fleet.drover(&["release", "unreject", "web", &v2_sha]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = web.fleet.drover(&["app", "sync", "web", "--wait"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(web.versions(), [Some("v2".to_string())]);

    // Rejected again while it runs: `drover apps` says so.
    reject(&web, &v2_sha, "a second look: CVE-2026-1234 again");
    let listed = json(&web.fleet, &["apps", "-o", "json"]);
    let rejected = listed[0]["rejected"][0].as_str().unwrap_or_default().to_owned();
    assert!(rejected.starts_with("web on web-1: ") && rejected.contains("a second look"), "{listed:#}");
    let shown = text(&web.fleet.drover(&["apps"]).stdout);
    assert!(shown.contains("REJECTED: web on web-1"), "{shown}");
}
