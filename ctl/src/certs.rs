//! `drover certs`: a private CA and the certificates signed by it.
//!
//! Roles travel in the subject: the organisation (O) says what the holder
//! is (`drover-agents` or `drover-admins`) and the common name (CN) who. The
//! coordinator reads both after TLS has verified the chain.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub const AGENTS_ORG: &str = "drover-agents";
pub const ADMINS_ORG: &str = "drover-admins";
const CA_NAME: &str = "Drover CA";

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

fn load_ca(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let key_path = dir.join("ca-key.pem");
    let pem = std::fs::read_to_string(&key_path).with_context(|| {
        format!(
            "cannot read {}; create the CA first with `drover certs init --dir {}`",
            key_path.display(),
            dir.display()
        )
    })?;
    let key = KeyPair::from_pem(&pem).with_context(|| format!("{} is not a valid key", key_path.display()))?;
    // The issuer is the CA's name and key; the name is fixed, so the CA
    // certificate itself need not be parsed.
    Ok(Issuer::new(ca_params(), key))
}

/// `drover certs init`: a CA, the coordinator's server certificate and the
/// admin client certificate. Refuses to overwrite an existing CA, since that
/// would invalidate every certificate issued from it.
pub fn init(dir: &Path, hosts: &[String]) -> anyhow::Result<()> {
    if dir.join("ca.pem").exists() || dir.join("ca-key.pem").exists() {
        bail!(
            "{} already holds a CA; remove the directory to start over (every certificate issued from it stops working), \
             or use `drover certs issue-agent` to add agents",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params().self_signed(&ca_key)?;
    write_file(&dir.join("ca.pem"), &ca_cert.pem(), 0o644)?;
    write_file(&dir.join("ca-key.pem"), &ca_key.serialize_pem(), 0o600)?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for h in hosts {
        if !sans.contains(h) {
            sans.push(h.clone());
        }
    }
    issue(dir, "coordinator", leaf(None, "drover-coordinator", sans, ExtendedKeyUsagePurpose::ServerAuth)?, &issuer)?;
    issue(dir, "admin", leaf(Some(ADMINS_ORG), "admin", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?, &issuer)?;
    Ok(())
}

/// `drover certs issue-agent NAME...`: a client certificate for each agent.
/// Every name is checked (valid, given once, without a certificate or key
/// in `dir` yet) and the CA loaded, once, before anything is written, so a
/// bad name among many writes nothing.
pub fn issue_agents(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    for name in names {
        check_agent_name(name)?;
        if !seen.insert(name.as_str()) {
            bail!("agent name {name:?} is given twice");
        }
        for file in [format!("agent-{name}.pem"), format!("agent-{name}-key.pem")] {
            let path = dir.join(file);
            if path.exists() {
                bail!("{} already exists; agent {name:?} has a certificate", path.display());
            }
        }
    }
    let issuer = load_ca(dir)?;
    for name in names {
        let params = leaf(Some(AGENTS_ORG), name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;
        issue(dir, &format!("agent-{name}"), params, &issuer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn issue_agents_checks_every_name_before_writing_anything() {
        let dir = std::env::temp_dir().join(format!("drover-ctl-certs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init(&dir, &[]).unwrap();
        let before = files(&dir);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let refused: &[(&[&str], &str)] = &[
            (&["a", "b", "a"], "agent name \"a\" is given twice"),
            (&["a", "bad name"], "invalid agent name \"bad name\""),
            (&["a", ""], "invalid agent name \"\""),
        ];
        for (given, want) in refused {
            let err = issue_agents(&dir, &names(given)).unwrap_err().to_string();
            assert!(err.contains(want), "{given:?}: {err}");
            assert_eq!(files(&dir), before, "{given:?} wrote files");
        }
        issue_agents(&dir, &names(&["a", "b"])).unwrap();
        let err = issue_agents(&dir, &names(&["c", "b"])).unwrap_err().to_string();
        assert!(err.contains("agent-b.pem already exists; agent \"b\" has a certificate"), "{err}");
        assert!(!dir.join("agent-c.pem").exists());
        // A key left without its certificate is not overwritten either.
        std::fs::write(dir.join("agent-d-key.pem"), "x").unwrap();
        let err = issue_agents(&dir, &names(&["d"])).unwrap_err().to_string();
        assert!(err.contains("agent-d-key.pem already exists"), "{err}");
        assert!(!dir.join("agent-d.pem").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn issue_agents_needs_the_ca() {
        let dir = std::env::temp_dir().join(format!("drover-ctl-certs-noca-{}", std::process::id()));
        let err = issue_agents(&dir, &["a".to_string()]).unwrap_err().to_string();
        assert!(err.contains("create the CA first with `drover certs init"), "{err}");
        assert!(!dir.exists());
    }
}
