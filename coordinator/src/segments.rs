//! Log segments: the bytes of agents' logs, kept in files outside the key
//! space. The store (embedded or etcd) keeps, under each chunk's key
//! ([`crate::core::keys::log_chunk`]), only a [`ChunkMeta`]: the chunk's length and
//! CRC-32C. The embedded store holds its whole key space in memory and etcd
//! caps its database, so neither can hold megabytes of output per job for
//! thousands of retained runs; files cost disk only.
//!
//! ```text
//! {blob_dir}/logs/{run:010}/{job}@{attempt:04}.log
//! ```
//!
//! One file per attempt, all of a run's in its one directory (job names
//! never hold `@`), so a new attempt makes one file and no directory, and a
//! burst syncs each run's directory once. A chunk at log offset N lies at
//! file offset N:
//! a chunk is written with `pwrite` at its offset, so a resend after a crash
//! rewrites the same bytes in the same place, and bytes written but never
//! committed (a crash between the write and the store's transaction) are
//! simply overwritten by the resend. Deleting a run is deleting its
//! directory.
//!
//! Durability: [`Segments::write`] writes a burst's chunks, then syncs each
//! file it touched once (fdatasync, several files at once on their own
//! threads, since each waits on the disk), and each directory that gained
//! an entry, before it returns; the scheduler commits the chunks' metadata
//! only after that, and acknowledges them to the agent only after the
//! commit. So a chunk whose key exists has its bytes on disk, and any
//! coordinator that sees the key can read them (given the same directory:
//! several coordinators on etcd share one `--blob-dir`).
//!
//! A failed write or sync (a full disk, an I/O error) stops the segments
//! for good, as a failed write stops the embedded store: the data in the
//! file is then unknown, the coordinator cannot store logs, and it exits
//! after `--store-fail-exit` so that a supervisor restarts it.
//!
//! Readers check every chunk against its checksum: a missing file, a file
//! too short or a mismatch is an error that names the file and the offset,
//! never garbage or silence.
//!
//! The calls here block; the `*_async` wrappers run them on tokio's
//! blocking threads. Once a run has finished, `crate::sealing` moves its
//! segments into the blob store, and readers find them there.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::core::machine::RunId;
use crate::store::embedded::crc32c;
use crate::store::{StoreError, decode};

/// What the key space keeps of one log chunk: enough to find it (the key
/// has the offset), to know where the log ends, and to check its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    pub len: u32,
    pub crc32c: u32,
}

impl ChunkMeta {
    pub fn of(data: &[u8]) -> ChunkMeta {
        let len = u32::try_from(data.len()).expect("log chunks are far smaller than 4 GiB");
        ChunkMeta { len, crc32c: crc32c(data) }
    }

    /// The value stored under the chunk's key: JSON, as every other value
    /// Drover stores, about 30 bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("chunk metadata serializes")
    }

    /// Reads the value stored under the chunk's `key`.
    pub fn decode(key: &str, value: &[u8]) -> Result<ChunkMeta, StoreError> {
        decode(key, value)
    }
}

/// The most bytes the scheduler joins into one record (one key) from the
/// consecutive chunks of one attempt in one burst; readers send a record as
/// one message, well under gRPC's 4 MiB default.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// One record to write: `data` at `offset` of the attempt's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub run: RunId,
    pub job: String,
    pub attempt: u32,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// One chunk to read, as its key and value describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub job: String,
    pub attempt: u32,
    pub offset: u64,
    pub meta: ChunkMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("cannot {op} log segment {} at offset {offset}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the log segment directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "log segment {} is missing: the store has a chunk of {len} bytes at offset {offset} in it \
         (with several coordinators, every one needs the same --blob-dir)",
        path.display()
    )]
    Missing { path: PathBuf, offset: u64, len: u32 },
    #[error("log segment {} is corrupt at offset {offset}: {detail}", path.display())]
    Corrupt { path: PathBuf, offset: u64, detail: String },
    #[error("{name:?} cannot name a log segment")]
    BadName { name: String },
    #[error("log segments cannot be written: {reason}")]
    Stopped { reason: String },
    #[error("a log segment task failed: {0}")]
    Task(String),
}

/// The API reports segment trouble as the store's: a file the store points
/// at that is gone or damaged is corrupt data, named with its offset.
impl From<SegmentError> for StoreError {
    fn from(e: SegmentError) -> StoreError {
        match e {
            SegmentError::Stopped { .. } | SegmentError::Task(_) => StoreError::Unavailable(e.to_string()),
            SegmentError::Io { op, path, offset, source } => {
                StoreError::Io { path: format!("{} (offset {offset}, {op})", path.display()), source }
            }
            SegmentError::Dir { path, source } => StoreError::Io { path: path.display().to_string(), source },
            e @ (SegmentError::Missing { .. } | SegmentError::Corrupt { .. } | SegmentError::BadName { .. }) => {
                StoreError::Corrupt { path: "the log segments".into(), detail: e.to_string() }
            }
        }
    }
}

/// The log segments under one blob directory.
#[derive(Debug)]
pub struct Segments {
    /// `{blob_dir}/logs`.
    root: PathBuf,
    /// Sync each burst's files before it is committed; off only with
    /// `--no-fsync`.
    fsync: bool,
    /// Why writing has stopped for good, once a write or sync failed.
    stopped: Mutex<Option<String>>,
    /// The blob store that finished runs' logs are sealed into
    /// (`crate::sealing`), where readers look when a segment is gone.
    sealed: std::sync::OnceLock<Arc<crate::blobs::Blobs>>,
}

/// The name of a run's directory; ten digits, as in the store's keys.
fn run_dir_name(run: RunId) -> String {
    format!("{run:010}")
}

/// A job name as a path component. Pipelines allow only letters, digits,
/// `_`, `.` and `-`, starting with a letter or digit, and a matrix adds
/// ` (key=value, ...)`; this is the last line of defence against a name
/// that would leave the directory.
fn component(name: &str) -> Result<&str, SegmentError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b' ' | b'(' | b')' | b'=' | b','));
    if ok { Ok(name) } else { Err(SegmentError::BadName { name: name.to_string() }) }
}

impl Segments {
    /// The segments under `blob_dir`, made if missing.
    pub fn open(blob_dir: &Path, fsync: bool) -> Result<Segments, SegmentError> {
        let root = blob_dir.join("logs");
        std::fs::create_dir_all(&root).map_err(|source| SegmentError::Dir { path: root.clone(), source })?;
        Ok(Segments { root, fsync, stopped: Mutex::new(None), sealed: std::sync::OnceLock::new() })
    }

    /// Names the blob store sealed logs are in (once, at startup).
    pub fn seal_into(&self, blobs: Arc<crate::blobs::Blobs>) {
        let _ = self.sealed.set(blobs);
    }

    /// The blob store sealed logs are in, once named.
    pub fn sealed(&self) -> Option<&Arc<crate::blobs::Blobs>> {
        self.sealed.get()
    }

    /// Where the logs live: `{blob_dir}/logs`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of one attempt's log.
    pub fn path(&self, run: RunId, job: &str, attempt: u32) -> Result<PathBuf, SegmentError> {
        Ok(self.root.join(run_dir_name(run)).join(format!("{}@{attempt:04}.log", component(job)?)))
    }

    /// Why writing stopped for good, if it has (see the module's header).
    pub fn stopped(&self) -> Option<String> {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stop(&self, reason: String) {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(reason);
    }

    /// Writes every record at its offset, then makes them durable: one
    /// fdatasync per file touched, and an fsync of every directory that
    /// gained an entry (unless syncing is off). Returns each record's
    /// metadata, in order, for the store. Any failure stops the segments
    /// for good and is returned; nothing written may then be acknowledged.
    pub fn write(&self, writes: &[Write]) -> Result<Vec<ChunkMeta>, SegmentError> {
        if let Some(reason) = self.stopped() {
            return Err(SegmentError::Stopped { reason });
        }
        if let Err(e) = self.write_and_sync(writes) {
            self.stop(e.to_string());
            return Err(e);
        }
        Ok(writes.iter().map(|w| ChunkMeta::of(&w.data)).collect())
    }

    fn write_and_sync(&self, writes: &[Write]) -> Result<(), SegmentError> {
        let mut files: BTreeMap<PathBuf, File> = BTreeMap::new();
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        for w in writes {
            let path = self.path(w.run, &w.job, w.attempt)?;
            if !files.contains_key(&path) {
                let file = open_for_write(&path, &mut dirs).map_err(|source| SegmentError::Io {
                    op: "open",
                    path: path.clone(),
                    offset: w.offset,
                    source,
                })?;
                files.insert(path.clone(), file);
            }
            files[&path].write_all_at(&w.data, w.offset).map_err(|source| SegmentError::Io {
                op: "write",
                path: path.clone(),
                offset: w.offset,
                source,
            })?;
        }
        if !self.fsync {
            return Ok(());
        }
        sync_all_at_once(files.iter().collect())?;
        for dir in &dirs {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|source| SegmentError::Io {
                op: "sync the directory of",
                path: dir.clone(),
                offset: 0,
                source,
            })?;
        }
        Ok(())
    }

    /// Reads chunks of one run, in the order given, each checked against
    /// its checksum. Consecutive chunks of one attempt share an open file.
    pub fn read(&self, run: RunId, chunks: &[Chunk]) -> Result<Vec<Vec<u8>>, SegmentError> {
        let mut open: Option<(PathBuf, File)> = None;
        let mut out = Vec::with_capacity(chunks.len());
        for c in chunks {
            let path = self.path(run, &c.job, c.attempt)?;
            if open.as_ref().is_none_or(|(p, _)| *p != path) {
                let file = File::open(&path).map_err(|source| match source.kind() {
                    ErrorKind::NotFound => {
                        SegmentError::Missing { path: path.clone(), offset: c.offset, len: c.meta.len }
                    }
                    _ => SegmentError::Io { op: "open", path: path.clone(), offset: c.offset, source },
                })?;
                open = Some((path.clone(), file));
            }
            let (_, file) = open.as_ref().expect("opened above");
            let mut data = vec![0u8; c.meta.len as usize];
            file.read_exact_at(&mut data, c.offset).map_err(|source| match source.kind() {
                ErrorKind::UnexpectedEof => SegmentError::Corrupt {
                    path: path.clone(),
                    offset: c.offset,
                    detail: format!("the file ends before the chunk's {} bytes", c.meta.len),
                },
                _ => SegmentError::Io { op: "read", path: path.clone(), offset: c.offset, source },
            })?;
            let crc = crc32c(&data);
            if crc != c.meta.crc32c {
                return Err(SegmentError::Corrupt {
                    path,
                    offset: c.offset,
                    detail: format!(
                        "the chunk's {} bytes have checksum {crc:08x}, the store recorded {:08x}",
                        c.meta.len, c.meta.crc32c
                    ),
                });
            }
            out.push(data);
        }
        Ok(out)
    }

    /// Deletes a run's segments; a run without any is fine.
    pub fn delete_run(&self, run: RunId) -> Result<(), SegmentError> {
        let dir = self.root.join(run_dir_name(run));
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(SegmentError::Io { op: "delete", path: dir, offset: 0, source: e })
            }
            _ => Ok(()),
        }
    }

    /// The runs that have segments, in no particular order. Names that are
    /// not run directories are left alone.
    pub fn runs(&self) -> Result<Vec<RunId>, SegmentError> {
        let entries = std::fs::read_dir(&self.root).map_err(|source| SegmentError::Io {
            op: "list",
            path: self.root.clone(),
            offset: 0,
            source,
        })?;
        Ok(entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RunId>().ok())
            .filter(|run| self.root.join(run_dir_name(*run)).is_dir())
            .collect())
    }

    /// Deletes the segments of every run not in `alive` whose number is at
    /// most `last`, the last run number handed out before `alive` was
    /// listed: those runs were pruned (a crash between the store's delete
    /// and the files' left them behind). Newer runs are left alone, as they
    /// may have started after the listing. Returns the runs deleted.
    pub fn sweep(&self, alive: &HashSet<RunId>, last: RunId) -> Result<Vec<RunId>, SegmentError> {
        let mut gone: Vec<RunId> = self.runs()?.into_iter().filter(|r| *r <= last && !alive.contains(r)).collect();
        gone.sort_unstable();
        for run in &gone {
            self.delete_run(*run)?;
        }
        Ok(gone)
    }

    /// [`Segments::write`] on a blocking thread.
    pub async fn write_async(self: &Arc<Self>, writes: Vec<Write>) -> Result<Vec<ChunkMeta>, SegmentError> {
        let me = self.clone();
        blocking(move || me.write(&writes)).await
    }

    /// [`Segments::read`] on a blocking thread.
    pub async fn read_async(self: &Arc<Self>, run: RunId, chunks: Vec<Chunk>) -> Result<Vec<Vec<u8>>, SegmentError> {
        let me = self.clone();
        blocking(move || me.read(run, &chunks)).await
    }

    /// [`Segments::sweep`] on a blocking thread.
    pub async fn sweep_async(self: &Arc<Self>, alive: HashSet<RunId>, last: RunId) -> Result<Vec<RunId>, SegmentError> {
        let me = self.clone();
        blocking(move || me.sweep(&alive, last)).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SegmentError> + Send + 'static,
) -> Result<T, SegmentError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(SegmentError::Task(e.to_string())))
}

/// The most files one burst syncs at once, each on a thread of its own.
const PARALLEL_SYNCS: usize = 8;

/// fdatasyncs `files`, up to [`PARALLEL_SYNCS`] at a time: each sync waits
/// on the disk, not the CPU, and a burst of a busy fleet touches many
/// attempts' files.
fn sync_all_at_once(files: Vec<(&PathBuf, &File)>) -> Result<(), SegmentError> {
    let sync = |(path, file): &(&PathBuf, &File)| {
        file.sync_data().map_err(|source| SegmentError::Io { op: "sync", path: (*path).clone(), offset: 0, source })
    };
    if files.len() <= 1 {
        return files.iter().try_for_each(sync);
    }
    let per_thread = files.len().div_ceil(PARALLEL_SYNCS);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            files.chunks(per_thread).map(|group| scope.spawn(move || group.iter().try_for_each(sync))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(SegmentError::Task("a sync thread panicked".into()))))
            .collect::<Result<Vec<()>, SegmentError>>()
            .map(|_| ())
    })
}

/// Opens a segment for writing, making it (and its directories) when
/// missing; each directory that gains an entry is added to `dirs`, to be
/// synced with the file.
fn open_for_write(path: &Path, dirs: &mut BTreeSet<PathBuf>) -> std::io::Result<File> {
    match OpenOptions::new().write(true).open(path) {
        Ok(file) => return Ok(file),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = path.parent().expect("a segment lies in a directory");
    let mut missing = Vec::new();
    let mut dir = parent;
    while !dir.is_dir() {
        missing.push(dir);
        dir = dir.parent().expect("the root exists");
    }
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        dirs.insert(dir.parent().expect("below the root").to_path_buf());
    }
    let file = OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    dirs.insert(parent.to_path_buf());
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    /// A fresh blob directory, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("drover-segments-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(run: RunId, job: &str, attempt: u32, offset: u64, data: &[u8]) -> Write {
        Write { run, job: job.into(), attempt, offset, data: data.to_vec() }
    }

    fn chunk(job: &str, attempt: u32, offset: u64, data: &[u8]) -> Chunk {
        Chunk { job: job.into(), attempt, offset, meta: ChunkMeta::of(data) }
    }

    #[test]
    fn chunk_metadata_round_trips_and_refuses_garbage() {
        let meta = ChunkMeta::of(b"123456789");
        assert_eq!(meta, ChunkMeta { len: 9, crc32c: 0xE306_9283 });
        assert_eq!(meta.encode(), br#"{"len":9,"crc32c":3808858755}"#);
        assert_eq!(ChunkMeta::decode("k", &meta.encode()).unwrap(), meta);
        // (value, why it is refused)
        let cases: &[(&[u8], &str)] = &[
            (b"hello\n", "raw log bytes"),
            (b"", "empty"),
            (br#"{"len":9}"#, "no checksum"),
            (br#"{"len":-1,"crc32c":0}"#, "negative length"),
            (br#"{"len":4294967296,"crc32c":0}"#, "length past u32"),
        ];
        for (value, why) in cases {
            let err = ChunkMeta::decode("/runs/x/logs/a/0001/0", value).unwrap_err();
            assert!(err.to_string().contains("/runs/x/logs/a/0001/0"), "{why}: {err}");
        }
    }

    #[test]
    fn chunks_read_back_as_written_and_resends_are_idempotent() {
        let dir = Dir::new();
        let segs = Segments::open(&dir.0, true).unwrap();
        let metas = segs.write(&[write(1, "build", 1, 0, b"hello "), write(1, "build", 1, 6, b"world\n")]).unwrap();
        assert_eq!(metas, vec![ChunkMeta::of(b"hello "), ChunkMeta::of(b"world\n")]);
        // A resend after a crash rewrites the same bytes in the same place.
        segs.write(&[write(1, "build", 1, 6, b"world\n"), write(1, "test", 2, 0, b"ok\n")]).unwrap();
        let got = segs.read(1, &[chunk("build", 1, 0, b"hello "), chunk("build", 1, 6, b"world\n")]).unwrap();
        assert_eq!(got, vec![b"hello ".to_vec(), b"world\n".to_vec()]);
        assert_eq!(segs.read(1, &[chunk("test", 2, 0, b"ok\n")]).unwrap(), vec![b"ok\n".to_vec()]);
        assert_eq!(std::fs::read(segs.path(1, "build", 1).unwrap()).unwrap(), b"hello world\n");
        assert_eq!(segs.path(1, "build", 1).unwrap(), dir.0.join("logs/0000000001/build@0001.log"));
        // Without fsync (--no-fsync) the bytes are written just the same.
        let unsynced = Segments::open(&dir.0, false).unwrap();
        unsynced.write(&[write(2, "a", 1, 0, b"x")]).unwrap();
        assert_eq!(segs.read(2, &[chunk("a", 1, 0, b"x")]).unwrap(), vec![b"x".to_vec()]);
    }

    #[test]
    fn damaged_or_missing_segments_are_errors_that_name_the_file_and_offset() {
        let dir = Dir::new();
        let segs = Segments::open(&dir.0, true).unwrap();
        segs.write(&[write(3, "a", 1, 0, b"first\n"), write(3, "a", 1, 6, b"second\n")]).unwrap();
        let path = segs.path(3, "a", 1).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        // (what, chunk asked for, the start of the error after the path)
        let cases: Vec<(&str, Chunk, &str)> = vec![
            ("intact chunk before the damage", chunk("a", 1, 0, b"first\n"), ""),
            (
                "a flipped bit",
                chunk("a", 1, 6, b"second\n"),
                " is corrupt at offset 6: the chunk's 7 bytes have checksum",
            ),
            ("past the end", chunk("a", 1, 13, b"third\n"), " is corrupt at offset 13: the file ends before"),
            ("no such attempt", chunk("a", 2, 0, b"x"), " is missing: the store has a chunk of 1 bytes at offset 0"),
            ("no such job", chunk("b", 1, 40, b"x"), " is missing: the store has a chunk of 1 bytes at offset 40"),
        ];
        for (what, c, want) in cases {
            let file = segs.path(3, &c.job, c.attempt).unwrap();
            match segs.read(3, std::slice::from_ref(&c)) {
                Ok(_) => assert!(want.is_empty(), "{what}: read"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with(&format!("log segment {}{want}", file.display())), "{what}: {msg}");
                    let api: StoreError = e.into();
                    assert!(api.to_string().contains(&file.display().to_string()), "{what}: {api}");
                }
            }
        }
        let err = segs.read(3, &[chunk("../../etc", 1, 0, b"x")]).unwrap_err();
        assert!(matches!(err, SegmentError::BadName { .. }), "{err}");
    }

    #[test]
    fn runs_are_deleted_and_orphans_swept_but_newer_runs_kept() {
        let dir = Dir::new();
        let segs = Segments::open(&dir.0, true).unwrap();
        for run in [1, 2, 3, 4, 7] {
            segs.write(&[write(run, "a", 1, 0, b"x")]).unwrap();
        }
        std::fs::create_dir_all(segs.root().join("not-a-run")).unwrap();
        segs.delete_run(2).unwrap();
        segs.delete_run(2).unwrap();
        let mut runs = segs.runs().unwrap();
        runs.sort_unstable();
        assert_eq!(runs, vec![1, 3, 4, 7]);
        // Run 3 is alive; 1 and 4 were pruned; 7 is newer than the listing.
        let gone = segs.sweep(&HashSet::from([3]), 5).unwrap();
        assert_eq!(gone, vec![1, 4]);
        let mut runs = segs.runs().unwrap();
        runs.sort_unstable();
        assert_eq!(runs, vec![3, 7]);
        assert!(segs.root().join("not-a-run").is_dir(), "what is not a run's is left alone");
    }

    #[test]
    fn a_failed_write_stops_the_segments_for_good() {
        let dir = Dir::new();
        let segs = Segments::open(&dir.0, true).unwrap();
        // A file where the run's directory should be: the open fails.
        std::fs::write(segs.root().join("0000000009"), b"").unwrap();
        let err = segs.write(&[write(9, "a", 1, 0, b"x")]).unwrap_err();
        assert!(err.to_string().contains("0000000009/a@0001.log at offset 0"), "{err}");
        assert!(segs.stopped().is_some_and(|r| r.contains("0000000009")));
        // Later writes, even good ones, are refused with the first reason.
        let err = segs.write(&[write(10, "a", 1, 0, b"x")]).unwrap_err();
        assert!(matches!(&err, SegmentError::Stopped { reason } if reason.contains("0000000009")), "{err}");
        assert!(!segs.root().join("0000000010").exists());
    }
}
