//! `drover rollback SERVICE --env ENV [--to VERSION] [--staged]`: a new
//! rollout of an earlier release of the service, from the environment's
//! catalogue. By default it is a fast track: every node at once, no pauses
//! (`drover_deploy::rollout::Rollout::fast_track`); `--staged` goes step by
//! step with the service's last strategy. A rollback aborts the service's
//! unfinished rollouts (which go back first) and runs after them, so the
//! service ends on the release asked for, however many were asked for.

use drover_deploy::rollout::Phase;

use super::drive::Driver;
use super::records::RolloutRecord;

impl Driver {
    /// The release the service ran before the one it runs now: the newest
    /// rollout of it that succeeded with another version than the newest
    /// success's.
    fn before_current(&self, env: &str, service: &str) -> Option<String> {
        let mut succeeded = self
            .records
            .values()
            .rev()
            .filter(|r| r.touches(env) && r.service == service)
            .filter(|r| r.rollout.as_ref().is_some_and(|m| m.phase == Phase::Succeeded))
            .map(|r| r.release.version.clone());
        let current = succeeded.next()?;
        succeeded.find(|v| *v != current)
    }

    /// Starts a rollback; its rollout's id, or why there is none. From a
    /// one-way door (a release some node serves that was deployed with
    /// `irreversible: true`) only when `force` says why.
    #[allow(clippy::too_many_arguments)]
    pub fn rollback(
        &mut self,
        env: &str,
        service: &str,
        to: Option<String>,
        staged: bool,
        by: &str,
        force: Option<&str>,
        now_ms: u64,
    ) -> Result<u64, String> {
        // A one-way door: a release some node serves that was deployed as
        // one, or one whose rollout froze under way.
        let door = self
            .deployed
            .iter()
            .filter(|((e, s, _), _)| e == env && s == service)
            .find(|(_, d)| self.records.get(&d.rollout).is_some_and(|r| r.deploy.irreversible))
            .map(|(_, d)| d.release.version.clone())
            .or_else(|| {
                self.records
                    .values()
                    .filter(|r| r.touches(env) && r.service == service && r.deploy.irreversible && !r.is_finished())
                    .find(|r| r.rollout.as_ref().is_some_and(|m| m.started_ms.is_some()))
                    .map(|r| r.release.version.clone())
            });
        let by = match (door, force.map(str::trim)) {
            (Some(version), None) => {
                return Err(format!(
                    "release {version} of {service} in {env} is a one-way door (deployed with `irreversible: true`): \
                     going back needs --force --reason TEXT"
                ));
            }
            (_, Some("")) => return Err("--force needs a --reason, kept with the rollback".to_owned()),
            (_, Some(reason)) => format!("{by}, forced: {reason}"),
            (None, None) => by.to_owned(),
        };
        let by = by.as_str();
        let last = self
            .records
            .values()
            .rev()
            .find(|r| r.touches(env) && r.service == service)
            .ok_or_else(|| {
                format!("service {service} has never been deployed to {env}; `drover services` lists what is")
            })?
            .clone();
        let to = match to {
            Some(v) => v,
            None => self.before_current(env, service).ok_or_else(|| {
                format!("service {service} in {env} has no earlier release to go back to; name one with --to VERSION")
            })?,
        };
        let key = (env.to_string(), service.to_string(), to.clone());
        let Some(entry) = self.catalog.get(&key).cloned() else {
            let mut known: Vec<&str> =
                self.catalog.keys().filter(|(e, s, _)| e == env && s == service).map(|(_, _, v)| v.as_str()).collect();
            known.sort();
            return Err(format!(
                "service {service} in {env} has no release {to}; its releases are: {}",
                known.join(", ")
            ));
        };
        // What runs now goes back first; this one starts after.
        let unfinished: Vec<u64> = self
            .records
            .values()
            .filter(|r| r.touches(env) && r.service == service && !r.is_finished())
            .map(|r| r.id)
            .collect();
        self.last_id += 1;
        let id = self.last_id;
        self.ops.push(crate::store::Op::put(super::records::SEQ, id.to_string()));
        for older in unfinished {
            let reason = format!("a rollback to {to} was asked for (rollout {id})");
            // A forced rollback goes back from a frozen one-way door too.
            if force.is_some() {
                self.abort_back(older, reason, now_ms);
            } else {
                self.abort(older, reason, now_ms);
            }
        }
        // It goes back in this environment only.
        let mut deploy = super::records::in_one_environment(last.deploy.clone());
        deploy.service = entry.def.clone();
        // Going back is no one-way door itself.
        deploy.irreversible = false;
        let rec = RolloutRecord {
            id,
            env: env.to_string(),
            service: service.to_string(),
            job: None,
            branch: None,
            release: entry.release.clone(),
            deploy,
            rollout: None,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            message: String::new(),
            inflight: Default::default(),
            seq: 0,
            by: format!("rollback by {by}"),
            fast_track: !staged,
            trace: super::trace::begin(None, now_ms),
            hook: None,
            batch_hooks: Default::default(),
            hook_failed: None,
            select: None,
            remove: false,
            hook_log: String::new(),
            analysing: None,
            held_by_freeze: None,
            guard_downgrade: false,
            analysis_runs: 0,
            background: None,
            split: None,
            measurements: Vec::new(),
            gates: Vec::new(),
            overridden: None,
            node_envs: Default::default(),
        };
        self.records.insert(id, rec);
        self.queue_or_start(id);
        self.stage(id);
        Ok(id)
    }
}
