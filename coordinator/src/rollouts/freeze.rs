//! Freezes and deploy windows in the rollout controller's core
//! (`crate::freezes` has the freezes, the environment's `windows:`
//! `crate::core::environments::closed`): a rollout of a frozen
//! environment, or one whose windows are closed, waits to start, one under
//! way holds before its next step, and when the environment opens again
//! only the newest waiting rollout of each service starts. A rollout an
//! admin overrode (`drover rollout override ID --reason`, audited on the
//! record and in the log) passes both, as a fast track does.

use super::records::{Override, RolloutRecord};

use super::drive::Driver;

impl Driver {
    /// What holds `rec` at `now_ms`, in words: the freeze of one of its
    /// environments, or their closed deploy windows. Nothing holds a fast
    /// track or an overridden rollout.
    pub(super) fn held(&self, rec: &RolloutRecord, now_ms: u64) -> Option<String> {
        if rec.fast_track || rec.overridden.is_some() {
            return None;
        }
        let envs = rec.envs();
        if let Some(f) = envs.iter().find_map(|env| self.freezes.get(*env).filter(|f| f.holds(now_ms))) {
            return Some(f.says());
        }
        envs.iter().find_map(|env| self.windows.get(*env).and_then(|env| env.closed(now_ms))).map(|c| c.why)
    }

    /// `drover rollout override ID --reason`: rollout `id` passes its
    /// environment's freeze and windows from now on; what they held goes.
    pub fn override_hold(&mut self, id: u64, by: &str, reason: &str, now_ms: u64) -> Result<(), String> {
        let rec = self.records.get_mut(&id).ok_or_else(|| format!("there is no rollout {id}"))?;
        if reason.trim().is_empty() {
            return Err("say why the freeze or window is overridden: --reason TEXT".into());
        }
        tracing::warn!(rollout = id, env = %rec.env, by, reason = reason.trim(), "freeze and deploy windows overridden");
        rec.overridden = Some(Override { by: by.to_owned(), reason: reason.trim().to_owned(), at_ms: now_ms });
        let held = rec.held_by_freeze.take();
        self.stage(id);
        if self.waiting_thaw.remove(&id) {
            self.queue_or_start(id);
        }
        if let Some(step) = held {
            self.through_gates(id, step, now_ms);
        }
        Ok(())
    }

    /// Keeps rollout `id` from starting while its environment is frozen.
    pub(super) fn wait_for_thaw(&mut self, id: u64, now_ms: u64) -> bool {
        let Some(rec) = self.records.get(&id) else { return false };
        let Some(says) = self.held(rec, now_ms) else { return false };
        let rec = self.records.get_mut(&id).expect("exists");
        let message = format!("waiting: {says}");
        if rec.message != message {
            rec.message = message;
            self.stage(id);
        }
        self.waiting_thaw.insert(id);
        true
    }

    /// Step `step` of rollout `id` passed its analysis: on through its
    /// gates (`gates.rs`) to the next, unless its environment is frozen,
    /// when the next step waits for the thaw.
    pub(super) fn pass_or_hold(&mut self, id: u64, step: u32, now_ms: u64) {
        let Some(rec) = self.records.get(&id) else { return };
        let last = rec.rollout.as_ref().is_none_or(|m| step + 1 >= m.steps());
        let says = self.held(rec, now_ms);
        match says.filter(|_| !last) {
            Some(says) => {
                let rec = self.records.get_mut(&id).expect("exists");
                rec.held_by_freeze = Some(step);
                if let Some(m) = rec.rollout.as_mut() {
                    m.message = format!("step {step} done; the next waits: {says}");
                }
                self.stage(id);
            }
            None => self.through_gates(id, step, now_ms),
        }
    }

    /// Time passed: what a freeze held goes on where it has ended. Of the
    /// rollouts of a service that waited to start, only the newest starts;
    /// the older end, superseded.
    pub(super) fn thaw(&mut self, now_ms: u64) {
        let held: Vec<(u64, u32)> = self
            .records
            .values()
            .filter(|r| !r.is_finished() && self.held(r, now_ms).is_none())
            .filter_map(|r| r.held_by_freeze.map(|step| (r.id, step)))
            .collect();
        for (id, step) in held {
            self.records.get_mut(&id).expect("listed").held_by_freeze = None;
            self.through_gates(id, step, now_ms);
        }
        let thawed: Vec<u64> = self
            .waiting_thaw
            .iter()
            .copied()
            .filter(|id| self.records.get(id).is_none_or(|r| self.held(r, now_ms).is_none()))
            .collect();
        for id in thawed {
            self.waiting_thaw.remove(&id);
            let Some(rec) = self.records.get(&id).filter(|r| !r.is_finished()) else { continue };
            let env = rec.env.clone();
            let waiting: Vec<u64> = self
                .records
                .values()
                .filter(|r| r.shares(rec) && !r.is_finished() && r.rollout.is_none())
                .map(|r| r.id)
                .collect();
            let newest = *waiting.last().expect("id waits");
            for older in waiting.iter().copied().filter(|w| *w != newest) {
                let why = format!("superseded by rollout {newest}, the newest that waited for {env} to open");
                self.end_unstarted(older, why, now_ms);
                self.startable.remove(&older);
            }
            self.queue_or_start(newest);
        }
    }
}
