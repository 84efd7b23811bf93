//! A rollout admitted: its release catalogued, an older one it supersedes
//! aborted, and it queued or made startable. Deploy jobs come in through
//! `Driver::start_job`; an app's sync (`crate::apps`) through
//! [`Driver::start_sync`]: a rollout with no run, whose nodes its file may
//! narrow (`RolloutRecord::select`).

use drover_pipeline::deploy::OnNewer;

use super::drive::Driver;
use super::records::{self, Catalogued, RolloutRecord};
use crate::scheduler::SyncCommand;
use crate::store::Op;

impl Driver {
    /// Catalogues rollout `id`'s release, aborts what it supersedes, and
    /// queues or starts it.
    pub(super) fn admit(&mut self, id: u64, now_ms: u64) {
        let rec = &self.records[&id];
        let (env, service, release) = (rec.env.clone(), rec.service.clone(), rec.release.clone());
        let entry = Catalogued { release: release.clone(), def: rec.deploy.service.clone() };
        self.ops.push(Op::put(
            records::release(&env, &service, &release.version),
            serde_json::to_vec(&entry).expect("serialises"),
        ));
        self.catalog.insert((env.clone(), service.clone(), release.version.clone()), entry);
        // A superseding deploy aborts the rollout that runs; it goes back,
        // and this one starts once it has.
        if self.records[&id].deploy.on_newer == OnNewer::Supersede {
            let running: Vec<u64> = self
                .records
                .values()
                .filter(|r| r.id < id && r.env == env && r.service == service && !r.is_finished())
                .map(|r| r.id)
                .collect();
            for older in running {
                self.abort(older, format!("superseded by rollout {id}"), now_ms);
            }
        }
        self.queue_or_start(id);
        self.stage(id);
    }

    /// Starts a rollout for one service of an app's sync; its id.
    pub fn start_sync(&mut self, cmd: &SyncCommand, now_ms: u64) -> u64 {
        self.last_id += 1;
        let id = self.last_id;
        self.ops.push(Op::put(records::SEQ, id.to_string()));
        let rec = RolloutRecord {
            id,
            env: cmd.env.clone(),
            service: cmd.deploy.service.name.clone(),
            job: None,
            branch: cmd.branch.clone(),
            release: cmd.release.clone(),
            deploy: cmd.deploy.clone(),
            rollout: None,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            message: String::new(),
            inflight: Default::default(),
            seq: 0,
            by: cmd.by.clone(),
            fast_track: false,
            trace: super::trace::begin(None, now_ms),
            hook: None,
            batch_hooks: Default::default(),
            hook_failed: None,
            select: cmd.select.clone(),
        };
        self.records.insert(id, rec);
        self.admit(id, now_ms);
        id
    }
}
