//! What the agent checks and takes before it connects, beyond what
//! `drover_client` checks (its certificates, each coordinator URL made an
//! endpoint): the work dir's lock; and [`AgentError`], the errors that stop
//! the agent.

use std::path::{Path, PathBuf};

use drover_client::endpoint::EndpointError;
use drover_client::tls::TlsError;

use crate::runas::RunAsError;
use crate::watch as step_watch;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The certificates in `--tls-dir` cannot be read or used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A coordinator URL that is not one, or certificates that tonic
    /// cannot use.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("no coordinator URL given; use e.g. --coordinator https://10.0.0.1:7700")]
    NoCoordinator,
    #[error("cannot create the work directory {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error("cannot create the services directory {path} (--services-dir): {source}")]
    ServicesDir { path: PathBuf, source: std::io::Error },
    #[error("cannot take the work dir lock {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error(
        "work dir {} is in use by another drover-agent{}; give each agent its own --work-dir",
        .path.display(),
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    WorkDirInUse { path: PathBuf, pid: Option<u32> },
    #[error(transparent)]
    RunAs(#[from] RunAsError),
    #[error("cannot start the step watcher ({} {}): {source}", .program.display(), step_watch::MODE_ARG)]
    Watcher { program: PathBuf, source: std::io::Error },
    /// The coordinator refused the agent for what it is: retrying cannot
    /// help.
    #[error(
        "{url} refused this agent ({code:?}): {reason}; retrying cannot change that, so the agent stops: check \
         --name, --labels and the certificate in --tls-dir"
    )]
    Refused { url: String, code: tonic::Code, reason: String },
}

/// The lock file that keeps a work dir to one agent process.
const LOCK_FILE: &str = ".drover-agent.lock";

/// Takes the work dir's lock for the life of the returned file, and writes
/// our pid into it so that a refused agent can name the holder. The lock
/// goes with the process, however it dies, which is what makes the
/// processes on the work dir that nobody holds leftovers (see
/// [`crate::leftovers`]). The file is opened close-on-exec, so steps do not
/// inherit, and keep, the lock; and it is private to the agent's user
/// (0600, even if it existed with another mode), so a step running as
/// another user (`--run-as`) cannot open it and take the lock.
pub(super) fn lock_work_dir(work_dir: &Path) -> Result<std::fs::File, AgentError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = work_dir.join(LOCK_FILE);
    let lock_err = |source| AgentError::Lock { path: path.clone(), source };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(lock_err)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(lock_err)?;
    // SAFETY: flock(2) on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(lock_err(e));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(AgentError::WorkDirInUse { path: work_dir.to_path_buf(), pid: text.trim().parse().ok() });
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(lock_err)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_work_dir_is_refused_naming_the_holder_until_it_is_released() {
        let dir = std::env::temp_dir().join(format!("drover-agent-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = lock_work_dir(&dir).unwrap();
        // flock locks belong to open files, so a second open in this very
        // process conflicts like another agent would.
        let err = lock_work_dir(&dir).unwrap_err();
        assert!(matches!(err, AgentError::WorkDirInUse { pid: Some(p), .. } if p == std::process::id()), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("work dir {} is in use by another drover-agent (pid ", dir.display())), "{msg}");
        assert!(msg.contains("--work-dir"), "{msg}");
        drop(held);
        drop(lock_work_dir(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
