//! Mutual TLS: who may connect, and who may do what.

use std::path::Path;
use std::time::Duration;

use drover_client::chain::error_chain;

use crate::harness::{Fleet, TempDir, bin, text};

/// A TLS directory that trusts the fleet's CA but presents another
/// certificate as the admin one.
pub(crate) fn mixed_tls(fleet: &Fleet, cert: &Path, key: &Path) -> TempDir {
    let dir = TempDir::new("mixed-tls");
    std::fs::copy(fleet.tls.join("ca.pem"), dir.path().join("ca.pem")).unwrap();
    std::fs::copy(cert, dir.path().join("admin.pem")).unwrap();
    std::fs::copy(key, dir.path().join("admin-key.pem")).unwrap();
    dir
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let fleet = Fleet::start("otherca");
    let other = TempDir::new("other-ca");
    let out =
        std::process::Command::new(bin("drover")).args(["certs", "init", "--dir"]).arg(other.path()).output().unwrap();
    assert!(out.status.success());
    let admin = other.path().join("admin");
    let tls = mixed_tls(&fleet, &admin.join("admin.pem"), &admin.join("admin-key.pem"));
    let out = fleet.drover_with_tls(tls.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(5), "{}{}", text(&out.stdout), text(&out.stderr));
    // And the real admin certificate works.
    assert_eq!(fleet.drover(&["runs"]).status.code(), Some(0));
}

#[test]
fn an_agent_certificate_cannot_use_the_control_api() {
    let mut fleet = Fleet::start("agentctl");
    fleet.agent("a1", "", 1);
    let bundle = fleet.agent_tls("a1");
    let tls = mixed_tls(&fleet, &bundle.join("agent-a1.pem"), &bundle.join("agent-a1-key.pem"));
    let out = fleet.drover_with_tls(tls.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(text(&out.stderr).contains("cannot use the control API"), "{}", text(&out.stderr));
}

#[test]
fn an_agent_can_only_act_as_the_name_in_its_certificate() {
    let mut fleet = Fleet::start("impostor");
    fleet.agent("honest", "", 1);
    // Before the impostor starts: it may exit on its refusal, which
    // wait_agents would take for a failure.
    fleet.wait_agents(1);
    // Give "impostor" the certificate of "honest".
    let (honest, impostor) = (fleet.agent_tls("honest"), fleet.agent_tls("impostor"));
    std::fs::create_dir_all(&impostor).unwrap();
    std::fs::copy(honest.join("ca.pem"), impostor.join("ca.pem")).unwrap();
    std::fs::copy(honest.join("agent-honest.pem"), impostor.join("agent-impostor.pem")).unwrap();
    std::fs::copy(honest.join("agent-honest-key.pem"), impostor.join("agent-impostor-key.pem")).unwrap();
    let i = fleet.agent("impostor", "", 1);
    crate::harness::wait_for("the impostor to be refused", Duration::from_secs(20), || {
        std::fs::read_to_string(&fleet.agents[i].log)
            .unwrap_or_default()
            .contains("cannot act as \"impostor\"")
            .then_some(())
    });
    let out = fleet.drover(&["agents"]);
    assert!(!text(&out.stdout).contains("impostor"), "{}", text(&out.stdout));
}

/// Why a call was not answered.
struct Refused {
    /// The gRPC status the server sent; None when the connection failed or
    /// broke below gRPC (TLS, TCP) before the server sent any.
    status: Option<tonic::Code>,
    detail: String,
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let fleet = Fleet::start("nocert");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Lists runs over a new connection that trusts the fleet's CA and
    // presents `identity`, if any.
    let list_runs = |identity: Option<tonic::transport::Identity>| -> Result<(), Refused> {
        rt.block_on(async {
            use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
            let ca = Certificate::from_pem(std::fs::read(fleet.tls.join("ca.pem")).unwrap());
            let mut tls = ClientTlsConfig::new().ca_certificate(ca);
            if let Some(identity) = identity {
                tls = tls.identity(identity);
            }
            let channel = Endpoint::from_shared(fleet.url())
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .map_err(|e| Refused { status: None, detail: format!("connect: {}", error_chain(&e)) })?;
            let mut client = drover_proto::v1::control_service_client::ControlServiceClient::new(channel);
            client
                .list_runs(drover_proto::v1::ListRunsRequest { limit: 1, ..Default::default() })
                .await
                .map(|_| ())
                .map_err(|s| {
                    // A status the client made up from a broken connection
                    // carries the transport error; one the server sent does not.
                    let transport = std::error::Error::source(&s).is_some_and(|e| e.is::<tonic::transport::Error>());
                    let status = (!transport).then_some(s.code());
                    Refused { status, detail: format!("call: {}", error_chain(&s)) }
                })
        })
    };
    // The listener lets a client without a certificate finish the TLS
    // handshake, for enrollment alone (`EnrollService`); every other
    // service refuses it before any handler runs (`api::require_certificate`).
    let Err(refused) = list_runs(None) else { panic!("a client without a certificate got an answer") };
    assert_eq!(refused.status, Some(tonic::Code::Unauthenticated), "{}", refused.detail);
    assert!(refused.detail.contains("a client certificate is required"), "{}", refused.detail);
    // The same call with the admin identity is answered.
    let admin = tonic::transport::Identity::from_pem(
        std::fs::read(fleet.tls.join("admin.pem")).unwrap(),
        std::fs::read(fleet.tls.join("admin-key.pem")).unwrap(),
    );
    if let Err(e) = list_runs(Some(admin)) {
        panic!("the admin certificate was refused ({:?}): {}", e.status, e.detail);
    }
}

/// An admin certificate signed by the fleet's own CA, edited by `edit`,
/// in a TLS directory the CLI can use.
fn forged_admin(fleet: &Fleet, tag: &str, edit: impl FnOnce(&mut rcgen::CertificateParams)) -> TempDir {
    let ca = fleet.certs.join("ca");
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca.join("ca-key.pem")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(ca.join("ca.pem")).unwrap(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "drover-admins");
    dn.push(rcgen::DnType::CommonName, "forger");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    edit(&mut params);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let dir = TempDir::new(tag);
    std::fs::copy(fleet.tls.join("ca.pem"), dir.path().join("ca.pem")).unwrap();
    std::fs::write(dir.path().join("admin.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("admin-key.pem"), key.serialize_pem()).unwrap();
    dir
}

#[test]
fn an_expired_client_certificate_or_one_with_two_uri_sans_is_refused() {
    let fleet = Fleet::start("forged");
    // Signed by the right CA, but expired: refused in the handshake.
    let expired = forged_admin(&fleet, "expired", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let out = fleet.drover_with_tls(expired.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("refused the client certificate"), "{}", text(&out.stderr));
    // Signed by the right CA, valid, but naming two more identities in URI
    // SANs: a client is named by its subject alone, so it is refused.
    let two = forged_admin(&fleet, "two-sans", |p| {
        p.subject_alt_names = vec![
            rcgen::SanType::URI("spiffe://drover/admin/root".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://drover/agent/a1".try_into().unwrap()),
        ];
    });
    let out = fleet.drover_with_tls(two.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("carries 2 subject alternative name(s)"), "{}", text(&out.stderr));
    // Unedited, the same forgery kit makes a certificate that works: the
    // refusals above are for what was edited.
    let plain = forged_admin(&fleet, "plain", |_| {});
    assert!(fleet.drover_with_tls(plain.path(), &["runs"]).status.success());
}
