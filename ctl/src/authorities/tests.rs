//! The pure parts of `ca status|rotate|refresh`: the flags, the JSON, the
//! table, the hint and the messages, and the decision to renew the CLI's
//! own certificate, on certificates made by two real CAs.

use std::time::Duration;

use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};

/// 2026-01-01 00:00:00Z.
const NOW: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;
const OLD_PIN: &str = "sha256:3f9a1c2b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
const NEW_NAME: &str = "Drover CA 2026-01-01T00:00:00Z";
const NEW_PIN: &str = "sha256:0b2c4d6e8f10121416181a1c1e20222426282a2c2e30323436383a3c3e404244";

fn ca(pin: &str, name: &str, state: &str, agents: u32, users: u32, connected: u32) -> pb::CertAuthority {
    pb::CertAuthority {
        pin: pin.into(),
        name: name.into(),
        state: state.into(),
        not_after_ms: NOW + 3650 * 24 * 60 * MIN,
        agents,
        users,
        connected,
        cert_pem: "-----BEGIN CERTIFICATE-----\n…".into(),
    }
}

fn status(phase: &str, cas: Vec<pb::CertAuthority>) -> pb::CaStatusResponse {
    pb::CaStatusResponse {
        phase: phase.into(),
        cas,
        trust_pem: "PEMS".into(),
        changed_by: "admin:alice".into(),
        changed_ms: NOW - 3 * MIN,
        keys_in: "store".into(),
    }
}

/// Reissuing, with `left` agents and users still on the old CA.
fn reissuing(agents: u32, users: u32, connected: u32) -> pb::CaStatusResponse {
    status(
        "reissuing",
        vec![ca(NEW_PIN, NEW_NAME, "signing", 9, 2, 7), ca(OLD_PIN, "Drover CA", "retiring", agents, users, connected)],
    )
}

#[test]
fn the_flags_parse_and_force_goes_with_remove_only() {
    let parse = |args: &[&str]| Cli::try_parse_from(["drover", "ca"].iter().chain(args));
    let Ok(Cli { command: Command::Ca { command: CaCommand::Rotate { phase, force, .. } }, .. }) =
        parse(&["rotate", "--phase", "reissue"])
    else {
        panic!("rotate --phase reissue parses");
    };
    assert_eq!((phase, force), (PhaseArg::Reissue, false));
    assert!(matches!(
        parse(&["status", "-o", "json"]),
        Ok(Cli { command: Command::Ca { command: CaCommand::Status { output: Format::Json, .. } }, .. })
    ));
    assert!(matches!(
        parse(&["refresh"]),
        Ok(Cli { command: Command::Ca { command: CaCommand::Refresh { ca_pin: None, .. } }, .. })
    ));
    let Ok(Cli { command: Command::Ca { command: CaCommand::Refresh { ca_pin: Some(pin), .. } }, .. }) =
        parse(&["refresh", "--ca-pin", NEW_PIN])
    else {
        panic!("refresh --ca-pin parses");
    };
    assert_eq!(pin.to_string(), NEW_PIN);
    let err = parse(&["refresh", "--ca-pin", "3f9a"]).err().unwrap().to_string();
    assert!(err.contains("is not a CA pin: it must start with sha256:"), "{err}");
    let err = parse(&["rotate", "--phase", "swap"]).err().unwrap().to_string();
    assert!(err.contains("[possible values: add, reissue, remove]"), "{err}");
    assert!(parse(&["rotate"]).is_err(), "--phase is required");

    assert!(check_rotate(PhaseArg::Remove, true).is_ok());
    assert!(check_rotate(PhaseArg::Add, false).is_ok());
    let e = check_rotate(PhaseArg::Add, true).unwrap_err();
    assert_eq!(e.code, EXIT_INVALID);
    assert!(e.message.starts_with("--force goes with --phase remove only"), "{}", e.message);
    assert!(e.message.ends_with("--phase add takes nothing away"), "{}", e.message);
}

#[test]
fn pins_are_shortened_unless_wide() {
    assert_eq!(short_pin(OLD_PIN, false), "sha256:3f9a1c2b7d4e");
    assert_eq!(short_pin(OLD_PIN, true), OLD_PIN);
    assert_eq!(short_pin("", false), "-");
    assert_eq!(short_pin("sha256:\x1b[2J", false), "sha256:^[[2J");
}

#[test]
fn the_ca_table() {
    let s = reissuing(3, 1, 2);
    assert_eq!(
        ca_table(&s.cas, false),
        [
            "PIN                 NAME                           STATE     NOT AFTER             AGENTS  USERS \
             CONNECTED",
            "sha256:0b2c4d6e8f10 Drover CA 2026-01-01T00:00:00Z signing   \
             2035-12-30 00:00:00Z       9      2         7",
            "sha256:3f9a1c2b7d4e Drover CA                      retiring  \
             2035-12-30 00:00:00Z       3      1         2",
        ]
    );
    let wide = ca_table(&s.cas, true);
    assert!(wide[0].starts_with(&format!("{:<71} NAME", "PIN")), "{}", wide[0]);
    assert!(wide[2].starts_with(&format!("{OLD_PIN} Drover CA ")), "{}", wide[2]);
    assert!(!wide.join("\n").contains("BEGIN CERTIFICATE"), "no certificate in a table");
}

#[test]
fn the_status_in_text_has_the_phase_the_keys_the_last_change_the_table_and_the_next_step() {
    let text = status_text(&reissuing(0, 0, 0), false, NOW);
    assert_eq!(text[0], "phase:    reissuing (the new CA signs; the old one is trusted until it is removed)");
    assert_eq!(text[1], "CA keys:  in the store, sealed under the secrets key");
    assert_eq!(text[2], "changed:  2025-12-31 23:57:00Z (3m0s ago) by admin:alice");
    assert_eq!(text[3], "");
    assert!(text[4].starts_with("PIN "), "{}", text[4]);
    assert_eq!(text[7], "");
    assert_eq!(
        text[8],
        "next: every identity holds a certificate from the new CA: `drover ca rotate --phase remove` stops trusting \
         the old one"
    );
    let fresh = pb::CaStatusResponse {
        changed_ms: 0,
        changed_by: String::new(),
        keys_in: "files".into(),
        ..status("steady", vec![ca(OLD_PIN, "Drover CA", "signing", 1, 0, 1)])
    };
    let text = status_text(&fresh, false, NOW);
    assert_eq!(text[0], "phase:    steady (one CA, which signs every certificate)");
    assert_eq!(text[1], "CA keys:  in files (ca-key.pem on each coordinator)");
    assert_eq!(text[2], "changed:  never");
    assert_eq!(text.last().unwrap(), "next: to rotate the CA, `drover ca rotate --phase add` adds a new one beside it");
    let odd = status_text(&status("\x1b[2Jodd", Vec::new()), false, NOW);
    assert_eq!(odd[0], "phase:    ^[[2Jodd");
    assert!(odd.last().unwrap().starts_with("PIN "), "no hint for a phase this CLI does not know");
}

#[test]
fn the_hint_says_what_comes_next_in_each_phase() {
    let added =
        status("added", vec![ca(OLD_PIN, "Drover CA", "signing", 9, 2, 7), ca(NEW_PIN, "New", "trusted", 0, 0, 0)]);
    let hint_added = hint(&added).unwrap();
    assert!(hint_added.contains("`drover ca refresh`"), "{hint_added}");
    assert!(hint_added.contains("run `drover ca rotate --phase reissue`"), "{hint_added}");
    assert_eq!(
        hint(&reissuing(3, 1, 2)).unwrap(),
        "3 agents and 1 user still hold certificates from the retiring CA (2 agents connected to this coordinator \
         with one): agents move to the new CA as they renew, users with `drover ca refresh`; once none is left, run \
         `drover ca rotate --phase remove` (`--force` removes it now, and locks them out)"
    );
    // A hand-issued agent, connected on the old CA, is still someone left.
    let hint_connected = hint(&reissuing(0, 0, 1)).unwrap();
    assert!(
        hint_connected.starts_with(
            "0 agents and 0 users still hold certificates from the retiring CA (1 agent connected to this coordinator \
             with one): "
        ),
        "{hint_connected}"
    );
    let hint_one = hint(&reissuing(0, 1, 0)).unwrap();
    assert!(hint_one.starts_with("0 agents and 1 user still hold certificates from the retiring CA: "), "{hint_one}");
    assert!(hint(&reissuing(0, 0, 0)).unwrap().contains("`drover ca rotate --phase remove`"));
    assert_eq!(hint(&status("", Vec::new())), None);
}

#[test]
fn the_status_as_json_is_the_whole_answer_with_each_certificate() {
    let s = reissuing(3, 1, 2);
    let view = status_view(&s);
    let mut keys: Vec<&str> = view.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["cas", "changed_by", "changed_ms", "keys_in", "phase", "trust_pem"]);
    assert_eq!(view["trust_pem"], "PEMS");
    assert_eq!(
        view["cas"][1],
        json!({
            "pin": OLD_PIN, "name": "Drover CA", "state": "retiring", "not_after_ms": NOW + 3650 * 24 * 60 * MIN,
            "agents": 3, "users": 1, "connected": 2, "cert_pem": "-----BEGIN CERTIFICATE-----\n…",
        })
    );
}

/// A CA made by `drover certs init` in `dir`: its certificate as a status
/// lists it (in `state`), and its admin's certificate, DER.
fn made_ca(dir: &Path, state: &str) -> (pb::CertAuthority, Vec<u8>) {
    drover_pki::ca::init(dir, &[]).unwrap();
    let cert_pem = std::fs::read_to_string(drover_pki::ca::ca_dir(dir).join("ca.pem")).unwrap();
    let admin = std::fs::read_to_string(drover_pki::ca::admin_dir(dir).join("admin.pem")).unwrap();
    let ca = pb::CertAuthority { cert_pem, state: state.into(), ..ca("", "Drover CA", state, 0, 0, 0) };
    (ca, files::first_cert(&admin).unwrap().to_vec())
}

#[test]
fn a_certificate_is_told_to_come_from_the_signing_ca_by_its_key_identifier_though_both_cas_share_a_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, old_admin) = made_ca(&tmp.path().join("old"), "retiring");
    let (new, new_admin) = made_ca(&tmp.path().join("new"), "signing");
    let cas = [new.clone(), old.clone()];
    assert_eq!(origin(&new_admin, &cas), Origin::Signing);
    assert_eq!(origin(&old_admin, &cas), Origin::Other);
    // Before the reissue the old CA signs, and the new one is only trusted.
    let added =
        [pb::CertAuthority { state: "signing".into(), ..old }, pb::CertAuthority { state: "trusted".into(), ..new }];
    assert_eq!(origin(&old_admin, &added), Origin::Signing);
    // A CA the coordinators no longer list.
    assert_eq!(origin(&old_admin, &added[1..]), Origin::Other);
    assert_eq!(origin(b"junk", &cas), Origin::Unknown);
}

/// A CA made with rcgen under `name`, and a client certificate it signs
/// without an authority key identifier, DER.
fn bare_ca(name: &str, state: &str) -> (pb::CertAuthority, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = params.self_signed(&key).unwrap();
    let issuer = Issuer::new(params, key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "admin");
    let cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (pb::CertAuthority { cert_pem: ca_cert.pem(), ..ca("", name, state, 0, 0, 0) }, cert.der().to_vec())
}

#[test]
fn without_key_identifiers_the_issuer_names_the_ca_unless_two_share_the_name() {
    let (old, old_leaf) = bare_ca("Drover CA", "retiring");
    let (new, new_leaf) = bare_ca(NEW_NAME, "signing");
    assert_eq!(origin(&new_leaf, &[new.clone(), old.clone()]), Origin::Signing);
    assert_eq!(origin(&old_leaf, &[new, old.clone()]), Origin::Other);
    let (twin, _) = bare_ca("Drover CA", "signing");
    assert_eq!(origin(&old_leaf, &[twin, old]), Origin::Unknown);
}

#[test]
fn the_own_certificate_is_renewed_when_another_ca_signed_it_or_while_reissuing_when_unsure() {
    let cases = [
        ("steady", Origin::Signing, false),
        ("added", Origin::Signing, false),
        ("reissuing", Origin::Signing, false),
        ("added", Origin::Other, true),
        ("reissuing", Origin::Other, true),
        ("steady", Origin::Unknown, false),
        ("added", Origin::Unknown, false),
        ("reissuing", Origin::Unknown, true),
    ];
    for (phase, origin, want) in cases {
        assert_eq!(should_renew(phase, origin), want, "{phase} {origin:?}");
    }
}

#[test]
fn a_renewed_certificate_must_carry_the_new_key_and_the_same_holder() {
    let tmp = tempfile::tempdir().unwrap();
    drover_pki::ca::init(tmp.path(), &[]).unwrap();
    let ca_dir = drover_pki::ca::ca_dir(tmp.path());
    let authority = drover_pki::enroll::Authority::load(&ca_dir.join("ca.pem"), &ca_dir.join("ca-key.pem")).unwrap();
    let request = Request::new("otto").unwrap();
    let signed = authority.sign_user(&request.csr_der, "otto", NOW, Duration::from_secs(3600)).unwrap();
    let cert = pb::AgentCertificate {
        name: "otto".into(),
        certificate_pem: signed.pem,
        ca_pem: authority.ca_pem().into(),
        not_after_ms: signed.not_after_ms,
        renew_at_ms: 0,
    };
    let otto = Peer::User("otto".into());
    assert_eq!(check_renewed(&cert, &request.key_pem, &otto), Ok(()));
    let other_key = Request::new("otto").unwrap().key_pem;
    let err = check_renewed(&cert, &other_key, &otto).unwrap_err();
    assert!(err.contains("does not carry the new key"), "{err}");
    let err = check_renewed(&cert, &request.key_pem, &Peer::Admin("otto".into())).unwrap_err();
    assert_eq!(err, "it names User(\"otto\"), but this certificate is Admin(\"otto\")");
}

#[test]
fn an_answer_without_a_certificate_leaves_ca_pem_alone() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ca.pem"), "OLD").unwrap();
    assert!(!write_trust(tmp.path(), &status("steady", Vec::new())).unwrap());
    assert_eq!(std::fs::read_to_string(tmp.path().join("ca.pem")).unwrap(), "OLD");
}

fn own(dir: &Path) -> Own<'_> {
    Own { dir, base: "admin".into(), peer: Peer::Admin("admin".into()), name: "admin".into(), der: Vec::new() }
}

#[test]
fn the_messages_say_what_changed() {
    let s = reissuing(3, 1, 2);
    assert_eq!(
        rotated_text(PhaseArg::Reissue, &s),
        "CA Drover CA 2026-01-01T00:00:00Z (sha256:0b2c4d6e8f10) signs every new certificate from now on; the old \
         one stays trusted until `drover ca rotate --phase remove`"
    );
    let added =
        status("added", vec![ca(OLD_PIN, "Drover CA", "signing", 9, 2, 7), ca(NEW_PIN, "New", "trusted", 0, 0, 0)]);
    assert_eq!(
        rotated_text(PhaseArg::Add, &added),
        "added CA New (sha256:0b2c4d6e8f10): the coordinators trust it from now on; Drover CA (sha256:3f9a1c2b7d4e) \
         still signs"
    );
    let steady = status("steady", vec![ca(NEW_PIN, NEW_NAME, "signing", 9, 2, 7)]);
    assert_eq!(
        rotated_text(PhaseArg::Remove, &steady),
        "removed the old CA: only Drover CA 2026-01-01T00:00:00Z (sha256:0b2c4d6e8f10) is trusted from now on, and \
         certificates the old one signed are refused"
    );
    let dir = Path::new("/home/a/drover/admin");
    assert_eq!(trust_text(dir, true, &s), "wrote /home/a/drover/admin/ca.pem: it trusts 2 CAs now");
    assert_eq!(trust_text(dir, false, &steady), "/home/a/drover/admin/ca.pem is up to date (1 CA)");
    let own = own(dir);
    assert_eq!(
        renewed_text(&own, NOW + 30 * 24 * 60 * MIN, &s, NOW),
        "renewed this CLI's certificate, admin.pem (admin), from CA Drover CA 2026-01-01T00:00:00Z \
         (sha256:0b2c4d6e8f10): valid until 2026-01-31 00:00:00Z (in 30d0h)"
    );
    assert_eq!(
        kept_text(&own, Origin::Signing, &steady),
        "this CLI's certificate, admin.pem (admin), is from CA Drover CA 2026-01-01T00:00:00Z \
         (sha256:0b2c4d6e8f10), which signs: kept"
    );
    assert!(kept_text(&own, Origin::Unknown, &added).ends_with("is kept: no new CA signs yet"));
}

#[test]
fn rotate_and_refresh_as_json_add_what_changed_in_the_tls_directory() {
    let dir = Path::new("/tls");
    let own = own(dir);
    let s = reissuing(0, 0, 0);
    let view = local_view(&s, dir, &own, &Local { trust_changed: true, renewed: Some(NOW) });
    assert_eq!(view["tls_dir"], "/tls");
    assert_eq!(view["trust_changed"], true);
    assert_eq!(view["renewed"], json!({"file": "admin.pem", "name": "admin", "not_after_ms": NOW}));
    assert_eq!(view["phase"], "reissuing");
    let view = local_view(&s, dir, &own, &Local::default());
    assert_eq!(view["renewed"], Value::Null);
}

#[tokio::test]
async fn a_pinned_refresh_needs_the_own_files_and_a_coordinator_that_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let pin = CaPin::parse(NEW_PIN).unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = pinned_status("https://127.0.0.1:9", &own(&empty), pin).await.unwrap_err();
    assert_eq!(e.code, EXIT_INVALID);
    let files = format!("admin.pem and admin-key.pem in {}", empty.display());
    assert!(e.message.starts_with(&format!("cannot read {files}: ")), "{}", e.message);
    // The admin's own files, and a port nobody listens on.
    drover_pki::ca::init(tmp.path(), &[]).unwrap();
    let admin = drover_pki::ca::admin_dir(tmp.path());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let e = pinned_status(&format!(" {url}, "), &own(&admin), pin).await.unwrap_err();
    assert_eq!(e.code, EXIT_UNREACHABLE, "{}", e.message);
    assert!(e.message.starts_with(&format!("cannot connect to {url}")), "{}", e.message);
    let e = pinned_status("http://127.0.0.1:9", &own(&admin), pin).await.unwrap_err();
    assert_eq!(e.code, EXIT_INVALID, "{}", e.message);
    // Another key beside the certificate.
    let other = tmp.path().join("other");
    drover_pki::ca::init(&other, &[]).unwrap();
    std::fs::copy(drover_pki::ca::admin_dir(&other).join("admin-key.pem"), admin.join("admin-key.pem")).unwrap();
    let e = pinned_status(&url, &own(&admin), pin).await.unwrap_err();
    assert_eq!(e.code, EXIT_INVALID);
    assert!(
        e.message.starts_with("the client certificate cannot be used: the key is not the certificate's")
            && e.message.ends_with(&format!("(admin.pem and admin-key.pem in {})", admin.display())),
        "{}",
        e.message
    );
}
