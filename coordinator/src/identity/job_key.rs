//! The cluster's job-token key (`core::job_token`): 32 random bytes under
//! `/identity/job-key`, made by the first coordinator that needs one (a
//! create-only transaction, so two coordinators that race agree on the one
//! that landed) and read once per process.

use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::encode;
use crate::core::identity::hex;
use crate::core::keys;
use crate::store::{Compare, Op, Store, StoreError, Txn, decode};

/// What `/identity/job-key` holds.
#[derive(Serialize, Deserialize)]
struct Record {
    /// The key, hex.
    key: String,
    created_ms: i64,
}

/// The key, read (or made) once.
pub struct JobKey {
    store: Arc<dyn Store>,
    key: OnceCell<Arc<[u8; 32]>>,
}

impl std::fmt::Debug for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobKey").field("loaded", &self.key.initialized()).finish_non_exhaustive()
    }
}

impl JobKey {
    pub fn new(store: Arc<dyn Store>) -> JobKey {
        JobKey { store, key: OnceCell::new() }
    }

    /// The key; an error while the store cannot be read (asked again on
    /// the next call).
    pub async fn get(&self) -> Result<Arc<[u8; 32]>, StoreError> {
        self.key.get_or_try_init(|| load_or_make(self.store.as_ref())).await.cloned()
    }
}

async fn load_or_make(store: &dyn Store) -> Result<Arc<[u8; 32]>, StoreError> {
    for _ in 0..3 {
        if let Some(kv) = store.get(keys::JOB_KEY).await? {
            let record: Record = decode(&kv.key, &kv.value)?;
            return parse(&record.key).map(Arc::new).ok_or_else(|| StoreError::Corrupt {
                path: keys::JOB_KEY.to_owned(),
                detail: "it does not hold 32 bytes of hex".into(),
            });
        }
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| StoreError::Unavailable("the system's random source failed".into()))?;
        let record = Record { key: hex(&key), created_ms: drover_telemetry::trace::now_ms() as i64 };
        let txn = Txn {
            compare: vec![Compare::CreateRevision(keys::JOB_KEY.to_owned(), 0)],
            success: vec![Op::put(keys::JOB_KEY.to_owned(), encode(&record))],
            failure: Vec::new(),
        };
        if store.txn(txn).await?.succeeded {
            return Ok(Arc::new(key));
        }
        // Another coordinator made one first: read it.
    }
    Err(StoreError::Unavailable(format!("{} changed under every read", keys::JOB_KEY)))
}

fn parse(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};

    #[tokio::test]
    async fn the_first_coordinator_makes_the_key_and_every_other_reads_the_same() {
        let dir = std::env::temp_dir().join(format!("drover-job-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir, EmbeddedOptions::default()).await.unwrap();
        let (one, two) = (JobKey::new(store.clone()), JobKey::new(store.clone()));
        let (a, b) = tokio::join!(one.get(), two.get());
        assert_eq!(a.unwrap(), b.unwrap(), "two coordinators racing agree");
        assert_eq!(JobKey::new(store.clone()).get().await.unwrap(), one.get().await.unwrap());
        store
            .txn(Txn::ops(vec![Op::put(keys::JOB_KEY.to_owned(), b"{\"key\":\"zz\",\"created_ms\":1}".to_vec())]))
            .await
            .unwrap();
        let err = JobKey::new(store).get().await.unwrap_err().to_string();
        assert!(err.contains("does not hold 32 bytes of hex"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
