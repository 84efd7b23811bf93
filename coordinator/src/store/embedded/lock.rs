//! What keeps an embedded store's data directory to itself, and the store in
//! its directory.
//!
//! Two coordinators must never share a data directory, so opening the store
//! takes an `flock` on the directory's `LOCK` file (which holds the pid, for
//! the error the second one reports) and binds an abstract Unix socket named
//! after the directory's canonical path. The flock alone is not enough: it
//! goes with the directory when the directory is deleted, so a second
//! coordinator could make the path again and lock the new `LOCK`; the socket
//! name belongs to this process until it exits, whatever happens to the files.
//!
//! An open store must also never write quietly into files nobody will read:
//! [`check_place`] finds the directory deleted, made again or replaced, or
//! the current log unlinked. The log syncer checks after every sync (before
//! anyone hears a write is durable), and [`run_place_watch`] checks once
//! every [`PLACE_CHECK_INTERVAL`] when nothing is written.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use super::codec::crc32c;
use super::{EmbeddedStore, io_err};
use crate::store::{Result, StoreError};

const LOCK_FILE: &str = "LOCK";

/// What keeps a data directory to one store: an `flock` on its `LOCK` file,
/// and an abstract Unix socket named after the directory's path. The flock
/// goes with the directory when it is deleted, so a second coordinator could
/// make the path again and lock the new `LOCK`; the socket name belongs to
/// this process until it exits, whatever happens to the files.
pub(super) struct DirLock {
    _file: File,
    _name: std::os::unix::net::UnixListener,
}

/// The abstract socket name that stands for a data directory: its
/// canonical path, shortened to a checksum and its tail when too long for a
/// socket address (108 bytes).
pub(super) fn lock_name(canonical: &Path) -> Vec<u8> {
    let path = canonical.as_os_str().as_encoded_bytes();
    let mut name = b"drover-store:".to_vec();
    if path.len() <= 90 {
        name.extend_from_slice(path);
    } else {
        name.extend_from_slice(format!("{:08x}:", crc32c(path)).as_bytes());
        name.extend_from_slice(&path[path.len() - 80..]);
    }
    name
}

/// Takes the directory's lock, or explains who holds it.
pub(super) fn lock_dir(dir: &Path) -> Result<DirLock> {
    let file = lock_file(dir)?;
    let canonical = fs::canonicalize(dir).map_err(|e| io_err(dir, e))?;
    let name = lock_name(&canonical);
    let taken = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(&name)
            .and_then(|addr| std::os::unix::net::UnixListener::bind_addr(&addr))
    };
    match taken {
        Ok(listener) => Ok(DirLock { _file: file, _name: listener }),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(StoreError::Unavailable(format!(
            "data directory {} is in use by another drover-coordinator on this host (the directory may have \
             been deleted and made again under it); stop that coordinator first",
            dir.display()
        ))),
        Err(e) => Err(io_err(dir, e)),
    }
}

/// Takes the `flock` on the directory's `LOCK` file.
fn lock_file(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    match file.try_lock() {
        Ok(()) => {
            // The pid is only a hint for the error below; failing to write it
            // is harmless.
            let _ = file.set_len(0).and_then(|()| write!(file, "{}", std::process::id()));
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
            Err(StoreError::Unavailable(format!(
                "data directory {} is in use by another drover-coordinator{holder}",
                dir.display()
            )))
        }
        Err(fs::TryLockError::Error(e)) => Err(io_err(&path, e)),
    }
}

/// A directory's device and inode.
pub(super) fn identity(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Whether the store's files are where it believes: the data directory is
/// the one opened (not deleted, not made again, not replaced) and the log
/// being written is still linked into it. Otherwise writes would go into
/// files nobody will ever read again, and a restart would lose them.
pub(super) fn check_place(
    dir: &Path,
    dir_identity: (u64, u64),
    wal: &File,
    wal_path: &Path,
) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let advice = "stop this coordinator, put the data directory back (or restore it from a backup) and restart";
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("the data directory {} was deleted; {advice}", dir.display()));
        }
        Err(e) => return Err(format!("cannot check the data directory {}: {e}", dir.display())),
        Ok(meta) if identity(&meta) != dir_identity => {
            return Err(format!(
                "the data directory {} was replaced by another directory since the store opened it; {advice}",
                dir.display()
            ));
        }
        Ok(_) => {}
    }
    match wal.metadata() {
        Ok(meta) if meta.nlink() == 0 => {
            Err(format!("the log file {} was deleted while in use; {advice}", wal_path.display()))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot check the log file {}: {e}", wal_path.display())),
    }
}

/// How often an idle store checks that its directory and log are still in
/// place (a write checks at once, in the syncer).
pub(super) const PLACE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Stops the store, within [`PLACE_CHECK_INTERVAL`], when its directory or
/// current log file is deleted or replaced, even when nothing is written.
pub(super) async fn run_place_watch(this: Weak<EmbeddedStore>) {
    loop {
        tokio::time::sleep(PLACE_CHECK_INTERVAL).await;
        let Some(store) = this.upgrade() else { return };
        let (file, path) = {
            let Ok(st) = store.state.lock() else { return };
            if st.failed.is_some() {
                return;
            }
            (st.wal.file.clone(), st.wal.path.clone())
        };
        let (dir, dir_identity) = (store.dir.clone(), store.dir_identity);
        drop(store);
        let checked = tokio::task::spawn_blocking(move || check_place(&dir, dir_identity, &file, &path)).await;
        if let Ok(Err(reason)) = checked {
            let Some(store) = this.upgrade() else { return };
            let Ok(mut st) = store.state.lock() else { return };
            if st.failed.is_none() {
                store.fail(&mut st, reason);
            }
            return;
        }
    }
}
