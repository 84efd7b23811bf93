//! Table tests of the apps rules: settings refused with their fix, the diff per service and node, when a sync starts on its own, and which nodes a count keeps.

use super::*;
use std::collections::BTreeSet;

use drover_pipeline::deploy::{HealthCheck, HealthSpec, ServiceSpec};

fn spec() -> AppSpec {
    AppSpec {
        name: "web".into(),
        repo: "https://git.example.com/ops/deploy.git".into(),
        path: "deploy/prod".into(),
        environment: "prod".into(),
        revision: String::new(),
        poll_ms: 30_000,
        auto_sync: false,
        self_heal: false,
        prune: false,
        detect_only: false,
        depends_on: Vec::new(),
        sync_timeout_ms: 0,
    }
}

fn def(command: &str) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        command: command.into(),
        env: BTreeMap::new(),
        port: 8080,
        health: HealthSpec {
            check: HealthCheck::Tcp,
            interval: Duration::from_secs(1),
            healthy_after: 1,
            unhealthy_after: 3,
            timeout: Duration::from_secs(30),
        },
    }
}

#[test]
fn bad_settings_are_refused_with_what_to_write() {
    // (case, change, what the refusal says)
    type Case = (&'static str, fn(&mut AppSpec), &'static str);
    let cases: [Case; 13] = [
        ("a sync timeout too long", |s| s.sync_timeout_ms = 2 * 24 * 3600 * 1000, "--sync-timeout"),
        ("depends on itself", |s| s.depends_on = vec!["web".into()], "cannot depend on itself"),
        ("depends twice", |s| s.depends_on = vec!["db".into(), "db".into()], "names app db twice"),
        ("a bad dependency", |s| s.depends_on = vec!["a b".into()], "--depends-on: invalid app name"),
        ("name with a slash", |s| s.name = "a/b".into(), "invalid app name"),
        ("empty url", |s| s.repo = String::new(), "--url is empty"),
        ("absolute path", |s| s.path = "/deploy".into(), "relative to the root"),
        ("dotted path", |s| s.path = "deploy/../x".into(), "no `.`, `..`"),
        ("empty path", |s| s.path = String::new(), "--path is empty"),
        ("revision as an option", |s| s.revision = "-x".into(), "not a branch, a tag or a commit"),
        ("bad environment", |s| s.environment = "a b".into(), "invalid environment name"),
        ("poll too fast", |s| s.poll_ms = 10, "out of range"),
        (
            "detect-only with self-heal",
            |s| {
                s.detect_only = true;
                s.self_heal = true
            },
            "cannot go with",
        ),
    ];
    for (case, change, want) in cases {
        let mut s = spec();
        change(&mut s);
        let why = spec_problem(&s).unwrap_or_else(|| panic!("{case}: accepted"));
        assert!(why.contains(want), "{case}: {why}");
    }
    assert_eq!(spec_problem(&spec()), None);
    let mut root = spec();
    root.path = ".".into();
    root.revision = "release/1.2".into();
    assert_eq!(spec_problem(&root), None);
}

fn running(node: &str, version: &str, healthy: bool) -> Running {
    Running { node: node.into(), version: version.into(), sha256: format!("{version}-digest"), healthy }
}

fn wanted(version: &str, command: &str, nodes: Option<&[&str]>) -> Wanted {
    Wanted {
        service: "web".into(),
        file: "deploy/web.yaml".into(),
        version: Ok(version.into()),
        sha256: format!("{version}-digest"),
        def: def(command),
        nodes: nodes.map(|n| n.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn each_node_is_compared_with_the_release_its_file_asks_for() {
    let defs = BTreeMap::from([(("web".to_string(), "v1".to_string()), def("./old"))]);
    let none = BTreeSet::new();
    // (case, wanted, what runs, service status, node statuses, fields)
    type Case = (&'static str, Wanted, Vec<Running>, ServiceStatus, Vec<(&'static str, NodeStatus)>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "every node on it",
            wanted("v2", "./new", None),
            vec![running("a", "v2", true), running("b", "v2", true)],
            ServiceStatus::InSync,
            vec![("a", NodeStatus::InSync), ("b", NodeStatus::InSync)],
            vec![],
        ),
        (
            "a node on another release",
            wanted("v2", "./new", None),
            vec![running("a", "v2", true), running("b", "v1", true)],
            ServiceStatus::OutOfSync,
            vec![("a", NodeStatus::InSync), ("b", NodeStatus::OutOfSync)],
            vec!["artifact: sha256:v1-digest -> sha256:v2-digest", "command: \"./old\" -> \"./new\""],
        ),
        (
            "stopped by hand",
            wanted("v2", "./new", None),
            vec![running("a", "v2", false)],
            ServiceStatus::OutOfSync,
            vec![("a", NodeStatus::Unhealthy)],
            vec![],
        ),
        (
            "a selected node runs nothing",
            wanted("v2", "./new", Some(&["a", "c"])),
            vec![running("a", "v2", true)],
            ServiceStatus::OutOfSync,
            vec![("a", NodeStatus::InSync), ("c", NodeStatus::Missing)],
            vec![],
        ),
        ("runs nowhere", wanted("v2", "./new", None), vec![], ServiceStatus::Missing, vec![], vec![]),
    ];
    for (case, w, here, status, nodes, fields) in cases {
        let running = BTreeMap::from([("web".to_string(), here)]);
        let d = diff(&[w], &running, &defs, &none);
        assert_eq!(d.len(), 1, "{case}");
        assert_eq!(d[0].status, status, "{case}");
        let got: Vec<(&str, NodeStatus)> = d[0].nodes.iter().map(|n| (n.node.as_str(), n.status)).collect();
        assert_eq!(got, nodes, "{case}");
        assert_eq!(d[0].fields, fields, "{case}");
    }
}

#[test]
fn an_unresolved_release_and_an_orphan_are_told_apart() {
    let mut w = wanted("v2", "./new", None);
    w.version = Err("run 9 does not exist".into());
    let running = BTreeMap::from([("old".to_string(), vec![running("a", "v0", true)])]);
    let owned = BTreeSet::from(["old".to_string(), "web".to_string(), "gone".to_string()]);
    let d = diff(&[w], &running, &BTreeMap::new(), &owned);
    let got: Vec<(&str, ServiceStatus)> = d.iter().map(|s| (s.service.as_str(), s.status)).collect();
    assert_eq!(got, [("web", ServiceStatus::Error), ("old", ServiceStatus::Orphaned)], "gone runs nowhere");
    assert_eq!(d[0].summary(), "web: run 9 does not exist");
    assert_eq!(sync_status(&d[1..], false), SyncStatus::Synced, "an orphan is only shown without --prune");
    assert_eq!(sync_status(&d[1..], true), SyncStatus::OutOfSync);
}

#[test]
fn syncs_start_on_their_own_only_when_the_settings_say_so() {
    let plain = spec();
    let auto = AppSpec { auto_sync: true, ..spec() };
    let heal = AppSpec { auto_sync: true, self_heal: true, ..spec() };
    let detect = AppSpec { detect_only: true, ..spec() };
    let facts =
        |spec, synced, last_auto, syncing, asked_by| Facts { spec, wanted: "c2", synced, last_auto, syncing, asked_by };
    use SyncStatus::{OutOfSync, Synced};
    // (case, facts, drift, now, decision)
    let cases: Vec<(&str, Facts<'_>, SyncStatus, u64, Option<Start>)> = vec![
        ("a new commit, no auto-sync", facts(&plain, Some("c1"), None, None, None), OutOfSync, 0, None),
        ("a new commit, auto-sync", facts(&auto, Some("c1"), None, None, None), OutOfSync, 0, Some(Start::AutoSync)),
        ("its sync failed once", facts(&auto, Some("c1"), Some(("c2", 0)), None, None), OutOfSync, 9_000, None),
        ("a sync runs", facts(&auto, Some("c1"), None, Some("c2"), Some("ann")), OutOfSync, 0, None),
        (
            "a sync of an older commit runs",
            facts(&auto, Some("c1"), None, Some("c1"), None),
            OutOfSync,
            0,
            Some(Start::AutoSync),
        ),
        ("it runs, no auto-sync", facts(&plain, Some("c1"), None, Some("c1"), Some("ann")), OutOfSync, 0, None),
        (
            "asked by hand",
            facts(&plain, Some("c2"), None, None, Some("ann")),
            Synced,
            0,
            Some(Start::Asked("ann".into())),
        ),
        ("drift, no self-heal", facts(&auto, Some("c2"), None, None, None), OutOfSync, 0, None),
        (
            "drift, self-heal",
            facts(&heal, Some("c2"), Some(("c2", 1_000)), None, None),
            OutOfSync,
            6_000,
            Some(Start::SelfHeal),
        ),
        (
            "drift, healed a moment ago",
            facts(&heal, Some("c2"), Some(("c2", 1_000)), None, None),
            OutOfSync,
            3_000,
            None,
        ),
        ("detect-only", facts(&detect, Some("c1"), None, None, None), OutOfSync, 0, None),
        ("in sync", facts(&heal, Some("c1"), None, None, None), Synced, 0, None),
    ];
    for (case, facts, drift, now, want) in cases {
        assert_eq!(decide(&facts, drift, now), want, "{case}");
    }
}

#[test]
fn a_count_keeps_the_nodes_that_run_the_service() {
    let node = |name: &str, connected: bool| Node {
        name: name.into(),
        connected,
        draining: false,
        unready: String::new(),
        last_seen_ms: 0,
    };
    let nodes = vec![node("a", true), node("b", false), node("c", true), node("d", true)];
    let previous = BTreeMap::from([("d".to_string(), "v1".to_string())]);
    let names = |n: Vec<Node>| n.into_iter().map(|n| n.name).collect::<Vec<_>>();
    assert_eq!(names(pick(nodes.clone(), Some(2), &previous)), ["a", "d"]);
    assert_eq!(names(pick(nodes.clone(), None, &previous)), ["a", "b", "c", "d"]);
    assert_eq!(names(pick(nodes, Some(9), &BTreeMap::new())), ["a", "b", "c", "d"]);
}

#[test]
fn a_dependency_cycle_is_named_and_what_blocks_a_sync_is_said() {
    let graph = |edges: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
        edges.iter().map(|(a, deps)| (a.to_string(), deps.iter().map(|d| d.to_string()).collect())).collect()
    };
    // (case, graph, from, cycle)
    type Case = (&'static str, BTreeMap<String, Vec<String>>, &'static str, Option<&'static str>);
    let cases: Vec<Case> = vec![
        ("none", graph(&[("web", &["db"]), ("db", &[])]), "web", None),
        ("two", graph(&[("a", &["b"]), ("b", &["a"])]), "a", Some("a -> b -> a")),
        ("three", graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]), "a", Some("a -> b -> c -> a")),
        ("a diamond", graph(&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"]), ("d", &[])]), "a", None),
        ("not through it", graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["b"])]), "a", None),
        ("a missing app", graph(&[("a", &["zz"])]), "a", None),
    ];
    for (case, g, from, want) in cases {
        assert_eq!(cycle(&g, from).as_deref(), want, "{case}");
    }
    let state = |sync: &str, health: &str, syncing: bool, fetched: u64| DepState {
        sync_status: sync.into(),
        health: health.into(),
        syncing,
        last_fetch_ms: fetched,
    };
    let states = BTreeMap::from([
        ("db".to_string(), state("synced", "healthy", false, 10)),
        ("cache".to_string(), state("synced", "healthy", true, 10)),
        ("mq".to_string(), state("out_of_sync", "degraded", false, 10)),
        ("old".to_string(), state("synced", "healthy", false, 5)),
    ]);
    let deps = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(blocked_by(&deps(&["db"]), &states, 9), None);
    let (why, stale) = blocked_by(&deps(&["db", "cache", "mq", "gone"]), &states, 9).unwrap();
    assert_eq!(
        why,
        "waiting for app cache (syncing, healthy), app mq (out_of_sync, degraded), app gone (not registered) to be \
         synced and healthy"
    );
    assert!(stale.is_empty());
    // Looked at before this app saw its commit: looked at again first.
    let (why, stale) = blocked_by(&deps(&["db", "old"]), &states, 8).unwrap();
    assert_eq!(
        (why.as_str(), stale),
        ("waiting for app old (being fetched again) to be synced and healthy", vec!["old".to_string()])
    );
}
