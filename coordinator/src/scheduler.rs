//! The scheduler: the async driver around the pure run machine
//! ([`crate::machine`]) and the pure dispatcher ([`crate::dispatch`]).
//!
//! One task owns all mutable scheduling state: the active runs, the dispatch
//! queue, the connected agents and the attempt leases. Everything that can
//! change that state arrives as an [`Event`] on one channel, so the list of
//! what can wake the loop is in one place and no locks are needed.
//!
//! Group commit: the loop takes a burst of events (whatever is waiting, up
//! to [`MAX_BURST`]), feeds each to [`machine::step`], plans dispatch once,
//! and writes every record the burst changed in one store transaction. Only
//! then does it deliver what leaves the process: assignments, cancels,
//! acknowledgements and replies to API calls. A crash therefore never leaves
//! an agent working on something the store does not know about, and one
//! fsync covers many job transitions.
//!
//! Leases: every attempt that holds a slot has a deadline that the agent's
//! heartbeats push forward. When it passes, the attempt is lost and the
//! machine decides whether the job runs again. Deadlines live in memory; a
//! coordinator that starts (or restarts) gives every running attempt a fresh
//! full lease plus [`RECOVERY_GRACE`], as Nomad does after a failover, so
//! agents have time to reconnect. When a store write stalls, the stall is added to every deadline,
//! so nobody is declared lost because the store was slow.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, warn};

use crate::dispatch::{self, AgentSlots, Ready};
use crate::keys;
use crate::logs;
use crate::machine::{self, Effect, Input, JobRecord, JobState, Outcome, Run, RunId, RunTrace, Source};
use crate::metrics::{METRICS, result_index};
use crate::pipeline::{Pipeline, StepSpec};
use crate::records::{AgentRecord, MAX_RECORD_BYTES, RunSummary, encode, load_run};
use crate::segments::{self, ChunkMeta, Segments};
use crate::spans;
use crate::store::{Op, Store, StoreError, Txn, decode};
use drover_telemetry::trace::{self, now_ms};

/// The scheduler's tunables.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an attempt survives without a heartbeat from its agent.
    pub lease_ttl: Duration,
    /// Cap on each job's log, in bytes.
    pub log_cap: u64,
    /// This leader's epoch, sent to agents, which refuse older ones.
    pub epoch: u64,
    /// How often agents heartbeat. Each heartbeat is acknowledged at once,
    /// so an agent notices a frozen coordinator within this plus
    /// `ack_timeout`.
    pub heartbeat: Duration,
    /// How long an agent waits for a heartbeat's acknowledgement before it
    /// takes the coordinator for frozen and tries another.
    pub ack_timeout: Duration,
    /// The most runs that may be unfinished at once; a submit past it is
    /// refused.
    pub max_active_runs: usize,
    /// The most jobs that unfinished runs may hold in all. A run holds (in
    /// memory and in the queue) every one of its jobs until it finishes, so
    /// this bounds the scheduler's memory; a submit past it is refused.
    pub max_queued_jobs: usize,
}

/// Defaults of [`Config::max_active_runs`] and [`Config::max_queued_jobs`]:
/// 50,000 jobs of active runs take about 160 MiB of scheduler memory.
pub const DEFAULT_MAX_ACTIVE_RUNS: usize = 10_000;
pub const DEFAULT_MAX_QUEUED_JOBS: usize = 50_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            lease_ttl: Duration::from_secs(10),
            log_cap: 16 << 20,
            epoch: 1,
            heartbeat: Duration::from_millis(2500),
            ack_timeout: Duration::from_secs(5),
            max_active_runs: DEFAULT_MAX_ACTIVE_RUNS,
            max_queued_jobs: DEFAULT_MAX_QUEUED_JOBS,
        }
    }
}

/// Identifies one attempt of one job: `{run}/{job}/{attempt}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId {
    pub run: RunId,
    pub job: String,
    pub attempt: u32,
}

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.run, self.job, self.attempt)
    }
}

impl std::str::FromStr for AttemptId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("malformed attempt id {s:?}: expected RUN/JOB/ATTEMPT");
        let mut parts = s.split('/');
        let (Some(run), Some(job), Some(attempt), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(AttemptId {
            run: run.parse().map_err(|_| bad())?,
            job: job.to_string(),
            attempt: attempt.parse().map_err(|_| bad())?,
        })
    }
}

/// Everything an agent needs to execute one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub id: AttemptId,
    pub steps: Vec<StepSpec>,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub log_cap: u64,
    /// Repository and commit to check out into the workspace, for runs from git.
    pub checkout: Option<(String, String)>,
    /// The attempt span's W3C trace context, for the agent's step spans.
    pub traceparent: Option<String>,
}

/// Messages from the scheduler to one agent connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToAgent {
    Welcome {
        heartbeat: Duration,
        lease_ttl: Duration,
        epoch: u64,
        /// See [`Config::ack_timeout`].
        ack_timeout: Duration,
        /// See [`fence_after`].
        fence: Duration,
    },
    /// A heartbeat arrived; `renewed_seq` is the latest heartbeat of this
    /// session whose leases were renewed. Sent by the API edge itself, as
    /// soon as the heartbeat arrives.
    HeartbeatAck {
        seq: u64,
        renewed_seq: u64,
    },
    Assign(Assignment),
    /// Kill the attempt. With `disown`, the attempt is no longer the
    /// agent's and its result is not wanted.
    Cancel {
        id: String,
        reason: String,
        disown: bool,
    },
    LogAck {
        id: String,
        offset: u64,
    },
    ResultAck {
        id: String,
        accepted: bool,
    },
}

/// An agent as `drover agents` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
    pub in_use: u32,
    pub connected: bool,
    pub last_seen_ms: u64,
    pub draining: bool,
    /// Why it takes no new work (low disk), or empty.
    pub unready: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the scheduler has stopped")]
    Stopped,
    #[error(
        "the pipeline is too large to store: its record is {size} bytes, over the limit of {limit}; split it into smaller pipelines"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "the coordinator already has {active} unfinished runs, its limit (--max-active-runs {limit}); \
         wait for some to finish or cancel some (`drover runs`, `drover cancel RUN`), then submit again"
    )]
    TooManyRuns { active: usize, limit: usize },
    #[error(
        "this run's {jobs} jobs would bring the jobs of unfinished runs to {total}, over the coordinator's \
         limit (--max-queued-jobs {limit}); wait for runs to finish or cancel some, then submit again"
    )]
    TooManyJobs { jobs: usize, total: usize, limit: usize },
}

/// A new agent session.
#[derive(Debug)]
pub struct AgentHello {
    /// Tells this session's events from those of an older session of the
    /// same agent.
    pub conn: u64,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
    /// Attempts the agent holds (after a reconnect).
    pub running: Vec<String>,
    /// The agent is shutting down gracefully: no new work.
    pub draining: bool,
    /// Why the agent takes no new work for now, or empty.
    pub unready: String,
    /// The agent process's random id: the same process reconnecting
    /// replaces its own session; another process is refused while the
    /// first one's session is live. Empty from agents that send none.
    pub instance: String,
    /// Where the session comes from, for the refusal's message.
    pub peer: String,
    /// The session's outgoing stream.
    pub tx: mpsc::Sender<ToAgent>,
    /// Accepted, or refused with the reason (another live session holds
    /// the name). Answered at once, before the burst's commit: the Welcome
    /// that follows an acceptance still waits for it.
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// Everything that can wake the scheduler loop.
#[derive(Debug)]
pub enum Event {
    Submit {
        pipeline: Pipeline,
        source: Source,
        /// The submitter's W3C trace context, to continue its trace.
        traceparent: Option<String>,
        reply: oneshot::Sender<Result<RunId, SchedError>>,
    },
    Cancel {
        run: RunId,
        reply: oneshot::Sender<Result<(), SchedError>>,
    },
    ListAgents {
        reply: oneshot::Sender<Vec<AgentInfo>>,
    },
    AgentHello(AgentHello),
    AgentGone {
        conn: u64,
        name: String,
    },
    Heartbeat {
        conn: u64,
        name: String,
        running: Vec<String>,
        draining: bool,
        unready: String,
        /// When the API edge received it (and acknowledged it): leases run
        /// from here, never from when the scheduler got round to it.
        received: Instant,
    },
    Accepted {
        conn: u64,
        name: String,
        id: String,
    },
    Log {
        conn: u64,
        name: String,
        id: String,
        offset: u64,
        data: Vec<u8>,
    },
    Result {
        conn: u64,
        name: String,
        id: String,
        outcome: Outcome,
        message: String,
    },
}

/// A cloneable handle that API handlers use to talk to the scheduler.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Event>,
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
    ) -> Result<RunId, SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Submit { pipeline, source, traceparent, reply }).await?;
        rx.await.map_err(|_| SchedError::Stopped)?
    }

    pub async fn cancel(&self, run: RunId) -> Result<(), SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Cancel { run, reply }).await?;
        rx.await.map_err(|_| SchedError::Stopped)?
    }

    pub async fn agents(&self) -> Result<Vec<AgentInfo>, SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::ListAgents { reply }).await?;
        rx.await.map_err(|_| SchedError::Stopped)
    }
}

#[derive(Default)]
struct AgentEntry {
    /// The live connection: its id and the sender of its outgoing stream.
    conn: Option<(u64, mpsc::Sender<ToAgent>)>,
    labels: BTreeMap<String, String>,
    slots: u32,
    in_use: u32,
    last_seen_ms: u64,
    /// The live session said the agent is draining. Cleared by a new
    /// session's Hello.
    draining: bool,
    /// The live session's agent process (its instance id) and address.
    instance: String,
    peer: String,
    /// Why the agent takes no new work for now (its work directory is low
    /// on space), or empty. Cleared with the session.
    unready: String,
}

/// How long past its TTL a lease is kept before the attempt is taken for
/// lost. With the agent's fence ([`fence_after`]) this separates the moment
/// a cut-off agent kills an attempt from the moment its job may start
/// elsewhere by `lease_ttl - fence_after + lease_grace`: 30% of the TTL
/// (3 s at the default 10 s), at least 400 ms.
///
/// The agent counts its fence from when it *sent* the last heartbeat that
/// renewed the attempt; the coordinator counts the lease from when it
/// *received* that heartbeat, which is later whatever the network did. Both
/// use monotonic clocks; the margin only has to absorb the two clocks'
/// rate difference over one TTL (well under 1% on any real machine) and the
/// agent's SIGKILL of the attempt's process groups (milliseconds).
pub fn lease_grace(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(200))
}

/// How long after the sending of its last renewing heartbeat an agent
/// kills a running attempt it could not renew: the lease TTL less a safety
/// margin (a fifth of it, at least 200 ms). See [`lease_grace`].
pub fn fence_after(ttl: Duration) -> Duration {
    ttl.saturating_sub((ttl / 5).max(Duration::from_millis(200)))
}

/// Whether a new session (from agent process `instance` at `peer`) may take
/// the name `name`, whose entry is `entry`. The same process reconnecting
/// replaces its own old session at once (its old stream may not have
/// broken yet). Another process is refused while the first one's session is
/// live: connected, and heard from within the lease TTL. Two processes under
/// one name would otherwise replace each other's sessions on every
/// reconnect, and each takeover marks the other's running attempts lost.
fn session_conflict(
    entry: &AgentEntry,
    name: &str,
    instance: &str,
    peer: &str,
    now_ms: u64,
    ttl: Duration,
) -> Result<(), String> {
    let live = entry.conn.is_some() && now_ms.saturating_sub(entry.last_seen_ms) < ttl.as_millis() as u64;
    // Agents older than instance ids send none: they replace as before.
    if !live || instance.is_empty() || entry.instance.is_empty() || entry.instance == instance {
        return Ok(());
    }
    Err(format!(
        "agent {name:?} is already connected from {} (another agent process), and its session is live; \
         this session from {peer} is refused until that one disconnects or stops renewing for {}s. \
         Give every agent its own name and certificate (`drover certs issue-agent NAME`)",
        entry.peer,
        ttl.as_secs_f64().ceil()
    ))
}

/// Extra lease time that running attempts get when a coordinator starts
/// leading, on top of a full lease, so their agents can reconnect.
pub const RECOVERY_GRACE: Duration = Duration::from_secs(10);

/// Most events handled before the loop commits and delivers.
pub const MAX_BURST: usize = 512;

/// How a [`Scheduler::write`] ended.
enum Written {
    Done,
    /// Fenced (another coordinator leads) or refused for good: the term ends.
    Stop,
    /// The store refused the value at `key` for its size, and nothing else.
    TooLarge {
        key: String,
    },
}

/// Something to deliver once the current burst is committed.
enum Outgoing {
    Agent(String, ToAgent),
    Submitted(oneshot::Sender<Result<RunId, SchedError>>, RunId),
    Cancelled(oneshot::Sender<Result<(), SchedError>>),
}

pub struct Scheduler {
    store: Arc<dyn Store>,
    /// Where log chunks' bytes go; the store keeps only their metadata.
    segments: Arc<Segments>,
    /// Log chunks taken in the current burst, written and synced to their
    /// segments before `pending` (which holds their metadata) is committed.
    log_writes: Vec<segments::Write>,
    /// Records changed by the current burst, by key; the last write wins.
    pending: BTreeMap<String, Vec<u8>>,
    /// What to deliver after `pending` is committed.
    outbox: Vec<Outgoing>,
    config: Config,
    /// Runs that have not finished, with all their jobs.
    runs: BTreeMap<RunId, Run>,
    /// Jobs that were queued, oldest first. Entries whose job is no longer
    /// queued are dropped lazily when the queue is next planned.
    queue: VecDeque<(RunId, String)>,
    agents: BTreeMap<String, AgentEntry>,
    leases: HashMap<AttemptId, Instant>,
    last_run_id: RunId,
    dispatch_needed: bool,
    /// When each queued job became ready, for the dispatch latency metric.
    ready_at: HashMap<(RunId, String), Instant>,
    /// The fleet changed since the wait reasons were last worked out.
    reasons_stale: bool,
    /// Where each running attempt's log ends (every byte before it taken),
    /// for [`logs::judge`]. Set to 0 at assignment; an attempt inherited
    /// from another term is looked up in the store at its first chunk.
    log_ends: HashMap<AttemptId, u64>,
    /// Jobs of the runs in `runs`, for [`Config::max_queued_jobs`].
    active_jobs: usize,
}

impl Scheduler {
    /// Loads every unfinished run from the store and starts the loop.
    /// Returns the handle and the loop's task, which ends when every handle
    /// is dropped.
    pub async fn start(
        store: Arc<dyn Store>,
        segments: Arc<Segments>,
        config: Config,
    ) -> Result<(Handle, tokio::task::JoinHandle<()>), StoreError> {
        let mut sched = Scheduler {
            store,
            segments,
            log_writes: Vec::new(),
            pending: BTreeMap::new(),
            outbox: Vec::new(),
            config,
            runs: BTreeMap::new(),
            queue: VecDeque::new(),
            agents: BTreeMap::new(),
            leases: HashMap::new(),
            last_run_id: 0,
            dispatch_needed: false,
            ready_at: HashMap::new(),
            reasons_stale: true,
            log_ends: HashMap::new(),
            active_jobs: 0,
        };
        sched.recover().await?;
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(sched.run(rx));
        Ok((Handle { tx }, task))
    }

    async fn recover(&mut self) -> Result<(), StoreError> {
        if let Some(kv) = self.store.get(keys::RUN_SEQ).await? {
            self.last_run_id = decode(&kv.key, &kv.value)?;
        }
        let (agents, _) = self.store.range(keys::AGENTS).await?;
        for kv in agents {
            let record: AgentRecord = decode(&kv.key, &kv.value)?;
            let name = kv.key[keys::AGENTS.len()..].to_string();
            self.agents.insert(
                name,
                AgentEntry {
                    labels: record.labels,
                    slots: record.slots,
                    last_seen_ms: record.last_seen_ms,
                    ..AgentEntry::default()
                },
            );
        }
        let (index, _) = self.store.range(keys::RUN_INDEX).await?;
        // Agents need time to notice the old leader is gone and find us:
        // their keepalives take a few seconds to give up on a paused leader.
        let deadline = Instant::now() + self.config.lease_ttl + RECOVERY_GRACE;
        for kv in index {
            let summary: RunSummary = decode(&kv.key, &kv.value)?;
            if summary.state.is_terminal() {
                continue;
            }
            let Some(run) = load_run(self.store.as_ref(), summary.id).await? else { continue };
            for spec in &run.record.pipeline.jobs {
                let job = &run.jobs[&spec.name];
                if job.state == JobState::Queued {
                    self.queue.push_back((summary.id, spec.name.clone()));
                }
                if job.state.holds_slot() {
                    let agent = job.agent.clone().unwrap_or_default();
                    let entry = self.agents.entry(agent).or_default();
                    entry.in_use += 1;
                    let id = AttemptId { run: summary.id, job: spec.name.clone(), attempt: job.attempt };
                    self.leases.insert(id, deadline);
                }
            }
            info!(run = summary.id, "recovered unfinished run");
            self.active_jobs += run.jobs.len();
            self.runs.insert(summary.id, run);
            self.apply(summary.id, Input::Recover).await;
        }
        self.dispatch_needed = !self.queue.is_empty();
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => return,
                },
                _ = tick.tick() => self.expire_leases().await,
            }
            // Take what is already waiting, so a burst of events leads to one
            // dispatch pass and one commit.
            for _ in 1..MAX_BURST {
                match rx.try_recv() {
                    Ok(event) => self.handle(event).await,
                    Err(_) => break,
                }
            }
            if self.dispatch_needed {
                self.dispatch_needed = false;
                self.dispatch().await;
            }
            if !self.commit().await {
                warn!(epoch = self.config.epoch, "stopping: writes fenced (another coordinator leads) or refused");
                return;
            }
        }
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Submit { pipeline, source, traceparent, reply } => {
                match self.submit(pipeline, source, traceparent).await {
                    Ok(id) => self.outbox.push(Outgoing::Submitted(reply, id)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Event::Cancel { run, reply } => {
                if self.runs.contains_key(&run) {
                    self.apply(run, Input::Cancel).await;
                    self.outbox.push(Outgoing::Cancelled(reply));
                } else {
                    // Finished (or unknown) runs are only in the store:
                    // cancelling is a no-op, and the API reads the run
                    // afterwards, showing its final state or why it is gone.
                    let _ = reply.send(Ok(()));
                }
            }
            Event::ListAgents { reply } => {
                let list = self
                    .agents
                    .iter()
                    .filter(|(_, a)| a.slots > 0 || a.conn.is_some())
                    .map(|(name, a)| AgentInfo {
                        name: name.clone(),
                        labels: a.labels.clone(),
                        slots: a.slots,
                        in_use: a.in_use,
                        connected: a.conn.is_some(),
                        last_seen_ms: a.last_seen_ms,
                        draining: a.conn.is_some() && a.draining,
                        unready: if a.conn.is_some() { a.unready.clone() } else { String::new() },
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Event::AgentHello(hello) => self.hello(hello).await,
            Event::AgentGone { conn, name } => {
                if let Some(a) = self.agents.get_mut(&name)
                    && a.conn.as_ref().is_some_and(|(c, _)| *c == conn)
                {
                    info!(agent = %name, "agent disconnected");
                    a.conn = None;
                    a.last_seen_ms = now_ms();
                    let record = AgentRecord { labels: a.labels.clone(), slots: a.slots, last_seen_ms: a.last_seen_ms };
                    self.pending.insert(keys::agent(&name), encode(&record));
                    self.fleet_changed(-1);
                }
            }
            Event::Heartbeat { conn, name, running, draining, unready, received } => {
                if !self.is_current_conn(&name, conn) {
                    return;
                }
                if let Some(a) = self.agents.get_mut(&name) {
                    a.last_seen_ms = now_ms();
                    if a.draining != draining {
                        info!(agent = %name, draining, "agent draining: no new work for it");
                        a.draining = draining;
                        self.reasons_stale = true;
                    }
                    if a.unready != unready {
                        if unready.is_empty() {
                            info!(agent = %name, "agent ready again");
                            self.dispatch_needed = true;
                        } else {
                            warn!(agent = %name, reason = %unready, "agent not ready: no new work for it");
                        }
                        a.unready = unready;
                        self.reasons_stale = true;
                    }
                }
                for id in running {
                    self.renew_or_reject_at(&name, &id, received).await;
                }
            }
            Event::Accepted { conn, name, id } => {
                if !self.is_current_conn(&name, conn) {
                    return;
                }
                if let Some(attempt) = self.renew_or_reject(&name, &id).await {
                    if let Some(ready) = self.ready_at.remove(&(attempt.run, attempt.job.clone())) {
                        METRICS.dispatch_latency.observe_duration(ready.elapsed());
                    }
                    self.apply(attempt.run, Input::Accepted { job: attempt.job, attempt: attempt.attempt }).await;
                }
            }
            Event::Log { conn, name, id, offset, data } => {
                if !self.is_current_conn(&name, conn) {
                    return;
                }
                let Some(attempt) = self.owned_attempt(&name, &id) else {
                    self.send_to(&name, ToAgent::Cancel { id, reason: stale_reason(), disown: true });
                    return;
                };
                METRICS.log_bytes.add(data.len() as u64);
                let end = match self.log_end(&attempt).await {
                    Ok(end) => end,
                    Err(e) => {
                        // Not acknowledged: the agent sends it again.
                        warn!(attempt = %id, error = %e, "cannot read the stored log; the chunk waits for a resend");
                        return;
                    }
                };
                let limit = self.config.log_cap.saturating_add(logs::MARKER_ROOM);
                match logs::judge(offset, data.len(), end, limit) {
                    logs::Verdict::Append { keep, end } => {
                        // Past the cap nothing more is stored, but the chunk
                        // is acknowledged so the agent can let go of it.
                        // The bytes go to the attempt's segment file and only
                        // their length and checksum to the store; `commit`
                        // writes and syncs the file before the store, and
                        // acknowledges after both. Chunks that continue one
                        // taken earlier in the burst join it (up to
                        // `segments::MAX_RECORD_BYTES`): a fast log then
                        // takes one key per burst, not one per chunk.
                        if keep > 0 {
                            let mut data = data;
                            data.truncate(keep);
                            let earlier =
                                self.log_writes.iter_mut().rev().find(|w| {
                                    w.run == attempt.run && w.attempt == attempt.attempt && w.job == attempt.job
                                });
                            match earlier {
                                Some(w)
                                    if w.offset + w.data.len() as u64 == offset
                                        && w.data.len() + data.len() <= segments::MAX_RECORD_BYTES =>
                                {
                                    w.data.extend_from_slice(&data)
                                }
                                _ => self.log_writes.push(segments::Write {
                                    run: attempt.run,
                                    job: attempt.job.clone(),
                                    attempt: attempt.attempt,
                                    offset,
                                    data,
                                }),
                            }
                        }
                        self.log_ends.insert(attempt, end);
                        self.send_to(&name, ToAgent::LogAck { id, offset: end });
                    }
                    logs::Verdict::Resent { ack } => self.send_to(&name, ToAgent::LogAck { id, offset: ack }),
                    logs::Verdict::Refuse(why) => self.refuse_attempt(&name, attempt, why).await,
                }
            }
            Event::Result { conn, name, id, outcome, message } => {
                if !self.is_current_conn(&name, conn) {
                    return;
                }
                let Some(attempt) = self.owned_attempt(&name, &id) else {
                    debug!(agent = %name, attempt = %id, "refused a stale result");
                    self.send_to(&name, ToAgent::ResultAck { id, accepted: false });
                    return;
                };
                if !message.is_empty() {
                    debug!(attempt = %id, %message, "attempt finished");
                }
                self.apply(attempt.run, Input::Finished { job: attempt.job, attempt: attempt.attempt, outcome }).await;
                self.send_to(&name, ToAgent::ResultAck { id, accepted: true });
            }
        }
    }

    /// Where an attempt's stored log ends: known for attempts assigned in
    /// this term, read from the store (once) for those inherited, from the
    /// chunks' offsets (in their keys) and lengths (in their metadata).
    async fn log_end(&mut self, attempt: &AttemptId) -> Result<u64, StoreError> {
        if let Some(end) = self.log_ends.get(attempt) {
            return Ok(*end);
        }
        let prefix = keys::attempt_logs(attempt.run, &attempt.job, attempt.attempt);
        let (kvs, _) = self.store.range(&prefix).await?;
        let mut chunks = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let Some(offset) = kv.key.strip_prefix(&prefix).and_then(|o| u64::from_str_radix(o, 16).ok()) else {
                continue;
            };
            chunks.push((offset, ChunkMeta::decode(&kv.key, &kv.value)?.len as usize));
        }
        let end = logs::end_of(chunks);
        self.log_ends.insert(attempt.clone(), end);
        Ok(end)
    }

    /// Ends an attempt whose agent broke the protocol for it (a bad log
    /// chunk): the attempt is lost, with the reason, and the agent is told
    /// to kill it and forget it. Nothing else is touched: one bad message
    /// costs its own attempt, never the term or other agents' work.
    async fn refuse_attempt(&mut self, agent: &str, attempt: AttemptId, why: String) {
        let reason = format!("agent {agent} {why}");
        warn!(attempt = %attempt, %agent, %reason, "refused a message from an agent; its attempt ends");
        METRICS.agent_refusals.inc();
        self.send_to(agent, ToAgent::Cancel { id: attempt.to_string(), reason: reason.clone(), disown: true });
        self.apply(
            attempt.run,
            Input::Finished { job: attempt.job, attempt: attempt.attempt, outcome: Outcome::Lost { reason } },
        )
        .await;
    }

    fn is_current_conn(&self, name: &str, conn: u64) -> bool {
        self.agents.get(name).and_then(|a| a.conn.as_ref()).is_some_and(|(c, _)| *c == conn)
    }

    /// The attempt `id` if it is current and assigned to agent `name`.
    fn owned_attempt(&self, name: &str, id: &str) -> Option<AttemptId> {
        let attempt: AttemptId = id.parse().ok()?;
        let run = self.runs.get(&attempt.run)?;
        let job = run.jobs.get(&attempt.job)?;
        (run.attempt_is_current(&attempt.job, attempt.attempt) && job.agent.as_deref() == Some(name)).then_some(attempt)
    }

    /// Renews the lease of an attempt the agent holds, or tells the agent to
    /// kill it when it is no longer the agent's to run.
    async fn renew_or_reject(&mut self, name: &str, id: &str) -> Option<AttemptId> {
        self.renew_or_reject_at(name, id, Instant::now()).await
    }

    /// [`Scheduler::renew_or_reject`], counting the lease from `from`.
    async fn renew_or_reject_at(&mut self, name: &str, id: &str, from: Instant) -> Option<AttemptId> {
        match self.owned_attempt(name, id) {
            Some(attempt) => {
                let deadline = from + self.config.lease_ttl + lease_grace(self.config.lease_ttl);
                let lease = self.leases.entry(attempt.clone()).or_insert(deadline);
                *lease = (*lease).max(deadline);
                Some(attempt)
            }
            None => {
                self.send_to(name, ToAgent::Cancel { id: id.to_string(), reason: stale_reason(), disown: true });
                None
            }
        }
    }

    async fn hello(&mut self, hello: AgentHello) {
        let AgentHello { conn, name, labels, slots, running, draining, unready, instance, peer, tx, reply } = hello;
        let ttl = self.config.lease_ttl;
        let entry = self.agents.entry(name.clone()).or_default();
        if let Err(why) = session_conflict(entry, &name, &instance, &peer, now_ms(), ttl) {
            warn!(agent = %name, %peer, reason = %why, "refused a second session under one agent name");
            METRICS.agent_refusals.inc();
            let _ = reply.send(Err(why));
            return;
        }
        let _ = reply.send(Ok(()));
        info!(agent = %name, slots, ?labels, running = running.len(), draining, %peer, "agent connected");
        entry.instance = instance;
        entry.peer = peer;
        if !unready.is_empty() {
            warn!(agent = %name, reason = %unready, "agent not ready: no new work for it");
        }
        entry.unready = unready;
        // A new connection replaces the old one; dropping the old sender
        // ends the old stream.
        let newly = entry.conn.is_none();
        entry.conn = Some((conn, tx));
        entry.labels = labels;
        entry.slots = slots;
        entry.draining = draining;
        entry.last_seen_ms = now_ms();
        let record = AgentRecord { labels: entry.labels.clone(), slots: entry.slots, last_seen_ms: entry.last_seen_ms };
        self.pending.insert(keys::agent(&name), encode(&record));
        self.fleet_changed(if newly { 1 } else { 0 });
        // Through the outbox like everything else: after the commit, and
        // ahead of whatever this session is sent next.
        let welcome = ToAgent::Welcome {
            heartbeat: self.config.heartbeat,
            lease_ttl: ttl,
            epoch: self.config.epoch,
            ack_timeout: self.config.ack_timeout,
            fence: fence_after(ttl),
        };
        self.send_to(&name, welcome);

        let held: HashSet<String> = running.iter().cloned().collect();
        for id in &running {
            if let Some(attempt) = self.renew_or_reject(&name, id).await {
                let cancelling = self.runs[&attempt.run].jobs[&attempt.job].state == JobState::Cancelling;
                if cancelling {
                    // The cancel may have been sent while the agent was away.
                    let msg = ToAgent::Cancel { id: id.clone(), reason: "run cancelled".into(), disown: false };
                    self.send_to(&name, msg);
                }
                self.apply(attempt.run, Input::Accepted { job: attempt.job, attempt: attempt.attempt }).await;
            }
        }
        // What we believe the agent holds but it does not: an assignment that
        // was lost in transit is sent again; a running attempt is lost.
        let agent_name = name.as_str();
        let mine: Vec<(AttemptId, JobState)> = self
            .runs
            .iter()
            .flat_map(|(run_id, run)| {
                run.jobs
                    .iter()
                    .filter(|&(_job, j)| j.state.holds_slot() && j.agent.as_deref() == Some(agent_name))
                    .map(|(job, j)| (AttemptId { run: *run_id, job: job.clone(), attempt: j.attempt }, j.state))
            })
            .collect();
        for (attempt, state) in mine {
            if held.contains(&attempt.to_string()) {
                continue;
            }
            if state == JobState::Assigned {
                if let Some(assignment) = self.assignment(&attempt) {
                    self.leases.insert(attempt.clone(), Instant::now() + ttl);
                    self.send_to(&name, ToAgent::Assign(assignment));
                }
            } else {
                let reason = format!("agent {name} reconnected without it");
                self.apply(
                    attempt.run,
                    Input::Finished { job: attempt.job, attempt: attempt.attempt, outcome: Outcome::Lost { reason } },
                )
                .await;
            }
        }
        self.dispatch_needed = true;
    }

    async fn expire_leases(&mut self) {
        let now = Instant::now();
        let expired: Vec<AttemptId> =
            self.leases.iter().filter(|(_, deadline)| **deadline <= now).map(|(id, _)| id.clone()).collect();
        for id in expired {
            self.leases.remove(&id);
            let Some(run) = self.runs.get(&id.run) else { continue };
            let Some(job) = run.jobs.get(&id.job) else { continue };
            if !run.attempt_is_current(&id.job, id.attempt) {
                continue;
            }
            let agent = job.agent.clone().unwrap_or_default();
            let ttl = self.config.lease_ttl.as_secs_f64();
            let outcome = if job.state == JobState::Assigned {
                Outcome::NotStarted { reason: format!("agent {agent} did not confirm it within {ttl:.0}s") }
            } else {
                Outcome::Lost { reason: format!("agent {agent} stopped renewing its lease for {ttl:.0}s") }
            };
            warn!(attempt = %id, %agent, "attempt lease expired");
            METRICS.lease_expiries.inc();
            self.apply(id.run, Input::Finished { job: id.job.clone(), attempt: id.attempt, outcome }).await;
        }
    }

    async fn submit(
        &mut self,
        pipeline: Pipeline,
        source: Source,
        traceparent: Option<String>,
    ) -> Result<RunId, SchedError> {
        let (max_runs, max_jobs) = (self.config.max_active_runs, self.config.max_queued_jobs);
        if self.runs.len() >= max_runs {
            return Err(SchedError::TooManyRuns { active: self.runs.len(), limit: max_runs });
        }
        let jobs = pipeline.jobs.len();
        if self.active_jobs + jobs > max_jobs {
            return Err(SchedError::TooManyJobs { jobs, total: self.active_jobs + jobs, limit: max_jobs });
        }
        let id = self.last_run_id + 1;
        let mut run = Run::new(id, pipeline, source, now_ms());
        // The run's trace continues the submitter's, when it sent one.
        let (trace_id, parent_span_id) = match traceparent.as_deref().and_then(trace::parse_traceparent) {
            Some((trace_id, parent)) => (trace_id, parent),
            None => (trace::new_trace_id(), String::new()),
        };
        run.record.trace = RunTrace { trace_id, span_id: trace::new_span_id(), parent_span_id };
        for job in run.jobs.values_mut() {
            job.trace.span_id = trace::new_span_id();
        }
        let size = encode(&run.record).len();
        if size > MAX_RECORD_BYTES {
            return Err(SchedError::TooLarge { size, limit: MAX_RECORD_BYTES });
        }
        self.last_run_id = id;
        self.pending.insert(keys::RUN_SEQ.to_string(), encode(&id));
        self.pending.insert(keys::run(id), encode(&run.record));
        self.pending.insert(keys::run_index(id), encode(&RunSummary::of(&run.record)));
        for (name, job) in &run.jobs {
            self.pending.insert(keys::job(id, name), encode(job));
        }
        let trace_id = run.record.trace.trace_id.clone();
        info!(run = id, name = %run.record.pipeline.name, jobs = run.jobs.len(), %trace_id, "run submitted");
        METRICS.runs_submitted.inc();
        self.active_jobs += run.jobs.len();
        self.runs.insert(id, run);
        self.apply(id, Input::Start).await;
        Ok(id)
    }

    /// Feeds one input to a run's machine, stages what changed for the
    /// burst's commit, then acts (deliveries wait for the commit).
    async fn apply(&mut self, run_id: RunId, input: Input) {
        let Some(run) = self.runs.remove(&run_id) else { return };
        let now = now_ms();
        let (mut run, effects) = machine::step(run, input, now);
        trace_effects(&mut run, &effects, now);
        for effect in &effects {
            match effect {
                Effect::PersistRun => {
                    self.pending.insert(keys::run(run_id), encode(&run.record));
                    self.pending.insert(keys::run_index(run_id), encode(&RunSummary::of(&run.record)));
                }
                Effect::PersistJob(job) => {
                    let record = &run.jobs[job];
                    self.pending.insert(keys::job(run_id, job), encode(record));
                    if record.state.is_terminal() {
                        record_finished(record);
                        self.ready_at.remove(&(run_id, job.clone()));
                    }
                }
                _ => {}
            }
        }
        self.runs.insert(run_id, run);
        self.act(run_id, effects).await;
    }

    /// Commits the burst's changes in one transaction (or several, where
    /// the store limits the size of one), then delivers. Log chunks' bytes
    /// go first: written to their segment files and synced (one fdatasync
    /// per file the burst touched), so no chunk's metadata is committed,
    /// and no chunk acknowledged, before its bytes are safe. Returns false
    /// when the writes were fenced or a segment write failed: this
    /// scheduler must stop without delivering anything.
    async fn commit(&mut self) -> bool {
        let writes = std::mem::take(&mut self.log_writes);
        if !writes.is_empty() {
            let started = Instant::now();
            let keys: Vec<String> =
                writes.iter().map(|w| keys::log_chunk(w.run, &w.job, w.attempt, w.offset)).collect();
            match self.segments.write_async(writes).await {
                Ok(metas) => {
                    for (key, meta) in keys.into_iter().zip(metas) {
                        self.pending.insert(key, meta.encode());
                    }
                }
                Err(e) => {
                    // A full or failing blob disk is the whole coordinator's
                    // fault, like a stopped store: nothing of this burst is
                    // committed or delivered, the segments refuse every
                    // later write, and the server exits after
                    // --store-fail-exit.
                    error!(error = %e, "cannot write log segments; stopping this term");
                    self.pending.clear();
                    self.outbox.clear();
                    return false;
                }
            }
            // As for a slow store write: nobody is blamed for a slow disk.
            let stalled = started.elapsed();
            if stalled > self.config.lease_ttl / 4 {
                for deadline in self.leases.values_mut() {
                    *deadline += stalled;
                }
            }
        }
        let pending = std::mem::take(&mut self.pending);
        let ops = pending.into_iter().map(|(key, value)| Op::put(key, value)).collect();
        for mut ops in self.store.split(ops) {
            loop {
                match self.write(Txn::ops(ops.clone())).await {
                    Written::Done => break,
                    Written::Stop => {
                        self.outbox.clear();
                        return false;
                    }
                    Written::TooLarge { key } => {
                        // The edge checks every size an agent or a client
                        // controls, so this is a bug; still, one oversized
                        // value must cost only its own write, never the term
                        // and the rest of the burst.
                        error!(%key, "the store refused a value as too large; dropping that one write");
                        let before = ops.len();
                        ops.retain(|op| op.key() != key);
                        if ops.len() == before {
                            self.outbox.clear();
                            return false;
                        }
                    }
                }
            }
        }
        for out in std::mem::take(&mut self.outbox) {
            match out {
                Outgoing::Agent(agent, msg) => self.deliver(&agent, msg),
                Outgoing::Submitted(reply, id) => {
                    let _ = reply.send(Ok(id));
                }
                Outgoing::Cancelled(reply) => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        true
    }

    /// Carries out the effects other than persistence.
    async fn act(&mut self, run_id: RunId, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::PersistRun | Effect::PersistJob(_) => {}
                Effect::Enqueue(job) => {
                    self.ready_at.insert((run_id, job.clone()), Instant::now());
                    self.queue.push_back((run_id, job));
                    self.dispatch_needed = true;
                }
                Effect::SendAssign { job, attempt, agent } => {
                    let id = AttemptId { run: run_id, job, attempt };
                    // A new attempt number: nothing of its log exists yet.
                    self.log_ends.insert(id.clone(), 0);
                    if let Some(assignment) = self.assignment(&id) {
                        self.leases.insert(id, Instant::now() + self.config.lease_ttl);
                        self.send_to(&agent, ToAgent::Assign(assignment));
                    }
                }
                Effect::SendCancel { job, attempt, agent } => {
                    let id = AttemptId { run: run_id, job, attempt };
                    self.send_to(
                        &agent,
                        ToAgent::Cancel { id: id.to_string(), reason: "run cancelled".into(), disown: false },
                    );
                }
                Effect::Release { job, attempt, agent } => {
                    let id = AttemptId { run: run_id, job, attempt };
                    self.leases.remove(&id);
                    self.log_ends.remove(&id);
                    if let Some(a) = self.agents.get_mut(&agent) {
                        a.in_use = a.in_use.saturating_sub(1);
                    }
                    self.dispatch_needed = true;
                }
                Effect::RunFinished(state) => {
                    info!(run = run_id, state = state.as_str(), "run finished");
                    if let Some(run) = self.runs.remove(&run_id) {
                        self.active_jobs -= run.jobs.len();
                    }
                }
            }
        }
    }

    fn assignment(&self, id: &AttemptId) -> Option<Assignment> {
        let run = self.runs.get(&id.run)?;
        let spec = run.spec(&id.job)?;
        let mut env = run.record.pipeline.env.clone();
        env.extend(spec.env.clone());
        let checkout = match (&run.record.source.repo, &run.record.source.commit) {
            (Some(repo), Some(commit)) => Some((repo.clone(), commit.clone())),
            _ => None,
        };
        let job = run.jobs.get(&id.job)?;
        let traceparent = (!run.record.trace.trace_id.is_empty() && !job.trace.attempt_span_id.is_empty())
            .then(|| trace::traceparent(&run.record.trace.trace_id, &job.trace.attempt_span_id));
        Some(Assignment {
            traceparent,
            id: id.clone(),
            steps: spec.steps.clone(),
            env,
            timeout: spec.timeout,
            log_cap: self.config.log_cap,
            checkout,
        })
    }

    /// Queues a message for an agent; it leaves after the burst's commit.
    fn send_to(&mut self, agent: &str, msg: ToAgent) {
        self.outbox.push(Outgoing::Agent(agent.to_string(), msg));
    }

    fn deliver(&self, agent: &str, msg: ToAgent) {
        let Some((_, tx)) = self.agents.get(agent).and_then(|a| a.conn.as_ref()) else { return };
        // A full outgoing buffer means the agent stopped reading; its lease
        // will tell. Never block the scheduler on one slow agent.
        if let Err(e) = tx.try_send(msg) {
            warn!(%agent, error = %e, "could not send to agent");
        }
    }

    /// Writes a transaction, retrying while the store is unavailable. While
    /// the store is down the scheduler waits here; the time lost is added to
    /// every lease so that no agent is blamed for the store's outage. Returns
    /// false when the write was fenced, or refused for good (retrying cannot
    /// help): the scheduler then stops, and the election starts a fresh term
    /// from what the store holds.
    async fn write(&mut self, txn: Txn) -> Written {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt_started = Instant::now();
            let span = tracing::info_span!("store.txn", ops = txn.success.len(), store.attempt = tracing::field::Empty);
            let result = self.store.txn(txn.clone()).instrument(span).await;
            METRICS.store_txn.observe_duration(attempt_started.elapsed());
            if result.is_err() {
                METRICS.store_txn_errors.inc();
            }
            match result {
                Ok(_) => break,
                Err(StoreError::Fenced { .. }) => return Written::Stop,
                Err(StoreError::ValueTooLarge { key, .. }) => return Written::TooLarge { key },
                Err(e @ StoreError::Unavailable(_)) if self.store.stopped().is_some() => {
                    // Stopped for good (see `Store::stopped`): retrying
                    // cannot help, and the callers waiting on this burst
                    // should hear why now.
                    error!(error = %e, "the store has stopped; stopping this term");
                    return Written::Stop;
                }
                Err(e @ StoreError::Unavailable(_)) => {
                    warn!(error = %e, "store write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    error!(error = %e, "the store refused a write; stopping this term");
                    return Written::Stop;
                }
            }
        }
        let stalled = started.elapsed();
        if stalled > self.config.lease_ttl / 4 {
            for deadline in self.leases.values_mut() {
                *deadline += stalled;
            }
        }
        Written::Done
    }

    async fn dispatch(&mut self) {
        // Drop entries whose job is no longer queued (cancelled, run gone).
        let runs = &self.runs;
        self.queue.retain(|(run, job)| {
            runs.get(run).and_then(|r| r.jobs.get(job)).is_some_and(|j| j.state == JobState::Queued)
        });
        if self.queue.is_empty() {
            return;
        }
        let names: Vec<String> = self.agents.iter().filter(|(_, a)| a.conn.is_some()).map(|(n, _)| n.clone()).collect();
        let (plan, reasons) = {
            let queued: Vec<Ready> = self
                .queue
                .iter()
                .map(|(run, job)| Ready {
                    runs_on: &self.runs[run].spec(job).expect("queued job exists").runs_on,
                    avoid: self.runs[run].jobs[job].last_agent.as_deref(),
                })
                .collect();
            let mut agents: Vec<AgentSlots> = names
                .iter()
                .map(|n| {
                    let a = &self.agents[n];
                    AgentSlots {
                        name: n,
                        labels: &a.labels,
                        free: a.slots.saturating_sub(a.in_use),
                        draining: a.draining,
                        unready: &a.unready,
                    }
                })
                .collect();
            let plan = dispatch::plan(&queued, &mut agents);
            // Say what a job waits for when it has no reason yet, or when
            // the fleet changed; otherwise the reason it has still holds.
            let reasons: Vec<(usize, String)> = plan
                .all_waiting(queued.len())
                .filter(|i| {
                    let (run, job) = &self.queue[*i];
                    self.reasons_stale || self.runs[run].jobs[job].waiting_for.is_empty()
                })
                .map(|i| (i, dispatch::wait_reason(&queued[i], &agents)))
                .collect();
            (plan, reasons)
        };
        self.reasons_stale = false;
        let queue: Vec<(RunId, String)> = self.queue.iter().cloned().collect();
        for (job, agent) in plan.assign {
            let (run, job) = queue[job].clone();
            let agent = names[agent].clone();
            if let Some(a) = self.agents.get_mut(&agent) {
                a.in_use += 1;
            }
            self.apply(run, Input::Assign { job, agent }).await;
        }
        for (job, reason) in reasons {
            let (run, job) = queue[job].clone();
            self.apply(run, Input::Waiting { job, reason }).await;
        }
        let runs = &self.runs;
        self.queue.retain(|(run, job)| {
            runs.get(run).and_then(|r| r.jobs.get(job)).is_some_and(|j| j.state == JobState::Queued)
        });
        METRICS.queue_depth.set(self.queue.len() as i64);
    }

    /// Agents came or went (or changed labels): wait reasons may be stale.
    fn fleet_changed(&mut self, connected_delta: i64) {
        self.reasons_stale = true;
        METRICS.agents_connected.add(connected_delta);
    }
}

/// Keeps the trace fields of the records up to date with what the step did,
/// and emits the spans of what it ended. Runs before the records are
/// staged, so the fields are written with the step.
fn trace_effects(run: &mut Run, effects: &[Effect], now: u64) {
    for effect in effects {
        match effect {
            Effect::Enqueue(job) => {
                if let Some(j) = run.jobs.get_mut(job) {
                    j.trace.first_ready_ms.get_or_insert(now);
                    j.trace.ready_ms = Some(now);
                }
            }
            Effect::SendAssign { job, .. } => {
                if let Some(j) = run.jobs.get_mut(job) {
                    j.trace.attempt_span_id = trace::new_span_id();
                    j.trace.assigned_ms = Some(now);
                }
            }
            _ => {}
        }
    }
    for effect in effects {
        match effect {
            Effect::SendAssign { job, agent, .. } => spans::dispatch(&run.record, job, &run.jobs[job], agent, now),
            Effect::Release { job, attempt, agent } => {
                spans::attempt(&run.record, job, &run.jobs[job], *attempt, agent, now)
            }
            Effect::PersistJob(job) if run.jobs[job].state.is_terminal() => {
                spans::job(&run.record, job, &run.jobs[job], now)
            }
            Effect::RunFinished(state) => spans::run(&run.record, *state, now),
            _ => {}
        }
    }
}

/// Counts a job that reached a final state, and how long its last attempt
/// ran.
fn record_finished(job: &JobRecord) {
    let Some(i) = result_index(job.state.as_str()) else { return };
    METRICS.jobs_finished[i].inc();
    if let (Some(start), Some(end)) = (job.started_ms, job.finished_ms) {
        METRICS.job_duration[i].observe(end.saturating_sub(start) as f64 / 1000.0);
    }
}

/// Splits staged writes into transactions of at most `max_ops` operations
/// and `max_bytes` bytes of keys and values (0: no limit). Keys stay in
/// order; a record larger than `max_bytes` goes alone (the store will say
/// why it is too large).
fn stale_reason() -> String {
    "this attempt is no longer yours: it was lost or retried elsewhere".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_ids_round_trip_and_reject_garbage() {
        let id = AttemptId { run: 12, job: "build.x-1".into(), attempt: 3 };
        assert_eq!(id.to_string(), "12/build.x-1/3");
        assert_eq!(id.to_string().parse::<AttemptId>(), Ok(id));
        for bad in ["", "1/a", "1/a/b", "x/a/1", "1/a/1/2"] {
            assert!(bad.parse::<AttemptId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_second_agent_process_under_one_name_waits_for_the_first_to_go() {
        let ttl = Duration::from_secs(3);
        let (tx, _rx) = mpsc::channel(1);
        let live = |instance: &str, last_seen_ms: u64| AgentEntry {
            conn: Some((1, tx.clone())),
            last_seen_ms,
            instance: instance.into(),
            peer: "10.0.0.1:5000".into(),
            ..AgentEntry::default()
        };
        let gone = AgentEntry { instance: "a".into(), last_seen_ms: 9_000, ..AgentEntry::default() };
        // (what, entry, new instance, now, accepted)
        let cases: Vec<(&str, AgentEntry, &str, u64, bool)> = vec![
            ("first session", AgentEntry::default(), "a", 10_000, true),
            ("the same process reconnects", live("a", 9_000), "a", 10_000, true),
            ("another process while the first is live", live("a", 9_000), "b", 10_000, false),
            ("another process, the first heard from just now", live("a", 10_000), "b", 10_000, false),
            ("another process after the first went quiet for the TTL", live("a", 7_000), "b", 10_000, true),
            ("another process after the first disconnected", gone, "b", 10_000, true),
            ("an agent without instance ids replaces as before", live("a", 9_000), "", 10_000, true),
            ("after an agent without instance ids", live("", 9_000), "b", 10_000, true),
        ];
        for (what, entry, instance, now, accepted) in cases {
            let got = session_conflict(&entry, "a1", instance, "10.0.0.2:6000", now, ttl);
            assert_eq!(got.is_ok(), accepted, "{what}: {got:?}");
            if let Err(why) = got {
                assert!(why.contains("already connected from 10.0.0.1:5000"), "{why}");
                assert!(why.contains("this session from 10.0.0.2:6000 is refused"), "{why}");
            }
        }
    }
}
