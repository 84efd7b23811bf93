//! Running one attempt's steps as processes: each step in a process group
//! of its own with a cleared environment (and, with `--run-as`, as another
//! user), its output forwarded as it arrives, its end (exit, timeout,
//! cancel, fence) decided; and, when the attempt ends, every group it made
//! killed, SIGTERM then SIGKILL.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::disk::{ENOSPC_TEXT, Tail, disk_note, free_space};
use super::env::step_env;
use super::mask::{Masker, Patterns};
use super::{Attempt, Context, Control, ExecEvent, KILL_GRACE, fence_reached, signal_group};

/// How long a finished step's output may take to drain before the next
/// step starts (longer only when a daemon holds the step's pipe open).
const STEP_DRAIN: Duration = Duration::from_secs(1);

pub(super) enum StepEnd {
    Exited(i32),
    TimedOut,
    Cancelled,
    Fenced,
    SpawnFailed(String),
}

pub(super) struct Runner<'a> {
    pub(super) attempt: &'a Attempt,
    pub(super) ctx: &'a Context,
    pub(super) workspace: PathBuf,
    pub(super) events: mpsc::UnboundedSender<ExecEvent>,
    pub(super) deadline: Option<Instant>,
    pub(super) control: watch::Receiver<Control>,
    /// Running the steps a cancelled job still runs (`if: cancelled()`,
    /// `always()`): a cancel no longer stops them; their own deadline does.
    pub(super) after_cancel: bool,
    /// The fence deadline passed: kill with SIGKILL at once, no grace.
    pub(super) fenced: bool,
    pub(super) groups: Vec<i32>,
    pub(super) readers: Vec<JoinHandle<()>>,
    /// The step process that was interrupted (timeout, cancel), so it can be
    /// reaped and does not linger as a zombie in its group.
    pub(super) interrupted: Option<tokio::process::Child>,
    /// The end of the last step's output.
    pub(super) tail: Arc<Mutex<Tail>>,
    /// The job's secrets and their encodings, masked in every step's
    /// output; `None` when it has none.
    pub(super) mask: Option<Arc<Patterns>>,
    /// Whether the next step gets the job's secrets (its own steps do,
    /// the checkout does not).
    pub(super) with_secrets: bool,
    /// What the job's cache did so far (restored; then saved).
    pub(super) cache: Option<super::cache::Report>,
}

impl Runner<'_> {
    pub(super) fn say(&self, line: String) {
        let _ = self.events.send(ExecEvent::Output { id: self.attempt.id.clone(), data: line.into_bytes() });
    }

    pub(super) async fn step(&mut self, label: &str, script: &str, extra_env: &[(&str, &str)]) -> StepEnd {
        // The step's span, when traces are exported: a child of the attempt
        // span, ended when the step ends. Its context goes into the step as
        // TRACEPARENT, so build tools can continue the trace. Nothing else
        // uses it (it is never entered), so without an exporter it is not
        // made: the log layer would still format its fields for every step,
        // about 3% of the agent's CPU per trivial job.
        let span = drover_telemetry::trace::exporting().then(|| {
            let span = tracing::info_span!(
                "step",
                otel.name = %format!("step {label}"),
                cicd.pipeline.run.id = %self.attempt.run_id,
                cicd.pipeline.task.name = %self.attempt.job,
                cicd.pipeline.task.run.id = %self.attempt.id,
                drover.agent = %self.ctx.agent,
                drover.step = %label,
                drover.exit_code = tracing::field::Empty,
            );
            if let Some(tp) = &self.attempt.traceparent {
                drover_telemetry::trace::set_parent(&span, tp);
            }
            span
        });
        let traceparent = span.as_ref().and_then(drover_telemetry::trace::span_traceparent);
        let end = self.run_process(script, extra_env, traceparent).await;
        if let (Some(span), StepEnd::Exited(code)) = (&span, &end) {
            span.record("drover.exit_code", code);
        }
        end
    }

    /// The steps' HOME: the run-as user's, else the agent's, else the
    /// workspace.
    pub(super) fn home(&self) -> PathBuf {
        match (&self.ctx.user, &self.ctx.home) {
            (Some(user), _) => user.home.clone(),
            (None, Some(home)) => PathBuf::from(home),
            (None, None) => self.workspace.clone(),
        }
    }

    /// The step's environment (see [`step_env`]).
    fn env(&self, extra_env: &[(&str, &str)], traceparent: Option<&str>) -> BTreeMap<OsString, OsString> {
        let attempt = self.attempt.attempt.to_string();
        let mut drover: Vec<(&str, &OsStr)> = vec![
            ("DROVER_RUN_ID", self.attempt.run_id.as_ref()),
            ("DROVER_JOB", self.attempt.job.as_ref()),
            ("DROVER_ATTEMPT", attempt.as_ref()),
            ("DROVER_AGENT", self.ctx.agent.as_ref()),
            ("DROVER_WORKSPACE", self.workspace.as_os_str()),
        ];
        if let Some((_, commit)) = &self.attempt.checkout {
            drover.push(("DROVER_COMMIT", commit.as_ref()));
        }
        if let Some(tp) = traceparent {
            drover.push(("TRACEPARENT", tp.as_ref()));
        }
        drover.extend(extra_env.iter().map(|(k, v)| (*k, OsStr::new(v))));
        let home = match (&self.ctx.user, &self.ctx.home) {
            (Some(user), _) => user.home.as_os_str(),
            (None, Some(home)) => home.as_os_str(),
            (None, None) => self.workspace.as_os_str(),
        };
        let mut env = step_env(&self.attempt.env, home, &drover);
        if self.with_secrets {
            for (name, value) in &self.attempt.secrets.0 {
                env.insert(OsString::from(name), OsString::from_vec(value.clone()));
            }
        }
        env
    }

    async fn run_process(&mut self, script: &str, extra_env: &[(&str, &str)], traceparent: Option<String>) -> StepEnd {
        let mut cmd = Command::new(&self.ctx.bash);
        cmd.arg("-eo")
            .arg("pipefail")
            .arg("-c")
            .arg(script)
            .current_dir(&self.workspace)
            .env_clear()
            .envs(self.env(extra_env, traceparent.as_deref()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(user) = &self.ctx.user {
            // `runas::become_user` in the forked child; the list was made
            // before. (Without --run-as there is no pre_exec, and std keeps
            // spawning with the cheaper posix_spawn.)
            let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
            // SAFETY: the closure only makes async-signal-safe syscalls on
            // memory it owns.
            unsafe {
                cmd.pre_exec(move || crate::runas::become_user(uid, gid, &groups));
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return StepEnd::SpawnFailed(format!("cannot start {}: {e}", self.ctx.bash.display())),
        };
        if let Some(pid) = child.id() {
            self.groups.push(pid as i32);
            self.ctx.watch.add(pid as i32);
        }
        self.tail = Arc::default();
        let masker = || self.mask.clone().map(Masker::new);
        let mut eofs = Vec::new();
        if let Some(out) = child.stdout.take() {
            let (reader, eof) =
                spawn_reader(out, self.attempt.id.clone(), self.events.clone(), self.tail.clone(), masker());
            self.readers.push(reader);
            eofs.push(eof);
        }
        if let Some(err) = child.stderr.take() {
            let (reader, eof) =
                spawn_reader(err, self.attempt.id.clone(), self.events.clone(), self.tail.clone(), masker());
            self.readers.push(reader);
            eofs.push(eof);
        }
        let deadline = self.deadline;
        let timeout = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let mut cancel = self.control.clone();
        let end = tokio::select! {
            // The fence first: when it and the step's end come together, the
            // attempt must not be reported as if it had been renewed.
            biased;
            () = fence_reached(self.control.clone()) => StepEnd::Fenced,
            status = child.wait() => match status {
                Ok(s) => StepEnd::Exited(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))),
                Err(e) => StepEnd::SpawnFailed(format!("cannot wait for the step: {e}")),
            },
            _ = timeout => StepEnd::TimedOut,
            _ = cancel.wait_for(|c| c.cancelled), if !self.after_cancel => StepEnd::Cancelled,
        };
        if let StepEnd::Exited(_) = end {
            // Let the readers drain what the step wrote before anything
            // else goes into the log, so output stays in order. A daemon the
            // step left running keeps its pipe open; do not wait for it
            // beyond a moment.
            let drained = async {
                for eof in eofs {
                    let _ = eof.await;
                }
            };
            let _ = tokio::time::timeout(STEP_DRAIN, drained).await;
            return end;
        }
        self.interrupted = Some(child);
        end
    }

    /// The message of a step that exited with `code`, with a note when the
    /// work dir's disk is full or the step said it was.
    pub(super) fn failed_message(&self, label: &str, code: i32) -> String {
        let output_says_full = self.tail.lock().unwrap_or_else(|e| e.into_inner()).contains(ENOSPC_TEXT);
        match disk_note(free_space(&self.ctx.work_dir), &self.ctx.work_dir, output_says_full) {
            Some(note) => format!("{label} exited with code {code} ({note})"),
            None => format!("{label} exited with code {code}"),
        }
    }

    /// Kills every process group of the attempt and waits (briefly) for the
    /// output readers, so all output is sent before the result. Each group
    /// leaves the step watcher's list once it is gone or has been sent
    /// SIGKILL (which no process can survive).
    pub(super) async fn finish(&mut self) {
        self.kill_groups().await;
        // A process that escaped its group (setsid) may still hold a pipe
        // open; do not wait for it forever.
        let wait = async {
            for r in self.readers.iter_mut() {
                let _ = r.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), wait).await.is_err() {
            for r in &self.readers {
                r.abort();
            }
        }
    }

    /// Kills every process group of the attempt so far: SIGTERM, then
    /// SIGKILL after [`KILL_GRACE`] (none when fenced). Before a cancelled
    /// job's cleanup steps, so the step it stopped is gone first.
    pub(super) async fn kill_groups(&mut self) {
        let watch = self.ctx.watch.clone();
        let gone = |pgid: i32| {
            watch.remove(pgid);
            false
        };
        // SIGTERM first, SIGKILL for whatever is left after the grace; a
        // fenced attempt gets no grace, as its job may start elsewhere soon.
        let deadline = if self.fenced { Instant::now() } else { Instant::now() + KILL_GRACE };
        self.groups.retain(|pgid| signal_group(*pgid, libc::SIGTERM) || gone(*pgid));
        while !self.groups.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(child) = &mut self.interrupted {
                let _ = child.try_wait();
            }
            self.groups.retain(|pgid| signal_group(*pgid, 0) || gone(*pgid));
        }
        for pgid in self.groups.drain(..) {
            signal_group(pgid, libc::SIGKILL);
            watch.remove(pgid);
        }
        if let Some(mut child) = self.interrupted.take() {
            let _ = child.wait().await;
        }
    }
}

/// Forwards a pipe's bytes as they arrive, in reads of up to 64 KiB, and
/// keeps their end in `tail`. With a `masker`, what goes out is masked
/// first (a partial line may wait for the next read, or the pipe's end).
/// The receiver hears when the pipe reached its end (or broke).
/// A step's pipe reader starts with a small buffer (most steps print
/// little, and two readers run per step) and doubles it, up to
/// [`READ_BUF_MAX`], while reads fill it. It reads into the buffer's spare
/// room, so nothing is zeroed first: with a 64 KiB buffer zeroed per pipe,
/// the `memset`, and the page faults after `free` gave the memory back,
/// were about 3% of the agent's CPU per trivial job.
const READ_BUF_START: usize = 8 * 1024;
const READ_BUF_MAX: usize = 64 * 1024;

fn spawn_reader<R>(
    mut pipe: R,
    id: String,
    events: mpsc::UnboundedSender<ExecEvent>,
    tail: Arc<Mutex<Tail>>,
    mut masker: Option<Masker>,
) -> (JoinHandle<()>, tokio::sync::oneshot::Receiver<()>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF_START);
        loop {
            buf.clear();
            match pipe.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    if let Some(rest) = masker.as_mut().map(Masker::finish).filter(|rest| !rest.is_empty()) {
                        let _ = events.send(ExecEvent::Output { id: id.clone(), data: rest });
                    }
                    let _ = eof_tx.send(());
                    return;
                }
                Ok(n) => {
                    tail.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]);
                    let data = match masker.as_mut() {
                        Some(masker) => masker.push(&buf[..n]),
                        None => buf[..n].to_vec(),
                    };
                    if !data.is_empty() && events.send(ExecEvent::Output { id: id.clone(), data }).is_err() {
                        return;
                    }
                    // A read that filled the buffer: the step prints faster
                    // than the buffer holds, so read more at a time.
                    if n == buf.capacity() && buf.capacity() < READ_BUF_MAX {
                        let bigger = (2 * buf.capacity()).min(READ_BUF_MAX);
                        buf.clear();
                        buf.reserve_exact(bigger);
                    }
                }
            }
        }
    });
    (task, eof_rx)
}
