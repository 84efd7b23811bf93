//! Rollouts are kept for `drover rollouts` and for `drover rollback`
//! (which reads which release came before the current one), but not for
//! ever: past [`KEEP_FINISHED`] finished rollouts, the oldest finished ones
//! are deleted as newer ones finish. Unfinished rollouts are never
//! deleted, nor the release catalogue (a rollback's target) or what nodes
//! serve.

use super::drive::Driver;
use super::records;
use crate::store::Op;

/// The most finished rollouts kept.
pub const KEEP_FINISHED: usize = 1000;

impl Driver {
    /// Deletes the oldest finished rollouts past [`KEEP_FINISHED`].
    pub(super) fn prune(&mut self) {
        let finished: Vec<u64> = self.records.values().filter(|r| r.is_finished()).map(|r| r.id).collect();
        let excess = finished.len().saturating_sub(KEEP_FINISHED);
        for id in finished.into_iter().take(excess) {
            self.records.remove(&id);
            self.ops.push(Op::delete(records::record(id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_finished_rollouts_are_kept() {
        let mut d = Driver::default();
        let text = "name: d\njobs:\n  build:\n    artifacts: {paths: [dist]}\n    steps: [{run: make}]\n  deploy:\n    \
                    needs: [build]\n    deploy:\n      environment: staging\n      artifact: build:dist\n      \
                    service:\n        name: web\n        command: ./app\n        port: 8080\n        health: {tcp: true, \
                    interval: 1s, healthy_after: 2, timeout: 30s}\n";
        let pipeline = drover_pipeline::parse("ci.yml", text).unwrap_or_else(|e| panic!("{e}"));
        let spec = pipeline.job("deploy").and_then(|j| j.deploy.clone()).expect("a deploy job");
        for run in 1..=(KEEP_FINISHED as u64 + 5) {
            let job = crate::scheduler::DeployJob {
                run,
                job: "deploy".into(),
                attempt: 1,
                spec: spec.clone(),
                branch: None,
                commit: None,
                // No artifact: the rollout ends at once, refused.
                artifact: None,
                cancelling: false,
                trace: None,
            };
            d.start_job(job, run);
        }
        assert_eq!(d.records.len(), KEEP_FINISHED);
        assert_eq!(d.records.keys().next(), Some(&6), "the oldest five went");
        let deleted = d.ops.iter().filter(|op| matches!(op, Op::Delete { .. })).count();
        assert_eq!(deleted, 5);
    }
}
