//! The store conformance suite: the behaviour that every [`Store`] backend
//! must share, written once and run against each backend by one test in
//! that backend's own test module (`embedded::tests::passes_the_conformance_suite`
//! in a temporary directory, `etcd::tests::passes_the_conformance_suite`
//! against a real etcd process). The scheduler and the election rely on
//! exactly these semantics, whichever store a coordinator runs on.
//!
//! What only one backend does is tested next to it: the embedded store's
//! log, snapshots, recovery, directory lock and watch history limits; etcd's
//! key prefixes, transaction splitting, endpoint failover and TLS options.
//!
//! Every case gets a store of its own, which sees no other case's keys. On
//! etcd the stores of one run share the cluster's revision counter, so the
//! cases compare revisions with each other, never with fixed numbers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    Compare, EventKind, KeyValue, LeaseId, Op, Revision, Store, StoreError, Txn, TxnResponse, WatchEvent, WatchMessage,
};

/// What the suite needs of a backend besides the [`Store`] calls.
pub(crate) trait Backend {
    type Store: Store;

    /// A store for one case, empty of every other case's keys.
    async fn open(&self, case: &str) -> Arc<Self::Store>;

    /// Drops the history before `revision`, so that a watch from an older
    /// revision gets [`WatchMessage::Compacted`] with `revision`, as after
    /// etcd's compaction.
    async fn compact(&self, store: &Self::Store, revision: Revision);
}

/// Runs every case against the backend, each on a store of its own. The
/// case's name goes to stderr first, so a failure's captured output names it.
pub(crate) async fn run<B: Backend>(backend: &B) {
    macro_rules! case {
        ($case:ident) => {{
            eprintln!("store conformance case: {}", stringify!($case));
            let store: Arc<dyn Store> = backend.open(stringify!($case)).await;
            $case(store).await;
        }};
    }
    case!(txn_compares_choose_the_branch);
    case!(revisions_and_versions_follow_etcd);
    case!(range_is_in_key_order_and_delete_prefix_is_one_revision);
    case!(limits_and_unknown_leases_are_refused_without_effect);
    case!(watch_replays_history_then_goes_live);
    eprintln!("store conformance case: watch_from_a_compacted_revision");
    watch_from_a_compacted_revision(backend).await;
    case!(leases_expire_unless_kept_alive);
    case!(revoking_a_lease_deletes_its_keys_at_once);
}

/// The store's current revision.
async fn revision(store: &dyn Store) -> Revision {
    store.txn(Txn::default()).await.expect("read the revision").revision
}

async fn put(store: &dyn Store, key: &str, value: &str) -> TxnResponse {
    store.txn(Txn::ops(vec![Op::put(key, value)])).await.expect("put")
}

fn leased(key: &str, value: &str, lease: LeaseId) -> Op {
    Op::Put { key: key.into(), value: value.into(), lease }
}

/// The next watch message, failing the test if none comes within 5 s or the
/// watch closes.
pub(crate) async fn recv(rx: &mut mpsc::Receiver<WatchMessage>) -> WatchMessage {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("watch message in time")
        .expect("watch still open")
}

pub(crate) async fn recv_events(rx: &mut mpsc::Receiver<WatchMessage>) -> Vec<WatchEvent> {
    match recv(rx).await {
        WatchMessage::Events(events) => events,
        other => panic!("expected events, got {other:?}"),
    }
}

/// Waits for the watch to close, failing the test if it does not within 5 s
/// or delivers anything first.
async fn closes(rx: &mut mpsc::Receiver<WatchMessage>) {
    let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("watch closes in time");
    assert_eq!(next, None, "the watch should have closed");
}

pub(crate) fn summary(events: &[WatchEvent]) -> Vec<(EventKind, String, Revision)> {
    events.iter().map(|e| (e.kind.clone(), e.kv.key.clone(), e.kv.mod_revision)).collect()
}

async fn txn_compares_choose_the_branch(store: Arc<dyn Store>) {
    let base = revision(&*store).await;

    // Create-if-absent succeeds once, then takes the failure branch; a get
    // after a put in the same branch sees the put.
    let create = |value: &str| Txn {
        compare: vec![Compare::CreateRevision("/lock".into(), 0)],
        success: vec![Op::put("/lock", value), Op::Get { key: "/lock".into() }],
        failure: vec![Op::Get { key: "/lock".into() }, Op::Get { key: "/missing".into() }],
    };
    let first = store.txn(create("a")).await.unwrap();
    assert!(first.succeeded);
    assert_eq!(first.revision, base + 1);
    assert_eq!(first.gets.len(), 1);
    let kv = first.gets[0].clone().expect("a get after the put sees it");
    assert_eq!((kv.key.as_str(), kv.value.as_slice()), ("/lock", b"a".as_slice()));
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.lease), (first.revision, first.revision, 1, 0));
    let second = store.txn(create("b")).await.unwrap();
    assert!(!second.succeeded);
    assert_eq!(second.revision, first.revision, "a failed compare with a read-only branch writes nothing");
    assert_eq!(second.gets, vec![Some(kv.clone()), None]);

    // Revision 0 means absent, for the create and for the mod revision.
    let holds = |compare: Compare| Txn { compare: vec![compare], ..Txn::default() };
    assert!(!store.txn(holds(Compare::CreateRevision("/lock".into(), 0))).await.unwrap().succeeded);
    assert!(!store.txn(holds(Compare::ModRevision("/lock".into(), 0))).await.unwrap().succeeded);
    assert!(store.txn(holds(Compare::CreateRevision("/nope".into(), 0))).await.unwrap().succeeded);
    assert!(store.txn(holds(Compare::ModRevision("/nope".into(), 0))).await.unwrap().succeeded);
    assert!(store.txn(holds(Compare::CreateRevision("/lock".into(), first.revision))).await.unwrap().succeeded);

    // A value compare holds on an equal value, never on a missing key (not
    // even against the empty value).
    assert!(store.txn(holds(Compare::Value("/lock".into(), b"a".to_vec()))).await.unwrap().succeeded);
    assert!(!store.txn(holds(Compare::Value("/lock".into(), b"b".to_vec()))).await.unwrap().succeeded);
    assert!(!store.txn(holds(Compare::Value("/nope".into(), Vec::new()))).await.unwrap().succeeded);

    // Every compare must hold.
    let both = Txn {
        compare: vec![Compare::Value("/lock".into(), b"a".to_vec()), Compare::ModRevision("/lock".into(), 0)],
        success: vec![Op::put("/both", "v")],
        failure: vec![],
    };
    assert!(!store.txn(both).await.unwrap().succeeded);
    assert_eq!(store.get("/both").await.unwrap(), None);

    // Compare-and-swap on the mod revision: a stale one fails, the current
    // one succeeds.
    let cas = |rev: Revision| Txn {
        compare: vec![Compare::ModRevision("/lock".into(), rev)],
        success: vec![Op::put("/lock", "c")],
        failure: vec![],
    };
    assert!(!store.txn(cas(kv.mod_revision - 1)).await.unwrap().succeeded);
    let swapped = store.txn(cas(kv.mod_revision)).await.unwrap();
    assert!(swapped.succeeded);
    assert_eq!(swapped.revision, first.revision + 1);
    assert_eq!(store.get("/lock").await.unwrap().unwrap().value, b"c");

    // A get sees the earlier ops of its own branch, deletes included.
    let by_value = Txn {
        compare: vec![Compare::Value("/lock".into(), b"c".to_vec())],
        success: vec![Op::delete("/lock"), Op::Get { key: "/lock".into() }],
        failure: vec![],
    };
    let deleted = store.txn(by_value).await.unwrap();
    assert!(deleted.succeeded);
    assert_eq!(deleted.gets, vec![None]);
    assert!(store.txn(cas(0)).await.unwrap().succeeded, "ModRevision 0 holds again once the key is deleted");
}

async fn revisions_and_versions_follow_etcd(store: Arc<dyn Store>) {
    let r1 = put(&*store, "/k", "1").await.revision;
    let r2 = put(&*store, "/k", "2").await.revision;
    assert_eq!(r2, r1 + 1, "every write is one revision");
    let kv = store.get("/k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.lease), (r1, r2, 2, 0));

    // All writes of one transaction share one revision.
    let multi = Txn::ops(vec![Op::put("/a", "x"), Op::put("/b", "y"), Op::delete("/k")]);
    let r3 = store.txn(multi).await.unwrap().revision;
    assert_eq!(r3, r2 + 1);
    assert_eq!(store.get("/a").await.unwrap().unwrap().mod_revision, r3);
    assert_eq!(store.get("/b").await.unwrap().unwrap().mod_revision, r3);
    assert_eq!(store.get("/k").await.unwrap(), None);

    // Writes that change nothing, and reads, leave the revision alone.
    assert_eq!(store.txn(Txn::ops(vec![Op::delete("/never")])).await.unwrap().revision, r3);
    let read = Txn::ops(vec![Op::Get { key: "/a".into() }]);
    assert_eq!(store.txn(read).await.unwrap().revision, r3);
    assert_eq!(store.range("/").await.unwrap().1, r3);

    // A deleted and re-created key starts its history again.
    let r4 = put(&*store, "/k", "3").await.revision;
    assert_eq!(r4, r3 + 1);
    let kv = store.get("/k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r4, r4, 1));
}

async fn range_is_in_key_order_and_delete_prefix_is_one_revision(store: Arc<dyn Store>) {
    for key in ["/runs/3", "/runs/1", "/runs/10", "/agents/1", "/runs/2", "/runsx", "/runs/1/a"] {
        put(&*store, key, key).await;
    }
    // Byte order whatever the order of the writes, with the revision the
    // listing was taken at.
    let (kvs, listed_at) = store.range("/runs/").await.unwrap();
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/runs/1", "/runs/1/a", "/runs/10", "/runs/2", "/runs/3"]);
    assert_eq!(kvs[0].value, b"/runs/1");
    assert_eq!(listed_at, revision(&*store).await);
    let (all, _) = store.range("/").await.unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all[0].key, "/agents/1");
    assert!(store.range("/nothing/").await.unwrap().0.is_empty());

    // A prefix delete takes exactly the keys under the prefix, in one
    // revision, which a watcher sees as one batch in key order.
    let mut rx = store.watch("/", 0).await.unwrap();
    let deleted = store.txn(Txn::ops(vec![Op::DeletePrefix { prefix: "/runs/".into() }])).await.unwrap();
    assert_eq!(deleted.revision, listed_at + 1, "one revision for the whole prefix");
    assert!(store.range("/runs/").await.unwrap().0.is_empty());
    assert_eq!(store.range("/runs").await.unwrap().0.len(), 1, "/runsx stays");
    let events = recv_events(&mut rx).await;
    let at = deleted.revision;
    let expected: Vec<_> = keys.iter().map(|key| (EventKind::Delete, key.to_string(), at)).collect();
    assert_eq!(summary(&events), expected);
}

async fn limits_and_unknown_leases_are_refused_without_effect(store: Arc<dyn Store>) {
    let before = revision(&*store).await;

    // A value over the limit is refused, naming the key, its size and the
    // limit; a value of exactly the limit is taken.
    let size = 1536 * 1024 + 1;
    let limit = match store.txn(Txn::ops(vec![Op::put("/big", vec![0u8; size])])).await {
        Err(StoreError::ValueTooLarge { key, size: reported, limit }) => {
            assert_eq!((key.as_str(), reported), ("/big", size));
            assert!(limit < size, "limit {limit}");
            limit
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    };
    let over = Txn::ops(vec![Op::put("/big", vec![1u8; limit + 1])]);
    assert!(matches!(store.txn(over).await, Err(StoreError::ValueTooLarge { .. })));
    store.txn(Txn::ops(vec![Op::put("/big", vec![1u8; limit])])).await.unwrap();
    assert_eq!(store.get("/big").await.unwrap().unwrap().value.len(), limit);

    // Both branches are checked, whichever one the compares select.
    let guarded = Txn {
        compare: vec![Compare::CreateRevision("/absent".into(), 0)],
        success: vec![Op::put("/small", "v")],
        failure: vec![Op::put("/big", vec![0u8; size])],
    };
    assert!(matches!(store.txn(guarded).await, Err(StoreError::ValueTooLarge { .. })));
    assert_eq!(store.get("/small").await.unwrap(), None);

    // A put with an unknown lease fails the whole transaction.
    let err = store.txn(Txn::ops(vec![Op::put("/y", "v"), leased("/x", "v", 42)])).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound(42)), "{err:?}");
    assert_eq!(store.get("/y").await.unwrap(), None, "a refused transaction changes nothing");
    assert!(matches!(store.lease_keep_alive(7).await, Err(StoreError::LeaseNotFound(7))));
    assert!(matches!(store.lease_revoke(7).await, Err(StoreError::LeaseNotFound(7))));
    assert_eq!(revision(&*store).await, before + 1, "only the put at the limit was written");
}

async fn watch_replays_history_then_goes_live(store: Arc<dyn Store>) {
    let r1 = put(&*store, "/w/a", "1").await.revision;
    let r2 = store.txn(Txn::ops(vec![Op::put("/w/b", "2"), Op::put("/w/c", "3")])).await.unwrap().revision;
    put(&*store, "/other", "x").await;
    let r3 = store.txn(Txn::ops(vec![Op::delete("/w/a")])).await.unwrap().revision;

    // From a past revision: every revision under the prefix, one message
    // each, in order; deletes carry their revision and an empty value.
    let mut rx = store.watch("/w/", r1).await.unwrap();
    assert_eq!(summary(&recv_events(&mut rx).await), [(EventKind::Put, "/w/a".to_owned(), r1)]);
    assert_eq!(
        summary(&recv_events(&mut rx).await),
        [(EventKind::Put, "/w/b".to_owned(), r2), (EventKind::Put, "/w/c".to_owned(), r2)]
    );
    let delete = recv_events(&mut rx).await;
    assert_eq!(summary(&delete), [(EventKind::Delete, "/w/a".to_owned(), r3)]);
    assert!(delete[0].kv.value.is_empty());

    // Then live: one batch per revision, its events in the order of the
    // transaction's ops, only those under the prefix.
    let txn = Txn::ops(vec![Op::put("/w/d", "4"), Op::delete("/w/b"), Op::put("/zzz", "v")]);
    let r4 = store.txn(txn).await.unwrap().revision;
    let live = recv_events(&mut rx).await;
    assert_eq!(summary(&live), [(EventKind::Put, "/w/d".to_owned(), r4), (EventKind::Delete, "/w/b".to_owned(), r4)]);
    assert_eq!((live[0].kv.create_revision, live[0].kv.version, live[0].kv.value.as_slice()), (r4, 1, &b"4"[..]));
    assert!(live[1].kv.value.is_empty());

    // Start 0 means from now on: a write made right after `watch` returns
    // is seen.
    let mut from_now = store.watch("/w/", 0).await.unwrap();
    let r5 = put(&*store, "/w/e", "5").await.revision;
    assert_eq!(summary(&recv_events(&mut from_now).await), [(EventKind::Put, "/w/e".to_owned(), r5)]);

    // A start in the future skips the revisions before it.
    let mut future = store.watch("/w/", r5 + 2).await.unwrap();
    put(&*store, "/w/f", "6").await;
    let r7 = put(&*store, "/w/g", "7").await.revision;
    assert_eq!(r7, r5 + 2);
    assert_eq!(summary(&recv_events(&mut future).await), [(EventKind::Put, "/w/g".to_owned(), r7)]);
}

async fn watch_from_a_compacted_revision<B: Backend>(backend: &B) {
    let concrete = backend.open("watch_from_a_compacted_revision").await;
    let store: Arc<dyn Store> = concrete.clone();
    let r1 = put(&*store, "/c/a", "1").await.revision;
    let r2 = put(&*store, "/c/b", "2").await.revision;
    let r3 = put(&*store, "/c/c", "3").await.revision;
    backend.compact(&concrete, r2).await;

    // A watch from before the compaction learns so, and then closes: the
    // watcher must relist and watch again.
    let mut old = store.watch("/c/", r1).await.unwrap();
    assert_eq!(recv(&mut old).await, WatchMessage::Compacted { compact_revision: r2 });
    closes(&mut old).await;

    // From the compaction revision on, the history is still there.
    let mut rx = store.watch("/c/", r2).await.unwrap();
    assert_eq!(summary(&recv_events(&mut rx).await), [(EventKind::Put, "/c/b".to_owned(), r2)]);
    assert_eq!(summary(&recv_events(&mut rx).await), [(EventKind::Put, "/c/c".to_owned(), r3)]);
    let r4 = put(&*store, "/c/d", "4").await.revision;
    assert_eq!(summary(&recv_events(&mut rx).await), [(EventKind::Put, "/c/d".to_owned(), r4)]);
}

async fn leases_expire_unless_kept_alive(store: Arc<dyn Store>) {
    // Two seconds is etcd's minimum TTL in the test cluster.
    let ttl = Duration::from_secs(2);
    let doomed = store.lease_grant(ttl).await.unwrap();
    let kept = store.lease_grant(ttl).await.unwrap();
    assert_ne!(doomed, kept);
    let ops = vec![
        leased("/l/a", "x", doomed),
        leased("/l/b", "y", doomed),
        leased("/l/kept", "z", kept),
        Op::put("/l/plain", "p"),
    ];
    let written = store.txn(Txn::ops(ops)).await.unwrap().revision;
    assert_eq!(store.get("/l/a").await.unwrap().unwrap().lease, doomed);
    assert_eq!(store.get("/l/kept").await.unwrap().unwrap().lease, kept);
    let mut rx = store.watch("/l/", 0).await.unwrap();

    // Keep one lease alive until the other expires, which deletes its keys
    // in one revision.
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        tokio::select! {
            message = rx.recv() => break message.expect("watch still open"),
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                assert!(Instant::now() < deadline, "the unrenewed lease did not expire");
                store.lease_keep_alive(kept).await.unwrap();
            }
        }
    };
    let WatchMessage::Events(events) = expired else { panic!("expected events, got {expired:?}") };
    let at = events[0].kv.mod_revision;
    assert!(at > written);
    assert_eq!(summary(&events), [(EventKind::Delete, "/l/a".into(), at), (EventKind::Delete, "/l/b".into(), at)]);
    assert_eq!(store.get("/l/a").await.unwrap(), None);

    store.lease_keep_alive(kept).await.unwrap();
    assert!(store.get("/l/kept").await.unwrap().is_some(), "the renewed lease expired");
    assert!(store.get("/l/plain").await.unwrap().is_some(), "a key without a lease expired");
    // The expired lease is gone.
    assert!(matches!(store.lease_keep_alive(doomed).await, Err(StoreError::LeaseNotFound(id)) if id == doomed));
    let err = store.txn(Txn::ops(vec![leased("/l/c", "v", doomed)])).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound(id) if id == doomed), "{err:?}");
}

async fn revoking_a_lease_deletes_its_keys_at_once(store: Arc<dyn Store>) {
    let ttl = Duration::from_secs(60);
    let lease = store.lease_grant(ttl).await.unwrap();
    store.txn(Txn::ops(vec![leased("/r/a", "v", lease), leased("/r/b", "v", lease)])).await.unwrap();
    let before = put(&*store, "/r/c", "v").await.revision;

    let mut rx = store.watch("/r/", 0).await.unwrap();
    store.lease_revoke(lease).await.unwrap();
    let at = before + 1;
    assert_eq!(
        summary(&recv_events(&mut rx).await),
        [(EventKind::Delete, "/r/a".into(), at), (EventKind::Delete, "/r/b".into(), at)]
    );
    let keys = |kvs: Vec<KeyValue>| kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    assert_eq!(keys(store.range("/r/").await.unwrap().0), ["/r/c"]);
    // The lease is gone.
    assert!(matches!(store.lease_revoke(lease).await, Err(StoreError::LeaseNotFound(id)) if id == lease));
    assert!(matches!(store.lease_keep_alive(lease).await, Err(StoreError::LeaseNotFound(id)) if id == lease));
    let orphan = Txn::ops(vec![leased("/r/orphan", "v", lease)]);
    assert!(matches!(store.txn(orphan).await, Err(StoreError::LeaseNotFound(id)) if id == lease));

    // Revoking a lease without keys writes no revision.
    let empty = store.lease_grant(ttl).await.unwrap();
    store.lease_revoke(empty).await.unwrap();
    assert_eq!(revision(&*store).await, at);

    // Putting a key without its lease detaches it from the lease.
    let lease = store.lease_grant(ttl).await.unwrap();
    store.txn(Txn::ops(vec![leased("/r/moved", "leased", lease)])).await.unwrap();
    put(&*store, "/r/moved", "unleased").await;
    store.lease_revoke(lease).await.unwrap();
    let moved = store.get("/r/moved").await.unwrap().unwrap();
    assert_eq!((moved.value.as_slice(), moved.lease, moved.version), (&b"unleased"[..], 0, 2));
}
