//! The apps' side of git (`crate::apps`): reading a desired-state
//! directory at a revision, and committing a file back (image update
//! automation). Both work from the app's mirror under [`APP_MIRRORS`],
//! apart from the triggers' mirrors, one user at a time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{GitError, MIRROR_LOCKS, fetch_unreachable, git, mirror, mirror_name, unique};

/// The directory of the apps' mirrors, beside the scratch directory: apart
/// from the triggers' (which prune theirs by the repositories they poll).
pub const APP_MIRRORS: &str = "app-mirrors";

/// The desired-state files of an app at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub commit: String,
    /// The branch the revision named, if it named one.
    pub branch: Option<String>,
    /// Every `*.yaml` and `*.yml` file directly in the directory, by its
    /// path in the repository, with its text.
    pub files: Vec<(String, String)>,
}

/// Reads the YAML files directly in `dir` (`.` for the root) of `repo` at
/// `revision` (a branch, a tag, a commit, or `HEAD` for the default
/// branch), from the repository's mirror under [`APP_MIRRORS`], giving up
/// after `timeout`. A file over `max_bytes` is an error naming it.
pub async fn files_at(
    repo: &str,
    revision: &str,
    dir: &str,
    scratch: &Path,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Tree, GitError> {
    let root = scratch.with_file_name(APP_MIRRORS);
    let mirror_dir = root.join(mirror_name(repo));
    let lock = {
        let mut locks = MIRROR_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(mirror_dir.clone()).or_default().clone()
    };
    let _held = lock.lock().await;
    let result = async {
        mirror(repo, &root, &mirror_dir).await?;
        let d = mirror_dir.as_path();
        if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
            fetch_unreachable(d, revision).await?;
        }
        let spec = format!("{revision}^{{commit}}");
        let out = git(Some(d), &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec]).await?;
        if !out.status.success() {
            return Err(GitError::RefNotFound { repo: repo.to_string(), reference: revision.to_string() });
        }
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = git(Some(d), &["rev-parse", "--symbolic-full-name", "--end-of-options", revision]).await?;
        let full = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();
        let branch = full.strip_prefix("refs/heads/").map(str::to_string);
        let tree = if dir == "." { format!("{commit}:") } else { format!("{commit}:{dir}") };
        let out = git(Some(d), &["ls-tree", "-z", "-l", "--end-of-options", &tree]).await?;
        if !out.status.success() {
            return Err(GitError::Other(format!(
                "there is no directory {dir} at {revision} ({commit}) in {repo}; fix the app's --path, or commit \
                 the directory"
            )));
        }
        let mut files = Vec::new();
        for entry in out.stdout.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let Some((meta, name)) = entry.split_once('\t') else { continue };
            let mut meta = meta.split_whitespace();
            let (Some(_mode), Some(kind), Some(object), Some(size)) =
                (meta.next(), meta.next(), meta.next(), meta.next())
            else {
                continue;
            };
            if kind != "blob" || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            let path = if dir == "." { name.to_string() } else { format!("{dir}/{name}") };
            if size.parse::<usize>().is_ok_and(|n| n > max_bytes) {
                return Err(GitError::Other(format!(
                    "{path} at {commit} is {size} bytes, over the limit of {max_bytes} for a desired-state file"
                )));
            }
            let out = git(Some(d), &["cat-file", "blob", object]).await?;
            let text = String::from_utf8(out.stdout)
                .map_err(|_| GitError::Other(format!("{path} at {commit} is not UTF-8 text")))?;
            files.push((path, text));
        }
        Ok(Tree { commit, branch, files })
    };
    match tokio::time::timeout(timeout, result).await {
        Ok(result) => result,
        Err(_) => Err(GitError::Timeout { repo: repo.to_string(), timeout }),
    }
}

/// A file to commit onto a commit of an app's repository, and where to
/// push it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push<'a> {
    pub repo: &'a str,
    /// The commit the change goes on.
    pub base: &'a str,
    /// The file's path in the repository, and its new text.
    pub path: &'a str,
    pub text: &'a str,
    pub message: &'a str,
    /// The branch pushed to. Without `force` the push must fast-forward
    /// it: a branch that moved since `base` refuses it, and the caller
    /// tries again on the new head.
    pub branch: &'a str,
    pub force: bool,
    /// A private key file for ssh URLs (`GIT_SSH_COMMAND`), if any.
    pub ssh_key: Option<&'a Path>,
}

/// Commits `push.text` as `push.path` on `push.base`, as Drover, and pushes
/// it to `push.branch` of `push.repo`; the new commit. The work tree is a
/// throwaway clone of the mirror (sharing its objects), named so that the
/// next use of the mirror removes it if this one is cut short.
pub async fn commit_and_push(push: &Push<'_>, scratch: &Path, timeout: Duration) -> Result<String, GitError> {
    let root = scratch.with_file_name(APP_MIRRORS);
    let mirror_dir = root.join(mirror_name(push.repo));
    let lock = {
        let mut locks = MIRROR_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(mirror_dir.clone()).or_default().clone()
    };
    let _held = lock.lock().await;
    let work: PathBuf = root.join(format!("{}.tmp-work-{}-{}", mirror_name(push.repo), std::process::id(), unique()));
    let result = async {
        mirror(push.repo, &root, &mirror_dir).await?;
        fetch_unreachable(&mirror_dir, push.base).await?;
        let failed = |what: &str, out: &std::process::Output| {
            GitError::Other(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        };
        let (mirror_str, work_str) = (mirror_dir.to_string_lossy(), work.to_string_lossy());
        let out = git(None, &["clone", "--quiet", "--shared", "--no-checkout", "--", &mirror_str, &work_str]).await?;
        if !out.status.success() {
            return Err(failed("cannot make a work tree of the mirror", &out));
        }
        let out = git(Some(&work), &["checkout", "--quiet", "-B", "drover-update", push.base]).await?;
        if !out.status.success() {
            return Err(failed(&format!("cannot check out {}", push.base), &out));
        }
        tokio::fs::write(work.join(push.path), push.text)
            .await
            .map_err(|e| GitError::Other(format!("cannot write {}: {e}", push.path)))?;
        let mut args = vec!["-c", "user.name=Drover", "-c", "user.email=drover@localhost"];
        args.extend(["commit", "--quiet", "-m", push.message, "--", push.path]);
        let out = git(Some(&work), &args).await?;
        if !out.status.success() {
            return Err(failed(&format!("cannot commit {}", push.path), &out));
        }
        let out = git(Some(&work), &["rev-parse", "HEAD"]).await?;
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let refspec = format!("{}HEAD:refs/heads/{}", if push.force { "+" } else { "" }, push.branch);
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("-C").arg(&work).args(["push", "--quiet", "--", push.repo, &refspec]);
        cmd.env("GIT_TERMINAL_PROMPT", "0").stdin(std::process::Stdio::null()).kill_on_drop(true);
        if let Some(key) = push.ssh_key {
            let ssh = format!("ssh -i '{}' -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new", key.display());
            cmd.env("GIT_SSH_COMMAND", ssh);
        }
        let out = cmd.output().await.map_err(GitError::Spawn)?;
        if !out.status.success() {
            return Err(failed(&format!("cannot push to branch {} of {}", push.branch, push.repo), &out));
        }
        Ok(commit)
    };
    let result = match tokio::time::timeout(timeout, result).await {
        Ok(result) => result,
        Err(_) => Err(GitError::Timeout { repo: push.repo.to_string(), timeout }),
    };
    let _ = tokio::fs::remove_dir_all(&work).await;
    result
}
