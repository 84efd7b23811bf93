//! The control API's calls on the secrets vault and the caches: `drover
//! secret set|ls|rm`, `drover caches` and `drover cache rm`. Values never
//! leave: a secret is listed by name, size, who and when.

use drover_proto::v1 as pb;
use drover_telemetry::trace::now_ms;
use tonic::{Request, Response, Status};

use super::allowed;
use super::status::ApiError;
use crate::caches::Caches;
use crate::core::authz::{Action, Area};
use crate::secrets::{SecretInfo, Vault};

fn secret_view(s: SecretInfo) -> pb::Secret {
    pb::Secret { name: s.name, updated_ms: s.updated_ms, updated_by: s.updated_by, size: s.size }
}

pub(super) async fn set_secret(
    vault: &Vault,
    store: &dyn crate::store::Store,
    req: Request<pb::SetSecretRequest>,
) -> Result<Response<pb::Secret>, Status> {
    let caller = super::authorize(&req, Action::Administer(Area::Secrets))?;
    let by = caller.name().to_owned();
    let source = req.remote_addr();
    let req = req.into_inner();
    let info = vault.set(&req.name, &req.value, &by, now_ms()).await.map_err(ApiError::from)?;
    tracing::info!(secret = %info.name, by = %by, size = info.size, "secret set");
    crate::audit::by_caller(store, (&caller, source), "secret.set", &info.name, "").await;
    Ok(Response::new(secret_view(info)))
}

pub(super) async fn list_secrets(
    vault: &Vault,
    req: Request<pb::ListSecretsRequest>,
) -> Result<Response<pb::ListSecretsResponse>, Status> {
    allowed(&req, Action::Administer(Area::Secrets))?;
    let secrets = vault.list().await.map_err(ApiError::from)?;
    Ok(Response::new(pb::ListSecretsResponse { secrets: secrets.into_iter().map(secret_view).collect() }))
}

pub(super) async fn delete_secret(
    vault: &Vault,
    store: &dyn crate::store::Store,
    req: Request<pb::DeleteSecretRequest>,
) -> Result<Response<pb::DeleteSecretResponse>, Status> {
    let caller = super::authorize(&req, Action::Administer(Area::Secrets))?;
    let by = caller.name().to_owned();
    let source = req.remote_addr();
    let name = req.into_inner().name;
    vault.delete(&name).await.map_err(ApiError::from)?;
    tracing::info!(secret = %name, by = %by, "secret deleted");
    crate::audit::by_caller(store, (&caller, source), "secret.remove", &name, "").await;
    Ok(Response::new(pb::DeleteSecretResponse {}))
}

pub(super) async fn list_caches(
    caches: &Caches,
    req: Request<pb::ListCachesRequest>,
) -> Result<Response<pb::ListCachesResponse>, Status> {
    allowed(&req, Action::Read)?;
    let mut entries = caches.list().await.map_err(ApiError::from)?;
    // Most recently used first.
    entries.sort_by(|(_, _, a), (_, _, b)| b.last_used_ms.cmp(&a.last_used_ms).then(a.key.cmp(&b.key)));
    let caches = entries
        .into_iter()
        .map(|(_, _, c)| pb::CacheEntry {
            size: c.size(),
            scope: c.scope,
            key: c.key,
            created_ms: c.created_ms,
            last_used_ms: c.last_used_ms,
            run_id: c.run.to_string(),
            job: c.job,
        })
        .collect();
    Ok(Response::new(pb::ListCachesResponse { caches }))
}

pub(super) async fn delete_cache(
    caches: &Caches,
    req: Request<pb::DeleteCacheRequest>,
) -> Result<Response<pb::DeleteCacheResponse>, Status> {
    let by = allowed(&req, Action::Administer(Area::Caches))?;
    let req = req.into_inner();
    let scope = (!req.scope.is_empty()).then_some(req.scope.as_str());
    let deleted = caches.remove(&req.key, scope).await.map_err(ApiError::from)?;
    if deleted == 0 {
        let within = scope.map(|s| format!(" in scope {s}")).unwrap_or_default();
        return Err(
            ApiError::NotFound(format!("no cache has key {:?}{within}; `drover caches` lists them", req.key)).into()
        );
    }
    tracing::info!(key = %req.key, by = %by, deleted, "caches deleted");
    Ok(Response::new(pb::DeleteCacheResponse { deleted: deleted as u32 }))
}
