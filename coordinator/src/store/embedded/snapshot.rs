//! Snapshots of the embedded store's key space, and the log compaction that
//! writes them.
//!
//! The snapshot file is `DRVSNAP1, len: u64, crc: u32` and a payload of
//! `seq: u64, revision: i64, next_lease_id: i64`, the leases (`count: u64`,
//! then `id: i64, ttl_nanos: u64` each) and the keys (`count: u64`, then
//! `key, value, create_revision, mod_revision, version, lease` each), in the
//! encoding of [`super::codec`]. It holds no event history: a store opened
//! from a snapshot starts its history at the snapshot's revision.
//!
//! When the log outgrows `max(compact_log_bytes, size of last snapshot)`, the
//! writer encodes a snapshot in memory under the lock (one pass over the
//! state, the only O(n) step, amortized by that threshold), switches to a
//! new log, and a blocking task writes `snapshot.tmp`, fsyncs it, renames it
//! over `snapshot`, fsyncs the directory and only then deletes the old logs.
//! A crash at any point leaves either the old snapshot with all old logs, or
//! the new snapshot, both of which recover to the same state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::codec::{Reader, crc32c, put_bytes, put_i64, put_u64, ttl_nanos};
use super::keyspace::{Entry, Keyspace, deadline_after};
use super::wal::{remove_logs, sync_dir};
use super::watch::History;
use super::{EmbeddedOptions, EmbeddedStore, State};

pub(super) const SNAPSHOT_FILE: &str = "snapshot";
pub(super) const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
const SNAPSHOT_MAGIC: &[u8; 8] = b"DRVSNAP1";
const SNAPSHOT_HEADER_BYTES: usize = 20;

impl EmbeddedStore {
    /// Starts a snapshot when the log has grown enough. Called with the lock
    /// held right after a record was written.
    pub(super) fn maybe_compact(&self, st: &mut State) {
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
}

pub(super) fn encode_snapshot(ks: &Keyspace) -> Vec<u8> {
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

pub(super) fn decode_snapshot(
    data: &[u8],
    opts: &EmbeddedOptions,
    now: Instant,
) -> std::result::Result<Keyspace, String> {
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

/// Replaces the snapshot atomically: write a temporary file, sync it, rename
/// it over the old one and sync the directory so the rename sticks.
pub(super) fn write_snapshot(dir: &Path, snapshot: &[u8], fsync: bool) -> io::Result<()> {
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
