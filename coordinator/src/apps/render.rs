//! An app's desired state at a revision, and how it compares with what
//! runs: the IO around `core::apps`. The controller renders when it fetches
//! and the API when asked for a diff (`drover app diff [--revision]`), on
//! any coordinator, so a plan for an unmerged commit needs no leader.

use std::collections::{BTreeMap, BTreeSet};

use drover_pipeline::app::{AppArtifact, DesiredState, ServiceFile};

use crate::core::apps::{self as rules, AppSpec, Running, ServiceDiff, Wanted};
use crate::core::fleet::ReleaseRef;
use crate::core::keys;
use crate::core::machine::{JobRecord, RunRecord};
use crate::rollouts::drive::version_of;
use crate::rollouts::records as rollouts;
use crate::store::{Store, StoreError, decode};
use crate::submit::GitOptions;

/// The desired state read at a commit.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub commit: String,
    pub branch: Option<String>,
    /// The files as read: (path, text).
    pub files: Vec<(String, String)>,
    /// The checked files, or every problem in them, at file:line:column.
    pub desired: Result<DesiredState, String>,
}

/// Reads and checks app `spec`'s files at `revision` (over ssh with its
/// deploy key, when it has one); a git failure (an unreachable
/// repository, a revision or a directory that is not there, a deploy key
/// that is not set) is the error. A mirror fetched since `fresh_since` is not fetched again.
pub async fn render(
    spec: &AppSpec,
    revision: &str,
    git: &GitOptions,
    vault: &crate::secrets::Vault,
    fresh_since: Option<std::time::Instant>,
) -> Result<Rendered, String> {
    let ssh = super::access::ssh_access(spec, vault, &git.scratch.with_file_name(super::access::APP_KEYS)).await?;
    let tree = crate::git::files_at(
        (&spec.repo, ssh.as_ref()),
        revision,
        &spec.path,
        &git.scratch,
        git.timeout,
        drover_pipeline::MAX_FILE_BYTES,
        fresh_since,
    )
    .await
    .map_err(|e| e.to_string())?;
    let desired = drover_pipeline::app::parse_desired(&spec.path, &tree.files).map_err(|e| e.to_string());
    Ok(Rendered { commit: tree.commit, branch: tree.branch, files: tree.files, desired })
}

/// The release `file` names, or why there is none.
pub async fn release(store: &dyn Store, file: &ServiceFile) -> Result<Result<ReleaseRef, String>, StoreError> {
    let (run, job, path, pinned) = match &file.artifact {
        AppArtifact::Run { run, job, path, sha256 } => (*run, job, path, sha256),
        // Fetched when a sync deploys it (`super::fetch`); its version is
        // known from the digest the file names.
        AppArtifact::Url { url, sha256 } => {
            let name = drover_pipeline::app::url_file_name(url);
            return Ok(Ok(ReleaseRef {
                version: version_of(sha256, name, &file.service),
                sha256: sha256.clone(),
                size: 0,
                path: name.to_owned(),
                run: String::new(),
                commit: String::new(),
                url: url.clone(),
            }));
        }
    };
    let Some(kv) = store.get(&keys::run(run)).await? else {
        return Ok(Err(format!("{}: run {run} does not exist (or retention removed it)", file.file)));
    };
    let record: RunRecord = decode(&kv.key, &kv.value)?;
    let Some(kv) = store.get(&keys::job(run, job)).await? else {
        return Ok(Err(format!("{}: run {run} has no job {job}", file.file)));
    };
    let job_record: JobRecord = decode(&kv.key, &kv.value)?;
    let Some(artifact) = job_record.artifact else {
        return Ok(Err(format!(
            "{}: job {job} of run {run} has packed no artifacts (it has not succeeded, or has no `artifacts:`)",
            file.file
        )));
    };
    if let Some(pin) = pinned.as_ref().filter(|pin| **pin != artifact.sha256) {
        return Ok(Err(format!(
            "{}: the artifacts of job {job} of run {run} have the digest {}, not the sha256 {pin} the file pins",
            file.file, artifact.sha256
        )));
    }
    Ok(Ok(ReleaseRef {
        version: version_of(&artifact.sha256, path, &file.service),
        sha256: artifact.sha256,
        size: artifact.size,
        path: path.clone(),
        run: run.to_string(),
        commit: record.source.commit.unwrap_or_default(),
        url: String::new(),
    }))
}

/// Each service of `desired` with its release; a rejected release
/// (`drover release reject`) is the reason there is none.
pub async fn resolve(
    store: &dyn Store,
    desired: &DesiredState,
) -> Result<Vec<(ServiceFile, Result<ReleaseRef, String>)>, StoreError> {
    let rejects = crate::releases::load(store).await?;
    let mut out = Vec::with_capacity(desired.services.len());
    for file in desired.services.values() {
        let release =
            release(store, file).await?.and_then(|r| match rejects.find(&file.service.name, &r.version, &r.sha256) {
                Some(rejected) => Err(format!("{}: {}", file.file, rejected.refusal(&r.version))),
                None => Ok(r),
            });
        out.push((file.clone(), release));
    }
    Ok(out)
}

/// The diff of `resolved` against what `env`'s nodes serve. `nodes` gives,
/// by service, the nodes it should run on, when the caller knows them.
pub async fn diff(
    store: &dyn Store,
    env: &str,
    resolved: &[(ServiceFile, Result<ReleaseRef, String>)],
    owned: &BTreeSet<String>,
    nodes: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<ServiceDiff>, StoreError> {
    let mut running: BTreeMap<String, Vec<Running>> = BTreeMap::new();
    for (_, service, d) in rollouts::deployed_in(store, Some(env)).await? {
        running.entry(service).or_default().push(Running {
            node: d.node,
            version: d.release.version,
            sha256: d.release.sha256,
            healthy: d.healthy,
        });
    }
    // The definitions the releases that run were started with, for the
    // field diff.
    let mut defs = BTreeMap::new();
    for (file, _) in resolved {
        let name = &file.service.name;
        for r in running.get(name).into_iter().flatten() {
            let key = (name.clone(), r.version.clone());
            if defs.contains_key(&key) {
                continue;
            }
            if let Some(kv) = store.get(&rollouts::release(env, name, &r.version)).await? {
                let c: rollouts::Catalogued = decode(&kv.key, &kv.value)?;
                defs.insert(key, c.def);
            }
        }
    }
    let wanted: Vec<Wanted> = resolved
        .iter()
        .map(|(file, release)| Wanted {
            service: file.service.name.clone(),
            file: file.file.clone(),
            version: release.as_ref().map(|r| r.version.clone()).map_err(Clone::clone),
            sha256: release.as_ref().map(|r| r.sha256.clone()).unwrap_or_default(),
            def: file.service.clone(),
            nodes: nodes.get(&file.service.name).cloned(),
        })
        .collect();
    Ok(rules::diff(&wanted, &running, &defs, owned))
}
