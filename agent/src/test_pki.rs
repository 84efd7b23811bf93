//! A certificate authority for unit tests (tests only): a CA made with
//! rcgen that signs agents' requests as the coordinator would (renewal's
//! tests; enrollment's are `drover-client`'s, with a CA of their own).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};

pub(crate) struct TestCa {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Signs an agent's request: its common name and the certificate, PEM.
    pub(crate) fn sign(&self, csr_der: Vec<u8>) -> Result<(String, String), String> {
        let csr = CertificateSigningRequestParams::from_der(&csr_der.into()).map_err(|e| e.to_string())?;
        let name = match csr.params.distinguished_name.get(&DnType::CommonName) {
            Some(rcgen::DnValue::Utf8String(name)) => name.clone(),
            other => return Err(format!("no common name: {other:?}")),
        };
        Ok((name, csr.signed_by(&self.issuer).map_err(|e| e.to_string())?.pem()))
    }
}
