//! Packing: select a workspace's files by glob and stream them into one tar,
//! returning the [`Manifest`].
//!
//! The walk comes first and holds only paths: it selects the entries,
//! counts them against `max_entries`, and fails on a pattern that matched
//! nothing before a byte is written. Then each file is streamed from disk
//! into the tar, hashed on the way; its size is checked against
//! `max_file_bytes` and `max_total_bytes` before its header is written, and a
//! file that grows meanwhile is cut at its header's size (a file that shrinks
//! is an error). On an error the caller discards what was written so far.
//!
//! Patterns are globs relative to the workspace (`*` stops at `/`, `**`
//! crosses it). A pattern that matches a directory takes everything under
//! it; a symlink is never followed, and is packed as a symlink only if its
//! target is relative and lands on something else that is packed (or inside
//! a packed directory). Sockets, devices and FIFOs are refused.

use std::collections::HashSet;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use sha2::Digest as _;

use crate::{EntryKind, Error, Limit, Limits, Manifest, ManifestEntry, Refusal, Sha256, components, link_lands_at};

/// What a pattern that matches nothing means (`if-no-files` in a pipeline).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IfNoFiles {
    /// The job fails, naming the pattern.
    #[default]
    Error,
    /// The pattern is skipped; an archive with no entries is still written.
    Ignore,
}

/// One entry the walk selected, in walk order (parents before children).
struct Selected {
    path: String,
    full: PathBuf,
    meta: Metadata,
}

/// Packs the files of `workspace` that `patterns` select into one tar
/// written to `out`, and returns what it holds. See the module docs.
pub fn pack<W: Write>(
    workspace: &Path,
    patterns: &[impl AsRef<str>],
    if_no_files: IfNoFiles,
    limits: &Limits,
    out: W,
) -> Result<Manifest, Error> {
    let globs = patterns.iter().map(|p| compile(p.as_ref())).collect::<Result<Vec<_>, _>>()?;
    let selected = select(workspace, &globs, if_no_files, limits)?;
    let packed: HashSet<&str> = selected.iter().map(|s| s.path.as_str()).collect();

    let mut builder = tar::Builder::new(HashingWriter { inner: out, hasher: sha2::Sha256::new(), bytes: 0 });
    let mut entries = Vec::with_capacity(selected.len());
    let mut total: u64 = 0;
    for entry in &selected {
        let kind = entry.meta.file_type();
        let mode = entry.meta.mode() & 0o777;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(u64::try_from(entry.meta.mtime()).unwrap_or(0));
        header.set_uid(0);
        header.set_gid(0);
        let written = if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(mode);
            header.set_size(0);
            builder.append_data(&mut header, &entry.path, io::empty()).map_err(|source| Error::Write { source })?;
            EntryKind::Dir
        } else if kind.is_symlink() {
            let target = symlink_target(entry, &packed)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder.append_link(&mut header, &entry.path, &target).map_err(|source| Error::Write { source })?;
            EntryKind::Symlink { target }
        } else {
            let (size, sha256) = append_file(&mut builder, &mut header, entry, mode, limits, &mut total)?;
            EntryKind::File { size, sha256 }
        };
        entries.push(ManifestEntry {
            path: entry.path.clone(),
            mode: if kind.is_symlink() { 0o777 } else { mode },
            kind: written,
        });
    }
    let mut sink = builder.into_inner().map_err(|source| Error::Write { source })?;
    sink.flush().map_err(|source| Error::Write { source })?;
    Ok(Manifest { entries, sha256: Sha256::of(sink.hasher), bytes: sink.bytes })
}

/// A pattern as a glob over workspace-relative paths; absolute patterns and
/// `..` are refused, since an artifact comes from inside the workspace.
fn compile(pattern: &str) -> Result<(String, GlobMatcher), Error> {
    let bad = |reason: String| Error::BadPattern { pattern: pattern.to_string(), reason };
    let parts = components(pattern).map_err(|why| bad(why.to_string()))?;
    let glob = GlobBuilder::new(&parts.join("/"))
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| bad(e.kind().to_string()))?;
    Ok((pattern.to_string(), glob.compile_matcher()))
}

/// Walks the workspace (sorted, symlinks not followed) and keeps what a
/// pattern matches, with everything under a matched directory.
fn select(
    workspace: &Path,
    globs: &[(String, GlobMatcher)],
    if_no_files: IfNoFiles,
    limits: &Limits,
) -> Result<Vec<Selected>, Error> {
    let mut hits = vec![false; globs.len()];
    let mut selected = Vec::new();
    // Walk order is depth first, so a taken directory's descendants follow
    // it directly: one prefix says whether we are inside one.
    let mut taken_dir: Option<String> = None;
    for item in walkdir::WalkDir::new(workspace).min_depth(1).follow_links(false).sort_by_file_name() {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(workspace).to_path_buf();
            Error::Workspace { path, source: e.into() }
        })?;
        let relative = item.path().strip_prefix(workspace).unwrap_or(item.path());
        let inside_taken = taken_dir.as_ref().is_some_and(|dir| relative.starts_with(dir));
        if !inside_taken {
            taken_dir = None;
        }
        let mut take = inside_taken;
        for ((_, glob), hit) in globs.iter().zip(&mut hits) {
            if glob.is_match(relative) {
                *hit = true;
                take = true;
            }
        }
        if !take {
            continue;
        }
        let Some(path) = relative.to_str() else {
            let entry = relative.to_string_lossy().into_owned();
            return Err(Error::Refused { entry, reason: Refusal::NotUtf8 });
        };
        let path = path.to_string();
        let meta =
            item.metadata().map_err(|e| Error::Workspace { path: item.path().to_path_buf(), source: e.into() })?;
        let kind = meta.file_type();
        let refusal = if kind.is_block_device() || kind.is_char_device() {
            Some(Refusal::Device)
        } else if kind.is_fifo() {
            Some(Refusal::Fifo)
        } else if kind.is_socket() {
            Some(Refusal::Unsupported { what: "a socket".to_string() })
        } else {
            None
        };
        if let Some(reason) = refusal {
            return Err(Error::Refused { entry: path, reason });
        }
        if selected.len() as u64 >= limits.max_entries {
            return Err(Error::LimitExceeded { entry: path, limit: Limit::MaxEntries, value: limits.max_entries });
        }
        if kind.is_dir() && !inside_taken {
            taken_dir = Some(path.clone());
        }
        selected.push(Selected { path, full: item.path().to_path_buf(), meta });
    }
    if if_no_files == IfNoFiles::Error
        && let Some(((pattern, _), _)) = globs.iter().zip(&hits).find(|(_, hit)| !**hit)
    {
        return Err(Error::NoMatch { pattern: pattern.clone() });
    }
    Ok(selected)
}

/// A symlink's target, if it is relative and lands on a packed entry or
/// inside a packed directory, so that the archive carries what it names.
fn symlink_target(entry: &Selected, packed: &HashSet<&str>) -> Result<String, Error> {
    let target = fs::read_link(&entry.full).map_err(|source| Error::Workspace { path: entry.full.clone(), source })?;
    let refuse = |target: String| Error::Refused { entry: entry.path.clone(), reason: Refusal::LinkOutside { target } };
    let Some(target) = target.to_str() else {
        return Err(refuse(target.to_string_lossy().into_owned()));
    };
    let link: Vec<&str> = entry.path.split('/').collect();
    let Some(landed) = link_lands_at(&link, target) else {
        return Err(refuse(target.to_string()));
    };
    let inside_packed = (1..=landed.len()).any(|n| packed.contains(landed[..n].join("/").as_str()));
    if !inside_packed {
        return Err(refuse(target.to_string()));
    }
    Ok(target.to_string())
}

/// Streams one regular file into the tar, within the limits, and returns
/// its size and digest.
fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &mut tar::Header,
    entry: &Selected,
    mode: u32,
    limits: &Limits,
    total: &mut u64,
) -> Result<(u64, Sha256), Error> {
    let workspace_error = |source| Error::Workspace { path: entry.full.clone(), source };
    // O_NOFOLLOW: a file swapped for a symlink since the walk is refused
    // rather than followed out of the workspace.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&entry.full)
        .map_err(workspace_error)?;
    let meta = file.metadata().map_err(workspace_error)?;
    if !meta.is_file() {
        return Err(Error::Changed { entry: entry.path.clone(), reason: "it is no longer a regular file" });
    }
    let size = meta.len();
    let exceeded = |limit, value| Error::LimitExceeded { entry: entry.path.clone(), limit, value };
    if size > limits.max_file_bytes {
        return Err(exceeded(Limit::MaxFileBytes, limits.max_file_bytes));
    }
    *total = total.saturating_add(size);
    if *total > limits.max_total_bytes {
        return Err(exceeded(Limit::MaxTotalBytes, limits.max_total_bytes));
    }
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode);
    header.set_size(size);
    let mut reader = ExactReader { inner: file.take(size), left: size, hasher: sha2::Sha256::new(), failed: None };
    match builder.append_data(header, &entry.path, &mut reader) {
        Ok(()) => Ok((size, Sha256::of(reader.hasher))),
        Err(_) if reader.failed == Some(ReadFailure::Short) => {
            Err(Error::Changed { entry: entry.path.clone(), reason: "it shrank" })
        }
        Err(source) if reader.failed == Some(ReadFailure::Io) => Err(workspace_error(source)),
        Err(source) => Err(Error::Write { source }),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadFailure {
    Io,
    Short,
}

/// Reads exactly `left` bytes of a file, hashing them; ends early with an
/// error (recorded, so it can be told from a write error) if the file does.
struct ExactReader {
    inner: io::Take<File>,
    left: u64,
    hasher: sha2::Sha256,
    failed: Option<ReadFailure>,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.failed = Some(ReadFailure::Io);
                return Err(e);
            }
        };
        if n == 0 && self.left > 0 {
            self.failed = Some(ReadFailure::Short);
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was packed"));
        }
        self.left -= n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The archive's sink, hashing and counting what passes.
struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
