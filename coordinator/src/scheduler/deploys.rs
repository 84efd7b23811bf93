//! The scheduler's side of deployments: it owns the runs and the fleet, the
//! rollout controller owns the rollouts, and this is the seam between them.
//!
//! - The controller subscribes once per term ([`Event::SubscribeDeploys`]);
//!   the scheduler answers at once with every deploy job that is running or
//!   being cancelled (so a new leader's controller picks up where the old
//!   one was), and from then on sends a [`DeployNote`] for each deploy job
//!   that starts or is cancelled, after the burst that decided it is
//!   committed, and for each report an agent makes.
//! - The controller reports a rollout's end as [`Event::DeployFinished`],
//!   which is the run machine's `Input::DeployFinished`.
//! - The controller sends an action to a node with [`Event::Deploy`]: the
//!   fleet hands it to the agent's live session, or it is refused at once
//!   when the agent is not connected. An install lets that agent download
//!   the release's blob (`may_fetch`) for the rest of the term.
//! - `drover rollout promote|pause|resume|abort` reach the controller the
//!   same way, as [`DeployNote::Command`], so that the API needs one handle
//!   on the leader's work.

use std::collections::BTreeSet;

use tokio::sync::{mpsc, oneshot};

use super::Event;
use super::state::{Outgoing, State};
use crate::core::fleet::{AttemptId, DeployAction, DeployKind, DeployReport, LogsChunk, Now, ServiceHealth, ToAgent};
use crate::core::machine::{ArtifactRef, Input, JobState, RunId};
use drover_pipeline::deploy::DeploySpec;

/// A deploy job whose rollout is to run.
#[derive(Debug, Clone)]
pub struct DeployJob {
    pub run: RunId,
    pub job: String,
    pub attempt: u32,
    pub spec: DeploySpec,
    /// The run's branch and commit, for the environment's branch filter and
    /// the release's record.
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// The artifact of the job the release comes from; none when that job
    /// packed nothing (the rollout fails, saying so).
    pub artifact: Option<ArtifactRef>,
    /// Whether the run is being cancelled: abort rather than start.
    pub cancelling: bool,
    /// The run's trace id and the job's span id, for the rollout's spans.
    pub trace: Option<(String, String)>,
}

/// An operator's command on a rollout.
#[derive(Debug)]
pub struct RolloutCommand {
    pub rollout: u64,
    pub verb: Verb,
    pub by: String,
    pub reply: oneshot::Sender<Result<(), String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    Promote {
        full: bool,
    },
    Pause,
    Resume,
    Abort,
    /// Opens the approval gate the rollout waits at (the named one).
    Approve {
        gate: Option<String>,
        comment: String,
    },
    /// Refuses it, saying why.
    Reject {
        gate: Option<String>,
        reason: String,
    },
    /// Lets the rollout pass its environment's freeze and deploy windows.
    Override {
        reason: String,
    },
}

/// `drover rollback SERVICE --env ENV [--to VERSION] [--staged]`.
#[derive(Debug)]
pub struct RollbackCommand {
    pub env: String,
    pub service: String,
    /// None: the release the service ran before its current one.
    pub to: Option<String>,
    /// Step by step with the last rollout's strategy, rather than every
    /// node at once.
    pub staged: bool,
    pub by: String,
    /// Forced past a one-way door, with why (`--force --reason`).
    pub force: Option<String>,
    /// The new rollout's id, or why there is none.
    pub reply: oneshot::Sender<Result<u64, String>>,
}

/// One service of an app's sync (`crate::apps`): a rollout with no run.
#[derive(Debug)]
pub struct SyncCommand {
    pub env: String,
    pub action: SyncAction,
    /// The app's branch, for the environment's branch filter.
    pub branch: Option<String>,
    /// "app NAME sync N (by ...)".
    pub by: String,
    /// Started by auto-sync, not by a person or a pin: it never installs a
    /// release older than what the nodes serve (the downgrade guard).
    pub automatic: bool,
    pub reply: oneshot::Sender<Result<u64, String>>,
}

/// What a sync does to one service.
#[derive(Debug)]
pub enum SyncAction {
    /// Roll `release` out as the service file says.
    Deploy {
        release: crate::core::fleet::ReleaseRef,
        /// The service file as a deploy (`ServiceFile::deploy_spec`);
        /// boxed, as it is far larger than a removal.
        deploy: Box<DeploySpec>,
        /// The nodes the file narrows the environment's to.
        select: drover_pipeline::app::NodeSelection,
    },
    /// Prune: stop the service on every node that serves it (its releases
    /// stay catalogued, for `drover rollback`).
    Remove { service: String },
}

/// What the scheduler tells the rollout controller.
#[derive(Debug)]
pub enum DeployNote {
    Start(Box<DeployJob>),
    Cancel {
        run: RunId,
        job: String,
        attempt: u32,
        reason: String,
    },
    Report(DeployReport),
    Command(RolloutCommand),
    Rollback(RollbackCommand),
    Sync(Box<SyncCommand>),
    Health(ServiceHealth),
    /// A hook's output, from the node running action `{rollout}/{seq}`.
    HookOutput {
        node: String,
        rollout: u64,
        seq: u64,
        data: Vec<u8>,
    },
}

impl State {
    /// The controller subscribed: every deploy job under way, at once.
    pub(super) fn subscribe_deploys(&mut self, tx: mpsc::UnboundedSender<DeployNote>) {
        self.deploy_grants.clear();
        let mut under_way = Vec::new();
        for (id, run) in &self.runs {
            for (name, job) in &run.jobs {
                if job.agent.is_none() && matches!(job.state, JobState::Running | JobState::Cancelling) {
                    under_way.push((*id, name.clone()));
                }
            }
        }
        for (run, job) in under_way {
            if let Some(note) = self.deploy_job(run, &job) {
                let _ = tx.send(DeployNote::Start(Box::new(note)));
            }
        }
        self.deploys = Some(tx);
    }

    /// What the controller needs to roll out deploy job `job` of `run`.
    fn deploy_job(&self, run_id: RunId, job: &str) -> Option<DeployJob> {
        let run = self.runs.get(&run_id)?;
        let spec = run.spec(job)?.deploy.clone()?;
        let record = run.jobs.get(job)?;
        let artifact = run.jobs.get(&spec.artifact.job).and_then(|j| j.artifact.clone());
        Some(DeployJob {
            run: run_id,
            job: job.to_string(),
            attempt: record.attempt,
            branch: run.record.source.branch.clone(),
            commit: run.record.source.commit.clone(),
            artifact,
            cancelling: record.state == JobState::Cancelling,
            trace: (!run.record.trace.trace_id.is_empty() && !record.trace.span_id.is_empty())
                .then(|| (run.record.trace.trace_id.clone(), record.trace.span_id.clone())),
            spec,
        })
    }

    /// The run machine started deploy job `job`: tell the controller once
    /// that is committed.
    pub(super) fn start_deploy(&mut self, run: RunId, job: &str) {
        if let Some(note) = self.deploy_job(run, job) {
            // A new attempt: its log (its hooks' output) starts empty.
            self.log_ends.insert(AttemptId { run, job: job.to_string(), attempt: note.attempt }, 0);
            self.outbox.push(Outgoing::Deploy(DeployNote::Start(Box::new(note))));
        }
    }

    pub(super) fn cancel_deploy(&mut self, run: RunId, job: String, attempt: u32, reason: String) {
        self.outbox.push(Outgoing::Deploy(DeployNote::Cancel { run, job, attempt, reason }));
    }

    /// Hands a note to the controller, if one listens (after the commit).
    pub(super) fn note_deploy(&mut self, note: DeployNote) {
        if let Some(tx) = &self.deploys
            && tx.send(note).is_err()
        {
            self.deploys = None;
        }
    }

    pub(super) fn handle_deploy(&mut self, event: Event, now: Now) {
        match event {
            Event::SubscribeDeploys { tx } => self.subscribe_deploys(tx),
            Event::DeployFinished { run, job, attempt, succeeded, message } if self.runs.contains_key(&run) => {
                self.log_ends.remove(&AttemptId { run, job: job.clone(), attempt });
                self.apply(run, Input::DeployFinished { job, attempt, succeeded, message }, now);
            }
            Event::DeployLog { run, job, attempt, data } => self.deploy_log(AttemptId { run, job, attempt }, data),
            Event::HookOutput { conn, node, rollout, seq, data } if self.fleet.is_current(&node, conn) => {
                self.note_deploy(DeployNote::HookOutput { node, rollout, seq, data });
            }
            Event::Deploy { node, action, reply } => {
                let _ = reply.send(self.deploy_to(node, *action));
            }
            // A report from a session that has been replaced is stale; the
            // new session's Hello brings the agent's latest again.
            Event::DeployReport { conn, report } if self.fleet.is_current(&report.node, conn) => {
                self.note_deploy(DeployNote::Report(report));
            }
            Event::ServiceHealth { conn, report } if self.fleet.is_current(&report.node, conn) => {
                self.note_deploy(DeployNote::Health(report));
            }
            Event::ServiceLogs { node, service, offset, max_bytes, reply } => {
                if !self.fleet.is_connected(&node) {
                    let _ = reply.send(Err(format!("agent {node} is not connected")));
                    return;
                }
                // Requests whose caller gave up are forgotten.
                self.log_requests.requests.retain(|_, (_, r)| !r.is_closed());
                if self.log_requests.requests.len() >= MAX_LOG_REQUESTS {
                    let _ = reply.send(Err("too many service log requests under way; try again".into()));
                    return;
                }
                self.log_requests.next += 1;
                let request_id = self.log_requests.next;
                self.log_requests.requests.insert(request_id, (node.clone(), reply));
                self.fleet.deliver(&node, ToAgent::ServiceLogs { request_id, service, offset, max_bytes });
            }
            Event::ServiceLogsChunk { conn, name, request_id, answer } if self.fleet.is_current(&name, conn) => {
                // Only the agent asked may answer.
                if self.log_requests.requests.get(&request_id).is_some_and(|(node, _)| *node == name)
                    && let Some((_, reply)) = self.log_requests.requests.remove(&request_id)
                {
                    let _ = reply.send(answer);
                }
            }
            Event::Rollback(cmd) => match &self.deploys {
                Some(tx) => {
                    if let Err(mpsc::error::SendError(DeployNote::Rollback(cmd))) = tx.send(DeployNote::Rollback(cmd)) {
                        let _ = cmd.reply.send(Err(NOT_RUNNING.into()));
                    }
                }
                None => {
                    let _ = cmd.reply.send(Err(NOT_RUNNING.into()));
                }
            },
            Event::AppSync(cmd) => match &self.deploys {
                Some(tx) => {
                    if let Err(mpsc::error::SendError(DeployNote::Sync(cmd))) = tx.send(DeployNote::Sync(cmd)) {
                        let _ = cmd.reply.send(Err(NOT_RUNNING.into()));
                    }
                }
                None => {
                    let _ = cmd.reply.send(Err(NOT_RUNNING.into()));
                }
            },
            Event::RolloutCommand(cmd) => match &self.deploys {
                Some(tx) => {
                    if let Err(mpsc::error::SendError(DeployNote::Command(cmd))) = tx.send(DeployNote::Command(cmd)) {
                        let _ = cmd.reply.send(Err(NOT_RUNNING.into()));
                    }
                }
                None => {
                    let _ = cmd.reply.send(Err(NOT_RUNNING.into()));
                }
            },
            _ => {}
        }
    }

    /// Appends hook output to a running deploy job's log, as an agent's
    /// chunks are (capped at `--log-cap`); dropped for an attempt whose log
    /// is not open (the job has ended).
    fn deploy_log(&mut self, id: AttemptId, data: Vec<u8>) {
        let Some(&end) = self.log_ends.get(&id) else { return };
        let limit = self.config.log_cap.saturating_add(crate::core::logs::MARKER_ROOM);
        if let crate::core::logs::Verdict::Append { keep, end: new_end } =
            crate::core::logs::judge(end, data.len(), end, limit)
        {
            if keep > 0 {
                let mut data = data;
                data.truncate(keep);
                self.log_writes.push(crate::segments::Write {
                    run: id.run,
                    job: id.job.clone(),
                    attempt: id.attempt,
                    offset: end,
                    data,
                });
            }
            self.log_ends.insert(id, new_end);
        }
    }

    /// Sends `action` to `node`'s live session, or says why not.
    fn deploy_to(&mut self, node: String, action: DeployAction) -> Result<(), String> {
        if !self.fleet.is_connected(&node) {
            return Err(format!("agent {node} is not connected"));
        }
        if let DeployKind::Install { release, .. } | DeployKind::Hook { release, .. } = &action.kind {
            self.deploy_grants.insert((node.clone(), release.sha256.clone()));
        }
        // Not a burst's decision: nothing to commit first.
        self.fleet.deliver(&node, ToAgent::Deploy(Box::new(action)));
        Ok(())
    }

    /// Whether agent `name` was sent an install of blob `sha256`.
    pub(super) fn may_fetch_release(&self, name: &str, sha256: &str) -> bool {
        self.deploy_grants.contains(&(name.to_string(), sha256.to_string()))
    }
}

/// The most `drover service logs` requests waiting at once.
const MAX_LOG_REQUESTS: usize = 1024;

/// `drover service logs` requests waiting for their agent's answer, by id.
#[derive(Default)]
pub(super) struct LogRequests {
    next: u64,
    requests: std::collections::BTreeMap<u64, (String, oneshot::Sender<Result<LogsChunk, String>>)>,
}

const NOT_RUNNING: &str = "the rollout controller is not running on this leader";

/// The (agent, blob) pairs that installs were sent for this term.
pub(super) type Grants = BTreeSet<(String, String)>;
