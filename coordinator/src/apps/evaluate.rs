//! One reconcile's look at an app: fetch its revision, check its files,
//! resolve each release, diff against what runs, and record all of it in
//! the app's status; the image updates it follows are written here too.

use std::collections::BTreeMap;

use super::records::AppStatus;
use super::{Ctx, render, rules, short, update};
use crate::controller::ControllerError;
use crate::core::apps::ServiceStatus;
use tracing::warn;

/// One service of the desired state (its file, its release, its diff),
/// or an orphan no file declares (no file).
pub(super) struct Plan {
    pub(super) file: Option<drover_pipeline::app::ServiceFile>,
    pub(super) release: Result<crate::core::fleet::ReleaseRef, String>,
    pub(super) diff: rules::ServiceDiff,
}

pub(super) enum Evaluated {
    /// The revision could not be read, or its files are invalid.
    Broken(String),
    Diffed {
        branch: Option<String>,
        drift: rules::SyncStatus,
        plans: Vec<Plan>,
    },
}

/// Fetches, renders and diffs app `spec` at `revision`, recording what it
/// found in `status`.
pub(super) async fn evaluate(
    ctx: &Ctx,
    spec: &rules::AppSpec,
    revision: &str,
    status: &mut AppStatus,
    now: u64,
    tick: std::time::Instant,
) -> Result<Evaluated, ControllerError> {
    let store = ctx.store.as_ref();
    let broken = |status: &mut AppStatus, why: String| {
        status.last_error = why.clone();
        status.last_error_ms = now;
        Evaluated::Broken(why)
    };
    let rendered = match render::render(spec, revision, &ctx.git, &ctx.vault, Some(tick)).await {
        Ok(r) => r,
        Err(why) => return Ok(broken(status, why)),
    };
    status.last_fetch_ms = now;
    if status.wanted_commit.as_deref() != Some(rendered.commit.as_str()) {
        status.wanted_since_ms = now;
    }
    status.wanted_commit = Some(rendered.commit.clone());
    let desired = match rendered.desired {
        Ok(d) => d,
        Err(why) => {
            return Ok(broken(status, format!("the desired state at {} is invalid:\n{why}", short(&rendered.commit))));
        }
    };
    let resolved = render::resolve(store, &desired).await?;
    // The nodes each service should run on: the environment's connected
    // ones that its file selects.
    let env = match crate::environments::get(store, &spec.environment).await {
        Ok(env) => env,
        Err(crate::environments::EnvironmentsError::Store(e)) => return Err(e.into()),
        Err(e) => return Ok(broken(status, e.to_string())),
    };
    let agents = ctx.sched.agents().await.map_err(|e| ControllerError::Failed(e.to_string()))?;
    let mut nodes = BTreeMap::new();
    for (file, _) in &resolved {
        let narrowed: Vec<_> = agents
            .iter()
            .filter(|a| a.connected && crate::core::environments::selects(&file.nodes.selector, &a.labels))
            .cloned()
            .collect();
        let picked = rules::pick(
            crate::core::environments::nodes(&env.spec.selector, &narrowed),
            file.nodes.count,
            &BTreeMap::new(),
        );
        nodes.insert(file.service.name.clone(), picked.into_iter().map(|n| n.name).collect());
    }
    let diffs = render::diff(store, &spec.environment, &resolved, &status.owned, &nodes).await?;
    let drift = rules::sync_status(&diffs, spec.prune);
    status.sync_status = match drift {
        rules::SyncStatus::Synced => "synced".into(),
        rules::SyncStatus::OutOfSync => "out_of_sync".into(),
    };
    status.health = rules::health(&diffs, status.syncing.is_some()).into();
    // Nodes that run what the commit declares are synced to it, whoever
    // put it there (a sync, a deploy job, an app made after the fact).
    if drift == rules::SyncStatus::Synced && status.syncing.is_none() {
        status.synced_commit = status.wanted_commit.clone();
    }
    // Drift: out of sync on the commit last synced (not a new commit).
    let drifted = drift == rules::SyncStatus::OutOfSync && status.synced_commit == status.wanted_commit;
    if !drifted {
        status.drift_since_ms = 0;
    } else if status.drift_since_ms == 0 {
        status.drift_since_ms = now;
        crate::metrics::METRICS.app_drift.inc();
    }
    status.drift =
        diffs.iter().filter(|d| d.status != ServiceStatus::InSync).map(rules::ServiceDiff::summary).collect();
    if drifted && status.drift_since_ms == now {
        warn!(app = %spec.name, drift = ?status.drift, detect_only = spec.detect_only, self_heal = spec.self_heal,
            "drift detected: the nodes no longer run what the commit last synced declares");
    }
    let errors: Vec<String> =
        diffs.iter().filter(|d| d.status == ServiceStatus::Error).map(rules::ServiceDiff::summary).collect();
    if errors.is_empty() {
        status.last_error.clear();
    } else {
        status.last_error = errors.join("; ");
        status.last_error_ms = now;
    }
    let mut diffs: BTreeMap<String, rules::ServiceDiff> = diffs.into_iter().map(|d| (d.service.clone(), d)).collect();
    let mut plans: Vec<Plan> = resolved
        .into_iter()
        .filter_map(|(file, release)| {
            let diff = diffs.remove(&file.service.name)?;
            Some(Plan { file: Some(file), release, diff })
        })
        .collect();
    plans.extend(diffs.into_values().map(|diff| Plan { file: None, release: Err(String::new()), diff }));
    // Builds are written onto the app's own revision only: not while it is
    // pinned, nor for a sync asked for at another revision.
    if revision == spec.reference() && desired.services.values().any(|f| f.update.is_some()) {
        let branch = rendered.branch.as_deref();
        update::follow(ctx, spec, status, &rendered.files, &desired, &rendered.commit, branch, now).await?;
    }
    Ok(Evaluated::Diffed { branch: rendered.branch, drift, plans })
}
