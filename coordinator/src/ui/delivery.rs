//! The delivery pages: environments and what each node serves, rollouts
//! (a rollout's nodes, steps, gates and analysis, refreshed live), apps
//! (sync status, health, drift, a side-by-side diff of desired and actual,
//! history), and their forms: promote, pause, resume, abort, approve or
//! reject a gate, roll back a service, sync, pin and unpin an app. As in
//! `pages`, each reads or acts through the API's own handler.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use drover_proto::v1 as pb;
use drover_proto::v1::app_service_server::AppService;
use drover_proto::v1::control_service_server::ControlService;
use serde::Deserialize;

use super::chart::{self, Point};
use super::pages::chrome;
use super::views::{Chrome, Permit, RenderPage, duration, segment, when};
use super::{Problem, Ui, html, redirect};
use crate::core::authz::Action;

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

pub struct RolloutRow {
    pub id: u64,
    pub environment: String,
    pub service: String,
    pub phase: String,
    pub strategy: String,
    pub version: String,
    pub progress: String,
    pub by: String,
    pub created: String,
}

impl RolloutRow {
    fn of(r: &pb::Rollout) -> RolloutRow {
        RolloutRow {
            id: r.id,
            environment: r.environment.clone(),
            service: r.service.clone(),
            phase: r.phase.clone(),
            strategy: r.strategy.clone(),
            version: r.version.clone(),
            progress: if r.steps > 0 {
                format!("step {} of {}", (r.step + 1).min(r.steps), r.steps)
            } else {
                "-".into()
            },
            by: if r.started_by.is_empty() { r.job.clone() } else { r.started_by.clone() },
            created: when(r.created_ms),
        }
    }
}

#[derive(Template)]
#[template(path = "rollouts.html")]
pub struct RolloutsPage {
    pub chrome: Chrome,
    pub rollouts: Vec<RolloutRow>,
}

#[derive(Template)]
#[template(path = "rollouts_rows.html")]
pub struct RolloutsRows {
    pub rollouts: Vec<RolloutRow>,
}

/// `GET /rollouts`: the newest rollouts; `fragment=1`: only the rows.
pub async fn rollouts(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<Fragment>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let req = pb::ListRolloutsRequest { environment: String::new(), service: String::new(), limit: 100 };
    let listed = ui.api.control.list_rollouts(who.request(req)).await.map_err(Problem::from_status)?.into_inner();
    let rollouts = listed.rollouts.iter().map(RolloutRow::of).collect();
    if q.fragment.is_some() {
        return Ok(html(RolloutsRows { rollouts }.render_page()));
    }
    Ok(html(RolloutsPage { chrome: chrome(&ui, &who, "rollouts"), rollouts }.render_page()))
}

pub struct NodeRow {
    pub name: String,
    pub state: String,
    pub reason: String,
    pub wave: String,
    pub environment: String,
    pub rollback_to: String,
}

pub struct GateRow {
    pub name: String,
    pub at: String,
    pub kind: String,
    pub state: String,
    pub by: String,
    pub comment: String,
    pub approvers: String,
}

pub struct MetricChart {
    pub metric: String,
    pub svg: String,
    pub last: String,
}

/// What changes while a rollout runs: the part of its page the script
/// fetches again every second.
#[derive(Template)]
#[template(path = "rollout_live.html")]
pub struct RolloutLive {
    pub phase: String,
    /// "took 40s", or "running for 12s".
    pub took: String,
    pub finished: bool,
    pub message: String,
    pub progress: String,
    pub hold: String,
    pub waves: String,
    pub nodes: Vec<NodeRow>,
    pub gates: Vec<GateRow>,
    pub charts: Vec<MetricChart>,
    pub analysing: bool,
}

#[derive(Template)]
#[template(path = "rollout.html")]
pub struct RolloutPage {
    pub chrome: Chrome,
    pub id: u64,
    pub environment: String,
    pub service: String,
    pub strategy: String,
    pub version: String,
    pub sha: String,
    pub run: String,
    pub job: String,
    pub commit: String,
    pub by: String,
    pub created: String,
    pub live: String,
    pub finished: bool,
    pub waiting_gate: String,
    /// Where the service's rollback form posts.
    pub rollback_action: String,
    pub deploy: Permit,
    pub flash: String,
}

fn live(r: &pb::Rollout, now_ms: u64) -> RolloutLive {
    let finished = matches!(r.phase.as_str(), "succeeded" | "rolled_back" | "aborted" | "failed");
    let since = if r.started_ms > 0 { r.started_ms } else { r.created_ms };
    let took = if finished {
        format!("took {}", duration(r.finished_ms.max(since).saturating_sub(since).max(1)))
    } else {
        format!("running for {}", duration(now_ms.saturating_sub(since).max(1)))
    };
    let mut metrics: Vec<&str> = r.measurements.iter().map(|m| m.metric.as_str()).collect();
    metrics.dedup();
    metrics.sort();
    metrics.dedup();
    let charts = metrics
        .iter()
        .map(|metric| {
            let taken: Vec<&pb::RolloutMeasurement> = r.measurements.iter().filter(|m| m.metric == *metric).collect();
            let points: Vec<Point> = taken
                .iter()
                .map(|m| Point { at_ms: m.at_ms, value: m.value.parse().ok(), outcome: m.outcome.clone() })
                .collect();
            let last = taken
                .last()
                .map(|m| {
                    let value = if m.value.is_empty() { m.message.clone() } else { m.value.clone() };
                    format!("{value} ({}) at {}", m.outcome, when(m.at_ms))
                })
                .unwrap_or_default();
            MetricChart { metric: (*metric).to_owned(), svg: chart::svg(metric, &points), last }
        })
        .collect();
    RolloutLive {
        phase: r.phase.clone(),
        took,
        finished,
        message: r.message.clone(),
        progress: if r.steps > 0 { format!("step {} of {}", (r.step + 1).min(r.steps), r.steps) } else { "-".into() },
        hold: match r.hold.as_str() {
            "promote" => "The canary holds until someone promotes it.".into(),
            "until" => format!("Pausing until {}.", when(r.hold_until_ms)),
            _ => String::new(),
        },
        waves: if r.waves.is_empty() {
            String::new()
        } else {
            format!("wave {} of {}: {}", r.wave + 1, r.waves.len(), r.waves.join(" → "))
        },
        nodes: r
            .nodes
            .iter()
            .map(|n| NodeRow {
                name: n.name.clone(),
                state: n.state.clone(),
                reason: n.reason.clone(),
                wave: n.wave.clone(),
                environment: n.environment.clone(),
                rollback_to: n.rollback_to.clone(),
            })
            .collect(),
        gates: r
            .gates
            .iter()
            .map(|g| GateRow {
                name: g.name.clone(),
                at: g.at.clone(),
                kind: g.kind.clone(),
                state: g.state.clone(),
                by: g.by.clone(),
                comment: g.comment.clone(),
                approvers: g.approvers.join(", "),
            })
            .collect(),
        charts,
        analysing: r.analysing || r.analysing_background,
    }
}

/// `GET /rollouts/{id}`; `fragment=1`: only what changes.
pub async fn rollout(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Fragment>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let id: u64 = id.parse().map_err(|_| {
        Problem::new(StatusCode::NOT_FOUND, "Not found", format!("{id:?} is not a rollout's number (see /rollouts)"))
    })?;
    let r = ui
        .api
        .control
        .get_rollout(who.request(pb::GetRolloutRequest { id }))
        .await
        .map_err(Problem::from_status)?
        .into_inner();
    let now = drover_telemetry::trace::now_ms();
    let live = live(&r, now);
    if q.fragment.is_some() {
        return Ok(html(live.render_page()));
    }
    let finished = live.finished;
    let page = RolloutPage {
        chrome: chrome(&ui, &who, "rollout"),
        id,
        environment: r.environment.clone(),
        service: r.service.clone(),
        strategy: r.strategy.clone(),
        version: r.version.clone(),
        sha: short(&r.sha256),
        run: r.run_id.clone(),
        job: r.job.clone(),
        commit: short(&r.commit),
        by: r.started_by.clone(),
        created: when(r.created_ms),
        live: live.render_page(),
        finished,
        rollback_action: format!("/envs/{}/services/{}/rollback", segment(&r.environment), segment(&r.service)),
        waiting_gate: r.gates.iter().find(|g| g.state == "waiting").map(|g| g.name.clone()).unwrap_or_default(),
        deploy: Permit::of(&who.caller, Action::Deploy, "Deploying (promote, pause, abort, roll back)"),
        flash: flash(&q.done).into(),
    };
    Ok(html(page.render_page()))
}

#[derive(Debug, Deserialize)]
pub struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    full: Option<String>,
    #[serde(default)]
    gate: String,
    #[serde(default)]
    comment: String,
}

/// `POST /rollouts/{id}/act`: promote, pause, resume, abort, approve or
/// reject, as `drover rollout VERB`.
pub async fn act(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Form(form): Form<ActForm>,
) -> Result<Response, Problem> {
    let who = ui.acting(&headers, &form.csrf).await?;
    if !matches!(form.verb.as_str(), "promote" | "pause" | "resume" | "abort" | "approve" | "reject") {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Not valid",
            format!(
                "{:?} is not something a rollout does: promote, pause, resume, abort, approve or reject",
                form.verb
            ),
        ));
    }
    let req = pb::ActOnRolloutRequest {
        id,
        verb: form.verb.clone(),
        full: form.full.is_some(),
        gate: form.gate,
        comment: form.comment,
    };
    ui.api.control.act_on_rollout(who.request(req)).await.map_err(Problem::from_status)?;
    Ok(redirect(&format!("/rollouts/{id}?done={}", form.verb)))
}

#[derive(Debug, Deserialize)]
pub struct RollbackForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to_version: String,
}

/// `POST /envs/{env}/services/{service}/rollback`: as `drover rollback`.
pub async fn rollback(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((environment, service)): Path<(String, String)>,
    Form(form): Form<RollbackForm>,
) -> Result<Response, Problem> {
    let who = ui.acting(&headers, &form.csrf).await?;
    let req = pb::RollbackServiceRequest {
        environment,
        service,
        to_version: form.to_version.trim().to_owned(),
        staged: false,
        force: false,
        reason: String::new(),
    };
    let started = ui.api.control.rollback_service(who.request(req)).await.map_err(Problem::from_status)?.into_inner();
    Ok(redirect(&format!("/rollouts/{}?done=rollback", started.id)))
}

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
