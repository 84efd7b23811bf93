//! The blob store's tests: blobs stored by digest and refused whole when
//! wrong, and uploads that resume (a partial kept, continued at its byte,
//! refused at another, one writer per digest, kept or swept by age).

use super::*;
use crate::controller::tests::TestDir;

fn digest(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Bytes that differ along their length, so that an offset off by any
/// amount changes the digest.
fn varied(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

async fn read_blob(blobs: &Blobs, d: &str) -> Vec<u8> {
    let (mut reader, _) = blobs.open_blob(d).await.unwrap();
    let mut back = Vec::new();
    while let Some(part) = reader.next(65_536).await {
        back.extend(part.unwrap());
    }
    back
}

fn partial_file(dir: &TestDir, d: &str) -> PathBuf {
    dir.path().join("tmp").join(format!("partial-{d}"))
}

/// Makes `path` look last written `ago`.
fn age(path: &Path, ago: Duration) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

#[tokio::test]
async fn blobs_are_stored_by_digest_and_refused_whole_when_wrong() {
    let dir = TestDir::new("blobs");
    let blobs = Blobs::open(dir.path(), true).unwrap();
    let data = vec![7u8; 300_000];
    let mut w = blobs.writer(1 << 20, "the artifact".into(), "--max-artifact-bytes").await.unwrap();
    for chunk in data.chunks(65_536) {
        w.write(chunk).await.unwrap();
    }
    let (d, len) = w.finish(&digest(&data), data.len() as u64).await.unwrap();
    assert_eq!((d.as_str(), len), (digest(&data).as_str(), 300_000));
    let (_, len) = blobs.open_blob(&d).await.unwrap();
    let back = read_blob(&blobs, &d).await;
    // A download resumes where it broke.
    let (mut reader, _) = blobs.open_blob_at(&d, 299_990).await.unwrap();
    let tail = reader.next(65_536).await.unwrap().unwrap();
    assert_eq!(tail, data[299_990..]);
    assert!(reader.next(65_536).await.is_none());
    assert!(matches!(blobs.open_blob_at(&d, 300_001).await, Err(BlobError::BadOffset { .. })));
    assert_eq!((back, len), (data.clone(), 300_000));

    // (case, bytes written, announced digest and length, the error)
    let cases: Vec<(&str, Vec<u8>, String, u64, &str)> = vec![
        ("wrong digest", b"abc".to_vec(), digest(b"abd"), 3, "sha256 is"),
        ("wrong length", b"abc".to_vec(), digest(b"abc"), 4, "not the 4 it was announced"),
    ];
    for (case, bytes, want, len, error) in cases {
        for resumable in [false, true] {
            let mut w = if resumable {
                blobs.upload_writer(&want, 0, 1 << 20, "x".into(), "--flag").await.unwrap()
            } else {
                blobs.writer(1 << 20, "x".into(), "--flag").await.unwrap()
            };
            w.write(&bytes).await.unwrap();
            let err = w.finish(&want, len).await.unwrap_err();
            assert!(err.to_string().contains(error), "{case} (resumable: {resumable}): {err}");
        }
    }
    // Over the limit: refused while streaming, naming the limit.
    for resumable in [false, true] {
        let (what, flag) = ("the artifact of job build".to_string(), "--max-artifact-bytes");
        let mut w = if resumable {
            blobs.upload_writer(&digest(b"big"), 0, 10, what, flag).await.unwrap()
        } else {
            blobs.writer(10, what, flag).await.unwrap()
        };
        w.write(b"0123456789").await.unwrap();
        let err = w.write(b"!").await.unwrap_err();
        assert_eq!(err.to_string(), "the artifact of job build is over the limit of 10 bytes (--max-artifact-bytes)");
    }
    // A temporary file dropped unfinished goes; it cannot be resumed.
    let mut w = blobs.writer(10, "x".into(), "--flag").await.unwrap();
    w.write(b"abc").await.unwrap();
    drop(w);
    // Nothing refused stays, not even to resume: only the one good blob.
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert!(matches!(blobs.open_blob(&digest(b"abc")).await, Err(BlobError::Missing(_))));
    assert!(matches!(blobs.path("../etc/passwd"), Err(BlobError::BadDigest(_))));
    assert!(matches!(blobs.upload_writer("../x", 0, 10, "x".into(), "--flag").await, Err(BlobError::BadDigest(_))));
    blobs.delete(&d).await.unwrap();
    blobs.delete(&d).await.unwrap();
    assert!(matches!(blobs.open_blob(&d).await, Err(BlobError::Missing(_))));
}

#[tokio::test]
async fn an_upload_cut_off_halfway_resumes_at_the_byte_it_reached() {
    let dir = TestDir::new("blobs-resume");
    let blobs = Blobs::open(dir.path(), false).unwrap();
    let data = varied(300_000);
    let d = digest(&data);
    assert_eq!(blobs.partial(&d).await.unwrap(), 0);
    let mut w = blobs.upload_writer(&d, 0, 1 << 20, "x".into(), "--flag").await.unwrap();
    for chunk in data[..131_072].chunks(65_536) {
        w.write(chunk).await.unwrap();
    }
    assert_eq!(w.written(), 131_072);
    // Its sender went away: the writer is dropped unfinished.
    drop(w);
    assert_eq!(blobs.partial(&d).await.unwrap(), 131_072);
    assert_eq!(std::fs::read(partial_file(&dir, &d)).unwrap(), data[..131_072]);
    assert!(matches!(blobs.open_blob(&d).await, Err(BlobError::Missing(_))), "no reader sees a partial blob");

    // The next stream goes on from there; the digest covers both.
    let mut w = blobs.upload_writer(&d, 131_072, 1 << 20, "x".into(), "--flag").await.unwrap();
    assert_eq!(w.written(), 131_072);
    for chunk in data[131_072..].chunks(65_536) {
        w.write(chunk).await.unwrap();
    }
    assert_eq!(w.finish(&d, 300_000).await.unwrap(), (d.clone(), 300_000));
    assert_eq!(read_blob(&blobs, &d).await, data);
    assert_eq!(blobs.partial(&d).await.unwrap(), 0, "renamed into place");
    assert!(blobs.stored(&d).await.unwrap());

    // A resume past its limit is refused before anything is read.
    let err = blobs.upload_writer(&d, 11, 10, "the artifact".into(), "--max-artifact-bytes").await.err().unwrap();
    assert!(matches!(err, BlobError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn a_resume_at_another_offset_than_the_partial_holds_is_refused_and_the_partial_kept() {
    let dir = TestDir::new("blobs-offset");
    let blobs = Blobs::open(dir.path(), false).unwrap();
    let data = varied(1000);
    let d = digest(&data);
    let mut w = blobs.upload_writer(&d, 0, 1 << 20, "x".into(), "--flag").await.unwrap();
    w.write(&data[..400]).await.unwrap();
    drop(w);
    for offset in [1, 399, 401, 1000] {
        let err = blobs.upload_writer(&d, offset, 1 << 20, "x".into(), "--flag").await.err().unwrap();
        assert!(
            matches!(err, BlobError::PartialMismatch { holds: 400, offset: o, .. } if o == offset),
            "at {offset}: {err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "cannot go on with the upload of blob {d} at byte {offset}: the coordinator holds 400 bytes of it; \
                 ask again, or send it from byte 0"
            )
        );
    }
    assert_eq!(std::fs::read(partial_file(&dir, &d)).unwrap(), data[..400], "untouched by the refusals");
    // With none held, any offset but 0 is refused.
    let other = digest(b"other");
    let err = blobs.upload_writer(&other, 5, 1 << 20, "x".into(), "--flag").await.err().unwrap();
    assert!(matches!(err, BlobError::PartialMismatch { holds: 0, .. }), "{err}");

    // A partial that does not hold what its digest says (its bytes were
    // damaged) fails the check at the end, and is dropped: the next upload
    // starts afresh.
    let mut bad = data[..400].to_vec();
    bad[10] ^= 1;
    std::fs::write(partial_file(&dir, &d), &bad).unwrap();
    let mut w = blobs.upload_writer(&d, 400, 1 << 20, "x".into(), "--flag").await.unwrap();
    w.write(&data[400..]).await.unwrap();
    assert!(matches!(w.finish(&d, 1000).await, Err(BlobError::DigestMismatch { .. })));
    assert_eq!(blobs.partial(&d).await.unwrap(), 0);
    // Offset 0 starts afresh over whatever a partial held.
    let mut w = blobs.upload_writer(&d, 0, 1 << 20, "x".into(), "--flag").await.unwrap();
    w.write(&data[..100]).await.unwrap();
    drop(w);
    let mut w = blobs.upload_writer(&d, 0, 1 << 20, "x".into(), "--flag").await.unwrap();
    w.write(&data).await.unwrap();
    assert_eq!(w.finish(&d, 1000).await.unwrap(), (d.clone(), 1000));
    assert_eq!(read_blob(&blobs, &d).await, data);
}

#[tokio::test]
async fn a_second_writer_of_a_digest_is_refused_while_the_first_is_active() {
    let dir = TestDir::new("blobs-busy");
    let blobs = Blobs::open(dir.path(), false).unwrap();
    let data = varied(2000);
    let d = digest(&data);
    let mut first = blobs.upload_writer(&d, 0, 1 << 20, "x".into(), "--flag").await.unwrap();
    first.write(&data[..1000]).await.unwrap();
    for offset in [0, 1000] {
        let err = blobs.upload_writer(&d, offset, 1 << 20, "x".into(), "--flag").await.err().unwrap();
        assert!(matches!(err, BlobError::Busy(_)), "{err}");
        assert_eq!(err.to_string(), format!("blob {d} is being uploaded already; ask again once that upload ends"));
    }
    // Another digest is no concern of its.
    let other = blobs.upload_writer(&digest(b"other"), 0, 1 << 20, "x".into(), "--flag").await.unwrap();
    drop(other);
    first.write(&data[1000..1500]).await.unwrap();
    drop(first);
    // Once it is gone, the next goes on where it stopped.
    let mut next = blobs.upload_writer(&d, 1500, 1 << 20, "x".into(), "--flag").await.unwrap();
    next.write(&data[1500..]).await.unwrap();
    assert_eq!(next.finish(&d, 2000).await.unwrap(), (d.clone(), 2000));
    assert_eq!(read_blob(&blobs, &d).await, data);
    // A writer that was discarded (its sender broke the protocol) keeps
    // nothing, and lets the digest go.
    let mut w = blobs.upload_writer(&digest(b"x"), 0, 1 << 20, "x".into(), "--flag").await.unwrap();
    w.write(b"x").await.unwrap();
    w.discard();
    assert_eq!(blobs.partial(&digest(b"x")).await.unwrap(), 0);
    assert!(blobs.upload_writer(&digest(b"x"), 0, 1 << 20, "x".into(), "--flag").await.is_ok());
}

#[tokio::test]
async fn partials_outlive_a_restart_while_young_and_are_swept_once_past_the_grace() {
    let dir = TestDir::new("blobs-age");
    let blobs = Blobs::open(dir.path(), false).unwrap();
    let (young, old, active) = (digest(b"young"), digest(b"old"), digest(b"active"));
    for d in [&young, &old] {
        let mut w = blobs.upload_writer(d, 0, 1 << 20, "x".into(), "--flag").await.unwrap();
        w.write(b"some").await.unwrap();
    }
    age(&partial_file(&dir, &old), PARTIAL_KEEP + Duration::from_secs(60));
    std::fs::write(dir.path().join("tmp").join("123-4"), b"left by an older coordinator").unwrap();
    std::fs::create_dir(dir.path().join("tmp").join("stray")).unwrap();
    drop(blobs);

    // A restart keeps the young partial only.
    let blobs = Blobs::open(dir.path(), false).unwrap();
    let left: Vec<String> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![format!("partial-{young}")]);
    assert_eq!(blobs.partial(&young).await.unwrap(), 4);

    // The sweep deletes partials past the grace, but not one being written.
    let mut w = blobs.upload_writer(&active, 0, 1 << 20, "x".into(), "--flag").await.unwrap();
    w.write(b"busy").await.unwrap();
    age(&partial_file(&dir, &young), Duration::from_secs(120));
    age(&partial_file(&dir, &active), Duration::from_secs(120));
    assert_eq!(blobs.sweep(HashSet::new(), Duration::from_secs(600)).await.unwrap(), 0);
    assert_eq!(blobs.partial(&young).await.unwrap(), 4, "within the grace");
    assert_eq!(blobs.sweep(HashSet::new(), Duration::from_secs(60)).await.unwrap(), 0, "partials are not counted");
    assert_eq!(blobs.partial(&young).await.unwrap(), 0, "past the grace");
    assert_eq!(blobs.partial(&active).await.unwrap(), 4, "being written");
    w.write(b"!").await.unwrap();
    let err = w.finish(&active, 5).await.unwrap_err();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn a_stored_blob_is_reported_and_its_age_refreshed_for_the_grace() {
    let dir = TestDir::new("blobs-stored");
    let blobs = Blobs::open(dir.path(), false).unwrap();
    let d = digest(b"stored");
    assert!(!blobs.stored(&d).await.unwrap());
    let mut w = blobs.upload_writer(&d, 0, 1 << 20, "x".into(), "--flag").await.unwrap();
    w.write(b"stored").await.unwrap();
    w.finish(&d, 6).await.unwrap();
    let path = blobs.path(&d).unwrap();
    age(&path, Duration::from_secs(7200));
    assert!(blobs.stored(&d).await.unwrap());
    // Refreshed: a sweep with an hour's grace keeps it though no run names it.
    assert_eq!(blobs.sweep(HashSet::new(), Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(read_blob(&blobs, &d).await, b"stored");
    assert!(matches!(blobs.stored("nope").await, Err(BlobError::BadDigest(_))));
}

#[tokio::test]
async fn uploads_past_the_budget_are_refused_and_a_sweep_counts_again() {
    let dir = TestDir::new("blobs-budget");
    let data = varied(600);
    let d = digest(&data);
    std::fs::create_dir_all(dir.path().join("sha256")).unwrap();
    let blobs = Blobs::open(dir.path(), false).unwrap().with_budget(1000);
    blobs.check_room(1000).unwrap();
    let mut w = blobs.writer(10_000, "a blob".into(), "--max-artifact-bytes").await.unwrap();
    w.write(&data).await.unwrap();
    w.finish(&d, 600).await.unwrap();
    let err = blobs.check_room(401).unwrap_err().to_string();
    assert!(
        err.contains("holds 600 bytes, and 401 more would pass its budget of 1000 bytes (--blob-store-budget)"),
        "{err}"
    );
    blobs.check_room(400).unwrap();
    // Reopened, it counts what it holds; a sweep that deletes it counts again.
    drop(blobs);
    let blobs = Blobs::open(dir.path(), false).unwrap().with_budget(1000);
    assert!(blobs.check_room(401).is_err(), "counted at open");
    assert_eq!(blobs.sweep(HashSet::new(), Duration::ZERO).await.unwrap(), 1);
    blobs.check_room(1000).unwrap();
    // No budget: no limit.
    Blobs::open(dir.path(), false).unwrap().check_room(u64::MAX).unwrap();
}
