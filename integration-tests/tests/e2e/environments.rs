//! Environments (issue 15): their nodes are the real agents whose
//! certificates carry every label of the selector, shown connected or not
//! as agents come and go; bad definitions, flags and files are refused
//! with their fix (a file's at file:line:column) and store nothing; a
//! follower takes definitions, and the listing outlives its leader (on
//! etcd, with two coordinators); the README's example file applies.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Etcd, Fleet, text, wait_for, wait_for_or_report};

/// A JSON command's document; it must succeed.
fn json(fleet: &Fleet, args: &[&str]) -> Value {
    let out = fleet.drover(args);
    assert!(out.status.success(), "drover {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("drover {args:?}: {e}: {}", text(&out.stdout)))
}

/// An environment as listed: its name, nodes connected, nodes in all, and
/// each node's name and whether it is connected.
type Listed = (String, u64, u64, Vec<(String, bool)>);

/// `drover envs -o json`, by name.
fn listing(fleet: &Fleet) -> Vec<Listed> {
    let envs = json(fleet, &["envs", "-o", "json"]);
    let envs = envs.as_array().expect("an array");
    envs.iter()
        .map(|e| {
            let nodes = e["nodes"].as_array().expect("nodes");
            let nodes = nodes.iter().map(|n| (n["name"].as_str().unwrap().to_owned(), n["connected"] == true));
            (
                e["name"].as_str().unwrap().to_owned(),
                e["nodes_connected"].as_u64().unwrap(),
                e["nodes_total"].as_u64().unwrap(),
                nodes.collect(),
            )
        })
        .collect()
}

fn nodes(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[test]
fn an_environment_has_the_agents_whose_certificates_carry_its_labels() {
    let mut fleet = Fleet::start("environments");
    for args in [
        &["env", "create", "web", "--selector", "role=web,env=staging"][..],
        &["env", "create", "eu", "--selector", "env=staging,region=eu", "--description", "the EU zone"],
    ] {
        let out = fleet.drover(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("created: its nodes are the agents labelled"), "{}", text(&out.stdout));
    }
    // One agent per case: both environments, one, the other, neither.
    fleet.agent("both", "role=web,env=staging,region=eu", 1);
    let web_only = fleet.agent("web-us", "role=web,env=staging,region=us", 1);
    fleet.agent("db-eu", "role=db,env=staging,region=eu", 1);
    fleet.agent("prod", "role=web,env=prod,region=eu", 1);
    fleet.wait_agents(4);

    let want = vec![
        ("eu".to_owned(), 2, 2, nodes(&[("both", true), ("db-eu", true)])),
        ("web".to_owned(), 2, 2, nodes(&[("both", true), ("web-us", true)])),
    ];
    assert_eq!(listing(&fleet), want);
    let shown = json(&fleet, &["env", "show", "eu", "-o", "json"]);
    assert_eq!(shown["description"], "the EU zone", "{shown:#}");
    assert_eq!(shown["selector"], serde_json::json!({"env": "staging", "region": "eu"}), "{shown:#}");
    assert_eq!(shown["nodes"][0]["ready"], true, "{shown:#}");
    // The fields README.md documents, and YAML too.
    let documented = [
        "name",
        "selector",
        "require_approval",
        "approvers",
        "branches",
        "description",
        "created_ms",
        "created_by",
        "updated_ms",
        "updated_by",
        "windows",
        "open",
        "closed",
        "reopens_ms",
        "nodes_connected",
        "nodes_total",
        "nodes",
    ];
    for field in documented {
        assert!(shown.get(field).is_some(), "no {field}: {shown:#}");
    }
    for field in ["name", "connected", "ready", "draining", "unready", "last_seen_ms"] {
        assert!(shown["nodes"][0].get(field).is_some(), "no node {field}: {shown:#}");
    }
    let yaml = fleet.drover(&["envs", "-o", "yaml"]);
    assert!(yaml.status.success() && text(&yaml.stdout).contains("nodes_connected: 2"), "{}", text(&yaml.stdout));
    let table = text(&fleet.drover(&["envs"]).stdout);
    let row = table.lines().find(|l| l.starts_with("web ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("env=staging,role=web") && row.contains(" 2/2 "), "{table}");

    // An agent that stops is still a node, not connected.
    fleet.agents[web_only].kill();
    let list = wait_for_or_report(
        "web-us to show as not connected",
        Duration::from_secs(20),
        || listing(&fleet).into_iter().find(|e| e.0 == "web" && e.1 == 1),
        || fleet.logs(),
    );
    assert_eq!(list, ("web".to_owned(), 1, 2, nodes(&[("both", true), ("web-us", false)])));
    assert_eq!(listing(&fleet)[0].1, 2, "the other environment is as it was");
    let wide = text(&fleet.drover(&["envs", "-o", "wide"]).stdout);
    let node = wide.lines().find(|l| l.trim_start().starts_with("web-us")).unwrap_or_else(|| panic!("{wide}"));
    assert!(node.contains("not connected, last seen") && node.contains(" ago"), "{wide}");
    let shown = text(&fleet.drover(&["env", "show", "web"]).stdout);
    assert!(shown.contains("nodes:     1 of 2 connected") && shown.contains("connected, ready"), "{shown}");

    // Removed, it is gone; its agents are as they were.
    assert_eq!(fleet.drover(&["env", "rm", "eu"]).status.code(), Some(0));
    assert_eq!(listing(&fleet).len(), 1);
    let out = fleet.drover(&["env", "show", "eu"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}

#[test]
fn bad_environments_are_refused_with_their_fix_and_nothing_is_stored() {
    let fleet = Fleet::start("environments-bad");
    let refused = |args: &[&str], code: i32, says: &[&str]| {
        let out = fleet.drover(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        for s in says {
            assert!(err.contains(s), "{args:?}: want {s:?} in {err}");
        }
    };
    refused(
        &["env", "create", "a/b", "--selector", "role=web"],
        2,
        &["invalid environment name \"a/b\": use letters, digits, `_`, `.` and `-`"],
    );
    refused(&["env", "create", "web", "--selector", "role"], 2, &["label \"role\" is not k=v", "role=web,env=staging"]);
    refused(&["env", "create", "web", "--selector", ""], 2, &["the selector is empty", "--selector role=web"]);
    refused(
        &["env", "create", "prod", "--selector", "role=web", "--require-approval"],
        2,
        &["requires approval but names no approvers", "--approvers alice,bob"],
    );
    refused(
        &["env", "create", "prod", "--selector", "role=web", "--approvers", "ops team"],
        2,
        &["invalid approver \"ops team\""],
    );
    refused(&["env", "create", "prod", "--selector", "role=web", "--branches", "release/["], 2, &["does not parse"]);
    assert_eq!(json(&fleet, &["envs", "-o", "json"]), serde_json::json!([]), "nothing was stored");

    let out = fleet.drover(&["env", "create", "web", "--selector", "role=web", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    refused(
        &["env", "create", "web", "--selector", "role=db"],
        2,
        &["environment \"web\" exists already; change it with `drover env apply -f FILE`"],
    );

    // A file with a mistake applies none of its environments.
    let path = fleet.dir.path().join("envs.yml");
    let file = "environments:\n  - name: web\n    selector: {role: web, tier: front}\n  - name: prod\n    \
                selector: {role: web, env: prod}\n    require_approval: true\n    approvers: [alice]\n  - name: qa\n    \
                selector: {}\n";
    std::fs::write(&path, file).unwrap();
    let shown = path.display().to_string();
    refused(
        &["env", "apply", "-f", &shown],
        2,
        &["invalid environments file:", &format!("{shown}:9:15: the selector is empty")],
    );
    let envs = json(&fleet, &["envs", "-o", "json"]);
    assert_eq!(envs.as_array().map(Vec::len), Some(1), "{envs:#}");
    assert_eq!(envs[0]["selector"], serde_json::json!({"role": "web"}), "web is as it was: {envs:#}");

    std::fs::write(&path, file.replace("selector: {}", "selector: {role: qa}")).unwrap();
    let applied = json(&fleet, &["env", "apply", "-f", &shown, "-o", "json"]);
    assert_eq!(applied, serde_json::json!({"created": ["prod", "qa"], "replaced": ["web"], "unchanged": []}));
    let prod = json(&fleet, &["env", "show", "prod", "-o", "json"]);
    assert_eq!(
        (prod["require_approval"].as_bool(), prod["approvers"].clone()),
        (Some(true), serde_json::json!(["alice"]))
    );
    let again = text(&fleet.drover(&["env", "apply", "-f", &shown]).stdout);
    assert!(again.contains("environment web unchanged"), "{again}");

    // From standard input, `-f -`.
    let mut apply = fleet.drover_command(&["env", "apply", "-f", "-"]);
    let mut child = apply.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let piped = "environments:\n  - name: piped\n    selector: {role: [web]}\n";
    child.stdin.take().unwrap().write_all(piped.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("<stdin>:3:22: selector label `role` must have a single value"), "{err}");

    refused(&["env", "rm", "nope"], 4, &["environment \"nope\" does not exist; `drover envs` lists them"]);
    assert_eq!(fleet.drover(&["env", "rm", "qa"]).status.code(), Some(0));
}

#[test]
fn a_follower_takes_definitions_and_the_listing_outlives_the_leader() {
    let etcd = Etcd::start("environments", 1);
    let mut fleet = Fleet::start_ha("environments-ha", &etcd, 2);
    let leader = fleet.wait_leader();
    let follower = 1 - leader;
    /// The CLI against coordinator `i` alone.
    fn at(fleet: &Fleet, i: usize, args: &[&str]) -> std::process::Output {
        let url = fleet.url_of(i);
        fleet.drover(&[&["--coordinator", url.as_str()], args].concat())
    }
    let out = at(&fleet, follower, &["env", "create", "web", "--selector", "role=web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    fleet.agent("w1", "role=web", 1);
    fleet.wait_agents(1);
    // Asked of the follower alone, the listing comes from the leader.
    let listed = wait_for("w1 as web's node, through the follower", Duration::from_secs(20), || {
        let out = at(&fleet, follower, &["envs", "-o", "json"]);
        let envs: Value = serde_json::from_slice(&out.stdout).ok()?;
        (envs[0]["nodes_connected"] == 1).then_some(envs)
    });
    assert_eq!(listed[0]["nodes"][0]["name"], "w1", "{listed:#}");

    fleet.kill_coordinator(leader);
    wait_for_or_report(
        "w1 connected to the new leader, as web's node",
        Duration::from_secs(30),
        || {
            // Until the new leader is elected, the survivor refuses (exit 3).
            let out = fleet.drover(&["envs", "-o", "json"]);
            let envs: Value = serde_json::from_slice(&out.stdout).ok()?;
            (envs[0]["name"] == "web" && envs[0]["nodes_connected"] == 1).then_some(())
        },
        || fleet.logs(),
    );
}

#[test]
fn the_readme_example_applies_as_written() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let section = &readme[readme.find("### Environments").expect("the section")..];
    let start = section.find("```yaml\n").expect("a YAML block") + "```yaml\n".len();
    let end = start + section[start..].find("```").expect("the block's end");
    let fleet = Fleet::start("environments-readme");
    let path = fleet.dir.path().join("environments.yml");
    std::fs::write(&path, &section[start..end]).unwrap();
    let applied = json(&fleet, &["env", "apply", "-f", path.to_str().unwrap(), "-o", "json"]);
    assert_eq!(applied["created"], serde_json::json!(["staging", "production"]), "{applied:#}");
}
