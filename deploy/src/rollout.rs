//! A rollout of one release over a set of nodes, as a pure state machine:
//! [`step`] takes the rollout, one [`Input`] and the wall-clock time, and
//! returns the new rollout with the [`Effect`]s the driver must carry out. It
//! does no IO and cannot fail; inputs that do not apply (a report about a
//! node that is not where the report says, an input in the wrong phase)
//! change nothing and yield no effects.
//!
//! Only the rolling strategy exists. Its nodes are taken in the order given,
//! in batches of `max_parallel`, and a batch starts only once every node
//! before it is healthy and its gate has passed. A node goes through
//!
//! ```text
//! Waiting ──▶ Installing ──NodeInstalled──▶ Checking ──NodeHealthy──▶ Healthy
//!                 │                            │                         │
//!                 └──────────── NodeFailed ────┴─────────────────────────┴──▶ Failed
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
//! Going straight back on every node at once (the deployments issue's
//! fast-track rollback) will be another way through the `RollingBack` phase.
//!
//! **Not yet.** Canary and blue-green ([`Strategy`]) are refused when a
//! rollout is made. The progress deadline needs no state here: when it
//! passes, the driver feeds [`Input::Abort`] with that reason. Resuming
//! after a coordinator failover (sending again the actions that were in
//! flight, as the run machine's `Recover` does) comes with the controller
//! that persists rollouts.

use serde::{Deserialize, Serialize};

/// How a release spreads over the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Rolling(Rolling),
    /// Not yet: steps that are shares of the nodes, with timed or manual
    /// pauses. [`Rollout::new`] refuses it.
    Canary,
    /// Not yet: the new release started beside the old on every node, then
    /// one switch of traffic. [`Rollout::new`] refuses it.
    BlueGreen,
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Rolling(_) => "rolling",
            Strategy::Canary => "canary",
            Strategy::BlueGreen => "blue_green",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rolling {
    /// The batch size: how many nodes are updated at once, and how many go
    /// back at once after a failure. A node is out of service while it is
    /// updated, so this is also the most nodes out of service at once; the
    /// deployments issue's `max_unavailable`, which tells the two apart once
    /// a node can start the new release beside the old, is not modelled yet.
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
        matches!(self, NodeState::Installing | NodeState::Checking | NodeState::Healthy | NodeState::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Waiting => "waiting",
            NodeState::Installing => "installing",
            NodeState::Checking => "checking",
            NodeState::Healthy => "healthy",
            NodeState::Failed => "failed",
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
    #[error("the {0} strategy is not implemented yet; use rolling")]
    NotYet(&'static str),
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
    /// The rollout reached a final phase.
    Finished(Phase),
}

impl Rollout {
    /// A rollout that has not started, every node waiting. Feed it
    /// [`Input::Start`] next.
    pub fn new(spec: Spec, targets: Vec<Target>) -> Result<Rollout, SpecError> {
        match &spec.strategy {
            Strategy::Rolling(r) if r.max_parallel == 0 => return Err(SpecError::NoParallelism),
            Strategy::Rolling(_) => {}
            other => return Err(SpecError::NotYet(other.as_str())),
        }
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
            abort_requested: false,
            message: String::new(),
            started_ms: None,
            finished_ms: None,
        })
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// How many steps the rollout has: for rolling, its batches.
    pub fn steps(&self) -> u32 {
        self.batch_size().map_or(0, |b| self.nodes.len().div_ceil(b) as u32)
    }

    /// The batch size, for the strategies this machine drives. A rollout
    /// read back from the store with another strategy is left alone.
    fn batch_size(&self) -> Option<usize> {
        match &self.spec.strategy {
            Strategy::Rolling(r) => Some((r.max_parallel as usize).max(1)),
            Strategy::Canary | Strategy::BlueGreen => None,
        }
    }

    /// The index just past the current step's last node.
    fn step_end(&self, batch: usize) -> usize {
        ((self.step as usize + 1) * batch).min(self.nodes.len())
    }

    /// Whether every node up to the end of the current step is healthy. A
    /// node of an earlier batch that failed since counts too: the next
    /// batch must not start while it is down.
    fn healthy_so_far(&self, batch: usize) -> bool {
        self.nodes[..self.step_end(batch)].iter().all(|n| n.state == NodeState::Healthy)
    }
}

/// Advances the rollout by one input. See the module docs for the phases.
pub fn step(mut ro: Rollout, input: Input, now_ms: u64) -> (Rollout, Vec<Effect>) {
    // The record is small (one entry per node), and comparing it is the
    // surest way to persist exactly when something changed.
    let before = ro.clone();
    let mut fx = Vec::new();
    if let Some(batch) = ro.batch_size()
        && !ro.phase.is_terminal()
    {
        apply(&mut ro, batch, input, now_ms, &mut fx);
    }
    if ro != before {
        fx.insert(0, Effect::Persist);
    }
    (ro, fx)
}

fn apply(ro: &mut Rollout, batch: usize, input: Input, now_ms: u64, fx: &mut Vec<Effect>) {
    let phase = ro.phase;
    match input {
        Input::Start if phase == Phase::Pending => {
            ro.phase = Phase::Progressing;
            ro.started_ms = Some(now_ms);
            start_step(ro, batch, fx);
        }
        Input::NodeInstalled { node } if phase.forward() => {
            if let Some(n) = node_in(ro, &node, &[NodeState::Installing]) {
                n.state = NodeState::Checking;
                fx.push(Effect::CheckHealth { node });
            }
        }
        Input::NodeHealthy { node } if phase.forward() => {
            if let Some(n) = node_in(ro, &node, &[NodeState::Checking]) {
                n.state = NodeState::Healthy;
                gate(ro, batch, now_ms, fx);
            }
        }
        Input::NodeFailed { node, reason } if phase.forward() => {
            let moving = [NodeState::Installing, NodeState::Checking, NodeState::Healthy];
            if let Some(n) = node_in(ro, &node, &moving) {
                n.state = NodeState::Failed;
                n.reason.clone_from(&reason);
                fail(ro, batch, format!("node {node} failed: {reason}"), now_ms, fx);
            }
        }
        Input::NodeFailed { node, reason } if phase == Phase::RollingBack => {
            if let Some(n) = node_in(ro, &node, &[NodeState::RollingBack]) {
                n.state = NodeState::RollbackFailed;
                n.reason = reason;
                rollback_next(ro, batch, now_ms, fx);
            }
        }
        Input::NodeRolledBack { node } if phase == Phase::RollingBack => {
            if let Some(n) = node_in(ro, &node, &[NodeState::RollingBack]) {
                n.state = NodeState::RolledBack;
                rollback_next(ro, batch, now_ms, fx);
            }
        }
        // A verdict counts only while one is awaited: a pass before the
        // nodes are healthy would skip the health gate, and one for another
        // step is stale. A verdict that arrives during a pause is dropped;
        // resuming asks again.
        Input::Verdict { step, verdict }
            if phase == Phase::Progressing && ro.spec.await_verdict && step == ro.step && ro.healthy_so_far(batch) =>
        {
            conclude(ro, batch, verdict, now_ms, fx);
        }
        Input::Abort { reason } if phase == Phase::Pending => {
            ro.abort_requested = true;
            ro.message = reason;
            finish(ro, Phase::Aborted, now_ms, fx);
        }
        Input::Abort { reason } if phase.forward() => {
            ro.abort_requested = true;
            ro.message = reason;
            begin_rollback(ro, batch, now_ms, fx);
        }
        Input::Pause if phase == Phase::Progressing => {
            ro.phase = Phase::Paused;
            ro.message = "paused".into();
        }
        Input::Resume if phase == Phase::Paused => {
            ro.phase = Phase::Progressing;
            ro.message.clear();
            // Nodes that failed while paused (with on_failure: pause) are
            // tried again; the rest of the step is where it was.
            for n in ro.nodes.iter_mut().filter(|n| n.state == NodeState::Failed) {
                n.state = NodeState::Installing;
                n.reason.clear();
                fx.push(Effect::Install { node: n.name.clone(), release: ro.spec.release.clone() });
            }
            gate(ro, batch, now_ms, fx);
        }
        _ => {}
    }
}

/// The named node, if it is in one of `states`; reports about a node that
/// is elsewhere (unknown, not started, already past that point) are stale.
fn node_in<'a>(ro: &'a mut Rollout, name: &str, states: &[NodeState]) -> Option<&'a mut Node> {
    ro.nodes.iter_mut().find(|n| n.name == name).filter(|n| states.contains(&n.state))
}

/// Installs the current step's nodes.
fn start_step(ro: &mut Rollout, batch: usize, fx: &mut Vec<Effect>) {
    let (begin, end) = (ro.step as usize * batch, ro.step_end(batch));
    for n in &mut ro.nodes[begin..end] {
        n.state = NodeState::Installing;
        fx.push(Effect::Install { node: n.name.clone(), release: ro.spec.release.clone() });
    }
}

/// The current step's gate, once every node so far is healthy: ask for an
/// outside verdict, or let health alone be the verdict.
fn gate(ro: &mut Rollout, batch: usize, now_ms: u64, fx: &mut Vec<Effect>) {
    if ro.phase != Phase::Progressing || !ro.healthy_so_far(batch) {
        return;
    }
    if ro.spec.await_verdict {
        fx.push(Effect::AwaitVerdict { step: ro.step });
    } else {
        conclude(ro, batch, Verdict::Pass, now_ms, fx);
    }
}

fn conclude(ro: &mut Rollout, batch: usize, verdict: Verdict, now_ms: u64, fx: &mut Vec<Effect>) {
    match verdict {
        Verdict::Pass if ro.step + 1 < ro.steps() => {
            ro.step += 1;
            start_step(ro, batch, fx);
        }
        Verdict::Pass => finish(ro, Phase::Succeeded, now_ms, fx),
        Verdict::Fail { reason } => fail(ro, batch, format!("step {} failed its gate: {reason}", ro.step), now_ms, fx),
        Verdict::Inconclusive { reason } => {
            ro.phase = Phase::Paused;
            ro.message = format!("step {}'s verdict is inconclusive: {reason}", ro.step);
        }
    }
}

/// A node or a gate failed: go back or hold, as the spec says.
fn fail(ro: &mut Rollout, batch: usize, message: String, now_ms: u64, fx: &mut Vec<Effect>) {
    ro.message = message;
    match ro.spec.on_failure {
        OnFailure::Rollback => begin_rollback(ro, batch, now_ms, fx),
        OnFailure::Pause => ro.phase = Phase::Paused,
    }
}

fn begin_rollback(ro: &mut Rollout, batch: usize, now_ms: u64, fx: &mut Vec<Effect>) {
    ro.phase = Phase::RollingBack;
    for n in ro.nodes.iter_mut().filter(|n| n.state.touched()) {
        n.state = NodeState::RollbackQueued;
    }
    rollback_next(ro, batch, now_ms, fx);
}

/// Sends nodes back, last updated first, until `batch` are going back at
/// once; finishes when none is left.
fn rollback_next(ro: &mut Rollout, batch: usize, now_ms: u64, fx: &mut Vec<Effect>) {
    let mut going = ro.nodes.iter().filter(|n| n.state == NodeState::RollingBack).count();
    for n in ro.nodes.iter_mut().rev().filter(|n| n.state == NodeState::RollbackQueued) {
        if going == batch {
            break;
        }
        n.state = NodeState::RollingBack;
        fx.push(Effect::Rollback { node: n.name.clone(), to: n.rollback_to.clone() });
        going += 1;
    }
    if going == 0 {
        let end = if ro.nodes.iter().any(|n| n.state == NodeState::RollbackFailed) {
            Phase::Failed
        } else if ro.abort_requested {
            Phase::Aborted
        } else {
            Phase::RolledBack
        };
        finish(ro, end, now_ms, fx);
    }
}

fn finish(ro: &mut Rollout, phase: Phase, now_ms: u64, fx: &mut Vec<Effect>) {
    ro.phase = phase;
    ro.finished_ms = Some(now_ms);
    fx.push(Effect::Finished(phase));
}

#[cfg(test)]
mod tests;
