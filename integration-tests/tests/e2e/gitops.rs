//! GitOps (issue 16), end to end: an app whose desired state lives in a
//! real git repository (a bare repository the test pushes to) converges
//! real agents' services to it. A new commit is synced on its own with
//! `--auto-sync`; a commit with an invalid file is reported at
//! file:line:column and changes nothing on the nodes; `drover app diff
//! --revision` shows the plan of a branch that is not merged, per node;
//! `drover app sync --wait` of an app in sync changes nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deploys::{Web, json};
use crate::git::git;
use crate::harness::{text, wait_for_or_report};

/// A build of the service at `version`, with no deploy: the run's id.
fn build(web: &Web, version: &str) -> String {
    let pipeline = format!(
        "name: build-{version}\njobs:\n  build:\n    artifacts: {{paths: [dist]}}\n    steps:\n      - run: mkdir -p \
         dist && cp {script} dist/server.py && echo {version} > dist/VERSION\n",
        script = web.script
    );
    let run = web.fleet.submit(&format!("build-{version}.yml"), &pipeline);
    let status = web.fleet.wait_run(&run, Duration::from_secs(120));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    run
}

/// The desired-state file of the service, deploying `run`'s dist.
fn service_file(web: &Web, run: &str) -> String {
    format!(
        "artifact: {{run: {run}, job: build, path: dist}}\nservice:\n  name: web\n  command: python3 server.py\n  \
         port: {port}\n  health: {{http: /healthz, interval: 1s, healthy_after: 2, timeout: 8s}}\nstrategy: \
         {{rolling: {{max_parallel: 1}}}}\nprogress_deadline: 2m\n",
        port = web.port
    )
}

/// A working copy of a bare repository, which it pushes to.
struct Repo {
    work: PathBuf,
    url: String,
}

impl Repo {
    fn new(dir: &Path) -> Repo {
        let bare = dir.join("desired.git");
        let work = dir.join("desired");
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        std::fs::create_dir_all(work.join("deploy")).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo { work, url: format!("file://{}", bare.display()) }
    }

    /// Commits `text` as deploy/web.yaml on `branch` and pushes it; the commit.
    fn commit(&self, branch: &str, text: &str, message: &str) -> String {
        let exists = std::process::Command::new("git")
            .current_dir(&self.work)
            .args(["rev-parse", "-q", "--verify", &format!("refs/heads/{branch}")])
            .output()
            .unwrap()
            .status
            .success();
        if exists {
            git(&self.work, &["checkout", "-q", branch]);
        } else {
            git(&self.work, &["checkout", "-q", "-b", branch]);
        }
        std::fs::write(self.work.join("deploy/web.yaml"), text).unwrap();
        git(&self.work, &["add", "."]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "-f", "origin", branch]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

fn app(web: &Web) -> Value {
    json(&web.fleet, &["app", "status", "web", "-o", "json"])
}

fn history(web: &Web) -> Vec<Value> {
    json(&web.fleet, &["app", "history", "web", "-o", "json"]).as_array().unwrap().clone()
}

#[test]
fn an_app_syncs_each_new_commit_and_an_invalid_commit_changes_nothing() {
    let web = Web::start("gitops-sync", 2);
    let (v1, v2) = (build(&web, "v1"), build(&web, "v2"));
    let repo = Repo::new(web.fleet.dir.path());
    let first = repo.commit("main", &service_file(&web, &v1), "web v1");
    let out = web.fleet.drover(&[
        "app",
        "create",
        "web",
        "--repo",
        &repo.url,
        "--path",
        "deploy",
        "--env",
        "staging",
        "--poll",
        "1s",
        "--auto-sync",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The first commit is synced on its own: every node serves v1.
    let synced = |commit: &str, version: &str| {
        wait_for_or_report(
            &format!("{version} synced from {commit}"),
            Duration::from_secs(90),
            || {
                let a = app(&web);
                let served = web.versions().iter().all(|v| v.as_deref() == Some(version));
                (served && a["synced_commit"] == commit && a["sync_status"] == "synced" && a["health"] == "healthy")
                    .then_some(a)
            },
            || format!("{:#}\n{:#?}\n{}", app(&web), history(&web), web.fleet.logs()),
        )
    };
    synced(&first, "v1");
    let syncs = history(&web);
    assert_eq!(syncs.len(), 1, "{syncs:#?}");
    assert_eq!((syncs[0]["outcome"].as_str(), syncs[0]["started_by"].as_str()), (Some("succeeded"), Some("auto-sync")));
    assert!(syncs[0]["changes"][0].as_str().unwrap().starts_with("web: missing"), "{syncs:#?}");

    // A commit whose file is invalid: the app says where, and nothing moves.
    let broken = service_file(&web, &v2).replace("  port: ", "  port: not-a-port # ");
    let bad = repo.commit("main", &broken, "a typo");
    let a = wait_for_or_report(
        "the invalid commit to be reported",
        Duration::from_secs(30),
        || {
            let a = app(&web);
            (a["wanted_commit"] == bad.as_str()
                && a["last_error"].as_str().unwrap_or_default().contains("deploy/web.yaml:"))
            .then_some(a)
        },
        || format!("{:#}", app(&web)),
    );
    assert!(a["last_error"].as_str().unwrap().contains("port"), "{a:#}");
    assert_eq!(a["synced_commit"], first.as_str(), "{a:#}");
    assert_eq!(history(&web).len(), 1, "an invalid commit starts no sync");
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2], "the nodes keep what runs");

    // An unmerged branch's plan: both nodes would move to v2.
    let preview = repo.commit("preview", &service_file(&web, &v2), "web v2, for review");
    let plan = json(&web.fleet, &["app", "diff", "web", "--revision", "preview", "-o", "json"]);
    assert_eq!(plan["commit"], preview.as_str(), "{plan:#}");
    let service = &plan["services"][0];
    assert_eq!(
        (service["service"].as_str(), service["status"].as_str()),
        (Some("web"), Some("out_of_sync")),
        "{plan:#}"
    );
    let nodes: Vec<&str> = service["nodes"].as_array().unwrap().iter().map(|n| n["status"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["out_of_sync", "out_of_sync"], "{plan:#}");
    assert!(service["fields"][0].as_str().unwrap().starts_with("artifact: sha256:"), "{plan:#}");
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2], "a plan changes nothing");

    // The fix, on main: synced on its own, a node at a time.
    let started = Instant::now();
    let fixed = repo.commit("main", &service_file(&web, &v2), "web v2");
    synced(&fixed, "v2");
    let took = started.elapsed();
    let syncs = history(&web);
    assert_eq!(syncs.len(), 2, "{syncs:#?}");
    assert_eq!((syncs[0]["commit"].as_str(), syncs[0]["outcome"].as_str()), (Some(fixed.as_str()), Some("succeeded")));
    eprintln!("gitops: commit -> converged on 2 nodes (poll 1s, rolling) in {:.1}s", took.as_secs_f64());

    // A sync by hand of an app in sync changes nothing, and says so.
    let out = web.fleet.drover(&["app", "sync", "web", "--wait", "-o", "json"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let by_hand: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(by_hand["outcome"], "succeeded", "{by_hand:#}");
    assert!(by_hand["message"].as_str().unwrap().contains("nothing to change"), "{by_hand:#}");
    assert!(by_hand["rollouts"].as_array().unwrap().is_empty(), "{by_hand:#}");
    let apps = json(&web.fleet, &["apps", "-o", "json"]);
    assert_eq!(apps[0]["name"], "web", "{apps:#}");
}

#[test]
fn bad_app_settings_are_refused_and_nothing_is_stored() {
    let web = Web::start("gitops-refused", 0);
    // (case, args, what the refusal says)
    let cases: [(&str, &[&str], &str); 3] = [
        ("absolute path", &["--path", "/deploy"], "relative to the root"),
        ("a poll too fast", &["--path", "deploy", "--poll", "10ms"], "out of range"),
        ("detect-only with auto-sync", &["--path", "deploy", "--detect-only", "--auto-sync"], "cannot go with"),
    ];
    for (case, extra, want) in cases {
        let mut args = vec!["app", "create", "web", "--repo", "https://git.example.com/x.git", "--env", "staging"];
        args.extend_from_slice(extra);
        let out = web.fleet.drover(&args);
        assert_eq!(out.status.code(), Some(2), "{case}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{case}: {}", text(&out.stderr));
    }
    assert_eq!(json(&web.fleet, &["apps", "-o", "json"]), serde_json::json!([]));
    let out = web.fleet.drover(&["app", "sync", "nope"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("app nope not found"), "{}", text(&out.stderr));
}
