//! [`step`]: one input applied to a rollout, following its [`Plan`].

use super::plan::{Plan, plan};
use super::{Effect, Hold, Input, NodeState, OnFailure, Pause, Phase, Rollout, Verdict};

/// Advances the rollout by one input. See the module docs for the phases.
pub fn step(mut ro: Rollout, input: Input, now_ms: u64) -> (Rollout, Vec<Effect>) {
    // The record is small (one entry per node), and comparing it is the
    // surest way to persist exactly when something changed.
    let before = ro.clone();
    let mut fx = Vec::new();
    // A record whose strategy no longer makes a plan (read back from a
    // store written by another version) is left alone.
    if let Ok(plan) = plan(&ro.spec.strategy, &ro.spec.waves, ro.nodes.len())
        && !ro.phase.is_terminal()
        && !ro.nodes.is_empty()
    {
        apply(&mut ro, &plan, input, now_ms, &mut fx);
    }
    if ro != before {
        fx.insert(0, Effect::Persist);
    }
    (ro, fx)
}

fn apply(ro: &mut Rollout, plan: &Plan, input: Input, now_ms: u64, fx: &mut Vec<Effect>) {
    let phase = ro.phase;
    match input {
        Input::Start if phase == Phase::Pending => {
            ro.phase = Phase::Progressing;
            ro.started_ms = Some(now_ms);
            start_step(ro, plan, fx);
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
                gate(ro, plan, now_ms, fx);
            }
        }
        Input::NodeSwitched { node } if phase.forward() => {
            if let Some(n) = node_in(ro, &node, &[NodeState::Switching]) {
                n.state = NodeState::Switched;
                if ro.nodes.iter().all(|n| n.state == NodeState::Switched) {
                    finish(ro, Phase::Succeeded, now_ms, fx);
                }
            }
        }
        Input::NodeFailed { node, reason } if phase.forward() => {
            let moving = [
                NodeState::Installing,
                NodeState::Checking,
                NodeState::Healthy,
                NodeState::Switching,
                NodeState::Switched,
            ];
            if let Some(n) = node_in(ro, &node, &moving) {
                n.state = NodeState::Failed;
                n.reason.clone_from(&reason);
                // A failure ends any pause: there is nothing to wait for.
                ro.hold = None;
                fail(ro, plan, format!("node {node} failed: {reason}"), now_ms, fx);
            }
        }
        Input::NodeFailed { node, reason } if phase == Phase::RollingBack => {
            if let Some(n) = node_in(ro, &node, &[NodeState::RollingBack]) {
                n.state = NodeState::RollbackFailed;
                n.reason = reason;
                rollback_next(ro, plan, now_ms, fx);
            }
        }
        Input::NodeRolledBack { node } if phase == Phase::RollingBack => {
            if let Some(n) = node_in(ro, &node, &[NodeState::RollingBack]) {
                n.state = NodeState::RolledBack;
                rollback_next(ro, plan, now_ms, fx);
            }
        }
        // A verdict counts only while one is awaited: a pass before the
        // nodes are healthy would skip the health gate, and one for another
        // step is stale. A verdict that arrives during a pause is dropped;
        // resuming asks again.
        Input::Verdict { step, verdict }
            if phase == Phase::Progressing
                && ro.spec.await_verdict
                && step == ro.step
                && ro.hold.is_none()
                && !switching(ro)
                && healthy_so_far(ro, plan) =>
        {
            conclude(ro, plan, verdict, now_ms, fx);
        }
        Input::Tick if phase == Phase::Progressing => {
            if let Some(Hold::Until(until)) = ro.hold
                && now_ms >= until
            {
                ro.hold = None;
                ro.message.clear();
                advance(ro, plan, fx);
            }
        }
        Input::Promote { full } if phase == Phase::Progressing && ro.hold.is_some() => {
            ro.hold = None;
            ro.message.clear();
            ro.promoted_full |= full;
            advance(ro, plan, fx);
        }
        Input::Abort { reason } if phase == Phase::Pending => {
            ro.abort_requested = true;
            ro.message = reason;
            finish(ro, Phase::Aborted, now_ms, fx);
        }
        Input::Abort { reason } if phase.forward() => {
            ro.abort_requested = true;
            ro.hold = None;
            ro.message = reason;
            begin_rollback(ro, plan, now_ms, fx);
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
            match ro.hold {
                // Still pausing: say so again, as when it began.
                Some(Hold::Until(until_ms)) => fx.push(Effect::WaitUntil { step: ro.step, until_ms }),
                Some(Hold::Promote) => fx.push(Effect::AwaitPromote { step: ro.step }),
                None => gate(ro, plan, now_ms, fx),
            }
        }
        _ => {}
    }
}

/// The named node, if it is in one of `states`; reports about a node that
/// is elsewhere (unknown, not started, already past that point) are stale.
fn node_in<'a>(ro: &'a mut Rollout, name: &str, states: &[NodeState]) -> Option<&'a mut super::Node> {
    ro.nodes.iter_mut().find(|n| n.name == name).filter(|n| states.contains(&n.state))
}

/// Whether every node up to the end of the current step is healthy. A
/// node of an earlier step that failed since counts too: the next step
/// must not start while it is down.
fn healthy_so_far(ro: &Rollout, plan: &Plan) -> bool {
    ro.nodes[..plan.end(ro.step)].iter().all(|n| n.state == NodeState::Healthy)
}

/// Whether a blue-green switch has begun.
fn switching(ro: &Rollout) -> bool {
    ro.nodes.iter().any(|n| matches!(n.state, NodeState::Switching | NodeState::Switched))
}

/// Installs every node up to the end of the current step that has not
/// started (after a full promotion, every node left).
fn start_step(ro: &mut Rollout, plan: &Plan, fx: &mut Vec<Effect>) {
    let end = plan.end(ro.step);
    for n in ro.nodes[..end].iter_mut().filter(|n| n.state == NodeState::Waiting) {
        n.state = NodeState::Installing;
        fx.push(Effect::Install { node: n.name.clone(), release: ro.spec.release.clone() });
    }
}

/// The current step's gate, once every node so far is healthy: ask for an
/// outside verdict, or let health alone be the verdict.
fn gate(ro: &mut Rollout, plan: &Plan, now_ms: u64, fx: &mut Vec<Effect>) {
    if ro.phase != Phase::Progressing || ro.hold.is_some() || switching(ro) || !healthy_so_far(ro, plan) {
        return;
    }
    if ro.spec.await_verdict {
        fx.push(Effect::AwaitVerdict { step: ro.step });
    } else {
        conclude(ro, plan, Verdict::Pass, now_ms, fx);
    }
}

fn conclude(ro: &mut Rollout, plan: &Plan, verdict: Verdict, now_ms: u64, fx: &mut Vec<Effect>) {
    match verdict {
        Verdict::Pass if plan.switch => {
            // Every node's new release is healthy: switch them all.
            for n in &mut ro.nodes {
                n.state = NodeState::Switching;
                fx.push(Effect::Switch { node: n.name.clone() });
            }
        }
        Verdict::Pass if (ro.step as usize) + 1 < plan.ends.len() => {
            match plan.pauses[ro.step as usize].filter(|_| !ro.promoted_full) {
                Some(Pause::For(ms)) => {
                    let until_ms = now_ms.saturating_add(ms);
                    ro.hold = Some(Hold::Until(until_ms));
                    ro.message = format!("step {} done; pausing until {until_ms}", ro.step);
                    fx.push(Effect::WaitUntil { step: ro.step, until_ms });
                }
                Some(Pause::Manual) => {
                    ro.hold = Some(Hold::Promote);
                    ro.message = format!("step {} done; waiting for a promotion", ro.step);
                    fx.push(Effect::AwaitPromote { step: ro.step });
                }
                None => advance(ro, plan, fx),
            }
        }
        Verdict::Pass => finish(ro, Phase::Succeeded, now_ms, fx),
        Verdict::Fail { reason } => fail(ro, plan, format!("step {} failed its gate: {reason}", ro.step), now_ms, fx),
        Verdict::Inconclusive { reason } => {
            ro.phase = Phase::Paused;
            ro.message = format!("step {}'s verdict is inconclusive: {reason}", ro.step);
        }
    }
}

/// On to the next step (after a full promotion, the last).
fn advance(ro: &mut Rollout, plan: &Plan, fx: &mut Vec<Effect>) {
    let last = plan.ends.len().saturating_sub(1) as u32;
    ro.step = if ro.promoted_full { last } else { (ro.step + 1).min(last) };
    start_step(ro, plan, fx);
}

/// A node or a gate failed: go back or hold, as the spec says.
fn fail(ro: &mut Rollout, plan: &Plan, message: String, now_ms: u64, fx: &mut Vec<Effect>) {
    ro.message = message;
    match ro.spec.on_failure {
        OnFailure::Rollback => begin_rollback(ro, plan, now_ms, fx),
        OnFailure::Pause => ro.phase = Phase::Paused,
    }
}

fn begin_rollback(ro: &mut Rollout, plan: &Plan, now_ms: u64, fx: &mut Vec<Effect>) {
    ro.phase = Phase::RollingBack;
    for n in ro.nodes.iter_mut().filter(|n| n.state.touched()) {
        n.state = NodeState::RollbackQueued;
    }
    rollback_next(ro, plan, now_ms, fx);
}

/// Sends nodes back, last updated first, until as many as the plan allows
/// are going back at once; finishes when none is left.
fn rollback_next(ro: &mut Rollout, plan: &Plan, now_ms: u64, fx: &mut Vec<Effect>) {
    let batch = plan.back.max(1);
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
    ro.hold = None;
    ro.finished_ms = Some(now_ms);
    fx.push(Effect::Finished(phase));
}
