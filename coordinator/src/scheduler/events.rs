//! What wakes the scheduler loop ([`Event`]) and the handle the API and the
//! other controllers hold to send it ([`Handle`]), with the calls that wait
//! for an answer.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{DeployNote, RollbackCommand, RolloutCommand, SchedError, SyncCommand};
use crate::core::fleet::{AgentHello, AgentInfo, AttemptId};
use crate::core::machine::{Outcome, RunId, Source};
use crate::core::rerun::Rerun;
use drover_pipeline::Pipeline;

/// Everything that can wake the scheduler loop.
#[derive(Debug)]
pub enum Event {
    Submit {
        /// Boxed: a pipeline is far larger than every other event.
        pipeline: Box<Pipeline>,
        source: Source,
        /// The submitter's W3C trace context, to continue its trace.
        traceparent: Option<String>,
        /// The run's queue timeout; `None` for [`Config::queue_timeout`].
        queue_timeout: Option<Duration>,
        /// What the run reruns, if it is a rerun.
        rerun: Option<Rerun>,
        reply: oneshot::Sender<Result<RunId, SchedError>>,
    },
    Cancel {
        run: RunId,
        reply: oneshot::Sender<Result<(), SchedError>>,
    },
    ListAgents {
        reply: oneshot::Sender<Vec<AgentInfo>>,
    },
    /// `drover approve` / `drover reject`.
    Decide {
        run: RunId,
        job: String,
        approve: bool,
        by: String,
        comment: String,
        reply: oneshot::Sender<Result<(), SchedError>>,
    },
    /// Whether agent `name` may download blob `sha256`: the artifact of a
    /// job that `attempt`, which the agent holds, needs; or, with no
    /// attempt, a release an install sent to the agent this term.
    MayFetch {
        name: String,
        /// The job's attempt downloading; none for a deployment's install.
        attempt: Option<AttemptId>,
        sha256: String,
        reply: oneshot::Sender<bool>,
    },
    /// Whether agent `name` holds attempt `id`, whose artifacts it may
    /// upload.
    MayUpload {
        name: String,
        id: AttemptId,
        reply: oneshot::Sender<bool>,
    },
    /// The cache scope of attempt `id`'s run (`caches::scope_of`), when
    /// agent `name` holds that attempt and its job declares a `cache:`.
    CacheScope {
        name: String,
        id: AttemptId,
        reply: oneshot::Sender<Option<String>>,
    },
    /// The rollout controller listens for deploy jobs (see `deploys`).
    SubscribeDeploys {
        tx: mpsc::UnboundedSender<DeployNote>,
    },
    /// A deploy job's rollout ended.
    DeployFinished {
        run: RunId,
        job: String,
        attempt: u32,
        succeeded: bool,
        message: String,
    },
    /// Send a rollout's action to a node now; refused when it is away.
    Deploy {
        node: String,
        action: Box<crate::core::fleet::DeployAction>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// An agent's report on a deploy action, checked at the edge.
    DeployReport {
        conn: u64,
        report: crate::core::fleet::DeployReport,
    },
    /// `drover rollout promote|pause|resume|abort`.
    RolloutCommand(RolloutCommand),
    /// `drover rollback`.
    Rollback(RollbackCommand),
    /// One service of an app's sync, for the rollout controller.
    AppSync(Box<SyncCommand>),
    /// A live service's health changed on a node.
    ServiceHealth {
        conn: u64,
        report: crate::core::fleet::ServiceHealth,
    },
    /// `drover service logs`: ask `node`'s agent for a piece of the
    /// service's output; refused at once when it is not connected.
    ServiceLogs {
        node: String,
        service: String,
        offset: u64,
        max_bytes: u32,
        reply: oneshot::Sender<Result<crate::core::fleet::LogsChunk, String>>,
    },
    /// Hook output for a deploy job's log (the rollout controller's).
    DeployLog {
        run: RunId,
        job: String,
        attempt: u32,
        data: Vec<u8>,
    },
    /// A hook's output from the node that runs it, checked at the edge.
    HookOutput {
        conn: u64,
        node: String,
        rollout: u64,
        seq: u64,
        data: Vec<u8>,
    },
    /// An agent's answer to a `ServiceLogs`.
    ServiceLogsChunk {
        conn: u64,
        name: String,
        request_id: u64,
        answer: Result<crate::core::fleet::LogsChunk, String>,
    },
    AgentHello(AgentHello),
    AgentGone {
        conn: u64,
        name: String,
    },
    /// A session closed because its agent was revoked or banned: its
    /// attempts are lost at once.
    AgentRevoked {
        conn: u64,
        name: String,
        reason: String,
    },
    Heartbeat {
        conn: u64,
        name: String,
        running: Vec<AttemptId>,
        draining: bool,
        unready: String,
        /// When the API edge received it (and acknowledged it): leases run
        /// from here, never from when the scheduler got round to it.
        received: Instant,
    },
    Accepted {
        conn: u64,
        name: String,
        id: AttemptId,
    },
    Log {
        conn: u64,
        name: String,
        id: AttemptId,
        offset: u64,
        data: Vec<u8>,
    },
    Result {
        conn: u64,
        name: String,
        id: AttemptId,
        outcome: Outcome,
        message: String,
    },
}

/// A cloneable handle that API handlers use to talk to the scheduler.
#[derive(Clone)]
pub struct Handle {
    pub(super) tx: mpsc::Sender<Event>,
}

impl Handle {
    /// The scheduler has stopped (its term ended).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub async fn send(&self, event: Event) -> Result<(), SchedError> {
        self.tx.send(event).await.map_err(|_| SchedError::Stopped)
    }

    pub async fn submit(
        &self,
        pipeline: Pipeline,
        source: Source,
        traceparent: Option<String>,
        queue_timeout: Option<Duration>,
        rerun: Option<Rerun>,
    ) -> Result<RunId, SchedError> {
        let (reply, rx) = oneshot::channel();
        let pipeline = Box::new(pipeline);
        self.send(Event::Submit { pipeline, source, traceparent, queue_timeout, rerun, reply }).await?;
        rx.await.map_err(|_| SchedError::Stopped)?
    }

    pub async fn cancel(&self, run: RunId) -> Result<(), SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Cancel { run, reply }).await?;
        rx.await.map_err(|_| SchedError::Stopped)?
    }

    /// Approves (or rejects) job `job` of run `run` as `by`; answered once
    /// the decision is committed.
    pub async fn decide(
        &self,
        run: RunId,
        job: String,
        approve: bool,
        by: String,
        comment: String,
    ) -> Result<(), SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Decide { run, job, approve, by, comment, reply }).await?;
        rx.await.map_err(|_| SchedError::Stopped)?
    }

    pub async fn agents(&self) -> Result<Vec<AgentInfo>, SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::ListAgents { reply }).await?;
        rx.await.map_err(|_| SchedError::Stopped)
    }
}
