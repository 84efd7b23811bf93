//! The spans of a run's trace: run → job → (dispatch, attempt) → step. The
//! coordinator emits run, job, dispatch and attempt spans when what they
//! cover has ended, from the ids and times kept in the run's records (see
//! `drover_telemetry::trace` for why); agents emit the step spans as
//! children of the attempt span. Attribute names follow the OpenTelemetry
//! CI/CD semantic conventions where they exist (`cicd.*`, `vcs.*`), and use
//! `drover.*` otherwise.

use drover_telemetry::trace::{Recorded, record};
use opentelemetry::KeyValue;

use crate::core::machine::{JobRecord, JobState, RunRecord, RunState};

fn run_attrs(run: &RunRecord) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("cicd.pipeline.name", run.pipeline.name.clone()),
        KeyValue::new("cicd.pipeline.run.id", run.id.to_string()),
    ];
    if let Some(commit) = &run.source.commit {
        attrs.push(KeyValue::new("vcs.ref.head.revision", commit.clone()));
    }
    if let Some(repo) = &run.source.repo {
        attrs.push(KeyValue::new("vcs.repository.url.full", repo.clone()));
    }
    attrs
}

fn job_attrs(run: &RunRecord, job: &str) -> Vec<KeyValue> {
    let mut attrs = run_attrs(run);
    attrs.push(KeyValue::new("cicd.pipeline.task.name", job.to_string()));
    attrs
}

/// The run span, once the run has finished.
pub fn run(run: &RunRecord, state: RunState, now_ms: u64) {
    if run.trace.span_id.is_empty() {
        return;
    }
    record(|| {
        let mut attributes = run_attrs(run);
        attributes.push(KeyValue::new("cicd.pipeline.result", state.as_str()));
        Recorded {
            name: format!("run {}", run.pipeline.name),
            trace_id: &run.trace.trace_id,
            span_id: Some(&run.trace.span_id),
            parent_span_id: &run.trace.parent_span_id,
            start_ms: run.created_ms,
            end_ms: run.finished_ms.unwrap_or(now_ms),
            attributes,
            error: (state != RunState::Succeeded).then(|| format!("run {}", state.as_str())),
        }
    });
}

/// A job span, once the job has reached a final state.
pub fn job(run: &RunRecord, name: &str, job: &JobRecord, now_ms: u64) {
    if job.trace.span_id.is_empty() {
        return;
    }
    record(|| {
        let end = job.finished_ms.unwrap_or(now_ms);
        let mut attributes = job_attrs(run, name);
        attributes.push(KeyValue::new("cicd.pipeline.task.run.result", job.state.as_str()));
        attributes.push(KeyValue::new("drover.attempts", i64::from(job.attempt)));
        Recorded {
            name: format!("job {name}"),
            trace_id: &run.trace.trace_id,
            span_id: Some(&job.trace.span_id),
            parent_span_id: &run.trace.span_id,
            start_ms: job.trace.first_ready_ms.unwrap_or(end),
            end_ms: end,
            attributes,
            error: matches!(job.state, JobState::Failed | JobState::Cancelled).then(|| job.message.clone()),
        }
    });
}

/// The dispatch span: from the job becoming ready to its assignment.
pub fn dispatch(run: &RunRecord, name: &str, job: &JobRecord, agent: &str, now_ms: u64) {
    if job.trace.span_id.is_empty() {
        return;
    }
    record(|| {
        let mut attributes = job_attrs(run, name);
        attributes.push(KeyValue::new("drover.agent", agent.to_string()));
        attributes.push(KeyValue::new("drover.attempt", i64::from(job.attempt)));
        Recorded {
            name: format!("dispatch {name}"),
            trace_id: &run.trace.trace_id,
            span_id: None,
            parent_span_id: &job.trace.span_id,
            start_ms: job.trace.ready_ms.unwrap_or(now_ms),
            end_ms: now_ms,
            attributes,
            error: None,
        }
    });
}

/// An attempt span, once the attempt no longer holds its slot.
pub fn attempt(run: &RunRecord, name: &str, job: &JobRecord, attempt: u32, agent: &str, now_ms: u64) {
    if job.trace.attempt_span_id.is_empty() {
        return;
    }
    record(|| {
        let mut attributes = job_attrs(run, name);
        attributes.push(KeyValue::new("cicd.pipeline.task.run.id", format!("{}/{name}/{attempt}", run.id)));
        attributes.push(KeyValue::new("drover.attempt", i64::from(attempt)));
        attributes.push(KeyValue::new("drover.agent", agent.to_string()));
        let failed = !matches!(job.state, JobState::Succeeded);
        Recorded {
            name: format!("attempt {name}#{attempt}"),
            trace_id: &run.trace.trace_id,
            span_id: Some(&job.trace.attempt_span_id),
            parent_span_id: &job.trace.span_id,
            start_ms: job.trace.assigned_ms.unwrap_or(now_ms),
            end_ms: now_ms,
            attributes,
            error: failed.then(|| job.message.clone()),
        }
    });
}
