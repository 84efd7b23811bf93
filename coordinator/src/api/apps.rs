//! The app service (`drover app ...`, `drover apps`): any coordinator
//! answers, from the store (`crate::apps::records`). A sync or a refresh is
//! a request the leader's apps controller takes up within a tick; a diff
//! is rendered here, so a plan for any commit needs no leader.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use drover_proto::v1 as pb;
use drover_telemetry::trace::now_ms;
use tonic::{Request, Response, Status};

use super::allowed;
use super::status::ApiError;
use crate::apps::records::{self, AppView};
use crate::apps::render;
use crate::core::apps::{AppSpec, DEFAULT_POLL, ServiceDiff};
use crate::core::authz::{Action, Area};
use crate::store::Store;
use crate::submit::GitOptions;

pub struct AppApi {
    pub store: Arc<dyn Store>,
    pub git: GitOptions,
    /// Where apps' deploy keys are opened from, to read their repositories.
    pub vault: Arc<crate::secrets::Vault>,
}

fn app_view(view: AppView) -> pb::App {
    let AppView { record, status, pin } = view;
    let pin = pin.unwrap_or_else(|| records::Pin { commit: String::new(), by: String::new(), at_ms: 0 });
    let status = status.unwrap_or_default();
    let spec = record.spec;
    let sync_timeout_ms = spec.sync_timeout().as_millis() as u64;
    let sync_status = match (status.last_fetch_ms, status.sync_status.as_str()) {
        (0, _) if status.last_error.is_empty() => "unknown".to_owned(),
        (_, "") | (0, _) => "error".to_owned(),
        (_, s) => s.to_owned(),
    };
    pb::App {
        name: spec.name,
        repo: spec.repo,
        path: spec.path,
        environment: spec.environment,
        revision: spec.revision,
        poll_ms: spec.poll_ms,
        auto_sync: spec.auto_sync,
        self_heal: spec.self_heal,
        prune: spec.prune,
        detect_only: spec.detect_only,
        created_by: record.created_by,
        created_ms: record.created_ms,
        sync_status,
        health: if status.health.is_empty() { "unknown".to_owned() } else { status.health },
        synced_commit: status.synced_commit.unwrap_or_default(),
        wanted_commit: status.wanted_commit.unwrap_or_default(),
        last_error: status.last_error,
        last_error_ms: status.last_error_ms,
        last_fetch_ms: status.last_fetch_ms,
        syncing: status.syncing.unwrap_or_default(),
        drift: status.drift,
        drift_since_ms: status.drift_since_ms,
        sync_timeout_ms,
        depends_on: spec.depends_on,
        pinned_commit: pin.commit,
        pinned_by: pin.by,
        pinned_ms: pin.at_ms,
        blocked: status.blocked,
        known_hosts: spec.known_hosts.lines().filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#')).count()
            as u32,
        deploy_key: spec.deploy_key,
        deploy_role: spec.deploy_role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        rejected: Vec::new(),
    }
}

/// `app` with what its services' nodes serve that is rejected: each line
/// names the service, the node, the release and why.
async fn with_rejects(store: &dyn Store, mut app: pb::App, owned: &BTreeSet<String>) -> Result<pb::App, ApiError> {
    if owned.is_empty() {
        return Ok(app);
    }
    let rejects = crate::releases::load(store).await?;
    let deployed = crate::rollouts::records::deployed_in(store, Some(&app.environment)).await?;
    app.rejected = deployed
        .iter()
        .filter(|(_, service, _)| owned.contains(service))
        .filter_map(|(_, service, d)| {
            let r = rejects.find(service, &d.release.version, &d.release.sha256)?;
            Some(format!("{service} on {}: {} is rejected: {}", d.node, d.release.version, r.reason))
        })
        .collect();
    Ok(app)
}

fn diff_view(commit: String, diffs: Vec<ServiceDiff>, error: String) -> pb::AppDiff {
    pb::AppDiff {
        commit,
        error,
        services: diffs
            .into_iter()
            .map(|d| pb::ServiceDiff {
                service: d.service,
                file: d.file,
                status: d.status.as_str().to_owned(),
                version: d.version,
                fields: d.fields,
                nodes: d
                    .nodes
                    .into_iter()
                    .map(|n| pb::NodeDiff {
                        node: n.node,
                        status: n.status.as_str().to_owned(),
                        running: n.running,
                        wanted: n.wanted,
                        healthy: n.healthy,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Who asked for a deploy action and from where, for its audit entry.
struct Audit {
    caller: crate::core::authz::Caller,
    source: Option<std::net::SocketAddr>,
}

impl Audit {
    async fn record(&self, store: &dyn crate::store::Store, action: &str, target: &str, detail: &str) {
        crate::audit::by_caller(store, (&self.caller, self.source), action, target, detail).await;
    }
}

impl AppApi {
    /// The caller's name, when it may deploy app `name` by hand: the
    /// deploy action, and its environment's `deploy_role`.
    async fn may_deploy<T>(&self, req: &Request<T>, name: &str) -> Result<(String, Audit), ApiError> {
        let caller = super::authorize(req, Action::Deploy)?;
        if let Ok((view, _)) = records::get(self.store.as_ref(), name).await {
            let spec = &view.record.spec;
            crate::core::authz::may_deploy(&caller, &format!("app {name:?}"), spec.deploy_role)
                .map_err(ApiError::PermissionDenied)?;
            super::may_deploy(self.store.as_ref(), &caller, [spec.environment.as_str()]).await?;
        }
        Ok((caller.name().to_owned(), Audit { caller, source: req.remote_addr() }))
    }

    /// The diff of app `name` at `revision` (its own when empty).
    async fn diff(&self, name: &str, revision: &str) -> Result<pb::AppDiff, ApiError> {
        if let Some(why) = crate::core::apps::revision_problem(revision) {
            return Err(ApiError::Invalid(why));
        }
        let (view, _) = records::get(self.store.as_ref(), name).await?;
        let spec = &view.record.spec;
        let pinned = view.pin.as_ref().map(|p| p.commit.as_str());
        let revision = if revision.is_empty() { pinned.unwrap_or(spec.reference()) } else { revision };
        let rendered =
            render::render(spec, revision, &self.git, &self.vault, None).await.map_err(ApiError::Precondition)?;
        let desired = match rendered.desired {
            Ok(d) => d,
            Err(why) => return Ok(diff_view(rendered.commit, Vec::new(), why)),
        };
        let resolved = render::resolve(self.store.as_ref(), &desired).await?;
        let owned = view.status.map(|s| s.owned).unwrap_or_default();
        let diffs = render::diff(self.store.as_ref(), &spec.environment, &resolved, &owned, &BTreeMap::new()).await?;
        Ok(diff_view(rendered.commit, diffs, String::new()))
    }
}

#[tonic::async_trait]
impl pb::app_service_server::AppService for AppApi {
    async fn create_app(&self, req: Request<pb::CreateAppRequest>) -> Result<Response<pb::App>, Status> {
        let by = allowed(&req, Action::Administer(Area::Apps))?;
        let r = req.into_inner();
        let spec = AppSpec {
            name: r.name,
            repo: r.repo,
            path: r.path,
            environment: r.environment,
            revision: r.revision,
            poll_ms: if r.poll_ms == 0 { DEFAULT_POLL.as_millis() as u64 } else { r.poll_ms },
            auto_sync: r.auto_sync,
            self_heal: r.self_heal,
            prune: r.prune,
            detect_only: r.detect_only,
            depends_on: r.depends_on,
            sync_timeout_ms: r.sync_timeout_ms,
            deploy_key: r.deploy_key,
            known_hosts: r.known_hosts,
            deploy_role: match r.deploy_role.as_str() {
                "" => None,
                role => match crate::core::environments::deploy_role_problem(role) {
                    Some(why) => return Err(ApiError::Invalid(why).into()),
                    None => crate::core::authz::Role::parse(role).ok(),
                },
            },
        };
        let record = records::create(self.store.as_ref(), spec, &by, now_ms()).await.map_err(ApiError::from)?;
        tracing::info!(app = %record.spec.name, repo = %record.spec.repo, by = %by, "app created");
        Ok(Response::new(app_view(AppView { record, status: None, pin: None })))
    }

    async fn apply_apps(&self, req: Request<pb::ApplyAppsRequest>) -> Result<Response<pb::ApplyAppsResponse>, Status> {
        let by = allowed(&req, Action::Administer(Area::Apps))?;
        let r = req.into_inner();
        let applied =
            records::apply(self.store.as_ref(), &r.file_name, &r.text, &by, now_ms()).await.map_err(ApiError::from)?;
        tracing::info!(
            file = %r.file_name, created = ?applied.created, replaced = ?applied.replaced, by = %by, "apps applied"
        );
        Ok(Response::new(pb::ApplyAppsResponse {
            created: applied.created,
            replaced: applied.replaced,
            unchanged: applied.unchanged,
        }))
    }

    async fn list_apps(&self, req: Request<pb::ListAppsRequest>) -> Result<Response<pb::ListAppsResponse>, Status> {
        allowed(&req, Action::Read)?;
        let apps = records::list(self.store.as_ref()).await.map_err(ApiError::from)?;
        let mut out = Vec::with_capacity(apps.len());
        for view in apps {
            let owned = view.status.as_ref().map(|s| s.owned.clone()).unwrap_or_default();
            out.push(with_rejects(self.store.as_ref(), app_view(view), &owned).await?);
        }
        Ok(Response::new(pb::ListAppsResponse { apps: out }))
    }

    async fn get_app(&self, req: Request<pb::GetAppRequest>) -> Result<Response<pb::App>, Status> {
        allowed(&req, Action::Read)?;
        let (view, _) = records::get(self.store.as_ref(), &req.into_inner().name).await.map_err(ApiError::from)?;
        let owned = view.status.as_ref().map(|s| s.owned.clone()).unwrap_or_default();
        Ok(Response::new(with_rejects(self.store.as_ref(), app_view(view), &owned).await?))
    }

    async fn delete_app(&self, req: Request<pb::DeleteAppRequest>) -> Result<Response<pb::DeleteAppResponse>, Status> {
        let by = allowed(&req, Action::Administer(Area::Apps))?;
        let name = req.into_inner().name;
        records::remove(self.store.as_ref(), &name).await.map_err(ApiError::from)?;
        tracing::info!(app = %name, by = %by, "app removed");
        Ok(Response::new(pb::DeleteAppResponse {}))
    }

    async fn refresh_app(&self, req: Request<pb::RefreshAppRequest>) -> Result<Response<pb::App>, Status> {
        let by = allowed(&req, Action::Deploy)?;
        let name = req.into_inner().name;
        let request = records::Request { by, at_ms: now_ms(), revision: None };
        records::request(self.store.as_ref(), &name, "refresh", &request).await.map_err(ApiError::from)?;
        let (view, _) = records::get(self.store.as_ref(), &name).await.map_err(ApiError::from)?;
        Ok(Response::new(app_view(view)))
    }

    async fn sync_app(&self, req: Request<pb::SyncAppRequest>) -> Result<Response<pb::SyncAppResponse>, Status> {
        let (by, audit) = self.may_deploy(&req, &req.get_ref().name).await?;
        let r = req.into_inner();
        if r.dry_run {
            let diff = self.diff(&r.name, &r.revision).await?;
            return Ok(Response::new(pb::SyncAppResponse { request: 0, diff: Some(diff) }));
        }
        let revision = (!r.revision.is_empty()).then_some(r.revision);
        if let Some(revision) = &revision {
            if let Some(why) = crate::core::apps::revision_problem(revision) {
                return Err(ApiError::Invalid(why).into());
            }
            let (view, _) = records::get(self.store.as_ref(), &r.name).await.map_err(ApiError::from)?;
            if let Some(pin) = view.pin {
                return Err(ApiError::Precondition(format!(
                    "app {} is pinned to {} by {}; `drover app unpin {}` first, or `drover app rollback --to` \
                     another commit",
                    r.name, pin.commit, pin.by, r.name
                ))
                .into());
            }
        }
        let request = records::Request { by: by.clone(), at_ms: now_ms(), revision };
        let request = records::request(self.store.as_ref(), &r.name, "sync", &request).await.map_err(ApiError::from)?;
        tracing::info!(app = %r.name, by = %by, request, "sync asked for");
        audit.record(self.store.as_ref(), "app.sync", &r.name, &format!("request {request}")).await;
        Ok(Response::new(pb::SyncAppResponse { request, diff: None }))
    }

    async fn rollback_app(
        &self,
        req: Request<pb::RollbackAppRequest>,
    ) -> Result<Response<pb::SyncAppResponse>, Status> {
        let (by, audit) = self.may_deploy(&req, &req.get_ref().name).await?;
        let r = req.into_inner();
        if r.to.is_empty() {
            return Err(ApiError::Invalid(
                "--to is empty; name the commit to go back to (`drover app history` lists them)".into(),
            )
            .into());
        }
        if let Some(why) = crate::core::apps::revision_problem(&r.to) {
            return Err(ApiError::Invalid(why.replace("--revision", "--to")).into());
        }
        let (view, _) = records::get(self.store.as_ref(), &r.name).await.map_err(ApiError::from)?;
        // The commit must be there, and its files valid: a pin nothing
        // can sync to would hold the app nowhere.
        let rendered = render::render(&view.record.spec, &r.to, &self.git, &self.vault, None)
            .await
            .map_err(ApiError::Precondition)?;
        if let Err(why) = &rendered.desired {
            return Err(ApiError::Precondition(format!(
                "the desired state at {} is invalid, so the app cannot go back to it:\n{why}",
                rendered.commit
            ))
            .into());
        }
        let request = records::pin_to(self.store.as_ref(), &r.name, &rendered.commit, &by, now_ms())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(app = %r.name, commit = %rendered.commit, by = %by, "app pinned");
        audit.record(self.store.as_ref(), "app.pin", &r.name, &format!("rolled back to {}", rendered.commit)).await;
        Ok(Response::new(pb::SyncAppResponse { request, diff: None }))
    }

    async fn unpin_app(&self, req: Request<pb::UnpinAppRequest>) -> Result<Response<pb::App>, Status> {
        let (by, audit) = self.may_deploy(&req, &req.get_ref().name).await?;
        let name = req.into_inner().name;
        records::unpin(self.store.as_ref(), &name, &by, now_ms()).await.map_err(ApiError::from)?;
        tracing::info!(app = %name, by = %by, "app unpinned");
        audit.record(self.store.as_ref(), "app.unpin", &name, "").await;
        let (view, _) = records::get(self.store.as_ref(), &name).await.map_err(ApiError::from)?;
        Ok(Response::new(app_view(view)))
    }

    async fn diff_app(&self, req: Request<pb::DiffAppRequest>) -> Result<Response<pb::AppDiff>, Status> {
        allowed(&req, Action::Read)?;
        let r = req.into_inner();
        Ok(Response::new(self.diff(&r.name, &r.revision).await?))
    }

    async fn app_history(
        &self,
        req: Request<pb::AppHistoryRequest>,
    ) -> Result<Response<pb::AppHistoryResponse>, Status> {
        allowed(&req, Action::Read)?;
        let syncs = records::history(self.store.as_ref(), &req.into_inner().name).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::AppHistoryResponse {
            syncs: syncs
                .into_iter()
                .map(|s| pb::AppSync {
                    id: s.id,
                    commit: s.commit,
                    started_by: s.started_by,
                    started_ms: s.started_ms,
                    finished_ms: s.finished_ms.unwrap_or_default(),
                    outcome: s.outcome,
                    message: s.message,
                    changes: s.changes,
                    rollouts: s.rollouts,
                    request: s.request,
                })
                .collect(),
        }))
    }
}
