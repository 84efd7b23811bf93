//! `drover certs`: a private CA and the certificates signed by it.
//!
//! Roles travel in the subject: the organisation (O) says what the holder
//! is (`drover-agents` or `drover-admins`) and the common name (CN) who. The
//! coordinator reads both after TLS has verified the chain.

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
pub fn check_agent_name(name: &str) -> anyhow::Result<()> {
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

/// `drover certs issue-agent NAME`: a client certificate for one agent.
pub fn issue_agent(dir: &Path, name: &str) -> anyhow::Result<()> {
    check_agent_name(name)?;
    let issuer = load_ca(dir)?;
    let base = format!("agent-{name}");
    if dir.join(format!("{base}.pem")).exists() {
        bail!("{} already exists; agent {name:?} has a certificate", dir.join(format!("{base}.pem")).display());
    }
    issue(dir, &base, leaf(Some(AGENTS_ORG), name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?, &issuer)
}
