//! Wiring: open the store, run the election (which runs the registered
//! controllers, the scheduler among them, while this coordinator leads),
//! and serve both gRPC services on a listener the caller bound, until the
//! shutdown future completes. Taking a bound listener lets tests bind port
//! 0 and run many coordinators side by side.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1::agent_cert_service_server::AgentCertServiceServer;
use drover_proto::v1::agent_service_server::AgentServiceServer;
use drover_proto::v1::app_service_server::AppServiceServer;
use drover_proto::v1::control_service_server::ControlServiceServer;
use drover_proto::v1::enroll_service_server::EnrollServiceServer;
use drover_proto::v1::identity_service_server::IdentityServiceServer;
use drover_proto::v1::notification_service_server::NotificationServiceServer;
use drover_proto::v1::release_service_server::ReleaseServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tracing::info;

use drover_telemetry::http::{self, Reply};

use crate::api::{agent::AgentApi, control::ControlApi};
use crate::compaction;
use crate::controller;
use crate::leader::{self, ElectionConfig, Role};
use crate::retention;
use crate::scheduler::Config;
use crate::segments::{SegmentError, Segments};
use crate::store::{Store, StoreError, embedded, etcd};
use crate::submit::GitOptions;
use crate::tls::{self, TlsError};

mod liveness;
use liveness::{Liveness, liveness};

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Embedded(embedded::EmbeddedOptions),
    Etcd(etcd::EtcdOptions),
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Artifacts in an S3-compatible bucket (`s3://bucket/prefix`) rather
    /// than under the blob directory.
    pub blob_store: Option<String>,
    /// The most bytes one job's artifacts may have (`--max-artifact-bytes`).
    pub max_artifact_bytes: u64,
    /// The most bytes one file in a job's artifacts may have
    /// (`--max-artifact-file-bytes`).
    pub max_artifact_file_bytes: u64,
    /// The most bytes uploads may fill the blob store with; 0: no limit.
    pub blob_store_budget: u64,
    pub data_dir: PathBuf,
    pub tls_dir: PathBuf,
    pub scheduler: Config,
    pub store: StoreConfig,
    /// The URL agents and the CLI use to reach this coordinator; defaults to
    /// https:// and the listener's address.
    pub advertise: Option<String>,
    /// TTL of the coordinator's lease in the election.
    pub election_ttl: Duration,
    /// Run retention, applied by the leader.
    pub retention: retention::Config,
    /// How often the leader compacts etcd's history; `None` leaves it to
    /// the store (the embedded store bounds its own) or its operator.
    pub compaction: Option<compaction::Config>,
    /// How long reading a pipeline from a git repository may take.
    pub git_timeout: Duration,
    /// What analyses and gates may call (`--outbound-allow`).
    pub outbound: crate::outbound::Outbound,
    /// How often the leader's triggers look for work (`--triggers-interval`).
    pub triggers_interval: Duration,
    /// How long the coordinator runs on with a stopped store (see
    /// [`Store::stopped`]) or stopped log segments ([`Segments::stopped`])
    /// before it exits with the reason, so that a supervisor restarts it.
    pub store_fail_exit: Duration,
    /// Where log chunks' bytes go ([`crate::segments`]); by default
    /// `blobs` in the data directory. Several coordinators on etcd must
    /// share one, or followers cannot serve logs the leader wrote.
    pub blob_dir: Option<PathBuf>,
    /// The key that seals secrets (`--secrets-key-file`); by default
    /// `secrets.key` in the TLS directory, and without one secrets are off.
    pub secrets_key_file: Option<PathBuf>,
    /// The CA's key, to sign enrolling agents' certificates (`--ca-key`);
    /// by default `ca-key.pem` in the TLS directory, and without one
    /// enrollment is off.
    pub ca_key: Option<PathBuf>,
    /// How long the coordinator's own server certificate lasts, signed with
    /// the CA key and renewed at half its life (`--server-cert-ttl`);
    /// `None`: serve `coordinator.pem` as it is.
    pub server_cert_ttl: Option<Duration>,
    /// How long an enrolled agent's certificate lasts (`--agent-cert-ttl`).
    pub agent_cert_ttl: Duration,
    /// How long a user's certificate lasts (`--user-cert-ttl`).
    pub user_cert_ttl: Duration,
    /// The webhook listener's certificate and key (`--webhook-cert`,
    /// `--webhook-key`); by default the coordinator's own.
    pub webhook_cert: Option<(PathBuf, PathBuf)>,
    /// The largest webhook body read (`--webhook-max-body`).
    pub webhook_max_body: usize,
    /// The web UI's URL for login links (`--ui-url`); by default from its
    /// listener's address.
    pub ui_url: Option<String>,
    /// The web UI's certificate and key (`--ui-cert`, `--ui-key`); by
    /// default the coordinator's own, renewed with it.
    pub ui_cert: Option<(PathBuf, PathBuf)>,
    /// How long a web UI session lasts (`--ui-session-ttl`).
    pub ui_session_ttl: Duration,
}

/// The listeners beside the API's, each optional: `/metrics` and the
/// health checks (plain HTTP), webhooks (HTTPS) and the web UI (HTTPS).
#[derive(Debug, Default)]
pub struct Listeners {
    pub metrics: Option<TcpListener>,
    pub webhooks: Option<TcpListener>,
    pub ui: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open the log segments: {0}")]
    Segments(#[from] SegmentError),
    #[error("cannot open the blob store: {0}")]
    Blobs(#[from] crate::blobs::BlobError),
    #[error("{0}")]
    SecretsKey(String),
    #[error("cannot use {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the listener has no local address: {0}")]
    Listener(std::io::Error),
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookError),
    #[error("cannot use the CA to enroll agents: {0}")]
    Authority(#[from] drover_pki::enroll::AuthorityError),
    #[error("the store stopped {}s ago and cannot recover without a restart: {reason}", after.as_secs())]
    StoreStopped { reason: String, after: Duration },
}

/// This coordinator's id: made once, kept in the data directory, so a
/// restarted coordinator recognises its own stale leader key.
fn coordinator_id(data_dir: &Path) -> Result<String, ServerError> {
    let path = data_dir.join("coordinator-id");
    let err = |source| ServerError::DataDir { path: path.clone(), source };
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).map_err(err)?;
    let host = host_name().unwrap_or_default();
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect();
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let id = if host.is_empty() { format!("coordinator-{suffix}") } else { format!("{host}-{suffix}") };
    std::fs::write(&path, &id).map_err(err)?;
    Ok(id)
}

/// The URL followers hand out for this coordinator when `--advertise` is not
/// given: the listen address, or, when listening on every address, this
/// host's name (which other hosts can resolve, unlike `localhost`).
fn default_advertise(addr: std::net::SocketAddr, host: Option<&str>) -> String {
    match (addr.ip().is_unspecified(), host) {
        (false, _) => format!("https://{addr}"),
        (true, Some(host)) if !host.is_empty() => format!("https://{host}:{}", addr.port()),
        (true, _) => format!("https://localhost:{}", addr.port()),
    }
}

/// This machine's host name.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Answers `/metrics`, `/healthz` and `/readyz`. Ready means: this
/// coordinator leads, or follows a known leader, and the store answers.
async fn observe(path: String, role: watch::Receiver<Role>, store: Arc<dyn Store>) -> Reply {
    match path.as_str() {
        "/metrics" => Reply::metrics(crate::metrics::render()),
        "/healthz" => Reply::text(200, "ok\n"),
        "/readyz" => {
            let role_ok = match &*role.borrow() {
                Role::Leader { .. } => Ok("leader"),
                Role::Follower { leader: Some(_) } => Ok("follower"),
                Role::Follower { leader: None } => Err("no leader known (an election is under way)"),
            };
            let store_ok = tokio::time::timeout(Duration::from_secs(2), store.get(crate::core::keys::LEADER)).await;
            match (role_ok, store_ok) {
                (Ok(role), Ok(Ok(_))) => Reply::text(200, format!("ready: {role}, store reachable\n")),
                (Err(why), _) => Reply::text(503, format!("not ready: {why}\n")),
                (_, Ok(Err(e))) => Reply::text(503, format!("not ready: {e}\n")),
                (_, Err(_)) => Reply::text(503, "not ready: the store did not answer within 2s\n"),
            }
        }
        _ => Reply::text(404, "try /metrics, /healthz or /readyz\n"),
    }
}

/// Runs a coordinator until `shutdown` completes; with a metrics listener
/// it also serves `/metrics`, `/healthz` and `/readyz` there, and with a
/// webhooks listener the forges' deliveries (`crate::webhooks`).
pub async fn run(
    listener: TcpListener,
    side: Listeners,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let Listeners { metrics, webhooks, ui } = side;
    let server_tls = tls::ServerTls::load(&opts.tls_dir)?;
    let webhook_tls = match &webhooks {
        None => None,
        Some(_) => {
            let (cert, key) = opts
                .webhook_cert
                .clone()
                .unwrap_or_else(|| (opts.tls_dir.join("coordinator.pem"), opts.tls_dir.join("coordinator-key.pem")));
            Some(crate::webhooks::tls(&cert, &key, &[b"http/1.1"])?)
        }
    };
    let scratch = opts.data_dir.join("tmp");
    std::fs::create_dir_all(&scratch).map_err(|source| ServerError::DataDir { path: scratch.clone(), source })?;
    let id = coordinator_id(&opts.data_dir)?;
    let addr = listener.local_addr().map_err(ServerError::Listener)?;
    let url = opts.advertise.clone().unwrap_or_else(|| default_advertise(addr, host_name().as_deref()));
    if opts.advertise.is_none() && addr.ip().is_unspecified() && matches!(opts.store, StoreConfig::Etcd(_)) {
        tracing::warn!(
            %url,
            "listening on all addresses without --advertise: followers send clients to {url}; \
             set --advertise to a URL every agent can reach (and name its host in the certificate)"
        );
    }

    let mut sched_config = opts.scheduler.clone();
    let Liveness { heartbeat, idle_heartbeat, ack_timeout, keepalive } =
        liveness(sched_config.lease_ttl, opts.election_ttl);
    (sched_config.heartbeat, sched_config.idle_heartbeat, sched_config.ack_timeout) =
        (heartbeat, idle_heartbeat, ack_timeout);
    let store: Arc<dyn Store> = match &opts.store {
        StoreConfig::Embedded(eopts) => {
            let dir = opts.data_dir.join("store");
            std::fs::create_dir_all(&dir).map_err(|source| ServerError::DataDir { path: dir.clone(), source })?;
            embedded::EmbeddedStore::open(&dir, eopts.clone()).await?
        }
        StoreConfig::Etcd(eopts) => etcd::EtcdStore::connect(eopts.clone()).await?,
    };
    let kind = store.kind();
    let (blob_dir, fsync) = match &opts.store {
        StoreConfig::Embedded(eopts) => (opts.blob_dir.clone(), eopts.fsync),
        StoreConfig::Etcd(_) => {
            if opts.blob_dir.is_none() {
                tracing::warn!(
                    "on etcd without --blob-dir, log bytes go to this coordinator's data directory: another \
                     coordinator cannot serve logs this one wrote (nor this one theirs); give every coordinator \
                     the same shared --blob-dir"
                );
            }
            (opts.blob_dir.clone(), true)
        }
    };
    let blob_dir = blob_dir.unwrap_or_else(|| opts.data_dir.join("blobs"));
    let segments = Arc::new(Segments::open(&blob_dir, fsync)?);
    let blobs = Arc::new(
        match &opts.blob_store {
            Some(url) => crate::blobs::Blobs::open_s3(url, &blob_dir)?,
            None => crate::blobs::Blobs::open(&blob_dir, fsync)?,
        }
        .with_budget(opts.blob_store_budget),
    );
    segments.seal_into(blobs.clone());
    let vault = Arc::new(open_vault(&opts, store.clone())?);
    let authority = open_authority(&opts)?;
    let keyring = crate::identity::ca::Keyring::new(authority, server_tls.files_ca().clone(), vault.clone());
    tokio::spawn(tls::renew_forever(server_tls.clone(), keyring.clone(), opts.server_cert_ttl));
    let gate = crate::identity::Gate::spawn(store.clone(), keyring.clone());
    let relay = crate::relay::Relay::new(id.clone(), keyring.clone(), opts.election_ttl);
    let ui_tls = match (&ui, &opts.ui_cert) {
        (None, _) => None,
        (Some(_), Some((cert, key))) => Some(crate::webhooks::tls(cert, key, &[b"h2", b"http/1.1"])?),
        (Some(_), None) => Some(server_tls.browser_acceptor()?),
    };
    let mut identity = crate::api::identity::IdentityApi::new(
        store.clone(),
        crate::identity::Signing { keyring, cert_ttl: opts.agent_cert_ttl, user_cert_ttl: opts.user_cert_ttl },
        gate.clone(),
    );
    if let Some(listener) = &ui {
        let addr = listener.local_addr().map_err(ServerError::Listener)?;
        let url = opts.ui_url.clone().unwrap_or_else(|| default_advertise(addr, host_name().as_deref()));
        identity.ui =
            Some(crate::ui::Links { url: url.trim_end_matches('/').to_owned(), session_ttl: opts.ui_session_ttl });
    }
    let caches = Arc::new(crate::caches::Caches::new(store.clone()));

    let (role_tx, role_rx) = watch::channel(Role::Follower { leader: None });
    let (stop_tx, stop_rx) = watch::channel(false);
    let controllers = controller::registry(&controller::Config {
        scheduler: sched_config,
        retention: opts.retention.clone(),
        compaction: opts.compaction.clone(),
        triggers: Some(crate::triggers::Config {
            interval: opts.triggers_interval,
            git: GitOptions { scratch: scratch.clone(), timeout: opts.git_timeout },
            vault: vault.clone(),
        }),
        apps: Some(crate::apps::Config {
            git: GitOptions { scratch: scratch.clone(), timeout: opts.git_timeout },
            max_artifact_bytes: opts.max_artifact_bytes,
            vault: vault.clone(),
            outbound: opts.outbound.clone(),
        }),
        outbound: opts.outbound.clone(),
    });
    // One per process, handed to every term (see `crate::notifications`).
    let notifier = crate::notifications::Notifier::spawn(store.clone());
    let election = tokio::spawn(leader::run(
        store.clone(),
        ElectionConfig {
            id: id.clone(),
            url: url.clone(),
            ui_url: identity.ui.as_ref().map(|links| links.url.clone()),
            ttl: opts.election_ttl,
            segments: segments.clone(),
            blobs: blobs.clone(),
            notifier,
        },
        controllers,
        role_tx,
        stop_rx,
    ));
    info!(
        %id,
        %url,
        store = kind,
        data_dir = %opts.data_dir.display(),
        blob_dir = %blob_dir.display(),
        "coordinator serving"
    );
    let (metrics_stop_tx, mut metrics_stop) = watch::channel(false);
    if let (Some(listener), Some(tls)) = (webhooks, webhook_tls) {
        let hooks = Arc::new(crate::webhooks::Hooks {
            store: store.clone(),
            vault: vault.clone(),
            max_body: opts.webhook_max_body,
        });
        let mut stop = metrics_stop.clone();
        tokio::spawn(crate::webhooks::serve(listener, tls, hooks, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    if let Some(metrics) = metrics {
        let (role, store) = (role_rx.clone(), store.clone());
        let handler = move |path| observe(path, role.clone(), store.clone());
        tokio::spawn(http::serve(metrics, handler, async move {
            let _ = metrics_stop.wait_for(|s| *s).await;
        }));
    }
    let (fatal_tx, fatal_rx) = watch::channel(None::<(String, Duration)>);
    tokio::spawn(watch_stopped_store(store.clone(), segments.clone(), opts.store_fail_exit, fatal_tx));
    let fatal = {
        let mut fatal_rx = fatal_rx.clone();
        async move {
            let _ = fatal_rx.wait_for(Option::is_some).await;
        }
    };
    let (closing_tx, closing_rx) = watch::channel(false);
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            () = fatal => {}
        }
        // Open watches end, so that the server does not wait for them.
        let _ = closing_tx.send(true);
        // Step down first, so a follower can take over at once.
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(3), election).await;
        let _ = metrics_stop_tx.send(true);
    };
    let apps = Arc::new(crate::api::apps::AppApi {
        store: store.clone(),
        git: GitOptions { scratch: scratch.clone(), timeout: opts.git_timeout },
        vault: vault.clone(),
    });
    let control = Arc::new(ControlApi {
        role: role_rx.clone(),
        store: store.clone(),
        segments,
        git: GitOptions { scratch, timeout: opts.git_timeout },
        blobs: blobs.clone(),
        vault: vault.clone(),
        caches: caches.clone(),
        id,
        closing: closing_rx.clone(),
        gate: gate.clone(),
    });
    if let (Some(listener), Some(tls), Some(links)) = (ui, ui_tls, identity.ui.clone()) {
        let ui = Arc::new(crate::ui::Ui {
            store: store.clone(),
            gate: gate.clone(),
            api: crate::ui::Api { control: control.clone(), identity: identity.clone(), apps: apps.clone() },
            role: role_rx.clone(),
            links,
            http: ui_client(&opts.tls_dir)?,
            refusals: Default::default(),
        });
        let mut stop = closing_rx.clone();
        tokio::spawn(crate::ui::serve(listener, tls, ui, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    // Every service but enrollment requires a client certificate, and reads
    // the caller from it once (`api::guard`); the TLS layer verifies one
    // that is presented, but lets a client without one finish the
    // handshake.
    let guarded = crate::api::guard(gate.clone());
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(EnrollServiceServer::new(identity.clone()))
        .add_service(AgentServiceServer::with_interceptor(
            AgentApi::new(
                role_rx.clone(),
                opts.scheduler.lease_ttl,
                blobs.clone(),
                (opts.max_artifact_bytes, opts.max_artifact_file_bytes),
                vault.clone(),
                caches.clone(),
                (gate.clone(), store.clone()),
            )
            .relaying(crate::api::agent::relay::Relaying {
                relay,
                here: url.clone(),
                wait: opts.election_ttl * 3 / 4,
            }),
            guarded.clone(),
        ))
        .add_service(AgentCertServiceServer::with_interceptor(identity.clone(), guarded.clone()))
        .add_service(IdentityServiceServer::with_interceptor(identity, guarded.clone()))
        .add_service(InterceptedService::new(AppServiceServer::from_arc(apps), guarded.clone()))
        .add_service(ReleaseServiceServer::with_interceptor(
            crate::api::releases::ReleaseApi { store: store.clone() },
            guarded.clone(),
        ))
        .add_service(NotificationServiceServer::with_interceptor(
            crate::api::notifications::NotificationApi { store: store.clone() },
            guarded.clone(),
        ))
        .add_service(InterceptedService::new(ControlServiceServer::from_arc(control), guarded.clone()))
        // TLS is `crate::tls`'s, so the server certificate can be renewed.
        .serve_with_incoming_shutdown(tls::incoming(listener, server_tls), stop)
        .await?;
    let fatal = fatal_rx.borrow().clone();
    match fatal {
        Some((reason, after)) => Err(ServerError::StoreStopped { reason, after }),
        None => Ok(()),
    }
}

/// The client a follower's UI relays actions (and the pages only the leader
/// can fill in) to the leader's UI with: it
/// trusts the cluster's CA (`ca.pem`, which `ServerTls` read already) and
/// the system's, and follows no redirect (the browser does).
fn ui_client(tls_dir: &Path) -> Result<reqwest::Client, ServerError> {
    let path = tls_dir.join("ca.pem");
    let pem = std::fs::read(&path).map_err(|source| TlsError::Read { path: path.clone(), source })?;
    let ca = reqwest::Certificate::from_pem(&pem)
        .map_err(|e| TlsError::Unusable { path: path.clone(), detail: e.to_string() })?;
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| TlsError::Unusable { path, detail: format!("cannot make the UI's client: {e}") }.into())
}

/// The secrets vault. A key file named by `--secrets-key-file`, or present
/// in the TLS directory, must be usable: a coordinator that silently ran
/// without it would refuse every pipeline with secrets. Without one, the
/// coordinator runs with secrets off and says so.
fn open_vault(opts: &Options, store: Arc<dyn Store>) -> Result<crate::secrets::Vault, ServerError> {
    let key_file = opts.secrets_key_file.clone().unwrap_or_else(|| opts.tls_dir.join(drover_pki::secrets_key::FILE));
    let vault = crate::secrets::Vault::open(store, &key_file);
    if let Some(why) = vault.key_problem() {
        if opts.secrets_key_file.is_some() || key_file.exists() {
            return Err(ServerError::SecretsKey(why.to_owned()));
        }
        info!(key_file = %key_file.display(), "no secrets key; pipelines that declare secrets are refused");
    }
    Ok(vault)
}

/// The CA enrolling agents' certificates are signed with: `--ca-key`,
/// which must be usable, else `ca-key.pem` in the TLS directory when it is
/// there; with neither, enrollment is off and says so.
fn open_authority(opts: &Options) -> Result<Option<Arc<drover_pki::enroll::Authority>>, ServerError> {
    let key = opts.ca_key.clone().unwrap_or_else(|| opts.tls_dir.join("ca-key.pem"));
    if opts.ca_key.is_none() && !key.exists() {
        info!(key = %key.display(), "no CA key; agents cannot enroll with join tokens (give --ca-key to allow it)");
        return Ok(None);
    }
    let authority = drover_pki::enroll::Authority::load(&opts.tls_dir.join("ca.pem"), &key)?;
    info!(pin = %authority.pin(), "agents may enroll with join tokens");
    Ok(Some(Arc::new(authority)))
}

/// Checks once a second whether the store, or the log segments, have
/// stopped for good; after `exit_after` of it, hands the server a fatal
/// error, which steps down and ends the process non-zero with the reason.
/// Without this, a coordinator on a full or vanished disk keeps running and
/// retrying, so systemd's `Restart=on-failure` never restarts it. A full
/// blob disk counts as the store's fault: it stops the whole coordinator,
/// not one attempt, since every log on it would fail the same way.
async fn watch_stopped_store(
    store: Arc<dyn Store>,
    segments: Arc<Segments>,
    exit_after: Duration,
    fatal: watch::Sender<Option<(String, Duration)>>,
) {
    let mut since: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1).min(exit_after)).await;
        match store.stopped().or_else(|| segments.stopped()) {
            None => since = None,
            Some(reason) => {
                let first = *since.get_or_insert_with(tokio::time::Instant::now);
                let after = first.elapsed();
                if after >= exit_after {
                    tracing::error!(%reason, "the store has stopped; exiting so that a supervisor restarts us");
                    fatal.send_replace(Some((reason, after)));
                    return;
                }
                tracing::warn!(%reason, "the store has stopped; exiting in {:?}", exit_after - after);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::default_advertise;

    #[test]
    fn the_default_advertised_url_is_reachable_from_other_hosts_where_it_can_be() {
        let cases = [
            ("10.0.0.1:7700", Some("ci-1"), "https://10.0.0.1:7700"),
            ("127.0.0.1:7700", Some("ci-1"), "https://127.0.0.1:7700"),
            ("[::1]:7700", None, "https://[::1]:7700"),
            ("0.0.0.0:7700", Some("ci-1"), "https://ci-1:7700"),
            ("[::]:7700", Some("ci-1.example.org"), "https://ci-1.example.org:7700"),
            ("0.0.0.0:7700", None, "https://localhost:7700"),
            ("0.0.0.0:7700", Some(""), "https://localhost:7700"),
        ];
        for (addr, host, want) in cases {
            assert_eq!(default_advertise(addr.parse().unwrap(), host), want, "{addr} {host:?}");
        }
    }
}
