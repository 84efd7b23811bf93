//! `exec` metrics (issue 17): a command that judges a rollout by its exit
//! code, run on a node of the rollout, never on the leader. Each
//! measurement is a hook action (`DeployKind::Hook` at the point
//! `analysis`): the node's agent runs the command from the new release's
//! root, as the deploy's hooks run (the agent's `--run-as` user, a clean
//! environment, the service's `env`), and its report carries the exit
//! code, which is the measured value.
//!
//! The analysis task asks for a measurement ([`ask`]) through the
//! controller's loop, which owns the driver: [`Driver::probe`] picks the
//! node (the first the rollout updated that is healthy, else its first)
//! and stages the action, and [`Driver::probe_report`] answers the task
//! when the node reports. Probes live in the leader's memory only: a new
//! term starts every analysis again, and an answer that never comes is
//! inconclusive once the command's timeout and [`SLACK`] have passed.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_deploy::rollout::NodeState;
use drover_pipeline::expr::Value;
use tokio::sync::{mpsc, oneshot};

use super::drive::Driver;
use crate::core::fleet::{DeployAction, DeployKind, DeployReport, DeployState};

/// How long past a command's timeout its answer is waited for: the
/// release may have to be fetched and installed first, and the node's
/// agent may be reconnecting.
pub const SLACK: Duration = Duration::from_secs(30);
/// The point of a probe's hook action, the steps' `DROVER_HOOK`.
pub const POINT: &str = "analysis";

/// An analysis task's request for one measurement of an `exec` metric.
pub struct Ask {
    pub rollout: u64,
    pub metric: String,
    pub command: String,
    pub timeout: Duration,
    pub reply: oneshot::Sender<Result<Value, String>>,
}

/// A probe sent to a node, waiting for its report.
pub struct Probe {
    node: String,
    metric: String,
    reply: oneshot::Sender<Result<Value, String>>,
}

/// Actions outside the rollout machine, by (rollout, action number):
/// probes in flight, a baseline's restarts (`super::baseline`), and those
/// not yet taken by their node's agent.
#[derive(Default)]
pub struct Probes {
    pub(super) waiting: BTreeMap<(u64, u64), Probe>,
    /// A baseline's restarts in flight: the node of each.
    pub(super) restarts: BTreeMap<(u64, u64), String>,
    pub(super) unsent: BTreeMap<(u64, u64), (String, DeployAction)>,
}

impl Probes {
    /// Forgets the probes whose task stopped waiting (its run is over).
    pub(super) fn forget_abandoned(&mut self) {
        self.waiting.retain(|_, p| !p.reply.is_closed());
        let (waiting, restarts) = (&self.waiting, &self.restarts);
        self.unsent.retain(|key, _| waiting.contains_key(key) || restarts.contains_key(key));
    }
}

/// Measures `command` on a node of rollout `rollout`: its exit code.
pub async fn ask(
    tx: &mpsc::UnboundedSender<Ask>,
    rollout: u64,
    metric: &str,
    command: &str,
    timeout: Duration,
) -> Result<Value, String> {
    let (reply, answer) = oneshot::channel();
    let ask = Ask { rollout, metric: metric.to_owned(), command: command.to_owned(), timeout, reply };
    tx.send(ask).map_err(|_| "the rollout controller stopped".to_owned())?;
    match tokio::time::timeout(timeout + SLACK, answer).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err("the command's rollout ended before it answered".to_owned()),
        Err(_) => Err(format!(
            "no answer from the node within {}s (the command's timeout and {}s to reach the node)",
            (timeout + SLACK).as_secs(),
            SLACK.as_secs()
        )),
    }
}

/// What a probe's report measured: the exit code, or why there is none.
fn measured(r: &DeployReport) -> Result<Value, String> {
    match (r.state, r.exit_code) {
        (DeployState::HookPassed, _) => Ok(Value::Number(0.0)),
        (DeployState::HookFailed, Some(code)) => Ok(Value::Number(f64::from(code))),
        (_, _) => Err(format!("the command gave no exit code on {}: {}", r.node, r.message)),
    }
}

impl Driver {
    /// An `exec` metric's measurement asked for: its action is staged for
    /// the node, or the ask is answered at once when the rollout cannot
    /// take it.
    pub fn probe(&mut self, ask: Ask) {
        self.probes.forget_abandoned();
        let Some(rec) = self.records.get_mut(&ask.rollout).filter(|r| !r.is_finished()) else {
            let _ = ask.reply.send(Err(format!("rollout {} is over", ask.rollout)));
            return;
        };
        let nodes = rec.rollout.as_ref().map(|m| m.nodes.as_slice()).unwrap_or_default();
        let updated = nodes.iter().find(|n| matches!(n.state, NodeState::Healthy | NodeState::Switched));
        let Some(node) = updated.or(nodes.first()).map(|n| n.name.clone()) else {
            let _ = ask.reply.send(Err("the rollout has no node to run the command on".to_owned()));
            return;
        };
        rec.seq += 1;
        let (id, seq) = (rec.id, rec.seq);
        let kind = DeployKind::Hook {
            point: POINT.to_owned(),
            steps: vec![(ask.metric.clone(), ask.command)],
            env: rec.deploy.service.env.clone(),
            release: rec.release.clone(),
            timeout: ask.timeout,
        };
        let action = DeployAction { id: format!("{id}/{seq}"), service: rec.service.clone(), kind };
        self.log(id, format!("── analysis {} on {node} ──\n", ask.metric).into_bytes());
        self.probes.unsent.insert((id, seq), (node.clone(), action));
        self.probes.waiting.insert((id, seq), Probe { node, metric: ask.metric, reply: ask.reply });
        // The action number is kept, so that no later action reuses it.
        self.stage(id);
    }

    /// Takes a report that answers a probe; true when it did.
    pub(super) fn probe_report(&mut self, r: &DeployReport) -> bool {
        let key = (r.rollout, r.seq);
        if !self.is_probe(r.rollout, r.seq, &r.node) {
            return false;
        }
        let probe = self.probes.waiting.remove(&key).expect("looked up");
        self.probes.unsent.remove(&key);
        let answer = measured(r);
        let said = match &answer {
            Ok(Value::Number(code)) => format!("exit code {code}"),
            Ok(other) => other.to_string(),
            Err(why) => why.clone(),
        };
        self.log(r.rollout, format!("── analysis {} on {}: {said} ──\n", probe.metric, r.node).into_bytes());
        let _ = probe.reply.send(answer);
        true
    }

    /// Whether action `{rollout}/{seq}` from `node` is a probe's, whose
    /// output goes to the deploy job's log.
    pub(super) fn is_probe(&self, rollout: u64, seq: u64, node: &str) -> bool {
        self.probes.waiting.get(&(rollout, seq)).is_some_and(|p| p.node == node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: DeployState, exit_code: Option<i32>) -> DeployReport {
        DeployReport {
            node: "n1".into(),
            rollout: 1,
            seq: 2,
            service: "web".into(),
            state,
            message: "step 1 (smoke) timed out".into(),
            version: String::new(),
            exit_code,
        }
    }

    #[test]
    fn a_probes_report_measures_its_exit_code() {
        // (case, state, exit code, the value or the start of the reason)
        type Case = (&'static str, DeployState, Option<i32>, Result<f64, &'static str>);
        let cases: [Case; 4] = [
            ("passed", DeployState::HookPassed, Some(0), Ok(0.0)),
            ("exited 3", DeployState::HookFailed, Some(3), Ok(3.0)),
            ("killed or timed out", DeployState::HookFailed, None, Err("the command gave no exit code on n1")),
            ("not a hook's answer", DeployState::Failed, None, Err("the command gave no exit code")),
        ];
        for (case, state, code, want) in cases {
            match (measured(&report(state, code)), want) {
                (Ok(Value::Number(got)), Ok(want)) => assert_eq!(got, want, "{case}"),
                (Err(why), Err(want)) => assert!(why.starts_with(want), "{case}: {why}"),
                (got, want) => panic!("{case}: {got:?}, want {want:?}"),
            }
        }
    }
}
