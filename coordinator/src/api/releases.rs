//! The release service (`drover release reject|unreject|rejects`): the
//! reject list, read and written by any coordinator (`crate::releases`).

use std::sync::Arc;

use drover_proto::v1 as pb;
use drover_telemetry::trace::now_ms;
use tonic::{Request, Response, Status};

use super::allowed;
use super::status::ApiError;
use crate::core::authz::Action;
use crate::freezes::{self, Freeze};
use crate::releases::{self, Rejected};
use crate::store::Store;

pub struct ReleaseApi {
    pub store: Arc<dyn Store>,
}

fn view(r: &Rejected) -> pb::RejectedRelease {
    pb::RejectedRelease {
        service: r.service.clone(),
        release: r.release.clone(),
        kind: r.kind().to_owned(),
        reason: r.reason.clone(),
        by: r.by.clone(),
        at_ms: r.at_ms,
    }
}

#[tonic::async_trait]
impl pb::release_service_server::ReleaseService for ReleaseApi {
    async fn reject_release(
        &self,
        req: Request<pb::RejectReleaseRequest>,
    ) -> Result<Response<pb::RejectedRelease>, Status> {
        let by = allowed(&req, Action::Deploy)?;
        let r = req.into_inner();
        let rejected = Rejected { service: r.service, release: r.release, reason: r.reason, by, at_ms: now_ms() };
        let rejected = releases::reject(self.store.as_ref(), rejected).await.map_err(ApiError::from)?;
        tracing::warn!(
            service = %rejected.service, release = %rejected.release, reason = %rejected.reason, by = %rejected.by,
            "release rejected"
        );
        Ok(Response::new(view(&rejected)))
    }

    async fn unreject_release(
        &self,
        req: Request<pb::UnrejectReleaseRequest>,
    ) -> Result<Response<pb::UnrejectReleaseResponse>, Status> {
        let by = allowed(&req, Action::Deploy)?;
        let r = req.into_inner();
        releases::unreject(self.store.as_ref(), &r.service, &r.release).await.map_err(ApiError::from)?;
        tracing::warn!(service = %r.service, release = %r.release, by = %by, "release reject lifted");
        Ok(Response::new(pb::UnrejectReleaseResponse {}))
    }

    async fn list_rejected(
        &self,
        req: Request<pb::ListRejectedRequest>,
    ) -> Result<Response<pb::ListRejectedResponse>, Status> {
        allowed(&req, Action::Read)?;
        let service = req.into_inner().service;
        let all = releases::load(self.store.as_ref()).await.map_err(ApiError::from)?;
        let rejected = all.all().filter(|r| service.is_empty() || r.service == service).map(view).collect();
        Ok(Response::new(pb::ListRejectedResponse { rejected }))
    }

    async fn freeze_environment(
        &self,
        req: Request<pb::FreezeEnvironmentRequest>,
    ) -> Result<Response<pb::Freeze>, Status> {
        let by = allowed(&req, Action::Deploy)?;
        let r = req.into_inner();
        let now = now_ms();
        let until_ms = if r.for_ms == 0 { 0 } else { now.saturating_add(r.for_ms) };
        let f = Freeze { environment: r.environment, reason: r.reason, by, from_ms: now, until_ms };
        let f = freezes::freeze(self.store.as_ref(), f).await.map_err(freeze_error)?;
        tracing::warn!(environment = %f.environment, reason = %f.reason, by = %f.by, until_ms = f.until_ms, "environment frozen");
        Ok(Response::new(freeze_view(&f)))
    }

    async fn unfreeze_environment(
        &self,
        req: Request<pb::UnfreezeEnvironmentRequest>,
    ) -> Result<Response<pb::Freeze>, Status> {
        let by = allowed(&req, Action::Deploy)?;
        let env = req.into_inner().environment;
        let f = freezes::unfreeze(self.store.as_ref(), &env).await.map_err(freeze_error)?;
        tracing::warn!(environment = %env, by = %by, "environment unfrozen");
        Ok(Response::new(freeze_view(&f)))
    }

    async fn list_freezes(
        &self,
        req: Request<pb::ListFreezesRequest>,
    ) -> Result<Response<pb::ListFreezesResponse>, Status> {
        allowed(&req, Action::Read)?;
        let now = now_ms();
        let all = freezes::load(self.store.as_ref()).await.map_err(ApiError::from)?;
        let freezes = all.values().filter(|f| f.holds(now)).map(freeze_view).collect();
        Ok(Response::new(pb::ListFreezesResponse { freezes }))
    }
}

fn freeze_view(f: &Freeze) -> pb::Freeze {
    pb::Freeze {
        environment: f.environment.clone(),
        reason: f.reason.clone(),
        by: f.by.clone(),
        from_ms: f.from_ms,
        until_ms: f.until_ms,
    }
}

fn freeze_error(e: freezes::FreezeError) -> Status {
    match e {
        freezes::FreezeError::Invalid(why) => ApiError::Invalid(why),
        freezes::FreezeError::NotFrozen(_) => ApiError::NotFound(e.to_string()),
        freezes::FreezeError::Environments(e) => ApiError::from(e),
        freezes::FreezeError::Store(e) => ApiError::Store(e),
    }
    .into()
}
