//! Executing one attempt: a fresh workspace, an optional git checkout, then
//! each step as `bash -eo pipefail -c RUN` in a process group of its own.
//!
//! Output of every step (stdout and stderr, merged in arrival order) goes out
//! as raw byte chunks, never split into lines, so a very long line without a
//! newline streams like anything else. When the attempt ends, for whatever
//! reason, every process group it created gets SIGTERM and, after
//! [`KILL_GRACE`], SIGKILL, so daemons a step left
//! behind (`sleep 1000 &`) do not outlive the job. Steps of one attempt share
//! the workspace, and a daemon started by one step lives until the attempt
//! ends.
//!
//! An agent that dies (SIGKILL, crash) kills nothing. Its steps and their
//! daemons keep running until the next agent on the same work dir starts:
//! it finds them by `DROVER_WORKSPACE`, an absolute path inside the work dir
//! that every step gets, and kills them with their process groups (see
//! [`crate::leftovers`]). A process that cleared its environment and left its
//! group escapes that; systemd's `KillMode` catches it in production.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One attempt as the executor needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: String,
    pub run_id: String,
    pub job: String,
    pub attempt: u32,
    /// (name, script) of each step.
    pub steps: Vec<(String, String)>,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// Repository and commit to check out first.
    pub checkout: Option<(String, String)>,
    /// The attempt span's W3C trace context: step spans are its children.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Output { id: String, data: Vec<u8> },
    Finished { id: String, outcome: Outcome, exit_code: i32, message: String },
}

/// How long a finished step's output may take to drain before the next
/// step starts (longer only when a daemon holds the step's pipe open).
const STEP_DRAIN: Duration = Duration::from_secs(1);

/// How long processes get between SIGTERM and SIGKILL when an attempt
/// ends, as GitLab and Buildkite runners do.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// Signals every process in the group; false when the group is gone.
pub(crate) fn signal_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; it has no
    // memory-safety preconditions.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

enum StepEnd {
    Exited(i32),
    TimedOut,
    Cancelled,
    SpawnFailed(String),
}

struct Runner<'a> {
    attempt: &'a Attempt,
    agent: &'a str,
    workspace: PathBuf,
    events: mpsc::UnboundedSender<ExecEvent>,
    deadline: Option<Instant>,
    cancel: watch::Receiver<bool>,
    groups: Vec<i32>,
    readers: Vec<JoinHandle<()>>,
    /// The step process that was interrupted (timeout, cancel), so it can be
    /// reaped and does not linger as a zombie in its group.
    interrupted: Option<tokio::process::Child>,
}

impl Runner<'_> {
    fn say(&self, line: String) {
        let _ = self.events.send(ExecEvent::Output { id: self.attempt.id.clone(), data: line.into_bytes() });
    }

    async fn step(&mut self, label: &str, script: &str, extra_env: &[(&str, &str)]) -> StepEnd {
        // The step's span: a child of the attempt span, ended when the step
        // ends. Its context goes into the step as TRACEPARENT, so build
        // tools can continue the trace.
        let span = tracing::info_span!(
            "step",
            otel.name = %format!("step {label}"),
            cicd.pipeline.run.id = %self.attempt.run_id,
            cicd.pipeline.task.name = %self.attempt.job,
            cicd.pipeline.task.run.id = %self.attempt.id,
            drover.agent = %self.agent,
            drover.step = %label,
            drover.exit_code = tracing::field::Empty,
        );
        if let Some(tp) = &self.attempt.traceparent {
            drover_telemetry::trace::set_parent(&span, tp);
        }
        let end = self.run_process(script, extra_env, drover_telemetry::trace::span_traceparent(&span)).await;
        if let StepEnd::Exited(code) = &end {
            span.record("drover.exit_code", code);
        }
        end
    }

    async fn run_process(&mut self, script: &str, extra_env: &[(&str, &str)], traceparent: Option<String>) -> StepEnd {
        let mut cmd = Command::new("bash");
        cmd.arg("-eo")
            .arg("pipefail")
            .arg("-c")
            .arg(script)
            .current_dir(&self.workspace)
            .envs(&self.attempt.env)
            .env("DROVER_RUN_ID", &self.attempt.run_id)
            .env("DROVER_JOB", &self.attempt.job)
            .env("DROVER_ATTEMPT", self.attempt.attempt.to_string())
            .env("DROVER_AGENT", self.agent)
            .env("DROVER_WORKSPACE", &self.workspace)
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some((_, commit)) = &self.attempt.checkout {
            cmd.env("DROVER_COMMIT", commit);
        }
        if let Some(tp) = &traceparent {
            cmd.env("TRACEPARENT", tp);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return StepEnd::SpawnFailed(format!("cannot start bash: {e}")),
        };
        if let Some(pid) = child.id() {
            self.groups.push(pid as i32);
        }
        let mut eofs = Vec::new();
        if let Some(out) = child.stdout.take() {
            let (reader, eof) = spawn_reader(out, self.attempt.id.clone(), self.events.clone());
            self.readers.push(reader);
            eofs.push(eof);
        }
        if let Some(err) = child.stderr.take() {
            let (reader, eof) = spawn_reader(err, self.attempt.id.clone(), self.events.clone());
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
        let mut cancel = self.cancel.clone();
        let end = tokio::select! {
            status = child.wait() => match status {
                Ok(s) => StepEnd::Exited(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))),
                Err(e) => StepEnd::SpawnFailed(format!("cannot wait for the step: {e}")),
            },
            _ = timeout => StepEnd::TimedOut,
            _ = cancel.wait_for(|c| *c) => StepEnd::Cancelled,
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

    /// Kills every process group of the attempt and waits (briefly) for the
    /// output readers, so all output is sent before the result.
    async fn finish(&mut self) {
        // SIGTERM first, SIGKILL for whatever is left after the grace.
        let deadline = Instant::now() + KILL_GRACE;
        self.groups.retain(|pgid| signal_group(*pgid, libc::SIGTERM));
        while !self.groups.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(child) = &mut self.interrupted {
                let _ = child.try_wait();
            }
            self.groups.retain(|pgid| signal_group(*pgid, 0));
        }
        for pgid in &self.groups {
            signal_group(*pgid, libc::SIGKILL);
        }
        if let Some(mut child) = self.interrupted.take() {
            let _ = child.wait().await;
        }
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
}

/// Forwards a pipe's bytes as they arrive, in reads of up to 64 KiB.
/// The receiver hears when the pipe reached its end (or broke).
fn spawn_reader<R>(
    mut pipe: R,
    id: String,
    events: mpsc::UnboundedSender<ExecEvent>,
) -> (JoinHandle<()>, tokio::sync::oneshot::Receiver<()>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = eof_tx.send(());
                    return;
                }
                Ok(n) => {
                    if events.send(ExecEvent::Output { id: id.clone(), data: buf[..n].to_vec() }).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (task, eof_rx)
}

/// Runs the attempt to the end and sends its output and result on `events`.
/// Setting `cancel` to true kills it. `work_dir` should be canonical (the
/// agent's is): the next agent finds leftover steps by `DROVER_WORKSPACE`.
pub async fn execute(
    attempt: Attempt,
    agent: String,
    work_dir: PathBuf,
    events: mpsc::UnboundedSender<ExecEvent>,
    cancel: watch::Receiver<bool>,
) {
    let workspace = work_dir.join(attempt.id.replace('/', "-"));
    let deadline = attempt.timeout.map(|t| Instant::now() + t);
    let mut runner = Runner {
        attempt: &attempt,
        agent: &agent,
        workspace: workspace.clone(),
        events: events.clone(),
        deadline,
        cancel,
        groups: Vec::new(),
        readers: Vec::new(),
        interrupted: None,
    };
    let result = run_steps(&mut runner).await;
    runner.finish().await;
    let _ = tokio::fs::remove_dir_all(&workspace).await;
    let (outcome, exit_code, message) = result;
    let _ = events.send(ExecEvent::Finished { id: attempt.id.clone(), outcome, exit_code, message });
}

async fn run_steps(runner: &mut Runner<'_>) -> (Outcome, i32, String) {
    let attempt = runner.attempt;
    let _ = tokio::fs::remove_dir_all(&runner.workspace).await;
    if let Err(e) = tokio::fs::create_dir_all(&runner.workspace).await {
        let msg = format!("cannot create workspace {}: {e}", runner.workspace.display());
        runner.say(format!("drover: {msg}\n"));
        return (Outcome::Failed, -1, msg);
    }
    // (label, script, extra environment) of each step, checkout first.
    type Planned<'a> = (String, String, Vec<(&'a str, &'a str)>);
    let mut steps: Vec<Planned> = Vec::new();
    if let Some((repo, commit)) = &attempt.checkout {
        steps.push((
            format!("checkout {commit}"),
            "git clone --quiet --no-checkout -- \"$DROVER_CHECKOUT_REPO\" . && \
             git -c advice.detachedHead=false checkout --quiet --detach \"$DROVER_COMMIT\""
                .to_string(),
            vec![("DROVER_CHECKOUT_REPO", repo.as_str()), ("GIT_TERMINAL_PROMPT", "0")],
        ));
    }
    for (i, (name, run)) in attempt.steps.iter().enumerate() {
        let label = if name.is_empty() { format!("step {}", i + 1) } else { name.clone() };
        steps.push((label, run.clone(), Vec::new()));
    }
    let total = steps.len();
    for (i, (label, script, extra)) in steps.iter().enumerate() {
        runner.say(format!("==> [{}/{}] {label}\n", i + 1, total));
        match runner.step(label, script, extra).await {
            StepEnd::Exited(0) => {}
            StepEnd::Exited(code) => {
                let msg = format!("{label} exited with code {code}");
                runner.say(format!("==> {msg}\n"));
                return (Outcome::Failed, code, msg);
            }
            StepEnd::TimedOut => {
                let t = attempt.timeout.unwrap_or_default().as_secs();
                let msg = format!("timed out after {t}s during {label}");
                runner.say(format!("==> {msg}\n"));
                return (Outcome::TimedOut, -1, msg);
            }
            StepEnd::Cancelled => {
                let msg = format!("cancelled during {label}");
                runner.say(format!("==> {msg}\n"));
                return (Outcome::Cancelled, -1, msg);
            }
            StepEnd::SpawnFailed(msg) => {
                runner.say(format!("drover: {msg}\n"));
                return (Outcome::Failed, -1, msg);
            }
        }
    }
    (Outcome::Succeeded, 0, String::new())
}
