//! The downgrade guard (issue 17), end to end: an automatic change (a
//! deploy job, an app's auto-sync) never installs a release built by an
//! older run than what the nodes serve; a change a person asks for (an
//! app sync by hand, a rollback) may.

use std::time::Duration;

use crate::deploys::{Web, json};
use crate::gitops::{Repo, app, create, history};
use crate::harness::{text, wait_for_or_report};

const ROLLING: &str = "{rolling: {max_parallel: 2}}";

#[test]
fn an_automatic_change_never_installs_an_older_build_and_a_person_may() {
    let web = Web::start("downgrade", 2);
    // Run A builds v1 and waits for an approval to deploy; run B deploys v2.
    let held = web.pipeline("v1", ROLLING).replace(
        "  deploy:\n    needs: [build]\n",
        "  deploy:\n    needs: [build]\n    approval: {required: true, approvers: [admin]}\n",
    );
    let old = web.fleet.submit("v1.yml", &held);
    wait_for_or_report(
        "run A's deploy to wait for its approval",
        Duration::from_secs(60),
        || (web.fleet.job(&old, "build")["state"] == "succeeded").then_some(()),
        || web.fleet.logs(),
    );
    web.deployed("v2", ROLLING);

    // A's deploy, approved late, would put the older v1 back: refused.
    let out = web.fleet.drover(&["approve", &old, "deploy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = web.fleet.wait_run(&old, Duration::from_secs(60));
    assert_eq!(status["state"], "failed", "{status:#}");
    let message = web.fleet.job(&old, "deploy")["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("refused as a downgrade") && message.contains(&format!("built by run {old}")),
        "{message}"
    );
    assert_eq!(web.versions(), vec![Some("v2".to_string()); 2], "v2 stays");

    // An app on auto-sync: a commit naming run A's older build is refused
    // too; a sync by hand installs it.
    let repo = Repo::new(web.fleet.dir.path());
    let newest = crate::gitops::build(&web, "v3");
    repo.commit("main", &crate::gitops::service_file(&web, &newest), "web v3");
    create(&web, &repo, &["--auto-sync"]);
    wait_for_or_report(
        "v3 synced",
        Duration::from_secs(90),
        || (web.versions() == vec![Some("v3".to_string()); 2]).then_some(()),
        || format!("{:#}\n{:#?}", app(&web), history(&web)),
    );
    repo.commit("main", &crate::gitops::service_file(&web, &old), "back to run A's build");
    let refused = wait_for_or_report(
        "the auto-sync of an older build to fail",
        Duration::from_secs(60),
        || history(&web).into_iter().find(|s| s["outcome"] == "failed"),
        || format!("{:#}\n{:#?}", app(&web), history(&web)),
    );
    let rollout = refused["rollouts"][0].as_u64().unwrap().to_string();
    let r = json(&web.fleet, &["rollout", "status", &rollout, "-o", "json"]);
    assert!(r["message"].as_str().unwrap().contains("refused as a downgrade"), "{r:#}\n{refused:#}");
    assert_eq!(web.versions(), vec![Some("v3".to_string()); 2], "v3 stays");
    let out = web.fleet.drover(&["app", "sync", "web", "--wait"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2], "asked for by a person: installed");
}
