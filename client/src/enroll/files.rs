//! A client's own key and certificate on disk, as enrollment
//! ([`super::enroll`]) first writes them and an agent's renewal replaces
//! them: a new key and its certificate signing request ([`Request`]), the
//! check that a certificate the coordinator sent carries that key
//! ([`check_pair`]), and the files written whole and renamed into place
//! ([`install`]), the key created private (0600) from its first byte.
//!
//! The files are those [`crate::tls::ClientTls::load`] reads from a TLS
//! directory: `ca.pem`, `BASE.pem` and `BASE-key.pem`, where the base name
//! is `agent-NAME` for an agent and `user` for a user
//! ([`super::Holder::base`]).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Why a key or its request could not be made.
pub type KeyError = rcgen::Error;

/// A new key and a request to certify it under `name`: the subject's
/// common name is the name, with no SANs and no extensions, which is all
/// the coordinator signs (it adds the rest from what it holds).
pub struct Request {
    /// The private key, PEM (PKCS#8). Never logged.
    pub key_pem: String,
    /// The PKCS#10 request, DER.
    pub csr_der: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("csr_der", &self.csr_der.len()).finish_non_exhaustive()
    }
}

impl Request {
    /// A new key (ECDSA P-256, rcgen's default) and its CSR.
    pub fn new(name: &str) -> Result<Request, KeyError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key)?;
        Ok(Request { key_pem: key.serialize_pem(), csr_der: csr.der().to_vec() })
    }
}

/// The client's certificate file in its TLS directory.
pub fn cert_file(base: &str) -> String {
    format!("{base}.pem")
}

/// The client's key file in its TLS directory.
pub fn key_file(base: &str) -> String {
    format!("{base}-key.pem")
}

/// The CA's certificate file in a TLS directory.
pub const CA_FILE: &str = "ca.pem";

/// Whether `dir` holds the whole bundle named `base` (the CA, the
/// certificate and its key).
pub fn bundle_present(dir: &Path, base: &str) -> bool {
    [CA_FILE.to_string(), cert_file(base), key_file(base)].iter().all(|f| dir.join(f).is_file())
}

/// The first certificate in `pem`, DER.
pub fn first_cert(pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Checks that `cert_pem` holds a certificate (first in the file) for the
/// key in `key_pem`, before either replaces what works.
pub fn check_pair(cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("its certificate PEM does not parse: {e}"))?;
    if chain.is_empty() {
        return Err("it sent no certificate".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("the new key does not parse: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map(drop)
        .map_err(|e| format!("its certificate does not carry the new key it was asked to certify: {e}"))
}

/// Why the bundle could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", .path.display())]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// What to write into the TLS directory: the client's certificate and key,
/// under the base name (`agent-NAME`, `user`), and the CA's certificate
/// when it changes (on enrollment).
#[derive(Clone, Copy)]
pub struct Files<'a> {
    pub base: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub ca_pem: Option<&'a str>,
}

/// Writes `files` into `dir`, each through a temporary file in `dir` that
/// is renamed over the old one, so a reader sees the old file or the new,
/// never part of one. Every temporary file is written (and synced) before
/// the first rename, so a full disk leaves the old bundle as it was; the
/// key is renamed last. The certificates are 0644, the key 0600 from its
/// creation.
pub fn install(dir: &Path, files: Files<'_>) -> Result<(), WriteError> {
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut plan: Vec<(String, &str, u32)> = Vec::new();
    if let Some(ca) = files.ca_pem {
        plan.push((CA_FILE.to_string(), ca, 0o644));
    }
    plan.push((cert_file(files.base), files.cert_pem, 0o644));
    plan.push((key_file(files.base), files.key_pem, 0o600));
    let result = (|| {
        for (file, text, mode) in &plan {
            let tmp = dir.join(format!(".{file}.tmp-{}", std::process::id()));
            let path = dir.join(file);
            write_new(&tmp, text.as_bytes(), *mode).map_err(|source| WriteError { path: tmp.clone(), source })?;
            staged.push((tmp, path));
        }
        while !staged.is_empty() {
            let (tmp, path) = staged.remove(0);
            if let Err(source) = std::fs::rename(&tmp, &path) {
                staged.insert(0, (tmp, path.clone()));
                return Err(WriteError { path, source });
            }
        }
        // The renames themselves survive a crash.
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| WriteError { path: dir.into(), source })
    })();
    for (tmp, _) in staged {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

/// Writes `ca_pem` as the directory's `ca.pem` (renamed over the old one,
/// as [`install`] does) when it differs from what is there; whether it
/// changed. The trust bundle a CA rotation sends: every CA to trust.
pub fn install_trust(dir: &Path, ca_pem: &str) -> Result<bool, WriteError> {
    let path = dir.join(CA_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == ca_pem) {
        return Ok(false);
    }
    let tmp = dir.join(format!(".{CA_FILE}.tmp-{}", std::process::id()));
    let result = write_new(&tmp, ca_pem.as_bytes(), 0o644)
        .map_err(|source| WriteError { path: tmp.clone(), source })
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(|source| WriteError { path: path.clone(), source }))
        .and_then(|()| {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| WriteError { path: dir.into(), source })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// Creates `path` afresh with `mode` (a stale one is removed first),
/// writes `bytes` and syncs. The mode is set again after creation, since
/// the umask may have taken bits away from a certificate meant to be read.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_request_names_the_holder_and_asks_for_nothing_else() {
        let request = Request::new("a1").unwrap();
        let params = rcgen::CertificateSigningRequestParams::from_der(&request.csr_der.clone().into()).unwrap();
        let cn: Vec<_> = params.params.distinguished_name.iter().collect();
        assert_eq!(cn, [(&DnType::CommonName, &rcgen::DnValue::Utf8String("a1".into()))]);
        assert!(params.params.subject_alt_names.is_empty());
        assert!(params.params.custom_extensions.is_empty());
        assert!(request.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{request:?}").contains("PRIVATE KEY"), "the key stays out of Debug");
    }

    #[test]
    fn a_trust_bundle_replaces_ca_pem_only_when_it_differs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "OLD").unwrap();
        assert!(install_trust(dir.path(), "OLD\nNEW").unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(), "OLD\nNEW");
        assert_eq!(mode(&dir.path().join("ca.pem")), 0o644);
        assert!(!install_trust(dir.path(), "OLD\nNEW").unwrap(), "the same bundle is left alone");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "no temporary file stays: {left:?}");
    }

    #[test]
    fn the_bundle_is_written_whole_with_a_private_key_and_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!bundle_present(dir.path(), "agent-a1"));
        let files = Files { base: "agent-a1", cert_pem: "CERT 1", key_pem: "KEY 1", ca_pem: Some("CA") };
        install(dir.path(), files).unwrap();
        assert!(bundle_present(dir.path(), "agent-a1"));
        assert_eq!(mode(&dir.path().join("ca.pem")), 0o644);
        assert_eq!(mode(&dir.path().join("agent-a1.pem")), 0o644);
        assert_eq!(mode(&dir.path().join("agent-a1-key.pem")), 0o600);
        // A renewal: the certificate and key only, the CA left as it was.
        let files = Files { base: "agent-a1", cert_pem: "CERT 2", key_pem: "KEY 2", ca_pem: None };
        install(dir.path(), files).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(
            (read("ca.pem"), read("agent-a1.pem"), read("agent-a1-key.pem")),
            ("CA".into(), "CERT 2".into(), "KEY 2".into())
        );
        assert_eq!(mode(&dir.path().join("agent-a1-key.pem")), 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 3, "no temporary file is left: {left:?}");
        // A user's bundle beside it has its own names.
        install(dir.path(), Files { base: "user", cert_pem: "U", key_pem: "UK", ca_pem: Some("CA") }).unwrap();
        assert!(bundle_present(dir.path(), "user"));
        assert_eq!(mode(&dir.path().join("user-key.pem")), 0o600);
    }

    #[test]
    fn a_failed_write_names_the_file_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = Files { base: "agent-a1", cert_pem: "OLD", key_pem: "OLD KEY", ca_pem: Some("CA") };
        install(dir.path(), old).unwrap();
        // The key's final name is a directory: its rename fails, after the
        // certificate's has gone through.
        std::fs::remove_file(dir.path().join("agent-a1-key.pem")).unwrap();
        std::fs::create_dir(dir.path().join("agent-a1-key.pem")).unwrap();
        std::fs::write(dir.path().join("agent-a1-key.pem").join("x"), "").unwrap();
        let err = install(dir.path(), Files { base: "agent-a1", cert_pem: "NEW", key_pem: "NEW KEY", ca_pem: None })
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("cannot write {}: ", dir.path().join("agent-a1-key.pem").display())), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 3, "no temporary file is left: {left:?}");
    }

    #[test]
    fn a_certificate_must_carry_the_new_key() {
        let request = Request::new("a1").unwrap();
        let key = KeyPair::from_pem(&request.key_pem).unwrap();
        let ours = CertificateParams::new(Vec::new()).unwrap().self_signed(&key).unwrap();
        check_pair(&ours.pem(), &request.key_pem).unwrap();
        let other = Request::new("a1").unwrap();
        let err = check_pair(&ours.pem(), &other.key_pem).unwrap_err();
        assert!(err.starts_with("its certificate does not carry the new key it was asked to certify: "), "{err}");
        assert_eq!(check_pair("", &request.key_pem).unwrap_err(), "it sent no certificate");
    }
}
