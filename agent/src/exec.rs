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
//! Steps start with a cleared environment ([`step_env`]): what a step sees
//! is what the pipeline and Drover give it, never the agent's own
//! variables (credentials, `DROVER_AGENT_TLS_DIR`). With `--run-as` they also run
//! as another user (see [`crate::runas`]), which keeps the agent's TLS key
//! out of their reach.
//!
//! An agent that dies (SIGKILL, crash) cannot kill anything itself; its
//! step watcher ([`crate::watch`]) SIGKILLs every process group of its
//! running steps at once. What escapes that (a step spawned in the instant
//! the agent died, or a watcher that died with the agent) is found by the
//! next agent on the same work dir: by `DROVER_WORKSPACE`, an absolute path
//! inside the work dir that every step gets (see [`crate::leftovers`]). A
//! process that cleared its environment and left its group escapes both;
//! systemd's `KillMode` catches it in production.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::runas::StepUser;
use crate::watch::StepWatch;

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
    /// Killed (SIGKILL, at once) because its lease could not be renewed
    /// before its fence deadline: the coordinator may give the job to
    /// another agent soon, and two attempts of one job must never run at
    /// the same time. Not reported: the coordinator takes it for lost.
    Fenced,
}

/// What the agent asks of a running attempt, watched by the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Control {
    /// Kill it (SIGTERM, then SIGKILL after [`KILL_GRACE`]).
    pub cancelled: bool,
    /// Kill it with SIGKILL at this moment unless the deadline moves on
    /// first: the end of its lease as the agent last knew it, less the
    /// safety margin. None: no fencing (a coordinator that does not ask
    /// for it).
    pub fence_at: Option<Instant>,
}

/// Resolves once `control`'s fence deadline has passed (following it as it
/// moves); never while there is none.
async fn fence_reached(mut control: watch::Receiver<Control>) {
    loop {
        let at = control.borrow_and_update().fence_at;
        let changed = async {
            if control.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        match at {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    () = changed => {}
                }
            }
            None => changed.await,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Output { id: String, data: Vec<u8> },
    Finished { id: String, outcome: Outcome, exit_code: i32, message: String },
}

/// What every attempt on this agent shares.
pub struct Context {
    pub agent: String,
    /// Canonical: the next agent finds leftover steps by
    /// `DROVER_WORKSPACE`, a direct child of it.
    pub work_dir: PathBuf,
    /// Whom steps run as (`--run-as`); None: the agent's own user.
    pub user: Option<StepUser>,
    /// HOME of steps without a run-as user: the agent's own HOME; None
    /// (the agent has none): each attempt's workspace.
    pub home: Option<OsString>,
    pub watch: Arc<StepWatch>,
    /// bash, found once on [`DEFAULT_PATH`]: neither the agent's PATH nor a
    /// pipeline's decides which shell runs the steps.
    bash: PathBuf,
    /// How long the checkout of a run's commit may take (`--git-timeout`):
    /// a git server that never answers would otherwise hold the slot until
    /// the job's own timeout, or for ever.
    pub git_timeout: Duration,
}

/// The default of [`Context::git_timeout`], as the coordinator's.
pub const DEFAULT_GIT_TIMEOUT: Duration = Duration::from_secs(60);

impl Context {
    pub fn new(agent: String, work_dir: PathBuf, user: Option<StepUser>, watch: Arc<StepWatch>) -> Context {
        let bash = DEFAULT_PATH
            .split(':')
            .map(|dir| Path::new(dir).join("bash"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("bash"));
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
        Context { agent, work_dir, user, home, watch, bash, git_timeout: DEFAULT_GIT_TIMEOUT }
    }
}

/// The PATH every step starts with. A pipeline may only extend it (the
/// coordinator refuses any other PATH), writing `$PATH` where this goes.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A pipeline's PATH with each `$PATH` or `${PATH}` element replaced by
/// [`DEFAULT_PATH`]. Only whole elements count, as the coordinator checks
/// them: `$PATHS` or `/x$PATH` stay as written.
pub fn expand_path(value: &str) -> String {
    value
        .split(':')
        .map(|element| if element == "$PATH" || element == "${PATH}" { DEFAULT_PATH } else { element })
        .collect::<Vec<_>>()
        .join(":")
}

/// A step's whole environment, built from nothing: `PATH` ([`DEFAULT_PATH`]),
/// `HOME` and `LANG=C.UTF-8`, then the pipeline's and job's `env` (which
/// may set `HOME` and `LANG`, and extend `PATH`), then Drover's own
/// variables (`DROVER_*`, `TRACEPARENT`), which nothing overrides: the next
/// agent finds leftover steps by `DROVER_WORKSPACE`. The agent's own
/// environment never reaches a step.
pub fn step_env(
    job_env: &BTreeMap<String, String>,
    home: &OsStr,
    drover: &[(&str, &OsStr)],
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), home.into());
    env.insert("LANG".into(), "C.UTF-8".into());
    for (key, value) in job_env {
        let value = if key == "PATH" { expand_path(value) } else { value.clone() };
        env.insert(key.into(), value.into());
    }
    for (key, value) in drover {
        env.insert(key.into(), value.into());
    }
    env
}

/// Below this much free space, a failed step's message says the disk is
/// full: a step that just failed to write has often left less than that.
const NEARLY_FULL: u64 = 1024 * 1024;

/// What the kernel says when a disk is full (ENOSPC).
const ENOSPC_TEXT: &[u8] = b"No space left on device";

/// How much of a step's output is kept to look for [`ENOSPC_TEXT`] in.
const TAIL: usize = 4096;

/// What a failed step's message adds about the disk of the work dir, if
/// anything: `free` is what statvfs says is available there (None when it
/// cannot tell), `output_says_full` whether the step's last output holds
/// "No space left on device".
pub fn disk_note(free: Option<u64>, work_dir: &Path, output_says_full: bool) -> Option<String> {
    let dir = work_dir.display();
    match free {
        Some(free) if free < NEARLY_FULL => {
            Some(format!("the work directory's disk is full: {} free on {dir}", bytes(free)))
        }
        Some(free) if output_says_full => {
            Some(format!("its output says \"No space left on device\"; {} free on {dir}", bytes(free)))
        }
        None if output_says_full => Some("its output says \"No space left on device\"".to_string()),
        _ => None,
    }
}

/// A byte count for people: `0 bytes`, `512 KiB`, `3.2 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 { format!("{value:.1} {}", UNITS[unit]) } else { format!("{value:.0} {}", UNITS[unit]) }
}

/// Bytes available to unprivileged users on the file system of `path`.
pub(crate) fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct,
    // and statvfs(2) writes only into it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// The last [`TAIL`] bytes a step wrote, stdout and stderr together.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(TAIL)..];
        self.0.extend_from_slice(data);
        if self.0.len() > TAIL {
            self.0.drain(..self.0.len() - TAIL);
        }
    }

    fn contains(&self, needle: &[u8]) -> bool {
        self.0.windows(needle.len()).any(|w| w == needle)
    }
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
    Fenced,
    SpawnFailed(String),
}

struct Runner<'a> {
    attempt: &'a Attempt,
    ctx: &'a Context,
    workspace: PathBuf,
    events: mpsc::UnboundedSender<ExecEvent>,
    deadline: Option<Instant>,
    control: watch::Receiver<Control>,
    /// The fence deadline passed: kill with SIGKILL at once, no grace.
    fenced: bool,
    groups: Vec<i32>,
    readers: Vec<JoinHandle<()>>,
    /// The step process that was interrupted (timeout, cancel), so it can be
    /// reaped and does not linger as a zombie in its group.
    interrupted: Option<tokio::process::Child>,
    /// The end of the last step's output.
    tail: Arc<Mutex<Tail>>,
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
            drover.agent = %self.ctx.agent,
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
        step_env(&self.attempt.env, home, &drover)
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
            // std sets a uid and gid but not (on stable) supplementary
            // groups, and runs pre_exec only after its own setuid, when
            // setgroups is no longer allowed: so all three go here, groups
            // first and uid last. Only syscalls run in the forked child; the
            // list was made before. (Without --run-as there is no pre_exec,
            // and std keeps spawning with the cheaper posix_spawn.)
            let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
            // SAFETY: the closure only makes async-signal-safe syscalls on
            // memory it owns.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
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
        let mut eofs = Vec::new();
        if let Some(out) = child.stdout.take() {
            let (reader, eof) = spawn_reader(out, self.attempt.id.clone(), self.events.clone(), self.tail.clone());
            self.readers.push(reader);
            eofs.push(eof);
        }
        if let Some(err) = child.stderr.take() {
            let (reader, eof) = spawn_reader(err, self.attempt.id.clone(), self.events.clone(), self.tail.clone());
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
            _ = cancel.wait_for(|c| c.cancelled) => StepEnd::Cancelled,
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
    fn failed_message(&self, label: &str, code: i32) -> String {
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
    async fn finish(&mut self) {
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

/// Forwards a pipe's bytes as they arrive, in reads of up to 64 KiB, and
/// keeps their end in `tail`. The receiver hears when the pipe reached its
/// end (or broke).
fn spawn_reader<R>(
    mut pipe: R,
    id: String,
    events: mpsc::UnboundedSender<ExecEvent>,
    tail: Arc<Mutex<Tail>>,
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
                    tail.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]);
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
/// `control` kills it: on cancel, or at its fence deadline.
pub async fn execute(
    attempt: Attempt,
    ctx: Arc<Context>,
    events: mpsc::UnboundedSender<ExecEvent>,
    control: watch::Receiver<Control>,
) {
    let workspace = ctx.work_dir.join(attempt.id.replace('/', "-"));
    let deadline = attempt.timeout.map(|t| Instant::now() + t);
    let mut runner = Runner {
        attempt: &attempt,
        ctx: &ctx,
        workspace: workspace.clone(),
        events: events.clone(),
        deadline,
        control,
        fenced: false,
        groups: Vec::new(),
        readers: Vec::new(),
        interrupted: None,
        tail: Arc::default(),
    };
    let result = run_steps(&mut runner).await;
    runner.finish().await;
    let _ = tokio::fs::remove_dir_all(&workspace).await;
    let (outcome, exit_code, message) = result;
    let _ = events.send(ExecEvent::Finished { id: attempt.id.clone(), outcome, exit_code, message });
}

/// Makes a fresh, empty workspace; with a run-as user, owned by it with
/// mode 0700. The work dir is the agent's and nobody else can write in it
/// (see [`crate::runas`]), so nothing can put a symlink where the workspace
/// goes between its creation and the chown.
fn make_workspace(workspace: &Path, user: Option<&StepUser>) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::remove_dir_all(workspace) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut builder = std::fs::DirBuilder::new();
    match user {
        None => builder.recursive(true).create(workspace),
        Some(user) => {
            builder.mode(0o700).create(workspace)?;
            std::os::unix::fs::chown(workspace, Some(user.uid), Some(user.gid))
        }
    }
}

async fn run_steps(runner: &mut Runner<'_>) -> (Outcome, i32, String) {
    let attempt = runner.attempt;
    let (workspace, user) = (runner.workspace.clone(), runner.ctx.user.clone());
    let made = tokio::task::spawn_blocking(move || make_workspace(&workspace, user.as_ref()))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    if let Err(e) = made {
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
    let job_deadline = runner.deadline;
    for (i, (label, script, extra)) in steps.iter().enumerate() {
        runner.say(format!("==> [{}/{}] {label}\n", i + 1, total));
        // The checkout has a deadline of its own, within the job's.
        let git_deadline = (i == 0 && attempt.checkout.is_some())
            .then(|| Instant::now() + runner.ctx.git_timeout)
            .filter(|git| job_deadline.is_none_or(|job| *git < job));
        runner.deadline = git_deadline.or(job_deadline);
        let end = runner.step(label, script, extra).await;
        runner.deadline = job_deadline;
        if let (StepEnd::TimedOut, Some(_), Some((repo, _))) = (&end, git_deadline, &attempt.checkout) {
            let msg = format!(
                "git did not finish within {}s checking out {repo}; check that the URL is right and the server \
                 answers, or raise the agent's --git-timeout",
                runner.ctx.git_timeout.as_secs_f64()
            );
            runner.say(format!("==> {msg}\n"));
            return (Outcome::Failed, -1, msg);
        }
        match end {
            StepEnd::Exited(0) => {}
            StepEnd::Exited(code) => {
                let msg = runner.failed_message(label, code);
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
            StepEnd::Fenced => {
                runner.fenced = true;
                let msg = format!(
                    "killed during {label}: its lease could not be renewed in time (no coordinator heard from)"
                );
                runner.say(format!("==> {msg}\n"));
                return (Outcome::Fenced, -1, msg);
            }
            StepEnd::SpawnFailed(msg) => {
                runner.say(format!("drover: {msg}\n"));
                return (Outcome::Failed, -1, msg);
            }
        }
    }
    (Outcome::Succeeded, 0, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<OsString, OsString> {
        pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
    }

    #[test]
    fn a_step_environment_holds_only_what_drover_and_the_pipeline_give() {
        let d = DEFAULT_PATH;
        let drover: &[(&str, &OsStr)] = &[
            ("DROVER_JOB", OsStr::new("build")),
            ("DROVER_WORKSPACE", OsStr::new("/w/1-build-1")),
            ("TRACEPARENT", OsStr::new("00-ab-cd-01")),
        ];
        let base = |more: &[(&str, &str)]| {
            let mut pairs = vec![
                ("PATH", d),
                ("HOME", "/home/b"),
                ("LANG", "C.UTF-8"),
                ("DROVER_JOB", "build"),
                ("DROVER_WORKSPACE", "/w/1-build-1"),
                ("TRACEPARENT", "00-ab-cd-01"),
            ];
            pairs.extend_from_slice(more);
            map(&pairs)
        };
        let with_path = |path: &str| {
            let mut env = base(&[]);
            env.insert("PATH".into(), path.into());
            env
        };
        // (the pipeline's and job's env, the step's whole environment)
        type Case<'a> = (&'a [(&'a str, &'a str)], BTreeMap<OsString, OsString>);
        let cases: Vec<Case> = vec![
            // Nothing from the pipeline: the fixed minimum and Drover's own.
            (&[], base(&[])),
            (&[("MODE", "release"), ("EMPTY", "")], base(&[("MODE", "release"), ("EMPTY", "")])),
            // PATH extends the default where `$PATH` stands.
            (&[("PATH", "$PATH:/opt/x/bin")], with_path(&format!("{d}:/opt/x/bin"))),
            (&[("PATH", "/opt/x/bin:${PATH}")], with_path(&format!("/opt/x/bin:{d}"))),
            (&[("PATH", "/a:$PATH:/b")], with_path(&format!("/a:{d}:/b"))),
            // Only whole elements are expanded, as the coordinator checks.
            (&[("PATH", "$PATHS:/x$PATH")], with_path("$PATHS:/x$PATH")),
            // `$PATH` in another variable is that variable's business.
            (&[("OTHER", "$PATH")], base(&[("OTHER", "$PATH")])),
            // The pipeline may set HOME and LANG...
            (&[("HOME", "/tmp/h"), ("LANG", "de_DE.UTF-8")], {
                let mut env = base(&[]);
                env.insert("HOME".into(), "/tmp/h".into());
                env.insert("LANG".into(), "de_DE.UTF-8".into());
                env
            }),
            // ...but never Drover's own variables.
            (&[("DROVER_WORKSPACE", "/elsewhere"), ("TRACEPARENT", "x")], base(&[])),
        ];
        for (job_env, want) in cases {
            let job_env: BTreeMap<String, String> =
                job_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(step_env(&job_env, OsStr::new("/home/b"), drover), want, "{job_env:?}");
        }
    }

    #[test]
    fn a_failed_step_says_when_the_disk_is_full() {
        let dir = Path::new("/var/lib/drover");
        let cases: &[(Option<u64>, bool, Option<&str>)] = &[
            (Some(0), false, Some("the work directory's disk is full: 0 bytes free on /var/lib/drover")),
            (Some(4096), true, Some("the work directory's disk is full: 4.0 KiB free on /var/lib/drover")),
            (Some(NEARLY_FULL - 1), false, Some("the work directory's disk is full: 1024 KiB free on /var/lib/drover")),
            (Some(NEARLY_FULL), false, None),
            (Some(50 << 30), false, None),
            // Another file system (/tmp) ran full, or the step freed space
            // before it exited: its output says so.
            (Some(50 << 30), true, Some("its output says \"No space left on device\"; 50 GiB free on /var/lib/drover")),
            (None, true, Some("its output says \"No space left on device\"")),
            (None, false, None),
        ];
        for (free, said, want) in cases {
            assert_eq!(disk_note(*free, dir, *said).as_deref(), *want, "{free:?} {said}");
        }
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_across_chunks() {
        let mut tail = Tail::default();
        tail.push(b"cp: error writing 'x': No space le");
        tail.push(b"ft on device\n");
        assert!(tail.contains(ENOSPC_TEXT));
        tail.push(&vec![b'.'; TAIL]);
        assert!(!tail.contains(ENOSPC_TEXT), "pushed out by later output");
        assert_eq!(tail.0.len(), TAIL);
        tail.push(&[b"No space left on device".as_slice(), &vec![b'.'; 3 * TAIL]].concat());
        assert_eq!(tail.0.len(), TAIL);
        tail.push(b"No space left on device");
        assert!(tail.contains(ENOSPC_TEXT));
        assert_eq!(tail.0.len(), TAIL);
    }

    /// A real step: the agent's environment stays out, the pipeline's and
    /// Drover's come in, and a failing step's message is whole.
    #[tokio::test]
    async fn a_real_step_sees_a_cleared_environment() {
        let dir = std::env::temp_dir().join(format!("drover-agent-exec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let work_dir = std::fs::canonicalize(&dir).unwrap();
        let ctx = Arc::new(Context::new("a1".into(), work_dir.clone(), None, Arc::new(StepWatch::disabled())));
        let attempt = Attempt {
            id: "7/env/1".into(),
            run_id: "7".into(),
            job: "env".into(),
            attempt: 1,
            steps: vec![("show".into(), "env; exit 3".into())],
            env: [("JOB_VAR".to_string(), "from-the-job".to_string())].into(),
            timeout: None,
            checkout: None,
            traceparent: None,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_control_tx, control) = watch::channel(Control::default());
        execute(attempt, ctx, tx, control).await;
        let mut log = Vec::new();
        let mut result = None;
        while let Ok(ev) = rx.try_recv() {
            match ev {
                ExecEvent::Output { data, .. } => log.extend(data),
                ExecEvent::Finished { outcome, exit_code, message, .. } => result = Some((outcome, exit_code, message)),
            }
        }
        let log = String::from_utf8(log).unwrap();
        let vars: BTreeMap<&str, &str> =
            log.lines().filter(|l| !l.starts_with("==>")).filter_map(|l| l.split_once('=')).collect();
        assert_eq!(vars.get("JOB_VAR"), Some(&"from-the-job"), "{log}");
        assert_eq!(vars.get("DROVER_WORKSPACE").copied(), work_dir.join("7-env-1").to_str(), "{log}");
        assert_eq!(vars.get("PATH"), Some(&DEFAULT_PATH), "{log}");
        assert_eq!(vars.get("LANG"), Some(&"C.UTF-8"), "{log}");
        // Nothing of this test process's environment: only what Drover
        // gives, and what bash adds itself.
        let given = ["PATH", "HOME", "LANG", "JOB_VAR", "TRACEPARENT"];
        let bash = ["PWD", "OLDPWD", "SHLVL", "_"];
        for key in vars.keys() {
            assert!(key.starts_with("DROVER_") || given.contains(key) || bash.contains(key), "{key} in {log}");
        }
        assert_eq!(result, Some((Outcome::Failed, 3, "show exited with code 3".to_string())));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
