//! The records the coordinator keeps in the store, apart from the code
//! that drives them: a run's listing entry (`RunSummary`), and the reads the API and retention share
//! (`load_run`, `list_runs`). The run and job records themselves are the
//! machine's (`machine::RunRecord`, `machine::JobRecord`), an agent's is
//! the fleet's (`fleet::AgentRecord`). Everything is
//! JSON; a value that does not decode is [`StoreError::Corrupt`] naming its
//! key, never skipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::keys;
use crate::core::machine::{JobRecord, Run, RunId, RunRecord, RunState, Source};
use crate::store::{Store, StoreError, decode};

/// The largest run record a submit may write: every store takes values of
/// 1.5 MiB, and this leaves room.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// The short listing entry of a run, kept under [`keys::RUN_INDEX`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: RunId,
    pub name: String,
    pub state: RunState,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub source: Source,
    /// The run this one reruns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<RunId>,
}

impl RunSummary {
    pub fn of(r: &RunRecord) -> RunSummary {
        RunSummary {
            id: r.id,
            name: r.pipeline.name.clone(),
            state: r.state,
            created_ms: r.created_ms,
            finished_ms: r.finished_ms,
            source: r.source.clone(),
            rerun_of: r.rerun_of,
        }
    }
}

/// What `/artifacts/{run}/{job}` holds: the blob, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub sha256: String,
    pub expires_ms: u64,
}

/// Encodes a record as stored.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}

/// Reads a run's record and jobs from the store.
pub async fn load_run(store: &dyn Store, id: RunId) -> Result<Option<Run>, StoreError> {
    let Some(kv) = store.get(&keys::run(id)).await? else { return Ok(None) };
    let record: RunRecord = decode(&kv.key, &kv.value)?;
    let (kvs, _) = store.range(&keys::jobs(id)).await?;
    let mut jobs = BTreeMap::new();
    for kv in kvs {
        let name = kv.key[keys::jobs(id).len()..].to_string();
        jobs.insert(name, decode::<JobRecord>(&kv.key, &kv.value)?);
    }
    Ok(Some(Run::from_parts(record, jobs)))
}

/// Which runs a listing shows. The default shows every run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Runs in one of these states; empty: any.
    pub states: Vec<RunState>,
    /// Runs whose pipeline name contains this; empty: any.
    pub name: String,
    /// Runs created at or after this time (ms); 0: any.
    pub created_after_ms: u64,
}

impl RunFilter {
    pub fn admits(&self, run: &RunSummary) -> bool {
        (self.states.is_empty() || self.states.contains(&run.state))
            && run.name.contains(&self.name)
            && run.created_ms >= self.created_after_ms
    }
}

/// Lists the runs `filter` admits, newest first, at most `limit`. A record
/// that does not decode is an error, whether or not it would be listed.
pub async fn list_runs(store: &dyn Store, limit: usize, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
    let (kvs, _) = store.range(keys::RUN_INDEX).await?;
    let mut out = Vec::new();
    for kv in kvs.iter().rev() {
        let run: RunSummary = decode(&kv.key, &kv.value)?;
        if out.len() < limit && filter.admits(&run) {
            out.push(run);
        }
    }
    Ok(out)
}
