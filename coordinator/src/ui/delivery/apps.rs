//! The app pages: the list, and an app's page (sync, health, drift, a
//! side-by-side diff of desired and actual, history; the live part fetched
//! again every two seconds), with its forms: sync, pin and unpin.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use drover_proto::v1 as pb;
use serde::Deserialize;

use drover_proto::v1::app_service_server::AppService;

use super::super::pages::chrome;
use super::super::views::{Chrome, Permit, RenderPage, segment, when};
use super::super::{Problem, Ui, html, redirect};
use super::{Fragment, flash, short};
use crate::core::authz::Action;

pub struct AppRow {
    pub name: String,
    pub environment: String,
    pub sync: String,
    pub health: String,
    pub synced: String,
    pub wanted: String,
    pub pinned: String,
    pub drift: String,
    pub error: String,
}

impl AppRow {
    fn of(a: &pb::App) -> AppRow {
        AppRow {
            name: a.name.clone(),
            environment: a.environment.clone(),
            sync: a.sync_status.clone(),
            health: a.health.clone(),
            synced: short(&a.synced_commit),
            wanted: short(&a.wanted_commit),
            pinned: short(&a.pinned_commit),
            drift: a.drift.join("; "),
            error: a.last_error.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "apps.html")]
pub struct AppsPage {
    pub chrome: Chrome,
    pub apps: Vec<AppRow>,
}

#[derive(Template)]
#[template(path = "apps_rows.html")]
pub struct AppsRows {
    pub apps: Vec<AppRow>,
}

/// `GET /apps`; `fragment=1`: only the rows.
pub async fn apps(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<Fragment>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let listed = ui.api.apps.list_apps(who.request(pb::ListAppsRequest {})).await.map_err(Problem::from_status)?;
    let apps = listed.into_inner().apps.iter().map(AppRow::of).collect();
    if q.fragment.is_some() {
        return Ok(html(AppsRows { apps }.render_page()));
    }
    Ok(html(AppsPage { chrome: chrome(&ui, &who, "apps"), apps }.render_page()))
}

/// A service's node in the side-by-side diff.
pub struct DiffRow {
    pub service: String,
    pub file: String,
    pub node: String,
    pub status: String,
    pub wanted: String,
    pub running: String,
}

/// A field of a service's definition that differs: what the file wants,
/// what runs.
pub struct FieldRow {
    pub service: String,
    pub wanted: String,
    pub running: String,
}

pub struct SyncRow {
    pub id: u64,
    pub commit: String,
    pub by: String,
    pub started: String,
    pub outcome: String,
    pub message: String,
    pub changes: String,
}

#[derive(Template)]
#[template(path = "app_live.html")]
pub struct AppLive {
    pub app: AppRow,
    pub drift: Vec<String>,
    pub drift_since: String,
    pub blocked: String,
    pub syncing: u64,
    pub diff_commit: String,
    pub diff_error: String,
    pub diff: Vec<DiffRow>,
    pub fields: Vec<FieldRow>,
    pub history: Vec<SyncRow>,
}

#[derive(Template)]
#[template(path = "app.html")]
pub struct AppPage {
    pub chrome: Chrome,
    pub name: String,
    /// `/apps/NAME`, escaped: where its forms post.
    pub base: String,
    pub repo: String,
    pub path: String,
    pub revision: String,
    pub modes: String,
    pub pinned: String,
    pub live: String,
    pub deploy: Permit,
    pub flash: String,
}

/// `GET /apps/{name}`; `fragment=1`: only what changes.
pub async fn app(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<Fragment>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let a = ui
        .api
        .apps
        .get_app(who.request(pb::GetAppRequest { name: name.clone() }))
        .await
        .map_err(Problem::from_status)?
        .into_inner();
    let diff = ui
        .api
        .apps
        .diff_app(who.request(pb::DiffAppRequest { name: name.clone(), revision: String::new() }))
        .await
        .map(|d| d.into_inner())
        .unwrap_or_else(|status| pb::AppDiff { error: status.message().to_owned(), ..Default::default() });
    let history = ui
        .api
        .apps
        .app_history(who.request(pb::AppHistoryRequest { name: name.clone() }))
        .await
        .map_err(Problem::from_status)?
        .into_inner()
        .syncs;
    let mut rows = Vec::new();
    let mut fields = Vec::new();
    for s in &diff.services {
        for n in &s.nodes {
            rows.push(DiffRow {
                service: s.service.clone(),
                file: s.file.clone(),
                node: n.node.clone(),
                status: n.status.clone(),
                wanted: if n.wanted.is_empty() { "-".into() } else { n.wanted.clone() },
                running: match (n.running.is_empty(), n.healthy) {
                    (true, _) => "nothing".into(),
                    (false, true) => n.running.clone(),
                    (false, false) => format!("{} (unhealthy)", n.running),
                },
            });
        }
        if s.nodes.is_empty() {
            rows.push(DiffRow {
                service: s.service.clone(),
                file: s.file.clone(),
                node: "-".into(),
                status: s.status.clone(),
                wanted: if s.version.is_empty() { "-".into() } else { s.version.clone() },
                running: "-".into(),
            });
        }
        for f in &s.fields {
            let (field, change) = f.split_once(": ").unwrap_or(("", f.as_str()));
            let (running, wanted) = change.split_once(" -> ").unwrap_or((change, ""));
            fields.push(FieldRow {
                service: s.service.clone(),
                wanted: format!("{field}: {wanted}"),
                running: format!("{field}: {running}"),
            });
        }
    }
    let live = AppLive {
        app: AppRow::of(&a),
        drift: a.drift.clone(),
        drift_since: if a.drift_since_ms > 0 { when(a.drift_since_ms) } else { String::new() },
        blocked: a.blocked.clone(),
        syncing: a.syncing,
        diff_commit: short(&diff.commit),
        diff_error: diff.error.clone(),
        diff: rows,
        fields,
        history: history
            .iter()
            .rev()
            .take(50)
            .map(|s| SyncRow {
                id: s.id,
                commit: short(&s.commit),
                by: s.started_by.clone(),
                started: when(s.started_ms),
                outcome: s.outcome.clone(),
                message: s.message.clone(),
                changes: s.changes.join("; "),
            })
            .collect(),
    };
    if q.fragment.is_some() {
        return Ok(html(live.render_page()));
    }
    let modes =
        [(a.auto_sync, "auto-sync"), (a.self_heal, "self-heal"), (a.prune, "prune"), (a.detect_only, "detect-only")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, m)| *m)
            .collect::<Vec<_>>()
            .join(", ");
    let page = AppPage {
        chrome: chrome(&ui, &who, "app"),
        repo: a.repo.clone(),
        path: a.path.clone(),
        revision: if a.revision.is_empty() { "its default branch".into() } else { a.revision.clone() },
        modes: if modes.is_empty() { "manual sync".into() } else { modes },
        pinned: if a.pinned_commit.is_empty() {
            String::new()
        } else {
            format!("pinned to {} by {} at {}", short(&a.pinned_commit), a.pinned_by, when(a.pinned_ms))
        },
        live: live.render_page(),
        deploy: Permit::of(&who.caller, Action::Deploy, "Deploying (sync, pin, unpin)"),
        flash: flash(&q.done).into(),
        base: format!("/apps/{}", segment(&name)),
        name,
    };
    Ok(html(page.render_page()))
}

#[derive(Debug, Deserialize)]
pub struct AppForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
}

/// `POST /apps/{name}/{verb}`: sync, pin (to a commit, tag or branch) or
/// unpin, as `drover app sync|rollback|unpin`.
pub async fn app_act(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((name, verb)): Path<(String, String)>,
    Form(form): Form<AppForm>,
) -> Result<Response, Problem> {
    let who = ui.acting(&headers, &form.csrf).await?;
    let apps = &ui.api.apps;
    let done = match verb.as_str() {
        "sync" => {
            let req = pb::SyncAppRequest { name: name.clone(), dry_run: false, revision: String::new() };
            apps.sync_app(who.request(req)).await.map(|_| ())
        }
        "pin" => {
            let req = pb::RollbackAppRequest { name: name.clone(), to: form.to.trim().to_owned() };
            apps.rollback_app(who.request(req)).await.map(|_| ())
        }
        "unpin" => apps.unpin_app(who.request(pb::UnpinAppRequest { name: name.clone() })).await.map(|_| ()),
        other => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("an app may sync, pin or unpin, not {other:?}"),
            ));
        }
    };
    done.map_err(Problem::from_status)?;
    Ok(redirect(&format!("/apps/{}?done={verb}", segment(&name))))
}
