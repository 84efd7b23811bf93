//! Reading a pipeline file from a git repository at a ref, with the git CLI.
//!
//! The coordinator makes a throwaway bare clone, resolves the ref to a commit
//! SHA and reads the file from that commit, so the run is pinned to exactly
//! what the user named at the moment of submission. Agents later check out
//! the same SHA.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0}; install git on the coordinator's host")]
    Spawn(std::io::Error),
    #[error("cannot clone {repo}: {stderr}")]
    Clone { repo: String, stderr: String },
    #[error("ref {reference:?} not found in {repo}; name a branch, a tag or a commit SHA that exists there")]
    RefNotFound { repo: String, reference: String },
    #[error(
        "{file} not found at {reference} ({commit}) in {repo}; pass --file with the pipeline's path in the repository"
    )]
    FileNotFound { repo: String, reference: String, commit: String, file: String },
    #[error(
        "git did not finish within {}s reading {repo}; check that the URL is right and the server answers, \
         or raise the coordinator's --git-timeout",
        timeout.as_secs_f64()
    )]
    Timeout { repo: String, timeout: Duration },
    #[error("{0}")]
    Other(String),
}

/// A pipeline file read from a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub commit: String,
    pub contents: String,
    /// The branch or the tag the reference named (`main`, `v1.2`), if it
    /// named one; a commit id names neither.
    pub branch: Option<String>,
    pub tag: Option<String>,
}

async fn git(dir: Option<&Path>, args: &[&str]) -> Result<std::process::Output, GitError> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(GitError::Spawn)
}

/// Resolves `reference` in `repo` and reads `file` at that commit, giving
/// up after `timeout` (a server that never answers would otherwise hold the
/// submit, and a git process, for ever; git is killed when dropped).
/// `scratch` is a directory the function may use and leaves empty.
pub async fn resolve(
    repo: &str,
    reference: &str,
    file: &str,
    scratch: &Path,
    timeout: Duration,
) -> Result<Resolved, GitError> {
    let dir = scratch.join(format!("resolve-{}-{}", std::process::id(), unique()));
    let dir_str = dir.to_string_lossy().into_owned();
    let result = async {
        let out = git(None, &["clone", "--bare", "--quiet", "--", repo, &dir_str]).await?;
        if !out.status.success() {
            return Err(GitError::Clone {
                repo: repo.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let spec = format!("{reference}^{{commit}}");
        let out = git(Some(&dir), &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec]).await?;
        if !out.status.success() {
            return Err(GitError::RefNotFound { repo: repo.to_string(), reference: reference.to_string() });
        }
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // What the reference names: a branch (HEAD names the default one),
        // a tag, or neither.
        let out = git(Some(&dir), &["rev-parse", "--symbolic-full-name", "--end-of-options", reference]).await?;
        // (This git echoes `--end-of-options` on a line of its own first.)
        let full = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();
        let branch = full.strip_prefix("refs/heads/").map(str::to_string);
        let tag = full.strip_prefix("refs/tags/").map(str::to_string);
        let object = format!("{commit}:{file}");
        let out = git(Some(&dir), &["show", &object]).await?;
        if !out.status.success() {
            return Err(GitError::FileNotFound {
                repo: repo.to_string(),
                reference: reference.to_string(),
                commit,
                file: file.to_string(),
            });
        }
        let contents = String::from_utf8(out.stdout)
            .map_err(|_| GitError::Other(format!("{file} at {commit} is not UTF-8 text")))?;
        Ok(Resolved { commit, contents, branch, tag })
    };
    let result = match tokio::time::timeout(timeout, result).await {
        Ok(result) => result,
        Err(_) => Err(GitError::Timeout { repo: repo.to_string(), timeout }),
    };
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
