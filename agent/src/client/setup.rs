//! What the agent checks and takes before it connects: the certificates
//! (read, and checked to be PEM), each coordinator URL made an endpoint,
//! the work dir's lock; and [`AgentError`], the errors that stop the agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_telemetry::logging::error_chain;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::runas::RunAsError;
use crate::watch as step_watch;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "cannot read {path}: {source}; point --tls-dir (or DROVER_AGENT_TLS_DIR) at the agent's bundle, \
         DIR/agents/NAME, from `drover certs issue-agent NAME --dir DIR` (it holds ca.pem, agent-NAME.pem \
         and agent-NAME-key.pem)"
    )]
    Cert { path: PathBuf, source: std::io::Error },
    /// The certificates were read but do not make a TLS configuration (a
    /// PEM that does not parse, a key that does not match).
    #[error(
        "the certificates in {} are not usable: {detail}; check ca.pem, agent-NAME.pem and \
         agent-NAME-key.pem there, or point --tls-dir (or DROVER_AGENT_TLS_DIR) at the agent's bundle, \
         DIR/agents/NAME, from `drover certs issue-agent NAME --dir DIR`",
        .dir.display()
    )]
    Tls { dir: PathBuf, detail: String },
    #[error("bad coordinator URL {url:?}: {detail}; use e.g. https://10.0.0.1:7700")]
    Url { url: String, detail: String },
    #[error("cannot create the work directory {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
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

/// What went wrong, without tonic's outer "transport error" when there is
/// more to say.
fn cause(e: &tonic::transport::Error) -> String {
    use std::error::Error as _;
    let text = e.source().map_or_else(|| e.to_string(), error_chain);
    text.trim_end_matches('.').to_string()
}

/// An endpoint for one coordinator URL. HTTP/2 keepalives notice a dead or
/// paused coordinator within a few seconds, well inside an attempt's lease,
/// so the agent moves to the new leader before anyone declares it lost.
///
/// Only `https://` URLs are taken: the coordinator listens with TLS only,
/// and a plain-text dial would fail, and be retried, forever.
pub(super) fn endpoint(url: &str, tls: &ClientTlsConfig, tls_dir: &Path) -> Result<Endpoint, AgentError> {
    let url_err = |detail: String| AgentError::Url { url: url.to_string(), detail };
    if !url.starts_with("https://") {
        return Err(url_err("it must start with https:// (Drover always uses TLS)".into()));
    }
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| url_err(error_chain(&e)))?
        .tls_config(tls.clone())
        .map_err(|e| AgentError::Tls { dir: tls_dir.to_path_buf(), detail: cause(&e) })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true))
}

pub(super) fn read(dir: &std::path::Path, file: &str) -> Result<Vec<u8>, AgentError> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|source| AgentError::Cert { path, source })
}

/// Reads a certificate file and checks that it holds a PEM certificate:
/// tonic takes a file without one silently (an empty trust store, no client
/// certificate), and every handshake would then fail, forever.
pub(super) fn read_cert(dir: &std::path::Path, file: &str) -> Result<Vec<u8>, AgentError> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    let pem = read(dir, file)?;
    if !pem.windows(BEGIN.len()).any(|w| w == BEGIN) {
        let detail = format!("{file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        return Err(AgentError::Tls { dir: dir.to_path_buf(), detail });
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    use tonic::transport::Certificate;

    #[test]
    fn only_https_urls_are_taken() {
        let tls = ClientTlsConfig::new();
        let dir = Path::new("tls");
        for url in ["http://127.0.0.1:7700", "127.0.0.1:7700", "localhost:7700", "grpc://h:1"] {
            let err = endpoint(url, &tls, dir).unwrap_err();
            assert!(matches!(err, AgentError::Url { .. }), "{url}: {err:?}");
            assert!(err.to_string().contains("must start with https:// (Drover always uses TLS)"), "{err}");
        }
        endpoint("https://127.0.0.1:7700", &tls, dir).unwrap();
    }

    #[test]
    fn certificates_that_do_not_parse_are_a_certificate_error_naming_the_dir() {
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(broken));
        let err = endpoint("https://127.0.0.1:7700", &tls, Path::new("/etc/drover/tls")).unwrap_err();
        assert!(matches!(err, AgentError::Tls { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("the certificates in /etc/drover/tls are not usable: "), "{msg}");
        assert!(!msg.contains("transport error") && !msg.contains("URL"), "{msg}");

        let dir = std::env::temp_dir().join(format!("drover-agent-cert-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "garbage").unwrap();
        let err = read_cert(&dir, "ca.pem").unwrap_err();
        assert!(err.to_string().contains("ca.pem holds no PEM certificate"), "{err}");
        let err = read_cert(&dir, "agent-x.pem").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("point --tls-dir (or DROVER_AGENT_TLS_DIR) at the agent's bundle, DIR/agents/NAME"),
            "{msg}"
        );
        assert!(msg.contains("`drover certs issue-agent NAME --dir DIR`"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
