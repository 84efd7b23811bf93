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
use crate::harness::{Etcd, Fleet, http_get, text, wait_for_or_report};

/// A build of the service at `version`, with no deploy: the run's id.
pub(crate) fn build(web: &Web, version: &str) -> String {
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
pub(crate) fn service_file(web: &Web, run: &str) -> String {
    named_service_file("web", web.port, run, 2)
}

/// A desired-state file of service `name` on `port`, deploying `run`'s
/// dist, healthy after `checks` checks a second apart.
fn named_service_file(name: &str, port: u16, run: &str, checks: u32) -> String {
    format!(
        "artifact: {{run: {run}, job: build, path: dist}}\nservice:\n  name: {name}\n  command: python3 server.py\n  \
         port: {port}\n  health: {{http: /healthz, interval: 1s, healthy_after: {checks}, timeout: 8s}}\nstrategy: \
         {{rolling: {{max_parallel: 1}}}}\nprogress_deadline: 2m\n"
    )
}

/// A working copy of a bare repository, which it pushes to.
pub(crate) struct Repo {
    pub(crate) work: PathBuf,
    pub(crate) url: String,
}

impl Repo {
    pub(crate) fn new(dir: &Path) -> Repo {
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
    pub(crate) fn commit(&self, branch: &str, text: &str, message: &str) -> String {
        self.commit_files(branch, &[("deploy/web.yaml", text)], message)
    }

    /// Commits each (path, text) on `branch` and pushes it; the commit.
    pub(crate) fn commit_files(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
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
        for (path, text) in files {
            let path = self.work.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        git(&self.work, &["add", "."]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "-f", "origin", branch]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

pub(crate) fn app(web: &Web) -> Value {
    json(&web.fleet, &["app", "status", "web", "-o", "json"])
}

pub(crate) fn history(web: &Web) -> Vec<Value> {
    json(&web.fleet, &["app", "history", "web", "-o", "json"]).as_array().unwrap().clone()
}

#[test]
fn an_app_syncs_each_new_commit_and_an_invalid_commit_changes_nothing() {
    let web = Web::start("gitops-sync", 2);
    let (v1, v2) = (build(&web, "v1"), build(&web, "v2"));
    let repo = Repo::new(web.fleet.dir.path());
    let first = repo.commit("main", &service_file(&web, &v1), "web v1");
    create(&web, &repo, &["--poll", "1s", "--auto-sync"]);

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

/// Kills node `node`'s supervisors of the service, and the service with them.
pub(crate) fn stop_by_hand(web: &Web, node: &str) {
    let pattern = format!("--supervise {}/services/{node}/", web.fleet.dir.path().display());
    let status = std::process::Command::new("pkill").args(["-KILL", "-f", "--", &pattern]).status().unwrap();
    assert!(status.success(), "no supervisor matched {pattern}");
}

/// `drover app create web` of `repo`'s deploy/ into staging, with `flags`
/// (polled every second unless they say otherwise).
pub(crate) fn create(web: &Web, repo: &Repo, flags: &[&str]) {
    let mut args = vec!["app", "create", "web", "--repo", &repo.url, "--path", "deploy", "--env", "staging"];
    if !flags.contains(&"--poll") {
        args.extend_from_slice(&["--poll", "1s"]);
    }
    args.extend_from_slice(flags);
    let out = web.fleet.drover(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn self_heal_puts_back_what_drifts_and_detect_only_only_reports_it() {
    let fleet = Fleet::start_with("gitops-heal", &["--metrics-listen", "127.0.0.1:0"]);
    let web = Web::on(fleet, 2, "role=web", "staging");
    let (v1, v2) = (build(&web, "v1"), build(&web, "v2"));
    let repo = Repo::new(web.fleet.dir.path());
    repo.commit("main", &service_file(&web, &v1), "web v1");
    create(&web, &repo, &["--auto-sync", "--self-heal"]);
    let serving = |want: [&str; 2], what: &str| {
        wait_for_or_report(
            what,
            Duration::from_secs(90),
            || (web.versions() == want.map(|v| Some(v.to_string()))).then_some(()),
            || format!("{:?}\n{:#}\n{:#?}\n{}", web.versions(), app(&web), history(&web), web.fleet.logs()),
        )
    };
    serving(["v1", "v1"], "v1 synced");
    let head = repo.commit("main", &service_file(&web, &v2), "web v2");
    serving(["v2", "v2"], "v2 synced");
    let in_sync = || {
        wait_for_or_report(
            "the app in sync",
            Duration::from_secs(30),
            || {
                let a = app(&web);
                (a["sync_status"] == "synced" && a["synced_commit"] == head.as_str() && a["syncing"] == 0).then_some(a)
            },
            || format!("{:#}", app(&web)),
        )
    };
    in_sync();

    // Someone puts the service back on v1 by hand: self-heal returns it to
    // what the commit declares.
    let out = web.fleet.drover(&["rollback", "web", "--env", "staging", "--follow"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let started = Instant::now();
    serving(["v2", "v2"], "self-heal to undo the rollback");
    eprintln!("gitops: a node on another release healed in {:.1}s", started.elapsed().as_secs_f64());
    in_sync();

    // A service stopped by hand on one node is started again.
    stop_by_hand(&web, "web-1");
    let started = Instant::now();
    wait_for_or_report(
        "web-1 to be down",
        Duration::from_secs(10),
        || web.versions()[0].is_none().then_some(()),
        || format!("{:?}", web.versions()),
    );
    serving(["v2", "v2"], "self-heal to start web-1's service again");
    eprintln!("gitops: a stopped service healed in {:.1}s", started.elapsed().as_secs_f64());
    let a = in_sync();
    assert_eq!(a["drift_since_ms"], 0, "{a:#}");
    let syncs = history(&web);
    let healed: Vec<&Value> = syncs.iter().filter(|s| s["started_by"] == "self-heal").collect();
    assert!(healed.len() >= 2, "a self-heal sync for each drift: {syncs:#?}");
    assert!(healed.iter().all(|s| s["outcome"] == "succeeded" && s["commit"] == head.as_str()), "{syncs:#?}");

    // Detect-only: the same drift is reported, in `drover apps` and the
    // metrics, and left as it is.
    let out = web.fleet.drover(&["app", "rm", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    create(&web, &repo, &["--detect-only"]);
    wait_for_or_report(
        "the new app's first look",
        Duration::from_secs(30),
        || (app(&web)["sync_status"] == "synced").then_some(()),
        || format!("{:#}", app(&web)),
    );
    stop_by_hand(&web, "web-2");
    let a = wait_for_or_report(
        "the drift to be reported",
        Duration::from_secs(30),
        || {
            let a = json(&web.fleet, &["apps", "-o", "json"])[0].clone();
            (a["sync_status"] == "out_of_sync" && a["health"] == "degraded").then_some(a)
        },
        || format!("{:#}", app(&web)),
    );
    assert!(a["drift"][0].as_str().unwrap().contains("web-2 unhealthy"), "{a:#}");
    let metrics = || http_get(web.fleet.metrics[0].as_ref().unwrap(), "/metrics").unwrap().1;
    wait_for_or_report(
        "the metrics to count the app out of sync",
        Duration::from_secs(10),
        || {
            (metrics().contains("drover_apps_out_of_sync 1") && metrics().contains("drover_app_drift_total 3"))
                .then_some(())
        },
        || metrics().lines().filter(|l| l.contains("app")).collect::<Vec<_>>().join("\n"),
    );
    // Several reconciles later, nothing was changed.
    let seen = a["last_fetch_ms"].as_u64().unwrap();
    wait_for_or_report(
        "three more reconciles",
        Duration::from_secs(30),
        || (app(&web)["last_fetch_ms"].as_u64().unwrap() > seen + 2_500).then_some(()),
        || format!("{:#}", app(&web)),
    );
    assert_eq!(web.versions(), [Some("v2".to_string()), None], "detect-only changes nothing");
    assert!(history(&web).is_empty(), "{:#?}", history(&web));
    let log = std::fs::read_to_string(&web.fleet.coordinator(0).log).unwrap();
    let events: Vec<&str> = log.lines().filter(|l| l.contains("drift detected")).collect();
    assert!(
        events.last().is_some_and(|e| e.contains("detect_only=true") && e.contains("web-2 unhealthy")),
        "{events:#?}"
    );
}

/// Milliseconds from now until any node serves `version`.
fn until_first_serves(web: &Web, version: &str) -> Duration {
    let started = Instant::now();
    wait_for_or_report(
        &format!("a node to serve {version}"),
        Duration::from_secs(60),
        || web.versions().iter().any(|v| v.as_deref() == Some(version)).then_some(()),
        || format!("{:?}\n{:#}\n{}", web.versions(), app(web), web.fleet.logs()),
    );
    started.elapsed()
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// How many pushes each figure of the webhook test takes (10 for the
/// issue's figures: `DROVER_GITOPS_SAMPLES=10`).
fn samples() -> usize {
    std::env::var("DROVER_GITOPS_SAMPLES").ok().and_then(|n| n.parse().ok()).unwrap_or(2)
}

#[test]
fn a_webhook_push_converges_within_seconds_and_a_pinned_rollback_holds_against_auto_sync() {
    let fleet = Fleet::start_with("gitops-webhook", &["--webhook-listen", "127.0.0.1:0"]);
    let web = Web::on(fleet, 2, "role=web", "staging");
    // Builds in the order they are pushed, each newer than the last: an
    // auto-sync never installs an older build (the downgrade guard).
    let v1_run = build(&web, "v1");
    let pushes: Vec<String> = (0..samples()).map(|i| build(&web, &format!("w{i}"))).collect();
    let v3_run = build(&web, "v3");
    let polls: Vec<String> = (0..samples()).map(|i| build(&web, &format!("p{i}"))).collect();
    let repo = Repo::new(web.fleet.dir.path());
    let first = repo.commit("main", &service_file(&web, &v1_run), "web v1");
    let secret = web.fleet.dir.path().join("hook.secret");
    std::fs::write(&secret, crate::webhooks::SECRET).unwrap();
    // The repository is registered for its webhook; its pipeline runs are
    // not the point (it has no .drover.yml).
    let out = web.fleet.drover(&[
        "repo",
        "add",
        "desired",
        "--url",
        &repo.url,
        "--poll",
        "24h",
        "--webhook-secret-file",
        secret.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    create(&web, &repo, &["--poll", "24h", "--auto-sync"]);
    wait_for_or_report(
        "the first commit synced",
        Duration::from_secs(60),
        || (app(&web)["synced_commit"] == first.as_str() && app(&web)["syncing"] == 0).then_some(()),
        || format!("{:#}", app(&web)),
    );

    // Each push, announced by a signed webhook, converges long before a
    // poll of 24h would: timed from the push to the first node serving it.
    let mut took = Vec::new();
    let mut head = first.clone();
    for (i, run) in pushes.iter().enumerate() {
        let version = format!("w{i}");
        let before = head.clone();
        let pushed = Instant::now();
        head = repo.commit("main", &service_file(&web, run), &format!("web {version}, push {i}"));
        let body = format!(r#"{{"ref":"refs/heads/main","before":"{before}","after":"{head}"}}"#).into_bytes();
        let signature = crate::webhooks::sign(&body);
        let (code, answer) = crate::webhooks::post(
            &web.fleet,
            "/hooks/desired",
            &crate::webhooks::github("push", &format!("d-{i}"), Some(signature)),
            &body,
        );
        assert_eq!(code, 202, "{answer}");
        until_first_serves(&web, &version);
        took.push(pushed.elapsed());
        wait_for_or_report(
            "every node on it",
            Duration::from_secs(60),
            || {
                (web.versions() == vec![Some(version.to_string()); 2] && app(&web)["synced_commit"] == head.as_str())
                    .then_some(())
            },
            || format!("{:?}\n{:#}", web.versions(), app(&web)),
        );
    }
    eprintln!(
        "gitops: push -> first node serving, by webhook: p50 {:.2}s of {} ({:?})",
        p50(took.clone()).as_secs_f64(),
        took.len(),
        took
    );

    // A rollback to the first commit pins the app there.
    let out = web.fleet.drover(&["app", "rollback", "web", "--to", &first, "--wait", "-o", "json"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let sync: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (sync["commit"].as_str(), sync["outcome"].as_str()),
        (Some(first.as_str()), Some("succeeded")),
        "{sync:#}"
    );
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2]);
    let a = app(&web);
    assert_eq!((a["pinned_commit"].as_str(), a["pinned_by"].as_str()), (Some(first.as_str()), Some("admin")), "{a:#}");

    // A new commit arrives, announced, and auto-sync leaves the pin alone.
    let syncs = history(&web).len();
    let newest = repo.commit("main", &service_file(&web, &v3_run), "web v3");
    let body = format!(r#"{{"ref":"refs/heads/main","before":"{head}","after":"{newest}"}}"#).into_bytes();
    let signature = crate::webhooks::sign(&body);
    let (code, answer) = crate::webhooks::post(
        &web.fleet,
        "/hooks/desired",
        &crate::webhooks::github("push", "d-pin", Some(signature)),
        &body,
    );
    assert_eq!(code, 202, "{answer}");
    let fetched = a["last_fetch_ms"].as_u64().unwrap();
    wait_for_or_report(
        "the pinned app to fetch again",
        Duration::from_secs(30),
        || (app(&web)["last_fetch_ms"].as_u64().unwrap() > fetched).then_some(()),
        || format!("{:#}", app(&web)),
    );
    let a = app(&web);
    assert_eq!(
        (a["wanted_commit"].as_str(), a["sync_status"].as_str()),
        (Some(first.as_str()), Some("synced")),
        "{a:#}"
    );
    assert_eq!(history(&web).len(), syncs, "no sync moved the pin");
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2], "the rollback holds");
    let apps = web.fleet.drover(&["apps"]);
    assert!(text(&apps.stdout).contains("(pin)"), "{}", text(&apps.stdout));

    // Unpinned, the app follows its branch again: v3.
    let out = web.fleet.drover(&["app", "unpin", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    until_first_serves(&web, "v3");
    let out = web.fleet.drover(&["app", "unpin", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not pinned"), "{}", text(&out.stderr));

    // The same, by polling every 5s and no webhook.
    let out = web.fleet.drover(&["app", "rm", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    create(&web, &repo, &["--poll", "5s", "--auto-sync"]);
    let mut took = Vec::new();
    for (i, run) in polls.iter().enumerate() {
        let version = format!("p{i}");
        // Measuring, pushes land at phases spread over the poll's period;
        // otherwise this loop's own rhythm would pick one.
        if samples() > 2 {
            std::thread::sleep(Duration::from_millis((i as u64 * 1_700) % 5_000));
        }
        let pushed = Instant::now();
        repo.commit("main", &service_file(&web, run), &format!("web {version}, poll {i}"));
        until_first_serves(&web, &version);
        took.push(pushed.elapsed());
        wait_for_or_report(
            "every node on it",
            Duration::from_secs(60),
            || (web.versions() == vec![Some(version.to_string()); 2]).then_some(()),
            || format!("{:?}\n{:#}", web.versions(), app(&web)),
        );
    }
    eprintln!(
        "gitops: push -> first node serving, by a 5s poll: p50 {:.2}s of {} ({:?})",
        p50(took.clone()).as_secs_f64(),
        took.len(),
        took
    );
}

#[test]
fn an_app_waits_for_the_apps_it_depends_on_and_a_cycle_is_refused() {
    let web = Web::start("gitops-order", 2);
    let db_port = crate::harness::free_port();
    let (v1, v2) = (build(&web, "v1"), build(&web, "v2"));
    let repo = Repo::new(web.fleet.dir.path());
    // db is slow to become healthy (4 checks a node, a node at a time).
    let both = |run: &str| {
        [("apps/db/db.yaml", named_service_file("db", db_port, run, 4)), ("apps/web/web.yaml", service_file(&web, run))]
    };
    let files = both(&v1);
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    repo.commit_files("main", &refs, "db and web v1");
    let create = |name: &str, extra: &[&str]| {
        let path = format!("apps/{name}");
        let mut args =
            vec!["app", "create", name, "--repo", &repo.url, "--path", &path, "--env", "staging", "--poll", "1s"];
        args.extend_from_slice(extra);
        web.fleet.drover(&args)
    };
    // web first, so that nothing but its dependency orders them.
    let out = create("web", &["--auto-sync", "--depends-on", "db"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let blocked = wait_for_or_report(
        "web to wait for db, which is not registered yet",
        Duration::from_secs(30),
        || Some(app(&web)["blocked"].as_str()?.to_string()).filter(|b| !b.is_empty()),
        || format!("{:#}", app(&web)),
    );
    assert!(blocked.contains("app db (not registered)"), "{blocked}");
    let out = create("db", &["--auto-sync"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A cycle is refused, naming it, and nothing is stored.
    let out = create("x", &["--depends-on", "y"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = create("y", &["--depends-on", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cycle: y -> x -> y"), "{}", text(&out.stderr));
    let out = web.fleet.drover(&["app", "rm", "x"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // One commit changes both: db converges first, then web.
    let synced_both = |commit: &str| {
        wait_for_or_report(
            "both apps synced",
            Duration::from_secs(120),
            || {
                let apps = json(&web.fleet, &["apps", "-o", "json"]);
                let done = apps
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["synced_commit"] == commit && a["health"] == "healthy")
                    .count();
                (done == 2).then_some(())
            },
            || format!("{:#}\n{}", json(&web.fleet, &["apps", "-o", "json"]), web.fleet.logs()),
        )
    };
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    synced_both(&first);
    let files = both(&v2);
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let second = repo.commit_files("main", &refs, "db and web v2");
    synced_both(&second);
    let last = |name: &str| json(&web.fleet, &["app", "history", name, "-o", "json"])[0].clone();
    let (db, web_sync) = (last("db"), last("web"));
    assert_eq!((db["commit"].as_str(), web_sync["commit"].as_str()), (Some(second.as_str()), Some(second.as_str())));
    assert!(
        web_sync["started_ms"].as_u64().unwrap() >= db["finished_ms"].as_u64().unwrap(),
        "web synced only once db had: db {db:#}, web {web_sync:#}"
    );
}

#[test]
fn an_app_keeps_what_runs_when_its_repository_is_gone_follows_a_force_push_and_runs_one_sync_at_a_time() {
    let web = Web::start("gitops-faults", 1);
    let (v1, v2, v3) = (build(&web, "v1"), build(&web, "v2"), build(&web, "v3"));
    let repo = Repo::new(web.fleet.dir.path());
    let first = repo.commit("main", &service_file(&web, &v1), "web v1");
    create(&web, &repo, &["--auto-sync"]);
    let synced = |commit: &str, version: &str| {
        wait_for_or_report(
            &format!("{version} synced from {commit}"),
            Duration::from_secs(60),
            || {
                let a = app(&web);
                (web.versions() == [Some(version.to_string())] && a["synced_commit"] == commit && a["syncing"] == 0)
                    .then_some(a)
            },
            || format!("{:?}\n{:#}\n{:#?}", web.versions(), app(&web), history(&web)),
        )
    };
    synced(&first, "v1");

    // The repository goes away: the app says so and what runs stays.
    let bare = web.fleet.dir.path().join("desired.git");
    let away = web.fleet.dir.path().join("desired.git.away");
    std::fs::rename(&bare, &away).unwrap();
    let a = wait_for_or_report(
        "the unreachable repository to be reported",
        Duration::from_secs(30),
        || Some(app(&web)).filter(|a| a["last_error"].as_str().unwrap_or_default().contains("desired.git")),
        || format!("{:#}", app(&web)),
    );
    assert_eq!(a["synced_commit"], first.as_str(), "{a:#}");
    assert_eq!(web.versions(), [Some("v1".to_string())]);
    std::fs::rename(&away, &bare).unwrap();
    wait_for_or_report(
        "the error to clear once the repository is back",
        Duration::from_secs(30),
        || app(&web)["last_error"].as_str().is_some_and(str::is_empty).then_some(()),
        || format!("{:#}", app(&web)),
    );

    // A force-push replaces main's history: the app follows the new head.
    let second = repo.commit("main", &service_file(&web, &v2), "web v2");
    synced(&second, "v2");
    git(&repo.work, &["reset", "-q", "--hard", &first]);
    let rewritten = repo.commit("main", &service_file(&web, &v3), "web v3, history rewritten");
    synced(&rewritten, "v3");
    let syncs = history(&web);
    assert_eq!(syncs[0]["commit"], rewritten.as_str(), "the new head is recorded: {syncs:#?}");

    // Two syncs asked for while one runs: the second waits for the first.
    let out = web.fleet.drover(&["app", "rm", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    create(&web, &repo, &[]);
    let pushed = repo.commit("main", &service_file(&web, &v1), "web v1 again");
    wait_for_or_report(
        "the app to see the new commit",
        Duration::from_secs(30),
        || (app(&web)["wanted_commit"] == pushed.as_str() && app(&web)["sync_status"] == "out_of_sync").then_some(()),
        || format!("{:#}", app(&web)),
    );
    let first_sync = web
        .fleet
        .drover_command(&["app", "sync", "web", "--wait", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_or_report(
        "the first sync to run",
        Duration::from_secs(30),
        || (app(&web)["syncing"].as_u64() > Some(0)).then_some(()),
        || format!("{:#}", app(&web)),
    );
    let out = web.fleet.drover(&["app", "sync", "web", "--wait", "-o", "json"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let second_sync: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = first_sync.wait_with_output().unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let first_sync: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        second_sync["started_ms"].as_u64().unwrap() >= first_sync["finished_ms"].as_u64().unwrap(),
        "serialized: {first_sync:#} then {second_sync:#}"
    );
    assert_eq!(first_sync["rollouts"].as_array().unwrap().len(), 1, "{first_sync:#}");
    assert!(second_sync["message"].as_str().unwrap().contains("nothing to change"), "{second_sync:#}");
    assert_eq!(web.versions(), [Some("v1".to_string())]);

    // Push-based: a sync of a commit CI built, not yet on the app's branch.
    let candidate = repo.commit("candidate", &service_file(&web, &v2), "web v2, a candidate");
    let out = web.fleet.drover(&["app", "sync", "web", "--revision", &candidate, "--wait", "-o", "json"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((pushed["commit"].as_str(), pushed["outcome"].as_str()), (Some(candidate.as_str()), Some("succeeded")));
    assert_eq!(web.versions(), [Some("v2".to_string())]);
    let out = web.fleet.drover(&["app", "sync", "web", "--revision", "-oops"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn a_sync_survives_a_leader_failover_on_etcd() {
    let etcd = Etcd::start("gitops-ha", 1);
    let mut web = Web::on(Fleet::start_ha("gitops-ha", &etcd, 2), 2, "role=web", "staging");
    let v1 = build(&web, "v1");
    let repo = Repo::new(web.fleet.dir.path());
    // A canary that waits for a promotion holds the sync half way.
    let canary = service_file(&web, &v1)
        .replace("{rolling: {max_parallel: 1}}", "{canary: {steps: [{nodes: 1}, {pause: manual}, {nodes: 100%}]}}");
    let commit = repo.commit("main", &canary, "web v1, by canary");
    create(&web, &repo, &["--auto-sync"]);
    let held = wait_for_or_report(
        "the sync's canary to wait for a promotion",
        Duration::from_secs(60),
        || {
            let r = json(&web.fleet, &["rollouts", "-o", "json"]).get(0).cloned()?;
            (r["hold"] == "promote").then_some(r)
        },
        || format!("{:#}\n{}", app(&web), web.fleet.logs()),
    );
    let leader = web.fleet.wait_leader();
    web.fleet.kill_coordinator(leader);
    wait_for_or_report(
        "another leader",
        Duration::from_secs(60),
        || web.fleet.leader().filter(|l| *l != leader),
        || web.fleet.logs(),
    );
    // The new leader keeps the sync where it was; the promotion ends it.
    wait_for_or_report(
        "the new leader to take the promotion",
        Duration::from_secs(60),
        || web.fleet.drover(&["rollout", "promote", &held["id"].to_string()]).status.success().then_some(()),
        || web.fleet.logs(),
    );
    let a = wait_for_or_report(
        "the sync to end",
        Duration::from_secs(60),
        || {
            Some(app(&web))
                .filter(|a| a["synced_commit"] == commit.as_str() && a["syncing"] == 0 && a["health"] == "healthy")
        },
        || format!("{:#}\n{:#?}", app(&web), history(&web)),
    );
    assert_eq!(a["drift"], serde_json::json!([]), "{a:#}");
    let syncs = history(&web);
    assert_eq!(syncs.len(), 1, "one sync, resumed, not started again: {syncs:#?}");
    assert_eq!(syncs[0]["outcome"], "succeeded", "{syncs:#?}");
    assert_eq!(syncs[0]["rollouts"], serde_json::json!([held["id"]]), "{syncs:#?}");
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2]);
}

#[test]
fn prune_stops_a_service_removed_from_git_and_without_it_the_service_is_shown_as_orphaned() {
    let web = Web::start("gitops-prune", 1);
    let v1 = build(&web, "v1");
    let repo = Repo::new(web.fleet.dir.path());
    // Four ports at once: ports bound and freed one after another may repeat.
    let port = crate::harness::free_port;
    let services: Vec<(&str, &str, u16)> =
        vec![("keep", "k1", port()), ("keep", "k2", port()), ("prune", "p1", port()), ("prune", "p2", port())];
    let files: Vec<(String, String)> = services
        .iter()
        .map(|(app, name, port)| (format!("apps/{app}/{name}.yaml"), named_service_file(name, *port, &v1, 1)))
        .collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    repo.commit_files("main", &refs, "four services");
    for (app, flags) in [("keep", vec!["--auto-sync"]), ("prune", vec!["--auto-sync", "--prune"])] {
        let path = format!("apps/{app}");
        let mut args =
            vec!["app", "create", app, "--repo", &repo.url, "--path", &path, "--env", "staging", "--poll", "1s"];
        args.extend_from_slice(&flags);
        let out = web.fleet.drover(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let addr = web.nodes[0].1.clone();
    let serves = |port: u16| crate::deploys::get(&addr, port, "/version").is_some();
    wait_for_or_report(
        "the four services to serve",
        Duration::from_secs(90),
        || services.iter().all(|(_, _, port)| serves(*port)).then_some(()),
        || format!("{:#}", json(&web.fleet, &["apps", "-o", "json"])),
    );

    // Both apps lose their second service in one commit.
    git(&repo.work, &["rm", "-q", "apps/keep/k2.yaml", "apps/prune/p2.yaml"]);
    git(&repo.work, &["commit", "-q", "-m", "k2 and p2 go"]);
    git(&repo.work, &["push", "-q", "origin", "main"]);
    let head = git(&repo.work, &["rev-parse", "HEAD"]);
    let app_of = |name: &str| json(&web.fleet, &["app", "status", name, "-o", "json"]);
    wait_for_or_report(
        "the prune app to stop p2",
        Duration::from_secs(60),
        || (app_of("prune")["synced_commit"] == head.as_str() && !serves(services[3].2)).then_some(()),
        || format!("{:#}\n{}", app_of("prune"), web.fleet.logs()),
    );
    let sync = json(&web.fleet, &["app", "history", "prune", "-o", "json"])[0].clone();
    assert_eq!(sync["outcome"], "succeeded", "{sync:#}");
    assert_eq!(sync["changes"], serde_json::json!(["p2: orphaned (no file declares it)"]), "{sync:#}");
    let listed = json(&web.fleet, &["services", "-o", "json"]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert!(!names.contains(&"p2") && names.contains(&"k2"), "{names:?}");
    assert!(serves(services[2].2), "p1 stays");

    // Without --prune, k2 runs on and is shown as orphaned.
    let keep = wait_for_or_report(
        "the keep app to see its orphan",
        Duration::from_secs(30),
        || {
            Some(app_of("keep"))
                .filter(|a| a["wanted_commit"] == head.as_str() && a["drift"].as_array().is_some_and(|d| !d.is_empty()))
        },
        || format!("{:#}", app_of("keep")),
    );
    assert_eq!(keep["drift"], serde_json::json!(["k2: orphaned (no file declares it)"]), "{keep:#}");
    assert_eq!(keep["sync_status"], "synced", "an orphan alone is not out of sync: {keep:#}");
    assert!(serves(services[1].2), "k2 keeps serving");
    let diff = json(&web.fleet, &["app", "diff", "keep", "-o", "json"]);
    let orphan = diff["services"].as_array().unwrap().iter().find(|s| s["service"] == "k2").cloned().unwrap();
    assert_eq!((orphan["status"].as_str(), orphan["file"].as_str()), (Some("orphaned"), Some("")), "{diff:#}");
}

/// A build of `version` by the pipeline named `web-build`: the run's id.
pub(crate) fn web_build(web: &Web, version: &str) -> String {
    let pipeline = format!(
        "name: web-build\njobs:\n  build:\n    artifacts: {{paths: [dist]}}\n    steps:\n      - run: mkdir -p dist \
         && cp {script} dist/server.py && echo {version} > dist/VERSION\n",
        script = web.script
    );
    let run = web.fleet.submit(&format!("web-build-{version}.yml"), &pipeline);
    let status = web.fleet.wait_run(&run, Duration::from_secs(120));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    run
}

#[test]
fn a_pipelines_new_artifact_is_committed_into_the_desired_state_and_then_synced() {
    let web = Web::start("gitops-update", 1);
    let v1 = web_build(&web, "v1");
    let repo = Repo::new(web.fleet.dir.path());
    let following = |write: &str| {
        service_file(&web, &v1).replace(
            "service:\n",
            &format!("update: {{pipeline: web-build, job: build, write: {write}}}  # follow CI\nservice:\n"),
        )
    };
    repo.commit("main", &following("commit"), "web follows web-build");
    create(&web, &repo, &["--auto-sync"]);
    let serving = |version: &str| {
        wait_for_or_report(
            &format!("{version} to serve"),
            Duration::from_secs(90),
            || (web.versions() == [Some(version.to_string())]).then_some(()),
            || format!("{:?}\n{:#}\n{:#?}\n{}", web.versions(), app(&web), history(&web), web.fleet.logs()),
        )
    };
    serving("v1");

    // CI builds v2: Drover commits it into the file, then syncs that commit.
    let v2 = web_build(&web, "v2");
    serving("v2");
    let bare = web.fleet.dir.path().join("desired.git");
    let log = git(&bare, &["log", "-1", "--format=%an <%ae>%n%B", "main"]);
    assert!(log.starts_with("Drover <drover@localhost>\nDeploy web: run"), "{log}");
    assert!(log.contains(&format!("run {v2} of pipeline web-build")), "{log}");
    let file = git(&bare, &["show", "main:deploy/web.yaml"]);
    assert!(file.starts_with(&format!("artifact: {{run: {v2}, job: build, path: dist, sha256: ")), "{file}");
    assert!(file.contains("write: commit}  # follow CI\n"), "the rest of the file is kept: {file}");
    let head = git(&bare, &["rev-parse", "main"]);
    let a = wait_for_or_report(
        "the written commit to be synced",
        Duration::from_secs(30),
        || Some(app(&web)).filter(|a| a["synced_commit"] == head.as_str()),
        || format!("{:#}", app(&web)),
    );
    assert_eq!(a["last_error"], "", "{a:#}");

    // In branch mode each build goes to a branch of its own, for review,
    // and main stays as it is.
    git(&repo.work, &["pull", "-q", "--rebase", "origin", "main"]);
    let text =
        std::fs::read_to_string(repo.work.join("deploy/web.yaml")).unwrap().replace("write: commit", "write: branch");
    let main = repo.commit("main", &text, "updates for review");
    wait_for_or_report(
        "the branch-mode commit to be synced",
        Duration::from_secs(30),
        || Some(app(&web)).filter(|a| a["synced_commit"] == main.as_str()),
        || format!("{:#}", app(&web)),
    );
    let v3 = web_build(&web, "v3");
    let branch = format!("drover/update/web/web/run-{v3}");
    let proposed = wait_for_or_report(
        "the update branch",
        Duration::from_secs(30),
        || {
            let out = std::process::Command::new("git")
                .current_dir(&bare)
                .args(["show", &format!("{branch}:deploy/web.yaml")])
                .output()
                .unwrap();
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
        || format!("{:#}\n{}", app(&web), web.fleet.logs()),
    );
    assert!(proposed.contains(&format!("run: {v3},")), "{proposed}");
    assert_eq!(git(&bare, &["rev-parse", "main"]), main, "main is not touched");
    assert_eq!(web.versions(), [Some("v2".to_string())], "nothing deployed until it is merged");
}

#[test]
fn a_stuck_sync_is_replaced_by_a_newer_commit_and_ended_past_its_timeout() {
    let web = Web::start("gitops-stuck", 2);
    let (v1, v2, v3, v4) = (build(&web, "v1"), build(&web, "v2"), build(&web, "v3"), build(&web, "v4"));
    let repo = Repo::new(web.fleet.dir.path());
    let stuck = |run: &str| {
        service_file(&web, run)
            .replace("{rolling: {max_parallel: 1}}", "{canary: {steps: [{nodes: 1}, {pause: manual}, {nodes: 100%}]}}")
    };
    repo.commit("main", &service_file(&web, &v1), "web v1");
    create(&web, &repo, &["--auto-sync"]);
    let serving = |want: [&str; 2], what: &str| {
        wait_for_or_report(
            what,
            Duration::from_secs(90),
            || (web.versions() == want.map(|v| Some(v.to_string()))).then_some(()),
            || format!("{:?}\n{:#}\n{:#?}", web.versions(), app(&web), history(&web)),
        )
    };
    serving(["v1", "v1"], "v1 synced");

    // v2 by a canary that waits for a promotion nobody gives.
    let held = repo.commit("main", &stuck(&v2), "web v2, by canary");
    wait_for_or_report(
        "the canary to hold",
        Duration::from_secs(60),
        || (json(&web.fleet, &["rollouts", "-o", "json"])[0]["hold"] == "promote").then_some(()),
        || format!("{:#}", app(&web)),
    );
    // A newer commit replaces the held sync.
    let newer = repo.commit("main", &service_file(&web, &v3), "web v3");
    serving(["v3", "v3"], "the newer commit to replace the held sync");
    let a = wait_for_or_report(
        "v3 synced",
        Duration::from_secs(30),
        || Some(app(&web)).filter(|a| a["synced_commit"] == newer.as_str() && a["syncing"] == 0),
        || format!("{:#}", app(&web)),
    );
    assert_eq!(a["sync_timeout_ms"], 30 * 60 * 1000, "{a:#}");
    let syncs = history(&web);
    let replaced = syncs.iter().find(|s| s["commit"] == held.as_str()).unwrap();
    assert_eq!(replaced["outcome"], "superseded", "{syncs:#?}");
    assert!(replaced["message"].as_str().unwrap().starts_with("replaced by sync"), "{syncs:#?}");

    // Held again, with no newer commit: past --sync-timeout the sync ends
    // and its rollout goes back.
    let out = web.fleet.drover(&["app", "rm", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    create(&web, &repo, &["--auto-sync", "--sync-timeout", "8s"]);
    wait_for_or_report(
        "the new app to find v3 in sync",
        Duration::from_secs(30),
        || (app(&web)["synced_commit"] == newer.as_str()).then_some(()),
        || format!("{:#}", app(&web)),
    );
    // (v4: an auto-sync of an older build than v3 would be refused.)
    let again = repo.commit("main", &stuck(&v4), "web v4, by canary");
    let ended = wait_for_or_report(
        "the held sync to time out",
        Duration::from_secs(60),
        || history(&web).into_iter().find(|s| s["commit"] == again.as_str() && s["outcome"] == "failed"),
        || format!("{:#}\n{:#?}", app(&web), history(&web)),
    );
    assert!(ended["message"].as_str().unwrap().starts_with("timed out after 8s"), "{ended:#}");
    let took = ended["finished_ms"].as_u64().unwrap() - ended["started_ms"].as_u64().unwrap();
    assert!(took >= 8_000, "ended {took} ms after it started, before its timeout: {ended:#}");
    let rollout = wait_for_or_report(
        "the held rollout to have gone back",
        Duration::from_secs(60),
        || Some(json(&web.fleet, &["rollouts", "-o", "json"])[0].clone()).filter(|r| r["phase"] == "aborted"),
        || format!("{:#}", json(&web.fleet, &["rollouts", "-o", "json"])[0]),
    );
    assert!(rollout["message"].as_str().unwrap().contains("whose sync"), "{rollout:#}");
    assert_eq!(web.versions(), [Some("v3".to_string()), Some("v3".to_string())], "the canary node is back on v3");
}
