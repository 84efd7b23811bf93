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
        deploy_key: String::new(),
        known_hosts: String::new(),
        deploy_role: None,
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
        ..Default::default()
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

#[test]
fn an_apps_file_reads_every_setting_and_fills_the_defaults() {
    let text = "apps:\n  - name: web\n    repo: https://git.example.com/ops/deploy.git\n    path: deploy/prod\n    \
                env: prod\n    revision: main\n    poll: 5s\n    auto_sync: true\n    self_heal: true\n    prune: \
                true\n    depends_on: [db]\n    sync_timeout: 10m\n  - name: db\n    repo: \
                https://git.example.com/ops/deploy.git\n    path: deploy/db\n    env: prod\n";
    let specs = file::parse_file("apps.yml", text).unwrap();
    let want_web = AppSpec {
        revision: "main".into(),
        poll_ms: 5_000,
        auto_sync: true,
        self_heal: true,
        prune: true,
        depends_on: vec!["db".into()],
        sync_timeout_ms: 600_000,
        ..spec()
    };
    let want_db =
        AppSpec { name: "db".into(), path: "deploy/db".into(), poll_ms: DEFAULT_POLL.as_millis() as u64, ..spec() };
    assert_eq!(specs, vec![want_web, want_db]);
}

#[test]
fn an_apps_file_says_each_mistake_at_its_place() {
    let app = "apps:\n  - name: web\n    repo: https://git.example.com/x.git\n    path: deploy\n    env: staging\n";
    // (case, the file, a problem it must report, at line:column)
    let cases: &[(&str, String, &str, &str)] = &[
        ("empty", String::new(), "1:1", "the file is empty"),
        ("not yaml", "apps: [".into(), "", "not valid YAML"),
        ("no apps key", "things: []\n".into(), "1:1", "unknown key `things`"),
        ("apps not a list", "apps: web\n".into(), "1:7", "`apps` must be a list"),
        ("unknown key", format!("{app}    colour: blue\n"), "6:5", "unknown key `colour`; an app has name, repo"),
        ("bad name", app.replace("name: web", "name: -web"), "2:11", "invalid app name"),
        ("no name", app.replace("  - name: web\n    repo", "  - repo"), "2:5", "has no `name`"),
        ("no env", app.replace("    env: staging\n", ""), "2:5", "has no `env`"),
        (
            "absolute path",
            app.replace("path: deploy", "path: /deploy"),
            "4:11",
            "`path` \"/deploy\" is not a directory",
        ),
        ("bad repo", app.replace("https://git.example.com/x.git", "ftp://x"), "3:11", ""),
        ("poll too fast", format!("{app}    poll: 10ms\n"), "6:11", "not a duration"),
        ("poll with no unit", format!("{app}    poll: 30\n"), "6:11", "has no unit"),
        ("poll out of range", format!("{app}    poll: 48h\n"), "6:11", "`poll` 172800000ms is out of range"),
        ("not a boolean", format!("{app}    prune: yes-please\n"), "6:12", "`prune` is true or false"),
        ("depends on itself", format!("{app}    depends_on: [web]\n"), "6:17", "cannot depend on itself"),
        (
            "detect-only and auto-sync",
            format!("{app}    detect_only: true\n    auto_sync: true\n"),
            "2:5",
            "`detect_only` only reports drift",
        ),
        ("twice", format!("{app}{}", &app[6..]), "6:11", "app `web` is defined twice; the first is at 2:11"),
        ("key twice", format!("{app}    path: other\n"), "6:5", "`path` is given twice"),
    ];
    for (case, text, at, want) in cases {
        let problems = file::parse_file("apps.yml", text).expect_err(case);
        let found = problems.iter().any(|p| p.starts_with(&format!("apps.yml:{at}")) && p.contains(want));
        assert!(found, "{case}: want {at} {want:?} in {problems:#?}");
    }
    let two = format!("{app}    poll: 30\n    prune: maybe\n");
    assert_eq!(file::parse_file("apps.yml", &two).unwrap_err().len(), 2, "one mistake does not hide the next");
}

#[test]
fn a_deploy_key_needs_an_ssh_url_and_the_hosts_it_trusts() {
    let hosts = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\n# a comment\n";
    // (case, repo, deploy key, known hosts, what the refusal says; "" for none)
    let cases = [
        ("no key", "https://git.example.com/x.git", "", "", ""),
        ("ssh:// with both", "ssh://git@git.example.com/x.git", "DEPLOY_KEY", hosts, ""),
        ("scp form", "git@git.example.com:ops/x.git", "DEPLOY_KEY", hosts, ""),
        ("https", "https://git.example.com/x.git", "DEPLOY_KEY", hosts, "reached over ssh"),
        ("a path", "/srv/git/x.git", "DEPLOY_KEY", hosts, "reached over ssh"),
        ("no hosts", "ssh://git@h/x.git", "DEPLOY_KEY", "", "needs --known-hosts"),
        ("hosts alone", "ssh://git@h/x.git", "", hosts, "goes with --deploy-key"),
        ("bad secret name", "ssh://git@h/x.git", "deploy-key", hosts, "invalid secret name"),
        ("a bad line", "ssh://git@h/x.git", "DEPLOY_KEY", "h ssh-ed25519\n", "line 1: not a known_hosts line"),
    ];
    for (case, repo, key, known, want) in cases {
        match access_problem(repo, key, known) {
            None => assert!(want.is_empty(), "{case}: accepted"),
            Some(why) => assert!(!want.is_empty() && why.contains(want), "{case}: {why}"),
        }
    }
}
