//! CA rotation (issue 18): `drover ca rotate --phase add|reissue|remove`
//! moves a running fleet to a new CA with no job interrupted: the new CA is
//! trusted everywhere first (the agent's `ca.pem` follows over its open
//! session), then everything is reissued by it (the agent renews within
//! half a minute, a user with `drover ca refresh`, the coordinator its own
//! server certificate), and only then is the old CA dropped; a certificate
//! of the old CA is refused from then on. A user who missed the refresh
//! after `add` no longer trusts the coordinator after `reissue`, and gets
//! back in with `drover ca refresh --ca-pin` and the new CA's pin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Fleet, text, wait_for};

fn json(fleet: &Fleet, tls: &Path, args: &[&str]) -> Value {
    let out = fleet.drover_with_tls(tls, args);
    assert!(out.status.success(), "drover {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("drover {args:?}: {e}: {}", text(&out.stdout)))
}

fn certs_in(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().matches("-----BEGIN CERTIFICATE-----").count()
}

/// `drover ca status -o json`'s CA in `state`: (pin, agents, users).
fn ca_in(status: &Value, state: &str) -> Option<(String, u64, u64)> {
    status["cas"].as_array().unwrap().iter().find(|c| c["state"] == state).map(|c| {
        (c["pin"].as_str().unwrap().to_owned(), c["agents"].as_u64().unwrap_or(0), c["users"].as_u64().unwrap_or(0))
    })
}

/// `user add NAME --role viewer` and `login` into a directory of its own.
fn log_in(fleet: &Fleet, admin: &Path, name: &str) -> PathBuf {
    let added = json(fleet, admin, &["user", "add", name, "--role", "viewer", "-o", "json"]);
    let dir = fleet.dir.path().join(format!("user-{name}"));
    let login = fleet.drover(&[
        "login",
        "--name",
        name,
        "--token",
        added["secret"].as_str().unwrap(),
        "--ca-pin",
        added["ca_pin"].as_str().unwrap(),
        "--tls-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(login.status.success(), "login {name}: {}", text(&login.stderr));
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn the_ca_rotates_in_three_phases_while_an_agent_runs_a_job_and_the_old_ca_is_refused_after() {
    let mut fleet = Fleet::start("carotate");
    let admin = fleet.tls.clone();
    let before = fleet.dir.path().join("admin-before");
    copy_dir(&admin, &before);
    // An enrolled agent, and two users who logged in: bob refreshes after
    // each phase, carl misses the refresh after `add`.
    let token = json(&fleet, &admin, &["agent-token", "create", "--name", "c1", "-o", "json"]);
    let (secret, pin) = (token["secret"].as_str().unwrap().to_owned(), token["ca_pin"].as_str().unwrap().to_owned());
    let agent_dir = fleet.dir.path().join("enrolled-c1");
    fleet.start_enrolling_agent("c1", &agent_dir, &secret, &pin);
    fleet.wait_agents(1);
    let bob = log_in(&fleet, &admin, "bob");
    let carl = log_in(&fleet, &admin, "carl");

    let status = json(&fleet, &admin, &["ca", "status", "-o", "json"]);
    assert_eq!(status["phase"], "steady", "{status}");
    assert_eq!(status["keys_in"], "files", "{status}");
    assert_eq!(ca_in(&status, "signing"), Some((pin.clone(), 1, 2)), "{status}");

    // A job that runs across the whole rotation.
    let run = fleet.submit("across", "name: a\njobs:\n  long:\n    steps:\n      - run: sleep 12 && echo done\n");
    wait_for("the job to run", Duration::from_secs(20), || {
        (fleet.job(&run, "long")["state"] == "running").then_some(())
    });

    // add: the new CA is trusted; the agent is told over its open session.
    let added = json(&fleet, &admin, &["ca", "rotate", "--phase", "add", "-o", "json"]);
    assert_eq!(added["phase"], "added", "{added}");
    assert_eq!(added["keys_in"], "store", "{added}");
    let (new_pin, _, _) = ca_in(&added, "trusted").unwrap();
    assert_eq!(ca_in(&added, "signing").unwrap().0, pin, "the old CA still signs");
    wait_for("the agent to trust both CAs", Duration::from_secs(10), || {
        (certs_in(&agent_dir.join("ca.pem")) == 2).then_some(())
    });
    assert_eq!(certs_in(&admin.join("ca.pem")), 2, "the CLI that rotated trusts both");
    let refreshed = fleet.drover_with_tls(&bob, &["ca", "refresh"]);
    assert!(refreshed.status.success(), "{}", text(&refreshed.stderr));
    assert_eq!(certs_in(&bob.join("ca.pem")), 2);
    assert_eq!(certs_in(&carl.join("ca.pem")), 1, "carl did not refresh");
    let token = json(&fleet, &admin, &["agent-token", "create", "--name", "c2", "-o", "json"]);
    assert_eq!(token["ca_pin"], pin.as_str(), "tokens name the CA that signs");

    // reissue: the new CA signs; the agent renews within half a minute,
    // and the users hold the old CA's certificates until they refresh.
    let reissuing = json(&fleet, &admin, &["ca", "rotate", "--phase", "reissue", "-o", "json"]);
    assert_eq!(ca_in(&reissuing, "signing").unwrap().0, new_pin, "{reissuing}");
    assert_eq!(ca_in(&reissuing, "retiring").unwrap().0, pin, "{reissuing}");
    let early = fleet.drover_with_tls(&admin, &["ca", "rotate", "--phase", "remove"]);
    assert!(!early.status.success(), "remove while bob and carl hold the old CA's certificates");
    let said = text(&early.stderr);
    assert!(said.contains("still hold a certificate of the retiring CA") && said.contains("--force"), "{said}");
    let refreshed = fleet.drover_with_tls(&bob, &["ca", "refresh"]);
    assert!(refreshed.status.success(), "{}", text(&refreshed.stderr));
    // carl's ca.pem trusts only the old CA, which no longer signs the
    // coordinator's certificate: a plain refresh cannot connect, and says
    // what can.
    let locked = fleet.drover_with_tls(&carl, &["ca", "refresh"]);
    assert!(!locked.status.success(), "carl's ca.pem does not vouch for the new server certificate");
    let said = text(&locked.stderr);
    assert!(said.contains("does not vouch for") && said.contains("drover ca refresh --ca-pin"), "{said}");
    let wrong = fleet.drover_with_tls(&carl, &["ca", "refresh", "--ca-pin", &pin]);
    assert!(!wrong.status.success(), "the old CA's pin does not name the coordinator's CA");
    assert!(text(&wrong.stderr).contains("presents no CA with pin"), "{}", text(&wrong.stderr));
    assert_eq!(certs_in(&carl.join("ca.pem")), 1, "nothing written after a wrong pin");
    let pinned = fleet.drover_with_tls(&carl, &["ca", "refresh", "--ca-pin", &new_pin]);
    assert!(pinned.status.success(), "{}{}", text(&pinned.stdout), text(&pinned.stderr));
    assert_eq!(certs_in(&carl.join("ca.pem")), 2, "carl trusts both CAs");
    let runs = fleet.drover_with_tls(&carl, &["runs"]);
    assert!(runs.status.success(), "{}", text(&runs.stderr));
    let renewed = wait_for("every holder to renew", Duration::from_secs(45), || {
        let status = json(&fleet, &admin, &["ca", "status", "-o", "json"]);
        (ca_in(&status, "retiring").is_some_and(|(_, a, u)| a == 0 && u == 0)).then_some(status)
    });
    assert_eq!(ca_in(&renewed, "signing"), Some((new_pin.clone(), 1, 2)), "{renewed}");

    // remove: only the new CA is left, everywhere.
    let steady = json(&fleet, &admin, &["ca", "rotate", "--phase", "remove", "-o", "json"]);
    assert_eq!(steady["phase"], "steady", "{steady}");
    assert_eq!(steady["cas"].as_array().unwrap().len(), 1, "{steady}");
    wait_for("the agent to trust the new CA alone", Duration::from_secs(10), || {
        (certs_in(&agent_dir.join("ca.pem")) == 1).then_some(())
    });
    let done = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(done["state"], "succeeded", "{done}");
    let log = std::fs::read_to_string(&fleet.agents[0].log).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("session: connected")).count(), 1, "one session throughout: {log}");

    // New connections: the CLIs and a restarted agent, all on the new CA.
    assert!(fleet.drover_with_tls(&admin, &["runs"]).status.success());
    assert!(fleet.drover_with_tls(&bob, &["runs"]).status.success());
    assert!(fleet.drover_with_tls(&carl, &["runs"]).status.success());
    fleet.agents[0].child.kill().unwrap();
    fleet.agents[0].child.wait().unwrap();
    let again = fleet.start_enrolling_agent("c1", &agent_dir, &secret, &pin);
    wait_for("the restarted agent to connect", Duration::from_secs(20), || {
        let log = std::fs::read_to_string(&fleet.agents[again].log).unwrap();
        log.contains("session: connected").then_some(())
    });
    // The old CA's certificates are refused, even beside the new trust.
    let mixed = fleet.dir.path().join("admin-mixed");
    copy_dir(&before, &mixed);
    std::fs::copy(admin.join("ca.pem"), mixed.join("ca.pem")).unwrap();
    let out = fleet.drover_with_tls(&mixed, &["runs"]);
    assert!(!out.status.success(), "an old-CA certificate was accepted: {}", text(&out.stdout));
    assert!(!fleet.drover_with_tls(&before, &["runs"]).status.success());

    let audit = json(&fleet, &admin, &["audit", "-o", "json"]);
    let entries = audit.as_array().unwrap();
    for phase in ["add", "reissue", "remove"] {
        assert!(
            entries.iter().any(|e| e["action"] == "ca.rotate" && e["target"] == phase && e["outcome"] == "ok"),
            "{audit}"
        );
    }
    assert!(entries.iter().any(|e| e["action"] == "ca.rotate" && e["outcome"] == "refused"), "{audit}");
    for user in ["bob", "carl"] {
        assert!(entries.iter().any(|e| e["action"] == "user.renew" && e["target"] == user), "{audit}");
    }
    assert!(entries.iter().any(|e| e["action"] == "agent.renew" && e["target"] == "c1"), "{audit}");
}
