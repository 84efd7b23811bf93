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
//! Every coordinator must see the same directory (`--blob-dir`, shared on
//! etcd), as for the segments. An S3-compatible backend is the next step
//! (issue 13); this is the filesystem one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

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

/// The filesystem blob store.
#[derive(Debug)]
pub struct Blobs {
    dir: PathBuf,
    fsync: bool,
}

impl Blobs {
    /// Opens (creating) the store under `dir`, and removes what a crash
    /// left half-written.
    pub fn open(dir: &Path, fsync: bool) -> Result<Blobs, BlobError> {
        let blobs = Blobs { dir: dir.to_path_buf(), fsync };
        let tmp = blobs.tmp_dir();
        std::fs::create_dir_all(dir.join("sha256")).map_err(io(dir))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        Ok(blobs)
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
    pub async fn open_blob(&self, digest: &str) -> Result<(tokio::fs::File, u64), BlobError> {
        let path = self.path(digest)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => {
                let len = f.metadata().await.map_err(io(&path))?.len();
                Ok((f, len))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::Missing(digest.to_string())),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Deletes a blob; one that is not there is no error.
    pub async fn delete(&self, digest: &str) -> Result<(), BlobError> {
        let path = self.path(digest)?;
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
        let (mut f, len) = blobs.open_blob(&d).await.unwrap();
        let mut back = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut f, &mut back).await.unwrap();
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
