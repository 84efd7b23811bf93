//! Talking to the members: one `etcd-client` client per endpoint, the
//! failover loop every call goes through (`EtcdStore::call`: which member
//! first, when to move on and resend, the one timeout over all tries), the
//! connection options (timeouts, keep-alive, TLS) and the members' health.
//!
//! `etcd-client`'s own load-balanced channel over all endpoints does not fail
//! over (etcd-client issue #39), which is why this module exists; the module
//! doc of `store::etcd` says what is resent and when. What an error means is
//! decided in `failure`.

use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::time::Instant;
use tracing::debug;

use super::EtcdOptions;
use super::EtcdStore;
use super::failure::{Failure, classify};
use crate::store::{EndpointHealth, LeaseId, Result, StoreError};

/// How often an idle HTTP/2 connection with open streams (watches) is pinged,
/// so that a frozen or vanished etcd breaks the watch instead of leaving it
/// silent forever. etcd's `--grpc-keepalive-min-time` is 5 s by default and it
/// closes connections that ping more often, so this stays well above that.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The longest `endpoint_health` waits for one member's status.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// One endpoint and its own client, which fails on its own.
pub(super) struct Member {
    pub(super) endpoint: String,
    pub(super) client: Client,
}

/// What a call is, for retries and error messages.
#[derive(Clone, Copy)]
pub(super) struct Call {
    /// Named in error messages: "etcd at X refused {what}".
    pub(super) what: &'static str,
    /// Whether the call may be resent after a timeout or a broken connection,
    /// when it may already have been applied.
    pub(super) idempotent: bool,
    /// The lease a `NotFound` refers to, 0 for none.
    pub(super) lease: LeaseId,
}

impl EtcdStore {
    /// Runs `f` against the current member and, where that is safe, the
    /// others, all within one request timeout.
    pub(super) async fn call<T, F, Fut>(&self, call: Call, f: F) -> Result<T>
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

    /// The error a caller sees for a failure that is not resent.
    pub(super) fn store_error(&self, call: Call, failure: Failure) -> StoreError {
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

    /// Asks every member for its status, each on its own connection and with
    /// a short timeout, so that a dead member shows up as unhealthy while the
    /// others answer.
    pub(super) async fn member_health(&self) -> Vec<EndpointHealth> {
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
}

/// Builds the client options: timeouts, keep-alive and TLS.
pub(super) fn connect_options(opts: &EtcdOptions) -> Result<ConnectOptions> {
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
