//! Enrollment's certificate side: the coordinator's [`Authority`] (the CA
//! certificate and key it signs with) turns an agent's certificate signing
//! request into a short-lived client certificate, and [`pin`] is what an
//! agent checks the CA against before it trusts it (`--ca-pin`).
//!
//! The agent makes its own key, which never leaves its host, and sends only
//! a CSR. What the certificate says (the agents' organisation, the name, the
//! labels, client authentication only, the validity) is the coordinator's
//! choice, from the join token; the CSR contributes its public key, and a
//! CSR that asks for anything else (another name, SANs, a server usage, a
//! CA) is refused rather than quietly trimmed, so a tampered agent is
//! noticed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use crate::{AGENTS_ORG, USERS_ORG};

/// Why a CSR was refused; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the certificate signing request is not a valid PKCS#10 request with a good signature: {0}")]
    Malformed(String),
    #[error(
        "the certificate signing request asks for the name {asked:?}, but the join token is for agent {name:?}; \
         start the agent with --name {name}, or create a token for {asked:?}"
    )]
    OtherName { asked: String, name: String },
    #[error(
        "the certificate signing request asks for subject alternative names ({0}); an agent's request names it in the subject only"
    )]
    Sans(String),
    #[error(
        "the certificate signing request asks for a server usage (serverAuth); agents get client certificates only"
    )]
    ServerUsage,
    #[error("the certificate signing request asks to be a CA; agents get client certificates only")]
    Ca,
    #[error("the certificate signing request asks for extension {0}, which an agent's certificate never carries")]
    Extension(String),
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
}

/// Why the CA could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{} is not a usable CA certificate and key: {detail}", .path.display())]
    Unusable { path: std::path::PathBuf, detail: String },
}

/// An agent certificate the CA signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub pem: String,
    /// The serial number, lower-case hex.
    pub serial: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

/// The CA as the coordinator holds it to sign enrollments and renewals.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert: CaCert,
}

/// A CA's certificate, read: what a coordinator that trusts it (with or
/// without its key) needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCert {
    pub pem: String,
    /// `sha256:HEX` of its DER.
    pub pin: String,
    /// Its subject (DER), which is the issuer of what it signs.
    pub subject: Vec<u8>,
    /// The subject's common name.
    pub name: String,
    pub not_after_ms: i64,
}

impl CaCert {
    /// The first certificate of `pem`.
    pub fn parse(pem: &str) -> Result<CaCert, String> {
        let pin = pin(pem)?;
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        let cert = parsed.parse_x509().map_err(|e| e.to_string())?;
        Ok(CaCert {
            pem: pem.to_owned(),
            pin,
            subject: cert.subject().as_raw().to_vec(),
            name: cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("").to_owned(),
            not_after_ms: cert.validity().not_after.timestamp() * 1000,
        })
    }

    /// Whether this CA issued a certificate whose issuer (DER, as
    /// [`crate::peer::Presented::issuer`] holds it) is `issuer`: the TLS
    /// layer has checked the signature; the subjects of the CAs it trusts
    /// differ, so the name tells which one.
    pub fn signed(&self, issuer: &[u8]) -> bool {
        self.subject == issuer
    }
}

/// How long a CA made by [`Authority::generate`] (a rotation's new CA) lasts.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("pin", &self.cert.pin).finish_non_exhaustive()
    }
}

/// How far back a certificate's validity starts, for hosts whose clocks run
/// a little behind the coordinator's.
pub const BACKDATE: Duration = Duration::from_secs(60);

impl Authority {
    /// The CA certificate (`ca.pem`) and its key (`ca-key.pem`).
    pub fn load(cert: &Path, key: &Path) -> Result<Authority, AuthorityError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| AuthorityError::Read { path: path.to_path_buf(), source })
        };
        let ca_pem = read(cert)?;
        let key_pem = read(key)?;
        let unusable = |path: &Path, detail: String| AuthorityError::Unusable { path: path.to_path_buf(), detail };
        let signing = KeyPair::from_pem(&key_pem).map_err(|e| unusable(key, e.to_string()))?;
        Authority::new(ca_pem, signing).map_err(|detail| unusable(cert, detail))
    }

    /// The CA certificate and its key, both PEM (a rotation's CA, opened
    /// from the store).
    pub fn from_pem(ca_pem: &str, key_pem: &str) -> Result<Authority, String> {
        let signing = KeyPair::from_pem(key_pem).map_err(|e| format!("its key: {e}"))?;
        Authority::new(ca_pem.to_owned(), signing)
    }

    fn new(ca_pem: String, signing: KeyPair) -> Result<Authority, String> {
        let (_, parsed) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
        let public = parsed.parse_x509().map_err(|e| e.to_string())?.public_key().subject_public_key.data.to_vec();
        if public != rcgen::PublicKeyData::der_bytes(&signing) {
            return Err("the key is not the certificate's".into());
        }
        let cert = CaCert::parse(&ca_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, signing).map_err(|e| e.to_string())?;
        Ok(Authority { issuer, cert })
    }

    /// A new CA, for a rotation: its own key, valid from [`BACKDATE`]
    /// before `now_ms` for [`CA_VALIDITY`], named `Drover CA` and the time,
    /// so that it and the CA it replaces have different subjects (which is
    /// how a certificate's CA is told: [`Authority::signed`]).
    pub fn generate(now_ms: i64) -> Result<Authority, CsrError> {
        let sign = |e: rcgen::Error| CsrError::Sign(e.to_string());
        let key = KeyPair::generate().map_err(sign)?;
        let mut params = CertificateParams::default();
        let stamp =
            time::OffsetDateTime::from_unix_timestamp(now_ms / 1000).map_err(|e| CsrError::Sign(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!(
                "Drover CA {:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                stamp.year(),
                u8::from(stamp.month()),
                stamp.day(),
                stamp.hour(),
                stamp.minute(),
                stamp.second()
            ),
        );
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params, now_ms, CA_VALIDITY)?;
        let cert = params.self_signed(&key).map_err(sign)?;
        Authority::new(cert.pem(), key).map_err(CsrError::Sign)
    }

    /// The CA's key, PEM: only to seal it into the store.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA's certificate, read.
    pub fn cert(&self) -> &CaCert {
        &self.cert
    }

    /// The CA's common name.
    pub fn name(&self) -> &str {
        &self.cert.name
    }

    pub fn not_after_ms(&self) -> i64 {
        self.cert.not_after_ms
    }

    /// Whether this CA issued a certificate whose issuer is `issuer`
    /// ([`CaCert::signed`]).
    pub fn signed(&self, issuer: &[u8]) -> bool {
        self.cert.signed(issuer)
    }

    pub fn ca_pem(&self) -> &str {
        &self.cert.pem
    }

    /// `sha256:HEX` of the CA certificate, for agents' `--ca-pin`.
    pub fn pin(&self) -> &str {
        &self.cert.pin
    }

    /// Signs `csr` (DER) into a client certificate for agent `name` with
    /// `labels`, valid from [`BACKDATE`] before `now_ms` for `ttl`. The CSR
    /// must ask for exactly the name and nothing more.
    pub fn sign_agent(
        &self,
        csr: &[u8],
        name: &str,
        labels: &BTreeMap<String, String>,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<Signed, CsrError> {
        self.sign(csr, AGENTS_ORG, name, labels, now_ms, ttl)
    }

    /// Signs `csr` into a user's client certificate (`drover login`): the
    /// users' organisation, no labels.
    pub fn sign_user(&self, csr: &[u8], name: &str, now_ms: i64, ttl: Duration) -> Result<Signed, CsrError> {
        self.sign(csr, USERS_ORG, name, &BTreeMap::new(), now_ms, ttl)
    }

    /// Signs `csr` into an administrator's client certificate: the one
    /// `drover certs init` made, renewed by its holder when the CA rotates.
    pub fn sign_admin(&self, csr: &[u8], name: &str, now_ms: i64, ttl: Duration) -> Result<Signed, CsrError> {
        self.sign(csr, crate::ADMINS_ORG, name, &BTreeMap::new(), now_ms, ttl)
    }

    fn sign(
        &self,
        csr: &[u8],
        org: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<Signed, CsrError> {
        check_csr(csr, name)?;
        let der = rustls_pki_types::CertificateSigningRequestDer::from(csr.to_vec());
        let request =
            CertificateSigningRequestParams::from_der(&der).map_err(|e| CsrError::Malformed(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, org);
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        if !labels.is_empty() {
            params.custom_extensions.push(crate::labels::extension(labels));
        }
        let (serial, not_before_ms, not_after_ms) = validity(&mut params, now_ms, ttl)?;
        let cert = CertificateSigningRequestParams { params, public_key: request.public_key }
            .signed_by(&self.issuer)
            .map_err(|e| CsrError::Sign(e.to_string()))?;
        Ok(Signed { pem: cert.pem(), serial, not_before_ms, not_after_ms })
    }
}

/// A certificate a coordinator makes for itself (its server certificate,
/// or its client certificate as a follower) and the key (PEM), made here.
#[derive(Debug, Clone)]
pub struct OwnCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub signed: Signed,
}

impl Authority {
    /// A server certificate for a coordinator named by `hosts` (DNS names
    /// and IP addresses, the SANs of the certificate it replaces), with a
    /// key made now, valid from [`BACKDATE`] before `now_ms` for `ttl`: a
    /// coordinator that holds the CA key renews its own at half its life.
    pub fn sign_server(&self, hosts: &[String], now_ms: i64, ttl: Duration) -> Result<OwnCert, CsrError> {
        let sign = |e: rcgen::Error| CsrError::Sign(e.to_string());
        let key = KeyPair::generate().map_err(sign)?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(sign)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "drover-coordinator");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.own(params, key, now_ms, ttl)
    }

    /// `params` signed with `key`'s public half, valid from [`BACKDATE`]
    /// before `now_ms` for `ttl`.
    fn own(
        &self,
        mut params: CertificateParams,
        key: KeyPair,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<OwnCert, CsrError> {
        params.use_authority_key_identifier_extension = true;
        let (serial, not_before_ms, not_after_ms) = validity(&mut params, now_ms, ttl)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| CsrError::Sign(e.to_string()))?;
        Ok(OwnCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            signed: Signed { pem: cert.pem(), serial, not_before_ms, not_after_ms },
        })
    }
}

impl Authority {
    /// A coordinator's own client certificate, `drover-coordinators`/`id`,
    /// with a key made now, valid from [`BACKDATE`] before `now_ms` for
    /// `ttl`: a follower that holds the CA key presents it to the leader to
    /// carry the sessions of the agents connected to it.
    pub fn sign_coordinator_client(&self, id: &str, now_ms: i64, ttl: Duration) -> Result<OwnCert, CsrError> {
        let sign = |e: rcgen::Error| CsrError::Sign(e.to_string());
        let key = KeyPair::generate().map_err(sign)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, crate::COORDINATORS_ORG);
        dn.push(DnType::CommonName, id);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.own(params, key, now_ms, ttl)
    }
}

/// A random serial and the validity from [`BACKDATE`] before `now_ms` for
/// `ttl`, set on `params`; returns them.
fn validity(params: &mut CertificateParams, now_ms: i64, ttl: Duration) -> Result<(String, i64, i64), CsrError> {
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| CsrError::Sign("no randomness for the serial number".into()))?;
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // and its full length, so the hex reads back the same
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let not_before_ms = (now_ms - BACKDATE.as_millis() as i64).max(0) / 1000 * 1000;
    let not_after_ms = (now_ms + ttl.as_millis() as i64) / 1000 * 1000;
    let at = |ms: i64| time::OffsetDateTime::from_unix_timestamp(ms / 1000).map_err(|e| CsrError::Sign(e.to_string()));
    params.not_before = at(not_before_ms)?;
    params.not_after = at(not_after_ms)?;
    Ok((hex(&serial), not_before_ms, not_after_ms))
}

/// The DNS names and IP addresses a server certificate (DER) is for.
pub fn server_hosts(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::prelude::X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let Some(san) = cert.subject_alternative_name().map_err(|e| e.to_string())? else { return Ok(Vec::new()) };
    let mut hosts = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(dns) => hosts.push((*dns).to_owned()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => hosts.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).expect("4 bytes")).to_string()),
                16 => hosts.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).expect("16 bytes")).to_string()),
                _ => return Err(format!("an IP address SAN of {} bytes", ip.len())),
            },
            other => return Err(format!("a SAN this reader does not copy: {other}")),
        }
    }
    Ok(hosts)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:HEX` of the first certificate in `pem`.
pub fn pin(pem: &str) -> Result<String, String> {
    let (_, parsed) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| format!("no PEM certificate in it: {e}"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &parsed.contents);
    Ok(format!("sha256:{}", hex(digest.as_ref())))
}

/// What the CSR asks for, against what an agent's request may ask.
fn check_csr(csr: &[u8], name: &str) -> Result<(), CsrError> {
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(csr)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    req.verify_signature().map_err(|e| CsrError::Malformed(format!("its signature does not verify: {e}")))?;
    let info = &req.certification_request_info;
    let asked = match info.subject.iter_common_name().next() {
        Some(cn) => cn.as_str().map_err(|_| CsrError::Malformed("its common name is not a string".into()))?,
        None => "",
    };
    if asked != name {
        return Err(CsrError::OtherName { asked: asked.to_owned(), name: name.to_owned() });
    }
    for ext in req.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
                return Err(CsrError::Sans(names.join(", ")));
            }
            ParsedExtension::ExtendedKeyUsage(eku) if eku.server_auth || eku.any => return Err(CsrError::ServerUsage),
            ParsedExtension::ExtendedKeyUsage(_) | ParsedExtension::KeyUsage(_) => {}
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(CsrError::Ca),
            ParsedExtension::BasicConstraints(_) => {}
            other => return Err(CsrError::Extension(format!("{other:?}").chars().take(80).collect())),
        }
    }
    Ok(())
}

/// A new key and a CSR for agent `name` (PEM key, DER request): what an
/// agent sends. The agent does this itself; this is for tests and tools.
pub fn agent_request(name: &str) -> Result<(String, Vec<u8>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{Peer, inspect};

    fn authority(tag: &str) -> (Authority, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("drover-pki-enroll-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::ca::init(&dir, &[]).unwrap();
        let ca = crate::ca::ca_dir(&dir);
        (Authority::load(&ca.join("ca.pem"), &ca.join("ca-key.pem")).unwrap(), dir)
    }

    fn request(name: &str, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        edit(&mut params);
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents
    }

    #[test]
    fn a_request_for_the_tokens_name_gets_a_short_lived_client_certificate() {
        let (ca, dir) = authority("sign");
        let labels = drover_client::labels::parse("os=linux,zone=a").unwrap();
        let now = 1_800_000_000_123;
        let (_, csr) = agent_request("a1").unwrap();
        let signed = ca.sign_agent(&csr, "a1", &labels, now, Duration::from_secs(24 * 3600)).unwrap();
        assert_eq!(signed.not_before_ms, 1_799_999_940_000);
        assert_eq!(signed.not_after_ms, 1_800_086_400_000);
        let cert = der(&signed.pem);
        let seen = inspect(&cert).unwrap();
        assert_eq!(seen.peer, Peer::Agent("a1".into()));
        assert_eq!(seen.serial, signed.serial);
        assert_eq!(seen.serial.len(), 32);
        assert_eq!((seen.not_before_ms, seen.not_after_ms), (signed.not_before_ms, signed.not_after_ms));
        assert_eq!(seen.sans, 0);
        assert_eq!(crate::labels::agent_labels_from_der(&cert).unwrap(), labels);
        assert!(ca.pin().starts_with("sha256:") && ca.pin().len() == 7 + 64, "{}", ca.pin());
        assert_eq!(pin(ca.ca_pem()).unwrap(), ca.pin());
        // A user's: the users' organisation, no labels.
        let user = der(&ca.sign_user(&csr, "a1", now, Duration::from_secs(60)).unwrap().pem);
        assert_eq!(inspect(&user).unwrap().peer, Peer::User("a1".into()));
        assert!(crate::labels::agent_labels_from_der(&user).unwrap().is_empty());
        // A coordinator's own server certificate, for the hosts of the one
        // it replaces.
        let first = std::fs::read_to_string(dir.join("coordinator/coordinator.pem")).unwrap();
        let hosts = server_hosts(&der(&first)).unwrap();
        assert_eq!(hosts, ["localhost", "127.0.0.1"]);
        let server = ca.sign_server(&hosts, now, Duration::from_secs(3600)).unwrap();
        assert_eq!(server_hosts(&der(&server.cert_pem)).unwrap(), hosts);
        assert_eq!(server.signed.not_after_ms, 1_800_003_600_000);
        assert!(server.key_pem.contains("PRIVATE KEY"));
        // A coordinator's client certificate: its id, no names beyond.
        let client = ca.sign_coordinator_client("c1", now, Duration::from_secs(3600)).unwrap();
        let seen = inspect(&der(&client.cert_pem)).unwrap();
        assert_eq!((seen.peer, seen.sans), (Peer::Coordinator("c1".into()), 0));
        // Two signings never share a serial.
        let again = ca.sign_agent(&csr, "a1", &labels, now, Duration::from_secs(60)).unwrap();
        assert_ne!(again.serial, signed.serial);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_request_for_more_than_its_name_is_refused() {
        let (ca, dir) = authority("refuse");
        let none = BTreeMap::new();
        let ttl = Duration::from_secs(60);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (request("other", |_| {}), "asks for the name \"other\", but the join token is for agent \"a1\""),
            (
                request("a1", |p| {
                    p.subject_alt_names = vec![rcgen::SanType::DnsName("evil.example".try_into().unwrap())]
                }),
                "asks for subject alternative names (DNSName(evil.example))",
            ),
            (
                request("a1", |p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]),
                "asks for a server usage (serverAuth)",
            ),
            (request("a1", |p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)), "asks to be a CA"),
            (b"junk".to_vec(), "is not a valid PKCS#10 request"),
        ];
        for (csr, want) in cases {
            let err = ca.sign_agent(&csr, "a1", &none, 0, ttl).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?}: {err}");
        }
        // A request whose signature was tampered with.
        let mut csr = request("a1", |_| {});
        let last = csr.len() - 1;
        csr[last] ^= 1;
        let err = ca.sign_agent(&csr, "a1", &none, 0, ttl).unwrap_err().to_string();
        assert!(err.contains("not a valid PKCS#10 request"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_ca_has_a_subject_of_its_own_and_tells_what_it_signed() {
        let (old, dir) = authority("rotate");
        let now = 1_800_000_000_000;
        let new = Authority::generate(now).unwrap();
        assert_eq!(new.name(), "Drover CA 2027-01-15T08:00:00Z");
        assert_eq!(new.not_after_ms(), (now + CA_VALIDITY.as_millis() as i64) / 1000 * 1000);
        assert_ne!(new.pin(), old.pin());
        // Sealed and opened again, it is the same CA.
        let reopened = Authority::from_pem(new.ca_pem(), &new.key_pem()).unwrap();
        assert_eq!(reopened.pin(), new.pin());
        let err = Authority::from_pem(new.ca_pem(), &old.key_pem()).unwrap_err();
        assert!(err.contains("not the certificate's"), "{err}");
        // Each CA recognises what it signed, and only that.
        let (_, csr) = agent_request("a1").unwrap();
        let ttl = Duration::from_secs(3600);
        for (signer, other) in [(&new, &old), (&old, &new)] {
            let signed = signer.sign_agent(&csr, "a1", &BTreeMap::new(), now, ttl).unwrap();
            let (_, pem) = x509_parser::pem::parse_x509_pem(signed.pem.as_bytes()).unwrap();
            let issuer = inspect(&pem.contents).unwrap().issuer;
            assert!(signer.signed(&issuer));
            assert!(!other.signed(&issuer));
        }
        let (_, admin_csr) = agent_request("root").unwrap();
        let admin = new.sign_admin(&admin_csr, "root", now, ttl).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(admin.pem.as_bytes()).unwrap();
        assert_eq!(inspect(&pem.contents).unwrap().peer, Peer::Admin("root".into()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
