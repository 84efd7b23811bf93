//! Renewing the agent's certificate at half its life, over the session's
//! own connection, without interrupting it.
//!
//! The coordinator's Welcome says when (`renew_cert_at_ms`; 0 for a
//! hand-issued certificate, never renewed). When that time comes while a
//! session is up, the agent makes a new key and CSR (the same name) and
//! calls `AgentCertService.Renew` on the session's channel, which the
//! coordinator authenticates by the certificate being replaced. The new
//! certificate and key replace the old files atomically
//! ([`crate::identity::install`], shared with enrollment in
//! `drover_client::enroll::files`); the session goes on, and the next
//! connection (which reads the files afresh) uses them. A failed renewal is
//! tried again a minute later ([`RETRY_AFTER`]), never sooner, while the
//! old certificate still works.
//!
//! [`Schedule`] decides when, without IO or a clock of its own; [`renew`]
//! is one renewal.

use std::path::PathBuf;
use std::time::Duration;

use drover_proto::v1 as pb;
use tonic::transport::Channel;

use crate::identity::{self, Files, Request};

/// The least time between a failed renewal and the next try.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long the `Renew` call may take; a coordinator that does not answer
/// by then has failed this renewal.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// When to renew next, in ms since the Unix epoch (wall clock: the
/// coordinator's times are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Schedule {
    /// When the coordinator (or the last renewal's answer) said; None:
    /// never.
    renew_at_ms: Option<i64>,
    /// Not before this, after a failure; kept across sessions, so that
    /// reconnecting does not try more often.
    retry_at_ms: Option<i64>,
}

impl Schedule {
    /// A session's Welcome said when (None: never).
    pub(super) fn welcomed(&mut self, renew_at_ms: Option<i64>) {
        self.renew_at_ms = renew_at_ms;
    }

    /// How long from `now_ms` until a renewal is due (zero: now); None when
    /// none is.
    pub(super) fn wait(&self, now_ms: i64) -> Option<Duration> {
        let due = self.renew_at_ms?.max(self.retry_at_ms.unwrap_or(i64::MIN));
        Some(Duration::from_millis(u64::try_from(due.saturating_sub(now_ms)).unwrap_or(0)))
    }

    /// A renewal succeeded; the new certificate is due for renewal at
    /// `next_ms` (0: never).
    pub(super) fn renewed(&mut self, next_ms: i64) {
        self.renew_at_ms = (next_ms > 0).then_some(next_ms);
        self.retry_at_ms = None;
    }

    /// A renewal failed at `now_ms`: the next try waits [`RETRY_AFTER`].
    pub(super) fn failed(&mut self, now_ms: i64) {
        let after = i64::try_from(RETRY_AFTER.as_millis()).unwrap_or(i64::MAX);
        self.retry_at_ms = Some(now_ms.saturating_add(after));
    }
}

/// What a renewal got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Renewed {
    pub not_after_ms: i64,
    /// When to renew the new certificate (0: never).
    pub renew_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum RenewError {
    #[error("cannot make a new key and certificate signing request: {0}")]
    Key(#[from] identity::KeyError),
    #[error("the coordinator refused the renewal ({:?}): {}", .0.code(), .0.message())]
    Call(tonic::Status),
    #[error("the coordinator's answer cannot be used: {0}")]
    Answer(String),
    #[error(transparent)]
    Write(#[from] identity::WriteError),
}

/// Renews agent `name`'s certificate over `channel` and writes the new
/// certificate and key into `tls_dir`. The files are written without an
/// await in between, so dropping this future (the session ended) leaves
/// either the old pair or the new one.
pub(super) async fn renew(channel: Channel, tls_dir: PathBuf, name: String) -> Result<Renewed, RenewError> {
    let request = Request::new(&name)?;
    let mut client = pb::agent_cert_service_client::AgentCertServiceClient::new(channel);
    let call = tonic::Request::new(pb::RenewRequest { csr: request.csr_der.clone() });
    let answer = tokio::time::timeout(CALL_TIMEOUT, client.renew(call))
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded(format!("no answer within {CALL_TIMEOUT:?}"))));
    let cert = answer.map_err(RenewError::Call)?.into_inner();
    if cert.name != name {
        return Err(RenewError::Answer(format!("it is for agent {:?}, not {name:?}", cert.name)));
    }
    identity::check_pair(&cert.certificate_pem, &request.key_pem).map_err(RenewError::Answer)?;
    let base = identity::base(&name);
    let files = Files { base: &base, cert_pem: &cert.certificate_pem, key_pem: &request.key_pem, ca_pem: None };
    identity::install(&tls_dir, files)?;
    Ok(Renewed { not_after_ms: cert.not_after_ms, renew_at_ms: cert.renew_at_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000_000;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn renewal_is_due_when_the_coordinator_says_and_retried_a_minute_after_a_failure() {
        let mut s = Schedule::default();
        assert_eq!(s.wait(T), None, "before a Welcome");
        s.welcomed(None);
        assert_eq!(s.wait(T), None, "a certificate never renewed");
        s.welcomed(Some(T + 3_600_000));
        assert_eq!(s.wait(T), secs(3600));
        assert_eq!(s.wait(T + 3_600_000), secs(0));
        assert_eq!(s.wait(T + 7_200_000), secs(0), "late is now");
        // It failed: not again for a minute, reconnecting or not.
        s.failed(T + 3_600_000);
        assert_eq!(s.wait(T + 3_600_000), secs(60));
        assert_eq!(s.wait(T + 3_630_000), secs(30));
        s.welcomed(Some(T + 3_600_000));
        assert_eq!(s.wait(T + 3_630_000), secs(30), "a new session's Welcome does not shorten the wait");
        assert_eq!(s.wait(T + 3_660_000), secs(0));
        // It went through: the new certificate's half life, and no more
        // waiting for a past failure.
        s.renewed(T + 90_000_000);
        assert_eq!(s.wait(T + 3_660_000), Some(Duration::from_millis(90_000_000 - 3_660_000)));
        s.renewed(0);
        assert_eq!(s.wait(T), None, "the answer may say never");
    }

    /// A coordinator's renewal service, answering for `name`.
    struct Coordinator {
        ca: crate::test_pki::TestCa,
        name: String,
    }

    #[tonic::async_trait]
    impl pb::agent_cert_service_server::AgentCertService for Coordinator {
        async fn renew(
            &self,
            request: tonic::Request<pb::RenewRequest>,
        ) -> Result<tonic::Response<pb::AgentCertificate>, tonic::Status> {
            let (_, certificate_pem) =
                self.ca.sign(request.into_inner().csr).map_err(tonic::Status::invalid_argument)?;
            Ok(tonic::Response::new(pb::AgentCertificate {
                name: self.name.clone(),
                certificate_pem,
                ca_pem: self.ca.pem(),
                not_after_ms: T + 86_400_000,
                renew_at_ms: T + 43_200_000,
            }))
        }
    }

    /// A channel to a renewal service answering for `name` (plain text:
    /// what is tested is the call and the files, not TLS).
    async fn channel(name: &str) -> Channel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Coordinator { ca: crate::test_pki::TestCa::new("Drover CA"), name: name.into() };
        let server = tonic::transport::Server::builder()
            .add_service(pb::agent_cert_service_server::AgentCertServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
    }

    #[tokio::test]
    async fn a_renewal_replaces_the_certificate_and_key_and_leaves_the_ca() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::test_dir::TestDir::new("renew");
        let old = Files { base: "agent-a1", cert_pem: "OLD", key_pem: "OLD KEY", ca_pem: Some("CA") };
        identity::install(&dir.0, old).unwrap();
        let renewed = renew(channel("a1").await, dir.0.clone(), "a1".into()).await.unwrap();
        assert_eq!(renewed, Renewed { not_after_ms: T + 86_400_000, renew_at_ms: T + 43_200_000 });
        let read = |f: &str| std::fs::read_to_string(dir.0.join(f)).unwrap();
        assert_eq!(read("ca.pem"), "CA");
        identity::check_pair(&read("agent-a1.pem"), &read("agent-a1-key.pem")).unwrap();
        let mode = std::fs::metadata(dir.0.join("agent-a1-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // An answer for another name changes nothing.
        let before = (read("agent-a1.pem"), read("agent-a1-key.pem"));
        let err = renew(channel("a2").await, dir.0.clone(), "a1".into()).await.unwrap_err();
        assert_eq!(err.to_string(), "the coordinator's answer cannot be used: it is for agent \"a2\", not \"a1\"");
        assert_eq!((read("agent-a1.pem"), read("agent-a1-key.pem")), before);
    }

    #[test]
    fn a_failure_never_brings_the_renewal_forward() {
        let mut s = Schedule::default();
        s.welcomed(Some(T + 3_600_000));
        s.failed(T);
        assert_eq!(s.wait(T), secs(3600));
    }
}
