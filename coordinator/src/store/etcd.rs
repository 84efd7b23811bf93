//! The etcd [`Store`] backend: every call maps onto etcd's KV, Watch, Lease
//! and Maintenance APIs through the `etcd-client` crate, so that several
//! coordinators can share one etcd cluster.
//!
//! # Keys
//!
//! Every key is stored as `prefix + key` (default prefix `/drover`), and the
//! prefix is stripped from every key that comes back (ranges, gets, the gets of
//! a transaction, watch events). Drover's keys all start with `/`, so two
//! deployments with prefixes `/a` and `/b` never see each other's keys. Prefixes
//! where one is a prefix of the other (`/drover` and `/drover2`) are only kept
//! apart for keys that start with `/`: a range, watch or delete-prefix of the
//! empty prefix would reach into the other deployment.
//!
//! # Endpoints and failures
//!
//! `etcd-client` puts all endpoints behind one load-balanced channel, which does
//! not fail over: with one member down, about every n-th request fails with a
//! connection error (etcd-client issue #39). This backend therefore keeps one
//! client per endpoint and talks to one of them at a time. When the current
//! endpoint cannot be reached, it moves on to the next one, and it resends the
//! request there if that is safe: always when the request never reached a
//! server (connection refused, TLS failure) or was refused because the member
//! has no leader; and for everything but transactions (reads, watch creation,
//! lease calls) also after a timeout or a broken connection. A transaction
//! whose fate is unknown is not resent; the caller gets
//! [`StoreError::Unavailable`] and decides. (A lease grant whose answer was
//! lost leaks a lease, which expires after its TTL.)
//!
//! Every unary call is bounded by [`EtcdOptions::request_timeout`] over all the
//! endpoints it tries, so an unreachable or frozen etcd yields
//! [`StoreError::Unavailable`] (naming the endpoints) instead of a hang. The
//! clients reconnect lazily: once etcd is back, the next call works again.
//! Requests carry etcd's "require leader" flag, so a member cut off from its
//! quorum answers "no leader" at once instead of timing out.
//!
//! # Transactions and etcd's limits
//!
//! etcd refuses a transaction with more than `--max-txn-ops` (default 128)
//! compares or operations in either branch, and any request larger than
//! `--max-request-bytes` (default 1.5 MiB); it also refuses a transaction that
//! writes one key twice, or puts a key inside a prefix it deletes. The cluster
//! must run with at least these defaults. This backend handles the limits as
//! follows:
//!
//! * A put whose value alone would not fit in one request fails with
//!   [`StoreError::ValueTooLarge`] before anything is sent.
//! * A transaction **without compares** is split, in order, into as many etcd
//!   transactions as the limits require (at most [`MAX_TXN_OPS`] operations and
//!   [`MAX_REQUEST_BYTES`] each, and a new one wherever a key would be written
//!   twice). They run one after another; the response carries the last one's
//!   revision and the gets of all of them. Such a transaction is therefore not
//!   atomic: watchers see several revisions, and a failure part-way leaves the
//!   earlier parts applied. Unconditional puts and deletes are idempotent, so
//!   the caller can simply retry the whole transaction.
//! * A transaction **with compares** is sent as one etcd transaction, or fails
//!   with [`StoreError::Rejected`] if it breaks one of the limits above, since
//!   splitting it would lose its atomicity. Callers that add compares to a
//!   large write (the leader's fence) split it first with `Store::split`,
//!   which leaves room for them.
//!
//! # Watches
//!
//! A watch is one etcd watch stream with the prefix and start revision (0:
//! from now on). `watch` returns once etcd has confirmed the watch, so a write
//! made after it returns is always seen. Events are delivered one revision per
//! [`WatchMessage::Events`], as the embedded store does. If etcd reports that
//! the start revision was compacted, the watcher receives
//! [`WatchMessage::Compacted`] and the channel closes. If the stream breaks
//! (etcd stopped, the connection died, the member lost its leader), the
//! channel closes without a message: the receiver sees `None` and must relist
//! and watch again from the listing's revision, exactly as after `Compacted`.
//! A frozen etcd is noticed through HTTP/2 keep-alive pings within about
//! [`KEEPALIVE_INTERVAL`] plus the request timeout. Dropping the receiver ends
//! the forwarding task and with it the etcd watch.
//!
//! # Leases
//!
//! TTLs are whole seconds on etcd: a grant rounds up, to at least one second,
//! and etcd itself raises TTLs below its minimum (about 1.5 × the election
//! timeout). A keep-alive is one request and one response on a short-lived
//! keep-alive stream. Unlike the embedded store, etcd lease ids are large
//! numbers chosen by etcd.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity, PutOptions,
    TlsOptions, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{
    Compare, EndpointHealth, EventKind, KeyValue, LeaseId, Op, Result, Revision, Store, StoreError, Txn, TxnResponse,
    WatchEvent, WatchMessage,
};

/// The most compares, or operations in one branch, that one etcd transaction
/// may have: etcd's default `--max-txn-ops`. Unconditional transactions are
/// split to fit; callers must keep transactions with compares within it.
pub const MAX_TXN_OPS: usize = 128;

/// The largest request etcd accepts: its default `--max-request-bytes`
/// (1.5 MiB). Values are limited to what fits in one request by themselves.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Room left in every request for what etcd adds around a transaction before
/// it checks the size (the raft request header), and for our estimate of the
/// protobuf framing being a little off.
const REQUEST_OVERHEAD_BYTES: usize = 4096;

/// Our estimate of the protobuf framing of one operation or compare: tags,
/// lengths and the lease id.
const OP_OVERHEAD_BYTES: usize = 32;

/// How often an idle HTTP/2 connection with open streams (watches) is pinged,
/// so that a frozen or vanished etcd breaks the watch instead of leaving it
/// silent forever. etcd's `--grpc-keepalive-min-time` is 5 s by default and it
/// closes connections that ping more often, so this stays well above that.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The longest `endpoint_health` waits for one member's status.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Capacity of each watch's channel, in messages (one revision each). When it
/// is full, the forwarding task stops reading and etcd buffers for us.
const WATCH_CHANNEL_CAPACITY: usize = 256;

/// How to reach etcd. The defaults suit a local single-member etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs of the members, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Prepended to every key and stripped from every key returned, so that
    /// several deployments can share one etcd (default `/drover`).
    pub prefix: String,
    /// TLS files for `https://` endpoints (`--etcd-ca`, `--etcd-cert`,
    /// `--etcd-key`). With only a CA the server is verified but the client
    /// presents no certificate.
    pub tls: Option<EtcdTls>,
    /// Bound on every unary call, over all endpoints it tries (default 5 s).
    pub request_timeout: Duration,
    /// Bound on opening one connection, TLS handshake included (default 3 s).
    pub connect_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: "/drover".to_owned(),
            tls: None,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// PEM files for talking to etcd over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the members' server certificates.
    pub ca: PathBuf,
    /// Client certificate, for clusters started with `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key; required with `cert`.
    pub key: Option<PathBuf>,
}

/// The etcd store. Create it with [`EtcdStore::connect`].
pub struct EtcdStore {
    /// One client per endpoint, in the order given.
    members: Vec<Member>,
    /// Index of the member calls go to first. It moves on when that member
    /// fails, and is shared by all calls so that they do not each rediscover
    /// a dead member.
    current: AtomicUsize,
    prefix: String,
    request_timeout: Duration,
    /// The endpoints, comma-separated, for error messages.
    label: String,
}

struct Member {
    endpoint: String,
    client: Client,
}

/// How a failed call failed, which decides whether it may be resent to
/// another endpoint and which [`StoreError`] it becomes.
#[derive(Debug)]
enum Failure {
    /// The request certainly was not applied: it never reached a server, or
    /// the member refused it for lack of a leader.
    NotSent(String),
    /// The connection or the cluster failed; the request may have been applied.
    Unreachable(String),
    /// etcd said something does not exist (a lease).
    NotFound(String),
    /// etcd refused the request itself; resending cannot help.
    Rejected(String),
    /// etcd reported lost or corrupt data.
    DataLoss(String),
}

/// What a call is, for retries and error messages.
#[derive(Clone, Copy)]
struct Call {
    /// Named in error messages: "etcd at X refused {what}".
    what: &'static str,
    /// Whether the call may be resent after a timeout or a broken connection,
    /// when it may already have been applied.
    idempotent: bool,
    /// The lease a `NotFound` refers to, 0 for none.
    lease: LeaseId,
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers a linearizable read (which
    /// needs a leader) within the request timeout. An unreachable etcd yields
    /// [`StoreError::Unavailable`], bad options [`StoreError::Rejected`] or,
    /// for unreadable TLS files, [`StoreError::Io`].
    pub async fn connect(opts: EtcdOptions) -> Result<Arc<EtcdStore>> {
        if opts.endpoints.is_empty() {
            return Err(StoreError::Rejected("no etcd endpoints given".to_owned()));
        }
        let connect_options = connect_options(&opts)?;
        let mut members = Vec::with_capacity(opts.endpoints.len());
        for endpoint in &opts.endpoints {
            // Connecting is lazy: this only builds the channel, so a member
            // that is down now is simply tried again on use.
            let client = Client::connect([endpoint.as_str()], Some(connect_options.clone()))
                .await
                .map_err(|e| StoreError::Rejected(format!("etcd endpoint {endpoint}: {e}")))?;
            members.push(Member { endpoint: endpoint.clone(), client });
        }
        let store = Arc::new(EtcdStore {
            members,
            current: AtomicUsize::new(0),
            label: opts.endpoints.join(", "),
            prefix: opts.prefix,
            request_timeout: opts.request_timeout,
        });
        // The empty key is not allowed, so probe the prefix itself (or `\0`).
        let probe = if store.prefix.is_empty() { vec![0] } else { store.prefix.clone().into_bytes() };
        let call = Call { what: "a read", idempotent: true, lease: 0 };
        store
            .call(call, |mut client| {
                let probe = probe.clone();
                async move { client.get(probe, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        Ok(store)
    }

    /// Runs `f` against the current member and, where that is safe, the
    /// others, all within one request timeout.
    async fn call<T, F, Fut>(&self, call: Call, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        let n = self.members.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut tried: Vec<String> = Vec::new();
        for attempt in 0..n {
            let index = (first + attempt) % n;
            let member = &self.members[index];
            let failure = match tokio::time::timeout_at(deadline, f(member.client.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => classify(e),
                Err(_) => Failure::Unreachable(format!("no answer within {:?}", self.request_timeout)),
            };
            let resend = match &failure {
                Failure::NotSent(_) => true,
                Failure::Unreachable(_) => call.idempotent,
                Failure::NotFound(_) | Failure::Rejected(_) | Failure::DataLoss(_) => {
                    return Err(self.store_error(call, failure));
                }
            };
            // This member failed; later calls start with the next one.
            let _ = self.current.compare_exchange(index, (index + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
            debug!(endpoint = %member.endpoint, what = call.what, ?failure, "etcd call failed");
            if n > 1 {
                tried.push(format!("{}: {failure}", member.endpoint));
            } else {
                tried.push(failure.to_string());
            }
            if !resend || Instant::now() >= deadline {
                break;
            }
        }
        Err(StoreError::Unavailable(format!("etcd at {} unreachable: {}", self.label, tried.join("; "))))
    }

    fn store_error(&self, call: Call, failure: Failure) -> StoreError {
        match failure {
            Failure::NotSent(msg) | Failure::Unreachable(msg) => {
                StoreError::Unavailable(format!("etcd at {} unreachable: {msg}", self.label))
            }
            Failure::NotFound(_) if call.lease != 0 => StoreError::LeaseNotFound(call.lease),
            Failure::NotFound(msg) | Failure::Rejected(msg) => {
                StoreError::Rejected(format!("etcd at {} refused {}: {msg}", self.label, call.what))
            }
            Failure::DataLoss(msg) => StoreError::Corrupt { path: format!("etcd at {}", self.label), detail: msg },
        }
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        to_kv(kv, &self.prefix)
    }

    fn to_txn_op(&self, op: &Op) -> TxnOp {
        match op {
            Op::Put { key, value, lease } => {
                let options = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
                TxnOp::put(self.full_key(key), value.clone(), options)
            }
            Op::Delete { key } => TxnOp::delete(self.full_key(key), None),
            Op::DeletePrefix { prefix } => {
                TxnOp::delete(self.full_key(prefix), Some(DeleteOptions::new().with_prefix()))
            }
            Op::Get { key } => TxnOp::get(self.full_key(key), None),
        }
    }

    fn to_compare(&self, compare: &Compare) -> etcd_client::Compare {
        // etcd treats a missing key as having revisions 0, so `0` means
        // "absent" exactly as in the trait; a value compare on a missing key
        // is always false.
        match compare {
            Compare::ModRevision(key, rev) => {
                etcd_client::Compare::mod_revision(self.full_key(key), CompareOp::Equal, *rev)
            }
            Compare::CreateRevision(key, rev) => {
                etcd_client::Compare::create_revision(self.full_key(key), CompareOp::Equal, *rev)
            }
            Compare::Value(key, value) => {
                etcd_client::Compare::value(self.full_key(key), CompareOp::Equal, value.clone())
            }
        }
    }

    /// Sends one etcd transaction that is known to be within etcd's limits.
    async fn send_txn(&self, compare: &[Compare], success: &[Op], failure: &[Op]) -> Result<TxnResponse> {
        let txn = etcd_client::Txn::new()
            .when(compare.iter().map(|c| self.to_compare(c)).collect::<Vec<_>>())
            .and_then(success.iter().map(|op| self.to_txn_op(op)).collect::<Vec<_>>())
            .or_else(failure.iter().map(|op| self.to_txn_op(op)).collect::<Vec<_>>());
        // etcd answers a put with a missing lease with "lease not found";
        // report the first lease the transaction uses.
        let lease = success
            .iter()
            .chain(failure)
            .find_map(|op| match op {
                Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                _ => None,
            })
            .unwrap_or(0);
        let call = Call { what: "the transaction", idempotent: false, lease };
        let resp = self
            .call(call, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
        let gets = resp
            .op_responses()
            .into_iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| self.to_kv(kv))),
                _ => None,
            })
            .collect();
        Ok(TxnResponse { succeeded: resp.succeeded(), revision: header_revision(resp.header()), gets })
    }

    /// Bytes a key takes on the wire, prefix included.
    fn key_bytes(&self, key: &str) -> usize {
        self.prefix.len() + key.len()
    }

    /// Our estimate of an operation's size in an etcd request.
    fn op_bytes(&self, op: &Op) -> usize {
        OP_OVERHEAD_BYTES
            + match op {
                Op::Put { key, value, .. } => self.key_bytes(key) + value.len(),
                Op::Delete { key } | Op::Get { key } => self.key_bytes(key),
                // The range end is about as long as the key.
                Op::DeletePrefix { prefix } => 2 * self.key_bytes(prefix),
            }
    }

    fn compare_bytes(&self, compare: &Compare) -> usize {
        OP_OVERHEAD_BYTES
            + match compare {
                Compare::ModRevision(key, _) | Compare::CreateRevision(key, _) => self.key_bytes(key),
                Compare::Value(key, value) => self.key_bytes(key) + value.len(),
            }
    }

    /// Fails with `ValueTooLarge` for a put that would not fit in an etcd
    /// request even on its own.
    fn check_value_sizes(&self, ops: &[Op]) -> Result<()> {
        for op in ops {
            if let Op::Put { key, value, .. } = op {
                let bytes = self.op_bytes(op);
                if bytes > REQUEST_BUDGET {
                    let limit = REQUEST_BUDGET - (bytes - value.len());
                    return Err(StoreError::ValueTooLarge { key: key.clone(), size: value.len(), limit });
                }
            }
        }
        Ok(())
    }

    /// Splits the operations of a transaction without compares into etcd
    /// transactions that each respect etcd's limits, keeping their order,
    /// with `reserve` bytes of each request left for compares.
    fn split_unconditional(&self, mut ops: Vec<Op>, reserve: usize) -> Vec<Vec<Op>> {
        let budget = REQUEST_BUDGET - reserve;
        // First find where each chunk starts, then cut the operations there.
        let mut starts = Vec::new();
        let mut len = 0;
        let mut bytes = 0;
        let mut written = WrittenKeys::default();
        for (i, op) in ops.iter().enumerate() {
            let op_bytes = self.op_bytes(op);
            if len > 0 && (len == MAX_TXN_OPS || bytes + op_bytes > budget || written.conflicts(op).is_some()) {
                starts.push(i);
                len = 0;
                bytes = 0;
                written = WrittenKeys::default();
            }
            len += 1;
            bytes += op_bytes;
            written.add(op);
        }
        // Even an empty transaction is sent once, for the current revision.
        let mut chunks = Vec::with_capacity(starts.len() + 1);
        for start in starts.into_iter().rev() {
            chunks.push(ops.split_off(start));
        }
        chunks.push(ops);
        chunks.reverse();
        chunks
    }

    /// Checks that a transaction with compares fits in one etcd transaction.
    fn check_conditional(&self, txn: &Txn) -> Result<()> {
        let most = txn.compare.len().max(txn.success.len()).max(txn.failure.len());
        if most > MAX_TXN_OPS {
            return Err(StoreError::Rejected(format!(
                "transaction has {} compares, {} success and {} failure operations, over etcd's limit of \
                 {MAX_TXN_OPS} per list (--max-txn-ops); a transaction with compares cannot be split, so write \
                 in chunks of at most store::etcd::MAX_TXN_OPS",
                txn.compare.len(),
                txn.success.len(),
                txn.failure.len()
            )));
        }
        let bytes = txn.compare.iter().map(|c| self.compare_bytes(c)).sum::<usize>()
            + txn.success.iter().chain(&txn.failure).map(|op| self.op_bytes(op)).sum::<usize>();
        if bytes > REQUEST_BUDGET {
            return Err(StoreError::Rejected(format!(
                "transaction is about {bytes} bytes, over etcd's request limit of {MAX_REQUEST_BYTES} bytes \
                 (--max-request-bytes); a transaction with compares cannot be split"
            )));
        }
        for branch in [&txn.success, &txn.failure] {
            let mut written = WrittenKeys::default();
            for op in branch.iter() {
                if let Some(key) = written.conflicts(op) {
                    return Err(StoreError::Rejected(format!(
                        "transaction writes {key} twice in one branch (or puts it inside a prefix it deletes); \
                         etcd refuses that"
                    )));
                }
                written.add(op);
            }
        }
        Ok(())
    }
}

/// What [`Store::split`] leaves in each request for the compares the caller
/// adds (the leader's fence is one compare and one read).
const COMPARE_ROOM_BYTES: usize = 16 * 1024;

/// The part of [`MAX_REQUEST_BYTES`] that operations may fill.
const REQUEST_BUDGET: usize = MAX_REQUEST_BYTES - REQUEST_OVERHEAD_BYTES;

/// The keys one etcd transaction writes, to find the writes etcd refuses to
/// combine: a key put twice, or put and deleted (by key or prefix), in
/// either order.
#[derive(Default)]
struct WrittenKeys<'a> {
    puts: HashSet<&'a str>,
    deletes: HashSet<&'a str>,
    deleted_prefixes: Vec<&'a str>,
}

impl<'a> WrittenKeys<'a> {
    /// The key that `op` would write a second time, if any.
    fn conflicts(&self, op: &'a Op) -> Option<&'a str> {
        match op {
            Op::Put { key, .. } => (self.puts.contains(key.as_str())
                || self.deletes.contains(key.as_str())
                || self.deleted_prefixes.iter().any(|p| key.starts_with(p)))
            .then_some(key.as_str()),
            Op::Delete { key } => self.puts.contains(key.as_str()).then_some(key.as_str()),
            Op::DeletePrefix { prefix } => self.puts.iter().find(|k| k.starts_with(prefix.as_str())).copied(),
            Op::Get { .. } => None,
        }
    }

    fn add(&mut self, op: &'a Op) {
        match op {
            Op::Put { key, .. } => {
                self.puts.insert(key);
            }
            Op::Delete { key } => {
                self.deletes.insert(key);
            }
            Op::DeletePrefix { prefix } => self.deleted_prefixes.push(prefix),
            Op::Get { .. } => {}
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    /// Asks every member for its status, each on its own connection and with
    /// a short timeout, so that a dead member shows up as unhealthy while the
    /// others answer.
    async fn endpoint_health(&self) -> Vec<EndpointHealth> {
        let timeout = self.request_timeout.min(HEALTH_TIMEOUT);
        let checks = self.members.iter().map(|member| async move {
            let mut client = member.client.clone();
            let (healthy, detail) = match tokio::time::timeout(timeout, client.status()).await {
                Err(_) => (false, format!("no answer within {timeout:?}")),
                Ok(Err(e)) => (false, classify(e).to_string()),
                Ok(Ok(status)) => {
                    let member_id = status.header().map_or(0, |h| h.member_id());
                    let role = match status.leader() {
                        0 => "no leader",
                        leader if leader == member_id => "leader",
                        _ if status.is_learner() => "learner",
                        _ => "follower",
                    };
                    let mut detail = format!(
                        "version {}, db {} bytes, {role}, raft term {}",
                        status.version(),
                        status.db_size(),
                        status.raft_term()
                    );
                    if !status.errors().is_empty() {
                        let _ = write!(detail, ", errors: {}", status.errors().join("; "));
                    }
                    (status.leader() != 0 && status.errors().is_empty(), detail)
                }
            };
            EndpointHealth { endpoint: member.endpoint.clone(), healthy, detail }
        });
        futures_util::future::join_all(checks).await
    }

    /// Compacts etcd's history up to `revision` (for the whole cluster: etcd
    /// has one history, whatever the prefix). A revision already compacted
    /// (by another coordinator, or by etcd's own auto-compaction) is fine.
    async fn compact(&self, revision: Revision) -> Result<()> {
        let call = Call { what: "a compaction", idempotent: true, lease: 0 };
        match self.call(call, |mut client| async move { client.compact(revision, None).await.map(drop) }).await {
            Err(StoreError::Rejected(msg)) if msg.contains("compacted") => Ok(()),
            other => other,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let full = self.full_key(key);
        let call = Call { what: "a read", idempotent: true, lease: 0 };
        let resp = self
            .call(call, |mut client| {
                let full = full.clone();
                async move { client.get(full, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| self.to_kv(kv)))
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let full = self.full_key(prefix);
        let call = Call { what: "a range read", idempotent: true, lease: 0 };
        let resp = self
            .call(call, |client| {
                // A large prefix can exceed tonic's default 4 MiB response
                // limit; etcd itself sends responses of any size.
                let mut kv = client.kv_client().max_decoding_message_size(usize::MAX);
                let full = full.clone();
                async move { kv.get(full, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        // etcd returns a range in key order.
        let kvs = resp.kvs().iter().map(|kv| self.to_kv(kv)).collect();
        Ok((kvs, header_revision(resp.header())))
    }

    fn split(&self, ops: Vec<Op>) -> Vec<Vec<Op>> {
        if ops.is_empty() {
            return Vec::new();
        }
        self.split_unconditional(ops, COMPARE_ROOM_BYTES)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        // As in the embedded store, sizes are checked for both branches, so a
        // transaction does not pass or fail them depending on its compares.
        self.check_value_sizes(&txn.success)?;
        self.check_value_sizes(&txn.failure)?;
        if !txn.compare.is_empty() {
            self.check_conditional(&txn)?;
            return self.send_txn(&txn.compare, &txn.success, &txn.failure).await;
        }
        // Without compares the success branch always runs and the failure
        // branch never does, so only the former is sent.
        let mut response = TxnResponse { succeeded: true, revision: 0, gets: Vec::new() };
        for chunk in self.split_unconditional(txn.success, 0) {
            let part = self.send_txn(&[], &chunk, &[]).await?;
            response.revision = part.revision;
            response.gets.extend(part.gets);
        }
        Ok(response)
    }

    async fn watch(&self, prefix: &str, start: Revision) -> Result<mpsc::Receiver<WatchMessage>> {
        let full = self.full_key(prefix);
        let options = WatchOptions::new().with_prefix().with_start_revision(start.max(0));
        let call = Call { what: "a watch", idempotent: true, lease: 0 };
        let (stream, first) = self
            .call(call, |client| {
                // One revision's events come in one response, which may be
                // far larger than tonic's default 4 MiB limit.
                let mut watch = client.watch_client().max_decoding_message_size(usize::MAX);
                let full = full.clone();
                let options = options.clone();
                async move {
                    let mut stream = watch.watch(full, Some(options)).await?;
                    // Wait for etcd to confirm the watch, so that a write made
                    // after `watch` returns is certainly seen.
                    let first = stream.message().await?;
                    Ok((stream, first))
                }
            })
            .await?;
        let first = match first {
            Some(resp) if resp.created() && resp.canceled() && resp.compact_revision() == 0 => {
                return Err(StoreError::Rejected(format!(
                    "etcd at {} refused the watch: {}",
                    self.label,
                    resp.cancel_reason()
                )));
            }
            Some(resp) => resp,
            None => {
                return Err(StoreError::Unavailable(format!(
                    "etcd at {} unreachable: the watch stream closed before the watch was created",
                    self.label
                )));
            }
        };
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
        let forwarder = WatchForwarder { prefix: self.prefix.clone(), label: self.label.clone(), tx };
        tokio::spawn(forwarder.run(stream, first));
        Ok(rx)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let seconds = ttl_seconds(ttl);
        let call = Call { what: "a lease grant", idempotent: true, lease: 0 };
        // Resending a grant whose answer was lost leaks a lease, which etcd
        // deletes when its TTL runs out; that is harmless.
        let resp = self.call(call, |mut client| async move { client.lease_grant(seconds, None).await }).await?;
        if !resp.error().is_empty() {
            return Err(StoreError::Rejected(format!(
                "etcd at {} refused a lease grant: {}",
                self.label,
                resp.error()
            )));
        }
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        let call = Call { what: "a lease keep-alive", idempotent: true, lease };
        // `keep_alive` opens a stream, sends one request and waits for its
        // answer, failing with "lease not found" when etcd reports TTL 0.
        // Dropping the keeper and the stream closes the stream again.
        self.call(call, |mut client| async move { client.lease_keep_alive(lease).await.map(drop) }).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        let call = Call { what: "a lease revoke", idempotent: true, lease };
        self.call(call, |mut client| async move { client.lease_revoke(lease).await.map(drop) }).await
    }
}

/// Moves one etcd watch's responses into the watcher's channel.
struct WatchForwarder {
    prefix: String,
    label: String,
    tx: mpsc::Sender<WatchMessage>,
}

impl WatchForwarder {
    async fn run(self, mut stream: WatchStream, first: etcd_client::WatchResponse) {
        if !self.forward(first).await {
            return;
        }
        loop {
            let message = tokio::select! {
                // The receiver was dropped: stop, which drops the stream and
                // so cancels the watch on etcd.
                () = self.tx.closed() => return,
                message = stream.message() => message,
            };
            match message {
                Ok(Some(resp)) => {
                    if !self.forward(resp).await {
                        return;
                    }
                }
                Ok(None) => {
                    debug!(endpoints = %self.label, "etcd closed the watch stream; closing the watch");
                    return;
                }
                Err(e) => {
                    warn!(endpoints = %self.label, error = %e, "etcd watch stream broke; closing the watch");
                    return;
                }
            }
        }
    }

    /// Forwards one response; returns whether the watch goes on.
    async fn forward(&self, resp: etcd_client::WatchResponse) -> bool {
        if resp.compact_revision() > 0 {
            let compact_revision = resp.compact_revision();
            let _ = self.tx.send(WatchMessage::Compacted { compact_revision }).await;
            return false;
        }
        if resp.canceled() {
            warn!(endpoints = %self.label, reason = resp.cancel_reason(), "etcd canceled a watch; closing it");
            return false;
        }
        // Deliver one revision per message, as the embedded store does. A
        // response may hold several revisions, but never part of one, because
        // fragmenting is not enabled.
        let mut batch: Vec<WatchEvent> = Vec::new();
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let event = WatchEvent {
                kind: match event.event_type() {
                    EventType::Put => EventKind::Put,
                    EventType::Delete => EventKind::Delete,
                },
                kv: to_kv(kv, &self.prefix),
            };
            if batch.last().is_some_and(|last| last.kv.mod_revision != event.kv.mod_revision)
                && self.tx.send(WatchMessage::Events(std::mem::take(&mut batch))).await.is_err()
            {
                return false;
            }
            batch.push(event);
        }
        batch.is_empty() || self.tx.send(WatchMessage::Events(batch)).await.is_ok()
    }
}

/// Builds the client options: timeouts, keep-alive and TLS.
fn connect_options(opts: &EtcdOptions) -> Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(opts.connect_timeout)
        // Pings only while streams are open: etcd counts pings on an idle
        // connection as abuse and eventually closes it.
        .with_keep_alive(KEEPALIVE_INTERVAL, opts.request_timeout)
        .with_keep_alive_while_idle(false)
        // A member without a leader refuses at once instead of timing out,
        // and cancels watches, so that callers move on.
        .with_require_leader(true);
    let https = opts.endpoints.iter().filter(|e| e.starts_with("https://")).count();
    match &opts.tls {
        None if https > 0 => {
            return Err(StoreError::Rejected(
                "https:// etcd endpoints need a CA certificate (--etcd-ca) to verify the servers".to_owned(),
            ));
        }
        None => {}
        Some(_) if https < opts.endpoints.len() => {
            return Err(StoreError::Rejected(
                "etcd TLS options (--etcd-ca) apply only to https:// endpoints; give every endpoint as https://"
                    .to_owned(),
            ));
        }
        Some(tls) => {
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(read_pem(&tls.ca)?));
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
                }
                (None, None) => {}
                (Some(_), None) => {
                    return Err(StoreError::Rejected("--etcd-cert needs --etcd-key".to_owned()));
                }
                (None, Some(_)) => {
                    return Err(StoreError::Rejected("--etcd-key needs --etcd-cert".to_owned()));
                }
            }
            options = options.with_tls(config);
        }
    }
    Ok(options)
}

fn read_pem(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| StoreError::Io { path: path.display().to_string(), source })
}

/// Sorts an etcd-client error by what it means for the caller.
fn classify(e: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => classify_status(&status),
        E::TransportError(e) => Failure::NotSent(error_chain(&e)),
        E::IoError(e) => Failure::Unreachable(e.to_string()),
        E::WatchError(msg) | E::LeaseKeepAliveError(msg) | E::Internal(msg) | E::EndpointError(msg) => {
            if msg.contains("not found") { Failure::NotFound(msg) } else { Failure::Unreachable(msg) }
        }
        other => Failure::Rejected(other.to_string()),
    }
}

fn classify_status(status: &tonic::Status) -> Failure {
    use tonic::Code;
    let detail = describe_status(status);
    if is_connect_error(status) {
        return Failure::NotSent(detail);
    }
    match status.code() {
        // "no leader" is answered before the request is proposed.
        Code::Unavailable if status.message().contains("no leader") => Failure::NotSent(detail),
        // Connection errors, "leader changed", "request timed out", "too many
        // requests" and a full database ("database space exceeded") all mean
        // the store cannot take the request now.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::Unknown => Failure::Unreachable(detail),
        Code::NotFound => Failure::NotFound(detail),
        Code::DataLoss => Failure::DataLoss(detail),
        _ => Failure::Rejected(detail),
    }
}

/// Whether the request failed while connecting, so no server has seen it.
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("tcp connect error")
            || text.contains("error trying to connect")
            || text.contains("dns error")
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// A status's message and the chain of errors behind it.
fn describe_status(status: &tonic::Status) -> String {
    let mut parts = Vec::new();
    push_part(&mut parts, status.message().to_owned());
    if let Some(source) = std::error::Error::source(status) {
        push_chain(&mut parts, source);
    }
    if parts.is_empty() { format!("{:?}", status.code()) } else { parts.join(": ") }
}

/// An error and its sources, joined with ": ".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    push_chain(&mut parts, e);
    parts.join(": ")
}

fn push_chain(parts: &mut Vec<String>, e: &(dyn std::error::Error + 'static)) {
    let mut next = Some(e);
    while let Some(e) = next {
        push_part(parts, e.to_string());
        next = e.source();
    }
}

/// Adds one link of an error chain, skipping tonic's uninformative
/// "transport error" and links that repeat an earlier one (tonic's status
/// message is often its source's text).
fn push_part(parts: &mut Vec<String>, part: String) {
    if part.is_empty() || part == "transport error" || parts.iter().any(|p| p.contains(&part)) {
        return;
    }
    parts.push(part);
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotSent(msg)
            | Failure::Unreachable(msg)
            | Failure::NotFound(msg)
            | Failure::Rejected(msg)
            | Failure::DataLoss(msg) => f.write_str(msg),
        }
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision())
}

/// An etcd key-value as the store's, with our prefix stripped.
fn to_kv(kv: &etcd_client::KeyValue, prefix: &str) -> KeyValue {
    KeyValue {
        key: strip_prefix(kv.key(), prefix),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn strip_prefix(key: &[u8], prefix: &str) -> String {
    String::from_utf8_lossy(key.strip_prefix(prefix.as_bytes()).unwrap_or(key)).into_owned()
}

/// etcd TTLs are whole seconds: round up, to at least one.
fn ttl_seconds(ttl: Duration) -> i64 {
    let seconds = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0)).max(1);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::AtomicUsize;

    use super::*;
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
        let opts = EtcdOptions {
            endpoints: vec![endpoint.clone()],
            request_timeout: Duration::from_secs(1),
            ..test_options()
        };
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
}
