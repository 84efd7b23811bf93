//! Reading a pipeline file from a git repository at a ref, with the git CLI.
//!
//! The coordinator makes a throwaway bare clone, resolves the ref to a commit
//! SHA and reads the file from that commit, so the run is pinned to exactly
//! what the user named at the moment of submission. Agents later check out
//! the same SHA.
//!
//! The triggers controller (`crate::triggers`) lists a repository's heads
//! with [`ls_remote`], and reads the pipeline at a commit it already knows,
//! with the files changed since another, with [`at_commit`].

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

mod apps;
mod ssh;

pub use apps::{APP_MIRRORS, Push, Tree, commit_and_push, files_at};
pub use ssh::SshAccess;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0}; install git on the coordinator's host")]
    Spawn(std::io::Error),
    #[error("cannot clone {repo}: {stderr}")]
    Clone { repo: String, stderr: String },
    #[error("cannot list the branches and tags of {repo}: {stderr}; check the URL and the coordinator's access to it")]
    List { repo: String, stderr: String },
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
    git_over(dir, args, None).await
}

/// As [`git`], for a command that talks to a remote: over ssh with
/// `ssh`'s key when given.
async fn git_over(
    dir: Option<&Path>,
    args: &[&str],
    ssh: Option<&SshAccess>,
) -> Result<std::process::Output, GitError> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    if let Some(ssh) = ssh {
        cmd.env("GIT_SSH_COMMAND", ssh.command());
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(GitError::Spawn)
}

/// A bare clone of `repo` into `dir`.
async fn bare_clone(repo: &str, dir: &str) -> Result<(), GitError> {
    let out = git(None, &["clone", "--bare", "--quiet", "--", repo, dir]).await?;
    if !out.status.success() {
        return Err(GitError::Clone {
            repo: repo.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
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
        bare_clone(repo, &dir_str).await?;
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

/// Lists `repo`'s HEAD, branches and tags (`git ls-remote --symref`),
/// giving up after `timeout`; the output as git printed it
/// (`crate::core::triggers::parse_ls_remote` reads it).
pub async fn ls_remote(repo: &str, timeout: Duration) -> Result<String, GitError> {
    let args = ["ls-remote", "--symref", "--", repo, "HEAD", "refs/heads/*", "refs/tags/*"];
    let out = match tokio::time::timeout(timeout, git(None, &args)).await {
        Ok(out) => out?,
        Err(_) => return Err(GitError::Timeout { repo: repo.to_string(), timeout }),
    };
    if !out.status.success() {
        return Err(GitError::List {
            repo: repo.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    String::from_utf8(out.stdout).map_err(|_| GitError::Other(format!("git ls-remote {repo} printed non-UTF-8 refs")))
}

/// What the changed files of a start are counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// None: a new branch, a tag, a schedule.
    None,
    /// The commit the branch was at before (a push).
    Commit(String),
    /// Where the commit forked from this branch (a pull request's target).
    ForkOf(String),
}

/// A pipeline file read at a commit, and the files changed since the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtCommit {
    pub contents: String,
    /// `None` when there is no base, or git could not compare (a base that
    /// is no longer in the repository, after a force-push).
    pub changed: Option<Vec<String>>,
}

/// Reads `file` at `commit` of `repo`, and the files changed between
/// `base` and it, giving up after `timeout`. It reads from the
/// repository's mirror beside `scratch` (`git-mirrors/`, see [`mirror`]),
/// so a push costs a fetch of what is new, not a clone of everything.
pub async fn at_commit(
    repo: &str,
    commit: &str,
    file: &str,
    base: &Base,
    scratch: &Path,
    timeout: Duration,
) -> Result<AtCommit, GitError> {
    let root = scratch.with_file_name(MIRRORS);
    let dir = root.join(mirror_name(repo));
    // One user of a mirror at a time, in this process.
    let lock = {
        let mut locks = MIRROR_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(dir.clone()).or_default().clone()
    };
    let _held = lock.lock().await;
    let result = async {
        mirror(repo, &root, &dir, None).await?;
        fetch_unreachable(&dir, commit, None).await?;
        let object = format!("{commit}:{file}");
        let out = git(Some(&dir), &["show", "--end-of-options", &object]).await?;
        if !out.status.success() {
            // `commit` is a commit id (checked by the caller), never an option.
            let exists = git(Some(&dir), &["cat-file", "-e", &format!("{commit}^{{commit}}")]).await?;
            if !exists.status.success() {
                return Err(GitError::RefNotFound { repo: repo.to_string(), reference: commit.to_string() });
            }
            return Err(GitError::FileNotFound {
                repo: repo.to_string(),
                reference: commit.to_string(),
                commit: commit.to_string(),
                file: file.to_string(),
            });
        }
        let contents = String::from_utf8(out.stdout)
            .map_err(|_| GitError::Other(format!("{file} at {commit} is not UTF-8 text")))?;
        let range = match base {
            Base::None => None,
            Base::Commit(old) => Some(format!("{old}..{commit}")),
            Base::ForkOf(branch) => Some(format!("refs/heads/{branch}...{commit}")),
        };
        let changed = match range {
            None => None,
            Some(range) => {
                let out = git(Some(&dir), &["diff", "--name-only", "-z", "--end-of-options", &range]).await?;
                // A base git cannot find (force-pushed away) compares to
                // nothing: the start is not filtered by paths.
                out.status.success().then(|| {
                    out.stdout
                        .split(|b| *b == 0)
                        .filter(|p| !p.is_empty())
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect()
                })
            }
        };
        Ok(AtCommit { contents, changed })
    };
    match tokio::time::timeout(timeout, result).await {
        Ok(result) => result,
        Err(_) => Err(GitError::Timeout { repo: repo.to_string(), timeout }),
    }
}

/// The directory of the mirrors, beside the scratch directory.
const MIRRORS: &str = "git-mirrors";

static MIRROR_LOCKS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>>,
> = std::sync::LazyLock::new(Default::default);

/// Removes the mirrors beside `scratch` of every URL not in `urls` (the
/// repositories that were removed), skipping one in use. Returns how many
/// went.
pub async fn prune_mirrors(scratch: &Path, urls: &[String]) -> usize {
    prune_mirrors_in(&scratch.with_file_name(MIRRORS), urls).await
}

/// [`prune_mirrors`] of the mirrors in `root`.
pub async fn prune_mirrors_in(root: &Path, urls: &[String]) -> usize {
    let root = root.to_path_buf();
    let keep: std::collections::HashSet<String> = urls.iter().map(|u| mirror_name(u)).collect();
    let Ok(mut entries) = tokio::fs::read_dir(&root).await else { return 0 };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let base = name.split_once(".tmp-").map_or(name.as_str(), |(base, _)| base);
        if keep.contains(base) {
            continue;
        }
        let dir = entry.path();
        let lock = {
            let mut locks = MIRROR_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(root.join(base)).or_default().clone()
        };
        let Ok(_held) = lock.try_lock() else { continue };
        if tokio::fs::remove_dir_all(&dir).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A mirror's directory name: a hash of the URL, so any URL is a safe name.
fn mirror_name(repo: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(repo.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Brings the mirror of `repo` at `dir` up to date: fetched (every ref,
/// pruned) when it exists, else cloned (`--mirror`) into a temporary
/// directory and renamed into place, so a clone cut short never looks
/// like a mirror. A mirror that no longer fetches (damaged, or the URL's
/// history rewritten beyond repair) is cloned again.
async fn mirror(repo: &str, root: &Path, dir: &Path, ssh: Option<&SshAccess>) -> Result<(), GitError> {
    // What a clone cut short (a timeout, a crash) left.
    let name = mirror_name(repo);
    if let Ok(mut entries) = tokio::fs::read_dir(root).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            if entry.file_name().to_string_lossy().starts_with(&format!("{name}.tmp-")) {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            }
        }
    }
    if dir.join("HEAD").exists() {
        let out = git_over(Some(dir), &["fetch", "--quiet", "--prune", "origin"], ssh).await?;
        if out.status.success() {
            return Ok(());
        }
        tracing::warn!(repo, dir = %dir.display(), stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "a mirror does not fetch; cloning it again");
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
    tokio::fs::create_dir_all(root)
        .await
        .map_err(|e| GitError::Other(format!("cannot create {}: {e}", root.display())))?;
    let tmp = root.join(format!("{name}.tmp-{}-{}", std::process::id(), unique()));
    let tmp_str = tmp.to_string_lossy().into_owned();
    let out = git_over(None, &["clone", "--mirror", "--quiet", "--", repo, &tmp_str], ssh).await?;
    if !out.status.success() {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        return Err(GitError::Clone {
            repo: repo.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let _ = tokio::fs::remove_dir_all(dir).await;
    tokio::fs::rename(&tmp, dir)
        .await
        .map_err(|e| GitError::Other(format!("cannot move {} into place: {e}", tmp.display())))
}

/// Fetches `commit` by its id when the clone lacks it: a pull request from
/// a fork, whose head no branch holds, only `refs/pull/N/head` (GitHub,
/// Gitea) or `refs/merge-requests/N/head` (GitLab). Servers that let a
/// client fetch any commit a ref reaches (protocol v2, and those forges)
/// send it; a failure is left to the read that follows, which says the
/// commit was not found.
async fn fetch_unreachable(dir: &Path, commit: &str, ssh: Option<&SshAccess>) -> Result<(), GitError> {
    let spec = format!("{commit}^{{commit}}");
    if git(Some(dir), &["cat-file", "-e", &spec]).await?.status.success() {
        return Ok(());
    }
    // `commit` is a full commit id (checked by the caller), never an option.
    let _ = git_over(Some(dir), &["fetch", "--quiet", "origin", commit], ssh).await?;
    Ok(())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::tests::TestDir;
    use crate::submit::tests::git as run;

    #[tokio::test]
    async fn reads_come_from_a_mirror_that_fetches_what_is_new_and_heals() {
        let dir = TestDir::new("git-mirror");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        run(&repo, &["init", "--quiet", "-b", "main"]);
        std::fs::write(repo.join("f.yml"), "one\n").unwrap();
        run(&repo, &["add", "."]);
        run(&repo, &["commit", "--quiet", "-m", "one"]);
        let first = run(&repo, &["rev-parse", "HEAD"]);
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let url = format!("file://{}", repo.display());
        let t = Duration::from_secs(30);

        let read = at_commit(&url, &first, "f.yml", &Base::None, &scratch, t).await.unwrap();
        assert_eq!(read.contents, "one\n");
        let mirror = dir.path().join(MIRRORS).join(mirror_name(&url));
        assert!(mirror.join("HEAD").exists(), "the mirror stays");

        // A new commit arrives by a fetch into the same mirror.
        std::fs::write(repo.join("f.yml"), "two\n").unwrap();
        run(&repo, &["commit", "--quiet", "-am", "two"]);
        let second = run(&repo, &["rev-parse", "HEAD"]);
        let read = at_commit(&url, &second, "f.yml", &Base::Commit(first.clone()), &scratch, t).await.unwrap();
        assert_eq!((read.contents.as_str(), read.changed), ("two\n", Some(vec!["f.yml".to_string()])));

        // A damaged mirror is cloned again.
        std::fs::remove_dir_all(mirror.join("objects")).unwrap();
        let read = at_commit(&url, &second, "f.yml", &Base::None, &scratch, t).await.unwrap();
        assert_eq!(read.contents, "two\n");
        let left: Vec<String> = std::fs::read_dir(dir.path().join(MIRRORS))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [mirror_name(&url)], "no temporary clone left behind");

        // Once the repository is gone, so is its mirror; others stay.
        assert_eq!(prune_mirrors(&scratch, std::slice::from_ref(&url)).await, 0);
        assert!(mirror.exists());
        assert_eq!(prune_mirrors(&scratch, &["file:///elsewhere".to_string()]).await, 1);
        assert!(!mirror.exists());
    }
}
