//! Unpacking: stream a tar into a destination that it can never escape, all
//! or nothing. The crate docs give the threat model and the rules.
//!
//! How: the archive goes into a fresh directory that `tempfile` creates
//! (mode 0700) in the destination's parent, so the only things in that tree
//! are what this function made, and it keeps a map of them. A path is
//! created only if every parent is a directory in that map (never a symlink
//! or a file), and the last component is created exclusively (`O_EXCL`,
//! `O_NOFOLLOW`, `mkdir`, `symlink`), so nothing existing is followed or
//! overwritten. Directory modes are applied last, so a read-only directory
//! does not stop its own children. When the stream is read to its end and
//! its digest matches, the tree is renamed onto the destination; on any
//! error it is removed.
//!
//! Entries are read with the `tar` crate in raw mode: its own handling of
//! GNU long names and pax headers reads them into memory whatever their
//! declared size, so this module reads them itself, capped.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use sha2::Digest as _;

use crate::{
    EntryKind, Error, Limit, Limits, MAX_PATH, Manifest, ManifestEntry, Refusal, Sha256, components, link_lands_at,
};

/// How to unpack.
#[derive(Clone, Debug, Default)]
pub struct UnpackOptions {
    pub limits: Limits,
    /// When set, an archive whose sha256 differs fails, and the destination
    /// is left as it was.
    pub expected_sha256: Option<Sha256>,
}

/// The most bytes of a pax extended header read; far above what the keys
/// this module reads (`path`, `linkpath`) can need.
const MAX_PAX_BYTES: u64 = 64 * 1024;
/// The most bytes read after the archive's end-of-archive block (writers
/// pad to a record, 10 KiB for GNU tar), so an endless tail is not hashed
/// forever.
const MAX_TRAILING_BYTES: u64 = 1 << 20;

/// What the unpack made at a path, to refuse writing through it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Made {
    /// With the mode to apply at the end; implicit parents get 0o755.
    Dir(u32),
    File,
    Link,
}

/// Unpacks the tar read from `archive` into `dest`, which must not exist
/// or be an empty directory, and returns what it held. See the crate docs
/// for what is refused; on any error `dest` is left as it was.
pub fn unpack<R: Read>(archive: R, dest: &Path, options: &UnpackOptions) -> Result<Manifest, Error> {
    let dest_mode = match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() && is_empty_dir(dest)? => meta.permissions().mode() & 0o777,
        Ok(_) => return Err(Error::DestinationExists { path: dest.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0o755,
        Err(source) => return Err(Error::Workspace { path: dest.to_path_buf(), source }),
    };
    let parent = match dest.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Err(Error::NoParent { path: dest.to_path_buf() }),
    };
    if dest.file_name().is_none() {
        return Err(Error::NoParent { path: dest.to_path_buf() });
    }
    let staging = tempfile::Builder::new()
        .prefix(".drover-unpack-")
        .tempdir_in(parent)
        .map_err(|source| Error::Workspace { path: parent.to_path_buf(), source })?;

    let mut stream = HashingReader { inner: archive, hasher: sha2::Sha256::new(), bytes: 0 };
    let mut unpacker = Unpacker { root: staging.path(), limits: options.limits, made: HashMap::new(), total: 0 };
    let entries = unpacker.read_all(&mut stream)?;
    let made = std::mem::take(&mut unpacker.made);

    let sha256 = Sha256::of(stream.hasher);
    if let Some(expected) = options.expected_sha256
        && expected != sha256
    {
        return Err(Error::DigestMismatch { expected, actual: sha256 });
    }

    // Deepest first, so a directory made read-only does not stop its
    // children's modes from being set.
    let mut dirs: Vec<(&String, u32)> = made
        .iter()
        .filter_map(|(path, made)| if let Made::Dir(mode) = made { Some((path, *mode)) } else { None })
        .collect();
    dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.matches('/').count()));
    for (path, mode) in dirs {
        let full = staging.path().join(path);
        fs::set_permissions(&full, fs::Permissions::from_mode(mode)).map_err(|source| Error::Unpack {
            entry: path.clone(),
            path: full,
            source,
        })?;
    }
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(dest_mode))
        .map_err(|source| Error::Workspace { path: staging.path().to_path_buf(), source })?;

    let staged = staging.keep();
    if let Err(source) = fs::rename(&staged, dest) {
        // Best effort: the tree is ours, and a failure here leaves only a
        // dot-directory beside the destination.
        let _ = make_removable(&staged).and_then(|()| fs::remove_dir_all(&staged));
        return Err(match source.raw_os_error() {
            Some(libc::ENOTEMPTY | libc::EEXIST | libc::ENOTDIR) => {
                Error::DestinationExists { path: dest.to_path_buf() }
            }
            _ => Error::Workspace { path: dest.to_path_buf(), source },
        });
    }
    Ok(Manifest { entries, sha256, bytes: stream.bytes })
}

fn is_empty_dir(path: &Path) -> Result<bool, Error> {
    let mut entries = fs::read_dir(path).map_err(|source| Error::Workspace { path: path.to_path_buf(), source })?;
    Ok(entries.next().is_none())
}

/// Gives the owner rwx on every directory under `root`, so that a staged
/// tree whose modes were already applied can be removed.
fn make_removable(root: &Path) -> io::Result<()> {
    for item in walkdir::WalkDir::new(root).follow_links(false) {
        let item = item?;
        if item.file_type().is_dir() {
            fs::set_permissions(item.path(), fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// What one entry's header says, past its name.
struct Header {
    kind: tar::EntryType,
    mode: u32,
    mtime: u64,
    declared: u64,
    link: Option<String>,
}

/// The extension headers that describe the next real entry.
#[derive(Default)]
struct Pending {
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    pax: bool,
}

struct Unpacker<'a> {
    root: &'a Path,
    limits: Limits,
    made: HashMap<String, Made>,
    total: u64,
}

impl Unpacker<'_> {
    /// Reads every entry, then the stream's tail, so the digest covers all.
    fn read_all<R: Read>(&mut self, stream: &mut R) -> Result<Vec<ManifestEntry>, Error> {
        let mut archive = tar::Archive::new(&mut *stream);
        let mut manifest = Vec::new();
        let mut last: Option<String> = None;
        let read_error = |at: &Option<String>, source| Error::Read { at: at.clone(), source };
        let mut pending = Pending::default();
        let mut count: u64 = 0;
        let entries = archive.entries().map_err(|e| read_error(&last, e))?.raw(true);
        for entry in entries {
            let mut entry = entry.map_err(|e| read_error(&last, e))?;
            let kind = entry.header().entry_type();
            // Extension headers: at most one of each before a real entry, so
            // they cannot be a bomb of their own; global pax headers count
            // as entries.
            let extension = match kind {
                tar::EntryType::GNULongName if pending.name.is_none() => {
                    pending.name = Some(read_capped(&mut entry, MAX_PATH as u64 + 1, "a GNU long name", &last)?);
                    true
                }
                tar::EntryType::GNULongLink if pending.link.is_none() => {
                    pending.link = Some(read_capped(&mut entry, MAX_PATH as u64 + 1, "a GNU long link", &last)?);
                    true
                }
                tar::EntryType::XHeader if !pending.pax => {
                    pending.pax = true;
                    let data = read_capped(&mut entry, MAX_PAX_BYTES, "a pax header", &last)?;
                    read_pax(&data, &mut pending, &last)?;
                    true
                }
                tar::EntryType::GNULongName | tar::EntryType::GNULongLink | tar::EntryType::XHeader => {
                    return Err(read_error(&last, io::Error::other("two extension headers of one kind for one entry")));
                }
                _ => false,
            };
            if extension {
                continue;
            }
            let name_bytes = pending.name.take().unwrap_or_else(|| entry.path_bytes().into_owned());
            let link_bytes = pending.link.take().or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
            pending.pax = false;
            let name = String::from_utf8_lossy(trim_nul(&name_bytes)).into_owned();
            last = Some(name.clone());
            count += 1;
            if count > self.limits.max_entries {
                return Err(Error::LimitExceeded {
                    entry: name,
                    limit: Limit::MaxEntries,
                    value: self.limits.max_entries,
                });
            }
            if kind == tar::EntryType::XGlobalHeader {
                read_capped(&mut entry, MAX_PAX_BYTES, "a global pax header", &last)?;
                continue;
            }
            if std::str::from_utf8(trim_nul(&name_bytes)).is_err() {
                return Err(Error::Refused { entry: name, reason: Refusal::NotUtf8 });
            }
            let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
            let mtime = entry.header().mtime().unwrap_or(0);
            let link = link_bytes.map(|l| String::from_utf8_lossy(trim_nul(&l)).into_owned());
            let header = Header { kind, mode, mtime, declared: entry.size(), link };
            if let Some(made) = self.one(&mut entry, &name, header)? {
                manifest.push(made);
            }
        }
        if pending.name.is_some() || pending.link.is_some() || pending.pax {
            return Err(read_error(&last, io::Error::other("an extension header with no entry after it")));
        }
        let tail = io::copy(&mut Read::by_ref(stream).take(MAX_TRAILING_BYTES + 1), &mut io::sink())
            .map_err(|e| read_error(&last, e))?;
        if tail > MAX_TRAILING_BYTES {
            return Err(read_error(&last, io::Error::other("more than 1 MiB of data after the end of the archive")));
        }
        Ok(manifest)
    }

    /// Creates one entry (or refuses it). `None` for the archive's root
    /// directory (`./`), which has nothing to create.
    fn one<R: Read>(&mut self, entry: &mut R, name: &str, header: Header) -> Result<Option<ManifestEntry>, Error> {
        let Header { kind, mode, mtime, declared, link } = header;
        let refuse = |reason| Err(Error::Refused { entry: name.to_string(), reason });
        match kind {
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Directory
            | tar::EntryType::Symlink => {}
            tar::EntryType::Link => return refuse(Refusal::HardLink),
            tar::EntryType::Char | tar::EntryType::Block => return refuse(Refusal::Device),
            tar::EntryType::Fifo => return refuse(Refusal::Fifo),
            tar::EntryType::GNUSparse => return refuse(Refusal::Sparse),
            other => return refuse(Refusal::Unsupported { what: format!("entry type {:?}", other.as_byte() as char) }),
        }
        let parts = match components(name) {
            Ok(parts) => parts,
            Err(Refusal::Empty) if kind == tar::EntryType::Directory => return Ok(None),
            Err(reason) => return refuse(reason),
        };
        self.make_parents(name, &parts)?;
        let key = parts.join("/");
        let full = self.root.join(&key);
        let io_error = |source| Error::Unpack { entry: name.to_string(), path: full.clone(), source };
        let already = self.made.get(&key).copied();
        let made = match kind {
            tar::EntryType::Directory => {
                match already {
                    Some(Made::Dir(_)) => {}
                    Some(_) => return refuse(Refusal::Duplicate),
                    None => fs::create_dir(&full).map_err(io_error)?,
                }
                self.made.insert(key.clone(), Made::Dir(mode));
                ManifestEntry { path: key, mode, kind: EntryKind::Dir }
            }
            tar::EntryType::Symlink => {
                if already.is_some() {
                    return refuse(Refusal::Duplicate);
                }
                let target = link.unwrap_or_default();
                if link_lands_at(&parts, &target).is_none() {
                    return refuse(Refusal::LinkOutside { target });
                }
                std::os::unix::fs::symlink(&target, &full).map_err(io_error)?;
                self.made.insert(key.clone(), Made::Link);
                ManifestEntry { path: key, mode: 0o777, kind: EntryKind::Symlink { target } }
            }
            _ => {
                if already.is_some() {
                    return refuse(Refusal::Duplicate);
                }
                let (size, sha256) = self.write_file(entry, name, &full, declared, mode, mtime)?;
                self.made.insert(key.clone(), Made::File);
                ManifestEntry { path: key, mode, kind: EntryKind::File { size, sha256 } }
            }
        };
        Ok(Some(made))
    }

    /// Creates the missing parents of `parts`, refusing to go through
    /// anything that is not a directory this unpack made.
    fn make_parents(&mut self, name: &str, parts: &[&str]) -> Result<(), Error> {
        for depth in 1..parts.len() {
            let parent = parts[..depth].join("/");
            match self.made.get(&parent) {
                Some(Made::Dir(_)) => {}
                Some(Made::File | Made::Link) => {
                    return Err(Error::Refused { entry: name.to_string(), reason: Refusal::ThroughLink { parent } });
                }
                None => {
                    let full = self.root.join(&parent);
                    fs::create_dir(&full).map_err(|source| Error::Unpack {
                        entry: name.to_string(),
                        path: full,
                        source,
                    })?;
                    self.made.insert(parent, Made::Dir(0o755));
                }
            }
        }
        Ok(())
    }

    /// Streams one file's data to a new file, counting bytes against the
    /// limits as they are written (the header's declared size is checked
    /// first, but it is not trusted).
    fn write_file<R: Read>(
        &mut self,
        entry: &mut R,
        name: &str,
        full: &Path,
        declared: u64,
        mode: u32,
        mtime: u64,
    ) -> Result<(u64, Sha256), Error> {
        let io_error = |source| Error::Unpack { entry: name.to_string(), path: full.to_path_buf(), source };
        if declared > self.limits.max_file_bytes {
            return Err(Error::LimitExceeded {
                entry: name.to_string(),
                limit: Limit::MaxFileBytes,
                value: self.limits.max_file_bytes,
            });
        }
        if self.total.saturating_add(declared) > self.limits.max_total_bytes {
            return Err(Error::LimitExceeded {
                entry: name.to_string(),
                limit: Limit::MaxTotalBytes,
                value: self.limits.max_total_bytes,
            });
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(full)
            .map_err(io_error)?;
        let mut hasher = sha2::Sha256::new();
        let mut size: u64 = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(Error::Read { at: Some(name.to_string()), source }),
            };
            size += n as u64;
            self.total += n as u64;
            self.check_size(name, size)?;
            file.write_all(&buf[..n]).map_err(io_error)?;
            hasher.update(&buf[..n]);
        }
        if size != declared {
            let source = io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside this entry");
            return Err(Error::Read { at: Some(name.to_string()), source });
        }
        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_error)?;
        if let Some(time) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(mtime)) {
            file.set_modified(time).map_err(io_error)?;
        }
        Ok((size, Sha256::of(hasher)))
    }

    fn check_size(&self, name: &str, size: u64) -> Result<(), Error> {
        let exceeded = |limit, value| Err(Error::LimitExceeded { entry: name.to_string(), limit, value });
        if size > self.limits.max_file_bytes {
            return exceeded(Limit::MaxFileBytes, self.limits.max_file_bytes);
        }
        if self.total > self.limits.max_total_bytes {
            return exceeded(Limit::MaxTotalBytes, self.limits.max_total_bytes);
        }
        Ok(())
    }
}

/// Reads an extension header's data, refusing one that declares more than
/// `cap` bytes before reading any of it.
fn read_capped<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    cap: u64,
    what: &str,
    at: &Option<String>,
) -> Result<Vec<u8>, Error> {
    if entry.size() > cap {
        let source = io::Error::other(format!("{what} of {} bytes, over the cap of {cap}", entry.size()));
        return Err(Error::Read { at: at.clone(), source });
    }
    let mut data = Vec::new();
    entry.take(cap).read_to_end(&mut data).map_err(|source| Error::Read { at: at.clone(), source })?;
    Ok(data)
}

/// Takes `path` and `linkpath` from a pax header; refuses `size` (the
/// header's own size would then disagree with how far the reader skips) and
/// ignores the rest (times, owners, attributes).
fn read_pax(data: &[u8], pending: &mut Pending, at: &Option<String>) -> Result<(), Error> {
    let bad = |what: &str| Error::Read { at: at.clone(), source: io::Error::other(format!("a pax header {what}")) };
    let mut rest = data;
    while !rest.is_empty() {
        // Each record is "<len> <key>=<value>\n", len counting the whole record.
        let space = rest.iter().position(|b| *b == b' ').ok_or_else(|| bad("record has no length"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > space + 1 && *l <= rest.len())
            .ok_or_else(|| bad("record has a bad length"))?;
        let record = &rest[space + 1..len];
        rest = &rest[len..];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        let eq = record.iter().position(|b| *b == b'=').ok_or_else(|| bad("record has no `=`"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pending.name = Some(value.to_vec()),
            b"linkpath" => pending.link = Some(value.to_vec()),
            b"size" | b"GNU.sparse.map" | b"GNU.sparse.size" | b"GNU.sparse.major" => {
                return Err(bad(&format!("key {:?} is not supported", String::from_utf8_lossy(key))));
            }
            _ => {}
        }
    }
    Ok(())
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// The archive stream, hashed and counted as the tar reader pulls it.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
