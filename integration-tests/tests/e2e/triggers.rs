//! Repositories and triggers: a push to a polled repository starts one run
//! at that commit, with what started it; bad `drover repo add` input is
//! refused with its fix and nothing stored; a cron tick fires once across
//! leader failovers (on etcd, with three coordinators).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::git::git;
use crate::harness::{Etcd, Fleet, text, wait_for, wait_for_or_report};

/// A repository in `dir` with `.drover.yml` = `pipeline`, committed on main.
fn repository(dir: &Path, pipeline: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(".drover.yml"), pipeline).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "one"]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A JSON command's document; it must succeed.
fn json(fleet: &Fleet, args: &[&str]) -> Value {
    let out = fleet.drover(args);
    assert!(out.status.success(), "drover {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("drover {args:?}: {e}: {}", text(&out.stdout)))
}

/// The runs whose trigger starts with `prefix`.
fn runs_by_trigger(fleet: &Fleet, prefix: &str) -> Vec<Value> {
    let runs = json(fleet, &["runs", "-o", "json", "--limit", "100"]);
    runs.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"].as_str().unwrap_or_default().starts_with(prefix))
        .cloned()
        .collect()
}

fn repo(fleet: &Fleet, name: &str) -> Value {
    let repos = json(fleet, &["repos", "-o", "json"]);
    repos.as_array().unwrap().iter().find(|r| r["name"] == name).cloned().unwrap_or(Value::Null)
}

#[test]
fn a_push_to_a_polled_repository_starts_one_run_at_that_commit() {
    let mut fleet = Fleet::start("triggers-push");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let dir = fleet.dir.path().join("repo");
    let pipeline =
        "name: pushed\njobs:\n  show:\n    steps:\n      - run: echo \"${{ drover.event }} ${{ drover.branch }}\"\n";
    repository(&dir, pipeline);
    let url = dir.to_str().unwrap();
    let out = fleet.drover(&["repo", "add", "web", "--url", url, "--poll", "1s", "--branches", "main,release/*"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("repository web added: polled every 1s (branches main, release/*)"));
    // The first poll is the baseline: it starts nothing.
    wait_for("the first poll", Duration::from_secs(20), || {
        (repo(&fleet, "web")["last_poll_ms"].as_u64()? > 0).then_some(())
    });
    assert!(runs_by_trigger(&fleet, "push/").is_empty(), "the baseline started a run");

    std::fs::write(dir.join("a.txt"), "two\n").unwrap();
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-q", "-m", "two"]);
    let second = git(&dir, &["rev-parse", "HEAD"]);
    let key = format!("push/web/main/{second}");
    let run = wait_for_or_report(
        "a run of the push",
        Duration::from_secs(20),
        || runs_by_trigger(&fleet, &key).into_iter().next(),
        || fleet.logs(),
    );
    assert_eq!(run["commit"].as_str(), Some(second.as_str()), "{run:#}");
    assert_eq!(run["event"], "push", "{run:#}");
    assert_eq!(run["branch"], "main", "{run:#}");
    let id = run["id"].as_str().unwrap().to_string();
    let status = fleet.wait_run(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let logs = text(&fleet.drover(&["logs", &id, "show"]).stdout);
    assert!(logs.contains("push main"), "{logs}");
    let shown = text(&fleet.drover(&["status", &id]).stdout);
    assert!(shown.contains(&format!("started by push to main at {}", &second[..7])), "{shown}");
    let wide = text(&fleet.drover(&["runs", "-o", "wide"]).stdout);
    assert!(wide.contains("EVENT") && wide.lines().any(|l| l.contains(" push ") && l.contains(" main ")), "{wide}");

    // A branch the filter does not take starts nothing; a tag does.
    git(&dir, &["checkout", "-q", "-b", "wip"]);
    git(&dir, &["commit", "-q", "--allow-empty", "-m", "wip"]);
    git(&dir, &["tag", "v1"]);
    let wip = git(&dir, &["rev-parse", "HEAD"]);
    let tagged = wait_for("a run of the tag", Duration::from_secs(20), || {
        runs_by_trigger(&fleet, &format!("tag/web/v1/{wip}")).into_iter().next()
    });
    assert_eq!((tagged["event"].as_str(), tagged["tag"].as_str()), (Some("tag"), Some("v1")), "{tagged:#}");

    // A pipeline that does not parse at a commit starts nothing, and is the
    // repository's last error, naming the commit.
    git(&dir, &["checkout", "-q", "main"]);
    std::fs::write(dir.join(".drover.yml"), "name: broken\n").unwrap();
    git(&dir, &["commit", "-q", "-am", "break it"]);
    let broken = git(&dir, &["rev-parse", "HEAD"]);
    let error = wait_for("the last error", Duration::from_secs(20), || {
        let error = repo(&fleet, "web")["last_error"].as_str()?.to_string();
        error.contains(&broken[..12]).then_some(error)
    });
    assert!(error.contains("push to main") && error.contains("invalid pipeline"), "{error}");
    let listed = text(&fleet.drover(&["repos"]).stdout);
    assert!(listed.contains("last error") && listed.contains(&broken[..12]), "{listed}");

    // One run per push and tag, however many polls saw them.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs_by_trigger(&fleet, "push/").len(), 1);
    assert_eq!(runs_by_trigger(&fleet, "tag/").len(), 1);
    assert!(runs_by_trigger(&fleet, &format!("push/web/main/{broken}")).is_empty());
}

#[test]
fn repo_add_refuses_bad_input_with_the_fix_and_stores_nothing() {
    let fleet = Fleet::start("triggers-bad");
    // (case, arguments after `repo add`, what stderr says)
    let cases: [(&str, &[&str], &str); 5] = [
        ("an unsupported scheme", &["web", "--url", "ftp://example.com/r.git"], "unsupported URL scheme `ftp://`"),
        (
            "a bad branch filter",
            &["web", "--url", "/srv/r", "--branches", "main,[oops"],
            "branch pattern \"[oops\" does not parse",
        ),
        ("a poll too often", &["web", "--url", "/srv/r", "--poll", "500ms"], "between every 1s and every 24h"),
        ("a bad name", &["a/b", "--url", "/srv/r"], "invalid repository name"),
        ("a relative path", &["web", "--url", "srv/r"], "is not a repository URL Drover can poll"),
    ];
    for (case, args, want) in cases {
        let mut argv = vec!["repo", "add"];
        argv.extend_from_slice(args);
        let out = fleet.drover(&argv);
        assert_eq!(out.status.code(), Some(2), "{case}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{case}: {}", text(&out.stderr));
    }
    let out = fleet.drover(&["repo", "add", "web", "--url", "ftp://x/r"]);
    assert!(
        text(&out.stderr).contains("use https://, http://, ssh://, git://, file://, an absolute path"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(json(&fleet, &["repos", "-o", "json"]), serde_json::json!([]), "nothing stored");

    // A webhook secret is sealed: never shown, and not a secret jobs can ask for.
    let secret = fleet.dir.path().join("hook-secret");
    std::fs::write(&secret, "s3cret-hook-value\n").unwrap();
    let out = fleet.drover(&[
        "repo",
        "add",
        "web",
        "--url",
        "git@example.com:o/web.git",
        "--webhook-secret-file",
        secret.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = fleet.drover(&["repos", "-o", "json"]);
    assert!(!text(&listed.stdout).contains("s3cret"), "{}", text(&listed.stdout));
    assert_eq!(repo(&fleet, "web")["webhook_secret"], true);
    assert_eq!(json(&fleet, &["secret", "ls", "-o", "json"]), serde_json::json!([]));

    // A name in use is refused; removing it frees the name.
    let out = fleet.drover(&["repo", "add", "web", "--url", "/srv/other"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("remove it first with `drover repo rm web`"), "{}", text(&out.stderr));
    let out = fleet.drover(&["repo", "rm", "nope"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(fleet.drover(&["repo", "rm", "web"]).status.success());
    assert_eq!(json(&fleet, &["repos", "-o", "json"]), serde_json::json!([]));
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The one test that waits for a real minute (at most about 70s): the leader
/// is killed just before a tick, and its successor, which fires the tick,
/// right after, so the tick must be caught up once and not fired again.
#[test]
fn a_cron_tick_fires_once_across_leader_failovers() {
    let etcd = Etcd::start("cron", 1);
    let mut fleet = Fleet::start_ha("cron", &etcd, 3);
    fleet.wait_leader();
    let dir = fleet.dir.path().join("repo");
    let pipeline =
        "name: nightly\non:\n  schedule:\n    - cron: '* * * * *'\njobs:\n  a:\n    steps:\n      - run: 'true'\n";
    let head = repository(&dir, pipeline);
    let out = fleet.drover(&["repo", "add", "cron", "--url", dir.to_str().unwrap(), "--poll", "1s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("the schedule to be read", Duration::from_secs(20), || {
        (repo(&fleet, "cron")["schedules"].as_array()?.len() == 1).then_some(())
    });
    // The next minute at least 6s away.
    let minute = 60_000;
    let mut tick = (now_ms() / minute + 1) * minute;
    if tick - now_ms() < 6_000 {
        tick += minute;
    }
    std::thread::sleep(Duration::from_millis(tick - 3_000 - now_ms()));
    let first = fleet.wait_leader();
    fleet.kill_coordinator(first);
    let key = format!("cron/cron/%2A%20%2A%20%2A%20%2A%20%2A/{tick}");
    let run = wait_for_or_report(
        "the tick's run",
        Duration::from_secs(30),
        || runs_by_trigger(&fleet, &key).into_iter().next(),
        || fleet.logs(),
    );
    assert_eq!((run["event"].as_str(), run["commit"].as_str()), (Some("schedule"), Some(head.as_str())), "{run:#}");
    let second = fleet.wait_leader();
    fleet.kill_coordinator(second);
    wait_for("a third leader", Duration::from_secs(30), || fleet.leader().filter(|l| *l != first && *l != second));
    // Several passes of the third leader, well before the next tick.
    std::thread::sleep(Duration::from_secs(6));
    assert!(now_ms() < tick + minute, "the test ran into the next tick");
    // A tick before the one watched may have fired too (the schedule is
    // read up to a minute before it); each tick fires once.
    let fired = runs_by_trigger(&fleet, "cron/");
    let keys: Vec<&str> = fired.iter().filter_map(|r| r["trigger"].as_str()).collect();
    assert_eq!(keys.iter().filter(|k| **k == key).count(), 1, "one run for the tick: {fired:#?}\n{}", fleet.logs());
    let unique: std::collections::BTreeSet<&&str> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no tick fired twice: {keys:?}");
}
