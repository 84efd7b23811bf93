//! A service's port: its proxy process (`drover-agent --proxy`, see
//! [`crate::deploy::proxy`]) started, adopted after an agent restart,
//! switched between releases, drained and stopped. Every call into the
//! proxy's state dir blocks, so each runs on a blocking thread.

use std::net::SocketAddr;
use std::path::PathBuf;

use tracing::{info, warn};

use super::{Service, blocking};
use crate::deploy::proxy::ServiceProxy;
use crate::deploy::proxy::process::stopped_on_purpose;

impl Service {
    /// The proxy's state dir: `{services_dir}/{service}/proxy`.
    fn proxy_dir(&self) -> PathBuf {
        self.releases.dir().join("proxy")
    }

    /// At load: takes back the proxy process still serving the service's
    /// port (`saved_port`, from `service.json`), pointing it at the live
    /// release; starts one if none runs (unless the last word to it was
    /// stop); stops one that runs while nothing is live.
    pub(super) async fn adopt_proxy(&mut self, saved_port: Option<u16>) {
        let dir = self.proxy_dir();
        let adopted = match blocking(move || ServiceProxy::adopt(&dir)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) | Err(e) => {
                warn!(service = %self.name, error = %e, "cannot read the proxy's state");
                None
            }
        };
        let (Some(live), Some(port)) = (self.live.clone(), saved_port) else {
            if let Some((proxy, _)) = adopted {
                info!(service = %self.name, pid = proxy.pid(), "nothing is live: stopping the service's proxy");
                self.proxy = Some(proxy);
                self.close_proxy().await;
            }
            return;
        };
        let backend = self.backend(&live);
        if let Some((proxy, state)) = adopted {
            info!(service = %self.name, pid = proxy.pid(), listen = %state.listen, "adopted the service's proxy");
            self.proxy = Some(proxy);
            if state.listen.port() == port && state.backend == backend {
                return;
            }
        } else {
            let dir = self.proxy_dir();
            if blocking(move || stopped_on_purpose(&dir)).await.unwrap_or(false) {
                info!(service = %self.name, "the service's proxy was stopped on purpose: not starting it again");
                return;
            }
        }
        match self.proxy_to(port, backend).await {
            Ok(_) => info!(service = %self.name, version = %live, port, "the service's port serves the live release"),
            Err(e) => warn!(service = %self.name, error = %e, "cannot open the service's port again"),
        }
    }

    /// Points the proxy on `port` at `backend`, starting a proxy process
    /// first if there is none (or it owns another port: that one is
    /// stopped first). Returns the backend switched away from, if any.
    pub(super) async fn proxy_to(&mut self, port: u16, backend: SocketAddr) -> Result<Option<SocketAddr>, String> {
        if let Some(proxy) = self.proxy.clone() {
            if proxy.listen().port() == port {
                let old = blocking(move || proxy.switch(backend)).await??;
                return Ok(Some(old));
            }
            self.close_proxy().await;
        }
        let listen = SocketAddr::new(self.ctx.config.service_address, port);
        let (launch, dir) = (self.ctx.config.launch.clone(), self.proxy_dir());
        let proxy = blocking(move || ServiceProxy::start(&launch, &dir, listen, backend)).await??;
        info!(service = %self.name, %listen, %backend, pid = proxy.pid(), "the proxy owns the service's port");
        self.proxy = Some(proxy);
        Ok(None)
    }

    /// Waits for the connections left on the old backend (as the proxy's
    /// `state.json` counts them), and cuts them past the drain timeout.
    pub(super) async fn drain(&self, old: SocketAddr) {
        let Some(proxy) = self.proxy.clone() else { return };
        if proxy_backend_is(&proxy, old).await {
            return;
        }
        let timeout = self.ctx.config.drain_timeout;
        let p = proxy.clone();
        let remaining = blocking(move || p.drain(old, timeout)).await.unwrap_or(0);
        if remaining > 0 {
            warn!(service = %self.name, remaining, "connections did not drain in time: cutting them");
            if let Ok(Err(e)) | Err(e) = blocking(move || proxy.cut_old()).await {
                warn!(service = %self.name, error = %e, "cannot cut the old connections");
            }
        }
    }

    /// Stops the proxy process, if any, and waits until its port is free.
    pub(super) async fn close_proxy(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            match blocking(move || proxy.stop()).await {
                Ok(Ok(())) => info!(service = %self.name, "the service's proxy stopped; its port is free"),
                Ok(Err(e)) | Err(e) => warn!(service = %self.name, error = %e, "cannot stop the service's proxy"),
            }
        }
    }
}

/// Whether the proxy sends new connections to `backend` now (a switch to
/// the same backend leaves nothing to drain).
async fn proxy_backend_is(proxy: &ServiceProxy, backend: SocketAddr) -> bool {
    let p = proxy.clone();
    matches!(blocking(move || p.state()).await, Ok(Ok(state)) if state.backend == backend)
}
