//! `drover certs`: a private CA and the certificates signed by it, laid out
//! so that each process gets only what it needs.
//!
//! Roles travel in the subject: the organisation (O) says what the holder
//! is (`drover-agents` or `drover-admins`) and the common name (CN) who. The
//! coordinator reads both after TLS has verified the chain. An agent's labels
//! travel in a custom extension ([`AGENT_LABELS_OID`]), so an agent cannot
//! claim labels its certificate was not issued with.
//!
//! `drover certs init --dir DIR` writes one directory per holder, because a
//! single shared directory let a job step on an agent read the CA's and the
//! admin's keys and become admin:
//!
//! ```text
//! DIR/ca/            ca.pem ca-key.pem                      stays with the operator, offline
//! DIR/coordinator/   ca.pem coordinator.pem coordinator-key.pem   drover-coordinator --tls-dir
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

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

pub const AGENTS_ORG: &str = "drover-agents";
pub const ADMINS_ORG: &str = "drover-admins";
const CA_NAME: &str = "Drover CA";

/// The OID of the agent-labels extension,
/// 1.2.840.113556.1.8000.2554.47932.32406.57425.19988.33433.655636.5882462.
/// The same value is `drover_coordinator::tls::AGENT_LABELS_OID` (this
/// crate does not depend on the coordinator); a test on each side checks it
/// against that literal, so the two cannot drift apart unnoticed.
///
/// It is Microsoft's documented scheme for an unregistered OID made from a
/// random GUID (1.2.840.113556.1.8000.2554 followed by the GUID
/// bb3c7e96-e051-4e14-8299-0a011459c25e cut into 16-, 24- and 24-bit
/// pieces). The UUID arc 2.25 would hold the same UUID as one 128-bit arc,
/// which rcgen cannot write: its OIDs are made of u64 arcs.
pub const AGENT_LABELS_OID: &[u64] =
    &[1, 2, 840, 113556, 1, 8000, 2554, 47932, 32406, 57425, 19988, 33433, 655636, 5882462];

/// The longest label key or value, in bytes, and the most labels one agent
/// may have: enough for any real use, and a bound on the certificate's size.
const MAX_LABEL_LEN: usize = 128;
const MAX_LABELS: usize = 64;

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

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Makes `path` (and missing parents) with mode 0700. A directory that
/// exists already keeps its mode: it may be one the operator made on
/// purpose, such as the top directory.
fn make_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Checks that an agent name is usable in a file name and a certificate.
fn check_agent_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!(
            "invalid agent name {name:?}: use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        );
    }
    Ok(())
}

/// Parses `--labels k=v,k=v` (the agent's own flag has the same grammar):
/// pairs are trimmed, empty pairs skipped; keys and values must be
/// non-empty, without ',' or '=' or control characters, at most 128 bytes.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?} is not k=v; write labels as os=linux,arch=x86_64"))?;
        for (what, text) in [("key", k), ("value", v)] {
            if text.is_empty() {
                return Err(format!("label {pair:?} has an empty {what}"));
            }
            if text.contains('=') {
                return Err(format!("label {pair:?}: a {what} may not contain '='"));
            }
            if text.len() > MAX_LABEL_LEN {
                return Err(format!("label {pair:?}: the {what} is longer than {MAX_LABEL_LEN} bytes"));
            }
            if text.chars().any(char::is_control) {
                return Err(format!("label {pair:?}: the {what} contains a control character"));
            }
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label {k:?} is given twice"));
        }
    }
    if labels.len() > MAX_LABELS {
        return Err(format!("{} labels given; an agent may have at most {MAX_LABELS}", labels.len()));
    }
    Ok(labels)
}

/// Labels as the extension holds them and as the agent's `--labels` takes
/// them: `k=v,k=v`, sorted by key.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
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
fn labels_extension(labels: &BTreeMap<String, String>) -> CustomExtension {
    // from_oid_content makes a non-critical extension: TLS stacks that do
    // not know it (every one but our coordinator) must accept the
    // certificate all the same.
    CustomExtension::from_oid_content(AGENT_LABELS_OID, der_utf8_string(&labels_text(labels)))
}

fn leaf(
    org: Option<&str>,
    cn: &str,
    sans: Vec<String>,
    eku: ExtendedKeyUsagePurpose,
) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(sans).context("invalid host name")?;
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

fn issue(dir: &Path, base: &str, params: CertificateParams, issuer: &Issuer<'_, KeyPair>) -> anyhow::Result<()> {
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
fn load_ca(dir: &Path) -> anyhow::Result<(Issuer<'static, KeyPair>, String)> {
    let ca = ca_dir(dir);
    let read = |file: &str| {
        let path = ca.join(file);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}; create the CA first with `drover certs init --dir {}`, and give \
                 `drover certs issue-agent --dir` the directory that holds ca/{}",
                path.display(),
                dir.display(),
                old_layout_hint(dir)
            )
        })
    };
    let key_pem = read("ca-key.pem")?;
    let cert_pem = read("ca.pem")?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} is not a valid key", ca.join("ca-key.pem").display()))?;
    // The issuer is the CA's name and key; the name is fixed, so the CA
    // certificate itself need not be parsed.
    Ok((Issuer::new(ca_params(), key), cert_pem))
}

/// `drover certs init`: a CA, the coordinator's server certificate and the
/// admin client certificate, each in its own directory. Refuses when any of
/// the three exists already, since a new CA invalidates every certificate
/// issued from the old one.
pub fn init(dir: &Path, hosts: &[String]) -> anyhow::Result<()> {
    if dir.join("ca-key.pem").exists() {
        bail!("{} already holds a CA{}", dir.display(), old_layout_hint(dir));
    }
    for sub in [ca_dir(dir), coordinator_dir(dir), admin_dir(dir)] {
        if sub.exists() {
            bail!(
                "{} already exists; remove {} to start over (every certificate issued from its CA stops working), \
                 or use `drover certs issue-agent` to add agents",
                sub.display(),
                dir.display()
            );
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
    Ok(())
}

/// `drover certs issue-agent NAME...`: a bundle directory for each agent,
/// `DIR/agents/NAME/`, with the CA certificate and the agent's certificate
/// (carrying `labels`) and key. Every name is checked (valid, given once,
/// without a bundle yet) and the CA loaded, once, before anything is
/// written, so a bad name among many writes nothing. Returns the bundles.
pub fn issue_agents(dir: &Path, names: &[String], labels: &BTreeMap<String, String>) -> anyhow::Result<Vec<PathBuf>> {
    let mut seen = BTreeSet::new();
    for name in names {
        check_agent_name(name)?;
        if !seen.insert(name.as_str()) {
            bail!("agent name {name:?} is given twice");
        }
        let bundle = agent_dir(dir, name);
        if bundle.exists() {
            bail!(
                "{} already exists; agent {name:?} has a certificate (remove the directory to issue a new one)",
                bundle.display()
            );
        }
    }
    let (issuer, ca_pem) = load_ca(dir)?;
    make_dir(&dir.join("agents"))?;
    let mut bundles = Vec::with_capacity(names.len());
    for name in names {
        let mut params = leaf(Some(AGENTS_ORG), name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;
        if !labels.is_empty() {
            params.custom_extensions.push(labels_extension(labels));
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
        let dir = std::env::temp_dir().join(format!("drover-ctl-certs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_oid_is_the_one_the_coordinator_reads() {
        // The coordinator's tls.rs tests check its constant against the same
        // literal.
        let dotted: Vec<String> = AGENT_LABELS_OID.iter().map(u64::to_string).collect();
        assert_eq!(dotted.join("."), "1.2.840.113556.1.8000.2554.47932.32406.57425.19988.33433.655636.5882462");
    }

    #[test]
    fn init_gives_each_holder_its_own_directory() {
        let dir = temp("layout");
        init(&dir, &[]).unwrap();
        assert_eq!(files(&dir), ["admin", "ca", "coordinator"]);
        assert_eq!(files(&dir.join("ca")), ["ca-key.pem", "ca.pem"]);
        assert_eq!(files(&dir.join("coordinator")), ["ca.pem", "coordinator-key.pem", "coordinator.pem"]);
        assert_eq!(files(&dir.join("admin")), ["admin-key.pem", "admin.pem", "ca.pem"]);
        for sub in ["", "ca", "coordinator", "admin"] {
            assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}");
        }
        for key in ["ca/ca-key.pem", "coordinator/coordinator-key.pem", "admin/admin-key.pem"] {
            assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
        }
        // The same CA everywhere.
        let ca = std::fs::read(dir.join("ca/ca.pem")).unwrap();
        assert_eq!(std::fs::read(dir.join("admin/ca.pem")).unwrap(), ca);
        assert_eq!(std::fs::read(dir.join("coordinator/ca.pem")).unwrap(), ca);

        let err = init(&dir, &[]).unwrap_err().to_string();
        assert!(err.contains("ca already exists"), "{err}");

        let bundles = issue_agents(&dir, &names(&["a"]), &parse_labels("os=linux").unwrap()).unwrap();
        assert_eq!(bundles, [dir.join("agents/a")]);
        assert_eq!(files(&dir.join("agents/a")), ["agent-a-key.pem", "agent-a.pem", "ca.pem"]);
        assert_eq!(mode(&dir.join("agents")), 0o700);
        assert_eq!(mode(&dir.join("agents/a")), 0o700);
        assert_eq!(mode(&dir.join("agents/a/agent-a-key.pem")), 0o600);
        assert_eq!(std::fs::read(dir.join("agents/a/ca.pem")).unwrap(), ca);
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

    #[test]
    fn labels_are_checked() {
        let ok: &[(&str, &str)] = &[
            ("", ""),
            ("os=linux", "os=linux"),
            (" role=b , os=linux ,", "os=linux,role=b"),
            ("a.b/c=x-y_z", "a.b/c=x-y_z"),
        ];
        for (given, want) in ok {
            assert_eq!(labels_text(&parse_labels(given).unwrap()), *want, "{given:?}");
        }
        let long = "k".repeat(MAX_LABEL_LEN + 1);
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}=v")).collect();
        let refused: &[(&str, &str)] = &[
            ("os", "is not k=v"),
            ("=linux", "empty key"),
            ("os=", "empty value"),
            ("os=a=b", "may not contain '='"),
            ("os=a,os=b", "\"os\" is given twice"),
            (&format!("{long}=v"), "longer than 128 bytes"),
            ("os=li\u{1b}nux", "control character"),
            (&many.join(","), "at most 64"),
        ];
        for (given, want) in refused {
            let err = parse_labels(given).unwrap_err();
            assert!(err.contains(want), "{given:?}: {err}");
        }
    }

    #[test]
    fn der_utf8_strings_use_long_lengths_when_needed() {
        assert_eq!(der_utf8_string("ab"), [0x0c, 2, b'a', b'b']);
        let long = "x".repeat(300);
        let der = der_utf8_string(&long);
        assert_eq!(&der[..4], &[0x0c, 0x82, 0x01, 0x2c]);
        assert_eq!(der.len(), 304);
    }
}
