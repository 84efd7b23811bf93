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
    // The coordinator requires a client certificate in the TLS handshake
    // (tls.rs: `client_ca_root`), so a client without one never reaches the
    // API's own PermissionDenied. With TLS 1.3 the client finishes its half
    // of the handshake first and learns of the refusal from the server's
    // CertificateRequired alert; depending on timing that alert, or the
    // connection it closed, is what the call reports.
    let Err(refused) = list_runs(None) else { panic!("a client without a certificate got an answer") };
    assert_eq!(refused.status, None, "refused in the TLS handshake, before any gRPC status: {}", refused.detail);
    // The same call with the admin identity is answered.
    let admin = tonic::transport::Identity::from_pem(
        std::fs::read(fleet.tls.join("admin.pem")).unwrap(),
        std::fs::read(fleet.tls.join("admin-key.pem")).unwrap(),
    );
    if let Err(e) = list_runs(Some(admin)) {
        panic!("the admin certificate was refused ({:?}): {}", e.status, e.detail);
    }
}
