//! The apps' side of git (`crate::apps`): reading a desired-state
//! directory at a revision, and committing a file back (image update
//! automation). Both work from the app's mirror under [`APP_MIRRORS`],
//! apart from the triggers' mirrors, one user at a time.
//!
//! Reading is cheap when nothing changed, since a leader may follow a
//! thousand apps of one repository: a mirror fetched since the caller's
//! `fresh_since` is not fetched again (one fetch serves every app of the
//! repository due in the same tick); a branch (or `HEAD`) is read from the
//! mirror's ref files rather than by a git process; and a directory's
//! files at a commit are kept in memory ([`MAX_CACHED_TREES`] of them), so
//! an app whose commit did not move costs no process at all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::{GitError, MIRROR_LOCKS, SshAccess, fetch_unreachable, git, git_over, mirror, mirror_name, unique};

/// The directory of the apps' mirrors, beside the scratch directory: apart
/// from the triggers' (which prune theirs by the repositories they poll).
pub const APP_MIRRORS: &str = "app-mirrors";

/// The most (mirror, commit, directory) listings kept in memory; past it
/// they are all dropped and read again as needed.
pub const MAX_CACHED_TREES: usize = 4096;

/// When each mirror's last fetch began.
static FETCHED: LazyLock<Mutex<HashMap<PathBuf, Instant>>> = LazyLock::new(Default::default);

/// (mirror, commit, directory).
type TreeKey = (PathBuf, String, String);
/// (path, text) of each file.
type Files = Vec<(String, String)>;

/// A directory's files at a commit.
static TREES: LazyLock<Mutex<HashMap<TreeKey, Files>>> = LazyLock::new(Default::default);

/// The commit a branch (or `HEAD`) of the mirror at `dir` names, read from
/// its ref files, with the branch's name; `None` when git itself must say
/// (a tag, a commit id, a name that is also a tag, a ref git packed in a
/// way this does not read).
fn local_ref(dir: &Path, revision: &str) -> Option<(String, String)> {
    let read = |name: &str| -> Option<String> {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            return Some(text.trim().to_string());
        }
        let packed = std::fs::read_to_string(dir.join("packed-refs")).ok()?;
        packed.lines().find_map(|line| {
            let (sha, refname) = line.split_once(' ')?;
            (refname == name).then(|| sha.to_string())
        })
    };
    let exists = |name: &str| dir.join(name).exists() || read(name).is_some();
    let branch = if revision == "HEAD" {
        let head = std::fs::read_to_string(dir.join("HEAD")).ok()?;
        head.trim().strip_prefix("ref: refs/heads/")?.to_string()
    } else {
        let plain = revision.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
            && revision.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
        // git prefers these to a branch of the same name.
        if !plain || exists(revision) || exists(&format!("refs/{revision}")) || exists(&format!("refs/tags/{revision}"))
        {
            return None;
        }
        revision.to_string()
    };
    let commit = read(&format!("refs/heads/{branch}"))?;
    (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())).then_some((commit, branch))
}

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
    (repo, ssh): (&str, Option<&SshAccess>),
    revision: &str,
    dir: &str,
    scratch: &Path,
    timeout: Duration,
    max_bytes: usize,
    fresh_since: Option<Instant>,
) -> Result<Tree, GitError> {
    let root = scratch.with_file_name(APP_MIRRORS);
    let mirror_dir = root.join(mirror_name(repo));
    let lock = {
        let mut locks = MIRROR_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(mirror_dir.clone()).or_default().clone()
    };
    let _held = lock.lock().await;
    let result = async {
        let fresh = {
            let fetched = FETCHED.lock().unwrap_or_else(|e| e.into_inner());
            fresh_since.is_some_and(|since| fetched.get(&mirror_dir).is_some_and(|at| *at >= since))
        };
        if !fresh || !mirror_dir.join("HEAD").exists() {
            let started = Instant::now();
            mirror(repo, &root, &mirror_dir, ssh).await?;
            FETCHED.lock().unwrap_or_else(|e| e.into_inner()).insert(mirror_dir.clone(), started);
        }
        let d = mirror_dir.as_path();
        let cached = |commit: &str| {
            let trees = TREES.lock().unwrap_or_else(|e| e.into_inner());
            trees.get(&(mirror_dir.clone(), commit.to_string(), dir.to_string())).cloned()
        };
        let is_id = revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit());
        let (commit, branch) = match local_ref(d, revision) {
            Some((commit, branch)) => (commit, Some(branch)),
            // A commit id read before (a pin) needs no git either.
            None if is_id && cached(revision).is_some() => (revision.to_string(), None),
            None => {
                if is_id {
                    fetch_unreachable(d, revision, ssh).await?;
                }
                let spec = format!("{revision}^{{commit}}");
                let out = git(Some(d), &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec]).await?;
                if !out.status.success() {
                    return Err(GitError::RefNotFound { repo: repo.to_string(), reference: revision.to_string() });
                }
                let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let out = git(Some(d), &["rev-parse", "--symbolic-full-name", "--end-of-options", revision]).await?;
                let full = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();
                (commit, full.strip_prefix("refs/heads/").map(str::to_string))
            }
        };
        if let Some(files) = cached(&commit) {
            return Ok(Tree { commit, branch, files });
        }
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
        let mut trees = TREES.lock().unwrap_or_else(|e| e.into_inner());
        if trees.len() >= MAX_CACHED_TREES {
            trees.clear();
        }
        trees.insert((mirror_dir.clone(), commit.clone(), dir.to_string()), files.clone());
        drop(trees);
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
    /// The deploy key, for an ssh URL.
    pub ssh: Option<&'a SshAccess>,
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
        mirror(push.repo, &root, &mirror_dir, push.ssh).await?;
        fetch_unreachable(&mirror_dir, push.base, push.ssh).await?;
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
        let out = git_over(Some(&work), &["push", "--quiet", "--", push.repo, &refspec], push.ssh).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::tests::TestDir;
    use crate::submit::tests::git as run;

    #[tokio::test]
    async fn a_fresh_mirror_is_not_fetched_again_and_branches_are_read_without_git() {
        let dir = TestDir::new("git-apps");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("deploy")).unwrap();
        run(&repo, &["init", "--quiet", "-b", "main"]);
        std::fs::write(repo.join("deploy/web.yaml"), "one\n").unwrap();
        std::fs::write(repo.join("deploy/notes.txt"), "not yaml\n").unwrap();
        run(&repo, &["add", "."]);
        run(&repo, &["commit", "--quiet", "-m", "one"]);
        run(&repo, &["tag", "v1"]);
        run(&repo, &["branch", "v1-branch"]);
        let first = run(&repo, &["rev-parse", "HEAD"]);
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let url = format!("file://{}", repo.display());
        let read = |revision: &'static str, since: Option<Instant>| {
            let (url, scratch) = (url.clone(), scratch.clone());
            async move { files_at((&url, None), revision, "deploy", &scratch, Duration::from_secs(30), 1024, since).await }
        };
        let start = Instant::now();
        let tree = read("HEAD", Some(start)).await.unwrap();
        assert_eq!((tree.commit.as_str(), tree.branch.as_deref()), (first.as_str(), Some("main")));
        assert_eq!(tree.files, [("deploy/web.yaml".to_string(), "one\n".to_string())], "YAML files only");

        // Pushed meanwhile: a read fresh since `start` does not fetch; a
        // later one does.
        std::fs::write(repo.join("deploy/web.yaml"), "two\n").unwrap();
        run(&repo, &["commit", "--quiet", "-am", "two"]);
        let second = run(&repo, &["rev-parse", "HEAD"]);
        assert_eq!(read("main", Some(start)).await.unwrap().commit, first);
        let tree = read("main", Some(Instant::now())).await.unwrap();
        assert_eq!((tree.commit.as_str(), tree.files[0].1.as_str()), (second.as_str(), "two\n"));

        // The mirror's ref files say what a branch names; a name that is
        // also a tag, a tag, a commit id, and nothing are git's to say.
        let mirror = dir.path().join(APP_MIRRORS).join(mirror_name(&url));
        assert_eq!(local_ref(&mirror, "main"), Some((second.clone(), "main".to_string())));
        assert_eq!(local_ref(&mirror, "HEAD"), Some((second.clone(), "main".to_string())));
        assert_eq!(local_ref(&mirror, "v1-branch"), Some((first.clone(), "v1-branch".to_string())));
        for revision in ["v1", "nope", "../x", first.as_str()] {
            assert_eq!(local_ref(&mirror, revision), None, "{revision}");
        }
        let tag = read("v1", None).await.unwrap();
        assert_eq!((tag.commit.as_str(), tag.branch), (first.as_str(), None));
        let err = read("nope", None).await.unwrap_err().to_string();
        assert!(err.contains("\"nope\" not found"), "{err}");

        // Once no app follows the repository, its mirror goes.
        let root = dir.path().join(APP_MIRRORS);
        assert_eq!(super::super::prune_mirrors_in(&root, std::slice::from_ref(&url)).await, 0);
        assert_eq!(super::super::prune_mirrors_in(&root, &[]).await, 1);
        assert!(!mirror.exists());
    }
}
