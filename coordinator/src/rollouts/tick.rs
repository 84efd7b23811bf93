//! Time and terms in the rollout controller's core: the tick (timed pauses
//! and progress deadlines end, nodes away past [`NODE_AWAY_GRACE`] fail,
//! agents that came back get their actions again) and a new term's resume
//! (every action in flight sent again, analyses measured again, queued
//! rollouts looked at).

use std::collections::BTreeSet;

use drover_deploy::rollout::{self, Input, NodeState, Phase};

use crate::core::fleet::{DeployAction, DeployKind};

use super::drive::{Driver, NODE_AWAY_GRACE};

fn moving(state: NodeState) -> bool {
    matches!(state, NodeState::Installing | NodeState::Checking | NodeState::Switching | NodeState::RollingBack)
}

impl Driver {
    /// Time passed: pauses and deadlines end, nodes away too long fail,
    /// and agents that came back get their actions again. `connected` is
    /// every agent with a live session.
    pub fn tick(&mut self, connected: &BTreeSet<String>, now_ms: u64) {
        let grace = NODE_AWAY_GRACE.as_millis() as u64;
        self.hooks_away(connected, grace, now_ms);
        let active: Vec<u64> =
            self.records.values().filter(|r| r.rollout.is_some() && !r.is_finished()).map(|r| r.id).collect();
        let mut failed = Vec::new();
        let mut back = Vec::new();
        for id in &active {
            let rec = &self.records[id];
            let machine = rec.rollout.as_ref().expect("filtered");
            let deadline = rec.started_ms.unwrap_or(rec.created_ms) + rec.deploy.progress_deadline.as_millis() as u64;
            if now_ms > deadline && matches!(machine.phase, Phase::Progressing | Phase::Paused) {
                let d = drover_client::duration::format(rec.deploy.progress_deadline);
                failed.push((*id, None, format!("its progress deadline of {d} passed")));
                continue;
            }
            for n in machine.nodes.iter().filter(|n| moving(n.state)) {
                if connected.contains(&n.name) {
                    if self.away.remove(&n.name).is_some() {
                        back.push((*id, n.name.clone()));
                    }
                } else {
                    let since = *self.away.entry(n.name.clone()).or_insert(now_ms);
                    if now_ms.saturating_sub(since) >= grace {
                        let why = format!("its agent has been away for {}s", NODE_AWAY_GRACE.as_secs());
                        failed.push((*id, Some(n.name.clone()), why));
                    }
                }
            }
        }
        for (id, node, why) in failed {
            match node {
                None => self.abort(id, why, now_ms),
                Some(node) => {
                    self.away.remove(&node);
                    self.apply(id, Input::NodeFailed { node, reason: why }, now_ms);
                }
            }
        }
        // An agent that came back may have lost what it was doing (it
        // restarted): send its actions again.
        for (id, node) in back {
            self.resend(id, &node, now_ms);
        }
        for id in active {
            if self.records[&id]
                .rollout
                .as_ref()
                .is_some_and(|m| matches!(m.hold, Some(rollout::Hold::Until(t)) if t <= now_ms))
            {
                self.apply(id, Input::Tick, now_ms);
            }
        }
    }

    /// Sends the action in flight on `node` of rollout `id` again, with a
    /// new number (so the old one's reports are stale).
    fn resend(&mut self, id: u64, node: &str, now_ms: u64) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        let Some(machine) = &rec.rollout else { return };
        let Some(n) = machine.node(node).filter(|n| moving(n.state)) else { return };
        let beside = matches!(rec.deploy.strategy, drover_pipeline::deploy::Strategy::BlueGreen);
        let kind = match n.state {
            NodeState::Installing | NodeState::Checking => {
                DeployKind::Install { release: rec.release.clone(), def: rec.deploy.service.clone(), beside }
            }
            NodeState::Switching => DeployKind::Switch { version: rec.release.version.clone() },
            _ => {
                let to = n.rollback_to.clone();
                let def = to
                    .as_ref()
                    .and_then(|v| self.catalog.get(&(rec.env_of(node).to_owned(), rec.service.clone(), v.clone())))
                    .map(|c| c.def.clone());
                DeployKind::Rollback { to, def }
            }
        };
        rec.seq += 1;
        rec.inflight.insert(node.to_string(), rec.seq);
        let what = kind.verb();
        let action = DeployAction { id: format!("{id}/{}", rec.seq), service: rec.service.clone(), kind };
        self.unsent.insert((id, node.to_string()), action);
        self.trace_action(id, node, what, now_ms);
        self.stage(id);
    }

    /// After a failover: every action in flight is sent again.
    pub fn resume(&mut self, now_ms: u64) {
        self.resend_hooks(now_ms);
        self.resume_analyses(now_ms);
        let moving_nodes: Vec<(u64, String)> = self
            .records
            .values()
            .filter(|r| !r.is_finished())
            .filter_map(|r| r.rollout.as_ref().map(|m| (r.id, m)))
            .flat_map(|(id, m)| m.nodes.iter().filter(|n| moving(n.state)).map(move |n| (id, n.name.clone())))
            .collect();
        for (id, node) in moving_nodes {
            self.resend(id, &node, now_ms);
        }
        let queued: Vec<u64> =
            self.records.values().filter(|r| r.rollout.is_none() && !r.is_finished()).map(|r| r.id).collect();
        for id in queued {
            self.queue_or_start(id);
        }
    }
}
