//! Starting one run for one trigger key, exactly once across failovers.
//!
//! A start reads the pipeline at its commit (and the files changed since
//! its base), asks the pipeline's `on:` whether it wants the event, then
//! writes an intent under `/triggers/intents/{key}` create-only, submits
//! the run with `Source.trigger = key`, and marks the intent done with the
//! run's number. A key whose intent exists starts nothing: a webhook's push
//! and the next poll of the same head make one run. A new term
//! ([`reconcile`]) finishes the intents the last one left pending: a run
//! that carries the key exists (mark it done) or it does not (submit it
//! now). The old leader's writes are fenced from the moment the new term
//! begins, so no run can appear after that look.

use std::collections::HashMap;

use tracing::{info, warn};

use super::Ctx;
use super::records::{Intent, IntentState};
use crate::core::keys;
use crate::core::machine::Source;
use crate::git::{self, Base, GitError};
use crate::records::{self, RunFilter, encode};
use crate::scheduler::SchedError;
use crate::store::{Compare, Op, StoreError, Txn, decode};
use crate::submit::{self, DEFAULT_GIT_FILE, Prepared, SubmitError};
use drover_pipeline::triggers::{Event, EventKind};

/// One start a trigger asks for.
#[derive(Debug, Clone)]
pub(super) struct Want {
    pub key: String,
    pub repo: String,
    pub url: String,
    pub commit: String,
    pub event: EventKind,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// What the changed files are counted against.
    pub base: Base,
    /// A pull request's target branch; a schedule's cron.
    pub target: Option<String>,
    pub untrusted: bool,
}

/// What became of a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Started(u64),
    /// Started already (its intent exists), or the pipeline's `on:` does
    /// not want the event.
    Skipped,
    /// It cannot start, for a reason that will not pass by itself (the
    /// pipeline does not parse at that commit): the repository's last error.
    Refused(String),
    /// It could not start now (git unreachable, the coordinator at its
    /// limits); the next look tries again.
    Later(String),
}

/// Whether a submit's error may pass by itself.
fn passing(e: &SubmitError) -> bool {
    matches!(
        e,
        SubmitError::Sched(SchedError::Stopped | SchedError::TooManyRuns { .. } | SchedError::TooManyJobs { .. })
            | SubmitError::Store(_)
    )
}

/// Whether a git error may pass by itself (a server down, a timeout).
fn git_passing(e: &GitError) -> bool {
    matches!(e, GitError::Clone { .. } | GitError::Timeout { .. } | GitError::Spawn(_))
}

/// A fenced write inside a submit ends the term's work, as a store error.
fn fenced(e: &SubmitError) -> Option<StoreError> {
    match e {
        SubmitError::Store(StoreError::Fenced { epoch })
        | SubmitError::Sched(SchedError::Store(StoreError::Fenced { epoch })) => {
            Some(StoreError::Fenced { epoch: *epoch })
        }
        _ => None,
    }
}

/// What the start is, for messages: "push to main at abc1234".
pub(super) fn describe(want: &Want) -> String {
    let short = &want.commit[..want.commit.len().min(12)];
    match want.event {
        EventKind::Push => format!("push to {} at {short}", want.branch.as_deref().unwrap_or("?")),
        EventKind::Tag => format!("tag {} at {short}", want.tag.as_deref().unwrap_or("?")),
        EventKind::PullRequest => format!("pull request from {} at {short}", want.branch.as_deref().unwrap_or("?")),
        EventKind::Schedule => format!("schedule {:?} at {short}", want.target.as_deref().unwrap_or("?")),
        EventKind::Manual => format!("manual run at {short}"),
    }
}

/// Starts `want` unless its key started before or its pipeline does not
/// want it. Only a store error (a fenced write ends the term) is an error.
pub(super) async fn start(ctx: &Ctx, want: &Want) -> Result<Outcome, StoreError> {
    let store = ctx.store.as_ref();
    if store.get(&keys::intent(&want.key)).await?.is_some() {
        return Ok(Outcome::Skipped);
    }
    let read = git::at_commit(&want.url, &want.commit, DEFAULT_GIT_FILE, &want.base, &ctx.git.scratch, ctx.git.timeout);
    let at = match read.await {
        Ok(at) => at,
        Err(e) if git_passing(&e) => return Ok(Outcome::Later(format!("{}: {e}", describe(want)))),
        Err(e) => return Ok(Outcome::Refused(format!("{}: {e}; nothing started", describe(want)))),
    };
    let pipeline = match submit::parse(DEFAULT_GIT_FILE, &at.contents, Some(&ctx.vault)).await {
        Ok(pipeline) => pipeline,
        Err(e) => return Ok(Outcome::Refused(format!("{}: {e}\nnothing started", describe(want)))),
    };
    let changed = at.changed.as_deref();
    let event = match want.event {
        EventKind::Push => Event::Push { branch: want.branch.as_deref().unwrap_or_default(), changed },
        EventKind::Tag => Event::Tag { tag: want.tag.as_deref().unwrap_or_default() },
        EventKind::PullRequest => Event::PullRequest { target: want.target.as_deref().unwrap_or_default(), changed },
        EventKind::Schedule => Event::Schedule { cron: want.target.as_deref().unwrap_or_default() },
        EventKind::Manual => Event::Manual,
    };
    if !pipeline.on.wants(&event) {
        return Ok(Outcome::Skipped);
    }
    let intent = Intent {
        repo: want.repo.clone(),
        url: want.url.clone(),
        commit: want.commit.clone(),
        file: DEFAULT_GIT_FILE.to_owned(),
        event: want.event,
        branch: want.branch.clone(),
        tag: want.tag.clone(),
        untrusted: want.untrusted,
        created_ms: drover_telemetry::trace::now_ms(),
        state: IntentState::Pending,
    };
    let key = keys::intent(&want.key);
    let txn = Txn {
        compare: vec![Compare::CreateRevision(key.clone(), 0)],
        success: vec![Op::put(key, encode(&intent))],
        failure: Vec::new(),
    };
    if !store.txn(txn).await?.succeeded {
        return Ok(Outcome::Skipped);
    }
    submit_intent(ctx, &want.key, intent, pipeline).await
}

/// Submits the run of a pending intent and marks it done; a refusal that
/// will not pass marks it failed, one that may pass leaves it pending for
/// [`reconcile`].
async fn submit_intent(
    ctx: &Ctx,
    key: &str,
    intent: Intent,
    pipeline: drover_pipeline::Pipeline,
) -> Result<Outcome, StoreError> {
    let source = Source {
        repo: Some(intent.url.clone()),
        commit: Some(intent.commit.clone()),
        file: intent.file.clone(),
        branch: intent.branch.clone(),
        tag: intent.tag.clone(),
        event: intent.event,
        trigger: Some(key.to_owned()),
        untrusted: intent.untrusted,
        submitted_by: None,
    };
    let prepared = Prepared { pipeline, source, queue_timeout: None, rerun: None };
    match submit::submit(ctx.store.as_ref(), &ctx.sched, prepared, None).await {
        Ok(submitted) => {
            info!(trigger = key, run = submitted.run, "a trigger started a run");
            mark(ctx, key, intent, IntentState::Done { run: submitted.run }).await?;
            Ok(Outcome::Started(submitted.run))
        }
        Err(e) => {
            if let Some(fenced) = fenced(&e) {
                return Err(fenced);
            }
            let what = format!("the run of {key} was not submitted: {e}");
            if passing(&e) {
                // Left pending: `reconcile` tries it again.
                Ok(Outcome::Later(what))
            } else {
                mark(ctx, key, intent, IntentState::Failed { error: e.to_string() }).await?;
                Ok(Outcome::Refused(what))
            }
        }
    }
}

async fn mark(ctx: &Ctx, key: &str, mut intent: Intent, state: IntentState) -> Result<(), StoreError> {
    intent.state = state;
    ctx.store.txn(Txn::ops(vec![Op::put(keys::intent(key), encode(&intent))])).await?;
    Ok(())
}

/// Finishes the intents left pending (see the module header): by a past
/// term, as a term's triggers begin, and by a submit that may pass, while
/// no start is under way (so none is pending only because its submit has
/// not returned yet).
pub(super) async fn reconcile(ctx: &Ctx) -> Result<(), StoreError> {
    let (kvs, _) = ctx.store.range(keys::INTENTS).await?;
    let mut pending = Vec::new();
    for kv in &kvs {
        match decode::<Intent>(&kv.key, &kv.value) {
            Ok(intent) if intent.state == IntentState::Pending => {
                pending.push((kv.key[keys::INTENTS.len()..].to_owned(), intent))
            }
            Ok(_) => {}
            // Its key still blocks a second start; only this one is lost.
            Err(e) => warn!(error = %e, "an intent does not decode; it is left as it is"),
        }
    }
    if pending.is_empty() {
        return Ok(());
    }
    let runs = records::list_runs(ctx.store.as_ref(), usize::MAX, &RunFilter::default()).await?;
    let by_trigger: HashMap<&str, u64> =
        runs.iter().filter_map(|r| Some((r.source.trigger.as_deref()?, r.id))).collect();
    for (key, intent) in pending {
        if let Some(&run) = by_trigger.get(key.as_str()) {
            info!(trigger = %key, run, "a trigger's run was submitted before the failover");
            mark(ctx, &key, intent, IntentState::Done { run }).await?;
            continue;
        }
        let read =
            git::at_commit(&intent.url, &intent.commit, &intent.file, &Base::None, &ctx.git.scratch, ctx.git.timeout);
        let outcome = match read.await {
            Ok(at) => match submit::parse(&intent.file, &at.contents, Some(&ctx.vault)).await {
                Ok(pipeline) => submit_intent(ctx, &key, intent, pipeline).await?,
                Err(e) => {
                    mark(ctx, &key, intent, IntentState::Failed { error: e.to_string() }).await?;
                    Outcome::Refused(e.to_string())
                }
            },
            // Left pending for the next look: nothing else starts this key.
            Err(e) if git_passing(&e) => Outcome::Later(e.to_string()),
            Err(e) => {
                mark(ctx, &key, intent, IntentState::Failed { error: e.to_string() }).await?;
                Outcome::Refused(e.to_string())
            }
        };
        match outcome {
            Outcome::Started(run) => info!(trigger = %key, run, "started a trigger's run left pending by a failover"),
            Outcome::Skipped => {}
            Outcome::Refused(why) | Outcome::Later(why) => {
                warn!(trigger = %key, error = %why, "a trigger left pending by a failover did not start")
            }
        }
    }
    Ok(())
}
