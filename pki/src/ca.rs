//! The CA and the certificates signed by it, laid out so that each process
//! gets only what it needs (`drover certs init`, `drover certs
//! issue-agent`, `drover dev`).
//!
//! Roles travel in the subject: the organisation (O) says what the holder
//! is ([`crate::AGENTS_ORG`] or [`crate::ADMINS_ORG`]) and the common name
//! (CN) who. An agent's labels travel in a custom extension
//! ([`crate::labels`]).
//!
//! [`init`] writes one directory per holder, because a single shared
//! directory let a job step on an agent read the CA's and the admin's keys
//! and become admin:
//!
//! ```text
//! DIR/ca/            ca.pem ca-key.pem                      `drover certs issue-agent`, with the operator
//! DIR/coordinator/   ca.pem coordinator.pem coordinator-key.pem   drover-coordinator --tls-dir
//!                    ca-key.pem (signs enrolling agents' certificates: crate::enroll)
//!                    secrets.key (seals secrets at rest: crate::secrets_key)
//! DIR/admin/         ca.pem admin.pem admin-key.pem         drover --tls-dir / DROVER_TLS_DIR
//! DIR/agents/NAME/   ca.pem agent-NAME.pem agent-NAME-key.pem     drover-agent --tls-dir (issue-agent)
//! ```
//!
//! Every directory is made with mode 0700 and every key with 0600; nothing
//! existing is ever overwritten.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{ADMINS_ORG, AGENTS_ORG};

const CA_NAME: &str = "Drover CA";

/// Why making the CA or issuing a certificate failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot create {}: {source}", .path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} already holds a CA{hint}", .dir.display())]
    OldLayout { dir: PathBuf, hint: String },
    #[error(
        "{} already exists; remove {} to start over (every certificate issued from its CA stops working), \
         or use `drover certs issue-agent` to add agents",
        .sub.display(), .dir.display()
    )]
    Exists { sub: PathBuf, dir: PathBuf },
    #[error("invalid host name: {0}")]
    Host(rcgen::Error),
    #[error("invalid agent name {0:?}: use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit")]
    AgentName(String),
    #[error("agent name {0:?} is given twice")]
    AgentTwice(String),
    #[error("{} already exists; agent {name:?} has a certificate (remove the directory to issue a new one)", .bundle.display())]
    AgentExists { bundle: PathBuf, name: String },
    #[error(
        "cannot read {}: {source}; create the CA first with `drover certs init --dir {}`, and give \
         `drover certs issue-agent --dir` the directory that holds ca/{hint}",
        .path.display(), .dir.display()
    )]
    ReadCa { path: PathBuf, dir: PathBuf, hint: String, source: std::io::Error },
    #[error("{} is not a valid key: {source}", .path.display())]
    CaKey { path: PathBuf, source: rcgen::Error },
    #[error(transparent)]
    SecretsKey(#[from] crate::secrets_key::SecretsKeyError),
    /// Making a key or signing a certificate failed.
    #[error("cannot make a certificate: {0}")]
    Sign(#[from] rcgen::Error),
}

/// Where `drover certs init --dir DIR` puts the CA, which stays with the
/// operator.
pub fn ca_dir(dir: &Path) -> PathBuf {
    dir.join("ca")
}

/// The coordinator's `--tls-dir`.
pub fn coordinator_dir(dir: &Path) -> PathBuf {
    dir.join("coordinator")
}

/// The CLI's `--tls-dir` (`DROVER_TLS_DIR`).
pub fn admin_dir(dir: &Path) -> PathBuf {
    dir.join("admin")
}

/// Agent `name`'s bundle, its `--tls-dir`.
pub fn agent_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join("agents").join(name)
}

/// Certificates are valid for ten years from the day they are made.
fn validity(params: &mut CertificateParams) {
    let year = 1970
        + (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
            / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut p);
    p
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| CaError::Create { path: path.to_path_buf(), source })?;
    f.write_all(contents.as_bytes()).map_err(|source| CaError::Write { path: path.to_path_buf(), source })
}

/// Makes `path` (and missing parents) with mode 0700. A directory that
/// exists already keeps its mode: it may be one the operator made on
/// purpose, such as the top directory.
fn make_dir(path: &Path) -> Result<(), CaError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| CaError::Create { path: path.to_path_buf(), source })
}

/// Checks that an agent name is usable in a file name and a certificate.
pub fn check_agent_name(name: &str) -> Result<(), CaError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(CaError::AgentName(name.to_string()));
    }
    Ok(())
}

fn leaf(
    org: Option<&str>,
    cn: &str,
    sans: Vec<String>,
    eku: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::new(sans).map_err(CaError::Host)?;
    let mut dn = DistinguishedName::new();
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![eku];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p);
    Ok(p)
}

fn issue(dir: &Path, base: &str, params: CertificateParams, issuer: &Issuer<'_, KeyPair>) -> Result<(), CaError> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write_file(&dir.join(format!("{base}.pem")), &cert.pem(), 0o644)?;
    write_file(&dir.join(format!("{base}-key.pem")), &key.serialize_pem(), 0o600)?;
    Ok(())
}

/// Says how to move certificates from the old layout, where everything was
/// in `dir` itself, when `dir` looks like one.
fn old_layout_hint(dir: &Path) -> String {
    if dir.join("ca-key.pem").exists() {
        format!(
            "; {} holds certificates in the old single-directory layout, which gave every process every key: \
             make a new CA with `drover certs init --dir NEWDIR` and issue agents again, \
             or move ca.pem and ca-key.pem into {}",
            dir.display(),
            ca_dir(dir).display()
        )
    } else {
        String::new()
    }
}

/// The CA's issuer and its certificate (PEM, copied into every bundle).
fn load_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, String), CaError> {
    let ca = ca_dir(dir);
    let read = |file: &str| {
        let path = ca.join(file);
        std::fs::read_to_string(&path).map_err(|source| CaError::ReadCa {
            path,
            dir: dir.to_path_buf(),
            hint: old_layout_hint(dir),
            source,
        })
    };
    let key_pem = read("ca-key.pem")?;
    let cert_pem = read("ca.pem")?;
    let key = KeyPair::from_pem(&key_pem).map_err(|source| CaError::CaKey { path: ca.join("ca-key.pem"), source })?;
    // The issuer is the CA's name and key; the name is fixed, so the CA
    // certificate itself need not be parsed.
    Ok((Issuer::new(ca_params(), key), cert_pem))
}

/// `drover certs init`: a CA, the coordinator's server certificate and the
/// admin client certificate, each in its own directory. Refuses when any of
/// the three exists already, since a new CA invalidates every certificate
/// issued from the old one.
pub fn init(dir: &Path, hosts: &[String]) -> Result<(), CaError> {
    if dir.join("ca-key.pem").exists() {
        return Err(CaError::OldLayout { dir: dir.to_path_buf(), hint: old_layout_hint(dir) });
    }
    for sub in [ca_dir(dir), coordinator_dir(dir), admin_dir(dir)] {
        if sub.exists() {
            return Err(CaError::Exists { sub, dir: dir.to_path_buf() });
        }
    }
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for h in hosts {
        if !sans.contains(h) {
            sans.push(h.clone());
        }
    }
    // Made before anything is written, so a bad --host writes nothing.
    let coordinator = leaf(None, "drover-coordinator", sans, ExtendedKeyUsagePurpose::ServerAuth)?;
    let admin = leaf(Some(ADMINS_ORG), "admin", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;

    make_dir(dir)?;
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca_params().self_signed(&ca_key)?.pem();
    let ca = ca_dir(dir);
    make_dir(&ca)?;
    write_file(&ca.join("ca.pem"), &ca_pem, 0o644)?;
    write_file(&ca.join("ca-key.pem"), &ca_key.serialize_pem(), 0o600)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    for (sub, base, params) in [(coordinator_dir(dir), "coordinator", coordinator), (admin_dir(dir), "admin", admin)] {
        make_dir(&sub)?;
        write_file(&sub.join("ca.pem"), &ca_pem, 0o644)?;
        issue(&sub, base, params, &issuer)?;
    }
    // The coordinators sign enrolling agents' certificates (join tokens),
    // so the CA key lives with them too.
    write_file(&coordinator_dir(dir).join("ca-key.pem"), &issuer.key().serialize_pem(), 0o600)?;
    let key = coordinator_dir(dir).join(crate::secrets_key::FILE);
    crate::secrets_key::generate(&key)?;
    Ok(())
}

/// `drover certs issue-agent NAME...`: a bundle directory for each agent,
/// `DIR/agents/NAME/`, with the CA certificate and the agent's certificate
/// (carrying `labels`) and key. Every name is checked (valid, given once,
/// without a bundle yet) and the CA loaded, once, before anything is
/// written, so a bad name among many writes nothing. Returns the bundles.
pub fn issue_agents(dir: &Path, names: &[String], labels: &BTreeMap<String, String>) -> Result<Vec<PathBuf>, CaError> {
    let mut seen = BTreeSet::new();
    for name in names {
        check_agent_name(name)?;
        if !seen.insert(name.as_str()) {
            return Err(CaError::AgentTwice(name.clone()));
        }
        let bundle = agent_dir(dir, name);
        if bundle.exists() {
            return Err(CaError::AgentExists { bundle, name: name.clone() });
        }
    }
    let (issuer, ca_pem) = load_ca(dir)?;
    make_dir(&dir.join("agents"))?;
    let mut bundles = Vec::with_capacity(names.len());
    for name in names {
        let mut params = leaf(Some(AGENTS_ORG), name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;
        if !labels.is_empty() {
            params.custom_extensions.push(crate::labels::extension(labels));
        }
        let bundle = agent_dir(dir, name);
        make_dir(&bundle)?;
        write_file(&bundle.join("ca.pem"), &ca_pem, 0o644)?;
        issue(&bundle, &format!("agent-{name}"), params, &issuer)?;
        bundles.push(bundle);
    }
    Ok(bundles)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("drover-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// The DER of the first certificate in a PEM file.
    fn der(path: &Path) -> Vec<u8> {
        let pem = std::fs::read_to_string(path).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map(|(_, p)| p.contents)
            .unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    #[test]
    fn init_gives_each_holder_its_own_directory() {
        let dir = temp("layout");
        init(&dir, &[]).unwrap();
        assert_eq!(files(&dir), ["admin", "ca", "coordinator"]);
        assert_eq!(files(&dir.join("ca")), ["ca-key.pem", "ca.pem"]);
        assert_eq!(
            files(&dir.join("coordinator")),
            ["ca-key.pem", "ca.pem", "coordinator-key.pem", "coordinator.pem", "secrets.key"]
        );
        assert_eq!(files(&dir.join("admin")), ["admin-key.pem", "admin.pem", "ca.pem"]);
        for sub in ["", "ca", "coordinator", "admin"] {
            assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}");
        }
        for key in [
            "ca/ca-key.pem",
            "coordinator/ca-key.pem",
            "coordinator/coordinator-key.pem",
            "coordinator/secrets.key",
            "admin/admin-key.pem",
        ] {
            assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
        }
        // The same CA everywhere.
        let ca = std::fs::read(dir.join("ca/ca.pem")).unwrap();
        assert_eq!(std::fs::read(dir.join("admin/ca.pem")).unwrap(), ca);
        assert_eq!(std::fs::read(dir.join("coordinator/ca.pem")).unwrap(), ca);

        let err = init(&dir, &[]).unwrap_err().to_string();
        assert!(err.contains("ca already exists"), "{err}");

        let labels = drover_client::labels::parse("os=linux").unwrap();
        let bundles = issue_agents(&dir, &names(&["a"]), &labels).unwrap();
        assert_eq!(bundles, [dir.join("agents/a")]);
        assert_eq!(files(&dir.join("agents/a")), ["agent-a-key.pem", "agent-a.pem", "ca.pem"]);
        assert_eq!(mode(&dir.join("agents")), 0o700);
        assert_eq!(mode(&dir.join("agents/a")), 0o700);
        assert_eq!(mode(&dir.join("agents/a/agent-a-key.pem")), 0o600);
        assert_eq!(std::fs::read(dir.join("agents/a/ca.pem")).unwrap(), ca);

        // What the coordinator reads from them.
        use crate::peer::{Peer, peer_from_der};
        let agent = der(&dir.join("agents/a/agent-a.pem"));
        assert_eq!(peer_from_der(&agent).unwrap(), Peer::Agent("a".into()));
        assert_eq!(crate::labels::agent_labels_from_der(&agent).unwrap(), labels);
        let admin = der(&dir.join("admin/admin.pem"));
        assert_eq!(peer_from_der(&admin).unwrap(), Peer::Admin("admin".into()));
        assert!(crate::labels::agent_labels_from_der(&admin).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn init_refuses_a_directory_in_the_old_layout() {
        let dir = temp("old");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca-key.pem"), "x").unwrap();
        let err = init(&dir, &[]).unwrap_err().to_string();
        assert!(err.contains("old single-directory layout"), "{err}");
        let err = issue_agents(&dir, &names(&["a"]), &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("old single-directory layout"), "{err}");
        assert_eq!(files(&dir), ["ca-key.pem"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn issue_agents_checks_every_name_before_writing_anything() {
        let dir = temp("names");
        init(&dir, &[]).unwrap();
        let none = BTreeMap::new();
        let refused: &[(&[&str], &str)] = &[
            (&["a", "b", "a"], "agent name \"a\" is given twice"),
            (&["a", "bad name"], "invalid agent name \"bad name\""),
            (&["a", ""], "invalid agent name \"\""),
            (&["a", "../x"], "invalid agent name \"../x\""),
        ];
        for (given, want) in refused {
            let err = issue_agents(&dir, &names(given), &none).unwrap_err().to_string();
            assert!(err.contains(want), "{given:?}: {err}");
            assert!(!dir.join("agents").exists(), "{given:?} wrote files");
        }
        issue_agents(&dir, &names(&["a", "b"]), &none).unwrap();
        let err = issue_agents(&dir, &names(&["c", "b"]), &none).unwrap_err().to_string();
        assert!(err.contains("agents/b already exists; agent \"b\" has a certificate"), "{err}");
        assert_eq!(files(&dir.join("agents")), ["a", "b"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn issue_agents_needs_the_ca() {
        let dir = temp("noca");
        let err = issue_agents(&dir, &names(&["a"]), &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("create the CA first with `drover certs init"), "{err}");
        assert!(!dir.exists());
    }
}
