//! The notification service (`drover notify add|rm|list|test`): the
//! targets, read and written by any coordinator (`crate::notifications`).
//! A target's URL goes in but never comes out whole: listings show its
//! scheme and host.

use std::sync::Arc;

use drover_proto::v1 as pb;
use drover_telemetry::trace::now_ms;
use tonic::{Request, Response, Status};
use tracing::info;

use super::allowed;
use super::status::ApiError;
use crate::core::authz::{Action, Area};
use crate::notifications::{self, Format, Severity, Target};
use crate::store::Store;

pub struct NotificationApi {
    pub store: Arc<dyn Store>,
}

fn view(t: &Target) -> pb::NotificationTarget {
    pb::NotificationTarget {
        name: t.name.clone(),
        url: t.shown_url(),
        format: t.format.as_str().to_owned(),
        min_severity: t.min_severity.as_str().to_owned(),
        environments: t.environments.clone(),
        kinds: t.kinds.clone(),
        created_by: t.created_by.clone(),
        created_ms: t.created_ms,
    }
}

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotificationApi {
    async fn add_notification(
        &self,
        req: Request<pb::AddNotificationRequest>,
    ) -> Result<Response<pb::NotificationTarget>, Status> {
        let by = allowed(&req, Action::Administer(Area::Notifications))?;
        let r = req.into_inner();
        let target = Target {
            name: r.name,
            url: r.url.trim().to_owned(),
            format: Format::parse(&r.format).map_err(ApiError::Invalid)?,
            min_severity: Severity::parse(&r.min_severity).map_err(ApiError::Invalid)?,
            environments: r.environments,
            kinds: r.kinds,
            created_by: by,
            created_ms: now_ms(),
        };
        let target = notifications::add(self.store.as_ref(), target).await.map_err(ApiError::from)?;
        info!(
            target = %target.name, url = %target.shown_url(), format = target.format.as_str(),
            min_severity = target.min_severity.as_str(), by = %target.created_by,
            "notification target added"
        );
        Ok(Response::new(view(&target)))
    }

    async fn remove_notification(
        &self,
        req: Request<pb::RemoveNotificationRequest>,
    ) -> Result<Response<pb::NotificationTarget>, Status> {
        let by = allowed(&req, Action::Administer(Area::Notifications))?;
        let name = req.into_inner().name;
        let target = notifications::remove(self.store.as_ref(), &name).await.map_err(ApiError::from)?;
        info!(target = %target.name, by = %by, "notification target removed");
        Ok(Response::new(view(&target)))
    }

    async fn list_notifications(
        &self,
        req: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        allowed(&req, Action::Read)?;
        let targets = notifications::list(self.store.as_ref()).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListNotificationsResponse { targets: targets.iter().map(view).collect() }))
    }

    async fn test_notification(
        &self,
        req: Request<pb::TestNotificationRequest>,
    ) -> Result<Response<pb::TestNotificationResponse>, Status> {
        let by = allowed(&req, Action::Administer(Area::Notifications))?;
        let name = req.into_inner().name;
        let target = notifications::get(self.store.as_ref(), &name).await.map_err(ApiError::from)?;
        let tried = notifications::send_test(&target, &by, now_ms()).await;
        info!(
            target = %target.name, url = %target.shown_url(), status = tried.status, error = %tried.error, by = %by,
            "test notification sent"
        );
        Ok(Response::new(pb::TestNotificationResponse {
            delivered: tried.error.is_empty(),
            http_status: u32::from(tried.status),
            error: tried.error,
            took_ms: tried.took.as_millis() as u64,
        }))
    }
}
