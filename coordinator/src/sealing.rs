//! Sealing: a finished run's log segments move into the blob store.
//!
//! While a run is live its logs are in its segment file (`crate::segments`),
//! appended and synced before their chunks' metadata is committed. Once the
//! run has finished nothing writes it again, so the retention controller
//! seals it: each attempt's committed chunks, read in log order and checked
//! against their checksums, become one content-addressed blob (on the
//! filesystem or in S3, as artifacts are) in which each chunk lies at its
//! log offset; a record `/sealed-logs/{run}/{job}@{attempt}` names it, and
//! only after that record is committed are the run's segments deleted. The
//! chunks' metadata stays: it still says where each chunk starts, how long
//! it is and its checksum.
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

use std::collections::{BTreeMap, HashMap, HashSet};
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
    // Each attempt's committed chunks, in log order.
    let (kvs, _) = store.range(&keys::logs(run)).await?;
    let mut attempts: BTreeMap<(String, u32), Vec<Chunk>> = BTreeMap::new();
    for kv in &kvs {
        if let Some(RunKey::Log { job, attempt, offset }) = keys::parse_run_key(run, &kv.key) {
            let meta = ChunkMeta::decode(&kv.key, &kv.value)?;
            let chunk = Chunk { job: job.to_string(), attempt, offset, meta };
            attempts.entry((job.to_string(), attempt)).or_default().push(chunk);
        }
    }
    let mut txn = Txn::default();
    txn.compare.push(Compare::ModRevision(keys::run_index(run), index_rev));
    for ((job, attempt), mut chunks) in attempts {
        chunks.sort_by_key(|c| c.offset);
        let record = match seal_attempt(blobs, segments, run, &chunks).await {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(run, job = %job, attempt, error = %e, "cannot seal a log; trying again at the next pass");
                return Ok(false);
            }
        };
        txn.success.push(Op::put(keys::sealed_log(run, &job, attempt), crate::records::encode(&record)));
    }
    let sealed = txn.success.len();
    // Committed only while the run is still there, as it was when listed;
    // then its segments go.
    if !store.txn(txn).await?.succeeded {
        return Ok(false);
    }
    segments.delete_run(run).map_err(StoreError::from)?;
    tracing::debug!(run, attempts = sealed, "sealed a finished run's logs into the blob store");
    Ok(true)
}

/// The most bytes of chunks sealing reads from a segment at once.
const SEAL_READ_BYTES: u64 = 4 << 20;

/// Stores one attempt's `chunks` (in log order, the first at offset 0 and
/// each where the last ended) as one blob, each checked against its
/// checksum on the way.
async fn seal_attempt(
    blobs: &Blobs,
    segments: &Arc<Segments>,
    run: RunId,
    chunks: &[Chunk],
) -> Result<SealedLog, String> {
    let mut len = 0;
    for c in chunks {
        if c.offset != len {
            return Err(format!(
                "job {} attempt {}: its chunks leave a gap at offset {len} (the next starts at {})",
                c.job, c.attempt, c.offset
            ));
        }
        len += u64::from(c.meta.len);
    }
    let what = chunks.first().map_or_else(String::new, |c| format!("job {} attempt {}", c.job, c.attempt));
    let mut writer =
        blobs.writer(len, format!("the log of {what} of run {run}"), "--log-cap").await.map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut rest = chunks;
    while !rest.is_empty() {
        let mut take = 0;
        let mut bytes = 0;
        while take < rest.len() && (take == 0 || bytes + u64::from(rest[take].meta.len) <= SEAL_READ_BYTES) {
            bytes += u64::from(rest[take].meta.len);
            take += 1;
        }
        let (batch, later) = rest.split_at(take);
        let data = segments.read_async(run, batch.to_vec()).await.map_err(|e| e.to_string())?;
        for piece in &data {
            hasher.update(piece);
            writer.write(piece).await.map_err(|e| e.to_string())?;
        }
        rest = later;
    }
    let sha256 = hex(&hasher.finalize());
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
