//! The lifecycle of a pipeline run and its job attempts, as a pure state
//! machine: [`step`] takes the run, one [`Input`] and the wall-clock time, and
//! returns the new run with the [`Effect`]s the driver must carry out. It does
//! no IO and cannot fail; inputs that do not apply (a stale attempt, a job in
//! the wrong state) change nothing and yield no effects.
//!
//! A job moves through these states:
//!
//! ```text
//! Pending ──needs met──▶ Queued ──Assign──▶ Assigned ──Accepted──▶ Running
//!    │    (and `if:`)      ▲                   │                     │
//!    │ a need failed,      └──retry / never started──────────────────┤
//!    │ or `if:` false                                                │
//!    ▼                                                               ▼
//! Skipped                                              Succeeded | Failed
//!
//! Queued ──blocked past its queue timeout──▶ Failed
//!
//! Cancel:  Pending | Queued ──────────────────────────────▶ Cancelled
//!          Assigned | Running ──▶ Cancelling ──the agent's result──▶ Cancelled
//!          (finished jobs keep their state)
//! ```
//!
//! **Conditions.** When a job's needs have finished, its `if:` (or, without
//! one, `success()`) decides whether it is queued or skipped: see `settle`.
//! A run whose jobs all succeeded or were skipped succeeded.
//!
//! Each assignment is a new attempt with a new number, so a report from an
//! older attempt is recognisably stale. An attempt the agent never accepted
//! (the connection broke first) goes back to the queue without using up a
//! retry; a failed, timed-out or lost attempt uses one.
//!
//! **Blocked jobs.** A queued job that no connected agent could ever take
//! (none has its labels) is *blocked*: the driver says so with
//! [`Input::Waiting`], and the job gets a deadline, its queue timeout from
//! now (`queue-timeout:` in the file, else the run's, else
//! [`DEFAULT_QUEUE_TIMEOUT`]). An agent with the labels connecting clears
//! it; [`Input::Deadlines`] fails every job whose deadline has passed, so a
//! run that can never finish does not wait forever.
//!
//! **Deploy jobs** (`deploy:`) hold no agent slot: once ready they go
//! straight to Running with a new attempt and [`Effect::StartDeploy`], and
//! the rollout controller reports how the rollout ended with
//! [`Input::DeployFinished`] (see `machine/deploy.rs`). Cancelling one is
//! [`Effect::CancelDeploy`]: the rollout is aborted and goes back, and its
//! end reported the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_pipeline::{JobSpec, Pipeline};

mod deploy;
mod derived;
mod records;
mod settle;

use derived::{Graph, Hint, complete_if_done};
use settle::fail_fast;

pub use settle::{expand, expand_run, need_results};

pub use records::*;

/// A run with all of its jobs: the state [`step`] works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub record: RunRecord,
    pub jobs: BTreeMap<String, JobRecord>,
    /// Derived from the pipeline, so that a finished job's dependents are
    /// found without scanning every job (runs have up to 5,000 jobs).
    graph: Arc<Graph>,
    /// Where the last look for an unfinished job found one: see
    /// [`complete_if_done`].
    unfinished: Hint,
}

/// How an attempt ended, as reported by the agent or decided by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// With the artifacts the job packed, if it packed any, and what its
    /// cache did, if it has one.
    Succeeded {
        artifact: Option<ArtifactRef>,
        cache: Option<CacheNote>,
    },
    Failed {
        exit_code: i32,
        /// What the agent said about it ("build exited with code 2 (the
        /// work directory's disk is full: …)", "git did not finish …"), or
        /// empty.
        detail: String,
    },
    TimedOut,
    Cancelled,
    /// The agent stopped renewing the attempt's lease.
    Lost {
        reason: String,
    },
    /// The agent never accepted the assignment.
    NotStarted {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Queue the jobs that need nothing.
    Start,
    /// The driver picked an agent for a queued job.
    /// Someone approved (or rejected) a job that waits for approval; the
    /// driver checked that they may.
    Decide {
        job: String,
        approve: bool,
        by: String,
        comment: String,
    },
    Assign {
        job: String,
        agent: String,
        /// Why this agent among several free ones ("warm cache KEY").
        why: Option<String>,
    },
    Accepted {
        job: String,
        attempt: u32,
    },
    Finished {
        job: String,
        attempt: u32,
        outcome: Outcome,
    },
    /// The driver's view of what a queued job waits for changed; `blocked`
    /// when no connected agent could ever take it.
    Waiting {
        job: String,
        reason: String,
        blocked: bool,
    },
    /// Time passed: fail the blocked jobs whose deadline is behind `now`.
    Deadlines,
    Cancel,
    /// A deploy job's rollout ended: succeeded, or not with the reason.
    DeployFinished {
        job: String,
        attempt: u32,
        succeeded: bool,
        message: String,
    },
    /// The run was loaded from the store by a new leader. A step's records
    /// may have been written in more than one transaction (a store limits
    /// their size) and a crash may have come between them, so re-derive
    /// what follows from the job states: queue or skip dependents, redo a
    /// requested cancel, finish a run whose jobs are all done.
    Recover,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The run record changed and must be written.
    PersistRun,
    /// The job's record changed and must be written.
    PersistJob(String),
    /// The job became ready: add it to the dispatch queue.
    Enqueue(String),
    /// Send this assignment to the agent (after persisting).
    SendAssign { job: String, attempt: u32, agent: String },
    /// Tell the agent to kill the attempt.
    SendCancel { job: String, attempt: u32, agent: String },
    /// The attempt no longer occupies a slot on the agent.
    Release { job: String, attempt: u32, agent: String },
    /// A job got a deadline (an approval's `timeout:`): feed the run
    /// [`Input::Deadlines`] once it has passed.
    Deadline,
    /// A deploy job is ready: start its rollout (after persisting).
    StartDeploy { job: String, attempt: u32 },
    /// Abort a deploy job's rollout; its end comes back as
    /// [`Input::DeployFinished`].
    CancelDeploy { job: String, attempt: u32, reason: String },
    /// The run reached a final state.
    RunFinished(RunState),
}

impl Run {
    /// A new run with every job pending. Feed it [`Input::Start`] next.
    pub fn new(id: RunId, pipeline: Pipeline, source: Source, now_ms: u64) -> Run {
        let jobs = pipeline
            .jobs
            .iter()
            .map(|j| {
                let record = JobRecord {
                    state: JobState::Pending,
                    attempt: 0,
                    retries_left: j.retries,
                    agent: None,
                    last_agent: None,
                    exit_code: None,
                    message: String::new(),
                    waiting_for: String::new(),
                    blocked_until_ms: None,
                    reused_from: None,
                    artifact: None,
                    cache: None,
                    placement: None,
                    approval: None,
                    started_ms: None,
                    finished_ms: None,
                    trace: JobTrace::default(),
                };
                (j.name.clone(), record)
            })
            .collect();
        let record = RunRecord {
            id,
            pipeline,
            source,
            state: RunState::Running,
            created_ms: now_ms,
            finished_ms: None,
            cancel_requested: false,
            rerun_of: None,
            queue_timeout_ms: 0,
            trace: RunTrace::default(),
            group: None,
        };
        let mut run = Run::from_parts(record, jobs);
        run.record.group = run.record.pipeline.concurrency.as_ref().map(|c| settle::expand_run(&run, &c.group));
        run
    }

    /// A run from its stored records.
    pub fn from_parts(record: RunRecord, jobs: BTreeMap<String, JobRecord>) -> Run {
        let graph = Arc::new(Graph::of(&record.pipeline));
        Run { record, jobs, graph, unfinished: Hint::default() }
    }

    /// The job's definition in the pipeline.
    pub fn spec(&self, job: &str) -> Option<&JobSpec> {
        self.graph.position.get(job).map(|i| &self.record.pipeline.jobs[*i])
    }

    /// How long the job may stay blocked before it fails.
    pub fn queue_timeout(&self, job: &str) -> Duration {
        let run_default = match self.record.queue_timeout_ms {
            0 => DEFAULT_QUEUE_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        self.spec(job).and_then(|s| s.queue_timeout).unwrap_or(run_default)
    }

    /// The earliest deadline of a blocked job, if any job is blocked.
    pub fn next_deadline(&self) -> Option<u64> {
        let blocked = self.jobs.values().filter(|j| j.state == JobState::Queued).filter_map(|j| j.blocked_until_ms);
        let approvals = self
            .jobs
            .values()
            .filter(|j| j.state == JobState::Pending)
            .filter_map(|j| j.approval.as_ref().filter(|a| a.approved.is_none())?.until_ms);
        blocked.chain(approvals).min()
    }

    /// Whether `attempt` is the job's current attempt and still holds a slot,
    /// that is, whether reports about it are to be believed.
    pub fn attempt_is_current(&self, job: &str, attempt: u32) -> bool {
        self.jobs.get(job).is_some_and(|j| j.attempt == attempt && j.state.holds_slot())
    }
}

/// Advances the run by one input. See the module docs for the states.
pub fn step(mut run: Run, input: Input, now_ms: u64) -> (Run, Vec<Effect>) {
    let mut fx = Vec::new();
    if run.record.state.is_terminal() {
        return (run, fx);
    }
    match input {
        Input::Start => {
            // The jobs whose needs have all succeeded: those that need
            // nothing, and in a rerun those after reused jobs only.
            settle::settle(&mut run, None, now_ms, &mut fx);
            fx.push(Effect::PersistRun);
            complete_if_done(&mut run, now_ms, &mut fx);
        }
        Input::Decide { job, approve, by, comment } => {
            let waiting = run.jobs.get(&job).is_some_and(|j| {
                j.state == JobState::Pending && j.approval.as_ref().is_some_and(|a| a.approved.is_none())
            });
            if waiting {
                let j = run.jobs.get_mut(&job).expect("checked above");
                let approval = Approval { approved: Some(approve), by, at_ms: Some(now_ms), comment, until_ms: None };
                j.waiting_for.clear();
                j.message = approval.text();
                j.approval = Some(approval);
                if approve {
                    queue(&mut run, &job, now_ms, &mut fx);
                } else {
                    j.state = JobState::Failed;
                    j.finished_ms = Some(now_ms);
                    fx.push(Effect::PersistJob(job.clone()));
                    settle::settle(&mut run, Some(&job), now_ms, &mut fx);
                    complete_if_done(&mut run, now_ms, &mut fx);
                }
            }
        }
        Input::Assign { job, agent, why } => {
            if let Some(j) = run.jobs.get_mut(&job).filter(|j| j.state == JobState::Queued) {
                j.state = JobState::Assigned;
                j.attempt += 1;
                j.agent = Some(agent.clone());
                j.placement = why;
                j.waiting_for.clear();
                j.blocked_until_ms = None;
                j.exit_code = None;
                j.started_ms = None;
                fx.push(Effect::PersistJob(job.clone()));
                fx.push(Effect::SendAssign { job, attempt: j.attempt, agent });
            }
        }
        Input::Accepted { job, attempt } => {
            if let Some(j) = run.jobs.get_mut(&job).filter(|j| j.attempt == attempt)
                && j.state == JobState::Assigned
            {
                j.state = JobState::Running;
                j.started_ms = Some(now_ms);
                fx.push(Effect::PersistJob(job));
            }
        }
        Input::Waiting { job, reason, blocked } => {
            let timeout = run.queue_timeout(&job);
            if let Some(j) = run.jobs.get_mut(&job).filter(|j| j.state == JobState::Queued) {
                let until = match (blocked, j.blocked_until_ms) {
                    (false, _) => None,
                    (true, Some(until)) => Some(until),
                    (true, None) => Some(now_ms.saturating_add(timeout.as_millis() as u64)),
                };
                if j.waiting_for != reason || j.blocked_until_ms != until {
                    j.waiting_for = reason;
                    j.blocked_until_ms = until;
                    fx.push(Effect::PersistJob(job));
                }
            }
        }
        Input::Deadlines => {
            let expired: Vec<String> = run
                .jobs
                .iter()
                .filter(|(_, j)| j.state == JobState::Queued && j.blocked_until_ms.is_some_and(|t| t <= now_ms))
                .map(|(name, _)| name.clone())
                .collect();
            // Approvals nobody decided in time.
            let unanswered: Vec<String> = run
                .jobs
                .iter()
                .filter(|(_, j)| j.state == JobState::Pending)
                .filter(|(_, j)| {
                    j.approval.as_ref().is_some_and(|a| a.approved.is_none() && a.until_ms.is_some_and(|t| t <= now_ms))
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in unanswered {
                let timeout = run.spec(&name).and_then(|s| s.approval.as_ref()?.timeout).unwrap_or_default();
                let j = run.jobs.get_mut(&name).expect("listed above");
                j.state = JobState::Failed;
                j.finished_ms = Some(now_ms);
                j.waiting_for.clear();
                j.message = format!("nobody approved it within {}", drover_client::duration::format(timeout));
                fx.push(Effect::PersistJob(name.clone()));
                settle::settle(&mut run, Some(&name), now_ms, &mut fx);
            }
            for name in expired {
                let timeout = run.queue_timeout(&name);
                let labels = run.spec(&name).map(|s| labels_text(&s.runs_on)).unwrap_or_default();
                let j = run.jobs.get_mut(&name).expect("listed above");
                j.state = JobState::Failed;
                j.finished_ms = Some(now_ms);
                j.message = format!(
                    "no agent with labels {labels} connected within {}",
                    drover_client::duration::format(timeout)
                );
                j.waiting_for.clear();
                j.blocked_until_ms = None;
                fx.push(Effect::PersistJob(name.clone()));
                settle::settle(&mut run, Some(&name), now_ms, &mut fx);
            }
            complete_if_done(&mut run, now_ms, &mut fx);
        }
        Input::Finished { job, attempt, outcome } => {
            if !run.attempt_is_current(&job, attempt) {
                return (run, fx);
            }
            finish_attempt(&mut run, &job, attempt, outcome, now_ms, &mut fx);
            complete_if_done(&mut run, now_ms, &mut fx);
        }
        Input::DeployFinished { job, attempt, succeeded, message } => {
            deploy::finished(&mut run, &job, attempt, succeeded, message, now_ms, &mut fx);
            complete_if_done(&mut run, now_ms, &mut fx);
        }
        Input::Recover if run.record.cancel_requested => return step(run, Input::Cancel, now_ms),
        Input::Recover => {
            settle::settle(&mut run, None, now_ms, &mut fx);
            complete_if_done(&mut run, now_ms, &mut fx);
        }
        Input::Cancel => {
            run.record.cancel_requested = true;
            fx.push(Effect::PersistRun);
            // Jobs whose `if:` holds when the run is cancelled (`always()`,
            // `cancelled()`) are left to run, or to be decided once their
            // needs have finished.
            let survivors: Vec<String> =
                run.jobs.keys().filter(|name| settle::survives_cancel(&run, name)).cloned().collect();
            for (name, j) in run.jobs.iter_mut() {
                if survivors.contains(name) {
                    continue;
                }
                match j.state {
                    JobState::Pending | JobState::Queued => {
                        j.state = JobState::Cancelled;
                        j.message = "cancelled before it started".into();
                        j.waiting_for.clear();
                        j.blocked_until_ms = None;
                        j.finished_ms = Some(now_ms);
                        fx.push(Effect::PersistJob(name.clone()));
                    }
                    JobState::Assigned | JobState::Running => {
                        j.state = JobState::Cancelling;
                        fx.push(Effect::PersistJob(name.clone()));
                        fx.push(deploy::stop(name, j, "the run was cancelled"));
                    }
                    _ => {}
                }
            }
            settle::settle(&mut run, None, now_ms, &mut fx);
            complete_if_done(&mut run, now_ms, &mut fx);
        }
    }
    (run, fx)
}

/// `k=v,k=v`, as `runs-on` is shown.
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn queue(run: &mut Run, name: &str, now_ms: u64, fx: &mut Vec<Effect>) {
    if run.spec(name).is_some_and(|s| s.deploy.is_some()) {
        deploy::start(run, name, now_ms, fx);
        return;
    }
    if let Some(j) = run.jobs.get_mut(name) {
        j.state = JobState::Queued;
        if let Some(agent) = j.agent.take() {
            j.last_agent = Some(agent);
        }
        fx.push(Effect::PersistJob(name.to_string()));
        fx.push(Effect::Enqueue(name.to_string()));
    }
}

fn finish_attempt(run: &mut Run, name: &str, attempt: u32, outcome: Outcome, now_ms: u64, fx: &mut Vec<Effect>) {
    let timeout = run.spec(name).and_then(|s| s.timeout);
    let run_cancelled = run.record.cancel_requested;
    let j = run.jobs.get_mut(name).expect("checked by attempt_is_current");
    fx.push(Effect::Release { job: name.to_string(), attempt, agent: j.agent.clone().unwrap_or_default() });
    fx.push(Effect::PersistJob(name.to_string()));
    // A job that runs on while its run is cancelled (`if: always()`) ends
    // as its attempt did; one told to stop is cancelled, and what needs it
    // decides by its own condition (a cancelled run's cleanup, or the
    // rest of a fail-fast matrix).
    if j.state == JobState::Cancelling {
        j.state = JobState::Cancelled;
        j.finished_ms = Some(now_ms);
        if run_cancelled || j.message.is_empty() {
            j.message = "cancelled".into();
        }
        settle::settle(run, Some(name), now_ms, fx);
        return;
    }
    let failure = match outcome {
        Outcome::Succeeded { artifact, cache } => {
            j.state = JobState::Succeeded;
            j.artifact = artifact;
            j.cache = cache;
            j.exit_code = Some(0);
            j.finished_ms = Some(now_ms);
            j.message.clear();
            settle::settle(run, Some(name), now_ms, fx);
            return;
        }
        Outcome::NotStarted { reason } => {
            j.message = format!("attempt {attempt} never started ({reason}); queued again");
            queue(run, name, now_ms, fx);
            return;
        }
        Outcome::Cancelled => {
            // An agent only cancels on our word, or when it shuts down.
            j.state = JobState::Cancelled;
            j.finished_ms = Some(now_ms);
            j.message = "cancelled by the agent".into();
            settle::settle(run, Some(name), now_ms, fx);
            return;
        }
        Outcome::Failed { exit_code, detail } => {
            j.exit_code = Some(exit_code);
            if detail.is_empty() {
                format!("failed (exit {exit_code})")
            } else {
                format!("failed (exit {exit_code}): {detail}")
            }
        }
        Outcome::TimedOut => match timeout {
            Some(t) => format!("timed out after {}s", t.as_secs()),
            None => "timed out".to_string(),
        },
        Outcome::Lost { reason } => format!("lost ({reason})"),
    };
    if j.retries_left > 0 {
        j.retries_left -= 1;
        let left = j.retries_left;
        // Attempts that never started used no retry, so the total counts
        // from this attempt.
        j.message = format!("attempt {attempt} {failure}, retrying: attempt {} of {}", attempt + 1, attempt + 1 + left);
        queue(run, name, now_ms, fx);
    } else {
        j.state = JobState::Failed;
        j.finished_ms = Some(now_ms);
        j.message = format!("attempt {attempt} {failure}");
        settle::settle(run, Some(name), now_ms, fx);
        fail_fast(run, name, now_ms, fx);
    }
}

#[cfg(test)]
pub(crate) mod tests;
