//! The webhook listener (`--webhook-listen`): push and pull-request events
//! from GitHub, Gitea and GitLab, for the repositories `drover repo add`
//! registered, on an HTTPS listener of its own that asks for no client
//! certificate (a forge has none of ours).
//!
//! `POST /hooks/{repo}` is one delivery. In order:
//!
//! 1. the repository must be registered (404) and have a webhook secret
//!    (403);
//! 2. the body is read up to `--webhook-max-body` (413 past it, refused
//!    from `Content-Length` before reading when it says so), within
//!    [`REQUEST_TIMEOUT`] (408);
//! 3. the sender must prove it knows the secret (`verify`: HMAC-SHA256
//!    over the raw body for GitHub and Gitea, the token for GitLab); a
//!    bad or missing signature gets 401, starts nothing and is logged;
//! 4. the body is read as an event (`payload`; 400 when it cannot be);
//!    events that start nothing (a ping, a closed pull request) get 200
//!    and say why;
//! 5. the delivery is handed to the triggers (`crate::triggers::enqueue`),
//!    which the leader's controller works through: 202. A delivery id seen
//!    before is a replay: 200, and nothing starts.
//!
//! Any coordinator serves it, follower or leader: it only writes the
//! store. At most [`MAX_CONNECTIONS`] connections are served at once; more
//! are closed at once.

pub mod payload;
pub mod verify;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::secrets::Vault;
use crate::store::Store;
use crate::triggers::{self, Enqueued, Observation, TriggersError};
use payload::Event;

/// The default of `--webhook-max-body`: 5 MiB. GitHub's push payloads list
/// at most 20 commits and are far smaller.
pub const DEFAULT_MAX_BODY: usize = 5 * 1024 * 1024;
/// How long one request may take to arrive, head and body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no {what}: {detail}")]
    Pem { path: PathBuf, what: &'static str, detail: String },
    #[error("cannot use the webhook certificate: {0}")]
    Tls(#[from] rustls::Error),
}

/// What a delivery needs: the store and the vault that holds the
/// repositories' secrets.
pub struct Hooks {
    pub store: Arc<dyn Store>,
    pub vault: Arc<Vault>,
    pub max_body: usize,
}

/// The listener's TLS: `cert` and `key` (PEM), and no client certificates,
/// offering the `alpn` protocols (the web UI's `--ui-cert` too).
pub fn tls(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<TlsAcceptor, WebhookError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &Path| std::fs::read(path).map_err(|source| WebhookError::Read { path: path.into(), source });
    let certs = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WebhookError::Pem { path: cert.into(), what: "certificate", detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(WebhookError::Pem { path: cert.into(), what: "certificate", detail: "none found".into() });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| WebhookError::Pem {
        path: key.into(),
        what: "private key",
        detail: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves deliveries on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, tls: TlsAcceptor, hooks: Arc<Hooks>, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ = &mut shutdown => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "webhook connection refused: {MAX_CONNECTIONS} are being served");
            continue;
        };
        let (tls, hooks) = (tls.clone(), hooks.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Ok(stream)) = tokio::time::timeout(REQUEST_TIMEOUT, tls.accept(stream)).await else { return };
            let service = hyper::service::service_fn(move |req| {
                let hooks = hooks.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&hooks, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, conn).await;
        });
    }
}

fn reply(status: StatusCode, text: impl Into<String>) -> Response<Full<Bytes>> {
    let mut body = text.into();
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

async fn handle(hooks: &Hooks, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let Some(repo) = req.uri().path().strip_prefix("/hooks/").map(str::to_string) else {
        return reply(StatusCode::NOT_FOUND, "deliveries go to /hooks/REPO, REPO as `drover repos` lists it");
    };
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "a delivery is a POST");
    }
    let headers = req.headers().clone();
    let header = move |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let delivery = match verify::delivery(&header) {
        Ok(d) => d,
        Err(refused) => return reply(StatusCode::BAD_REQUEST, refused.to_string()),
    };
    let secret = match triggers::webhook_secret(hooks.store.as_ref(), &hooks.vault, &repo).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return reply(
                StatusCode::FORBIDDEN,
                format!(
                    "repository {repo} has no webhook secret, so no delivery can be trusted; register it again with \
                     `drover repo add {repo} --url URL --webhook-secret-file FILE`"
                ),
            );
        }
        Err(TriggersError::NotFound(_)) => {
            return reply(StatusCode::NOT_FOUND, format!("no repository {repo} is registered (drover repo add)"));
        }
        Err(err) => return reply(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read repository {repo}: {err}")),
    };
    let declared = header("content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > hooks.max_body as u64) {
        return too_large(hooks.max_body);
    }
    let body =
        match tokio::time::timeout(REQUEST_TIMEOUT, Limited::new(req.into_body(), hooks.max_body).collect()).await {
            Err(_) => return reply(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time"),
            Ok(Err(err)) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return too_large(hooks.max_body);
            }
            Ok(Err(err)) => return reply(StatusCode::BAD_REQUEST, format!("cannot read the body: {err}")),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
    if let Err(refused) = verify::authenticate(delivery.provider, &header, &body, &secret) {
        warn!(%repo, %peer, provider = delivery.provider.as_str(), delivery = %delivery.id, "webhook refused: {refused}");
        return reply(StatusCode::UNAUTHORIZED, refused.to_string());
    }
    let observation = match payload::parse(delivery.provider, &delivery.event, &body) {
        Err(err) => return reply(StatusCode::BAD_REQUEST, format!("cannot read the {} event: {err}", delivery.event)),
        Ok(Event::Ignored(why)) => return reply(StatusCode::OK, format!("nothing to start: {why}")),
        Ok(Event::Push { branch, before, after }) => Observation::Push { branch, before, after },
        Ok(Event::Tag { tag, commit }) => Observation::Tag { tag, commit },
        Ok(Event::PullRequest { number, head_commit, head_branch, target_branch }) => {
            Observation::PullRequest { number, head_commit, head_branch, target_branch }
        }
    };
    match triggers::enqueue(hooks.store.as_ref(), &repo, &delivery.id, observation).await {
        Ok(Enqueued::New) => {
            info!(%repo, provider = delivery.provider.as_str(), delivery = %delivery.id, event = %delivery.event, "webhook accepted");
            // The apps of the same repository fetch it now, not at their
            // next poll.
            if let Err(e) = refresh_apps(hooks.store.as_ref(), &repo, &delivery.id).await {
                warn!(%repo, error = %e, "cannot ask the repository's apps to fetch it");
            }
            reply(StatusCode::ACCEPTED, format!("accepted delivery {}", delivery.id))
        }
        Ok(Enqueued::Replayed) => {
            info!(%repo, delivery = %delivery.id, "webhook replayed; nothing started");
            reply(StatusCode::OK, format!("delivery {} was received before; nothing started", delivery.id))
        }
        Err(TriggersError::Invalid(why)) => reply(StatusCode::BAD_REQUEST, why),
        Err(err @ TriggersError::Full(_)) => reply(StatusCode::TOO_MANY_REQUESTS, err.to_string()),
        Err(TriggersError::NotFound(_)) => reply(StatusCode::NOT_FOUND, format!("no repository {repo} is registered")),
        Err(err) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("cannot queue the delivery: {err}")),
    }
}

/// Asks every app of registered repository `repo`'s URL to fetch it.
async fn refresh_apps(store: &dyn crate::store::Store, repo: &str, delivery: &str) -> Result<(), String> {
    let Some((record, _)) = triggers::repo(store, repo).await.map_err(|e| e.to_string())? else { return Ok(()) };
    let by = format!("webhook {delivery}");
    let n = crate::apps::records::refresh_repo(store, &record.url, &by, drover_telemetry::trace::now_ms())
        .await
        .map_err(|e| e.to_string())?;
    if n > 0 {
        info!(%repo, apps = n, "the repository's apps fetch it now");
    }
    Ok(())
}

fn too_large(max: usize) -> Response<Full<Bytes>> {
    reply(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is over the limit of {max} bytes (the coordinator's --webhook-max-body)"),
    )
}
