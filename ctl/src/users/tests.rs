//! The JSON and the text of `user`, `users` and `whoami`.

use super::*;

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

fn otto() -> pb::User {
    pb::User {
        name: "otto".into(),
        role: "operator".into(),
        created_by: "admin:alice".into(),
        created_ms: NOW - 3 * DAY,
        updated_by: String::new(),
        updated_ms: 0,
        serial: "0a1b2c3d4e5f60718293".into(),
        not_after_ms: NOW + 29 * DAY,
    }
}

fn added() -> pb::AddUserResponse {
    pb::AddUserResponse {
        user: Some(otto()),
        secret: "djt_7f3a9c2b_s3cr3t".into(),
        token_id: "7f3a9c2b".into(),
        ca_pin: format!("sha256:{}", "ab".repeat(32)),
    }
}

#[test]
fn a_user_is_json_with_every_field_and_an_added_one_with_its_token() {
    let fields = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let view = user_view(&otto());
    assert_eq!(
        fields(&view),
        ["created_by", "created_ms", "name", "not_after_ms", "role", "serial", "updated_by", "updated_ms"]
    );
    assert_eq!((view["name"].as_str(), view["not_after_ms"].as_i64()), (Some("otto"), Some(NOW + 29 * DAY)));
    let view = added_view(&added());
    assert_eq!(
        fields(&view),
        [
            "ca_pin",
            "created_by",
            "created_ms",
            "name",
            "not_after_ms",
            "role",
            "secret",
            "serial",
            "token_id",
            "updated_by",
            "updated_ms"
        ]
    );
    assert_eq!((view["secret"].as_str(), view["token_id"].as_str()), (Some("djt_7f3a9c2b_s3cr3t"), Some("7f3a9c2b")));
    let me =
        pb::WhoAmIResponse { kind: "user".into(), name: "otto".into(), role: "operator".into(), may: "read".into() };
    assert_eq!(whoami_view(&me), json!({ "kind": "user", "name": "otto", "role": "operator", "may": "read" }));
}

#[test]
fn user_add_prints_the_token_once_with_the_login_line_that_uses_it() {
    let urls = ["https://ci1:7700".to_string(), "https://ci2:7700".to_string()];
    let pin = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(
        login_line("otto", "djt_7f3a9c2b_s3cr3t", &pin, &urls),
        format!(
            "drover login --name otto --token djt_7f3a9c2b_s3cr3t --ca-pin {pin} --coordinator \
             https://ci1:7700,https://ci2:7700"
        )
    );
    // Anything a shell would read otherwise is quoted.
    assert_eq!(
        login_line("o'k", "djt_1_$x", &pin, &urls[..1]),
        format!("drover login --name 'o'\\''k' --token 'djt_1_$x' --ca-pin {pin} --coordinator https://ci1:7700")
    );
    let text = added_text(&added(), &urls[..1], Duration::from_secs(1800));
    assert_eq!(text[0], "user otto (role operator): join token 7f3a9c2b, valid for 30m:");
    assert_eq!(text[2], "    djt_7f3a9c2b_s3cr3t");
    assert_eq!(text[6], format!("    {}", login_line("otto", "djt_7f3a9c2b_s3cr3t", &pin, &urls[..1])));
    assert!(text[8].ends_with("`drover agent-token revoke 7f3a9c2b` revokes the token."), "{}", text[8]);
    let secrets = text.iter().filter(|l| l.contains("s3cr3t")).count();
    assert_eq!(secrets, 2, "the secret is shown once, and once in the line that uses it");
}

#[test]
fn whoami_says_who_what_role_and_what_it_may() {
    let me = |kind: &str, role: &str, may: &str| pb::WhoAmIResponse {
        kind: kind.into(),
        name: "otto".into(),
        role: role.into(),
        may: may.into(),
    };
    let operator = me("user", "operator", "read; run, rerun, cancel, approve, deploy");
    assert_eq!(whoami_text(&operator), "otto (user, role operator): may read; run, rerun, cancel, approve, deploy");
    assert_eq!(
        login_text(&operator),
        "logged in as otto (role operator): may read; run, rerun, cancel, approve, deploy"
    );
    assert_eq!(whoami_text(&me("admin", "admin", "everything")), "otto (admin, role admin): may everything");
    assert_eq!(whoami_text(&me("agent", "", "")), "otto (agent)");
    assert_eq!(login_text(&me("user", "", "nothing")), "logged in as otto (no role): may nothing");
    // The coordinator's text cannot act on the terminal.
    assert_eq!(whoami_text(&me("user", "viewer\x1b[2J", "read")), "otto (user, role viewer^[[2J): may read");
}

#[test]
fn the_users_table_has_who_added_each_and_when_its_certificate_expires() {
    let never =
        pb::User { name: "vera".into(), role: "viewer".into(), serial: String::new(), not_after_ms: 0, ..otto() };
    let lines = user_table(&[otto(), never.clone()], false, NOW);
    assert_eq!(
        lines,
        [
            "NAME                 ROLE      CREATED BY           CREATED               CERT-EXPIRES",
            "otto                 operator  admin:alice          3d0h ago              in 29d0h",
            "vera                 viewer    admin:alice          3d0h ago              -",
        ]
    );
    let changed = pb::User { updated_by: "admin:bob".into(), updated_ms: NOW - DAY, ..otto() };
    let wide = user_table(&[changed, never], true, NOW);
    assert_eq!(
        wide[0],
        "NAME                 ROLE      CREATED BY           CREATED               CERT-EXPIRES          UPDATED BY           \
         UPDATED               SERIAL"
    );
    assert!(wide[1].ends_with("admin:bob            2027-01-14 08:00:00Z  0a1b2c3d4e5f60718293"), "{}", wide[1]);
    assert!(wide[2].ends_with("-                    -                     -"), "{}", wide[2]);
}

#[test]
fn role_changes_and_removals_say_what_follows() {
    assert_eq!(role_message(&otto()), "user otto now has role operator, from its next call");
    assert_eq!(
        removed_message(&otto()),
        "user otto removed: every call with its certificates is refused from now on; `drover user add otto --role \
         ROLE` lets it log in again"
    );
}
