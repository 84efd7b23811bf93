//! When the embedded store's writes are durable, and what happens when they
//! cannot be: appending a record to the log under the lock, the syncer task
//! that `fdatasync`s the records written since its last round (group commit,
//! see "Design" in the parent module), the wait that keeps a caller from
//! observing state the log does not cover yet, and stopping the store for
//! good after a failed write or sync, or when its directory is no longer in
//! place (see `super::lock`).

use std::sync::{Arc, Weak};

use tokio::sync::Notify;

use super::lock::check_place;
use super::{EmbeddedStore, State, io_err};
use crate::store::{Result, Revision, StoreError};

/// How far the log is known to be on disk, as the syncer publishes it.
#[derive(Debug, Clone)]
pub(super) struct SyncStatus {
    pub(super) durable_seq: u64,
    pub(super) failed: Option<Arc<str>>,
}

impl EmbeddedStore {
    /// Waits until the log is durable up to `seq`, if there is anything to
    /// wait for.
    pub(super) async fn wait_durable(&self, seq: Option<u64>) -> Result<()> {
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
    pub(super) fn commit(&self, st: &mut State, record: &[u8]) -> Result<u64> {
        if let Err(e) = st.wal.append(record) {
            let err = io_err(&st.wal.path, e);
            self.fail(st, format!("appending to the log failed: {err}"));
            return Err(err);
        }
        st.ks.seq += 1;
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
    pub(super) fn mark_durable(&self, st: &mut State, seq: u64, revision: Revision) {
        if seq <= st.durable_seq {
            return;
        }
        st.durable_seq = seq;
        self.publish(st, revision);
        self.sync_status.send_replace(SyncStatus { durable_seq: seq, failed: None });
    }

    /// Stops the store after a failed write or sync: from now on the log on
    /// disk may not match memory, so nothing may be served.
    pub(super) fn fail(&self, st: &mut State, reason: String) {
        tracing::error!(dir = %self.dir.display(), %reason, "embedded store stopped");
        let reason: Arc<str> = reason.into();
        st.failed = Some(reason.clone());
        st.watchers.clear();
        self.sync_status.send_replace(SyncStatus { durable_seq: st.durable_seq, failed: Some(reason) });
    }

    /// Takes in the outcome of one round of the syncer.
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
}

pub(super) fn failed_error(reason: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "embedded store stopped after an earlier failure ({reason}); restart the coordinator"
    ))
}

/// Calls `fdatasync` for the records written since the last round, for as
/// long as the store exists.
pub(super) async fn run_syncer(this: Weak<EmbeddedStore>, wake: Arc<Notify>) {
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
