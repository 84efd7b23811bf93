//! The pages and the forms they post: each reads or acts through the API's
//! own handler, on the session's behalf (`Who::request`), and renders the
//! answer, or the API's refusal as a page.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use drover_proto::v1 as pb;
use drover_proto::v1::control_service_server::ControlService;
use drover_proto::v1::identity_service_server::IdentityService;
use serde::Deserialize;

use super::views::{
    self, AgentRow, AgentsPage, AuditPage, AuditRow, Chrome, JobView, LogPage, Permit, RenderPage, RunFacts, RunPage,
    RunRow, RunsPage, RunsRows, segment,
};
use super::{Problem, Ui, Who, html, redirect, session};
use crate::core::authz::{Action, Area};
use crate::leader::Role;

fn now_ms() -> u64 {
    drover_telemetry::trace::now_ms()
}

/// What the page says about this coordinator, when it does not lead.
fn note(ui: &Ui) -> String {
    match &*ui.role.borrow() {
        Role::Leader { .. } => String::new(),
        Role::Follower { leader: Some(l) } => {
            format!("This coordinator follows; actions are refused here and go to the leader, {}.", l.url)
        }
        Role::Follower { leader: None } => "No coordinator leads at the moment; actions wait for an election.".into(),
    }
}

pub(super) fn chrome(ui: &Ui, who: &Who, page: &'static str) -> Chrome {
    Chrome::of(who, page, note(ui))
}

/// `GetRun`, as the session's holder.
async fn get_run(ui: &Ui, who: &Who, id: &str) -> Result<pb::Run, Problem> {
    let req = who.request(pb::GetRunRequest { run_id: id.to_owned() });
    Ok(ui.api.control.get_run(req).await.map_err(Problem::from_status)?.into_inner())
}

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    fragment: Option<String>,
}

/// `GET /runs`: the newest runs, filtered by state and pipeline name;
/// with `fragment=1`, only the rows (the live refresh).
pub async fn runs(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let states = match q.state.as_str() {
        "" => vec![],
        "running" => vec![pb::RunState::Running as i32],
        "succeeded" => vec![pb::RunState::Succeeded as i32],
        "failed" => vec![pb::RunState::Failed as i32],
        "cancelled" => vec![pb::RunState::Cancelled as i32],
        other => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "Not valid",
                format!("{other:?} is not a run state: use running, succeeded, failed or cancelled"),
            ));
        }
    };
    let req = pb::ListRunsRequest { limit: 100, states, name: q.name.clone(), created_after_ms: 0 };
    let listed = ui.api.control.list_runs(who.request(req)).await.map_err(Problem::from_status)?.into_inner();
    let now = now_ms();
    let runs: Vec<RunRow> = listed.runs.iter().map(|r| RunRow::of(r, now)).collect();
    if q.fragment.is_some() {
        return Ok(html(RunsRows { runs }.render_page()));
    }
    let refresh = format!("/runs?state={}&name={}&fragment=1", segment(&q.state), segment(&q.name));
    let page = RunsPage { chrome: chrome(&ui, &who, "runs"), runs, state: q.state, name: q.name, refresh };
    Ok(html(page.render_page()))
}

#[derive(Debug, Deserialize)]
pub struct RunQuery {
    #[serde(default)]
    done: String,
}

/// `GET /runs/{id}`: a run, its graph and jobs, and what the caller may do.
pub async fn run(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let run = get_run(&ui, &who, &id).await?;
    let now = now_ms();
    let row = RunRow::of(&run, now);
    let jobs: Vec<JobView> = run.jobs.iter().map(|j| JobView::of(&run.id, j, now)).collect();
    let data = views::script_json(&serde_json::json!({
        "id": run.id,
        "state": row.state,
        "events": format!("/runs/{}/events", segment(&run.id)),
        "jobs": jobs,
        "now_ms": now,
    }));
    let flash = match q.done.as_str() {
        "cancel" => "Cancelling: the running jobs are being stopped.",
        "approve" => "Approved.",
        "reject" => "Rejected.",
        _ => "",
    };
    let facts = RunFacts {
        id: run.id.clone(),
        name: run.name.clone(),
        state: row.state,
        event: row.event,
        commit: run.commit.clone(),
        repo: run.repo.clone(),
        file: run.file.clone(),
        by: row.by,
        created: row.created,
        took: row.took,
        rerun_of: run.rerun_of.clone(),
    };
    let page = RunPage {
        chrome: chrome(&ui, &who, "run"),
        finished: facts.state != "running",
        run: facts,
        jobs,
        data,
        cancel: Permit::of(&who.caller, Action::Cancel, "Cancelling a run"),
        rerun: Permit::of(&who.caller, Action::Run, "Rerunning"),
        approve: Permit::of(&who.caller, Action::Approve, "Approving or rejecting"),
        flash: flash.into(),
    };
    Ok(html(page.render_page()))
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /runs/{id}/cancel`.
pub async fn cancel(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Problem> {
    let who = ui.acting(&headers, &form.csrf).await?;
    ui.api
        .control
        .cancel_run(who.request(pb::CancelRunRequest { run_id: id.clone() }))
        .await
        .map_err(Problem::from_status)?;
    Ok(redirect(&format!("/runs/{}?done=cancel", segment(&id))))
}

#[derive(Debug, Deserialize)]
pub struct RerunForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    failed: Option<String>,
}

/// `POST /runs/{id}/rerun`: all jobs, or the failed ones and those after.
pub async fn rerun(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RerunForm>,
) -> Result<Response, Problem> {
    let who = ui.acting(&headers, &form.csrf).await?;
    let req = pb::RerunRunRequest { run_id: id, failed: form.failed.is_some(), jobs: Vec::new() };
    let started = ui.api.control.rerun_run(who.request(req)).await.map_err(Problem::from_status)?.into_inner();
    Ok(redirect(&format!("/runs/{}", segment(&started.run_id))))
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    comment: String,
}

/// `POST /runs/{id}/jobs/{job}/decide`: approve or reject a job that waits.
pub async fn decide(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((id, job)): Path<(String, String)>,
    Form(form): Form<DecideForm>,
) -> Result<Response, Problem> {
    let who = ui.acting(&headers, &form.csrf).await?;
    let approve = match form.decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "Not valid",
                format!("{other:?} is not a decision: approve or reject"),
            ));
        }
    };
    let req = pb::DecideJobRequest { run_id: id.clone(), job, approve, comment: form.comment };
    ui.api.control.decide_job(who.request(req)).await.map_err(Problem::from_status)?;
    Ok(redirect(&format!("/runs/{}?done={}", segment(&id), form.decision)))
}

/// `GET /runs/{id}/jobs/{job}/log`: the log viewer; `log.js` follows the
/// log's events.
pub async fn log(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((id, job)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let run = get_run(&ui, &who, &id).await?;
    let Some(found) = run.jobs.iter().find(|j| j.name == job) else {
        return Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("run {id} has no job {job:?}")));
    };
    let base = format!("/runs/{}/jobs/{}", segment(&id), segment(&job));
    let page = LogPage {
        chrome: chrome(&ui, &who, "log"),
        state: views::job_state(found.state),
        attempts: found.attempt,
        events: format!("{base}/log/events"),
        raw: format!("{base}/log.txt"),
        back: format!("/runs/{}", segment(&id)),
        run: id,
        job,
    };
    Ok(html(page.render_page()))
}

/// `GET /agents`: every agent the leader knows, with certificates and
/// access for those who may manage agents.
pub async fn agents(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let listed =
        ui.api.control.list_agents(who.request(pb::ListAgentsRequest {})).await.map_err(Problem::from_status)?;
    let see = Permit::of(&who.caller, Action::Administer(Area::Agents), "Seeing certificates and access");
    let identities = if see.allowed {
        ui.api
            .identity
            .list_agent_identities(who.request(pb::ListAgentIdentitiesRequest {}))
            .await
            .map_err(Problem::from_status)?
            .into_inner()
            .identities
    } else {
        Vec::new()
    };
    let agents = listed
        .into_inner()
        .agents
        .iter()
        .map(|a| {
            let identity = identities.iter().find(|i| i.name == a.name);
            let mut labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let status = match (a.connected, a.draining) {
                (true, true) => "draining",
                (true, false) => "connected",
                (false, _) => "away",
            };
            AgentRow {
                name: a.name.clone(),
                version: if a.version.is_empty() { "-".into() } else { a.version.clone() },
                labels: labels.join(", "),
                slots: format!("{} of {}", a.slots_in_use, a.slots),
                status,
                seen: if a.connected { "now".into() } else { views::when(a.last_seen_ms) },
                note: [
                    (!a.via.is_empty()).then(|| format!("carried by coordinator {}", a.via)),
                    (!a.unready.is_empty()).then(|| a.unready.clone()),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; "),
                cert_until: identity.map_or_else(|| "-".into(), |i| views::when(i.not_after_ms.max(0) as u64)),
                access: identity.map_or_else(|| "-".into(), |i| i.state.clone()),
            }
        })
        .collect();
    let identities_hidden = if see.allowed { String::new() } else { see.why_not };
    let page = AgentsPage { chrome: chrome(&ui, &who, "agents"), agents, identities_hidden };
    Ok(html(page.render_page()))
}

/// `GET /audit`: the audit log, newest first (admins).
pub async fn audit(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let req = pb::ListAuditRequest { since_ms: 0, actor: String::new(), limit: 0 };
    let listed = ui.api.identity.list_audit(who.request(req)).await.map_err(Problem::from_status)?.into_inner();
    let entries = listed
        .entries
        .iter()
        .rev()
        .take(500)
        .map(|e| AuditRow {
            at: views::when(e.at_ms.max(0) as u64),
            actor: e.actor.clone(),
            source: e.source.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            outcome: e.outcome.clone(),
            warning: e.level == "warning",
            detail: e.detail.clone(),
        })
        .collect();
    let page = AuditPage { chrome: chrome(&ui, &who, "audit"), entries };
    Ok(html(page.render_page()))
}

/// `POST /logout`: ends the session and clears its cookie.
pub async fn logout(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Problem> {
    let who = ui.acting(&headers, &form.csrf).await?;
    session::end(ui.store.as_ref(), &who.cookie)
        .await
        .map_err(|e| Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", e.to_string()))?;
    let page = views::ErrorPage {
        chrome: Chrome::anonymous("login"),
        title: "Logged out",
        message: "The session has ended. Run `drover ui` to log in again.",
    };
    let mut response = html(page.render_page());
    if let Ok(value) = HeaderValue::from_str(&session::clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}
