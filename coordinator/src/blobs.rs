//! The blob store: content-addressed files (sha256) under
//! `{blob-dir}/sha256/ab/abcdef…`, beside the log segments. Artifacts live
//! here; the run store holds only what points at them (their digests and
//! manifests).
//!
//! A blob is written as it streams in, never held whole in memory: into a
//! file under `{blob-dir}/tmp/`, hashed and counted on the way, refused the
//! moment it passes its size limit, checked against the digest its sender
//! announced, synced, and only then renamed to its address. A reader
//! therefore never sees a partial blob. Two writers of the same content
//! may both succeed; the second rename replaces identical bytes.
//!
//! An agent's upload resumes. It is written ([`Blobs::upload_writer`])
//! into `tmp/partial-{sha256}`, named by the digest announced, and every
//! write reaches that file before the next is taken, so a writer dropped
//! before its end (its sender's stream broke) leaves a partial file that
//! holds exactly what it counted. The sender asks how much that is
//! ([`Blobs::partial`]) and goes on from there (an offset), and the digest
//! check at the end covers the bytes of every stream. A writer that was
//! refused (too large, the wrong digest, a write that failed or was cut
//! short) deletes its partial file instead, so a resume never builds on
//! bytes in an unknown state. One such writer per digest at a time: a
//! second is refused ([`BlobError::Busy`]) while the first is active, and
//! its sender asks again later. The claim is this process's, which is
//! enough because only the leader takes uploads (`PutBlob` asks its
//! scheduler first). Other writers ([`Blobs::writer`]: the coordinator's
//! own) write a temporary file of their own, deleted if they stop short.
//!
//! What a crash leaves under `tmp/`, `open` deletes, but for partial files
//! younger than [`PARTIAL_KEEP`] (by their last write): resuming across a
//! coordinator restart is the point. `sweep` deletes the partial files
//! older than the blob grace that no writer is active for.
//!
//! Two backends hold the blobs. The default is the filesystem: `--blob-dir`,
//! which every coordinator must share on etcd, as for the segments. The
//! other is any S3-compatible service (`--blob-store s3://bucket/prefix`,
//! through the `object_store` crate, with the usual `AWS_*` variables and
//! `AWS_ENDPOINT_URL` to name another service than AWS): a blob is still
//! written, counted and checked in a local partial file first (resumable
//! the same way), then sent in parts (never held whole in memory) to
//! `prefix/sha256/ab/abcdef…`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::info;

/// How long `open` keeps a partial upload (by its last write): long enough
/// for its sender to come back after a coordinator restart.
pub const PARTIAL_KEEP: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{what} is over the limit of {limit} bytes ({flag})")]
    TooLarge { what: String, limit: u64, flag: &'static str },
    #[error("the blob's sha256 is {got}, not the {want} it was sent as; it was not stored")]
    DigestMismatch { want: String, got: String },
    #[error("the blob is {got} bytes, not the {want} it was announced as; it was not stored")]
    SizeMismatch { want: u64, got: u64 },
    #[error("{0:?} is not a sha256 digest (64 lowercase hex digits)")]
    BadDigest(String),
    #[error("no blob {0} in the blob store")]
    Missing(String),
    #[error("blob store {url}: {source}")]
    Remote { url: String, source: object_store::Error },
    #[error("{0:?} is not a blob store: write s3://BUCKET or s3://BUCKET/PREFIX")]
    BadUrl(String),
    #[error(
        "the blob store holds {used} bytes, and {size} more would pass its budget of {budget} bytes \
         (--blob-store-budget); shorter retention (--artifact-expire, --keep-runs, --cache-budget) frees \
         space, or raise the budget"
    )]
    StoreFull { used: u64, size: u64, budget: u64 },
    #[error("offset {offset} is past the blob's end ({len} bytes)")]
    BadOffset { offset: u64, len: u64 },
    #[error(
        "cannot go on with the upload of blob {digest} at byte {offset}: the coordinator holds {holds} bytes \
         of it; ask again, or send it from byte 0"
    )]
    PartialMismatch { digest: String, offset: u64, holds: u64 },
    #[error("blob {0} is being uploaded already; ask again once that upload ends")]
    Busy(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_path_buf(), source }
}

/// Whether `text` is a sha256 digest as the store names blobs.
pub fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the blobs live.
#[derive(Debug)]
enum Backend {
    /// Under `Blobs::dir`.
    Fs,
    /// In a bucket, under `prefix`; `Blobs::dir` only stages uploads.
    S3 { store: Arc<dyn ObjectStore>, prefix: String, url: String },
}

/// The blob store.
#[derive(Debug)]
pub struct Blobs {
    dir: PathBuf,
    fsync: bool,
    backend: Backend,
    /// The digests a writer is active for (see [`Claim`]). Held only for
    /// a set operation (and `sweep`'s unlink of a partial file), never
    /// across an await.
    writing: Mutex<HashSet<String>>,
    /// The most bytes uploads may fill the store with (`--blob-store-budget`);
    /// 0: no limit.
    budget: u64,
    /// What the store holds, as the last sweep counted it (at open, on the
    /// filesystem) plus what was stored since: an estimate for the budget.
    pub(crate) used: std::sync::atomic::AtomicU64,
}

/// A stored blob, to read.
pub enum BlobReader {
    File(tokio::fs::File),
    Remote(futures_util::stream::BoxStream<'static, Result<Vec<u8>, BlobError>>),
}

impl BlobReader {
    /// The next piece of the blob, of at most `max` bytes from a file;
    /// `None` at its end.
    pub async fn next(&mut self, max: usize) -> Option<Result<Vec<u8>, BlobError>> {
        match self {
            BlobReader::File(file) => {
                let mut buf = vec![0u8; max];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some(Ok(buf))
                    }
                    Err(source) => Some(Err(BlobError::Io { path: PathBuf::from("(blob)"), source })),
                }
            }
            BlobReader::Remote(stream) => stream.next().await,
        }
    }
}

impl Blobs {
    /// Opens (creating) the store under `dir`, and removes what a crash
    /// left half-written but for recent partial uploads.
    pub fn open(dir: &Path, fsync: bool) -> Result<Blobs, BlobError> {
        let blobs = Blobs {
            dir: dir.to_path_buf(),
            fsync,
            backend: Backend::Fs,
            writing: Mutex::default(),
            budget: 0,
            used: Default::default(),
        };
        std::fs::create_dir_all(dir.join("sha256")).map_err(io(dir))?;
        blobs.clear_tmp()?;
        let used = walk_sizes(&dir.join("sha256"));
        blobs.used.store(used, std::sync::atomic::Ordering::Relaxed);
        Ok(blobs)
    }

    /// Opens the S3 store at `url` (`s3://bucket/prefix`), with the
    /// credentials, region and endpoint of the `AWS_*` variables; uploads
    /// are staged under `staging`.
    pub fn open_s3(url: &str, staging: &Path) -> Result<Blobs, BlobError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| BlobError::BadUrl(url.to_string()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BlobError::BadUrl(url.to_string()));
        }
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|source| BlobError::Remote { url: url.to_string(), source })?;
        let prefix = prefix.trim_matches('/').to_string();
        let backend = Backend::S3 { store: Arc::new(store), prefix, url: url.to_string() };
        // What the bucket holds is known after the leader's first sweep.
        let blobs = Blobs {
            dir: staging.to_path_buf(),
            fsync: false,
            backend,
            writing: Mutex::default(),
            budget: 0,
            used: Default::default(),
        };
        blobs.clear_tmp()?;
        Ok(blobs)
    }

    /// Limits what uploads may fill the store with to `budget` bytes (0:
    /// no limit).
    pub fn with_budget(mut self, budget: u64) -> Blobs {
        self.budget = budget;
        self
    }

    /// Refuses an upload of `size` bytes that would pass the budget.
    pub fn check_room(&self, size: u64) -> Result<(), BlobError> {
        let used = self.used.load(std::sync::atomic::Ordering::Relaxed);
        if self.budget > 0 && used.saturating_add(size) > self.budget {
            return Err(BlobError::StoreFull { used, size, budget: self.budget });
        }
        Ok(())
    }

    /// Empties `tmp/` of what a crash left there, but for the partial
    /// uploads younger than [`PARTIAL_KEEP`], which their senders may yet
    /// resume.
    fn clear_tmp(&self) -> Result<(), BlobError> {
        let tmp = self.tmp_dir();
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let now = SystemTime::now();
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))? {
            let entry = entry.map_err(io(&tmp))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(io(&path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let young = meta.modified().is_ok_and(|t| now.duration_since(t).unwrap_or_default() < PARTIAL_KEEP);
            if meta.is_file() && partial_digest(&name).is_some() && young {
                continue;
            }
            let gone = if meta.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            gone.map_err(io(&path))?;
        }
        Ok(())
    }

    /// The object key of a blob in a bucket.
    fn key(prefix: &str, digest: &str) -> object_store::path::Path {
        let name = format!("sha256/{}/{digest}", &digest[..2]);
        if prefix.is_empty() { name.into() } else { format!("{prefix}/{name}").into() }
    }

    fn remote(url: &str) -> impl FnOnce(object_store::Error) -> BlobError + '_ {
        move |source| BlobError::Remote { url: url.to_string(), source }
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Where the blob with `digest` lives.
    pub fn path(&self, digest: &str) -> Result<PathBuf, BlobError> {
        if !is_digest(digest) {
            return Err(BlobError::BadDigest(digest.to_string()));
        }
        Ok(self.dir.join("sha256").join(&digest[..2]).join(digest))
    }

    /// Where the partial upload of `digest` is written.
    fn partial_path(&self, digest: &str) -> PathBuf {
        self.tmp_dir().join(format!("partial-{digest}"))
    }

    /// Starts writing a blob of at most `limit` bytes into a temporary
    /// file of its own, deleted if it is dropped unfinished; `what` and
    /// `flag` name it and its limit in errors.
    pub async fn writer(&self, limit: u64, what: String, flag: &'static str) -> Result<BlobWriter<'_>, BlobError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = self.tmp_dir().join(format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        Ok(BlobWriter::new(self, tmp, file, Sha256::new(), 0, (limit, what, flag), None))
    }

    /// Starts writing the blob its sender announced as `digest`, of at most
    /// `limit` bytes, resumably: into its partial file, which stays if the
    /// writer is dropped unfinished (see the module header). From `offset`
    /// 0 it starts afresh (dropping any partial upload of it); from any
    /// other it goes on with the partial upload, which must hold exactly
    /// `offset` bytes. Refused while another such writer of `digest` is
    /// active.
    pub async fn upload_writer(
        &self,
        digest: &str,
        offset: u64,
        limit: u64,
        what: String,
        flag: &'static str,
    ) -> Result<BlobWriter<'_>, BlobError> {
        if !is_digest(digest) {
            return Err(BlobError::BadDigest(digest.to_string()));
        }
        if offset > limit {
            return Err(BlobError::TooLarge { what, limit, flag });
        }
        let claim = self.claim(digest)?;
        let path = self.partial_path(digest);
        let (file, hasher) = if offset == 0 {
            (tokio::fs::File::create(&path).await.map_err(io(&path))?, Sha256::new())
        } else {
            self.reopen(&path, digest, offset).await?
        };
        Ok(BlobWriter::new(self, path, file, hasher, offset, (limit, what, flag), Some(claim)))
    }

    /// Claims `digest` for one writer; refused while another holds it.
    fn claim(&self, digest: &str) -> Result<Claim<'_>, BlobError> {
        let mut writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        if !writing.insert(digest.to_string()) {
            return Err(BlobError::Busy(digest.to_string()));
        }
        Ok(Claim { blobs: self, digest: digest.to_string() })
    }

    /// Opens the partial upload at `path` to go on at `offset`, with the
    /// running sha256 of what it holds. That hash is rebuilt by reading
    /// the file once: a resume costs a read of what was sent before the
    /// break (sha2 cannot save a hasher's state), which is still far
    /// cheaper than receiving it again.
    async fn reopen(&self, path: &Path, digest: &str, offset: u64) -> Result<(tokio::fs::File, Sha256), BlobError> {
        let mismatch = |holds| BlobError::PartialMismatch { digest: digest.to_string(), offset, holds };
        let holds = match tokio::fs::metadata(path).await {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(path)(e)),
        };
        if holds != offset {
            return Err(mismatch(holds));
        }
        let mut file = tokio::fs::OpenOptions::new().read(true).write(true).open(path).await.map_err(io(path))?;
        let (mut hasher, mut read, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
        loop {
            let n = file.read(&mut buf).await.map_err(io(path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            read += n as u64;
        }
        if read != offset {
            return Err(mismatch(read));
        }
        file.seek(std::io::SeekFrom::Start(offset)).await.map_err(io(path))?;
        Ok((file, hasher))
    }

    /// How many bytes of a partial upload of `digest` the store holds (0
    /// if none); one being written may grow.
    pub async fn partial(&self, digest: &str) -> Result<u64, BlobError> {
        if !is_digest(digest) {
            return Err(BlobError::BadDigest(digest.to_string()));
        }
        let path = self.partial_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Whether the blob `digest` is stored whole, so that its sender need
    /// not send it: its age is then refreshed, as an upload would have,
    /// so that the sweep's grace covers the time until the result naming
    /// it is committed. On S3 an object's age cannot be refreshed without
    /// writing it again, so the answer there is always no, and the upload
    /// (which writes it again) goes ahead.
    pub async fn stored(&self, digest: &str) -> Result<bool, BlobError> {
        let path = self.path(digest)?;
        if let Backend::S3 { .. } = &self.backend {
            return Ok(false);
        }
        tokio::task::spawn_blocking(move || match std::fs::OpenOptions::new().write(true).open(&path) {
            // One whose age cannot be refreshed is reported missing: the
            // upload goes ahead and writes it again.
            Ok(file) => Ok(file.set_modified(SystemTime::now()).is_ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path)(e)),
        })
        .await
        .map_err(|e| BlobError::Io { path: self.dir.clone(), source: std::io::Error::other(e) })?
    }

    /// Opens a stored blob for reading, with its length.
    pub async fn open_blob(&self, digest: &str) -> Result<(BlobReader, u64), BlobError> {
        self.open_blob_at(digest, 0).await
    }

    /// Opens a stored blob for reading from byte `offset` (to resume a
    /// download), with its whole length.
    pub async fn open_blob_at(&self, digest: &str, offset: u64) -> Result<(BlobReader, u64), BlobError> {
        let len = self.len(digest).await?;
        if offset > len {
            return Err(BlobError::BadOffset { offset, len });
        }
        let path = self.path(digest)?;
        if let Backend::S3 { store, prefix, url } = &self.backend {
            if offset == len {
                return Ok((BlobReader::Remote(futures_util::stream::empty().boxed()), len));
            }
            let options =
                object_store::GetOptions { range: Some(object_store::GetRange::Offset(offset)), ..Default::default() };
            let got = store.get_opts(&Self::key(prefix, digest), options).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => BlobError::Missing(digest.to_string()),
                e => Self::remote(url)(e),
            })?;
            let url = url.clone();
            let stream = got
                .into_stream()
                .map(move |part| {
                    part.map(|bytes| bytes.to_vec()).map_err(|source| BlobError::Remote { url: url.clone(), source })
                })
                .boxed();
            return Ok((BlobReader::Remote(stream), len));
        }
        match tokio::fs::File::open(&path).await {
            Ok(mut f) => {
                use tokio::io::AsyncSeekExt;
                f.seek(std::io::SeekFrom::Start(offset)).await.map_err(io(&path))?;
                Ok((BlobReader::File(f), len))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::Missing(digest.to_string())),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// A stored blob's length, without reading it.
    pub async fn len(&self, digest: &str) -> Result<u64, BlobError> {
        let path = self.path(digest)?;
        if let Backend::S3 { store, prefix, url } = &self.backend {
            return match store.head(&Self::key(prefix, digest)).await {
                Ok(meta) => Ok(meta.size),
                Err(object_store::Error::NotFound { .. }) => Err(BlobError::Missing(digest.to_string())),
                Err(e) => Err(Self::remote(url)(e)),
            };
        }
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::Missing(digest.to_string())),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Deletes a blob; one that is not there is no error.
    pub async fn delete(&self, digest: &str) -> Result<(), BlobError> {
        let path = self.path(digest)?;
        if let Backend::S3 { store, prefix, url } = &self.backend {
            return match store.delete(&Self::key(prefix, digest)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(Self::remote(url)(e)),
            };
        }
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }
}

impl Blobs {
    /// Deletes every blob not in `keep` that is older than `grace` (by its
    /// modification time: a blob just uploaded is not referenced until its
    /// job's result is committed). Returns how many it deleted. Partial
    /// uploads older than `grace` that no writer is active for go too (not
    /// counted: they were never blobs).
    pub async fn sweep(&self, keep: HashSet<String>, grace: Duration) -> Result<usize, BlobError> {
        let partials = self.sweep_partials(grace).await?;
        if partials > 0 {
            info!(partials, "deleted partial uploads older than the blob grace");
        }
        if let Backend::S3 { store, prefix, url } = &self.backend {
            let root = if prefix.is_empty() { "sha256".to_string() } else { format!("{prefix}/sha256") };
            let root: object_store::path::Path = root.into();
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
                    as i64;
            let mut listed = store.list(Some(&root));
            let (mut gone, mut used) = (0, 0);
            while let Some(meta) = listed.next().await {
                let meta = meta.map_err(Self::remote(url))?;
                let name = meta.location.filename().unwrap_or_default().to_string();
                let old = now_ms - meta.last_modified.timestamp_millis() >= grace.as_millis() as i64;
                if is_digest(&name) && !keep.contains(&name) && old {
                    store.delete(&meta.location).await.map_err(Self::remote(url))?;
                    gone += 1;
                } else {
                    used += meta.size;
                }
            }
            self.used.store(used, std::sync::atomic::Ordering::Relaxed);
            return Ok(gone);
        }
        let root = self.dir.join("sha256");
        let counted = root.clone();
        let gone = tokio::task::spawn_blocking(move || {
            let mut gone = 0;
            let now = std::time::SystemTime::now();
            for shard in std::fs::read_dir(&root).map_err(io(&root))? {
                let shard = shard.map_err(io(&root))?.path();
                let Ok(entries) = std::fs::read_dir(&shard) else { continue };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !is_digest(&name) || keep.contains(&name) {
                        continue;
                    }
                    let old = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= grace);
                    if old && std::fs::remove_file(entry.path()).is_ok() {
                        gone += 1;
                    }
                }
            }
            Ok::<_, BlobError>(gone)
        })
        .await
        .map_err(|e| BlobError::Io { path: self.dir.clone(), source: std::io::Error::other(e) })??;
        let used = tokio::task::spawn_blocking(move || walk_sizes(&counted)).await.unwrap_or(0);
        self.used.store(used, std::sync::atomic::Ordering::Relaxed);
        Ok(gone)
    }

    /// Deletes the partial uploads older than `grace` (by their last
    /// write) that no writer is active for. Returns how many it deleted.
    async fn sweep_partials(&self, grace: Duration) -> Result<usize, BlobError> {
        let tmp = self.tmp_dir();
        let mut entries = tokio::fs::read_dir(&tmp).await.map_err(io(&tmp))?;
        let (now, mut gone) = (SystemTime::now(), 0);
        while let Some(entry) = entries.next_entry().await.map_err(io(&tmp))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(digest) = partial_digest(&name) else { continue };
            let Ok(modified) = entry.metadata().await.and_then(|m| m.modified()) else { continue };
            if now.duration_since(modified).unwrap_or_default() < grace {
                continue;
            }
            // Under the lock, so that no writer claims it in between.
            let writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
            if !writing.contains(digest) && std::fs::remove_file(entry.path()).is_ok() {
                gone += 1;
            }
        }
        Ok(gone)
    }
}

/// The digest a partial upload's file name holds, if it is one.
/// The bytes of the blobs under `root` (`sha256/ab/abcd…`).
fn walk_sizes(root: &Path) -> u64 {
    let Ok(shards) = std::fs::read_dir(root) else { return 0 };
    shards
        .flatten()
        .filter_map(|shard| std::fs::read_dir(shard.path()).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| is_digest(&e.file_name().to_string_lossy()))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn partial_digest(name: &str) -> Option<&str> {
    name.strip_prefix("partial-").filter(|d| is_digest(d))
}

mod writer;

pub use writer::BlobWriter;
use writer::Claim;

#[cfg(test)]
mod tests;
