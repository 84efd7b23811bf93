//! The etcd backend's tests, against real etcd processes (the `etcd` binary
//! on `PATH`, or `DROVER_TEST_ETCD`): the shared conformance suite, and what
//! only this backend does (prefixes, splitting to etcd's limits, compaction
//! across prefixes, failover, outages and recovery).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use super::txn::{OP_OVERHEAD_BYTES, REQUEST_BUDGET};
use super::*;
use crate::store::Compare;
use crate::store::conformance::{self, recv, recv_events};

/// The etcd binary; CI installs Debian's etcd-server.
fn etcd_binary() -> String {
    std::env::var("DROVER_TEST_ETCD").unwrap_or_else(|_| "etcd".to_owned())
}

/// A free port from below the kernel's ephemeral range, each handed out
/// once: no outgoing connection of a parallel test can take it while a
/// member is down for a restart (the harness in integration-tests does
/// the same for its etcd clusters).
fn free_port() -> u16 {
    static NEXT: std::sync::Mutex<Option<u16>> = std::sync::Mutex::new(None);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let floor = 10_000u16.min(low / 2);
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    // Start where another test process (the end-to-end tests) is unlikely to.
    let mut port = next.unwrap_or(low - 1 - (std::process::id() % u32::from(low - floor)) as u16);
    for _ in floor..low {
        let candidate = port;
        port = if port <= floor { low - 1 } else { port - 1 };
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            *next = Some(port);
            return candidate;
        }
    }
    panic!("no free port between {floor} and {low}");
}

/// A real single-member etcd on free ports with its own data directory,
/// killed and removed on drop.
struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    fn start(name: &str) -> Etcd {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("drover-etcd-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test directory");
        let mut etcd = Etcd { child: None, dir, client_port: free_port(), peer_port: free_port() };
        etcd.spawn();
        etcd
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("open the etcd log");
        let child = Command::new(etcd_binary())
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            // A fast election, so that a test does not wait a second or
            // two for its member to lead.
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}): the etcd store tests need a real etcd on PATH \
                     (Debian: apt-get install etcd-server), or DROVER_TEST_ETCD set to its path",
                    etcd_binary()
                )
            });
        self.child = Some(child);
    }

    /// Waits until etcd answers a read, or fails the test with its log.
    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("etcd exited with {status} during startup:\n{}", self.log());
            }
            let opts = EtcdOptions { endpoints: vec![self.url()], ..test_options() };
            if EtcdStore::connect(opts).await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become ready in 20 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn started(name: &str) -> Etcd {
        let mut etcd = Etcd::start(name);
        etcd.ready().await;
        etcd
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An etcd-client of its own, for what the store does not offer.
    async fn raw_client(&self) -> Client {
        Client::connect([self.url()], None).await.expect("connect a raw client")
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("etcd is running").id();
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped (SIGSTOP) process.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn test_options() -> EtcdOptions {
    EtcdOptions {
        endpoints: Vec::new(),
        prefix: "/drover".to_owned(),
        tls: None,
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
    }
}

async fn store_on(etcd: &Etcd, prefix: &str) -> Arc<EtcdStore> {
    let opts = EtcdOptions { endpoints: vec![etcd.url()], prefix: prefix.to_owned(), ..test_options() };
    EtcdStore::connect(opts).await.expect("connect to etcd")
}

async fn put(store: &EtcdStore, key: &str, value: &str) -> TxnResponse {
    store.txn(Txn::ops(vec![Op::put(key, value)])).await.expect("put")
}

/// The conformance suite on one etcd, each case under a key prefix of
/// its own.
struct EtcdBackend {
    etcd: Etcd,
}

impl conformance::Backend for EtcdBackend {
    type Store = EtcdStore;

    async fn open(&self, case: &str) -> Arc<EtcdStore> {
        store_on(&self.etcd, &format!("/conformance/{case}")).await
    }

    async fn compact(&self, store: &EtcdStore, revision: Revision) {
        store.compact(revision).await.expect("compact");
    }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    conformance::run(&EtcdBackend { etcd: Etcd::started("conformance").await }).await;
}

#[test]
fn ttls_round_up_to_whole_seconds() {
    assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
    assert_eq!(ttl_seconds(Duration::from_secs(2)), 2);
    assert_eq!(ttl_seconds(Duration::ZERO), 1);
}

#[tokio::test]
async fn compaction_is_cluster_wide_and_idempotent() {
    let etcd = Etcd::started("compact").await;
    let a = store_on(&etcd, "/a").await;
    let b = store_on(&etcd, "/b").await;
    let r1 = put(&b, "/k", "1").await.revision;
    let r2 = put(&a, "/k", "2").await.revision;

    // etcd has one history: a compaction through one prefix compacts
    // every prefix's.
    a.compact(r2).await.expect("compact");
    let mut old = b.watch("/", r1).await.unwrap();
    assert_eq!(recv(&mut old).await, WatchMessage::Compacted { compact_revision: r2 });
    // Compacting what is already compacted (by another coordinator, or
    // etcd's own auto-compaction) is not an error.
    b.compact(r1).await.expect("compacting below the compacted revision");
    a.compact(r2).await.expect("compacting the compacted revision again");
}

#[tokio::test]
async fn prefixes_keep_deployments_apart() {
    let etcd = Etcd::started("prefix").await;
    let a = store_on(&etcd, "/a").await;
    let b = store_on(&etcd, "/b").await;
    let mut watch_a = a.watch("/", 0).await.unwrap();

    put(&a, "/k", "from a").await;
    put(&b, "/k", "from b").await;
    put(&b, "/only-b", "b").await;

    assert_eq!(a.get("/k").await.unwrap().unwrap().value, b"from a");
    assert_eq!(b.get("/k").await.unwrap().unwrap().value, b"from b");
    let keys = |kvs: Vec<KeyValue>| kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    assert_eq!(keys(a.range("/").await.unwrap().0), ["/k"]);
    assert_eq!(keys(b.range("/").await.unwrap().0), ["/k", "/only-b"]);
    let gets = a.txn(Txn::ops(vec![Op::Get { key: "/k".into() }])).await.unwrap().gets;
    assert_eq!(gets[0].as_ref().unwrap().key, "/k");

    // The keys really are stored under the prefixes.
    let mut raw = etcd.raw_client().await;
    let raw_keys: Vec<String> = raw
        .get("/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    assert_eq!(raw_keys, ["/a/k", "/b/k", "/b/only-b"]);
    // Without a prefix the empty prefix is every key (etcd-client spells
    // that `\0` to `\0`).
    let all = store_on(&etcd, "").await;
    assert_eq!(keys(all.range("").await.unwrap().0), ["/a/k", "/b/k", "/b/only-b"]);

    // a's watch sees only a's write, with the prefix stripped.
    let events = recv_events(&mut watch_a).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kv.key, "/k");
    assert_eq!(events[0].kv.value, b"from a");
    put(&a, "/k2", "again").await;
    assert_eq!(recv_events(&mut watch_a).await[0].kv.key, "/k2");

    // A prefix delete in b leaves a alone.
    b.txn(Txn::ops(vec![Op::DeletePrefix { prefix: String::new() }])).await.unwrap();
    assert!(b.range("").await.unwrap().0.is_empty());
    assert_eq!(a.range("").await.unwrap().0.len(), 2);
}

#[tokio::test]
async fn large_transactions_are_split_or_refused() {
    let etcd = Etcd::started("split").await;
    let store = store_on(&etcd, "/drover").await;
    let before = store.txn(Txn::default()).await.unwrap().revision;

    // More ops than etcd allows in one transaction, a key written twice
    // and a prefix delete followed by a put under it: the parts run in
    // order and every write lands.
    let mut ops: Vec<Op> = (0..300).map(|i| Op::put(format!("/many/{i:03}"), format!("v{i}"))).collect();
    ops.push(Op::put("/many/000", "again"));
    ops.push(Op::Get { key: "/many/000".into() });
    ops.push(Op::DeletePrefix { prefix: "/many/1".into() });
    ops.push(Op::put("/many/150", "back"));
    let resp = store.txn(Txn::ops(ops)).await.unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.gets.len(), 1);
    assert_eq!(resp.gets[0].as_ref().unwrap().value, b"again");
    let (kvs, revision) = store.range("/many/").await.unwrap();
    assert_eq!(resp.revision, revision);
    assert!(revision >= before + 3, "split into at least three transactions");
    assert_eq!(kvs.len(), 300 - 100 + 1);
    assert_eq!(store.get("/many/000").await.unwrap().unwrap().value, b"again");
    assert_eq!(store.get("/many/150").await.unwrap().unwrap().value, b"back");
    assert_eq!(store.get("/many/151").await.unwrap(), None);

    // More bytes than one request may carry: split by size too.
    let big = vec![7u8; 300 * 1024];
    let ops = (0..12).map(|i| Op::put(format!("/big/{i:02}"), big.clone())).collect();
    store.txn(Txn::ops(ops)).await.unwrap();
    let (kvs, _) = store.range("/big/").await.unwrap();
    assert_eq!(kvs.len(), 12);
    assert!(kvs.iter().all(|kv| kv.value == big));

    // A value that cannot fit in any request is refused before sending.
    let huge = Op::put("/huge", vec![0u8; MAX_REQUEST_BYTES]);
    match store.txn(Txn::ops(vec![huge])).await {
        Err(StoreError::ValueTooLarge { key, size, limit }) => {
            assert_eq!((key.as_str(), size), ("/huge", MAX_REQUEST_BYTES));
            assert!(limit < MAX_REQUEST_BYTES && limit > MAX_REQUEST_BYTES - 8192, "limit {limit}");
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    // The largest value the error names does go through.
    let limit = REQUEST_BUDGET - OP_OVERHEAD_BYTES - "/drover/huge".len();
    store.txn(Txn::ops(vec![Op::put("/huge", vec![1u8; limit])])).await.unwrap();

    // With compares nothing is split: too many ops, or a key written
    // twice, is refused.
    let guarded =
        |success: Vec<Op>| Txn { compare: vec![Compare::ModRevision("/g".into(), 0)], success, failure: vec![] };
    let too_many = (0..=MAX_TXN_OPS).map(|i| Op::put(format!("/g/{i}"), "x")).collect();
    match store.txn(guarded(too_many)).await {
        Err(StoreError::Rejected(msg)) => assert!(msg.contains("128"), "{msg}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    let twice = vec![Op::put("/g/1", "a"), Op::put("/g/1", "b")];
    assert!(matches!(store.txn(guarded(twice)).await, Err(StoreError::Rejected(_))));
    let exactly = (0..MAX_TXN_OPS).map(|i| Op::put(format!("/g/{i}"), "x")).collect();
    assert!(store.txn(guarded(exactly)).await.unwrap().succeeded);
}

#[tokio::test]
async fn an_unreachable_etcd_is_unavailable_within_the_timeout() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let opts =
        EtcdOptions { endpoints: vec![endpoint.clone()], request_timeout: Duration::from_secs(1), ..test_options() };
    let started = Instant::now();
    match EtcdStore::connect(opts).await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains(&endpoint), "{msg}"),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

    // Bad options are refused up front.
    let https = EtcdOptions { endpoints: vec!["https://127.0.0.1:1".into()], ..test_options() };
    assert!(matches!(EtcdStore::connect(https).await, Err(StoreError::Rejected(_))));
    let no_file = EtcdOptions {
        endpoints: vec!["https://127.0.0.1:1".into()],
        tls: Some(EtcdTls { ca: "/nonexistent/ca.pem".into(), cert: None, key: None }),
        ..test_options()
    };
    assert!(matches!(EtcdStore::connect(no_file).await, Err(StoreError::Io { .. })));
}

#[tokio::test]
async fn the_store_recovers_when_etcd_comes_back() {
    let mut etcd = Etcd::started("restart").await;
    let store = store_on(&etcd, "/drover").await;
    let written = put(&store, "/survives", "yes").await.revision;
    let mut watch = store.watch("/", 0).await.unwrap();

    // A frozen etcd: calls give up after the request timeout.
    etcd.signal("-STOP");
    let started = Instant::now();
    let frozen = store.get("/survives").await;
    etcd.signal("-CONT");
    assert!(matches!(frozen, Err(StoreError::Unavailable(_))), "{frozen:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert_eq!(store.get("/survives").await.unwrap().unwrap().mod_revision, written);

    // A dead etcd: the watch closes, calls fail fast.
    etcd.kill();
    let closed = tokio::time::timeout(Duration::from_secs(5), watch.recv()).await.expect("watch closes in time");
    assert_eq!(closed, None);
    match store.txn(Txn::ops(vec![Op::put("/lost", "x")])).await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains(&etcd.url()), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // The same store works again once etcd is back on the same ports.
    etcd.spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    let kv = loop {
        match store.get("/survives").await {
            Ok(kv) => break kv,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd did not come back: {e}\n{}", etcd.log()),
        }
    };
    assert_eq!(kv.unwrap().value, b"yes");
    let mut watch = store.watch("/", 0).await.unwrap();
    put(&store, "/after", "restart").await;
    assert_eq!(recv_events(&mut watch).await[0].kv.key, "/after");
}

#[tokio::test]
async fn a_dead_member_is_skipped_and_shown_unhealthy() {
    let etcd = Etcd::started("health").await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    // The dead endpoint comes first, so every call starts there.
    let opts = EtcdOptions { endpoints: vec![dead.clone(), etcd.url()], ..test_options() };
    let store = EtcdStore::connect(opts).await.expect("connect with one live member");

    // The probe in `connect` already moved on to the live member; start
    // over at the dead one to see that even a transaction, which is never
    // resent when it may have been applied, is resent after a refused
    // connection.
    store.current.store(0, Ordering::Relaxed);
    for i in 0..5 {
        put(&store, &format!("/k/{i}"), "v").await;
    }
    assert_eq!(store.range("/k/").await.unwrap().0.len(), 5);
    let mut watch = store.watch("/k/", 1).await.unwrap();
    assert_eq!(recv_events(&mut watch).await[0].kv.key, "/k/0");

    let health = store.endpoint_health().await;
    assert_eq!(health.len(), 2);
    assert_eq!(health[0].endpoint, dead);
    assert!(!health[0].healthy, "{health:?}");
    assert_eq!(health[1].endpoint, etcd.url());
    assert!(health[1].healthy, "{health:?}");
    assert!(health[1].detail.contains("version 3.") && health[1].detail.contains("leader"), "{health:?}");
}

#[test]
fn unconditional_transactions_split_where_etcd_needs_it() {
    let store_prefix = |prefix: &str| EtcdStore {
        members: Vec::new(),
        current: AtomicUsize::new(0),
        prefix: prefix.to_owned(),
        request_timeout: Duration::from_secs(1),
        label: String::new(),
    };
    let store = store_prefix("/drover");
    let lens = |ops: Vec<Op>| store.split_unconditional(ops, 0).iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(lens(Vec::new()), [0]);
    let puts = |n: usize| (0..n).map(|i| Op::put(format!("/{i}"), "v")).collect::<Vec<_>>();
    assert_eq!(lens(puts(MAX_TXN_OPS)), [MAX_TXN_OPS]);
    assert_eq!(lens(puts(2 * MAX_TXN_OPS + 1)), [MAX_TXN_OPS, MAX_TXN_OPS, 1]);
    // Writes etcd will not combine start a new transaction.
    assert_eq!(lens(vec![Op::put("/a", "1"), Op::put("/a", "2")]), [1, 1]);
    assert_eq!(lens(vec![Op::put("/a", "1"), Op::delete("/a"), Op::delete("/a")]), [1, 2]);
    assert_eq!(lens(vec![Op::DeletePrefix { prefix: "/a".into() }, Op::put("/ab", "1")]), [1, 1]);
    assert_eq!(lens(vec![Op::put("/ab", "1"), Op::DeletePrefix { prefix: "/a".into() }]), [1, 1]);
    assert_eq!(lens(vec![Op::put("/a", "1"), Op::Get { key: "/a".into() }, Op::put("/b", "1")]), [3]);
    // Order is kept.
    let keys: Vec<Vec<Op>> =
        store.split_unconditional(vec![Op::put("/a", "1"), Op::put("/a", "2"), Op::put("/b", "3")], 0);
    assert_eq!(keys, vec![vec![Op::put("/a", "1")], vec![Op::put("/a", "2"), Op::put("/b", "3")]]);
    // Size: three puts of 500 KiB fit in one request, four do not.
    let big = |i: usize| Op::put(format!("/{i}"), vec![0u8; 500 * 1024]);
    assert_eq!(lens((0..5).map(big).collect()), [3, 2]);
    // What callers split leaves room for their compares (a fence).
    // (15 puts of 104,000 bytes fill all but 8 KiB of a request.)
    let small = |n: usize| (0..n).map(|i| Op::put(format!("/{i}"), vec![0u8; 104_000])).collect::<Vec<_>>();
    assert_eq!(lens(small(15)), [15]);
    assert_eq!(store.split(small(15)).iter().map(Vec::len).collect::<Vec<_>>(), [14, 1]);
}
