//! The control API's calls on repositories: `drover repo add|rm` and
//! `drover repos`. Any coordinator answers, straight from the store
//! (`crate::triggers`); a webhook secret goes in sealed and never comes
//! back out: a listing says only whether one is set.

use std::time::Duration;

use drover_proto::v1 as pb;
use drover_telemetry::trace::now_ms;
use tonic::{Request, Response, Status};

use super::allowed;
use super::status::ApiError;
use crate::core::authz::{Action, Area};
use crate::secrets::Vault;
use crate::store::Store;
use crate::triggers::{self, NewRepo, RepoView};

fn repo_view(view: RepoView) -> pb::Repo {
    let RepoView { record, state } = view;
    let state = state.unwrap_or_default();
    pb::Repo {
        name: record.name,
        url: record.url,
        poll_ms: record.poll_ms,
        branches: record.branches,
        trusted: record.trusted,
        webhook_secret: record.webhook_secret.is_some(),
        heads: state.heads.unwrap_or_default().into_iter().collect(),
        last_poll_ms: state.last_poll_ms,
        last_error: state.last_error.unwrap_or_default(),
        last_error_ms: state.last_error_ms,
        created_ms: record.created_ms,
        created_by: record.created_by,
        schedules: state
            .schedules
            .into_iter()
            .map(|(cron, last_fired_ms)| pb::RepoSchedule { cron, last_fired_ms })
            .collect(),
    }
}

pub(super) async fn add_repo(
    store: &dyn Store,
    vault: &Vault,
    req: Request<pb::AddRepoRequest>,
) -> Result<Response<pb::Repo>, Status> {
    let by = allowed(&req, Action::Administer(Area::Repos))?;
    let req = req.into_inner();
    let new = NewRepo {
        name: req.name,
        url: req.url,
        poll: (req.poll_ms > 0).then(|| Duration::from_millis(req.poll_ms)),
        branches: req.branches,
        webhook_secret: (!req.webhook_secret.is_empty()).then_some(req.webhook_secret),
        trusted: req.trusted,
    };
    let record = triggers::add_repo(store, vault, new, &by, now_ms()).await.map_err(ApiError::from)?;
    tracing::info!(repo = %record.name, url = %record.url, by = %by, "repository added");
    Ok(Response::new(repo_view(RepoView { record, state: None })))
}

pub(super) async fn list_repos(
    store: &dyn Store,
    req: Request<pb::ListReposRequest>,
) -> Result<Response<pb::ListReposResponse>, Status> {
    allowed(&req, Action::Read)?;
    let repos = triggers::list_repos(store).await.map_err(ApiError::from)?;
    Ok(Response::new(pb::ListReposResponse { repos: repos.into_iter().map(repo_view).collect() }))
}

pub(super) async fn remove_repo(
    store: &dyn Store,
    req: Request<pb::RemoveRepoRequest>,
) -> Result<Response<pb::RemoveRepoResponse>, Status> {
    let by = allowed(&req, Action::Administer(Area::Repos))?;
    let name = req.into_inner().name;
    triggers::remove_repo(store, &name).await.map_err(ApiError::from)?;
    tracing::info!(repo = %name, by = %by, "repository removed");
    Ok(Response::new(pb::RemoveRepoResponse {}))
}
