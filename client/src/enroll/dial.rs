//! The connection a client enrolls over: TLS to one coordinator URL,
//! trusting only the CA that `--ca-pin` names ([`super::pin`]), with no
//! client certificate (it has none yet).
//!
//! tonic's `ClientTlsConfig` takes CA files, not a verifier, so the TLS
//! is done here, in a connector handed to tonic over a plain `http://`
//! endpoint: TCP (no delay), then rustls with ALPN `h2` and the URL's host
//! as the server name.

use std::sync::Arc;
use std::time::Duration;

use crate::chain::error_chain;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
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

/// Connects to `url`, trusting only the CA `pin` names.
pub(super) async fn connect(url: &str, pin: CaPin) -> Result<Channel, DialError> {
    let bad_url = |detail: String| {
        DialError::Url(format!("bad coordinator URL {url:?}: {detail}; use e.g. https://10.0.0.1:7700"))
    };
    let (host, port, authority) = split(url).map_err(bad_url)?;
    let server_name = ServerName::try_from(host.clone()).map_err(|e| bad_url(format!("{e}")))?;
    let verifier = Arc::new(PinnedVerifier::new(pin));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DialError::Connect(format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
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

    #[test]
    fn urls_give_the_host_to_dial_and_to_name() {
        let ok = |url: &str| split(url).unwrap();
        assert_eq!(ok("https://10.0.0.1:7700"), ("10.0.0.1".into(), 7700, "10.0.0.1:7700".into()));
        assert_eq!(ok("https://coord.example/"), ("coord.example".into(), 443, "coord.example:443".into()));
        assert_eq!(ok("https://[::1]:7700"), ("::1".into(), 7700, "[::1]:7700".into()));
        assert_eq!(split("http://10.0.0.1:7700").unwrap_err(), "it must start with https:// (Drover always uses TLS)");
        assert!(split("10.0.0.1:7700").is_err());
    }
}
