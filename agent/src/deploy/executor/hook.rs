//! A deploy hook's steps on this node: each `bash -eo pipefail -c RUN`
//! from the hook release's root, in a process group of its own (listed
//! with the step watcher while it lives), with its stdout and stderr on
//! one pipe whose bytes go back as [`Event::HookOutput`] as they come.
//! The executor's header has the rules; the service's task installs the
//! release and sends the final report.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Ctx, Event, HOOK_CHUNK, HOOK_DRAIN, HOOK_OUTPUT_CAP, Hook, HookStep, Order};
use crate::exec::{find_bash, signal_group, step_env};

/// How often a group that was sent SIGTERM is looked at again.
const KILL_POLL: Duration = Duration::from_millis(20);

/// How a step ended.
enum End {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    NotStarted(String),
}

/// A step that failed: which and how, in words, and its exit code when it
/// exited.
pub(super) struct Failed {
    pub message: String,
    pub exit_code: Option<i32>,
}

/// Runs `hook`'s steps for `order` from `root` (the release's directory),
/// one after the other, sending their output; stops at the first that
/// fails. The error says which step and how it ended.
pub(super) async fn run(ctx: &Ctx, order: &Order, hook: &Hook, root: &Path) -> Result<(), Failed> {
    let env = environment(ctx, &order.service, hook, root);
    let bash = find_bash();
    let deadline = hook.timeout.map(|t| Instant::now() + t);
    let mut out = Output::new(ctx.events.clone(), order.action_id.clone(), HOOK_OUTPUT_CAP);
    for (i, step) in hook.steps.iter().enumerate() {
        let label = label(i, step);
        out.write(format!("$ {}\n", step.run.trim_end()).as_bytes());
        let spawn = Spawn { ctx, bash: &bash, script: &step.run, root, env: &env };
        let failed = |message: String| Err(Failed { message, exit_code: None });
        match run_step(spawn, deadline, &mut out).await {
            End::Exited(0) => {}
            End::Exited(code) => {
                return Err(Failed { message: format!("{label} exited with {code}"), exit_code: Some(code) });
            }
            End::Signalled(signal) => return failed(format!("{label} was killed by signal {signal}")),
            End::TimedOut => {
                let after = show(hook.timeout.unwrap_or_default());
                return failed(format!("timed out after {after} in {label}"));
            }
            End::NotStarted(e) => return failed(format!("{label} could not start: {e}")),
        }
    }
    Ok(())
}

/// "step 2 (NAME)", or the first line of its command when it has no name.
fn label(i: usize, step: &HookStep) -> String {
    let what =
        if step.name.trim().is_empty() { step.run.trim().lines().next().unwrap_or_default() } else { &step.name };
    let what: String = match what.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &what[..at]),
        None => what.to_string(),
    };
    format!("step {} ({what})", i + 1)
}

/// A duration as a report says it: whole seconds when it is some, else
/// milliseconds.
pub(super) fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// The steps' whole environment: a job step's minimum (PATH, HOME, LANG),
/// the hook's `env`, then Drover's own variables, which nothing overrides.
/// HOME is the run-as user's, else the agent's, else the release's root.
fn environment(ctx: &Ctx, service: &str, hook: &Hook, root: &Path) -> BTreeMap<OsString, OsString> {
    let agent_home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    let home: &OsStr = match (&ctx.config.user, &agent_home) {
        (Some(user), _) => user.home.as_os_str(),
        (None, Some(home)) => home,
        (None, None) => root.as_os_str(),
    };
    let drover: [(&str, &OsStr); 4] = [
        ("DROVER_SERVICE", service.as_ref()),
        ("DROVER_HOOK", hook.point.as_ref()),
        ("DROVER_RELEASE_VERSION", hook.release.version.as_ref()),
        ("DROVER_NODE", ctx.config.node.as_ref()),
    ];
    step_env(&hook.env, home, &drover)
}

/// What starting a step takes.
struct Spawn<'a> {
    ctx: &'a Ctx,
    bash: &'a Path,
    script: &'a str,
    root: &'a Path,
    env: &'a BTreeMap<OsString, OsString>,
}

/// Runs one step to its end (or `deadline`), sending its output; then
/// kills whatever it left in its group.
async fn run_step(spawn: Spawn<'_>, deadline: Option<Instant>, out: &mut Output) -> End {
    if deadline.is_some_and(|d| d <= Instant::now()) {
        return End::TimedOut;
    }
    let (mut reader, mut child) = match start(&spawn) {
        Ok(started) => started,
        Err(e) => return End::NotStarted(e),
    };
    let Some(pgid) = child.id().map(|pid| pid as i32) else {
        return End::NotStarted("it ended before it could be watched".into());
    };
    let ctx = spawn.ctx;
    ctx.config.watch.add(pgid);
    let timeout = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    let end = loop {
        tokio::select! {
            () = reader.read_into(out), if !reader.eof => {}
            status = child.wait() => break match status {
                Ok(s) => s.code().map_or_else(|| End::Signalled(s.signal().unwrap_or(0)), End::Exited),
                Err(e) => End::NotStarted(format!("cannot wait for it: {e}")),
            },
            () = &mut timeout => break End::TimedOut,
        }
    };
    if !matches!(end, End::TimedOut) {
        // What it wrote before it exited goes out before anything else.
        reader.drain(out, Instant::now() + HOOK_DRAIN).await;
    }
    kill_group(ctx, pgid, &mut child, &mut reader, out).await;
    reader.drain(out, Instant::now() + HOOK_DRAIN).await;
    end
}

/// Starts the step: its stdout and stderr are the write end of one pipe,
/// whose read end is returned with it.
fn start(spawn: &Spawn<'_>) -> Result<(Reader, Child), String> {
    let (read, write) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    let write_err = write.try_clone().map_err(|e| format!("cannot make a pipe: {e}"))?;
    let pipe = pipe::Receiver::from_owned_fd(OwnedFd::from(read)).map_err(|e| format!("cannot read a pipe: {e}"))?;
    let mut cmd = Command::new(spawn.bash);
    cmd.arg("-eo")
        .arg("pipefail")
        .arg("-c")
        .arg(spawn.script)
        .current_dir(spawn.root)
        .env_clear()
        .envs(spawn.env)
        .stdin(Stdio::null())
        .stdout(write)
        .stderr(write_err)
        .process_group(0);
    if let Some(user) = &spawn.ctx.config.user {
        // `runas::become_user` in the forked child, as a job's step.
        let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
        // SAFETY: the closure only makes async-signal-safe syscalls on
        // memory it owns.
        unsafe {
            cmd.pre_exec(move || crate::runas::become_user(uid, gid, &groups));
        }
    }
    let spawned = cmd.spawn();
    // The command holds our copies of the write end: without them, the
    // pipe ends once the step and what it started have closed theirs.
    drop(cmd);
    let child = spawned.map_err(|e| format!("cannot start {}: {e}", spawn.bash.display()))?;
    Ok((Reader { pipe, buf: vec![0; HOOK_CHUNK], eof: false }, child))
}

/// Kills the step's process group (SIGTERM, then SIGKILL after the hook
/// grace), reading its output meanwhile, reaps the step and takes the
/// group off the step watcher's list.
async fn kill_group(ctx: &Ctx, pgid: i32, child: &mut Child, reader: &mut Reader, out: &mut Output) {
    if signal_group(pgid, libc::SIGTERM) {
        let deadline = Instant::now() + ctx.config.hook_grace;
        loop {
            // The step itself, a zombie until reaped, keeps its group.
            let _ = child.try_wait();
            if !signal_group(pgid, 0) {
                break;
            }
            if Instant::now() >= deadline {
                signal_group(pgid, libc::SIGKILL);
                break;
            }
            reader.drain(out, Instant::now() + KILL_POLL).await;
            if reader.eof {
                tokio::time::sleep(KILL_POLL).await;
            }
        }
    }
    ctx.config.watch.remove(pgid);
    let _ = child.wait().await;
}

/// The read end of a step's pipe.
struct Reader {
    pipe: pipe::Receiver,
    buf: Vec<u8>,
    /// The pipe has ended (or broke).
    eof: bool,
}

impl Reader {
    /// Reads once, sending what came.
    async fn read_into(&mut self, out: &mut Output) {
        match self.pipe.read(&mut self.buf).await {
            Ok(0) | Err(_) => self.eof = true,
            Ok(n) => out.write(&self.buf[..n]),
        }
    }

    /// Reads until the pipe ends or `until`.
    async fn drain(&mut self, out: &mut Output, until: Instant) {
        while !self.eof {
            if tokio::time::timeout_at(until, self.read_into(out)).await.is_err() {
                return;
            }
        }
    }
}

/// A hook's output on its way out: in chunks of at most [`HOOK_CHUNK`]
/// bytes, and at most `cap` bytes in all, then a line saying the rest was
/// cut (and nothing more).
pub(super) struct Output {
    events: mpsc::UnboundedSender<Event>,
    action_id: String,
    cap: usize,
    sent: usize,
    cut: bool,
}

impl Output {
    pub(super) fn new(events: mpsc::UnboundedSender<Event>, action_id: String, cap: usize) -> Output {
        Output { events, action_id, cap, sent: 0, cut: false }
    }

    pub(super) fn write(&mut self, data: &[u8]) {
        if self.cut || data.is_empty() {
            return;
        }
        let take = data.len().min(self.cap - self.sent);
        for chunk in data[..take].chunks(HOOK_CHUNK) {
            self.send(chunk.to_vec());
        }
        self.sent += take;
        if take < data.len() {
            self.cut = true;
            let line = format!("\n[drover: the hook's output passed {} bytes; the rest is cut]\n", self.cap);
            self.send(line.into_bytes());
        }
    }

    fn send(&self, data: Vec<u8>) {
        let _ = self.events.send(Event::HookOutput { action_id: self.action_id.clone(), data });
    }
}
