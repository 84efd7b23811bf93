//! The triggers' driver on real parts: an embedded store, the scheduler,
//! repositories made with git. Webhook deliveries go through `enqueue` as
//! the webhook edge will send them.

use std::path::Path;

use super::start::{Outcome, Want};
use super::*;
use crate::controller::tests::{TestDir, store_and_segments};
use crate::core::machine::RunId;
use crate::git::Base;
use crate::records::encode;
use crate::records::{RunFilter, list_runs, load_run};
use crate::scheduler::Scheduler;
use crate::store::Op;
use crate::submit::DEFAULT_GIT_FILE;
use drover_pipeline::triggers::EventKind;

use crate::submit::tests::git;

fn commit(dir: &Path, file: &str, text: &str) -> String {
    std::fs::write(dir.join(file), text).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "--quiet", "-m", file]);
    git(dir, &["rev-parse", "HEAD"])
}

struct Setup {
    _dir: TestDir,
    ctx: Arc<Ctx>,
    repo: std::path::PathBuf,
    first: String,
}

async fn setup(name: &str, pipeline: &str, trusted: bool) -> Setup {
    let dir = TestDir::new(name);
    let (store, segments) = store_and_segments(&dir).await;
    let (sched, _task) = Scheduler::start(store.clone(), segments, crate::scheduler::Config::default()).await.unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "-b", "main"]);
    let first = commit(&repo, ".drover.yml", pipeline);
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let vault = Arc::new(Vault::open(store.clone(), &dir.path().join("no.key")));
    let new = NewRepo {
        name: "web".into(),
        url: repo.to_string_lossy().into_owned(),
        poll: None,
        branches: Vec::new(),
        webhook_secret: None,
        trusted,
    };
    add_repo(store.as_ref(), &vault, new, "alice", 1).await.unwrap();
    let git = GitOptions { scratch, timeout: Duration::from_secs(30) };
    Setup { _dir: dir, ctx: Arc::new(Ctx { store, sched, git, vault }), repo, first }
}

/// One task of the repository, as a pass gives it: a poll, and what the
/// inbox holds.
async fn work(ctx: &Arc<Ctx>, poll: bool) {
    let (record, revision) = repo(ctx.store.as_ref(), "web").await.unwrap().unwrap();
    let (kvs, _) = ctx.store.range(keys::INBOX).await.unwrap();
    let deliveries = kvs.iter().map(|kv| (kv.key.clone(), decode::<Inboxed>(&kv.key, &kv.value).unwrap())).collect();
    repo_work(ctx.clone(), record, revision, Work { poll, deliveries }).await.unwrap();
}

/// Every run, by trigger key.
async fn runs(ctx: &Ctx) -> Vec<(String, RunId)> {
    let runs = list_runs(ctx.store.as_ref(), 100, &RunFilter::default()).await.unwrap();
    runs.into_iter().map(|r| (r.source.trigger.unwrap_or_default(), r.id)).collect()
}

const PIPELINE: &str = "name: p\non: [push, pull_request]\njobs:\n  a:\n    steps:\n      - run: 'true'\n";

#[tokio::test]
async fn a_webhook_push_and_the_next_poll_of_the_same_head_start_one_run() {
    let s = setup("triggers-once", PIPELINE, false).await;
    work(&s.ctx, true).await;
    assert!(runs(&s.ctx).await.is_empty(), "the first poll is the baseline");

    let second = commit(&s.repo, "a.txt", "two");
    let push = Observation::Push { branch: "main".into(), before: Some(s.first.clone()), after: second.clone() };
    let store = s.ctx.store.as_ref();
    assert_eq!(enqueue(store, "web", "d-1", push.clone()).await.unwrap(), Enqueued::New);
    assert_eq!(enqueue(store, "web", "d-1", push.clone()).await.unwrap(), Enqueued::Replayed);
    work(&s.ctx, false).await;
    work(&s.ctx, true).await;
    let key = rules::push_key("web", "main", &second);
    let started = runs(&s.ctx).await;
    assert_eq!(started.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), [key.as_str()], "one run");
    assert!(store.range(keys::INBOX).await.unwrap().0.is_empty(), "the delivery was handled");
    let run = load_run(store, started[0].1).await.unwrap().unwrap();
    let source = &run.record.source;
    assert_eq!(
        (source.event, source.branch.as_deref(), source.commit.as_deref(), source.untrusted),
        (EventKind::Push, Some("main"), Some(second.as_str()), false)
    );
    let intent: records::Intent = decode("i", &store.get(&keys::intent(&key)).await.unwrap().unwrap().value).unwrap();
    assert_eq!(intent.state, records::IntentState::Done { run: started[0].1 });

    // A pull request of an untrusted repository: its run withholds secrets.
    git(&s.repo, &["checkout", "--quiet", "-b", "fix"]);
    let head = commit(&s.repo, "b.txt", "fix");
    let pr = Observation::PullRequest {
        number: 7,
        head_commit: head.clone(),
        head_branch: "fix".into(),
        target_branch: "main".into(),
    };
    assert_eq!(enqueue(store, "web", "d-2", pr).await.unwrap(), Enqueued::New);
    work(&s.ctx, false).await;
    let pr_key = rules::pr_key("web", 7, &head);
    let (_, id) = runs(&s.ctx).await.into_iter().find(|(k, _)| *k == pr_key).expect("a pull request run");
    let run = load_run(store, id).await.unwrap().unwrap();
    assert_eq!((run.record.source.event, run.record.source.untrusted), (EventKind::PullRequest, true));
    assert_eq!(run.record.source.branch.as_deref(), Some("fix"));

    // Bad deliveries are refused and queue nothing.
    let bad = Observation::Push { branch: "main".into(), before: None, after: "nope".into() };
    let err = enqueue(store, "web", "d-3", bad).await.unwrap_err().to_string();
    assert!(err.contains("is not a commit id"), "{err}");
    let err = enqueue(store, "nope", "d-4", push).await.unwrap_err().to_string();
    assert!(err.contains("repository \"nope\" does not exist"), "{err}");
}

#[tokio::test]
async fn a_new_term_finishes_the_intents_the_last_one_left_pending() {
    let s = setup("triggers-reconcile", PIPELINE, true).await;
    let store = s.ctx.store.as_ref();
    let intent = |commit: &str| records::Intent {
        repo: "web".into(),
        url: s.repo.to_string_lossy().into_owned(),
        commit: commit.into(),
        file: DEFAULT_GIT_FILE.into(),
        event: EventKind::Push,
        branch: Some("main".into()),
        tag: None,
        untrusted: false,
        created_ms: 1,
        state: records::IntentState::Pending,
    };
    // One whose run was submitted before the failover, and one that was not.
    let submitted = rules::push_key("web", "main", &s.first);
    let want = Want {
        key: submitted.clone(),
        repo: "web".into(),
        url: s.repo.to_string_lossy().into_owned(),
        commit: s.first.clone(),
        event: EventKind::Push,
        branch: Some("main".into()),
        tag: None,
        base: Base::None,
        target: None,
        untrusted: false,
    };
    let Outcome::Started(run) = start::start(&s.ctx, &want).await.unwrap() else { panic!("not started") };
    let pending = |key: &str, commit: &str| Op::put(keys::intent(key), encode(&intent(commit)));
    let second = commit(&s.repo, "a.txt", "two");
    let lost = rules::push_key("web", "main", &second);
    store.txn(Txn::ops(vec![pending(&submitted, &s.first), pending(&lost, &second)])).await.unwrap();

    start::reconcile(&s.ctx).await.unwrap();
    let started = runs(&s.ctx).await;
    assert_eq!(started.len(), 2, "{started:?}");
    let new = started.iter().find(|(k, _)| *k == lost).expect("the lost start was submitted").1;
    for (key, run) in [(&submitted, run), (&lost, new)] {
        let kv = store.get(&keys::intent(key)).await.unwrap().unwrap();
        let state = decode::<records::Intent>(&kv.key, &kv.value).unwrap().state;
        assert_eq!(state, records::IntentState::Done { run }, "{key}");
    }
    // Again: nothing more.
    start::reconcile(&s.ctx).await.unwrap();
    assert_eq!(runs(&s.ctx).await.len(), 2);
}

#[tokio::test]
async fn a_pipeline_that_does_not_parse_starts_nothing_and_is_the_last_error() {
    let s = setup("triggers-broken", PIPELINE, false).await;
    work(&s.ctx, true).await;
    let broken = commit(&s.repo, ".drover.yml", "name: broken\n");
    work(&s.ctx, true).await;
    assert!(runs(&s.ctx).await.is_empty());
    let views = list_repos(s.ctx.store.as_ref()).await.unwrap();
    let state = views[0].state.clone().expect("polled");
    let error = state.last_error.expect("an error");
    assert!(error.contains(&format!("push to main at {}", &broken[..12])), "{error}");
    assert!(error.contains("invalid pipeline"), "{error}");
    assert_eq!(state.heads.unwrap()["refs/heads/main"], broken, "the head moves on: it is not tried again");
}

#[tokio::test]
async fn a_webhook_secret_is_sealed_and_only_the_edge_reads_it() {
    let dir = TestDir::new("triggers-secret");
    let (store, _) = store_and_segments(&dir).await;
    let key = dir.path().join("secrets.key");
    drover_pki::secrets_key::generate(&key).unwrap();
    let vault = Vault::open(store.clone(), &key);
    let new = |name: &str, secret: Option<&[u8]>| NewRepo {
        name: name.into(),
        url: "https://git.example.com/web.git".into(),
        poll: None,
        branches: Vec::new(),
        webhook_secret: secret.map(<[u8]>::to_vec),
        trusted: false,
    };
    add_repo(store.as_ref(), &vault, new("web", Some(b"hook-secret")), "alice", 1).await.unwrap();
    add_repo(store.as_ref(), &vault, new("plain", None), "alice", 1).await.unwrap();
    let raw = store.get(&keys::repo("web")).await.unwrap().unwrap().value;
    assert!(!String::from_utf8_lossy(&raw).contains("hook-secret"), "sealed at rest");
    assert_eq!(webhook_secret(store.as_ref(), &vault, "web").await.unwrap().as_deref(), Some(&b"hook-secret"[..]));
    assert_eq!(webhook_secret(store.as_ref(), &vault, "plain").await.unwrap(), None);
    let err = webhook_secret(store.as_ref(), &vault, "nope").await.unwrap_err();
    assert!(matches!(err, TriggersError::NotFound(_)), "{err}");
    // (case, repository, what the error says)
    let big = vec![b'x'; 2000];
    let cases: [(&str, NewRepo, &str); 3] = [
        ("an empty secret", new("a", Some(b"")), "the webhook secret is empty"),
        ("a secret over the limit", new("b", Some(&big)), "2000 bytes, over the limit of 1024"),
        ("a name in use", new("web", None), "exists already; remove it first with `drover repo rm web`"),
    ];
    for (case, repo, want) in cases {
        let err = add_repo(store.as_ref(), &vault, repo, "alice", 1).await.unwrap_err().to_string();
        assert!(err.contains(want), "{case}: {err}");
    }
    assert_eq!(list_repos(store.as_ref()).await.unwrap().len(), 2, "nothing stored");
}

#[tokio::test]
async fn deliveries_past_the_queue_limit_are_refused() {
    let s = setup("triggers-full", PIPELINE, false).await;
    let store = s.ctx.store.as_ref();
    let push = Observation::Tag { tag: "v1".into(), commit: s.first.clone() };
    for i in 0..rules::MAX_QUEUED_DELIVERIES {
        assert_eq!(enqueue(store, "web", &format!("d-{i}"), push.clone()).await.unwrap(), Enqueued::New);
    }
    let err = enqueue(store, "web", "one-more", push).await.unwrap_err().to_string();
    assert!(err.contains("1000 webhook deliveries waiting for the leader"), "{err}");
}

#[tokio::test]
async fn a_failed_poll_is_the_last_error_until_a_poll_succeeds() {
    let s = setup("triggers-unreachable", PIPELINE, false).await;
    let away = s.repo.with_file_name("away");
    std::fs::rename(&s.repo, &away).unwrap();
    work(&s.ctx, true).await;
    let state = || async { list_repos(s.ctx.store.as_ref()).await.unwrap()[0].state.clone().expect("polled") };
    let error = state().await.last_error.expect("an error");
    assert!(error.starts_with("the last poll failed: cannot list the branches and tags of"), "{error}");
    assert_eq!(state().await.heads, None, "no baseline yet");
    std::fs::rename(&away, &s.repo).unwrap();
    work(&s.ctx, true).await;
    assert_eq!(state().await.last_error, None);
    assert!(state().await.heads.is_some());
}

#[test]
fn deliveries_that_cannot_start_wait_longer_each_time_up_to_a_minute() {
    let mut waits = Vec::new();
    let mut last = None;
    for _ in 0..8 {
        let next = super::retry_delay(last);
        waits.push(next.as_secs());
        last = Some(next);
    }
    assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
}
