//! Triggers: repositories whose pushes, tags, pull requests and schedules
//! start runs, as a leader's controller ([`Triggers`], registered in
//! `crate::controller::registry` after the scheduler, whose handle it
//! submits through).
//!
//! Every [`Config::interval`] (1s) the controller reads the repositories
//! (`/repos/`), what it saw of each (`/triggers/repos/`) and the webhook
//! deliveries waiting (`/triggers/inbox/`), and gives each repository with
//! work a task of its own, at most [`MAX_CONCURRENT`] at once and one per
//! repository, so a slow server holds up only its own repository. A task:
//!
//! - handles the repository's webhook deliveries ([`enqueue`] queued them,
//!   on any coordinator);
//! - polls, when due (every `--poll`, ±10%), with `git ls-remote`; the
//!   first poll is the baseline, and after it each branch whose head moved
//!   (and that `--branches` takes) and each new tag is a start
//!   (`crate::core::triggers::observe`). The schedules are read again when
//!   the default branch's head moves;
//! - fires each schedule's due tick (`due_schedules`) at that head.
//!
//! Every start goes through one path (`start`): the pipeline at the commit
//! has its say (`on:`), then an intent written create-only under its
//! trigger key makes it happen once, across webhooks, polls and failovers.
//! Intents and delivery ids older than seven days are pruned.
//!
//! The rules (settings, what changed, which ticks are due, the keys) are
//! pure, in `crate::core::triggers`; this module does the IO.

mod records;
mod start;
mod work;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use drover_telemetry::trace::now_ms;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::warn;

pub use records::{
    Enqueued, NewRepo, Observation, RepoRecord, RepoState, RepoView, add_repo, enqueue, list_repos, remove_repo, repo,
    webhook_secret,
};

use crate::controller::{Controller, ControllerError, Started, Term};
use crate::core::keys;
use crate::core::triggers as rules;
use crate::scheduler::Handle;
use crate::secrets::{SecretsError, Vault};
use crate::store::{Op, Store, StoreError, Txn, decode};
use crate::submit::GitOptions;
use drover_pipeline::triggers::Schedule;
use records::Inboxed;
use work::{Work, repo_work};

/// The most repositories worked on at once.
pub const MAX_CONCURRENT: usize = 8;
/// How often intents left pending (a submit refused for a while) are
/// tried again.
const RETRY_PENDING_EVERY: Duration = Duration::from_secs(30);
/// The first wait before deliveries that could not start are tried again.
const RETRY_DELIVERIES_FIRST: Duration = Duration::from_secs(2);
/// The longest.
const RETRY_DELIVERIES_MAX: Duration = Duration::from_secs(60);

/// How long deferred deliveries wait, given the last wait.
fn retry_delay(last: Option<Duration>) -> Duration {
    last.map_or(RETRY_DELIVERIES_FIRST, |last| (last * 2).min(RETRY_DELIVERIES_MAX))
}

/// Whether a repository task left deliveries to try again later.
pub(crate) type Deferred = bool;

/// How often old intents and delivery ids are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum TriggersError {
    #[error("{0}")]
    Invalid(String),
    #[error("repository {0:?} exists already; remove it first with `drover repo rm {0}`, then add it again")]
    Exists(String),
    #[error("repository {0:?} does not exist; `drover repos` lists them")]
    NotFound(String),
    #[error(
        "there are {} repositories already, the limit; remove unused ones with `drover repo rm NAME`",
        rules::MAX_REPOS
    )]
    TooMany,
    #[error(
        "repository {repo:?} has {limit} webhook deliveries waiting for the leader, the limit; retry once it has \
         handled them (`drover cluster` shows whether one leads)",
        repo = .0,
        limit = rules::MAX_QUEUED_DELIVERIES
    )]
    Full(String),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// How often the controller looks for work: deliveries, due polls and
    /// ticks (`--triggers-interval`, 1s; at most 5s so ticks fire on time).
    pub interval: Duration,
    /// Where clones go, and how long git may take.
    pub git: GitOptions,
    /// Checks the secrets a pipeline declares, as a submit does.
    pub vault: Arc<Vault>,
}

/// The triggers as a controller.
pub struct Triggers {
    config: Config,
}

impl Triggers {
    pub fn new(config: Config) -> Triggers {
        Triggers { config }
    }
}

#[async_trait]
impl Controller for Triggers {
    fn name(&self) -> &'static str {
        "triggers"
    }

    fn prefixes(&self) -> &'static [&'static str] {
        // `/repos/` is the API's (`drover repo add|rm`); the controller only reads it.
        &[keys::TRIGGERS]
    }

    async fn start(&self, term: &Term) -> Result<Started, ControllerError> {
        let sched = term.sched.clone().ok_or_else(|| {
            ControllerError::Failed("the triggers need the scheduler, which must be registered before them".into())
        })?;
        let ctx = Arc::new(Ctx {
            store: term.store.clone(),
            sched,
            git: self.config.git.clone(),
            vault: self.config.vault.clone(),
        });
        Ok(Started::work(run(ctx, self.config.interval)))
    }
}

/// What every task of a term shares.
pub(crate) struct Ctx {
    /// The term's fenced store.
    store: Arc<dyn Store>,
    sched: Handle,
    git: GitOptions,
    vault: Arc<Vault>,
}

/// The term's loop; a fenced store ends it (the scheduler or the lost
/// lease ends the term), any other store error is retried at the next tick.
async fn run(ctx: Arc<Ctx>, interval: Duration) -> Result<(), ControllerError> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut looper = Loop::default();
    // A delivery queued on any coordinator wakes the loop at once, rather
    // than at the next tick; without the watch (it failed or ended) the
    // tick still finds it.
    let mut inbox = match ctx.store.watch(keys::INBOX, 0).await {
        Ok(rx) => Some(rx),
        Err(StoreError::Fenced { .. }) => return Ok(()),
        Err(e) => {
            warn!(error = %e, "cannot watch for webhook deliveries; they are picked up every tick");
            None
        }
    };
    loop {
        let delivered = async {
            match inbox.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            message = delivered => {
                if message.is_none() {
                    inbox = None;
                }
            }
            Some(done) = looper.tasks.join_next_with_id() => {
                if let Err(StoreError::Fenced { .. }) = looper.finished(done) {
                    return Ok(());
                }
                continue;
            }
        }
        match looper.pass(&ctx).await {
            Ok(()) => {}
            Err(StoreError::Fenced { .. }) => return Ok(()),
            Err(e) => warn!(error = %e, "triggers pass failed; retrying at the next one"),
        }
    }
}

/// What the loop keeps between passes (all of it in memory: a new term
/// starts from the store).
#[derive(Default)]
struct Loop {
    tasks: JoinSet<Result<Deferred, StoreError>>,
    /// Repositories whose deliveries could not start yet (git was down),
    /// and when to try them again: doubling from [`RETRY_DELIVERIES_FIRST`]
    /// to [`RETRY_DELIVERIES_MAX`], so a server that is down is not cloned
    /// every tick.
    deferred: HashMap<String, (Instant, Duration)>,
    /// The repository of each running task, by task id.
    busy: HashMap<tokio::task::Id, String>,
    next_poll: HashMap<String, Instant>,
    reconciled: Option<Instant>,
    pruned: Option<Instant>,
    /// The records already said not to decode.
    warned: HashSet<String>,
}

impl Loop {
    /// Says once a term that the record at `key` does not decode.
    fn unreadable(&mut self, key: &str, e: &StoreError) {
        if self.warned.insert(key.to_owned()) {
            warn!(key, error = %e, "a triggers record does not decode; its repository is left alone until it is removed");
        }
    }

    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, Result<Deferred, StoreError>), tokio::task::JoinError>,
    ) -> Result<(), StoreError> {
        let (id, result) = match done {
            Ok((id, result)) => (id, result),
            Err(e) => {
                let repo = self.busy.remove(&e.id()).unwrap_or_default();
                warn!(repo, error = %e, "a repository's triggers task failed");
                return Ok(());
            }
        };
        let repo = self.busy.remove(&id).unwrap_or_default();
        match result {
            Err(StoreError::Fenced { epoch }) => Err(StoreError::Fenced { epoch }),
            Err(e) => {
                warn!(repo, error = %e, "a repository's triggers task failed; it is tried again at its next poll");
                Ok(())
            }
            Ok(true) => {
                let delay = retry_delay(self.deferred.get(&repo).map(|(_, last)| *last));
                self.deferred.insert(repo, (Instant::now() + delay, delay));
                Ok(())
            }
            Ok(false) => {
                self.deferred.remove(&repo);
                Ok(())
            }
        }
    }

    async fn pass(&mut self, ctx: &Arc<Ctx>) -> Result<(), StoreError> {
        let now = Instant::now();
        let now_ms = now_ms();
        // Pending intents first: at the start of a term, before any start,
        // and later only while no start is under way.
        let retry = self.reconciled.is_none_or(|at| now.duration_since(at) >= RETRY_PENDING_EVERY);
        if retry && self.tasks.is_empty() {
            start::reconcile(ctx).await?;
            self.reconciled = Some(now);
        }
        if self.reconciled.is_none() {
            return Ok(());
        }
        let store = ctx.store.as_ref();
        let (repo_kvs, _) = store.range(keys::REPOS).await?;
        let (state_kvs, _) = store.range(keys::REPO_STATES).await?;
        let (inbox_kvs, _) = store.range(keys::INBOX).await?;
        // A record that does not decode stops its own repository, said
        // once a term, not the others.
        let mut repos = BTreeMap::new();
        for kv in &repo_kvs {
            match decode::<RepoRecord>(&kv.key, &kv.value) {
                Ok(record) => {
                    repos.insert(kv.key[keys::REPOS.len()..].to_owned(), (record, kv.create_revision));
                }
                Err(e) => self.unreadable(&kv.key, &e),
            }
        }
        let mut states = HashMap::new();
        let mut stale = Vec::new();
        for kv in &state_kvs {
            let name = &kv.key[keys::REPO_STATES.len()..];
            if !repos.contains_key(name) {
                stale.push(Op::delete(kv.key.clone()));
                continue;
            }
            match decode::<RepoState>(&kv.key, &kv.value) {
                Ok(state) => {
                    states.insert(name.to_owned(), state);
                }
                Err(e) => {
                    self.unreadable(&kv.key, &e);
                    repos.remove(name);
                }
            }
        }
        self.next_poll.retain(|name, _| repos.contains_key(name));
        self.deferred.retain(|name, _| repos.contains_key(name));
        let mut inbox: HashMap<String, Vec<(String, Inboxed)>> = HashMap::new();
        for kv in &inbox_kvs {
            let repo = kv.key[keys::INBOX.len()..].split('/').next().unwrap_or_default();
            if !repos.contains_key(repo) {
                stale.push(Op::delete(kv.key.clone()));
                continue;
            }
            match decode::<Inboxed>(&kv.key, &kv.value) {
                Ok(item) => inbox.entry(repo.to_owned()).or_default().push((kv.key.clone(), item)),
                Err(e) => {
                    // It can never be handled; keeping it would fail every pass.
                    warn!(error = %e, "dropping a webhook delivery that does not decode");
                    stale.push(Op::delete(kv.key.clone()));
                }
            }
        }
        if !stale.is_empty() {
            store.txn(Txn::ops(stale)).await?;
        }
        let busy: HashSet<String> = self.busy.values().cloned().collect();
        let urls: Vec<String> = repos.values().map(|(record, _)| record.url.clone()).collect();
        for (name, (record, revision)) in repos {
            if busy.contains(&name) {
                continue;
            }
            if self.tasks.len() >= MAX_CONCURRENT {
                break;
            }
            let state = states.remove(&name).filter(|s| s.repo_revision == revision);
            let poll = self.next_poll.get(&name).is_none_or(|at| *at <= now);
            let waiting = self.deferred.get(&name).is_some_and(|(at, _)| *at > now);
            let deliveries = if waiting { Vec::new() } else { inbox.remove(&name).unwrap_or_default() };
            let ticks = state.as_ref().is_some_and(|s| !due(s, now_ms).is_empty());
            if !poll && deliveries.is_empty() && !ticks {
                continue;
            }
            if poll {
                self.next_poll.insert(name.clone(), now + rules::poll_delay(record.poll(), noise()));
            }
            let work = Work { poll, deliveries };
            let task = self.tasks.spawn(repo_work(ctx.clone(), record, revision, work));
            self.busy.insert(task.id(), name);
        }
        if self.pruned.is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY) {
            prune(store, now_ms).await?;
            let gone = crate::git::prune_mirrors(&ctx.git.scratch, &urls).await;
            if gone > 0 {
                tracing::info!(gone, "removed the git mirrors of removed repositories");
            }
            self.pruned = Some(now);
        }
        Ok(())
    }
}

/// A random number for the poll jitter.
pub(crate) fn noise() -> u32 {
    let mut bytes = [0u8; 4];
    // A failed draw only loses the jitter.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 500;
    }
    u32::from_le_bytes(bytes)
}

/// The ticks of a repository's schedules due at `now_ms`.
fn due(state: &RepoState, now_ms: u64) -> Vec<(String, u64)> {
    let schedules: Vec<Schedule> = state.schedules.keys().map(|cron| Schedule { cron: cron.clone() }).collect();
    rules::due_schedules(&schedules, &state.schedules, now_ms).1
}

/// Deletes intents and delivery ids older than `KEEP_TRIGGERS_FOR`.
async fn prune(store: &dyn Store, now_ms: u64) -> Result<(), StoreError> {
    let cutoff = now_ms.saturating_sub(rules::KEEP_TRIGGERS_FOR.as_millis() as u64);
    let mut doomed = Vec::new();
    let (intents, _) = store.range(keys::INTENTS).await?;
    for kv in &intents {
        match decode::<records::Intent>(&kv.key, &kv.value) {
            Ok(intent) if intent.created_ms < cutoff => doomed.push(Op::delete(kv.key.clone())),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "an intent does not decode; it is not pruned"),
        }
    }
    let (deliveries, _) = store.range(keys::DELIVERIES).await?;
    for kv in &deliveries {
        match decode::<u64>(&kv.key, &kv.value) {
            Ok(received) if received < cutoff => doomed.push(Op::delete(kv.key.clone())),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "a delivery id does not decode; it is not pruned"),
        }
    }
    for ops in store.split(doomed) {
        store.txn(Txn::ops(ops)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
