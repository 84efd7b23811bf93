//! The proxy process: `drover-agent --proxy STATE_DIR`, one per service,
//! which runs a [`Proxy`] on the service's port so that the port answers
//! while the agent is down. See [`super`] for why and [`super::process`]
//! for the files it shares with the agent.
//!
//! Its life, as a supervisor's (`supervise/daemon.rs`):
//!
//! 1. The agent starts it detached (`setsid`, a cleared environment,
//!    stderr on `proxy.log`). It takes `proxy.lock` (one proxy a state
//!    dir) and reads `desired.json`.
//! 2. It forks: the child is the proxy for good; the parent exits once the
//!    child has bound the port (or failed to, the error in `state.json`),
//!    so the agent's start returns with the state in place and the proxy
//!    is never the agent's child.
//! 3. The loop: on SIGHUP it reads `desired.json` again and applies a new
//!    generation (a switch, a cut of old connections, or a stop); every
//!    [`STATE_EVERY`] it writes `state.json` if its counts moved.
//! 4. On SIGTERM, or a desired stop: it closes its port and every
//!    connection, writes its final state and exits. SIGINT is ignored.

use std::ffi::OsString;
use std::io::{PipeWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use super::process::{BackendCount, DESIRED_FILE, DesiredProxy, LOCK_FILE, ProxyState, STATE_EVERY, STATE_FILE};
use super::{MODE_ARG, Proxy, ProxyHandle, Switched};
use crate::deploy::supervise::{now_ms, proc_start, read_json, write_json};

/// Takes the state dir's lock and reads what to do, before the fork, so
/// that a bad state dir fails the agent's start with a message.
fn prepare(dir: &Path) -> Result<(std::fs::File, DesiredProxy), String> {
    let lock = crate::deploy::supervise::lock_state_dir(dir, LOCK_FILE, "proxy")?;
    let desired = read_json::<DesiredProxy>(dir, DESIRED_FILE)
        .map_err(|e| format!("{} does not read: {e}", dir.join(DESIRED_FILE).display()))?
        .ok_or_else(|| format!("{DESIRED_FILE} is missing: the agent writes it before it starts a proxy"))?;
    Ok((lock, desired))
}

/// The proxy process's `main`: `args` are those after [`MODE_ARG`], the
/// state dir alone.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let [dir] = args.as_slice() else {
        eprintln!("usage: drover-agent {MODE_ARG} STATE_DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let fail = |what: String| {
        eprintln!("drover-agent {MODE_ARG} {}: {what}", dir.display());
        ExitCode::FAILURE
    };
    let (lock, desired) = match prepare(&dir) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let (mut ready_rx, ready_tx) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(e) => return fail(format!("cannot make a pipe: {e}")),
    };
    // SAFETY: nothing before this point started a thread (no runtime, no
    // logging yet), so the child is a whole copy of a one-thread process
    // and may do anything; the parent only reads a pipe and exits.
    match unsafe { libc::fork() } {
        -1 => fail(format!("cannot fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(ready_rx);
            let format = desired.log_format.parse().unwrap_or_default();
            let _telemetry = drover_telemetry::trace::init(format, "drover-agent", None);
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "proxy: cannot build its runtime");
                    return ExitCode::FAILURE;
                }
            };
            let code = runtime.block_on(run(&dir, desired, ready_tx));
            drop(lock);
            code
        }
        _child => {
            drop(ready_tx);
            drop(lock);
            // One byte once the port is bound and the state written; end
            // of file if the proxy failed or died first.
            let mut byte = [0u8; 1];
            match ready_rx.read(&mut byte) {
                Ok(1) => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// What the loop keeps besides the proxy.
struct Served {
    dir: PathBuf,
    state: ProxyState,
    handle: ProxyHandle,
    /// The switches made, each with the generation its old backend served
    /// under, until their connections are gone or cut.
    switched: Vec<(u64, Switched)>,
}

impl Served {
    /// Refreshes the counts; writes `state.json` if anything changed (or
    /// `force`).
    fn save(&mut self, force: bool) {
        let stats = self.handle.stats();
        let before = self.state.clone();
        let s = &mut self.state;
        s.backend = stats.backend;
        s.active = stats.active.iter().map(|a| BackendCount { backend: a.backend, active: a.active }).collect();
        s.connections_total = stats.connections_total;
        s.rejected_over_limit = stats.rejected_over_limit;
        s.failed_connects = stats.failed_connects;
        s.cut = stats.cut;
        if force || *s != before {
            s.updated_ms = now_ms();
            if let Err(e) = write_json(&self.dir, STATE_FILE, s) {
                warn!(dir = %self.dir.display(), error = %e, "proxy: cannot write its state");
            }
        }
    }

    /// Applies `desired.json` as it is now; false: stop.
    fn apply(&mut self) -> bool {
        let desired = match read_json::<DesiredProxy>(&self.dir, DESIRED_FILE) {
            Ok(Some(d)) => d,
            Ok(None) => {
                warn!("proxy: {DESIRED_FILE} is gone; serving on as before");
                return true;
            }
            Err(e) => {
                warn!(error = %e, "proxy: {DESIRED_FILE} does not read; serving on as before");
                return true;
            }
        };
        if desired.stop {
            return false;
        }
        if desired.generation <= self.state.generation {
            return true;
        }
        if desired.listen != self.state.listen {
            self.state.error = Some(format!(
                "generation {}: the listen address cannot change ({} to {}); stop this proxy and start another",
                desired.generation, self.state.listen, desired.listen
            ));
            return true;
        }
        if desired.backend != self.handle.backend() {
            let switched = self.handle.switch(desired.backend);
            self.switched.push((self.state.generation, switched));
        }
        self.switched.retain(|(_, s)| s.remaining() > 0);
        for (_, switched) in self.switched.extract_if(.., |(old, _)| *old < desired.cut_before) {
            tokio::spawn(async move {
                let cut = switched.close_old().await;
                info!(cut, backend = %switched.old_backend(), "proxy: cut the connections left on an old backend");
            });
        }
        self.state.generation = desired.generation;
        self.state.error = None;
        true
    }
}

/// The forked proxy: binds, tells its parent, serves until stopped.
async fn run(dir: &Path, desired: DesiredProxy, mut ready: PipeWriter) -> ExitCode {
    // Before anything else: a SIGHUP before its handler would end the
    // process.
    let (Ok(mut hup), Ok(mut term), Ok(_int)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("proxy: cannot install its signal handlers");
        return ExitCode::FAILURE;
    };
    let pid = std::process::id() as i32;
    let start_ticks = proc_start(pid).map_or(0, |(_, ticks)| ticks);
    let mut state = ProxyState {
        pid,
        start_ticks,
        listen: desired.listen,
        backend: desired.backend,
        generation: desired.generation,
        active: Vec::new(),
        connections_total: 0,
        rejected_over_limit: 0,
        failed_connects: 0,
        cut: 0,
        error: None,
        finished_ms: None,
        updated_ms: now_ms(),
    };
    let listener = match TcpListener::bind(desired.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            let message = super::process::bind_error(desired.listen, &e);
            error!(error = %message, "proxy: cannot bind the service's port");
            state.error = Some(message);
            state.finished_ms = Some(now_ms());
            let _ = write_json(dir, STATE_FILE, &state);
            return ExitCode::FAILURE;
        }
    };
    let proxy = Proxy::bind(listener, desired.backend);
    let handle = proxy.handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run(async move {
        let _ = stop_rx.await;
    }));
    let mut served = Served { dir: dir.to_path_buf(), state, handle, switched: Vec::new() };
    served.save(true);
    info!(listen = %desired.listen, backend = %desired.backend, generation = desired.generation, "proxy: serving");
    let _ = ready.write_all(&[1]);
    drop(ready);
    // A stop asked for while it started.
    let mut serving = served.apply();
    let mut tick = tokio::time::interval(STATE_EVERY);
    while serving {
        tokio::select! {
            _ = hup.recv() => {
                serving = served.apply();
                served.save(true);
            }
            _ = term.recv() => serving = false,
            _ = tick.tick() => served.save(false),
        }
    }
    let _ = stop_tx.send(());
    let _ = task.await;
    served.save(false);
    served.state.finished_ms = Some(now_ms());
    served.save(true);
    info!(listen = %desired.listen, "proxy: stopped; the port is free");
    ExitCode::SUCCESS
}
