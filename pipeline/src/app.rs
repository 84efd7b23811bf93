//! GitOps' desired state: an app is a directory of a git repository holding
//! one YAML file per service, and the coordinator converges the app's
//! environment on what the files say at a commit (pull-based, with no
//! pipeline run). These are the types and the entry points; the checking is
//! `check/app`'s, which reads the service, strategy, hooks, analysis and
//! durations by the rules of a deploy job's ([`crate::deploy`]).
//!
//! One file, `deploy/web.yaml`:
//!
//! ```yaml
//! artifact: {run: 42, job: build, path: dist/app.tar.gz}   # a file of the artifacts of job `build` of run 42
//!   # pinned:  {run: 42, job: build, path: dist/app.tar.gz, sha256: <64 lower-case hex>}
//!   # by URL:  {url: https://example.com/app-1.2.tar.gz, sha256: <64 lower-case hex>}   (sha256 required)
//! update: {pipeline: web-build, branches: [main, 'release/*']}   # optional: commit each new build into this file
//!   # every key: {pipeline: web-build, job: build, branches: [main], write: branch}
//! service:                     # exactly as a deploy job's `service:`
//!   name: web
//!   command: python3 -m http.server ${PORT}
//!   env: {RUST_LOG: info}      # optional
//!   port: 8080
//!   health: {http: /, interval: 1s, healthy_after: 2, timeout: 30s}
//! nodes: {selector: {role: web}, count: 2}   # optional: narrows the environment's nodes; count: at most that many
//! strategy: {rolling: {max_parallel: 1}}     # optional, as a deploy's; rolling one node at a time by default
//! progress_deadline: 10m                     # optional, as a deploy's
//! auto_rollback: true                        # optional, as a deploy's
//! irreversible: false                        # optional, as a deploy's
//! hooks: {before: [{run: ./migrate}]}        # optional, as a deploy's (without `if:`)
//! analysis:                                  # optional, as a deploy's: metrics that judge each step
//!   metrics:
//!     - name: error-rate
//!       prometheus: {address: "http://prometheus:9090", query: "sum(rate(errors_total[1m]))"}
//!       success: result < 0.01
//! ```
//!
//! - `artifact` names the release by exactly one of `run` or `url`. With
//!   `run`: a run number (1 or more), a job name, and a `path` by the rules
//!   of a deploy's (relative, in its normal form, no glob); `sha256`
//!   optional. With `url`: `http://` or `https://`, at most
//!   [`crate::MAX_ARTIFACT_URL_LEN`] characters, ending in the file's name,
//!   and `sha256` required (what `sha256sum FILE` prints). A digest is 64
//!   lower-case hex digits.
//! - `update` (image update automation) names the pipeline whose builds
//!   the file follows: when a run of pipeline `pipeline` (its `name:`, by
//!   the rule of a pipeline file's) on a branch that `branches` matches
//!   succeeds, Drover writes that run's artifact (of job `job`, at the
//!   file's `artifact.path`, with its digest) into the file
//!   ([`set_artifact`]) and the sync deploys it. `job` is a job name,
//!   the artifact's `job` when not written; `branches` a list of globs as
//!   in a pipeline's `on:` ([`crate::triggers::pattern_problem`]), any
//!   branch when not written (an empty list is refused); `write` is `commit` (the default: a commit
//!   to the branch the app tracks) or `branch` (a branch pushed per
//!   update, for review). Only a `run` artifact can be followed: `update`
//!   with a `url` artifact is refused.
//! - `nodes: selector` is a mapping of agent labels, read as `runs-on` is;
//!   `count` is 1 to [`crate::MAX_APP_NODE_COUNT`], all of the selected
//!   nodes when not written.
//! - There is no `environment` (the app's own, where the app is defined)
//!   and no `on_newer` (a newer commit always replaces a sync in flight).
//! - A desired-state file has no run to read: `${{ }}` is refused in the
//!   command, `env`, health check and hooks, and so is a hook step's `if:`.
//!   `${PORT}` in the command is the service's own variable, as in a deploy.
//!   An analysis metric's `success` and `failure` are expressions, but over
//!   `result`, the measured value, not a run: they are read as a deploy's.
//!
//! The directory as a whole ([`parse_desired`]): 1 to
//! [`crate::MAX_APP_SERVICES`] files, no two of them naming the same service
//! or the same `port` (which would share the node's proxy port). Each file
//! is at most [`crate::MAX_FILE_BYTES`]. Every problem of every file is
//! reported at `file:line:column` with a hint, as for a pipeline file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deploy::{Analysis, ArtifactRef, DeploySpec, Hooks, OnNewer, ServiceSpec, Strategy};
use crate::{Diagnostic, PipelineError, check};

mod rewrite;
#[cfg(test)]
mod tests;

pub use rewrite::set_artifact;

/// One desired-state file, checked: one service of the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFile {
    /// The file's name as given to [`parse_service_file`] or
    /// [`parse_desired`].
    pub file: String,
    /// The release.
    pub artifact: AppArtifact,
    /// Whose builds Drover commits into the file's `artifact`, if anyone's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateSpec>,
    /// What runs on each node, and how its health is told: a deploy's.
    pub service: ServiceSpec,
    /// Which of the environment's nodes run it.
    #[serde(default)]
    pub nodes: NodeSelection,
    /// How a change spreads over the nodes; rolling one node at a time when
    /// the file says nothing.
    pub strategy: Strategy,
    /// As a deploy's: [`DeploySpec::progress_deadline`].
    pub progress_deadline: Duration,
    /// As a deploy's: [`DeploySpec::auto_rollback`].
    pub auto_rollback: bool,
    /// As a deploy's: [`DeploySpec::irreversible`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub irreversible: bool,
    /// As a deploy's, without `if:` in their steps.
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    /// As a deploy's: [`DeploySpec::analysis`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// As a deploy's: [`DeploySpec::gates`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<crate::deploy::Gate>,
    /// As a deploy's: [`DeploySpec::waves`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<crate::deploy::Wave>,
}

/// A desired-state file's `artifact`: where its release comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppArtifact {
    /// `{run: 42, job: build, path: dist/app.tar.gz}`: the file `path` of
    /// the artifacts of job `job` of run `run`.
    Run {
        /// 1 or more. Whether the run exists is the coordinator's to check.
        run: u64,
        /// A job name, by the rule of a pipeline's.
        job: String,
        /// As [`ArtifactRef::path`]: in its normal form.
        path: String,
        /// When given, the release's sha256, 64 lower-case hex digits: the
        /// artifact must have this digest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// `{url: https://..., sha256: ...}`: the file at `url`, which must
    /// have the digest `sha256`.
    Url {
        /// `http://` or `https://`, with a host, its path ending in the
        /// file's name ([`url_file_name`]); at most
        /// [`crate::MAX_ARTIFACT_URL_LEN`] characters.
        url: String,
        /// 64 lower-case hex digits.
        sha256: String,
    },
}

/// A desired-state file's `update`: the pipeline whose successful runs
/// give the file a new `artifact` (image update automation). Only a file
/// whose artifact is a run's ([`AppArtifact::Run`]) has one; the path
/// followed is the artifact's `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSpec {
    /// The pipeline's name (the `name:` of its file).
    pub pipeline: String,
    /// The job whose artifacts hold the release: as written, or the
    /// artifact's `job`.
    pub job: String,
    /// Globs of the branches whose runs are followed; empty: every branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    /// How an update is written into the repository.
    #[serde(default)]
    pub write: UpdateWrite,
}

/// How an update of a desired-state file is written: `update: write:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateWrite {
    /// A commit on the branch the app tracks, which its sync then deploys.
    #[default]
    Commit,
    /// A branch of its own per update, pushed for review; the app deploys
    /// it once it is merged.
    Branch,
}

impl UpdateSpec {
    /// Whether a run on `branch` is followed: any branch when `branches`
    /// is empty, else one that some glob of it matches
    /// ([`crate::triggers::matches`]).
    pub fn takes_branch(&self, branch: &str) -> bool {
        self.branches.is_empty() || self.branches.iter().any(|pattern| crate::triggers::matches(pattern, branch))
    }
}

/// A desired-state file's `nodes`: which of the environment's nodes run the
/// service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeSelection {
    /// Agent labels a node must also have, beyond the environment's
    /// selector; empty: every node of the environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// At most this many of them (1 to [`crate::MAX_APP_NODE_COUNT`]);
    /// `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// An app's desired state: every file of its directory, checked together.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DesiredState {
    /// By service name: no two files name the same service or port.
    pub services: BTreeMap<String, ServiceFile>,
}

impl ServiceFile {
    /// The deploy a rollout of this service to `environment` runs: its
    /// artifact `{job, path}` for a run's artifact; for a URL, job `""` and
    /// the URL's file name ([`url_file_name`]) as the path, which tells the
    /// agent how to unpack it. A newer commit replaces a sync in flight
    /// ([`OnNewer::Supersede`]).
    pub fn deploy_spec(&self, environment: &str) -> DeploySpec {
        let artifact = match &self.artifact {
            AppArtifact::Run { job, path, .. } => ArtifactRef { job: job.clone(), path: path.clone() },
            AppArtifact::Url { url, .. } => ArtifactRef { job: String::new(), path: url_file_name(url).to_owned() },
        };
        DeploySpec {
            environment: environment.to_owned(),
            artifact,
            service: self.service.clone(),
            strategy: self.strategy.clone(),
            progress_deadline: self.progress_deadline,
            auto_rollback: self.auto_rollback,
            irreversible: self.irreversible,
            on_newer: OnNewer::Supersede,
            hooks: self.hooks.clone(),
            analysis: self.analysis.clone(),
            gates: self.gates.clone(),
            waves: self.waves.clone(),
        }
    }
}

/// The name of the file `url` serves: the last segment of its path, without
/// query or fragment (`https://example.com/v1/app.tar.gz?x=1` gives
/// `app.tar.gz`); empty when its path ends in `/` or it has none.
pub fn url_file_name(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    match rest.split_once('/') {
        Some((_, path)) => path.rsplit('/').next().unwrap_or_default(),
        None => "",
    }
}

/// Parses and checks one desired-state file, `file` (only used in
/// diagnostics and kept as [`ServiceFile::file`]), whose contents are
/// `text`.
pub fn parse_service_file(file: &str, text: &str) -> Result<ServiceFile, PipelineError> {
    let checked = check::app::service_file(file, text);
    match checked.file {
        Some(service) if checked.diagnostics.is_empty() => Ok(service),
        _ => Err(PipelineError { diagnostics: check::app::shown(vec![checked.diagnostics]) }),
    }
}

/// Parses and checks the files of an app's directory, each `(name, text)`,
/// and them together: no two name the same service or `port` (the second
/// of two is told, naming the first). The caller gives only the directory's
/// `*.yaml` and `*.yml` files (and skips the others): each given is read as
/// one service. Diagnostics come file by file in the order given (a git
/// tree lists them by name).
///
/// A problem with the set itself, none or more than
/// [`crate::MAX_APP_SERVICES`] files, is located at line 1, column 1 of
/// `dir`, the directory's name as the caller shows it (`deploy/`); with
/// too many no file is read.
pub fn parse_desired(dir: &str, files: &[(String, String)]) -> Result<DesiredState, PipelineError> {
    let at_dir = |message: String, hint: &str| PipelineError {
        diagnostics: vec![Diagnostic {
            file: dir.to_owned(),
            line: 1,
            column: 1,
            message,
            hint: Some(hint.to_owned()),
        }],
    };
    if files.is_empty() {
        return Err(at_dir(
            "the directory holds no .yaml files".to_owned(),
            "add one file per service, e.g. `web.yaml` with its `artifact:` and `service:`",
        ));
    }
    if files.len() > crate::MAX_APP_SERVICES {
        return Err(at_dir(
            format!(
                "the directory holds {} .yaml files, over the limit of {} services in one app",
                files.len(),
                crate::MAX_APP_SERVICES
            ),
            "split the services into several apps, each a directory of its own",
        ));
    }
    check::app::desired(files).map_err(|diagnostics| PipelineError { diagnostics })
}
