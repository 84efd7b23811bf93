//! The rollout pages: the list, and a rollout's page (its nodes by wave,
//! steps, gates and analysis charts, the live part fetched again every
//! second), with its forms: promote, pause, resume, abort, approve or
//! reject a gate, and a service's rollback.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use drover_proto::v1 as pb;
use serde::Deserialize;

use drover_proto::v1::control_service_server::ControlService;

use super::super::chart::{self, Point};
use super::super::pages::chrome;
use super::super::views::{Chrome, Permit, RenderPage, duration, segment, when};
use super::super::{Problem, Ui, html, redirect};
use super::{Fragment, flash, short};
use crate::core::authz::Action;

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
