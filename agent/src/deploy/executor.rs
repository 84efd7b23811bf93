//! The deploy executor: carries out the coordinator's deploy actions on
//! this node (install a release, switch to it, roll back) with the
//! building blocks beside it ([`super::releases`], [`super::supervise`],
//! [`super::health`], [`super::proxy`]), and reports what became of each.
//!
//! **Order.** Each service has one task and one queue: its actions run one
//! at a time, in the order they arrived; different services run at once.
//! A service's task owns everything about it (its releases, supervisors and
//! proxy), so nothing is shared and nothing locks.
//!
//! **Reports** ([`Report`]) go out on the channel [`Executor::new`] returns;
//! the session keeps the latest of each service and sends it again after
//! every Hello. What each action reports, in order:
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
//!   supervisors/{version}/       each release's supervisor state dir
//!   staging/                     a download and unpack under way
//! ```
//!
//! **Adoption.** When the agent starts ([`Executor::adopt`]) each service's
//! task reads its `service.json`, adopts the supervisors still running (a
//! live release whose supervisor is gone, after a reboot, is started again
//! from its release directory) and binds the proxy on the service's port
//! again, pointing at the live release. The services themselves never
//! stopped; but the proxy lives in the agent process, so **while the agent
//! is down the service's port is closed** (connections to the backend port
//! go on). A proxy in a process of its own, or the service's port handed
//! over with `SO_REUSEPORT`, would close that gap; neither is built.

mod service;
mod stage;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::exec::artifacts::Transfer;
use crate::runas::StepUser;
use crate::watch::Launch;

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

/// What became of an action, as the session sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub action_id: String,
    pub service: String,
    pub state: ReportState,
    pub message: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportState {
    Installed,
    Healthy,
    Failed,
    Switched,
    RolledBack,
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
    /// The binary that supervises (the agent's own; tests pass the built
    /// one).
    pub launch: Launch,
    /// Downloads releases (the session's channel in the agent).
    pub transfer: Arc<dyn Transfer>,
    pub drain_timeout: Duration,
    pub stop_grace: Duration,
}

impl Config {
    /// The defaults for the timings.
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
        }
    }
}

/// What a service's task shares with the executor.
struct Ctx {
    config: Config,
    reports: mpsc::UnboundedSender<Report>,
}

impl Ctx {
    fn report(&self, order: &Order, state: ReportState, message: impl Into<String>, version: &str) {
        let report = Report {
            action_id: order.action_id.clone(),
            service: order.service.clone(),
            state,
            message: message.into(),
            version: version.to_string(),
        };
        match state {
            ReportState::Failed => {
                warn!(service = %report.service, action = %report.action_id, message = %report.message, "deploy action failed")
            }
            _ => {
                tracing::info!(service = %report.service, action = %report.action_id, ?state, version = %report.version, "deploy")
            }
        }
        let _ = self.reports.send(report);
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
}

impl Executor {
    /// An executor with no service tasks yet, and where its reports arrive.
    pub fn new(config: Config) -> (Executor, mpsc::UnboundedReceiver<Report>) {
        let (reports, rx) = mpsc::unbounded_channel();
        (Executor { ctx: Arc::new(Ctx { config, reports }), queues: HashMap::new() }, rx)
    }

    /// Starts the task of every service found in the services dir, which
    /// adopts its releases and binds its proxy again (see the module
    /// header). Call it once, at startup, inside the runtime.
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

    /// The services with a task.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self.queues.keys().cloned().collect();
        names.sort();
        names
    }

    /// Lets every service finish the actions queued, then closes the
    /// proxies (the services go on running), and returns once all is done.
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
