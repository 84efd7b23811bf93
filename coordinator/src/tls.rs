//! Mutual TLS: loading the coordinator's certificates. Who a client is
//! (its role and name) and an agent's labels are read from its certificate
//! by `drover_pki` (`peer::peer_from_der`, `labels::agent_labels_from_der`),
//! which also issues them (`drover certs`); the TLS layer has already
//! checked the chain against our CA before any of that runs.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read {path}: {source}; create the certificates with `drover certs init --dir DIR` \
         and give the coordinator --tls-dir DIR/coordinator"
    )]
    Read { path: PathBuf, source: std::io::Error },
}

fn read(dir: &Path, file: &str) -> Result<Vec<u8>, TlsError> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|source| TlsError::Read { path, source })
}

/// The server side: our certificate, and client certificates required and
/// verified against our CA.
pub fn server_config(dir: &Path) -> Result<ServerTlsConfig, TlsError> {
    let identity = Identity::from_pem(read(dir, "coordinator.pem")?, read(dir, "coordinator-key.pem")?);
    let ca = Certificate::from_pem(read(dir, "ca.pem")?);
    Ok(ServerTlsConfig::new().identity(identity).client_ca_root(ca))
}
