//! Freezes in the rollout controller's core (`crate::freezes` has the
//! records): a rollout of a frozen environment waits to start, one under
//! way holds before its next step, and when the freeze ends only the
//! newest waiting rollout of each service starts.

use drover_deploy::rollout::{Input, Verdict};

use super::drive::Driver;

impl Driver {
    /// The freeze that holds `env` at `now_ms`, if one does.
    pub(super) fn frozen(&self, env: &str, now_ms: u64) -> Option<&crate::freezes::Freeze> {
        self.freezes.get(env).filter(|f| f.holds(now_ms))
    }

    /// Keeps rollout `id` from starting while its environment is frozen.
    pub(super) fn wait_for_thaw(&mut self, id: u64, now_ms: u64) -> bool {
        let Some(rec) = self.records.get(&id).filter(|r| !r.fast_track) else { return false };
        let Some(says) = self.frozen(&rec.env, now_ms).map(|f| f.says()) else { return false };
        let rec = self.records.get_mut(&id).expect("exists");
        let message = format!("waiting: {says}");
        if rec.message != message {
            rec.message = message;
            self.stage(id);
        }
        self.waiting_thaw.insert(id);
        true
    }

    /// Step `step` of rollout `id` passed its gate: on to the next, unless
    /// its environment is frozen, when the next step waits for the thaw.
    pub(super) fn pass_or_hold(&mut self, id: u64, step: u32, now_ms: u64) {
        let Some(rec) = self.records.get(&id) else { return };
        let last = rec.rollout.as_ref().is_none_or(|m| step + 1 >= m.steps());
        let says = self.frozen(&rec.env, now_ms).map(|f| f.says());
        match says.filter(|_| !last && !rec.fast_track) {
            Some(says) => {
                let rec = self.records.get_mut(&id).expect("exists");
                rec.held_by_freeze = Some(step);
                if let Some(m) = rec.rollout.as_mut() {
                    m.message = format!("step {step} done; the next waits: {says}");
                }
                self.stage(id);
            }
            None => drop(self.apply(id, Input::Verdict { step, verdict: Verdict::Pass }, now_ms)),
        }
    }

    /// Time passed: what a freeze held goes on where it has ended. Of the
    /// rollouts of a service that waited to start, only the newest starts;
    /// the older end, superseded.
    pub(super) fn thaw(&mut self, now_ms: u64) {
        let held: Vec<(u64, u32)> = self
            .records
            .values()
            .filter(|r| !r.is_finished() && self.frozen(&r.env, now_ms).is_none())
            .filter_map(|r| r.held_by_freeze.map(|step| (r.id, step)))
            .collect();
        for (id, step) in held {
            self.records.get_mut(&id).expect("listed").held_by_freeze = None;
            self.apply(id, Input::Verdict { step, verdict: Verdict::Pass }, now_ms);
        }
        let thawed: Vec<u64> = self
            .waiting_thaw
            .iter()
            .copied()
            .filter(|id| self.records.get(id).is_none_or(|r| self.frozen(&r.env, now_ms).is_none()))
            .collect();
        for id in thawed {
            self.waiting_thaw.remove(&id);
            let Some(rec) = self.records.get(&id).filter(|r| !r.is_finished()) else { continue };
            let (env, service) = (rec.env.clone(), rec.service.clone());
            let waiting: Vec<u64> = self
                .records
                .values()
                .filter(|r| r.env == env && r.service == service && !r.is_finished() && r.rollout.is_none())
                .map(|r| r.id)
                .collect();
            let newest = *waiting.last().expect("id waits");
            for older in waiting.iter().copied().filter(|w| *w != newest) {
                let why = format!("superseded by rollout {newest}, the newest that waited for {env}'s freeze to end");
                self.end_unstarted(older, why, now_ms);
                self.startable.remove(&older);
            }
            self.queue_or_start(newest);
        }
    }
}
