//! The connection a client enrolls over: TLS to one coordinator URL,
//! trusting only the CA that `--ca-pin` names ([`super::pin`]), with no
//! client certificate (it has none yet). [`pinned_channel`] is the same
//! connection presenting a client certificate: `drover ca refresh
//! --ca-pin`, for a CLI whose ca.pem no longer vouches for the
//! coordinators after a CA rotation's reissue, but whose certificate they
//! still accept.
//!
//! tonic's `ClientTlsConfig` takes CA files, not a verifier, so the TLS
//! is done here, in a connector handed to tonic over a plain `http://`
//! endpoint: TCP (no delay), then rustls with ALPN `h2` and the URL's host
//! as the server name.

use std::sync::Arc;
use std::time::Duration;

use crate::chain::error_chain;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use super::pin::{CaPin, PinnedVerifier};

/// How long TCP and the TLS handshake together may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the enrollment call may take once connected.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Why no connection was made.
#[derive(Debug)]
pub(super) enum DialError {
    /// Not a coordinator URL; retrying cannot help.
    Url(String),
    /// The server presented no certificate matching the pin; retrying
    /// cannot help.
    PinMismatch,
    /// The network, the handshake: worth another try.
    Connect(String),
}

/// Where a coordinator URL points: the host (without IPv6 brackets), the
/// port, and the `host:port` authority.
fn split(url: &str) -> Result<(String, u16, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("it must start with https:// (Drover always uses TLS)".into());
    }
    let host = uri.host().filter(|h| !h.is_empty()).ok_or("it names no host")?;
    let port = uri.port_u16().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((bare, port, format!("{host}:{port}")))
}

/// A client certificate to present: its chain (the certificate first)
/// and its private key, PEM, as a TLS directory holds them.
#[derive(Clone, Copy)]
pub struct ClientCert<'a> {
    pub chain_pem: &'a str,
    pub key_pem: &'a str,
}

/// Why [`pinned_channel`] made no connection.
#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    /// Not a coordinator URL.
    #[error("{0}")]
    Url(String),
    /// The server presented no certificate matching the pin.
    #[error(
        "the coordinator at {url} presents no CA with pin {pin}; check the pin (`drover ca status` on a working CLI \
         shows each CA's pin)"
    )]
    PinMismatch { url: String, pin: CaPin },
    /// The client certificate or key does not parse, or they do not go
    /// together.
    #[error("the client certificate cannot be used: {0}")]
    ClientCert(String),
    /// The network, the handshake: worth another try, maybe elsewhere.
    #[error("{0}")]
    Connect(String),
}

/// Connects to `url`, trusting only a server whose chain holds the CA
/// `pin` names and which that CA verifies, and presenting `cert` when
/// given (else no client certificate, as enrollment does). The channel's
/// calls time out as enrollment's do.
pub async fn pinned_channel(url: &str, pin: CaPin, cert: Option<ClientCert<'_>>) -> Result<Channel, PinnedError> {
    let cert = match cert {
        Some(cert) => Some(parse_client_cert(cert).map_err(PinnedError::ClientCert)?),
        None => None,
    };
    dial(url, pin, cert).await.map_err(|e| match e {
        DialError::Url(detail) => PinnedError::Url(detail),
        DialError::PinMismatch => PinnedError::PinMismatch { url: url.to_string(), pin },
        DialError::Connect(detail) => PinnedError::Connect(detail),
    })
}

/// A client certificate's chain and key, DER.
type ParsedCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn parse_client_cert(cert: ClientCert<'_>) -> Result<ParsedCert, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate PEM does not parse: {e}"))?;
    if chain.is_empty() {
        return Err("it holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| format!("the key PEM does not parse: {e}"))?;
    // Checked here, so that a key of another certificate is named as
    // such rather than as a failed handshake.
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        .map_err(|e| format!("the key is not the certificate's: {e}"))?;
    Ok((chain, key))
}

/// Connects to `url`, trusting only the CA `pin` names, with no client
/// certificate.
pub(super) async fn connect(url: &str, pin: CaPin) -> Result<Channel, DialError> {
    dial(url, pin, None).await
}

/// [`connect`], presenting `cert` when given.
async fn dial(url: &str, pin: CaPin, cert: Option<ParsedCert>) -> Result<Channel, DialError> {
    let bad_url = |detail: String| {
        DialError::Url(format!("bad coordinator URL {url:?}: {detail}; use e.g. https://10.0.0.1:7700"))
    };
    let (host, port, authority) = split(url).map_err(bad_url)?;
    let server_name = ServerName::try_from(host.clone()).map_err(|e| bad_url(format!("{e}")))?;
    let verifier = Arc::new(PinnedVerifier::new(pin));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DialError::Connect(format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| DialError::Connect(format!("cannot set up TLS with the client certificate: {e}")))?,
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = TlsConnector::from(Arc::new(config));
    let connector = tower::service_fn(move |_: http::Uri| {
        let (tls, server_name, host) = (tls.clone(), server_name.clone(), host.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| bad_url(error_chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    match endpoint.connect_with_connector(connector).await {
        Ok(channel) => Ok(channel),
        Err(_) if verifier.mismatched() => Err(DialError::PinMismatch),
        Err(e) => Err(DialError::Connect(format!("cannot connect to {url}: {}", error_chain(&e)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enroll::files::Request;
    use crate::test_pki::TestCa;
    use drover_proto::v1 as pb;

    #[test]
    fn urls_give_the_host_to_dial_and_to_name() {
        let ok = |url: &str| split(url).unwrap();
        assert_eq!(ok("https://10.0.0.1:7700"), ("10.0.0.1".into(), 7700, "10.0.0.1:7700".into()));
        assert_eq!(ok("https://coord.example/"), ("coord.example".into(), 443, "coord.example:443".into()));
        assert_eq!(ok("https://[::1]:7700"), ("::1".into(), 7700, "[::1]:7700".into()));
        assert_eq!(split("http://10.0.0.1:7700").unwrap_err(), "it must start with https:// (Drover always uses TLS)");
        assert!(split("10.0.0.1:7700").is_err());
    }

    /// Answers every enrollment with how many certificates the client
    /// presented (served requiring one).
    struct Echo;

    #[tonic::async_trait]
    impl pb::enroll_service_server::EnrollService for Echo {
        async fn enroll(
            &self,
            request: tonic::Request<pb::EnrollRequest>,
        ) -> Result<tonic::Response<pb::AgentCertificate>, tonic::Status> {
            let certs = request.peer_certs().map_or(0, |c| c.len());
            Ok(tonic::Response::new(pb::AgentCertificate {
                name: format!("{certs} client certificate"),
                ..Default::default()
            }))
        }
    }

    /// Serves on 127.0.0.1 with a certificate of `server_ca` (followed by
    /// it), requiring a client certificate of `client_ca`: a coordinator
    /// after a rotation's reissue. Returns its URL.
    async fn serve(server_ca: &TestCa, client_ca: &TestCa) -> String {
        use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
        let (cert, key) = server_ca.server(&["localhost", "127.0.0.1"]);
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(format!("{cert}{}", server_ca.pem()), key))
            .client_ca_root(Certificate::from_pem(client_ca.pem()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let server = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(pb::enroll_service_server::EnrollServiceServer::new(Echo))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        url
    }

    async fn ask(channel: Channel) -> Result<String, tonic::Status> {
        let mut client = pb::enroll_service_client::EnrollServiceClient::new(channel);
        Ok(client.enroll(pb::EnrollRequest::default()).await?.into_inner().name)
    }

    #[tokio::test]
    async fn a_pinned_channel_presents_the_client_certificate_the_server_asks_for() {
        let (old, new) = (TestCa::new("Drover CA"), TestCa::new("Drover CA 2"));
        let url = serve(&new, &old).await;
        let request = Request::new("carl").unwrap();
        let (_, cert_pem) = old.sign(request.csr_der.clone()).unwrap();
        let cert = ClientCert { chain_pem: &cert_pem, key_pem: &request.key_pem };
        let channel = pinned_channel(&url, new.pin, Some(cert)).await.unwrap();
        assert_eq!(ask(channel).await.unwrap(), "1 client certificate");
        // Without one, the server ends the handshake (with TLS 1.3 the
        // first call finds out).
        let refused = match pinned_channel(&url, new.pin, None).await {
            Ok(channel) => ask(channel).await.is_err(),
            Err(PinnedError::Connect(_)) => true,
            Err(e) => panic!("{e}"),
        };
        assert!(refused, "the server requires a client certificate");
        // The client's own CA is not the server's: the pin must name the
        // CA the server presents.
        let err = pinned_channel(&url, old.pin, Some(cert)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the coordinator at {url} presents no CA with pin {}; check the pin (`drover ca status` on a \
                 working CLI shows each CA's pin)",
                old.pin
            )
        );
    }

    #[tokio::test]
    async fn a_client_certificate_that_is_not_its_keys_is_named_before_dialing() {
        let ca = TestCa::new("Drover CA");
        let request = Request::new("carl").unwrap();
        let (_, cert_pem) = ca.sign(request.csr_der.clone()).unwrap();
        let other = Request::new("carl").unwrap();
        // Nobody listens there: only the certificate can be the error.
        let url = "https://127.0.0.1:9";
        let err = pinned_channel(url, ca.pin, Some(ClientCert { chain_pem: &cert_pem, key_pem: &other.key_pem }))
            .await
            .unwrap_err();
        assert!(matches!(err, PinnedError::ClientCert(_)), "{err:?}");
        assert!(err.to_string().starts_with("the client certificate cannot be used: the key is not the certificate's"));
        let err = pinned_channel(url, ca.pin, Some(ClientCert { chain_pem: "", key_pem: &request.key_pem }))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "the client certificate cannot be used: it holds no PEM certificate");
        let err = pinned_channel("http://127.0.0.1:9", ca.pin, None).await.unwrap_err();
        assert!(matches!(err, PinnedError::Url(_)), "{err:?}");
    }
}
