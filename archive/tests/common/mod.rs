//! What the archive tests share: hostile archives written header by header
//! with the `tar` crate (its `Builder::append` writes a header as given, so
//! names with `..`, absolute paths and lying sizes go through), and the
//! check that nothing exists outside an unpack's destination.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

/// A place for one unpack: `root/parent/dest`, where `dest` does not exist
/// yet, and `root` and `parent` hold nothing else.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub parent: PathBuf,
    pub dest: PathBuf,
}

pub fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().expect("a temp dir");
    let parent = dir.path().join("parent");
    std::fs::create_dir(&parent).expect("the parent");
    let dest = parent.join("dest");
    Sandbox { dir, parent, dest }
}

impl Sandbox {
    /// Every path in the sandbox that is neither `parent`, nor `dest`, nor
    /// under `dest`: what an unpack must never leave behind.
    pub fn outside(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for item in walkdir::WalkDir::new(self.dir.path()).min_depth(1).follow_links(false) {
            let item = item.expect("a walk entry");
            let path = item.path();
            if path != self.parent && !path.starts_with(&self.dest) {
                found.push(path.to_path_buf());
            }
        }
        found
    }

    /// An absolute path inside the sandbox but outside `dest`, for hostile
    /// absolute names and link targets: if one were followed, `outside`
    /// would see it.
    pub fn escape(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().expect("a UTF-8 temp dir").to_string()
    }
}

/// One raw entry: the name and link name are written into the header's
/// bytes as they are (GNU long-name entries first when they are long), and
/// `data` follows whatever `size` the header declares.
pub struct Raw<'a> {
    pub name: &'a [u8],
    pub kind: EntryType,
    pub link: &'a [u8],
    pub mode: u32,
    pub size: u64,
    pub data: &'a [u8],
}

impl<'a> Raw<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        Raw { name: name.as_bytes(), kind: EntryType::Regular, link: b"", mode: 0o644, size: data.len() as u64, data }
    }

    pub fn dir(name: &'a str) -> Self {
        Raw { name: name.as_bytes(), kind: EntryType::Directory, link: b"", mode: 0o755, size: 0, data: b"" }
    }

    pub fn link(name: &'a str, kind: EntryType, target: &'a str) -> Self {
        Raw { name: name.as_bytes(), kind, link: target.as_bytes(), mode: 0o777, size: 0, data: b"" }
    }

    pub fn special(name: &'a str, kind: EntryType) -> Self {
        Raw { name: name.as_bytes(), kind, link: b"", mode: 0o644, size: 0, data: b"" }
    }
}

fn long(builder: &mut tar::Builder<Vec<u8>>, kind: EntryType, value: &[u8]) {
    let mut header = Header::new_gnu();
    header.as_gnu_mut().expect("a GNU header").name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(value.len() as u64 + 1);
    header.set_cksum();
    let mut data = value.to_vec();
    data.push(0);
    builder.append(&header, data.as_slice()).expect("a long-name entry");
}

/// Appends `raw` to `builder` without any of the checks `append_data` makes.
pub fn append(builder: &mut tar::Builder<Vec<u8>>, raw: &Raw) {
    let mut header = Header::new_gnu();
    let gnu = header.as_gnu_mut().expect("a GNU header");
    if raw.name.len() <= 100 {
        gnu.name[..raw.name.len()].copy_from_slice(raw.name);
    } else {
        gnu.name.copy_from_slice(&raw.name[..100]);
    }
    if raw.link.len() <= 100 {
        gnu.linkname[..raw.link.len()].copy_from_slice(raw.link);
    } else {
        gnu.linkname.copy_from_slice(&raw.link[..100]);
    }
    header.set_entry_type(raw.kind);
    header.set_mode(raw.mode);
    header.set_size(raw.size);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    if raw.name.len() > 100 {
        long(builder, EntryType::GNULongName, raw.name);
    }
    if raw.link.len() > 100 {
        long(builder, EntryType::GNULongLink, raw.link);
    }
    // `append` copies `data` and pads it to a block; a header declaring more
    // than `data` holds is the lie the unpacker must catch.
    builder.append(&header, raw.data).expect("an entry");
}

/// An archive of `entries`, ended as tar ends one.
pub fn archive(entries: &[Raw]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for raw in entries {
        append(&mut builder, raw);
    }
    builder.into_inner().expect("the archive")
}

pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
