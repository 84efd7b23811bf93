//! The supervisor process: `drover-agent --supervise STATE_DIR`, one per
//! service, which runs the service, restarts it, keeps its output and
//! state, and stops it on request. See [`super`] for why it is a process
//! of its own and how the agent finds it again.
//!
//! Its life:
//!
//! 1. The agent starts it with `setsid` (a session and process group of its
//!    own), stdin and stdout on /dev/null, stderr on `supervisor.log`, and
//!    a cleared environment. It takes `supervisor.lock` (one supervisor a
//!    state dir), reads `spec.json` and opens the output, so that a bad
//!    state dir fails the agent's start with a message.
//! 2. It forks: the child is the supervisor for good; the parent waits
//!    until the child has started the service (or failed to) and written
//!    `state.json`, then exits, so the agent's `start` returns with the
//!    state in place. The supervisor is thus never the agent's child: the
//!    agent never has to reap it, whether it started it or adopted it.
//! 3. The loop: start the service (`bash -c COMMAND` in the release
//!    directory, its own process group, the spec's environment plus
//!    `PORT`, as the run-as user when there is one); when it exits,
//!    SIGKILL whatever it left in its group, wait [`Backoff`]'s delay and
//!    start it again.
//! 4. On SIGTERM (the agent's stop, after it wrote `stop.json` with the
//!    grace it wants): SIGTERM to the service's group, SIGKILL after the
//!    grace, the final state written (`desired: stopped`, `finished_ms`),
//!    exit. SIGHUP and SIGINT are ignored.
//!
//! The service's direct process also gets `PR_SET_PDEATHSIG` SIGKILL: if
//! the supervisor itself is killed (SIGKILL, the OOM killer), the service
//! does not run on unsupervised, holding its port, where no agent can
//! stop it. The signal fires when the *thread* that spawned the process
//! ends; here that is the supervisor's only runtime thread, its main one,
//! which lives as long as the process.

use std::ffi::OsString;
use std::io::{PipeReader, PipeWriter, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::output::Output;
use super::state::{
    Desired, Exit, SPEC_FILE, STATE_FILE, STOP_FILE, SpecFile, State, StopRequest, group_members, now_ms, proc_start,
    read_json, write_json,
};
use super::{LOCK_FILE, RESTART_DELAY_FIRST, RESTART_DELAY_MAX, STABLE_AFTER, STOP_GRACE};
use crate::exec::{DEFAULT_PATH, signal_group};

/// The delays between a service's exit and its next start: from
/// [`RESTART_DELAY_FIRST`], doubling up to [`RESTART_DELAY_MAX`]; a run
/// that lasted [`STABLE_AFTER`] starts the series again, so one crash a day
/// costs a tenth of a second, and a crash loop one start every 30 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: RESTART_DELAY_FIRST }
    }
}

impl Backoff {
    /// The delay before the next start, after a run that lasted `uptime`.
    pub fn after_exit(&mut self, uptime: Duration) -> Duration {
        if uptime >= STABLE_AFTER {
            self.next = RESTART_DELAY_FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(RESTART_DELAY_MAX);
        delay
    }
}

/// What the supervisor holds before it forks.
struct Prepared {
    /// Held (flock) for the supervisor's life; the child's copy keeps it
    /// once the parent exits.
    _lock: std::fs::File,
    spec: SpecFile,
    output: Output,
    bash: PathBuf,
}

fn prepare(dir: &Path) -> Result<Prepared, String> {
    let lock = super::state::lock_state_dir(dir, LOCK_FILE, "supervisor")?;
    let spec: SpecFile = read_json(dir, SPEC_FILE)
        .map_err(|e| format!("{} does not read: {e}", dir.join(SPEC_FILE).display()))?
        .ok_or_else(|| format!("{} is missing: the agent writes it before it starts a supervisor", SPEC_FILE))?;
    let output = Output::open(dir, spec.output_cap)
        .map_err(|e| format!("cannot open the output log in {}: {e}", dir.display()))?;
    // As the steps' bash: found on the fixed PATH, not on any that a
    // pipeline or the agent's environment sets.
    let bash = DEFAULT_PATH
        .split(':')
        .map(|d| Path::new(d).join("bash"))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no bash on {DEFAULT_PATH}"))?;
    Ok(Prepared { _lock: lock, spec, output, bash })
}

/// The supervisor process's `main`: `args` are those after
/// [`super::MODE_ARG`], the state dir alone.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let [dir] = args.as_slice() else {
        eprintln!("usage: drover-agent {} STATE_DIR", super::MODE_ARG);
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let prepared = match prepare(&dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("drover-agent {} {}: {e}", super::MODE_ARG, dir.display());
            return ExitCode::FAILURE;
        }
    };
    let (mut ready_rx, ready_tx) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(e) => {
            eprintln!("drover-agent {} {}: cannot make a pipe: {e}", super::MODE_ARG, dir.display());
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: nothing before this point started a thread (no runtime, no
    // logging yet), so the child is a whole copy of a one-thread process
    // and may do anything; the parent only reads a pipe and exits.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!(
                "drover-agent {} {}: cannot fork: {}",
                super::MODE_ARG,
                dir.display(),
                std::io::Error::last_os_error()
            );
            ExitCode::FAILURE
        }
        0 => {
            drop(ready_rx);
            supervise(&dir, prepared, ready_tx)
        }
        _child => {
            drop(ready_tx);
            drop(prepared);
            // One byte once the service started (or failed to) and the
            // state is written; end of file if the supervisor died first.
            let mut byte = [0u8; 1];
            match ready_rx.read(&mut byte) {
                Ok(1) => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The forked supervisor: logging, a one-thread runtime, the loop.
fn supervise(dir: &Path, prepared: Prepared, ready: PipeWriter) -> ExitCode {
    let format = prepared.spec.log_format.parse().unwrap_or_default();
    let _telemetry = drover_telemetry::trace::init(format, "drover-agent", None);
    // One thread: the service must be spawned by the thread that lives as
    // long as the process, or its parent-death signal would fire early.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "supervisor: cannot build its runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(dir, prepared, ready))
}

/// Copies the service's output pipe into the log until every writer is
/// gone.
fn copy_output(mut pipe: PipeReader, mut output: Output, done: std::sync::mpsc::Sender<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut failed = false;
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
            Ok(n) => {
                if let Err(e) = output.write(&buf[..n])
                    && !failed
                {
                    // Keep reading: a service blocked on a full pipe would
                    // stop serving. Say it once.
                    error!(error = %e, "cannot write the service's output: it is dropped until writing works again");
                    failed = true;
                }
            }
        }
    }
    let _ = done.send(());
}

async fn run(dir: &Path, prepared: Prepared, ready: PipeWriter) -> ExitCode {
    let Prepared { _lock, spec, output, bash } = prepared;
    let me = std::process::id() as i32;
    let ticks = proc_start(me).map(|(_, t)| t).unwrap_or(0);
    let mut state = State::new(spec.service.clone(), me, ticks);
    let save = |state: &mut State| {
        state.updated_ms = now_ms();
        if let Err(e) = write_json(dir, STATE_FILE, state) {
            warn!(error = %e, dir = %dir.display(), "cannot write the supervisor's state");
        }
    };
    let (pipe_rx, pipe_tx) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            error!(error = %e, "cannot make the output pipe");
            return ExitCode::FAILURE;
        }
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || copy_output(pipe_rx, output, done_tx));
    let (Ok(mut term), Ok(_hup), Ok(_int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::hangup()), signal(SignalKind::interrupt()))
    else {
        error!("cannot install the supervisor's signal handlers");
        return ExitCode::FAILURE;
    };
    let mut ready = Some(ready);
    let mut backoff = Backoff::default();
    let user = spec.user.as_ref().map(|u| u.name.as_str()).unwrap_or("the agent's");
    info!(service = %spec.service, dir = %spec.dir.display(), user, "supervising");
    loop {
        let started = Instant::now();
        let spawned = spawn(&spec, &bash, &pipe_tx, me);
        let mut stop = false;
        match spawned {
            Err(e) => {
                let message = format!("cannot start `bash -c` in {}: {e}", spec.dir.display());
                warn!(service = %spec.service, "{message}");
                state.last_error = Some(message);
                save(&mut state);
            }
            Ok(mut child) => {
                let pgid = child.id().map(|p| p as i32).unwrap_or(0);
                let started_ms = now_ms();
                state.service_pid = Some(pgid);
                state.started_ms = Some(started_ms);
                state.next_start_ms = None;
                state.last_error = None;
                save(&mut state);
                if let Some(mut r) = ready.take() {
                    let _ = r.write_all(b"1");
                }
                let status = tokio::select! {
                    status = child.wait() => status,
                    _ = term.recv() => {
                        stop = true;
                        state.desired = Desired::Stopped;
                        save(&mut state);
                        let grace = stop_grace(dir);
                        info!(service = %spec.service, ?grace, "stopping the service");
                        stop_group(&mut child, pgid, grace).await
                    }
                };
                // Whatever the service left in its group goes with it, so a
                // restart never finds a daemon of the last run on its port.
                if !group_members(pgid).is_empty() {
                    signal_group(pgid, libc::SIGKILL);
                }
                let exit = match status {
                    Ok(s) => Exit { started_ms, ended_ms: now_ms(), code: s.code(), signal: s.signal() },
                    Err(_) => Exit { started_ms, ended_ms: now_ms(), code: None, signal: None },
                };
                if !stop {
                    warn!(service = %spec.service, status = %exit.describe(), "the service exited");
                }
                state.record_exit(exit);
            }
        }
        if let Some(mut r) = ready.take() {
            let _ = r.write_all(b"1");
        }
        if stop {
            break;
        }
        let delay = backoff.after_exit(started.elapsed());
        state.next_start_ms = Some(now_ms() + delay.as_millis() as u64);
        save(&mut state);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = term.recv() => break,
        }
        state.restarts += 1;
    }
    state.desired = Desired::Stopped;
    state.next_start_ms = None;
    state.finished_ms = Some(now_ms());
    save(&mut state);
    // The last output still in the pipe: once the supervisor's own end is
    // closed and the service's group is gone, the copier sees the end.
    drop(pipe_tx);
    let _ = done_rx.recv_timeout(Duration::from_secs(1));
    info!(service = %spec.service, "stopped");
    let _ = std::fs::remove_file(dir.join(STOP_FILE));
    ExitCode::SUCCESS
}

/// The grace the agent asked for in `stop.json`, else [`STOP_GRACE`]
/// (a SIGTERM from someone else, say an operator's `kill`).
fn stop_grace(dir: &Path) -> Duration {
    match read_json::<StopRequest>(dir, STOP_FILE) {
        Ok(Some(req)) => Duration::from_millis(req.grace_ms),
        _ => STOP_GRACE,
    }
}

/// SIGTERM to the group, SIGKILL to what is left after `grace`; returns
/// the service's own exit status.
async fn stop_group(child: &mut Child, pgid: i32, grace: Duration) -> std::io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + grace;
    signal_group(pgid, libc::SIGTERM);
    let status = tokio::time::timeout_at(deadline, child.wait()).await;
    while !group_members(pgid).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !group_members(pgid).is_empty() {
        signal_group(pgid, libc::SIGKILL);
    }
    let status = match status {
        Ok(status) => status,
        Err(_) => child.wait().await,
    };
    // SIGKILL cannot be survived; the kernel takes a moment to finish.
    let gone_by = Instant::now() + Duration::from_secs(2);
    while !group_members(pgid).is_empty() && Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    status
}

/// Starts the service once.
fn spawn(spec: &SpecFile, bash: &Path, output: &PipeWriter, supervisor: i32) -> std::io::Result<Child> {
    let mut cmd = Command::new(bash);
    cmd.arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.dir)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("PORT", spec.port.to_string())
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output.try_clone()?)
        .process_group(0);
    let user = spec.user.as_ref().map(|u| (u.uid, u.gid, u.groups.clone()));
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe syscalls (setgroups, setgid, setuid, prctl,
    // getppid) on memory it owns.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid, groups)) = &user {
                crate::runas::become_user(*uid, *gid, groups)?;
            }
            // After the uid change, which would clear it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor may have died before the prctl took hold.
            if libc::getppid() != supervisor {
                return Err(std::io::Error::other("the supervisor is gone"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}
