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

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::{info, warn};

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
    /// broken streams; `grant` names the attempt and cache entry when it is
    /// a cache's archive.
    async fn fetch_blob(
        &self,
        sha256: &str,
        size: u64,
        dest: &Path,
        grant: Option<(&str, &str)>,
    ) -> Result<(), String> {
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
                let (cache_attempt_id, cache_key) =
                    grant.map_or_else(Default::default, |(a, k)| (a.to_string(), k.to_string()));
                let request =
                    pb::GetBlobRequest { sha256: sha256.to_string(), offset: len, cache_attempt_id, cache_key };
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

fn failure(status: tonic::Status) -> Failure {
    let text = drover_client::chain::error_chain(&status);
    if retryable(&status) { Failure::Retry(text) } else { Failure::Final(status.message().to_string()) }
}

#[async_trait::async_trait]
impl Transfer for ChannelTransfer {
    async fn fetch(&self, sha256: &str, size: u64, dest: &Path) -> Result<(), String> {
        self.fetch_blob(sha256, size, dest, None).await
    }

    async fn fetch_cache(&self, attempt: &str, key: &str, blob: &BlobRef, dest: &Path) -> Result<(), String> {
        self.fetch_blob(&blob.sha256, blob.size, dest, Some((attempt, key))).await
    }

    async fn restore_cache(
        &self,
        attempt: &str,
        key: &str,
        restore_keys: &[String],
    ) -> Result<(Option<Found>, String), String> {
        let request = pb::RestoreCacheRequest {
            attempt_id: attempt.to_string(),
            key: key.to_string(),
            restore_keys: restore_keys.to_vec(),
        };
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

    async fn save_cache(&self, attempt: &str, key: &str, blobs: &[BlobRef]) -> Result<(bool, String), String> {
        let request = pb::SaveCacheRequest {
            attempt_id: attempt.to_string(),
            key: key.to_string(),
            blobs: blobs
                .iter()
                .map(|b| pb::CacheBlob { root: b.root.clone(), sha256: b.sha256.clone(), size: b.size })
                .collect(),
        };
        let answer = self
            .patiently("a cache save", |mut client| {
                let request = request.clone();
                async move { Ok(client.save_cache(request).await.map_err(failure)?.into_inner()) }
            })
            .await?;
        Ok((answer.saved, answer.scope_id))
    }

    async fn upload(&self, attempt: &str, path: &Path, sha256: &str, size: u64) -> Result<(), String> {
        // Set when the coordinator refused to go on with its partial copy:
        // the next try sends it all from byte 0. That happens once; a
        // second refusal ends the upload.
        let (from_zero, restarted) = (AtomicBool::new(false), AtomicBool::new(false));
        let (from_zero, restarted) = (&from_zero, &restarted);
        self.patiently("an upload", |mut client| async move {
            let header = |offset, query| pb::BlobUpload {
                part: Some(pb::blob_upload::Part::Header(pb::BlobHeader {
                    attempt_id: attempt.to_string(),
                    sha256: sha256.to_string(),
                    size,
                    offset,
                    query,
                })),
            };
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
