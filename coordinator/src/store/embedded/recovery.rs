//! Opening the embedded store: taking the directory's lock, loading the
//! snapshot and replaying the logs after it.
//!
//! `open` loads the snapshot, replays the logs in order (skipping records
//! the snapshot already holds, and whole logs a later log supersedes), writes
//! a fresh snapshot, starts a fresh log and deletes the old ones. A damaged
//! record in the last log is a torn write from a crash and is dropped if
//! nothing but zeros follows it; zeros alone are space a log claimed ahead
//! of its records, in any log. Any other damage fails with
//! [`StoreError::Corrupt`], naming the file and byte offset.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tokio::time::Instant;

use super::keyspace::Keyspace;
use super::lock::{DirLock, lock_dir};
use super::snapshot::{SNAPSHOT_FILE, SNAPSHOT_TMP_FILE, decode_snapshot, encode_snapshot, write_snapshot};
use super::wal::{WAL_MAGIC, Wal, decode_record, list_logs, parse_record, remove_logs};
use super::{EmbeddedOptions, io_err};
use crate::store::{Result, StoreError};

pub(super) struct Recovered {
    pub(super) ks: Keyspace,
    pub(super) wal: Wal,
    pub(super) lock: DirLock,
    pub(super) snapshot_bytes: u64,
}

/// Loads the snapshot and replays the logs, then writes a fresh snapshot and
/// starts a fresh log. Runs on the blocking pool.
pub(super) fn recover(dir: &Path, opts: &EmbeddedOptions, now: Instant) -> Result<Recovered> {
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
    let wal = Wal::create(dir, ks.seq + 1, opts.fsync)?;
    let old: Vec<PathBuf> = logs.into_iter().map(|(_, p)| p).filter(|p| *p != wal.path).collect();
    remove_logs(&old);
    Ok(Recovered { ks, wal, lock, snapshot_bytes: snapshot.len() as u64 })
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
            // Space the log claimed ahead of its records (see `wal`).
            Err(_) if data[offset..].iter().all(|&b| b == 0) => break,
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
