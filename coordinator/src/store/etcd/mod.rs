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
//!
//! # Modules
//!
//! This module holds the store type, its options, connecting, and the
//! [`Store`] calls, which are short here: reads, compaction and leases are
//! one call each. `endpoints` has one client per endpoint, the failover loop
//! every call goes through, the connection options and member health;
//! `failure` sorts `etcd-client`'s errors into what may be resent and which
//! [`StoreError`] they become; `txn` maps transactions onto etcd's and fits
//! them to its limits; `watch` the watch streams and their forwarding task;
//! `keys` the key prefix. The tests, which start real etcd processes, are in
//! `tests`.

mod endpoints;
mod failure;
mod keys;
#[cfg(test)]
mod tests;
mod txn;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, GetOptions};
use tokio::sync::mpsc;

pub use self::endpoints::KEEPALIVE_INTERVAL;
use self::endpoints::{Call, Member, connect_options};
pub use self::txn::{MAX_REQUEST_BYTES, MAX_TXN_OPS};
use super::{
    EndpointHealth, KeyValue, LeaseId, Op, Result, Revision, Store, StoreError, Txn, TxnResponse, WatchMessage,
};

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
}

#[async_trait]
impl Store for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn endpoint_health(&self) -> Vec<EndpointHealth> {
        self.member_health().await
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
        self.split_leaving_compare_room(ops)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.run_txn(txn).await
    }

    async fn watch(&self, prefix: &str, start: Revision) -> Result<mpsc::Receiver<WatchMessage>> {
        self.open_watch(prefix, start).await
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

/// The revision a response was read or written at.
fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision())
}

/// etcd TTLs are whole seconds: round up, to at least one.
fn ttl_seconds(ttl: Duration) -> i64 {
    let seconds = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0)).max(1);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}
