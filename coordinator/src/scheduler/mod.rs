//! The scheduler: the driver around the pure run machine
//! ([`crate::core::machine`]), the pure dispatcher ([`crate::core::dispatch`]) and the
//! fleet ([`crate::core::fleet`]).
//!
//! One task owns all mutable scheduling state: the active runs, the dispatch
//! queue and the fleet (the connected agents and the attempt leases).
//! Everything that can change that state arrives as an [`Event`] on one
//! channel, so the list of what can wake the loop is in one place and no
//! locks are needed.
//!
//! Group commit: the loop takes a burst of events (whatever is waiting, up
//! to [`MAX_BURST`]), feeds each to the synchronous burst logic (`State`, in
//! `state.rs`, `runs.rs` and `agents.rs`), which steps the machines and the
//! fleet and only *stages* what changed (`pending`) and what leaves the
//! process (`outbox`). It plans dispatch once, then this module writes every
//! staged record in one store transaction, and only then delivers:
//! assignments, cancels, acknowledgements and replies to API calls. A crash
//! therefore never leaves an agent working on something the store does not
//! know about, and one fsync covers many job transitions. The only awaits
//! are here: recovery, the commit's segment and store writes.
//!
//! Leases: every attempt that holds a slot has a deadline that the agent's
//! heartbeats push forward (kept by the fleet). When it passes, the attempt
//! is lost and the machine decides whether the job runs again. Deadlines
//! live in memory; a coordinator that starts (or restarts) gives every
//! running attempt a fresh full lease plus [`RECOVERY_GRACE`], as Nomad does
//! after a failover, so agents have time to reconnect. When a store write
//! stalls, the stall is added to every deadline, so nobody is declared lost
//! because the store was slow.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, error, info, warn};

use crate::core::fleet::AgentRecord;
use crate::core::fleet::{Now, Phase};
use crate::core::keys;
use crate::core::logs;
use crate::core::machine::{Input, JobState};
use crate::metrics::METRICS;
use crate::records::{RunSummary, load_run};
use crate::segments::{ChunkMeta, Segments};
use crate::store::{Op, Store, StoreError, Txn, decode};

mod agents;
mod deploys;
mod events;
mod pass;
mod queue;
mod runs;
mod state;
#[cfg(test)]
mod tests;

use state::{Outgoing, State};

pub use deploys::{DeployJob, DeployNote, RollbackCommand, RolloutCommand, SyncAction, SyncCommand, Verb};
pub use events::{Event, Handle};

/// The agent contract moved to [`crate::core::fleet`]; these names stay here for
/// the code that still reaches them through the scheduler.
pub use crate::core::fleet::{AgentHello, AgentInfo, Assignment, AttemptId, ToAgent, Work, fence_after, lease_grace};

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
    /// How often agents heartbeat while they hold no attempt, so that no
    /// lease needs renewing: the lease TTL, and never more often than four
    /// heartbeats (see `server::liveness`). It is what an idle fleet costs
    /// its coordinator; an idle agent notices a frozen coordinator when one
    /// goes unacknowledged, within this plus `ack_timeout`.
    pub idle_heartbeat: Duration,
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
    /// How long a job waits when no connected agent has its labels, for
    /// runs and jobs that do not say.
    pub queue_timeout: Duration,
    /// How long a job's artifacts are kept when its file says nothing
    /// (`expire:`).
    pub artifact_expire: Duration,
    /// Prefer agents that hold a job's cache (`--no-cache-affinity`
    /// turns it off, to compare).
    pub cache_affinity: bool,
    /// When ready jobs outnumber free slots, those with the longest
    /// remaining path go first (`--dispatch critical-path`, the default);
    /// false keeps the queue's order (`--dispatch fifo`).
    pub critical_path: bool,
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
            idle_heartbeat: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(5),
            max_active_runs: DEFAULT_MAX_ACTIVE_RUNS,
            max_queued_jobs: DEFAULT_MAX_QUEUED_JOBS,
            queue_timeout: crate::core::machine::DEFAULT_QUEUE_TIMEOUT,
            artifact_expire: Duration::from_secs(30 * 24 * 3600),
            cache_affinity: true,
            critical_path: true,
        }
    }
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
    /// `drover approve` of a job or run that does not exist, or has finished.
    #[error("{0}")]
    NotFound(String),
    /// `drover approve` of a job that does not wait for approval.
    #[error("{0}")]
    NotWaiting(String),
    /// `drover approve` by someone the job does not name.
    #[error("{0}")]
    NotApprover(String),
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
    /// The store refused the value at `key` for its size, and nothing else;
    /// the transaction comes back, to be sent again without it.
    TooLarge {
        key: String,
        txn: Txn,
    },
}

/// The loop's task: the burst logic's state, and the store and segments
/// that only the commit and recovery touch.
pub struct Scheduler {
    store: Arc<dyn Store>,
    /// Where log chunks' bytes go; the store keeps only their metadata.
    segments: Arc<Segments>,
    state: State,
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
        let mut sched = Scheduler { store, segments, state: State::new(config) };
        sched.recover().await?;
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(sched.run(rx));
        Ok((Handle { tx }, task))
    }

    async fn recover(&mut self) -> Result<(), StoreError> {
        let state = &mut self.state;
        if let Some(kv) = self.store.get(keys::RUN_SEQ).await? {
            state.last_run_id = decode(&kv.key, &kv.value)?;
        }
        let (agents, _) = self.store.range(keys::AGENTS).await?;
        for kv in agents {
            let record: AgentRecord = decode(&kv.key, &kv.value)?;
            state.fleet.restore(kv.key[keys::AGENTS.len()..].to_string(), record);
        }
        let (index, _) = self.store.range(keys::RUN_INDEX).await?;
        // Agents need time to notice the old leader is gone and find us: one
        // that runs an attempt gives up on a paused leader when a heartbeat
        // goes unacknowledged, then looks for the new one.
        let deadline = Instant::now() + state.config.lease_ttl + RECOVERY_GRACE;
        let now = Now::current();
        for kv in index {
            let summary: RunSummary = decode(&kv.key, &kv.value)?;
            if summary.state.is_terminal() {
                continue;
            }
            let Some(run) = load_run(self.store.as_ref(), summary.id).await? else { continue };
            // Ranks first: the queue's order needs them.
            state.track_ranks(&run);
            for spec in &run.record.pipeline.jobs {
                let job = &run.jobs[&spec.name];
                if job.state == JobState::Queued {
                    state.enqueue(summary.id, spec.name.clone());
                }
                if job.state.holds_slot() {
                    let id = AttemptId { run: summary.id, job: spec.name.clone(), attempt: job.attempt };
                    // Read here, not at its first chunk, so that taking a
                    // chunk never waits for the store.
                    let end = log_end(self.store.as_ref(), &id).await?;
                    state.log_ends.insert(id.clone(), end);
                    // A deploy job holds no slot and no lease: its rollout
                    // is the controller's, which picks it up from the store;
                    // its log (its hooks' output) goes on where it ended.
                    let Some(agent) = job.agent.clone() else { continue };
                    let phase = match job.state {
                        JobState::Assigned => Phase::Assigned,
                        JobState::Cancelling => Phase::Cancelling(state::RUN_CANCELLED.into()),
                        _ => Phase::Running,
                    };
                    state.fleet.adopt(agent, id, phase, deadline);
                }
            }
            info!(run = summary.id, "recovered unfinished run");
            state.active_jobs += run.jobs.len();
            // Deadlines it had (blocked jobs, approvals with a timeout)
            // are watched again.
            if run.next_deadline().is_some() {
                state.blocked.insert(summary.id);
            }
            state.track_groups(&run);
            state.runs.insert(summary.id, run);
            state.apply(summary.id, Input::Recover, now);
        }
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => self.state.handle(event, Now::current()),
                    None => return,
                },
                _ = tick.tick() => self.state.tick(Now::current()),
            }
            // Take what is already waiting, so a burst of events leads to one
            // dispatch pass and one commit.
            for _ in 1..MAX_BURST {
                match rx.try_recv() {
                    Ok(event) => self.state.handle(event, Now::current()),
                    Err(_) => break,
                }
            }
            self.state.end_burst(Now::current());
            if !self.commit().await {
                warn!(
                    epoch = self.state.config.epoch,
                    "stopping: writes fenced (another coordinator leads) or refused"
                );
                return;
            }
        }
    }

    /// Commits the burst's changes in one transaction (or several, where
    /// the store limits the size of one), then delivers. Log chunks' bytes
    /// go first: written to their segment files and synced (one fdatasync
    /// per file the burst touched), so no chunk's metadata is committed,
    /// and no chunk acknowledged, before its bytes are safe. Returns false
    /// when the writes were fenced or a segment write failed: this
    /// scheduler must stop without delivering anything.
    async fn commit(&mut self) -> bool {
        let writes = std::mem::take(&mut self.state.log_writes);
        if !writes.is_empty() {
            let started = Instant::now();
            let keys: Vec<String> =
                writes.iter().map(|w| keys::log_chunk(w.run, &w.job, w.attempt, w.offset)).collect();
            match self.segments.write_async(writes).await {
                Ok(metas) => {
                    for (key, meta) in keys.into_iter().zip(metas) {
                        self.state.pending.insert(key, meta.encode());
                    }
                }
                Err(e) => {
                    // A full or failing blob disk is the whole coordinator's
                    // fault, like a stopped store: nothing of this burst is
                    // committed or delivered, the segments refuse every
                    // later write, and the server exits after
                    // --store-fail-exit.
                    error!(error = %e, "cannot write log segments; stopping this term");
                    self.state.pending.clear();
                    self.state.outbox.clear();
                    return false;
                }
            }
            // As for a slow store write: nobody is blamed for a slow disk.
            self.excuse_stall(started.elapsed());
        }
        let pending = std::mem::take(&mut self.state.pending);
        let ops = pending.into_iter().map(|(key, value)| Op::put(key, value)).collect();
        for ops in self.store.split(ops) {
            let mut txn = Txn::ops(ops);
            loop {
                match self.write(txn).await {
                    Written::Done => break,
                    Written::Stop => {
                        self.state.outbox.clear();
                        return false;
                    }
                    Written::TooLarge { key, txn: mut refused } => {
                        // The edge checks every size an agent or a client
                        // controls, so this is a bug; still, one oversized
                        // value must cost only its own write, never the term
                        // and the rest of the burst.
                        error!(%key, "the store refused a value as too large; dropping that one write");
                        let before = refused.success.len();
                        refused.success.retain(|op| op.key() != key);
                        if refused.success.len() == before {
                            self.state.outbox.clear();
                            return false;
                        }
                        txn = refused;
                    }
                }
            }
        }
        // Agents first: an assignment is what the fleet waits for. The order
        // changes nothing else: everything here only tells what was just
        // committed.
        let (to_agents, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.state.outbox).into_iter().partition(|out| matches!(out, Outgoing::Agent(..)));
        for out in to_agents.into_iter().chain(rest) {
            match out {
                Outgoing::Agent(agent, msg) => self.state.fleet.deliver(&agent, msg),
                Outgoing::Submitted(reply, id) => {
                    let _ = reply.send(Ok(id));
                }
                Outgoing::Committed(reply) => {
                    let _ = reply.send(Ok(()));
                }
                Outgoing::Deploy(note) => self.state.note_deploy(note),
            }
        }
        true
    }

    /// Time lost to a stalled store or disk is added to every lease, so
    /// that no agent is blamed for it.
    fn excuse_stall(&mut self, stalled: Duration) {
        if stalled > self.state.config.lease_ttl / 4 {
            self.state.fleet.extend(stalled);
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
                Err(StoreError::ValueTooLarge { key, .. }) => return Written::TooLarge { key, txn },
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
        self.excuse_stall(started.elapsed());
        Written::Done
    }
}

/// Where an attempt's stored log ends, from its chunks' offsets (in their
/// keys) and lengths (in their metadata): read once for each attempt a new
/// leader inherits. Attempts assigned in a term start at 0.
async fn log_end(store: &dyn Store, attempt: &AttemptId) -> Result<u64, StoreError> {
    let prefix = keys::attempt_logs(attempt.run, &attempt.job, attempt.attempt);
    let (kvs, _) = store.range(&prefix).await?;
    let mut chunks = Vec::with_capacity(kvs.len());
    for kv in &kvs {
        let Some(offset) = kv.key.strip_prefix(&prefix).and_then(|o| u64::from_str_radix(o, 16).ok()) else {
            continue;
        };
        chunks.push((offset, ChunkMeta::decode(&kv.key, &kv.value)?.len as usize));
    }
    Ok(logs::end_of(chunks))
}
