//! A client's certificates, loaded from its TLS directory (`--tls-dir`):
//! `ca.pem`, the CA that vouches for the coordinators, and the client's own
//! certificate and key, `NAME.pem` and `NAME-key.pem` (`admin` for the CLI,
//! `agent-NAME` for an agent). [`ClientTls::load`] reads them once and
//! checks that each certificate file holds a PEM certificate; every error
//! names the file or directory and says how to put it right ([`Bundle`]
//! carries that advice, which differs per kind of client).
//!
//! Whether the PEM parses and the key matches is known only when tonic
//! builds an endpoint from the configuration ([`crate::endpoint`]), which
//! reports it as [`TlsError::Unusable`] through [`ClientTls::unusable`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A client's TLS directory and what a user who got it wrong should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub dir: PathBuf,
    /// The client certificate's file name without `.pem`: `admin`,
    /// `agent-a1`.
    pub cert: String,
    /// The same as users should read it in advice: `admin`, `agent-NAME`.
    pub shown: String,
    /// Where to point the client instead, e.g. "point --tls-dir (or
    /// DROVER_TLS_DIR) at the admin directory that `drover certs init --dir
    /// DIR` made, DIR/admin".
    pub fix: String,
}

impl Bundle {
    /// The files a bundle holds, for messages.
    fn files(&self) -> String {
        format!("ca.pem, {0}.pem and {0}-key.pem", self.shown)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}; {} (it holds {})", .path.display(), .bundle.fix, .bundle.files())]
    Read { path: PathBuf, source: std::io::Error, bundle: Arc<Bundle> },
    /// The files were read but do not make a TLS configuration: a file
    /// without a PEM certificate, a PEM that does not parse, a key that does
    /// not match.
    #[error(
        "the certificates in {} are not usable: {detail}; check {} there, or {}",
        .bundle.dir.display(), .bundle.files(), .bundle.fix
    )]
    Unusable { detail: String, bundle: Arc<Bundle> },
}

/// A client's TLS configuration and where it came from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: ClientTlsConfig,
    bundle: Arc<Bundle>,
}

impl ClientTls {
    /// Reads `ca.pem`, `{cert}.pem` and `{cert}-key.pem` from the bundle's
    /// directory.
    pub fn load(bundle: Bundle) -> Result<ClientTls, TlsError> {
        let bundle = Arc::new(bundle);
        let dir = &bundle.dir;
        let ca = Certificate::from_pem(read_cert(dir, "ca.pem", &bundle)?);
        let identity = Identity::from_pem(
            read_cert(dir, &format!("{}.pem", bundle.cert), &bundle)?,
            read(dir, &format!("{}-key.pem", bundle.cert), &bundle)?,
        );
        let config = ClientTlsConfig::new().ca_certificate(ca).identity(identity);
        Ok(ClientTls { config, bundle })
    }

    /// A configuration made elsewhere (tests), with the bundle to name in
    /// errors.
    pub fn from_config(config: ClientTlsConfig, bundle: Bundle) -> ClientTls {
        ClientTls { config, bundle: Arc::new(bundle) }
    }

    pub fn config(&self) -> &ClientTlsConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.bundle.dir
    }

    /// The files were read but tonic cannot use them, for `detail`.
    pub fn unusable(&self, detail: String) -> TlsError {
        TlsError::Unusable { detail, bundle: self.bundle.clone() }
    }
}

fn read(dir: &Path, file: &str, bundle: &Arc<Bundle>) -> Result<Vec<u8>, TlsError> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|source| TlsError::Read { path, source, bundle: bundle.clone() })
}

/// Reads a certificate file and checks that it holds a PEM certificate:
/// tonic takes a file without one silently (an empty trust store, no client
/// certificate), and every handshake would then fail with an obscure error.
fn read_cert(dir: &Path, file: &str, bundle: &Arc<Bundle>) -> Result<Vec<u8>, TlsError> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    let pem = read(dir, file, bundle)?;
    if !pem.windows(BEGIN.len()).any(|w| w == BEGIN) {
        let detail = format!("{file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        return Err(TlsError::Unusable { detail, bundle: bundle.clone() });
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent_bundle(dir: &Path) -> Bundle {
        Bundle {
            dir: dir.to_path_buf(),
            cert: "agent-x".into(),
            shown: "agent-NAME".into(),
            fix: "point --tls-dir at the agent's bundle, DIR/agents/NAME".into(),
        }
    }

    #[test]
    fn missing_and_non_pem_files_are_named_with_the_fix() {
        let dir = std::env::temp_dir().join(format!("drover-client-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let err = ClientTls::load(agent_bundle(&dir)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert!(msg.starts_with(&format!("cannot read {}: ", dir.join("ca.pem").display())), "{msg}");
        assert!(
            msg.ends_with(
                "; point --tls-dir at the agent's bundle, DIR/agents/NAME \
                 (it holds ca.pem, agent-NAME.pem and agent-NAME-key.pem)"
            ),
            "{msg}"
        );

        std::fs::write(dir.join("ca.pem"), "garbage").unwrap();
        let msg = ClientTls::load(agent_bundle(&dir)).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "the certificates in {} are not usable: ca.pem holds no PEM certificate \
                 (-----BEGIN CERTIFICATE-----); check ca.pem, agent-NAME.pem and agent-NAME-key.pem there, \
                 or point --tls-dir at the agent's bundle, DIR/agents/NAME",
                dir.display()
            )
        );

        std::fs::write(dir.join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let msg = ClientTls::load(agent_bundle(&dir)).unwrap_err().to_string();
        assert!(msg.contains("agent-x.pem: "), "the client certificate is read next: {msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
