//! Table tests of the agent edge: what a Hello may claim, how each message
//! converts, which heartbeats go on to the scheduler.

use super::*;

#[test]
fn an_agent_has_the_labels_of_its_certificate_and_no_others() {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let cert = map(&[("os", "linux"), ("role", "web")]);
    // (what, claimed, the labels it gets, or the start of the refusal)
    type Case<'a> = (&'a str, BTreeMap<String, String>, Result<BTreeMap<String, String>, &'a str>);
    let cases: Vec<Case> = vec![
        ("claims exactly its certificate's", cert.clone(), Ok(cert.clone())),
        ("claims fewer: still gets all", map(&[("os", "linux")]), Ok(cert.clone())),
        ("claims none", map(&[]), Ok(cert.clone())),
        (
            "claims another value",
            map(&[("role", "db")]),
            Err(
                "agent \"a1\" claims labels its certificate does not give it: role=db (the certificate gives: os=linux,role=web)",
            ),
        ),
        (
            "claims an extra label",
            map(&[("gpu", "yes")]),
            Err("agent \"a1\" claims labels its certificate does not give it: gpu=yes"),
        ),
    ];
    for (what, claimed, want) in cases {
        let got = owned_labels("a1", &claimed, &cert);
        match (&got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, &want, "{what}"),
            (Err(got), Err(want)) => assert!(got.starts_with(want), "{what}: {got}"),
            _ => panic!("{what}: {got:?}"),
        }
    }
    let err = owned_labels("b", &map(&[("role", "b")]), &map(&[])).unwrap_err();
    assert!(err.contains("(the certificate gives: none)"), "{err}");
    assert!(err.contains("`drover certs issue-agent b --dir DIR --labels role=b`"), "{err}");
}

#[test]
fn heartbeats_are_acknowledged_and_passed_on_when_new_or_due() {
    let start = Instant::now();
    let ms = Duration::from_millis;
    let hb = |seq: u64, running: &[&str], draining: bool, unready: &str| {
        let running = running.iter().map(|s| s.to_string()).collect();
        let h = pb::Heartbeat { running, draining, seq, unready: unready.into() };
        (seq, to_event(1, "a1", In::Heartbeat(h)).expect("a well-formed heartbeat"))
    };
    let mut gate = HeartbeatGate::new(ms(2500));
    // (what, heartbeat, arrival after start, passed on, renewed_seq)
    let cases = [
        ("the first", hb(1, &["1/a/1"], false, ""), 0, true, 1),
        ("nothing new, not due", hb(2, &["1/a/1"], false, ""), 1000, false, 1),
        ("another attempt", hb(3, &["1/a/1", "1/b/1"], false, ""), 1500, true, 3),
        ("nothing new", hb(4, &["1/a/1", "1/b/1"], false, ""), 2500, false, 3),
        ("due: a quarter TTL since the last", hb(5, &["1/a/1", "1/b/1"], false, ""), 4000, true, 5),
        ("draining", hb(6, &["1/a/1", "1/b/1"], true, ""), 4100, true, 6),
        ("not ready", hb(7, &["1/a/1", "1/b/1"], true, "disk"), 4200, true, 7),
        ("nothing new", hb(8, &["1/a/1", "1/b/1"], true, "disk"), 4300, false, 7),
    ];
    for (what, (seq, event), at, forward, renewed) in cases {
        assert_eq!(gate.take(seq, &event, start + ms(at)), (forward, renewed), "{what}");
    }
}

#[test]
fn every_attempt_id_is_parsed_at_the_edge_and_a_malformed_one_refuses_its_message() {
    let id = AttemptId { run: 3, job: "test".into(), attempt: 1 };
    let heartbeat = |running: &[&str]| {
        let running = running.iter().map(|s| s.to_string()).collect();
        In::Heartbeat(pb::Heartbeat { running, draining: false, seq: 1, unready: String::new() })
    };
    let accepted = |s: &str| In::Accepted(pb::Accepted { attempt_id: s.into() });
    let log = |s: &str| In::Log(pb::LogChunk { attempt_id: s.into(), offset: 0, data: b"x".to_vec() });
    let result = |s: &str| {
        let outcome = pb::Outcome::Succeeded as i32;
        In::Result(pb::AttemptResult {
            attempt_id: s.into(),
            outcome,
            exit_code: 0,
            message: String::new(),
            artifact: None,
            cache: None,
        })
    };
    match to_event(1, "a1", heartbeat(&["3/test/1"])) {
        Ok(Event::Heartbeat { running, .. }) => assert_eq!(running, vec![id.clone()]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(to_event(1, "a1", accepted("3/test/1")), Ok(Event::Accepted { id: got, .. }) if got == id));
    assert!(matches!(to_event(1, "a1", log("3/test/1")), Ok(Event::Log { id: got, .. }) if got == id));
    assert!(matches!(to_event(1, "a1", result("3/test/1")), Ok(Event::Result { id: got, .. }) if got == id));
    // (what, message)
    let bad = [
        ("a heartbeat listing one", heartbeat(&["3/test/1", "3/test"])),
        ("an acceptance", accepted("three/test/1")),
        ("a log chunk", log("3/test/1/2")),
        ("a result", result("")),
        ("a result with an overlong id", result(&"9".repeat(MAX_ATTEMPT_ID + 1))),
    ];
    for (what, msg) in bad {
        match to_event(1, "a1", msg) {
            Err(ApiError::Invalid(why)) => assert!(why.contains("attempt id"), "{what}: {why}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn result_messages_are_bounded_on_a_character_boundary() {
    assert_eq!(bounded("short", 10), "short");
    let cut = bounded(&"é".repeat(1000), MAX_RESULT_MESSAGE);
    assert!(cut.len() <= MAX_RESULT_MESSAGE && cut.ends_with('…'), "{}", cut.len());
}

#[test]
fn hellos_are_checked_at_the_edge() {
    let labels = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    };
    let ok = labels(&[("os", "linux".into())]);
    assert_eq!(check_hello(&ok, 4, &[], "abc", ""), Ok(vec![]));
    let held = vec!["7/build/2".to_string()];
    let want = AttemptId { run: 7, job: "build".into(), attempt: 2 };
    assert_eq!(check_hello(&ok, 4, &held, "abc", ""), Ok(vec![want]));
    let long = "x".repeat(MAX_UNREADY + 1);
    assert!(check_hello(&ok, 4, &[], "abc", &long).unwrap_err().starts_with("its reason for not being ready"));
    let many: BTreeMap<String, String> = (0..=MAX_LABELS).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let long_id = "x".repeat(MAX_ATTEMPT_ID + 1);
    let too_many_held: Vec<String> = (0..=MAX_HELD).map(|i| format!("1/a/{i}")).collect();
    // (what, labels, slots, running, instance, the start of the refusal)
    type Case<'a> = (&'a str, BTreeMap<String, String>, u32, Vec<String>, String, &'a str);
    let bad: Vec<Case> = vec![
        ("no slots", ok.clone(), 0, vec![], String::new(), "an agent offers 1 to 1024 slots, not 0"),
        ("too many slots", ok.clone(), 5000, vec![], String::new(), "an agent offers 1 to 1024 slots, not 5000"),
        ("too many labels", many, 1, vec![], String::new(), "65 labels are more than the limit of 64"),
        ("huge value", labels(&[("k", "v".repeat(2_000_000))]), 1, vec![], String::new(), "label \"k\" must have"),
        ("empty value", labels(&[("k", String::new())]), 1, vec![], String::new(), "label \"k\" must have"),
        ("long key", labels(&[(&"k".repeat(64), "v".into())]), 1, vec![], String::new(), "label \"kkkk"),
        ("long attempt id", ok.clone(), 1, vec![long_id], String::new(), "attempt id \"xxx"),
        ("malformed attempt id", ok.clone(), 1, vec!["1/a".into()], String::new(), "malformed attempt id \"1/a\""),
        ("too many held", ok.clone(), 1, too_many_held, String::new(), "it lists 4097 attempts"),
        ("long instance", ok.clone(), 1, vec![], "i".repeat(65), "the instance id is longer than 64 bytes"),
    ];
    for (what, labels, slots, running, instance, want) in bad {
        let err = check_hello(&labels, slots, &running, &instance, "").unwrap_err();
        assert!(err.starts_with(want), "{what}: {err}");
    }
}

#[tokio::test]
async fn untrusted_pull_request_runs_get_no_secrets() {
    let dir = crate::controller::tests::TestDir::new("withheld-secrets");
    let (store, _) = crate::controller::tests::store_and_segments(&dir).await;
    let key = dir.path().join("secrets.key");
    drover_pki::secrets_key::generate(&key).unwrap();
    let vault = Vault::open(store, &key);
    vault.set("TOKEN", b"value", "alice", 1).await.unwrap();
    let names = vec!["TOKEN".to_string()];
    let (values, error) = resolve_secrets(&vault, &names, Some("web")).await;
    assert!(values.is_empty());
    assert!(
        error.starts_with("secrets are withheld from pull-request runs of repository web, which is not trusted"),
        "{error}"
    );
    assert!(error.contains("--trusted"), "{error}");
    let (values, error) = resolve_secrets(&vault, &names, None).await;
    assert_eq!((values["TOKEN"].as_slice(), error.as_str()), (&b"value"[..], ""));
    // A job that declares no secrets is not refused.
    let (_, error) = resolve_secrets(&vault, &[], Some("web")).await;
    assert!(error.is_empty());
}
