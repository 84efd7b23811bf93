//! Actions go to the leader. Any coordinator serves the UI's pages (reads
//! work everywhere), but the API refuses actions on a follower; so a form
//! posted to a follower's UI is relayed as it is (its path, cookie, CSRF
//! token and body) to the leader's UI, named in the leader's record
//! (`LeaderInfo::ui_url`), and the leader's answer (a redirect to a page,
//! or a refusal) goes back to the browser. Sessions live in the store, so
//! the leader knows the follower's; the browser never leaves the follower.
//!
//! Logging out is the follower's own business (it only deletes the
//! session). When the leader serves no UI, or no coordinator leads, the
//! form is handled here and the API's refusal names the leader.

use std::sync::Arc;

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

/// The middleware: relays a follower's forms to the leader's UI.
pub async fn to_leader(State(ui): State<Arc<Ui>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || req.uri().path() == "/logout" {
        return next.run(req).await;
    }
    let Some(base) = leader_ui(&ui) else { return next.run(req).await };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let cookie = req.headers().get(header::COOKIE).cloned();
    let kind = req.headers().get(header::CONTENT_TYPE).cloned();
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
    let mut relay = ui.http.post(format!("{base}{path}")).body(body);
    if let Some(cookie) = cookie {
        relay = relay.header(header::COOKIE, cookie);
    }
    if let Some(kind) = kind {
        relay = relay.header(header::CONTENT_TYPE, kind);
    }
    let answer = match relay.send().await {
        Ok(answer) => answer,
        Err(e) => {
            warn!(leader = %base, error = %e, "cannot relay a web UI action to the leader");
            return Problem::new(
                StatusCode::BAD_GATEWAY,
                "Leader unreachable",
                format!("This coordinator follows; actions go to the leader's UI at {base}, which did not answer: {e}"),
            )
            .into_response();
        }
    };
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
