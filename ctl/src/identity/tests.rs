//! The pure parts of `agent-token`, `agent` and `audit`: the JSON shapes,
//! the tables, the messages and the agent's command line.

use super::*;

/// 2026-01-01 00:00:00Z.
const NOW: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn token(id: &str, state: &str, expires_ms: i64, ended_ms: i64, ended_by: &str) -> pb::AgentToken {
    pb::AgentToken {
        id: id.into(),
        name: "builder-1".into(),
        labels: labels(&[("os", "linux"), ("arch", "x86_64")]),
        created_by: "admin:alice".into(),
        created_ms: NOW - 5 * MIN,
        expires_ms,
        state: state.into(),
        ended_ms,
        ended_by: ended_by.into(),
    }
}

#[test]
fn since_is_that_long_before_now_and_never_before_the_epoch() {
    assert_eq!(since_ms(NOW, Duration::from_secs(3600)), NOW - 3_600_000);
    assert_eq!(since_ms(NOW, Duration::ZERO), NOW);
    assert_eq!(since_ms(NOW, Duration::from_secs(u64::MAX)), 0);
}

#[test]
fn times_relative_to_now() {
    assert_eq!(relative(0, NOW), "-");
    assert_eq!(relative(NOW + 10 * MIN, NOW), "in 10m0s");
    assert_eq!(relative(NOW - 192_000, NOW), "3m12s ago");
    assert_eq!(absolute(NOW + 10 * MIN), "2026-01-01 00:10:00Z");
    assert_eq!(absolute(0), "-");
}

#[test]
fn shell_words_are_quoted_only_when_they_must_be() {
    let cases = [
        ("builder-1", "builder-1"),
        ("https://a:7700,https://b:7700", "https://a:7700,https://b:7700"),
        ("sha256:0a1b", "sha256:0a1b"),
        ("two words", "'two words'"),
        ("it's", r"'it'\''s'"),
        ("$(rm -rf /)", "'$(rm -rf /)'"),
        ("", "''"),
    ];
    for (word, want) in cases {
        assert_eq!(shell_word(word), want, "{word:?}");
    }
}

#[test]
fn the_agent_command_line_has_every_url_the_token_and_the_pin() {
    let urls = ["https://a:7700".to_string(), "https://b:7700".to_string()];
    assert_eq!(
        agent_command("builder-1", &urls, "djt_7f3a_s3cr3t", "sha256:ab12"),
        "drover-agent --name builder-1 --coordinator https://a:7700,https://b:7700 --join-token djt_7f3a_s3cr3t \
         --ca-pin sha256:ab12 --tls-dir /var/lib/drover-agent/tls"
    );
    let odd = agent_command("a b", &urls[..1], "t", "p");
    assert!(odd.starts_with("drover-agent --name 'a b' --coordinator https://a:7700 "), "{odd}");
}

fn created() -> pb::CreateAgentTokenResponse {
    pb::CreateAgentTokenResponse {
        token: Some(token("7f3a", "unused", NOW + 10 * MIN, 0, "")),
        secret: "djt_7f3a_s3cr3t".into(),
        ca_pin: "sha256:ab12".into(),
    }
}

#[test]
fn a_created_token_as_json_is_the_token_with_its_secret_and_pin() {
    let view = created_view(&created());
    let mut keys: Vec<&str> = view.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "ca_pin",
            "created_by",
            "created_ms",
            "ended_by",
            "ended_ms",
            "expires_ms",
            "id",
            "labels",
            "name",
            "secret",
            "state"
        ]
    );
    assert_eq!(view["secret"], "djt_7f3a_s3cr3t");
    assert_eq!(view["ca_pin"], "sha256:ab12");
    assert_eq!(view["labels"], json!({"arch": "x86_64", "os": "linux"}));
    assert_eq!(view["expires_ms"], NOW + 10 * MIN);
}

#[test]
fn a_created_token_in_text_says_it_is_shown_once_and_how_to_use_it() {
    let text = created_text(&created(), &["https://ci:7700".to_string()], NOW).join("\n");
    let want = [
        "join token 7f3a for agent builder-1 (labels arch=x86_64,os=linux), expires 2026-01-01 00:10:00Z (in 10m0s):",
        "\n    djt_7f3a_s3cr3t\n",
        "shown only this once, and enrolls one agent, once",
        "\n    drover-agent --name builder-1 --coordinator https://ci:7700 --join-token djt_7f3a_s3cr3t --ca-pin \
         sha256:ab12 --tls-dir /var/lib/drover-agent/tls\n",
        "`drover agent-token revoke 7f3a`",
    ];
    for w in want {
        assert!(text.contains(w), "{w:?} not in:\n{text}");
    }
}

#[test]
fn a_name_from_the_server_cannot_act_on_the_terminal() {
    let mut r = created();
    r.token.as_mut().unwrap().name = "evil\x1b]52;c;aGk=\x07\nname".into();
    let text = created_text(&r, &["https://ci:7700".to_string()], NOW).join("\n");
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(text.contains("--name 'evil^[]52;c;aGk=^G^Jname'"), "{text}");
}

#[test]
fn the_token_table() {
    let tokens = [
        token("7f3a", "unused", NOW + 9 * MIN, 0, ""),
        token("0b2c", "used", NOW - 20 * MIN, NOW - 3 * MIN, "10.0.0.7:51234"),
        pb::AgentToken { labels: HashMap::new(), ..token("9d1e", "expired", NOW - 2 * MIN, 0, "") },
    ];
    let text = token_table(&tokens, false, NOW);
    assert_eq!(
        text,
        [
            "ID                 NAME                 LABELS                       STATE    CREATED BY           \
             EXPIRES/ENDED",
            "7f3a               builder-1            arch=x86_64,os=linux         unused   admin:alice          in 9m0s",
            "0b2c               builder-1            arch=x86_64,os=linux         used     admin:alice          3m0s ago",
            "9d1e               builder-1            -                            expired  admin:alice          2m0s ago",
        ]
    );
    let wide = token_table(&tokens, true, NOW);
    assert!(wide[0].ends_with("EXPIRES/ENDED  CREATED               ENDED BY"), "{}", wide[0]);
    assert!(wide[1].ends_with("in 9m0s        2025-12-31 23:55:00Z  -"), "{}", wide[1]);
    assert!(wide[2].ends_with("3m0s ago       2025-12-31 23:55:00Z  10.0.0.7:51234"), "{}", wide[2]);
}

#[test]
fn the_identity_table_shortens_serials_unless_wide() {
    let serial = "4f9c0e1d2b3a59687766554433221100ffeeddcc";
    let ids = [
        pb::AgentIdentity {
            name: "builder-1".into(),
            labels: labels(&[("os", "linux")]),
            serial: serial.into(),
            not_after_ms: NOW + 11 * 60 * MIN,
            issued_ms: NOW - 60 * MIN,
            enrolled_ms: NOW - 48 * 60 * MIN,
            renewals: 3,
            state: "allowed".into(),
        },
        pb::AgentIdentity { name: "old-1".into(), state: "banned".into(), ..Default::default() },
    ];
    let text = identity_table(&ids, false, NOW);
    assert_eq!(
        text[0],
        "NAME                 STATE    LABELS                       SERIAL       EXPIRES        RENEWALS"
    );
    assert_eq!(
        text[1],
        "builder-1            allowed  os=linux                     4f9c0e1d2b3a in 11h0m              3"
    );
    assert_eq!(
        text[2],
        "old-1                banned   -                            -            -                     0"
    );
    let wide = identity_table(&ids, true, NOW);
    assert!(wide[1].contains(serial), "{}", wide[1]);
    assert!(wide[1].ends_with("2025-12-30 00:00:00Z  2025-12-31 23:00:00Z"), "{}", wide[1]);
    assert!(wide[2].ends_with(&format!("{:<21} -", "-")), "{}", wide[2]);
}

#[test]
fn the_audit_table_marks_warnings_and_shows_what_a_detail_would_do() {
    let entry = |level: &str, outcome: &str, detail: &str| pb::AuditEntry {
        at_ms: NOW,
        actor: "token:7f3a".into(),
        source: "10.0.0.7:51234".into(),
        action: "agent.enroll".into(),
        target: "builder-1".into(),
        outcome: outcome.into(),
        level: level.into(),
        detail: detail.into(),
    };
    let lines =
        audit_table(&[entry("info", "ok", ""), entry("warning", "refused", "the CSR names \x1b[2Jsomeone else")]);
    let columns = |cells: [&str; 8]| {
        let [time, level, actor, source, action, target, outcome, detail] = cells;
        format!("{time:<21} {level:<7} {actor:<24} {source:<21} {action:<20} {target:<20} {outcome:<8} {detail}")
            .trim_end()
            .to_string()
    };
    assert_eq!(lines[0], columns(["TIME", "LEVEL", "ACTOR", "SOURCE", "ACTION", "TARGET", "OUTCOME", "DETAIL"]));
    let time = "2026-01-01 00:00:00Z";
    let ok = columns([time, "info", "token:7f3a", "10.0.0.7:51234", "agent.enroll", "builder-1", "ok", ""]);
    assert_eq!(lines[1], ok);
    assert!(lines[2].contains(" WARNING "), "{}", lines[2]);
    assert!(lines[2].ends_with("refused  the CSR names ^[[2Jsomeone else"), "{}", lines[2]);
    assert_eq!(audit_view(&entry("info", "ok", ""))["action"], "agent.enroll");
}

#[test]
fn access_messages_say_what_follows() {
    let access =
        |state: &str| pb::AgentAccess { name: "a1".into(), state: state.into(), by: "admin:alice".into(), at_ms: NOW };
    assert_eq!(
        access_message(&access("revoked")),
        "agent a1 revoked: its certificates are refused and its sessions closed; enroll it again with a new join \
         token (`drover agent-token create --name a1`)"
    );
    assert!(
        access_message(&access("banned")).ends_with("no new enrollment under this name until `drover agent unban a1`")
    );
    assert!(access_message(&access("allowed")).starts_with("agent a1 allowed: the name may enroll again"));
    assert_eq!(access_message(&access("odd\x1b")), "agent a1 is odd^[");
    assert_eq!(
        access_view(&access("banned")),
        json!({"name": "a1", "state": "banned", "by": "admin:alice", "at_ms": NOW})
    );
}
