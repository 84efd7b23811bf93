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
//!
//! The module is cut along its seams: here what an attempt is, what the
//! agent asks of it ([`Control`]), and [`execute`], which makes the
//! workspace and runs the steps in order; `env` builds a step's
//! environment; `runner` spawns each step and kills what it left behind;
//! `disk` measures the work dir's free space and explains a step that
//! failed for lack of it; `mask` hides the job's secrets, and their
//! encodings, in its output before it leaves the agent.

pub mod artifacts;
pub mod cache;
mod conditions;
mod disk;
mod env;
mod job_token;
mod mask;
mod runner;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::runas::StepUser;
use crate::watch::StepWatch;

pub use disk::disk_note;
pub(crate) use disk::free_space;
pub use env::{DEFAULT_PATH, expand_path, find_bash, step_env};
pub use job_token::{JobAuth, JobToken};
use runner::{Runner, StepEnd};

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
    /// What to pack after the steps succeed.
    pub artifacts: Option<artifacts::Spec>,
    /// The artifacts of the jobs it needs, unpacked before the first step.
    pub inputs: Vec<artifacts::Input>,
    /// The job's secrets, for its own steps (not the checkout).
    pub secrets: Secrets,
    /// Why the coordinator could not deliver the job's secrets: the
    /// attempt fails with this, running no step.
    pub secrets_error: Option<String>,
    /// The job's `cache:`: restored before its first own step, saved after
    /// its last succeeds.
    pub cache: Option<cache::CacheWork>,
    /// Each own step's `if:` (empty: none), by position.
    pub step_conditions: Vec<String>,
    /// How each job it needs ended, for `needs.JOB.result`.
    pub need_results: conditions::NeedResults,
    /// The branch and tag its run's ref named, for `drover.branch` and
    /// `drover.tag`.
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// Its values, for one expansion of a matrix (`matrix.NAME`).
    pub matrix: BTreeMap<String, String>,
    /// What started its run (`drover.event`); `None`: by hand.
    pub event: Option<String>,
    /// Its credential for its own transfers ([`JobAuth`]); never given to
    /// its steps.
    pub job_token: JobToken,
}

/// An attempt's secrets by name: set in its steps' environment, masked in
/// their output ([`mask`]). Never printed: `Debug` shows only names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(pub BTreeMap<String, Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
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
    Output {
        id: String,
        data: Vec<u8>,
    },
    Finished {
        id: String,
        outcome: Outcome,
        exit_code: i32,
        message: String,
        artifact: Option<artifacts::Packed>,
        /// What the job's cache did, when it has one.
        cache: Option<cache::Report>,
    },
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
    /// Moves artifacts over the connection to the coordinator; None for a
    /// library user without one (then an attempt with artifacts fails).
    pub transfer: Option<Arc<dyn artifacts::Transfer>>,
    /// This agent's own copy of caches; None: caches are off.
    pub caches: Option<Arc<cache::LocalCaches>>,
}

/// The default of [`Context::git_timeout`], as the coordinator's.
pub const DEFAULT_GIT_TIMEOUT: Duration = Duration::from_secs(60);

impl Context {
    pub fn new(agent: String, work_dir: PathBuf, user: Option<StepUser>, watch: Arc<StepWatch>) -> Context {
        let bash = env::find_bash();
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
        Context {
            agent,
            work_dir,
            user,
            home,
            watch,
            bash,
            git_timeout: DEFAULT_GIT_TIMEOUT,
            transfer: None,
            caches: None,
        }
    }
}

/// How long processes get between SIGTERM and SIGKILL when an attempt
/// ends, as GitLab and Buildkite runners do.
pub const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long each step a cancelled job still runs (`if: cancelled()`,
/// `always()`) may take: a cleanup, not a second job. Past it the step is
/// killed and the job ends cancelled.
pub const CANCEL_CLEANUP: Duration = Duration::from_secs(60);

/// Signals every process in the group; false when the group is gone.
pub(crate) fn signal_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; it has no
    // memory-safety preconditions.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// The directory name of attempt `id` (`RUN/JOB/ATTEMPT`) in the work
/// dir: `12-build-3`. A matrix job's name (`test (os=linux)`) has
/// characters build tools trip over in paths (spaces, `=`, parentheses):
/// each becomes `_`, and `~` with a hash of the id keeps two names that
/// read alike apart: `12-test__os_linux_~1a2b3c4d-3`.
pub fn workspace_name(id: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/');
    if id.chars().all(safe) {
        return id.replace('/', "-");
    }
    let (head, attempt) = id.rsplit_once('/').unwrap_or((id, ""));
    let cleaned: String = head.chars().map(|c| if safe(c) { c } else { '_' }).collect();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(id.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}~{hash}-{attempt}", cleaned.replace('/', "-"))
}

/// Runs the attempt to the end and sends its output and result on `events`.
/// `control` kills it: on cancel, or at its fence deadline.
pub async fn execute(
    attempt: Attempt,
    ctx: Arc<Context>,
    events: mpsc::UnboundedSender<ExecEvent>,
    control: watch::Receiver<Control>,
) {
    let workspace = ctx.work_dir.join(workspace_name(&attempt.id));
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
        after_cancel: false,
        tail: Arc::default(),
        mask: mask::Patterns::new(attempt.secrets.0.values().map(Vec::as_slice)),
        with_secrets: false,
        cache: None,
    };
    let scratch = ctx.work_dir.join(format!("{}.scratch", workspace_name(&attempt.id)));
    let mut result = run_steps(&mut runner, &scratch).await;
    let mut artifact = None;
    if result.0 == Outcome::Succeeded
        && let Some(spec) = &attempt.artifacts
    {
        match pack_artifacts(&runner, spec, &scratch).await {
            Ok(packed) => artifact = Some(packed),
            Err(msg) => result = (Outcome::Failed, -1, msg),
        }
    }
    if result.0 == Outcome::Succeeded {
        save_cache(&mut runner, &scratch).await;
    }
    runner.finish().await;
    // Both in one trip to the blocking pool: each trip is a thread woken and
    // a wake back, a large part of the agent's cost for a trivial job.
    let _ = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&workspace);
        let _ = std::fs::remove_dir_all(&scratch);
    })
    .await;
    let (outcome, exit_code, message) = result;
    let cache = runner.cache.take();
    let _ = events.send(ExecEvent::Finished { id: attempt.id.clone(), outcome, exit_code, message, artifact, cache });
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

/// A private directory of the agent's beside the workspace, for archives on
/// their way in and out.
async fn make_scratch(scratch: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let scratch = scratch.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::DirBuilder::new().mode(0o700).create(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Renders the job's cache key and restores its entry, if it has a cache;
/// a cache that cannot be had is a warning, never a failure.
async fn restore_cache(runner: &mut Runner<'_>, scratch: &Path) {
    let attempt = runner.attempt;
    let Some(work) = &attempt.cache else { return };
    let (Some(transfer), Some(local)) = (runner.ctx.transfer.clone(), runner.ctx.caches.clone()) else {
        runner.say("==> cache: this agent keeps no caches (no connection to a coordinator); going on without\n".into());
        return;
    };
    let workspace = runner.workspace.clone();
    let parts = work.key.clone();
    let key = match tokio::task::spawn_blocking(move || cache::render_key(&parts, &workspace)).await {
        Ok(Ok(key)) => key,
        Ok(Err(e)) => {
            runner.say(format!("==> cache: {e}; going on without it\n"));
            return;
        }
        Err(e) => {
            runner.say(format!("==> cache: cannot render its key: {e}; going on without it\n"));
            return;
        }
    };
    if let Err(msg) = make_scratch(scratch).await {
        runner.say(format!("==> cache: {msg}; going on without it\n"));
        return;
    }
    let home = runner.home();
    let place = cache::Place { workspace: &runner.workspace, home: &home, scratch, user: runner.ctx.user.as_ref() };
    let (report, said) = cache::restore(transfer.as_ref(), &local, attempt.auth(), work, &key, &place).await;
    runner.say(format!("==> {said}\n"));
    runner.cache = Some(report);
}

/// Saves the job's cache after its steps succeeded, unless its key was a
/// hit; a save that fails is a warning.
async fn save_cache(runner: &mut Runner<'_>, scratch: &Path) {
    let attempt = runner.attempt;
    let (Some(work), Some(mut report)) = (&attempt.cache, runner.cache.take()) else { return };
    if report.restored.as_deref() == Some(report.key.as_str()) {
        runner.cache = Some(report);
        return;
    }
    let (Some(transfer), Some(local)) = (runner.ctx.transfer.clone(), runner.ctx.caches.clone()) else {
        runner.cache = Some(report);
        return;
    };
    let home = runner.home();
    let place = cache::Place { workspace: &runner.workspace, home: &home, scratch, user: runner.ctx.user.as_ref() };
    let said = cache::save(transfer.as_ref(), &local, attempt.auth(), work, &mut report, &place).await;
    runner.say(format!("==> {said}\n"));
    runner.cache = Some(report);
}

/// Downloads and unpacks the artifacts of the jobs the attempt needs.
async fn deliver_inputs(runner: &Runner<'_>, scratch: &Path) -> Result<(), String> {
    let attempt = runner.attempt;
    if attempt.inputs.is_empty() {
        return Ok(());
    }
    let Some(transfer) = runner.ctx.transfer.clone() else {
        return Err("this agent cannot download artifacts (no connection to a coordinator)".into());
    };
    make_scratch(scratch).await?;
    let user = runner.ctx.user.as_ref();
    for input in &attempt.inputs {
        let files =
            artifacts::deliver(transfer.as_ref(), attempt.auth(), input, &runner.workspace, scratch, user).await?;
        runner.say(format!(
            "==> artifacts of {}: {files} file{} ({} bytes, sha256 {})\n",
            input.job,
            if files == 1 { "" } else { "s" },
            input.size,
            &input.sha256[..12.min(input.sha256.len())]
        ));
    }
    Ok(())
}

/// Packs and uploads the job's artifacts after its steps succeeded.
async fn pack_artifacts(
    runner: &Runner<'_>,
    spec: &artifacts::Spec,
    scratch: &Path,
) -> Result<artifacts::Packed, String> {
    let Some(transfer) = runner.ctx.transfer.clone() else {
        return Err("this agent cannot upload artifacts (no connection to a coordinator)".into());
    };
    make_scratch(scratch).await?;
    runner.say(format!("==> packing artifacts: {}\n", spec.paths.join(" ")));
    match artifacts::collect(transfer.as_ref(), runner.attempt.auth(), spec, &runner.workspace, scratch).await {
        Ok(packed) => {
            runner.say(format!(
                "==> uploaded artifacts: {} file{}, {} bytes, sha256 {}\n",
                packed.files,
                if packed.files == 1 { "" } else { "s" },
                packed.size,
                &packed.sha256[..12]
            ));
            Ok(packed)
        }
        Err(msg) => {
            let msg = format!("artifacts: {msg}");
            runner.say(format!("==> {msg}\n"));
            Err(msg)
        }
    }
}

async fn run_steps(runner: &mut Runner<'_>, scratch: &Path) -> (Outcome, i32, String) {
    let attempt = runner.attempt;
    if let Some(msg) = &attempt.secrets_error {
        runner.say(format!("==> {msg}\n"));
        return (Outcome::Failed, -1, msg.clone());
    }
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
             { git cat-file -e \"$DROVER_COMMIT^{commit}\" 2>/dev/null || \
               git fetch --quiet origin \"$DROVER_COMMIT\"; } && \
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
    let first_own = usize::from(attempt.checkout.is_some());
    // The first failure of an own step: later steps run only if their
    // `if:` says so (failure(), always()), and the attempt fails with it.
    let mut failed: Option<(Outcome, i32, String)> = None;
    // Once cancelled: why, and the steps that ask to run then still do,
    // within CANCEL_CLEANUP.
    let mut cancelled: Option<String> = None;
    for (i, (label, script, extra)) in steps.iter().enumerate() {
        // The needs' artifacts go in after the checkout, before the job's
        // own first step.
        if i == first_own {
            if let Err(msg) = deliver_inputs(runner, scratch).await {
                runner.say(format!("==> {msg}\n"));
                return (Outcome::Failed, -1, msg);
            }
            restore_cache(runner, scratch).await;
        }
        if i >= first_own && !conditions::step_runs(attempt, i - first_own, failed.is_some(), cancelled.is_some()) {
            let why = if cancelled.is_some() { "the job is cancelled" } else { "its condition is false" };
            runner.say(format!("==> [{}/{}] {label}: skipped ({why})\n", i + 1, total));
            continue;
        }
        runner.say(format!("==> [{}/{}] {label}\n", i + 1, total));
        // The checkout has a deadline of its own, within the job's.
        let git_deadline = (i == 0 && attempt.checkout.is_some())
            .then(|| Instant::now() + runner.ctx.git_timeout)
            .filter(|git| job_deadline.is_none_or(|job| *git < job));
        runner.deadline = git_deadline.or(job_deadline);
        if runner.after_cancel {
            let cap = Instant::now() + CANCEL_CLEANUP;
            runner.deadline = Some(runner.deadline.map_or(cap, |d| d.min(cap)));
        }
        // The job's secrets are for its own steps; the checkout runs
        // without them.
        runner.with_secrets = i >= first_own;
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
                if i < first_own {
                    return (Outcome::Failed, code, msg);
                }
                failed.get_or_insert((Outcome::Failed, code, msg));
            }
            StepEnd::TimedOut if runner.after_cancel => {
                let msg = cancelled.take().unwrap_or_default();
                runner.say(format!(
                    "==> {label} ran past the {}s a cancelled job's steps get: stopped\n",
                    CANCEL_CLEANUP.as_secs()
                ));
                return (Outcome::Cancelled, -1, msg);
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
                if i < first_own {
                    return (Outcome::Cancelled, -1, msg);
                }
                // The steps after it that ask to run when cancelled still
                // do, once it is gone.
                runner.kill_groups().await;
                cancelled = Some(msg);
                runner.after_cancel = true;
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
    if let Some(msg) = cancelled {
        return (Outcome::Cancelled, -1, msg);
    }
    failed.unwrap_or((Outcome::Succeeded, 0, String::new()))
}
