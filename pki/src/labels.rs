//! The agent-labels extension: a non-critical X.509 extension in an agent's
//! certificate holding its labels as a DER UTF8String, `k=v,k=v` sorted by
//! key (the grammar of `drover_client::labels`). An agent may claim no label
//! beyond them, so it cannot claim labels its certificate was not issued
//! with. [`extension`] writes it for `drover certs issue-agent`;
//! [`agent_labels_from_der`] reads it back from a certificate for the
//! coordinator.

use std::collections::BTreeMap;

use rcgen::CustomExtension;
use x509_parser::der_parser::der::parse_der_utf8string;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The OID of the agent-labels extension, as rcgen takes it.
///
/// It is Microsoft's documented scheme for an unregistered OID made from a
/// random GUID (1.2.840.113556.1.8000.2554 followed by the GUID
/// bb3c7e96-e051-4e14-8299-0a011459c25e cut into 16-, 24- and 24-bit
/// pieces). The UUID arc 2.25 would hold the same UUID as one 128-bit arc,
/// which rcgen cannot write: its OIDs are made of u64 arcs.
pub const AGENT_LABELS_OID: &[u64] =
    &[1, 2, 840, 113556, 1, 8000, 2554, 47932, 32406, 57425, 19988, 33433, 655636, 5882462];

/// The same OID, dotted.
pub const AGENT_LABELS_OID_DOTTED: &str = "1.2.840.113556.1.8000.2554.47932.32406.57425.19988.33433.655636.5882462";

/// Why an agent certificate's labels could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    #[error("the certificate is not DER that this reader understands: {0}")]
    NotACertificate(String),
    #[error("the labels extension appears more than once")]
    Repeated,
    #[error("the labels extension does not hold a UTF-8 string")]
    NotUtf8String,
    #[error("the labels extension holds {text:?}: {reason}")]
    Malformed { text: String, reason: String },
}

/// A DER UTF8String holding `text`.
fn der_utf8_string(text: &str) -> Vec<u8> {
    let body = text.as_bytes();
    let mut der = vec![0x0c];
    if body.len() < 0x80 {
        der.push(body.len() as u8);
    } else {
        let len = (body.len() as u32).to_be_bytes();
        let skip = len.iter().take_while(|b| **b == 0).count();
        der.push(0x80 | (4 - skip) as u8);
        der.extend_from_slice(&len[skip..]);
    }
    der.extend_from_slice(body);
    der
}

/// The non-critical extension that carries an agent's labels.
pub fn extension(labels: &BTreeMap<String, String>) -> CustomExtension {
    // from_oid_content makes a non-critical extension: TLS stacks that do
    // not know it (every one but our coordinator) must accept the
    // certificate all the same.
    CustomExtension::from_oid_content(AGENT_LABELS_OID, der_utf8_string(&drover_client::labels::text(labels)))
}

/// The labels in an agent's certificate (DER): empty when the certificate
/// has no labels extension, an error when it has one that does not read.
pub fn agent_labels_from_der(der: &[u8]) -> Result<BTreeMap<String, String>, LabelsError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| LabelsError::NotACertificate(e.to_string()))?;
    let mut found = None;
    for ext in cert.extensions() {
        if ext.oid.to_id_string() == AGENT_LABELS_OID_DOTTED && found.replace(ext.value).is_some() {
            return Err(LabelsError::Repeated);
        }
    }
    let Some(value) = found else { return Ok(BTreeMap::new()) };
    let text = match parse_der_utf8string(value) {
        Ok(([], s)) => s.as_str().map_err(|_| LabelsError::NotUtf8String)?.to_string(),
        _ => return Err(LabelsError::NotUtf8String),
    };
    drover_client::labels::parse(&text).map_err(|reason| LabelsError::Malformed { text, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    #[test]
    fn the_oid_is_the_same_both_ways() {
        let dotted: Vec<String> = AGENT_LABELS_OID.iter().map(u64::to_string).collect();
        assert_eq!(dotted.join("."), AGENT_LABELS_OID_DOTTED);
        assert_eq!(AGENT_LABELS_OID_DOTTED, "1.2.840.113556.1.8000.2554.47932.32406.57425.19988.33433.655636.5882462");
    }

    #[test]
    fn der_utf8_strings_use_long_lengths_when_needed() {
        assert_eq!(der_utf8_string("ab"), [0x0c, 2, b'a', b'b']);
        let long = "x".repeat(300);
        let der = der_utf8_string(&long);
        assert_eq!(&der[..4], &[0x0c, 0x82, 0x01, 0x2c]);
        assert_eq!(der.len(), 304);
    }

    /// A self-signed certificate with these extensions.
    fn cert_with(extensions: Vec<CustomExtension>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "a1");
        params.distinguished_name = dn;
        params.custom_extensions = extensions;
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    fn raw(content: &[u8]) -> CustomExtension {
        CustomExtension::from_oid_content(AGENT_LABELS_OID, content.to_vec())
    }

    #[test]
    fn labels_are_read_back_as_written_and_anything_else_is_an_error() {
        let labels = |s: &str| drover_client::labels::parse(s).unwrap();
        let long = format!("k={}", "v".repeat(128));
        type Labels = Result<BTreeMap<String, String>, LabelsError>;
        let cases: Vec<(&str, Vec<u8>, Labels)> = vec![
            ("no extension", cert_with(vec![]), Ok(BTreeMap::new())),
            ("labels", cert_with(vec![extension(&labels("os=linux,arch=x86_64"))]), Ok(labels("arch=x86_64,os=linux"))),
            ("a long length", cert_with(vec![extension(&labels(&long))]), Ok(labels(&long))),
            ("empty labels", cert_with(vec![extension(&BTreeMap::new())]), Ok(BTreeMap::new())),
            ("not a UTF8String", cert_with(vec![raw(&[0x04, 1, b'x'])]), Err(LabelsError::NotUtf8String)),
            ("trailing bytes", cert_with(vec![raw(&[0x0c, 1, b'x', 0])]), Err(LabelsError::NotUtf8String)),
            (
                "not k=v",
                cert_with(vec![raw(&der_utf8_string("os"))]),
                Err(LabelsError::Malformed {
                    text: "os".into(),
                    reason: "label \"os\" is not k=v; write labels as os=linux,arch=x86_64".into(),
                }),
            ),
        ];
        for (what, der, want) in cases {
            assert_eq!(agent_labels_from_der(&der), want, "{what}");
        }
        let twice = cert_with(vec![extension(&labels("a=b")), extension(&labels("a=c"))]);
        let err = agent_labels_from_der(&twice).unwrap_err();
        // x509-parser refuses a certificate with a repeated extension
        // itself; either way it is refused.
        assert!(matches!(err, LabelsError::Repeated | LabelsError::NotACertificate(_)), "{err:?}");
        assert!(matches!(agent_labels_from_der(b"junk"), Err(LabelsError::NotACertificate(_))));
    }
}
