//! A certificate authority for unit tests (tests only): a CA made with
//! rcgen, its pin, server certificates it signs, and the requests of
//! agents and users it signs as the coordinator would.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType, DnValue, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::enroll::CaPin;
use crate::enroll::files::sha256;

pub(crate) struct TestCa {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
    pub pin: CaPin,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pin = pin_of(issuer.der());
        TestCa { issuer, pin }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` and its key, PEM.
    pub(crate) fn server(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }

    /// Signs a request: its common name and the certificate, PEM.
    pub(crate) fn sign(&self, csr_der: Vec<u8>) -> Result<(String, String), String> {
        let csr = CertificateSigningRequestParams::from_der(&csr_der.into()).map_err(|e| e.to_string())?;
        let name = match csr.params.distinguished_name.get(&DnType::CommonName) {
            Some(DnValue::Utf8String(name)) => name.clone(),
            other => return Err(format!("no common name: {other:?}")),
        };
        Ok((name, csr.signed_by(&self.issuer).map_err(|e| e.to_string())?.pem()))
    }
}

/// The pin of a certificate (DER).
pub(crate) fn pin_of(der: &[u8]) -> CaPin {
    CaPin::parse(&format!("sha256:{}", sha256(der).iter().map(|b| format!("{b:02x}")).collect::<String>())).unwrap()
}
