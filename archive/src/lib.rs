//! Job artifacts as one tar archive: [`pack`] selects a workspace's files by
//! glob and streams them into a tar with a [`Manifest`]; [`unpack`] streams a
//! tar into a directory and never writes outside it. This crate is the only
//! place in Drover that reads or writes artifact archives.
//!
//! # Threat model
//!
//! An archive is untrusted input: any job can upload one, and a later job's
//! agent unpacks it. The classic attack is *zip-slip*: an entry named
//! `../../home/agent/.ssh/authorized_keys`, `/etc/cron.d/x`, or a symlink
//! `lib -> /` followed by a file `lib/etc/passwd`, writes outside the
//! destination. GitHub's `actions/artifact` had exactly this bug
//! (CVE-2024-42471), and it gave code execution on the runner. The other
//! attacks are bombs (an entry that declares or streams terabytes, or
//! millions of empty entries) and special files (a device node or FIFO that
//! a later step opens).
//!
//! What [`unpack`] guarantees, whatever the bytes:
//!
//! - **Nothing is written outside the destination.** Entry paths are taken
//!   apart component by component: `..` anywhere and absolute paths are
//!   refused, and no entry is ever created *through* a symlink (a path whose
//!   parent is a symlink is refused), so a symlink cannot redirect a write.
//! - **Links.** Hard links are refused: Drover's packer never writes them.
//!   A symlink is kept only when its target is relative, its `..`
//!   components all come first (`../../lib/x`, never `a/../..`), and those
//!   leading `..` do not climb above the archive's root. Because `..` never
//!   follows another component, and every symlink obeys the same rule, any
//!   chain of such links resolves inside the destination (the proof is at
//!   `link_lands_at`). Everything else is refused with the entry's name.
//! - **Only regular files, directories and such symlinks.** Devices, FIFOs,
//!   sparse files and unknown entry types are refused.
//! - **Modes** are masked to `0o777`: no setuid, setgid or sticky bit.
//! - **Bombs stop at the [`Limits`]**: bytes are counted as they are written
//!   (a header's declared size is checked first too), entries as they are
//!   read, and GNU long names and pax headers are capped before they are
//!   read into memory.
//! - **All or nothing.** The archive is unpacked into a fresh private
//!   directory beside the destination (in the destination's parent) and
//!   renamed into place only when every entry succeeded and the archive's
//!   sha256 matched the one expected. On any error that directory is
//!   removed, so the destination either holds the whole archive or does not
//!   exist. Hence the destination must not exist yet, or be an empty
//!   directory; merging into a populated workspace is the caller's business.
//!
//! [`pack`] is the friendly side: it refuses what [`unpack`] would refuse
//! (symlinks out of the selected files, special files), so a job learns at
//! upload that its artifact is unusable, not a later job at download.

mod pack;
mod unpack;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use pack::{IfNoFiles, pack};
pub use unpack::{UnpackOptions, unpack};

/// The caps on one archive, enforced while packing and while unpacking (not
/// after): the limit is checked before a byte past it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes one file may hold. Default 1 GiB.
    pub max_file_bytes: u64,
    /// The most bytes all files together may hold. Default 4 GiB.
    pub max_total_bytes: u64,
    /// The most entries (files, directories, symlinks) an archive may hold.
    /// Default 100,000.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_file_bytes: 1 << 30, max_total_bytes: 4 << 30, max_entries: 100_000 }
    }
}

/// Which of the [`Limits`] was hit, named as the field is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    MaxFileBytes,
    MaxTotalBytes,
    MaxEntries,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::MaxFileBytes => "max_file_bytes",
            Limit::MaxTotalBytes => "max_total_bytes",
            Limit::MaxEntries => "max_entries",
        })
    }
}

/// A sha256 digest; shown and parsed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    fn of(hasher: sha2::Sha256) -> Self {
        use sha2::Digest as _;
        Sha256(hasher.finalize().into())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

impl FromStr for Sha256 {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = || Error::BadDigest { text: text.to_string() };
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Sha256(out))
    }
}

/// What one archive holds, as [`pack`] wrote it or [`unpack`] read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// In archive order.
    pub entries: Vec<ManifestEntry>,
    /// The digest of the whole archive stream.
    pub sha256: Sha256,
    /// The length of the whole archive stream.
    pub bytes: u64,
}

/// One entry of an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Relative to the workspace (or destination), `/`-separated, no `.` or
    /// `..` components, never empty.
    pub path: String,
    /// Permission bits, masked to `0o777`.
    pub mode: u32,
    pub kind: EntryKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
        sha256: Sha256,
    },
    Dir,
    /// A relative target that stays inside the archive (see the crate docs).
    Symlink {
        target: String,
    },
}

/// Why an entry (or a workspace file) was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Absolute,
    ParentComponent,
    Empty,
    NotUtf8,
    /// The path is longer than 4096 bytes (`PATH_MAX`).
    TooLong,
    /// A symlink whose target is absolute, or climbs out of the archive, or
    /// (when packing) names nothing that is packed.
    LinkOutside {
        target: String,
    },
    HardLink,
    Device,
    Fifo,
    Sparse,
    /// A tar entry type this crate does not write, or a pax key it refuses.
    Unsupported {
        what: String,
    },
    /// A parent component is a symlink or a file, so creating the entry
    /// would write through it.
    ThroughLink {
        parent: String,
    },
    /// The path was already created by an earlier entry.
    Duplicate,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Absolute => f.write_str("absolute paths are refused"),
            Refusal::ParentComponent => f.write_str("`..` components are refused"),
            Refusal::Empty => f.write_str("the path is empty"),
            Refusal::NotUtf8 => f.write_str("the path is not UTF-8"),
            Refusal::TooLong => f.write_str("the path is longer than 4096 bytes"),
            Refusal::LinkOutside { target } => write!(
                f,
                "symlink target {target:?} is not a relative path inside the archive \
                 (leading `..` only, never above the root, and naming something packed)"
            ),
            Refusal::HardLink => f.write_str("hard links are refused"),
            Refusal::Device => f.write_str("device files are refused"),
            Refusal::Fifo => f.write_str("FIFOs are refused"),
            Refusal::Sparse => f.write_str("sparse files are refused"),
            Refusal::Unsupported { what } => write!(f, "{what} is not supported"),
            Refusal::ThroughLink { parent } => {
                write!(f, "its parent {parent:?} is a symlink or a file, and nothing is written through one")
            }
            Refusal::Duplicate => f.write_str("an earlier entry has the same path"),
        }
    }
}

/// Everything [`pack`] and [`unpack`] can fail with; each names the pattern,
/// file, entry or limit at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("artifact pattern {pattern:?} is not valid: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("artifact pattern {pattern:?} matched no files")]
    NoMatch { pattern: String },
    #[error("{entry:?}: the {limit} limit of {value} is exceeded")]
    LimitExceeded { entry: String, limit: Limit, value: u64 },
    #[error("{entry:?}: {reason}")]
    Refused { entry: String, reason: Refusal },
    #[error("{entry:?} changed while it was packed ({reason})")]
    Changed { entry: String, reason: &'static str },
    #[error("reading {path}: {source}")]
    Workspace { path: PathBuf, source: std::io::Error },
    #[error("writing the archive: {source}")]
    Write { source: std::io::Error },
    #[error("reading the archive{}: {source}", at.as_ref().map(|e| format!(" after entry {e:?}")).unwrap_or_default())]
    Read { at: Option<String>, source: std::io::Error },
    #[error("{entry:?}: writing {path}: {source}")]
    Unpack { entry: String, path: PathBuf, source: std::io::Error },
    #[error("the archive's sha256 is {actual}, not the expected {expected}; nothing was unpacked")]
    DigestMismatch { expected: Sha256, actual: Sha256 },
    #[error("the destination {path} already exists and is not an empty directory")]
    DestinationExists { path: PathBuf },
    #[error("the destination {path} has no parent directory to stage the unpack in")]
    NoParent { path: PathBuf },
    #[error("{text:?} is not a sha256 (64 hex digits)")]
    BadDigest { text: String },
}

/// The longest path or link target accepted, as Linux's `PATH_MAX`.
pub(crate) const MAX_PATH: usize = 4096;

/// Splits a relative `/`-separated path into its normal components, dropping
/// empty and `.` ones; refuses absolute paths, `..` and the empty path.
pub(crate) fn components(path: &str) -> Result<Vec<&str>, Refusal> {
    if path.len() > MAX_PATH {
        return Err(Refusal::TooLong);
    }
    if path.starts_with('/') {
        return Err(Refusal::Absolute);
    }
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Refusal::ParentComponent),
            _ => out.push(part),
        }
    }
    if out.is_empty() { Err(Refusal::Empty) } else { Ok(out) }
}

/// Where a symlink at `link` (normal components from the archive root)
/// pointing at `target` lands, as components from the root, if the target
/// obeys the rule: relative, all `..` first, not climbing above the root.
///
/// Why that rule suffices: `link`'s parent holds no symlink (nothing is
/// created through one), so its leading `..` climb real directories and stay
/// inside. The components after them only descend, through directories or
/// through symlinks that obey the same rule and so, by induction, land
/// inside too. A `..` after another component, the case a purely lexical
/// check gets wrong (`l -> ..` then `x -> l/../..` climbs two levels above
/// `x`, not zero), never gets this far.
pub(crate) fn link_lands_at(link: &[&str], target: &str) -> Option<Vec<String>> {
    if target.is_empty() || target.len() > MAX_PATH || target.starts_with('/') || target.contains('\0') {
        return None;
    }
    let mut ups = 0;
    let mut down = Vec::new();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if down.is_empty() => ups += 1,
            ".." => return None,
            _ => down.push(part),
        }
    }
    let parent = &link[..link.len().checked_sub(1)?];
    let kept = parent.len().checked_sub(ups)?;
    Some(parent[..kept].iter().chain(&down).map(|c| c.to_string()).collect())
}
