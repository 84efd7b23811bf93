//! What the triggers keep in the store, and the calls any coordinator may
//! make on it, leader or not: registering, listing and removing
//! repositories (`drover repo add|rm`, `drover repos`), queueing a webhook's
//! delivery ([`enqueue`]) and reading a repository's webhook secret
//! ([`webhook_secret`]) for the webhook edge. Every record is JSON, and one
//! that does not decode is an error naming its key, never skipped.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TriggersError;
use crate::core::keys;
use crate::core::triggers::{self as rules, Heads};
use crate::records::encode;
use crate::secrets::{Sealed, Vault};
use crate::store::{Compare, Op, Revision, Store, Txn, decode};
use drover_pipeline::triggers::EventKind;

/// What `/repos/{name}` holds: the repository as registered. Its webhook
/// secret is sealed ([`Vault::seal`] for `repo:{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRecord {
    pub name: String,
    pub url: String,
    pub poll_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    #[serde(default)]
    pub trusted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<Sealed>,
    pub created_ms: u64,
    pub created_by: String,
}

impl RepoRecord {
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }
}

/// What `/triggers/repos/{name}` holds: what the leader saw of a repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoState {
    /// The create revision of the repository record this is about: the
    /// state of a repository removed and added again under the same name
    /// is not its own.
    pub repo_revision: Revision,
    /// The heads at the last good poll; `None` before the first (which
    /// records them and starts nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<Heads>,
    /// The branch the repository's HEAD names, where schedules are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub last_poll_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_ms: u64,
    /// Each cron of the pipeline on the default branch: the last tick that
    /// fired (or when the schedule was first read).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, u64>,
    /// The commit the schedules were read at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules_at: Option<String>,
}

/// What `/triggers/intents/{key}` holds: a start, written before its run
/// is submitted so that a new leader finishes it, and never starts it twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub repo: String,
    pub url: String,
    pub commit: String,
    pub file: String,
    pub event: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default)]
    pub untrusted: bool,
    pub created_ms: u64,
    pub state: IntentState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentState {
    /// Written; its run may or may not have been submitted.
    Pending,
    /// Its run.
    Done { run: u64 },
    /// It could not start (said in its repository's last error).
    Failed { error: String },
}

/// What a webhook saw, as the webhook edge hands it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// `branch` moved from `before` (absent for a new branch) to `after`
    /// (all zeros: deleted, which starts nothing).
    Push { branch: String, before: Option<String>, after: String },
    /// `tag` was pushed, at `commit`.
    Tag { tag: String, commit: String },
    /// Pull request `number` was opened or updated: its head and the
    /// branch it would merge into.
    PullRequest { number: u64, head_commit: String, head_branch: String, target_branch: String },
}

/// What `/triggers/inbox/{repo}/{id}` holds: a delivery to handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inboxed {
    pub observation: Observation,
    pub received_ms: u64,
}

/// What [`enqueue`] did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued for the leader.
    New,
    /// Its id was seen before: nothing changed.
    Replayed,
}

/// Whether `commit` is a full commit id.
pub(super) fn is_commit(commit: &str) -> bool {
    (commit.len() == 40 || commit.len() == 64) && commit.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A ref name from a webhook: one git would take (roughly), short enough.
fn ref_problem(what: &str, name: &str) -> Option<String> {
    let bad = name.is_empty()
        || name.len() > 255
        || name.starts_with('-')
        || name.chars().any(|c| c.is_control() || c == ' ' || c == ':' || c == '\\')
        || name.contains("..");
    bad.then(|| format!("the {what} {name:?} is not a git ref name"))
}

impl Observation {
    fn problem(&self) -> Option<String> {
        let commit = |what: &str, c: &str| (!is_commit(c)).then(|| format!("the {what} {c:?} is not a commit id"));
        match self {
            Observation::Push { branch, before, after } => ref_problem("branch", branch)
                .or_else(|| before.as_deref().and_then(|b| commit("before commit", b)))
                .or_else(|| commit("after commit", after)),
            Observation::Tag { tag, commit: c } => ref_problem("tag", tag).or_else(|| commit("commit", c)),
            Observation::PullRequest { head_commit, head_branch, target_branch, .. } => {
                commit("head commit", head_commit)
                    .or_else(|| ref_problem("head branch", head_branch))
                    .or_else(|| ref_problem("target branch", target_branch))
            }
        }
    }
}

/// The repository `name`, and its record's create revision.
pub async fn repo(store: &dyn Store, name: &str) -> Result<Option<(RepoRecord, Revision)>, TriggersError> {
    let Some(kv) = store.get(&keys::repo(name)).await? else { return Ok(None) };
    Ok(Some((decode(&kv.key, &kv.value)?, kv.create_revision)))
}

/// The webhook secret of repository `name`: `None` when it has none, an
/// error when there is no such repository.
pub async fn webhook_secret(store: &dyn Store, vault: &Vault, name: &str) -> Result<Option<Vec<u8>>, TriggersError> {
    let (record, _) = repo(store, name).await?.ok_or_else(|| TriggersError::NotFound(name.to_owned()))?;
    match &record.webhook_secret {
        None => Ok(None),
        Some(sealed) => Ok(Some(vault.open_sealed(&owner(name), sealed)?)),
    }
}

/// Queues a webhook's delivery `delivery` for repository `repo`, for the
/// leader's triggers controller to handle as it handles what a poll sees.
/// Any coordinator may call it: it only writes the store. A delivery id
/// seen before (within [`rules::KEEP_TRIGGERS_FOR`]) is `Replayed` and
/// changes nothing. Checking the delivery's signature is the caller's.
pub async fn enqueue(
    store: &dyn Store,
    repo_name: &str,
    delivery: &str,
    observation: Observation,
) -> Result<Enqueued, TriggersError> {
    if let Some(why) = rules::delivery_problem(delivery).or_else(|| observation.problem()) {
        return Err(TriggersError::Invalid(why));
    }
    let (_, revision) = repo(store, repo_name).await?.ok_or_else(|| TriggersError::NotFound(repo_name.to_owned()))?;
    let (queued, _) = store.range(&keys::inbox(repo_name, "")).await?;
    if queued.len() >= rules::MAX_QUEUED_DELIVERIES {
        return Err(TriggersError::Full(repo_name.to_owned()));
    }
    let id = rules::escape(delivery);
    let now = drover_telemetry::trace::now_ms();
    let seen = keys::delivery(repo_name, &id);
    let inboxed = Inboxed { observation, received_ms: now };
    let txn = Txn {
        // Create-only, and only while the repository is the one looked up.
        compare: vec![
            Compare::CreateRevision(seen.clone(), 0),
            Compare::CreateRevision(keys::repo(repo_name), revision),
        ],
        success: vec![Op::put(seen, now.to_string()), Op::put(keys::inbox(repo_name, &id), encode(&inboxed))],
        failure: Vec::new(),
    };
    if store.txn(txn).await?.succeeded {
        return Ok(Enqueued::New);
    }
    match repo(store, repo_name).await? {
        Some((_, now_revision)) if now_revision == revision => Ok(Enqueued::Replayed),
        _ => Err(TriggersError::NotFound(repo_name.to_owned())),
    }
}

/// What a repository's webhook secret is sealed for.
pub(super) fn owner(name: &str) -> String {
    format!("repo:{name}")
}

/// A repository to register, as `drover repo add` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRepo {
    pub name: String,
    pub url: String,
    /// `None` for the default.
    pub poll: Option<Duration>,
    pub branches: Vec<String>,
    pub webhook_secret: Option<Vec<u8>>,
    pub trusted: bool,
}

/// Registers a repository; each bad setting is refused with its fix and
/// nothing is stored. A name in use is refused.
pub async fn add_repo(
    store: &dyn Store,
    vault: &Vault,
    new: NewRepo,
    by: &str,
    now_ms: u64,
) -> Result<RepoRecord, TriggersError> {
    let poll = new.poll.unwrap_or(rules::DEFAULT_POLL);
    let branches: Vec<String> = new.branches.iter().map(|b| b.trim().to_owned()).filter(|b| !b.is_empty()).collect();
    let problem = rules::name_problem(&new.name)
        .or_else(|| rules::url_problem(&new.url))
        .or_else(|| rules::poll_problem(poll))
        .or_else(|| rules::branches_problem(&branches));
    if let Some(why) = problem {
        return Err(TriggersError::Invalid(why));
    }
    let webhook_secret = match &new.webhook_secret {
        None => None,
        Some(secret) if secret.is_empty() => {
            return Err(TriggersError::Invalid(
                "the webhook secret is empty; put the secret the forge signs with in the file".to_owned(),
            ));
        }
        Some(secret) if secret.len() > rules::MAX_WEBHOOK_SECRET_BYTES => {
            return Err(TriggersError::Invalid(format!(
                "the webhook secret is {} bytes, over the limit of {}",
                secret.len(),
                rules::MAX_WEBHOOK_SECRET_BYTES
            )));
        }
        Some(secret) => Some(vault.seal(&owner(&new.name), secret)?),
    };
    let key = keys::repo(&new.name);
    if store.get(&key).await?.is_some() {
        return Err(TriggersError::Exists(new.name));
    }
    let (existing, _) = store.range(keys::REPOS).await?;
    if existing.len() >= rules::MAX_REPOS {
        return Err(TriggersError::TooMany);
    }
    let record = RepoRecord {
        name: new.name.clone(),
        url: new.url,
        poll_ms: poll.as_millis() as u64,
        branches,
        trusted: new.trusted,
        webhook_secret,
        created_ms: now_ms,
        created_by: by.to_owned(),
    };
    let txn = Txn {
        compare: vec![Compare::CreateRevision(key.clone(), 0)],
        success: vec![Op::put(key, encode(&record))],
        failure: Vec::new(),
    };
    if !store.txn(txn).await?.succeeded {
        return Err(TriggersError::Exists(new.name));
    }
    Ok(record)
}

/// A repository as `drover repos` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoView {
    pub record: RepoRecord,
    /// What the leader saw, when it has looked since it was added.
    pub state: Option<RepoState>,
}

/// Every repository, by name, with what the leader saw of each.
pub async fn list_repos(store: &dyn Store) -> Result<Vec<RepoView>, TriggersError> {
    let (kvs, _) = store.range(keys::REPOS).await?;
    let (states, _) = store.range(keys::REPO_STATES).await?;
    let mut by_name = BTreeMap::new();
    for kv in &states {
        let state: RepoState = decode(&kv.key, &kv.value)?;
        by_name.insert(kv.key[keys::REPO_STATES.len()..].to_owned(), state);
    }
    kvs.iter()
        .map(|kv| {
            let record: RepoRecord = decode(&kv.key, &kv.value)?;
            let state = by_name.remove(&record.name).filter(|s| s.repo_revision == kv.create_revision);
            Ok(RepoView { record, state })
        })
        .collect()
}

/// Removes repository `name` and what the leader kept of it; runs it
/// started stay.
pub async fn remove_repo(store: &dyn Store, name: &str) -> Result<(), TriggersError> {
    let key = keys::repo(name);
    if store.get(&key).await?.is_none() {
        return Err(TriggersError::NotFound(name.to_owned()));
    }
    let ops =
        vec![Op::delete(key), Op::delete(keys::repo_state(name)), Op::DeletePrefix { prefix: keys::inbox(name, "") }];
    store.txn(Txn::ops(ops)).await?;
    Ok(())
}
