//! The delivery pages: environments and what each node serves, rollouts
//! (a rollout's nodes, steps, gates and analysis, refreshed live), apps
//! (sync status, health, drift, a side-by-side diff of desired and actual,
//! history), and their forms: promote, pause, resume, abort, approve or
//! reject a gate, roll back a service, sync, pin and unpin an app. As in
//! `pages`, each reads or acts through the API's own handler. This module
//! keeps the environments' page and what the others share; `rollouts` and
//! `apps` hold theirs.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use drover_proto::v1 as pb;
use drover_proto::v1::control_service_server::ControlService;
use serde::Deserialize;

use super::pages::chrome;
use super::views::{Chrome, RenderPage, when};
use super::{Problem, Ui, html};

mod apps;
mod rollouts;

pub use apps::{app, app_act, apps};
pub use rollouts::{act, rollback, rollout, rollouts};

fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

#[derive(Debug, Deserialize)]
pub struct Fragment {
    #[serde(default)]
    fragment: Option<String>,
    #[serde(default)]
    done: String,
}

fn flash(done: &str) -> &'static str {
    match done {
        "promote" => "Promoted.",
        "pause" => "Paused.",
        "resume" => "Resumed.",
        "abort" => "Aborting: the nodes go back.",
        "approve" => "Approved.",
        "reject" => "Rejected.",
        "rollback" => "Rolling back.",
        "sync" => "Sync asked for.",
        "pin" => "Pinned.",
        "unpin" => "Unpinned: the app follows its revision again.",
        _ => "",
    }
}

pub struct EnvRow {
    pub name: String,
    pub selector: String,
    pub nodes: String,
    pub closed: String,
    pub approval: String,
}

pub struct ServiceRow {
    pub environment: String,
    pub service: String,
    pub node: String,
    pub version: String,
    pub sha: String,
    pub health: String,
    pub healthy: bool,
    pub run: String,
    pub commit: String,
    pub rollout: u64,
    pub since: String,
}

#[derive(Template)]
#[template(path = "envs.html")]
pub struct EnvsPage {
    pub chrome: Chrome,
    pub envs: Vec<EnvRow>,
    pub services: Vec<ServiceRow>,
    pub note: String,
}

/// `GET /envs`: environments and, per node, what each service runs.
pub async fn envs(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    // The environments' nodes are the leader's to tell; a follower's
    // refusal leaves the services, which any coordinator reads.
    let (envs, note) = match ui.api.control.list_environments(who.request(pb::ListEnvironmentsRequest {})).await {
        Ok(listed) => (listed.into_inner().environments, String::new()),
        Err(status) => (Vec::new(), format!("Environments: {}", status.message())),
    };
    let services = ui
        .api
        .control
        .list_services(who.request(pb::ListServicesRequest { environment: String::new() }))
        .await
        .map_err(Problem::from_status)?
        .into_inner()
        .services;
    let envs = envs
        .iter()
        .map(|e| {
            let mut selector: Vec<String> = e.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            selector.sort();
            EnvRow {
                name: e.name.clone(),
                selector: selector.join(", "),
                nodes: format!("{} of {} connected", e.nodes_connected, e.nodes.len()),
                closed: e.closed.clone(),
                approval: if e.require_approval { e.approvers.join(", ") } else { String::new() },
            }
        })
        .collect();
    let services = services
        .iter()
        .map(|s| ServiceRow {
            environment: s.environment.clone(),
            service: s.service.clone(),
            node: s.node.clone(),
            version: s.version.clone(),
            sha: short(&s.sha256),
            health: match (s.healthy, s.health_message.is_empty()) {
                (true, _) => "healthy".into(),
                (false, true) => "unhealthy".into(),
                (false, false) => format!("unhealthy: {}", s.health_message),
            },
            healthy: s.healthy,
            run: s.run_id.clone(),
            commit: short(&s.commit),
            rollout: s.rollout,
            since: when(s.since_ms),
        })
        .collect();
    let page = EnvsPage { chrome: chrome(&ui, &who, "envs"), envs, services, note };
    Ok(html(page.render_page()))
}
