//! Hostile archives: one table of attacks, each of which must fail with an
//! error naming the entry and leave nothing outside the destination (nor
//! the destination itself: unpack is all or nothing), and a fuzz-style test
//! of thousands of random archives holding the same invariant.

mod common;

use common::{Raw, Sandbox, append, archive, exists, sandbox};
use drover_archive::{Error, Limit, Limits, Refusal, UnpackOptions, unpack};
use tar::EntryType;

/// One attack: the archive (built in the sandbox, which it may name), what
/// the error must say, and the limits to unpack under.
struct Attack {
    name: &'static str,
    build: fn(&Sandbox) -> Vec<u8>,
    /// The entry the error must name.
    entry: &'static str,
    check: fn(&Error) -> bool,
    limits: Limits,
}

fn refused(error: &Error, want: fn(&Refusal) -> bool) -> bool {
    matches!(error, Error::Refused { reason, .. } if want(reason))
}

fn attacks() -> Vec<Attack> {
    let defaults = Limits::default();
    vec![
        Attack {
            name: "parent directory",
            build: |_| archive(&[Raw::file("../x", b"pwned")]),
            entry: "../x",
            check: |e| refused(e, |r| *r == Refusal::ParentComponent),
            limits: defaults,
        },
        Attack {
            name: "absolute path",
            build: |s| archive(&[Raw::file(Box::leak(s.escape("etc-x").into_boxed_str()), b"pwned")]),
            entry: "etc-x",
            check: |e| refused(e, |r| *r == Refusal::Absolute),
            limits: defaults,
        },
        Attack {
            name: "/etc/x itself",
            build: |_| archive(&[Raw::file("/etc/drover-archive-test-x", b"pwned")]),
            entry: "/etc/drover-archive-test-x",
            check: |e| refused(e, |r| *r == Refusal::Absolute),
            limits: defaults,
        },
        Attack {
            name: "parent directory after a normal one",
            build: |_| archive(&[Raw::dir("a"), Raw::file("a/../../x", b"pwned")]),
            entry: "a/../../x",
            check: |e| refused(e, |r| *r == Refusal::ParentComponent),
            limits: defaults,
        },
        Attack {
            name: "symlink to /",
            build: |_| archive(&[Raw::link("root", EntryType::Symlink, "/")]),
            entry: "root",
            check: |e| refused(e, |r| matches!(r, Refusal::LinkOutside { .. })),
            limits: defaults,
        },
        Attack {
            name: "symlink to the sandbox, then a file through it",
            build: |s| {
                let target: &'static str =
                    Box::leak(s.dir.path().to_str().expect("UTF-8").to_string().into_boxed_str());
                archive(&[Raw::link("out", EntryType::Symlink, target), Raw::file("out/x", b"pwned")])
            },
            entry: "out",
            check: |e| refused(e, |r| matches!(r, Refusal::LinkOutside { .. })),
            limits: defaults,
        },
        Attack {
            name: "symlink to ../.. then a file through it",
            build: |_| archive(&[Raw::link("up", EntryType::Symlink, "../.."), Raw::file("up/x", b"pwned")]),
            entry: "up",
            check: |e| refused(e, |r| matches!(r, Refusal::LinkOutside { .. })),
            limits: defaults,
        },
        Attack {
            name: "an allowed symlink, then a file through it",
            build: |_| archive(&[Raw::dir("d"), Raw::link("l", EntryType::Symlink, "d"), Raw::file("l/x", b"ok?")]),
            entry: "l/x",
            check: |e| refused(e, |r| matches!(r, Refusal::ThroughLink { .. })),
            limits: defaults,
        },
        Attack {
            name: "symlink climbing after a symlink that climbs (lexically inside)",
            build: |_| {
                archive(&[
                    Raw::dir("a"),
                    Raw::link("a/l", EntryType::Symlink, ".."),
                    Raw::link("x", EntryType::Symlink, "a/l/../.."),
                ])
            },
            entry: "x",
            check: |e| refused(e, |r| matches!(r, Refusal::LinkOutside { .. })),
            limits: defaults,
        },
        Attack {
            name: "hardlink out of the tree",
            build: |s| {
                let target: &'static str = Box::leak(s.escape("secret").into_boxed_str());
                archive(&[Raw::link("h", EntryType::Link, target)])
            },
            entry: "h",
            check: |e| refused(e, |r| *r == Refusal::HardLink),
            limits: defaults,
        },
        Attack {
            name: "hardlink up the tree",
            build: |_| archive(&[Raw::link("h", EntryType::Link, "../../etc/passwd")]),
            entry: "h",
            check: |e| refused(e, |r| *r == Refusal::HardLink),
            limits: defaults,
        },
        Attack {
            name: "char device",
            build: |_| archive(&[Raw::special("null", EntryType::Char)]),
            entry: "null",
            check: |e| refused(e, |r| *r == Refusal::Device),
            limits: defaults,
        },
        Attack {
            name: "block device",
            build: |_| archive(&[Raw::special("sda", EntryType::Block)]),
            entry: "sda",
            check: |e| refused(e, |r| *r == Refusal::Device),
            limits: defaults,
        },
        Attack {
            name: "FIFO",
            build: |_| archive(&[Raw::special("pipe", EntryType::Fifo)]),
            entry: "pipe",
            check: |e| refused(e, |r| *r == Refusal::Fifo),
            limits: defaults,
        },
        Attack {
            name: "100,000 empty entries and one more",
            build: |_| {
                let mut builder = tar::Builder::new(Vec::new());
                for n in 0..=100_000 {
                    let name = format!("e{n}");
                    append(&mut builder, &Raw::file(&name, b""));
                }
                builder.into_inner().expect("the archive")
            },
            entry: "e100000",
            check: |e| matches!(e, Error::LimitExceeded { limit: Limit::MaxEntries, value: 100_000, .. }),
            limits: defaults,
        },
        Attack {
            name: "a 10-byte file over a 5-byte limit",
            build: |_| archive(&[Raw::file("ten", b"0123456789")]),
            entry: "ten",
            check: |e| matches!(e, Error::LimitExceeded { limit: Limit::MaxFileBytes, value: 5, .. }),
            limits: Limits { max_file_bytes: 5, ..defaults },
        },
        Attack {
            name: "small files over the total",
            build: |_| archive(&[Raw::file("a", b"0123456789"), Raw::file("b", b"0123456789")]),
            entry: "b",
            check: |e| matches!(e, Error::LimitExceeded { limit: Limit::MaxTotalBytes, value: 15, .. }),
            limits: Limits { max_total_bytes: 15, ..defaults },
        },
        Attack {
            name: "a declared terabyte with ten bytes behind it",
            build: |_| {
                let raw = Raw { size: 1 << 40, ..Raw::file("huge", b"0123456789") };
                archive(&[raw])
            },
            entry: "huge",
            check: |e| matches!(e, Error::LimitExceeded { limit: Limit::MaxFileBytes, .. }),
            limits: defaults,
        },
        Attack {
            name: "a GNU sparse file",
            build: |_| archive(&[Raw { kind: EntryType::GNUSparse, ..Raw::file("sparse", b"") }]),
            entry: "sparse",
            check: |e| refused(e, |r| *r == Refusal::Sparse),
            limits: defaults,
        },
        Attack {
            name: "a file that declares more than the archive holds",
            build: |_| {
                let mut bytes = archive(&[Raw { size: 4096, ..Raw::file("short", b"0123456789") }]);
                bytes.truncate(1024);
                bytes
            },
            entry: "short",
            check: |e| matches!(e, Error::Read { .. }),
            limits: defaults,
        },
        Attack {
            name: "the same path twice",
            build: |_| archive(&[Raw::file("twice", b"one"), Raw::file("twice", b"two")]),
            entry: "twice",
            check: |e| refused(e, |r| *r == Refusal::Duplicate),
            limits: defaults,
        },
        Attack {
            name: "a long name with a parent directory",
            build: |_| {
                let name: &'static str = Box::leak(format!("{}/../../../x", "d".repeat(120)).into_boxed_str());
                archive(&[Raw::file(name, b"pwned")])
            },
            entry: "/../../../x",
            check: |e| refused(e, |r| *r == Refusal::ParentComponent),
            limits: defaults,
        },
        Attack {
            name: "a long link target out of the tree",
            build: |_| {
                let target: &'static str = Box::leak(format!("{}x", "../".repeat(60)).into_boxed_str());
                archive(&[Raw::link("deep", EntryType::Symlink, target)])
            },
            entry: "deep",
            check: |e| refused(e, |r| matches!(r, Refusal::LinkOutside { .. })),
            limits: defaults,
        },
    ]
}

#[test]
fn every_hostile_archive_is_refused_naming_the_entry_and_leaves_nothing() {
    for attack in attacks() {
        let sandbox = sandbox();
        let bytes = (attack.build)(&sandbox);
        let options = UnpackOptions { limits: attack.limits, expected_sha256: None };
        let result = unpack(bytes.as_slice(), &sandbox.dest, &options);
        let Err(error) = result else { panic!("{}: unpacked, but must be refused", attack.name) };
        let text = error.to_string();
        assert!(text.contains(attack.entry), "{}: the error does not name {:?}: {text}", attack.name, attack.entry);
        assert!((attack.check)(&error), "{}: the wrong error: {error:?}", attack.name);
        if let Error::LimitExceeded { limit, value, .. } = &error {
            assert!(text.contains(&limit.to_string()) && text.contains(&value.to_string()), "{text}");
        }
        assert!(!exists(&sandbox.dest), "{}: the destination exists after an error", attack.name);
        assert_eq!(sandbox.outside(), Vec::<std::path::PathBuf>::new(), "{}: left behind", attack.name);
        assert!(!exists(std::path::Path::new("/etc/drover-archive-test-x")));
    }
}

/// xorshift64*: deterministic, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A random path: a few components from a small pool, so names collide,
/// climb and go through each other's links often.
fn random_path(rng: &mut Rng, sandbox: &Sandbox, tame: bool) -> String {
    const PARTS: &[&str] = &["a", "b", "l", "..", ".", "", "c", "a", "l"];
    const TAME: &[&str] = &["a", "b", "c", "l", "."];
    let depth = 1 + rng.below(4);
    let mut parts: Vec<&str> = (0..depth).map(|_| rng.pick(if tame { TAME } else { PARTS })).collect();
    let path = parts.join("/");
    match if tame { 9 } else { rng.below(10) } {
        0 => format!("/{path}"),
        1 => format!("{}/{path}", sandbox.escape("abs")),
        _ => {
            parts.retain(|p| !p.is_empty());
            if parts.is_empty() { "a".to_string() } else { path }
        }
    }
}

#[test]
fn random_archives_never_write_outside_the_destination() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut unpacked = 0;
    for case in 0..3000 {
        let sandbox = sandbox();
        let mut builder = tar::Builder::new(Vec::new());
        // A third of the cases are tame (no `..`, no absolute paths, no
        // special files, honest sizes), so that success is reached too;
        // symlinks there still climb with leading `..` and get written through.
        let tame = rng.below(3) == 0;
        let entries = 1 + rng.below(8);
        let mut names = Vec::new();
        for _ in 0..entries {
            let name = random_path(&mut rng, &sandbox, tame);
            let target = match rng.below(4) {
                0 => format!("{}{}", "../".repeat(rng.below(4)), random_path(&mut rng, &sandbox, true)),
                _ => random_path(&mut rng, &sandbox, tame),
            };
            let kinds = [
                EntryType::Regular,
                EntryType::Regular,
                EntryType::Directory,
                EntryType::Symlink,
                EntryType::Symlink,
                EntryType::Link,
                EntryType::Fifo,
                EntryType::Char,
            ];
            let kind = kinds[rng.below(if tame { 5 } else { kinds.len() })];
            let data = vec![b'x'; rng.below(600)];
            let declared = if !tame && rng.below(20) == 0 { rng.next() % (1 << 41) } else { data.len() as u64 };
            let mode = (rng.next() % 0o10000) as u32;
            let link = if matches!(kind, EntryType::Symlink | EntryType::Link) { target.as_bytes() } else { b"" };
            let raw = Raw { name: name.as_bytes(), kind, link, mode, size: declared, data: &data };
            append(&mut builder, &raw);
            names.push(name);
        }
        let mut bytes = builder.into_inner().expect("the archive");
        if !tame && rng.below(8) == 0 {
            // Flip a byte anywhere, header or data.
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        let options =
            UnpackOptions { limits: Limits { max_file_bytes: 400, ..Limits::default() }, ..Default::default() };
        let result = unpack(bytes.as_slice(), &sandbox.dest, &options);
        assert_eq!(sandbox.outside(), Vec::<std::path::PathBuf>::new(), "case {case}: {names:?} -> {result:?}");
        match result {
            Ok(_) => {
                unpacked += 1;
                assert_links_stay_inside(&sandbox, case);
            }
            Err(_) => assert!(!exists(&sandbox.dest), "case {case}: the destination exists after an error"),
        }
        // Permissions applied on success may make the tree unremovable by
        // the temp dir's drop; give them back.
        make_writable(&sandbox.dest);
    }
    // The generator must reach the success path too, or it tests little.
    assert!(unpacked > 300, "only {unpacked} of 3000 random archives unpacked");
}

/// Every symlink an unpack kept resolves (when it resolves at all) inside
/// the destination.
fn assert_links_stay_inside(sandbox: &Sandbox, case: usize) {
    let dest = sandbox.dest.canonicalize().expect("the destination");
    for item in walkdir::WalkDir::new(&sandbox.dest).follow_links(false) {
        let item = item.expect("a walk entry");
        if item.path_is_symlink()
            && let Ok(resolved) = item.path().canonicalize()
        {
            assert!(resolved.starts_with(&dest), "case {case}: {} -> {}", item.path().display(), resolved.display());
        }
    }
}

fn make_writable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        make_writable(&item.path());
    }
}
