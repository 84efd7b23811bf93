//! Prost views of runs and jobs for the control API: a stored run, its
//! jobs and its listing entry as the `Run` and `Job` messages, with what
//! started the run (its event, branch, tag and trigger).

use std::collections::BTreeMap;

use drover_proto::v1 as pb;

use crate::core::machine::{ArtifactRef, JobRecord, JobState, RunRecord, RunState, Source};
use crate::records::RunSummary;

pub(super) fn run_state(state: RunState) -> pb::RunState {
    match state {
        RunState::Running => pb::RunState::Running,
        RunState::Succeeded => pb::RunState::Succeeded,
        RunState::Failed => pb::RunState::Failed,
        RunState::Cancelled => pb::RunState::Cancelled,
    }
}

fn job_state(state: JobState) -> pb::JobState {
    match state {
        JobState::Pending => pb::JobState::Pending,
        JobState::Queued => pb::JobState::Queued,
        JobState::Assigned => pb::JobState::Assigned,
        JobState::Running => pb::JobState::Running,
        JobState::Cancelling => pb::JobState::Cancelling,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Skipped => pb::JobState::Skipped,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub(super) fn artifact_view(a: &ArtifactRef) -> pb::Artifact {
    pb::Artifact { sha256: a.sha256.clone(), size: a.size, files: a.files }
}

pub(super) fn job_view(name: &str, needs: &[String], job: &JobRecord) -> pb::Job {
    pb::Job {
        name: name.to_string(),
        state: job_state(job.state) as i32,
        needs: needs.to_vec(),
        attempt: job.attempt,
        agent: job.agent.clone().unwrap_or_default(),
        waiting_for: job.waiting_for.clone(),
        exit_code: job.exit_code.unwrap_or(0),
        started_ms: job.started_ms.unwrap_or(0),
        finished_ms: job.finished_ms.unwrap_or(0),
        message: job.message.clone(),
        blocked_until_ms: job.blocked_until_ms.unwrap_or(0),
        reused_from: job.reused_from.map(|r| r.to_string()).unwrap_or_default(),
        artifact: job.artifact.as_ref().map(artifact_view),
        cache: job.cache.as_ref().map(|c| c.text()).unwrap_or_default(),
        placement: job.placement.clone().unwrap_or_default(),
        approval: job.approval.as_ref().map(|a| a.text()).unwrap_or_default(),
    }
}

fn source_fields(s: &Source) -> (String, String, String) {
    (s.repo.clone().unwrap_or_default(), s.commit.clone().unwrap_or_default(), s.file.clone())
}

/// What started a run, as the `Run` message has it.
fn with_event(mut run: pb::Run, s: &Source) -> pb::Run {
    run.event = s.event.as_str().to_owned();
    run.branch = s.branch.clone().unwrap_or_default();
    run.tag = s.tag.clone().unwrap_or_default();
    run.trigger = s.trigger.clone().unwrap_or_default();
    run.submitted_by = s.submitted_by.clone().unwrap_or_default();
    run
}

pub(super) fn run_view(record: &RunRecord, jobs: &BTreeMap<String, JobRecord>) -> pb::Run {
    let (repo, commit, file) = source_fields(&record.source);
    // Jobs in file order, as the user wrote them.
    let jobs = record
        .pipeline
        .jobs
        .iter()
        .filter_map(|spec| jobs.get(&spec.name).map(|j| job_view(&spec.name, &spec.needs, j)))
        .collect();
    let run = pb::Run {
        id: record.id.to_string(),
        name: record.pipeline.name.clone(),
        state: run_state(record.state) as i32,
        repo,
        commit,
        file,
        created_ms: record.created_ms,
        finished_ms: record.finished_ms.unwrap_or(0),
        jobs,
        rerun_of: record.rerun_of.map(|r| r.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    with_event(run, &record.source)
}

pub(super) fn summary_view(s: &RunSummary) -> pb::Run {
    let (repo, commit, file) = source_fields(&s.source);
    let run = pb::Run {
        id: s.id.to_string(),
        name: s.name.clone(),
        state: run_state(s.state) as i32,
        repo,
        commit,
        file,
        created_ms: s.created_ms,
        finished_ms: s.finished_ms.unwrap_or(0),
        jobs: Vec::new(),
        rerun_of: s.rerun_of.map(|r| r.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    with_event(run, &s.source)
}
