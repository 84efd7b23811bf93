//! The agent edge's caches: `RestoreCache` and `SaveCache` for an attempt
//! the agent holds whose job declares a `cache:` (the scheduler says which
//! scope that attempt's run has), the check that lets `GetBlob` serve a
//! cache's archive, and what the agent tells of its caches (its Hello's
//! list, its result's report), checked for form. See `crate::caches`.

use drover_proto::v1 as pb;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use tracing::debug;

use super::agent::{AgentApi, abbreviate, attempt_id, check_job_token};
use super::require_agent;
use super::status::ApiError;
use crate::blobs;
use crate::caches::{CacheBlob, CacheRecord, scope_id};
use crate::core::fleet::AttemptId;
use crate::core::machine::CacheNote;
use crate::scheduler::Event;
use drover_pipeline::cache_key::key_problem;
use drover_telemetry::trace::now_ms;

/// The most cache entries an agent's Hello may list.
pub const MAX_HELLO_CACHES: usize = 1000;
/// The most restore-keys one lookup may try.
const MAX_RESTORE_KEYS: usize = 10;
/// Where a cache's archives unpack.
const ROOTS: [&str; 2] = ["workspace", "home"];

/// The scope of attempt `id`'s caches, if agent `name` holds it and its job
/// has a cache; otherwise the refusal.
async fn scope(api: &AgentApi, name: &str, id: &AttemptId) -> Result<String, Status> {
    let (sched, _) = super::leader(&api.role)?;
    let (reply, scope) = oneshot::channel();
    sched
        .send(Event::CacheScope { name: name.to_string(), id: id.clone(), reply })
        .await
        .map_err(|_| ApiError::NotLeader(None))?;
    scope.await.ok().flatten().ok_or_else(|| {
        ApiError::PermissionDenied(format!("agent {name} holds no attempt {id} of a job with a cache")).into()
    })
}

fn check_key(what: &str, key: &str) -> Result<(), Status> {
    match key_problem(key) {
        Some(problem) => Err(ApiError::Invalid(format!("{what} {:?}: {problem}", abbreviate(key))).into()),
        None => Ok(()),
    }
}

fn blob_view(b: &CacheBlob) -> pb::CacheBlob {
    pb::CacheBlob { root: b.root.clone(), sha256: b.sha256.clone(), size: b.size }
}

/// `RestoreCache`: the entry for the key, or the newest a restore-key
/// matches, in the attempt's scope.
pub(super) async fn restore(
    api: &AgentApi,
    req: Request<pb::RestoreCacheRequest>,
) -> Result<Response<pb::RestoreCacheResponse>, Status> {
    let name = require_agent(&req)?;
    let req = req.into_inner();
    let id = attempt_id(&req.attempt_id).map_err(ApiError::Invalid)?;
    check_job_token(api, &name, &id, &req.job_token).await?;
    check_key("cache key", &req.key)?;
    if req.restore_keys.len() > MAX_RESTORE_KEYS {
        return Err(ApiError::Invalid(format!("more than {MAX_RESTORE_KEYS} restore-keys")).into());
    }
    for prefix in &req.restore_keys {
        check_key("restore-key", prefix)?;
    }
    let scope = scope(api, &name, &id).await?;
    let found = api.caches.lookup(&scope, &req.key, &req.restore_keys, now_ms()).await.map_err(ApiError::from)?;
    let sid = scope_id(&scope);
    Ok(Response::new(match found {
        Some((record, _)) => pb::RestoreCacheResponse {
            found: true,
            key: record.key.clone(),
            blobs: record.blobs.iter().map(blob_view).collect(),
            scope_id: sid,
        },
        None => pb::RestoreCacheResponse { found: false, key: String::new(), blobs: Vec::new(), scope_id: sid },
    }))
}

/// `SaveCache`: records the archives the agent uploaded under the key,
/// unless the key has an entry already. Each archive must be in the blob
/// store at the size given.
pub(super) async fn save(
    api: &AgentApi,
    req: Request<pb::SaveCacheRequest>,
) -> Result<Response<pb::SaveCacheResponse>, Status> {
    let name = require_agent(&req)?;
    let req = req.into_inner();
    let id = attempt_id(&req.attempt_id).map_err(ApiError::Invalid)?;
    check_job_token(api, &name, &id, &req.job_token).await?;
    check_key("cache key", &req.key)?;
    // Permission first: a refused agent learns nothing of the blobs.
    let scope = scope(api, &name, &id).await?;
    if req.blobs.is_empty() || req.blobs.len() > ROOTS.len() {
        return Err(ApiError::Invalid(format!("a cache has 1 or 2 archives, not {}", req.blobs.len())).into());
    }
    let mut blobs = Vec::with_capacity(req.blobs.len());
    for b in req.blobs {
        if !ROOTS.contains(&b.root.as_str()) || blobs.iter().any(|have: &CacheBlob| have.root == b.root) {
            return Err(ApiError::Invalid(format!(
                "a cache archive's root is workspace or home, once each, not {:?}",
                abbreviate(&b.root)
            ))
            .into());
        }
        if !blobs::is_digest(&b.sha256) {
            return Err(ApiError::Invalid(format!("{:?} is not a sha256 digest", abbreviate(&b.sha256))).into());
        }
        match api.blobs.len(&b.sha256).await {
            Ok(len) if len == b.size => {}
            Ok(len) => {
                return Err(
                    ApiError::Invalid(format!("blob {} is {len} bytes, not the {} given", b.sha256, b.size)).into()
                );
            }
            Err(e) => return Err(super::blobs::blob_status(e)),
        }
        blobs.push(CacheBlob { root: b.root, sha256: b.sha256, size: b.size });
    }
    let now = now_ms();
    let record = CacheRecord {
        scope: scope.clone(),
        key: req.key,
        blobs,
        created_ms: now,
        last_used_ms: now,
        run: id.run,
        job: id.job.clone(),
    };
    let saved = api.caches.save(&record).await.map_err(ApiError::from)?;
    debug!(agent = %name, attempt = %id, key = %record.key, saved, size = record.size(), "cache save");
    Ok(Response::new(pb::SaveCacheResponse { saved, scope_id: scope_id(&scope) }))
}

/// Whether `GetBlob` may serve blob `sha256` to agent `name` as an archive
/// of the cache entry `key` of the attempt `attempt`'s scope, `token`
/// being that attempt's job token.
pub(super) async fn may_fetch(
    api: &AgentApi,
    name: &str,
    (attempt, token): (&str, &str),
    key: &str,
    sha256: &str,
) -> Result<bool, Status> {
    let id = attempt_id(attempt).map_err(ApiError::Invalid)?;
    check_job_token(api, name, &id, token).await?;
    check_key("cache key", key)?;
    let scope = scope(api, name, &id).await?;
    Ok(api.caches.names_blob(&scope, key, sha256).await.map_err(ApiError::from)?)
}

/// The cache entries a Hello lists, checked: "SCOPE_ID/KEY" each.
pub(super) fn check_hello_caches(caches: &[String]) -> Result<(), String> {
    if caches.len() > MAX_HELLO_CACHES {
        return Err(format!("it lists {} cache entries, over the limit of {MAX_HELLO_CACHES}", caches.len()));
    }
    for entry in caches {
        let ok = entry.split_once('/').is_some_and(|(sid, key)| {
            sid.len() == 16 && sid.bytes().all(|b| b.is_ascii_hexdigit()) && key_problem(key).is_none()
        });
        if !ok {
            return Err(format!("cache entry {:?} is not SCOPE_ID/KEY", abbreviate(entry)));
        }
    }
    Ok(())
}

/// A result's cache report, checked for form; `None` when it has none.
pub(super) fn note(report: Option<pb::CacheReport>) -> Result<Option<CacheNote>, String> {
    let Some(r) = report else { return Ok(None) };
    for key in std::iter::once(&r.key).chain((!r.restored.is_empty()).then_some(&r.restored)) {
        if let Some(problem) = key_problem(key) {
            return Err(format!("its cache report names key {:?}: {problem}", abbreviate(key)));
        }
    }
    Ok(Some(CacheNote { key: r.key, restored: (!r.restored.is_empty()).then_some(r.restored), saved: r.saved }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_agent_says_of_its_caches_is_checked_for_form() {
        let sid = "0123456789abcdef";
        assert!(check_hello_caches(&[format!("{sid}/cargo-1")]).is_ok());
        for (bad, why) in [
            ("cargo-1".to_string(), "no scope"),
            (format!("{sid}/"), "no key"),
            (format!("{sid}/a/b"), "a slash in the key"),
            (format!("0123/{}", "k"), "a short scope id"),
            (format!("{sid}/{}", "k".repeat(600)), "a key too long"),
        ] {
            assert!(check_hello_caches(&[bad]).is_err(), "{why}");
        }
        let many: Vec<String> = (0..=MAX_HELLO_CACHES).map(|i| format!("{sid}/k{i}")).collect();
        assert!(check_hello_caches(&many).is_err());

        let report = |key: &str, restored: &str| pb::CacheReport {
            key: key.into(),
            restored: restored.into(),
            saved: true,
            scope_id: sid.into(),
        };
        assert_eq!(
            note(Some(report("cargo-2", "cargo-1"))).unwrap(),
            Some(CacheNote { key: "cargo-2".into(), restored: Some("cargo-1".into()), saved: true })
        );
        assert_eq!(note(Some(report("cargo-2", ""))).unwrap().unwrap().restored, None);
        assert!(note(Some(report("../x", ""))).is_err());
        assert!(note(Some(report("ok", "bad key"))).is_err());
        assert_eq!(note(None).unwrap(), None);
    }
}
