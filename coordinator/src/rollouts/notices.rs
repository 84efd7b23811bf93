//! What the rollout controller tells the notification targets
//! (`crate::notifications`): a rollout started, succeeded, went back,
//! failed or froze; an analysis failed or was inconclusive; a gate waits or
//! was decided; a freeze or closed deploy windows began or ended. The core
//! stages each as a [`Notice`] ([`Driver::notices`]); the loop hands them
//! to the notifier once the store has the change, and never waits for
//! them.

use drover_deploy::rollout::Phase;

use super::drive::Driver;
use crate::notifications::{Kind, Notice};

impl Driver {
    /// Stages a notice of `kind` about rollout `id`, saying `message`.
    pub(super) fn notify(&mut self, id: u64, kind: Kind, message: String, now_ms: u64) {
        let Some(rec) = self.records.get(&id) else { return };
        let mut notice = Notice::new(kind, rec.env.clone(), rec.service.clone(), message, now_ms)
            .with_rollout(id)
            .with_field("version", rec.release.version.clone())
            .with_field("by", rec.by.clone());
        if let Some(job) = &rec.job {
            notice = notice.with_field("run", job.run.to_string()).with_field("job", job.job.clone());
        }
        self.notices.push(notice);
    }

    /// Rollout `id` ended in `phase`: said to whom it may concern.
    /// An app's sync (a rollout its controller asked for, `by` "app NAME
    /// sync N ...") is told as a sync, with the app's name.
    pub(super) fn notify_end(&mut self, id: u64, phase: Phase, now_ms: u64) {
        let Some(rec) = self.records.get(&id) else { return };
        let message = rec.message.clone();
        let app = rec.by.strip_prefix("app ").and_then(|rest| rest.split(' ').next()).map(str::to_owned);
        let kind = match (phase, &app) {
            (Phase::Succeeded, Some(_)) => Kind::SyncSucceeded,
            (_, Some(_)) => Kind::SyncFailed,
            (Phase::Succeeded, None) => Kind::RolloutSucceeded,
            (Phase::RolledBack | Phase::Aborted, None) => Kind::RolloutRolledBack,
            (_, None) => Kind::RolloutFailed,
        };
        self.notify(id, kind, message, now_ms);
        if let (Some(app), Some(notice)) = (app, self.notices.last_mut()) {
            notice.app = Some(app);
        }
    }

    /// The freezes as just read: a freeze that began or ended since the
    /// last read is told. A new leader's first read tells nothing
    /// ([`Driver::frozen_envs`] starts from it in `load`).
    pub fn set_freezes(&mut self, freezes: std::collections::BTreeMap<String, crate::freezes::Freeze>, now_ms: u64) {
        let held: std::collections::BTreeSet<String> =
            freezes.iter().filter(|(_, f)| f.holds(now_ms)).map(|(env, _)| env.clone()).collect();
        for env in held.difference(&self.frozen_envs) {
            let says = freezes[env].says();
            self.notices.push(Notice::new(Kind::FreezeStarted, env.clone(), String::new(), says, now_ms));
        }
        for env in self.frozen_envs.difference(&held) {
            let message = format!("environment {env} is no longer frozen");
            self.notices.push(Notice::new(Kind::FreezeEnded, env.clone(), String::new(), message, now_ms));
        }
        self.frozen_envs = held;
        self.freezes = freezes;
    }
}
