//! Pack then unpack a real workspace: bytes, modes, symlinks and digests
//! come back; a pattern that matches nothing, a symlink out of the
//! workspace and each limit fail while packing, naming what is at fault;
//! a wrong expected digest or a populated destination leave nothing.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::{exists, sandbox};
use drover_archive::{EntryKind, Error, IfNoFiles, Limit, Limits, Refusal, Sha256, UnpackOptions, pack, unpack};
use sha2::Digest as _;

/// A 300 kB file of bytes that do not compress.
fn binary() -> Vec<u8> {
    let mut state: u64 = 0x1234_5678_9abc_def1;
    (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn write(root: &Path, path: &str, data: &[u8], mode: u32) {
    let full = root.join(path);
    fs::create_dir_all(full.parent().expect("a parent")).expect("the parents");
    fs::write(&full, data).expect("the file");
    fs::set_permissions(&full, fs::Permissions::from_mode(mode)).expect("the mode");
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("metadata").permissions().mode() & 0o7777
}

/// A build's workspace: what the patterns select, and what they must not.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a workspace");
    let root = dir.path();
    write(root, "dist/app.tar.gz", &binary(), 0o644);
    write(root, "dist/app.zip", b"not selected", 0o644);
    write(root, "target/release/app", b"\x7fELF pretend", 0o755);
    write(root, "reports/junit.xml", b"<testsuites/>", 0o640);
    write(root, "reports/sub/deep.txt", b"deep", 0o600);
    let long = format!("reports/{}/{}.txt", "nested".repeat(20), "long-name".repeat(10));
    write(root, &long, b"a path past the 100 bytes of a tar header", 0o644);
    fs::create_dir_all(root.join("reports/empty")).expect("an empty dir");
    fs::set_permissions(root.join("reports/sub"), fs::Permissions::from_mode(0o750)).expect("a dir mode");
    symlink("junit.xml", root.join("reports/latest.xml")).expect("a symlink");
    write(root, "src/main.rs", b"fn main() {}", 0o644);
    dir
}

const PATTERNS: &[&str] = &["dist/*.tar.gz", "reports/", "target/release/app"];

#[test]
fn a_workspace_round_trips_with_bytes_modes_links_and_digests() {
    let workspace = workspace();
    let mut archive = Vec::new();
    let packed = pack(workspace.path(), PATTERNS, IfNoFiles::Error, &Limits::default(), &mut archive).expect("pack");
    assert_eq!(packed.bytes, archive.len() as u64);
    assert_eq!(packed.sha256, Sha256(sha2::Sha256::digest(&archive).into()));

    let paths: Vec<&str> = packed.entries.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"dist/app.tar.gz") && paths.contains(&"target/release/app"), "{paths:?}");
    assert!(paths.contains(&"reports/empty") && paths.contains(&"reports/sub/deep.txt"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("zip") || p.starts_with("src")), "{paths:?}");

    let sandbox = sandbox();
    let options = UnpackOptions { expected_sha256: Some(packed.sha256), ..Default::default() };
    let unpacked = unpack(archive.as_slice(), &sandbox.dest, &options).expect("unpack");
    assert_eq!(unpacked, packed, "what unpack read is what pack wrote");
    assert!(sandbox.outside().is_empty(), "{:?}", sandbox.outside());

    for entry in &packed.entries {
        let original = workspace.path().join(&entry.path);
        let copy = sandbox.dest.join(&entry.path);
        match &entry.kind {
            EntryKind::File { size, sha256 } => {
                let bytes = fs::read(&copy).expect("the unpacked file");
                assert_eq!(bytes, fs::read(&original).expect("the original"), "{}", entry.path);
                assert_eq!(*size, bytes.len() as u64);
                assert_eq!(*sha256, Sha256(sha2::Sha256::digest(&bytes).into()), "{}", entry.path);
                assert_eq!(mode(&copy), mode(&original), "{}", entry.path);
                assert_eq!(mode(&copy), entry.mode);
            }
            EntryKind::Dir => assert_eq!(mode(&copy), mode(&original), "{}", entry.path),
            EntryKind::Symlink { target } => {
                assert_eq!(fs::read_link(&copy).expect("the link").to_str(), Some(target.as_str()));
                assert_eq!(fs::read(&copy).expect("through the link"), b"<testsuites/>");
            }
        }
    }
    assert_eq!(mode(&sandbox.dest.join("target/release/app")), 0o755);
}

#[test]
fn an_existing_empty_destination_is_replaced_and_a_populated_one_refused() {
    let workspace = workspace();
    let mut archive = Vec::new();
    pack(workspace.path(), PATTERNS, IfNoFiles::Error, &Limits::default(), &mut archive).expect("pack");

    let sandbox = sandbox();
    fs::create_dir(&sandbox.dest).expect("an empty destination");
    unpack(archive.as_slice(), &sandbox.dest, &UnpackOptions::default()).expect("into an empty directory");

    let error = unpack(archive.as_slice(), &sandbox.dest, &UnpackOptions::default()).expect_err("populated");
    assert!(matches!(error, Error::DestinationExists { .. }), "{error:?}");
    assert!(sandbox.outside().is_empty(), "{:?}", sandbox.outside());
}

#[test]
fn a_wrong_digest_leaves_nothing() {
    let workspace = workspace();
    let mut archive = Vec::new();
    let packed = pack(workspace.path(), PATTERNS, IfNoFiles::Error, &Limits::default(), &mut archive).expect("pack");
    let mut wrong = packed.sha256;
    wrong.0[0] ^= 1;
    let sandbox = sandbox();
    let options = UnpackOptions { expected_sha256: Some(wrong), ..Default::default() };
    let error = unpack(archive.as_slice(), &sandbox.dest, &options).expect_err("a wrong digest");
    assert!(matches!(error, Error::DigestMismatch { actual, .. } if actual == packed.sha256), "{error:?}");
    assert!(error.to_string().contains(&wrong.to_string()), "{error}");
    assert!(!exists(&sandbox.dest));
    assert!(sandbox.outside().is_empty(), "{:?}", sandbox.outside());
    assert_eq!(packed.sha256.to_string().parse::<Sha256>().expect("hex"), packed.sha256);
}

#[test]
fn a_pattern_that_matches_nothing_is_named_unless_ignored() {
    let workspace = workspace();
    let patterns = ["dist/*.tar.gz", "coverage/**/*.xml"];
    let error =
        pack(workspace.path(), &patterns, IfNoFiles::Error, &Limits::default(), Vec::new()).expect_err("no match");
    assert!(matches!(&error, Error::NoMatch { pattern } if pattern == "coverage/**/*.xml"), "{error:?}");
    assert!(error.to_string().contains("coverage/**/*.xml"), "{error}");

    let manifest =
        pack(workspace.path(), &patterns, IfNoFiles::Ignore, &Limits::default(), Vec::new()).expect("ignored");
    assert_eq!(manifest.entries.len(), 1);

    let error =
        pack(workspace.path(), &["../outside"], IfNoFiles::Error, &Limits::default(), Vec::new()).expect_err("..");
    assert!(matches!(&error, Error::BadPattern { pattern, .. } if pattern == "../outside"), "{error:?}");
}

#[test]
fn a_symlink_out_of_the_selection_is_refused_when_packing() {
    let workspace = workspace();
    symlink("/etc/passwd", workspace.path().join("reports/passwd")).expect("a symlink");
    let error =
        pack(workspace.path(), &["reports/"], IfNoFiles::Error, &Limits::default(), Vec::new()).expect_err("out");
    assert!(
        matches!(&error, Error::Refused { entry, reason: Refusal::LinkOutside { .. } } if entry == "reports/passwd"),
        "{error:?}"
    );
    fs::remove_file(workspace.path().join("reports/passwd")).expect("rm");

    // Inside the workspace but not selected: the archive would dangle.
    symlink("../src/main.rs", workspace.path().join("reports/main.rs")).expect("a symlink");
    let error =
        pack(workspace.path(), &["reports/"], IfNoFiles::Error, &Limits::default(), Vec::new()).expect_err("out");
    assert!(matches!(&error, Error::Refused { entry, .. } if entry == "reports/main.rs"), "{error:?}");
    pack(workspace.path(), &["reports/", "src/main.rs"], IfNoFiles::Error, &Limits::default(), Vec::new())
        .expect("selected, so packed");
}

/// A writer that fails the test if more than `cap` bytes reach it: the
/// proof that a limit stopped the stream, not a check after it.
struct Capped {
    written: usize,
    cap: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len();
        assert!(self.written <= self.cap, "{} bytes written past the limit", self.written);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn each_limit_trips_while_streaming_and_names_itself() {
    let workspace = workspace();
    let cases = [
        (Limits { max_file_bytes: 100_000, ..Limits::default() }, Limit::MaxFileBytes, 100_000, "dist/app.tar.gz"),
        (Limits { max_total_bytes: 200_000, ..Limits::default() }, Limit::MaxTotalBytes, 200_000, "dist/app.tar.gz"),
        (Limits { max_entries: 3, ..Limits::default() }, Limit::MaxEntries, 3, "reports/junit.xml"),
    ];
    for (limits, limit, value, entry) in cases {
        let out = Capped { written: 0, cap: 64 * 1024 };
        let error = pack(workspace.path(), PATTERNS, IfNoFiles::Error, &limits, out).expect_err("over the limit");
        let text = error.to_string();
        assert!(
            matches!(&error, Error::LimitExceeded { limit: l, value: v, entry: e } if *l == limit && *v == value && e == entry),
            "{error:?}"
        );
        assert!(text.contains(&limit.to_string()) && text.contains(&value.to_string()), "{text}");
    }
}

#[test]
fn an_unpack_over_a_limit_leaves_nothing() {
    let workspace = workspace();
    let mut archive = Vec::new();
    pack(workspace.path(), PATTERNS, IfNoFiles::Error, &Limits::default(), &mut archive).expect("pack");
    let sandbox = sandbox();
    let limits = Limits { max_file_bytes: 100_000, ..Limits::default() };
    let options = UnpackOptions { limits, ..Default::default() };
    let error = unpack(archive.as_slice(), &sandbox.dest, &options).expect_err("over the limit");
    assert!(
        matches!(&error, Error::LimitExceeded { limit: Limit::MaxFileBytes, entry, .. } if entry == "dist/app.tar.gz"),
        "{error:?}"
    );
    assert!(!exists(&sandbox.dest));
    assert!(sandbox.outside().is_empty(), "{:?}", sandbox.outside());
}
