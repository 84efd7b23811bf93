//! Artifacts on the agent: before the first step (after the checkout), the
//! artifacts of the jobs an attempt needs are downloaded, checked against
//! their sha256 and unpacked into the workspace; after the last step
//! succeeds, the files the job's `artifacts: paths` select are packed into
//! one tar, uploaded, and named in the attempt's result.
//!
//! Unpacking is `drover_archive::unpack`, which never writes outside its
//! destination; here it unpacks into a staging directory beside the
//! workspace, which is then merged into the workspace without following a
//! symlink and without replacing anything already there (a checkout's file,
//! another job's artifact): such a clash fails the attempt, naming the path.
//! The transfers themselves are the agent client's ([`Transfer`]), over the
//! same mutual-TLS connection as the session; they survive a reconnect.
//! Each of a job's transfers names its attempt and carries its job token
//! ([`JobAuth`]); only a deployment's install ([`Transfer::fetch`]) names
//! none.

use std::path::{Path, PathBuf};

use super::JobAuth;
use crate::runas::StepUser;

/// A blob moved over the agent's connection to the coordinator.
#[async_trait::async_trait]
pub trait Transfer: Send + Sync {
    /// A deployment's install: writes the release's blob `sha256` (of
    /// `size` bytes) to the new file `dest`, checked against its digest.
    /// It names no attempt.
    async fn fetch(&self, sha256: &str, size: u64, dest: &Path) -> Result<(), String>;
    /// As [`Transfer::fetch`], for `job`: the artifacts of a job it needs.
    async fn fetch_artifact(&self, job: JobAuth<'_>, sha256: &str, size: u64, dest: &Path) -> Result<(), String>;
    /// Uploads the file `path` as `job`'s artifacts (or one of its cache's
    /// archives).
    async fn upload(&self, job: JobAuth<'_>, path: &Path, sha256: &str, size: u64) -> Result<(), String>;
    /// The cache entry `job` restores for `key` (or one of `restore_keys`
    /// matches), if any, and its scope's id.
    async fn restore_cache(
        &self,
        job: JobAuth<'_>,
        key: &str,
        restore_keys: &[String],
    ) -> Result<(Option<super::cache::Found>, String), String>;
    /// Writes archive `blob` of cache entry `key` (found for `job`) to the
    /// new file `dest`, checked against its digest.
    async fn fetch_cache(
        &self,
        job: JobAuth<'_>,
        key: &str,
        blob: &super::cache::BlobRef,
        dest: &Path,
    ) -> Result<(), String>;
    /// Records `blobs` (uploaded) as `job`'s cache under `key`: whether it
    /// was saved (not another's first), and the scope's id.
    async fn save_cache(
        &self,
        job: JobAuth<'_>,
        key: &str,
        blobs: &[super::cache::BlobRef],
    ) -> Result<(bool, String), String>;
}

/// An input of an attempt: another job's artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub job: String,
    pub sha256: String,
    pub size: u64,
}

/// What a job packs, from its pipeline's `artifacts:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub paths: Vec<String>,
    pub ignore_missing: bool,
    /// The coordinator's `--max-artifact-bytes`: packing stops there. 0:
    /// the archive's own limits only.
    pub max_bytes: u64,
    /// The coordinator's `--max-artifact-file-bytes`: one file past it
    /// stops packing. 0: the archive's own limit.
    pub max_file_bytes: u64,
}

/// A packed and uploaded artifact, for the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub sha256: String,
    pub size: u64,
    pub files: u32,
}

/// Downloads (for `job`) and unpacks one input into `workspace`; `scratch`
/// is a directory of the agent's beside it. Returns how many files it
/// added.
pub async fn deliver(
    transfer: &dyn Transfer,
    job: JobAuth<'_>,
    input: &Input,
    workspace: &Path,
    scratch: &Path,
    user: Option<&StepUser>,
) -> Result<usize, String> {
    let tar = scratch.join(format!("{}.tar", input.sha256));
    let staged = scratch.join(format!("{}.d", input.sha256));
    let needed = &input.job;
    tracing::info!(job = %needed, sha256 = %input.sha256, size = input.size, "downloading artifacts");
    transfer
        .fetch_artifact(job, &input.sha256, input.size, &tar)
        .await
        .map_err(|e| format!("cannot download the artifacts of {needed}: {e}"))?;
    let (tar2, staged2, workspace, user, want) =
        (tar.clone(), staged.clone(), workspace.to_path_buf(), user.cloned(), input.sha256.clone());
    let merged = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        let file = std::fs::File::open(&tar2).map_err(|e| format!("{}: {e}", tar2.display()))?;
        let options = drover_archive::UnpackOptions {
            expected_sha256: Some(want.parse().map_err(|e: drover_archive::Error| e.to_string())?),
            ..Default::default()
        };
        drover_archive::unpack(std::io::BufReader::new(file), &staged2, &options).map_err(|e| e.to_string())?;
        let moved = merge(&staged2, &workspace)?;
        if let Some(user) = &user {
            for path in &moved {
                std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
                    .map_err(|e| format!("cannot give {} to the run-as user: {e}", path.display()))?;
            }
        }
        Ok(moved.iter().filter(|p| p.is_file()).count())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|e| format!("cannot unpack the artifacts of {needed}: {e}"));
    let _ = tokio::fs::remove_file(&tar).await;
    let _ = tokio::fs::remove_dir_all(&staged).await;
    merged
}

/// Moves everything under `staged` into `workspace`: directories are
/// merged, files and links moved. Nothing is replaced, and no symlink in
/// the workspace is followed. Returns what it created, parents first.
pub fn merge(staged: &Path, workspace: &Path) -> Result<Vec<PathBuf>, String> {
    let mut made = Vec::new();
    merge_dir(staged, workspace, Path::new(""), &mut made, None)?;
    Ok(made)
}

/// As [`merge`], but what is there already wins: a clash keeps the file
/// (or link, or non-directory) in `dest` and skips the staged one, as a
/// cache restore does. Returns what it created and how many it skipped.
pub fn merge_keeping(staged: &Path, dest: &Path) -> Result<(Vec<PathBuf>, usize), String> {
    let (mut made, mut skipped) = (Vec::new(), 0);
    merge_dir(staged, dest, Path::new(""), &mut made, Some(&mut skipped))?;
    Ok((made, skipped))
}

/// Merges `staged/rel` into `workspace/rel`. `keep`: count clashes there
/// and skip them, rather than fail.
fn merge_dir(
    staged: &Path,
    workspace: &Path,
    rel: &Path,
    made: &mut Vec<PathBuf>,
    mut keep: Option<&mut usize>,
) -> Result<(), String> {
    let from_dir = staged.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&from_dir)
        .map_err(|e| format!("{}: {e}", from_dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", from_dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel = rel.join(entry.file_name());
        let (from, to) = (staged.join(&rel), workspace.join(&rel));
        let kind = entry.file_type().map_err(|e| format!("{}: {e}", from.display()))?;
        let there = std::fs::symlink_metadata(&to);
        if kind.is_dir() {
            match there {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) if keep.is_some() => {
                    **keep.as_mut().expect("checked") += 1;
                    continue;
                }
                Ok(_) => return Err(format!("{} is already in the workspace, and not a directory", rel.display())),
                Err(_) => {
                    std::fs::create_dir(&to).map_err(|e| format!("{}: {e}", to.display()))?;
                    let mode = std::fs::metadata(&from).map_err(|e| format!("{}: {e}", from.display()))?.permissions();
                    std::fs::set_permissions(&to, mode).map_err(|e| format!("{}: {e}", to.display()))?;
                    made.push(to.clone());
                }
            }
            merge_dir(staged, workspace, &rel, made, keep.as_deref_mut())?;
        } else {
            if there.is_ok()
                && let Some(skipped) = keep.as_mut()
            {
                **skipped += 1;
                continue;
            }
            if there.is_ok() {
                return Err(format!("{} is already in the workspace; an artifact does not replace it", rel.display()));
            }
            std::fs::rename(&from, &to).map_err(|e| format!("{}: {e}", to.display()))?;
            made.push(to);
        }
    }
    Ok(())
}

/// Packs what `spec` selects in `workspace` into `scratch/NAME.tar` and
/// uploads it as `job`'s. Returns what the result names.
pub async fn collect(
    transfer: &dyn Transfer,
    job: JobAuth<'_>,
    spec: &Spec,
    workspace: &Path,
    scratch: &Path,
) -> Result<Packed, String> {
    let tar = scratch.join("artifacts.tar");
    let (tar2, workspace, spec2) = (tar.clone(), workspace.to_path_buf(), spec.clone());
    let manifest = tokio::task::spawn_blocking(move || -> Result<drover_archive::Manifest, String> {
        let file = std::fs::File::create(&tar2).map_err(|e| format!("{}: {e}", tar2.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let if_no_files =
            if spec2.ignore_missing { drover_archive::IfNoFiles::Ignore } else { drover_archive::IfNoFiles::Error };
        let mut limits = drover_archive::Limits::default();
        if spec2.max_bytes > 0 {
            limits.max_total_bytes = limits.max_total_bytes.min(spec2.max_bytes);
            limits.max_file_bytes = limits.max_file_bytes.min(spec2.max_bytes);
        }
        if spec2.max_file_bytes > 0 {
            limits.max_file_bytes = limits.max_file_bytes.min(spec2.max_file_bytes);
        }
        let manifest =
            drover_archive::pack(&workspace, &spec2.paths, if_no_files, &limits, &mut out).map_err(|e| match e {
                drover_archive::Error::LimitExceeded { limit: drover_archive::Limit::MaxFileBytes, .. }
                    if spec2.max_file_bytes > 0 && limits.max_file_bytes == spec2.max_file_bytes =>
                {
                    format!("{e} (the coordinator's --max-artifact-file-bytes is {})", spec2.max_file_bytes)
                }
                drover_archive::Error::LimitExceeded { .. } if spec2.max_bytes > 0 => {
                    format!("{e} (the coordinator's --max-artifact-bytes is {})", spec2.max_bytes)
                }
                e => e.to_string(),
            })?;
        use std::io::Write;
        out.flush().map_err(|e| format!("{}: {e}", tar2.display()))?;
        Ok(manifest)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)?;
    let sha256 = manifest.sha256.to_string();
    let files = manifest.entries.iter().filter(|e| matches!(e.kind, drover_archive::EntryKind::File { .. })).count();
    let uploaded = transfer.upload(job, &tar, &sha256, manifest.bytes).await;
    let _ = tokio::fs::remove_file(&tar).await;
    uploaded.map_err(|e| format!("cannot upload the artifacts: {e}"))?;
    Ok(Packed { sha256, size: manifest.bytes, files: files as u32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_never_replaces_or_follows_what_is_there() {
        let base = std::env::temp_dir().join(format!("drover-merge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (staged, ws, outside) = (base.join("staged"), base.join("ws"), base.join("outside"));
        for d in [&staged, &ws, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(staged.join("dist/bin")).unwrap();
        std::fs::write(staged.join("dist/bin/app"), b"app").unwrap();
        std::fs::write(staged.join("top.txt"), b"top").unwrap();
        std::fs::create_dir_all(ws.join("dist")).unwrap();
        std::fs::write(ws.join("README"), b"mine").unwrap();
        let made = merge(&staged, &ws).unwrap();
        assert_eq!(std::fs::read(ws.join("dist/bin/app")).unwrap(), b"app");
        assert_eq!(std::fs::read(ws.join("top.txt")).unwrap(), b"top");
        assert_eq!(std::fs::read(ws.join("README")).unwrap(), b"mine");
        assert_eq!(made, vec![ws.join("dist/bin"), ws.join("dist/bin/app"), ws.join("top.txt")]);

        // (case, what the workspace has, what the artifact brings, the error)
        let cases: &[(&str, &str, &str)] = &[
            ("a file clashes", "README", "is already in the workspace; an artifact does not replace it"),
            ("a symlinked directory is not followed", "link/x", "is already in the workspace, and not a directory"),
        ];
        std::os::unix::fs::symlink(&outside, ws.join("link")).unwrap();
        for (case, path, error) in cases {
            let _ = std::fs::remove_dir_all(&staged);
            let file = staged.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, b"new").unwrap();
            let err = merge(&staged, &ws).unwrap_err();
            assert!(err.contains(error), "{case}: {err}");
        }
        assert_eq!(std::fs::read(ws.join("README")).unwrap(), b"mine");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written through the link");
        let _ = std::fs::remove_dir_all(&base);
    }
}
