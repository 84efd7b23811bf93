//! The deploy executor: carries out the coordinator's deploy actions on
//! this node (install a release, switch to it, roll back, run a deploy
//! hook) with the
//! building blocks beside it ([`super::releases`], [`super::supervise`],
//! [`super::health`], [`super::proxy`]), and reports what became of each;
//! keeps checking the health of each live release; and reads a service's
//! output for the coordinator.
//!
//! **Order.** Each service has one task and one queue: its actions run one
//! at a time, in the order they arrived; different services run at once.
//! A service's task owns everything about it (its releases, supervisors and
//! proxy), so nothing is shared and nothing locks.
//!
//! **Events** ([`Event`]: a [`Report`], a [`ServiceHealth`] or a hook's
//! output) go out on the channel [`Executor::new`] returns; the session
//! keeps the latest report and health of each service and sends them again
//! after every Hello (a hook's output only goes out while connected). What
//! each action reports, in order:
//!
//! - install: `INSTALLED` once the release runs (its version), then
//!   `HEALTHY` (its version; the proxy sends new connections to it, but for
//!   `beside`) or `FAILED` (the version that still serves, if any). A
//!   release that is live and running already is reported `INSTALLED` and
//!   `HEALTHY` at once (an action resent after a coordinator failover).
//! - switch: `SWITCHED` (the version now live) or `FAILED`.
//! - rollback: `ROLLED_BACK` (the version now live, empty when the service
//!   was removed) or `FAILED`.
//! - A failure before the release runs (download, unpack, a bad name, a
//!   port in use) is one `FAILED`.
//! - hook: its steps' output as [`Event::HookOutput`], then `HOOK_PASSED`
//!   or `HOOK_FAILED` (the hook release's version either way).
//!
//! **Hooks** (`hook.rs`): a [`Hook`] runs in the service's queue like any
//! action. Its release is installed first when it is not on the node
//! (through the same staging as an install) but never started, and
//! neither the proxy nor `current` moves. Each step runs as
//! `bash -eo pipefail -c RUN` from the release's root, in a process group
//! of its own registered with the step watcher ([`crate::watch`]), so it
//! dies with the agent as a job's step does; with a cleared environment
//! ([`crate::exec::step_env`]: the steps' PATH, HOME and LANG, the
//! hook's `env`, then `DROVER_SERVICE`, `DROVER_HOOK`,
//! `DROVER_RELEASE_VERSION` and `DROVER_NODE`), as the `--run-as` user when
//! there is one. Its stdout and stderr are one pipe, so their output stays
//! in the order written; a `$ RUN` line goes before each step. The output
//! goes out in chunks of at most [`HOOK_CHUNK`] bytes, at most
//! [`HOOK_OUTPUT_CAP`] per hook (then a line saying the rest was cut). The
//! first step that fails ends the hook; past its timeout (counted from the
//! first step, for all of them) the step's group gets SIGTERM, then
//! SIGKILL after [`Config::hook_grace`]. Once a step has exited, whatever
//! it left running in its group is killed the same way (after the pipe
//! drained, or [`HOOK_DRAIN`] at most): a hook leaves nothing behind.
//! Gaps, as for a job's steps: a step whose agent dies between its spawn
//! and its listing with the watcher is left running (the leftovers
//! cleanup finds job steps by their workspace, which a hook has not), and
//! a process that leaves its group (`setsid`) escapes both kills. A hook's
//! report replaces its service's latest report, the one the session sends
//! again after a Hello.
//!
//! **Continuous health** (`monitor.rs`): the live release of each service
//! is probed every `interval` of its health definition (its check, or a
//! TCP connect to its backend port without one), on a task of its own so
//! that a probe never delays the service's actions. A [`ServiceHealth`]
//! goes out when its health is first known and whenever it changes
//! (`unhealthy_after` failures in a row, `healthy_after` passes in a row),
//! with the last failure's error. A release made live has just passed a
//! health gate, so it starts healthy and says so at once (before the
//! action's final report); one adopted at startup is reported once its
//! checks say either way. Only the live release is monitored: while an
//! install's gate runs, the old live release's monitor goes on; a switch,
//! a rollback or an install that makes another release live stops the old
//! monitor (and waits for it) before starting the new one; a rollback to
//! nothing stops it before its report, and the session then forgets the
//! service's health. Never two monitors per service.
//!
//! **Output** ([`Executor::logs`], `logs.rs`): a range of the live
//! release's `supervisors/{live}/output.log`, found through `service.json`
//! on disk rather than the service's task, so an action under way never
//! delays it; read on a blocking thread, [`LOGS_AT_ONCE`] at a time, at
//! most [`LOGS_MAX_BYTES`] each ([`LOGS_DEFAULT_BYTES`] when the request
//! says 0). `offset` `u64::MAX` reads the last bytes; an offset past the
//! file's end (it was rotated) starts from 0. A service without a live
//! release is answered with an error and no data.
//!
//! **On disk**, under the services dir (the agent's `--services-dir`,
//! `WORK_DIR/.services` by default, which the cleanup of leftover
//! workspaces never touches):
//!
//! ```text
//! {services_dir}/{service}/
//!   service.json                 the live version, the running releases (backend
//!                                port and ServiceDef each), the proxy's port; 0600
//!   releases/{version}[.json]    installed releases (see releases.rs)
//!   current -> releases/{version}
//!   supervisors/{version}/       each release's supervisor state dir (its
//!                                output.log, rotated once to output.log.1)
//!   proxy/                       the proxy process's state dir (desired.json,
//!                                state.json, proxy.lock, proxy.log; see proxy.rs)
//!   staging/                     a download and unpack under way
//! ```
//!
//! **Adoption.** When the agent starts ([`Executor::adopt`]) each service's
//! task reads its `service.json`, adopts the supervisors still running (a
//! live release whose supervisor is gone, after a reboot, is started again
//! from its release directory) and adopts the service's proxy process
//! (`service/port.rs`), pointing it at the live release if it points
//! elsewhere; a proxy that is gone is started again on the service's port,
//! unless the agent last told it to stop. Neither the services nor their
//! proxies stop with the agent ([`Executor::shutdown`] leaves both
//! running): the service's port answers while the agent is down.
//!
//! **Switching** goes through the proxy process: the new backend is written
//! to its `desired.json` and the switch returns once its `state.json` shows
//! the new generation applied; the old release is then drained by polling
//! the old backend's count in `state.json` (up to [`Config::drain_timeout`];
//! what is left is then cut) before it stops.

mod hook;
mod logs;
mod monitor;
mod service;
mod stage;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::exec::artifacts::Transfer;
use crate::runas::StepUser;
use crate::watch::{Launch, StepWatch};

/// The file of a service's state in its directory.
pub const SERVICE_FILE: &str = "service.json";
/// How long connections on the old release may take to finish after a
/// switch, before they are cut and it is stopped.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The grace between SIGTERM and SIGKILL when a release is stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How many releases of a service stay on disk (and always the live one
/// and the one before it).
pub const KEEP_RELEASES: usize = 5;
/// The bytes of a failed release's output a report carries.
pub const OUTPUT_TAIL: u64 = 400;
/// The bytes of output a [`LogsRequest`] gets when it asks for none in
/// particular (`max_bytes` 0).
pub const LOGS_DEFAULT_BYTES: u64 = 64 << 10;
/// The most bytes of output one [`LogsRequest`] gets, whatever it asks.
pub const LOGS_MAX_BYTES: u64 = 1 << 20;
/// The most bytes of a hook's output in one [`Event::HookOutput`].
pub const HOOK_CHUNK: usize = 64 << 10;
/// The most bytes of output one hook sends; the rest is cut.
pub const HOOK_OUTPUT_CAP: usize = 1 << 20;
/// How long a hook step's output may take to drain once the step has
/// exited (longer only when something it left running holds the pipe).
pub const HOOK_DRAIN: Duration = Duration::from_secs(1);
/// How many [`LogsRequest`]s read at once; the others wait their turn, so
/// that a burst of them holds at most this many chunks in memory.
pub const LOGS_AT_ONCE: usize = 4;

/// One deploy action for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// `{rollout}/{seq}`, which the reports name.
    pub action_id: String,
    pub service: String,
    pub work: Work,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Install, start and health-check a release; switch to it unless
    /// `beside` (blue-green).
    Install { release: ReleaseRef, service: ServiceDef, beside: bool },
    /// Blue-green: make the release installed beside the live one live.
    Switch { version: String },
    /// Go back to `to_version` (started again with `service` if it is not
    /// running); empty: stop the service and free its port.
    Rollback { to_version: String, service: Option<ServiceDef> },
    /// Run a deploy hook's steps from its release's root (installed first
    /// if need be, never started).
    Hook(Hook),
    /// Start the live release `version` afresh: a new start beside the
    /// running one, health-checked, then live, the old start drained and
    /// stopped (a baseline started at the same moment as a canary). The
    /// old start serves on when the new one fails.
    Restart { version: String },
}

/// A deploy hook: steps to run on the node at a point of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `before`, `after_batch`, `after` or `on_failure`: the steps'
    /// `DROVER_HOOK`.
    pub point: String,
    pub steps: Vec<HookStep>,
    /// Set in the steps' environment (`DROVER_*` cannot be overridden).
    pub env: BTreeMap<String, String>,
    /// Whose root the steps run from.
    pub release: ReleaseRef,
    /// For all the steps together; `None` (0 on the wire): no limit.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookStep {
    /// May be empty; a report then names the step by its command.
    pub name: String,
    /// Run with `bash -eo pipefail -c`.
    pub run: String,
}

/// A release: a file or directory of a job's artifact archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRef {
    pub version: String,
    /// The artifact archive's digest and size, fetched with the transfer.
    pub sha256: String,
    pub size: u64,
    /// Inside the archive: a directory is the root; a `.tar`, `.tar.gz` or
    /// `.tgz` file is unpacked as the root; another file is the root's one
    /// file.
    pub path: String,
    pub run_id: String,
    pub commit: String,
    /// Set for an artifact by URL: the blob is then the file itself, named
    /// `path`, not an artifact archive.
    pub url: String,
}

/// How a service runs, kept in `service.json` to restart it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    /// `bash -c` from the release root, with `PORT` set.
    pub command: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The port the node's proxy owns.
    pub port: u16,
    #[serde(default)]
    pub health: Option<HealthDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthDef {
    pub check: HealthCheck,
    /// 0: the defaults (1 s between probes, 1 pass, 60 s to pass).
    pub interval_ms: u64,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheck {
    /// GET this path on the release's port; 2xx or 3xx passes.
    Http(String),
    /// A connection to the release's port is accepted (also the check of a
    /// service without one).
    Tcp,
    /// `bash -c` from the release root; exit 0 passes.
    Exec(String),
}

/// What the coordinator may ask of the deploy executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A deploy action, for [`Executor::submit`].
    Order(Box<Order>),
    /// A service's output, for [`Executor::logs`].
    Logs(LogsRequest),
}

/// Asks for the output of a service's live release: its supervisor's
/// `output.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsRequest {
    pub request_id: u64,
    pub service: String,
    /// A byte offset in `output.log`; `u64::MAX`: the last `max_bytes`. One
    /// past the file's end (it was rotated since) starts again from 0.
    pub offset: u64,
    /// 0: [`LOGS_DEFAULT_BYTES`]; at most [`LOGS_MAX_BYTES`] are read.
    pub max_bytes: u32,
}

/// The answer to a [`LogsRequest`]: output, or why there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsChunk {
    pub request_id: u64,
    pub data: Vec<u8>,
    /// The offset after `data`: where the next request goes on.
    pub next_offset: u64,
    /// Why there is nothing (the service is not deployed here, the file
    /// does not read), or empty.
    pub error: String,
}

/// What the executor tells the session, on the channel [`Executor::new`]
/// returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Report(Report),
    Health(ServiceHealth),
    /// Output of a hook's steps (stdout and stderr together), in order,
    /// at most [`HOOK_CHUNK`] bytes, before the hook's final report.
    HookOutput {
        action_id: String,
        data: Vec<u8>,
    },
}

/// The health of a service's live release as its continuous check finds
/// it: sent when it is first known and whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    pub service: String,
    /// The live release.
    pub version: String,
    pub healthy: bool,
    /// The last failed check's error when unhealthy, else empty.
    pub message: String,
}

/// What became of an action, as the session sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub action_id: String,
    pub service: String,
    pub state: ReportState,
    pub message: String,
    pub version: String,
    /// A hook's: the exit code of the step that failed, 0 when all passed;
    /// `None` when a step did not exit, or for other actions.
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportState {
    Installed,
    Healthy,
    Failed,
    Switched,
    RolledBack,
    HookPassed,
    HookFailed,
}

/// What the executor needs from the agent.
#[derive(Clone)]
pub struct Config {
    /// Where services keep their state (see the module header).
    pub services_dir: PathBuf,
    /// The address the proxies listen on (`--service-address`).
    pub service_address: IpAddr,
    /// The agent's `--run-as` user: services and exec health checks run as
    /// it.
    pub user: Option<StepUser>,
    /// The binary that supervises and proxies (the agent's own; tests
    /// pass the built one).
    pub launch: Launch,
    /// Downloads releases (the session's channel in the agent).
    pub transfer: Arc<dyn Transfer>,
    pub drain_timeout: Duration,
    pub stop_grace: Duration,
    /// The agent's name: hooks' `DROVER_NODE`.
    pub node: String,
    /// Hooks' step groups are listed here, so that they die with the
    /// agent (disabled by default: library and test use).
    pub watch: Arc<StepWatch>,
    /// Between SIGTERM and SIGKILL when a hook's step is killed.
    pub hook_grace: Duration,
}

impl Config {
    /// The defaults for the timings; no node name and no step watcher.
    pub fn new(
        services_dir: PathBuf,
        service_address: IpAddr,
        user: Option<StepUser>,
        launch: Launch,
        transfer: Arc<dyn Transfer>,
    ) -> Config {
        Config {
            services_dir,
            service_address,
            user,
            launch,
            transfer,
            drain_timeout: DRAIN_TIMEOUT,
            stop_grace: STOP_GRACE,
            node: String::new(),
            watch: Arc::new(StepWatch::disabled()),
            hook_grace: crate::exec::KILL_GRACE,
        }
    }
}

/// What a service's task shares with the executor.
struct Ctx {
    config: Config,
    events: mpsc::UnboundedSender<Event>,
}

impl Ctx {
    fn report(&self, order: &Order, state: ReportState, message: impl Into<String>, version: &str) {
        self.report_exit(order, state, message, version, None);
    }

    /// [`Ctx::report`] of a hook whose steps exited, with the exit code.
    fn report_exit(
        &self,
        order: &Order,
        state: ReportState,
        message: impl Into<String>,
        version: &str,
        exit_code: Option<i32>,
    ) {
        let report = Report {
            action_id: order.action_id.clone(),
            service: order.service.clone(),
            state,
            message: message.into(),
            version: version.to_string(),
            exit_code,
        };
        match state {
            ReportState::Failed | ReportState::HookFailed => {
                warn!(service = %report.service, action = %report.action_id, message = %report.message, "deploy action failed")
            }
            _ => {
                tracing::info!(service = %report.service, action = %report.action_id, ?state, version = %report.version, "deploy")
            }
        }
        let _ = self.events.send(Event::Report(report));
    }

    fn health(&self, health: ServiceHealth) {
        if health.healthy {
            tracing::info!(service = %health.service, version = %health.version, "the live release is healthy");
        } else {
            warn!(service = %health.service, version = %health.version, message = %health.message, "the live release is unhealthy");
        }
        let _ = self.events.send(Event::Health(health));
    }
}

/// A service's task and its queue.
struct Queue {
    tx: mpsc::UnboundedSender<Order>,
    task: JoinHandle<()>,
}

/// The executor: one task per service; see the module header.
pub struct Executor {
    ctx: Arc<Ctx>,
    queues: HashMap<String, Queue>,
    /// [`LOGS_AT_ONCE`] permits, one per log read under way.
    log_reads: Arc<Semaphore>,
}

impl Executor {
    /// An executor with no service tasks yet, and where its reports and
    /// health changes arrive.
    pub fn new(config: Config) -> (Executor, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let executor = Executor {
            ctx: Arc::new(Ctx { config, events }),
            queues: HashMap::new(),
            log_reads: Arc::new(Semaphore::new(LOGS_AT_ONCE)),
        };
        (executor, rx)
    }

    /// Starts the task of every service found in the services dir, which
    /// adopts its releases and its proxy process (see the module header).
    /// Call it once, at startup, inside the runtime.
    pub fn adopt(&mut self) {
        let dir = &self.ctx.config.services_dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot list the services dir: no service adopted");
                return;
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join(SERVICE_FILE).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            self.queue(&name);
        }
    }

    /// Queues `order` behind its service's earlier actions.
    pub fn submit(&mut self, order: Order) {
        let service = order.service.clone();
        if let Err(mpsc::error::SendError(order)) = self.queue(&service).tx.send(order) {
            // The task ended (it panicked): start it again, and it loads
            // the service from disk.
            warn!(%service, "the service's deploy task had ended; starting it again");
            self.queues.remove(&service);
            let _ = self.queue(&service).tx.send(order);
        }
    }

    /// Reads the output `request` asks for, on a blocking thread and
    /// beside the service's task (an action under way never delays it).
    /// The future owns what it needs: the caller may spawn it and send the
    /// answer on the session that asked.
    pub fn logs(&self, request: LogsRequest) -> impl Future<Output = LogsChunk> + Send + 'static {
        let services_dir = self.ctx.config.services_dir.clone();
        let permits = Arc::clone(&self.log_reads);
        async move {
            let _permit = permits.acquire_owned().await;
            let request_id = request.request_id;
            tokio::task::spawn_blocking(move || logs::read(&services_dir, &request)).await.unwrap_or_else(|e| {
                LogsChunk { request_id, error: format!("reading the output failed: {e}"), ..Default::default() }
            })
        }
    }

    /// The services with a task.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self.queues.keys().cloned().collect();
        names.sort();
        names
    }

    /// Lets every service finish the actions queued and stops their health
    /// monitors (the services and their proxy processes go on running),
    /// and returns once all is done.
    pub async fn shutdown(self) {
        for (name, queue) in self.queues {
            drop(queue.tx);
            if let Err(e) = queue.task.await {
                warn!(service = %name, error = %e, "a service's deploy task failed");
            }
        }
    }

    fn queue(&mut self, service: &str) -> &Queue {
        let ctx = &self.ctx;
        self.queues.entry(service.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(service::run(Arc::clone(ctx), service.to_string(), rx));
            Queue { tx, task }
        })
    }
}

#[cfg(test)]
mod tests;
