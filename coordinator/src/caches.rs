//! Caches: what a job's `cache:` saved, shared through the blob store, by
//! scope and key.
//!
//! - **Scope.** A cache belongs to the repository its run came from (or,
//!   for a file submitted inline, to the pipeline's name): one project's
//!   job cannot restore, or poison, another's. Records live under
//!   `/caches/{scope id}/{key}`, the scope id being the first 16 hex digits
//!   of the scope's sha256.
//! - **A record** names up to two archives in the blob store (the paths in
//!   the workspace, and those under the step's home, `~/`), its size, who
//!   made it and when it was last restored.
//! - **Restore** ([`Caches::lookup`]): the exact key, else, for each
//!   `restore-keys` prefix in turn, the newest record whose key starts with
//!   it (as GitHub Actions does). A hit marks the record used.
//! - **Save** ([`Caches::save`]) creates the record only if the key has
//!   none: of two jobs saving one key at once, the first to commit wins and
//!   the other's archives are left to the blob sweep, so one whole copy
//!   stays.
//! - **Eviction** ([`evict`], pure): the retention controller drops records
//!   unused for `--cache-expire`, then the least recently used until the
//!   rest fit in `--cache-budget`; the blobs no record names go with the
//!   blob sweep.
//!
//! The agent edge calls lookup and save for an attempt the agent holds
//! (the scheduler says which scope that attempt's run has); `drover caches`
//! and `drover cache rm` list and delete through the control API.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::core::keys;
use crate::core::machine::Source;
use crate::store::{Compare, Op, Store, StoreError, Txn, decode};

/// The most records one listing returns.
pub const MAX_LIST: usize = 10_000;

/// One archive of a cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheBlob {
    /// Where it unpacks: `workspace` or `home`.
    pub root: String,
    pub sha256: String,
    pub size: u64,
}

/// What `/caches/{scope id}/{key}` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The repository URL, or `pipeline:NAME`.
    pub scope: String,
    pub key: String,
    pub blobs: Vec<CacheBlob>,
    pub created_ms: u64,
    pub last_used_ms: u64,
    /// The run and job that saved it.
    pub run: u64,
    pub job: String,
}

impl CacheRecord {
    /// Its archives' bytes together.
    pub fn size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// The scope of a run's caches: its repository, or for a file submitted
/// inline, its pipeline's name.
pub fn scope_of(source: &Source, pipeline: &str) -> String {
    match &source.repo {
        Some(repo) => repo.clone(),
        None => format!("pipeline:{pipeline}"),
    }
}

/// The scope's id in keys: 16 hex digits of its sha256.
pub fn scope_id(scope: &str) -> String {
    let digest = sha2::Sha256::digest(scope.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// How a lookup matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hit {
    Exact,
    /// By this `restore-keys` prefix.
    Prefix(String),
}

/// The caches in the store.
pub struct Caches {
    store: Arc<dyn Store>,
}

impl Caches {
    pub fn new(store: Arc<dyn Store>) -> Caches {
        Caches { store }
    }

    /// The record for `key` in `scope`, or else the newest whose key starts
    /// with one of `prefixes`, tried in order; marked used at `now_ms`.
    pub async fn lookup(
        &self,
        scope: &str,
        key: &str,
        prefixes: &[String],
        now_ms: u64,
    ) -> Result<Option<(CacheRecord, Hit)>, StoreError> {
        let sid = scope_id(scope);
        let found = match self.store.get(&keys::cache(&sid, key)).await? {
            Some(kv) => Some((kv.key.clone(), kv.mod_revision, decode::<CacheRecord>(&kv.key, &kv.value)?, Hit::Exact)),
            None => {
                let mut found = None;
                for prefix in prefixes {
                    let (kvs, _) = self.store.range(&keys::cache(&sid, prefix)).await?;
                    let mut newest: Option<(String, i64, CacheRecord)> = None;
                    for kv in kvs {
                        let record: CacheRecord = decode(&kv.key, &kv.value)?;
                        if newest.as_ref().is_none_or(|(_, _, n)| record.created_ms > n.created_ms) {
                            newest = Some((kv.key, kv.mod_revision, record));
                        }
                    }
                    if let Some((k, rev, record)) = newest {
                        found = Some((k, rev, record, Hit::Prefix(prefix.clone())));
                        break;
                    }
                }
                found
            }
        };
        let Some((store_key, rev, mut record, hit)) = found else { return Ok(None) };
        // Marked used unless written since (then it is newer anyway); a
        // failed mark costs only precision in the LRU order.
        record.last_used_ms = now_ms;
        let txn = Txn {
            compare: vec![Compare::ModRevision(store_key.clone(), rev)],
            success: vec![Op::put(store_key, crate::records::encode(&record))],
            failure: Vec::new(),
        };
        self.store.txn(txn).await?;
        Ok(Some((record, hit)))
    }

    /// Saves `record` unless its key has one already; whether it did.
    pub async fn save(&self, record: &CacheRecord) -> Result<bool, StoreError> {
        let key = keys::cache(&scope_id(&record.scope), &record.key);
        let txn = Txn {
            compare: vec![Compare::CreateRevision(key.clone(), 0)],
            success: vec![Op::put(key, crate::records::encode(record))],
            failure: Vec::new(),
        };
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Whether the record for `key` in `scope` names blob `sha256`.
    pub async fn names_blob(&self, scope: &str, key: &str, sha256: &str) -> Result<bool, StoreError> {
        let Some(kv) = self.store.get(&keys::cache(&scope_id(scope), key)).await? else { return Ok(false) };
        let record: CacheRecord = decode(&kv.key, &kv.value)?;
        Ok(record.blobs.iter().any(|b| b.sha256 == sha256))
    }

    /// Every record, with its store key and revision.
    pub async fn list(&self) -> Result<Vec<(String, i64, CacheRecord)>, StoreError> {
        let (kvs, _) = self.store.range(keys::CACHES).await?;
        kvs.into_iter()
            .take(MAX_LIST)
            .map(|kv| Ok((kv.key.clone(), kv.mod_revision, decode::<CacheRecord>(&kv.key, &kv.value)?)))
            .collect()
    }

    /// Deletes the records with key `key`, in `scope` or in every scope;
    /// how many.
    pub async fn remove(&self, key: &str, scope: Option<&str>) -> Result<usize, StoreError> {
        let doomed: Vec<String> = self
            .list()
            .await?
            .into_iter()
            .filter(|(_, _, r)| r.key == key && scope.is_none_or(|s| r.scope == s))
            .map(|(k, _, _)| k)
            .collect();
        if !doomed.is_empty() {
            self.store.txn(Txn::ops(doomed.iter().map(|k| Op::delete(k.clone())).collect())).await?;
        }
        Ok(doomed.len())
    }
}

/// Which records go (by index into `records`): those unused for longer
/// than `max_idle`, then the least recently used until the others fit in
/// `budget` bytes.
pub fn evict(records: &[&CacheRecord], budget: u64, max_idle: Duration, now_ms: u64) -> Vec<usize> {
    let cutoff = now_ms.saturating_sub(max_idle.as_millis() as u64);
    let mut doomed: Vec<usize> = (0..records.len()).filter(|&i| records[i].last_used_ms < cutoff).collect();
    let mut rest: Vec<usize> = (0..records.len()).filter(|i| !doomed.contains(i)).collect();
    // Oldest use first; ties by creation, then key, so the order is stable.
    rest.sort_by_key(|&i| (records[i].last_used_ms, records[i].created_ms, &records[i].key));
    let mut total: u64 = rest.iter().map(|&i| records[i].size()).sum();
    for i in rest {
        if total <= budget {
            break;
        }
        total -= records[i].size();
        doomed.push(i);
    }
    doomed.sort_unstable();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, size: u64, created: u64, used: u64) -> CacheRecord {
        CacheRecord {
            scope: "repo".into(),
            key: key.into(),
            blobs: vec![CacheBlob { root: "workspace".into(), sha256: "0".repeat(64), size }],
            created_ms: created,
            last_used_ms: used,
            run: 1,
            job: "build".into(),
        }
    }

    #[test]
    fn eviction_drops_the_idle_then_the_least_recently_used_until_the_rest_fit() {
        let day = 24 * 3600 * 1000;
        let now = 30 * day;
        let week = Duration::from_secs(7 * 24 * 3600);
        // (case, records as (key, size, created day, used day), budget, evicted keys)
        type Records<'a> = &'a [(&'a str, u64, u64, u64)];
        let cases: &[(&str, Records, u64, &[&str])] = &[
            ("nothing to do", &[("a", 10, 20, 29), ("b", 10, 21, 28)], 100, &[]),
            ("idle past a week", &[("a", 10, 1, 2), ("b", 10, 21, 28)], 100, &["a"]),
            ("over budget: oldest use first", &[("a", 60, 20, 29), ("b", 60, 21, 25)], 100, &["b"]),
            ("ties by creation", &[("a", 60, 22, 25), ("b", 60, 21, 25)], 100, &["b"]),
            ("a record bigger than the budget goes", &[("a", 500, 20, 29)], 100, &["a"]),
            ("exactly the budget stays", &[("a", 50, 20, 29), ("b", 50, 20, 28)], 100, &[]),
            ("zero budget: all", &[("a", 1, 20, 29), ("b", 1, 20, 28)], 0, &["a", "b"]),
        ];
        for (case, records, budget, want) in cases {
            let records: Vec<CacheRecord> =
                records.iter().map(|(k, s, c, u)| record(k, *s, c * day, u * day)).collect();
            let refs: Vec<&CacheRecord> = records.iter().collect();
            let got: Vec<&str> =
                evict(&refs, *budget, week, now).into_iter().map(|i| records[i].key.as_str()).collect();
            assert_eq!(got, *want, "{case}");
        }
    }

    #[tokio::test]
    async fn lookups_take_the_exact_key_else_the_newest_by_prefix_and_saves_never_replace() {
        use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
        let dir = std::env::temp_dir().join(format!("drover-caches-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir, EmbeddedOptions::default()).await.unwrap();
        let caches = Caches::new(store);
        assert_eq!(caches.lookup("repo", "cargo-1", &["cargo-".into()], 5).await.unwrap(), None);
        assert!(caches.save(&record("cargo-1", 10, 100, 100)).await.unwrap());
        assert!(caches.save(&record("cargo-2", 10, 200, 200)).await.unwrap());
        assert!(!caches.save(&record("cargo-2", 99, 300, 300)).await.unwrap(), "the first save wins");
        let other = CacheRecord { scope: "other-repo".into(), ..record("cargo-9", 10, 900, 900) };
        assert!(caches.save(&other).await.unwrap());

        let (hit, how) = caches.lookup("repo", "cargo-1", &["cargo-".into()], 1000).await.unwrap().unwrap();
        assert_eq!((hit.key.as_str(), how, hit.last_used_ms), ("cargo-1", Hit::Exact, 1000));
        let (hit, how) =
            caches.lookup("repo", "cargo-3", &["x-".into(), "cargo-".into()], 1001).await.unwrap().unwrap();
        assert_eq!(
            (hit.key.as_str(), how),
            ("cargo-2", Hit::Prefix("cargo-".into())),
            "the newest, in this scope only"
        );
        assert_eq!(hit.size(), 10, "the first save's record");
        assert!(caches.names_blob("repo", "cargo-2", &"0".repeat(64)).await.unwrap());
        assert!(!caches.names_blob("other-repo", "cargo-2", &"0".repeat(64)).await.unwrap());

        assert_eq!(caches.remove("cargo-2", None).await.unwrap(), 1);
        assert_eq!(caches.list().await.unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
