//! A blob being written (see the parent module's header for the rules):
//! counted and hashed into its file (a resumable upload's partial file
//! flushed write by write, so that it can go on after a break), then
//! checked and moved to its address (or sent to the bucket in parts); and
//! the claim that keeps a resumable upload's digest to one writer at a
//! time.

use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Backend, BlobError, Blobs, hex, io};

/// A digest claimed by its one active writer, until the writer is dropped.
pub(super) struct Claim<'a> {
    pub(super) blobs: &'a Blobs,
    pub(super) digest: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.blobs.writing.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.digest);
    }
}

/// A blob being written; see the parent module's header.
pub struct BlobWriter<'a> {
    blobs: &'a Blobs,
    /// Its temporary file, or its partial file when resumable.
    path: PathBuf,
    /// Open until finished.
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    len: u64,
    limit: u64,
    what: String,
    flag: &'static str,
    /// Whether the file holds exactly `len` bytes (no write failed or was
    /// cut short) and nothing was refused: a resumable writer's file is
    /// then kept when it is dropped unfinished.
    intact: bool,
    /// The digest a resumable writer was announced as, claimed until it is
    /// dropped (after its file is closed, or deleted); `None` for a writer
    /// of a temporary file.
    claim: Option<Claim<'a>>,
}

impl<'a> BlobWriter<'a> {
    /// A writer of `file` at `path`, holding `len` bytes whose hash is
    /// `hasher`; `limit` names its limit, what it is and the flag that sets
    /// it.
    pub(super) fn new(
        blobs: &'a Blobs,
        path: PathBuf,
        file: tokio::fs::File,
        hasher: Sha256,
        len: u64,
        (limit, what, flag): (u64, String, &'static str),
        claim: Option<Claim<'a>>,
    ) -> BlobWriter<'a> {
        BlobWriter { blobs, path, file: Some(file), hasher, len, limit, what, flag, intact: true, claim }
    }
}

impl BlobWriter<'_> {
    /// How many bytes it holds, those before its offset included.
    pub fn written(&self) -> u64 {
        self.len
    }

    /// Appends `data`, refusing it the moment the blob would pass its
    /// limit.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        let len = self.len + data.len() as u64;
        if len > self.limit {
            self.intact = false;
            return Err(BlobError::TooLarge { what: self.what.clone(), limit: self.limit, flag: self.flag });
        }
        let file = self.file.as_mut().expect("open until finished");
        // Until the bytes are in the file whole, it is not worth resuming:
        // a writer dropped mid-write (or failing) deletes it.
        self.intact = false;
        file.write_all(data).await.map_err(io(&self.path))?;
        if self.claim.is_some() {
            // Flushed at once (to the OS, not synced: a crash of the
            // machine is caught by the digest at the end): a resumable
            // writer dropped between writes leaves exactly `len` bytes.
            file.flush().await.map_err(io(&self.path))?;
        }
        self.hasher.update(data);
        self.len = len;
        self.intact = true;
        Ok(())
    }

    /// Gives up the blob without keeping its bytes to resume (its sender
    /// broke the protocol: resuming would only repeat that).
    pub fn discard(mut self) {
        self.intact = false;
    }

    /// Ends the blob: checks it against what the sender announced, syncs
    /// it and moves it to its address. Returns its digest and length. On
    /// any failure its file is deleted: a resumable upload of it starts
    /// afresh.
    pub async fn finish(mut self, want_digest: &str, want_len: u64) -> Result<(String, u64), BlobError> {
        let file = self.file.take().expect("open until finished");
        let stored = self.store(file, want_digest, want_len).await;
        if stored.is_err() {
            let _ = tokio::fs::remove_file(&self.path).await;
        }
        stored
    }

    async fn store(
        &mut self,
        mut file: tokio::fs::File,
        want_digest: &str,
        want_len: u64,
    ) -> Result<(String, u64), BlobError> {
        let got = hex(&std::mem::take(&mut self.hasher).finalize());
        if self.len != want_len {
            return Err(BlobError::SizeMismatch { want: want_len, got: self.len });
        }
        // A resumable writer's bytes must also be those of the digest its
        // partial file is named by.
        let named = self.claim.as_ref().map(|c| c.digest.as_str());
        if let Some(want) = [Some(want_digest), named].into_iter().flatten().find(|want| *want != got) {
            return Err(BlobError::DigestMismatch { want: want.to_string(), got });
        }
        file.flush().await.map_err(io(&self.path))?;
        if self.blobs.fsync {
            file.sync_all().await.map_err(io(&self.path))?;
        }
        drop(file);
        if let Backend::S3 { store, prefix, url } = &self.blobs.backend {
            let sent = upload(store.as_ref(), &Blobs::key(prefix, &got), &self.path).await;
            let _ = tokio::fs::remove_file(&self.path).await;
            sent.map_err(Blobs::remote(url))?;
            self.blobs.used.fetch_add(self.len, std::sync::atomic::Ordering::Relaxed);
            return Ok((got, self.len));
        }
        let dest = self.blobs.path(&got)?;
        let parent = dest.parent().expect("a blob's path has a directory");
        tokio::fs::create_dir_all(parent).await.map_err(io(parent))?;
        tokio::fs::rename(&self.path, &dest).await.map_err(io(&dest))?;
        if self.blobs.fsync {
            // The rename is durable once its directory is.
            let dir = tokio::fs::File::open(parent).await.map_err(io(parent))?;
            dir.sync_all().await.map_err(io(parent))?;
        }
        // An estimate until the next sweep counts: the same bytes stored
        // twice count twice until then.
        self.blobs.used.fetch_add(self.len, std::sync::atomic::Ordering::Relaxed);
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
        // Dropped unfinished (refused, or its sender gone): a resumable
        // writer's intact partial file stays for its sender to go on with;
        // nothing else half-written does. After `finish` the file has been
        // renamed away, or deleted.
        if self.file.take().is_some() && !(self.claim.is_some() && self.intact) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
