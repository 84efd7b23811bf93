//! The web UI (`--ui-listen`): server-rendered pages over HTTPS, with a
//! little JavaScript for what changes live (the run's graph, a log, lists).
//!
//! - **Who.** A browser has no client certificate of ours, so the listener
//!   asks for none; a page needs a session instead ([`session`]), which a
//!   single-use link from `drover ui` opens. Every request reads its session
//!   from the store and looks its holder up in the gate, as the API does a
//!   certificate.
//! - **Same reads, same rules.** Pages call the API's own handlers in
//!   process ([`Api`]): the request carries the session's holder
//!   ([`crate::api::OnBehalf`]) and its caller, so what a page shows, who
//!   may see it and every refusal are the API's, with no second copy. An
//!   action (cancel, approve, …) is the same call the CLI makes; a
//!   follower relays it to the leader's UI (`forward`).
//! - **Forms.** Every POST carries the session's CSRF token
//!   ([`session::csrf_matches`]); the cookie is `SameSite=Strict` besides.
//! - **Assets** (`assets/`: CSS and three small scripts) and the templates
//!   (`coordinator/templates/`, askama, checked at compile time and escaping by
//!   default) are compiled into the binary. Every answer forbids framing,
//!   sniffing and caching, and sets a Content-Security-Policy that allows
//!   only this origin's scripts and styles.
//!
//! Pages are `pages` (runs, a run, agents, audit), `delivery`
//! (environments and services, rollouts, apps; `chart` draws a rollout's
//! analysis as SVG on the server), `live` (the streams
//! the scripts follow: a run's events and a job's log as Server-Sent
//! Events, and the raw log), `ansi` (a log's bytes as lines of styled text,
//! through the CLI's terminal rule) and `views` (the templates and what
//! they show).

pub mod ansi;
pub mod chart;
pub mod delivery;
pub mod forward;
pub mod live;
pub mod pages;
pub mod session;
pub mod views;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::api::apps::AppApi;
use crate::api::control::ControlApi;
use crate::api::identity::IdentityApi;
use crate::core::authz::Caller;
use crate::identity::Gate;
use crate::leader::Role;
use crate::store::Store;
use drover_pki::peer::{Peer, Presented};
use session::Session;
use views::RenderPage;

/// The most connections served at once; more are closed at once. Live
/// pages hold one each (over HTTP/2, one per browser).
pub const MAX_CONNECTIONS: usize = 512;
/// How long a request's head may take to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the UI is and how long its sessions last (`--ui-listen`,
/// `--ui-url`, `--ui-session-ttl`); `IdentityService.CreateUiLogin` makes
/// links to `url`.
#[derive(Debug, Clone)]
pub struct Links {
    /// `https://HOST:PORT`, without a trailing slash.
    pub url: String,
    pub session_ttl: Duration,
}

/// The API's handlers the pages call, shared with the gRPC server.
pub struct Api {
    pub control: Arc<ControlApi>,
    pub identity: IdentityApi,
    pub apps: Arc<AppApi>,
}

/// What the UI's handlers share.
pub struct Ui {
    pub store: Arc<dyn Store>,
    pub gate: Arc<Gate>,
    pub api: Api,
    pub role: watch::Receiver<Role>,
    pub links: Links,
    /// Relays a follower's forms to the leader's UI (`forward`),
    /// trusting the cluster's CA and the system's.
    pub http: reqwest::Client,
    /// Spent or unknown login links are audited once a minute per address
    /// (with the count left out), so nobody can flood the audit log.
    pub refusals: crate::audit::Throttle,
}

/// The header the listener puts on every request it serves with the
/// client's address (any such header a client sent is dropped first), for
/// the audit log.
const PEER: &str = "x-drover-peer";

/// The client's address, as the listener recorded it.
fn peer_of(headers: &HeaderMap) -> Option<SocketAddr> {
    headers.get(PEER)?.to_str().ok()?.parse().ok()
}

/// A request's session and who it is now.
#[derive(Debug, Clone)]
pub struct Who {
    pub cookie: String,
    pub session: Session,
    pub presented: Presented,
    pub caller: Caller,
    /// The browser's address.
    pub peer: Option<SocketAddr>,
}

impl Who {
    /// A request to the API's handlers on this session's behalf.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.extensions_mut().insert(self.caller.clone());
        req.extensions_mut().insert(crate::api::OnBehalf(self.presented.clone()));
        // The API's audit entries name the browser's address.
        let info = tonic::transport::server::TcpConnectInfo { local_addr: None, remote_addr: self.peer };
        req.extensions_mut().insert(info);
        req
    }

    /// "otto · operator", "root · admin", or why the holder may do nothing.
    pub fn label(&self) -> String {
        match &self.caller {
            Caller::Admin(name) => format!("{name} · admin"),
            Caller::User { name, role: Ok(role) } => format!("{name} · {}", role.as_str()),
            Caller::User { name, role: Err(_) } => format!("{name} · no role"),
            other => other.name().to_owned(),
        }
    }
}

/// A refusal or failure, as a page (or plain text for the scripts).
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Problem {
        Problem { status, title, message: message.into() }
    }

    /// The API's refusal, with its words.
    pub fn from_status(status: tonic::Status) -> Problem {
        use tonic::Code;
        let (code, title) = match status.code() {
            Code::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "Not allowed"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "Not logged in"),
            Code::InvalidArgument => (StatusCode::BAD_REQUEST, "Not valid"),
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                (StatusCode::CONFLICT, "Not possible now")
            }
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "Too much at once"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Failed"),
        };
        Problem::new(code, title, status.message())
    }

    fn unauthenticated() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "Not logged in",
            "This page needs a session: run `drover ui` and open the link it prints (each link works once).",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let page =
            views::ErrorPage { chrome: views::Chrome::anonymous("error"), title: self.title, message: &self.message };
        let mut response = html(page.render_page());
        *response.status_mut() = self.status;
        response
    }
}

/// An HTML page.
pub fn html(body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

/// What every answer says: no framing, no sniffing, no caching of what a
/// session saw, and only this origin's scripts and styles.
fn secure_headers(headers: &mut HeaderMap) {
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
}

impl Ui {
    /// The request's session and caller, or why there is none.
    pub async fn who(&self, headers: &HeaderMap) -> Result<Who, Problem> {
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| session::cookie(h, session::COOKIE))
            .ok_or_else(Problem::unauthenticated)?
            .to_owned();
        let now = drover_telemetry::trace::now_ms() as i64;
        let session = session::find(self.store.as_ref(), &cookie, now)
            .await
            .map_err(|e| Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", e.to_string()))?
            .ok_or_else(Problem::unauthenticated)?;
        let holder = &session.holder;
        let peer = if holder.admin { Peer::Admin(holder.name.clone()) } else { Peer::User(holder.name.clone()) };
        let presented = Presented {
            peer,
            serial: holder.serial.clone(),
            not_before_ms: 0,
            not_after_ms: session.expires_ms,
            sans: 0,
            issuer: Vec::new(),
        };
        let caller = self.gate.caller(&presented);
        Ok(Who { cookie, session, presented, caller, peer: peer_of(headers) })
    }

    /// [`Ui::who`] for a form: its CSRF token must be the session's.
    pub async fn acting(&self, headers: &HeaderMap, csrf: &str) -> Result<Who, Problem> {
        let who = self.who(headers).await?;
        if !session::csrf_matches(&who.session, csrf) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "Not allowed",
                "The form's CSRF token is not this session's, so nothing was done. Reload the page and try again.",
            ));
        }
        Ok(who)
    }
}

/// The UI's routes.
pub fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(|| async { redirect("/runs") }))
        .route("/login/{secret}", get(login))
        .route("/logout", post(pages::logout))
        .route("/assets/{file}", get(asset))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/events", get(live::run_events))
        .route("/runs/{id}/cancel", post(pages::cancel))
        .route("/runs/{id}/rerun", post(pages::rerun))
        .route("/runs/{id}/jobs/{job}/decide", post(pages::decide))
        .route("/runs/{id}/jobs/{job}/log", get(pages::log))
        .route("/runs/{id}/jobs/{job}/log/events", get(live::log_events))
        .route("/runs/{id}/jobs/{job}/log.txt", get(live::raw_log))
        .route("/runs/{id}/jobs/{job}/artifact", get(live::artifact))
        .route("/agents", get(pages::agents))
        .route("/envs", get(delivery::envs))
        .route("/envs/{env}/services/{service}/rollback", post(delivery::rollback))
        .route("/rollouts", get(delivery::rollouts))
        .route("/rollouts/{id}", get(delivery::rollout))
        .route("/rollouts/{id}/act", post(delivery::act))
        .route("/apps", get(delivery::apps))
        .route("/apps/{name}", get(delivery::app))
        .route("/apps/{name}/{verb}", post(delivery::app_act))
        .route("/audit", get(pages::audit))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "Not found", "There is no such page.") })
        .layer(axum::middleware::from_fn_with_state(ui.clone(), forward::to_leader))
        .layer(axum::middleware::map_response(|mut response: Response| async move {
            secure_headers(response.headers_mut());
            response
        }))
        .with_state(ui)
}

/// A 303 to `to`, a path of the UI.
pub fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `GET /login/{secret}`: redeems a link, sets the session's cookie, and
/// goes to the page the link names.
async fn login(State(ui): State<Arc<Ui>>, headers: HeaderMap, Path(secret): Path<String>) -> Response {
    use crate::audit::{Entry, record};
    let now = drover_telemetry::trace::now_ms() as i64;
    let peer = peer_of(&headers);
    match session::redeem(ui.store.as_ref(), &secret, ui.links.session_ttl, now).await {
        Ok((cookie, session, next)) => {
            let holder = &session.holder;
            let actor = format!("{}:{}", if holder.admin { "admin" } else { "user" }, holder.name);
            info!(user = %holder.name, admin = holder.admin, "web UI login");
            record(ui.store.as_ref(), Entry::ok(now, &actor, "ui.login", "").source(peer)).await;
            let mut response = redirect(&next);
            if let Ok(value) = HeaderValue::from_str(&session::set_cookie(&cookie, ui.links.session_ttl)) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(session::SessionError::Store(e)) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", format!("cannot reach the store: {e}"))
                .into_response()
        }
        Err(e) => {
            let address = peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
            let every = crate::audit::REFUSAL_EVERY;
            if let Some(left_out) = ui.refusals.allow(&format!("ui-login:{address}"), std::time::Instant::now(), every)
            {
                let why = format!(
                    "a login link used already, expired or unknown ({left_out} more from this address left out before)"
                );
                let entry = Entry::refused(now, "anonymous", "ui.login", "", &why);
                record(ui.store.as_ref(), entry.source(peer)).await;
            }
            Problem::new(StatusCode::FORBIDDEN, "Login link spent", e.to_string()).into_response()
        }
    }
}

/// The compiled-in assets.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "app.css" => (include_str!("assets/app.css"), "text/css; charset=utf-8"),
        "run.js" => (include_str!("assets/run.js"), "text/javascript; charset=utf-8"),
        "log.js" => (include_str!("assets/log.js"), "text/javascript; charset=utf-8"),
        "list.js" => (include_str!("assets/list.js"), "text/javascript; charset=utf-8"),
        _ => return Problem::new(StatusCode::NOT_FOUND, "Not found", "There is no such asset.").into_response(),
    };
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // Assets change only with the binary; an hour is short enough for an
    // upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

/// Serves the UI on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, tls: TlsAcceptor, ui: Arc<Ui>, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let app = router(ui);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ = &mut shutdown => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "web UI connection refused: {MAX_CONNECTIONS} are being served");
            continue;
        };
        let (tls, app) = (tls.clone(), app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Ok(stream)) = tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await else { return };
            // Every request names its client, for the audit log; a client
            // cannot name itself.
            let peer = HeaderValue::from_str(&peer.to_string()).expect("an address is a header value");
            let app =
                tower::ServiceExt::map_request(app, move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.headers_mut().remove(PEER);
                    req.headers_mut().insert(PEER, peer.clone());
                    req
                });
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            builder.http2().timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(20));
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
