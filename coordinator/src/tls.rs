//! Mutual TLS: loading the coordinator's certificates, and reading who a
//! client is from its certificate.
//!
//! Certificates come from `drover certs` (see `ctl/src/certs.rs`). A client's
//! role is the subject's organisation (O) and its name the common name (CN):
//! [`AGENTS_ORG`] for agents, [`ADMINS_ORG`] for the CLI. An agent's labels
//! are in a custom extension ([`AGENT_LABELS_OID`], read by
//! [`agent_labels_from_der`]): an agent may claim no label beyond them. The
//! TLS layer has already checked the chain against our CA before any of this
//! runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub const AGENTS_ORG: &str = "drover-agents";
pub const ADMINS_ORG: &str = "drover-admins";

/// The OID of the non-critical extension in which `drover certs issue-agent
/// --labels` writes an agent's labels, as a DER UTF8String `k=v,k=v` sorted
/// by key. `ctl/src/certs.rs` has the same value (the CLI does not depend on
/// this crate); a test on each side checks it against the same literal.
///
/// It is Microsoft's documented scheme for an unregistered OID made from a
/// random GUID (1.2.840.113556.1.8000.2554 and the GUID
/// bb3c7e96-e051-4e14-8299-0a011459c25e in 16-, 24- and 24-bit pieces). The
/// UUID arc 2.25 would hold the UUID as one 128-bit arc, which rcgen, which
/// makes our certificates, cannot write.
pub const AGENT_LABELS_OID: &str = "1.2.840.113556.1.8000.2554.47932.32406.57425.19988.33433.655636.5882462";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read {path}: {source}; create the certificates with `drover certs init --dir DIR` \
         and give the coordinator --tls-dir DIR/coordinator"
    )]
    Read { path: PathBuf, source: std::io::Error },
}

/// Why an agent certificate's labels could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    #[error("the certificate is not DER that this reader understands")]
    NotACertificate,
    #[error("the labels extension appears more than once")]
    Repeated,
    #[error("the labels extension does not hold a UTF-8 string")]
    NotUtf8String,
    #[error("the labels extension holds {text:?}: {reason}")]
    Malformed { text: String, reason: String },
}

/// Who is calling, from the client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Agent(String),
    Admin(String),
    /// A certificate from our CA with a role we do not know.
    Other {
        org: String,
        name: String,
    },
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

/// Reads the peer's role and name from its leaf certificate (DER).
pub fn peer_from_der(der: &[u8]) -> Option<Peer> {
    let (org, name) = subject_org_and_cn(der)?;
    Some(match org.as_str() {
        AGENTS_ORG => Peer::Agent(name),
        ADMINS_ORG => Peer::Admin(name),
        _ => Peer::Other { org, name },
    })
}

/// The labels in an agent's certificate (DER): empty when the certificate
/// has no labels extension, an error when it has one that does not read.
pub fn agent_labels_from_der(der: &[u8]) -> Result<BTreeMap<String, String>, LabelsError> {
    let oid = oid_body(AGENT_LABELS_OID).expect("AGENT_LABELS_OID is a valid OID");
    let mut found = None;
    for ext in extensions(der).ok_or(LabelsError::NotACertificate)? {
        let (id, value) = ext.ok_or(LabelsError::NotACertificate)?;
        if id == oid.as_slice() && found.replace(value).is_some() {
            return Err(LabelsError::Repeated);
        }
    }
    let Some(value) = found else { return Ok(BTreeMap::new()) };
    let text = match any_tlv(value) {
        Some((0x0c, body, [])) => std::str::from_utf8(body).map_err(|_| LabelsError::NotUtf8String)?,
        _ => return Err(LabelsError::NotUtf8String),
    };
    parse_labels(text)
}

/// `k=v,k=v` as `drover certs issue-agent` writes it: keys and values
/// non-empty and without ',' or '=', each key once.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, LabelsError> {
    let bad = |reason: String| LabelsError::Malformed { text: text.to_string(), reason };
    let mut labels = BTreeMap::new();
    if text.is_empty() {
        return Ok(labels);
    }
    for pair in text.split(',') {
        let (k, v) = pair.split_once('=').ok_or_else(|| bad(format!("{pair:?} is not k=v")))?;
        if k.is_empty() || v.is_empty() || v.contains('=') {
            return Err(bad(format!("{pair:?} is not k=v with a non-empty key and value")));
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(bad(format!("{k:?} is given twice")));
        }
    }
    Ok(labels)
}

/// The body of a DER OBJECT IDENTIFIER for a dotted OID.
fn oid_body(dotted: &str) -> Option<Vec<u8>> {
    let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().ok()).collect::<Option<_>>()?;
    let (&first, &second) = (arcs.first()?, arcs.get(1)?);
    let mut body = Vec::new();
    for arc in std::iter::once(first * 40 + second).chain(arcs[2..].iter().copied()) {
        // Base 128, most significant group first, the high bit set on all
        // groups but the last.
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            groups.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        body.extend(groups.iter().rev());
    }
    Some(body)
}

/// The certificate's extensions as (OID body, extnValue body), each None
/// where an extension does not parse; None when the certificate does not.
fn extensions(der: &[u8]) -> Option<impl Iterator<Item = Option<(&[u8], &[u8])>>> {
    let rest = tbs_from_subject(der)?;
    let mut rest = skip(rest)?; // subject
    rest = skip(rest)?; // subjectPublicKeyInfo
    // Optional issuerUniqueID [1] and subjectUniqueID [2], implicit, so
    // primitive or constructed.
    for tag in [0x81, 0xa1, 0x82, 0xa2] {
        if rest.first() == Some(&tag) {
            rest = skip(rest)?;
        }
    }
    // extensions [3] EXPLICIT SEQUENCE OF Extension, absent in a v1 or v2
    // certificate or one without extensions.
    let mut list: &[u8] = match rest.first() {
        Some(0xa3) => tlv(tlv(rest, 0xa3)?.0, 0x30)?.0,
        _ => &[],
    };
    Some(std::iter::from_fn(move || {
        if list.is_empty() {
            return None;
        }
        let Some((ext, next)) = tlv(list, 0x30) else {
            list = &[];
            return Some(None);
        };
        list = next;
        // Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT
        // FALSE, extnValue OCTET STRING }
        let parsed = tlv(ext, 0x06).and_then(|(id, rest)| {
            let rest = if rest.first() == Some(&0x01) { skip(rest)? } else { rest };
            let (value, end) = tlv(rest, 0x04)?;
            end.is_empty().then_some((id, value))
        });
        Some(parsed)
    }))
}

/// The tbsCertificate from its subject on (subject, subjectPublicKeyInfo,
/// and what follows).
fn tbs_from_subject(der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = tlv(der, 0x30)?;
    let (tbs, _) = tlv(cert, 0x30)?;
    let mut rest = tbs;
    // Optional explicit version [0].
    if rest.first() == Some(&0xa0) {
        rest = skip(rest)?;
    }
    rest = skip(rest)?; // serial number
    rest = skip(rest)?; // signature algorithm
    rest = skip(rest)?; // issuer
    rest = skip(rest)?; // validity
    Some(rest)
}

/// A minimal DER walk to the subject's O and CN. The chain was verified by
/// rustls already; this only reads two attributes, so a full X.509 parser
/// would be a heavy dependency for little.
fn subject_org_and_cn(der: &[u8]) -> Option<(String, String)> {
    let (subject, _) = tlv(tbs_from_subject(der)?, 0x30)?;
    let (mut org, mut cn) = (String::new(), String::new());
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (set, next) = tlv(rdns, 0x31)?;
        rdns = next;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, next) = tlv(attrs, 0x30)?;
            attrs = next;
            let (oid, value) = tlv(attr, 0x06)?;
            let (_, value_body, _) = any_tlv(value)?;
            let text = String::from_utf8_lossy(value_body).into_owned();
            match oid {
                [0x55, 0x04, 0x03] => cn = text,
                [0x55, 0x04, 0x0a] => org = text,
                _ => {}
            }
        }
    }
    Some((org, cn))
}

/// Reads one TLV with the expected tag; returns (body, rest).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = any_tlv(input)?;
    (t == tag).then_some((body, rest))
}

fn skip(input: &[u8]) -> Option<&[u8]> {
    any_tlv(input).map(|(_, _, rest)| rest)
}

fn any_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let body = input.get(header..header + len)?;
    Some((tag, body, &input[header + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_peer() {
        assert_eq!(peer_from_der(&[]), None);
        assert_eq!(peer_from_der(&[0x30, 0x82, 0xff]), None);
        assert_eq!(peer_from_der(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }

    #[test]
    fn the_oid_is_the_one_the_cli_writes() {
        // ctl/src/certs.rs checks its constant against the same literal.
        assert_eq!(AGENT_LABELS_OID, "1.2.840.113556.1.8000.2554.47932.32406.57425.19988.33433.655636.5882462");
        // Known encodings: 1.2.840.113549 (RSA) and 2.5.29.17 (SAN).
        assert_eq!(oid_body("1.2.840.113549").unwrap(), [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]);
        assert_eq!(oid_body("2.5.29.17").unwrap(), [0x55, 0x1d, 0x11]);
        assert_eq!(oid_body("1.x"), None);
    }

    fn arcs() -> Vec<u64> {
        AGENT_LABELS_OID.split('.').map(|a| a.parse().unwrap()).collect()
    }

    /// An agent certificate as `drover certs issue-agent` makes it, with
    /// these extensions' contents (DER) under the labels OID.
    fn agent_cert(contents: &[Vec<u8>]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, AGENTS_ORG);
        params.distinguished_name.push(rcgen::DnType::CommonName, "a1");
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        for content in contents {
            params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(&arcs(), content.clone()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn utf8(text: &str) -> Vec<u8> {
        assert!(text.len() < 128);
        let mut der = vec![0x0c, text.len() as u8];
        der.extend_from_slice(text.as_bytes());
        der
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn labels_from_certificates() {
        let malformed = |text: &str, reason: &str| {
            Err(LabelsError::Malformed { text: text.to_string(), reason: reason.to_string() })
        };
        // (the labels extensions' contents, what reading them gives)
        type Case = (Vec<Vec<u8>>, Result<BTreeMap<String, String>, LabelsError>);
        let cases: Vec<Case> = vec![
            (vec![], Ok(BTreeMap::new())),
            (vec![utf8("os=linux")], Ok(labels(&[("os", "linux")]))),
            (vec![utf8("agent=2,os=linux,role=b")], Ok(labels(&[("agent", "2"), ("os", "linux"), ("role", "b")]))),
            (vec![utf8("")], Ok(BTreeMap::new())),
            (vec![utf8("os")], malformed("os", "\"os\" is not k=v")),
            (vec![utf8("os=linux,")], malformed("os=linux,", "\"\" is not k=v")),
            (vec![utf8("=x")], malformed("=x", "\"=x\" is not k=v with a non-empty key and value")),
            (vec![utf8("a=b=c")], malformed("a=b=c", "\"a=b=c\" is not k=v with a non-empty key and value")),
            (vec![utf8("a=1,a=2")], malformed("a=1,a=2", "\"a\" is given twice")),
            // An OCTET STRING, a PrintableString, trailing bytes, bad UTF-8.
            (vec![vec![0x04, 0x03, b'a', b'=', b'b']], Err(LabelsError::NotUtf8String)),
            (vec![vec![0x13, 0x03, b'a', b'=', b'b']], Err(LabelsError::NotUtf8String)),
            (vec![[utf8("a=b"), vec![0x05, 0x00]].concat()], Err(LabelsError::NotUtf8String)),
            (vec![vec![0x0c, 0x02, 0xff, 0xfe]], Err(LabelsError::NotUtf8String)),
            (vec![utf8("a=b"), utf8("a=b")], Err(LabelsError::Repeated)),
        ];
        for (contents, want) in cases {
            let der = agent_cert(&contents);
            assert_eq!(agent_labels_from_der(&der), want, "{contents:?}");
            // The rest of the certificate still reads.
            assert_eq!(peer_from_der(&der), Some(Peer::Agent("a1".into())));
        }
    }

    #[test]
    fn a_critical_labels_extension_reads_too() {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        let mut ext = rcgen::CustomExtension::from_oid_content(&arcs(), utf8("os=linux"));
        ext.set_criticality(true);
        params.custom_extensions.push(ext);
        let der = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec();
        assert_eq!(agent_labels_from_der(&der), Ok(labels(&[("os", "linux")])));
    }

    #[test]
    fn labels_of_garbage_are_an_error() {
        assert_eq!(agent_labels_from_der(&[]), Err(LabelsError::NotACertificate));
        assert_eq!(agent_labels_from_der(&[0x30, 0x03, 0x02, 0x01, 0x00]), Err(LabelsError::NotACertificate));
        // A certificate cut short.
        let der = agent_cert(&[utf8("os=linux")]);
        assert_eq!(agent_labels_from_der(&der[..der.len() - 80]), Err(LabelsError::NotACertificate));
    }
}
