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
//! connection (which reads the files afresh) uses them. The answer's trust
//! bundle (every CA the coordinator trusts), when it sends one, becomes
//! `ca.pem` in the same install. A failed renewal is tried again a minute
//! later ([`RETRY_AFTER`]), never sooner, while the old certificate still
//! works.
//!
//! During a CA rotation the coordinator's `Trust` may bring the renewal
//! forward: the certificate's CA is retiring, so renew it by then. That
//! deadline holds until a renewal asked for after it came goes through (one
//! under way when it came may have been signed by the retiring CA).
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
    /// A retiring CA's deadline (a `Trust`) that no renewal has answered
    /// yet.
    trust_by: Option<TrustBy>,
    /// Renewals started so far: what tells a renewal asked for after a
    /// `Trust` came from one already under way.
    started: u64,
}

/// A `Trust`'s deadline, in ms since the Unix epoch, and how many renewals
/// had been started when it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TrustBy {
    by_ms: i64,
    after: u64,
}

/// The earlier of two times, None being never.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Schedule {
    /// A session's Welcome said when (None: never); a retiring CA's
    /// deadline not yet answered still holds.
    pub(super) fn welcomed(&mut self, renew_at_ms: Option<i64>) {
        self.renew_at_ms = earliest(renew_at_ms, self.trust_by.map(|t| t.by_ms));
    }

    /// A `Trust` said to renew by `by_ms` (the certificate's CA is
    /// retiring): the renewal comes no later, though still not before a
    /// failure's [`RETRY_AFTER`] has passed.
    pub(super) fn renew_by(&mut self, by_ms: i64) {
        let by_ms = earliest(Some(by_ms), self.trust_by.map(|t| t.by_ms)).unwrap_or(by_ms);
        self.trust_by = Some(TrustBy { by_ms, after: self.started });
        self.renew_at_ms = earliest(self.renew_at_ms, Some(by_ms));
    }

    /// A renewal starts; what it ends with is handed back to
    /// [`Schedule::renewed`] with the ticket returned here.
    pub(super) fn start(&mut self) -> u64 {
        self.started += 1;
        self.started
    }

    /// How long from `now_ms` until a renewal is due (zero: now); None when
    /// none is.
    pub(super) fn wait(&self, now_ms: i64) -> Option<Duration> {
        let due = self.renew_at_ms?.max(self.retry_at_ms.unwrap_or(i64::MIN));
        Some(Duration::from_millis(u64::try_from(due.saturating_sub(now_ms)).unwrap_or(0)))
    }

    /// The renewal started with `ticket` succeeded; the new certificate is
    /// due for renewal at `next_ms` (0: never). A retiring CA's deadline
    /// that came after it started still holds.
    pub(super) fn renewed(&mut self, next_ms: i64, ticket: u64) {
        self.retry_at_ms = None;
        self.trust_by = self.trust_by.filter(|t| t.after >= ticket);
        self.renew_at_ms = earliest((next_ms > 0).then_some(next_ms), self.trust_by.map(|t| t.by_ms));
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
    #[error("the renewal's blocking work failed: {0}")]
    Task(String),
}

/// Renews agent `name`'s certificate over `channel` and writes the new
/// certificate and key into `tls_dir`, with the answer's trust bundle as
/// `ca.pem` when it has one. The key is made and the files written (and
/// synced) on a blocking thread, off the session's runtime; once started,
/// the writing finishes even if this future is dropped (the session
/// ended), so the files are the old ones or the new ones.
pub(super) async fn renew(channel: Channel, tls_dir: PathBuf, name: String) -> Result<Renewed, RenewError> {
    let task = |e: tokio::task::JoinError| RenewError::Task(e.to_string());
    let who = name.clone();
    let request = tokio::task::spawn_blocking(move || Request::new(&who)).await.map_err(task)??;
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
    // An older coordinator sends no bundle: ca.pem stays as it is.
    let ca_pem = (!cert.ca_pem.is_empty()).then_some(cert.ca_pem.as_str());
    if ca_pem.is_some_and(|pem| identity::first_cert(pem).is_none()) {
        return Err(RenewError::Answer("its trust bundle (ca_pem) holds no PEM certificate".into()));
    }
    let ca_pem = ca_pem.map(str::to_owned);
    let (not_after_ms, renew_at_ms) = (cert.not_after_ms, cert.renew_at_ms);
    tokio::task::spawn_blocking(move || {
        let base = identity::base(&name);
        let files = Files {
            base: &base,
            cert_pem: &cert.certificate_pem,
            key_pem: &request.key_pem,
            ca_pem: ca_pem.as_deref(),
        };
        identity::install(&tls_dir, files)
    })
    .await
    .map_err(task)??;
    Ok(Renewed { not_after_ms, renew_at_ms })
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
        let ticket = s.start();
        s.renewed(T + 90_000_000, ticket);
        assert_eq!(s.wait(T + 3_660_000), Some(Duration::from_millis(90_000_000 - 3_660_000)));
        let ticket = s.start();
        s.renewed(0, ticket);
        assert_eq!(s.wait(T), None, "the answer may say never");
    }

    /// What happens to a schedule, times in seconds after `T`.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Welcome(Option<i64>),
        /// A `Trust`: renew by then.
        By(i64),
        /// A renewal starts.
        Start,
        /// The renewal started last went through; the new certificate is
        /// due then.
        Renewed(i64),
        Failed(i64),
    }

    #[test]
    fn a_trust_brings_the_renewal_forward_until_a_renewal_asked_after_it() {
        use Step::*;
        let cases: &[(&str, &[Step], Option<Duration>)] = &[
            ("a Trust brings the renewal forward", &[Welcome(Some(3600)), By(600)], secs(600)),
            ("a later Trust puts nothing off", &[Welcome(Some(3600)), By(600), By(1200)], secs(600)),
            ("a Trust later than the Welcome's time changes nothing", &[Welcome(Some(3600)), By(7200)], secs(3600)),
            ("a Trust is obeyed for a certificate said never to renew", &[Welcome(None), By(600)], secs(600)),
            ("a deadline past is now", &[Welcome(Some(3600)), By(-10)], secs(0)),
            (
                "a renewal asked after the Trust answers it",
                &[Welcome(Some(3600)), By(600), Start, Renewed(90_000)],
                secs(90_000),
            ),
            (
                "a renewal under way when the Trust came may be the retiring CA's: the deadline holds",
                &[Welcome(Some(3600)), Start, By(600), Renewed(90_000)],
                secs(600),
            ),
            (
                "and the next renewal answers it",
                &[Welcome(Some(3600)), Start, By(600), Renewed(90_000), Start, Renewed(90_000)],
                secs(90_000),
            ),
            (
                "a new session's Welcome keeps a deadline not yet answered",
                &[Welcome(Some(3600)), By(600), Welcome(Some(3600))],
                secs(600),
            ),
            ("or brings it nearer still", &[Welcome(Some(3600)), By(600), Welcome(Some(300))], secs(300)),
            ("a failure's minute still holds", &[Welcome(Some(3600)), Failed(0), By(0)], secs(60)),
            ("a deadline still holds after a failure", &[Welcome(Some(3600)), By(600), Start, Failed(0)], secs(600)),
        ];
        let at = |s: i64| T + s * 1000;
        for (what, steps, want) in cases {
            let mut s = Schedule::default();
            let mut ticket = 0;
            for step in *steps {
                match *step {
                    Welcome(when) => s.welcomed(when.map(at)),
                    By(by) => s.renew_by(at(by)),
                    Start => ticket = s.start(),
                    Renewed(next) => s.renewed(at(next), ticket),
                    Failed(when) => s.failed(at(when)),
                }
            }
            assert_eq!(s.wait(T), *want, "{what}: {steps:?}");
        }
    }

    /// What a coordinator's renewal answer carries as its trust bundle.
    #[derive(Debug, Clone, Copy)]
    enum Bundle {
        /// Nothing (an older coordinator).
        Empty,
        /// Its CA's certificate.
        Ca,
        /// Text with no certificate in it.
        Garbage,
    }

    /// A coordinator's renewal service, answering for `name`.
    struct Coordinator {
        ca: crate::test_pki::TestCa,
        name: String,
        bundle: Bundle,
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
                ca_pem: match self.bundle {
                    Bundle::Empty => String::new(),
                    Bundle::Ca => self.ca.pem(),
                    Bundle::Garbage => "not a certificate".into(),
                },
                not_after_ms: T + 86_400_000,
                renew_at_ms: T + 43_200_000,
            }))
        }
    }

    /// A channel to a renewal service answering for `name` with `bundle`,
    /// and the PEM of the CA that signs (plain text: what is tested is the
    /// call and the files, not TLS).
    async fn channel(name: &str, bundle: Bundle) -> (Channel, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ca = crate::test_pki::TestCa::new("Drover CA");
        let ca_pem = ca.pem();
        let service = Coordinator { ca, name: name.into(), bundle };
        let server = tonic::transport::Server::builder()
            .add_service(pb::agent_cert_service_server::AgentCertServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        (channel, ca_pem)
    }

    #[tokio::test]
    async fn a_renewal_replaces_the_certificate_and_key_and_the_ca_only_with_a_bundle() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::test_dir::TestDir::new("renew");
        let old = Files { base: "agent-a1", cert_pem: "OLD", key_pem: "OLD KEY", ca_pem: Some("CA") };
        identity::install(&dir.0, old).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.0.join(f)).unwrap();
        // An answer without a trust bundle leaves ca.pem.
        let (channel_a1, _) = channel("a1", Bundle::Empty).await;
        let renewed = renew(channel_a1, dir.0.clone(), "a1".into()).await.unwrap();
        assert_eq!(renewed, Renewed { not_after_ms: T + 86_400_000, renew_at_ms: T + 43_200_000 });
        assert_eq!(read("ca.pem"), "CA");
        identity::check_pair(&read("agent-a1.pem"), &read("agent-a1-key.pem")).unwrap();
        let mode = std::fs::metadata(dir.0.join("agent-a1-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // One with a bundle writes it as ca.pem, with the new pair.
        let before = read("agent-a1.pem");
        let (channel_a1, ca_pem) = channel("a1", Bundle::Ca).await;
        renew(channel_a1, dir.0.clone(), "a1".into()).await.unwrap();
        assert_eq!(read("ca.pem"), ca_pem);
        assert_ne!(read("agent-a1.pem"), before);
        identity::check_pair(&read("agent-a1.pem"), &read("agent-a1-key.pem")).unwrap();
        // An answer for another name, or with a bundle holding no
        // certificate, changes nothing.
        let before = (read("ca.pem"), read("agent-a1.pem"), read("agent-a1-key.pem"));
        let (channel_a2, _) = channel("a2", Bundle::Ca).await;
        let err = renew(channel_a2, dir.0.clone(), "a1".into()).await.unwrap_err();
        assert_eq!(err.to_string(), "the coordinator's answer cannot be used: it is for agent \"a2\", not \"a1\"");
        let (channel_a1, _) = channel("a1", Bundle::Garbage).await;
        let err = renew(channel_a1, dir.0.clone(), "a1".into()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the coordinator's answer cannot be used: its trust bundle (ca_pem) holds no PEM certificate"
        );
        assert_eq!((read("ca.pem"), read("agent-a1.pem"), read("agent-a1-key.pem")), before);
    }

    #[test]
    fn a_failure_never_brings_the_renewal_forward() {
        let mut s = Schedule::default();
        s.welcomed(Some(T + 3_600_000));
        s.failed(T);
        assert_eq!(s.wait(T), secs(3600));
    }
}
