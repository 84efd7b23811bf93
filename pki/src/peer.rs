//! Who a client certificate names: its role is the subject's organisation
//! (O), [`crate::AGENTS_ORG`] or [`crate::ADMINS_ORG`], and its name the
//! common name (CN). The TLS layer has already checked the chain against
//! the CA before any of this runs; this only reads two attributes.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{ADMINS_ORG, AGENTS_ORG, COORDINATORS_ORG, USERS_ORG};

/// Who is calling, from the client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Agent(String),
    Admin(String),
    /// A user who enrolled with `drover login`; its role is the store's.
    User(String),
    /// Another coordinator of the cluster (its id), which relays the
    /// sessions of the agents connected to it while it follows.
    Coordinator(String),
    /// A certificate from our CA with a role we do not know.
    Other {
        org: String,
        name: String,
    },
}

/// Why a certificate's subject could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("the certificate is not DER that this reader understands: {0}")]
    NotACertificate(String),
    #[error("the certificate's subject {attribute} is not a string")]
    NotAString { attribute: &'static str },
}

/// What a client certificate says beyond the chain the TLS layer checked:
/// who, which certificate (its serial, so a replaced or revoked one can be
/// told from the current one) and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub peer: Peer,
    /// The serial number, lower-case hex.
    pub serial: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    /// How many subject alternative names it carries: a client certificate
    /// names its holder in the subject only, so any is a reason to refuse it.
    pub sans: usize,
    /// Its issuer's name (DER): which of the trusted CAs signed it
    /// (`enroll::Authority::signed`).
    pub issuer: Vec<u8>,
}

/// Reads a client certificate (DER): its peer, serial, validity and SANs.
pub fn inspect(der: &[u8]) -> Result<Presented, PeerError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PeerError::NotACertificate(e.to_string()))?;
    let peer = peer_of(&cert)?;
    let serial = cert.raw_serial().iter().skip_while(|b| **b == 0).map(|b| format!("{b:02x}")).collect();
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.len(),
        Ok(None) => 0,
        Err(e) => return Err(PeerError::NotACertificate(format!("its subject alternative names: {e}"))),
    };
    let validity = cert.validity();
    Ok(Presented {
        peer,
        serial,
        not_before_ms: validity.not_before.timestamp() * 1000,
        not_after_ms: validity.not_after.timestamp() * 1000,
        sans,
        issuer: cert.issuer().as_raw().to_vec(),
    })
}

/// Reads the peer's role and name from its leaf certificate (DER). A
/// missing O or CN reads as empty, and so as [`Peer::Other`] or an empty
/// name, which the caller refuses.
pub fn peer_from_der(der: &[u8]) -> Result<Peer, PeerError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PeerError::NotACertificate(e.to_string()))?;
    peer_of(&cert)
}

fn peer_of(cert: &X509Certificate<'_>) -> Result<Peer, PeerError> {
    let subject = cert.subject();
    let first = |attrs: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>,
                 attribute: &'static str| {
        attrs.next().map_or(Ok(String::new()), |a| {
            a.as_str().map(str::to_string).map_err(|_| PeerError::NotAString { attribute })
        })
    };
    let org = first(&mut subject.iter_organization(), "organisation")?;
    let name = first(&mut subject.iter_common_name(), "common name")?;
    Ok(match org.as_str() {
        AGENTS_ORG => Peer::Agent(name),
        ADMINS_ORG => Peer::Admin(name),
        USERS_ORG => Peer::User(name),
        COORDINATORS_ORG => Peer::Coordinator(name),
        _ => Peer::Other { org, name },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert(org: Option<&str>, cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        let mut dn = DistinguishedName::new();
        if let Some(org) = org {
            dn.push(DnType::OrganizationName, org);
        }
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    #[test]
    fn the_role_is_the_organisation_and_the_name_the_common_name() {
        let cases = [
            (Some(AGENTS_ORG), Some("a1"), Peer::Agent("a1".into())),
            (Some(ADMINS_ORG), Some("admin"), Peer::Admin("admin".into())),
            (Some(USERS_ORG), Some("alice"), Peer::User("alice".into())),
            (Some(COORDINATORS_ORG), Some("c1"), Peer::Coordinator("c1".into())),
            (Some("acme"), Some("x"), Peer::Other { org: "acme".into(), name: "x".into() }),
            (None, Some("drover-coordinator"), Peer::Other { org: String::new(), name: "drover-coordinator".into() }),
            (Some(AGENTS_ORG), None, Peer::Agent(String::new())),
        ];
        for (org, cn, want) in cases {
            assert_eq!(peer_from_der(&cert(org, cn)).unwrap(), want, "{org:?} {cn:?}");
        }
        assert!(matches!(peer_from_der(b"junk"), Err(PeerError::NotACertificate(_))));
    }
}
