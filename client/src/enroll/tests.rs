//! Enrollment's tests: the decisions one by one, then whole enrollments
//! against a TLS server on 127.0.0.1 that presents its certificate and the
//! CA's, as the coordinator does.

use std::sync::Arc;

use super::*;
use crate::test_pki::TestCa;
use crate::tls::{Bundle, ClientTls};

/// The TLS directory of holder `base`, as a client loads it.
fn bundle(dir: &std::path::Path, base: &str) -> Bundle {
    Bundle { dir: dir.to_path_buf(), cert: base.into(), shown: base.into(), fix: "enroll again".into() }
}

#[test]
fn the_tls_directory_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("agents").join("a1");
    private_dir(&tls).unwrap();
    assert_eq!(std::fs::metadata(&tls).unwrap().permissions().mode() & 0o777, 0o700);
    private_dir(&tls).unwrap();
}

#[test]
fn refusals_are_final_and_unreachable_coordinators_are_retried() {
    use tonic::Status;
    let final_ = |s: Status| match judge("https://c:1", Holder::Agent, &s) {
        Try::Final(e) => e.to_string(),
        _ => panic!("{s:?} is final"),
    };
    assert_eq!(
        final_(Status::permission_denied("the join token was used already; create another")),
        "https://c:1 refused the enrollment (PermissionDenied): the join token was used already; create another"
    );
    assert!(final_(Status::invalid_argument("bad CSR")).contains("(InvalidArgument): bad CSR"));
    assert!(final_(Status::unimplemented("")).contains("this coordinator does not enroll agents"));
    let user = judge("https://c:1", Holder::User, &Status::unimplemented("unknown service"));
    let Try::Final(user) = user else { panic!("final") };
    assert!(user.to_string().ends_with(
        "unknown service; this coordinator does not enroll users: upgrade it, or use \
                                        the admin's certificate from `drover certs init`"
    ));
    for s in [Status::unavailable("down"), Status::internal("oops"), Status::deadline_exceeded("slow")] {
        assert!(matches!(judge("https://c:1", Holder::Agent, &s), Try::Again(_)), "{s:?} is retried");
    }
}

fn enrollment(dir: &std::path::Path, url: &str, pin: CaPin) -> Enrollment {
    Enrollment {
        holder: Holder::Agent,
        coordinators: vec![url.to_string()],
        name: "a1".into(),
        tls_dir: dir.to_path_buf(),
        token: "djt_1_secret".into(),
        pin,
        patience: PATIENCE,
    }
}

/// Enrolls, ignoring the progress.
async fn enroll_quietly(e: &Enrollment) -> Result<Enrolled, EnrollError> {
    enroll(e, |_| {}).await
}

#[test]
fn an_answer_must_name_the_agent_and_carry_the_pinned_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Drover CA");
    let request = Request::new("a1").unwrap();
    let (_, cert) = ca.sign(request.csr_der.clone()).unwrap();
    let e = enrollment(dir.path(), "https://c:1", ca.pin);
    assert!(!format!("{e:?}").contains("secret"), "the token stays out of Debug");
    let answer = pb::AgentCertificate {
        name: "a1".into(),
        certificate_pem: cert,
        ca_pem: ca.pem(),
        not_after_ms: 1_800_000_000_000,
        renew_at_ms: 1_799_000_000_000,
    };
    let other = pb::AgentCertificate { ca_pem: TestCa::new("Another CA").pem(), ..answer.clone() };
    let err = finish("https://c:1", &e, &request, other).unwrap_err();
    assert!(matches!(err, EnrollError::CaMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the coordinator at https://c:1 sent a CA certificate that does not match --ca-pin {}; check the pin \
             printed by `drover agent-token create`",
            ca.pin
        )
    );
    let err = finish("https://c:1", &e, &request, pb::AgentCertificate { name: "a2".into(), ..answer.clone() });
    assert!(err.unwrap_err().to_string().contains("it is for agent \"a2\", not \"a1\""));
    let other_key = Request::new("a1").unwrap();
    let err = finish("https://c:1", &e, &other_key, answer.clone()).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "https://c:1 answered the enrollment with a certificate the agent cannot use: its certificate does not \
             carry the new key it was asked to certify: "
        ),
        "{err}"
    );
    assert!(!files::bundle_present(dir.path(), "agent-a1"), "nothing is written from a bad answer");
    let done = finish("https://c:1", &e, &request, answer).unwrap();
    assert_eq!(done, Enrolled { url: "https://c:1".into(), not_after_ms: 1_800_000_000_000 });
    assert!(files::bundle_present(dir.path(), "agent-a1"));
    ClientTls::load(bundle(dir.path(), "agent-a1")).unwrap();
}

/// A coordinator's enrollment service: one token, signed by `ca`.
struct Coordinator {
    ca: Arc<TestCa>,
    token: String,
}

#[tonic::async_trait]
impl pb::enroll_service_server::EnrollService for Coordinator {
    async fn enroll(
        &self,
        request: tonic::Request<pb::EnrollRequest>,
    ) -> Result<tonic::Response<pb::AgentCertificate>, tonic::Status> {
        let request = request.into_inner();
        if request.token != self.token {
            return Err(tonic::Status::permission_denied(
                "this join token is unknown; create one with `drover agent-token create`",
            ));
        }
        let (name, certificate_pem) = self.ca.sign(request.csr).map_err(tonic::Status::invalid_argument)?;
        Ok(tonic::Response::new(pb::AgentCertificate {
            name,
            certificate_pem,
            ca_pem: self.ca.pem(),
            not_after_ms: 1_800_000_000_000,
            renew_at_ms: 1_799_000_000_000,
        }))
    }
}

/// Serves enrollment over TLS on 127.0.0.1 as a coordinator does, its
/// certificate followed by the CA's; returns its URL.
async fn serve(ca: Arc<TestCa>) -> String {
    use tonic::transport::{Identity, Server, ServerTlsConfig};
    let (cert, key) = ca.server(&["localhost", "127.0.0.1"]);
    let identity = Identity::from_pem(format!("{cert}{}", ca.pem()), key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let service = Coordinator { ca, token: "djt_1_secret".into() };
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .unwrap()
        .add_service(pb::enroll_service_server::EnrollServiceServer::new(service))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    url
}

#[tokio::test]
async fn an_agent_enrolls_over_a_connection_it_trusts_by_the_pin_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(TestCa::new("Drover CA"));
    let url = serve(Arc::clone(&ca)).await;
    let tls_dir = dir.path().join("tls");
    let e = enrollment(&tls_dir, &url, ca.pin);
    let done = enroll_quietly(&e).await.unwrap();
    assert_eq!(done, Enrolled { url: url.clone(), not_after_ms: 1_800_000_000_000 });
    let tls = ClientTls::load(bundle(&tls_dir, "agent-a1")).unwrap();
    crate::endpoint::endpoint(&url, &tls, &crate::endpoint::Transport::AGENT).unwrap();
    assert_eq!(std::fs::read_to_string(tls_dir.join("ca.pem")).unwrap(), ca.pem());
    // The single-use token cannot enroll again (the test coordinator knows
    // one other token only).
    let used = Enrollment { token: "djt_1_used".into(), ..e };
    assert!(matches!(enroll_quietly(&used).await, Err(EnrollError::Refused { .. })));
}

#[tokio::test]
async fn a_user_enrolls_into_user_pem_and_may_enroll_again() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(TestCa::new("Drover CA"));
    let url = serve(Arc::clone(&ca)).await;
    let tls_dir = dir.path().join("tls").join("otto");
    let e = Enrollment { holder: Holder::User, name: "otto".into(), ..enrollment(&tls_dir, &url, ca.pin) };
    enroll_quietly(&e).await.unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&tls_dir).unwrap().map(|f| f.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["ca.pem", "user-key.pem", "user.pem"]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&tls_dir), mode(&tls_dir.join("user-key.pem"))), (0o700, 0o600));
    ClientTls::load(bundle(&tls_dir, "user")).unwrap();
    // A second login replaces the bundle (a user has no renewal).
    let before = std::fs::read_to_string(tls_dir.join("user-key.pem")).unwrap();
    enroll_quietly(&e).await.unwrap();
    assert_ne!(std::fs::read_to_string(tls_dir.join("user-key.pem")).unwrap(), before);
}

#[tokio::test]
async fn a_coordinator_without_the_pinned_ca_and_a_refused_token_are_final() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(TestCa::new("Drover CA"));
    let url = serve(Arc::clone(&ca)).await;
    let wrong = TestCa::new("Another CA").pin;
    let err = enroll_quietly(&enrollment(dir.path(), &url, wrong)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the coordinator at {url} presented no CA certificate matching --ca-pin {wrong}; check the pin printed \
             by `drover agent-token create`"
        )
    );
    let bad_token = Enrollment { token: "djt_2_other".into(), ..enrollment(dir.path(), &url, ca.pin) };
    let err = enroll_quietly(&bad_token).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{url} refused the enrollment (PermissionDenied): this join token is unknown; create one with \
             `drover agent-token create`"
        )
    );
    assert!(!files::bundle_present(dir.path(), "agent-a1"));
}

#[tokio::test]
async fn a_coordinator_that_does_not_answer_is_retried_until_the_patience_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: every try fails to connect.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let e = Enrollment { patience: Duration::from_millis(300), ..enrollment(dir.path(), &url, TestCa::new("CA").pin) };
    let mut retries = 0;
    let err = enroll(&e, |p| {
        assert!(matches!(p, Progress::Retrying { .. }), "{p:?}");
        retries += 1;
    })
    .await
    .unwrap_err();
    assert!(retries >= 1);
    let EnrollError::GaveUp { waited, last, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*waited, Duration::from_millis(300));
    assert!(last.starts_with(&format!("cannot connect to {url}")), "{last}");
    assert!(err.to_string().starts_with("no coordinator enrolled the agent within 300ms"), "{err}");
    assert!(!err.to_string().contains("djt_"), "the token is in no message");
}
