//! Sealing: a finished run's log segments move into the blob store.
//!
//! While a run is live its logs are segment files (`crate::segments`),
//! written at their offsets and synced before their chunks' metadata is
//! committed. Once the run has finished nothing writes them again, so the
//! retention controller seals them: each attempt's log, up to the end of
//! its last committed chunk, becomes one content-addressed blob (on the
//! filesystem or in S3, as artifacts are), a record `/sealed-logs/{run}/
//! {job}@{attempt}` names it, and only after that record is committed is
//! the run's segment directory deleted. The chunks' metadata stays: it
//! still says where each chunk starts, how long it is and its checksum.
//!
//! Readers ([`read`]) go to the segment file first and, when it is gone,
//! to the sealed blob, checking each chunk against its checksum either
//! way; a reader that listed the chunks just before a seal finds the
//! record, since it was committed before the file went. A run pruned by
//! retention takes its records with it (the prefix is deleted with the
//! run), and the blob sweep then deletes the blobs no record names.
//!
//! A seal that fails (the blob store down) leaves the segments as they
//! were; the next pass tries again. Each pass seals at most
//! [`RUNS_PER_PASS`] runs, oldest first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blobs::{BlobReader, Blobs, hex};
use crate::core::keys::{self, RunKey};
use crate::core::machine::RunId;
use crate::segments::{Chunk, ChunkMeta, Segments};
use crate::store::embedded::crc32c;
use crate::store::{Compare, Op, Store, StoreError, Txn, decode};

/// The most runs one retention pass seals.
pub const RUNS_PER_PASS: usize = 100;

/// What `/sealed-logs/{run}/{job}@{attempt}` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedLog {
    pub sha256: String,
    pub len: u64,
}

fn store_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// Seals the logs of the finished runs in `finished` (with their run
/// index entries' revisions) that still have segments. Returns how many
/// runs it sealed.
pub async fn seal_finished(
    store: &dyn Store,
    segments: &Arc<Segments>,
    blobs: &Blobs,
    finished: &HashMap<RunId, i64>,
) -> Result<usize, StoreError> {
    let runs = segments.runs().map_err(StoreError::from)?;
    let mut due: Vec<RunId> = runs.into_iter().filter(|r| finished.contains_key(r)).collect();
    due.sort_unstable();
    due.truncate(RUNS_PER_PASS);
    let mut sealed = 0;
    for run in due {
        if seal_run(store, segments, blobs, run, finished[&run]).await? {
            sealed += 1;
        }
    }
    Ok(sealed)
}

/// Seals one finished run's attempts; whether its segments could go.
async fn seal_run(
    store: &dyn Store,
    segments: &Arc<Segments>,
    blobs: &Blobs,
    run: RunId,
    index_rev: i64,
) -> Result<bool, StoreError> {
    // Where each attempt's committed log ends.
    let (kvs, _) = store.range(&keys::logs(run)).await?;
    let mut ends: HashMap<(String, u32), u64> = HashMap::new();
    for kv in &kvs {
        if let Some(RunKey::Log { job, attempt, offset }) = keys::parse_run_key(run, &kv.key) {
            let meta = ChunkMeta::decode(&kv.key, &kv.value)?;
            let end = ends.entry((job.to_string(), attempt)).or_default();
            *end = (*end).max(offset + u64::from(meta.len));
        }
    }
    let mut txn = Txn::default();
    txn.compare.push(Compare::ModRevision(keys::run_index(run), index_rev));
    for ((job, attempt), len) in &ends {
        let path = segments.path(run, job, *attempt).map_err(StoreError::from)?;
        let record = match seal_file(blobs, &path, *len).await {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(run, job = %job, attempt, error = %e, "cannot seal a log; trying again at the next pass");
                return Ok(false);
            }
        };
        txn.success.push(Op::put(keys::sealed_log(run, job, *attempt), crate::records::encode(&record)));
    }
    // Committed only while the run is still there, as it was when listed;
    // then its segments go.
    if !store.txn(txn).await?.succeeded {
        return Ok(false);
    }
    segments.delete_run(run).map_err(StoreError::from)?;
    tracing::debug!(run, attempts = ends.len(), "sealed a finished run's logs into the blob store");
    Ok(true)
}

/// Stores the first `len` bytes of the segment file `path` as a blob.
async fn seal_file(blobs: &Blobs, path: &std::path::Path, len: u64) -> Result<SealedLog, String> {
    let path2 = path.to_path_buf();
    let sha256 = tokio::task::spawn_blocking(move || -> Result<String, String> {
        use std::io::Read;
        let file = std::fs::File::open(&path2).map_err(|e| format!("{}: {e}", path2.display()))?;
        let mut hasher = Sha256::new();
        let copied =
            std::io::copy(&mut file.take(len), &mut hasher).map_err(|e| format!("{}: {e}", path2.display()))?;
        if copied != len {
            return Err(format!("{} holds {copied} bytes, not the {len} committed", path2.display()));
        }
        Ok(hex(&hasher.finalize()))
    })
    .await
    .map_err(|e| e.to_string())??;
    let mut writer =
        blobs.writer(len, format!("the log {}", path.display()), "--log-cap").await.map_err(|e| e.to_string())?;
    let mut file = tokio::fs::File::open(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
    let mut left = len;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        use tokio::io::AsyncReadExt;
        let want = buf.len().min(left as usize);
        let n = file.read(&mut buf[..want]).await.map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            return Err(format!("{} ended early", path.display()));
        }
        writer.write(&buf[..n]).await.map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    writer.finish(&sha256, len).await.map_err(|e| e.to_string())?;
    Ok(SealedLog { sha256, len })
}

/// The blobs sealed logs name, which the blob sweep keeps.
pub async fn referenced(store: &dyn Store) -> Result<HashSet<String>, StoreError> {
    let (kvs, _) = store.range(keys::SEALED_LOGS).await?;
    kvs.iter().map(|kv| Ok(decode::<SealedLog>(&kv.key, &kv.value)?.sha256)).collect()
}

/// An open sealed log: whose (job, attempt), the reader, where it stands,
/// and bytes read past a chunk.
type Stream = ((String, u32), BlobReader, u64, Vec<u8>);

/// The bytes of `chunks` of run `run` from their sealed blobs, each checked
/// against its checksum; `None` when an attempt among them is not sealed.
/// Consecutive chunks of one attempt are read from one stream.
pub async fn read(
    store: &dyn Store,
    blobs: &Blobs,
    run: RunId,
    chunks: &[Chunk],
) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
    let mut sealed: HashMap<(String, u32), SealedLog> = HashMap::new();
    let mut open: Option<Stream> = None;
    let mut out = Vec::with_capacity(chunks.len());
    for c in chunks {
        let id = (c.job.clone(), c.attempt);
        if !sealed.contains_key(&id) {
            let Some(kv) = store.get(&keys::sealed_log(run, &c.job, c.attempt)).await? else { return Ok(None) };
            sealed.insert(id.clone(), decode(&kv.key, &kv.value)?);
        }
        let blob = &sealed[&id];
        let what = format!("the sealed log of job {} attempt {} of run {run} (blob {})", c.job, c.attempt, blob.sha256);
        let len = c.meta.len as usize;
        if !open.as_ref().is_some_and(|(whose, _, at, _)| *whose == id && *at == c.offset) {
            let (reader, _) = blobs.open_blob_at(&blob.sha256, c.offset).await.map_err(|e| store_err(&what, e))?;
            open = Some((id, reader, c.offset, Vec::new()));
        }
        let (_, reader, at, extra) = open.as_mut().expect("opened above");
        let mut data = std::mem::take(extra);
        while data.len() < len {
            match reader.next(len - data.len()).await {
                Some(Ok(bytes)) => data.extend_from_slice(&bytes),
                Some(Err(e)) => return Err(store_err(&what, e)),
                None => return Err(store_err(&what, format!("it ends before offset {}", c.offset + len as u64))),
            }
        }
        // A stream may hand over more than asked (S3 does): keep the rest
        // for the next chunk.
        *extra = data.split_off(len);
        *at = c.offset + len as u64;
        if crc32c(&data) != c.meta.crc32c {
            return Err(StoreError::Corrupt {
                path: what,
                detail: format!("the chunk at offset {} does not match its checksum", c.offset),
            });
        }
        out.push(data);
    }
    Ok(Some(out))
}
