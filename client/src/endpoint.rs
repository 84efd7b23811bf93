//! A coordinator URL made a tonic [`Endpoint`] with the transport settings
//! Drover's clients share ([`Transport`]). Only `https://` URLs are taken:
//! the coordinator listens with TLS only, and a plain-text dial would fail,
//! and be retried, forever.

use std::time::Duration;

use tonic::transport::Endpoint;

use crate::chain::{cause, error_chain};
use crate::tls::{ClientTls, TlsError};

/// How a client's connections notice a coordinator that died or froze.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    /// Covers TCP only; a frozen coordinator's kernel still accepts the
    /// connection, so the caller bounds the TLS handshake itself.
    pub connect_timeout: Duration,
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
    pub keep_alive_while_idle: bool,
}

impl Transport {
    /// Agents (and the benchmark's simulated agents, so the coordinator
    /// sees the same load per agent). Their heartbeats, acknowledged at
    /// once, are what notices a frozen coordinator: within half an election
    /// TTL of a heartbeat (every quarter of one while an attempt is held,
    /// once per idle period while none is). A PING costs the coordinator as
    /// much as a heartbeat, so the keepalive waits longer than the longest
    /// idle period the leader tells a session in a big fleet (30 s, the
    /// coordinator's `MAX_SCALED_IDLE`; 10 s, the lease TTL, in a fleet
    /// under 1,000 agents): on a connection that carries heartbeats, each
    /// acknowledgement puts it off, and it is never sent. It still guards a
    /// coordinator with a longer lease TTL and a connection whose session
    /// has ended mid-transfer.
    pub const AGENT: Transport = Transport {
        connect_timeout: Duration::from_secs(3),
        keep_alive_interval: Duration::from_secs(45),
        keep_alive_timeout: Duration::from_secs(3),
        keep_alive_while_idle: true,
    };

    /// Control clients (the CLI, the benchmark's control client): a call in
    /// flight notices a dead coordinator within seconds; an idle
    /// connection is not pinged.
    pub const CONTROL: Transport = Transport {
        connect_timeout: Duration::from_secs(3),
        keep_alive_interval: Duration::from_secs(3),
        keep_alive_timeout: Duration::from_secs(5),
        keep_alive_while_idle: false,
    };

    /// `endpoint` with these settings, and TCP_NODELAY (every message is
    /// small and waited for).
    pub fn apply(&self, endpoint: Endpoint) -> Endpoint {
        endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(self.keep_alive_timeout)
            .keep_alive_while_idle(self.keep_alive_while_idle)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("bad coordinator URL {url:?}: {detail}; use e.g. https://10.0.0.1:7700")]
    Url { url: String, detail: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// An endpoint for one coordinator URL, with `tls` and `transport`.
pub fn endpoint(url: &str, tls: &ClientTls, transport: &Transport) -> Result<Endpoint, EndpointError> {
    let url_err = |detail: String| EndpointError::Url { url: url.to_string(), detail };
    if !url.starts_with("https://") {
        return Err(url_err("it must start with https:// (Drover always uses TLS)".into()));
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| url_err(error_chain(&e)))?
        .tls_config(tls.config().clone())
        .map_err(|e| tls.unusable(cause(&e)))?;
    Ok(transport.apply(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    use tonic::transport::{Certificate, ClientTlsConfig};

    use crate::tls::Bundle;

    fn bundle(dir: &str) -> Bundle {
        Bundle { dir: Path::new(dir).into(), cert: "admin".into(), shown: "admin".into(), fix: "fix it".into() }
    }

    #[test]
    fn only_https_urls_are_taken() {
        let tls = ClientTls::from_config(ClientTlsConfig::new(), bundle("tls"));
        for url in ["http://127.0.0.1:7700", "127.0.0.1:7700", "localhost:7700", "grpc://h:1"] {
            let err = endpoint(url, &tls, &Transport::AGENT).unwrap_err();
            assert!(matches!(err, EndpointError::Url { .. }), "{url}: {err:?}");
            assert!(err.to_string().contains("must start with https:// (Drover always uses TLS)"), "{err}");
        }
        endpoint("https://127.0.0.1:7700", &tls, &Transport::AGENT).unwrap();
        let err = endpoint("https://bad host:1", &tls, &Transport::CONTROL).unwrap_err().to_string();
        assert!(err.starts_with("bad coordinator URL \"https://bad host:1\": "), "{err}");
    }

    #[test]
    fn certificates_that_do_not_parse_are_a_certificate_error_naming_the_dir() {
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(broken));
        let tls = ClientTls::from_config(config, bundle("/etc/drover/tls"));
        let err = endpoint("https://127.0.0.1:7700", &tls, &Transport::AGENT).unwrap_err();
        assert!(matches!(err, EndpointError::Tls(TlsError::Unusable { .. })), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("the certificates in /etc/drover/tls are not usable: "), "{msg}");
        assert!(msg.ends_with("; check ca.pem, admin.pem and admin-key.pem there, or fix it"), "{msg}");
        assert!(!msg.contains("transport error") && !msg.contains("URL"), "{msg}");
    }
}
