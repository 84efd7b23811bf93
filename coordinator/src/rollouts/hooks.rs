//! A deploy's `hooks:`, steps run on nodes at fixed points of its rollout
//! (each a `DeployKind::Hook` action, run by the node's agent from the
//! release's root):
//!
//! - `before`: once, on the rollout's first node, before the first batch;
//!   the rollout starts only if it passes (a failure ends the rollout
//!   before any node is touched);
//! - `after_batch`: on each node once it serves the new release (after its
//!   health check passed; blue-green: after its switch). The node's report
//!   is held until the hook ends: a pass lets it through, a failure fails
//!   the node as a failed health check does;
//! - `after`: once, on the first node, after the rollout succeeded; a
//!   failure fails the deploy job (the nodes keep the release);
//! - `on_failure`: once, on the first node, after the rollout went back.
//!
//! The deploy job's run is told how the rollout ended only after its last
//! hook. Hook output goes to the deploy job's log (`drover logs RUN JOB`),
//! each hook between a line that names it and one that says how it ended.
//! After a coordinator failover a hook in flight is sent again, so a hook
//! may run twice, as a retried job does.

use std::collections::BTreeMap;

use drover_deploy::rollout::{Input, NodeState, Phase};
use serde::{Deserialize, Serialize};

use super::drive::Driver;
use super::records::JobRef;
use crate::core::fleet::{DeployAction, DeployKind, DeployReport, DeployState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Point {
    Before,
    AfterBatch,
    After,
    OnFailure,
}

impl Point {
    pub fn as_str(self) -> &'static str {
        match self {
            Point::Before => "before",
            Point::AfterBatch => "after_batch",
            Point::After => "after",
            Point::OnFailure => "on_failure",
        }
    }
}

/// A hook in flight: where, and its action's number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub point: Point,
    pub node: String,
    pub seq: u64,
    /// For `after_batch`: the report held until the hook ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<DeployState>,
    /// For a rollout-level hook: when it was sent, for nodes away.
    #[serde(default)]
    pub sent_ms: u64,
}

/// A piece of a hook's output, for its deploy job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOut {
    pub job: JobRef,
    pub data: Vec<u8>,
}

impl Driver {
    fn hook_steps(&self, id: u64, point: Point) -> Vec<(String, String)> {
        let Some(rec) = self.records.get(&id) else { return Vec::new() };
        let h = &rec.deploy.hooks;
        let steps = match point {
            Point::Before => &h.before,
            Point::AfterBatch => &h.after_batch,
            Point::After => &h.after,
            Point::OnFailure => &h.on_failure,
        };
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone().unwrap_or_else(|| format!("{}", i + 1)), s.run.clone()))
            .collect()
    }

    /// Sends hook `point` to `node`; false when the deploy has none there.
    fn send_hook(&mut self, id: u64, point: Point, node: &str, held: Option<DeployState>, now_ms: u64) -> bool {
        let steps = self.hook_steps(id, point);
        if steps.is_empty() {
            return false;
        }
        let Some(rec) = self.records.get_mut(&id) else { return false };
        rec.seq += 1;
        let seq = rec.seq;
        let env = rec.deploy.service.env.clone();
        let kind = DeployKind::Hook {
            point: point.as_str().to_string(),
            steps,
            env,
            release: rec.release.clone(),
            timeout: rec.deploy.progress_deadline,
        };
        let pending = Pending { point, node: node.to_string(), seq, held, sent_ms: now_ms };
        match point {
            Point::AfterBatch => {
                rec.inflight.insert(node.to_string(), seq);
                rec.batch_hooks.insert(node.to_string(), pending);
            }
            _ => rec.hook = Some(pending),
        }
        let action = DeployAction { id: format!("{id}/{seq}"), service: rec.service.clone(), kind };
        let line = format!("── hook {} on {node} ──\n", point.as_str());
        self.log(id, line.into_bytes());
        self.unsent.insert((id, node.to_string()), action);
        self.trace_action(id, node, &format!("hook {}", point.as_str()), now_ms);
        self.stage(id);
        true
    }

    /// Appends to rollout `id`'s deploy job's log, or, with no job, to the
    /// hook log its record keeps (written with the record, at the latest
    /// when the hook reports).
    pub(super) fn log(&mut self, id: u64, data: Vec<u8>) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        match rec.job.clone() {
            Some(job) => self.logs.push(LogOut { job, data }),
            None => keep_tail(&mut rec.hook_log, &String::from_utf8_lossy(&data), MAX_HOOK_LOG),
        }
    }

    /// Output of hook action `{rollout}/{seq}` from `node`.
    pub fn hook_output(&mut self, rollout: u64, seq: u64, node: &str, data: Vec<u8>) {
        let Some(rec) = self.records.get(&rollout) else { return };
        let current = rec.hook.as_ref().is_some_and(|h| h.seq == seq && h.node == node)
            || rec.batch_hooks.get(node).is_some_and(|h| h.seq == seq)
            || self.is_probe(rollout, seq, node);
        if current {
            self.log(rollout, data);
        }
    }

    /// Starts the machine, or first the `before` hook on its first node.
    pub(super) fn start_or_hook(&mut self, id: u64, now_ms: u64) {
        let first = self
            .records
            .get(&id)
            .and_then(|r| r.rollout.as_ref())
            .and_then(|m| m.nodes.first())
            .map(|n| n.name.clone());
        if let Some(first) = first
            && self.send_hook(id, Point::Before, &first, None, now_ms)
        {
            return;
        }
        self.apply(id, Input::Start, now_ms);
    }

    /// The machine finished: the `after` or `on_failure` hook, if the
    /// deploy has one (then the run is told once it ends). True when a hook
    /// was sent.
    pub(super) fn end_hook(&mut self, id: u64, phase: Phase, now_ms: u64) -> bool {
        let Some(machine) = self.records.get(&id).and_then(|r| r.rollout.as_ref()) else { return false };
        let touched = machine.nodes.iter().any(|n| n.state != NodeState::Waiting);
        let Some(first) = machine.nodes.first().map(|n| n.name.clone()) else { return false };
        let point = match phase {
            Phase::Succeeded => Point::After,
            Phase::RolledBack | Phase::Failed => Point::OnFailure,
            Phase::Aborted if touched => Point::OnFailure,
            _ => return false,
        };
        self.send_hook(id, point, &first, None, now_ms)
    }

    /// Takes a report that answers a hook, or holds a node's report for its
    /// `after_batch` hook. True when the report was taken here.
    pub(super) fn hook_report(&mut self, r: &DeployReport, now_ms: u64) -> bool {
        let id = r.rollout;
        let Some(rec) = self.records.get_mut(&id) else { return false };
        let passed = match r.state {
            DeployState::HookPassed => true,
            DeployState::HookFailed => false,
            // A node that serves the new release: its after_batch hook first.
            DeployState::Healthy | DeployState::Switched => {
                let beside = matches!(rec.deploy.strategy, drover_pipeline::deploy::Strategy::BlueGreen);
                let serves = (r.state == DeployState::Switched) == beside;
                let forward =
                    rec.rollout.as_ref().is_some_and(|m| matches!(m.phase, Phase::Progressing | Phase::Paused));
                if serves && forward && !rec.deploy.hooks.after_batch.is_empty() {
                    self.unsent.remove(&(id, r.node.clone()));
                    self.trace_report(id, &r.node, r.state, &r.message, now_ms);
                    return self.send_hook(id, Point::AfterBatch, &r.node, Some(r.state), now_ms);
                }
                return false;
            }
            _ => return false,
        };
        let verdict = if passed { "passed".to_string() } else { format!("failed: {}", r.message) };
        let batch = rec.batch_hooks.get(&r.node).filter(|h| h.seq == r.seq).cloned();
        let whole = rec.hook.clone().filter(|h| h.seq == r.seq && h.node == r.node);
        self.unsent.remove(&(id, r.node.clone()));
        self.trace_report(
            id,
            &r.node,
            if passed { DeployState::HookPassed } else { DeployState::Failed },
            &r.message,
            now_ms,
        );
        if let Some(h) = batch {
            self.log(id, format!("── hook after_batch on {}: {verdict} ──\n", r.node).into_bytes());
            let rec = self.records.get_mut(&id).expect("exists");
            rec.batch_hooks.remove(&r.node);
            let node = r.node.clone();
            let held = h.held.unwrap_or(DeployState::Healthy);
            if passed {
                let report = DeployReport { state: held, seq: r.seq, ..r.clone() };
                self.feed(report, now_ms);
            } else {
                let reason = format!("its after_batch hook failed: {}", r.message);
                self.apply(id, Input::NodeFailed { node, reason }, now_ms);
            }
        } else if let Some(h) = whole {
            self.log(id, format!("── hook {} on {}: {verdict} ──\n", h.point.as_str(), r.node).into_bytes());
            self.records.get_mut(&id).expect("exists").hook = None;
            self.whole_hook_done(id, h.point, passed, &r.message, now_ms);
        }
        self.stage(id);
        true
    }

    /// A rollout-level hook ended.
    fn whole_hook_done(&mut self, id: u64, point: Point, passed: bool, message: &str, now_ms: u64) {
        match point {
            Point::Before if passed => {
                self.apply(id, Input::Start, now_ms);
            }
            Point::Before => {
                // Abort from Pending finishes it at once, and tells the run
                // (no on_failure hook: nothing was touched).
                let reason = format!("its before hook failed: {message}");
                self.apply(id, Input::Abort { reason }, now_ms);
            }
            Point::After | Point::OnFailure => {
                if !passed && let Some(rec) = self.records.get_mut(&id) {
                    rec.hook_failed = Some(format!("its {} hook failed: {message}", point.as_str()));
                }
                self.tell(id);
                self.free(id);
            }
            Point::AfterBatch => {}
        }
    }

    /// Rollout-level hooks whose node is away: failed once away too long.
    pub(super) fn hooks_away(&mut self, connected: &std::collections::BTreeSet<String>, grace_ms: u64, now_ms: u64) {
        let stuck: Vec<(u64, Pending)> = self
            .records
            .values()
            .filter_map(|r| r.hook.clone().map(|h| (r.id, h)))
            .filter(|(_, h)| !connected.contains(&h.node) && now_ms.saturating_sub(h.sent_ms) >= grace_ms)
            .collect();
        for (id, h) in stuck {
            let why = format!("its agent {} went away", h.node);
            self.log(id, format!("── hook {} on {}: failed: {why} ──\n", h.point.as_str(), h.node).into_bytes());
            if let Some(rec) = self.records.get_mut(&id) {
                rec.hook = None;
            }
            self.whole_hook_done(id, h.point, false, &why, now_ms);
            self.stage(id);
        }
    }

    /// After a failover: rollout-level hooks in flight are sent again.
    pub(super) fn resend_hooks(&mut self, now_ms: u64) {
        let pending: Vec<(u64, Pending)> =
            self.records.values().filter_map(|r| r.hook.clone().map(|h| (r.id, h))).collect();
        for (id, h) in pending {
            self.send_hook(id, h.point, &h.node, None, now_ms);
        }
    }
}

/// Hooks in flight per node, for `RolloutRecord::batch_hooks`.
pub type BatchHooks = BTreeMap<String, Pending>;

/// The most hook output a rollout with no job keeps, in bytes: its tail.
pub const MAX_HOOK_LOG: usize = 16 * 1024;

/// Appends `text` to `log`, keeping only the last `max` bytes (cut at a
/// character boundary, after a line's end when there is one).
fn keep_tail(log: &mut String, text: &str, max: usize) {
    log.push_str(text);
    if log.len() <= max {
        return;
    }
    let mut cut = log.len() - max;
    while !log.is_char_boundary(cut) {
        cut += 1;
    }
    if let Some(nl) = log[cut..].find('\n') {
        cut += nl + 1;
    }
    log.drain(..cut);
}

#[cfg(test)]
mod tests {
    use super::keep_tail;

    #[test]
    fn the_hook_log_keeps_its_tail_from_a_lines_start() {
        // (case, log before, text added, max, log after)
        let cases = [
            ("fits", "a\n", "b\n", 8, "a\nb\n"),
            ("cut after a line's end", "one\ntwo\n", "three\n", 8, "three\n"),
            ("no line end to cut at", "", "abcdefghij", 4, "ghij"),
            ("a character kept whole", "", "ééé", 3, "é"),
        ];
        for (case, before, text, max, want) in cases {
            let mut log = before.to_owned();
            keep_tail(&mut log, text, max);
            assert_eq!(log, want, "{case}");
        }
    }
}
