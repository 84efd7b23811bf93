//! Log segments: the bytes of agents' logs, kept in files outside the key
//! space. The store (embedded or etcd) keeps, under each chunk's key
//! ([`crate::core::keys::log_chunk`]), only a [`ChunkMeta`]: the chunk's length,
//! CRC-32C and where its bytes lie. The embedded store holds its whole key
//! space in memory and etcd caps its database, so neither can hold megabytes
//! of output per job for thousands of retained runs; files cost disk only.
//!
//! ```text
//! {blob_dir}/logs/{run:010}.log
//! ```
//!
//! One file per run: every attempt's chunks are appended to it (`O_APPEND`,
//! one `write` each), and each chunk's metadata records where it landed
//! ([`ChunkMeta::at`]). A run makes one file, not one per attempt: on a
//! file system that allocates inodes slowly while others were recently
//! freed (ext4 without a journal), a file per attempt cost about a
//! millisecond of CPU each. A resend after a crash (bytes written but never
//! committed) appends the same bytes again, and only the committed copy is
//! ever read. An append never overwrites, so a deposed leader still
//! writing cannot damage what the new one committed. Deleting a run is
//! deleting its file.
//!
//! Chunks written before this layout have no `at`: their bytes lie in one
//! file per attempt, `{run:010}/{job}@{attempt:04}.log`, at their log
//! offset. They are still read (and sealed, and deleted) there.
//!
//! Durability: [`Segments::write`] writes a burst's chunks, then syncs each
//! file it touched once (fdatasync, several files at once on their own
//! threads, since each waits on the disk), and the directory when it gained
//! a file, before it returns; the scheduler commits the chunks' metadata
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
//! too short or a mismatch is an error that names the file and the offset
//! in it, never garbage or silence.
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
/// has the log offset, `at` the place in its run's file), to know where the
/// log ends, and to check its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    pub len: u32,
    pub crc32c: u32,
    /// Where the chunk's bytes start in its run's file. None: a chunk
    /// written before the file per run, at its log offset in the file of
    /// its attempt (see the module's header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

impl ChunkMeta {
    /// The metadata of `data` written at `at` of its run's file.
    pub fn placed(data: &[u8], at: u64) -> ChunkMeta {
        ChunkMeta { at: Some(at), ..ChunkMeta::of(data) }
    }

    /// The length and checksum of `data`, placed nowhere yet.
    pub fn of(data: &[u8]) -> ChunkMeta {
        let len = u32::try_from(data.len()).expect("log chunks are far smaller than 4 GiB");
        ChunkMeta { len, crc32c: crc32c(data), at: None }
    }

    /// The value stored under the chunk's key: JSON, as every other value
    /// Drover stores, about 40 bytes.
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

    /// The file of a run's logs.
    pub fn path(&self, run: RunId) -> PathBuf {
        self.root.join(format!("{}.log", run_dir_name(run)))
    }

    /// The file of one attempt's log in the layout before the file per
    /// run: where a chunk without `at` lies.
    fn attempt_path(&self, run: RunId, job: &str, attempt: u32) -> Result<PathBuf, SegmentError> {
        Ok(self.root.join(run_dir_name(run)).join(format!("{}@{attempt:04}.log", component(job)?)))
    }

    /// Where chunk `c` of `run` lies: its file and the offset in it.
    fn place(&self, run: RunId, c: &Chunk) -> Result<(PathBuf, u64), SegmentError> {
        match c.meta.at {
            Some(at) => Ok((self.path(run), at)),
            None => Ok((self.attempt_path(run, &c.job, c.attempt)?, c.offset)),
        }
    }

    /// Why writing stopped for good, if it has (see the module's header).
    pub fn stopped(&self) -> Option<String> {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stop(&self, reason: String) {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(reason);
    }

    /// Appends every record to its run's file, then makes them durable: one
    /// fdatasync per file touched, and an fsync of the directory when it
    /// gained a file (unless syncing is off). Returns each record's
    /// metadata, in order, for the store. Any failure stops the segments
    /// for good and is returned; nothing written may then be acknowledged.
    pub fn write(&self, writes: &[Write]) -> Result<Vec<ChunkMeta>, SegmentError> {
        if let Some(reason) = self.stopped() {
            return Err(SegmentError::Stopped { reason });
        }
        match self.write_and_sync(writes) {
            Ok(metas) => Ok(metas),
            Err(e) => {
                self.stop(e.to_string());
                Err(e)
            }
        }
    }

    fn write_and_sync(&self, writes: &[Write]) -> Result<Vec<ChunkMeta>, SegmentError> {
        let mut files: BTreeMap<PathBuf, File> = BTreeMap::new();
        let mut created = false;
        let mut metas = Vec::with_capacity(writes.len());
        for w in writes {
            let path = self.path(w.run);
            if !files.contains_key(&path) {
                let (file, new) = open_for_append(&path).map_err(|source| SegmentError::Io {
                    op: "open",
                    path: path.clone(),
                    offset: 0,
                    source,
                })?;
                created |= new;
                files.insert(path.clone(), file);
            }
            let at = append(&files[&path], &w.data).map_err(|(offset, source)| SegmentError::Io {
                op: "append to",
                path: path.clone(),
                offset,
                source,
            })?;
            metas.push(ChunkMeta::placed(&w.data, at));
        }
        if !self.fsync {
            return Ok(metas);
        }
        sync_all_at_once(files.iter().collect())?;
        if created {
            File::open(&self.root).and_then(|d| d.sync_all()).map_err(|source| SegmentError::Io {
                op: "sync the directory of",
                path: self.root.clone(),
                offset: 0,
                source,
            })?;
        }
        Ok(metas)
    }

    /// Reads chunks of one run, in the order given, each checked against
    /// its checksum. Consecutive chunks in one file share an open file.
    pub fn read(&self, run: RunId, chunks: &[Chunk]) -> Result<Vec<Vec<u8>>, SegmentError> {
        let mut open: Option<(PathBuf, File)> = None;
        let mut out = Vec::with_capacity(chunks.len());
        for c in chunks {
            let (path, offset) = self.place(run, c)?;
            if open.as_ref().is_none_or(|(p, _)| *p != path) {
                let file = File::open(&path).map_err(|source| match source.kind() {
                    ErrorKind::NotFound => SegmentError::Missing { path: path.clone(), offset, len: c.meta.len },
                    _ => SegmentError::Io { op: "open", path: path.clone(), offset, source },
                })?;
                open = Some((path.clone(), file));
            }
            let (_, file) = open.as_ref().expect("opened above");
            let mut data = vec![0u8; c.meta.len as usize];
            file.read_exact_at(&mut data, offset).map_err(|source| match source.kind() {
                ErrorKind::UnexpectedEof => SegmentError::Corrupt {
                    path: path.clone(),
                    offset,
                    detail: format!("the file ends before the chunk's {} bytes", c.meta.len),
                },
                _ => SegmentError::Io { op: "read", path: path.clone(), offset, source },
            })?;
            let crc = crc32c(&data);
            if crc != c.meta.crc32c {
                return Err(SegmentError::Corrupt {
                    path,
                    offset,
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

    /// Deletes a run's segments (its file, and its directory of files per
    /// attempt from before); a run without any is fine.
    pub fn delete_run(&self, run: RunId) -> Result<(), SegmentError> {
        let file = self.path(run);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(SegmentError::Io { op: "delete", path: file, offset: 0, source: e });
            }
            _ => {}
        }
        let dir = self.root.join(run_dir_name(run));
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(SegmentError::Io { op: "delete", path: dir, offset: 0, source: e })
            }
            _ => Ok(()),
        }
    }

    /// The runs that have segments, each once, in no particular order: run
    /// files (`{run:010}.log`) and directories of files per attempt (from
    /// before). Other names are left alone.
    pub fn runs(&self) -> Result<Vec<RunId>, SegmentError> {
        let entries = std::fs::read_dir(&self.root).map_err(|source| SegmentError::Io {
            op: "list",
            path: self.root.clone(),
            offset: 0,
            source,
        })?;
        let mut runs = BTreeSet::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let (stem, is_file) = match name.strip_suffix(".log") {
                Some(stem) => (stem, true),
                None => (name, false),
            };
            // Exactly the names this module makes, and of the right kind.
            let Ok(run) = stem.parse::<RunId>() else { continue };
            if run_dir_name(run) != stem {
                continue;
            }
            let kind = entry.file_type().map_err(|source| SegmentError::Io {
                op: "list",
                path: entry.path(),
                offset: 0,
                source,
            })?;
            if (is_file && kind.is_file()) || (!is_file && kind.is_dir()) {
                runs.insert(run);
            }
        }
        Ok(runs.into_iter().collect())
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

/// Opens a run's file for appending, making it when missing; true when it
/// was made (its directory then needs a sync).
fn open_for_append(path: &Path) -> std::io::Result<(File, bool)> {
    match OpenOptions::new().append(true).open(path) {
        Ok(file) => return Ok((file, false)),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok((OpenOptions::new().append(true).create(true).open(path)?, true))
}

/// Appends `data` with one `write` and returns where it starts: the file's
/// offset after an append is the end of what this call wrote, whoever else
/// appends. A short write is an error, with the offset the chunk started
/// at and the system's reason: a chunk is never split around another
/// writer's bytes.
fn append(mut file: &File, data: &[u8]) -> Result<u64, (u64, std::io::Error)> {
    use std::io::{Seek, Write as _};
    let written = file.write(data).map_err(|e| (0, e))?;
    let end = file.stream_position().map_err(|e| (0, e))?;
    let start = end - written as u64;
    if written != data.len() {
        // The chunk is refused either way; writing the rest once more only
        // asks the system why (a full disk says so now).
        let why = match file.write(&data[written..]) {
            Err(e) => e,
            Ok(_) => {
                let split = format!("wrote {written} of the chunk's {} bytes in one call", data.len());
                std::io::Error::new(ErrorKind::WriteZero, split)
            }
        };
        return Err((start, why));
    }
    Ok(start)
}

#[cfg(test)]
mod tests;
