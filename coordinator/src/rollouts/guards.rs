//! The guards of issue 17 in the rollout controller's core: one-way doors
//! (`irreversible: true`) freeze rather than go back, rejected releases are
//! skipped by an automatic rollback (`crate::releases`), and an automatic
//! change never installs an older build (the downgrade guard).

use std::collections::BTreeMap;

use drover_deploy::rollout::{Input, Phase};

use super::drive::Driver;

impl Driver {
    /// As [`Driver::previous`], where a node's release is rejected, the
    /// newest release of the service that rolled out in full and is not
    /// (nor `new`): what an automatic rollback goes back to.
    pub fn previous_not_rejected(
        &self,
        env: &str,
        service: &str,
        new: &str,
        rejects: &crate::releases::Rejects,
    ) -> BTreeMap<String, String> {
        let rejected = |version: &str, sha256: &str| rejects.find(service, version, sha256).is_some();
        let mut previous = self.previous(env, service);
        let bad: Vec<String> = self
            .deployed
            .iter()
            .filter(|((e, s, _), d)| e == env && s == service && rejected(&d.release.version, &d.release.sha256))
            .map(|((_, _, node), _)| node.clone())
            .collect();
        if bad.is_empty() {
            return previous;
        }
        let good = self
            .records
            .values()
            .rev()
            .filter(|r| r.env == env && r.service == service && !r.remove && r.release.version != new)
            .filter(|r| r.rollout.as_ref().is_some_and(|m| m.phase == Phase::Succeeded))
            .find(|r| !rejected(&r.release.version, &r.release.sha256))
            .map(|r| r.release.version.clone());
        if let Some(good) = good {
            for node in bad {
                previous.insert(node, good.clone());
            }
        }
        previous
    }

    /// Why rollout `id` would be a downgrade, if it would: an automatic
    /// change whose release was built by an older run than the newest of
    /// those its environment's nodes serve. Releases with no run (by URL)
    /// are not compared.
    pub fn downgrade(&self, id: u64) -> Option<String> {
        let rec = self.records.get(&id).filter(|r| r.guard_downgrade)?;
        let run: u64 = rec.release.run.parse().ok()?;
        let (newer, serving) = self
            .deployed
            .iter()
            .filter(|((e, s, _), _)| rec.touches(e) && *s == rec.service)
            .filter_map(|((_, _, node), d)| Some((d.release.run.parse::<u64>().ok()?, node, &d.release.version)))
            .filter(|(r, _, _)| *r > run)
            .max_by_key(|(r, _, _)| *r)
            .map(|(r, node, version)| ((r, version.clone()), node.clone()))?;
        Some(format!(
            "refused as a downgrade: release {} of {} was built by run {run}, older than run {}'s {}, which node {serving} \
             serves; an automatic change never installs an older release: go back on purpose with `drover rollback {} \
             --env {} --to {}`{}",
            rec.release.version,
            rec.service,
            newer.0,
            newer.1,
            rec.service,
            rec.env,
            rec.release.version,
            if rec.job.is_none() { ", or pin the app with `drover app rollback`" } else { "" },
        ))
    }

    /// Stops rollout `id` and sends it back, or, for a one-way door that
    /// has touched a node, freezes it where it stands: it pauses (once),
    /// and waits for a person.
    pub fn abort(&mut self, id: u64, reason: String, now_ms: u64) {
        let door = self.records.get(&id).is_some_and(|r| {
            r.deploy.irreversible && !r.is_finished() && r.rollout.as_ref().is_some_and(|m| m.started_ms.is_some())
        });
        if !door {
            return self.abort_back(id, reason, now_ms);
        }
        if self.records[&id].rollout.as_ref().is_none_or(|m| m.phase != Phase::Progressing) {
            return;
        }
        self.apply(id, Input::Pause, now_ms);
        self.freeze(id, &reason);
    }

    /// Says loudly that one-way door `id` froze, and how to go on or back.
    pub(super) fn freeze(&mut self, id: u64, reason: &str) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        let (service, env) = (rec.service.clone(), rec.env.clone());
        if let Some(machine) = rec.rollout.as_mut() {
            machine.message = format!(
                "frozen where it stands, not rolled back, as a one-way door: {reason}; `drover rollout resume {id}` \
                 tries its failed nodes again, `drover rollback {service} --env {env} --force --reason TEXT` goes back"
            );
        }
        crate::metrics::METRICS.rollouts_frozen.add(1);
        tracing::error!(rollout = id, %service, %env, %reason, "a one-way door failed and froze");
        self.stage(id);
        let said = format!("a one-way door failed and froze where it stands, not rolled back: {reason}");
        self.notify(id, crate::notifications::Kind::RolloutFrozen, said, drover_telemetry::trace::now_ms());
    }
}
