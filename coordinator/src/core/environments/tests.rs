//! Tables of environment definitions (from flags and from files) and what
//! each must say, and of agents and the nodes a selector takes.

use std::collections::BTreeMap;

use super::*;

fn labels(text: &str) -> BTreeMap<String, String> {
    drover_client::labels::parse(text).unwrap()
}

fn spec(name: &str, selector: &str) -> Spec {
    Spec { name: name.into(), selector: labels(selector), ..Spec::default() }
}

#[test]
fn definitions_are_checked_with_every_problem_and_its_fix() {
    let ok = check(spec("staging", "role=web,env=staging")).unwrap();
    assert_eq!(ok.selector.len(), 2);
    let tidied = check(Spec {
        approvers: vec!["alice".into(), " bob ".into(), "alice".into()],
        require_approval: true,
        branches: vec![" main ".into(), "release/*".into()],
        description: "  the web tier ".into(),
        ..spec("prod.eu-1", "role=web")
    })
    .unwrap();
    assert_eq!(tidied.approvers, ["alice", "bob"]);
    assert_eq!(tidied.branches, ["main", "release/*"]);
    assert_eq!(tidied.description, "the web tier");
    assert!(check(spec(&"a".repeat(MAX_NAME_LEN), "r=w")).is_ok(), "63 characters");

    let many: BTreeMap<String, String> = (0..=MAX_SELECTOR_LABELS).map(|i| (format!("k{i}"), "v".into())).collect();
    let pair = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
    // (what, the definition, what one of its problems says)
    let refused: Vec<(&str, Spec, &str)> = vec![
        ("an empty name", spec("", "r=w"), "invalid environment name \"\": use letters, digits"),
        ("a name with a slash", spec("a/b", "r=w"), "invalid environment name \"a/b\""),
        ("a name starting with a dot", spec(".x", "r=w"), "starting with a letter or a digit"),
        ("a name too long", spec(&"a".repeat(MAX_NAME_LEN + 1), "r=w"), "at most 63 characters"),
        ("no selector", spec("s", ""), "the selector is empty"),
        ("too many labels", Spec { selector: many, ..spec("s", "") }, "17 labels, over the limit of 16"),
        ("a label with a comma", Spec { selector: pair("a,b", "c"), ..spec("s", "") }, "contains `,`"),
        ("a label with an empty value", Spec { selector: pair("a", ""), ..spec("s", "") }, "empty value"),
        ("a label with `=`", Spec { selector: pair("a", "b=c"), ..spec("s", "") }, "may not contain '='"),
        ("a label with a control character", Spec { selector: pair("a", "b\u{7}"), ..spec("s", "") }, "control"),
        (
            "approval with nobody to give it",
            Spec { require_approval: true, ..spec("prod", "r=w") },
            "environment \"prod\" requires approval but names no approvers, so nobody could ever approve a deploy \
             to it; name who may: `--approvers alice,bob`",
        ),
        (
            "an approver with a space",
            Spec { approvers: vec!["ops team".into()], ..spec("s", "r=w") },
            "invalid approver \"ops team\": an approver is the name of the certificate",
        ),
        (
            "too many approvers",
            Spec { approvers: (0..=MAX_APPROVERS).map(|i| format!("a{i}")).collect(), ..spec("s", "r=w") },
            "51 approvers, over the limit of 50",
        ),
        (
            "a branch pattern that does not parse",
            Spec { branches: vec!["release/[".into()], ..spec("s", "r=w") },
            "branch pattern \"release/[\" does not parse",
        ),
        (
            "too many branch patterns",
            Spec { branches: (0..=MAX_BRANCH_PATTERNS).map(|i| format!("b{i}")).collect(), ..spec("s", "r=w") },
            "51 branch patterns, over the limit of 50",
        ),
        ("a description on two lines", Spec { description: "a\nb".into(), ..spec("s", "r=w") }, "write it on one line"),
    ];
    for (what, spec, want) in refused {
        let problems = check(spec).unwrap_err();
        assert!(problems.iter().any(|p| p.contains(want)), "{what}: {problems:#?}");
    }
    // Every problem, not the first.
    let problems = check(Spec { require_approval: true, ..spec("a/b", "") }).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert_eq!(count_problem(MAX_ENVIRONMENTS), None);
    assert!(count_problem(MAX_ENVIRONMENTS + 1).unwrap().contains("over the limit of 200"));
}

fn agent(name: &str, labels_text: &str, connected: bool) -> AgentInfo {
    AgentInfo {
        name: name.into(),
        labels: labels(labels_text),
        slots: 1,
        in_use: 0,
        connected,
        last_seen_ms: 7,
        draining: false,
        unready: String::new(),
        version: String::new(),
        via: String::new(),
    }
}

#[test]
fn nodes_are_the_agents_with_every_label_of_the_selector() {
    let agents = vec![
        agent("web-2", "role=web,env=staging,zone=b", true),
        agent("web-1", "role=web,env=staging", false),
        agent("web-prod", "role=web,env=prod", true),
        agent("db", "role=db,env=staging", true),
        agent("bare", "", true),
        AgentInfo { draining: true, ..agent("web-3", "env=staging,role=web", true) },
        AgentInfo { unready: "disk full".into(), ..agent("web-4", "env=staging,role=web", true) },
    ];
    // (selector, the nodes' names)
    let cases: &[(&str, &[&str])] = &[
        ("role=web,env=staging", &["web-1", "web-2", "web-3", "web-4"]),
        ("env=staging", &["db", "web-1", "web-2", "web-3", "web-4"]),
        ("role=web", &["web-1", "web-2", "web-3", "web-4", "web-prod"]),
        ("role=web,env=prod", &["web-prod"]),
        ("zone=b", &["web-2"]),
        ("role=web,env=dev", &[]),
        ("role=WEB", &[]),
    ];
    for (selector, want) in cases {
        let got: Vec<String> = nodes(&labels(selector), &agents).into_iter().map(|n| n.name).collect();
        assert_eq!(got, *want, "{selector}");
    }
    let staging = nodes(&labels("role=web,env=staging"), &agents);
    let ready: Vec<(&str, bool, bool)> = staging.iter().map(|n| (n.name.as_str(), n.connected, n.ready())).collect();
    assert_eq!(ready, [("web-1", false, false), ("web-2", true, true), ("web-3", true, false), ("web-4", true, false)]);
    assert!(selects(&BTreeMap::new(), &labels("a=b")), "an empty selector (never stored) takes every agent");
}

#[test]
fn files_are_read_with_every_problem_at_its_place() {
    let good = "environments:\n  - name: staging\n    selector: {role: web, env: staging, version: 1.10}\n    \
                description: the web tier\n  - name: prod\n    selector:\n      role: web\n    require_approval: true\n    \
                approvers: [alice, ops-team, alice]\n    branches: [main, 'release/*']\n";
    let specs = parse_file("envs.yml", good).unwrap();
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].selector, labels("role=web,env=staging,version=1.10"), "numbers keep their spelling");
    assert_eq!(specs[0].description, "the web tier");
    assert_eq!(
        specs[1],
        Spec {
            name: "prod".into(),
            selector: labels("role=web"),
            require_approval: true,
            approvers: vec!["alice".into(), "ops-team".into()],
            branches: vec!["main".into(), "release/*".into()],
            description: String::new(),
            windows: vec![],
            deploy_role: None,
        }
    );

    // (what, the file, a problem it must report, with its place)
    let refused: &[(&str, &str, &str)] = &[
        ("an empty file", "", "envs.yml:1:1: the file is empty"),
        ("not YAML", "environments: [\n", "envs.yml:1:15: not valid YAML: unclosed bracket"),
        ("a top-level list", "- name: a\n", "envs.yml:1:1: the file must be a mapping"),
        ("an unknown top-level key", "environment:\n  - name: a\n", "envs.yml:1:1: unknown key `environment`"),
        ("environments not a list", "environments: {name: a}\n", "envs.yml:1:15: `environments` must be a list"),
        ("no environments", "environments: []\n", "envs.yml:1:15: `environments` is empty"),
        (
            "a bad name",
            "environments:\n  - name: 'a b'\n    selector: {r: w}\n",
            "envs.yml:2:11: invalid environment name \"a b\"",
        ),
        ("no name", "environments:\n  - selector: {r: w}\n", "envs.yml:2:5: this environment has no `name`"),
        ("no selector", "environments:\n  - name: a\n", "envs.yml:2:5: environment `a` has no `selector`"),
        (
            "a selector that is a string",
            "environments:\n  - name: a\n    selector: role=web\n",
            "envs.yml:3:15: `selector` must be a mapping",
        ),
        (
            "a selector label with `=`",
            "environments:\n  - name: a\n    selector: {role: 'w=x'}\n",
            "envs.yml:3:16: selector label \"role=w=x\"",
        ),
        (
            "a selector label that is a list",
            "environments:\n  - name: a\n    selector: {role: [web]}\n",
            "envs.yml:3:22: selector label `role` must have a single value",
        ),
        (
            "an unknown key",
            "environments:\n  - name: a\n    selector: {r: w}\n    approver: [alice]\n",
            "envs.yml:4:5: unknown key `approver`; an environment has name, selector, require_approval, approvers",
        ),
        (
            "require_approval not a boolean",
            "environments:\n  - name: a\n    selector: {r: w}\n    require_approval: yes\n",
            "envs.yml:4:23: `require_approval` is true or false",
        ),
        (
            "approval without approvers",
            "environments:\n  - name: a\n    selector: {r: w}\n    require_approval: true\n",
            "envs.yml:2:5: environment \"a\" requires approval but names no approvers",
        ),
        (
            "a bad approver",
            "environments:\n  - name: a\n    selector: {r: w}\n    approvers: [alice, 'ops team']\n",
            "envs.yml:4:24: invalid approver \"ops team\"",
        ),
        (
            "a bad branch pattern",
            "environments:\n  - name: a\n    selector: {r: w}\n    branches: ['release/[']\n",
            "envs.yml:4:16: branch pattern \"release/[\" does not parse",
        ),
        (
            "an unknown key with a control character",
            "environments:\n  - name: a\n    selector: {r: w}\n    \"x\\e\": 1\n",
            "envs.yml:4:5: unknown key `x\\u{1b}`",
        ),
        (
            "a repeated key",
            "environments:\n  - name: a\n    selector: {r: w}\n    name: b\n",
            "envs.yml:4:5: `name` is given twice in an environment; the first is at 2:5",
        ),
        (
            "an environment named twice",
            "environments:\n  - name: a\n    selector: {r: w}\n  - name: a\n    selector: {r: x}\n",
            "envs.yml:4:11: environment `a` is defined twice; the first is at 2:11",
        ),
    ];
    for (what, text, want) in refused {
        let problems = parse_file("envs.yml", text).unwrap_err();
        assert!(problems.iter().any(|p| p.starts_with(want)), "{what}: want {want:?} in {problems:#?}");
    }
    // Every problem, not the first.
    let two = "environments:\n  - name: 'a b'\n    selector: {r: w}\n  - name: c\n    selector: {}\n";
    assert_eq!(parse_file("envs.yml", two).unwrap_err().len(), 2);
    let mut many = String::from("environments:\n");
    for i in 0..=MAX_FILE_ENVIRONMENTS {
        many.push_str(&format!("  - {{name: e{i}, selector: {{n: '{i}'}}}}\n"));
    }
    let problems = parse_file("envs.yml", &many).unwrap_err();
    assert!(problems[0].starts_with("envs.yml:2:3: 65 environments in one file, over the limit of 64"), "{problems:?}");
    let big = format!("environments: []\n#{}\n", "x".repeat(MAX_FILE_BYTES));
    assert!(parse_file("envs.yml", &big).unwrap_err()[0].contains("over the limit of 262144"));
}

#[test]
fn branches_admit_the_runs_that_may_deploy() {
    let open = spec("staging", "r=w");
    let guarded = Spec { branches: vec!["main".into(), "release/*".into()], ..spec("prod", "r=w") };
    // (environment, the run's branch, admitted)
    let cases = [
        (&open, Some("main"), true),
        (&open, Some("feature/x"), true),
        (&open, None, true),
        (&guarded, Some("main"), true),
        (&guarded, Some("release/1.2"), true),
        (&guarded, Some("release/1.2/hotfix"), false),
        (&guarded, Some("mainline"), false),
        (&guarded, None, false),
    ];
    for (env, branch, want) in cases {
        assert_eq!(env.admits(branch), want, "{} from {branch:?}", env.name);
    }
}

#[test]
fn deploy_windows_are_read_from_files_with_every_problem_at_its_place() {
    let good = "environments:\n  - name: production\n    selector: {role: web}\n    windows:\n      - allow: \
                '0 9 * * 1-5'\n        for: 8h\n        timezone: Europe/Berlin\n      - deny: '0 0 24 12 *'\n        \
                for: 1h30m\n        reason: ' christmas '\n";
    let specs = parse_file("envs.yml", good).unwrap();
    assert_eq!(
        specs[0].windows,
        [
            Window {
                kind: WindowKind::Allow,
                cron: "0 9 * * 1-5".into(),
                for_ms: 8 * 3_600_000,
                timezone: "Europe/Berlin".into(),
                reason: String::new(),
            },
            Window {
                kind: WindowKind::Deny,
                cron: "0 0 24 12 *".into(),
                for_ms: 90 * 60_000,
                timezone: "UTC".into(),
                reason: "christmas".into(),
            },
        ]
    );

    // Every window below is the first of `windows:` at line 5, its keys
    // from column 9; a value after `for: ` starts at column 14.
    let top = "environments:\n  - name: a\n    selector: {r: w}\n";
    let head = format!("{top}    windows:\n");
    let many = format!("{top}    windows: [{}]\n", vec!["{allow: '0 9 * * *', for: 1h}"; MAX_WINDOWS + 1].join(", "));
    // (what, the windows part of the file, a problem it must report, with its place)
    let refused: Vec<(&str, String, &str)> = vec![
        (
            "windows not a list",
            format!("{top}    windows: {{allow: '0 9 * * *'}}\n"),
            "envs.yml:4:14: `windows` must be a list",
        ),
        ("too many windows", many, "envs.yml:4:14: 17 deploy windows, over the limit of 16"),
        (
            "a window that is not a mapping",
            format!("{head}      - '0 9 * * *'\n"),
            "envs.yml:5:9: a deploy window must be a mapping",
        ),
        (
            "a cron that does not parse",
            format!("{head}      - allow: '61 9 * * *'\n        for: 8h\n"),
            "envs.yml:5:16: deploy window cron \"61 9 * * *\" does not parse: ",
        ),
        (
            "a cron of three fields",
            format!("{head}      - allow: '* * *'\n        for: 8h\n"),
            "envs.yml:5:16: deploy window cron \"* * *\" does not parse: a cron expression has five fields",
        ),
        (
            "a cron that never ticks",
            format!("{head}      - deny: '0 0 30 2 *'\n        for: 8h\n"),
            "envs.yml:5:15: deploy window cron \"0 0 30 2 *\" never ticks",
        ),
        (
            "a cron that is a list",
            format!("{head}      - allow: [0, 9]\n        for: 8h\n"),
            "envs.yml:5:16: `allow` is a cron expression",
        ),
        (
            "both allow and deny",
            format!("{head}      - allow: '0 9 * * *'\n        deny: '0 0 * * *'\n        for: 8h\n"),
            "envs.yml:6:9: a deploy window has both `allow` and `deny`; give exactly one",
        ),
        (
            "neither allow nor deny",
            format!("{head}      - for: 8h\n"),
            "envs.yml:5:9: a deploy window has neither `allow` nor `deny`",
        ),
        ("no for", format!("{head}      - allow: '0 9 * * *'\n"), "envs.yml:5:9: this deploy window has no `for`"),
        (
            "a for that is no duration",
            format!("{head}      - allow: '0 9 * * *'\n        for: 8 hours\n"),
            "envs.yml:6:14: `for` \"8 hours\" is not a duration",
        ),
        (
            "a for without a unit",
            format!("{head}      - allow: '0 9 * * *'\n        for: 30\n"),
            "envs.yml:6:14: `for` \"30\" is not a duration",
        ),
        (
            "a for too short",
            format!("{head}      - allow: '0 9 * * *'\n        for: 30s\n"),
            "envs.yml:6:14: a deploy window open for 30s is refused: `for` is 1m to 744h",
        ),
        (
            "a for too long",
            format!("{head}      - allow: '0 9 * * *'\n        for: 745h\n"),
            "envs.yml:6:14: a deploy window open for 745h is refused",
        ),
        (
            "an unknown time zone",
            format!("{head}      - allow: '0 9 * * *'\n        for: 8h\n        timezone: europe/berlin\n"),
            "envs.yml:7:19: unknown time zone \"europe/berlin\"; did you mean `Europe/Berlin`?",
        ),
        (
            "a reason too long",
            format!("{head}      - deny: '0 9 * * *'\n        for: 8h\n        reason: {}\n", "x".repeat(201)),
            "envs.yml:7:17: the reason has 201 characters, over the limit of 200",
        ),
        (
            "a reason that is a list",
            format!("{head}      - deny: '0 9 * * *'\n        for: 8h\n        reason: [a]\n"),
            "envs.yml:7:17: `reason` is text",
        ),
        (
            "an unknown key",
            format!("{head}      - allow: '0 9 * * *'\n        for: 8h\n        zone: UTC\n"),
            "envs.yml:7:9: unknown key `zone`; a deploy window has allow, deny, for, timezone, reason",
        ),
    ];
    for (what, text, want) in refused {
        let problems = parse_file("envs.yml", &text).unwrap_err();
        assert!(problems.iter().any(|p| p.starts_with(want)), "{what}: want {want:?} in {problems:#?}");
    }
}
