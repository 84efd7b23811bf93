//! The streams the pages' scripts follow, as Server-Sent Events, and the
//! raw log:
//!
//! - `GET /runs/{id}/events`: `WatchRun` without logs, as `run` and `job`
//!   events (a job as the run page's table has it, `views::JobView`), then
//!   `end` once the run has finished;
//! - `GET /runs/{id}/jobs/{job}/log/events`: `GetLogs --follow` through
//!   [`super::ansi::Lines`] (the CLI's terminal rule, then colours as
//!   classes), as `lines` events (a batch of finished lines, and the
//!   unfinished last one, which the next batch replaces), `attempt` when a
//!   retry's log begins, and `end`;
//! - `GET /runs/{id}/jobs/{job}/log.txt`: every attempt's bytes as stored;
//! - `GET /runs/{id}/jobs/{job}/artifact`: the job's artifacts (a tar).
//!
//! A refusal or failure mid-stream is a `problem` event with the API's
//! words, then `end`; the stream of a user who loses the right to read
//! ends that way at once (`api::streams::while_allowed`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use drover_proto::v1 as pb;
use drover_proto::v1::control_service_server::ControlService;
use futures_util::{Stream, StreamExt, stream};

use super::ansi::Lines;
use super::views::JobView;
use super::{Problem, Ui};

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

fn json_event(name: &str, value: &impl serde::Serialize) -> Result<Event, Infallible> {
    Ok(Event::default().event(name).data(serde_json::to_string(value).expect("events serialise")))
}

fn end() -> Result<Event, Infallible> {
    Ok(Event::default().event("end").data("{}"))
}

fn problem(status: &tonic::Status) -> Result<Event, Infallible> {
    json_event("problem", &serde_json::json!({ "message": status.message() }))
}

fn sse(events: Events) -> Response {
    let mut response = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    // Proxies must not hold events back.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `GET /runs/{id}/events`.
pub async fn run_events(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let req = pb::WatchRunRequest { run_id: id.clone(), logs: false, from_now: true };
    let events = ui.api.control.watch_run(who.request(req)).await.map_err(Problem::from_status)?.into_inner();
    let mapped = events.flat_map(move |item| {
        let out: Vec<Result<Event, Infallible>> = match item {
            // The run, with every job as it is (the stream's first event,
            // and whenever the run's record changes): its jobs first, so a
            // page rendered a moment earlier catches up.
            Ok(pb::RunEvent { event: Some(pb::run_event::Event::Run(run)) }) => {
                let now = drover_telemetry::trace::now_ms();
                let mut out: Vec<_> =
                    run.jobs.iter().map(|job| json_event("job", &JobView::of(&id, job, now))).collect();
                out.push(json_event(
                    "run",
                    &serde_json::json!({
                        "id": run.id,
                        "state": super::views::run_state(run.state),
                        "finished_ms": run.finished_ms,
                    }),
                ));
                out
            }
            Ok(pb::RunEvent { event: Some(pb::run_event::Event::Job(job)) }) => {
                vec![json_event("job", &JobView::of(&id, &job, drover_telemetry::trace::now_ms()))]
            }
            Ok(_) => Vec::new(),
            Err(status) => vec![problem(&status)],
        };
        stream::iter(out)
    });
    Ok(sse(Box::pin(mapped.chain(stream::once(async { end() })))))
}

/// `GET /runs/{id}/jobs/{job}/log/events`.
pub async fn log_events(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((id, job)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let req = pb::GetLogsRequest { run_id: id, job, attempt: 0, follow: true };
    let chunks = ui.api.control.get_logs(who.request(req)).await.map_err(Problem::from_status)?.into_inner();
    let state = (chunks, Lines::new(), 0u32, false);
    let events = stream::unfold(state, |(mut chunks, mut lines, mut attempt, done)| async move {
        if done {
            return None;
        }
        let mut out = Vec::new();
        match chunks.next().await {
            Some(Ok(data)) => {
                if data.attempt != attempt {
                    if attempt != 0 {
                        let last: Vec<_> = lines.finish().into_iter().collect();
                        if !last.is_empty() {
                            out.push(json_event("lines", &last));
                        }
                    }
                    lines.reset();
                    attempt = data.attempt;
                    out.push(json_event("attempt", &serde_json::json!({ "attempt": attempt })));
                }
                let mut batch = lines.push(&data.data);
                batch.extend(lines.partial());
                if !batch.is_empty() {
                    out.push(json_event("lines", &batch));
                }
                Some((stream::iter(out), (chunks, lines, attempt, false)))
            }
            Some(Err(status)) => {
                out.push(problem(&status));
                out.push(end());
                Some((stream::iter(out), (chunks, lines, attempt, true)))
            }
            None => {
                let last: Vec<_> = lines.finish().into_iter().collect();
                if !last.is_empty() {
                    out.push(json_event("lines", &last));
                }
                out.push(end());
                Some((stream::iter(out), (chunks, lines, attempt, true)))
            }
        }
    })
    .flatten();
    Ok(sse(Box::pin(events)))
}

/// A download: the bytes as they stream from the API, saved as `file`
/// (made safe for the header).
fn download(
    bytes: impl Stream<Item = Result<axum::body::Bytes, tonic::Status>> + Send + 'static,
    kind: &'static str,
    file: &str,
) -> Response {
    let file = file.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-', "_");
    let mut response = Response::new(Body::from_stream(bytes.map(|item| item.map_err(std::io::Error::other))));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// `GET /runs/{id}/jobs/{job}/log.txt`: every attempt's bytes, as stored.
pub async fn raw_log(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((id, job)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let file = format!("run-{id}-{job}.log");
    let req = pb::GetLogsRequest { run_id: id, job, attempt: 0, follow: false };
    let chunks = ui.api.control.get_logs(who.request(req)).await.map_err(Problem::from_status)?.into_inner();
    let bytes = chunks.map(|item| item.map(|data| axum::body::Bytes::from(data.data)));
    Ok(download(bytes, "text/plain; charset=utf-8", &file))
}

/// `GET /runs/{id}/jobs/{job}/artifact`: the job's artifacts, the tar
/// `drover artifacts get` unpacks (checked there by its sha256).
pub async fn artifact(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((id, job)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let who = ui.who(&headers).await?;
    let file = format!("run-{id}-{job}.tar");
    let req = pb::GetArtifactRequest { run_id: id, job };
    let data = ui.api.control.get_artifact(who.request(req)).await.map_err(Problem::from_status)?.into_inner();
    let bytes = data.map(|item| item.map(|d| axum::body::Bytes::from(d.data)));
    Ok(download(bytes, "application/x-tar", &file))
}
