//! The continuous health check of a service's live release: a task of its
//! own beside the service's task (so a probe never delays an action), that
//! probes every `interval`, feeds a [`Tracker`] and sends a
//! [`ServiceHealth`] when the release's health is first known and whenever
//! it changes, with the last failure's error when it turns unhealthy.
//!
//! The service's task holds at most one [`Monitor`], on its live release:
//! it starts one when a release becomes live (install, switch, rollback)
//! or when it adopts a live release at startup, stops the old one first
//! (and waits for it to end, so nothing it sends comes after what the
//! service reports next), and stops it when nothing is live any more. A
//! release that has just passed its health gate starts healthy, and says
//! so at once; an adopted one starts unknown, and is reported once its
//! checks say either way. Dropping a monitor (its service's task ends)
//! stops it too.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{Ctx, ServiceHealth};
use crate::deploy::health::{self, Health, Policy, Probe, Tracker};

/// A live release's monitor task; see the module header.
pub(super) struct Monitor {
    version: String,
    task: JoinHandle<()>,
}

impl Monitor {
    /// Starts monitoring `version` of `service`; `healthy`: it has just
    /// passed its health gate.
    pub(super) fn start(
        ctx: Arc<Ctx>,
        service: &str,
        version: &str,
        probe: Probe,
        policy: Policy,
        healthy: bool,
    ) -> Monitor {
        let watch = Watch { ctx, service: service.to_string(), version: version.to_string() };
        Monitor { version: version.to_string(), task: tokio::spawn(watch.run(probe, policy, healthy)) }
    }

    /// The release it monitors.
    pub(super) fn version(&self) -> &str {
        &self.version
    }

    /// Stops it and waits until its task has ended.
    pub(super) async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Watch {
    ctx: Arc<Ctx>,
    service: String,
    version: String,
}

impl Watch {
    async fn run(self, probe: Probe, policy: Policy, healthy: bool) {
        let mut ticks = tokio::time::interval(policy.interval);
        // A probe slower than the interval delays the next one, it does not
        // bunch them up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tracker = if healthy {
            self.send(true, String::new());
            // The first tick is at once: the gate has just probed.
            ticks.tick().await;
            Tracker::healthy(policy)
        } else {
            Tracker::new(policy)
        };
        let mut last = String::new();
        loop {
            ticks.tick().await;
            let result = health::probe(&probe, policy.timeout).await;
            if let Err(why) = &result {
                last.clone_from(why);
            }
            match tracker.observe(result.is_ok()) {
                Some(Health::Healthy) => self.send(true, String::new()),
                Some(Health::Unhealthy) => self.send(false, last.clone()),
                Some(Health::Unknown) | None => {}
            }
        }
    }

    fn send(&self, healthy: bool, message: String) {
        self.ctx.health(ServiceHealth {
            service: self.service.clone(),
            version: self.version.clone(),
            healthy,
            message,
        });
    }
}
