//! Mutual TLS: loading the coordinator's certificates, and reading who a
//! client is from its certificate.
//!
//! Certificates come from `drover certs` (see `ctl/src/certs.rs`). A client's
//! role is the subject's organisation (O) and its name the common name (CN):
//! [`AGENTS_ORG`] for agents, [`ADMINS_ORG`] for the CLI. The TLS layer has
//! already checked the chain against our CA before any of this runs.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub const AGENTS_ORG: &str = "drover-agents";
pub const ADMINS_ORG: &str = "drover-admins";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}; create the certificates with `drover certs init --dir DIR`")]
    Read { path: PathBuf, source: std::io::Error },
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

/// A minimal DER walk to the subject's O and CN. The chain was verified by
/// rustls already; this only reads two attributes, so a full X.509 parser
/// would be a heavy dependency for little.
fn subject_org_and_cn(der: &[u8]) -> Option<(String, String)> {
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
    let (subject, _) = tlv(rest, 0x30)?;
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
}
