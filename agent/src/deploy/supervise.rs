//! Service supervision: each deployed service runs under a supervisor
//! process of its own, which outlives the agent, and which a restarted (or
//! upgraded) agent finds again and adopts.
//!
//! # The mechanism
//!
//! Steps die with their agent ([`crate::watch`]); services must do the
//! opposite. So a service is not the agent's child: the agent starts, per
//! service, the `drover-agent` binary in a hidden mode,
//! `drover-agent --supervise STATE_DIR` ([`MODE_ARG`], recognised in
//! `main.rs` before flag parsing), detached: a session and process group of
//! its own (`setsid`), stdin and stdout on /dev/null, a cleared environment
//! (but `NO_COLOR` for its own log), and forked once more so that it is not
//! even the agent's child (`supervise/daemon.rs` has its life). Killing the
//! agent, or the agent's process group, even with SIGKILL, or the step
//! watcher, leaves it running: the watcher never hears of its group.
//!
//! Why a process per service rather than one for all: a supervisor that
//! dies (or is stopped) takes nothing else with it, and its state is one
//! directory that nobody else writes. Why the agent binary: it is on every
//! node already, and `/proc/self/exe` is still the binary that runs after an
//! upgrade replaced the file. A systemd transient unit per service (its own
//! cgroup, the journal for output) is a possible later backend where
//! systemd runs; it is not built (see the gaps below).
//!
//! A service's proxy (`drover-agent --proxy STATE_DIR`, see
//! [`crate::deploy::proxy`]) is launched by the same code
//! (`launch_detached`) and checked by the same identity rule.
//!
//! The supervisor runs one service: `bash -c COMMAND` in the release
//! directory, with a cleared environment (the steps' minimum, the spec's
//! `env`, `DROVER_SERVICE` and `PORT`; see [`crate::exec::step_env`]), as
//! the agent's `--run-as` user when there is one. When the service exits it
//! is started again after a delay growing from [`RESTART_DELAY_FIRST`] to
//! [`RESTART_DELAY_MAX`] (back to the first after [`STABLE_AFTER`] up), and
//! the restarts are counted. Its stdout and stderr go to
//! `STATE_DIR/output.log`, capped at [`OUTPUT_CAP`] and rotated once.
//!
//! # The state dir
//!
//! ```text
//! STATE_DIR/            0700, the agent's user
//!   spec.json           what to run (the agent writes it before launching)
//!   state.json          the supervisor's state, rewritten whole on every change
//!   stop.json           the agent's request to stop, with its grace
//!   supervisor.lock     flock'd by the live supervisor: one per state dir
//!   supervisor.log      the supervisor's own log lines
//!   output.log(.1)      the service's output
//! ```
//!
//! # Stopping and adoption
//!
//! [`Supervisor::stop`] writes `stop.json` (the desired state: stopped,
//! with a grace) and sends the supervisor SIGTERM; the supervisor sends
//! SIGTERM to the service's process group, SIGKILL after the grace, writes
//! its final state and exits. A stopped supervisor leaves no process
//! behind; one that is SIGKILLed takes its service's process with it
//! (`PR_SET_PDEATHSIG`), so a service never runs on where no agent can
//! reach it.
//!
//! A restarted agent calls [`Supervisor::adopt`] with each state dir. It
//! adopts only a supervisor that is alive *and* its own: the process at the
//! recorded pid has the recorded start time and the command line
//! `drover-agent --supervise STATE_DIR` for this state dir. A state whose
//! supervisor is gone, or whose pid another process has taken, comes back
//! as [`Adopted::Stale`] with its last state and the reason, never as a
//! supervisor.
//!
//! # Not a leftover step
//!
//! [`crate::leftovers`] kills processes whose environment holds a
//! `DROVER_WORKSPACE` under the work dir. A supervisor starts with a cleared
//! environment, and its service's environment is built without that
//! variable (a spec that sets it is refused), so the next agent's cleanup
//! never takes a supervisor or its service for a leftover step.
//!
//! # Gaps
//!
//! - Under systemd, `setsid` does not leave the agent unit's control group,
//!   which the unit (`packaging/systemd/drover-agent.service`,
//!   `KillMode=mixed`) kills once the agent has exited. So there each
//!   supervisor (and proxy) starts in a transient scope unit of its own
//!   (`supervise/scope.rs`: `systemd-run --scope`), falling back to starting
//!   it directly. That path runs only under systemd, which CI lacks.
//! - Between checking a supervisor's identity and signalling it, its pid
//!   could in theory be reused; the window is a few system calls.
//! - A SIGKILLed supervisor takes only its service's own process with it;
//!   other processes of the service's group (`bash -c 'a; b'` runs `a` as
//!   a child) run on, and the stale state names the group
//!   ([`State::service_pid`]) for whoever cleans up.
//! - The start that replaces a stale state does not clean up after it.

#[cfg(test)]
mod tests;

mod daemon;
mod output;
mod scope;
mod state;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

pub use daemon::{Backoff, main};
pub use output::{OUTPUT_CAP, OUTPUT_FILE, OUTPUT_OLD_FILE, tail as output_tail};
pub use state::{Desired, Exit, RECENT_EXITS, STATE_FILE, StaleReason, State};

use crate::runas::StepUser;
use crate::watch::Launch;
use state::{SPEC_FILE, STOP_FILE, SpecFile, StopRequest, UserFile, check_identity, group_members};
pub(crate) use state::{check_identity_as, lock_state_dir, now_ms, proc_start, read_json, write_json};

/// The first argument that starts the agent binary as a supervisor:
/// `drover-agent --supervise STATE_DIR`.
pub const MODE_ARG: &str = "--supervise";
/// The first delay before a crashed service starts again.
pub const RESTART_DELAY_FIRST: Duration = Duration::from_millis(100);
/// The longest delay before a crashed service starts again.
pub const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// A service up this long has recovered: its next delay is the first again.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// The grace between SIGTERM and SIGKILL when the supervisor is stopped
/// without saying how long (an operator's `kill PID`).
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How much longer than the grace [`Supervisor::stop`] waits for the
/// supervisor to exit before it SIGKILLs it and the service's group.
pub const STOP_MARGIN: Duration = Duration::from_secs(5);
/// How long [`Supervisor::start`] waits for the supervisor to start the
/// service and write its first state.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// `supervisor.log` past this size is rotated once at the next start.
pub const SUPERVISOR_LOG_CAP: u64 = 1 << 20;
/// The supervisor's own log.
pub const SUPERVISOR_LOG: &str = "supervisor.log";
/// Held (flock) by the live supervisor of a state dir.
const LOCK_FILE: &str = "supervisor.lock";
/// Variables a spec's `env` may not set: Drover sets the first two, and
/// the third would make the next agent take the service for a leftover
/// step and kill it.
const RESERVED_ENV: [&str; 3] = ["PORT", "DROVER_SERVICE", "DROVER_WORKSPACE"];

/// What to run: one service from one release directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The service's name (logs, state).
    pub name: String,
    /// Run with `bash -c`, as a step's `run` is.
    pub command: String,
    /// The release directory it runs in.
    pub dir: PathBuf,
    /// Its variables, on top of the steps' minimum (`PATH`, `HOME`, `LANG`).
    pub env: BTreeMap<String, String>,
    /// Given to it as `PORT`.
    pub port: u16,
    /// The agent's `--run-as` user; None: the agent's own.
    pub user: Option<StepUser>,
    /// The cap of `output.log` ([`OUTPUT_CAP`] by default).
    pub output_cap: u64,
}

impl ServiceSpec {
    /// A spec with no `env`, no run-as user and the default output cap.
    pub fn new(name: impl Into<String>, command: impl Into<String>, dir: impl Into<PathBuf>, port: u16) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            command: command.into(),
            dir: dir.into(),
            env: BTreeMap::new(),
            port,
            user: None,
            output_cap: OUTPUT_CAP,
        }
    }

    fn check(&self) -> Result<(), SuperviseError> {
        let bad = |detail: String| SuperviseError::BadSpec { service: self.name.clone(), detail };
        if self.name.is_empty() || self.command.trim().is_empty() {
            return Err(bad("the name and the command may not be empty".into()));
        }
        if self.command.contains('\0') {
            return Err(bad("the command holds a NUL byte".into()));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return Err(bad(format!("env {key:?}: a name may not be empty or hold `=` or NUL, nor a value NUL")));
            }
            if RESERVED_ENV.contains(&key.as_str()) {
                return Err(bad(format!("env {key}: Drover reserves it (PORT comes from the service's port)")));
            }
        }
        Ok(())
    }
}

/// What can go wrong, each naming the path or pid and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("service {service:?}: {detail}")]
    BadSpec { service: String, detail: String },
    #[error("service {service:?}: its release directory {} is not a directory: {source}; install the release first", .dir.display())]
    NoReleaseDir {
        service: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "a supervisor (pid {pid}) already runs in {}: adopt it (`Supervisor::adopt`) and stop it before starting another",
        .dir.display()
    )]
    AlreadyRunning { dir: PathBuf, pid: i32 },
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the supervisor {}: {source}", .program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the supervisor of {} did not start: {detail} (its log: {}/{SUPERVISOR_LOG})", .dir.display(), .dir.display())]
    Launch { dir: PathBuf, detail: String },
    #[error("{} holds no {STATE_FILE}: no supervisor was started there; check the state dir", .dir.display())]
    NoState { dir: PathBuf },
    #[error(
        "{} does not read: {detail}; once no process of the service runs, remove the state dir and start the service again",
        .path.display()
    )]
    BadState { path: PathBuf, detail: String },
    #[error("the supervisor of {} (pid {pid}) is not running: {reason}; start the service again", .dir.display())]
    Gone { dir: PathBuf, pid: i32, reason: StaleReason },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SuperviseError + 'a {
    move |source| SuperviseError::Io { op, path: path.to_path_buf(), source }
}

/// A live supervisor of ours: started by this agent or adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervisor {
    dir: PathBuf,
    pid: i32,
    start_ticks: u64,
}

/// What [`Supervisor::adopt`] found in a state dir.
#[derive(Debug)]
pub enum Adopted {
    /// A live supervisor of ours, with its state as read.
    Live(Supervisor, State),
    /// Its supervisor is gone: nothing runs to adopt (its output is still
    /// readable with [`output_tail`]).
    Stale { dir: PathBuf, state: State, reason: StaleReason },
}

/// Reads a state dir's `state.json`.
pub fn read_state(dir: &Path) -> Result<State, SuperviseError> {
    read_json(dir, STATE_FILE)
        .map_err(|detail| SuperviseError::BadState { path: dir.join(STATE_FILE), detail })?
        .ok_or_else(|| SuperviseError::NoState { dir: dir.to_path_buf() })
}

impl Supervisor {
    /// Starts a supervisor for `spec` in `state_dir` with the running
    /// agent's own binary (`/proc/self/exe`, which stays the binary that
    /// runs even after an upgrade replaced the file).
    pub fn start(spec: &ServiceSpec, state_dir: &Path) -> Result<Supervisor, SuperviseError> {
        let launch = Launch { program: PathBuf::from("/proc/self/exe"), log_format: "text" };
        Supervisor::start_with(&launch, spec, state_dir)
    }

    /// Starts a supervisor with the given binary (tests pass the built
    /// `drover-agent`) and log format. Returns once the supervisor has
    /// started the service, or recorded why it could not
    /// ([`State::last_error`]), and written its first state. Blocks for
    /// that long: call it from a blocking thread.
    pub fn start_with(launch: &Launch, spec: &ServiceSpec, state_dir: &Path) -> Result<Supervisor, SuperviseError> {
        spec.check()?;
        let no_dir =
            |source| SuperviseError::NoReleaseDir { service: spec.name.clone(), dir: spec.dir.clone(), source };
        std::fs::read_dir(&spec.dir).map_err(no_dir)?;
        // The supervisor runs from `/`: a relative directory would mean
        // another one there.
        let release = std::fs::canonicalize(&spec.dir).map_err(no_dir)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io_err("create", state_dir))?;
        let dir = std::fs::canonicalize(state_dir).map_err(io_err("resolve", state_dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err("make private", &dir))?;
        if let Ok(Adopted::Live(running, _)) = Supervisor::adopt(&dir) {
            return Err(SuperviseError::AlreadyRunning { dir, pid: running.pid });
        }
        for old in [STATE_FILE, STOP_FILE] {
            match std::fs::remove_file(dir.join(old)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err("remove", &dir.join(old))(e)),
                _ => {}
            }
        }
        write_json(&dir, SPEC_FILE, &spec_file(launch, spec, &release))
            .map_err(io_err("write", &dir.join(SPEC_FILE)))?;
        let log_path = dir.join(SUPERVISOR_LOG);
        let launch_err = |detail: String| SuperviseError::Launch { dir: dir.clone(), detail };
        match launch_detached(&launch.program, MODE_ARG, &dir, &log_path, START_TIMEOUT) {
            Ok(()) => {}
            Err(LaunchError::Open(source)) => return Err(io_err("open", &log_path)(source)),
            Err(LaunchError::Spawn(source)) => {
                return Err(SuperviseError::Spawn { program: launch.program.clone(), source });
            }
            Err(LaunchError::Launch(detail)) => return Err(launch_err(detail)),
        }
        match Supervisor::adopt(&dir)? {
            Adopted::Live(supervisor, _) => Ok(supervisor),
            Adopted::Stale { reason, .. } => {
                Err(launch_err(format!("it exited at once ({reason}): {}", last_line(&log_path))))
            }
        }
    }

    /// Finds the supervisor of `state_dir` again (after an agent restart):
    /// [`Adopted::Live`] only if the recorded pid is alive and is this
    /// state dir's supervisor, else [`Adopted::Stale`].
    pub fn adopt(state_dir: &Path) -> Result<Adopted, SuperviseError> {
        let dir =
            std::fs::canonicalize(state_dir).map_err(|_| SuperviseError::NoState { dir: state_dir.to_path_buf() })?;
        let state = read_state(&dir)?;
        if state.finished_ms.is_some() {
            return Ok(Adopted::Stale { dir, state, reason: StaleReason::Finished });
        }
        match check_identity(state.supervisor_pid, state.supervisor_start_ticks, &dir) {
            Ok(()) => {
                let supervisor =
                    Supervisor { dir, pid: state.supervisor_pid, start_ticks: state.supervisor_start_ticks };
                Ok(Adopted::Live(supervisor, state))
            }
            Err(reason) => Ok(Adopted::Stale { dir, state, reason }),
        }
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Its state dir (canonical).
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Why it is not (or no longer) a live supervisor of ours, if so.
    fn stale(&self) -> Option<StaleReason> {
        check_identity(self.pid, self.start_ticks, &self.dir).err()
    }

    /// Its current state; an error once it is gone.
    pub fn status(&self) -> Result<State, SuperviseError> {
        if let Some(reason) = self.stale() {
            return Err(SuperviseError::Gone { dir: self.dir.clone(), pid: self.pid, reason });
        }
        read_state(&self.dir)
    }

    /// Stops the service and its supervisor: SIGTERM to the service's
    /// group, SIGKILL after `grace`, and the supervisor exits. Returns the
    /// final state. Should the supervisor not exit within the grace and
    /// [`STOP_MARGIN`], it and the service's group are SIGKILLed. Blocks:
    /// call it from a blocking thread.
    pub fn stop(&self, grace: Duration) -> Result<State, SuperviseError> {
        if let Some(reason) = self.stale() {
            return match read_state(&self.dir) {
                Ok(state) if state.finished_ms.is_some() => Ok(state),
                _ => Err(SuperviseError::Gone { dir: self.dir.clone(), pid: self.pid, reason }),
            };
        }
        let request = StopRequest { grace_ms: grace.as_millis() as u64 };
        write_json(&self.dir, STOP_FILE, &request).map_err(io_err("write", &self.dir.join(STOP_FILE)))?;
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace + STOP_MARGIN;
        while self.stale().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.stale().is_none() {
            tracing::warn!(pid = self.pid, dir = %self.dir.display(), "the supervisor did not stop: killing it");
            let service = read_state(&self.dir).ok().and_then(|s| s.service_pid);
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            if let Some(pgid) = service.filter(|g| !group_members(*g).is_empty()) {
                crate::exec::signal_group(pgid, libc::SIGKILL);
            }
        }
        read_state(&self.dir)
    }

    /// The last `bytes` bytes of the service's output.
    pub fn output_tail(&self, bytes: u64) -> Result<Vec<u8>, SuperviseError> {
        output_tail(&self.dir, bytes).map_err(io_err("read the output in", &self.dir))
    }
}

/// The spec as the supervisor reads it: the environment built here, as a
/// step's is, with the run-as user's ids and HOME.
fn spec_file(launch: &Launch, spec: &ServiceSpec, release: &Path) -> SpecFile {
    let agent_home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    let home: &OsStr = match (&spec.user, &agent_home) {
        (Some(user), _) => user.home.as_os_str(),
        (None, Some(home)) => home,
        (None, None) => release.as_os_str(),
    };
    let env = crate::exec::step_env(&spec.env, home, &[("DROVER_SERVICE", OsStr::new(&spec.name))]);
    let text = |s: OsString| s.into_string().unwrap_or_else(|s| s.to_string_lossy().into_owned());
    SpecFile {
        service: spec.name.clone(),
        command: spec.command.clone(),
        dir: release.to_path_buf(),
        env: env.into_iter().map(|(k, v)| (text(k), text(v))).collect(),
        port: spec.port,
        user: spec.user.as_ref().map(|u| UserFile {
            name: u.name.clone(),
            uid: u.uid,
            gid: u.gid,
            groups: u.groups.clone(),
        }),
        output_cap: spec.output_cap,
        log_format: launch.log_format.to_string(),
    }
}

/// Why [`launch_detached`] failed.
#[derive(Debug)]
pub(crate) enum LaunchError {
    /// The log file does not open.
    Open(std::io::Error),
    /// The binary does not start.
    Spawn(std::io::Error),
    /// It started but did not get ready: why, with its log's last line.
    Launch(String),
}

/// Starts `program MODE DIR` (the agent binary in one of its detached
/// modes: a supervisor, a service's proxy) as [`Supervisor::start_with`]
/// describes: a session of its own (`setsid`), stdin and stdout on
/// /dev/null, stderr appended to `log_path` (rotated once past
/// [`SUPERVISOR_LOG_CAP`]), a cleared environment but `NO_COLOR`, run
/// from `/`, every inherited descriptor closed. The mode forks and its
/// first process exits once the long-lived one is ready; this waits for
/// that, `timeout` at most. Blocks.
pub(crate) fn launch_detached(
    program: &Path,
    mode: &str,
    dir: &Path,
    log_path: &Path,
    timeout: Duration,
) -> Result<(), LaunchError> {
    // Under systemd: in a transient scope of its own, outside the agent's
    // unit (see `scope`); directly when that fails.
    if let Some(run) = scope::systemd_run() {
        match launch(program, Some(&run), mode, dir, log_path, timeout) {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = ?e, dir = %dir.display(), "systemd-run --scope failed; starting it directly")
            }
        }
    }
    launch(program, None, mode, dir, log_path, timeout)
}

fn launch(
    program: &Path,
    systemd_run: Option<&Path>,
    mode: &str,
    dir: &Path,
    log_path: &Path,
    timeout: Duration,
) -> Result<(), LaunchError> {
    if std::fs::metadata(log_path).is_ok_and(|m| m.len() > SUPERVISOR_LOG_CAP) {
        let mut old = log_path.as_os_str().to_os_string();
        old.push(".1");
        let _ = std::fs::rename(log_path, old);
    }
    let log = std::fs::OpenOptions::new().append(true).create(true).open(log_path).map_err(LaunchError::Open)?;
    let mut cmd = match systemd_run {
        Some(run) => {
            let mut cmd = std::process::Command::new(run);
            cmd.args(scope::args(mode, dir)).arg(program);
            cmd
        }
        None => {
            let mut cmd = std::process::Command::new(program);
            cmd.arg0("drover-agent");
            cmd
        }
    };
    cmd.arg(mode)
        .arg(dir)
        .env_clear()
        // Its log is a file: no terminal colours in it.
        .env("NO_COLOR", "1")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: the closure runs in the forked child before exec and
    // makes only async-signal-safe system calls, on no memory at all.
    unsafe {
        cmd.pre_exec(|| {
            // A session and process group of its own: no signal to the
            // agent's group or terminal reaches it.
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // Every descriptor the agent inherited without close-on-exec
            // gets it now: a long-lived process must hold no pipe that
            // someone waits on to close. (Kernels before 5.11 fail this,
            // harmlessly.)
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(LaunchError::Spawn)?;
    // It forks, and exits once the long-lived process is ready.
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LaunchError::Launch(format!("it did not get ready within {timeout:?}")));
            }
            Err(e) => return Err(LaunchError::Launch(format!("cannot wait for it: {e}"))),
        }
    };
    if !status.success() {
        return Err(LaunchError::Launch(format!("it exited with {status}: {}", last_line(log_path))));
    }
    Ok(())
}

/// The last line of a log, for an error message.
fn last_line(path: &Path) -> String {
    let tail = output::read_end(path, 600).unwrap_or_default();
    let text = String::from_utf8_lossy(&tail);
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("it wrote nothing").trim().to_string()
}
