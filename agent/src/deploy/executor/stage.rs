//! Getting a release onto the node: the job's artifact archive downloaded
//! (checked by digest), unpacked into a staging directory (never outside
//! it: `drover-archive`), the release root picked out of it by the
//! release's path, and installed with [`Releases::install_dir`]. An
//! artifact by URL comes the same way (the coordinator fetched it into its
//! blob store), as the file itself rather than an archive.
//!
//! The root, from the path inside the archive: a directory is the root; a
//! `.tar` file is unpacked as the root by `drover-archive` (which refuses
//! links leaving the tree, devices and bombs, naming the entry); a
//! `.tar.gz` or `.tgz` file the same, read through `gzip -dc` (no gzip
//! library is in the tree; gzip is on every host that runs `tar czf`); any
//! other file becomes the root's one file, under its own name.

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use drover_archive::UnpackOptions;

use super::ReleaseRef;
use crate::deploy::releases::{Installed, Release, Releases};
use crate::exec::artifacts::Transfer;

/// Downloads and installs `release` unless it is installed already (same
/// version, same digest).
pub(super) async fn install(
    transfer: &dyn Transfer,
    releases: &Releases,
    release: &ReleaseRef,
) -> Result<Installed, String> {
    let record = Release {
        version: release.version.clone(),
        digest: release.sha256.clone(),
        run: (!release.run_id.is_empty()).then(|| release.run_id.clone()),
        commit: (!release.commit.is_empty()).then(|| release.commit.clone()),
        installed_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default(),
    };
    if releases.installed(&record).map_err(|e| e.to_string())? {
        return Ok(Installed::Already);
    }
    let scratch = releases.dir().join("staging");
    let fresh = scratch.clone();
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&fresh);
        std::fs::create_dir_all(&fresh).map_err(|e| format!("cannot create {}: {e}", fresh.display()))
    })
    .await
    .map_err(|e| e.to_string())??;
    let blob = scratch.join("artifact.tar");
    let fetched = transfer
        .fetch(&release.sha256, release.size, &blob)
        .await
        .map_err(|e| format!("cannot download release {} ({}): {e}", release.version, release.sha256));
    let result = match fetched {
        Ok(()) => {
            let (releases, release, scratch) = (releases.clone(), release.clone(), scratch.clone());
            tokio::task::spawn_blocking(move || -> Result<Installed, String> {
                let root = prepare(&scratch, &blob, &release)?;
                releases.install_dir(&record, &root).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    result
}

/// Unpacks `blob` (checked against the release's digest) under `scratch`
/// and returns the release root made from it. An artifact by URL is the
/// file itself (its digest checked by the transfer): it is the root's
/// source as a file of that name in an archive would be.
fn prepare(scratch: &Path, blob: &Path, release: &ReleaseRef) -> Result<PathBuf, String> {
    let unpacked = scratch.join("artifact");
    if !release.url.is_empty() {
        let name =
            Path::new(&release.path).file_name().filter(|n| Path::new(n) == Path::new(&release.path)).ok_or_else(
                || format!("release {} from {} has no file name: {:?}", release.version, release.url, release.path),
            )?;
        std::fs::create_dir_all(&unpacked).map_err(|e| format!("cannot create {}: {e}", unpacked.display()))?;
        std::fs::rename(blob, unpacked.join(name)).map_err(|e| format!("cannot move {}: {e}", blob.display()))?;
        return root(&unpacked, &release.path, &scratch.join("root"));
    }
    let expected = release.sha256.parse().map_err(|e: drover_archive::Error| e.to_string())?;
    let file = std::fs::File::open(blob).map_err(|e| format!("{}: {e}", blob.display()))?;
    let options = UnpackOptions { expected_sha256: Some(expected), ..Default::default() };
    drover_archive::unpack(std::io::BufReader::new(file), &unpacked, &options)
        .map_err(|e| format!("cannot unpack the artifact of release {}: {e}", release.version))?;
    root(&unpacked, &release.path, &scratch.join("root"))
}

/// The release root for `path` inside `unpacked`; `out` is where one is
/// made when the path is not a directory.
pub(super) fn root(unpacked: &Path, path: &str, out: &Path) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for part in Path::new(path).components() {
        match part {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            _ => return Err(format!("release path {path:?} must be relative and stay inside the artifact")),
        }
    }
    let target = unpacked.join(&rel);
    let meta = std::fs::symlink_metadata(&target)
        .map_err(|_| format!("the artifact holds no {path:?}; name a file or directory in it"))?;
    if meta.file_type().is_symlink() {
        return Err(format!("{path:?} in the artifact is a symbolic link; name the file or directory itself"));
    }
    if meta.is_dir() {
        return Ok(target);
    }
    if !meta.is_file() {
        return Err(format!("{path:?} in the artifact is neither a file nor a directory"));
    }
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unpack_err = |e: drover_archive::Error| format!("cannot unpack {path:?} from the artifact: {e}");
    if name.ends_with(".tar") {
        let file = std::fs::File::open(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        drover_archive::unpack(std::io::BufReader::new(file), out, &UnpackOptions::default()).map_err(unpack_err)?;
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let mut gzip = Command::new("gzip")
            .arg("-dc")
            .arg(&target)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start gzip to read {path:?}: {e}"))?;
        let stdout = gzip.stdout.take().expect("piped");
        let unpacked = drover_archive::unpack(std::io::BufReader::new(stdout), out, &UnpackOptions::default());
        // The reading end is closed by now, so a gzip that was not read to
        // its end exits on a broken pipe.
        let done = gzip.wait_with_output().map_err(|e| format!("waiting for gzip: {e}"))?;
        let gzip_said = String::from_utf8_lossy(&done.stderr).trim().to_string();
        match unpacked {
            Err(e) if !done.status.success() && !gzip_said.is_empty() => {
                return Err(format!("{path:?} in the artifact does not read as gzip: {gzip_said} ({e})"));
            }
            Err(e) => return Err(unpack_err(e)),
            Ok(_) if !done.status.success() => {
                let _ = std::fs::remove_dir_all(out);
                return Err(format!("{path:?} in the artifact does not read as gzip: {gzip_said}"));
            }
            Ok(_) => {}
        }
    } else {
        std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        std::fs::rename(&target, out.join(&name)).map_err(|e| format!("cannot move {}: {e}", target.display()))?;
    }
    Ok(out.to_path_buf())
}
