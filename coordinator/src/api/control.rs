//! The control service used by the `drover` CLI. Reads (runs, status, logs,
//! watches) go straight to the store, so they never queue behind the
//! scheduler; writes (submit, cancel) go through the scheduler. A log
//! chunk's key holds only its length and checksum: its bytes are read from
//! the attempt's segment file (`crate::segments`), checked, and sent.

use std::pin::Pin;
use std::sync::Arc;

use drover_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::allowed;
use super::status::ApiError;
use super::streams::{
    Batch, EventStream, Item, LogStream, WatchFilter, follow_run, send_batch, until_closing, while_allowed,
};
use super::views::summary_view;
pub(super) use super::views::{artifact_view, job_view, run_view};
use crate::blobs::Blobs;
use crate::caches::Caches;
use crate::core::authz::Action;
use crate::core::keys::{self, RunKey};
use crate::core::machine::{JobState, RunId, RunState};
use crate::core::rerun::Scope;
use crate::leader::{LeaderInfo, MemberInfo, Role};
use crate::records;
use crate::secrets::Vault;
use crate::segments::{Chunk, ChunkMeta, Segments};
use crate::store::{Store, decode};
use crate::submit::{self, GitOptions, SubmitError, SubmitSource};

/// Most runs `drover runs` lists at once.
const MAX_LIST: usize = 1000;

/// Built by `crate::server` with a struct literal: it holds what the
/// control calls read, each named.
pub struct ControlApi {
    pub(crate) role: watch::Receiver<Role>,
    /// The store, unfenced: reads work on any coordinator.
    pub(crate) store: Arc<dyn Store>,
    /// Where logs' bytes are, for any coordinator given the same directory.
    pub(crate) segments: Arc<Segments>,
    /// How submit reads pipelines from git.
    pub(crate) git: GitOptions,
    /// Artifacts, for `drover artifacts get`.
    pub(crate) blobs: Arc<Blobs>,
    /// Secrets: set, listed and deleted here; checked at submit.
    pub(crate) vault: Arc<Vault>,
    /// Caches: listed and deleted here.
    pub(crate) caches: Arc<Caches>,
    /// This coordinator's id.
    pub(crate) id: String,
    /// Becomes true when the coordinator shuts down: open watch and log
    /// streams end then (see [`until_closing`]), or a graceful shutdown would
    /// wait for every `drover run --follow` to finish.
    pub(crate) closing: watch::Receiver<bool>,
    /// Who callers are now: a user's open stream ends when it may no
    /// longer read (see [`while_allowed`]).
    pub(crate) gate: Arc<crate::identity::Gate>,
}

impl ControlApi {
    /// A leader-only call that found no working scheduler says why when
    /// the reason is this coordinator's store having stopped for good (a
    /// deleted data directory, a full disk), not "no leader" or "the
    /// scheduler has stopped", which send the user looking elsewhere.
    fn explain(&self, e: ApiError) -> ApiError {
        match (&e, self.store.stopped().or_else(|| self.segments.stopped())) {
            (ApiError::NotLeader(None) | ApiError::Sched(crate::scheduler::SchedError::Stopped), Some(reason)) => {
                ApiError::Store(crate::store::StoreError::Unavailable(format!(
                    "this coordinator's store has stopped: {reason}"
                )))
            }
            _ => e,
        }
    }

    /// Run `id`, which must have a job `job`: not-found errors that name
    /// what there is.
    async fn run_with_job(&self, id: RunId, job: &str) -> Result<crate::core::machine::Run, ApiError> {
        let run = records::load_run(self.store.as_ref(), id).await.map_err(ApiError::from)?;
        let Some(run) = run else { return Err(run_not_found(self.store.as_ref(), id).await) };
        if !run.jobs.contains_key(job) {
            let expansions: Vec<String> =
                run.record.pipeline.expansions(job).map(|j| format!("'{}'", j.name)).collect();
            if !expansions.is_empty() {
                return Err(ApiError::NotFound(format!(
                    "job {job:?} of run {id} is a matrix; name one of its jobs: {}",
                    expansions.join(" ")
                )));
            }
            let names: Vec<&str> = run.record.pipeline.jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(ApiError::NotFound(format!("run {id} has no job {job:?}; its jobs are: {}", names.join(", "))));
        }
        Ok(run)
    }
}

/// Where a submit request's pipeline comes from. Proto strings are empty
/// when unset; empty asks `crate::submit` for its default.
fn submit_source(req: pb::SubmitRunRequest) -> Result<SubmitSource, ApiError> {
    let given = |s: String| (!s.is_empty()).then_some(s);
    match req.source {
        Some(pb::submit_run_request::Source::Inline(p)) => {
            Ok(SubmitSource::Inline { file: given(p.file_name), yaml: p.yaml })
        }
        Some(pb::submit_run_request::Source::Git(g)) => {
            Ok(SubmitSource::Git { repo: g.repo, reference: given(g.r#ref), file: given(g.file) })
        }
        None => Err(ApiError::Invalid("no pipeline given".into())),
    }
}

/// A submit's queue timeout: 0 for the coordinator's default, else at
/// most a job's longest timeout.
fn queue_timeout(ms: u64) -> Result<Option<std::time::Duration>, ApiError> {
    let limit = drover_pipeline::MAX_TIMEOUT;
    match std::time::Duration::from_millis(ms) {
        d if d.is_zero() => Ok(None),
        d if d > limit => Err(ApiError::Invalid(format!(
            "queue timeout of {} is over the limit of {}",
            drover_client::duration::format(d),
            drover_client::duration::format(limit)
        ))),
        d => Ok(Some(d)),
    }
}

/// The error for a run that is not in the store: one that never existed,
/// or one the retention policy pruned (its number is not above the last one
/// handed out).
pub(super) async fn run_not_found(store: &dyn Store, id: RunId) -> ApiError {
    let last: Option<RunId> = match store.get(keys::RUN_SEQ).await {
        Ok(None) => None,
        Ok(Some(kv)) => match decode(&kv.key, &kv.value) {
            Ok(last) => Some(last),
            Err(e) => return e.into(),
        },
        Err(e) => return e.into(),
    };
    match last {
        Some(last) if id <= last => ApiError::NotFound(format!(
            "run {id} no longer exists: finished runs are pruned by the coordinator's retention policy \
             (--keep-runs, --keep-runs-for); see `drover runs` for the runs kept"
        )),
        Some(last) => ApiError::NotFound(format!("run {id} not found: the newest run is {last}; see `drover runs`")),
        None => ApiError::NotFound(format!("run {id} not found: no run has been submitted yet")),
    }
}

fn parse_run_id(s: &str) -> Result<RunId, ApiError> {
    s.trim()
        .parse()
        .map_err(|_| ApiError::Invalid(format!("{s:?} is not a run id; run ids are numbers, see `drover runs`")))
}

#[tonic::async_trait]
impl pb::control_service_server::ControlService for ControlApi {
    async fn submit_run(&self, req: Request<pb::SubmitRunRequest>) -> Result<Response<pb::SubmitRunResponse>, Status> {
        let caller = super::authorize(&req, Action::Run)?;
        // A caller that traces (a CI system driving Drover) can pass its
        // context; the run's trace then continues it.
        let traceparent = req.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
        let req = req.into_inner();
        let queue_timeout = queue_timeout(req.queue_timeout_ms)?;
        let source = submit_source(req)?;
        let mut prepared = submit::prepare(source, &self.git, Some(&self.vault)).await.map_err(ApiError::from)?;
        prepared.queue_timeout = queue_timeout;
        prepared.source.submitted_by = Some(caller.actor());
        super::may_deploy(self.store.as_ref(), &caller, super::deploy_envs(&prepared.pipeline)).await?;
        // The leader is looked up only now: see `crate::submit`.
        let (sched, _) = super::leader(&self.role).map_err(|e| self.explain(e))?;
        let submitted = submit::submit(self.store.as_ref(), &sched, prepared, traceparent)
            .await
            .map_err(|e| self.explain(e.into()))?;
        Ok(Response::new(pb::SubmitRunResponse {
            run_id: submitted.run.to_string(),
            commit: submitted.commit.unwrap_or_default(),
        }))
    }

    async fn list_runs(&self, req: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        allowed(&req, Action::Read)?;
        let req = req.into_inner();
        let limit = match req.limit {
            0 => 50,
            n => (n as usize).min(MAX_LIST),
        };
        let states = req
            .states
            .iter()
            .map(|s| match pb::RunState::try_from(*s) {
                Ok(pb::RunState::Running) => Ok(RunState::Running),
                Ok(pb::RunState::Succeeded) => Ok(RunState::Succeeded),
                Ok(pb::RunState::Failed) => Ok(RunState::Failed),
                Ok(pb::RunState::Cancelled) => Ok(RunState::Cancelled),
                _ => Err(ApiError::Invalid(format!("{s} is not a run state"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = records::RunFilter { states, name: req.name, created_after_ms: req.created_after_ms };
        let runs = records::list_runs(self.store.as_ref(), limit, &filter).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListRunsResponse { runs: runs.iter().map(summary_view).collect() }))
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        allowed(&req, Action::Read)?;
        let id = parse_run_id(&req.into_inner().run_id)?;
        let run = records::load_run(self.store.as_ref(), id).await.map_err(ApiError::from)?;
        let Some(run) = run else { return Err(run_not_found(self.store.as_ref(), id).await.into()) };
        Ok(Response::new(run_view(&run.record, &run.jobs)))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(&self, req: Request<pb::WatchRunRequest>) -> Result<Response<EventStream>, Status> {
        allowed(&req, Action::Read)?;
        let cert = super::holder(&req)?;
        let req = req.into_inner();
        let id = parse_run_id(&req.run_id)?;
        let (tx, rx) = mpsc::channel(256);
        let filter = WatchFilter { job: None, attempt: 0, logs: req.logs, from_now: req.from_now };
        tokio::spawn(follow_run(self.store.clone(), self.segments.clone(), id, filter, tx));
        let events = until_closing(ReceiverStream::new(rx), self.closing.clone());
        Ok(Response::new(while_allowed(events, self.gate.clone(), cert)))
    }

    type GetLogsStream = LogStream;

    async fn get_logs(&self, req: Request<pb::GetLogsRequest>) -> Result<Response<LogStream>, Status> {
        use tokio_stream::StreamExt;
        allowed(&req, Action::Read)?;
        let cert = super::holder(&req)?;
        let req = req.into_inner();
        let id = parse_run_id(&req.run_id)?;
        let run = self.run_with_job(id, &req.job).await?;
        let job = &run.jobs[&req.job];
        // A plain read of a job that never started has nothing to show: say
        // why, and how to wait for it.
        if !req.follow && job.attempt == 0 {
            let why = match (job.state, job.waiting_for.is_empty()) {
                (JobState::Queued, false) => format!("queued, waiting for {}", job.waiting_for),
                (state, _) if job.message.is_empty() => state.as_str().to_string(),
                (state, _) if job.message.starts_with(state.as_str()) => job.message.clone(),
                (state, _) => format!("{}: {}", state.as_str(), job.message),
            };
            return Err(ApiError::Precondition(format!(
                "job {} of run {id} has not started ({why}), so it has no log yet; `drover logs {id} {} --follow` \
                 waits for it",
                req.job, req.job
            ))
            .into());
        }
        // A later attempt may still come while a follower waits, not once the
        // job has ended or for a plain read.
        if req.attempt > job.attempt && (!req.follow || job.state.is_terminal()) {
            return Err(ApiError::NotFound(format!(
                "job {} of run {id} has had {} attempt(s); pass --attempt 1 to {}, or leave it out for all",
                req.job,
                job.attempt,
                job.attempt.max(1)
            ))
            .into());
        }
        let (tx, rx) = mpsc::channel(256);
        if req.follow {
            let filter = WatchFilter { job: Some(req.job.clone()), attempt: req.attempt, logs: true, from_now: false };
            tokio::spawn(follow_run(self.store.clone(), self.segments.clone(), id, filter, tx));
        } else {
            let (store, segments) = (self.store.clone(), self.segments.clone());
            let (job, attempt) = (req.job.clone(), req.attempt);
            tokio::spawn(async move {
                let prefix =
                    if attempt == 0 { keys::job_logs(id, &job) } else { keys::attempt_logs(id, &job, attempt) };
                let sent = async {
                    let (kvs, _) = store.range(&prefix).await?;
                    let mut logs = Vec::with_capacity(kvs.len());
                    for kv in &kvs {
                        if let Some(RunKey::Log { job, attempt, offset }) = keys::parse_run_key(id, &kv.key) {
                            let meta = ChunkMeta::decode(&kv.key, &kv.value)?;
                            logs.push(Chunk { job: job.to_string(), attempt, offset, meta });
                        }
                    }
                    send_batch(
                        store.as_ref(),
                        &segments,
                        id,
                        Batch { items: logs.into_iter().map(Item::Log).collect() },
                        &tx,
                    )
                    .await
                };
                if let Err(e) = sent.await {
                    let _ = tx.send(Err(e.into())).await;
                }
            });
        }
        let logs = ReceiverStream::new(rx).filter_map(|e| match e {
            Ok(pb::RunEvent { event: Some(pb::run_event::Event::Log(l)) }) => Some(Ok(l)),
            Ok(_) => None,
            Err(s) => Some(Err(s)),
        });
        Ok(Response::new(while_allowed(until_closing(logs, self.closing.clone()), self.gate.clone(), cert)))
    }

    async fn cancel_run(&self, req: Request<pb::CancelRunRequest>) -> Result<Response<pb::Run>, Status> {
        let caller = super::authorize(&req, Action::Cancel)?;
        let source = req.remote_addr();
        let id = parse_run_id(&req.into_inner().run_id)?;
        let (sched, _) = super::leader(&self.role).map_err(|e| self.explain(e))?;
        sched.cancel(id).await.map_err(|e| self.explain(e.into()))?;
        crate::audit::by_caller(self.store.as_ref(), (&caller, source), "run.cancel", &id.to_string(), "").await;
        let run = records::load_run(self.store.as_ref(), id).await.map_err(ApiError::from)?;
        let Some(run) = run else { return Err(run_not_found(self.store.as_ref(), id).await.into()) };
        Ok(Response::new(run_view(&run.record, &run.jobs)))
    }

    type GetArtifactStream = Pin<Box<dyn Stream<Item = Result<pb::BlobData, Status>> + Send>>;

    async fn get_artifact(
        &self,
        req: Request<pb::GetArtifactRequest>,
    ) -> Result<Response<Self::GetArtifactStream>, Status> {
        allowed(&req, Action::Read)?;
        let req = req.into_inner();
        let id = parse_run_id(&req.run_id)?;
        let run = self.run_with_job(id, &req.job).await?;
        let job = &run.jobs[&req.job];
        let Some(artifact) = &job.artifact else {
            return Err(ApiError::NotFound(format!(
                "job {} of run {id} has no artifacts ({}); a job has some once it succeeds with `artifacts:` in the \
                 pipeline",
                req.job,
                job.state.as_str()
            ))
            .into());
        };
        // Its reference goes when it expires (and the blob after it).
        if self.store.get(&keys::artifact(id, &req.job)).await.map_err(ApiError::from)?.is_none() {
            return Err(ApiError::NotFound(format!(
                "the artifacts of job {} of run {id} have expired (`expire:` in the pipeline, or the coordinator's \
                 --artifact-expire)",
                req.job
            ))
            .into());
        }
        let (file, _) = self.blobs.open_blob(&artifact.sha256).await.map_err(super::blobs::blob_status)?;
        Ok(Response::new(super::blobs::blob_stream(file)))
    }

    async fn rerun_run(&self, req: Request<pb::RerunRunRequest>) -> Result<Response<pb::SubmitRunResponse>, Status> {
        let caller = super::authorize(&req, Action::Run)?;
        let traceparent = req.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
        let req = req.into_inner();
        let id = parse_run_id(&req.run_id)?;
        let scope = match (req.failed, req.jobs.is_empty()) {
            (_, false) => Scope::Jobs(req.jobs),
            (true, true) => Scope::Failed,
            (false, true) => Scope::All,
        };
        let mut prepared = match submit::prepare_rerun(self.store.as_ref(), id, &scope).await {
            Ok(prepared) => prepared,
            Err(SubmitError::RunNotFound(id)) => return Err(run_not_found(self.store.as_ref(), id).await.into()),
            Err(e) => return Err(ApiError::from(e).into()),
        };
        prepared.source.submitted_by = Some(caller.actor());
        super::may_deploy(self.store.as_ref(), &caller, super::deploy_envs(&prepared.pipeline)).await?;
        let (sched, _) = super::leader(&self.role).map_err(|e| self.explain(e))?;
        let submitted = submit::submit(self.store.as_ref(), &sched, prepared, traceparent)
            .await
            .map_err(|e| self.explain(e.into()))?;
        Ok(Response::new(pb::SubmitRunResponse {
            run_id: submitted.run.to_string(),
            commit: submitted.commit.unwrap_or_default(),
        }))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        allowed(&req, Action::Read)?;
        let (sched, _) = super::leader(&self.role)?;
        let agents = sched.agents().await.map_err(ApiError::from)?;
        let agents = agents
            .into_iter()
            .map(|a| pb::Agent {
                name: a.name,
                labels: a.labels.into_iter().collect(),
                slots: a.slots,
                slots_in_use: a.in_use,
                connected: a.connected,
                last_seen_ms: a.last_seen_ms,
                unready: a.unready,
                draining: a.draining,
                version: a.version,
                via: a.via,
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn set_secret(&self, req: Request<pb::SetSecretRequest>) -> Result<Response<pb::Secret>, Status> {
        super::stores::set_secret(&self.vault, self.store.as_ref(), req).await
    }

    async fn list_secrets(
        &self,
        req: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        super::stores::list_secrets(&self.vault, req).await
    }

    async fn delete_secret(
        &self,
        req: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        super::stores::delete_secret(&self.vault, self.store.as_ref(), req).await
    }

    async fn decide_job(&self, req: Request<pb::DecideJobRequest>) -> Result<Response<pb::Run>, Status> {
        let caller = super::authorize(&req, Action::Approve)?;
        let by = caller.name().to_owned();
        let source = req.remote_addr();
        let req = req.into_inner();
        let id = parse_run_id(&req.run_id)?;
        if !req.approve && req.comment.trim().is_empty() {
            return Err(ApiError::Invalid("a rejection needs a reason (`--reason`)".into()).into());
        }
        let (sched, _) = super::leader(&self.role).map_err(|e| self.explain(e))?;
        let decided = sched.decide(id, req.job.clone(), req.approve, by.clone(), req.comment.clone()).await;
        decided.map_err(|e| self.explain(e.into()))?;
        let verb = if req.approve { "approved" } else { "rejected" };
        tracing::info!(run = id, job = %req.job, by = %by, "job {verb}");
        let action = if req.approve { "job.approve" } else { "job.reject" };
        let target = format!("{id}/{}", req.job);
        crate::audit::by_caller(self.store.as_ref(), (&caller, source), action, &target, &req.comment).await;
        let run = records::load_run(self.store.as_ref(), id).await.map_err(ApiError::from)?;
        let Some(run) = run else { return Err(run_not_found(self.store.as_ref(), id).await.into()) };
        Ok(Response::new(run_view(&run.record, &run.jobs)))
    }

    async fn list_caches(
        &self,
        req: Request<pb::ListCachesRequest>,
    ) -> Result<Response<pb::ListCachesResponse>, Status> {
        super::stores::list_caches(&self.caches, req).await
    }

    async fn delete_cache(
        &self,
        req: Request<pb::DeleteCacheRequest>,
    ) -> Result<Response<pb::DeleteCacheResponse>, Status> {
        super::stores::delete_cache(&self.caches, req).await
    }

    async fn add_repo(&self, req: Request<pb::AddRepoRequest>) -> Result<Response<pb::Repo>, Status> {
        super::repos::add_repo(self.store.as_ref(), &self.vault, req).await
    }

    async fn list_repos(&self, req: Request<pb::ListReposRequest>) -> Result<Response<pb::ListReposResponse>, Status> {
        super::repos::list_repos(self.store.as_ref(), req).await
    }

    async fn remove_repo(
        &self,
        req: Request<pb::RemoveRepoRequest>,
    ) -> Result<Response<pb::RemoveRepoResponse>, Status> {
        super::repos::remove_repo(self.store.as_ref(), req).await
    }

    async fn create_environment(
        &self,
        req: Request<pb::CreateEnvironmentRequest>,
    ) -> Result<Response<pb::Environment>, Status> {
        super::environments::create(self.store.as_ref(), &self.role, req).await
    }

    async fn apply_environments(
        &self,
        req: Request<pb::ApplyEnvironmentsRequest>,
    ) -> Result<Response<pb::ApplyEnvironmentsResponse>, Status> {
        super::environments::apply(self.store.as_ref(), req).await
    }

    async fn list_environments(
        &self,
        req: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
        super::environments::list(self.store.as_ref(), &self.role, req).await
    }

    async fn get_environment(
        &self,
        req: Request<pb::GetEnvironmentRequest>,
    ) -> Result<Response<pb::Environment>, Status> {
        super::environments::get(self.store.as_ref(), &self.role, req).await
    }

    async fn remove_environment(
        &self,
        req: Request<pb::RemoveEnvironmentRequest>,
    ) -> Result<Response<pb::RemoveEnvironmentResponse>, Status> {
        super::environments::remove(self.store.as_ref(), req).await
    }

    async fn list_rollouts(
        &self,
        req: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        super::rollouts::list(self.store.as_ref(), req).await
    }

    async fn get_rollout(&self, req: Request<pb::GetRolloutRequest>) -> Result<Response<pb::Rollout>, Status> {
        super::rollouts::get(self.store.as_ref(), req).await
    }

    async fn act_on_rollout(&self, req: Request<pb::ActOnRolloutRequest>) -> Result<Response<pb::Rollout>, Status> {
        super::rollouts::act(self.store.as_ref(), &self.role, req).await
    }

    async fn rollback_service(
        &self,
        req: Request<pb::RollbackServiceRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        super::rollouts::rollback(self.store.as_ref(), &self.role, req).await
    }

    async fn get_service_logs(
        &self,
        req: Request<pb::GetServiceLogsRequest>,
    ) -> Result<Response<pb::GetServiceLogsResponse>, Status> {
        super::rollouts::service_logs(self.store.as_ref(), &self.role, req).await
    }

    async fn list_services(
        &self,
        req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        super::rollouts::services(self.store.as_ref(), &self.role, req).await
    }

    async fn cluster(&self, req: Request<pb::ClusterRequest>) -> Result<Response<pb::ClusterResponse>, Status> {
        allowed(&req, Action::Read)?;
        let (members, _) = self.store.range(keys::MEMBERS).await.map_err(ApiError::from)?;
        let leader = self.store.get(keys::LEADER).await.map_err(ApiError::from)?;
        let (leader_id, epoch) = match &leader {
            Some(kv) => {
                let info: LeaderInfo = decode(&kv.key, &kv.value).map_err(ApiError::from)?;
                (info.id, kv.create_revision as u64)
            }
            None => (String::new(), 0),
        };
        let coordinators = members
            .iter()
            .map(|kv| decode::<MemberInfo>(&kv.key, &kv.value))
            .map(|m| {
                m.map(|m| pb::Coordinator { leader: m.id == leader_id, id: m.id, url: m.url, started_ms: m.started_ms })
            })
            .collect::<Result<_, _>>()
            .map_err(ApiError::from)?;
        let endpoints = (self.store.endpoint_health().await)
            .into_iter()
            .map(|h| pb::StoreEndpoint { endpoint: h.endpoint, healthy: h.healthy, detail: h.detail })
            .collect();
        Ok(Response::new(pb::ClusterResponse {
            coordinators,
            leader_id,
            epoch,
            store: self.store.kind().to_string(),
            endpoints,
            answered_by: self.id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}

#[cfg(test)]
mod tests;
