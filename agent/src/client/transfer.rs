//! Artifact and cache transfers over the agent's connection: `PutBlob` and `GetBlob`
//! (and the cache lookups, `RestoreCache` and `SaveCache`),
//! one gRPC stream per transfer beside the session stream, on the channel
//! of the current session (the same mutual-TLS connection). A transfer that
//! breaks (the coordinator restarted, a failover) goes on over the next
//! session's channel, for up to [`PATIENCE`]: a download resumes at the byte
//! where it broke (`GetBlobRequest.offset`); an upload first asks the
//! coordinator what it holds (a query header), and then sends nothing if the
//! blob is stored, or the rest from the byte its partial copy reached
//! (`BlobHeader.offset`). What arrives is checked against the digest at both
//! ends, so a transfer that broke halfway can never be taken for a whole one.
//!
//! Every request of a job's transfer names its attempt and carries the
//! attempt's job token (`attempt_id` and `job_token` in `GetBlobRequest`,
//! `BlobHeader`, `RestoreCacheRequest`, `SaveCacheRequest`): the resumable
//! upload's query and each resumption too. A deployment's install names
//! neither. The requests are built in one place each, below, and never
//! logged.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::exec::JobAuth;
use crate::exec::artifacts::Transfer;
use crate::exec::cache::{BlobRef, Found};

/// How long a transfer keeps trying over broken connections.
pub const PATIENCE: Duration = Duration::from_secs(120);
/// Bytes per upload message.
const CHUNK: usize = 256 * 1024;

/// Transfers over the current session's channel (published by the
/// reconnect loop; `None` between sessions).
pub struct ChannelTransfer {
    pub channel: watch::Receiver<Option<Channel>>,
}

/// Whether trying again can help: the coordinator went away or answered
/// that it could not serve now; not a refusal of what we sent.
fn retryable(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(status.code(), Unavailable | Unknown | Cancelled | Aborted | DeadlineExceeded | Internal)
        || std::error::Error::source(status).is_some()
}

impl ChannelTransfer {
    /// The current session's channel, waiting for one for up to `until`.
    async fn client(
        &self,
        until: tokio::time::Instant,
    ) -> Result<pb::agent_service_client::AgentServiceClient<Channel>, String> {
        let mut rx = self.channel.clone();
        let wait = rx.wait_for(Option::is_some);
        match tokio::time::timeout_at(until, wait).await {
            Ok(Ok(channel)) => {
                Ok(pb::agent_service_client::AgentServiceClient::new(channel.clone().expect("waited for Some")))
            }
            _ => Err("no connection to a coordinator".into()),
        }
    }

    /// Downloads blob `sha256` into the new file `dest`, resuming across
    /// broken streams; `what` says what it is, and so what the requests
    /// name.
    async fn fetch_blob(&self, sha256: &str, size: u64, dest: &Path, what: Download<'_>) -> Result<(), String> {
        let local = |e: std::io::Error| format!("{}: {e}", dest.display());
        let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
        // What has arrived so far, kept across broken streams: the next
        // one asks for the rest from here.
        let (mut hasher, mut len) = (Sha256::new(), 0u64);
        let until = tokio::time::Instant::now() + PATIENCE;
        let mut wait = Duration::from_millis(100);
        loop {
            let mut client = self.client(until).await?;
            let streamed = async {
                let request = get_blob_request(sha256, len, what);
                let mut stream = client.get_blob(request).await.map_err(failure)?.into_inner();
                while let Some(chunk) = stream.message().await.map_err(failure)? {
                    if len + chunk.data.len() as u64 > size {
                        return Err(Failure::Final(format!("the blob is longer than the {size} bytes announced")));
                    }
                    file.write_all(&chunk.data).await.map_err(|e| Failure::Final(local(e)))?;
                    hasher.update(&chunk.data);
                    len += chunk.data.len() as u64;
                }
                Ok(())
            }
            .await;
            match streamed {
                Ok(()) if len == size => {
                    file.flush().await.map_err(local)?;
                    let got: String =
                        std::mem::take(&mut hasher).finalize().iter().map(|b| format!("{b:02x}")).collect();
                    return if got == sha256 {
                        Ok(())
                    } else {
                        Err(format!("got {size} bytes with sha256 {got}, not {sha256}"))
                    };
                }
                // A stream that ended early, as a broken one does.
                Ok(()) => warn!(at = len, size, "a download ended early; resuming"),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(e)) if tokio::time::Instant::now() + wait < until => {
                    warn!(error = %e, at = len, size, "a download broke; resuming where it stopped");
                }
                Err(Failure::Retry(e)) => return Err(format!("{e} (gave up after {}s)", PATIENCE.as_secs())),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or [`PATIENCE`]
    /// runs out.
    async fn patiently<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, String>
    where
        F: FnMut(pb::agent_service_client::AgentServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let until = tokio::time::Instant::now() + PATIENCE;
        let mut wait = Duration::from_millis(100);
        loop {
            let client = self.client(until).await?;
            match attempt(client).await {
                Ok(value) => return Ok(value),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(e)) if tokio::time::Instant::now() + wait < until => {
                    warn!(error = %e, "{what} broke; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(Failure::Retry(e)) => return Err(format!("{e} (gave up after {}s)", PATIENCE.as_secs())),
            }
        }
    }
}

/// The next upload message from the file; the stream ends at its end (or
/// at a read error, which the coordinator then refuses for its length).
async fn next_chunk(file: Option<tokio::fs::File>) -> Option<(pb::BlobUpload, Option<tokio::fs::File>)> {
    let mut file = file?;
    let mut buf = vec![0u8; CHUNK];
    match file.read(&mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.truncate(n);
            Some((pb::BlobUpload { part: Some(pb::blob_upload::Part::Data(buf)) }, Some(file)))
        }
    }
}

enum Failure {
    Retry(String),
    Final(String),
}

/// What a download is of, and so what its requests name.
#[derive(Debug, Clone, Copy)]
enum Download<'a> {
    /// A deployment's install: no attempt, no token.
    Release,
    /// The artifacts of a job that `job` needs.
    Artifact(JobAuth<'a>),
    /// An archive of cache entry `key`, found for `job`.
    Cache(JobAuth<'a>, &'a str),
}

/// The request for blob `sha256` from byte `offset`.
fn get_blob_request(sha256: &str, offset: u64, what: Download<'_>) -> pb::GetBlobRequest {
    let mut request = pb::GetBlobRequest { sha256: sha256.to_string(), offset, ..Default::default() };
    match what {
        Download::Release => {}
        Download::Artifact(job) => {
            request.attempt_id = job.attempt.to_string();
            request.job_token = job.token.expose().to_string();
        }
        Download::Cache(job, key) => {
            request.attempt_id = job.attempt.to_string();
            request.cache_attempt_id = job.attempt.to_string();
            request.cache_key = key.to_string();
            request.job_token = job.token.expose().to_string();
        }
    }
    request
}

/// The header of `job`'s upload of blob `sha256` from byte `offset`, or
/// (`query`) of the question what the coordinator holds of it.
fn blob_header(job: JobAuth<'_>, sha256: &str, size: u64, offset: u64, query: bool) -> pb::BlobUpload {
    pb::BlobUpload {
        part: Some(pb::blob_upload::Part::Header(pb::BlobHeader {
            attempt_id: job.attempt.to_string(),
            sha256: sha256.to_string(),
            size,
            offset,
            query,
            job_token: job.token.expose().to_string(),
        })),
    }
}

fn restore_cache_request(job: JobAuth<'_>, key: &str, restore_keys: &[String]) -> pb::RestoreCacheRequest {
    pb::RestoreCacheRequest {
        attempt_id: job.attempt.to_string(),
        key: key.to_string(),
        restore_keys: restore_keys.to_vec(),
        job_token: job.token.expose().to_string(),
    }
}

fn save_cache_request(job: JobAuth<'_>, key: &str, blobs: &[BlobRef]) -> pb::SaveCacheRequest {
    pb::SaveCacheRequest {
        attempt_id: job.attempt.to_string(),
        key: key.to_string(),
        blobs: blobs
            .iter()
            .map(|b| pb::CacheBlob { root: b.root.clone(), sha256: b.sha256.clone(), size: b.size })
            .collect(),
        job_token: job.token.expose().to_string(),
    }
}

fn failure(status: tonic::Status) -> Failure {
    let text = drover_client::chain::error_chain(&status);
    if retryable(&status) { Failure::Retry(text) } else { Failure::Final(status.message().to_string()) }
}

#[async_trait::async_trait]
impl Transfer for ChannelTransfer {
    async fn fetch(&self, sha256: &str, size: u64, dest: &Path) -> Result<(), String> {
        self.fetch_blob(sha256, size, dest, Download::Release).await
    }

    async fn fetch_artifact(&self, job: JobAuth<'_>, sha256: &str, size: u64, dest: &Path) -> Result<(), String> {
        self.fetch_blob(sha256, size, dest, Download::Artifact(job)).await
    }

    async fn fetch_cache(&self, job: JobAuth<'_>, key: &str, blob: &BlobRef, dest: &Path) -> Result<(), String> {
        self.fetch_blob(&blob.sha256, blob.size, dest, Download::Cache(job, key)).await
    }

    async fn restore_cache(
        &self,
        job: JobAuth<'_>,
        key: &str,
        restore_keys: &[String],
    ) -> Result<(Option<Found>, String), String> {
        let request = restore_cache_request(job, key, restore_keys);
        let answer = self
            .patiently("a cache lookup", |mut client| {
                let request = request.clone();
                async move { Ok(client.restore_cache(request).await.map_err(failure)?.into_inner()) }
            })
            .await?;
        let found = answer.found.then(|| Found {
            key: answer.key,
            blobs: answer.blobs.into_iter().map(|b| BlobRef { root: b.root, sha256: b.sha256, size: b.size }).collect(),
        });
        Ok((found, answer.scope_id))
    }

    async fn save_cache(&self, job: JobAuth<'_>, key: &str, blobs: &[BlobRef]) -> Result<(bool, String), String> {
        let request = save_cache_request(job, key, blobs);
        let answer = self
            .patiently("a cache save", |mut client| {
                let request = request.clone();
                async move { Ok(client.save_cache(request).await.map_err(failure)?.into_inner()) }
            })
            .await?;
        Ok((answer.saved, answer.scope_id))
    }

    async fn upload(&self, job: JobAuth<'_>, path: &Path, sha256: &str, size: u64) -> Result<(), String> {
        // Set when the coordinator refused to go on with its partial copy:
        // the next try sends it all from byte 0. That happens once; a
        // second refusal ends the upload.
        let (from_zero, restarted) = (AtomicBool::new(false), AtomicBool::new(false));
        let (from_zero, restarted) = (&from_zero, &restarted);
        self.patiently("an upload", |mut client| async move {
            let header = |offset, query| blob_header(job, sha256, size, offset, query);
            let offset = if from_zero.swap(false, Ordering::Relaxed) {
                0
            } else {
                match client.put_blob(futures_util::stream::iter([header(0, true)])).await {
                    Ok(held) if held.get_ref().stored => {
                        info!(%sha256, size, "the coordinator holds this upload's blob already; nothing to send");
                        return Ok(());
                    }
                    // More than the blob is not of it: start afresh.
                    Ok(held) => Some(held.get_ref().partial).filter(|&n| n <= size).unwrap_or(0),
                    // A coordinator from before resumable uploads reads the
                    // query as an upload of no bytes, and refuses it for its
                    // length: send it whole, as it expects.
                    Err(status) if status.code() == tonic::Code::InvalidArgument => 0,
                    Err(status) => return Err(failure(status)),
                }
            };
            let mut file =
                tokio::fs::File::open(path).await.map_err(|e| Failure::Final(format!("{}: {e}", path.display())))?;
            if offset > 0 {
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(|e| Failure::Final(format!("{}: {e}", path.display())))?;
                info!(%sha256, offset, size, "resuming an upload at byte {offset}");
            }
            let body = futures_util::stream::unfold(Some(file), next_chunk);
            let stream = futures_util::StreamExt::chain(futures_util::stream::iter([header(offset, false)]), body);
            match client.put_blob(stream).await {
                Ok(_) => Ok(()),
                // The coordinator cannot go on from there (its partial copy
                // changed, or did not check out at the end).
                Err(status)
                    if status.code() == tonic::Code::FailedPrecondition
                        && offset > 0
                        && !restarted.swap(true, Ordering::Relaxed) =>
                {
                    from_zero.store(true, Ordering::Relaxed);
                    Err(Failure::Retry(format!("{}; sending it again from byte 0", status.message())))
                }
                Err(status) => Err(failure(status)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::JobToken;

    /// Every request of a job's transfer names the attempt and carries its
    /// token; a deployment's install names neither.
    #[test]
    fn a_jobs_requests_carry_its_attempt_and_token() {
        let token = JobToken::new("tok-1".into());
        let job = JobAuth { attempt: "7/build/2", token: &token };
        let blob = BlobRef { root: "workspace".into(), sha256: "ab".repeat(32), size: 9 };

        let get = |what| {
            let r = get_blob_request("cd", 5, what);
            (r.sha256, r.offset, r.attempt_id, r.job_token, r.cache_attempt_id, r.cache_key)
        };
        let s = String::from;
        assert_eq!(get(Download::Release), (s("cd"), 5, s(""), s(""), s(""), s("")));
        assert_eq!(get(Download::Artifact(job)), (s("cd"), 5, s("7/build/2"), s("tok-1"), s(""), s("")));
        assert_eq!(
            get(Download::Cache(job, "cargo-1")),
            (s("cd"), 5, s("7/build/2"), s("tok-1"), s("7/build/2"), s("cargo-1"))
        );

        // The query and each resumption alike.
        for (offset, query) in [(0, true), (0, false), (4, false)] {
            let Some(pb::blob_upload::Part::Header(h)) = blob_header(job, "cd", 9, offset, query).part else {
                panic!("not a header");
            };
            assert_eq!(
                (h.attempt_id.as_str(), h.job_token.as_str(), h.sha256.as_str(), h.size, h.offset, h.query),
                ("7/build/2", "tok-1", "cd", 9, offset, query)
            );
        }

        let restore = restore_cache_request(job, "cargo-1", &["cargo-".into()]);
        assert_eq!(
            (restore.attempt_id.as_str(), restore.job_token.as_str(), restore.key.as_str()),
            ("7/build/2", "tok-1", "cargo-1")
        );
        assert_eq!(restore.restore_keys, ["cargo-"]);
        let save = save_cache_request(job, "cargo-1", std::slice::from_ref(&blob));
        assert_eq!(
            (save.attempt_id.as_str(), save.job_token.as_str(), save.key.as_str()),
            ("7/build/2", "tok-1", "cargo-1")
        );
        assert_eq!(save.blobs, [pb::CacheBlob { root: blob.root, sha256: blob.sha256, size: 9 }]);
    }
}
