//! The embedded [`Store`] backend: the whole key space in memory, every write
//! appended to a checksummed log in the data directory, and a periodic
//! snapshot that keeps the log short. A single coordinator needs no etcd
//! cluster with it.
//!
//! # Design
//!
//! All state sits behind one `std::sync::Mutex`. A write transaction takes
//! the lock, checks its compares, applies its branch to the in-memory map,
//! writes one record after the last with a single `pwrite(2)` and releases
//! the lock. The log claims its space ahead of its records with `fallocate`
//! (4 MiB at a time), so that a sync need not also commit a new file size. The work under the lock is O(ops × log n) plus one system call to
//! the page cache; nothing under it ever waits for the disk. Because the
//! record reaches the kernel before the lock is released, log order is
//! revision order, and a process crash (SIGKILL) after that point loses
//! nothing.
//!
//! With `fsync` on, a background syncer task calls `fdatasync` for every
//! record written since its last round. Writers that arrive while a sync is
//! running are covered by the next one, which is group commit for free. No
//! caller observes state that is not durable yet: a transaction returns,
//! a read returns and a watcher sees an event only once the log covers the
//! revision they reflect. Reads usually find nothing pending and return at
//! once; under write load they wait for at most one `fdatasync`.
//!
//! Watches are served from an in-memory history of recent revisions: the
//! writer feeds caught-up watchers without ever blocking on them, and a slow
//! watcher, or one that starts in the past, gets a catch-up task of its own.
//! A watcher that falls behind the history gets [`WatchMessage::Compacted`].
//!
//! # On-disk format
//!
//! The directory holds `LOCK` (held with `flock` while the store is open and
//! containing the holder's pid), `snapshot` and one or more `wal-<seq>.log`
//! files, where `<seq>` is the 16-digit hex sequence number of the file's
//! first record. All integers are little endian; CRCs are CRC-32C. A log
//! record is one write transaction (or lease grant or revoke) with its
//! sequence number and the revision after it; the snapshot is the whole key
//! space and the leases at one sequence number. The newest log is longer
//! than its records: the space it claimed ahead reads as zeros. The layouts
//! are in `wal` and `snapshot`.
//!
//! # Recovery and compaction
//!
//! `open` loads the snapshot, replays the logs after it, writes a fresh
//! snapshot and starts a fresh log. A torn record at the end of the last log
//! (a crash mid-write) is dropped; any other damage fails with
//! [`StoreError::Corrupt`], naming the file and byte offset. When the log
//! outgrows `max(compact_log_bytes, size of last snapshot)`, the writer
//! snapshots the state and starts a new log; a crash at any point of that
//! recovers to the same state.
//!
//! # Limits
//!
//! * Values are at most [`MAX_VALUE_BYTES`] (1.5 MiB, etcd's default request
//!   limit); both branches of a transaction are checked. A whole
//!   transaction's log record is at most [`MAX_RECORD_BYTES`].
//! * Unlike etcd, one transaction may write the same key twice; the ops run
//!   in order, and a `Get` sees the earlier ops of its own branch.
//! * As in etcd, a transaction whose writes change nothing (deletes of
//!   missing keys) does not bump the revision.
//! * Leases are restored after a restart with a fresh full TTL, as etcd does
//!   after a leader change. Keep-alives are not logged.
//! * After a failed log write or `fdatasync` the store stops: every call
//!   returns [`StoreError::Unavailable`] and watches close, because the
//!   on-disk state is no longer known (see PostgreSQL's "fsyncgate"). The
//!   coordinator must restart, which recovers from the log.
//!
//! # Modules
//!
//! This module holds the store type, its options, the [`Store`] calls and
//! lease expiry. `keyspace` is the deterministic in-memory state that log
//! replay rebuilds; `wal` the log format and files; `snapshot` the
//! snapshot format and log compaction; `recovery` opening a directory;
//! `durability` the log syncer and stopping after a failure; `watch` the
//! event history and watchers; `lock` the directory lock and the check
//! that the directory is still in place; `codec` the byte encoding and
//! CRC-32C that the files share.

mod codec;
mod durability;
mod keyspace;
mod lock;
mod recovery;
mod snapshot;
#[cfg(test)]
mod tests;
mod wal;
mod watch;

pub(crate) use codec::crc32c;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc, watch as watch_channel};
use tokio::time::Instant;

use self::durability::{SyncStatus, failed_error, run_syncer};
use self::keyspace::{Keyspace, deadline_after};
use self::lock::{DirLock, identity, run_place_watch};
use self::recovery::{Recovered, recover};
use self::wal::{RecordBuilder, Wal, encode_txn_record};
use self::watch::LiveWatcher;
use super::{KeyValue, LeaseId, Op, Result, Revision, Store, StoreError, Txn, TxnResponse, WatchMessage};

/// The largest value a put may carry: etcd's default `--max-request-bytes`.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// The largest log record (one transaction's writes). It bounds what a
/// damaged length field can make recovery allocate.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// How many leases one expiry round revokes per lock acquisition.
const EXPIRY_BATCH: usize = 64;

/// Tuning of the embedded store. The defaults suit a production coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Whether a write is `fdatasync`ed before it returns (default `true`).
    /// Without it a write still reaches the kernel before it returns, so a
    /// process crash loses nothing, but a power loss or kernel crash may.
    pub fsync: bool,
    /// Log size in bytes after which a snapshot is written and a new log
    /// started (default 64 MiB). The store uses the larger of this and the
    /// last snapshot's size, so that rewriting a large state stays cheap
    /// relative to the writes that caused it.
    pub compact_log_bytes: u64,
    /// How many revisions of events are retained for watches that start in
    /// the past and for watchers that fall behind (default 10,000).
    pub watch_history_revisions: usize,
    /// Rough cap, in bytes of keys and values, on the retained events
    /// (default 64 MiB). Whichever cap is reached first trims the history.
    pub watch_history_bytes: usize,
    /// Capacity of each watcher's channel, in batches (default 256). A
    /// watcher whose channel is full is served from the history by its own
    /// task, so this only trades memory for task wake-ups.
    pub watch_channel_capacity: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            fsync: true,
            compact_log_bytes: 64 * 1024 * 1024,
            watch_history_revisions: 10_000,
            watch_history_bytes: 64 * 1024 * 1024,
            watch_channel_capacity: 256,
        }
    }
}

/// The embedded store. Create it with [`EmbeddedStore::open`].
pub struct EmbeddedStore {
    dir: PathBuf,
    opts: EmbeddedOptions,
    state: Mutex<State>,
    /// A weak reference to ourselves, handed to the catch-up and compaction
    /// tasks the store spawns, so that none of them keeps it alive.
    this: Weak<EmbeddedStore>,
    /// How far the log is known to be on disk. Callers that observed state
    /// newer than that wait on it; the syncer publishes to it.
    sync_status: watch_channel::Sender<SyncStatus>,
    /// Wakes the syncer after a record was written. A `Notify` keeps one
    /// permit, so records written during a sync trigger exactly one more.
    sync_wake: Arc<Notify>,
    /// Wakes the lease expiry task when a lease is granted (its deadline may
    /// be the earliest) and when the store is dropped.
    lease_wake: Arc<Notify>,
    /// The locked `LOCK` file; the lock lives as long as this handle. The
    /// compaction task holds a clone so that a new store cannot open the
    /// directory while an old snapshot is still being written into it.
    dir_lock: Arc<DirLock>,
    /// The data directory's device and inode at open: if the path later
    /// names another directory (deleted and made again, or replaced), or
    /// none, the store stops (see [`lock::check_place`]).
    dir_identity: (u64, u64),
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("dir", &self.dir).field("opts", &self.opts).finish()
    }
}

/// Everything behind the store's lock.
struct State {
    ks: Keyspace,
    /// The last log sequence number known to be on disk (or, without fsync,
    /// in the kernel).
    durable_seq: u64,
    /// The last revision whose events went out to the live watchers. Always
    /// at most the revision of `durable_seq`.
    visible_revision: Revision,
    /// Watchers that are caught up and get events pushed by the writer.
    watchers: Vec<LiveWatcher>,
    wal: Wal,
    /// Set after a failed log write or sync; every call then fails.
    failed: Option<Arc<str>>,
    compacting: bool,
    last_snapshot_bytes: u64,
}

impl State {
    /// The sequence number a caller must wait for before it may return what
    /// it read, if the log is not durable that far yet.
    fn pending_seq(&self) -> Option<u64> {
        (self.durable_seq < self.ks.seq).then_some(self.ks.seq)
    }
}

impl EmbeddedStore {
    /// Opens the store in `dir`, creating the directory if needed, and
    /// recovers its state from the snapshot and logs there.
    ///
    /// It is async because recovery reads and writes files on Tokio's
    /// blocking pool; it must be called within a Tokio runtime, which then
    /// also runs the store's background tasks (log syncer, lease expiry).
    /// Those hold only weak references: dropping the last `Arc` closes the
    /// store and releases the directory lock.
    pub async fn open(dir: &Path, opts: EmbeddedOptions) -> Result<Arc<EmbeddedStore>> {
        let dir = dir.to_path_buf();
        let recovered = {
            let dir = dir.clone();
            let opts = opts.clone();
            let now = Instant::now();
            tokio::task::spawn_blocking(move || recover(&dir, &opts, now))
                .await
                .map_err(|e| StoreError::Unavailable(format!("opening the embedded store failed: {e}")))??
        };
        let Recovered { mut ks, wal, lock, snapshot_bytes } = recovered;
        let dir_identity = identity(&fs::metadata(&dir).map_err(|e| io_err(&dir, e))?);
        // Leases get a full TTL from now, not from when they were granted:
        // their holders could not renew them while the store was down.
        ks.restart_lease_clocks(Instant::now());
        tracing::info!(
            dir = %dir.display(),
            revision = ks.revision,
            keys = ks.kv.len(),
            leases = ks.leases.len(),
            "opened embedded store"
        );
        let status = SyncStatus { durable_seq: ks.seq, failed: None };
        let state = State {
            durable_seq: ks.seq,
            visible_revision: ks.revision,
            ks,
            watchers: Vec::new(),
            wal,
            failed: None,
            compacting: false,
            last_snapshot_bytes: snapshot_bytes,
        };
        let store = Arc::new_cyclic(|this| EmbeddedStore {
            dir,
            opts,
            state: Mutex::new(state),
            this: this.clone(),
            sync_status: watch_channel::channel(status).0,
            sync_wake: Arc::new(Notify::new()),
            lease_wake: Arc::new(Notify::new()),
            dir_lock: Arc::new(lock),
            dir_identity,
        });
        if store.opts.fsync {
            tokio::spawn(run_syncer(Arc::downgrade(&store), store.sync_wake.clone()));
        }
        tokio::spawn(run_place_watch(Arc::downgrade(&store)));
        tokio::spawn(run_lease_expiry(Arc::downgrade(&store), store.lease_wake.clone()));
        Ok(store)
    }

    fn lock_state(&self) -> Result<MutexGuard<'_, State>> {
        let st = self.state.lock().map_err(|_| {
            StoreError::Unavailable("embedded store state was poisoned by a panic; restart the coordinator".into())
        })?;
        if let Some(reason) = &st.failed {
            return Err(failed_error(reason));
        }
        Ok(st)
    }

    /// The reason the store has stopped, if it has: after that every call
    /// fails until the coordinator restarts.
    pub fn stopped_reason(&self) -> Option<String> {
        match self.state.lock() {
            Ok(st) => st.failed.as_deref().map(str::to_string),
            Err(_) => Some("embedded store state was poisoned by a panic".to_string()),
        }
    }

    /// Revokes one lease under the lock: deletes its keys in one revision and
    /// logs the revoke. Returns the record's sequence number.
    fn revoke_locked(&self, st: &mut State, lease: LeaseId) -> Result<u64> {
        let revision = st.ks.revision + 1;
        let mut events = Vec::new();
        if !st.ks.revoke_lease(lease, revision, &mut events) {
            return Err(StoreError::LeaseNotFound(lease));
        }
        let revision = if events.is_empty() { st.ks.revision } else { revision };
        let mut record = RecordBuilder::new(st.ks.seq + 1, revision);
        record.lease_revoke(lease);
        let record = record.finish()?;
        if !events.is_empty() {
            st.ks.revision = revision;
            st.ks.history.push(revision, events);
        }
        self.commit(st, &record)
    }

    /// Revokes every lease whose deadline has passed and returns the next
    /// deadline, if any.
    fn expire_due_leases(&self) -> Result<Option<Instant>> {
        let mut st = self.lock_state()?;
        let now = Instant::now();
        let mut revoked = 0;
        while let Some(&(deadline, lease)) = st.ks.lease_deadlines.first() {
            if deadline > now {
                return Ok(Some(deadline));
            }
            if revoked == EXPIRY_BATCH {
                // Let writers in before the next batch.
                return Ok(Some(now));
            }
            tracing::debug!(lease, "lease expired");
            self.revoke_locked(&mut st, lease)?;
            revoked += 1;
        }
        Ok(None)
    }

    #[cfg(test)]
    fn compaction_in_flight(&self) -> bool {
        self.state.lock().unwrap().compacting
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Both tasks hold only weak references; waking them lets them notice
        // that the store is gone and exit.
        self.sync_wake.notify_one();
        self.lease_wake.notify_one();
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn stopped(&self) -> Option<String> {
        self.stopped_reason()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let (kv, pending) = {
            let st = self.lock_state()?;
            (st.ks.kv.get(key).map(|e| e.to_kv(key)), st.pending_seq())
        };
        self.wait_durable(pending).await?;
        Ok(kv)
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let (kvs, revision, pending) = {
            let st = self.lock_state()?;
            (st.ks.range(prefix), st.ks.revision, st.pending_seq())
        };
        self.wait_durable(pending).await?;
        Ok((kvs, revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        // The size limit applies to the whole request, as in etcd, so a
        // transaction does not pass or fail it depending on its compares.
        for op in txn.success.iter().chain(&txn.failure) {
            if let Op::Put { key, value, .. } = op
                && value.len() > MAX_VALUE_BYTES
            {
                return Err(StoreError::ValueTooLarge { key: key.clone(), size: value.len(), limit: MAX_VALUE_BYTES });
            }
        }
        let (response, pending) = {
            let mut st = self.lock_state()?;
            let succeeded = txn.compare.iter().all(|c| st.ks.compare(c));
            let ops = if succeeded { txn.success } else { txn.failure };
            // Check everything that can fail before changing anything, so a
            // failed transaction leaves no trace.
            for op in &ops {
                if let Op::Put { lease, .. } = op
                    && *lease != 0
                    && !st.ks.leases.contains_key(lease)
                {
                    return Err(StoreError::LeaseNotFound(*lease));
                }
            }
            let revision = st.ks.revision + 1;
            let record = if ops.iter().any(|op| !matches!(op, Op::Get { .. })) {
                Some(encode_txn_record(st.ks.seq + 1, revision, &ops)?)
            } else {
                None
            };
            let mut events = Vec::new();
            let mut gets = Vec::new();
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => {
                        // Leases were checked above, so this cannot fail.
                        let _ = st.ks.put(key, value, lease, revision, &mut events);
                    }
                    Op::Delete { key } => st.ks.delete(&key, revision, &mut events),
                    Op::DeletePrefix { prefix } => st.ks.delete_prefix(&prefix, revision, &mut events),
                    Op::Get { key } => gets.push(st.ks.kv.get(&key).map(|e| e.to_kv(&key))),
                }
            }
            if let Some(record) = record
                && !events.is_empty()
            {
                st.ks.revision = revision;
                st.ks.history.push(revision, events);
                self.commit(&mut st, &record)?;
            }
            (TxnResponse { succeeded, revision: st.ks.revision, gets }, st.pending_seq())
        };
        self.wait_durable(pending).await?;
        Ok(response)
    }

    async fn watch(&self, prefix: &str, start: Revision) -> Result<mpsc::Receiver<WatchMessage>> {
        self.start_watch(prefix, start)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let (lease, pending) = {
            let mut st = self.lock_state()?;
            let lease = st.ks.next_lease_id;
            let mut record = RecordBuilder::new(st.ks.seq + 1, st.ks.revision);
            record.lease_grant(lease, ttl);
            let record = record.finish()?;
            st.ks.grant_lease(lease, ttl, deadline_after(Instant::now(), ttl));
            self.commit(&mut st, &record)?;
            (lease, st.pending_seq())
        };
        self.lease_wake.notify_one();
        self.wait_durable(pending).await?;
        Ok(lease)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut st = self.lock_state()?;
        let now = Instant::now();
        let ks = &mut st.ks;
        let entry = ks.leases.get_mut(&lease).ok_or(StoreError::LeaseNotFound(lease))?;
        let old = entry.deadline;
        entry.deadline = deadline_after(now, entry.ttl);
        let new = entry.deadline;
        ks.lease_deadlines.remove(&(old, lease));
        ks.lease_deadlines.insert((new, lease));
        Ok(())
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        let pending = {
            let mut st = self.lock_state()?;
            self.revoke_locked(&mut st, lease)?;
            st.pending_seq()
        };
        self.wait_durable(pending).await
    }
}

fn io_err(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

/// Revokes leases as their deadlines pass, for as long as the store exists.
async fn run_lease_expiry(this: Weak<EmbeddedStore>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(store) = this.upgrade() else { return };
            match store.expire_due_leases() {
                Ok(next) => next,
                Err(_) => return,
            }
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
