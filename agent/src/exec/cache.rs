//! A job's cache on the agent: its key rendered from the workspace, the
//! entry restored before the first step (after the checkout and the needs'
//! artifacts), and the paths saved after the last step succeeds when the
//! key had no entry.
//!
//! - **Key.** The template's text, with each `{{ hashFiles(...) }}`
//!   replaced by [`hash_files`]: the sha256 over the path and content
//!   digest of every regular file the globs select in the workspace
//!   (`.git` left out), sorted by path; no file gives an empty string, as
//!   in GitHub Actions.
//! - **Restore.** The coordinator says which entry (the key, else the
//!   newest a restore-key matches, in the run's scope); each of its
//!   archives is taken from this agent's own copy when it has one, and
//!   downloaded into it otherwise. Archives unpack with
//!   `drover_archive::unpack` (never outside their directory), then merge
//!   into the workspace or the step's home without replacing what is there.
//!   When the coordinator has no entry but this agent still keeps the
//!   key's, that one is used.
//! - **Save.** The workspace paths and the `~/` paths are packed into one
//!   archive each, kept in this agent's copy, uploaded, and recorded under
//!   the key. Two jobs saving one key: the coordinator keeps the first.
//! - **A cache never fails a job.** A restore or save that goes wrong is a
//!   warning in the job's log and counts as a miss (or not saved).
//!
//! [`LocalCaches`] is the agent's own copy, in `WORK_DIR/.caches` (mode
//! 0700: steps cannot reach it): archives by sha256, and an index of the
//! entries it holds, evicted least recently used past `--cache-budget`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::JobAuth;
use super::artifacts::{Transfer, merge_keeping};
use crate::runas::StepUser;

/// The most bytes of files `hashFiles` reads, so a key cannot take for ever.
pub const MAX_HASHED_BYTES: u64 = 1 << 30;
/// The longest rendered key.
pub const MAX_KEY_LEN: usize = 512;

/// One part of a cache key's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Text(String),
    HashFiles(Vec<String>),
}

/// A job's `cache:` as the coordinator sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheWork {
    pub key: Vec<KeyPart>,
    /// Relative to the workspace, or `~/...` under the step's home.
    pub paths: Vec<String>,
    pub restore_keys: Vec<String>,
}

/// One archive of an entry: where it unpacks, and the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// `workspace` or `home`.
    pub root: String,
    pub sha256: String,
    pub size: u64,
}

/// The entry the coordinator says to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub key: String,
    pub blobs: Vec<BlobRef>,
}

/// What the job's cache did, for its result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub key: String,
    pub restored: Option<String>,
    pub saved: bool,
    pub scope_id: String,
}

/// Renders the key: text as it is, each `hashFiles` as [`hash_files`] over
/// `workspace`.
pub fn render_key(parts: &[KeyPart], workspace: &Path) -> Result<String, String> {
    let mut key = String::new();
    for part in parts {
        match part {
            KeyPart::Text(text) => key.push_str(text),
            KeyPart::HashFiles(globs) => key.push_str(&hash_files(workspace, globs)?),
        }
    }
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!("the cache key is {} characters; it must have 1 to {MAX_KEY_LEN}", key.len()));
    }
    Ok(key)
}

/// The sha256 (hex) of the regular files under `workspace` that `globs`
/// select, each as its path and its content's digest, sorted by path; an
/// empty string when none matches.
pub fn hash_files(workspace: &Path, globs: &[String]) -> Result<String, String> {
    let mut set = globset::GlobSetBuilder::new();
    for glob in globs {
        let glob = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("hashFiles: invalid glob {glob:?}: {e}"))?;
        set.add(glob);
    }
    let set = set.build().map_err(|e| format!("hashFiles: {e}"))?;
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(workspace).follow_links(false).into_iter();
    for entry in walk.filter_entry(|e| e.depth() == 0 || e.file_name() != ".git") {
        let entry = entry.map_err(|e| format!("hashFiles: {e}"))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(workspace).map_err(|e| e.to_string())?;
        if set.is_match(rel) {
            files.push((rel.to_string_lossy().into_owned(), entry.path().to_path_buf()));
        }
    }
    if files.is_empty() {
        return Ok(String::new());
    }
    files.sort();
    let mut outer = Sha256::new();
    let mut budget = MAX_HASHED_BYTES;
    for (rel, path) in files {
        let file = std::fs::File::open(&path).map_err(|e| format!("hashFiles: {rel}: {e}"))?;
        let mut inner = Sha256::new();
        let mut reader = file.take(budget + 1);
        let read = std::io::copy(&mut reader, &mut inner).map_err(|e| format!("hashFiles: {rel}: {e}"))?;
        if read > budget {
            return Err(format!("hashFiles reads at most {MAX_HASHED_BYTES} bytes of files; narrow its globs"));
        }
        budget -= read;
        outer.update(rel.as_bytes());
        outer.update([0]);
        outer.update(inner.finalize());
    }
    Ok(hex(&outer.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's own copy of the caches it restored or saved.
#[derive(Debug)]
pub struct LocalCaches {
    dir: PathBuf,
    budget: u64,
    index: Mutex<Index>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// By "SCOPE_ID/KEY".
    entries: BTreeMap<String, LocalEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalEntry {
    blobs: Vec<BlobRef>,
    last_used_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl LocalCaches {
    /// Opens (making it, mode 0700) `dir`; an index that cannot be read
    /// starts empty, its archives then going with the next eviction.
    pub fn open(dir: &Path, budget: u64) -> std::io::Result<LocalCaches> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir.join("blobs"))?;
        let index = match std::fs::read(dir.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the local cache index cannot be read; starting it empty");
                Index::default()
            }),
            Err(_) => Index::default(),
        };
        Ok(LocalCaches { dir: dir.to_path_buf(), budget, index: Mutex::new(index) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries it holds, most recently used first (at most `limit`).
    pub fn entries(&self, limit: usize) -> Vec<String> {
        let index = self.lock();
        let mut all: Vec<(&String, u64)> = index.entries.iter().map(|(k, e)| (k, e.last_used_ms)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        all.into_iter().take(limit).map(|(k, _)| k.clone()).collect()
    }

    /// Where archive `sha256` is kept.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{sha256}.tar"))
    }

    fn has_blob(&self, blob: &BlobRef) -> bool {
        std::fs::metadata(self.blob_path(&blob.sha256)).is_ok_and(|m| m.len() == blob.size)
    }

    /// The archives of entry `entry`, if it holds them all; marked used.
    fn get(&self, entry: &str) -> Option<Vec<BlobRef>> {
        let mut index = self.lock();
        let found = index.entries.get_mut(entry)?;
        if !found.blobs.iter().all(|b| self.has_blob(b)) {
            return None;
        }
        found.last_used_ms = now_ms();
        Some(found.blobs.clone())
    }

    /// Records entry `entry` (its archives already kept), then evicts the
    /// least recently used entries past the budget.
    fn put(&self, entry: String, blobs: Vec<BlobRef>) {
        let mut index = self.lock();
        index.entries.insert(entry, LocalEntry { blobs, last_used_ms: now_ms() });
        let mut order: Vec<(u64, String)> = index.entries.iter().map(|(k, e)| (e.last_used_ms, k.clone())).collect();
        order.sort();
        let size = |index: &Index| -> u64 {
            let mut seen = std::collections::BTreeSet::new();
            index.entries.values().flat_map(|e| &e.blobs).filter(|b| seen.insert(&b.sha256)).map(|b| b.size).sum()
        };
        for (_, key) in order {
            if size(&index) <= self.budget {
                break;
            }
            index.entries.remove(&key);
        }
        let kept: std::collections::BTreeSet<String> =
            index.entries.values().flat_map(|e| &e.blobs).map(|b| format!("{}.tar", b.sha256)).collect();
        if let Ok(dir) = std::fs::read_dir(self.dir.join("blobs")) {
            for file in dir.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tar") && !kept.contains(&name) {
                    let _ = std::fs::remove_file(file.path());
                }
            }
        }
        self.save(&index);
    }

    /// Writes the index whole and renames it into place.
    fn save(&self, index: &Index) {
        let tmp = self.dir.join("index.json.tmp");
        let bytes = serde_json::to_vec(index).expect("the index serializes");
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, self.dir.join("index.json"))) {
            tracing::warn!(error = %e, "cannot write the local cache index");
        }
    }
}

/// Where an attempt's cache works: its workspace, the steps' home, a
/// scratch directory of the agent's, and the run-as user that must own
/// what is restored.
pub struct Place<'a> {
    pub workspace: &'a Path,
    pub home: &'a Path,
    pub scratch: &'a Path,
    pub user: Option<&'a StepUser>,
}

/// Restores the entry for `key` (or one a restore-key matches), looked up
/// and downloaded for `job`. Returns the report so far and what to say in
/// the log.
pub async fn restore(
    transfer: &dyn Transfer,
    local: &LocalCaches,
    job: JobAuth<'_>,
    work: &CacheWork,
    key: &str,
    place: &Place<'_>,
) -> (Report, String) {
    let mut report = Report { key: key.to_string(), ..Report::default() };
    let (found, scope_id) = match transfer.restore_cache(job, key, &work.restore_keys).await {
        Ok(answer) => answer,
        Err(e) => return (report, format!("cache: cannot look up {key}: {e}; going on without it")),
    };
    report.scope_id = scope_id.clone();
    let (found, from_local_only) = match found {
        Some(found) => (found, false),
        None => match local.get(&format!("{scope_id}/{key}")) {
            Some(blobs) => (Found { key: key.to_string(), blobs }, true),
            None => return (report, format!("cache: miss {key}")),
        },
    };
    let mut downloaded = 0u64;
    for blob in &found.blobs {
        if local.has_blob(blob) {
            continue;
        }
        let dest = local.blob_path(&blob.sha256);
        let part = dest.with_extension("part");
        if let Err(e) = transfer.fetch_cache(job, &found.key, blob, &part).await {
            let _ = std::fs::remove_file(&part);
            return (report, format!("cache: cannot download {}: {e}; going on without it", found.key));
        }
        if let Err(e) = std::fs::rename(&part, &dest) {
            return (report, format!("cache: cannot keep {}: {e}; going on without it", found.key));
        }
        downloaded += blob.size;
    }
    let mut files = 0;
    for blob in &found.blobs {
        let dest = if blob.root == "home" { place.home } else { place.workspace };
        match unpack_into(local.blob_path(&blob.sha256), &blob.sha256, dest, place).await {
            Ok(n) => files += n,
            Err(e) => return (report, format!("cache: cannot restore {}: {e}; going on without it", found.key)),
        }
    }
    local.put(format!("{scope_id}/{}", found.key), found.blobs.clone());
    let how = if found.key == key { format!("hit {key}") } else { format!("restored {} for {key}", found.key) };
    let whence = match (from_local_only, downloaded) {
        (true, _) => " from this agent's copy (the coordinator's is gone)".to_string(),
        (false, 0) => " from this agent's copy".to_string(),
        (false, n) => format!(", downloaded {n} bytes"),
    };
    report.restored = Some(found.key);
    (report, format!("cache: {how}: {files} files{whence}"))
}

/// Unpacks archive `tar` (checked against `sha256`) into a staging
/// directory, then merges it into `dest`, keeping what is there.
async fn unpack_into(tar: PathBuf, sha256: &str, dest: &Path, place: &Place<'_>) -> Result<usize, String> {
    let staged = place.scratch.join(format!("cache-{sha256}.d"));
    let (dest, user, want, staged2) = (dest.to_path_buf(), place.user.cloned(), sha256.to_string(), staged.clone());
    let result = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        let file = std::fs::File::open(&tar).map_err(|e| format!("{}: {e}", tar.display()))?;
        let options = drover_archive::UnpackOptions {
            expected_sha256: Some(want.parse().map_err(|e: drover_archive::Error| e.to_string())?),
            ..Default::default()
        };
        drover_archive::unpack(std::io::BufReader::new(file), &staged2, &options).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        let (made, _skipped) = merge_keeping(&staged2, &dest)?;
        if let Some(user) = &user {
            for path in &made {
                std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
                    .map_err(|e| format!("cannot give {} to the run-as user: {e}", path.display()))?;
            }
        }
        Ok(made.iter().filter(|p| p.is_file()).count())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let _ = tokio::fs::remove_dir_all(&staged).await;
    result
}

/// Saves the job's paths under `report.key`, uploaded and recorded for
/// `job`. Returns what to say.
pub async fn save(
    transfer: &dyn Transfer,
    local: &LocalCaches,
    job: JobAuth<'_>,
    work: &CacheWork,
    report: &mut Report,
    place: &Place<'_>,
) -> String {
    let key = report.key.clone();
    let (home_paths, ws_paths): (Vec<String>, Vec<String>) =
        work.paths.iter().cloned().partition(|p| p.starts_with("~/"));
    let home_paths: Vec<String> = home_paths.iter().map(|p| p.trim_start_matches("~/").to_string()).collect();
    let mut blobs = Vec::new();
    for (root, dir, paths) in [("workspace", place.workspace, ws_paths), ("home", place.home, home_paths)] {
        if paths.is_empty() {
            continue;
        }
        match pack(local, dir, &paths).await {
            Ok(Some((sha256, size))) => blobs.push(BlobRef { root: root.to_string(), sha256, size }),
            Ok(None) => {}
            Err(e) => return format!("cache: cannot pack {key}: {e}; not saved"),
        }
    }
    if blobs.is_empty() {
        return format!("cache: nothing to save for {key}: no file at {}", work.paths.join(", "));
    }
    for blob in &blobs {
        if let Err(e) = transfer.upload(job, &local.blob_path(&blob.sha256), &blob.sha256, blob.size).await {
            return format!("cache: cannot upload {key}: {e}; not saved");
        }
    }
    let size: u64 = blobs.iter().map(|b| b.size).sum();
    match transfer.save_cache(job, &key, &blobs).await {
        Ok((true, scope_id)) => {
            local.put(format!("{scope_id}/{key}"), blobs);
            report.saved = true;
            report.scope_id = scope_id;
            format!("cache: saved {key} ({size} bytes)")
        }
        Ok((false, _)) => format!("cache: {key} was saved by another job first; keeping that one"),
        Err(e) => format!("cache: cannot save {key}: {e}"),
    }
}

/// Packs `paths` under `dir` into this agent's copy; `None` when they hold
/// no file.
async fn pack(local: &LocalCaches, dir: &Path, paths: &[String]) -> Result<Option<(String, u64)>, String> {
    let tmp = local.dir.join("blobs").join(format!("pack-{}.tmp", std::process::id() as u64 ^ now_ms()));
    let (tmp2, dir, paths) = (tmp.clone(), dir.to_path_buf(), paths.to_vec());
    let packed = tokio::task::spawn_blocking(move || -> Result<drover_archive::Manifest, String> {
        let file = std::fs::File::create(&tmp2).map_err(|e| format!("{}: {e}", tmp2.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let manifest = drover_archive::pack(
            &dir,
            &paths,
            drover_archive::IfNoFiles::Ignore,
            &drover_archive::Limits::default(),
            &mut out,
        )
        .map_err(|e| e.to_string())?;
        use std::io::Write;
        out.flush().map_err(|e| format!("{}: {e}", tmp2.display()))?;
        Ok(manifest)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let manifest = match packed {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if !manifest.entries.iter().any(|e| matches!(e.kind, drover_archive::EntryKind::File { .. })) {
        let _ = std::fs::remove_file(&tmp);
        return Ok(None);
    }
    let sha256 = manifest.sha256.to_string();
    std::fs::rename(&tmp, local.blob_path(&sha256)).map_err(|e| format!("{}: {e}", tmp.display()))?;
    Ok(Some((sha256, manifest.bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("drover-agent-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn keys_hash_the_selected_files_and_change_when_they_do() {
        let ws = temp("hash");
        std::fs::write(ws.join("Cargo.lock"), "a").unwrap();
        std::fs::create_dir_all(ws.join("sub/.git")).unwrap();
        std::fs::create_dir_all(ws.join(".git")).unwrap();
        std::fs::write(ws.join(".git/Cargo.lock"), "ignored").unwrap();
        std::fs::write(ws.join("sub/Cargo.lock"), "b").unwrap();
        let parts = |globs: &[&str]| {
            vec![KeyPart::Text("cargo-".into()), KeyPart::HashFiles(globs.iter().map(|g| g.to_string()).collect())]
        };
        let top = render_key(&parts(&["Cargo.lock"]), &ws).unwrap();
        assert!(top.starts_with("cargo-") && top.len() == 6 + 64, "{top}");
        assert_eq!(render_key(&parts(&["Cargo.lock"]), &ws).unwrap(), top, "the same files, the same key");
        let all = render_key(&parts(&["**/Cargo.lock"]), &ws).unwrap();
        assert_ne!(all, top, "sub/Cargo.lock counts with **");
        assert_eq!(render_key(&parts(&["nothing-*.lock"]), &ws).unwrap(), "cargo-", "no file: empty");
        std::fs::write(ws.join("Cargo.lock"), "changed").unwrap();
        assert_ne!(render_key(&parts(&["Cargo.lock"]), &ws).unwrap(), top);
        // .git is never hashed.
        std::fs::write(ws.join(".git/Cargo.lock"), "changed too").unwrap();
        assert_eq!(hash_files(&ws, &[".git/Cargo.lock".into()]).unwrap(), "");
        assert!(render_key(&[KeyPart::Text("x".repeat(MAX_KEY_LEN + 1))], &ws).is_err());
        let _ = std::fs::remove_dir_all(&ws);
    }

    #[test]
    fn the_local_copy_evicts_the_least_recently_used_past_its_budget() {
        let dir = temp("local");
        let local = LocalCaches::open(&dir, 150).unwrap();
        let blob = |sha: char, size: u64| {
            let b = BlobRef { root: "workspace".into(), sha256: sha.to_string().repeat(64), size };
            std::fs::write(local.blob_path(&b.sha256), vec![0u8; size as usize]).unwrap();
            b
        };
        local.put("s/a".into(), vec![blob('a', 100)]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        local.put("s/b".into(), vec![blob('b', 40)]);
        assert_eq!(local.entries(10), ["s/b", "s/a"]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(local.get("s/a").is_some(), "a is used again");
        std::thread::sleep(std::time::Duration::from_millis(5));
        local.put("s/c".into(), vec![blob('c', 40)]);
        // 180 bytes > 150: b, now the least recently used, goes, with its file.
        assert_eq!(local.entries(10), ["s/c", "s/a"]);
        assert!(!local.blob_path(&"b".repeat(64)).exists());
        // The index survives a restart.
        drop(local);
        let again = LocalCaches::open(&dir, 150).unwrap();
        assert_eq!(again.entries(10), ["s/c", "s/a"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
