//! `drover ca status|rotate|refresh` (issue 18): the certificate
//! authorities, a rotation moved on phase by phase, and the CLI's own TLS
//! directory kept in step with it, over the identity service.
//!
//! A rotation changes what a client must trust (`trust_pem`: every CA the
//! coordinators accept, the signing one first) and, from `reissue` on,
//! which CA signs. So `rotate` and `refresh` write the trust bundle into
//! the ca.pem of the TLS directory the CLI connected with
//! ([`files::install_trust`], only when it differs), and renew the CLI's
//! own certificate when another CA than the signing one signed it
//! ([`origin`], [`should_renew`]); `rotate --phase reissue` always renews
//! it, and `rotate --phase remove` first renews one the removal would
//! refuse. A renewal (`RenewOwn`) makes a new key here, asks for it under
//! the name the current certificate carries (the coordinator signs only
//! that), checks that the answer carries the key and the same holder, and
//! renames `BASE.pem`, `BASE-key.pem` and `ca.pem` into place
//! ([`files::install`]); the CLI then connects again with the new files,
//! which proves them (a user's old certificate loses its role once a newer
//! one is recorded). A directory that missed the refresh after `add` does
//! not trust the coordinators after `reissue`: `refresh --ca-pin` asks for
//! the trust bundle over [`pinned_channel`] with its own certificate.
//!
//! As in [`crate::identity`], every answer is built as JSON once and
//! printed as `-o` asks; the tables, the hint, the messages and the
//! decisions are pure functions (tested in `authorities/tests.rs`), and
//! every text the coordinator sent goes through [`field`].

use std::error::Error as _;
use std::path::Path;

use drover_client::chain::error_chain;
use drover_client::enroll::files::{self, Files, Request};
use drover_client::enroll::{CaPin, ClientCert, PinnedError, pinned_channel};
use drover_pki::peer::{Peer, peer_from_der};
use drover_proto::v1 as pb;
use serde_json::{Value, json};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cli::{CaCommand, PhaseArg};
use crate::client::{self, Conn, EXIT_INVALID, EXIT_PERMISSION, EXIT_UNREACHABLE, Exit, status_exit};
use crate::commands::now_ms;
use crate::identity::{absolute, relative};
use crate::out::outln;
use crate::output::{self, Format};
use crate::term::field;

/// `drover ca status|rotate|refresh`, connecting to `urls` with the TLS
/// directory `dir`, which they write into.
pub async fn run(urls: &str, dir: &Path, command: CaCommand) -> anyhow::Result<()> {
    if let CaCommand::Refresh { ca_pin: Some(pin), output, .. } = command {
        return refresh_pinned(urls, dir, pin, output).await;
    }
    let mut conn = Conn::connect(urls, dir).await?;
    match command {
        CaCommand::Status { output, .. } => {
            let status = status(&mut conn).await?;
            if output.structured() {
                return Ok(output::document(output, &status_view(&status))?);
            }
            print(&status_text(&status, output == Format::Wide, now_ms() as i64));
            Ok(())
        }
        CaCommand::Rotate { phase, force, output, .. } => rotate(&mut conn, dir, phase, force, output).await,
        CaCommand::Refresh { output, .. } => refresh(&mut conn, &Own::read(dir)?, false, output).await,
    }
}

fn print(lines: &[String]) {
    for line in lines {
        outln!("{line}");
    }
}

async fn status(conn: &mut Conn) -> Result<pb::CaStatusResponse, Exit> {
    conn.call(true, |c| i_call!(c.ca_status(pb::CaStatusRequest {}))).await
}

/// `drover ca rotate`.
async fn rotate(conn: &mut Conn, dir: &Path, phase: PhaseArg, force: bool, format: Format) -> anyhow::Result<()> {
    let own = Own::read(dir)?;
    let mut local = Local::default();
    if phase == PhaseArg::Remove {
        // A certificate from the CA about to go would be refused from the
        // next call on: this CLI would lock itself out.
        let before = status(conn).await?;
        if should_renew(&before.phase, origin(&own.der, &before.cas)) {
            local.renewed = Some(renew(conn, &own).await?);
        }
    }
    let req = pb::RotateCaRequest { phase: phase.as_str().into(), force };
    // Not retried on a lost answer: the phase would be out of order the
    // second time, which the first made so.
    let mut status = conn.call(false, |c| i_call!(c.rotate_ca(req.clone()))).await?;
    let done = |e: Exit| {
        let message = format!(
            "the rotation's phase {} is done, but {}; `drover ca refresh` tries again",
            phase.as_str(),
            e.message
        );
        Exit::new(e.code, message)
    };
    local.trust_changed = write_trust(dir, &status).map_err(done)?;
    if phase == PhaseArg::Reissue {
        local.renewed = Some(renew(conn, &own).await.map_err(done)?);
        status = self::status(conn).await.map_err(done)?;
    }
    if format.structured() {
        return Ok(output::document(format, &local_view(&status, dir, &own, &local))?);
    }
    let now = now_ms() as i64;
    let mut lines = vec![rotated_text(phase, &status), trust_text(dir, local.trust_changed, &status)];
    lines.extend(local.renewed.map(|r| renewed_text(&own, r, &status, now)));
    lines.push(String::new());
    lines.extend(status_text(&status, false, now));
    print(&lines);
    Ok(())
}

/// `drover ca refresh`; `trusted` says whether ca.pem was written already
/// ([`refresh_pinned`]).
async fn refresh(conn: &mut Conn, own: &Own<'_>, trusted: bool, format: Format) -> anyhow::Result<()> {
    let dir = own.dir;
    let mut status = status(conn).await?;
    let mut local = Local { trust_changed: write_trust(dir, &status)? || trusted, renewed: None };
    let origin = origin(&own.der, &status.cas);
    if should_renew(&status.phase, origin) {
        local.renewed = Some(renew(conn, own).await?);
        status = self::status(conn).await?;
    }
    if format.structured() {
        return Ok(output::document(format, &local_view(&status, dir, own, &local))?);
    }
    let now = now_ms() as i64;
    let mut lines = vec![trust_text(dir, local.trust_changed, &status)];
    lines.push(match local.renewed {
        Some(renewed) => renewed_text(own, renewed, &status, now),
        None => kept_text(own, origin, &status),
    });
    lines.push(String::new());
    lines.extend(status_text(&status, false, now));
    print(&lines);
    Ok(())
}

/// `drover ca refresh --ca-pin`, for a directory whose ca.pem no longer
/// vouches for the coordinators (it missed the refresh after `add`): the
/// status is asked for over a connection that trusts the pinned CA alone
/// and presents this CLI's certificate, which the coordinators accept
/// until `remove`; its trust bundle, which must hold the pinned CA, goes
/// into ca.pem, and the rest is [`refresh`]'s over an ordinary connection.
async fn refresh_pinned(urls: &str, dir: &Path, pin: CaPin, format: Format) -> anyhow::Result<()> {
    let own = Own::read(dir)?;
    let status = pinned_status(urls, &own, pin).await?;
    if !pin.in_bundle(&status.trust_pem) {
        let message = format!("the coordinator presents CA {pin} but does not list it to trust; nothing was written");
        return Err(Exit::new(EXIT_UNREACHABLE, message).into());
    }
    let trusted = write_trust(dir, &status)?;
    let mut conn = Conn::connect(urls, dir).await.map_err(|e| {
        Exit::new(e.code, format!("{} trusts CA {pin} now, but connecting with it failed: {e}", dir.display()))
    })?;
    refresh(&mut conn, &own, trusted, format).await
}

/// `CaStatus` from the first of `urls` that answers over
/// [`pinned_channel`], presenting `own`'s certificate and key.
async fn pinned_status(urls: &str, own: &Own<'_>, pin: CaPin) -> Result<pb::CaStatusResponse, Exit> {
    let files = format!("{} and {} in {}", files::cert_file(&own.base), files::key_file(&own.base), own.dir.display());
    let read = |file: String| std::fs::read_to_string(own.dir.join(file));
    let (chain_pem, key_pem) = match (read(files::cert_file(&own.base)), read(files::key_file(&own.base))) {
        (Ok(chain), Ok(key)) => (chain, key),
        (Err(e), _) | (_, Err(e)) => return Err(Exit::new(EXIT_INVALID, format!("cannot read {files}: {e}"))),
    };
    let cert = ClientCert { chain_pem: &chain_pem, key_pem: &key_pem };
    let mut last = Exit::new(EXIT_INVALID, "no coordinator URL given; pass --coordinator https://HOST:PORT");
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let channel = match pinned_channel(url, pin, Some(cert)).await {
            Ok(channel) => channel,
            Err(e @ PinnedError::Connect(_)) => {
                last = Exit::new(EXIT_UNREACHABLE, e.to_string());
                continue;
            }
            Err(e @ PinnedError::ClientCert(_)) => return Err(Exit::new(EXIT_INVALID, format!("{e} ({files})"))),
            // A wrong pin or URL is wrong everywhere.
            Err(e) => return Err(Exit::new(EXIT_INVALID, e.to_string())),
        };
        let mut identity = pb::identity_service_client::IdentityServiceClient::new(channel);
        match identity.ca_status(pb::CaStatusRequest {}).await {
            Ok(answer) => return Ok(answer.into_inner()),
            // Broken below gRPC before any answer: the certificate refused.
            Err(status) if status.source().is_some() => {
                let detail = status.source().map_or_else(String::new, error_chain);
                return Err(Exit::new(
                    EXIT_PERMISSION,
                    format!(
                        "the coordinator at {url} refused the certificate in {files} ({detail}); one of a CA the \
                         rotation removed cannot refresh: get a new one (`drover login` with a token from `drover \
                         user add`)"
                    ),
                ));
            }
            Err(status) => last = status_exit(status),
        }
    }
    Err(last)
}

/// Refuses flags that do not go together, before connecting.
pub fn check(command: &CaCommand) -> Result<(), Exit> {
    match command {
        CaCommand::Rotate { phase, force, .. } => check_rotate(*phase, *force),
        CaCommand::Status { .. } | CaCommand::Refresh { .. } => Ok(()),
    }
}

pub(crate) fn check_rotate(phase: PhaseArg, force: bool) -> Result<(), Exit> {
    if force && phase != PhaseArg::Remove {
        return Err(Exit::new(
            EXIT_INVALID,
            format!(
                "--force goes with --phase remove only (it removes the old CA while identities still hold \
                 certificates it signed); --phase {} takes nothing away",
                phase.as_str()
            ),
        ));
    }
    Ok(())
}

/// The CLI's own certificate, in the TLS directory it connected with.
pub(crate) struct Own<'a> {
    dir: &'a Path,
    /// The files' base name: `user` or `admin` ([`client::bundle`]).
    base: String,
    /// Who it names, which the renewed one must name too.
    peer: Peer,
    /// The common name, which the CSR must ask for.
    name: String,
    /// The certificate, DER.
    der: Vec<u8>,
}

impl<'a> Own<'a> {
    fn read(dir: &'a Path) -> Result<Own<'a>, Exit> {
        let base = client::bundle(dir).cert;
        let path = dir.join(files::cert_file(&base));
        let bad = |why: String| Exit::new(EXIT_INVALID, format!("cannot read {}: {why}", path.display()));
        let pem = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let der = files::first_cert(&pem).ok_or_else(|| bad("it holds no PEM certificate".into()))?.to_vec();
        let peer = peer_from_der(&der).map_err(|e| bad(e.to_string()))?;
        let name = match &peer {
            Peer::Admin(name) | Peer::User(name) => name.clone(),
            other => return Err(bad(format!("it is not an admin's or a user's certificate but {other:?}"))),
        };
        Ok(Own { dir, base, peer, name, der })
    }
}

/// What a command changed in the TLS directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Local {
    /// Whether ca.pem was rewritten with the trust bundle.
    trust_changed: bool,
    /// The own certificate's new expiry, when it was renewed.
    renewed: Option<i64>,
}

/// Writes the status' trust bundle into `dir`'s ca.pem when it differs;
/// an answer without a certificate in it leaves ca.pem alone rather than
/// trusting nothing.
fn write_trust(dir: &Path, status: &pb::CaStatusResponse) -> Result<bool, Exit> {
    if files::first_cert(&status.trust_pem).is_none() {
        return Ok(false);
    }
    files::install_trust(dir, &status.trust_pem).map_err(|e| Exit::new(EXIT_INVALID, e.to_string()))
}

/// Renews the CLI's own certificate from the CA that signs now and
/// connects again with it; the new certificate's expiry.
async fn renew(conn: &mut Conn, own: &Own<'_>) -> Result<i64, Exit> {
    let request = Request::new(&own.name)
        .map_err(|e| Exit::new(EXIT_INVALID, format!("cannot make a key for {}: {e}", field(&own.name))))?;
    let req = pb::RenewRequest { csr: request.csr_der.clone() };
    // Sent again after a lost answer: only the certificate installed is
    // used, and it is the last one the coordinator made.
    let cert = conn.call(true, |c| i_call!(c.renew_own(req.clone()))).await?;
    check_renewed(&cert, &request.key_pem, &own.peer).map_err(|why| {
        Exit::new(
            EXIT_UNREACHABLE,
            format!("the coordinator's new certificate cannot be used: {why}; nothing was written"),
        )
    })?;
    let ca_pem = files::first_cert(&cert.ca_pem).map(|_| cert.ca_pem.as_str());
    let base = &own.base;
    let files = Files { base, cert_pem: &cert.certificate_pem, key_pem: &request.key_pem, ca_pem };
    files::install(own.dir, files).map_err(|e| Exit::new(EXIT_INVALID, e.to_string()))?;
    let urls = conn.urls().join(",");
    *conn = Conn::connect(&urls, own.dir).await.map_err(|e| {
        let message = format!("the new certificate is in {}, but connecting with it failed: {e}", own.dir.display());
        Exit::new(e.code, message)
    })?;
    Ok(cert.not_after_ms)
}

/// Checks a renewal's answer before it replaces what works: it carries
/// the key just made, and names the holder the old certificate named.
pub(crate) fn check_renewed(cert: &pb::AgentCertificate, key_pem: &str, peer: &Peer) -> Result<(), String> {
    files::check_pair(&cert.certificate_pem, key_pem)?;
    let der = files::first_cert(&cert.certificate_pem).ok_or("it sent no certificate")?;
    let named = peer_from_der(&der).map_err(|e| e.to_string())?;
    if &named != peer {
        return Err(format!("it names {named:?}, but this certificate is {peer:?}"));
    }
    Ok(())
}

/// Which CA signed a certificate, of those a status lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The CA that signs now.
    Signing,
    /// Another one, or one the coordinators no longer list.
    Other,
    /// Cannot tell: CAs of the same name without key identifiers, or
    /// certificates that do not parse.
    Unknown,
}

/// Which of `cas` signed the certificate `der`: the one whose subject key
/// identifier is the certificate's authority key identifier when both
/// carry one (every certificate Drover makes does), else the one whose
/// subject is the certificate's issuer (two CAs may share a name).
pub(crate) fn origin(der: &[u8], cas: &[pb::CertAuthority]) -> Origin {
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return Origin::Unknown };
    let mut signers = Vec::new();
    for ca in cas {
        let Some(ca_der) = files::first_cert(&ca.cert_pem) else { return Origin::Unknown };
        let Ok((_, ca_cert)) = X509Certificate::from_der(&ca_der) else { return Origin::Unknown };
        let signed = match (authority_key_id(&cert), subject_key_id(&ca_cert)) {
            (Some(aki), Some(ski)) => aki == ski,
            _ => cert.issuer().as_raw() == ca_cert.subject().as_raw(),
        };
        if signed {
            signers.push(ca.state.as_str());
        }
    }
    match signers.as_slice() {
        ["signing"] => Origin::Signing,
        many if many.contains(&"signing") => Origin::Unknown,
        _ => Origin::Other,
    }
}

fn authority_key_id<'d>(cert: &X509Certificate<'d>) -> Option<&'d [u8]> {
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    })
}

fn subject_key_id<'d>(cert: &X509Certificate<'d>) -> Option<&'d [u8]> {
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
        _ => None,
    })
}

/// Whether `refresh` (and `rotate --phase remove`) renews the CLI's own
/// certificate: when another CA signed it; when that cannot be told, only
/// while reissuing (a new certificate from the signing CA is then never
/// wrong, and before it the old CA signs anyway).
pub(crate) fn should_renew(phase: &str, origin: Origin) -> bool {
    match origin {
        Origin::Signing => false,
        Origin::Other => true,
        Origin::Unknown => phase == "reissuing",
    }
}

/// The CA that signs now: the first listed as signing.
fn signing(status: &pb::CaStatusResponse) -> Option<&pb::CertAuthority> {
    status.cas.iter().find(|ca| ca.state == "signing")
}

fn ca_view(ca: &pb::CertAuthority) -> Value {
    json!({
        "pin": ca.pin, "name": ca.name, "state": ca.state, "not_after_ms": ca.not_after_ms,
        "agents": ca.agents, "users": ca.users, "connected": ca.connected, "cert_pem": ca.cert_pem,
    })
}

/// `ca status -o json`: the whole answer.
pub(crate) fn status_view(s: &pb::CaStatusResponse) -> Value {
    json!({
        "phase": s.phase, "keys_in": s.keys_in, "changed_by": s.changed_by, "changed_ms": s.changed_ms,
        "cas": s.cas.iter().map(ca_view).collect::<Vec<_>>(), "trust_pem": s.trust_pem,
    })
}

/// `ca rotate|refresh -o json`: the status, and what changed in the TLS
/// directory.
fn local_view(s: &pb::CaStatusResponse, dir: &Path, own: &Own<'_>, local: &Local) -> Value {
    let mut view = status_view(s);
    view["tls_dir"] = json!(dir.display().to_string());
    view["trust_changed"] = json!(local.trust_changed);
    view["renewed"] = match local.renewed {
        Some(not_after_ms) => {
            json!({ "file": files::cert_file(&own.base), "name": own.name, "not_after_ms": not_after_ms })
        }
        None => Value::Null,
    };
    view
}

/// A pin short enough for a table, `sha256:` and 12 hex digits, which tell
/// two CAs apart; the whole of it in `wide`.
pub(crate) fn short_pin(pin: &str, wide: bool) -> String {
    match pin {
        "" => "-".into(),
        pin if wide => field(pin),
        pin => field(&pin.chars().take("sha256:".len() + 12).collect::<String>()),
    }
}

fn phase_text(phase: &str) -> String {
    match phase {
        "steady" => "steady (one CA, which signs every certificate)".into(),
        "added" => "added (a new CA is trusted beside the old one, which still signs)".into(),
        "reissuing" => "reissuing (the new CA signs; the old one is trusted until it is removed)".into(),
        other => field(other),
    }
}

fn keys_text(keys_in: &str) -> String {
    match keys_in {
        "files" => "in files (ca-key.pem on each coordinator)".into(),
        "store" => "in the store, sealed under the secrets key".into(),
        "" => "-".into(),
        other => field(other),
    }
}

/// `1 agent`, `2 agents`.
fn count(n: u32, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `ca status`: the phase, where the keys are, the last change, the CAs'
/// table and what to do next.
pub(crate) fn status_text(s: &pb::CaStatusResponse, wide: bool, now: i64) -> Vec<String> {
    let changed = match (s.changed_ms, s.changed_by.as_str()) {
        (0, _) => "never".to_string(),
        (ms, "") => format!("{} ({})", absolute(ms), relative(ms, now)),
        (ms, by) => format!("{} ({}) by {}", absolute(ms), relative(ms, now), field(by)),
    };
    let mut lines = vec![
        format!("phase:    {}", phase_text(&s.phase)),
        format!("CA keys:  {}", keys_text(&s.keys_in)),
        format!("changed:  {changed}"),
        String::new(),
    ];
    lines.extend(ca_table(&s.cas, wide));
    if let Some(hint) = hint(s) {
        lines.push(String::new());
        lines.push(format!("next: {hint}"));
    }
    lines
}

/// The CAs, signing first as the coordinator lists them; `wide` has whole
/// pins.
pub(crate) fn ca_table(cas: &[pb::CertAuthority], wide: bool) -> Vec<String> {
    let pin_width = if wide { "sha256:".len() + 64 } else { "sha256:".len() + 12 };
    let row = |cells: [&str; 7]| {
        let [pin, name, state, not_after, agents, users, connected] = cells;
        format!("{pin:<pin_width$} {name:<30} {state:<9} {not_after:<21} {agents:>6} {users:>6} {connected:>9}")
    };
    let mut lines = vec![row(["PIN", "NAME", "STATE", "NOT AFTER", "AGENTS", "USERS", "CONNECTED"])];
    for ca in cas {
        lines.push(row([
            &short_pin(&ca.pin, wide),
            &field(&ca.name),
            &field(&ca.state),
            &absolute(ca.not_after_ms),
            &ca.agents.to_string(),
            &ca.users.to_string(),
            &ca.connected.to_string(),
        ]));
    }
    lines
}

/// What to do next in the rotation, by its phase and, while reissuing, by
/// who still holds a certificate from the retiring CA.
pub(crate) fn hint(s: &pb::CaStatusResponse) -> Option<String> {
    match s.phase.as_str() {
        "steady" => Some("to rotate the CA, `drover ca rotate --phase add` adds a new one beside it".into()),
        "added" => Some(
            "once every CLI trusts the new CA (`drover ca refresh`; agents get it with their next certificate), run \
             `drover ca rotate --phase reissue` to have it sign every new certificate"
                .into(),
        ),
        "reissuing" => {
            let old = s.cas.iter().filter(|ca| ca.state != "signing");
            let (agents, users, connected) =
                old.fold((0, 0, 0), |(a, u, c), ca| (a + ca.agents, u + ca.users, c + ca.connected));
            if agents + users + connected == 0 {
                return Some(
                    "every identity holds a certificate from the new CA: `drover ca rotate --phase remove` stops \
                     trusting the old one"
                        .into(),
                );
            }
            // Connected agents on the old CA include hand-issued ones, which
            // no enrollment counts.
            let here = match connected {
                0 => String::new(),
                n => format!(" ({} connected to this coordinator with one)", count(n, "agent")),
            };
            Some(format!(
                "{} and {} still hold certificates from the retiring CA{here}: agents move to the new CA as they \
                 renew, users with `drover ca refresh`; once none is left, run `drover ca rotate --phase remove` \
                 (`--force` removes it now, and locks them out)",
                count(agents, "agent"),
                count(users, "user"),
            ))
        }
        _ => None,
    }
}

/// A CA as messages name it: its name and short pin.
fn ca_name(ca: Option<&pb::CertAuthority>) -> String {
    match ca {
        Some(ca) => format!("{} ({})", field(&ca.name), short_pin(&ca.pin, false)),
        None => "(none signs)".into(),
    }
}

/// `ca rotate`: what the phase changed on the coordinators.
pub(crate) fn rotated_text(phase: PhaseArg, s: &pb::CaStatusResponse) -> String {
    let signer = ca_name(signing(s));
    match phase {
        PhaseArg::Add => {
            let added = ca_name(s.cas.iter().find(|ca| ca.state != "signing"));
            format!("added CA {added}: the coordinators trust it from now on; {signer} still signs")
        }
        PhaseArg::Reissue => format!(
            "CA {signer} signs every new certificate from now on; the old one stays trusted until `drover ca rotate \
             --phase remove`"
        ),
        PhaseArg::Remove => format!(
            "removed the old CA: only {signer} is trusted from now on, and certificates the old one signed are refused"
        ),
    }
}

/// What happened to ca.pem.
pub(crate) fn trust_text(dir: &Path, changed: bool, s: &pb::CaStatusResponse) -> String {
    let n = count(s.cas.len() as u32, "CA");
    if changed {
        format!("wrote {}: it trusts {n} now", dir.join(files::CA_FILE).display())
    } else {
        format!("{} is up to date ({n})", dir.join(files::CA_FILE).display())
    }
}

/// The CLI's own certificate as messages name it: `admin.pem (admin)`.
fn own_text(own: &Own<'_>) -> String {
    format!("{} ({})", files::cert_file(&own.base), field(&own.name))
}

/// The CLI's own certificate renewed.
pub(crate) fn renewed_text(own: &Own<'_>, not_after_ms: i64, s: &pb::CaStatusResponse, now: i64) -> String {
    format!(
        "renewed this CLI's certificate, {}, from CA {}: valid until {} ({})",
        own_text(own),
        ca_name(signing(s)),
        absolute(not_after_ms),
        relative(not_after_ms, now)
    )
}

/// `ca refresh` when the CLI's own certificate stays.
pub(crate) fn kept_text(own: &Own<'_>, origin: Origin, s: &pb::CaStatusResponse) -> String {
    let own = own_text(own);
    match origin {
        Origin::Signing => {
            format!("this CLI's certificate, {own}, is from CA {}, which signs: kept", ca_name(signing(s)))
        }
        // Which CA signed it cannot be told, but none has replaced the
        // old one yet ([`should_renew`]).
        _ => format!("this CLI's certificate, {own}, is kept: no new CA signs yet"),
    }
}

#[cfg(test)]
mod tests;
