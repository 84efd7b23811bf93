//! A fresh baseline for a canary compared with one (issue 17, Kayenta's
//! rule): when a step of a rollout whose analysis compares a metric with a
//! baseline installs its canary nodes, as many nodes still on the current
//! version start it afresh at the same moment (`DeployKind::Restart`: a
//! new start beside the running one, health-checked, then live), so the
//! canary is judged against a baseline of the same size and the same age,
//! not against the long-running fleet. They are the nodes the step's
//! analysis splits off as its baseline (`analysis.rs`: the last waiting
//! nodes, as many as the canary has). The restarts are outside the
//! rollout machine: their reports go to the deploy job's log, and a
//! baseline node that could not start afresh is compared as it runs.
//! They live in the leader's memory, as probes do (`probe.rs`).

use drover_deploy::rollout::NodeState;

use super::drive::Driver;
use crate::core::fleet::{DeployAction, DeployKind, DeployReport, DeployState};

impl Driver {
    /// Rollout `id` just sent a step's canary installs: its baseline
    /// starts afresh, if its analysis compares a metric with one.
    pub(super) fn restart_baseline(&mut self, id: u64) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        let compared = rec
            .deploy
            .analysis
            .as_ref()
            .is_some_and(|a| a.run.at_steps() && a.metrics.iter().any(|m| m.compare.is_some()));
        let Some(machine) = rec.rollout.as_ref().filter(|_| compared && !rec.remove && !rec.fast_track) else {
            return;
        };
        let canary = machine.nodes.iter().filter(|n| n.state != NodeState::Waiting).count();
        let waiting: Vec<_> = machine.nodes.iter().filter(|n| n.state == NodeState::Waiting).collect();
        let baseline: Vec<(String, String)> = waiting[waiting.len().saturating_sub(canary)..]
            .iter()
            .filter_map(|n| Some((n.name.clone(), n.rollback_to.clone()?)))
            .collect();
        let mut lines = String::new();
        for (node, version) in baseline {
            rec.seq += 1;
            let seq = rec.seq;
            let action = DeployAction {
                id: format!("{id}/{seq}"),
                service: rec.service.clone(),
                kind: DeployKind::Restart { version: version.clone() },
            };
            lines.push_str(&format!("── baseline: {node} starts {version} afresh ──\n"));
            self.probes.restarts.insert((id, seq), node.clone());
            self.probes.unsent.insert((id, seq), (node, action));
        }
        if !lines.is_empty() {
            self.log(id, lines.into_bytes());
        }
    }

    /// Takes a report that answers a baseline's restart; true when it did.
    pub(super) fn restart_report(&mut self, r: &DeployReport) -> bool {
        let key = (r.rollout, r.seq);
        if self.probes.restarts.get(&key) != Some(&r.node) {
            return false;
        }
        self.probes.restarts.remove(&key);
        self.probes.unsent.remove(&key);
        let said = match r.state {
            DeployState::Healthy => format!("started {} afresh", r.version),
            _ => format!("could not start afresh, so it is compared as it runs: {}", r.message),
        };
        self.log(r.rollout, format!("── baseline: {} {said} ──\n", r.node).into_bytes());
        true
    }
}
