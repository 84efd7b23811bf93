//! An app's deploy key, where git can use it: the secret (`drover secret
//! set`) opened from the vault and written, with the app's known hosts,
//! under `{data}/app-keys/{app}/` (the directory mode 0700, the files
//! 0600, rewritten only when they change). The key never leaves the
//! coordinator; git reaches the repository with it alone
//! (`crate::git::SshAccess`).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::core::apps::AppSpec;
use crate::git::SshAccess;
use crate::secrets::Vault;

/// Beside the git scratch directory: one directory per app with a key.
pub const APP_KEYS: &str = "app-keys";

/// The ssh access of `spec` (none when it has no deploy key), its files
/// written under `root`, or why there is none.
pub async fn ssh_access(spec: &AppSpec, vault: &Vault, root: &Path) -> Result<Option<SshAccess>, String> {
    if spec.deploy_key.is_empty() {
        return Ok(None);
    }
    let name = &spec.deploy_key;
    let (mut values, missing) =
        vault.resolve(std::slice::from_ref(name)).await.map_err(|e| format!("the deploy key {name}: {e}"))?;
    let Some(mut key) = values.remove(name).filter(|_| missing.is_empty()) else {
        return Err(format!(
            "the deploy key secret {name} does not exist; set it to the private key with `drover secret set {name} \
             < KEY_FILE`"
        ));
    };
    if !key.ends_with(b"\n") {
        key.push(b'\n');
    }
    let dir = root.join(&spec.name);
    let access = SshAccess { key: dir.join("key"), known_hosts: dir.join("known_hosts") };
    let known_hosts = spec.known_hosts.clone().into_bytes();
    let files = access.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        write_private(&files.key, &key)?;
        write_private(&files.known_hosts, &known_hosts)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot write the deploy key of app {} under {}: {e}", spec.name, root.display()))?;
    Ok(Some(access))
}

/// Writes `bytes` to `path` with mode 0600, unless it holds them already:
/// a file of its own, renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp: PathBuf = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    std::io::Write::write_all(&mut file, bytes)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Removes the key files of apps that are gone or hold no key any more.
pub async fn prune(root: &Path, keep: Vec<String>) {
    let root = root.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || {
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if !keep.iter().any(|k| entry.file_name().to_str() == Some(k)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    })
    .await;
}
