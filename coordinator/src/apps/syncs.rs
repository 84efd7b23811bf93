//! A sync under way: whether its rollouts have ended and how, or whether
//! it ran past `--sync-timeout` (then its rollouts are aborted and go
//! back).

use drover_deploy::rollout::Phase;
use tracing::info;

use super::records::{self, AppStatus, SyncRecord};
use super::{Ctx, rules};
use crate::controller::ControllerError;
use crate::records::encode;
use crate::scheduler::Event;
use crate::store::{Op, Txn, decode};

/// Whether app `name`'s sync under way has ended; if so its record and
/// the status say how.
pub(super) async fn check_sync(
    ctx: &Ctx,
    spec: &rules::AppSpec,
    status: &mut AppStatus,
    now: u64,
) -> Result<bool, ControllerError> {
    let name = spec.name.as_str();
    let Some(id) = status.syncing else { return Ok(false) };
    let store = ctx.store.as_ref();
    let Some(kv) = store.get(&records::sync(name, id)).await? else {
        status.syncing = None;
        return Ok(true);
    };
    let mut sync: SyncRecord = decode(&kv.key, &kv.value)?;
    let mut failed = Vec::new();
    let timeout = u64::try_from(spec.sync_timeout().as_millis()).unwrap_or(u64::MAX);
    let timed_out = now.saturating_sub(sync.started_ms) > timeout;
    for rollout in &sync.rollouts {
        match crate::rollouts::records::get(store, *rollout).await? {
            Some(r) if !r.is_finished() && timed_out => {
                abort(ctx, *rollout, &format!("app {name}, whose sync {id} timed out")).await;
                failed.push(format!("rollout {rollout} of {} was aborted", r.service));
            }
            Some(r) if !r.is_finished() => return Ok(false),
            Some(r) => {
                let ok = r.rollout.as_ref().is_some_and(|m| m.phase == Phase::Succeeded) && r.hook_failed.is_none();
                if !ok {
                    failed.push(format!("rollout {rollout} of {}: {}", r.service, r.message));
                }
            }
            None => failed.push(format!("rollout {rollout} is gone")),
        }
    }
    if sync.rollouts.is_empty() && sync.outcome == "running" {
        // Its rollouts were never asked for: the leader changed in between.
        failed.push("the leader changed before its rollouts were asked for; sync again".to_owned());
        status.last_auto = None;
    }
    sync.finished_ms = Some(now);
    if timed_out && !failed.is_empty() {
        let took = drover_client::duration::format(spec.sync_timeout());
        failed.insert(0, format!("timed out after {took} (--sync-timeout)"));
    }
    if failed.is_empty() {
        sync.outcome = "succeeded".into();
        status.synced_commit = Some(sync.commit.clone());
        for service in &sync.removed {
            status.owned.remove(service);
        }
    } else {
        sync.outcome = "failed".into();
        sync.message = failed.join("; ");
    }
    status.syncing = None;
    status.syncing_commit = None;
    info!(app = name, sync = id, outcome = %sync.outcome, "sync ended");
    let ops = vec![Op::put(records::sync(name, id), encode(&sync)), Op::put(records::status(name), encode(&*status))];
    store.txn(Txn::ops(ops)).await?;
    Ok(true)
}

/// Asks the rollout controller to abort rollout `id` (it goes back); a
/// rollout that ended meanwhile says so, which is as good.
async fn abort(ctx: &Ctx, id: u64, why: &str) {
    let (reply, rx) = tokio::sync::oneshot::channel();
    let cmd = crate::scheduler::RolloutCommand {
        rollout: id,
        verb: crate::scheduler::Verb::Abort,
        by: why.to_owned(),
        reply,
    };
    if ctx.sched.send(Event::RolloutCommand(cmd)).await.is_ok() {
        let _ = rx.await;
    }
}
