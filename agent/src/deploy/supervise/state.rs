//! What a supervisor leaves in its state dir for whoever asks, and how the
//! agent tells a live supervisor of its own from a stale record.
//!
//! - `state.json` ([`State`]): written only by the supervisor, whole and
//!   renamed into place ([`write_json`]), so a reader sees one version or
//!   the next, never half of one. It is not fsynced: it describes
//!   processes, and after a crash of the machine none of them runs anyway.
//! - `spec.json` ([`SpecFile`]): written only by the agent before it
//!   launches the supervisor, which reads it once. It holds the service's
//!   environment, so the state dir is 0700 and its files 0600.
//! - `stop.json` ([`StopRequest`]): the agent's request to stop, with the
//!   grace it wants, written just before it sends SIGTERM.
//!
//! A pid alone names a process only while that process lives: once it is
//! gone, the kernel may give the number to anything. So a supervisor is
//! taken for ours only when the process at the recorded pid has the
//! recorded start time (`/proc/PID/stat`, in clock ticks since boot) *and*
//! its command line is `drover-agent --supervise STATE_DIR` for this very
//! state dir ([`check_identity`]). A zombie counts as gone.

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::MODE_ARG;

/// The supervisor's state file in a state dir.
pub const STATE_FILE: &str = "state.json";
/// What the supervisor runs, written by the agent.
pub const SPEC_FILE: &str = "spec.json";
/// The agent's request to stop.
pub const STOP_FILE: &str = "stop.json";
/// How many of the service's latest exits `state.json` keeps.
pub const RECENT_EXITS: usize = 10;

/// Whether the service should run: what the supervisor is working towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
}

/// One run of the service's process, from its start to its exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// When the process started, in ms since the Unix epoch.
    pub started_ms: u64,
    /// When the supervisor saw it exit, in ms since the Unix epoch.
    pub ended_ms: u64,
    /// Its exit code, when it exited on its own.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
}

impl Exit {
    /// `code 1`, `signal 9`: for messages.
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "an unknown status".to_string(),
        }
    }
}

/// A supervisor's state, as `state.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The service's name, as the spec gave it.
    pub service: String,
    /// The supervisor process.
    pub supervisor_pid: i32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field
    /// 22), which tells it from a later process given the same pid.
    pub supervisor_start_ticks: u64,
    /// What the supervisor works towards: `stopped` once asked to stop.
    pub desired: Desired,
    /// The service's process (and process group), while one runs.
    pub service_pid: Option<i32>,
    /// When the running process started, in ms since the Unix epoch.
    pub started_ms: Option<u64>,
    /// How many times the service was started again after an exit.
    pub restarts: u32,
    /// The service's last exit.
    pub last_exit: Option<Exit>,
    /// Its latest exits, oldest first, at most [`RECENT_EXITS`].
    pub recent_exits: Vec<Exit>,
    /// While it waits to restart: when the next start is due (ms).
    pub next_start_ms: Option<u64>,
    /// Why the last start failed (bash missing, the directory gone),
    /// cleared by a start that succeeds.
    pub last_error: Option<String>,
    /// Set once the supervisor has stopped the service for good and is
    /// about to exit: this is then its final state.
    pub finished_ms: Option<u64>,
    /// When this state was written (ms).
    pub updated_ms: u64,
}

impl State {
    /// The state of a supervisor that has not started the service yet.
    pub fn new(service: String, supervisor_pid: i32, supervisor_start_ticks: u64) -> State {
        State {
            service,
            supervisor_pid,
            supervisor_start_ticks,
            desired: Desired::Running,
            service_pid: None,
            started_ms: None,
            restarts: 0,
            last_exit: None,
            recent_exits: Vec::new(),
            next_start_ms: None,
            last_error: None,
            finished_ms: None,
            updated_ms: now_ms(),
        }
    }

    /// Records an exit, keeping the latest [`RECENT_EXITS`].
    pub fn record_exit(&mut self, exit: Exit) {
        self.recent_exits.push(exit.clone());
        let extra = self.recent_exits.len().saturating_sub(RECENT_EXITS);
        self.recent_exits.drain(..extra);
        self.last_exit = Some(exit);
        self.service_pid = None;
        self.started_ms = None;
    }
}

/// The run-as user, as `spec.json` carries it (the agent looked it up;
/// see [`crate::runas`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFile {
    /// For the supervisor's log.
    pub name: String,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    /// Every group the user is in, set before the uid.
    pub groups: Vec<u32>,
}

/// What the supervisor runs: the agent's [`super::ServiceSpec`] with
/// everything decided (HOME, the user's ids, the log format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecFile {
    /// The service's name.
    pub service: String,
    /// Run with `bash -c`.
    pub command: String,
    /// The release directory (canonical), where it runs.
    pub dir: PathBuf,
    /// The whole environment but `PORT`, built by `exec::step_env`.
    pub env: Vec<(String, String)>,
    /// Given as `PORT`.
    pub port: u16,
    /// The run-as user; None: the supervisor's own (the agent's).
    pub user: Option<UserFile>,
    /// The cap of `output.log`.
    pub output_cap: u64,
    /// The agent's `--log-format`, for the supervisor's own log.
    pub log_format: String,
}

/// The agent's request to stop, read by the supervisor on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// How long the service gets between SIGTERM and SIGKILL.
    pub grace_ms: u64,
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Writes `value` as JSON to `dir/name`: a private temporary file beside
/// it (0600), renamed over it.
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let body = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(&body)?;
    drop(file);
    std::fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Reads `dir/name` as JSON: `Ok(None)` when there is no such file, an
/// error string when it does not read.
pub fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<Option<T>, String> {
    match std::fs::read(dir.join(name)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| e.to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The state letter and start time (clock ticks since boot) of a process,
/// from `/proc/PID/stat`; None when there is no such process.
pub fn proc_start(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start(&stat)
}

/// The state letter and field 22 (starttime) of a `/proc/PID/stat` line.
/// The command name, in parentheses, may itself hold spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn parse_start(stat: &str) -> Option<(char, u64)> {
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was the state; starttime is field 22, 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether a `/proc/PID/cmdline` (NUL-separated) is a supervisor's for
/// `state_dir`: `PROGRAM --supervise STATE_DIR`, nothing more.
#[cfg(test)]
pub fn is_supervisor_cmdline(cmdline: &[u8], state_dir: &Path) -> bool {
    is_mode_cmdline(cmdline, MODE_ARG, state_dir)
}

/// Whether a `/proc/PID/cmdline` is `PROGRAM MODE STATE_DIR`, nothing
/// more: the agent binary in one of its detached modes (a supervisor, a
/// service's proxy) for this very state dir.
pub fn is_mode_cmdline(cmdline: &[u8], mode: &str, state_dir: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline.strip_suffix(&[0]).unwrap_or(cmdline).split(|b| *b == 0).collect();
    matches!(args.as_slice(), [_, m, dir] if *m == mode.as_bytes() && *dir == state_dir.as_os_str().as_bytes())
}

/// Why a recorded supervisor is not a live one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleReason {
    /// It stopped on request and wrote its final state.
    Finished,
    /// No process has the pid any more (or only a zombie).
    Gone,
    /// Another process has the pid now: a different start time, or not
    /// the supervisor of this state dir.
    Reused { cmdline: String },
}

impl std::fmt::Display for StaleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StaleReason::Finished => write!(f, "it stopped the service and exited"),
            StaleReason::Gone => write!(f, "no such process runs any more"),
            StaleReason::Reused { cmdline } => {
                write!(f, "the pid belongs to another process now ({cmdline:?}), not to this state dir's supervisor")
            }
        }
    }
}

/// Checks that `pid`, started at `start_ticks`, is alive and is the
/// supervisor of `state_dir` (canonical).
pub fn check_identity(pid: i32, start_ticks: u64, state_dir: &Path) -> Result<(), StaleReason> {
    check_identity_as(pid, start_ticks, state_dir, MODE_ARG)
}

/// [`check_identity`] for the agent binary in mode `mode` (`--supervise`,
/// `--proxy`): alive, started at `start_ticks`, and `PROGRAM MODE
/// STATE_DIR` for `state_dir` (canonical).
pub fn check_identity_as(pid: i32, start_ticks: u64, state_dir: &Path, mode: &str) -> Result<(), StaleReason> {
    let cmdline = || std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let shown = |c: &[u8]| {
        String::from_utf8_lossy(c).trim_end_matches('\0').replace('\0', " ").chars().take(200).collect::<String>()
    };
    match proc_start(pid) {
        None | Some(('Z' | 'X', _)) => Err(StaleReason::Gone),
        Some((_, ticks)) if ticks != start_ticks => Err(StaleReason::Reused { cmdline: shown(&cmdline()) }),
        Some(_) => {
            let line = cmdline();
            if is_mode_cmdline(&line, mode, state_dir) {
                Ok(())
            } else {
                Err(StaleReason::Reused { cmdline: shown(&line) })
            }
        }
    }
}

/// The live processes of group `pgid` (zombies have ended: they wait
/// only for a parent to reap them), from a scan of `/proc`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            crate::leftovers::parse_stat(&stat).is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z')
        })
        .collect()
}

/// Takes the lock file `name` in state dir `dir` for the life of the
/// returned file: one daemon (`who`: a supervisor, a proxy) per state dir.
pub fn lock_state_dir(dir: &std::path::Path, name: &str, who: &str) -> Result<std::fs::File, String> {
    let lock_path = dir.join(name);
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => {
            format!("another {who} holds {}: one {who} a state dir", lock_path.display())
        }
        std::fs::TryLockError::Error(e) => format!("cannot lock {}: {e}", lock_path.display()),
    })?;
    Ok(lock)
}
