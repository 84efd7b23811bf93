//! The embedded store's own tests: the conformance suite run on it, and
//! what only this backend does (the log and its recovery from torn writes
//! and corruption, snapshots, group commit, the watch history's limits and
//! slow watchers, lease timing on a paused clock, the directory lock, and
//! stopping when the directory is deleted or replaced).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::lock::{PLACE_CHECK_INTERVAL, lock_name};
use super::snapshot::SNAPSHOT_FILE;
use super::wal::{
    PREALLOCATE_BYTES, RECORD_HEADER_BYTES, RecordBuilder, WAL_MAGIC, Wal, list_logs, log_path, parse_record,
};
use super::{EmbeddedOptions, EmbeddedStore, MAX_VALUE_BYTES};
use crate::store::conformance::{self, recv_events, summary};
use crate::store::{EventKind, Op, Revision, Store, StoreError, Txn, TxnResponse, WatchMessage};

/// A scratch directory under the system temp dir, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("drover-embedded-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TestDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn only_log(&self) -> PathBuf {
        let logs = list_logs(&self.0).unwrap();
        assert_eq!(logs.len(), 1, "expected exactly one log: {logs:?}");
        logs.into_iter().next().unwrap().1
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn fast() -> EmbeddedOptions {
    EmbeddedOptions { fsync: false, ..EmbeddedOptions::default() }
}

async fn put(store: &EmbeddedStore, key: &str, value: &str) -> TxnResponse {
    store.txn(Txn::ops(vec![Op::put(key, value)])).await.unwrap()
}

/// Lets background tasks run without advancing a paused clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// The conformance suite on the embedded store, each case in a directory
/// of its own, with the production options (fsync on).
struct Embedded {
    dirs: Mutex<Vec<TestDir>>,
}

impl conformance::Backend for Embedded {
    type Store = EmbeddedStore;

    async fn open(&self, case: &str) -> Arc<EmbeddedStore> {
        let dir = TestDir::new(&format!("conformance-{case}"));
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        self.dirs.lock().unwrap().push(dir);
        store
    }

    async fn compact(&self, store: &EmbeddedStore, revision: Revision) {
        store.forget_history_before(revision);
    }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    conformance::run(&Embedded { dirs: Mutex::new(Vec::new()) }).await;
}

#[tokio::test]
async fn the_value_limit_is_etcds_request_limit() {
    let dir = TestDir::new("limits");
    let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    let err = store.txn(Txn::ops(vec![Op::put("big", big)])).await.unwrap_err();
    assert!(
        matches!(err, StoreError::ValueTooLarge { size, limit, .. } if size == MAX_VALUE_BYTES + 1 && limit == MAX_VALUE_BYTES)
    );
    store.txn(Txn::ops(vec![Op::put("max", vec![0u8; MAX_VALUE_BYTES])])).await.unwrap();
}

#[tokio::test]
async fn watch_before_retained_history_is_compacted() {
    let dir = TestDir::new("compacted");
    let opts = EmbeddedOptions { watch_history_revisions: 3, ..fast() };
    let store = EmbeddedStore::open(dir.path(), opts).await.unwrap();
    for i in 0..10 {
        put(&store, &format!("k{i}"), "v").await; // revisions 2..=11
    }
    let mut rx = store.watch("", 5).await.unwrap();
    assert_eq!(rx.recv().await, Some(WatchMessage::Compacted { compact_revision: 9 }));
    assert_eq!(rx.recv().await, None, "a compacted watch closes");

    // The oldest retained revision itself still works.
    let mut rx = store.watch("", 9).await.unwrap();
    for revision in 9..=11 {
        assert_eq!(recv_events(&mut rx).await[0].kv.mod_revision, revision);
    }
}

#[tokio::test]
async fn slow_watcher_catches_up_without_blocking_writers() {
    let dir = TestDir::new("slow");
    let opts = EmbeddedOptions { watch_channel_capacity: 2, ..fast() };
    let store = EmbeddedStore::open(dir.path(), opts).await.unwrap();
    let mut rx = store.watch("", 0).await.unwrap();
    // Fifty writes into a two-slot channel nobody reads: none may block.
    for i in 0..50 {
        put(&store, &format!("k{i}"), "v").await;
    }
    for revision in 2..=51 {
        assert_eq!(recv_events(&mut rx).await[0].kv.mod_revision, revision);
    }
    // Caught up, the watcher is live again.
    settle().await;
    assert_eq!(store.live_watcher_count(), 1);
    put(&store, "live", "v").await;
    assert_eq!(recv_events(&mut rx).await[0].kv.mod_revision, 52);
}

#[tokio::test]
async fn watcher_behind_the_history_gets_compacted_after_its_events() {
    let dir = TestDir::new("slow-compacted");
    let opts = EmbeddedOptions { watch_channel_capacity: 2, watch_history_revisions: 5, ..fast() };
    let store = EmbeddedStore::open(dir.path(), opts).await.unwrap();
    let mut rx = store.watch("", 0).await.unwrap();
    for i in 0..30 {
        put(&store, &format!("k{i}"), "v").await; // revisions 2..=31
    }
    // Whatever was delivered is contiguous from the start; then the
    // watcher learns it fell behind, and the watch ends.
    let mut expected = 2;
    loop {
        match rx.recv().await.expect("compacted before the channel closes") {
            WatchMessage::Events(events) => {
                assert_eq!(events[0].kv.mod_revision, expected);
                expected += 1;
            }
            WatchMessage::Compacted { compact_revision } => {
                assert_eq!(compact_revision, 27);
                break;
            }
        }
    }
    assert!(expected < 27);
    assert_eq!(rx.recv().await, None);
}

#[tokio::test]
async fn dropping_the_receiver_cancels_the_watch() {
    let dir = TestDir::new("cancel");
    let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
    let rx = store.watch("", 0).await.unwrap();
    let _kept = store.watch("", 0).await.unwrap();
    assert_eq!(store.live_watcher_count(), 2);
    drop(rx);
    put(&store, "k", "v").await;
    assert_eq!(store.live_watcher_count(), 1);
}

/// Lease timing to the tick, on Tokio's paused clock (what leases do is in
/// the conformance suite): a lease lives its full TTL and no longer, and each
/// keep-alive gives it a full TTL from then.
#[tokio::test(start_paused = true)]
async fn leases_expire_on_the_tokio_clock() {
    let dir = TestDir::new("lease-clock");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
    let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    let op = Op::Put { key: "k".into(), value: b"v".to_vec(), lease };
    store.txn(Txn::ops(vec![op])).await.unwrap(); // revision 2
    let mut rx = store.watch("", 0).await.unwrap();

    tokio::time::advance(Duration::from_secs(9)).await;
    settle().await;
    assert!(store.get("k").await.unwrap().is_some(), "not expired before its TTL");

    // Three keep-alives carry the lease well past its original deadline.
    for _ in 0..3 {
        store.lease_keep_alive(lease).await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        settle().await;
    }
    assert!(store.get("k").await.unwrap().is_some(), "kept alive for 27s on a 10s TTL");
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(summary(&recv_events(&mut rx).await), [(EventKind::Delete, "k".into(), 3)]);

    // Lease ids count up; etcd's are its own to choose.
    assert!(store.lease_grant(Duration::from_secs(10)).await.unwrap() > lease);
}

#[tokio::test(start_paused = true)]
async fn state_survives_a_restart() {
    let dir = TestDir::new("restart");
    let (before, lease) = {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        put(&store, "a", "1").await;
        put(&store, "a", "2").await;
        let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        let op = Op::Put { key: "leased".into(), value: b"v".to_vec(), lease };
        store.txn(Txn::ops(vec![op, Op::put("b", "x")])).await.unwrap();
        put(&store, "gone", "v").await;
        store.txn(Txn::ops(vec![Op::delete("gone")])).await.unwrap();
        let revoked = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        store.lease_revoke(revoked).await.unwrap();
        // Run most of the lease's TTL down before the "crash".
        tokio::time::advance(Duration::from_secs(25)).await;
        (store.range("").await.unwrap(), lease)
    };
    assert_eq!(before.1, 6);

    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
    assert_eq!(store.range("").await.unwrap(), before);
    assert_eq!(put(&store, "c", "v").await.revision, 7, "the revision continues");
    let next_lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    assert!(next_lease > lease + 1, "lease ids are never reused");

    // The lease was restored with a fresh full TTL.
    let mut rx = store.watch("leased", 0).await.unwrap();
    tokio::time::advance(Duration::from_secs(29)).await;
    settle().await;
    assert!(store.get("leased").await.unwrap().is_some());
    store.lease_keep_alive(lease).await.unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(recv_events(&mut rx).await[0].kind, EventKind::Delete);
}

/// Writes three one-key transactions and closes the store.
async fn three_writes(dir: &TestDir) {
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
    for key in ["one", "two", "three"] {
        put(&store, key, "v").await;
    }
}

/// Where the records of a log end; the space after them is zeros.
fn records_end(log: &Path) -> u64 {
    let data = fs::read(log).unwrap();
    let mut offset = WAL_MAGIC.len();
    while let Ok((_, next)) = parse_record(&data, offset) {
        offset = next;
    }
    assert!(data[offset..].iter().all(|&b| b == 0), "only zeros follow the records");
    offset as u64
}

#[tokio::test]
async fn torn_tail_is_ignored() {
    let dir = TestDir::new("torn");
    three_writes(&dir).await;
    let log = dir.only_log();
    let len = records_end(&log);
    File::options().write(true).open(&log).unwrap().set_len(len - 3).unwrap();

    let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
    let (kvs, revision) = store.range("").await.unwrap();
    assert_eq!(revision, 3, "only the cut-short last record is lost");
    assert_eq!(kvs.len(), 2);
    assert_eq!(put(&store, "four", "v").await.revision, 4);
    drop(store);

    // A zero-filled tail, as a file system may leave after a power loss.
    let log = dir.only_log();
    let mut file = File::options().append(true).open(&log).unwrap();
    file.write_all(&[0u8; 100]).unwrap();
    drop(file);
    let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
    assert_eq!(store.range("").await.unwrap().1, 4);
}

#[tokio::test]
async fn the_log_claims_its_space_ahead_of_its_records() {
    let dir = TestDir::new("preallocate");
    three_writes(&dir).await;
    let log = dir.only_log();
    assert_eq!(fs::metadata(&log).unwrap().len(), PREALLOCATE_BYTES, "the first record claimed the space");
    assert!(records_end(&log) < 1024);

    // Records that outgrow the claimed space claim the next step of it, and
    // all of them come back after a restart.
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
    let value = "v".repeat(1 << 20);
    for i in 0..6 {
        put(&store, &format!("big{i}"), &value).await;
    }
    drop(store);
    let log = dir.only_log();
    assert_eq!(fs::metadata(&log).unwrap().len(), 2 * PREALLOCATE_BYTES);
    assert!(records_end(&log) > PREALLOCATE_BYTES);
    let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
    let (kvs, revision) = store.range("").await.unwrap();
    assert_eq!((kvs.len(), revision), (9, 10));
    assert_eq!(store.get("big5").await.unwrap().unwrap().value, value.as_bytes());
}

#[test]
fn a_rotated_log_gives_back_the_space_it_did_not_use() {
    let dir = TestDir::new("rotate");
    fs::create_dir_all(dir.path()).unwrap();
    let mut wal = Wal::create(dir.path(), 1, false).unwrap();
    let mut record = RecordBuilder::new(1, 2);
    record.put("one", b"v", 0);
    let record = record.finish().unwrap();
    wal.append(&record).unwrap();
    let first = wal.path.clone();
    assert_eq!(fs::metadata(&first).unwrap().len(), PREALLOCATE_BYTES);
    wal.rotate(dir.path(), 2, false).unwrap();
    let end = (WAL_MAGIC.len() + record.len()) as u64;
    assert_eq!(fs::metadata(&first).unwrap().len(), end);
    assert_eq!(wal.obsolete, vec![first]);
    assert_eq!(wal.size, WAL_MAGIC.len() as u64);
}

#[tokio::test]
async fn zeros_after_the_records_of_an_earlier_log_are_its_unused_space() {
    // A crash after a rotation that did not make the old log's shorter
    // length durable leaves an earlier log that still ends in zeros.
    let dir = TestDir::new("zero-tail");
    three_writes(&dir).await;
    let mut record = RecordBuilder::new(4, 5);
    record.put("four", b"v", 0);
    let mut next = WAL_MAGIC.to_vec();
    next.extend(record.finish().unwrap());
    fs::write(log_path(dir.path(), 4), next).unwrap();
    let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
    let (kvs, revision) = store.range("").await.unwrap();
    assert_eq!((kvs.len(), revision), (4, 5));
}

#[tokio::test]
async fn corruption_in_the_middle_is_an_error() {
    let dir = TestDir::new("corrupt");
    three_writes(&dir).await;
    let log = dir.only_log();
    let mut data = fs::read(&log).unwrap();
    // Flip a byte in the first record's payload (past its header).
    data[WAL_MAGIC.len() + RECORD_HEADER_BYTES + 2] ^= 0xff;
    fs::write(&log, &data).unwrap();

    let err = EmbeddedStore::open(dir.path(), fast()).await.unwrap_err();
    match &err {
        StoreError::Corrupt { path, detail } => {
            assert_eq!(path, &log.display().to_string());
            assert!(detail.contains("offset 8"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(err.to_string().contains("checksum"), "{err}");

    // A damaged length field is caught by the header checksum rather than
    // read as a torn tail that would silently drop the later records.
    data[WAL_MAGIC.len() + 2] ^= 0x01;
    data[WAL_MAGIC.len() + RECORD_HEADER_BYTES + 2] ^= 0xff;
    fs::write(&log, &data).unwrap();
    let err = EmbeddedStore::open(dir.path(), fast()).await.unwrap_err();
    assert!(err.to_string().contains("header checksum"), "{err}");

    // A damaged snapshot is an error too.
    let dir = TestDir::new("corrupt-snapshot");
    three_writes(&dir).await;
    let snapshot = dir.path().join(SNAPSHOT_FILE);
    let mut data = fs::read(&snapshot).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&snapshot, &data).unwrap();
    let err = EmbeddedStore::open(dir.path(), fast()).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn compaction_writes_a_snapshot_and_starts_a_new_log() {
    let dir = TestDir::new("compaction");
    let opts = EmbeddedOptions { compact_log_bytes: 4096, ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open(dir.path(), opts.clone()).await.unwrap();
    let value = "x".repeat(100);
    for i in 0..300 {
        put(&store, &format!("k{:03}", i % 150), &value).await; // revisions 2..=301
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.compaction_in_flight() {
        assert!(Instant::now() < deadline, "compaction did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let logs = list_logs(dir.path()).unwrap();
    assert_eq!(logs.len(), 1, "old logs are deleted: {logs:?}");
    assert!(logs[0].0 > 1, "the log was rotated");
    let before = store.range("").await.unwrap();
    drop(store);

    let store = EmbeddedStore::open(dir.path(), opts).await.unwrap();
    assert_eq!(store.range("").await.unwrap(), before);
    assert_eq!(before.0.len(), 150);
    assert_eq!(before.0[0].version, 2);
    assert_eq!(put(&store, "next", "v").await.revision, 302);
}

#[tokio::test]
async fn recovery_skips_logs_a_snapshot_superseded() {
    // Simulate a crash between the snapshot rename and deleting the old
    // logs: the stale log must be skipped, not replayed twice.
    let dir = TestDir::new("stale-log");
    three_writes(&dir).await;
    let stale = fs::read(dir.only_log()).unwrap();
    let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
    put(&store, "four", "v").await;
    drop(store);
    fs::write(log_path(dir.path(), 1), stale).unwrap();
    let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
    assert_eq!(store.range("").await.unwrap().1, 5);
    assert_eq!(store.get("one").await.unwrap().unwrap().version, 1);
}

#[tokio::test]
async fn concurrent_writes_share_syncs() {
    let dir = TestDir::new("group-commit");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
    assert_eq!(store.range("").await.unwrap().1, 1, "an empty store is at revision 1, as etcd is");
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { put(&store, &format!("k{i}"), "v").await.revision }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap());
    }
    revisions.sort();
    assert_eq!(revisions, (2..=101).collect::<Vec<_>>());
}

const CRASH_DIR_VAR: &str = "DROVER_EMBEDDED_STORE_CRASH_DIR";

/// Not a test on its own: the child half of `acknowledged_writes_survive_sigkill`,
/// which runs this test binary again with the variable set. It writes
/// until it is killed, printing each revision once its write returned.
#[tokio::test]
async fn sigkill_child() {
    let Ok(dir) = std::env::var(CRASH_DIR_VAR) else {
        return;
    };
    // Without fsync, so that the test shows a write has reached the kernel
    // by the time it returns, which is all a SIGKILL needs.
    let store = EmbeddedStore::open(Path::new(&dir), fast()).await.unwrap();
    let mut stdout = io::stdout();
    for i in 0u64.. {
        let response = put(&store, &format!("k{i:08}"), "v").await;
        writeln!(stdout, "acked {}", response.revision).unwrap();
        stdout.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = TestDir::new("sigkill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store::embedded::tests::sigkill_child", "--nocapture"])
        .env(CRASH_DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = 0;
    let mut killed = false;
    for line in io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let Some(revision) = line.unwrap().strip_prefix("acked ").map(str::to_owned) else {
            continue;
        };
        acked = acked.max(revision.parse::<Revision>().unwrap());
        if acked >= 500 && !killed {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    child.wait().unwrap();
    assert!(killed, "the child stopped before it was killed");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
        let (kvs, revision) = store.range("").await.unwrap();
        assert!(revision >= acked, "revision {revision} lost acknowledged {acked}");
        assert_eq!(kvs.len() as Revision, revision - 1, "one key per revision");
    });
}

#[tokio::test]
async fn directory_lock_keeps_a_second_store_out() {
    let dir = TestDir::new("lock");
    let store = EmbeddedStore::open(dir.path(), fast()).await.unwrap();
    let err = EmbeddedStore::open(dir.path(), fast()).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("data directory {} is in use by another drover-coordinator", dir.path().display())),
        "{message}"
    );
    assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
    drop(store);
    EmbeddedStore::open(dir.path(), fast()).await.unwrap();
}

#[tokio::test]
async fn a_deleted_directory_stops_writes_and_keeps_its_path_locked() {
    for fsync in [true, false] {
        let dir = TestDir::new(if fsync { "deleted-sync" } else { "deleted-nosync" });
        let opts = EmbeddedOptions { fsync, ..EmbeddedOptions::default() };
        let store = EmbeddedStore::open(dir.path(), opts.clone()).await.unwrap();
        put(&store, "before", "v").await;
        assert_eq!(store.stopped_reason(), None);
        fs::remove_dir_all(dir.path()).unwrap();
        // With fsync, the next write fails at once; without, the idle
        // check stops the store within its interval.
        let deadline = Instant::now() + PLACE_CHECK_INTERVAL * 5;
        let err = loop {
            match store.txn(Txn::ops(vec![Op::put("after", "v")])).await {
                Err(e) => break e,
                Ok(_) if !fsync && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(_) => panic!("a write into a deleted directory succeeded (fsync {fsync})"),
            }
        };
        let want = format!("the data directory {} was deleted", dir.path().display());
        assert!(err.to_string().contains(&want), "{err}");
        assert!(store.stopped_reason().is_some_and(|r| r.contains(&want)));
        // The path made again cannot be taken while this store lives.
        let err = EmbeddedStore::open(dir.path(), opts.clone()).await.unwrap_err();
        assert!(err.to_string().contains("is in use by another drover-coordinator on this host"), "{err}");
        drop(store);
        EmbeddedStore::open(dir.path(), opts).await.unwrap();
    }
}

#[tokio::test]
async fn a_replaced_directory_or_a_deleted_log_stops_the_store() {
    let dir = TestDir::new("replaced");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
    put(&store, "k", "v").await;
    let moved = dir.path().with_extension("moved");
    fs::rename(dir.path(), &moved).unwrap();
    fs::create_dir(dir.path()).unwrap();
    let err = store.txn(Txn::ops(vec![Op::put("k", "w")])).await.unwrap_err();
    assert!(err.to_string().contains("was replaced by another directory"), "{err}");
    drop(store);
    fs::remove_dir_all(&moved).unwrap();

    let dir = TestDir::new("unlinked");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
    put(&store, "k", "v").await;
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("wal-") {
            fs::remove_file(path).unwrap();
        }
    }
    let err = store.txn(Txn::ops(vec![Op::put("k", "w")])).await.unwrap_err();
    assert!(err.to_string().contains("was deleted while in use"), "{err}");
}

#[test]
fn long_paths_get_a_short_lock_name() {
    let short = lock_name(Path::new("/var/lib/drover/store"));
    assert_eq!(short, b"drover-store:/var/lib/drover/store");
    let long = format!("/{}", "d/".repeat(100));
    let name = lock_name(Path::new(&long));
    assert!(name.len() <= 107, "{}", name.len());
    assert_ne!(name, lock_name(Path::new(&format!("/x{}", &long[2..]))), "different paths, different names");
}
