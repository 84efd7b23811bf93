//! A rollout of one release over a set of nodes, as a pure state machine:
//! [`step`] takes the rollout, one [`Input`] and the wall-clock time, and
//! returns the new rollout with the [`Effect`]s the driver must carry out. It
//! does no IO and cannot fail; inputs that do not apply (a report about a
//! node that is not where the report says, an input in the wrong phase)
//! change nothing and yield no effects.
//!
//! A rollout is a sequence of steps, each ending at a gate (module
//! `plan` turns a [`Strategy`] into the steps for a number of nodes). The
//! nodes are taken in the order given:
//!
//! - **rolling**: batches of `max_parallel`;
//! - **canary**: steps that are shares of the nodes (`nodes: 10%`, or a
//!   count), each optionally followed by a pause, timed
//!   ([`Effect::WaitUntil`], ended by [`Input::Tick`]) or manual
//!   ([`Effect::AwaitPromote`], ended by [`Input::Promote`]; `full` skips
//!   the remaining pauses and updates every node left at once);
//! - **blue-green**: one step of every node, where installing starts the
//!   new release beside the old; once every node's new release is healthy
//!   and the gate passed, every node is told to switch its traffic
//!   ([`Effect::Switch`]) at once, and the rollout succeeds when all have.
//!   A failure before or during the switch sends every node back (all at
//!   once), so either every node serves the new release or none does.
//!
//! A step starts only once every node before it is healthy and its gate
//! has passed. A node goes through
//!
//! ```text
//! Waiting ──▶ Installing ──NodeInstalled──▶ Checking ──NodeHealthy──▶ Healthy
//!                 │                            │                         │
//!                 └──────────── NodeFailed ────┴─────────────────────────┴──▶ Failed
//!
//! (blue-green)  Healthy ──▶ Switching ──NodeSwitched──▶ Switched   (NodeFailed: Failed)
//!
//! (going back)  RollbackQueued ──▶ RollingBack ──NodeRolledBack──▶ RolledBack
//!                                       └────────NodeFailed──────▶ RollbackFailed
//! ```
//!
//! and the rollout through
//!
//! ```text
//! Pending ──Start──▶ Progressing ──the last step passes──▶ Succeeded
//!    │                  │   ▲
//!    │            Pause │   │ Resume
//!    │                  ▼   │
//!    │                 Paused    (also on a failure with on_failure: pause,
//!    │                            or on an inconclusive verdict)
//!    └──Abort──▶ Aborted
//!
//! Progressing, Paused ──a failure (on_failure: rollback), a failing verdict, Abort──▶ RollingBack
//! RollingBack ──every touched node is back──▶ RolledBack (Aborted after Abort)
//!             └──a node could not go back───▶ Failed
//! ```
//!
//! **Gates.** A step (for rolling, one batch) ends at a gate whose outcome
//! is a [`Verdict`]: a pass goes on, a fail goes back (or pauses, as
//! `on_failure` says), an inconclusive one pauses for a person. Today the
//! gate is the nodes' health: every node so far healthy is a pass, a failed
//! node is a fail. With [`Spec::await_verdict`] a healthy step also waits
//! for a verdict from outside ([`Effect::AwaitVerdict`], answered by
//! [`Input::Verdict`]). That is where metric analysis, manual and webhook
//! gates and deploy windows (the progressive-delivery issue) plug in,
//! without a new state here.
//!
//! **Going back.** Every node the rollout touched (installing, checking,
//! healthy or failed) goes back to the release it ran before, in the reverse
//! of the order it was updated, `max_parallel` at a time: the nodes updated
//! last, the likeliest to be broken, go first, and no more nodes are out of
//! service at once than the rollout itself allowed. A node still installing
//! goes back like the others: the agent carries out one node's actions in
//! the order they were sent (as it does attempts), so the rollback follows
//! the install, and the install's reports that arrive afterwards are stale.
//! A canary goes back as many nodes at once as its largest step moved, and
//! blue-green all at once. A **fast-track rollback** (the deployments
//! issue's `drover rollback`, straight to the target on every node) is not
//! a way back through this rollout but a new one of the old release,
//! [`Rollout::fast_track`]: every node at once, no pauses.
//!
//! The progress deadline needs no state here: when it passes, the driver
//! feeds [`Input::Abort`] with that reason. Resuming after a coordinator
//! failover (sending again the actions that were in flight, as the run
//! machine's `Recover` does) comes with the controller that persists
//! rollouts.

mod machine;
mod plan;

use serde::{Deserialize, Serialize};

pub use machine::step;

/// How a release spreads over the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Rolling(Rolling),
    /// Steps that are shares of the nodes, with timed or manual pauses.
    Canary(Canary),
    /// The new release started beside the old on every node, then one
    /// switch of traffic on all of them.
    BlueGreen,
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Rolling(_) => "rolling",
            Strategy::Canary(_) => "canary",
            Strategy::BlueGreen => "blue_green",
        }
    }
}

/// A canary's steps, in order: shares of the nodes and pauses. The first is
/// a share; the last share need not be all of them (the rest follows as a
/// last step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    pub steps: Vec<CanaryStep>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryStep {
    /// Update nodes until this share of them runs the release.
    Nodes(Share),
    /// Then wait before the next step.
    Pause(Pause),
}

/// How many of the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Share {
    /// 1 to 100 per cent, rounded up (at least one node).
    Percent(u32),
    /// At least 1; more than there are nodes means all of them.
    Count(u32),
}

/// A pause after a canary step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pause {
    /// For this many milliseconds.
    For(u64),
    /// Until someone promotes the rollout.
    Manual,
}

/// A canary step that is over, waiting to go on: what [`Input::Tick`] or
/// [`Input::Promote`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    Until(u64),
    Promote,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rolling {
    /// The batch size: how many nodes are updated at once, and how many go
    /// back at once after a failure. Drover's agents start a node's new
    /// release beside the old one and switch only once it is healthy, so
    /// an update takes no node out of service, and the pipeline's
    /// `max_unavailable` needs no state here.
    pub max_parallel: u32,
}

/// What a failed node or a failing verdict does to the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Put every node the rollout touched back on its previous release.
    #[default]
    Rollback,
    /// Stop where it stands and wait for a person: [`Input::Resume`] tries
    /// the failed nodes again, [`Input::Abort`] goes back. Releases that
    /// cannot be rolled back (the progressive-delivery issue's one-way
    /// doors) will want this.
    Pause,
}

/// What to roll out, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The release: an artifact's digest. Opaque here; the agent verifies it.
    pub release: String,
    pub strategy: Strategy,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Whether each step, once its nodes are healthy, also waits for a
    /// verdict from outside before the next.
    #[serde(default)]
    pub await_verdict: bool,
    /// Waves: the nodes, in order, this many in each wave, each wave
    /// planned by the strategy over its own nodes after the one before
    /// (none: one wave of every node). Not with blue-green.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<u32>,
}

/// A node to roll out to, as the driver picked it (selecting nodes by
/// labels is the coordinator's job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub node: String,
    /// The release to go back to: the last one that was healthy on the node,
    /// or none when it never ran one (going back then removes the new one).
    pub rollback_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Its batch has not started.
    Waiting,
    /// Told to install the release; the agent has not confirmed it.
    Installing,
    /// Installed; its health check has not passed yet.
    Checking,
    Healthy,
    Failed,
    /// Blue-green: told to switch its traffic to the new release.
    Switching,
    /// Blue-green: serves the new release.
    Switched,
    /// To go back once fewer than `max_parallel` nodes are going back.
    RollbackQueued,
    /// Told to go back to its previous release.
    RollingBack,
    RolledBack,
    /// It could not go back; a person must look at it.
    RollbackFailed,
}

impl NodeState {
    /// Whether the rollout has changed the node, so that going back must
    /// include it.
    fn touched(self) -> bool {
        matches!(
            self,
            NodeState::Installing
                | NodeState::Checking
                | NodeState::Healthy
                | NodeState::Failed
                | NodeState::Switching
                | NodeState::Switched
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Waiting => "waiting",
            NodeState::Installing => "installing",
            NodeState::Checking => "checking",
            NodeState::Healthy => "healthy",
            NodeState::Failed => "failed",
            NodeState::Switching => "switching",
            NodeState::Switched => "switched",
            NodeState::RollbackQueued => "rollback_queued",
            NodeState::RollingBack => "rolling_back",
            NodeState::RolledBack => "rolled_back",
            NodeState::RollbackFailed => "rollback_failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub rollback_to: Option<String>,
    pub state: NodeState,
    /// Why it failed, in words, or empty.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Made, not started.
    Pending,
    Progressing,
    /// No new step starts; nodes already in flight finish.
    Paused,
    RollingBack,
    Succeeded,
    /// Went back after a failure.
    RolledBack,
    /// Went back (or never started) because it was asked to stop.
    Aborted,
    /// Some node could not go back.
    Failed,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack | Phase::Aborted | Phase::Failed)
    }
    /// Whether nodes are still being moved forward, so that reports about
    /// installs and health checks apply.
    fn forward(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::RollingBack => "rolling_back",
            Phase::Succeeded => "succeeded",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
            Phase::Failed => "failed",
        }
    }
}

/// A gate's outcome, from the nodes' health today and from analysis,
/// approvals or windows later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail {
        reason: String,
    },
    /// Neither: a person decides. The rollout pauses.
    Inconclusive {
        reason: String,
    },
}

/// A rollout with all of its nodes: the state [`step`] works on, and the
/// record the driver persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub spec: Spec,
    /// In the order they are updated.
    pub nodes: Vec<Node>,
    pub phase: Phase,
    /// The current step, from 0: for rolling, the batch.
    pub step: u32,
    /// A canary step that is over and waits to go on, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// Promoted with `full`: no more pauses, every node left at once.
    #[serde(default)]
    pub promoted_full: bool,
    /// Set by [`Input::Abort`], so that the rollback that follows ends
    /// `Aborted` rather than `RolledBack`.
    pub abort_requested: bool,
    /// What happened last, in words: why it paused or went back.
    pub message: String,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
}

/// Why a rollout cannot be made. Each is the caller's mistake, found before
/// anything is touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("the release has no digest")]
    NoRelease,
    /// A rollout over no nodes would succeed without deploying anything,
    /// which must not look like a deploy that worked.
    #[error("there are no nodes to roll out to")]
    NoNodes,
    #[error("node {0:?} is listed more than once")]
    DuplicateNode(String),
    #[error("max_parallel is 0; at least one node must be updated at a time")]
    NoParallelism,
    #[error("a canary needs steps, and its first must be a share of the nodes (`nodes: 10%`), not a pause")]
    CanaryStart,
    #[error("canary step {0}: a share is 1% to 100%, or a count of at least 1")]
    BadShare(usize),
    #[error("the waves must each hold at least one node, and hold every node between them")]
    BadWaves,
    #[error("blue-green switches every node at once, so it cannot roll out in waves")]
    WavedBlueGreen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin: install the first batch.
    Start,
    /// The node installed the release and switched to it.
    NodeInstalled {
        node: String,
    },
    /// The node's health check passed as often as it must.
    NodeHealthy {
        node: String,
    },
    /// The node's install, health check or rollback failed, or a healthy
    /// node stopped being healthy while the rollout goes on.
    NodeFailed {
        node: String,
        reason: String,
    },
    /// The node runs its previous release again.
    NodeRolledBack {
        node: String,
    },
    /// The outside verdict on a step, asked for by [`Effect::AwaitVerdict`].
    Verdict {
        step: u32,
        verdict: Verdict,
    },
    /// Stop and go back: a person asked, or the progress deadline passed.
    /// While going back already, it changes nothing.
    Abort {
        reason: String,
    },
    Pause,
    Resume,
    /// The time, fed when a timed pause may have ended.
    Tick,
    /// End a canary's pause now; with `full`, also every pause after it,
    /// updating every node left at once.
    Promote {
        full: bool,
    },
    /// Blue-green: the node serves the new release.
    NodeSwitched {
        node: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The rollout changed and must be written (before the other effects
    /// are carried out). It comes first whenever there is anything else.
    Persist,
    /// Tell the node's agent to install the release and switch to it.
    Install { node: String, release: String },
    /// Start checking the node's health; report `NodeHealthy` or `NodeFailed`.
    CheckHealth { node: String },
    /// The step's nodes are healthy: find a verdict on it and report it.
    AwaitVerdict { step: u32 },
    /// Tell the node's agent to go back to `to` (none: remove the release).
    Rollback { node: String, to: Option<String> },
    /// A canary step is over and pauses until `until_ms`: feed
    /// [`Input::Tick`] then.
    WaitUntil { step: u32, until_ms: u64 },
    /// A canary step is over and waits for [`Input::Promote`].
    AwaitPromote { step: u32 },
    /// Blue-green: tell the node's agent to send its traffic to the new
    /// release (its proxy switches); report `NodeSwitched` or `NodeFailed`.
    Switch { node: String },
    /// The rollout reached a final phase.
    Finished(Phase),
}

impl Rollout {
    /// A rollout that has not started, every node waiting. Feed it
    /// [`Input::Start`] next.
    pub fn new(spec: Spec, targets: Vec<Target>) -> Result<Rollout, SpecError> {
        plan::plan(&spec.strategy, &spec.waves, targets.len().max(1))?;
        if spec.release.is_empty() {
            return Err(SpecError::NoRelease);
        }
        if targets.is_empty() {
            return Err(SpecError::NoNodes);
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &targets {
            if !seen.insert(t.node.as_str()) {
                return Err(SpecError::DuplicateNode(t.node.clone()));
            }
        }
        let nodes = targets
            .into_iter()
            .map(|t| Node {
                name: t.node,
                rollback_to: t.rollback_to,
                state: NodeState::Waiting,
                reason: String::new(),
            })
            .collect();
        Ok(Rollout {
            spec,
            nodes,
            phase: Phase::Pending,
            step: 0,
            hold: None,
            promoted_full: false,
            abort_requested: false,
            message: String::new(),
            started_ms: None,
            finished_ms: None,
        })
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// A fast-track rollback: `release` (the one to go back to) on every
    /// node at once, with no pauses and no outside verdict; each node's
    /// way back from it is `rollback_to`.
    pub fn fast_track(release: String, targets: Vec<Target>) -> Result<Rollout, SpecError> {
        let max_parallel = u32::try_from(targets.len()).unwrap_or(u32::MAX).max(1);
        let spec = Spec {
            release,
            strategy: Strategy::Rolling(Rolling { max_parallel }),
            on_failure: OnFailure::Rollback,
            await_verdict: false,
            waves: Vec::new(),
        };
        Rollout::new(spec, targets)
    }

    /// How many steps the rollout has: for rolling, its batches.
    pub fn steps(&self) -> u32 {
        self.plan().map_or(0, |p| p.ends.len() as u32)
    }

    /// The wave step `step` belongs to (from 0).
    pub fn wave_of(&self, step: u32) -> u32 {
        self.plan().ok().and_then(|p| p.waves.get(step as usize).copied()).unwrap_or(0)
    }

    /// Each node's wave, in the order of the nodes.
    pub fn node_waves(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.nodes.len());
        for (i, size) in self.spec.waves.iter().enumerate() {
            out.extend(std::iter::repeat_n(i as u32, *size as usize));
        }
        out.resize(self.nodes.len(), 0);
        out
    }

    fn plan(&self) -> Result<plan::Plan, SpecError> {
        plan::plan(&self.spec.strategy, &self.spec.waves, self.nodes.len())
    }
}

#[cfg(test)]
mod tests;
