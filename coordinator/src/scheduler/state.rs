//! The scheduler's burst logic: everything the loop knows between bursts,
//! and the synchronous handling of one [`Event`]. Handling an event only
//! changes memory and stages: records to write (`pending`), log bytes to
//! write (`log_writes`), and what to deliver once they are committed
//! (`outbox`). The driver in `mod.rs` does the writing and the delivering,
//! so this is tested with events and a clock of the test's making, without
//! a runtime or a store (`tests.rs`).
//!
//! Driving runs is in `runs.rs`; what agents say, through the fleet, is in
//! `agents.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Config, Event, SchedError};
use crate::core::fleet::{AttemptId, Fleet, FleetConfig, Now, ToAgent};
use crate::core::machine::{Input, Run, RunId};
use crate::segments;

/// The reason given to agents for cancelling the attempts of a cancelled run.
pub(super) const RUN_CANCELLED: &str = "run cancelled";

/// Something to deliver once the current burst is committed.
pub(super) enum Outgoing {
    Agent(String, ToAgent),
    Submitted(oneshot::Sender<Result<RunId, SchedError>>, RunId),
    /// A cancel or an approval: answered once it is committed.
    Committed(oneshot::Sender<Result<(), SchedError>>),
    /// For the rollout controller.
    Deploy(super::DeployNote),
}

pub(super) struct State {
    pub(super) config: Config,
    /// The agents, their sessions and slots, and the leases of the attempts
    /// they hold.
    pub(super) fleet: Fleet,
    /// Log chunks taken in the current burst, written and synced to their
    /// segments before `pending` (which holds their metadata) is committed.
    pub(super) log_writes: Vec<segments::Write>,
    /// Records changed by the current burst, by key; the last write wins.
    pub(super) pending: BTreeMap<String, Vec<u8>>,
    /// What to deliver after `pending` is committed.
    pub(super) outbox: Vec<Outgoing>,
    /// Runs that have not finished, with all their jobs.
    pub(super) runs: BTreeMap<RunId, Run>,
    /// The queued jobs, in the order dispatch looks at them.
    pub(super) queue: super::queue::Queue,
    pub(super) last_run_id: RunId,
    pub(super) dispatch_needed: bool,
    /// When each queued job became ready, for the dispatch latency metric.
    pub(super) ready_at: HashMap<(RunId, String), Instant>,
    /// Queue entries dispatch has looked at (offered to the fleet, or
    /// given a wait reason), as `drover_dispatch_looked_at_total` counts.
    pub(super) looked_at: u64,
    /// The fleet changed since the wait reasons were last worked out.
    pub(super) reasons_stale: bool,
    /// Where each running attempt's log ends (every byte before it taken),
    /// for [`crate::core::logs::judge`]. Set to 0 at assignment, and read from the
    /// store at recovery for attempts inherited from another term.
    pub(super) log_ends: HashMap<AttemptId, u64>,
    /// Jobs of the runs in `runs`, for [`Config::max_queued_jobs`].
    pub(super) active_jobs: usize,
    /// Runs that may have jobs with a deadline, which each tick looks at:
    /// blocked ones (no connected agent has their labels), and approvals
    /// with a timeout.
    pub(super) blocked: BTreeSet<RunId>,
    /// The cache entries each agent keeps ("SCOPE_ID/KEY"), from its Hello
    /// and its results since: what warm-cache affinity prefers.
    pub(super) warm: HashMap<String, BTreeSet<String>>,
    /// Each agent's version and the follower carrying its session, from
    /// its last Hello (for `drover agents`).
    pub(super) versions: HashMap<String, (String, String)>,
    /// The unfinished runs of each pipeline-level concurrency group, oldest
    /// first: the first is the one that may run.
    pub(super) run_groups: BTreeMap<String, BTreeSet<RunId>>,
    /// How long each job (by pipeline name and job name) took in its last
    /// successes, newest last: its estimate for critical-path order.
    pub(super) durations: HashMap<(String, String), VecDeque<u64>>,
    /// Each unfinished run's jobs' remaining paths (ms), worked out when
    /// it was submitted or recovered.
    pub(super) ranks: HashMap<RunId, HashMap<String, u64>>,
    /// Unfinished runs with a job-level `concurrency:`, whose jobs holding
    /// slots occupy their groups.
    pub(super) grouped_runs: BTreeSet<RunId>,
    /// The entry each job with a cache used last, by (scope id, job name),
    /// as "SCOPE_ID/KEY": the exact entry a warm agent has.
    pub(super) last_keys: HashMap<(String, String), String>,
    /// The rollout controller's subscription, while it runs.
    pub(super) deploys: Option<tokio::sync::mpsc::UnboundedSender<super::DeployNote>>,
    /// Which agent was sent an install of which blob, which it may fetch.
    pub(super) deploy_grants: super::deploys::Grants,
    /// `drover service logs` requests waiting for their agent's answer.
    pub(super) log_requests: super::deploys::LogRequests,
}

impl State {
    pub(super) fn new(config: Config) -> State {
        let fleet = Fleet::new(FleetConfig {
            lease_ttl: config.lease_ttl,
            heartbeat: config.heartbeat,
            idle_heartbeat: config.idle_heartbeat,
            ack_timeout: config.ack_timeout,
            epoch: config.epoch,
        });
        State {
            config,
            fleet,
            log_writes: Vec::new(),
            pending: BTreeMap::new(),
            outbox: Vec::new(),
            runs: BTreeMap::new(),
            queue: Default::default(),
            last_run_id: 0,
            dispatch_needed: false,
            ready_at: HashMap::new(),
            looked_at: 0,
            reasons_stale: true,
            log_ends: HashMap::new(),
            active_jobs: 0,
            blocked: BTreeSet::new(),
            warm: HashMap::new(),
            versions: HashMap::new(),
            last_keys: HashMap::new(),
            run_groups: BTreeMap::new(),
            durations: HashMap::new(),
            ranks: HashMap::new(),
            grouped_runs: BTreeSet::new(),
            deploys: None,
            deploy_grants: Default::default(),
            log_requests: Default::default(),
        }
    }

    /// Handles one event: steps the machines and the fleet, and stages what
    /// changed and what to send.
    pub(super) fn handle(&mut self, event: Event, now: Now) {
        match event {
            Event::Submit { pipeline, source, traceparent, queue_timeout, rerun, reply } => {
                match self.submit(*pipeline, source, traceparent, queue_timeout, rerun, now) {
                    Ok(id) => self.outbox.push(Outgoing::Submitted(reply, id)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Event::Cancel { run, reply } => {
                if self.runs.contains_key(&run) {
                    self.apply(run, Input::Cancel, now);
                    self.outbox.push(Outgoing::Committed(reply));
                } else {
                    // Finished (or unknown) runs are only in the store:
                    // cancelling is a no-op, and the API reads the run
                    // afterwards, showing its final state or why it is gone.
                    let _ = reply.send(Ok(()));
                }
            }
            Event::Decide { run, job, approve, by, comment, reply } => match self.may_decide(run, &job, &by) {
                Ok(()) => {
                    self.apply(run, Input::Decide { job, approve, by, comment }, now);
                    self.outbox.push(Outgoing::Committed(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Event::ListAgents { reply } => {
                let mut agents = self.fleet.list();
                for a in agents.iter_mut().filter(|a| a.connected) {
                    (a.version, a.via) = self.versions.get(&a.name).cloned().unwrap_or_default();
                }
                let _ = reply.send(agents);
            }
            Event::MayFetch { name, attempt, sha256, reply } => {
                let _ = reply.send(match attempt {
                    Some(id) => self.may_fetch(&name, &id, &sha256),
                    None => self.may_fetch_release(&name, &sha256),
                });
            }
            event @ (Event::SubscribeDeploys { .. }
            | Event::DeployFinished { .. }
            | Event::Deploy { .. }
            | Event::DeployReport { .. }
            | Event::RolloutCommand(_)
            | Event::Rollback(_)
            | Event::AppSync(_)
            | Event::ServiceHealth { .. }
            | Event::ServiceLogs { .. }
            | Event::ServiceLogsChunk { .. }
            | Event::DeployLog { .. }
            | Event::HookOutput { .. }) => self.handle_deploy(event, now),
            Event::MayUpload { name, id, reply } => {
                let _ = reply.send(self.fleet.held_by(&name).any(|held| *held == id));
            }
            Event::CacheScope { name, id, reply } => {
                let _ = reply.send(self.cache_scope(&name, &id));
            }
            Event::AgentHello(hello) => self.hello(hello, now),
            Event::AgentGone { conn, name } => {
                let fx = self.fleet.gone(conn, &name, now);
                self.on_fleet(fx, now, false);
            }
            Event::AgentRevoked { conn, name, reason } => {
                let fx = self.fleet.revoked(conn, &name, &reason, now);
                self.on_fleet(fx, now, false);
            }
            Event::Heartbeat { conn, name, running, draining, unready, received } => {
                let fx = self.fleet.heartbeat(conn, &name, &running, draining, unready, received, now);
                self.on_fleet(fx, now, false);
            }
            Event::Accepted { conn, name, id } => {
                let fx = self.fleet.accepted(conn, &name, id, now);
                self.on_fleet(fx, now, true);
            }
            Event::Log { conn, name, id, offset, data } => self.log(conn, name, id, offset, data, now),
            Event::Result { conn, name, id, outcome, message } => {
                if let crate::core::machine::Outcome::Succeeded { cache: Some(note), .. } = &outcome {
                    self.note_cache(&name, &id, note);
                }
                let fx = self.fleet.result(conn, &name, id, outcome, &message);
                self.on_fleet(fx, now, false);
            }
        }
    }

    /// What a burst does once its events are handled: one dispatch pass, if
    /// anything in it may have made one worthwhile.
    pub(super) fn end_burst(&mut self, now: Now) {
        if self.dispatch_needed {
            self.dispatch_needed = false;
            self.dispatch(now);
        }
    }

    /// Queues a message for an agent; it leaves after the burst's commit.
    pub(super) fn send_to(&mut self, agent: String, msg: ToAgent) {
        self.outbox.push(Outgoing::Agent(agent, msg));
    }
}
