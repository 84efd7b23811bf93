//! The apps controller (issue 16): pull-based GitOps for plain hosts. It
//! runs under the leader, owns `/apps/` (see `records`), and converges
//! what each app's environment runs to the desired state its repository
//! declares, through the rollout controller (a sync is one rollout per
//! service that differs, with no run: `SyncCommand` through the
//! scheduler).
//!
//! Every [`TICK`], and at once when a request is written (`drover app
//! sync|refresh|rollback`, a webhook's push; by any coordinator, watched
//! under `/apps/requests/`), it reads the apps, their statuses, pins and
//! the requests waiting, and
//! reconciles each app that is due: its poll came (every `--poll`, ±10%),
//! a request waits, or its sync just ended. At most [`MAX_CONCURRENT`]
//! apps reconcile at once, so a slow repository holds up only itself. A
//! reconcile:
//!
//! 1. fetches the revision into the app's mirror and reads its files
//!    (`render`); a repository that does not answer, or a commit whose
//!    files are invalid, is the app's error, and nothing changes on the
//!    nodes;
//! 2. resolves each service's release (the run's artifact, by digest);
//! 3. diffs it against what the nodes serve (`/rollouts/deployed/`, with
//!    the health agents report) and the nodes it should run on;
//! 4. decides (`core::apps::decide`) whether a sync starts: asked for,
//!    `--auto-sync` on a new commit, `--self-heal` on drift; a pinned app
//!    (`drover app rollback --to`) converges to its pin, not to the head;
//!    an app whose `--depends-on` apps are not synced and healthy waits
//!    (`AppStatus::blocked` says for what);
//! 5. writes the sync's record first, then asks for its rollouts, then
//!    writes their ids (write, then act).
//!
//! A sync under way is looked at every tick until its rollouts end; it
//! succeeds when every one of them did, and its commit is then the app's
//! synced commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tracing::{info, warn};

use crate::controller::{Controller, ControllerError, Started, Term};
use crate::core::apps::{self as rules, Facts, ServiceStatus, Start};
use crate::records::encode;
use crate::scheduler::{Event, Handle, SyncAction, SyncCommand};
use crate::store::{Compare, Op, Revision, Store, Txn, decode};
use crate::submit::GitOptions;

pub mod access;
mod evaluate;
pub mod fetch;
pub mod records;
pub mod render;
mod syncs;
mod update;

use evaluate::{Evaluated, Plan, evaluate};
use syncs::check_sync;

use records::{AppRecord, AppStatus, Pin, Request, SyncRecord};

/// How often apps, requests and syncs under way are looked at.
pub const TICK: Duration = Duration::from_secs(1);
/// How often the mirrors of repositories no app follows are removed.
const PRUNE_MIRRORS_EVERY: Duration = Duration::from_secs(60 * 60);
/// The most apps reconciled at once.
const MAX_CONCURRENT: usize = 8;

#[derive(Debug, Clone)]
pub struct Config {
    pub git: GitOptions,
    /// The largest artifact by URL fetched (`--max-artifact-bytes`).
    pub max_artifact_bytes: u64,
    /// Where deploy keys are opened from.
    pub vault: Arc<crate::secrets::Vault>,
    /// Where artifacts by URL may be fetched from (`--outbound-allow`).
    pub outbound: crate::outbound::Outbound,
}

pub struct Apps {
    config: Config,
}

impl Apps {
    pub fn new(config: Config) -> Apps {
        Apps { config }
    }
}

#[async_trait]
impl Controller for Apps {
    fn name(&self) -> &'static str {
        "apps"
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &[records::PREFIX]
    }

    async fn start(&self, term: &Term) -> Result<Started, ControllerError> {
        let sched = term
            .sched
            .clone()
            .ok_or_else(|| ControllerError::Failed("the apps controller starts after the scheduler".into()))?;
        let ctx = Arc::new(Ctx {
            store: term.store.clone(),
            sched,
            git: self.config.git.clone(),
            blobs: term.blobs.clone(),
            max_artifact_bytes: self.config.max_artifact_bytes,
            vault: self.config.vault.clone(),
            outbound: self.config.outbound.clone(),
        });
        Ok(Started::work(run(ctx)))
    }
}

struct Ctx {
    store: Arc<dyn Store>,
    sched: Handle,
    git: GitOptions,
    blobs: Arc<crate::blobs::Blobs>,
    max_artifact_bytes: u64,
    vault: Arc<crate::secrets::Vault>,
    outbound: crate::outbound::Outbound,
}

/// One app as read this tick.
struct Due {
    record: AppRecord,
    status: AppStatus,
    pin: Option<Pin>,
    /// How every app stood at the start of the tick, for `depends_on`.
    states: Arc<BTreeMap<String, rules::DepState>>,
    sync_request: Option<(Revision, Request)>,
    refresh_request: Option<Revision>,
}

async fn run(ctx: Arc<Ctx>) -> Result<(), ControllerError> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each app is next fetched, by name and the create revision of
    // its record: an app removed and made again is a new app.
    let mut next_fetch: HashMap<(String, Revision), u64> = HashMap::new();
    // A request (a sync, a refresh, a webhook's push) wakes the loop at
    // once rather than at the next tick.
    let mut requests = Some(ctx.store.watch(records::REQUESTS, 0).await?);
    let mut last_prune = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            message = async { requests.as_mut()?.recv().await }, if requests.is_some() => {
                if message.is_none() {
                    warn!("the watch of app requests ended; requests wait for the next tick");
                    requests = None;
                }
            }
        }
        let now = drover_telemetry::trace::now_ms();
        let tick = std::time::Instant::now();
        let apps = read(ctx.store.as_ref()).await?;
        let out_of_sync = apps.iter().filter(|a| a.status.sync_status == "out_of_sync").count();
        crate::metrics::METRICS.apps_out_of_sync.set(i64::try_from(out_of_sync).unwrap_or(i64::MAX));
        next_fetch
            .retain(|(name, rev), _| apps.iter().any(|a| a.record.spec.name == *name && a.status.app_revision == *rev));
        // The mirrors of repositories no app follows any more go, now and
        // then (one in use is skipped until the next time).
        if last_prune.elapsed() >= PRUNE_MIRRORS_EVERY {
            last_prune = std::time::Instant::now();
            let urls: Vec<String> = apps.iter().map(|a| a.record.spec.repo.clone()).collect();
            let root = ctx.git.scratch.with_file_name(crate::git::APP_MIRRORS);
            let gone = crate::git::prune_mirrors_in(&root, &urls).await;
            if gone > 0 {
                info!(gone, "removed the git mirrors of repositories no app follows");
            }
            let keyed = apps.iter().filter(|a| !a.record.spec.deploy_key.is_empty());
            let keys = ctx.git.scratch.with_file_name(access::APP_KEYS);
            access::prune(&keys, keyed.map(|a| a.record.spec.name.clone()).collect()).await;
        }
        let mut due = Vec::new();
        for mut app in apps {
            let name = app.record.spec.name.clone();
            let key = (name.clone(), app.status.app_revision);
            if app.status.syncing.is_some() {
                match check_sync(&ctx, &app.record.spec, &mut app.status, now).await {
                    Ok(true) => {
                        next_fetch.remove(&key);
                    }
                    Ok(false) => {}
                    Err(e) => warn!(app = %name, error = %e, "cannot look at a sync"),
                }
            }
            let poll_due = next_fetch.get(&key).is_none_or(|at| now >= *at);
            // A blocked sync looks again every tick, for its dependencies.
            let blocked = !app.status.blocked.is_empty();
            if poll_due || blocked || app.sync_request.is_some() || app.refresh_request.is_some() {
                let poll = app.record.spec.poll_ms;
                let jitter = u64::from(crate::triggers::noise()) % (poll / 5 + 1);
                next_fetch.insert(key, now + poll - poll / 10 + jitter);
                due.push(app);
            }
        }
        let results: Vec<(String, Result<(), ControllerError>)> = futures_util::stream::iter(due)
            .map(|app| {
                let ctx = ctx.clone();
                async move { (app.record.spec.name.clone(), reconcile(&ctx, app, now, tick).await) }
            })
            .buffer_unordered(MAX_CONCURRENT)
            .collect()
            .await;
        for (name, result) in results {
            match result {
                Ok(()) => {}
                // The term is over: the fenced store refuses, or the
                // scheduler stopped.
                Err(ControllerError::Store(e)) => return Err(ControllerError::Store(e)),
                Err(e) => warn!(app = %name, error = %e, "reconcile failed"),
            }
        }
    }
}

/// Every app with its status and its requests.
async fn read(store: &dyn Store) -> Result<Vec<Due>, ControllerError> {
    let (apps, _) = store.range(records::APPS).await?;
    let (statuses, _) = store.range(records::STATUS).await?;
    let (requests, _) = store.range(records::REQUESTS).await?;
    let (pins, _) = store.range(records::PINS).await?;
    let mut pin_of = BTreeMap::new();
    for kv in &pins {
        pin_of.insert(kv.key[records::PINS.len()..].to_owned(), decode::<Pin>(&kv.key, &kv.value)?);
    }
    let mut status_of = BTreeMap::new();
    for kv in &statuses {
        let s: AppStatus = decode(&kv.key, &kv.value)?;
        status_of.insert(kv.key[records::STATUS.len()..].to_owned(), s);
    }
    let mut out = Vec::with_capacity(apps.len());
    for kv in &apps {
        let record: AppRecord = decode(&kv.key, &kv.value)?;
        let name = record.spec.name.clone();
        let status = status_of
            .remove(&name)
            .filter(|s| s.app_revision == kv.create_revision)
            .unwrap_or_else(|| AppStatus { app_revision: kv.create_revision, ..AppStatus::default() });
        let prefix = records::requests_of(&name);
        let mut sync_request = None;
        let mut refresh_request = None;
        for r in requests.iter().filter(|r| r.key.starts_with(&prefix)) {
            match &r.key[prefix.len()..] {
                "sync" => sync_request = Some((r.mod_revision, decode::<Request>(&r.key, &r.value)?)),
                "refresh" => refresh_request = Some(r.mod_revision),
                _ => {}
            }
        }
        let pin = pin_of.remove(&name);
        out.push(Due { record, status, pin, states: Arc::default(), sync_request, refresh_request });
    }
    let states: Arc<BTreeMap<String, rules::DepState>> = Arc::new(
        out.iter()
            .map(|d| {
                let s = &d.status;
                let state = rules::DepState {
                    sync_status: s.sync_status.clone(),
                    health: s.health.clone(),
                    syncing: s.syncing.is_some(),
                    last_fetch_ms: s.last_fetch_ms,
                };
                (d.record.spec.name.clone(), state)
            })
            .collect(),
    );
    for due in &mut out {
        due.states = states.clone();
    }
    Ok(out)
}

/// One app's reconcile, in the tick that began at `tick` (a mirror
/// fetched since serves it unfetched).
async fn reconcile(ctx: &Ctx, app: Due, now: u64, tick: std::time::Instant) -> Result<(), ControllerError> {
    let Due { record, mut status, pin, states, sync_request, refresh_request } = app;
    let spec = &record.spec;
    let name = spec.name.clone();
    let before = status.clone();
    let store = ctx.store.as_ref();
    let mut ops = Vec::new();
    if let Some(rev) = refresh_request {
        let key = format!("{}refresh", records::requests_of(&name));
        store
            .txn(Txn {
                compare: vec![Compare::ModRevision(key.clone(), rev)],
                success: vec![Op::delete(key)],
                failure: vec![],
            })
            .await?;
    }
    // A sync asked for at a revision renders that one, once; a pin holds
    // the app at its commit; else the app's revision.
    let asked_at = sync_request.as_ref().and_then(|(_, r)| r.revision.clone());
    let revision =
        asked_at.or_else(|| pin.as_ref().map(|p| p.commit.clone())).unwrap_or_else(|| spec.reference().to_owned());
    let outcome = evaluate(ctx, spec, &revision, &mut status, now, tick).await?;
    let asked_by = sync_request.as_ref().map(|(_, r)| r.by.clone());
    let start = match &outcome {
        // A sync asked for of a commit that cannot be read ends at once,
        // saying why, once no sync runs.
        Evaluated::Broken(_) if status.syncing.is_none() => asked_by.clone().map(Start::Asked),
        Evaluated::Broken(_) => None,
        Evaluated::Diffed { drift, .. } => rules::decide(
            &Facts {
                spec,
                wanted: status.wanted_commit.as_deref().unwrap_or_default(),
                synced: status.synced_commit.as_deref(),
                last_auto: status.last_auto.as_ref().map(|(c, at)| (c.as_str(), *at)),
                syncing: status.syncing.map(|_| status.syncing_commit.as_deref().unwrap_or_default()),
                asked_by: asked_by.as_deref(),
            },
            *drift,
            now,
        ),
    };
    // An app syncs only once the apps it depends on are synced and healthy;
    // a sync asked for waits with it.
    let blocked = start.as_ref().and_then(|_| rules::blocked_by(&spec.depends_on, &states, status.wanted_since_ms));
    status.blocked = blocked.as_ref().map(|(why, _)| why.clone()).unwrap_or_default();
    if let Some((_, stale)) = blocked {
        let mut ops: Vec<Op> = stale
            .iter()
            .map(|dep| {
                let request = Request { by: format!("app {name}, which depends on it"), at_ms: now, revision: None };
                Op::put(format!("{}refresh", records::requests_of(dep)), encode(&request))
            })
            .collect();
        if status != before {
            ops.push(Op::put(records::status(&name), encode(&status)));
        }
        if !ops.is_empty() {
            store.txn(Txn::ops(ops)).await?;
        }
        return Ok(());
    }
    let request = sync_request.as_ref().map_or(0, |(rev, _)| u64::try_from(*rev).unwrap_or_default());
    if let Some((rev, _)) = &sync_request
        && (start.is_some() || status.syncing.is_none())
    {
        // Taken, unless a newer one replaced it meanwhile.
        let key = format!("{}sync", records::requests_of(&name));
        store
            .txn(Txn {
                compare: vec![Compare::ModRevision(key.clone(), *rev)],
                success: vec![Op::delete(key)],
                failure: vec![],
            })
            .await?;
    }
    let Some(start) = start else {
        if status != before {
            ops.push(Op::put(records::status(&name), encode(&status)));
            store.txn(Txn::ops(ops)).await?;
        }
        return Ok(());
    };
    status.last_sync += 1;
    let id = status.last_sync;
    let commit = status.wanted_commit.clone().unwrap_or_default();
    let mut sync = SyncRecord {
        id,
        commit: commit.clone(),
        started_by: start.by(),
        started_ms: now,
        finished_ms: None,
        outcome: "running".into(),
        message: String::new(),
        changes: Vec::new(),
        rollouts: Vec::new(),
        removed: Vec::new(),
        request,
    };
    if !matches!(start, Start::Asked(_)) {
        status.last_auto = Some((commit.clone(), now));
    }
    // A sync of an older commit is replaced: the new one's rollouts
    // supersede its own.
    if let Some(old) = status.syncing.take() {
        status.syncing_commit = None;
        if let Some(kv) = store.get(&records::sync(&name, old)).await? {
            let mut replaced: SyncRecord = decode(&kv.key, &kv.value)?;
            replaced.outcome = "superseded".into();
            replaced.finished_ms = Some(now);
            replaced.message = format!("replaced by sync {id} of the newer commit {}", short(&commit));
            ops.push(Op::put(records::sync(&name, old), encode(&replaced)));
        }
        info!(app = %name, sync = old, by = id, "sync superseded by a newer commit's");
    }
    let (branch, plans) = match outcome {
        Evaluated::Broken(why) => {
            sync.outcome = "failed".into();
            sync.finished_ms = Some(now);
            sync.message = format!("nothing was changed: {why}");
            ops.push(Op::put(records::sync(&name, id), encode(&sync)));
            ops.push(Op::put(records::status(&name), encode(&status)));
            store.txn(Txn::ops(ops)).await?;
            return Ok(());
        }
        Evaluated::Diffed { branch, plans, .. } => (branch, plans),
    };
    let unresolved: Vec<String> =
        plans.iter().filter(|p| p.diff.status == ServiceStatus::Error).map(|p| p.diff.summary()).collect();
    // With --prune, a service no file declares any more is stopped.
    let changing: Vec<&Plan> = plans
        .iter()
        .filter(|p| match p.diff.status {
            ServiceStatus::OutOfSync | ServiceStatus::Missing => true,
            ServiceStatus::Orphaned => spec.prune,
            _ => false,
        })
        .collect();
    sync.changes = changing.iter().map(|p| p.diff.summary()).collect();
    // Artifacts by URL are fetched into the blob store first: one that
    // cannot be is the sync's failure, before anything changes.
    let mut unresolved = unresolved;
    let mut sizes = BTreeMap::new();
    for plan in &changing {
        if let Some(release) = plan.release.as_ref().ok().filter(|r| !r.url.is_empty()) {
            let (url, sha256) = (&release.url, &release.sha256);
            match fetch::fetch_url(&ctx.blobs, &ctx.outbound, url, sha256, ctx.max_artifact_bytes).await {
                Ok(size) => drop(sizes.insert(release.sha256.clone(), size)),
                Err(why) => unresolved.push(format!("{}: {why}", plan.diff.service)),
            }
        }
    }
    if !unresolved.is_empty() || changing.is_empty() {
        sync.finished_ms = Some(now);
        if unresolved.is_empty() {
            sync.outcome = "succeeded".into();
            sync.message = "nothing to change: every service runs what the commit declares".into();
            status.synced_commit = Some(commit);
        } else {
            sync.outcome = "failed".into();
            sync.message = format!("nothing was changed: {}", unresolved.join("; "));
        }
        ops.push(Op::put(records::sync(&name, id), encode(&sync)));
        ops.push(Op::put(records::status(&name), encode(&status)));
        store.txn(Txn::ops(ops)).await?;
        return Ok(());
    }
    // Write, then act.
    status.syncing = Some(id);
    status.syncing_commit = Some(commit.clone());
    status.health = "progressing".into();
    ops.push(Op::put(records::sync(&name, id), encode(&sync)));
    ops.push(Op::put(records::status(&name), encode(&status)));
    store.txn(Txn::ops(std::mem::take(&mut ops))).await?;
    info!(app = %name, sync = id, commit = %commit, by = %sync.started_by, services = changing.len(), "sync started");
    let mut refused = Vec::new();
    for plan in changing {
        let service = plan.diff.service.clone();
        let action = match (&plan.file, &plan.release) {
            (Some(file), Ok(release)) => SyncAction::Deploy {
                release: crate::core::fleet::ReleaseRef {
                    size: sizes.get(&release.sha256).copied().unwrap_or(release.size),
                    ..release.clone()
                },
                deploy: Box::new(file.deploy_spec(&spec.environment)),
                select: file.nodes.clone(),
            },
            (Some(_), Err(_)) => continue,
            (None, _) => SyncAction::Remove { service: service.clone() },
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        let cmd = SyncCommand {
            env: spec.environment.clone(),
            action,
            branch: branch.clone(),
            by: format!("app {name} sync {id} ({})", sync.started_by),
            automatic: matches!(start, Start::AutoSync) && pin.is_none(),
            reply,
        };
        if ctx.sched.send(Event::AppSync(Box::new(cmd))).await.is_err() {
            return Ok(());
        }
        match rx.await {
            Ok(Ok(rollout)) => {
                sync.rollouts.push(rollout);
                if plan.file.is_some() {
                    status.owned.insert(service);
                } else {
                    sync.removed.push(service);
                }
            }
            Ok(Err(why)) => refused.push(format!("{service}: {why}")),
            Err(_) => return Ok(()),
        }
    }
    if !refused.is_empty() {
        sync.message = format!("not started: {}", refused.join("; "));
    }
    ops.push(Op::put(records::sync(&name, id), encode(&sync)));
    ops.push(Op::put(records::status(&name), encode(&status)));
    store.txn(Txn::ops(ops)).await?;
    Ok(())
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
