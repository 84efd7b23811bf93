//! A service's releases on one node, on disk: what a deploy action
//! installs, what `current` points at, and what a rollback goes back to
//! without downloading anything.
//!
//! ```text
//! {root}/{service}/
//!   releases/{version}/        the unpacked artifact, verified by its sha256
//!   releases/{version}.json    its record: digest, run, commit, when
//!   current -> releases/{version}
//! ```
//!
//! - **Install** unpacks with `drover-archive` (never outside the release's
//!   directory, all or nothing, the archive's sha256 checked against the
//!   digest the coordinator named), then writes the record (a temporary
//!   file, synced, renamed). A version already installed with the same
//!   digest is left as it is; the same version with another digest is
//!   refused: a version names one release for good.
//! - **Activate** switches `current` atomically: a new symlink beside it,
//!   renamed over it (rename(2) replaces a symlink in one step), then the
//!   directory synced. A reader sees the old release or the new one, never
//!   neither. A crash can leave a `current.tmp-*` link, which the next
//!   [`Releases::open`] removes.
//! - **Prune** keeps the newest `keep` releases and always `current` and
//!   the one before it, so a rollback finds its target on disk.
//!
//! One service's actions run one at a time (the agent carries out a
//! node's deploy actions in order), so nothing here locks.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use drover_archive::{Limits, Sha256, UnpackOptions};
use serde::{Deserialize, Serialize};

/// The longest service or version name, in characters.
pub const MAX_NAME_LEN: usize = 64;
/// The fewest releases [`Releases::prune`] keeps, whatever it is asked.
pub const MIN_KEEP: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "invalid {what} name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, `_`, `.`, `+` or `-`, starting with \
         a letter or digit"
    )]
    BadName { what: &'static str, name: String },
    #[error(
        "release {version} of {service} is installed already with digest {installed}, not {wanted}: a version names one release"
    )]
    DigestConflict { service: String, version: String, installed: String, wanted: String },
    #[error("release {version} of {service} is not installed")]
    NotInstalled { service: String, version: String },
    #[error("cannot unpack release {version} of {service}: {source}")]
    Unpack {
        service: String,
        version: String,
        #[source]
        source: drover_archive::Error,
    },
    #[error("the record of release {version} at {path} does not read: {detail}")]
    Record { version: String, path: PathBuf, detail: String },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ReleaseError + 'a {
    move |source| ReleaseError::Io { op, path: path.to_path_buf(), source }
}

/// Where a release came from, kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    /// The artifact's sha256, as 64 hex digits.
    pub digest: String,
    /// The run and commit that built it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When it was installed on this node (Unix milliseconds).
    pub installed_ms: u64,
}

/// What [`Releases::install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    New,
    /// It was there already, with that digest.
    Already,
}

/// One service's releases under `{root}/{service}`.
#[derive(Debug, Clone)]
pub struct Releases {
    service: String,
    dir: PathBuf,
}

/// Whether `name` may name a service or a version: it becomes a path
/// component and part of a symlink's target.
pub(crate) fn name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().count() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'))
}

/// `name` as a [`ReleaseError::BadName`] when it may not name a `what`
/// (a service or a version).
pub(crate) fn check(what: &'static str, name: &str) -> Result<(), ReleaseError> {
    if name_ok(name) { Ok(()) } else { Err(ReleaseError::BadName { what, name: name.to_string() }) }
}

/// Syncs directory `dir`, so that an entry made or renamed in it lasts.
fn sync_dir(dir: &Path) -> Result<(), ReleaseError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("sync", dir))
}

impl Releases {
    /// The releases of `service` under `root`, made if missing; clears what
    /// an interrupted switch left behind.
    pub fn open(root: &Path, service: &str) -> Result<Releases, ReleaseError> {
        check("service", service)?;
        let dir = root.join(service);
        let releases = dir.join("releases");
        fs::create_dir_all(&releases).map_err(io_err("create", &releases))?;
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with("current.tmp-") {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(Releases { service: service.to_string(), dir })
    }

    fn release_dir(&self, version: &str) -> PathBuf {
        self.dir.join("releases").join(version)
    }

    fn record_path(&self, version: &str) -> PathBuf {
        self.dir.join("releases").join(format!("{version}.json"))
    }

    /// The directory of an installed release (what `current` points at
    /// when it is live).
    pub fn path(&self, version: &str) -> PathBuf {
        self.release_dir(version)
    }

    /// The `current` link.
    pub fn current_link(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// The record of `version`, if it is installed.
    pub fn get(&self, version: &str) -> Result<Option<Release>, ReleaseError> {
        check("version", version)?;
        let path = self.record_path(version);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ReleaseError::Io { op: "read", path, source }),
        };
        let release = serde_json::from_str(&text).map_err(|e| ReleaseError::Record {
            version: version.to_string(),
            path: path.clone(),
            detail: e.to_string(),
        })?;
        Ok(Some(release))
    }

    /// Installs `release` from the tar `archive`, checked against its
    /// digest. Nothing is left behind when it fails.
    pub fn install(&self, release: &Release, archive: impl Read, limits: Limits) -> Result<Installed, ReleaseError> {
        let version = &release.version;
        check("version", version)?;
        let wanted: Sha256 = release.digest.parse().map_err(|source| ReleaseError::Unpack {
            service: self.service.clone(),
            version: version.clone(),
            source,
        })?;
        if self.installed(release)? {
            return Ok(Installed::Already);
        }
        let dest = self.release_dir(version);
        // A directory without a record is what a crash mid-install left.
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(io_err("remove", &dest))?;
        }
        let options = UnpackOptions { limits, expected_sha256: Some(wanted) };
        drover_archive::unpack(archive, &dest, &options).map_err(|source| ReleaseError::Unpack {
            service: self.service.clone(),
            version: version.clone(),
            source,
        })?;
        self.write_record(release)?;
        Ok(Installed::New)
    }

    /// Whether `release` is installed already with its digest; an error
    /// when its version is installed with another.
    pub fn installed(&self, release: &Release) -> Result<bool, ReleaseError> {
        let Some(installed) = self.get(&release.version)? else { return Ok(false) };
        if installed.digest == release.digest {
            return Ok(true);
        }
        Err(ReleaseError::DigestConflict {
            service: self.service.clone(),
            version: release.version.clone(),
            installed: installed.digest,
            wanted: release.digest.clone(),
        })
    }

    /// Installs `release` from `prepared`, a directory the caller made
    /// from an archive it checked against `release.digest` (the deploy
    /// executor: the release root picked out of a job's artifacts). It is
    /// renamed into place, so it must be on the same file system (under
    /// this service's directory); the record is written last, so a crash
    /// leaves a directory without a record, which is not installed. A
    /// version installed already with the same digest is left as it is
    /// (and `prepared` too).
    pub fn install_dir(&self, release: &Release, prepared: &Path) -> Result<Installed, ReleaseError> {
        check("version", &release.version)?;
        let _: Sha256 = release.digest.parse().map_err(|source| ReleaseError::Unpack {
            service: self.service.clone(),
            version: release.version.clone(),
            source,
        })?;
        if self.installed(release)? {
            return Ok(Installed::Already);
        }
        let dest = self.release_dir(&release.version);
        if fs::symlink_metadata(&dest).is_ok() {
            fs::remove_dir_all(&dest).map_err(io_err("remove", &dest))?;
        }
        fs::rename(prepared, &dest).map_err(io_err("rename", prepared))?;
        self.write_record(release)?;
        Ok(Installed::New)
    }

    /// Writes `release`'s record: a temporary file, synced, renamed.
    fn write_record(&self, release: &Release) -> Result<(), ReleaseError> {
        let version = &release.version;
        let record = self.record_path(version);
        let tmp = record.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(release).map_err(|e| ReleaseError::Record {
            version: version.clone(),
            path: record.clone(),
            detail: e.to_string(),
        })?;
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(&text).and_then(|()| file.sync_all()).map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &record).map_err(io_err("rename", &tmp))?;
        sync_dir(&self.dir.join("releases"))
    }

    /// This service's directory, `{root}/{service}`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The version `current` points at, if any.
    pub fn current(&self) -> Result<Option<String>, ReleaseError> {
        let link = self.current_link();
        let target = match fs::read_link(&link) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ReleaseError::Io { op: "read", path: link, source }),
        };
        Ok(target.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// Points `current` at installed release `version`, atomically; returns
    /// the version it pointed at before.
    pub fn activate(&self, version: &str) -> Result<Option<String>, ReleaseError> {
        check("version", version)?;
        if self.get(version)?.is_none() {
            return Err(ReleaseError::NotInstalled { service: self.service.clone(), version: version.to_string() });
        }
        let before = self.current()?;
        let tmp = self.dir.join(format!("current.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        // Relative, so the service's directory can move as a whole.
        symlink(Path::new("releases").join(version), &tmp).map_err(io_err("link", &tmp))?;
        fs::rename(&tmp, self.current_link()).map_err(io_err("rename", &tmp))?;
        sync_dir(&self.dir)?;
        Ok(before)
    }

    /// Every installed release, oldest first.
    pub fn list(&self) -> Result<Vec<Release>, ReleaseError> {
        let dir = self.dir.join("releases");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_suffix(".json").filter(|v| name_ok(v))
                && let Some(release) = self.get(version)?
            {
                out.push(release);
            }
        }
        out.sort_by(|a, b| (a.installed_ms, &a.version).cmp(&(b.installed_ms, &b.version)));
        Ok(out)
    }

    /// Removes all but the newest `keep` releases (at least [`MIN_KEEP`]),
    /// never `current` nor `also` (the release a rollback would go to).
    /// Returns the versions removed.
    pub fn prune(&self, keep: usize, also: Option<&str>) -> Result<Vec<String>, ReleaseError> {
        let keep = keep.max(MIN_KEEP);
        let current = self.current()?;
        let all = self.list()?;
        let mut removed = Vec::new();
        let excess = all.len().saturating_sub(keep);
        for release in all.into_iter().take(excess) {
            let v = release.version;
            if Some(v.as_str()) == current.as_deref() || Some(v.as_str()) == also {
                continue;
            }
            // The record first: a release without one is not installed.
            let record = self.record_path(&v);
            fs::remove_file(&record).map_err(io_err("remove", &record))?;
            let dir = self.release_dir(&v);
            fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
            removed.push(v);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
