//! A service's `service.json`: what the agent needs after a restart to
//! find its releases again, reach them and check them. Written whole to a
//! temporary file, synced and renamed, mode 0600 (a service's `env` may
//! hold what others must not read).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{SERVICE_FILE, ServiceDef};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Saved {
    /// The release the proxy sends new connections to.
    #[serde(default)]
    pub live: Option<String>,
    /// The port the proxy owns, while there is one.
    #[serde(default)]
    pub proxy_port: Option<u16>,
    /// Every release with a supervisor: the live one and those started
    /// beside it.
    #[serde(default)]
    pub running: Vec<SavedRelease>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedRelease {
    pub version: String,
    /// Its backend port on 127.0.0.1.
    pub port: u16,
    pub def: ServiceDef,
    /// Which start of it runs (its supervisor's directory).
    #[serde(default)]
    pub instance: u32,
}

/// Reads `dir/service.json`; nothing there is an empty state.
pub(super) fn load(dir: &Path) -> Result<Saved, String> {
    let path = dir.join(SERVICE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{} does not read: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `dir/service.json` whole.
pub(super) fn save(dir: &Path, saved: &Saved) -> Result<(), String> {
    let path = dir.join(SERVICE_FILE);
    let tmp = dir.join(format!("{SERVICE_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(saved).map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}
