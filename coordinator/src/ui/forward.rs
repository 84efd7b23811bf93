//! Actions go to the leader. Any coordinator serves the UI's pages (reads
//! work everywhere), but the API refuses actions on a follower; so a form
//! posted to a follower's UI is relayed as it is (its path, cookie, CSRF
//! token and body) to the leader's UI, named in the leader's record
//! (`LeaderInfo::ui_url`), and the leader's answer (a redirect to a page,
//! or a refusal) goes back to the browser. Sessions live in the store, so
//! the leader knows the follower's; the browser never leaves the follower.
//!
//! The pages whose content only the leader has ([`LEADER_PAGES`]: the
//! agents, the environments' nodes) are fetched from the leader's UI the
//! same way; when it does not answer within [`PAGE_TIMEOUT`], the follower
//! serves the page, which says who leads.
//!
//! Logging out is the follower's own business (it only deletes the
//! session). When the leader serves no UI, or no coordinator leads, the
//! form is handled here and the API's refusal names the leader.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::{Problem, Ui};
use crate::leader::Role;

/// The largest form relayed.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// The leader's UI, when this coordinator follows one that serves a UI.
fn leader_ui(ui: &Ui) -> Option<String> {
    match &*ui.role.borrow() {
        Role::Follower { leader: Some(leader) } => leader.ui_url.clone(),
        _ => None,
    }
}

/// Pages only the leader can fill in (its fleet's agents, its
/// environments' nodes): a follower shows the leader's.
pub const LEADER_PAGES: [&str; 2] = ["/agents", "/envs"];

/// How long a follower waits for the leader's page before it serves its
/// own (which says who leads): a frozen leader does not hang the page.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The middleware: relays a follower's forms, and its pages in
/// [`LEADER_PAGES`], to the leader's UI.
pub async fn to_leader(State(ui): State<Arc<Ui>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let form = req.method() == Method::POST && path != "/logout";
    let page = req.method() == Method::GET && LEADER_PAGES.contains(&path);
    if !form && !page {
        return next.run(req).await;
    }
    let Some(base) = leader_ui(&ui) else { return next.run(req).await };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut relay = ui.http.request(req.method().clone(), format!("{base}{path}"));
    for name in [header::COOKIE, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = req.headers().get(&name) {
            relay = relay.header(name, value.clone());
        }
    }
    if page {
        return match relay.timeout(PAGE_TIMEOUT).send().await {
            Ok(answer) => relayed(answer).await,
            // Served here, then: the page says who leads.
            Err(e) => {
                warn!(leader = %base, error = %e, "cannot fetch a web UI page from the leader");
                next.run(req).await
            }
        };
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Not valid",
                format!("a form is at most {MAX_FORM_BYTES} bytes"),
            )
            .into_response();
        }
    };
    match relay.body(body).send().await {
        Ok(answer) => relayed(answer).await,
        Err(e) => {
            warn!(leader = %base, error = %e, "cannot relay a web UI action to the leader");
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "Leader unreachable",
                format!("This coordinator follows; actions go to the leader's UI at {base}, which did not answer: {e}"),
            )
            .into_response()
        }
    }
}

/// The leader's answer, for the browser: its status, body, and the headers
/// that matter to it (where to go, what it is, the session's cookie).
async fn relayed(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let keep: Vec<(header::HeaderName, HeaderValue)> = [header::LOCATION, header::CONTENT_TYPE, header::SET_COOKIE]
        .into_iter()
        .filter_map(|name| answer.headers().get(&name).cloned().map(|v| (name, v)))
        .collect();
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in keep {
        response.headers_mut().insert(name, value);
    }
    response
}
