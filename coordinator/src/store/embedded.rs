//! The embedded [`Store`] backend: the whole key space in memory, every write
//! appended to a checksummed log in the data directory, and a periodic
//! snapshot that keeps the log short. A single coordinator needs no etcd
//! cluster with it.
//!
//! # Design
//!
//! All state sits behind one `std::sync::Mutex`. A write transaction takes
//! the lock, checks its compares, applies its branch to the in-memory map,
//! appends one record to the log with a single `write(2)` and releases the
//! lock. The work under the lock is O(ops × log n) plus one system call to
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
//! # Watches
//!
//! Each revision's events are kept in an in-memory history (the last
//! `watch_history_revisions` revisions, at most about `watch_history_bytes`
//! of keys and values). A watcher that is caught up sits in a list that the
//! writer feeds with `try_send` once the revision is durable, so a writer
//! never blocks on a watcher. A watcher whose channel is full, or that asks
//! to start in the past, is handed to its own catch-up task, which replays
//! the history into the channel at the watcher's own pace (awaiting channel
//! space) and puts the watcher back in the live list once it has caught up,
//! as etcd's unsynced watchers do. A watcher never silently misses an event:
//! if it falls behind the oldest retained revision it receives
//! [`WatchMessage::Compacted`] after the events it already has, and then its
//! channel closes, so it must relist and watch again.
//!
//! `compact_revision` is always the oldest revision the history still holds
//! at that moment, as in etcd: a new watch from there would work.
//! Dropping the receiver cancels the watch; the writer drops closed watchers
//! at its next revision and catch-up tasks stop at their next send.
//!
//! # On-disk format
//!
//! The directory holds `LOCK` (held with `flock` while the store is open and
//! containing the holder's pid), `snapshot` and one or more `wal-<seq>.log`
//! files, where `<seq>` is the 16-digit hex sequence number of the file's
//! first record. All integers are little endian; CRCs are CRC-32C.
//!
//! * A log file starts with the magic `DRVWAL01`, followed by records. A
//!   record is `len: u32, crc: u32, header_crc: u32, payload[len]`, where
//!   `crc` covers the payload and `header_crc` covers the first 8 bytes, so
//!   that a damaged length is never mistaken for a torn tail. The payload is
//!   `seq: u64, revision: i64, op_count: u32` and then the ops, each a tag
//!   byte: 1 put (`key, value, lease: i64`), 2 delete (`key`), 3 delete
//!   prefix (`prefix`), 4 lease grant (`id: i64, ttl_nanos: u64`), 5 lease
//!   revoke (`id: i64`). Strings and byte strings are `len: u32, bytes`.
//!   Every record has the next sequence number; `revision` is the store's
//!   revision after the record (unchanged for lease grants and for revokes
//!   of leases without keys). Replaying a record re-runs its ops, which is
//!   deterministic, so a delete-prefix stays one small op.
//! * The snapshot is `DRVSNAP1, len: u64, crc: u32` and a payload of
//!   `seq: u64, revision: i64, next_lease_id: i64`, the leases
//!   (`count: u64`, then `id: i64, ttl_nanos: u64` each) and the keys
//!   (`count: u64`, then `key, value, create_revision, mod_revision, version,
//!   lease` each).
//!
//! # Recovery and compaction
//!
//! `open` loads the snapshot, replays the logs in order (skipping records the
//! snapshot already holds, and whole logs a later log supersedes), writes a
//! fresh snapshot, starts a fresh log and deletes the old ones. A damaged
//! record in the last log is a torn write from a crash and is dropped if
//! nothing but zeros follows it; any other damage fails with
//! [`StoreError::Corrupt`], naming the file and byte offset.
//!
//! When the log outgrows `max(compact_log_bytes, size of last snapshot)`, the
//! writer encodes a snapshot in memory under the lock (one pass over the
//! state, the only O(n) step, amortized by that threshold), switches to a
//! new log, and a blocking task writes `snapshot.tmp`, fsyncs it, renames it
//! over `snapshot`, fsyncs the directory and only then deletes the old logs.
//! A crash at any point leaves either the old snapshot with all old logs, or
//! the new snapshot, both of which recover to the same state.
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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::{
    Compare, EventKind, KeyValue, LeaseId, Op, Result, Revision, Store, StoreError, Txn, TxnResponse, WatchEvent,
    WatchMessage,
};

/// The largest value a put may carry: etcd's default `--max-request-bytes`.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// The largest log record (one transaction's writes). It bounds what a
/// damaged length field can make recovery allocate.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

const LOCK_FILE: &str = "LOCK";
const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
const WAL_MAGIC: &[u8; 8] = b"DRVWAL01";
const SNAPSHOT_MAGIC: &[u8; 8] = b"DRVSNAP1";
const RECORD_HEADER_BYTES: usize = 12;
/// Offset of `op_count` in a record: header, then `seq` and `revision`.
const RECORD_OP_COUNT_AT: usize = RECORD_HEADER_BYTES + 16;
const SNAPSHOT_HEADER_BYTES: usize = 20;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_DELETE_PREFIX: u8 = 3;
const OP_LEASE_GRANT: u8 = 4;
const OP_LEASE_REVOKE: u8 = 5;

/// How many history revisions a catch-up task scans per lock acquisition, so
/// that a watcher with a narrow prefix cannot hold the lock for long.
const CATCH_UP_SCAN_LIMIT: Revision = 1024;

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
    sync_status: watch::Sender<SyncStatus>,
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
    /// none, the store stops (see [`check_place`]).
    dir_identity: (u64, u64),
}

/// What keeps a data directory to one store: an `flock` on its `LOCK` file,
/// and an abstract Unix socket named after the directory's path. The flock
/// goes with the directory when it is deleted, so a second coordinator could
/// make the path again and lock the new `LOCK`; the socket name belongs to
/// this process until it exits, whatever happens to the files.
struct DirLock {
    _file: File,
    _name: std::os::unix::net::UnixListener,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("dir", &self.dir).field("opts", &self.opts).finish()
    }
}

#[derive(Debug, Clone)]
struct SyncStatus {
    durable_seq: u64,
    failed: Option<Arc<str>>,
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

/// The deterministic part of the state: what snapshots hold and log replay
/// rebuilds.
struct Keyspace {
    kv: BTreeMap<String, Entry>,
    revision: Revision,
    /// Sequence number of the last log record applied.
    seq: u64,
    leases: HashMap<LeaseId, Lease>,
    /// Lease deadlines in expiry order, so the next one is found in O(log n).
    lease_deadlines: BTreeSet<(Instant, LeaseId)>,
    next_lease_id: LeaseId,
    history: History,
}

struct Entry {
    value: Vec<u8>,
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    lease: LeaseId,
}

impl Entry {
    fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// Retained events: `entries[i]` holds the events of revision `first + i`.
/// Revisions are contiguous because only a revision with changes exists.
struct History {
    first: Revision,
    entries: VecDeque<(Arc<[WatchEvent]>, usize)>,
    bytes: usize,
    max_revisions: usize,
    max_bytes: usize,
}

impl History {
    fn new(first: Revision, opts: &EmbeddedOptions) -> History {
        History {
            first,
            entries: VecDeque::new(),
            bytes: 0,
            max_revisions: opts.watch_history_revisions,
            max_bytes: opts.watch_history_bytes,
        }
    }

    fn push(&mut self, revision: Revision, events: Vec<WatchEvent>) {
        debug_assert_eq!(revision, self.first + self.entries.len() as Revision);
        let size = events.iter().map(|e| e.kv.key.len() + e.kv.value.len() + std::mem::size_of::<WatchEvent>()).sum();
        self.entries.push_back((events.into(), size));
        self.bytes += size;
    }

    fn get(&self, revision: Revision) -> Option<&Arc<[WatchEvent]>> {
        let index = usize::try_from(revision.checked_sub(self.first)?).ok()?;
        self.entries.get(index).map(|(events, _)| events)
    }

    /// Drops the oldest revisions while over either cap, but never one after
    /// `upto`: live watchers have not been sent those yet.
    fn trim(&mut self, upto: Revision) {
        while self.first <= upto && (self.entries.len() > self.max_revisions || self.bytes > self.max_bytes) {
            let Some((_, size)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= size;
            self.first += 1;
        }
    }
}

#[derive(Clone)]
struct Watcher {
    prefix: String,
    tx: mpsc::Sender<WatchMessage>,
}

struct LiveWatcher {
    watcher: Watcher,
    /// The first revision this watcher wants; it may lie in the future.
    start: Revision,
}

/// The open log file.
struct Wal {
    /// Shared with the syncer, which calls `fdatasync` on it without the lock.
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    /// Earlier logs that a snapshot in progress (or one that failed) still
    /// has to make redundant before they can be deleted.
    obsolete: Vec<PathBuf>,
}

impl Wal {
    /// Switches to a new log whose first record will be `first_seq`. The old
    /// log is synced first, so that only the newest log can ever have a torn
    /// or missing tail; recovery relies on that.
    fn rotate(&mut self, dir: &Path, first_seq: u64, fsync: bool) -> Result<()> {
        if fsync {
            self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
        }
        let (file, path) = create_log(dir, first_seq, fsync)?;
        self.obsolete.push(std::mem::replace(&mut self.path, path));
        self.file = Arc::new(file);
        self.size = WAL_MAGIC.len() as u64;
        Ok(())
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
            sync_status: watch::channel(status).0,
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

    /// Waits until the log is durable up to `seq`, if there is anything to
    /// wait for.
    async fn wait_durable(&self, seq: Option<u64>) -> Result<()> {
        let Some(seq) = seq else { return Ok(()) };
        let mut rx = self.sync_status.subscribe();
        let (durable, failed) = {
            let status = rx
                .wait_for(|s| s.durable_seq >= seq || s.failed.is_some())
                .await
                .map_err(|_| StoreError::Unavailable("embedded store closed".into()))?;
            (status.durable_seq >= seq, status.failed.clone())
        };
        match (durable, failed) {
            (true, _) => Ok(()),
            (false, Some(reason)) => Err(failed_error(&reason)),
            (false, None) => Err(StoreError::Unavailable("embedded store closed".into())),
        }
    }

    /// Appends one encoded record to the log. Called with the lock held and
    /// after the in-memory state was updated, which keeps log order equal to
    /// sequence order. Returns the record's sequence number.
    fn commit(&self, st: &mut State, record: &[u8]) -> Result<u64> {
        if let Err(e) = (&*st.wal.file).write_all(record) {
            let err = io_err(&st.wal.path, e);
            self.fail(st, format!("appending to the log failed: {err}"));
            return Err(err);
        }
        st.ks.seq += 1;
        st.wal.size += record.len() as u64;
        if self.opts.fsync {
            self.sync_wake.notify_one();
        } else {
            let (seq, revision) = (st.ks.seq, st.ks.revision);
            self.mark_durable(st, seq, revision);
        }
        self.maybe_compact(st);
        Ok(st.ks.seq)
    }

    /// Records that the log is on disk up to `seq` (whose revision is
    /// `revision`), sends the now durable events to the live watchers and
    /// wakes callers waiting for it.
    fn mark_durable(&self, st: &mut State, seq: u64, revision: Revision) {
        if seq <= st.durable_seq {
            return;
        }
        st.durable_seq = seq;
        self.publish(st, revision);
        self.sync_status.send_replace(SyncStatus { durable_seq: seq, failed: None });
    }

    fn publish(&self, st: &mut State, upto: Revision) {
        while st.visible_revision < upto {
            let revision = st.visible_revision + 1;
            match st.ks.history.get(revision).cloned() {
                Some(events) => st.watchers.retain_mut(|w| self.deliver(w, revision, &events)),
                None => {
                    // History is never trimmed past `visible_revision`, so this
                    // cannot happen; if it did, closing the watchers makes them
                    // relist instead of silently missing the revision.
                    tracing::error!(revision, "watch history lost an unpublished revision");
                    st.watchers.clear();
                }
            }
            st.visible_revision = revision;
        }
        st.ks.history.trim(st.visible_revision);
    }

    /// Sends one revision to a live watcher. Returns whether the watcher stays
    /// in the live list.
    fn deliver(&self, live: &mut LiveWatcher, revision: Revision, events: &[WatchEvent]) -> bool {
        if live.watcher.tx.is_closed() {
            return false;
        }
        if revision < live.start {
            return true;
        }
        let batch = matching(events, &live.watcher.prefix);
        if batch.is_empty() {
            return true;
        }
        match live.watcher.tx.try_send(WatchMessage::Events(batch)) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(_)) => {
                // The watcher is slow. Blocking here would stall every writer,
                // so its own task takes over from this revision and feeds it
                // from the history at whatever pace it reads.
                tokio::spawn(run_catch_up(self.this.clone(), live.watcher.clone(), revision));
                false
            }
        }
    }

    /// Stops the store after a failed write or sync: from now on the log on
    /// disk may not match memory, so nothing may be served.
    fn fail(&self, st: &mut State, reason: String) {
        tracing::error!(dir = %self.dir.display(), %reason, "embedded store stopped");
        let reason: Arc<str> = reason.into();
        st.failed = Some(reason.clone());
        st.watchers.clear();
        self.sync_status.send_replace(SyncStatus { durable_seq: st.durable_seq, failed: Some(reason) });
    }

    fn finish_sync(
        &self,
        seq: u64,
        revision: Revision,
        result: std::result::Result<std::result::Result<(), String>, tokio::task::JoinError>,
    ) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.failed.is_some() {
            return;
        }
        match result {
            Ok(Ok(())) => self.mark_durable(&mut st, seq, revision),
            Ok(Err(reason)) => self.fail(&mut st, reason),
            Err(e) => self.fail(&mut st, format!("the log syncer failed: {e}")),
        }
    }

    /// The reason the store has stopped, if it has: after that every call
    /// fails until the coordinator restarts.
    pub fn stopped_reason(&self) -> Option<String> {
        match self.state.lock() {
            Ok(st) => st.failed.as_deref().map(str::to_string),
            Err(_) => Some("embedded store state was poisoned by a panic".to_string()),
        }
    }

    /// Starts a snapshot when the log has grown enough. Called with the lock
    /// held right after a record was written.
    fn maybe_compact(&self, st: &mut State) {
        let threshold = self.opts.compact_log_bytes.max(st.last_snapshot_bytes);
        if st.compacting || st.failed.is_some() || st.wal.size < threshold {
            return;
        }
        let snapshot = encode_snapshot(&st.ks);
        if let Err(e) = st.wal.rotate(&self.dir, st.ks.seq + 1, self.opts.fsync) {
            self.fail(st, format!("starting a new log failed: {e}"));
            return;
        }
        if self.opts.fsync {
            // Rotating synced the old log, which holds every record so far.
            let (seq, revision) = (st.ks.seq, st.ks.revision);
            self.mark_durable(st, seq, revision);
        }
        st.compacting = true;
        let obsolete = std::mem::take(&mut st.wal.obsolete);
        let dir = self.dir.clone();
        let fsync = self.opts.fsync;
        let dir_lock = self.dir_lock.clone();
        let this = self.this.clone();
        tokio::spawn(async move {
            let size = snapshot.len() as u64;
            let result = tokio::task::spawn_blocking(move || {
                let _dir_lock = dir_lock;
                match write_snapshot(&dir, &snapshot, fsync) {
                    Ok(()) => {
                        remove_logs(&obsolete);
                        Ok(())
                    }
                    Err(e) => Err((e, obsolete)),
                }
            })
            .await;
            let Some(store) = this.upgrade() else { return };
            let Ok(mut st) = store.state.lock() else {
                return;
            };
            st.compacting = false;
            match result {
                Ok(Ok(())) => st.last_snapshot_bytes = size,
                Ok(Err((e, obsolete))) => {
                    // The old logs stay until a later snapshot succeeds, so
                    // nothing is lost; recovery just replays more.
                    tracing::warn!(dir = %store.dir.display(), error = %e, "writing a snapshot failed");
                    st.wal.obsolete.extend(obsolete);
                }
                Err(e) => {
                    tracing::warn!(dir = %store.dir.display(), error = %e, "snapshot task failed");
                }
            }
        });
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
    fn live_watcher_count(&self) -> usize {
        self.state.lock().unwrap().watchers.len()
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
        let (tx, rx) = mpsc::channel(self.opts.watch_channel_capacity.max(1));
        let watcher = Watcher { prefix: prefix.to_owned(), tx };
        let mut st = self.lock_state()?;
        let start = if start <= 0 { st.visible_revision + 1 } else { start };
        if start > st.visible_revision {
            st.watchers.push(LiveWatcher { watcher, start });
        } else if start < st.ks.history.first {
            // A fresh channel has room for this one message; dropping the
            // sender afterwards closes the watch.
            let compact_revision = st.ks.history.first;
            let _ = watcher.tx.try_send(WatchMessage::Compacted { compact_revision });
        } else {
            tokio::spawn(run_catch_up(self.this.clone(), watcher, start));
        }
        Ok(rx)
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

/// The events of one revision that fall under `prefix`.
fn matching(events: &[WatchEvent], prefix: &str) -> Vec<WatchEvent> {
    events.iter().filter(|e| e.kv.key.starts_with(prefix)).cloned().collect()
}

fn failed_error(reason: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "embedded store stopped after an earlier failure ({reason}); restart the coordinator"
    ))
}

fn io_err(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

/// `now + ttl`, saturating far in the future instead of overflowing.
fn deadline_after(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Calls `fdatasync` for the records written since the last round, for as
/// long as the store exists.
async fn run_syncer(this: Weak<EmbeddedStore>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let (file, path, seq, revision) = {
            let Some(store) = this.upgrade() else { return };
            let Ok(st) = store.state.lock() else { return };
            if st.failed.is_some() {
                return;
            }
            if st.durable_seq >= st.ks.seq {
                continue;
            }
            // If the log rotates after this, the file synced here is the old
            // one; rotation synced it already, so the round is still correct.
            (st.wal.file.clone(), st.wal.path.clone(), st.ks.seq, st.ks.revision)
        };
        let Some((dir, dir_identity)) = this.upgrade().map(|s| (s.dir.clone(), s.dir_identity)) else { return };
        // The place is checked after the sync and before anyone hears the
        // write is durable: a write into a deleted log is not.
        let result = tokio::task::spawn_blocking(move || {
            file.sync_data().map_err(|e| format!("fdatasync of {} failed: {e}", path.display()))?;
            check_place(&dir, dir_identity, &file, &path)
        })
        .await;
        let Some(store) = this.upgrade() else { return };
        store.finish_sync(seq, revision, result);
    }
}

/// How often an idle store checks that its directory and log are still in
/// place (a write checks at once, in the syncer).
const PLACE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Stops the store, within [`PLACE_CHECK_INTERVAL`], when its directory or
/// current log file is deleted or replaced, even when nothing is written.
async fn run_place_watch(this: Weak<EmbeddedStore>) {
    loop {
        tokio::time::sleep(PLACE_CHECK_INTERVAL).await;
        let Some(store) = this.upgrade() else { return };
        let (file, path) = {
            let Ok(st) = store.state.lock() else { return };
            if st.failed.is_some() {
                return;
            }
            (st.wal.file.clone(), st.wal.path.clone())
        };
        let (dir, dir_identity) = (store.dir.clone(), store.dir_identity);
        drop(store);
        let checked = tokio::task::spawn_blocking(move || check_place(&dir, dir_identity, &file, &path)).await;
        if let Ok(Err(reason)) = checked {
            let Some(store) = this.upgrade() else { return };
            let Ok(mut st) = store.state.lock() else { return };
            if st.failed.is_none() {
                store.fail(&mut st, reason);
            }
            return;
        }
    }
}

/// A directory's device and inode.
fn identity(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Whether the store's files are where it believes: the data directory is
/// the one opened (not deleted, not made again, not replaced) and the log
/// being written is still linked into it. Otherwise writes would go into
/// files nobody will ever read again, and a restart would lose them.
fn check_place(dir: &Path, dir_identity: (u64, u64), wal: &File, wal_path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let advice = "stop this coordinator, put the data directory back (or restore it from a backup) and restart";
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("the data directory {} was deleted; {advice}", dir.display()));
        }
        Err(e) => return Err(format!("cannot check the data directory {}: {e}", dir.display())),
        Ok(meta) if identity(&meta) != dir_identity => {
            return Err(format!(
                "the data directory {} was replaced by another directory since the store opened it; {advice}",
                dir.display()
            ));
        }
        Ok(_) => {}
    }
    match wal.metadata() {
        Ok(meta) if meta.nlink() == 0 => {
            Err(format!("the log file {} was deleted while in use; {advice}", wal_path.display()))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot check the log file {}: {e}", wal_path.display())),
    }
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

/// Feeds one watcher from the history, starting at revision `next`, awaiting
/// space in its channel, until it has caught up; then it becomes a live
/// watcher again.
async fn run_catch_up(this: Weak<EmbeddedStore>, watcher: Watcher, mut next: Revision) {
    loop {
        if watcher.tx.is_closed() {
            return;
        }
        let message = {
            let Some(store) = this.upgrade() else { return };
            let Ok(mut st) = store.state.lock() else {
                return;
            };
            if st.failed.is_some() {
                return;
            }
            if next < st.ks.history.first {
                WatchMessage::Compacted { compact_revision: st.ks.history.first }
            } else if next > st.visible_revision {
                st.watchers.push(LiveWatcher { watcher, start: next });
                return;
            } else {
                let end = st.visible_revision.min(next + CATCH_UP_SCAN_LIMIT - 1);
                let mut batch = Vec::new();
                while next <= end && batch.is_empty() {
                    if let Some(events) = st.ks.history.get(next) {
                        batch = matching(events, &watcher.prefix);
                    }
                    next += 1;
                }
                if batch.is_empty() {
                    continue;
                }
                WatchMessage::Events(batch)
            }
        };
        let compacted = matches!(message, WatchMessage::Compacted { .. });
        if watcher.tx.send(message).await.is_err() || compacted {
            return;
        }
    }
}

impl Keyspace {
    fn empty(opts: &EmbeddedOptions) -> Keyspace {
        // As in etcd, an empty store is at revision 1 and the first write
        // makes revision 2.
        Keyspace {
            kv: BTreeMap::new(),
            revision: 1,
            seq: 0,
            leases: HashMap::new(),
            lease_deadlines: BTreeSet::new(),
            next_lease_id: 1,
            history: History::new(2, opts),
        }
    }

    fn compare(&self, compare: &Compare) -> bool {
        match compare {
            Compare::ModRevision(key, want) => self.kv.get(key).map_or(0, |e| e.mod_revision) == *want,
            Compare::CreateRevision(key, want) => self.kv.get(key).map_or(0, |e| e.create_revision) == *want,
            Compare::Value(key, want) => self.kv.get(key).is_some_and(|e| e.value == *want),
        }
    }

    fn range(&self, prefix: &str) -> Vec<KeyValue> {
        self.kv
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, entry)| entry.to_kv(key))
            .collect()
    }

    /// Puts a key at `revision`. Fails with the lease id if the lease does
    /// not exist, before changing anything.
    fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
        revision: Revision,
        events: &mut Vec<WatchEvent>,
    ) -> std::result::Result<(), LeaseId> {
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(lease);
        }
        let kv = match self.kv.get_mut(&key) {
            Some(entry) => {
                if entry.lease != lease {
                    if let Some(old) = self.leases.get_mut(&entry.lease) {
                        old.keys.remove(&key);
                    }
                    if let Some(new) = self.leases.get_mut(&lease) {
                        new.keys.insert(key.clone());
                    }
                }
                entry.value = value;
                entry.mod_revision = revision;
                entry.version += 1;
                entry.lease = lease;
                entry.to_kv(&key)
            }
            None => {
                if let Some(new) = self.leases.get_mut(&lease) {
                    new.keys.insert(key.clone());
                }
                let entry = Entry { value, create_revision: revision, mod_revision: revision, version: 1, lease };
                let kv = entry.to_kv(&key);
                self.kv.insert(key, entry);
                kv
            }
        };
        events.push(WatchEvent { kind: EventKind::Put, kv });
        Ok(())
    }

    fn delete(&mut self, key: &str, revision: Revision, events: &mut Vec<WatchEvent>) {
        let Some(entry) = self.kv.remove(key) else {
            return;
        };
        if let Some(lease) = self.leases.get_mut(&entry.lease) {
            lease.keys.remove(key);
        }
        events.push(tombstone(key.to_owned(), revision));
    }

    fn delete_prefix(&mut self, prefix: &str, revision: Revision, events: &mut Vec<WatchEvent>) {
        let keys: Vec<String> = self
            .kv
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            self.delete(&key, revision, events);
        }
    }

    fn grant_lease(&mut self, lease: LeaseId, ttl: Duration, deadline: Instant) {
        self.leases.insert(lease, Lease { ttl, deadline, keys: BTreeSet::new() });
        self.lease_deadlines.insert((deadline, lease));
        self.next_lease_id = self.next_lease_id.max(lease + 1);
    }

    /// Removes a lease and deletes its keys at `revision`. Returns false if
    /// there is no such lease.
    fn revoke_lease(&mut self, lease: LeaseId, revision: Revision, events: &mut Vec<WatchEvent>) -> bool {
        let Some(removed) = self.leases.remove(&lease) else {
            return false;
        };
        self.lease_deadlines.remove(&(removed.deadline, lease));
        for key in removed.keys {
            if self.kv.remove(&key).is_some() {
                events.push(tombstone(key, revision));
            }
        }
        true
    }

    fn restart_lease_clocks(&mut self, now: Instant) {
        self.lease_deadlines.clear();
        for (id, lease) in &mut self.leases {
            lease.deadline = deadline_after(now, lease.ttl);
            self.lease_deadlines.insert((lease.deadline, *id));
        }
    }

    /// Applies one log record during recovery.
    fn replay(&mut self, record: Record, now: Instant) -> std::result::Result<(), String> {
        if record.seq != self.seq + 1 {
            return Err(format!(
                "record has sequence number {} but {} was expected (is a log file missing?)",
                record.seq,
                self.seq + 1
            ));
        }
        let revision = record.revision;
        let mut events = Vec::new();
        for op in record.ops {
            match op {
                LogOp::Put { key, value, lease } => {
                    self.put(key, value, lease, revision, &mut events)
                        .map_err(|lease| format!("put names unknown lease {lease}"))?;
                }
                LogOp::Delete { key } => self.delete(&key, revision, &mut events),
                LogOp::DeletePrefix { prefix } => self.delete_prefix(&prefix, revision, &mut events),
                LogOp::LeaseGrant { id, ttl } => {
                    if self.leases.contains_key(&id) {
                        return Err(format!("lease {id} granted twice"));
                    }
                    self.grant_lease(id, ttl, deadline_after(now, ttl));
                }
                LogOp::LeaseRevoke { id } => {
                    if !self.revoke_lease(id, revision, &mut events) {
                        return Err(format!("revoke of unknown lease {id}"));
                    }
                }
            }
        }
        let expected = if events.is_empty() { self.revision } else { self.revision + 1 };
        if revision != expected {
            return Err(format!("record has revision {revision} but {expected} was expected"));
        }
        if !events.is_empty() {
            self.history.push(revision, events);
            self.history.trim(revision);
        }
        self.revision = revision;
        self.seq = record.seq;
        Ok(())
    }
}

fn tombstone(key: String, revision: Revision) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        kv: KeyValue { key, value: Vec::new(), create_revision: 0, mod_revision: revision, version: 0, lease: 0 },
    }
}

// ---------------------------------------------------------------------------
// CRC-32C (Castagnoli), slicing-by-8. Snapshots can be large, so the few
// extra tables are worth the several-fold speed-up over one byte at a time.

static CRC32C_TABLES: [[u32; 256]; 8] = crc32c_tables();

const fn crc32c_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut t = 1;
        while t < 8 {
            let prev = tables[t - 1][i];
            tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            t += 1;
        }
        i += 1;
    }
    tables
}

/// CRC-32C of `data`; also the checksum of log chunks in their segment
/// files (`crate::segments`).
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    let t = &CRC32C_TABLES;
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let lo = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ crc;
        let hi = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &byte in chunks.remainder() {
        crc = t[0][((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

// ---------------------------------------------------------------------------
// Encoding.

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Writes a length-prefixed byte string. Lengths over `u32::MAX` cannot
/// occur: records are capped far below that before they are written, and a
/// snapshot only holds keys and values that passed through records.
fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(buf, bytes.len() as u32);
    buf.extend_from_slice(bytes);
}

fn ttl_nanos(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!("data ends {} bytes into a {}-byte field", self.buf.len() - self.pos, n));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn i64(&mut self) -> std::result::Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a key is not valid UTF-8".to_owned())
    }

    fn finish(&self) -> std::result::Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!("{} unexpected trailing bytes", self.buf.len() - self.pos))
        }
    }
}

/// One write operation as logged.
#[derive(Debug, PartialEq, Eq)]
enum LogOp {
    Put { key: String, value: Vec<u8>, lease: LeaseId },
    Delete { key: String },
    DeletePrefix { prefix: String },
    LeaseGrant { id: LeaseId, ttl: Duration },
    LeaseRevoke { id: LeaseId },
}

#[derive(Debug, PartialEq, Eq)]
struct Record {
    seq: u64,
    revision: Revision,
    ops: Vec<LogOp>,
}

/// Encodes one log record, header included, straight from borrowed data so
/// that logging a transaction copies each value once.
struct RecordBuilder {
    buf: Vec<u8>,
    ops: u32,
}

impl RecordBuilder {
    fn new(seq: u64, revision: Revision) -> RecordBuilder {
        let mut buf = Vec::with_capacity(128);
        buf.resize(RECORD_HEADER_BYTES, 0);
        put_u64(&mut buf, seq);
        put_i64(&mut buf, revision);
        put_u32(&mut buf, 0);
        RecordBuilder { buf, ops: 0 }
    }

    fn put(&mut self, key: &str, value: &[u8], lease: LeaseId) {
        self.buf.push(OP_PUT);
        put_bytes(&mut self.buf, key.as_bytes());
        put_bytes(&mut self.buf, value);
        put_i64(&mut self.buf, lease);
        self.ops += 1;
    }

    fn delete(&mut self, key: &str) {
        self.buf.push(OP_DELETE);
        put_bytes(&mut self.buf, key.as_bytes());
        self.ops += 1;
    }

    fn delete_prefix(&mut self, prefix: &str) {
        self.buf.push(OP_DELETE_PREFIX);
        put_bytes(&mut self.buf, prefix.as_bytes());
        self.ops += 1;
    }

    fn lease_grant(&mut self, id: LeaseId, ttl: Duration) {
        self.buf.push(OP_LEASE_GRANT);
        put_i64(&mut self.buf, id);
        put_u64(&mut self.buf, ttl_nanos(ttl));
        self.ops += 1;
    }

    fn lease_revoke(&mut self, id: LeaseId) {
        self.buf.push(OP_LEASE_REVOKE);
        put_i64(&mut self.buf, id);
        self.ops += 1;
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        let payload_len = self.buf.len() - RECORD_HEADER_BYTES;
        if payload_len > MAX_RECORD_BYTES {
            return Err(StoreError::ValueTooLarge {
                key: "(whole transaction)".into(),
                size: payload_len,
                limit: MAX_RECORD_BYTES,
            });
        }
        self.buf[RECORD_OP_COUNT_AT..RECORD_OP_COUNT_AT + 4].copy_from_slice(&self.ops.to_le_bytes());
        let crc = crc32c(&self.buf[RECORD_HEADER_BYTES..]);
        self.buf[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let header_crc = crc32c(&self.buf[0..8]);
        self.buf[8..12].copy_from_slice(&header_crc.to_le_bytes());
        Ok(self.buf)
    }
}

fn encode_txn_record(seq: u64, revision: Revision, ops: &[Op]) -> Result<Vec<u8>> {
    let mut record = RecordBuilder::new(seq, revision);
    for op in ops {
        match op {
            Op::Put { key, value, lease } => record.put(key, value, *lease),
            Op::Delete { key } => record.delete(key),
            Op::DeletePrefix { prefix } => record.delete_prefix(prefix),
            Op::Get { .. } => {}
        }
    }
    record.finish()
}

fn decode_record(payload: &[u8]) -> std::result::Result<Record, String> {
    let mut r = Reader::new(payload);
    let seq = r.u64()?;
    let revision = r.i64()?;
    let count = r.u32()?;
    let mut ops = Vec::new();
    for _ in 0..count {
        let op = match r.u8()? {
            OP_PUT => LogOp::Put { key: r.string()?, value: r.bytes()?.to_vec(), lease: r.i64()? },
            OP_DELETE => LogOp::Delete { key: r.string()? },
            OP_DELETE_PREFIX => LogOp::DeletePrefix { prefix: r.string()? },
            OP_LEASE_GRANT => LogOp::LeaseGrant { id: r.i64()?, ttl: Duration::from_nanos(r.u64()?) },
            OP_LEASE_REVOKE => LogOp::LeaseRevoke { id: r.i64()? },
            tag => return Err(format!("unknown operation tag {tag}")),
        };
        ops.push(op);
    }
    r.finish()?;
    Ok(Record { seq, revision, ops })
}

/// Why the record at some offset could not be read.
#[derive(Debug)]
enum RecordDamage {
    /// Fewer than a header's bytes remain.
    TruncatedHeader,
    /// The header's own checksum does not match.
    BadHeader,
    /// The header is fine but the file ends inside the payload.
    TruncatedPayload,
    /// The payload's checksum does not match; `end` is where it ends.
    BadPayload { end: usize },
}

impl RecordDamage {
    /// Whether the damage looks like a write cut short by a crash: nothing
    /// but zeros may follow it (file systems may zero-fill a tail whose data
    /// never reached the disk).
    fn is_torn_tail(&self, data: &[u8], offset: usize) -> bool {
        let rest_from = match self {
            RecordDamage::TruncatedHeader | RecordDamage::TruncatedPayload => return true,
            RecordDamage::BadHeader => offset + RECORD_HEADER_BYTES,
            RecordDamage::BadPayload { end } => *end,
        };
        data.get(rest_from..).is_none_or(|rest| rest.iter().all(|&b| b == 0))
    }

    fn describe(&self) -> &'static str {
        match self {
            RecordDamage::TruncatedHeader => "record header is cut short",
            RecordDamage::BadHeader => "record header checksum mismatch",
            RecordDamage::TruncatedPayload => "record is cut short",
            RecordDamage::BadPayload { .. } => "record checksum mismatch",
        }
    }
}

/// Reads the record at `offset`: its payload and where the next one starts.
fn parse_record(data: &[u8], offset: usize) -> std::result::Result<(&[u8], usize), RecordDamage> {
    let Some(header) = data.get(offset..offset + RECORD_HEADER_BYTES) else {
        return Err(RecordDamage::TruncatedHeader);
    };
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let header_crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if crc32c(&header[0..8]) != header_crc || len > MAX_RECORD_BYTES {
        return Err(RecordDamage::BadHeader);
    }
    let start = offset + RECORD_HEADER_BYTES;
    let end = start + len;
    let Some(payload) = data.get(start..end) else {
        return Err(RecordDamage::TruncatedPayload);
    };
    if crc32c(payload) != crc {
        return Err(RecordDamage::BadPayload { end });
    }
    Ok((payload, end))
}

fn encode_snapshot(ks: &Keyspace) -> Vec<u8> {
    let mut buf = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + 64 + ks.kv.len() * 64);
    buf.resize(SNAPSHOT_HEADER_BYTES, 0);
    put_u64(&mut buf, ks.seq);
    put_i64(&mut buf, ks.revision);
    put_i64(&mut buf, ks.next_lease_id);
    put_u64(&mut buf, ks.leases.len() as u64);
    for (id, lease) in &ks.leases {
        put_i64(&mut buf, *id);
        put_u64(&mut buf, ttl_nanos(lease.ttl));
    }
    put_u64(&mut buf, ks.kv.len() as u64);
    for (key, entry) in &ks.kv {
        put_bytes(&mut buf, key.as_bytes());
        put_bytes(&mut buf, &entry.value);
        put_i64(&mut buf, entry.create_revision);
        put_i64(&mut buf, entry.mod_revision);
        put_i64(&mut buf, entry.version);
        put_i64(&mut buf, entry.lease);
    }
    let payload_len = (buf.len() - SNAPSHOT_HEADER_BYTES) as u64;
    let crc = crc32c(&buf[SNAPSHOT_HEADER_BYTES..]);
    buf[0..8].copy_from_slice(SNAPSHOT_MAGIC);
    buf[8..16].copy_from_slice(&payload_len.to_le_bytes());
    buf[16..20].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn decode_snapshot(data: &[u8], opts: &EmbeddedOptions, now: Instant) -> std::result::Result<Keyspace, String> {
    if data.len() < SNAPSHOT_HEADER_BYTES || &data[0..8] != SNAPSHOT_MAGIC {
        return Err("not a drover snapshot (bad magic or too short)".into());
    }
    let len = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(data[16..20].try_into().expect("4 bytes"));
    let payload = &data[SNAPSHOT_HEADER_BYTES..];
    if payload.len() as u64 != len {
        return Err(format!("header says {len} bytes of data but the file has {}", payload.len()));
    }
    if crc32c(payload) != crc {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader::new(payload);
    let seq = r.u64()?;
    let revision = r.i64()?;
    let next_lease_id = r.i64()?;
    let mut ks = Keyspace {
        kv: BTreeMap::new(),
        revision,
        seq,
        leases: HashMap::new(),
        lease_deadlines: BTreeSet::new(),
        next_lease_id,
        history: History::new(revision + 1, opts),
    };
    for _ in 0..r.u64()? {
        let id = r.i64()?;
        let ttl = Duration::from_nanos(r.u64()?);
        ks.grant_lease(id, ttl, deadline_after(now, ttl));
    }
    for _ in 0..r.u64()? {
        let key = r.string()?;
        let entry = Entry {
            value: r.bytes()?.to_vec(),
            create_revision: r.i64()?,
            mod_revision: r.i64()?,
            version: r.i64()?,
            lease: r.i64()?,
        };
        if entry.lease != 0 {
            let lease = ks
                .leases
                .get_mut(&entry.lease)
                .ok_or_else(|| format!("key {key} names unknown lease {}", entry.lease))?;
            lease.keys.insert(key.clone());
        }
        ks.kv.insert(key, entry);
    }
    r.finish()?;
    Ok(ks)
}

// ---------------------------------------------------------------------------
// Files.

fn log_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("wal-{first_seq:016x}.log"))
}

/// The log files in `dir`, by first sequence number.
fn list_logs(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut logs = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(hex) = name.strip_prefix("wal-").and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if let Ok(first_seq) = u64::from_str_radix(hex, 16) {
            logs.push((first_seq, entry.path()));
        }
    }
    logs.sort();
    Ok(logs)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates an empty log. Its directory entry is synced too: syncing the file
/// alone would not keep the file itself across a power loss.
fn create_log(dir: &Path, first_seq: u64, fsync: bool) -> Result<(File, PathBuf)> {
    let path = log_path(dir, first_seq);
    let create = || -> io::Result<File> {
        let mut file = File::options().write(true).create(true).truncate(true).open(&path)?;
        file.write_all(WAL_MAGIC)?;
        if fsync {
            file.sync_all()?;
            sync_dir(dir)?;
        }
        Ok(file)
    };
    let file = create().map_err(|e| io_err(&path, e))?;
    Ok((file, path))
}

/// Replaces the snapshot atomically: write a temporary file, sync it, rename
/// it over the old one and sync the directory so the rename sticks.
fn write_snapshot(dir: &Path, snapshot: &[u8], fsync: bool) -> io::Result<()> {
    let tmp = dir.join(SNAPSHOT_TMP_FILE);
    let mut file = File::create(&tmp)?;
    file.write_all(snapshot)?;
    if fsync {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Deletes logs a durable snapshot made redundant. A failure only wastes disk
/// space (recovery skips such logs), so it is logged, not returned.
fn remove_logs(paths: &[PathBuf]) {
    for path in paths {
        if let Err(e) = fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not delete an old log");
        }
    }
}

/// The abstract socket name that stands for a data directory: its
/// canonical path, shortened to a checksum and its tail when too long for a
/// socket address (108 bytes).
fn lock_name(canonical: &Path) -> Vec<u8> {
    let path = canonical.as_os_str().as_encoded_bytes();
    let mut name = b"drover-store:".to_vec();
    if path.len() <= 90 {
        name.extend_from_slice(path);
    } else {
        name.extend_from_slice(format!("{:08x}:", crc32c(path)).as_bytes());
        name.extend_from_slice(&path[path.len() - 80..]);
    }
    name
}

/// Takes the directory's lock, or explains who holds it.
fn lock_dir(dir: &Path) -> Result<DirLock> {
    let file = lock_file(dir)?;
    let canonical = fs::canonicalize(dir).map_err(|e| io_err(dir, e))?;
    let name = lock_name(&canonical);
    let taken = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(&name)
            .and_then(|addr| std::os::unix::net::UnixListener::bind_addr(&addr))
    };
    match taken {
        Ok(listener) => Ok(DirLock { _file: file, _name: listener }),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(StoreError::Unavailable(format!(
            "data directory {} is in use by another drover-coordinator on this host (the directory may have \
             been deleted and made again under it); stop that coordinator first",
            dir.display()
        ))),
        Err(e) => Err(io_err(dir, e)),
    }
}

/// Takes the `flock` on the directory's `LOCK` file.
fn lock_file(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    match file.try_lock() {
        Ok(()) => {
            // The pid is only a hint for the error below; failing to write it
            // is harmless.
            let _ = file.set_len(0).and_then(|()| write!(file, "{}", std::process::id()));
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
            Err(StoreError::Unavailable(format!(
                "data directory {} is in use by another drover-coordinator{holder}",
                dir.display()
            )))
        }
        Err(fs::TryLockError::Error(e)) => Err(io_err(&path, e)),
    }
}

struct Recovered {
    ks: Keyspace,
    wal: Wal,
    lock: DirLock,
    snapshot_bytes: u64,
}

/// Loads the snapshot and replays the logs, then writes a fresh snapshot and
/// starts a fresh log. Runs on the blocking pool.
fn recover(dir: &Path, opts: &EmbeddedOptions, now: Instant) -> Result<Recovered> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let lock = lock_dir(dir)?;
    let tmp = dir.join(SNAPSHOT_TMP_FILE);
    if let Err(e) = fs::remove_file(&tmp)
        && e.kind() != io::ErrorKind::NotFound
    {
        return Err(io_err(&tmp, e));
    }
    let snapshot_path = dir.join(SNAPSHOT_FILE);
    let mut ks = match fs::read(&snapshot_path) {
        Ok(data) => decode_snapshot(&data, opts, now)
            .map_err(|detail| StoreError::Corrupt { path: snapshot_path.display().to_string(), detail })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Keyspace::empty(opts),
        Err(e) => return Err(io_err(&snapshot_path, e)),
    };
    let snapshot_seq = ks.seq;
    let logs = list_logs(dir)?;
    let mut replayed = 0;
    for (i, (first_seq, path)) in logs.iter().enumerate() {
        // A log is redundant when the next log starts within the snapshot:
        // all its records are then in the snapshot.
        if logs.get(i + 1).is_some_and(|(next, _)| *next <= snapshot_seq + 1) {
            continue;
        }
        let is_last = i + 1 == logs.len();
        replayed += replay_log(&mut ks, path, *first_seq, snapshot_seq, is_last, now)?;
    }
    if replayed > 0 {
        tracing::info!(dir = %dir.display(), records = replayed, "replayed embedded store log");
    }
    let snapshot = encode_snapshot(&ks);
    write_snapshot(dir, &snapshot, opts.fsync).map_err(|e| io_err(&snapshot_path, e))?;
    let (file, path) = create_log(dir, ks.seq + 1, opts.fsync)?;
    let old: Vec<PathBuf> = logs.into_iter().map(|(_, p)| p).filter(|p| *p != path).collect();
    remove_logs(&old);
    Ok(Recovered {
        ks,
        wal: Wal { file: Arc::new(file), path, size: WAL_MAGIC.len() as u64, obsolete: Vec::new() },
        lock,
        snapshot_bytes: snapshot.len() as u64,
    })
}

/// Replays one log file and returns how many records it applied. Only the
/// last log may end in a torn record.
fn replay_log(
    ks: &mut Keyspace,
    path: &Path,
    first_seq: u64,
    snapshot_seq: u64,
    is_last: bool,
    now: Instant,
) -> Result<u64> {
    let data = fs::read(path).map_err(|e| io_err(path, e))?;
    let corrupt = |offset: usize, detail: &str| StoreError::Corrupt {
        path: path.display().to_string(),
        detail: format!("at byte offset {offset}: {detail}"),
    };
    if data.len() < WAL_MAGIC.len() {
        // A crash right after creating the file can leave it short.
        if is_last && WAL_MAGIC.starts_with(&data) {
            return Ok(0);
        }
        return Err(corrupt(0, "log file header is cut short"));
    }
    if &data[..WAL_MAGIC.len()] != WAL_MAGIC {
        return Err(corrupt(0, "not a drover log file (bad magic)"));
    }
    let mut offset = WAL_MAGIC.len();
    let mut applied = 0;
    let mut first = true;
    while offset < data.len() {
        let (payload, next) = match parse_record(&data, offset) {
            Ok(found) => found,
            Err(damage) if is_last && damage.is_torn_tail(&data, offset) => {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    damage = damage.describe(),
                    "ignoring a torn record at the end of the log (a write cut short by a crash)"
                );
                break;
            }
            Err(damage) => return Err(corrupt(offset, damage.describe())),
        };
        let record = decode_record(payload).map_err(|detail| corrupt(offset, &detail))?;
        if first && record.seq != first_seq {
            return Err(corrupt(
                offset,
                &format!("first record has sequence number {} but the file name says {first_seq}", record.seq),
            ));
        }
        first = false;
        if record.seq > snapshot_seq {
            ks.replay(record, now).map_err(|detail| corrupt(offset, &detail))?;
            applied += 1;
        }
        offset = next;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A scratch directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("drover-embedded-{name}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            TestDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        fn only_log(&self) -> PathBuf {
            let logs = list_logs(&self.0).unwrap();
            assert_eq!(logs.len(), 1, "expected exactly one log: {logs:?}");
            logs.into_iter().next().unwrap().1
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fast() -> EmbeddedOptions {
        EmbeddedOptions { fsync: false, ..EmbeddedOptions::default() }
    }

    async fn put(store: &EmbeddedStore, key: &str, value: &str) -> TxnResponse {
        store.txn(Txn::ops(vec![Op::put(key, value)])).await.unwrap()
    }

    async fn recv_events(rx: &mut mpsc::Receiver<WatchMessage>) -> Vec<WatchEvent> {
        let message = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("watch message in time")
            .expect("watch still open");
        match message {
            WatchMessage::Events(events) => events,
            other => panic!("expected events, got {other:?}"),
        }
    }

    fn summary(events: &[WatchEvent]) -> Vec<(EventKind, String, Revision)> {
        events.iter().map(|e| (e.kind.clone(), e.kv.key.clone(), e.kv.mod_revision)).collect()
    }

    /// Lets background tasks run without advancing a paused clock.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // The sliced and the byte-wise paths must agree at every length.
        let data: Vec<u8> = (0..100u8).collect();
        for len in 0..data.len() {
            let mut crc = !0u32;
            for &b in &data[..len] {
                crc = CRC32C_TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
            }
            assert_eq!(crc32c(&data[..len]), !crc, "length {len}");
        }
    }

    #[tokio::test]
    async fn txn_runs_the_branch_its_compares_select() {
        let dir = TestDir::new("txn");
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();

        // Create-if-absent succeeds once, then takes the failure branch.
        let create = |value: &str| Txn {
            compare: vec![Compare::CreateRevision("lock".into(), 0)],
            success: vec![Op::put("lock", value.to_owned())],
            failure: vec![Op::Get { key: "lock".into() }],
        };
        let first = store.txn(create("a")).await.unwrap();
        assert!(first.succeeded);
        assert_eq!(first.revision, 2);
        let second = store.txn(create("b")).await.unwrap();
        assert!(!second.succeeded);
        assert_eq!(second.revision, 2, "a read-only failure branch does not bump the revision");
        assert_eq!(second.gets[0].as_ref().unwrap().value, b"a");

        // Compare-and-swap on mod revision and on value.
        let cas = |rev: Revision| Txn {
            compare: vec![Compare::ModRevision("lock".into(), rev)],
            success: vec![Op::put("lock", "c")],
            failure: vec![],
        };
        assert!(!store.txn(cas(1)).await.unwrap().succeeded);
        let swapped = store.txn(cas(2)).await.unwrap();
        assert!(swapped.succeeded);
        assert_eq!(swapped.revision, 3);
        let by_value = Txn {
            compare: vec![Compare::Value("lock".into(), b"c".to_vec())],
            success: vec![Op::delete("lock"), Op::Get { key: "lock".into() }],
            failure: vec![],
        };
        let deleted = store.txn(by_value).await.unwrap();
        assert!(deleted.succeeded);
        assert_eq!(deleted.gets, vec![None], "a get sees earlier ops of its own branch");
        let missing = Txn { compare: vec![Compare::Value("lock".into(), b"c".to_vec())], ..Txn::default() };
        assert!(!store.txn(missing).await.unwrap().succeeded, "value compare on a missing key");
        assert!(store.txn(cas(0)).await.unwrap().succeeded, "ModRevision 0 means absent");
    }

    #[tokio::test]
    async fn revisions_and_versions_follow_etcd() {
        let dir = TestDir::new("revisions");
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        assert_eq!(store.range("").await.unwrap().1, 1, "an empty store is at revision 1");

        put(&store, "k", "1").await;
        put(&store, "k", "2").await;
        let kv = store.get("k").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));

        // All writes of one transaction share one revision.
        let multi = Txn::ops(vec![Op::put("a", "x"), Op::put("b", "y"), Op::delete("k")]);
        assert_eq!(store.txn(multi).await.unwrap().revision, 4);
        assert_eq!(store.get("a").await.unwrap().unwrap().mod_revision, 4);
        assert_eq!(store.get("b").await.unwrap().unwrap().mod_revision, 4);

        // Writes that change nothing and reads leave the revision alone.
        assert_eq!(store.txn(Txn::ops(vec![Op::delete("nope")])).await.unwrap().revision, 4);
        let read = Txn::ops(vec![Op::Get { key: "a".into() }]);
        assert_eq!(store.txn(read).await.unwrap().revision, 4);

        // A re-created key starts over.
        put(&store, "k", "3").await;
        let kv = store.get("k").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    }

    #[tokio::test]
    async fn range_returns_prefix_in_byte_order() {
        let dir = TestDir::new("range");
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        for key in ["jobs/b", "jobs/a", "jobsx", "agents/1", "jobs/a/1"] {
            put(&store, key, "v").await;
        }
        let (kvs, revision) = store.range("jobs/").await.unwrap();
        let keys: Vec<_> = kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["jobs/a", "jobs/a/1", "jobs/b"]);
        assert_eq!(revision, 6);
        let (all, _) = store.range("").await.unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].key, "agents/1");

        store.txn(Txn::ops(vec![Op::DeletePrefix { prefix: "jobs/".into() }])).await.unwrap();
        let (kvs, revision) = store.range("jobs").await.unwrap();
        assert_eq!(kvs.len(), 1);
        assert_eq!(revision, 7, "a delete-prefix is one revision");
    }

    #[tokio::test]
    async fn limits_and_unknown_leases_are_rejected_without_effect() {
        let dir = TestDir::new("limits");
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        let err = store.txn(Txn::ops(vec![Op::put("big", big)])).await.unwrap_err();
        assert!(matches!(err, StoreError::ValueTooLarge { size, .. } if size == MAX_VALUE_BYTES + 1));
        store.txn(Txn::ops(vec![Op::put("max", vec![0u8; MAX_VALUE_BYTES])])).await.unwrap();

        let leased = Op::Put { key: "x".into(), value: b"v".to_vec(), lease: 42 };
        let err = store.txn(Txn::ops(vec![Op::put("y", "v"), leased])).await.unwrap_err();
        assert!(matches!(err, StoreError::LeaseNotFound(42)));
        assert_eq!(store.get("y").await.unwrap(), None, "a rejected txn changes nothing");
        assert!(matches!(store.lease_keep_alive(7).await, Err(StoreError::LeaseNotFound(7))));
        assert!(matches!(store.lease_revoke(7).await, Err(StoreError::LeaseNotFound(7))));
    }

    #[tokio::test]
    async fn watch_replays_history_then_goes_live() {
        let dir = TestDir::new("watch");
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        for i in 0..5 {
            put(&store, &format!("jobs/{i}"), "v").await; // revisions 2..=6
        }
        put(&store, "other", "v").await; // revision 7

        let mut rx = store.watch("jobs/", 3).await.unwrap();
        for revision in 3..=6 {
            let events = recv_events(&mut rx).await;
            assert_eq!(summary(&events), [(EventKind::Put, format!("jobs/{}", revision - 2), revision)]);
        }

        // Live: one batch per revision with its events in order.
        let txn = Txn::ops(vec![Op::put("jobs/9", "v"), Op::delete("jobs/0"), Op::put("zzz", "v")]);
        store.txn(txn).await.unwrap();
        let events = recv_events(&mut rx).await;
        assert_eq!(summary(&events), [(EventKind::Put, "jobs/9".into(), 8), (EventKind::Delete, "jobs/0".into(), 8)]);
        assert_eq!(events[1].kv.value, b"");

        // Start 0 means from the next revision on.
        let mut from_now = store.watch("", 0).await.unwrap();
        put(&store, "later", "v").await;
        assert_eq!(summary(&recv_events(&mut from_now).await), [(EventKind::Put, "later".into(), 9)]);
        // A start in the future skips the revisions before it.
        let mut future = store.watch("", 11).await.unwrap();
        put(&store, "a", "v").await; // 10
        put(&store, "b", "v").await; // 11
        assert_eq!(summary(&recv_events(&mut future).await), [(EventKind::Put, "b".into(), 11)]);
    }

    #[tokio::test]
    async fn watch_before_retained_history_is_compacted() {
        let dir = TestDir::new("compacted");
        let opts = EmbeddedOptions { watch_history_revisions: 3, ..fast() };
        let store = EmbeddedStore::open(dir.path(), opts).await.unwrap();
        for i in 0..10 {
            put(&store, &format!("k{i}"), "v").await; // revisions 2..=11
        }
        let mut rx = store.watch("", 5).await.unwrap();
        assert_eq!(rx.recv().await, Some(WatchMessage::Compacted { compact_revision: 9 }));
        assert_eq!(rx.recv().await, None, "a compacted watch closes");

        // The oldest retained revision itself still works.
        let mut rx = store.watch("", 9).await.unwrap();
        for revision in 9..=11 {
            assert_eq!(recv_events(&mut rx).await[0].kv.mod_revision, revision);
        }
    }

    #[tokio::test]
    async fn slow_watcher_catches_up_without_blocking_writers() {
        let dir = TestDir::new("slow");
        let opts = EmbeddedOptions { watch_channel_capacity: 2, ..fast() };
        let store = EmbeddedStore::open(dir.path(), opts).await.unwrap();
        let mut rx = store.watch("", 0).await.unwrap();
        // Fifty writes into a two-slot channel nobody reads: none may block.
        for i in 0..50 {
            put(&store, &format!("k{i}"), "v").await;
        }
        for revision in 2..=51 {
            assert_eq!(recv_events(&mut rx).await[0].kv.mod_revision, revision);
        }
        // Caught up, the watcher is live again.
        settle().await;
        assert_eq!(store.live_watcher_count(), 1);
        put(&store, "live", "v").await;
        assert_eq!(recv_events(&mut rx).await[0].kv.mod_revision, 52);
    }

    #[tokio::test]
    async fn watcher_behind_the_history_gets_compacted_after_its_events() {
        let dir = TestDir::new("slow-compacted");
        let opts = EmbeddedOptions { watch_channel_capacity: 2, watch_history_revisions: 5, ..fast() };
        let store = EmbeddedStore::open(dir.path(), opts).await.unwrap();
        let mut rx = store.watch("", 0).await.unwrap();
        for i in 0..30 {
            put(&store, &format!("k{i}"), "v").await; // revisions 2..=31
        }
        // Whatever was delivered is contiguous from the start; then the
        // watcher learns it fell behind, and the watch ends.
        let mut expected = 2;
        loop {
            match rx.recv().await.expect("compacted before the channel closes") {
                WatchMessage::Events(events) => {
                    assert_eq!(events[0].kv.mod_revision, expected);
                    expected += 1;
                }
                WatchMessage::Compacted { compact_revision } => {
                    assert_eq!(compact_revision, 27);
                    break;
                }
            }
        }
        assert!(expected < 27);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn dropping_the_receiver_cancels_the_watch() {
        let dir = TestDir::new("cancel");
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        let rx = store.watch("", 0).await.unwrap();
        let _kept = store.watch("", 0).await.unwrap();
        assert_eq!(store.live_watcher_count(), 2);
        drop(rx);
        put(&store, "k", "v").await;
        assert_eq!(store.live_watcher_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expiry_deletes_keys_in_one_revision() {
        let dir = TestDir::new("lease-expiry");
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
        let leased = |key: &str| Op::Put { key: key.into(), value: b"v".to_vec(), lease };
        store.txn(Txn::ops(vec![leased("agents/a"), leased("agents/b")])).await.unwrap();
        put(&store, "agents/c", "v").await;
        assert_eq!(store.get("agents/a").await.unwrap().unwrap().lease, lease);
        let mut rx = store.watch("agents/", 0).await.unwrap();

        tokio::time::advance(Duration::from_secs(9)).await;
        settle().await;
        assert!(store.get("agents/a").await.unwrap().is_some(), "not expired before its TTL");

        tokio::time::advance(Duration::from_secs(2)).await;
        let events = recv_events(&mut rx).await;
        assert_eq!(
            summary(&events),
            [(EventKind::Delete, "agents/a".into(), 4), (EventKind::Delete, "agents/b".into(), 4)]
        );
        assert_eq!(store.get("agents/a").await.unwrap(), None);
        assert!(store.get("agents/c").await.unwrap().is_some());
        assert!(matches!(store.lease_keep_alive(lease).await, Err(StoreError::LeaseNotFound(_))));
        let err = store.txn(Txn::ops(vec![leased("agents/d")])).await.unwrap_err();
        assert!(matches!(err, StoreError::LeaseNotFound(l) if l == lease));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_and_revoke() {
        let dir = TestDir::new("keep-alive");
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
        let op = Op::Put { key: "k".into(), value: b"v".to_vec(), lease };
        store.txn(Txn::ops(vec![op])).await.unwrap(); // revision 2

        // Three keep-alives carry the lease well past its original deadline.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(6)).await;
            store.lease_keep_alive(lease).await.unwrap();
        }
        settle().await;
        assert!(store.get("k").await.unwrap().is_some(), "kept alive for 18s on a 10s TTL");

        let mut rx = store.watch("", 0).await.unwrap();
        store.lease_revoke(lease).await.unwrap();
        assert_eq!(summary(&recv_events(&mut rx).await), [(EventKind::Delete, "k".into(), 3)]);
        assert!(matches!(store.lease_revoke(lease).await, Err(StoreError::LeaseNotFound(_))));

        // Revoking a lease without keys writes no revision.
        let empty = store.lease_grant(Duration::from_secs(10)).await.unwrap();
        assert!(empty > lease);
        store.lease_revoke(empty).await.unwrap();
        assert_eq!(store.range("").await.unwrap().1, 3);

        // Putting a key without its lease detaches it from the lease.
        let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
        let op = Op::Put { key: "moved".into(), value: b"v".to_vec(), lease };
        store.txn(Txn::ops(vec![op])).await.unwrap();
        put(&store, "moved", "unleased").await;
        store.lease_revoke(lease).await.unwrap();
        let moved = store.get("moved").await.unwrap().unwrap();
        assert_eq!((moved.value.as_slice(), moved.lease, moved.version), (&b"unleased"[..], 0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn state_survives_a_restart() {
        let dir = TestDir::new("restart");
        let (before, lease) = {
            let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
            put(&store, "a", "1").await;
            put(&store, "a", "2").await;
            let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
            let op = Op::Put { key: "leased".into(), value: b"v".to_vec(), lease };
            store.txn(Txn::ops(vec![op, Op::put("b", "x")])).await.unwrap();
            put(&store, "gone", "v").await;
            store.txn(Txn::ops(vec![Op::delete("gone")])).await.unwrap();
            let revoked = store.lease_grant(Duration::from_secs(30)).await.unwrap();
            store.lease_revoke(revoked).await.unwrap();
            // Run most of the lease's TTL down before the "crash".
            tokio::time::advance(Duration::from_secs(25)).await;
            (store.range("").await.unwrap(), lease)
        };
        assert_eq!(before.1, 6);

        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        assert_eq!(store.range("").await.unwrap(), before);
        assert_eq!(put(&store, "c", "v").await.revision, 7, "the revision continues");
        let next_lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        assert!(next_lease > lease + 1, "lease ids are never reused");

        // The lease was restored with a fresh full TTL.
        let mut rx = store.watch("leased", 0).await.unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        settle().await;
        assert!(store.get("leased").await.unwrap().is_some());
        store.lease_keep_alive(lease).await.unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(recv_events(&mut rx).await[0].kind, EventKind::Delete);
    }

    /// Writes three one-key transactions and closes the store.
    async fn three_writes(dir: &TestDir) {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        for key in ["one", "two", "three"] {
            put(&store, key, "v").await;
        }
    }

    #[tokio::test]
    async fn torn_tail_is_ignored() {
        let dir = TestDir::new("torn");
        three_writes(&dir).await;
        let log = dir.only_log();
        let len = fs::metadata(&log).unwrap().len();
        File::options().write(true).open(&log).unwrap().set_len(len - 3).unwrap();

        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        let (kvs, revision) = store.range("").await.unwrap();
        assert_eq!(revision, 3, "only the cut-short last record is lost");
        assert_eq!(kvs.len(), 2);
        assert_eq!(put(&store, "four", "v").await.revision, 4);
        drop(store);

        // A zero-filled tail, as a file system may leave after a power loss.
        let log = dir.only_log();
        let mut file = File::options().append(true).open(&log).unwrap();
        file.write_all(&[0u8; 100]).unwrap();
        drop(file);
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        assert_eq!(store.range("").await.unwrap().1, 4);
    }

    #[tokio::test]
    async fn corruption_in_the_middle_is_an_error() {
        let dir = TestDir::new("corrupt");
        three_writes(&dir).await;
        let log = dir.only_log();
        let mut data = fs::read(&log).unwrap();
        // Flip a byte in the first record's payload (past its header).
        data[WAL_MAGIC.len() + RECORD_HEADER_BYTES + 2] ^= 0xff;
        fs::write(&log, &data).unwrap();

        let err = EmbeddedStore::open(dir.path(), fast()).await.unwrap_err();
        match &err {
            StoreError::Corrupt { path, detail } => {
                assert_eq!(path, &log.display().to_string());
                assert!(detail.contains("offset 8"), "{detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(err.to_string().contains("checksum"), "{err}");

        // A damaged length field is caught by the header checksum rather than
        // read as a torn tail that would silently drop the later records.
        data[WAL_MAGIC.len() + 2] ^= 0x01;
        data[WAL_MAGIC.len() + RECORD_HEADER_BYTES + 2] ^= 0xff;
        fs::write(&log, &data).unwrap();
        let err = EmbeddedStore::open(dir.path(), fast()).await.unwrap_err();
        assert!(err.to_string().contains("header checksum"), "{err}");

        // A damaged snapshot is an error too.
        let dir = TestDir::new("corrupt-snapshot");
        three_writes(&dir).await;
        let snapshot = dir.path().join(SNAPSHOT_FILE);
        let mut data = fs::read(&snapshot).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(&snapshot, &data).unwrap();
        let err = EmbeddedStore::open(dir.path(), fast()).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[tokio::test]
    async fn compaction_writes_a_snapshot_and_starts_a_new_log() {
        let dir = TestDir::new("compaction");
        let opts = EmbeddedOptions { compact_log_bytes: 4096, ..EmbeddedOptions::default() };
        let store = EmbeddedStore::open(dir.path(), opts.clone()).await.unwrap();
        let value = "x".repeat(100);
        for i in 0..300 {
            put(&store, &format!("k{:03}", i % 150), &value).await; // revisions 2..=301
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.compaction_in_flight() {
            assert!(Instant::now() < deadline, "compaction did not finish");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let logs = list_logs(dir.path()).unwrap();
        assert_eq!(logs.len(), 1, "old logs are deleted: {logs:?}");
        assert!(logs[0].0 > 1, "the log was rotated");
        let before = store.range("").await.unwrap();
        drop(store);

        let store = EmbeddedStore::open(dir.path(), opts).await.unwrap();
        assert_eq!(store.range("").await.unwrap(), before);
        assert_eq!(before.0.len(), 150);
        assert_eq!(before.0[0].version, 2);
        assert_eq!(put(&store, "next", "v").await.revision, 302);
    }

    #[tokio::test]
    async fn recovery_skips_logs_a_snapshot_superseded() {
        // Simulate a crash between the snapshot rename and deleting the old
        // logs: the stale log must be skipped, not replayed twice.
        let dir = TestDir::new("stale-log");
        three_writes(&dir).await;
        let stale = fs::read(dir.only_log()).unwrap();
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        put(&store, "four", "v").await;
        drop(store);
        fs::write(log_path(dir.path(), 1), stale).unwrap();
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        assert_eq!(store.range("").await.unwrap().1, 5);
        assert_eq!(store.get("one").await.unwrap().unwrap().version, 1);
    }

    #[tokio::test]
    async fn concurrent_writes_share_syncs() {
        let dir = TestDir::new("group-commit");
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..100 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { put(&store, &format!("k{i}"), "v").await.revision }));
        }
        let mut revisions = Vec::new();
        for task in tasks {
            revisions.push(task.await.unwrap());
        }
        revisions.sort();
        assert_eq!(revisions, (2..=101).collect::<Vec<_>>());
    }

    const CRASH_DIR_VAR: &str = "DROVER_EMBEDDED_STORE_CRASH_DIR";

    /// Not a test on its own: the child half of `acknowledged_writes_survive_sigkill`,
    /// which runs this test binary again with the variable set. It writes
    /// until it is killed, printing each revision once its write returned.
    #[tokio::test]
    async fn sigkill_child() {
        let Ok(dir) = std::env::var(CRASH_DIR_VAR) else {
            return;
        };
        // Without fsync, so that the test shows a write has reached the kernel
        // by the time it returns, which is all a SIGKILL needs.
        let store = EmbeddedStore::open(Path::new(&dir), fast()).await.unwrap();
        let mut stdout = io::stdout();
        for i in 0u64.. {
            let response = put(&store, &format!("k{i:08}"), "v").await;
            writeln!(stdout, "acked {}", response.revision).unwrap();
            stdout.flush().unwrap();
        }
    }

    #[test]
    fn acknowledged_writes_survive_sigkill() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};

        let dir = TestDir::new("sigkill");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "store::embedded::tests::sigkill_child", "--nocapture"])
            .env(CRASH_DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = 0;
        let mut killed = false;
        for line in io::BufReader::new(child.stdout.take().unwrap()).lines() {
            let Some(revision) = line.unwrap().strip_prefix("acked ").map(str::to_owned) else {
                continue;
            };
            acked = acked.max(revision.parse::<Revision>().unwrap());
            if acked >= 500 && !killed {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        child.wait().unwrap();
        assert!(killed, "the child stopped before it was killed");

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
            let (kvs, revision) = store.range("").await.unwrap();
            assert!(revision >= acked, "revision {revision} lost acknowledged {acked}");
            assert_eq!(kvs.len() as Revision, revision - 1, "one key per revision");
        });
    }

    #[tokio::test]
    async fn directory_lock_keeps_a_second_store_out() {
        let dir = TestDir::new("lock");
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        let err = EmbeddedStore::open(dir.path(), fast()).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message
                .contains(&format!("data directory {} is in use by another drover-coordinator", dir.path().display())),
            "{message}"
        );
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        drop(store);
        EmbeddedStore::open(dir.path(), fast()).await.unwrap();
    }

    #[tokio::test]
    async fn a_deleted_directory_stops_writes_and_keeps_its_path_locked() {
        for fsync in [true, false] {
            let dir = TestDir::new(if fsync { "deleted-sync" } else { "deleted-nosync" });
            let opts = EmbeddedOptions { fsync, ..EmbeddedOptions::default() };
            let store = EmbeddedStore::open(dir.path(), opts.clone()).await.unwrap();
            put(&store, "before", "v").await;
            assert_eq!(store.stopped_reason(), None);
            fs::remove_dir_all(dir.path()).unwrap();
            // With fsync, the next write fails at once; without, the idle
            // check stops the store within its interval.
            let deadline = Instant::now() + PLACE_CHECK_INTERVAL * 5;
            let err = loop {
                match store.txn(Txn::ops(vec![Op::put("after", "v")])).await {
                    Err(e) => break e,
                    Ok(_) if !fsync && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(_) => panic!("a write into a deleted directory succeeded (fsync {fsync})"),
                }
            };
            let want = format!("the data directory {} was deleted", dir.path().display());
            assert!(err.to_string().contains(&want), "{err}");
            assert!(store.stopped_reason().is_some_and(|r| r.contains(&want)));
            // The path made again cannot be taken while this store lives.
            let err = EmbeddedStore::open(dir.path(), opts.clone()).await.unwrap_err();
            assert!(err.to_string().contains("is in use by another drover-coordinator on this host"), "{err}");
            drop(store);
            EmbeddedStore::open(dir.path(), opts).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_replaced_directory_or_a_deleted_log_stops_the_store() {
        let dir = TestDir::new("replaced");
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        put(&store, "k", "v").await;
        let moved = dir.path().with_extension("moved");
        fs::rename(dir.path(), &moved).unwrap();
        fs::create_dir(dir.path()).unwrap();
        let err = store.txn(Txn::ops(vec![Op::put("k", "w")])).await.unwrap_err();
        assert!(err.to_string().contains("was replaced by another directory"), "{err}");
        drop(store);
        fs::remove_dir_all(&moved).unwrap();

        let dir = TestDir::new("unlinked");
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        put(&store, "k", "v").await;
        for entry in fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with("wal-") {
                fs::remove_file(path).unwrap();
            }
        }
        let err = store.txn(Txn::ops(vec![Op::put("k", "w")])).await.unwrap_err();
        assert!(err.to_string().contains("was deleted while in use"), "{err}");
    }

    #[test]
    fn long_paths_get_a_short_lock_name() {
        let short = lock_name(Path::new("/var/lib/drover/store"));
        assert_eq!(short, b"drover-store:/var/lib/drover/store");
        let long = format!("/{}", "d/".repeat(100));
        let name = lock_name(Path::new(&long));
        assert!(name.len() <= 107, "{}", name.len());
        assert_ne!(name, lock_name(Path::new(&format!("/x{}", &long[2..]))), "different paths, different names");
    }
}
