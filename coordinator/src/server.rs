//! Wiring: open the store, start the scheduler, serve both gRPC services on
//! a listener the caller bound, until the shutdown future completes. Taking a
//! bound listener lets tests bind port 0 and run many coordinators side by
//! side.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use drover_proto::v1::agent_service_server::AgentServiceServer;
use drover_proto::v1::control_service_server::ControlServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::api::{agent::AgentApi, control::ControlApi};
use crate::scheduler::{Config, Scheduler};
use crate::store::{Store, StoreError, embedded};
use crate::tls::{self, TlsError};

#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub tls_dir: PathBuf,
    pub scheduler: Config,
    pub store: embedded::EmbeddedOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot create {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Runs a coordinator on the embedded store until `shutdown` completes.
pub async fn run(listener: TcpListener, opts: Options, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let tls = tls::server_config(&opts.tls_dir)?;
    let store_dir = opts.data_dir.join("store");
    let scratch = opts.data_dir.join("tmp");
    for dir in [&store_dir, &scratch] {
        std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir { path: dir.clone(), source })?;
    }
    let store: Arc<dyn Store> = embedded::EmbeddedStore::open(&store_dir, opts.store.clone()).await?;
    let (sched, sched_task) = Scheduler::start(store.clone(), opts.scheduler.clone()).await?;
    let addr = listener.local_addr().ok();
    info!(?addr, data_dir = %opts.data_dir.display(), "coordinator serving");
    let result = tonic::transport::Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(AgentServiceServer::new(AgentApi::new(sched.clone())))
        .add_service(ControlServiceServer::new(ControlApi::new(sched, store, scratch)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    sched_task.abort();
    Ok(result?)
}
