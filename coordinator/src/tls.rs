//! The API listener's TLS, done here rather than by tonic so that the
//! server certificate can change while the coordinator runs: the
//! coordinator serves a certificate it signs itself with the CA key, for
//! the hosts of `coordinator.pem`, lasting `--server-cert-ttl`, and renews
//! it at half its life (as agents renew theirs); connections open on the
//! old one go on. Without the CA key it serves `coordinator.pem` as it is.
//!
//! Client certificates are verified against the CA when presented; a
//! client without one may finish the handshake, for enrollment alone
//! (`api::guard` refuses it everywhere else). The chain sent is the leaf
//! and then the CA, so that an agent enrolling with `--ca-pin` finds the CA
//! it pins. Who a client is (its role and name) and an agent's labels are
//! read from its certificate by `drover_pki`, after the handshake has
//! checked the chain.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use drover_pki::enroll::Authority;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

/// How long a client may take over the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read {path}: {source}; create the certificates with `drover certs init --dir DIR` \
         and give the coordinator --tls-dir DIR/coordinator"
    )]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not usable: {detail}")]
    Unusable { path: PathBuf, detail: String },
    #[error("cannot make the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn read(dir: &Path, file: &str) -> Result<(PathBuf, Vec<u8>), TlsError> {
    let path = dir.join(file);
    std::fs::read(&path).map(|bytes| (path.clone(), bytes)).map_err(|source| TlsError::Read { path, source })
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Unusable { path: path.to_path_buf(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Unusable { path: path.to_path_buf(), detail: "it holds no PEM certificate".into() });
    }
    Ok(certs)
}

fn certified(
    path: &Path,
    leaf: Vec<CertificateDer<'static>>,
    key_pem: &[u8],
    ca: &[CertificateDer<'static>],
) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Unusable { path: path.to_path_buf(), detail: format!("its key: {e}") })?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Unusable { path: path.to_path_buf(), detail: format!("its key: {e}") })?;
    let mut chain = leaf;
    for c in ca {
        if !chain.contains(c) {
            chain.push(c.clone());
        }
    }
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// The server certificate now, which renewal replaces.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

/// The listener's TLS: the configuration and the certificate it serves.
pub struct ServerTls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    ca: Vec<CertificateDer<'static>>,
    /// The hosts of `coordinator.pem`, which renewed certificates name too.
    hosts: Vec<String>,
    dir: PathBuf,
}

impl ServerTls {
    /// `ca.pem`, `coordinator.pem` and `coordinator-key.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Arc<ServerTls>, TlsError> {
        let (ca_path, ca_pem) = read(dir, "ca.pem")?;
        let ca = certs(&ca_path, &ca_pem)?;
        let (cert_path, cert_pem) = read(dir, "coordinator.pem")?;
        let leaf = certs(&cert_path, &cert_pem)?;
        let hosts = drover_pki::enroll::server_hosts(leaf[0].as_ref())
            .map_err(|detail| TlsError::Unusable { path: cert_path.clone(), detail })?;
        let (key_path, key_pem) = read(dir, "coordinator-key.pem")?;
        let current = Arc::new(Current(RwLock::new(certified(&key_path, leaf, &key_pem, &ca)?)));
        let mut roots = rustls::RootCertStore::empty();
        for c in &ca {
            roots.add(c.clone()).map_err(|e| TlsError::Unusable { path: ca_path.clone(), detail: e.to_string() })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Unusable { path: ca_path, detail: e.to_string() })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Ok(Arc::new(ServerTls { acceptor, current, ca, hosts, dir: dir.to_path_buf() }))
    }

    /// Signs a new server certificate for the same hosts with a new key and
    /// serves it from the next handshake on; returns its serial and end.
    pub fn renew(&self, authority: &Authority, now_ms: i64, ttl: Duration) -> Result<(String, i64), TlsError> {
        let path = self.dir.join("coordinator.pem");
        let made = authority
            .sign_server(&self.hosts, now_ms, ttl)
            .map_err(|e| TlsError::Unusable { path: path.clone(), detail: e.to_string() })?;
        let leaf = certs(&path, made.cert_pem.as_bytes())?;
        let key = certified(&path, leaf, made.key_pem.as_bytes(), &self.ca)?;
        *self.current.0.write().expect("certificate lock") = key;
        Ok((made.signed.serial, made.signed.not_after_ms))
    }
}

/// Renews the server certificate now and then at half its life, for as
/// long as the coordinator runs; a failure is logged and tried again in
/// 30 seconds, while the certificate served still holds.
pub async fn renew_forever(tls: Arc<ServerTls>, authority: Arc<Authority>, ttl: Duration) {
    loop {
        let now = drover_telemetry::trace::now_ms() as i64;
        let wait = match tls.renew(&authority, now, ttl) {
            Ok((serial, not_after_ms)) => {
                info!(%serial, not_after_ms, "serving a new server certificate");
                ttl / 2
            }
            Err(e) => {
                warn!(error = %e, "cannot renew the server certificate; trying again in 30s");
                Duration::from_secs(30)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The TLS connections of `listener`, each handshake on a task of its own
/// (a slow client holds up nobody), within [`HANDSHAKE_TIMEOUT`]; failed
/// handshakes are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY, a small message (an assignment) can sit
            // behind Nagle's algorithm for the peer's delayed ACK: 40 ms.
            let _ = tcp.set_nodelay(true);
            let (acceptor, sender) = (tls.acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
