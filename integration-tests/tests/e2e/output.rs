//! `-o json|yaml|wide` on every read command: the output parses, and the
//! field names are those README.md documents. `runs` filters by state,
//! name and age on the coordinator.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Fleet, text};

/// Runs `drover args`, which must succeed, and parses its stdout as JSON.
fn json(fleet: &Fleet, args: &[&str]) -> Value {
    let out = fleet.drover(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)))
}

/// Panics unless `value` has every one of `fields`.
fn has(what: &str, value: &Value, fields: &[&str]) {
    for f in fields {
        assert!(value.get(f).is_some(), "{what}: no field {f:?} in {value:#}");
    }
}

#[test]
fn every_read_command_prints_json_and_yaml_with_the_documented_fields() {
    let mut fleet = Fleet::start("output");
    fleet.agent("a1", "os=linux", 2);
    fleet.wait_agents(1);
    let ok = fleet.dir.path().join("ok.yml");
    std::fs::write(&ok, "name: ok\njobs:\n  build:\n    steps: [{run: 'echo one; echo two'}]\n  test:\n    needs: [build]\n    steps: [{run: 'true'}]\n").unwrap();
    let bad = fleet.dir.path().join("bad.yml");
    std::fs::write(&bad, "name: failing\njobs:\n  build:\n    steps: [{run: 'exit 3'}]\n").unwrap();
    let mut runs = Vec::new();
    for file in [&ok, &bad] {
        let out = fleet.drover(&["run", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let run = text(&out.stdout).trim().to_string();
        fleet.wait_run(&run, Duration::from_secs(60));
        runs.push(run);
    }
    let (ok_run, bad_run) = (&runs[0], &runs[1]);

    // runs: newest first, with the filters applied by the coordinator.
    let list = json(&fleet, &["runs", "-o", "json"]);
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 2, "{list:?}");
    has("runs", &list[0], &["id", "name", "state", "repo", "commit", "file", "created_ms", "finished_ms", "rerun_of"]);
    assert_eq!(list[0]["id"], bad_run.as_str());
    let failed = json(&fleet, &["runs", "--status", "failed", "-o", "json"]);
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{failed:#}");
    assert_eq!(failed[0]["name"], "failing");
    let named = json(&fleet, &["runs", "--name", "ok", "--since", "1h", "-o", "json"]);
    assert_eq!(named.as_array().map(Vec::len), Some(1), "{named:#}");
    assert_eq!(named[0]["id"], ok_run.as_str());
    let out = fleet.drover(&["runs", "-o", "wide"]);
    let header = text(&out.stdout).lines().next().unwrap_or_default().to_string();
    for column in ["RUN", "NAME", "STATE", "AGE", "DURATION", "CREATED", "RERUN OF", "SOURCE"] {
        assert!(header.contains(column), "{header}");
    }

    // status: JSON, the --json alias, and YAML of the same document.
    let status = json(&fleet, &["status", ok_run, "-o", "json"]);
    has("status", &status, &["id", "name", "state", "created_ms", "finished_ms", "rerun_of", "jobs"]);
    has(
        "status job",
        &status["jobs"][0],
        &[
            "name",
            "state",
            "needs",
            "attempt",
            "agent",
            "waiting_for",
            "blocked_until_ms",
            "exit_code",
            "started_ms",
            "finished_ms",
            "message",
            "reused_from",
        ],
    );
    assert_eq!(json(&fleet, &["status", ok_run, "--json"]), status);
    let out = fleet.drover(&["status", ok_run, "-o", "yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml: Value =
        serde_saphyr::from_str(&text(&out.stdout)).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(yaml["id"], status["id"]);
    assert_eq!(yaml["jobs"][1]["needs"], status["jobs"][1]["needs"]);

    // agents and cluster.
    let agents = json(&fleet, &["agents", "-o", "json"]);
    has(
        "agents",
        &agents[0],
        &["name", "labels", "slots", "slots_in_use", "connected", "draining", "unready", "last_seen_ms"],
    );
    assert_eq!(agents[0]["labels"]["os"], "linux");
    let cluster = json(&fleet, &["cluster", "-o", "json"]);
    has("cluster", &cluster, &["store", "epoch", "leader_id", "answered_by", "coordinators", "endpoints"]);
    has("cluster member", &cluster["coordinators"][0], &["id", "url", "leader", "started_ms"]);

    // logs: JSON lines, one per line of output.
    let out = fleet.drover(&["logs", ok_run, "build", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let said: Vec<&str> = lines.iter().filter_map(|l| l["line"].as_str()).collect();
    assert_eq!(said, ["==> [1/1] step 1", "one", "two"], "{lines:?}");
    has("log line", &lines[0], &["job", "attempt", "line"]);
    let out = fleet.drover(&["logs", ok_run, "build", "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("use -o json for JSON lines"), "{}", text(&out.stderr));
}
