//! One repository's task in a pass of the triggers (see the module above):
//! its webhook deliveries, its poll and the schedules it reads, its due
//! cron ticks, each start through `super::start`, and the state it writes
//! back (heads, schedules, last poll and last error).

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_telemetry::trace::now_ms;
use tracing::{debug, warn};

use super::Ctx;
use super::records::{Inboxed, Observation, RepoRecord, RepoState};
use super::start::{self, Outcome, Want};
use crate::core::keys;
use crate::core::triggers::{self as rules, Start};
use crate::git::{self, Base, GitError};
use crate::records::encode;
use crate::store::{Compare, Op, Revision, StoreError, Txn, decode};
use crate::submit::DEFAULT_GIT_FILE;
use drover_pipeline::triggers::{EventKind, Schedule};

/// How a failed poll's error begins; the next good poll clears it.
const POLL_FAILED: &str = "the last poll failed: ";

/// What one repository's task does this time.
pub(super) struct Work {
    pub poll: bool,
    pub deliveries: Vec<(String, Inboxed)>,
}

/// What a task's starts said, for the repository's last error.
#[derive(Default)]
struct Notes {
    errors: Vec<String>,
    started: bool,
}

impl Notes {
    fn note(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Started(_) => self.started = true,
            Outcome::Skipped => {}
            Outcome::Refused(why) | Outcome::Later(why) => self.errors.push(why.clone()),
        }
    }
}

/// One repository's deliveries, poll and ticks (see the module header).
pub(super) async fn repo_work(
    ctx: Arc<Ctx>,
    record: RepoRecord,
    revision: Revision,
    work: Work,
) -> Result<super::Deferred, StoreError> {
    let store = ctx.store.as_ref();
    let now_ms = now_ms();
    let mut state = match store.get(&keys::repo_state(&record.name)).await? {
        Some(kv) => decode::<RepoState>(&kv.key, &kv.value)?,
        None => RepoState::default(),
    };
    if state.repo_revision != revision {
        state = RepoState { repo_revision: revision, ..RepoState::default() };
    }
    let mut notes = Notes::default();
    let mut deferred = false;
    for (key, item) in work.deliveries {
        let mut later = false;
        for want in wants_of(&record, &item.observation) {
            let outcome = start::start(&ctx, &want).await?;
            later |= matches!(outcome, Outcome::Later(_));
            notes.note(&outcome);
        }
        // One that may pass is handled again, after a while.
        if later {
            deferred = true;
        } else {
            store.txn(Txn::ops(vec![Op::delete(key)])).await?;
        }
    }
    let mut polled = false;
    if work.poll {
        match poll(&ctx, &record, &mut state, now_ms, &mut notes).await? {
            Ok(()) => polled = true,
            Err(e) => notes.errors.push(format!("{POLL_FAILED}{e}")),
        }
    }
    fire(&ctx, &record, &mut state, now_ms, &mut notes).await?;
    if !notes.errors.is_empty() {
        state.last_error = Some(notes.errors.join("\n"));
        state.last_error_ms = now_ms;
    } else if notes.started || (polled && state.last_error.as_deref().is_some_and(|e| e.starts_with(POLL_FAILED))) {
        state.last_error = None;
    }
    // Only while the repository is the one this task was given.
    let txn = Txn {
        compare: vec![Compare::CreateRevision(keys::repo(&record.name), revision)],
        success: vec![Op::put(keys::repo_state(&record.name), encode(&state))],
        failure: Vec::new(),
    };
    store.txn(txn).await?;
    Ok(deferred)
}

/// Polls `record`: its heads, the starts they ask for, and its schedules
/// when the default branch moved. The inner error is git's, for the last
/// error; the heads are then left as they were.
async fn poll(
    ctx: &Ctx,
    record: &RepoRecord,
    state: &mut RepoState,
    now_ms: u64,
    notes: &mut Notes,
) -> Result<Result<(), String>, StoreError> {
    let text = match git::ls_remote(&record.url, ctx.git.timeout).await {
        Ok(text) => text,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let (remote, default) = match rules::parse_ls_remote(&text) {
        Ok(parsed) => parsed,
        Err(e) => return Ok(Err(e)),
    };
    let mut heads = remote.clone();
    for start in rules::observe(state.heads.as_ref(), &remote, &record.branches) {
        let want = want_of_start(record, &start);
        let outcome = start::start(ctx, &want).await?;
        if let Outcome::Later(_) = outcome {
            // Seen again at the next poll.
            let (name, old) = match &start {
                Start::Push { branch, old, .. } => (format!("refs/heads/{branch}"), old.clone()),
                Start::Tag { tag, .. } => (
                    format!("refs/tags/{tag}"),
                    state.heads.as_ref().and_then(|h| h.get(&format!("refs/tags/{tag}")).cloned()),
                ),
            };
            match old {
                Some(old) => heads.insert(name, old),
                None => heads.remove(&name),
            };
        }
        notes.note(&outcome);
    }
    state.heads = Some(heads);
    state.default_branch = default;
    state.last_poll_ms = now_ms;
    let branch = state.default_branch.clone().unwrap_or_else(|| "main".to_owned());
    let head = remote.get(&format!("refs/heads/{branch}")).cloned();
    if head.is_some() && head != state.schedules_at {
        let head = head.unwrap_or_default();
        match schedules_at(ctx, record, &head).await {
            Ok(crons) => {
                let fired: BTreeMap<String, u64> = crons
                    .into_iter()
                    .map(|cron| {
                        let last = state.schedules.get(&cron).copied().unwrap_or(now_ms);
                        (cron, last)
                    })
                    .collect();
                debug!(repo = %record.name, commit = %head, schedules = fired.len(), "read the schedules");
                state.schedules = fired;
                state.schedules_at = Some(head);
            }
            Err(Some(why)) => {
                notes.errors.push(format!("the schedules on {branch} at {}: {why}", &head[..head.len().min(12)]));
                state.schedules_at = Some(head);
            }
            // Tried again at the next poll.
            Err(None) => {}
        }
    }
    Ok(Ok(()))
}

/// The crons of the pipeline at `commit`: none without a pipeline file;
/// `Err(Some(why))` when it does not parse (the schedules stay as they
/// were), `Err(None)` when git could not be reached.
async fn schedules_at(ctx: &Ctx, record: &RepoRecord, commit: &str) -> Result<Vec<String>, Option<String>> {
    let read = git::at_commit(&record.url, commit, DEFAULT_GIT_FILE, &Base::None, &ctx.git.scratch, ctx.git.timeout);
    match read.await {
        Ok(at) => match drover_pipeline::parse(DEFAULT_GIT_FILE, &at.contents) {
            Ok(pipeline) => Ok(pipeline.on.schedule.into_iter().map(|s| s.cron).collect()),
            Err(e) => Err(Some(format!("the pipeline does not parse:\n{e}"))),
        },
        Err(GitError::FileNotFound { .. }) => Ok(Vec::new()),
        Err(e @ (GitError::Clone { .. } | GitError::Timeout { .. } | GitError::Spawn(_))) => {
            warn!(repo = %record.name, error = %e, "cannot read the schedules yet");
            Err(None)
        }
        Err(e) => Err(Some(e.to_string())),
    }
}

/// Fires the due ticks of `record`'s schedules, at its default branch's
/// head; a tick that could not start now stays due.
async fn fire(
    ctx: &Ctx,
    record: &RepoRecord,
    state: &mut RepoState,
    now_ms: u64,
    notes: &mut Notes,
) -> Result<(), StoreError> {
    let branch = state.default_branch.clone().unwrap_or_else(|| "main".to_owned());
    let Some(head) = state.schedules_at.clone() else { return Ok(()) };
    let schedules: Vec<Schedule> = state.schedules.keys().map(|cron| Schedule { cron: cron.clone() }).collect();
    let (mut next, due) = rules::due_schedules(&schedules, &state.schedules, now_ms);
    for (cron, tick) in due {
        let want = Want {
            key: rules::cron_key(&record.name, &cron, tick),
            repo: record.name.clone(),
            url: record.url.clone(),
            commit: head.clone(),
            event: EventKind::Schedule,
            branch: Some(branch.clone()),
            tag: None,
            base: Base::None,
            target: Some(cron.clone()),
            untrusted: false,
        };
        let outcome = start::start(ctx, &want).await?;
        if let Outcome::Later(_) = outcome
            && let Some(&last) = state.schedules.get(&cron)
        {
            next.insert(cron, last);
        }
        notes.note(&outcome);
    }
    state.schedules = next;
    Ok(())
}

/// The start a poll's change asks for.
fn want_of_start(record: &RepoRecord, start: &Start) -> Want {
    let (key, commit, event, branch, tag, base) = match start {
        Start::Push { branch, old, new } => (
            rules::push_key(&record.name, branch, new),
            new.clone(),
            EventKind::Push,
            Some(branch.clone()),
            None,
            old.clone().map_or(Base::None, Base::Commit),
        ),
        Start::Tag { tag, commit } => (
            rules::tag_key(&record.name, tag, commit),
            commit.clone(),
            EventKind::Tag,
            None,
            Some(tag.clone()),
            Base::None,
        ),
    };
    Want {
        key,
        repo: record.name.clone(),
        url: record.url.clone(),
        commit,
        event,
        branch,
        tag,
        base,
        target: None,
        untrusted: false,
    }
}

/// The starts a webhook's delivery asks for: a deleted branch, or one
/// `--branches` does not take, none.
fn wants_of(record: &RepoRecord, observation: &Observation) -> Vec<Want> {
    let zero = |c: &str| c.bytes().all(|b| b == b'0');
    match observation {
        Observation::Push { after, .. } if zero(after) => Vec::new(),
        Observation::Push { branch, .. } if !rules::branch_wanted(&record.branches, branch) => Vec::new(),
        Observation::Push { branch, before, after } => {
            let old = before.clone().filter(|b| !zero(b));
            vec![want_of_start(record, &Start::Push { branch: branch.clone(), old, new: after.clone() })]
        }
        Observation::Tag { tag, commit } => {
            vec![want_of_start(record, &Start::Tag { tag: tag.clone(), commit: commit.clone() })]
        }
        Observation::PullRequest { number, head_commit, head_branch, target_branch } => vec![Want {
            key: rules::pr_key(&record.name, *number, head_commit),
            repo: record.name.clone(),
            url: record.url.clone(),
            commit: head_commit.clone(),
            event: EventKind::PullRequest,
            branch: Some(head_branch.clone()),
            tag: None,
            base: Base::ForkOf(target_branch.clone()),
            target: Some(target_branch.clone()),
            untrusted: !record.trusted,
        }],
    }
}
