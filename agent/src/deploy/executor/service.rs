//! One service's task: its state (the releases running, which one is live,
//! the proxy on its port) and the actions, carried out one at a time.

mod port;
mod restart;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::monitor::Monitor;
use super::state::{self, Saved, SavedRelease};
use super::{
    Ctx, HealthCheck, Hook, KEEP_RELEASES, OUTPUT_TAIL, Order, ReleaseRef, ReportState, ServiceDef, Work, hook, stage,
};
use crate::deploy::health::{self, Policy, Probe};
use crate::deploy::proxy::ServiceProxy;
use crate::deploy::releases::Releases;
use crate::deploy::supervise::{Adopted, OUTPUT_CAP, ServiceSpec, StaleReason, Supervisor};

/// The health check of a service that names none: its port accepts.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// The task of service `name`: loads it (adopting what runs), then carries
/// out its actions in order; once the queue closes, stops its health
/// monitor (its releases and its proxy process go on running).
pub(super) async fn run(ctx: Arc<Ctx>, name: String, mut rx: mpsc::UnboundedReceiver<Order>) {
    let mut service = match Service::load(Arc::clone(&ctx), &name).await {
        Ok(service) => Some(service),
        Err(e) => {
            warn!(service = %name, error = %e, "cannot load the service");
            None
        }
    };
    while let Some(order) = rx.recv().await {
        if service.is_none() {
            match Service::load(Arc::clone(&ctx), &name).await {
                Ok(loaded) => service = Some(loaded),
                Err(e) => {
                    let state =
                        if matches!(order.work, Work::Hook(_)) { ReportState::HookFailed } else { ReportState::Failed };
                    ctx.report(&order, state, e, "")
                }
            }
        }
        if let Some(service) = &mut service {
            service.handle(&order).await;
        }
    }
    if let Some(mut service) = service {
        service.stop_monitor().await;
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("a blocking task failed: {e}"))
}

/// A release with a supervisor of ours.
struct Running {
    /// Its backend port on 127.0.0.1.
    port: u16,
    def: ServiceDef,
    supervisor: Supervisor,
    /// Which start of the release it is: 0, then one more each time it is
    /// started afresh beside itself (`restart.rs`); names its supervisor's
    /// directory.
    instance: u32,
}

impl Running {
    fn alive(&self) -> bool {
        self.supervisor.status().is_ok()
    }
}

struct Service {
    ctx: Arc<Ctx>,
    name: String,
    releases: Releases,
    running: BTreeMap<String, Running>,
    live: Option<String>,
    /// The proxy process on the service's port, while there is one (see
    /// `port.rs`).
    proxy: Option<ServiceProxy>,
    /// The continuous health check of the live release, while one is
    /// live (see `monitor.rs`).
    monitor: Option<Monitor>,
}

impl Service {
    /// Opens the service's directory and takes back what runs: see the
    /// executor's header on adoption.
    async fn load(ctx: Arc<Ctx>, name: &str) -> Result<Service, String> {
        let (root, service) = (ctx.config.services_dir.clone(), name.to_string());
        let releases = blocking(move || Releases::open(&root, &service)).await?.map_err(|e| e.to_string())?;
        let dir = releases.dir().to_path_buf();
        let saved = blocking(move || state::load(&dir)).await??;
        let mut svc = Service {
            ctx,
            name: name.to_string(),
            releases,
            running: BTreeMap::new(),
            live: None,
            proxy: None,
            monitor: None,
        };
        for r in saved.running {
            let dir = svc.supervisor_dir(&r.version, r.instance);
            let adopted = match blocking(move || Supervisor::adopt(&dir)).await? {
                Ok(Adopted::Live(supervisor, _)) => Ok(supervisor),
                // Stopped on purpose: not to be started again.
                Ok(Adopted::Stale { reason: StaleReason::Finished, .. }) => Err((false, "it was stopped".to_string())),
                Ok(Adopted::Stale { reason, .. }) => Err((true, reason.to_string())),
                Err(e) => Err((true, e.to_string())),
            };
            match adopted {
                Ok(supervisor) => {
                    info!(service = %svc.name, version = %r.version, pid = supervisor.pid(), "adopted a release");
                    let running = Running { port: r.port, def: r.def, supervisor, instance: r.instance };
                    svc.running.insert(r.version, running);
                }
                // Its supervisor is gone (the host restarted): the live
                // release starts again, on its old port if free.
                Err((true, why)) if saved.live.as_ref() == Some(&r.version) => {
                    warn!(service = %svc.name, version = %r.version, %why, "the live release's supervisor is gone: starting it again");
                    match svc.start(&r.version, &r.def, Some(r.port), r.instance).await {
                        Ok(running) => {
                            svc.running.insert(r.version, running);
                        }
                        Err(e) => warn!(service = %svc.name, version = %r.version, error = %e, "cannot start it again"),
                    }
                }
                Err((_, why)) => {
                    info!(service = %svc.name, version = %r.version, %why, "a release's supervisor is gone; forgetting it")
                }
            }
        }
        svc.live = saved.live.filter(|v| svc.running.contains_key(v));
        svc.adopt_proxy(saved.proxy_port).await;
        svc.save().await;
        // Adopted: its health is not known until its checks say.
        svc.monitor_live(false).await;
        Ok(svc)
    }

    async fn handle(&mut self, order: &Order) {
        match &order.work {
            Work::Install { release, service, beside } => self.install(order, release, service, *beside).await,
            Work::Switch { version } => self.switch(order, version).await,
            Work::Rollback { to_version, service } => self.rollback(order, to_version, service.as_ref()).await,
            Work::Hook(h) => self.hook(order, h).await,
            Work::Restart { version } => self.restart(order, version).await,
        }
    }

    /// Runs a deploy hook from its release's root, installing the release
    /// first when it is not on the node; nothing starts, and neither the
    /// proxy nor `current` moves.
    async fn hook(&mut self, order: &Order, h: &Hook) {
        let v = &h.release.version;
        if let Err(e) = stage::install(&*self.ctx.config.transfer, &self.releases, &h.release).await {
            self.ctx.report(order, ReportState::HookFailed, format!("cannot install release {v}: {e}"), v);
            return;
        }
        let root = self.releases.path(v);
        match hook::run(&self.ctx, order, h, &root).await {
            Ok(()) => {
                let message = format!("hook {}: {} steps passed on release {v}", h.point, h.steps.len());
                self.ctx.report_exit(order, ReportState::HookPassed, message, v, Some(0));
            }
            Err(failed) => self.ctx.report_exit(order, ReportState::HookFailed, failed.message, v, failed.exit_code),
        }
    }

    fn live(&self) -> &str {
        self.live.as_deref().unwrap_or_default()
    }

    fn supervisor_dir(&self, version: &str, instance: u32) -> PathBuf {
        let name = if instance == 0 { version.to_owned() } else { format!("{version}.{instance}") };
        self.releases.dir().join("supervisors").join(name)
    }

    fn backend(&self, version: &str) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.running.get(version).map_or(0, |r| r.port)))
    }

    /// Forgets `version` if its supervisor is gone; whether it runs.
    fn runs(&mut self, version: &str) -> bool {
        if self.running.get(version).is_some_and(|r| !r.alive()) {
            warn!(service = %self.name, %version, "a release's supervisor is gone; forgetting it");
            self.running.remove(version);
        }
        self.running.contains_key(version)
    }

    async fn install(&mut self, order: &Order, release: &ReleaseRef, def: &ServiceDef, beside: bool) {
        let v = &release.version;
        if self.runs(v) {
            self.ctx.report(order, ReportState::Installed, format!("release {v} runs already"), v);
            if self.live.as_ref() == Some(v) || beside {
                self.ctx.report(order, ReportState::Healthy, format!("release {v} runs already"), v);
                return;
            }
        } else {
            if let Err(e) = stage::install(&*self.ctx.config.transfer, &self.releases, release).await {
                self.ctx.report(order, ReportState::Failed, e, self.live());
                return;
            }
            match self.start(v, def, None, 0).await {
                Ok(running) => {
                    let port = running.port;
                    self.running.insert(v.clone(), running);
                    self.save().await;
                    self.ctx.report(order, ReportState::Installed, format!("release {v} started on port {port}"), v);
                }
                Err(e) => {
                    self.ctx.report(order, ReportState::Failed, format!("cannot start release {v}: {e}"), self.live());
                    return;
                }
            }
        }
        if let Err(e) = self.check(v).await {
            let message = self.failed_health(v, &e).await;
            self.ctx.report(order, ReportState::Failed, message, self.live());
            return;
        }
        if beside {
            let message = match &self.live {
                Some(live) => format!("release {v} is healthy beside {live}, which still serves"),
                None => format!("release {v} is healthy; nothing serves until the switch"),
            };
            self.ctx.report(order, ReportState::Healthy, message, v);
            return;
        }
        match self.make_live(v).await {
            Ok(()) => self.ctx.report(order, ReportState::Healthy, format!("release {v} is healthy and serves"), v),
            Err(e) => {
                if self.live.as_ref() != Some(v) {
                    self.stop_release(v).await;
                }
                self.ctx.report(order, ReportState::Failed, e, self.live());
            }
        }
    }

    async fn switch(&mut self, order: &Order, v: &str) {
        if !self.runs(v) {
            let message = format!("release {v} is not running on this node: install it (beside) first");
            self.ctx.report(order, ReportState::Failed, message, self.live());
            return;
        }
        match self.make_live(v).await {
            Ok(()) => self.ctx.report(order, ReportState::Switched, format!("new connections go to release {v}"), v),
            Err(e) => self.ctx.report(order, ReportState::Failed, e, self.live()),
        }
    }

    async fn rollback(&mut self, order: &Order, to: &str, def: Option<&ServiceDef>) {
        if to.is_empty() {
            // Nothing is live before anything stops, so that an agent that
            // dies halfway does not start it again.
            self.live = None;
            self.stop_monitor().await;
            self.close_proxy().await;
            self.save().await;
            for v in self.running.keys().cloned().collect::<Vec<_>>() {
                self.stop_release(&v).await;
            }
            let link = self.releases.current_link();
            let _ = blocking(move || std::fs::remove_file(link)).await;
            self.ctx.report(order, ReportState::RolledBack, "the service is stopped and its port free", "");
            return;
        }
        if !self.runs(to) {
            let (releases, version) = (self.releases.clone(), to.to_string());
            match blocking(move || releases.get(&version)).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => {
                    let message = format!("release {to} is not on this node");
                    self.ctx.report(order, ReportState::Failed, message, self.live());
                    return;
                }
                Ok(Err(e)) => return self.ctx.report(order, ReportState::Failed, e.to_string(), self.live()),
                Err(e) => return self.ctx.report(order, ReportState::Failed, e, self.live()),
            }
            let Some(def) = def.or_else(|| self.running.values().next().map(|r| &r.def)).cloned() else {
                let message = format!("release {to} is not running and the rollback says nothing of how to run it");
                self.ctx.report(order, ReportState::Failed, message, self.live());
                return;
            };
            match self.start(to, &def, None, 0).await {
                Ok(running) => {
                    self.running.insert(to.to_string(), running);
                    self.save().await;
                }
                Err(e) => {
                    let message = format!("cannot start release {to}: {e}");
                    self.ctx.report(order, ReportState::Failed, message, self.live());
                    return;
                }
            }
            if let Err(e) = self.check(to).await {
                let message = self.failed_health(to, &e).await;
                self.ctx.report(order, ReportState::Failed, message, self.live());
                return;
            }
        }
        match self.make_live(to).await {
            Ok(()) => self.ctx.report(order, ReportState::RolledBack, format!("release {to} serves"), to),
            Err(e) => self.ctx.report(order, ReportState::Failed, e, self.live()),
        }
    }

    /// Starts `version` (installed) under a supervisor of its own, on
    /// `port` if given and free, else on a free one; `instance` numbers the
    /// start (0 but for a restart beside itself).
    async fn start(
        &self,
        version: &str,
        def: &ServiceDef,
        port: Option<u16>,
        instance: u32,
    ) -> Result<Running, String> {
        let port = match port.filter(|p| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, *p)).is_ok()) {
            Some(port) => port,
            None => std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("cannot find a free port: {e}"))?
                .port(),
        };
        let spec = ServiceSpec {
            name: self.name.clone(),
            command: def.command.clone(),
            dir: self.releases.path(version),
            env: def.env.clone(),
            port,
            user: self.ctx.config.user.clone(),
            output_cap: OUTPUT_CAP,
        };
        let (dir, launch, grace) =
            (self.supervisor_dir(version, instance), self.ctx.config.launch.clone(), self.ctx.config.stop_grace);
        let supervisor = blocking(move || {
            // One left behind (a stop that failed) goes first.
            if let Ok(Adopted::Live(old, _)) = Supervisor::adopt(&dir) {
                let _ = old.stop(grace);
            }
            Supervisor::start_with(&launch, &spec, &dir)
        })
        .await?
        .map_err(|e| e.to_string())?;
        info!(service = %self.name, %version, port, pid = supervisor.pid(), "started a release");
        Ok(Running { port, def: def.clone(), supervisor, instance })
    }

    /// The health gate of `version`, which runs.
    async fn check(&self, version: &str) -> Result<Duration, String> {
        let Some((probe, policy, deadline)) = self.health_check(version) else {
            return Err(format!("release {version} is not running"));
        };
        health::until_healthy(&probe, policy, deadline).await
    }

    /// How `version` (running) is checked: the probe, the policy and the
    /// gate's deadline, from its health definition or the defaults.
    fn health_check(&self, version: &str) -> Option<(Probe, Policy, Duration)> {
        Some(self.health_check_of(version, self.running.get(version)?))
    }

    /// As [`Service::health_check`], of `r`, a start of `version`.
    fn health_check_of(&self, version: &str, r: &Running) -> (Probe, Policy, Duration) {
        let (check, interval, healthy_after, unhealthy_after, deadline) = match &r.def.health {
            Some(h) => (
                h.check.clone(),
                Duration::from_millis(h.interval_ms),
                h.healthy_after,
                h.unhealthy_after,
                Duration::from_millis(h.timeout_ms),
            ),
            None => (HealthCheck::Tcp, DEFAULT_INTERVAL, 1, 1, DEFAULT_DEADLINE),
        };
        let interval = if interval.is_zero() { DEFAULT_INTERVAL } else { interval.max(Duration::from_millis(20)) };
        let deadline = if deadline.is_zero() { DEFAULT_DEADLINE } else { deadline };
        let probe = match check {
            HealthCheck::Http(path) => Probe::Http { port: r.port, path },
            HealthCheck::Tcp => Probe::Tcp { port: r.port },
            HealthCheck::Exec(command) => Probe::Exec {
                command,
                dir: self.releases.path(version),
                env: r.def.env.clone(),
                port: r.port,
                user: self.ctx.config.user.clone(),
            },
        };
        let policy = Policy {
            interval,
            // Each probe may take as long as the gap between two, within
            // reason.
            timeout: interval.clamp(Duration::from_secs(1), Duration::from_secs(10)),
            healthy_after: healthy_after.max(1),
            unhealthy_after: unhealthy_after.max(1),
        };
        (probe, policy, deadline)
    }

    /// Makes the health monitor follow the live release: none while
    /// nothing is live, a new one when another release became live (the
    /// old one stopped first), and the same one while the same release
    /// stays live. `healthy`: the live release has passed its health gate.
    async fn monitor_live(&mut self, healthy: bool) {
        if self.monitor.as_ref().map(Monitor::version) == self.live.as_deref() {
            return;
        }
        self.stop_monitor().await;
        let Some(live) = self.live.clone() else { return };
        let Some((probe, policy, _)) = self.health_check(&live) else { return };
        self.monitor = Some(Monitor::start(Arc::clone(&self.ctx), &self.name, &live, probe, policy, healthy));
    }

    /// Stops the health monitor, if any, and waits until it has ended.
    async fn stop_monitor(&mut self) {
        if let Some(monitor) = self.monitor.take() {
            monitor.stop().await;
        }
    }

    /// Stops `version`, which failed its health check, and says why with
    /// the end of its output.
    async fn failed_health(&mut self, version: &str, why: &str) -> String {
        let tail = match self.running.get(version) {
            Some(r) => {
                let supervisor = r.supervisor.clone();
                blocking(move || supervisor.output_tail(OUTPUT_TAIL)).await.ok().and_then(Result::ok)
            }
            None => None,
        };
        self.stop_release(version).await;
        let tail = tail.map(|t| String::from_utf8_lossy(&t).trim().to_string()).unwrap_or_default();
        let tail = if tail.is_empty() { "it wrote nothing".to_string() } else { format!("its output ends:\n{tail}") };
        format!("release {version} is not healthy, so it is stopped: {why}; {tail}")
    }

    /// Makes `version` (running and healthy) live: the proxy's new
    /// connections go to it, `current` points at it; the old release
    /// drains, then every other release stops, and old releases are pruned.
    async fn make_live(&mut self, version: &str) -> Result<(), String> {
        let Some(port) = self.running.get(version).map(|r| r.def.port) else {
            return Err(format!("release {version} is not running"));
        };
        let old = self.live.clone();
        let switched = self.proxy_to(port, self.backend(version)).await?;
        self.live = Some(version.to_string());
        // Every release made live passed its health gate (an install's,
        // a rollback's, or its install beside's before a switch).
        self.monitor_live(true).await;
        let (releases, v) = (self.releases.clone(), version.to_string());
        match blocking(move || releases.activate(&v)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(service = %self.name, error = %e, "cannot point `current` at the live release"),
            Err(e) => warn!(service = %self.name, error = %e, "cannot point `current` at the live release"),
        }
        self.save().await;
        if let Some(old) = switched {
            self.drain(old).await;
        }
        for v in self.running.keys().filter(|v| *v != version).cloned().collect::<Vec<_>>() {
            self.stop_release(&v).await;
        }
        let releases = self.releases.clone();
        match blocking(move || releases.prune(KEEP_RELEASES, old.as_deref())).await {
            Ok(Ok(removed)) if !removed.is_empty() => info!(service = %self.name, ?removed, "pruned old releases"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(service = %self.name, error = %e, "cannot prune old releases"),
            Err(e) => warn!(service = %self.name, error = %e, "cannot prune old releases"),
        }
        Ok(())
    }

    /// Stops `version`'s supervisor and forgets it.
    async fn stop_release(&mut self, version: &str) {
        let Some(r) = self.running.remove(version) else { return };
        let grace = self.ctx.config.stop_grace;
        match blocking(move || r.supervisor.stop(grace)).await {
            Ok(Ok(_)) => info!(service = %self.name, %version, "stopped a release"),
            Ok(Err(e)) => warn!(service = %self.name, %version, error = %e, "cannot stop a release"),
            Err(e) => warn!(service = %self.name, %version, error = %e, "cannot stop a release"),
        }
        self.save().await;
    }

    /// Writes `service.json`; a failure is logged (the next write may
    /// pass, and what runs is unchanged).
    async fn save(&self) {
        let saved = Saved {
            live: self.live.clone(),
            proxy_port: self.proxy.as_ref().map(|p| p.listen().port()),
            running: self
                .running
                .iter()
                .map(|(version, r)| SavedRelease {
                    version: version.clone(),
                    port: r.port,
                    def: r.def.clone(),
                    instance: r.instance,
                })
                .collect(),
        };
        let dir = self.releases.dir().to_path_buf();
        match blocking(move || state::save(&dir, &saved)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => warn!(service = %self.name, error = %e, "cannot save the service's state"),
        }
    }
}
