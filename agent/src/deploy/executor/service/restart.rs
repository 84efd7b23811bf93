//! A live release started afresh beside itself: the baseline of a canary
//! compared with one (issue 17), started at the same moment as the canary
//! from the version it replaces, so that neither side has the other's
//! warm caches or long uptime. The new start runs on a port of its own
//! under a supervisor of its own (`Running::instance`), passes the
//! release's health gate, and only then takes the proxy's new connections;
//! the old start drains and stops. Until then, and if the new start
//! fails, the old one serves as it did.

use super::super::{Order, ReportState};
use super::{Service, blocking, health};

impl Service {
    pub(super) async fn restart(&mut self, order: &Order, version: &str) {
        if self.live.as_deref() != Some(version) || !self.runs(version) {
            let live = self.live.clone().unwrap_or_else(|| "nothing".to_owned());
            let message = format!("release {version} is not what this node serves ({live} is), so it is not restarted");
            self.ctx.report(order, ReportState::Failed, message, self.live());
            return;
        }
        let (def, instance) = {
            let r = &self.running[version];
            (r.def.clone(), r.instance.wrapping_add(1))
        };
        let fresh = match self.start(version, &def, None, instance).await {
            Ok(fresh) => fresh,
            Err(e) => {
                let message = format!("cannot start release {version} afresh: {e}; the running start serves on");
                self.ctx.report(order, ReportState::Failed, message, version);
                return;
            }
        };
        let (probe, policy, deadline) = self.health_check_of(version, &fresh);
        if let Err(e) = health::until_healthy(&probe, policy, deadline).await {
            let grace = self.ctx.config.stop_grace;
            let _ = blocking(move || fresh.supervisor.stop(grace)).await;
            let message = format!("release {version} started afresh is not healthy: {e}; the running start serves on");
            self.ctx.report(order, ReportState::Failed, message, version);
            return;
        }
        let port = fresh.port;
        let old = self.running.insert(version.to_owned(), fresh).expect("it runs");
        let switched = match self.proxy_to(def.port, self.backend(version)).await {
            Ok(switched) => switched,
            Err(e) => {
                // The old start goes on serving; the new one stops.
                let fresh = self.running.insert(version.to_owned(), old).expect("just put");
                let grace = self.ctx.config.stop_grace;
                let _ = blocking(move || fresh.supervisor.stop(grace)).await;
                let message = format!("cannot send connections to release {version} started afresh: {e}");
                self.ctx.report(order, ReportState::Failed, message, version);
                return;
            }
        };
        self.save().await;
        // The monitor follows the new start's port.
        self.stop_monitor().await;
        self.monitor_live(true).await;
        if let Some(drained) = switched {
            self.drain(drained).await;
        }
        let grace = self.ctx.config.stop_grace;
        if let Ok(Err(e)) | Err(e) = blocking(move || old.supervisor.stop(grace).map_err(|e| e.to_string())).await {
            tracing::warn!(service = %self.name, %version, error = %e, "cannot stop the old start of a release");
        }
        let message = format!("release {version} started afresh on port {port} and serves");
        self.ctx.report(order, ReportState::Healthy, message, version);
    }
}
