//! Identity (issue 18): agents enrolling with single-use join tokens and a
//! key of their own, their short-lived certificates renewed over the
//! connection, revocation that closes live sessions, bans, and the audit
//! log that records all of it.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Fleet, text, wait_for};

fn json(fleet: &Fleet, args: &[&str]) -> Value {
    let out = fleet.drover(args);
    assert!(out.status.success(), "drover {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("drover {args:?}: {e}: {}", text(&out.stdout)))
}

/// `drover agent-token create ARGS -o json`: the secret and the CA pin.
fn token(fleet: &Fleet, args: &[&str]) -> (String, String, String) {
    let mut all = vec!["agent-token", "create"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let v = json(fleet, &all);
    let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_string();
    (s("id"), s("secret"), s("ca_pin"))
}

/// Waits for agent process `i` to exit; returns its log.
fn exits(fleet: &mut Fleet, i: usize) -> String {
    let agent = &mut fleet.agents[i];
    wait_for("the agent to exit", Duration::from_secs(30), || agent.child.try_wait().unwrap().map(|_| ()));
    std::fs::read_to_string(&agent.log).unwrap()
}

fn audit(fleet: &Fleet) -> Vec<Value> {
    json(fleet, &["audit", "-o", "json"]).as_array().unwrap().clone()
}

fn has(entries: &[Value], action: &str, outcome: &str, target: &str) -> bool {
    entries.iter().any(|e| e["action"] == action && e["outcome"] == outcome && e["target"] == target)
}

#[test]
fn an_agent_enrolls_with_a_single_use_token_and_its_own_key_and_renews_its_certificate() {
    let mut fleet = Fleet::start_with("enroll", &["--agent-cert-ttl", "20s"]);
    // The shortest token there is, used only at the end, after it expired.
    let (_, late, _) = token(&fleet, &["--name", "late", "--ttl", "10s"]);
    let created = Instant::now();
    let (id, secret, pin) = token(&fleet, &["--name", "e1", "--labels", "os=linux"]);
    assert!(secret.starts_with(&format!("djt_{id}_")), "{secret}");
    assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
    let listed = fleet.drover(&["agent-token", "ls", "-o", "json"]);
    let listed = text(&listed.stdout);
    assert!(listed.contains(&id) && listed.contains("\"unused\""), "{listed}");
    assert!(!listed.contains(&secret[12..]), "a listing shows the secret: {listed}");

    let dir = fleet.dir.path().join("enrolled-e1");
    let started = Instant::now();
    let agent = fleet.start_enrolling_agent("e1", &dir, &secret, &pin);
    fleet.wait_agents(1);
    println!("enrollment, from start to a connected agent: {:?}", started.elapsed());
    let key = dir.join("agent-e1-key.pem");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(dir.join("agent-e1.pem").exists() && dir.join("ca.pem").exists());
    let tokens = json(&fleet, &["agent-token", "ls", "-o", "json"]);
    let used = tokens.as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_eq!(used["state"], "used", "{used}");

    // The token's labels are the agent's: a job that asks for them runs on it,
    // and runs on across the renewal at half the certificate's 20 s.
    let run = fleet.submit(
        "across-renewal",
        "name: r\njobs:\n  long:\n    runs-on: {os: linux}\n    steps:\n      - run: sleep 14 && echo survived\n",
    );
    let renewed = wait_for("the certificate to be renewed", Duration::from_secs(40), || {
        let ids = json(&fleet, &["agent", "identities", "-o", "json"]);
        let e1 = ids.as_array().unwrap().iter().find(|i| i["name"] == "e1").cloned()?;
        (e1["renewals"].as_u64() >= Some(1)).then_some(e1)
    });
    assert_eq!(renewed["state"], "allowed");
    let done = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(done["state"], "succeeded", "{done}");
    let agent_log = std::fs::read_to_string(&fleet.agents[agent].log).unwrap();
    assert!(!agent_log.contains(&secret[12..]), "the agent logged its token");

    // A used token, a token for another name, an expired token: refused,
    // each saying why, and the agent exits.
    let again = fleet.start_enrolling_agent("e1", &fleet.dir.path().join("again"), &secret, &pin);
    let log = exits(&mut fleet, again);
    assert!(log.contains(&format!("join token {id} was already used")), "{log}");
    let (_, other, _) = token(&fleet, &["--name", "e2"]);
    let wrong = fleet.start_enrolling_agent("e3", &fleet.dir.path().join("wrong"), &other, &pin);
    let log = exits(&mut fleet, wrong);
    assert!(
        log.contains("asks for the name \\\"e3\\\", but the join token is for agent \\\"e2\\\"")
            || log.contains("asks for the name \"e3\", but the join token is for agent \"e2\""),
        "{log}"
    );
    while created.elapsed() < Duration::from_secs(11) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let expired = fleet.start_enrolling_agent("late", &fleet.dir.path().join("late"), &late, &pin);
    let log = exits(&mut fleet, expired);
    assert!(log.contains("expired") && log.contains("drover agent-token create --name late"), "{log}");
    // A pin that is not the CA's: refused before the token is sent.
    let bad_pin = format!("sha256:{}", "0".repeat(64));
    let (_, fresh, _) = token(&fleet, &["--name", "e4"]);
    let pinned = fleet.start_enrolling_agent("e4", &fleet.dir.path().join("pinned"), &fresh, &bad_pin);
    let log = exits(&mut fleet, pinned);
    assert!(log.contains("--ca-pin"), "{log}");
    let tokens = text(&fleet.drover(&["agent-token", "ls"]).stdout);
    assert!(tokens.contains("unused"), "the token stayed unused behind a wrong pin: {tokens}");

    let entries = audit(&fleet);
    assert!(has(&entries, "agent-token.create", "ok", "e1"), "{entries:?}");
    assert!(has(&entries, "agent.enroll", "ok", "e1"), "{entries:?}");
    assert!(has(&entries, "agent.renew", "ok", "e1"), "{entries:?}");
    assert!(
        entries.iter().any(|e| e["action"] == "agent.enroll" && e["outcome"] == "refused" && e["level"] == "warning"),
        "{entries:?}"
    );
    let everything = format!("{entries:?}{}", fleet.logs());
    for s in [&secret, &other, &late, &fresh] {
        assert!(!everything.contains(&s[12..]), "a token's secret is in the audit log or the coordinator's log");
    }
}

#[test]
fn a_revoked_agent_loses_its_session_at_once_and_a_banned_name_cannot_enroll() {
    let mut fleet = Fleet::start("revoke");
    let r1 = fleet.agent("r1", "", 1);
    fleet.wait_agents(1);
    let run = fleet.submit("revoked", "name: r\njobs:\n  long:\n    steps:\n      - run: sleep 60\n");
    wait_for("the job to run", Duration::from_secs(20), || {
        (fleet.job(&run, "long")["state"] == "running").then_some(())
    });

    let out = fleet.drover(&["agent", "revoke", "r1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let revoked = Instant::now();
    wait_for("r1's session to close", Duration::from_secs(5), || {
        let agents = json(&fleet, &["agents", "-o", "json"]);
        let r1 = agents.as_array()?.iter().find(|a| a["name"] == "r1")?.clone();
        (r1["connected"] == false).then_some(())
    });
    let took = revoked.elapsed();
    println!("from `drover agent revoke` returning to the session closed: {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let job = fleet.job(&run, "long");
    let message = job.to_string();
    assert!(message.contains("agent r1 was revoked"), "its attempt is lost: {message}");
    // The agent is told why and stops (a refusal for what it is is final);
    // started again, as a supervisor would, it is refused, and exits again.
    let log = exits(&mut fleet, r1);
    assert!(log.contains("was revoked (by admin:admin)"), "{log}");
    let again = fleet.agent("r1", "", 1);
    let log = exits(&mut fleet, again);
    assert!(log.contains("was revoked (by admin:admin)"), "{log}");

    // A name banned: no token for it, and a token made before the ban is
    // refused too; unbanned, it enrolls.
    let (_, secret, pin) = token(&fleet, &["--name", "b1"]);
    assert!(fleet.drover(&["agent", "ban", "b1"]).status.success());
    let out = fleet.drover(&["agent-token", "create", "--name", "b1"]);
    assert!(!out.status.success() && text(&out.stderr).contains("is banned"), "{}", text(&out.stderr));
    let dir = fleet.dir.path().join("b1");
    let banned = fleet.start_enrolling_agent("b1", &dir, &secret, &pin);
    let log = exits(&mut fleet, banned);
    assert!(log.contains("agent \\\"b1\\\" is banned") || log.contains("agent \"b1\" is banned"), "{log}");
    assert!(!dir.join("agent-b1.pem").exists());
    assert!(fleet.drover(&["agent", "unban", "b1"]).status.success());
    let (_, secret, pin) = token(&fleet, &["--name", "b1"]);
    fleet.start_enrolling_agent("b1", &dir, &secret, &pin);
    wait_for("b1 to connect", Duration::from_secs(20), || {
        let agents = json(&fleet, &["agents", "-o", "json"]);
        agents.as_array()?.iter().any(|a| a["name"] == "b1" && a["connected"] == true).then_some(())
    });

    let ids = json(&fleet, &["agent", "identities", "-o", "json"]);
    let state = |n: &str| ids.as_array().unwrap().iter().find(|i| i["name"] == n).map(|i| i["state"].clone());
    assert_eq!(state("r1"), Some("revoked".into()), "{ids}");
    assert_eq!(state("b1"), Some("allowed".into()), "{ids}");
    let entries = audit(&fleet);
    for (action, target) in [("agent.revoke", "r1"), ("agent.ban", "b1"), ("agent.unban", "b1"), ("agent.enroll", "b1")]
    {
        assert!(has(&entries, action, "ok", target), "{action} {target}: {entries:?}");
    }
    // Its reconnects are refused, each audited as a warning.
    wait_for("r1's reconnect to be refused", Duration::from_secs(20), || {
        audit(&fleet)
            .iter()
            .any(|e| {
                e["action"] == "agent.session"
                    && e["outcome"] == "refused"
                    && e["target"] == "r1"
                    && e["level"] == "warning"
            })
            .then_some(())
    });
    let since = json(&fleet, &["audit", "--actor", "admin:admin", "-o", "json"]);
    assert!(since.as_array().unwrap().iter().all(|e| e["actor"] == "admin:admin"), "{since}");
}

/// The leaf certificate (DER) the coordinator at `addr` presents now, in a
/// handshake verified against the fleet's CA.
fn presented(fleet: &Fleet, addr: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let ca = std::fs::read(fleet.tls.join("ca.pem")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    })
}

#[test]
fn the_coordinator_renews_its_own_server_certificate_at_half_life_without_cutting_a_session() {
    let mut fleet = Fleet::start_with("servercert", &["--server-cert-ttl", "12s"]);
    fleet.agent("s1", "", 1);
    fleet.wait_agents(1);
    let addr = fleet.addrs[0].clone();
    let first = presented(&fleet, &addr);
    // Not the ten-year certificate `certs init` made: one the coordinator
    // signed itself at start.
    use rustls::pki_types::pem::PemObject;
    let shipped = std::fs::read(fleet.coordinator_tls().join("coordinator.pem")).unwrap();
    let shipped = rustls::pki_types::CertificateDer::pem_slice_iter(&shipped).next().unwrap().unwrap();
    assert_ne!(first, shipped.to_vec());
    // A job that runs across the renewal at half the certificate's 12 s.
    let run = fleet.submit("across", "name: a\njobs:\n  long:\n    steps:\n      - run: sleep 9 && echo done\n");
    let started = Instant::now();
    let renewed = wait_for("a new server certificate", Duration::from_secs(30), || {
        let now = presented(&fleet, &addr);
        (now != first).then_some(now)
    });
    println!("the server certificate changed after {:?}", started.elapsed());
    assert_ne!(renewed, first);
    let done = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(done["state"], "succeeded", "{done}");
    // The agent's session went on: one connection for the whole test.
    let log = std::fs::read_to_string(&fleet.agents[0].log).unwrap();
    let sessions = log.lines().filter(|l| l.contains("session: connected")).count();
    assert_eq!(sessions, 1, "{log}");
    assert!(fleet.drover(&["runs"]).status.success(), "a new connection verifies the renewed certificate");
    assert!(fleet.logs().contains("serving a new server certificate"));
}
