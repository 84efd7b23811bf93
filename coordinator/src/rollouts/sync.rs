//! A rollout admitted: its release catalogued, an older one it supersedes
//! aborted, and it queued or made startable. Deploy jobs come in through
//! `Driver::start_job`; an app's sync (`crate::apps`) through
//! [`Driver::start_sync`]: a rollout with no run, whose nodes its file may
//! narrow (`RolloutRecord::select`).

use drover_pipeline::deploy::OnNewer;

use super::drive::Driver;
use super::records::{self, Catalogued, RolloutRecord};
use drover_deploy::rollout::{Input, NodeState};

use crate::core::fleet::ReleaseRef;
use crate::scheduler::{SyncAction, SyncCommand};
use crate::store::Op;

/// The version a removal's record shows: the rollout machine's release,
/// which no node installs.
pub const REMOVED: &str = "removed";

impl Driver {
    /// Catalogues rollout `id`'s release, aborts what it supersedes, and
    /// queues or starts it.
    pub(super) fn admit(&mut self, id: u64, now_ms: u64) {
        let rec = &self.records[&id];
        let (service, release) = (rec.service.clone(), rec.release.clone());
        let entry = Catalogued { release: release.clone(), def: rec.deploy.service.clone() };
        // In each environment it deploys to, which a rollback there starts.
        for env in rec.envs().into_iter().map(str::to_owned).collect::<Vec<_>>() {
            self.ops.push(Op::put(
                records::release(&env, &service, &release.version),
                serde_json::to_vec(&entry).expect("serialises"),
            ));
            self.catalog.insert((env, service.clone(), release.version.clone()), entry.clone());
        }
        // A superseding deploy aborts the rollout that runs; it goes back,
        // and this one starts once it has.
        if self.records[&id].deploy.on_newer == OnNewer::Supersede {
            self.abort_older(id, &format!("superseded by rollout {id}"), now_ms);
        }
        self.queue_or_start(id);
        self.stage(id);
    }

    /// Aborts every unfinished rollout older than `id` of its service in
    /// its environments, saying `reason`.
    fn abort_older(&mut self, id: u64, reason: &str, now_ms: u64) {
        let rec = &self.records[&id];
        let running: Vec<u64> =
            self.records.values().filter(|r| r.id < id && r.shares(rec) && !r.is_finished()).map(|r| r.id).collect();
        for older in running {
            self.abort(older, reason.to_owned(), now_ms);
        }
    }

    /// Starts a rollout for one service of an app's sync; its id, or why
    /// there is none.
    pub fn start_sync(&mut self, cmd: &SyncCommand, now_ms: u64) -> Result<u64, String> {
        let (service, release, deploy, select, remove) = match &cmd.action {
            SyncAction::Deploy { release, deploy, select } => {
                (deploy.service.name.clone(), release.clone(), (**deploy).clone(), Some(select.clone()), false)
            }
            SyncAction::Remove { service } => {
                // How it last ran, for the record and a way back.
                let last = self
                    .records
                    .values()
                    .rev()
                    .find(|r| r.touches(&cmd.env) && r.service == *service && !r.remove)
                    .ok_or_else(|| format!("service {service} has never been deployed to {}", cmd.env))?;
                let release = ReleaseRef {
                    version: REMOVED.to_owned(),
                    sha256: String::new(),
                    size: 0,
                    path: String::new(),
                    run: String::new(),
                    commit: String::new(),
                    url: String::new(),
                };
                (service.clone(), release, records::in_one_environment(last.deploy.clone()), None, true)
            }
        };
        self.last_id += 1;
        let id = self.last_id;
        self.ops.push(Op::put(records::SEQ, id.to_string()));
        let rec = RolloutRecord {
            id,
            env: cmd.env.clone(),
            service,
            job: None,
            branch: cmd.branch.clone(),
            release,
            deploy,
            rollout: None,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            message: String::new(),
            inflight: Default::default(),
            seq: 0,
            by: cmd.by.clone(),
            // A removal goes to every node at once.
            fast_track: remove,
            trace: super::trace::begin(None, now_ms),
            hook: None,
            batch_hooks: Default::default(),
            hook_failed: None,
            select,
            remove,
            hook_log: String::new(),
            analysing: None,
            held_by_freeze: None,
            guard_downgrade: cmd.automatic && !remove,
            analysis_runs: 0,
            background: None,
            split: None,
            measurements: Vec::new(),
            gates: Vec::new(),
            overridden: None,
            node_envs: Default::default(),
        };
        self.records.insert(id, rec);
        if !remove {
            self.admit(id, now_ms);
            return Ok(id);
        }
        // A removal takes over from what rolls, as a superseding deploy.
        self.abort_older(id, &format!("the service is being removed (rollout {id})"), now_ms);
        self.queue_or_start(id);
        self.stage(id);
        Ok(id)
    }

    /// The nodes a removal of `service` from `env` goes over: those that
    /// serve it.
    pub fn serving(&self, env: &str, service: &str) -> Vec<String> {
        self.deployed.keys().filter(|(e, s, _)| e == env && s == service).map(|(_, _, n)| n.clone()).collect()
    }

    /// A removal's node report: the service stopped there is, to the
    /// rollout machine, the node updated and healthy; its way back (the
    /// release it served) is a rollback as any other.
    pub(super) fn removal_inputs(&self, id: u64, node: &str) -> Option<Vec<Input>> {
        let rec = self.records.get(&id).filter(|r| r.remove)?;
        let state = rec.rollout.as_ref()?.node(node)?.state;
        matches!(state, NodeState::Installing | NodeState::Checking)
            .then(|| vec![Input::NodeInstalled { node: node.to_owned() }, Input::NodeHealthy { node: node.to_owned() }])
    }
}
