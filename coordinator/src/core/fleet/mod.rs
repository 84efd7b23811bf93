//! The fleet: the agents' sessions, slots, labels and readiness, the leases
//! of the attempts they hold, Hello reconciliation and the messages that go
//! out to them. It is the agent contract's home (`ToAgent`, `AttemptId`,
//! `Assignment`, `AgentHello`) and knows attempts, never runs.
//!
//! Whoever owns an attempt (today a run's job, through the scheduler; next a
//! rollout's step on a node) hands it to the fleet with [`Fleet::assign`],
//! takes it back with [`Fleet::release`], and hears what becomes of it as
//! [`AttemptEvent`]s among the [`FleetEffect`]s each call returns: accepted,
//! finished with a result, lost, or never started. The fleet never calls an
//! owner, so a second kind of owner needs no change here.
//!
//! The core ([`Fleet`], in `state.rs`) is synchronous and takes the time as
//! an argument ([`Now`]); it is table-tested like `machine::step`. The one
//! thing it does beyond its own state is hand messages to a session's
//! channel ([`Fleet::deliver`], never blocking), which the scheduler calls
//! only after a burst's commit.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::core::machine::{ArtifactRef, Outcome, RunId};
use drover_pipeline::StepSpec;
use serde::{Deserialize, Serialize};

mod deploy;
mod state;

pub use deploy::{
    DeployAction, DeployKind, DeployReport, DeployState, LogsChunk, ReleaseRef, ServiceHealth, parse_action_id,
};
pub use state::{Fleet, FleetConfig, Phase};

/// Identifies one attempt of one job: `{run}/{job}/{attempt}`. On the wire
/// it is that string; the API edge parses it once, and a malformed one never
/// gets past the edge.
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

/// Everything an agent needs to execute one attempt: what every kind of
/// attempt has (its id, the log cap, the trace context) and its [`Work`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub id: AttemptId,
    pub log_cap: u64,
    /// The attempt span's W3C trace context, for the agent's step spans.
    pub traceparent: Option<String>,
    pub work: Work,
}

/// What an attempt does. A deploy action on a node will be another kind,
/// on the same lease, log and result path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// A pipeline job's steps.
    Job {
        steps: Vec<StepSpec>,
        env: BTreeMap<String, String>,
        timeout: Option<Duration>,
        /// Repository and commit to check out into the workspace, for runs
        /// from git.
        checkout: Option<(String, String)>,
        /// What to pack after the steps succeed.
        artifacts: Option<drover_pipeline::ArtifactsSpec>,
        /// The artifacts of the jobs it needs, by job.
        inputs: Vec<(String, ArtifactRef)>,
        /// The names of the secrets it declares; the edge resolves them
        /// into values as the Assign goes out.
        secrets: Vec<String>,
        /// Its `cache:`, restored before its steps and saved after.
        cache: Option<drover_pipeline::CacheSpec>,
        /// How each job it needs ended, for its steps' conditions.
        need_results: Vec<(String, String)>,
        /// The branch and tag its run's ref named.
        branch: Option<String>,
        tag: Option<String>,
        /// Its values, for one expansion of a matrix.
        matrix: Vec<(String, String)>,
        /// What started its run (`drover.event`).
        event: drover_pipeline::triggers::EventKind,
        /// For a pull-request run of a repository not marked trusted: the
        /// repository, whose secrets the edge withholds from it.
        withhold_secrets: Option<String>,
    },
}

/// Messages from the coordinator to one agent connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToAgent {
    Welcome {
        heartbeat: Duration,
        /// How often an agent that holds no attempt heartbeats.
        idle_heartbeat: Duration,
        lease_ttl: Duration,
        epoch: u64,
        /// How long the agent waits for a heartbeat's acknowledgement before
        /// it takes the coordinator for frozen and tries another.
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
    /// The fleet grew while the session was open: heartbeat this rarely
    /// while idle from now on ([`idle_period`]). Only ever longer than what
    /// the session was told before.
    IdlePeriod {
        idle_heartbeat: Duration,
    },
    /// The CAs to trust changed (a rotation) while the session was open;
    /// `renew_cert_at_ms` is when the agent should renew. Sent by the API
    /// edge itself.
    Trust {
        ca_pem: String,
        renew_cert_at_ms: i64,
    },
    /// Boxed: an assignment is far larger than every other message.
    Assign(Box<Assignment>),
    /// A rollout's action on this node.
    Deploy(Box<DeployAction>),
    /// Asks for a service's output (`drover service logs`).
    ServiceLogs {
        request_id: u64,
        service: String,
        offset: u64,
        max_bytes: u32,
    },
    /// Kill the attempt. With `disown`, the attempt is no longer the
    /// agent's and its result is not wanted.
    Cancel {
        id: AttemptId,
        reason: String,
        disown: bool,
    },
    LogAck {
        id: AttemptId,
        offset: u64,
    },
    ResultAck {
        id: AttemptId,
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
    /// The version its Hello gave (`drover-agent`'s), while connected.
    pub version: String,
    /// The follower that carries its session to this leader (its id), or
    /// empty when it is connected here.
    pub via: String,
}

/// A new agent session, as the API edge hands it over after checking it.
#[derive(Debug)]
pub struct AgentHello {
    /// Tells this session's events from those of an older session of the
    /// same agent.
    pub conn: u64,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
    /// Attempts the agent holds (after a reconnect).
    pub running: Vec<AttemptId>,
    /// The agent is shutting down gracefully: no new work.
    pub draining: bool,
    /// Why the agent takes no new work for now, or empty.
    pub unready: String,
    /// The cache entries it keeps locally, "SCOPE_ID/KEY" (checked at the
    /// edge); the scheduler keeps them for warm-cache affinity.
    pub caches: Vec<String>,
    /// The agent process's random id: the same process reconnecting
    /// replaces its own session; another process is refused while the
    /// first one's session is live. Empty from agents that send none.
    pub instance: String,
    /// Where the session comes from, for the refusal's message.
    pub peer: String,
    /// The agent's version, as its Hello says (bounded at the edge).
    pub version: String,
    /// The follower that carries the session (its id), or empty.
    pub via: String,
    /// The session's outgoing stream.
    pub tx: mpsc::Sender<ToAgent>,
    /// Accepted, or refused with the reason (another live session holds
    /// the name). Answered at once, before the burst's commit: the Welcome
    /// that follows an acceptance still waits for it.
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// The time as the fleet's core takes it: monotonic for leases, wall clock
/// for what is stored and shown (`last_seen_ms`). Tests make their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub ms: u64,
}

impl Now {
    /// The current time, from both clocks.
    pub fn current() -> Now {
        Now { at: Instant::now(), ms: drover_telemetry::trace::now_ms() }
    }
}

/// What becomes of an attempt, for its owner. The fleet says it once per
/// happening; the owner decides what it means (a retry, a failed job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEvent {
    /// The agent confirmed it runs the attempt (or still holds it, after a
    /// reconnect).
    Accepted(AttemptId),
    /// The agent reported how the attempt ended.
    Finished(AttemptId, Outcome),
    /// The attempt is gone with its agent: its lease lapsed, the agent
    /// reconnected without it, or the agent broke the protocol for it.
    Lost(AttemptId, String),
    /// The agent never confirmed the assignment before its lease lapsed.
    NotStarted(AttemptId, String),
}

/// What a call on the [`Fleet`] asks of its driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEffect {
    /// Send to the agent's live session, after the burst's commit.
    Send(String, ToAgent),
    /// Tell the attempt's owner.
    Owner(AttemptEvent),
    /// The owner should send this attempt's assignment again (it was lost
    /// in transit): the fleet keeps no copy of what it holds.
    Resend(String, AttemptId),
    /// Store the agent's record, which `drover agents` shows after a leader
    /// change.
    PersistAgent(String, AgentRecord),
    /// Who is connected, or what they take, changed: wait reasons may be
    /// stale. `connected` is the change in connected agents.
    Changed { connected: i64 },
    /// Slots may have opened: plan dispatch.
    Dispatch,
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

/// How many times rarer an idle agent whose session a follower carries
/// heartbeats than one connected to the leader. Its follower watches the
/// leader for it (HTTP/2 PINGs, every eighth of the election TTL) and asks
/// it back when the leader goes, so its idle heartbeats only tell that the
/// agent and the follower are alive; at a third of the rate, the leader
/// acknowledges a third as many (most of an idle fleet's cost), and the
/// agent notices a frozen follower within three idle periods instead of
/// one.
pub const CARRIED_IDLE_FACTOR: u32 = 3;

/// How many idle heartbeats a second the leader is willing to acknowledge
/// across the fleet: a session's idle period grows with the fleet it joins,
/// so that the fleet's idle heartbeats stay near this rate (Nomad scales
/// its heartbeat TTL the same way), up to [`MAX_SCALED_IDLE`]. About
/// 100 µs each here (a sparse heartbeat wakes a parked worker), so 100 a
/// second are about 1% of a core.
pub const IDLE_HEARTBEATS_PER_SECOND: u32 = 100;

/// The longest idle period the fleet's size makes a session connected to
/// the leader heartbeat at (a lease TTL longer than this is used as it
/// is). It bounds how long an idle agent takes to notice a frozen leader
/// (this plus the acknowledgement timeout), and every keepalive waits
/// longer than it (`server::liveness`, `drover_client::Transport::AGENT`).
pub const MAX_SCALED_IDLE: Duration = Duration::from_secs(30);

/// The idle heartbeat period a session is told, given the configured
/// one (`base`, the lease TTL) and how many agents are connected: `base`,
/// or one second per [`IDLE_HEARTBEATS_PER_SECOND`] connected agents when
/// that is longer, up to [`MAX_SCALED_IDLE`]; [`CARRIED_IDLE_FACTOR`] times
/// that for a session a follower `carried`. A session is told it when it
/// says Hello, and a longer one at a later heartbeat if the fleet has grown
/// since ([`ToAgent::IdlePeriod`]); never a shorter one.
pub fn idle_period(base: Duration, connected: usize, carried: bool) -> Duration {
    let per_fleet = Duration::from_millis(connected as u64 * 1000 / u64::from(IDLE_HEARTBEATS_PER_SECOND));
    let direct = base.max(per_fleet.min(MAX_SCALED_IDLE));
    if carried { direct * CARRIED_IDLE_FACTOR } else { direct }
}

/// How long after the sending of its last renewing heartbeat an agent
/// kills a running attempt it could not renew: the lease TTL less a safety
/// margin (a fifth of it, at least 200 ms). See [`lease_grace`].
pub fn fence_after(ttl: Duration) -> Duration {
    ttl.saturating_sub((ttl / 5).max(Duration::from_millis(200)))
}

/// The reason given to an agent for an attempt it may no longer run.
pub fn stale_reason() -> String {
    "this attempt is no longer yours: it was lost or retried elsewhere".to_string()
}

/// What the store keeps of an agent, so that `drover agents` still knows
/// agents that are away after a leader change. Written when an agent comes
/// and goes, not on every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
    pub last_seen_ms: u64,
}

/// Whether a new session (from agent process `instance` at `peer`) may take
/// the name `name`, whose entry is `entry`. The same process reconnecting
/// replaces its own old session at once (its old stream may not have
/// broken yet). Another process is refused while the first one's session is
/// live: connected, and heard from within `quiet` (the lease TTL plus the
/// idle heartbeat period, so an idle agent stays live). Two processes under
/// one name would otherwise replace each other's sessions on every
/// reconnect, and each takeover marks the other's running attempts lost.
fn session_conflict(
    entry: &state::AgentEntry,
    name: &str,
    instance: &str,
    peer: &str,
    now_ms: u64,
    quiet: Duration,
) -> Result<(), String> {
    let live = entry.conn.is_some() && now_ms.saturating_sub(entry.last_seen_ms) < quiet.as_millis() as u64;
    // Agents older than instance ids send none: they replace as before.
    if !live || instance.is_empty() || entry.instance.is_empty() || entry.instance == instance {
        return Ok(());
    }
    Err(format!(
        "agent {name:?} is already connected from {} (another agent process), and its session is live; \
         this session from {peer} is refused until that one disconnects or is silent for {}s. \
         Give every agent its own name and certificate (`drover certs issue-agent NAME`)",
        entry.peer,
        quiet.as_secs_f64().ceil()
    ))
}
