//! A size-limited tmpfs for tests of full disks, unmounted when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::text;

/// A tmpfs of `size` (as mount takes it: `5m`) mounted at `path`, for tests
/// of full disks; unmounted when dropped. Mounting needs root
/// (CAP_SYS_ADMIN): the error says why it failed, for a test to skip.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("cannot make {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() { Ok(Tmpfs(path.to_path_buf())) } else { Err(text(&out.stderr)) }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
