//! The agent's side of a service's proxy process: starts one
//! (`drover-agent --proxy STATE_DIR`, detached as a supervisor is), finds
//! a live one again after an agent restart, switches it, watches its old
//! backend drain and stops it, all through two files in its state dir and
//! two signals. See [`super`] for the whole picture.
//!
//! - `desired.json` ([`DesiredProxy`]): written only by the agent, whole
//!   and renamed into place, then the proxy gets SIGHUP and reads it
//!   again. Each change carries a higher `generation`; `stop` asks it to
//!   close its port and exit (with SIGTERM, which means the same).
//! - `state.json` ([`ProxyState`]): written only by the proxy, whole and
//!   renamed, on every change (a generation applied, connection counts
//!   that moved, checked every [`STATE_EVERY`]). The agent waits on it:
//!   for the generation it asked for ([`SWITCH_TIMEOUT`]), and for an old
//!   backend's count to reach zero (its drain).
//!
//! A proxy is taken for ours only when the process at the recorded pid has
//! the recorded start time and the command line `drover-agent --proxy
//! STATE_DIR` for this state dir, as a supervisor is.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::MODE_ARG;
use crate::deploy::supervise::{LaunchError, check_identity_as, launch_detached, read_json, write_json};
use crate::watch::Launch;

/// What the agent wants of the proxy.
pub const DESIRED_FILE: &str = "desired.json";
/// What the proxy does: written by it alone.
pub const STATE_FILE: &str = "state.json";
/// The proxy's own log.
pub const LOG_FILE: &str = "proxy.log";
/// Held (flock) by the live proxy of a state dir.
pub const LOCK_FILE: &str = "proxy.lock";
/// How long the agent waits for a new proxy to bind its port, or for a
/// live one to apply a new generation.
pub const SWITCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the proxy checks whether its counts moved and writes
/// `state.json` if so: at most this many writes a second, 20.
pub const STATE_EVERY: Duration = Duration::from_millis(50);
/// How long [`ServiceProxy::stop`] waits for the proxy to exit before it
/// SIGKILLs it.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// `desired.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredProxy {
    /// The service's port on the agent's `--service-address`. Fixed for a
    /// proxy's life: another port is another proxy.
    pub listen: SocketAddr,
    /// The live release's backend, where new connections go.
    pub backend: SocketAddr,
    /// Raised by every change the agent asks for; the proxy reports the
    /// one it applied.
    pub generation: u64,
    /// Connections accepted under a generation below this one are cut
    /// (after a drain that timed out). 0: none.
    #[serde(default)]
    pub cut_before: u64,
    /// Close the port and exit.
    #[serde(default)]
    pub stop: bool,
    /// The agent's `--log-format`, for the proxy's own log.
    pub log_format: String,
}

/// The connections one backend carries, as `state.json` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendCount {
    pub backend: SocketAddr,
    pub active: usize,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyState {
    /// The proxy process, and its start time in clock ticks since boot:
    /// together they tell it from a later process given the same pid.
    pub pid: i32,
    pub start_ticks: u64,
    pub listen: SocketAddr,
    /// Where new connections go.
    pub backend: SocketAddr,
    /// The last generation of `desired.json` applied.
    pub generation: u64,
    /// The connections open now: the current backend first (even at 0),
    /// then every older one still carrying some.
    pub active: Vec<BackendCount>,
    /// [`super::ProxyStats`]' counters since the proxy started.
    pub connections_total: u64,
    pub rejected_over_limit: u64,
    pub failed_connects: u64,
    pub cut: u64,
    /// Why the proxy could not do what was asked (its port in use: it then
    /// exits; a desired change it cannot apply: it serves on).
    pub error: Option<String>,
    /// Set when it closed its port and is about to exit.
    pub finished_ms: Option<u64>,
    pub updated_ms: u64,
}

impl ProxyState {
    /// The connections open now to `backend`.
    pub fn active_on(&self, backend: SocketAddr) -> usize {
        self.active.iter().filter(|a| a.backend == backend).map(|a| a.active).sum()
    }
}

/// A live proxy process of ours: started by this agent or adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProxy {
    dir: PathBuf,
    pid: i32,
    start_ticks: u64,
    listen: SocketAddr,
}

/// The message of a listener that does not bind, as the agent reports it.
pub fn bind_error(listen: SocketAddr, e: &std::io::Error) -> String {
    let (port, address) = (listen.port(), listen.ip());
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!("port {port} on {address} is in use: {e}")
    } else {
        format!("cannot listen on port {port} on {address}: {e}")
    }
}

/// Reads a state dir's `state.json`; None when there is none.
pub fn read_state(dir: &Path) -> Result<Option<ProxyState>, String> {
    read_json(dir, STATE_FILE).map_err(|e| format!("{} does not read: {e}", dir.join(STATE_FILE).display()))
}

/// Whether the agent last asked the proxy of `dir` to stop: such a proxy
/// is not started again.
pub fn stopped_on_purpose(dir: &Path) -> bool {
    matches!(read_json::<DesiredProxy>(dir, DESIRED_FILE), Ok(Some(d)) if d.stop)
}

impl ServiceProxy {
    /// Starts a proxy process in `state_dir` on `listen`, sending
    /// connections to `backend`. Returns once it has bound its port, or
    /// with why it could not (`port N on ADDR is in use: ...`). A live
    /// proxy in the state dir is stopped first. Blocks.
    pub fn start(
        launch: &Launch,
        state_dir: &Path,
        listen: SocketAddr,
        backend: SocketAddr,
    ) -> Result<ServiceProxy, String> {
        let io = |op: &str, path: &Path, e: std::io::Error| format!("cannot {op} {}: {e}", path.display());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| io("create", state_dir, e))?;
        let dir = std::fs::canonicalize(state_dir).map_err(|e| io("resolve", state_dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("make private", &dir, e))?;
        if let Ok(Some((old, _))) = ServiceProxy::adopt(&dir) {
            old.stop()?;
        }
        let generation = read_json::<DesiredProxy>(&dir, DESIRED_FILE).ok().flatten().map_or(0, |d| d.generation) + 1;
        match std::fs::remove_file(dir.join(STATE_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", &dir.join(STATE_FILE), e)),
            _ => {}
        }
        let desired = DesiredProxy {
            listen,
            backend,
            generation,
            cut_before: 0,
            stop: false,
            log_format: launch.log_format.to_string(),
        };
        write_json(&dir, DESIRED_FILE, &desired).map_err(|e| io("write", &dir.join(DESIRED_FILE), e))?;
        let log = dir.join(LOG_FILE);
        let launched = launch_detached(&launch.program, MODE_ARG, &dir, &log, SWITCH_TIMEOUT);
        // A port in use is the proxy's final state, whatever its exit.
        if let Ok(Some(ProxyState { error: Some(error), .. })) = read_state(&dir) {
            return Err(error);
        }
        match launched {
            Ok(()) => {}
            Err(LaunchError::Open(e)) => return Err(io("open", &log, e)),
            Err(LaunchError::Spawn(e)) => return Err(io("start", &launch.program, e)),
            Err(LaunchError::Launch(detail)) => {
                return Err(format!(
                    "the proxy of {} did not start: {detail} (its log: {})",
                    dir.display(),
                    log.display()
                ));
            }
        }
        match ServiceProxy::adopt(&dir)? {
            Some((proxy, _)) => Ok(proxy),
            None => Err(format!("the proxy of {} exited at once (its log: {})", dir.display(), log.display())),
        }
    }

    /// Finds the live proxy of `state_dir` again: Some only if the
    /// recorded pid is alive and is this state dir's proxy. Blocks briefly.
    pub fn adopt(state_dir: &Path) -> Result<Option<(ServiceProxy, ProxyState)>, String> {
        let Ok(dir) = std::fs::canonicalize(state_dir) else { return Ok(None) };
        let Some(state) = read_state(&dir)? else { return Ok(None) };
        if state.finished_ms.is_some() || check_identity_as(state.pid, state.start_ticks, &dir, MODE_ARG).is_err() {
            return Ok(None);
        }
        let proxy = ServiceProxy { dir, pid: state.pid, start_ticks: state.start_ticks, listen: state.listen };
        Ok(Some((proxy, state)))
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The service's address it owns.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Its state dir (canonical).
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    fn alive(&self) -> bool {
        check_identity_as(self.pid, self.start_ticks, &self.dir, MODE_ARG).is_ok()
    }

    /// Its current state; an error once it is gone.
    pub fn state(&self) -> Result<ProxyState, String> {
        if !self.alive() {
            return Err(format!("the proxy of {} (pid {}) is not running", self.dir.display(), self.pid));
        }
        read_state(&self.dir)?.ok_or_else(|| format!("{} has no {STATE_FILE}", self.dir.display()))
    }

    /// Writes the next generation of `desired.json` as `change` makes it,
    /// sends SIGHUP, and returns the generation asked for.
    fn ask(&self, change: impl FnOnce(&mut DesiredProxy)) -> Result<u64, String> {
        let path = self.dir.join(DESIRED_FILE);
        let mut desired = read_json::<DesiredProxy>(&self.dir, DESIRED_FILE)
            .map_err(|e| format!("{} does not read: {e}", path.display()))?
            .ok_or_else(|| format!("{} is missing", path.display()))?;
        desired.generation += 1;
        change(&mut desired);
        write_json(&self.dir, DESIRED_FILE, &desired).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if !self.alive() {
            return Err(format!("the proxy of {} (pid {}) is not running", self.dir.display(), self.pid));
        }
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.pid, libc::SIGHUP) };
        Ok(desired.generation)
    }

    /// Waits until the proxy has applied `generation`.
    fn applied(&self, generation: u64) -> Result<ProxyState, String> {
        let deadline = Instant::now() + SWITCH_TIMEOUT;
        loop {
            let state = self.state()?;
            if state.generation >= generation {
                return Ok(state);
            }
            if Instant::now() >= deadline {
                let why = state.error.map(|e| format!(": {e}")).unwrap_or_default();
                return Err(format!(
                    "the proxy of {} did not apply generation {generation} within {SWITCH_TIMEOUT:?}{why}",
                    self.dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends every connection accepted from now on to `backend`; the old
    /// backend's connections go on. Returns once the proxy applied it,
    /// with the backend switched away from. Blocks.
    pub fn switch(&self, backend: SocketAddr) -> Result<SocketAddr, String> {
        let old = self.state()?.backend;
        let generation = self.ask(|d| d.backend = backend)?;
        self.applied(generation)?;
        Ok(old)
    }

    /// Waits until `old` carries no connection or `timeout` passed, and
    /// says how many are left. Blocks.
    pub fn drain(&self, old: SocketAddr, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let left = match self.state() {
                Ok(state) => state.active_on(old),
                Err(_) => return 0,
            };
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(STATE_EVERY);
        }
    }

    /// Cuts every connection accepted before the current generation (those
    /// on backends switched away from). Blocks until the proxy applied it.
    pub fn cut_old(&self) -> Result<(), String> {
        let generation = self.ask(|d| d.cut_before = d.generation)?;
        self.applied(generation).map(drop)
    }

    /// Asks the proxy to close its port and exit (`desired.json` says
    /// stop, then SIGTERM), and waits until it has, SIGKILLing it past
    /// [`STOP_TIMEOUT`]. Once it returns the port is free. Blocks.
    pub fn stop(&self) -> Result<(), String> {
        let path = self.dir.join(DESIRED_FILE);
        if let Ok(Some(mut desired)) = read_json::<DesiredProxy>(&self.dir, DESIRED_FILE) {
            desired.generation += 1;
            desired.stop = true;
            write_json(&self.dir, DESIRED_FILE, &desired)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        if !self.alive() {
            return Ok(());
        }
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.alive() {
            tracing::warn!(pid = self.pid, dir = %self.dir.display(), "the proxy did not stop: killing it");
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            while self.alive() && Instant::now() < deadline + STOP_TIMEOUT {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }
}
