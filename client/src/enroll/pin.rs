//! `--ca-pin`: the SHA-256 of the CA certificate (DER) that a client
//! without certificates (an agent enrolling, `drover login`) trusts, and
//! the TLS verifier that trusts only it ([`PinnedVerifier`]).
//!
//! The coordinator presents its own certificate and, after it, the CA's.
//! The verifier looks through everything presented for the pinned CA, then
//! verifies the coordinator's certificate against it as the only trust
//! root, with rustls's own WebPKI verifier: the signature chain, validity,
//! the server usage and the host name. The pin stands in for the CA file
//! the client does not have yet; nothing else is relaxed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use super::files::sha256;

/// A CA certificate's SHA-256 (of its DER), as `sha256:HEX`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// Reads `sha256:` and 64 lower-case hex digits (the flag's value
    /// parser).
    pub fn parse(text: &str) -> Result<CaPin, String> {
        let bad = |why: &str| {
            format!(
                "{text:?} is not a CA pin: {why}; give it as `drover agent-token create` or `drover user add` \
                 prints it, sha256: and 64 lower-case hex digits"
            )
        };
        let Some(hex) = text.strip_prefix("sha256:") else {
            return Err(bad("it must start with sha256:"));
        };
        if hex.len() != 64 {
            return Err(bad(&format!("it has {} hex digits after sha256:, not 64", hex.len())));
        }
        let mut pin = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            let (Some(hi), Some(lo)) = (digit(pair[0]), digit(pair[1])) else {
                return Err(bad("only 0-9 and a-f may follow sha256:"));
            };
            pin[i] = hi << 4 | lo;
        }
        Ok(CaPin(pin))
    }

    /// Whether `der` is the pinned certificate.
    pub fn matches(&self, der: &[u8]) -> bool {
        sha256(der) == self.0
    }

    /// Whether the PEM bundle `pem` holds the pinned certificate.
    pub fn in_bundle(&self, pem: &str) -> bool {
        CertificateDer::pem_slice_iter(pem.as_bytes()).any(|c| c.is_ok_and(|c| self.matches(&c)))
    }
}

impl std::fmt::Display for CaPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for CaPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaPin({self})")
    }
}

/// Trusts a server whose presented chain holds the pinned CA and whose own
/// certificate that CA verifies. One per connection: it remembers whether
/// the pin was missing ([`PinnedVerifier::mismatched`]), so the caller can
/// say so instead of a generic handshake failure.
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
    mismatch: AtomicBool,
}

impl PinnedVerifier {
    pub fn new(pin: CaPin) -> PinnedVerifier {
        PinnedVerifier {
            pin,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            mismatch: AtomicBool::new(false),
        }
    }

    /// Whether a server presented no certificate matching the pin.
    pub fn mismatched(&self) -> bool {
        self.mismatch.load(Ordering::Relaxed)
    }

    /// A WebPKI verifier whose only root is `ca`.
    fn rooted_at(&self, ca: &CertificateDer<'_>) -> Result<Arc<WebPkiServerVerifier>, Error> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&self.provider))
            .build()
            .map_err(|e| Error::General(format!("the pinned CA certificate cannot be a trust root: {e}")))
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let presented = std::iter::once(end_entity).chain(intermediates);
        let Some(ca) = presented.into_iter().find(|c| self.pin.matches(c)) else {
            self.mismatch.store(true, Ordering::Relaxed);
            return Err(Error::General(format!("no presented certificate matches the CA pin {}", self.pin)));
        };
        self.rooted_at(ca)?.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    // The handshake's signatures are checked as the WebPKI verifier checks
    // them, which does not depend on its roots.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enroll::files::first_cert;
    use crate::test_pki::{TestCa, pin_of};

    fn server(ca: &TestCa) -> CertificateDer<'static> {
        first_cert(&ca.server(&["localhost"]).0).unwrap()
    }

    fn verify(verifier: &PinnedVerifier, chain: &[CertificateDer<'static>], host: &str) -> Result<(), Error> {
        let name = ServerName::try_from(host.to_string()).unwrap();
        verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).map(drop)
    }

    #[test]
    fn a_chain_holding_the_pinned_ca_is_trusted_for_the_names_it_certifies() {
        let ca = TestCa::new("Drover CA");
        let leaf = server(&ca);
        let verifier = PinnedVerifier::new(pin_of(ca.issuer.der()));
        verify(&verifier, &[leaf.clone(), ca.issuer.der().clone()], "localhost").unwrap();
        assert!(!verifier.mismatched());
        // The pin picks the root; the WebPKI checks still hold.
        let err = verify(&verifier, &[leaf, ca.issuer.der().clone()], "elsewhere").unwrap_err();
        assert!(matches!(err, Error::InvalidCertificate(_)), "{err:?}");
        assert!(!verifier.mismatched(), "the pin matched; the name did not");
    }

    #[test]
    fn a_chain_without_the_pinned_ca_is_refused_and_remembered() {
        let (ca, other) = (TestCa::new("Drover CA"), TestCa::new("Someone else's CA"));
        let verifier = PinnedVerifier::new(pin_of(other.issuer.der()));
        // The coordinator's own chain, but the pin is another CA's.
        let err = verify(&verifier, &[server(&ca), ca.issuer.der().clone()], "localhost").unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("no presented certificate matches the CA pin {}", pin_of(other.issuer.der())))
        );
        assert!(verifier.mismatched());
        // A server that presents the pinned CA beside a certificate that CA
        // did not sign is refused too, by the WebPKI check.
        let verifier = PinnedVerifier::new(pin_of(other.issuer.der()));
        let err = verify(&verifier, &[server(&ca), other.issuer.der().clone()], "localhost").unwrap_err();
        assert!(matches!(err, Error::InvalidCertificate(_)), "{err:?}");
        assert!(!verifier.mismatched());
    }

    #[test]
    fn a_bundle_holds_the_pin_when_any_of_its_certificates_is_the_pinned_one() {
        let (old, new) = (TestCa::new("Drover CA"), TestCa::new("Drover CA 2"));
        let both = format!("{}{}", new.pem(), old.pem());
        assert!(old.pin.in_bundle(&both) && new.pin.in_bundle(&both));
        assert!(!new.pin.in_bundle(&old.pem()));
        assert!(!new.pin.in_bundle(""));
    }

    #[test]
    fn pins_are_sha256_and_64_lower_case_hex_digits() {
        let hex = "0123456789abcdef".repeat(4);
        let pin = CaPin::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(pin.to_string(), format!("sha256:{hex}"));
        let cases = [
            (hex.clone(), "it must start with sha256:"),
            (format!("sha1:{hex}"), "it must start with sha256:"),
            (format!("SHA256:{hex}"), "it must start with sha256:"),
            (format!("sha256:{}", &hex[..63]), "it has 63 hex digits after sha256:, not 64"),
            (format!("sha256:{hex}0"), "it has 65 hex digits after sha256:, not 64"),
            ("sha256:".to_string(), "it has 0 hex digits after sha256:, not 64"),
            (format!("sha256:{}", hex.to_uppercase()), "only 0-9 and a-f may follow sha256:"),
            (format!("sha256:{}g", &hex[..63]), "only 0-9 and a-f may follow sha256:"),
        ];
        for (text, why) in cases {
            let err = CaPin::parse(&text).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "{text:?} is not a CA pin: {why}; give it as `drover agent-token create` or `drover user add` \
                     prints it, sha256: and 64 lower-case hex digits"
                )
            );
        }
    }
}
