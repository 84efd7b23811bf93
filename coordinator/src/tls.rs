//! The API listener's TLS, done here rather than by tonic so that the
//! server certificate can change while the coordinator runs: the
//! coordinator serves a certificate it signs itself with the CA key, for
//! the hosts of `coordinator.pem`, lasting `--server-cert-ttl`, and renews
//! it at half its life (as agents renew theirs); connections open on the
//! old one go on. Without the CA key it serves `coordinator.pem` as it is.
//!
//! During a CA rotation (`crate::identity::ca`) the CAs client
//! certificates are verified against follow the ring: the configuration is
//! rebuilt with the ring's CAs as roots, and a change of the CA that signs
//! renews the server certificate at once, signed by the new one (with
//! `--server-cert-ttl off`, too: a rotated CA must reach every certificate).
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

use crate::identity::ca::{Keyring, Trust};
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

/// How long the server certificates a rotated CA signs last when
/// `--server-cert-ttl` is off.
pub const ROTATED_SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The listener's TLS: the configuration and the certificate it serves.
pub struct ServerTls {
    acceptor: RwLock<TlsAcceptor>,
    current: Arc<Current>,
    /// The CAs client certificates are verified against.
    roots: RwLock<Vec<CertificateDer<'static>>>,
    /// `ca.pem`'s CA, read: what is trusted before any rotation.
    files_ca: drover_pki::enroll::CaCert,
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
        let files_ca = drover_pki::enroll::CaCert::parse(&String::from_utf8_lossy(&ca_pem))
            .map_err(|detail| TlsError::Unusable { path: ca_path.clone(), detail })?;
        let current = Arc::new(Current(RwLock::new(certified(&key_path, leaf, &key_pem, &ca)?)));
        let acceptor = acceptor(&ca, current.clone()).map_err(|detail| TlsError::Unusable { path: ca_path, detail })?;
        Ok(Arc::new(ServerTls {
            acceptor: RwLock::new(acceptor),
            current,
            roots: RwLock::new(ca),
            files_ca,
            hosts,
            dir: dir.to_path_buf(),
        }))
    }

    /// `ca.pem`'s CA.
    pub fn files_ca(&self) -> &drover_pki::enroll::CaCert {
        &self.files_ca
    }

    /// Verifies client certificates against `trust`'s CAs from the next
    /// handshake on (connections open go on as they are).
    pub fn trust(&self, trust: &Trust) -> Result<(), TlsError> {
        let mut roots = Vec::new();
        for ca in &trust.cas {
            roots.extend(certs(Path::new("the CA ring"), ca.cert.pem.as_bytes())?.into_iter().take(1));
        }
        if *self.roots.read().expect("roots lock") == roots {
            return Ok(());
        }
        let made = acceptor(&roots, self.current.clone())
            .map_err(|detail| TlsError::Unusable { path: "the CA ring".into(), detail })?;
        *self.acceptor.write().expect("acceptor lock") = made;
        *self.roots.write().expect("roots lock") = roots;
        Ok(())
    }

    /// The web UI's configuration (`crate::ui`): the same server
    /// certificate, renewed with it, and no client certificates (a browser
    /// has none of ours; the UI's sessions stand in for them); HTTP/2, so
    /// that a page's live streams do not use up a browser's six HTTP/1.1
    /// connections, and HTTP/1.1.
    pub fn browser_acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().expect("acceptor lock").clone()
    }

    /// Signs a new server certificate for the same hosts with a new key and
    /// serves it from the next handshake on; returns its serial and end.
    pub fn renew(&self, authority: &Authority, now_ms: i64, ttl: Duration) -> Result<(String, i64), TlsError> {
        let path = self.dir.join("coordinator.pem");
        let made = authority
            .sign_server(&self.hosts, now_ms, ttl)
            .map_err(|e| TlsError::Unusable { path: path.clone(), detail: e.to_string() })?;
        let leaf = certs(&path, made.cert_pem.as_bytes())?;
        let ca = certs(&path, authority.ca_pem().as_bytes())?;
        let key = certified(&path, leaf, made.key_pem.as_bytes(), &ca)?;
        *self.current.0.write().expect("certificate lock") = key;
        Ok((made.signed.serial, made.signed.not_after_ms))
    }
}

/// The configuration: client certificates verified against `roots` when
/// presented, the server certificate `current`'s, HTTP/2.
fn acceptor(roots: &[CertificateDer<'static>], current: Arc<Current>) -> Result<TlsAcceptor, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.clone()).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(current);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Follows the keyring for as long as the coordinator runs: the client
/// roots follow its CAs, and the server certificate is renewed at half its
/// life (`ttl`; none: only once a rotation has begun) and at once when the
/// CA that signs changes. A failure is logged and tried again in 30
/// seconds, while the certificate served still holds.
pub async fn renew_forever(tls: Arc<ServerTls>, keyring: Arc<Keyring>, ttl: Option<Duration>) {
    let mut changes = keyring.subscribe();
    // The CA that signed the certificate made last, and when to renew it.
    let mut served: Option<String> = None;
    let mut next: Option<tokio::time::Instant> = None;
    loop {
        let trust = changes.borrow_and_update().clone();
        if trust.ring.is_some()
            && let Err(e) = tls.trust(&trust)
        {
            warn!(error = %e, "cannot trust the CA ring's CAs; keeping the ones trusted before");
        }
        let ttl = ttl.or(trust.ring.as_ref().map(|_| ROTATED_SERVER_CERT_TTL));
        if let (Some(signer), Some(ttl)) = (&trust.signer, ttl) {
            let due = served.as_deref() != Some(signer.pin()) || next.is_some_and(|t| t <= tokio::time::Instant::now());
            if due {
                let now = drover_telemetry::trace::now_ms() as i64;
                next = Some(
                    tokio::time::Instant::now()
                        + match tls.renew(signer, now, ttl) {
                            Ok((serial, not_after_ms)) => {
                                info!(%serial, not_after_ms, ca = signer.pin(), "serving a new server certificate");
                                served = Some(signer.pin().to_owned());
                                ttl / 2
                            }
                            Err(e) => {
                                warn!(error = %e, "cannot renew the server certificate; trying again in 30s");
                                Duration::from_secs(30)
                            }
                        },
                );
            }
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
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
            let (acceptor, sender) = (tls.acceptor(), tx.clone());
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
