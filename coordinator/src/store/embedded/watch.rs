//! Watches on the embedded store: the history of recent revisions' events,
//! the live watchers the writer feeds, and the catch-up tasks that feed the
//! others.
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

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::{EmbeddedOptions, EmbeddedStore, State};
use crate::store::{Result, Revision, WatchEvent, WatchMessage};

/// How many history revisions a catch-up task scans per lock acquisition, so
/// that a watcher with a narrow prefix cannot hold the lock for long.
const CATCH_UP_SCAN_LIMIT: Revision = 1024;

/// Retained events: `entries[i]` holds the events of revision `first + i`.
/// Revisions are contiguous because only a revision with changes exists.
pub(super) struct History {
    /// The oldest revision retained: a watch may start here, not before.
    pub(super) first: Revision,
    entries: VecDeque<(Arc<[WatchEvent]>, usize)>,
    bytes: usize,
    max_revisions: usize,
    max_bytes: usize,
}

impl History {
    pub(super) fn new(first: Revision, opts: &EmbeddedOptions) -> History {
        History {
            first,
            entries: VecDeque::new(),
            bytes: 0,
            max_revisions: opts.watch_history_revisions,
            max_bytes: opts.watch_history_bytes,
        }
    }

    pub(super) fn push(&mut self, revision: Revision, events: Vec<WatchEvent>) {
        debug_assert_eq!(revision, self.first + self.entries.len() as Revision);
        let size = events.iter().map(|e| e.kv.key.len() + e.kv.value.len() + std::mem::size_of::<WatchEvent>()).sum();
        self.entries.push_back((events.into(), size));
        self.bytes += size;
    }

    pub(super) fn get(&self, revision: Revision) -> Option<&Arc<[WatchEvent]>> {
        let index = usize::try_from(revision.checked_sub(self.first)?).ok()?;
        self.entries.get(index).map(|(events, _)| events)
    }

    /// Drops the oldest revisions while over either cap, but never one after
    /// `upto`: live watchers have not been sent those yet.
    pub(super) fn trim(&mut self, upto: Revision) {
        while self.first <= upto && (self.entries.len() > self.max_revisions || self.bytes > self.max_bytes) {
            let Some((_, size)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= size;
            self.first += 1;
        }
    }

    /// Drops every revision before `revision` (a test's compaction).
    #[cfg(test)]
    fn forget_before(&mut self, revision: Revision) {
        while self.first < revision {
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

pub(super) struct LiveWatcher {
    watcher: Watcher,
    /// The first revision this watcher wants; it may lie in the future.
    start: Revision,
}

impl EmbeddedStore {
    /// Starts a watch of `prefix` from revision `start` (0: from the next
    /// revision on).
    pub(super) fn start_watch(&self, prefix: &str, start: Revision) -> Result<mpsc::Receiver<WatchMessage>> {
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

    /// Sends the events of every revision up to `upto`, which the log now
    /// covers, to the live watchers, and trims the history behind them.
    pub(super) fn publish(&self, st: &mut State, upto: Revision) {
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

    #[cfg(test)]
    pub(super) fn live_watcher_count(&self) -> usize {
        self.state.lock().unwrap().watchers.len()
    }

    /// Drops the history before `revision`, as etcd's compaction does, so
    /// that the conformance suite can compact this store too: it only trims
    /// its history to its size caps on its own.
    #[cfg(test)]
    pub(super) fn forget_history_before(&self, revision: Revision) {
        let mut st = self.state.lock().unwrap();
        let upto = revision.min(st.visible_revision + 1);
        st.ks.history.forget_before(upto);
    }
}

/// The events of one revision that fall under `prefix`.
fn matching(events: &[WatchEvent], prefix: &str) -> Vec<WatchEvent> {
    events.iter().filter(|e| e.kv.key.starts_with(prefix)).cloned().collect()
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
