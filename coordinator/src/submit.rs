//! Submitting a run, whoever asks: the CLI through the gRPC edge today;
//! webhooks, cron triggers and a web UI later, all through these two calls.
//!
//! [`prepare`] reads the pipeline (from the request, or from a git
//! repository at a ref, which it pins to a commit) and parses and validates
//! it; nothing is written. [`submit`] hands a prepared pipeline to the
//! leader's scheduler, which numbers the run and commits it. They are two
//! calls so that a caller can find the scheduler in between, as the gRPC
//! edge does: a bad pipeline is then refused by any coordinator, leader or
//! not, and the scheduler used is the one leading once a slow git read has
//! finished. A controller inside the leader, which holds the scheduler's
//! handle already, simply calls one after the other.
//!
//! The defaults for what a request leaves out (the file name, the ref)
//! live here, so every way of submitting gets the same ones. Errors are
//! [`SubmitError`]; `crate::api::status` turns them into gRPC codes.

use std::path::PathBuf;
use std::time::Duration;

use crate::core::machine::{RunId, Source};
use crate::core::rerun::{self, Rerun, RerunError, Scope};
use crate::git::{self, GitError};
use crate::records;
use crate::scheduler::{Handle, SchedError};
use crate::secrets::{SecretsError, Vault};
use crate::store::{Store, StoreError};
use drover_pipeline::{self as pipeline, Pipeline, PipelineError};

/// The file name of an inline pipeline that comes without one.
pub const DEFAULT_INLINE_FILE: &str = "pipeline.yml";
/// The pipeline file read from a repository when none is named.
pub const DEFAULT_GIT_FILE: &str = ".drover.yml";
/// The ref read from a repository when none is named.
pub const DEFAULT_REF: &str = "HEAD";

/// Where the pipeline comes from. `None` asks for the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitSource {
    /// The file's text, sent with the request (`drover run FILE`).
    Inline { file: Option<String>, yaml: String },
    /// A file in a git repository at a ref (`drover run --repo URL --ref REF`).
    Git { repo: String, reference: Option<String>, file: Option<String> },
}

/// How the coordinator reads pipelines from git.
#[derive(Debug, Clone)]
pub struct GitOptions {
    /// Where throwaway clones go.
    pub scratch: PathBuf,
    /// How long reading one pipeline may take.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The message names the CLI's flag: the CLI is where an empty
    /// repository comes from.
    #[error("--repo is empty")]
    EmptyRepo,
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("invalid pipeline:\n{0}")]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Sched(#[from] SchedError),
    /// The run to rerun is not in the store.
    #[error("run {0} not found")]
    RunNotFound(RunId),
    #[error(transparent)]
    Rerun(#[from] RerunError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secrets(SecretsError),
    /// Its deploy jobs' approvals cannot be made from its environments.
    #[error(transparent)]
    Approvals(crate::environments::EnvironmentsError),
}

/// A pipeline that is valid, and where it came from (for git, pinned to a
/// commit): ready for [`submit`].
#[derive(Debug, Clone)]
pub struct Prepared {
    pub pipeline: Pipeline,
    pub source: Source,
    /// The queue timeout of jobs that do not set their own; `None` for the
    /// coordinator's default.
    pub queue_timeout: Option<Duration>,
    /// For a rerun: the original, and the jobs whose results it reuses.
    pub rerun: Option<Rerun>,
}

/// A run the scheduler has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub run: RunId,
    /// The commit a run from git is pinned to.
    pub commit: Option<String>,
}

/// Reads `source` and validates the pipeline; writes nothing. A git source
/// is cloned under `git.scratch` and given up after `git.timeout`.
pub async fn prepare(source: SubmitSource, git: &GitOptions, vault: Option<&Vault>) -> Result<Prepared, SubmitError> {
    match source {
        SubmitSource::Inline { file, yaml } => {
            let file = file.unwrap_or_else(|| DEFAULT_INLINE_FILE.to_string());
            let pipeline = parse(&file, &yaml, vault).await?;
            Ok(Prepared {
                pipeline,
                source: Source { repo: None, commit: None, file, branch: None, tag: None, ..Default::default() },
                queue_timeout: None,
                rerun: None,
            })
        }
        SubmitSource::Git { repo, reference, file } => {
            if repo.is_empty() {
                return Err(SubmitError::EmptyRepo);
            }
            let reference = reference.unwrap_or_else(|| DEFAULT_REF.to_string());
            let file = file.unwrap_or_else(|| DEFAULT_GIT_FILE.to_string());
            let resolved = git::resolve(&repo, &reference, &file, &git.scratch, git.timeout).await?;
            let pipeline = parse(&file, &resolved.contents, vault).await?;
            Ok(Prepared {
                pipeline,
                source: Source {
                    repo: Some(repo),
                    commit: Some(resolved.commit),
                    file,
                    branch: resolved.branch,
                    tag: resolved.tag,
                    ..Default::default()
                },
                queue_timeout: None,
                rerun: None,
            })
        }
    }
}

/// Parses a pipeline file; one that declares secrets is parsed again
/// against the secrets that exist in `vault`, so that an unknown one is
/// refused at its `file:line:column` (a pipeline without secrets costs no
/// store read). The triggers controller parses what it read at a commit with it too.
pub(crate) async fn parse(file: &str, text: &str, vault: Option<&Vault>) -> Result<Pipeline, SubmitError> {
    let pipeline = pipeline::parse(file, text)?;
    let pipeline = match vault.filter(|_| pipeline.uses_secrets()) {
        None => pipeline,
        Some(vault) => {
            if let Some(why) = vault.key_problem() {
                let why = format!("pipeline {file} declares secrets, but {why}");
                return Err(SubmitError::Secrets(SecretsError::NoKey(why)));
            }
            let names = vault.names().await.map_err(SubmitError::Secrets)?;
            pipeline::parse_with(file, text, &pipeline::Known { secrets: Some(&names) })?
        }
    };
    Ok(pipeline)
}

/// Prepares a rerun of run `of` (`drover rerun`): its pipeline, at its
/// commit, with its queue timeout, reusing what [`rerun::plan`] says. The
/// original is read from the store, so any coordinator can prepare it.
pub async fn prepare_rerun(store: &dyn Store, of: RunId, scope: &Scope) -> Result<Prepared, SubmitError> {
    let original = records::load_run(store, of).await?.ok_or(SubmitError::RunNotFound(of))?;
    let reuse = rerun::plan(&original, scope)?
        .into_iter()
        .map(|job| {
            let artifact = original.jobs.get(&job).and_then(|j| j.artifact.clone());
            (job, artifact)
        })
        .collect();
    let record = original.record;
    Ok(Prepared {
        pipeline: record.pipeline,
        source: record.source,
        queue_timeout: (record.queue_timeout_ms > 0).then(|| Duration::from_millis(record.queue_timeout_ms)),
        rerun: Some(Rerun { of, reuse }),
    })
}

/// Hands `prepared` to the scheduler, which answers once the run is
/// committed. `traceparent` (W3C) makes the run's trace continue the
/// submitter's.
/// Deploy jobs to environments that require approval get its gate first
/// (`environments::gate_deploys`).
pub async fn submit(
    store: &dyn Store,
    sched: &Handle,
    mut prepared: Prepared,
    traceparent: Option<String>,
) -> Result<Submitted, SubmitError> {
    crate::environments::gate_deploys(store, &mut prepared.pipeline).await.map_err(|e| match e {
        crate::environments::EnvironmentsError::Store(e) => SubmitError::Store(e),
        other => SubmitError::Approvals(other),
    })?;
    let commit = prepared.source.commit.clone();
    let run =
        sched.submit(prepared.pipeline, prepared.source, traceparent, prepared.queue_timeout, prepared.rerun).await?;
    Ok(Submitted { run, commit })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const GOOD: &str = "name: p\njobs:\n  build:\n    steps:\n      - run: make\n";

    /// Options whose scratch directory is never used by these cases.
    fn no_git() -> GitOptions {
        GitOptions { scratch: std::env::temp_dir().join("drover-submit-unused"), timeout: Duration::from_secs(5) }
    }

    #[tokio::test]
    async fn inline_pipelines_are_parsed_with_the_default_file_name() {
        // (case, file given, the file name in the source and in diagnostics)
        let cases = [("no name", None, "pipeline.yml"), ("a name", Some("ci/build.yml"), "ci/build.yml")];
        for (case, file, want) in cases {
            let source = SubmitSource::Inline { file: file.map(str::to_string), yaml: GOOD.into() };
            let prepared = prepare(source, &no_git(), None).await.unwrap();
            let source =
                Source { repo: None, commit: None, file: want.into(), branch: None, tag: None, ..Default::default() };
            assert_eq!(prepared.source, source, "{case}");
            assert_eq!(prepared.pipeline.name, "p", "{case}");

            let source = SubmitSource::Inline { file: file.map(str::to_string), yaml: "name: p\n".into() };
            let err = prepare(source, &no_git(), None).await.unwrap_err();
            assert!(matches!(err, SubmitError::Pipeline(_)), "{case}: {err:?}");
            let message = err.to_string();
            assert!(message.starts_with(&format!("invalid pipeline:\n{want}:")), "{case}: {message}");
        }
    }

    #[tokio::test]
    async fn an_empty_repository_is_refused_before_git_runs() {
        let source = SubmitSource::Git { repo: String::new(), reference: None, file: None };
        let err = prepare(source, &no_git(), None).await.unwrap_err();
        assert!(matches!(err, SubmitError::EmptyRepo), "{err:?}");
        assert_eq!(err.to_string(), "--repo is empty");
    }

    /// Runs git in `dir`, which must succeed; its stdout (the triggers'
    /// tests use it too).
    pub(crate) fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[tokio::test]
    async fn a_git_source_defaults_to_the_drover_file_at_head_and_is_pinned_to_its_commit() {
        let dir = crate::controller::tests::TestDir::new("submit-git");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "--quiet", "-b", "main"]);
        std::fs::write(repo.join(".drover.yml"), GOOD).unwrap();
        std::fs::write(repo.join("bad.yml"), "name: p\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "--quiet", "-m", "one"]);
        let head = git(&repo, &["rev-parse", "HEAD"]);
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let opts = GitOptions { scratch, timeout: Duration::from_secs(30) };
        let url = repo.to_string_lossy().into_owned();

        let source = SubmitSource::Git { repo: url.clone(), reference: None, file: None };
        let prepared = prepare(source, &opts, None).await.unwrap();
        assert_eq!(
            prepared.source,
            Source {
                repo: Some(url.clone()),
                commit: Some(head.clone()),
                file: ".drover.yml".into(),
                branch: Some("main".into()),
                tag: None,
                ..Default::default()
            }
        );

        // (case, ref, file, what the error says)
        let cases = [
            ("no such ref", Some("nope"), None, "ref \"nope\" not found in"),
            ("no such file", None, Some("missing.yml"), "missing.yml not found at HEAD"),
            ("a bad file", Some(head.as_str()), Some("bad.yml"), "invalid pipeline:\nbad.yml:"),
        ];
        for (case, reference, file, want) in cases {
            let source = SubmitSource::Git {
                repo: url.clone(),
                reference: reference.map(str::to_string),
                file: file.map(str::to_string),
            };
            let err = prepare(source, &opts, None).await.unwrap_err();
            assert!(err.to_string().contains(want), "{case}: {err}");
        }
        assert_eq!(std::fs::read_dir(&opts.scratch).unwrap().count(), 0, "clones are removed");
    }
}
