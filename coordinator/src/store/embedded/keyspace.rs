//! The embedded store's key space: the keys with their etcd bookkeeping,
//! the revision counter, leases and the event history, and the operations
//! on them. This part is deterministic (time comes in as an argument), which
//! is what lets log replay rebuild exactly the state the log describes. It
//! does no IO, takes no lock and sends nothing: the store applies its writes
//! here, recovery hands it decoded log records, and watchers read the
//! history it fills.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::Duration;

use tokio::time::Instant;

use super::EmbeddedOptions;
use super::wal::{LogOp, Record};
use super::watch::History;
use crate::store::{Compare, EventKind, KeyValue, LeaseId, Revision, WatchEvent};

/// The deterministic part of the state: what snapshots hold and log replay
/// rebuilds.
pub(super) struct Keyspace {
    pub(super) kv: BTreeMap<String, Entry>,
    pub(super) revision: Revision,
    /// Sequence number of the last log record applied.
    pub(super) seq: u64,
    pub(super) leases: HashMap<LeaseId, Lease>,
    /// Lease deadlines in expiry order, so the next one is found in O(log n).
    pub(super) lease_deadlines: BTreeSet<(Instant, LeaseId)>,
    pub(super) next_lease_id: LeaseId,
    pub(super) history: History,
}

pub(super) struct Entry {
    pub(super) value: Vec<u8>,
    pub(super) create_revision: Revision,
    pub(super) mod_revision: Revision,
    pub(super) version: i64,
    pub(super) lease: LeaseId,
}

impl Entry {
    pub(super) fn to_kv(&self, key: &str) -> KeyValue {
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

pub(super) struct Lease {
    pub(super) ttl: Duration,
    pub(super) deadline: Instant,
    pub(super) keys: BTreeSet<String>,
}

impl Keyspace {
    pub(super) fn empty(opts: &EmbeddedOptions) -> Keyspace {
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

    pub(super) fn compare(&self, compare: &Compare) -> bool {
        match compare {
            Compare::ModRevision(key, want) => self.kv.get(key).map_or(0, |e| e.mod_revision) == *want,
            Compare::CreateRevision(key, want) => self.kv.get(key).map_or(0, |e| e.create_revision) == *want,
            Compare::Value(key, want) => self.kv.get(key).is_some_and(|e| e.value == *want),
        }
    }

    pub(super) fn range(&self, prefix: &str) -> Vec<KeyValue> {
        self.kv
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, entry)| entry.to_kv(key))
            .collect()
    }

    /// Puts a key at `revision`. Fails with the lease id if the lease does
    /// not exist, before changing anything.
    pub(super) fn put(
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

    pub(super) fn delete(&mut self, key: &str, revision: Revision, events: &mut Vec<WatchEvent>) {
        let Some(entry) = self.kv.remove(key) else {
            return;
        };
        if let Some(lease) = self.leases.get_mut(&entry.lease) {
            lease.keys.remove(key);
        }
        events.push(tombstone(key.to_owned(), revision));
    }

    pub(super) fn delete_prefix(&mut self, prefix: &str, revision: Revision, events: &mut Vec<WatchEvent>) {
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

    pub(super) fn grant_lease(&mut self, lease: LeaseId, ttl: Duration, deadline: Instant) {
        self.leases.insert(lease, Lease { ttl, deadline, keys: BTreeSet::new() });
        self.lease_deadlines.insert((deadline, lease));
        self.next_lease_id = self.next_lease_id.max(lease + 1);
    }

    /// Removes a lease and deletes its keys at `revision`. Returns false if
    /// there is no such lease.
    pub(super) fn revoke_lease(&mut self, lease: LeaseId, revision: Revision, events: &mut Vec<WatchEvent>) -> bool {
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

    pub(super) fn restart_lease_clocks(&mut self, now: Instant) {
        self.lease_deadlines.clear();
        for (id, lease) in &mut self.leases {
            lease.deadline = deadline_after(now, lease.ttl);
            self.lease_deadlines.insert((lease.deadline, *id));
        }
    }

    /// Applies one log record during recovery.
    pub(super) fn replay(&mut self, record: Record, now: Instant) -> std::result::Result<(), String> {
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

/// `now + ttl`, saturating far in the future instead of overflowing.
pub(super) fn deadline_after(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}
