//! The exit codes, the bundle a TLS directory holds, and patience.

use super::*;

#[test]
fn statuses_map_to_exit_codes_and_plain_messages() {
    let limit = "the coordinator already has 2 unfinished runs, its limit (--max-active-runs 2); wait for \
                 some to finish";
    let cases: &[(tonic::Status, i32, &str)] = &[
        // The coordinator's limits: not the user's input, and its message
        // says it all.
        (tonic::Status::resource_exhausted(limit), EXIT_UNREACHABLE, limit),
        (tonic::Status::already_exists("agent a1 is connected"), EXIT_INVALID, "agent a1 is connected"),
        (tonic::Status::invalid_argument("bad.yml:1:1: no jobs"), EXIT_INVALID, "bad.yml:1:1: no jobs"),
        (tonic::Status::not_found("no run 9"), EXIT_NOT_FOUND, "no run 9"),
        (tonic::Status::unavailable("store unavailable"), EXIT_UNREACHABLE, "coordinator unavailable: store"),
        (tonic::Status::permission_denied("not an admin"), EXIT_PERMISSION, "the coordinator refused us"),
        (tonic::Status::internal("boom"), EXIT_UNREACHABLE, "the coordinator failed: boom"),
    ];
    for (status, code, message) in cases {
        let exit = status_exit(status.clone());
        assert_eq!(exit.code, *code, "{status:?}");
        assert!(exit.message.starts_with(message), "{status:?}: {}", exit.message);
    }
}

#[test]
fn a_tls_directory_with_user_pem_is_a_users_else_the_admins() {
    let dir = std::env::temp_dir().join(format!("drover-ctl-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let admin = bundle(&dir);
    assert_eq!((admin.cert.as_str(), admin.dir.as_path()), ("admin", dir.as_path()));
    // Whatever is missing, the advice names both kinds of directory.
    let err = ClientTls::load(admin).unwrap_err().to_string();
    assert!(err.contains("DIR/admin") && err.contains("`drover login`"), "{err}");
    std::fs::write(dir.join("admin.pem"), "").unwrap();
    assert_eq!(bundle(&dir).cert, "admin");
    std::fs::write(dir.join("user.pem"), "").unwrap();
    assert_eq!(bundle(&dir).cert, "user", "a user's certificate wins over an admin's beside it");
    let err = ClientTls::load(bundle(&dir)).unwrap_err().to_string();
    assert!(err.contains("ca.pem, user.pem and user-key.pem"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn durations_are_shown_as_the_flag_takes_them() {
    let cases = [(0, "0s"), (500, "500ms"), (2_000, "2s"), (60_000, "1m"), (90_000, "1m30s"), (3_660_000, "1h1m")];
    for (ms, want) in cases {
        assert_eq!(human(Duration::from_millis(ms)), want);
    }
}

#[test]
fn patience_counts_an_outage_until_the_stream_delivers() {
    let mut p = Patience::new(Duration::from_secs(60), "");
    assert_eq!(p.heard(), None, "no outage, nothing to say");
    p.since = Some(Instant::now());
    p.tries = 2;
    assert_eq!(p.heard(), None, "an outage nobody was told of ends quietly");
    assert_eq!(p.tries, 0);
    p.since = Some(Instant::now());
    p.said = true;
    assert!(p.heard().is_some(), "an announced outage is announced over");
    assert!(!p.said && p.since.is_none());
    let gave_up = p.gave_up(&Exit::new(EXIT_UNREACHABLE, "cannot reach the coordinator at https://x:1"));
    assert_eq!(gave_up.code, EXIT_UNREACHABLE);
    assert!(gave_up.message.starts_with("gave up reconnecting to the coordinator after 1m"), "{}", gave_up.message);
}
