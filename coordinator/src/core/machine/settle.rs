//! Deciding pending jobs: once the jobs a job needs have finished, its
//! `if:` condition (or, without one, `success()`) says whether it is
//! queued or skipped ([`drover_pipeline::expr::passes`]). A skipped job
//! counts as skipped, not failed, and its own dependents then decide by
//! their conditions in turn.
//!
//! A job whose condition reads no status function (or that has none) can
//! only run when everything it needs succeeded, so it is skipped as soon as
//! one of its needs fails, without waiting for the others; one that reads
//! `failure()`, `always()` or `cancelled()` waits until all its needs have
//! finished.
//!
//! When the run is cancelled, the jobs whose condition holds then
//! (`always()`, `cancelled()`) go on (`survives_cancel`): a running one
//! runs to its end, a waiting one is decided once its needs have stopped;
//! a pending job that will not run is then cancelled, not skipped.
//!
//! What a condition sees: the run's source (`drover.commit`,
//! `drover.branch`, `drover.tag`, `drover.event`); the job's matrix
//! values; `env` as the pipeline and the job set it; the
//! result of each job it needs; and a status: cancelled when the run is
//! being cancelled, else failed when any job it needs, directly or through
//! others, failed or was cancelled, else skipped when one was skipped,
//! else succeeded.

use std::collections::BTreeSet;

use drover_pipeline::JobSpec;
use drover_pipeline::expr::{self, Context, DroverField, JobResult, Status};

use super::{Approval, Effect, JobState, Run, queue};

/// What one job's condition reads; without a job (`spec: None`), what the
/// pipeline's own `${{ }}` reads: the run's source and the top-level `env`.
struct JobContext<'a> {
    run: &'a Run,
    spec: Option<&'a JobSpec>,
    status: Status,
}

impl Context for JobContext<'_> {
    fn drover(&self, field: DroverField) -> Option<String> {
        match field {
            DroverField::Commit => self.run.record.source.commit.clone(),
            DroverField::Event => Some(self.run.record.source.event.as_str().to_string()),
            DroverField::Branch => self.run.record.source.branch.clone(),
            DroverField::Tag => self.run.record.source.tag.clone(),
        }
    }

    fn env(&self, name: &str) -> Option<String> {
        self.spec.and_then(|s| s.env.get(name)).or_else(|| self.run.record.pipeline.env.get(name)).cloned()
    }

    fn matrix(&self, name: &str) -> Option<String> {
        self.spec?.matrix.as_ref()?.value(name).map(str::to_string)
    }

    fn need_result(&self, job: &str) -> Option<JobResult> {
        match self.run.jobs.get(job) {
            Some(j) => result_of(j.state),
            // A matrix job as written: all its expansions together.
            None => {
                matrix_result(self.run.record.pipeline.expansions(job).map(|s| Some(self.run.jobs.get(&s.name)?.state)))
            }
        }
    }

    fn status(&self) -> Status {
        self.status
    }
}

fn result_of(state: JobState) -> Option<JobResult> {
    Some(match state {
        JobState::Succeeded => JobResult::Success,
        JobState::Failed => JobResult::Failure,
        JobState::Cancelled | JobState::Cancelling => JobResult::Cancelled,
        JobState::Skipped => JobResult::Skipped,
        _ => return None,
    })
}

/// The result of a matrix's expansions together, once all have one:
/// `failure` if one failed, else `cancelled` if one was, else `skipped`
/// if all were, else `success`.
fn matrix_result(states: impl Iterator<Item = Option<JobState>>) -> Option<JobResult> {
    let mut results = Vec::new();
    for state in states {
        results.push(result_of(state?)?);
    }
    let any = |r: JobResult| results.contains(&r);
    if results.is_empty() {
        None
    } else if any(JobResult::Failure) {
        Some(JobResult::Failure)
    } else if any(JobResult::Cancelled) {
        Some(JobResult::Cancelled)
    } else if results.iter().all(|r| *r == JobResult::Skipped) {
        Some(JobResult::Skipped)
    } else {
        Some(JobResult::Success)
    }
}

/// `text` (an `env` value or a step's `run`) of job `spec` of `run`, with
/// each `${{ }}` replaced by its value; as it is when it has none, or
/// when it cannot be read (it was checked at submit, so it can).
pub fn expand(run: &Run, spec: &JobSpec, text: &str) -> String {
    let ctx = JobContext { run, spec: Some(spec), status: Status::Succeeded };
    expr::expand(text, &ctx).unwrap_or_else(|_| text.to_string())
}

/// `text` written at the pipeline's top level (its concurrency group), with
/// each `${{ }}` filled in.
pub fn expand_run(run: &Run, text: &str) -> String {
    let ctx = JobContext { run, spec: None, status: Status::Succeeded };
    expr::expand(text, &ctx).unwrap_or_else(|_| text.to_string())
}

/// How each job `spec` needs ended, as `needs.JOB.result` reads it.
/// A matrix job it needs is there under its name as written too, with the
/// result of all its expansions.
pub fn need_results(run: &Run, spec: &JobSpec) -> Vec<(String, String)> {
    let ctx = JobContext { run, spec: Some(spec), status: Status::Succeeded };
    let matrices: BTreeSet<&str> =
        spec.needs.iter().filter_map(|n| Some(run.spec(n)?.matrix.as_ref()?.of.as_str())).collect();
    spec.needs
        .iter()
        .map(String::as_str)
        .chain(matrices)
        .filter_map(|n| Some((n.to_string(), ctx.need_result(n)?.as_str().to_string())))
        .collect()
}

/// Whether job `name` goes on when its run is cancelled: one whose `if:`
/// reads the status and holds under cancellation (`always()`,
/// `cancelled()`) keeps running, or stays queued; a pending one (not
/// waiting for an approval) waits for its needs and is decided then, by
/// [`settle`]. Everything else is cancelled.
pub(super) fn survives_cancel(run: &Run, name: &str) -> bool {
    let (Some(spec), Some(job)) = (run.spec(name), run.jobs.get(name)) else { return false };
    let Some(condition) = spec.condition.as_ref().filter(|c| c.uses_status()) else { return false };
    match job.state {
        JobState::Pending => job.approval.is_none(),
        JobState::Queued | JobState::Assigned | JobState::Running => {
            let ctx = JobContext { run, spec: Some(spec), status: Status::Cancelled };
            condition.eval(&ctx).is_truthy()
        }
        _ => false,
    }
}

/// The status a job's condition sees (see the module header).
fn status_of(run: &Run, spec: &JobSpec) -> Status {
    if run.record.cancel_requested {
        return Status::Cancelled;
    }
    // Any job upstream that failed or was cancelled, however far.
    let mut seen = BTreeSet::new();
    let mut frontier: Vec<&str> = spec.needs.iter().map(String::as_str).collect();
    while let Some(name) = frontier.pop() {
        if !seen.insert(name) {
            continue;
        }
        if let Some(JobState::Failed | JobState::Cancelled | JobState::Cancelling) = run.jobs.get(name).map(|j| j.state)
        {
            return Status::Failed;
        }
        if let Some(up) = run.spec(name) {
            frontier.extend(up.needs.iter().map(String::as_str));
        }
    }
    if spec.needs.iter().all(|n| run.jobs.get(n).is_some_and(|j| j.state == JobState::Succeeded)) {
        Status::Succeeded
    } else {
        Status::Skipped
    }
}

/// Decides the pending dependents of `finished` (or, with `None`, every
/// pending job: at the start and on recovery), and the dependents of any
/// job this skips, in turn.
pub(super) fn settle(run: &mut Run, finished: Option<&str>, now_ms: u64, fx: &mut Vec<Effect>) {
    let mut work: Vec<usize> = match finished {
        Some(name) => run.graph.dependents.get(name).cloned().unwrap_or_default(),
        None => (0..run.record.pipeline.jobs.len()).rev().collect(),
    };
    while let Some(i) = work.pop() {
        let spec = &run.record.pipeline.jobs[i];
        if run.jobs[&spec.name].state != JobState::Pending {
            continue;
        }
        let done = spec.needs.iter().all(|n| run.jobs[n].state.is_terminal());
        let reads_status = spec.condition.as_ref().is_some_and(expr::Expr::uses_status);
        let blocker = spec
            .needs
            .iter()
            .find(|n| matches!(run.jobs[*n].state, JobState::Failed | JobState::Skipped | JobState::Cancelled))
            .cloned();
        // Decided now: once every need has finished, or, for a job that can
        // only run after success, as soon as one need cannot succeed.
        if !done && (reads_status || blocker.is_none()) {
            continue;
        }
        let ctx = JobContext { run, spec: Some(spec), status: status_of(run, spec) };
        let runs = done && expr::passes(spec.condition.as_ref(), &ctx);
        let name = spec.name.clone();
        if runs {
            match (&spec.approval, &run.jobs[&name].approval) {
                // Approved: it runs.
                (Some(_), Some(Approval { approved: Some(true), .. })) | (None, _) => queue(run, &name, now_ms, fx),
                // Waits for a person (`drover approve`); already waiting
                // after a recovery changes nothing.
                (Some(gate), approval) => {
                    if approval.is_none() {
                        let id = run.record.id;
                        let j = run.jobs.get_mut(&name).expect("job exists");
                        let until_ms = gate.timeout.map(|t| now_ms.saturating_add(t.as_millis() as u64));
                        j.approval = Some(Approval {
                            approved: None,
                            by: String::new(),
                            at_ms: None,
                            comment: String::new(),
                            until_ms,
                        });
                        if until_ms.is_some() {
                            fx.push(Effect::Deadline);
                        }
                        // A matrix job's name has spaces: quoted for the shell.
                        let arg = if name.contains(' ') { format!("'{name}'") } else { name.clone() };
                        j.waiting_for = format!(
                            "approval by {} (`drover approve {id} {arg}`, or `drover reject {id} {arg} --reason ...`)",
                            gate.approvers.join(" or ")
                        );
                        fx.push(Effect::PersistJob(name.clone()));
                    }
                }
            }
            continue;
        }
        let why = match (&spec.condition, &blocker) {
            _ if run.record.cancel_requested => "cancelled before it started".to_string(),
            (Some(cond), _) => format!("skipped: its condition `{}` is false", cond.text()),
            (None, Some(blocker)) => format!("skipped: needs {blocker}, which {}", run.jobs[blocker].state.as_str()),
            (None, None) => "skipped".to_string(),
        };
        let cancelled = run.record.cancel_requested;
        let j = run.jobs.get_mut(&name).expect("job exists");
        // In a run being cancelled, a job that will not run is cancelled.
        j.state = if cancelled { JobState::Cancelled } else { JobState::Skipped };
        j.message = why;
        j.finished_ms = Some(now_ms);
        fx.push(Effect::PersistJob(name.clone()));
        work.extend(run.graph.dependents.get(&name).cloned().unwrap_or_default());
    }
}

/// After `failed`, an expansion of a `fail-fast` matrix, failed: cancels
/// its siblings that have not finished (waiting ones at once, running ones
/// through their agents), and decides what needs them.
pub(super) fn fail_fast(run: &mut Run, failed: &str, now_ms: u64, fx: &mut Vec<Effect>) {
    let Some(cell) = run.spec(failed).and_then(|s| s.matrix.clone()).filter(|m| m.fail_fast) else { return };
    let siblings: Vec<String> =
        run.record.pipeline.expansions(&cell.of).map(|s| s.name.clone()).filter(|n| n != failed).collect();
    let why = format!("cancelled: `{failed}` failed, and the matrix is fail-fast");
    let mut ended = Vec::new();
    for name in siblings {
        let Some(j) = run.jobs.get_mut(&name) else { continue };
        match j.state {
            JobState::Pending | JobState::Queued => {
                j.state = JobState::Cancelled;
                j.message = why.clone();
                j.waiting_for.clear();
                j.blocked_until_ms = None;
                j.finished_ms = Some(now_ms);
                fx.push(Effect::PersistJob(name.clone()));
                ended.push(name);
            }
            JobState::Assigned | JobState::Running => {
                j.state = JobState::Cancelling;
                j.message = why.clone();
                fx.push(Effect::PersistJob(name.clone()));
                fx.push(super::deploy::stop(&name, j, &why));
            }
            _ => {}
        }
    }
    for name in ended {
        settle(run, Some(&name), now_ms, fx);
    }
}
