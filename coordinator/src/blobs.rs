//! The blob store: content-addressed files (sha256) under
//! `{blob-dir}/sha256/ab/abcdef…`, beside the log segments. Artifacts live
//! here; the run store holds only what points at them (their digests and
//! manifests).
//!
//! A blob is written as it streams in, never held whole in memory: into a
//! temporary file under `{blob-dir}/tmp/`, hashed and counted on the way,
//! refused the moment it passes its size limit, checked against the digest
//! the sender announced, synced, and only then renamed to its address. A
//! reader therefore never sees a partial blob, and a crash leaves only a
//! temporary file, which the next `open` clears. Two writers of the same
//! content both succeed; the second rename replaces identical bytes.
//!
//! Two backends hold the blobs. The default is the filesystem: `--blob-dir`,
//! which every coordinator must share on etcd, as for the segments. The
//! other is any S3-compatible service (`--blob-store s3://bucket/prefix`,
//! through the `object_store` crate, with the usual `AWS_*` variables and
//! `AWS_ENDPOINT_URL` to name another service than AWS): a blob is still
//! written, counted and checked in a local temporary file first, then sent
//! in parts (never held whole in memory) to `prefix/sha256/ab/abcdef…`.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use futures_util::StreamExt;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    #[error("offset {offset} is past the blob's end ({len} bytes)")]
    BadOffset { offset: u64, len: u64 },
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
    /// left half-written.
    pub fn open(dir: &Path, fsync: bool) -> Result<Blobs, BlobError> {
        let blobs = Blobs { dir: dir.to_path_buf(), fsync, backend: Backend::Fs };
        let tmp = blobs.tmp_dir();
        std::fs::create_dir_all(dir.join("sha256")).map_err(io(dir))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
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
        let blobs = Blobs { dir: staging.to_path_buf(), fsync: false, backend };
        let tmp = blobs.tmp_dir();
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        Ok(blobs)
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

    /// Starts writing a blob of at most `limit` bytes; `what` and `flag`
    /// name it and its limit in errors.
    pub async fn writer(&self, limit: u64, what: String, flag: &'static str) -> Result<BlobWriter<'_>, BlobError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = self.tmp_dir().join(format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        Ok(BlobWriter { blobs: self, tmp, file: Some(file), hasher: Sha256::new(), len: 0, limit, what, flag })
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
    /// job's result is committed). Returns how many it deleted.
    pub async fn sweep(
        &self,
        keep: std::collections::HashSet<String>,
        grace: std::time::Duration,
    ) -> Result<usize, BlobError> {
        if let Backend::S3 { store, prefix, url } = &self.backend {
            let root = if prefix.is_empty() { "sha256".to_string() } else { format!("{prefix}/sha256") };
            let root: object_store::path::Path = root.into();
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
                    as i64;
            let mut listed = store.list(Some(&root));
            let mut gone = 0;
            while let Some(meta) = listed.next().await {
                let meta = meta.map_err(Self::remote(url))?;
                let name = meta.location.filename().unwrap_or_default().to_string();
                let old = now_ms - meta.last_modified.timestamp_millis() >= grace.as_millis() as i64;
                if is_digest(&name) && !keep.contains(&name) && old {
                    store.delete(&meta.location).await.map_err(Self::remote(url))?;
                    gone += 1;
                }
            }
            return Ok(gone);
        }
        let root = self.dir.join("sha256");
        tokio::task::spawn_blocking(move || {
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
            Ok(gone)
        })
        .await
        .map_err(|e| BlobError::Io { path: self.dir.clone(), source: std::io::Error::other(e) })?
    }
}

/// A blob being written; see the module header.
pub struct BlobWriter<'a> {
    blobs: &'a Blobs,
    tmp: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    len: u64,
    limit: u64,
    what: String,
    flag: &'static str,
}

impl BlobWriter<'_> {
    /// Appends `data`, refusing it the moment the blob would pass its
    /// limit.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        let len = self.len + data.len() as u64;
        if len > self.limit {
            return Err(BlobError::TooLarge { what: self.what.clone(), limit: self.limit, flag: self.flag });
        }
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(data).await.map_err(io(&self.tmp))?;
        self.hasher.update(data);
        self.len = len;
        Ok(())
    }

    /// Ends the blob: checks it against what the sender announced, syncs
    /// it and moves it to its address. Returns its digest and length.
    pub async fn finish(mut self, want_digest: &str, want_len: u64) -> Result<(String, u64), BlobError> {
        let got = hex(&std::mem::take(&mut self.hasher).finalize());
        if self.len != want_len {
            return Err(BlobError::SizeMismatch { want: want_len, got: self.len });
        }
        if got != want_digest {
            return Err(BlobError::DigestMismatch { want: want_digest.to_string(), got });
        }
        let mut file = self.file.take().expect("open until finished");
        file.flush().await.map_err(io(&self.tmp))?;
        if self.blobs.fsync {
            file.sync_all().await.map_err(io(&self.tmp))?;
        }
        drop(file);
        if let Backend::S3 { store, prefix, url } = &self.blobs.backend {
            let sent = upload(store.as_ref(), &Blobs::key(prefix, &got), &self.tmp).await;
            let _ = tokio::fs::remove_file(&self.tmp).await;
            sent.map_err(Blobs::remote(url))?;
            return Ok((got, self.len));
        }
        let dest = self.blobs.path(&got)?;
        let parent = dest.parent().expect("a blob's path has a directory");
        tokio::fs::create_dir_all(parent).await.map_err(io(parent))?;
        tokio::fs::rename(&self.tmp, &dest).await.map_err(io(&dest))?;
        if self.blobs.fsync {
            // The rename is durable once its directory is.
            let dir = tokio::fs::File::open(parent).await.map_err(io(parent))?;
            dir.sync_all().await.map_err(io(parent))?;
        }
        Ok((got, self.len))
    }
}

/// Sends the checked file `tmp` to `key`, in parts of 8 MiB with at most
/// 4 in flight: never the whole blob in memory.
async fn upload(
    store: &dyn ObjectStore,
    key: &object_store::path::Path,
    tmp: &Path,
) -> Result<(), object_store::Error> {
    let upload = store.put_multipart(key).await?;
    let mut parts = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let mut file = tokio::fs::File::open(tmp)
        .await
        .map_err(|e| object_store::Error::Generic { store: "staging", source: Box::new(e) })?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| object_store::Error::Generic { store: "staging", source: Box::new(e) })?;
        if n == 0 {
            break;
        }
        parts.wait_for_capacity(4).await?;
        parts.write(&buf[..n]);
    }
    parts.finish().await?;
    Ok(())
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        // Not finished (refused, or its sender gone): nothing half-written
        // stays behind. After `finish` the file has been renamed away.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    #[tokio::test]
    async fn blobs_are_stored_by_digest_and_refused_whole_when_wrong() {
        let dir = crate::controller::tests::TestDir::new("blobs");
        let blobs = Blobs::open(dir.path(), true).unwrap();
        let data = vec![7u8; 300_000];
        let mut w = blobs.writer(1 << 20, "the artifact".into(), "--max-artifact-bytes").await.unwrap();
        for chunk in data.chunks(65_536) {
            w.write(chunk).await.unwrap();
        }
        let (d, len) = w.finish(&digest(&data), data.len() as u64).await.unwrap();
        assert_eq!((d.as_str(), len), (digest(&data).as_str(), 300_000));
        let (mut reader, len) = blobs.open_blob(&d).await.unwrap();
        let mut back = Vec::new();
        while let Some(part) = reader.next(65_536).await {
            back.extend(part.unwrap());
        }
        // A download resumes where it broke.
        let (mut reader, _) = blobs.open_blob_at(&d, 299_990).await.unwrap();
        let tail = reader.next(65_536).await.unwrap().unwrap();
        assert_eq!(tail, data[299_990..]);
        assert!(reader.next(65_536).await.is_none());
        assert!(matches!(blobs.open_blob_at(&d, 300_001).await, Err(BlobError::BadOffset { .. })));
        assert_eq!((back, len), (data.clone(), 300_000));

        // (case, bytes written, announced digest and length, the error)
        let cases: Vec<(&str, Vec<u8>, String, u64, &str)> = vec![
            ("wrong digest", b"abc".to_vec(), digest(b"abd"), 3, "sha256 is"),
            ("wrong length", b"abc".to_vec(), digest(b"abc"), 4, "not the 4 it was announced"),
        ];
        for (case, bytes, want, len, error) in cases {
            let mut w = blobs.writer(1 << 20, "x".into(), "--flag").await.unwrap();
            w.write(&bytes).await.unwrap();
            let err = w.finish(&want, len).await.unwrap_err();
            assert!(err.to_string().contains(error), "{case}: {err}");
        }
        // Over the limit: refused while streaming, naming the limit.
        let mut w = blobs.writer(10, "the artifact of job build".into(), "--max-artifact-bytes").await.unwrap();
        w.write(b"0123456789").await.unwrap();
        let err = w.write(b"!").await.unwrap_err();
        assert_eq!(err.to_string(), "the artifact of job build is over the limit of 10 bytes (--max-artifact-bytes)");
        drop(w);
        // Nothing half-written stays: only the one good blob.
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(matches!(blobs.open_blob(&digest(b"abc")).await, Err(BlobError::Missing(_))));
        assert!(matches!(blobs.path("../etc/passwd"), Err(BlobError::BadDigest(_))));
        blobs.delete(&d).await.unwrap();
        blobs.delete(&d).await.unwrap();
        assert!(matches!(blobs.open_blob(&d).await, Err(BlobError::Missing(_))));
    }
}
