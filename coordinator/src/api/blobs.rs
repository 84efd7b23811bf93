//! The agent edge's blob transfers: `PutBlob` (a job's artifacts, stored
//! as they stream in, refused past `--max-artifact-bytes`; resumable: a
//! query header asks what is held, and an upload whose stream broke goes
//! on from that byte) and `GetBlob` (only what an attempt the agent holds
//! needs, from an offset to resume), and the check that a result's
//! artifacts were stored. See `crate::blobs` for the store.

use std::pin::Pin;

use drover_proto::v1 as pb;
use tokio::sync::oneshot;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info};

use super::agent::{AgentApi, abbreviate, attempt_id, check_job_token};
use super::require_agent;
use super::status::ApiError;
use crate::blobs::{self, Blobs};
use crate::core::machine::{ArtifactRef, Outcome};
use crate::scheduler::Event;

/// How many bytes of a blob go in one message, both ways.
pub const BLOB_CHUNK: usize = 256 * 1024;
/// The most bytes one upload message may carry.
const MAX_UPLOAD_CHUNK: usize = 1 << 20;

/// A blob read from the store, as a stream of messages.
pub(crate) fn blob_stream(
    reader: blobs::BlobReader,
) -> Pin<Box<dyn Stream<Item = Result<pb::BlobData, Status>> + Send>> {
    let stream = futures_util::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        match reader.next(BLOB_CHUNK).await? {
            Ok(data) => Some((Ok(pb::BlobData { data }), Some(reader))),
            Err(e) => Some((Err(Status::internal(format!("cannot read the blob: {e}"))), None)),
        }
    });
    Box::pin(stream)
}

/// A result's artifacts as the agent sent them, checked for form: a sha256
/// and a size. Whether the blob is there is checked by the session loop.
pub(super) fn artifact(a: Option<pb::Artifact>) -> Result<Option<ArtifactRef>, String> {
    let Some(a) = a else { return Ok(None) };
    if !blobs::is_digest(&a.sha256) {
        return Err(format!("its artifacts were reported with an invalid sha256 {:?}", abbreviate(&a.sha256)));
    }
    Ok(Some(ArtifactRef { sha256: a.sha256, size: a.size, files: a.files }))
}

/// A succeeded result names artifacts the agent uploaded before it: when
/// the blob is not there, or not of that size, the job failed, for want of
/// its artifacts.
pub(super) async fn check_artifact(blobs: &Blobs, event: &mut Event) {
    let Event::Result { outcome: outcome @ Outcome::Succeeded { artifact: Some(_), .. }, .. } = event else { return };
    let Outcome::Succeeded { artifact: Some(a), .. } = &*outcome else { return };
    let problem = match blobs.len(&a.sha256).await {
        Ok(len) if len == a.size => return,
        Ok(len) => format!("is {len} bytes, not the {} reported", a.size),
        Err(e) => e.to_string(),
    };
    *outcome = Outcome::Failed { exit_code: -1, detail: format!("its artifacts (sha256 {}) {problem}", a.sha256) };
}

/// A blob store error as the caller should see it: its own input refused,
/// a blob not there, or the store failing.
/// A resume the store cannot go on with is a failed precondition (the
/// sender starts again from byte 0); a blob being written by another
/// upload is aborted (the sender asks again shortly).
pub(crate) fn blob_status(e: blobs::BlobError) -> Status {
    use blobs::BlobError::*;
    match e {
        TooLarge { .. } | DigestMismatch { .. } | SizeMismatch { .. } | BadDigest(_) | BadOffset { .. } => {
            ApiError::Invalid(e.to_string()).into()
        }
        PartialMismatch { .. } => ApiError::Precondition(e.to_string()).into(),
        Busy(_) => Status::aborted(e.to_string()),
        StoreFull { .. } => Status::resource_exhausted(e.to_string()),
        Missing(_) => ApiError::NotFound(e.to_string()).into(),
        Io { .. } | Remote { .. } | BadUrl(_) => Status::internal(e.to_string()),
    }
}

/// `PutBlob`: the header names the attempt, the digest and the size; the
/// bytes are stored as they come, from the header's offset. A query
/// header is answered with what the store holds of the blob instead.
pub(super) async fn put(
    api: &AgentApi,
    req: Request<Streaming<pb::BlobUpload>>,
) -> Result<Response<pb::PutBlobResponse>, Status> {
    use pb::blob_upload::Part;
    let name = require_agent(&req)?;
    let mut inbound = req.into_inner();
    let header = match inbound.message().await? {
        Some(pb::BlobUpload { part: Some(Part::Header(h)) }) => h,
        _ => return Err(ApiError::Invalid("an upload starts with its header".into()).into()),
    };
    let id = attempt_id(&header.attempt_id).map_err(ApiError::Invalid)?;
    check_job_token(api, &name, &id, &header.job_token).await?;
    // Only for an attempt it holds: an agent cannot fill the store with
    // blobs no job of its will name, nor learn what it holds of others.
    let (sched, _) = super::leader(&api.role)?;
    let (reply, allowed) = oneshot::channel();
    sched
        .send(Event::MayUpload { name: name.clone(), id: id.clone(), reply })
        .await
        .map_err(|_| ApiError::NotLeader(None))?;
    if !allowed.await.unwrap_or(false) {
        return Err(ApiError::PermissionDenied(format!("agent {name} does not hold attempt {id}")).into());
    }
    if !blobs::is_digest(&header.sha256) {
        return Err(ApiError::Invalid(format!("{:?} is not a sha256 digest", abbreviate(&header.sha256))).into());
    }
    if header.query {
        // Stored whole: nothing to send. Else what a broken upload left,
        // for the agent to go on from.
        let stored = api.blobs.stored(&header.sha256).await.map_err(blob_status)?;
        let partial = if stored { 0 } else { api.blobs.partial(&header.sha256).await.map_err(blob_status)? };
        return Ok(Response::new(pb::PutBlobResponse { sha256: String::new(), stored, partial }));
    }
    let what = format!("the artifacts of job {} (attempt {})", id.job, id.attempt);
    if header.size > api.max_artifact_bytes {
        let e = blobs::BlobError::TooLarge { what, limit: api.max_artifact_bytes, flag: "--max-artifact-bytes" };
        return Err(ApiError::Invalid(e.to_string()).into());
    }
    // The store's budget, before a byte is taken (a resumed upload's bytes
    // so far were counted when it began).
    if header.offset == 0 {
        api.blobs.check_room(header.size).map_err(blob_status)?;
    }
    if header.offset > header.size {
        return Err(ApiError::Invalid(format!(
            "an upload of {} bytes cannot go on from byte {}",
            header.size, header.offset
        ))
        .into());
    }
    let mut writer = api
        .blobs
        .upload_writer(&header.sha256, header.offset, api.max_artifact_bytes, what, "--max-artifact-bytes")
        .await
        .map_err(blob_status)?;
    if header.offset > 0 {
        let (sha256, offset, size) = (&header.sha256, header.offset, header.size);
        info!(agent = %name, attempt = %id, %sha256, offset, size, "resuming an upload at byte {offset}");
    }
    loop {
        let msg = match inbound.message().await {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(status) => {
                // Its bytes so far stay, for the agent to go on from.
                let (sha256, at, size) = (&header.sha256, writer.written(), header.size);
                let error = status.message();
                info!(agent = %name, attempt = %id, %sha256, at, size, error, "an upload broke; kept its bytes");
                return Err(status);
            }
        };
        match msg.part {
            Some(Part::Data(data)) if data.len() <= MAX_UPLOAD_CHUNK => {
                writer.write(&data).await.map_err(blob_status)?;
            }
            Some(Part::Data(data)) => {
                writer.discard();
                return Err(ApiError::Invalid(format!(
                    "an upload message of {} bytes is over the limit of {MAX_UPLOAD_CHUNK}",
                    data.len()
                ))
                .into());
            }
            _ => {
                writer.discard();
                return Err(ApiError::Invalid("an upload has one header, first".into()).into());
            }
        }
    }
    let (sha256, len) = writer.finish(&header.sha256, header.size).await.map_err(|e| match e {
        // The bytes kept from before the break were not what they should
        // have been: they are dropped, and the agent sends it all again.
        blobs::BlobError::DigestMismatch { .. } if header.offset > 0 => ApiError::Precondition(format!(
            "{e} (it went on from byte {} of a partial upload, which is dropped: send it again from byte 0)",
            header.offset
        ))
        .into(),
        e => blob_status(e),
    })?;
    debug!(agent = %name, attempt = %id, %sha256, len, resumed_at = header.offset, "stored an artifact");
    Ok(Response::new(pb::PutBlobResponse { sha256, ..Default::default() }))
}

/// `GetBlob`: for a job, only a blob its attempt needs (a need's artifact,
/// or an archive of its cache), the request naming the attempt and carrying
/// its job token; for a deployment's install (no attempt), only a release
/// sent to this agent.
pub(super) async fn get(
    api: &AgentApi,
    req: Request<pb::GetBlobRequest>,
) -> Result<Response<Pin<Box<dyn Stream<Item = Result<pb::BlobData, Status>> + Send>>>, Status> {
    let name = require_agent(&req)?;
    let pb::GetBlobRequest { sha256, offset, cache_attempt_id, cache_key, attempt_id: attempt, job_token } =
        req.into_inner();
    // Only what one of its own attempts needs: an agent is untrusted,
    // and the digests of other runs' artifacts are no secret to it. A
    // cache's archive: only of an entry in its attempt's scope.
    let blob = abbreviate(&sha256);
    let refusal = if !cache_key.is_empty() {
        let ok = super::caches::may_fetch(api, &name, (&cache_attempt_id, &job_token), &cache_key, &sha256).await?;
        (!ok).then(|| format!("attempt {cache_attempt_id}'s cache entry {cache_key:?} has no blob {blob}"))
    } else {
        let attempt = match attempt.as_str() {
            "" => None,
            id => {
                let id = attempt_id(id).map_err(ApiError::Invalid)?;
                check_job_token(api, &name, &id, &job_token).await?;
                Some(id)
            }
        };
        let (sched, _) = super::leader(&api.role)?;
        let (reply, allowed) = oneshot::channel();
        let event = Event::MayFetch { name: name.clone(), attempt: attempt.clone(), sha256: sha256.clone(), reply };
        sched.send(event).await.map_err(|_| ApiError::NotLeader(None))?;
        let allowed = allowed.await.unwrap_or(false);
        (!allowed).then(|| match attempt {
            Some(id) => format!(
                "attempt {id} of agent {name} does not need blob {blob} (a job downloads only its needs' \
                 artifacts, while it holds the attempt)"
            ),
            None => format!(
                "agent {name} holds no attempt that needs blob {blob} (a job's download names its attempt and \
                 carries its job token; without one, only a release sent to this agent is served)"
            ),
        })
    };
    if let Some(why) = refusal {
        return Err(ApiError::PermissionDenied(why).into());
    }
    let (reader, _) = api.blobs.open_blob_at(&sha256, offset).await.map_err(blob_status)?;
    Ok(Response::new(blob_stream(reader)))
}
