//! Image update automation: CI writes each new build into git. A service
//! file with `update: {pipeline, job, branches, write}` follows that
//! pipeline's artifact. When a newer run of it succeeded (on a branch it
//! takes, with the job's artifact packed), the controller rewrites the
//! file's `artifact:` to that run and its digest
//! (`drover_pipeline::app::set_artifact`, everything else kept), commits it
//! as Drover with a message naming the run and the commit that built it,
//! and pushes it: onto the app's branch (`write: commit`, which the app
//! then syncs as any commit), or onto a branch of its own per update
//! (`write: branch`, for review). `git log` of the desired state reads as
//! a deployment history.
//!
//! Each service's last update is kept in the app's status
//! (`AppStatus::updated`), so a run is written once. A push that does not
//! fast-forward (the branch moved meanwhile) is tried again at the next
//! fetch, on the new head.

use drover_pipeline::app::{AppArtifact, DesiredState, ServiceFile, UpdateSpec, UpdateWrite};
use tracing::{info, warn};

use super::Ctx;
use super::records::{self, AppStatus, Request};
use crate::controller::ControllerError;
use crate::core::apps::AppSpec;
use crate::core::keys;
use crate::core::machine::{JobRecord, RunState};
use crate::records::{RunFilter, encode, list_runs};
use crate::store::{Op, Store, StoreError, Txn, decode};

/// How many of the pipeline's newest succeeded runs are looked at.
const RUNS_LOOKED_AT: usize = 50;

/// A newer build of a followed artifact.
struct Build {
    run: u64,
    sha256: String,
    commit: String,
    branch: String,
}

/// The newest succeeded run of `update.pipeline` on a branch it takes
/// whose job packed an artifact, if newer than `after`.
async fn newest_build(store: &dyn Store, update: &UpdateSpec, after: u64) -> Result<Option<Build>, StoreError> {
    let filter = RunFilter { states: vec![RunState::Succeeded], name: update.pipeline.clone(), created_after_ms: 0 };
    for run in list_runs(store, RUNS_LOOKED_AT, &filter).await? {
        if run.id <= after {
            break;
        }
        let branch = run.source.branch.clone().unwrap_or_default();
        if run.name != update.pipeline || !(update.branches.is_empty() || update.takes_branch(&branch)) {
            continue;
        }
        let Some(kv) = store.get(&keys::job(run.id, &update.job)).await? else { continue };
        let job: JobRecord = decode(&kv.key, &kv.value)?;
        if let Some(artifact) = job.artifact {
            let commit = run.source.commit.clone().unwrap_or_default();
            return Ok(Some(Build { run: run.id, sha256: artifact.sha256, commit, branch }));
        }
    }
    Ok(None)
}

/// Writes into git each newer build the services of `desired` follow, read
/// at `commit` (`files` as read). Returns whether a commit was pushed onto
/// the app's own branch (then the app fetches again at once).
#[allow(clippy::too_many_arguments)]
pub(super) async fn follow(
    ctx: &Ctx,
    spec: &AppSpec,
    status: &mut AppStatus,
    files: &[(String, String)],
    desired: &DesiredState,
    commit: &str,
    branch: Option<&str>,
    now: u64,
) -> Result<bool, ControllerError> {
    let store = ctx.store.as_ref();
    let mut pushed = false;
    let mut rejects = None;
    for file in desired.services.values() {
        let Some(update) = &file.update else { continue };
        let AppArtifact::Run { run: current, path, .. } = &file.artifact else { continue };
        let service = &file.service.name;
        let after = (*current).max(status.updated.get(service).copied().unwrap_or_default());
        let Some(build) = newest_build(store, update, after).await? else { continue };
        // A rejected build is never written into git: it is passed over.
        let rejects = match &rejects {
            Some(r) => r,
            None => rejects.insert(crate::releases::load(store).await?),
        };
        let version = crate::rollouts::drive::version_of(&build.sha256, path, &file.service);
        if let Some(rejected) = rejects.find(service, &version, &build.sha256) {
            warn!(app = %spec.name, %service, run = build.run, "a rejected build is not written into git");
            status.updated.insert(service.clone(), build.run);
            status.last_error =
                format!("update of {service} to run {} passed over: {}", build.run, rejected.refusal(&version));
            status.last_error_ms = now;
            continue;
        }
        match write(ctx, spec, file, update, files, path, &build, commit, branch).await {
            Ok(written) => {
                info!(app = %spec.name, %service, run = build.run, commit = %written, "wrote a new build into git");
                status.updated.insert(service.clone(), build.run);
                pushed |= update.write == UpdateWrite::Commit;
            }
            Err(why) => {
                warn!(app = %spec.name, %service, run = build.run, %why, "cannot write a new build into git");
                status.last_error = format!("update of {service} to run {}: {why}", build.run);
                status.last_error_ms = now;
            }
        }
    }
    if pushed {
        let request = Request { by: "image update".into(), at_ms: now, revision: None };
        let key = format!("{}refresh", records::requests_of(&spec.name));
        store.txn(Txn::ops(vec![Op::put(key, encode(&request))])).await?;
    }
    Ok(pushed)
}

/// Commits and pushes `file` moved to `build`; the new commit, or why not.
#[allow(clippy::too_many_arguments)]
async fn write(
    ctx: &Ctx,
    spec: &AppSpec,
    file: &ServiceFile,
    update: &UpdateSpec,
    files: &[(String, String)],
    path: &str,
    build: &Build,
    commit: &str,
    branch: Option<&str>,
) -> Result<String, String> {
    let text = files
        .iter()
        .find(|(name, _)| *name == file.file)
        .map(|(_, text)| text)
        .ok_or_else(|| format!("{} was not read", file.file))?;
    let new = drover_pipeline::app::set_artifact(&file.file, text, build.run, &update.job, path, &build.sha256)
        .map_err(|e| e.to_string())?;
    let service = &file.service.name;
    let target = match update.write {
        UpdateWrite::Commit => branch.map(str::to_owned).ok_or_else(|| {
            format!(
                "`write: commit` needs the app to follow a branch, and its revision {} names none; follow a \
                 branch, or write `write: branch`",
                spec.reference()
            )
        })?,
        UpdateWrite::Branch => format!("drover/update/{}/{service}/run-{}", spec.name, build.run),
    };
    let built = if build.commit.is_empty() {
        "no commit (a file submitted as it was)".to_owned()
    } else {
        build.commit.clone()
    };
    let message = format!(
        "Deploy {service}: run {run} of pipeline {pipeline}\n\nBuilt from {built}{on}.\nArtifact: {path} of job {job}, \
         sha256:{sha}\n\nWritten by Drover's image update automation (app {app}).\n",
        run = build.run,
        pipeline = update.pipeline,
        on = if build.branch.is_empty() { String::new() } else { format!(" on branch {}", build.branch) },
        job = update.job,
        sha = build.sha256,
        app = spec.name,
    );
    let keys = ctx.git.scratch.with_file_name(super::access::APP_KEYS);
    let ssh = super::access::ssh_access(spec, &ctx.vault, &keys).await?;
    let push = crate::git::Push {
        repo: &spec.repo,
        base: commit,
        path: &file.file,
        text: &new,
        message: &message,
        branch: &target,
        force: update.write == UpdateWrite::Branch,
        ssh: ssh.as_ref(),
    };
    crate::git::commit_and_push(&push, &ctx.git.scratch, ctx.git.timeout).await.map_err(|e| e.to_string())
}
