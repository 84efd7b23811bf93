//! The coordinator's state store, with etcd's semantics: a flat, ordered key
//! space of byte values, a global revision that every write bumps, keys that
//! remember their create and mod revisions, compare-and-swap transactions,
//! prefix watches from a revision, and leases that delete their keys when they
//! expire.
//!
//! The scheduler only talks to [`Store`]. The embedded backend
//! ([`embedded::EmbeddedStore`]) keeps everything in memory and appends every
//! write to a log file in the data directory; the etcd backend maps
//! the same calls one to one onto etcd's KV, Watch and Lease APIs. What both
//! backends must do alike is tested once, by the conformance suite
//! (`conformance`, test-only) that each backend's tests run.

#[cfg(test)]
mod conformance;
pub mod embedded;
pub mod etcd;
pub mod fenced;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub type Revision = i64;
pub type LeaseId = i64;

/// One key as stored, with etcd's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since its last delete).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
    /// Number of writes since the key was created (1 after creation).
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: LeaseId,
}

/// A condition of a transaction, as in etcd's `Compare`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals the given one (0: the key does not exist).
    ModRevision(String, Revision),
    /// The key's create revision equals the given one (0: the key does not exist).
    CreateRevision(String, Revision),
    /// The key's value equals the given bytes (false when the key is missing).
    Value(String, Vec<u8>),
}

/// A write or read inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    },
    Delete {
        key: String,
    },
    /// Delete every key that starts with the prefix.
    DeletePrefix {
        prefix: String,
    },
    Get {
        key: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Op {
        Op::Put { key: key.into(), value: value.into(), lease: 0 }
    }
    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }
    /// The key (or prefix) the operation works on.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } => key,
            Op::DeletePrefix { prefix } => prefix,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    /// An unconditional transaction of the given operations.
    pub fn ops(ops: Vec<Op>) -> Txn {
        Txn { compare: Vec::new(), success: ops, failure: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: Revision,
    /// One entry per `Get` in the branch that ran, in order.
    pub gets: Vec<Option<KeyValue>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// For a delete: the key with an empty value and the delete's revision
    /// as its mod revision.
    pub kv: KeyValue,
}

/// What a watch delivers: batches of events in revision order, or the news
/// that the watch cannot continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    Events(Vec<WatchEvent>),
    /// The requested start revision is older than the retained history. The
    /// watcher must relist (range) and watch again from the list's revision.
    Compacted {
        compact_revision: Revision,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store I/O error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store data in {path} is corrupt: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    #[error("value for {key} is {size} bytes, over the store's limit of {limit} bytes")]
    ValueTooLarge { key: String, size: usize, limit: usize },
    /// A write was refused because this coordinator no longer leads.
    #[error("this coordinator is no longer the leader (its epoch {epoch} ended)")]
    Fenced { epoch: Revision },
    /// The request (or the store's configuration) is invalid for this
    /// backend, so sending it again cannot help: an etcd transaction over
    /// etcd's limits, a key written twice in one etcd transaction, a bad
    /// endpoint URL or TLS option, a permission error from etcd.
    #[error("{0}")]
    Rejected(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One store endpoint's answer to [`Store::endpoint_health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub endpoint: String,
    /// The member answered, reported no errors and knows a leader.
    pub healthy: bool,
    /// Version, database size and role, or what went wrong.
    pub detail: String,
}

/// Reads a record Drover stored as JSON; a value that does not parse is
/// corrupt data at that key.
pub fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt { path: key.to_string(), detail: e.to_string() })
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "embedded" or "etcd", for `drover cluster`.
    fn kind(&self) -> &'static str;
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Every key that starts with `prefix`, in key order, with the revision
    /// the listing was taken at.
    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)>;
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;
    /// Splits writes that must all happen, but not atomically, into the
    /// transactions this store takes, in order, each with room for a few
    /// compares (the leader's fence). Nothing to write is no transaction.
    /// By default one transaction: the embedded store has no size limit.
    fn split(&self, ops: Vec<Op>) -> Vec<Vec<Op>> {
        if ops.is_empty() { Vec::new() } else { vec![ops] }
    }
    /// Watch every key under `prefix` for events with revision >= `start`
    /// (0: from now on). Dropping the receiver cancels the watch.
    async fn watch(&self, prefix: &str, start: Revision) -> Result<mpsc::Receiver<WatchMessage>>;
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId>;
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()>;
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()>;
    /// Drops the history before `revision`, as etcd's compaction does. The
    /// embedded store trims its own history (to `watch_history_*`), so by
    /// default there is nothing to do.
    async fn compact(&self, _revision: Revision) -> Result<()> {
        Ok(())
    }
    /// Why the store has stopped for good, if it has: a store that cannot
    /// take writes again without a restart (the embedded store after a
    /// failed write or fsync, or with its directory deleted). An outage
    /// that may pass (etcd unreachable) is not a stop. The coordinator exits
    /// after `--store-fail-exit` of it, so a supervisor restarts it.
    fn stopped(&self) -> Option<String> {
        None
    }
    /// Each endpoint's health, for `drover cluster`; none for a store
    /// without endpoints (the embedded one).
    async fn endpoint_health(&self) -> Vec<EndpointHealth> {
        Vec::new()
    }
}
