//! Users and roles (issue 18): an admin adds users with a role, each logs
//! in with a single-use token and a key of its own (`drover login`), and
//! one decision (`core::authz::authorize`) lets a viewer read, an operator
//! run, cancel and approve, and only an admin touch secrets, agents and
//! users. A role changes, and a removed user is refused, from the next call.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Fleet, text};

fn ok_json(out: std::process::Output, what: &str) -> Value {
    assert!(out.status.success(), "{what}: {}{}", text(&out.stdout), text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {}", text(&out.stdout)))
}

/// `drover user add NAME --role ROLE`, then `drover login` as it prints:
/// the user's TLS directory.
pub(crate) fn add_and_login(fleet: &Fleet, name: &str, role: &str) -> PathBuf {
    let added = ok_json(fleet.drover(&["user", "add", name, "--role", role, "-o", "json"]), "user add");
    let secret = added["secret"].as_str().unwrap().to_string();
    let pin = added["ca_pin"].as_str().unwrap().to_string();
    let dir = fleet.dir.path().join(format!("user-{name}"));
    let out = fleet
        .drover_command(&[
            "login",
            "--name",
            name,
            "--token",
            &secret,
            "--ca-pin",
            &pin,
            "--tls-dir",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "login {name}: {}{}", text(&out.stdout), text(&out.stderr));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains(name) && said.contains(role), "login says who and what: {said}");
    assert!(!said.contains(&secret[12..]), "login printed the token: {said}");
    dir
}

fn as_user(fleet: &Fleet, dir: &Path, args: &[&str]) -> std::process::Output {
    fleet.drover_with_tls(dir, args)
}

fn refused(out: &std::process::Output, want: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{}{stderr}", text(&out.stdout));
    assert!(stderr.contains(want), "want {want:?}: {stderr}");
}

#[test]
fn a_viewer_reads_an_operator_runs_and_cancels_and_only_an_admin_touches_secrets_and_users() {
    let mut fleet = Fleet::start("roles");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let vera = add_and_login(&fleet, "vera", "viewer");
    let otto = add_and_login(&fleet, "otto", "operator");

    let me = ok_json(as_user(&fleet, &vera, &["whoami", "-o", "json"]), "whoami");
    assert_eq!(
        (me["kind"].as_str(), me["name"].as_str(), me["role"].as_str()),
        (Some("user"), Some("vera"), Some("viewer"))
    );

    // A viewer reads, and may not run or cancel.
    assert!(as_user(&fleet, &vera, &["runs"]).status.success());
    assert!(as_user(&fleet, &vera, &["agents"]).status.success());
    let file = fleet.dir.path().join("p.yml");
    std::fs::write(&file, "name: p\njobs:\n  long:\n    steps:\n      - run: sleep 60\n").unwrap();
    let run_args = ["run", file.to_str().unwrap()];
    refused(&as_user(&fleet, &vera, &run_args), "user \"vera\" is a viewer, which may not run pipelines");

    // An operator runs; the run records who.
    let out = as_user(&fleet, &otto, &run_args);
    assert!(out.status.success(), "operator run: {}", text(&out.stderr));
    let run = text(&out.stdout).trim().to_string();
    let status = fleet.status(&run);
    assert_eq!(status["submitted_by"], "user:otto", "{status}");
    let shown = text(&fleet.drover(&["status", &run]).stdout);
    assert!(shown.contains("user:otto"), "{shown}");
    refused(&as_user(&fleet, &vera, &["cancel", &run]), "may not cancel runs: that takes the operator role");
    // Secrets and users are an admin's.
    refused(&as_user(&fleet, &otto, &["secret", "ls"]), "may not read or change secrets");
    let value = fleet.dir.path().join("value.txt");
    std::fs::write(&value, "s3cret").unwrap();
    let set = ["secret", "set", "TOKEN", "--from-file", value.to_str().unwrap()];
    refused(&as_user(&fleet, &otto, &set), "may not read or change secrets");
    assert!(fleet.drover(&set).status.success(), "the admin sets it");
    refused(&as_user(&fleet, &otto, &["user", "add", "eve", "--role", "admin"]), "may not manage users and roles");
    refused(&as_user(&fleet, &otto, &["agent-token", "create", "--name", "x"]), "may not manage agents");
    let out = as_user(&fleet, &otto, &["cancel", &run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A user's open stream ends the moment the user is removed: deny wins
    // for a `--follow` as for the next call.
    let fay = add_and_login(&fleet, "fay", "viewer");
    let watched =
        fleet.submit("watched.yml", "name: w\njobs:\n  talk:\n    steps:\n      - run: echo said-it && sleep 60\n");
    let out_path = fleet.dir.path().join("fay-follow.out");
    let mut follow = fleet
        .drover_command(&["logs", &watched, "talk", "--follow"])
        .env("DROVER_TLS_DIR", &fay)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::harness::wait_for("fay's follow to stream", std::time::Duration::from_secs(30), || {
        std::fs::read_to_string(&out_path).unwrap().contains("said-it").then_some(())
    });
    assert!(follow.try_wait().unwrap().is_none(), "the follow is open");
    assert!(fleet.drover(&["user", "rm", "fay"]).status.success());
    let removed = std::time::Instant::now();
    let exited = crate::harness::wait_for("the follow to end", std::time::Duration::from_secs(10), || {
        follow.try_wait().unwrap()
    });
    println!("a removed user's follow ended {:?} after `drover user rm`", removed.elapsed());
    let mut stderr = String::new();
    std::io::Read::read_to_string(follow.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(exited.code(), Some(5), "{stderr}");
    assert!(stderr.contains("user \"fay\" may do nothing"), "{stderr}");
    assert!(fleet.drover(&["cancel", &watched]).status.success());

    // An environment may ask more than an operator to deploy to it by hand:
    // the run is refused at submit, before anything runs.
    let envs = fleet.dir.path().join("envs.yml");
    std::fs::write(
        &envs,
        "environments:\n  - name: prod\n    selector: {role: web}\n    deploy_role: admin\n  - name: bad\n    \
         selector: {role: web}\n    deploy_role: viewer\n",
    )
    .unwrap();
    let out = fleet.drover(&["env", "apply", "-f", envs.to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains(":7:18: `deploy_role` viewer would let nobody less deploy"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&envs, "environments:\n  - name: prod\n    selector: {role: web}\n    deploy_role: admin\n")
        .unwrap();
    let out = fleet.drover(&["env", "apply", "-f", envs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = ok_json(fleet.drover(&["env", "show", "prod", "-o", "json"]), "env show");
    assert_eq!(shown["deploy_role"], "admin", "{shown}");
    let deploying = fleet.dir.path().join("deploy.yml");
    std::fs::write(
        &deploying,
        "name: web\njobs:\n  build:\n    artifacts: {paths: [dist]}\n    steps:\n      - run: mkdir -p dist && \
         echo v1 > dist/VERSION\n  deploy:\n    needs: [build]\n    deploy:\n      environment: prod\n      \
         artifact: build:dist\n      service:\n        name: web\n        command: sleep 600\n        port: 18080\n        \
         health: {http: /healthz, interval: 1s, healthy_after: 2, timeout: 8s}\n",
    )
    .unwrap();
    let deploy_args = ["run", deploying.to_str().unwrap()];
    refused(
        &as_user(&fleet, &otto, &deploy_args),
        "environment \"prod\" takes the admin role to deploy to by hand; user:otto is an operator",
    );
    let runs = ok_json(fleet.drover(&["runs", "-o", "json"]), "runs");
    assert_eq!(
        runs.as_array().unwrap().len(),
        2,
        "the refused run was not stored (otto's and the watched one are): {runs}"
    );

    // A role changes from the next call; a removed user can do nothing.
    assert!(fleet.drover(&["user", "role", "vera", "operator"]).status.success());
    assert!(as_user(&fleet, &vera, &run_args).status.success(), "vera, now an operator, may run");
    assert!(fleet.drover(&["user", "rm", "otto"]).status.success());
    refused(&as_user(&fleet, &otto, &["runs"]), "user \"otto\" may do nothing");
    let users = ok_json(fleet.drover(&["users", "-o", "json"]), "users");
    let names: Vec<&str> = users.as_array().unwrap().iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names, ["vera"], "{users}");
    assert_eq!(users[0]["role"], "operator");

    // An app may ask more than an operator to sync it by hand, whatever its
    // environment asks.
    let out = fleet.drover(&["env", "create", "stage", "--selector", "role=web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let app = [
        "app",
        "create",
        "web",
        "--repo",
        "https://git.example.com/x.git",
        "--path",
        "deploy",
        "--env",
        "stage",
        "--deploy-role",
        "admin",
        "-o",
        "json",
    ];
    let created = ok_json(fleet.drover(&app), "app create");
    assert_eq!(created["deploy_role"], "admin", "{created}");
    refused(&as_user(&fleet, &vera, &["app", "sync", "web"]), "app \"web\" takes the admin role to deploy to by hand");

    let audit = ok_json(fleet.drover(&["audit", "-o", "json"]), "audit");
    let has = |action: &str, actor: &str, target: &str| {
        audit.as_array().unwrap().iter().any(|e| {
            e["action"] == action && e["actor"].as_str().unwrap_or("").starts_with(actor) && e["target"] == target
        })
    };
    assert!(has("user.add", "admin:", "vera"), "{audit}");
    assert!(has("user.login", "token:", "otto"), "{audit}");
    assert!(has("run.cancel", "user:otto", &run), "{audit}");
    assert!(has("user.role", "admin:", "vera"), "{audit}");
    assert!(has("user.remove", "admin:", "otto"), "{audit}");
}
