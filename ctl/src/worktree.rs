//! The git work tree the CLI runs in: `drover run` with no file runs the
//! repository's `.drover.yml` at HEAD, and a run from a local repository
//! (that, or `--repo .`) warns when the work tree has changes that are not
//! committed, since the run sees only the commit.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir`; its trimmed stdout, or `None` when git is missing or
/// says no (not a repository).
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The top of the work tree that `dir` is in, if it is in one.
pub fn top(dir: &Path) -> Option<PathBuf> {
    git(dir, &["rev-parse", "--show-toplevel"]).filter(|t| !t.is_empty()).map(PathBuf::from)
}

/// What a run from the repository at `dir`, at `reference`, leaves out:
/// `None` when the work tree is clean (or `dir` is not a local work tree,
/// or the ref is not the checked-out HEAD); else a warning that says so.
pub fn uncommitted(dir: &Path, reference: &str) -> Option<String> {
    let head = git(dir, &["rev-parse", "HEAD"])?;
    let named = git(dir, &["rev-parse", "--verify", "--quiet", &format!("{reference}^{{commit}}")])?;
    if named != head {
        return None;
    }
    let status = git(dir, &["status", "--porcelain", "--untracked-files=no"])?;
    let changed = status.lines().count();
    (changed > 0).then(|| {
        format!(
            "warning: {changed} file{} in {} changed since the last commit; the run uses {} ({}), without them: \
             commit first to run them",
            if changed == 1 { "" } else { "s" },
            dir.display(),
            reference,
            &head[..12.min(head.len())]
        )
    })
}
