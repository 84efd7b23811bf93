//! The segments' own tests: the metadata's format, a run's one file and
//! the files per attempt from before, damage and absence named by file and
//! offset, deleting and sweeping runs, and stopping after a failed write.

use super::*;

static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A fresh blob directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("drover-segments-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(run: RunId, job: &str, attempt: u32, offset: u64, data: &[u8]) -> Write {
    Write { run, job: job.into(), attempt, offset, data: data.to_vec() }
}

/// A chunk of `job` attempt 1 at log `offset`, with the metadata its
/// write returned.
fn placed(job: &str, offset: u64, meta: ChunkMeta) -> Chunk {
    Chunk { job: job.into(), attempt: 1, offset, meta }
}

#[test]
fn chunk_metadata_round_trips_and_refuses_garbage() {
    let meta = ChunkMeta::of(b"123456789");
    assert_eq!(meta, ChunkMeta { len: 9, crc32c: 0xE306_9283, at: None });
    assert_eq!(meta.encode(), br#"{"len":9,"crc32c":3808858755}"#, "as chunks written before the file per run");
    assert_eq!(ChunkMeta::decode("k", &meta.encode()).unwrap(), meta);
    let placed = ChunkMeta::placed(b"123456789", 12);
    assert_eq!(placed.encode(), br#"{"len":9,"crc32c":3808858755,"at":12}"#);
    assert_eq!(ChunkMeta::decode("k", &placed.encode()).unwrap(), placed);
    // (value, why it is refused)
    let cases: &[(&[u8], &str)] = &[
        (b"hello\n", "raw log bytes"),
        (b"", "empty"),
        (br#"{"len":9}"#, "no checksum"),
        (br#"{"len":-1,"crc32c":0}"#, "negative length"),
        (br#"{"len":4294967296,"crc32c":0}"#, "length past u32"),
        (br#"{"len":9,"crc32c":0,"at":-1}"#, "negative place"),
    ];
    for (value, why) in cases {
        let err = ChunkMeta::decode("/runs/x/logs/a/0001/0", value).unwrap_err();
        assert!(err.to_string().contains("/runs/x/logs/a/0001/0"), "{why}: {err}");
    }
}

#[test]
fn a_runs_chunks_are_appended_to_its_one_file_and_read_back_where_they_landed() {
    let dir = Dir::new();
    let segs = Segments::open(&dir.0, true).unwrap();
    let metas = segs
        .write(&[
            write(1, "build", 1, 0, b"hello "),
            write(1, "test", 1, 0, b"ok\n"),
            write(1, "build", 1, 6, b"world\n"),
        ])
        .unwrap();
    assert_eq!(metas.iter().map(|m| m.at).collect::<Vec<_>>(), [Some(0), Some(6), Some(9)]);
    assert_eq!(metas[2], ChunkMeta::placed(b"world\n", 9));
    assert_eq!(segs.path(1), dir.0.join("logs/0000000001.log"));
    assert_eq!(std::fs::read_dir(segs.root()).unwrap().count(), 1, "one file for the run, nothing else");
    // A resend after a crash appends the same bytes again; either copy
    // reads back, and only the committed one is ever asked for.
    let again = segs.write(&[write(1, "build", 1, 6, b"world\n")]).unwrap();
    assert_eq!(again[0].at, Some(15));
    let got = segs
        .read(1, &[placed("build", 0, metas[0]), placed("build", 6, again[0]), placed("test", 0, metas[1])])
        .unwrap();
    assert_eq!(got, vec![b"hello ".to_vec(), b"world\n".to_vec(), b"ok\n".to_vec()]);
    assert_eq!(std::fs::read(segs.path(1)).unwrap(), b"hello ok\nworld\nworld\n");
    // A chunk from before the file per run lies in its attempt's file,
    // at its log offset.
    let legacy = segs.root().join("0000000001/build@0002.log");
    std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    std::fs::write(&legacy, b"old bytes\n").unwrap();
    let old = Chunk { job: "build".into(), attempt: 2, offset: 4, meta: ChunkMeta::of(b"bytes\n") };
    assert_eq!(segs.read(1, &[old]).unwrap(), vec![b"bytes\n".to_vec()]);
    // Without fsync (--no-fsync) the bytes are written just the same.
    let unsynced = Segments::open(&dir.0, false).unwrap();
    let metas = unsynced.write(&[write(2, "a", 1, 0, b"x")]).unwrap();
    assert_eq!(segs.read(2, &[placed("a", 0, metas[0])]).unwrap(), vec![b"x".to_vec()]);
}

#[test]
fn damaged_or_missing_segments_are_errors_that_name_the_file_and_offset() {
    let dir = Dir::new();
    let segs = Segments::open(&dir.0, true).unwrap();
    let metas = segs.write(&[write(3, "a", 1, 0, b"first\n"), write(3, "a", 1, 6, b"second\n")]).unwrap();
    let path = segs.path(3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let past = ChunkMeta::placed(b"third\n", 13);
    let legacy = |offset| Chunk { job: "a".into(), attempt: 2, offset, meta: ChunkMeta::of(b"x") };
    let legacy_path = segs.root().join("0000000003/a@0002.log");
    // (what, run, chunk asked for, its file, the start of the error after the path)
    let cases: Vec<(&str, RunId, Chunk, PathBuf, &str)> = vec![
        ("intact chunk before the damage", 3, placed("a", 0, metas[0]), path.clone(), ""),
        (
            "a flipped bit",
            3,
            placed("a", 6, metas[1]),
            path.clone(),
            " is corrupt at offset 6: the chunk's 7 bytes have checksum",
        ),
        ("past the end", 3, placed("a", 13, past), path.clone(), " is corrupt at offset 13: the file ends before"),
        (
            "no such run file",
            4,
            placed("a", 0, metas[0]),
            segs.path(4),
            " is missing: the store has a chunk of 6 bytes at offset 0",
        ),
        (
            "no such attempt file, from before",
            3,
            legacy(40),
            legacy_path,
            " is missing: the store has a chunk of 1 bytes at offset 40",
        ),
    ];
    for (what, run, c, file, want) in cases {
        match segs.read(run, std::slice::from_ref(&c)) {
            Ok(_) => assert!(want.is_empty(), "{what}: read"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with(&format!("log segment {}{want}", file.display())), "{what}: {msg}");
                let api: StoreError = e.into();
                assert!(api.to_string().contains(&file.display().to_string()), "{what}: {api}");
            }
        }
    }
    let bad = Chunk { job: "../../etc".into(), attempt: 1, offset: 0, meta: ChunkMeta::of(b"x") };
    let err = segs.read(3, &[bad]).unwrap_err();
    assert!(matches!(err, SegmentError::BadName { .. }), "{err}");
}

#[test]
fn runs_are_deleted_and_orphans_swept_but_newer_runs_kept() {
    let dir = Dir::new();
    let segs = Segments::open(&dir.0, true).unwrap();
    for run in [1, 2, 3, 7] {
        segs.write(&[write(run, "a", 1, 0, b"x")]).unwrap();
    }
    // Run 4's segments are from before the file per run.
    std::fs::create_dir_all(segs.root().join("0000000004")).unwrap();
    std::fs::write(segs.root().join("0000000004/a@0001.log"), b"x").unwrap();
    for other in ["not-a-run", "12.log", "0000000005.log.tmp"] {
        std::fs::write(segs.root().join(other), b"").unwrap();
    }
    std::fs::create_dir_all(segs.root().join("0000000006.log")).unwrap();
    segs.delete_run(2).unwrap();
    segs.delete_run(2).unwrap();
    let mut runs = segs.runs().unwrap();
    runs.sort_unstable();
    assert_eq!(runs, vec![1, 3, 4, 7]);
    // Run 3 is alive; 1 and 4 were pruned; 7 is newer than the listing.
    let gone = segs.sweep(&HashSet::from([3]), 5).unwrap();
    assert_eq!(gone, vec![1, 4]);
    let mut runs = segs.runs().unwrap();
    runs.sort_unstable();
    assert_eq!(runs, vec![3, 7]);
    assert!(!segs.root().join("0000000004").exists());
    for other in ["not-a-run", "12.log", "0000000005.log.tmp", "0000000006.log"] {
        assert!(segs.root().join(other).exists(), "{other}: what is not a run's is left alone");
    }
}

#[test]
fn a_failed_write_stops_the_segments_for_good() {
    let dir = Dir::new();
    let segs = Segments::open(&dir.0, true).unwrap();
    // A directory where the run's file should be: the open fails.
    std::fs::create_dir_all(segs.path(9)).unwrap();
    let err = segs.write(&[write(9, "a", 1, 0, b"x")]).unwrap_err();
    assert!(err.to_string().contains("0000000009.log at offset 0"), "{err}");
    assert!(segs.stopped().is_some_and(|r| r.contains("0000000009")));
    // Later writes, even good ones, are refused with the first reason.
    let err = segs.write(&[write(10, "a", 1, 0, b"x")]).unwrap_err();
    assert!(matches!(&err, SegmentError::Stopped { reason } if reason.contains("0000000009")), "{err}");
    assert!(!segs.path(10).exists());
}
