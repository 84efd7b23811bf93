//! A deploy's `gates:` and `waves:` read from files: good ones to the exact
//! gates and waves, with the defaults filled in; bad ones each to one
//! diagnostic at its line and column, with a hint.

use std::time::Duration;

use super::refused_once;
use crate::deploy::{Gate, GateAt, GateKind};
use crate::{MAX_GATES, parse};

/// A pipeline whose deploy job `d` ends at line 15; gates appended start
/// at line 16 (`gates:` six spaces in, a gate eight).
const GOOD: &str = "\
name: p
jobs:
  build:
    artifacts: {paths: [dist/]}
    steps: [{run: make}]
  d:
    needs: [build]
    deploy:
      environment: staging
      artifact: build:dist/app.tar.gz
      service:
        name: web
        command: ./app
        port: 8080
        health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}
";

fn gates_of(extra: &str) -> Vec<Gate> {
    let text = format!("{GOOD}{extra}");
    let pipeline = parse("ci.yml", &text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    let json = serde_json::to_string(&pipeline).unwrap();
    assert_eq!(serde_json::from_str::<crate::Pipeline>(&json).unwrap(), pipeline);
    pipeline.job("d").unwrap().deploy.clone().unwrap().gates
}

#[test]
fn gates_read_in_order_with_their_defaults() {
    let gates = gates_of(
        "      gates:
        - {name: qa, at: before_rollout, approval: {approvers: [alice, ops-team, alice]}}
        - {name: ticket, at: before_promotion, confirm: {url: \"https://change.example.com/ok\"}}
        - {name: step, at: before_step, confirm: {url: \"http://h:1/x\", timeout: 30s, interval: 2s}}
",
    );
    assert_eq!(
        gates,
        vec![
            Gate {
                name: "qa".into(),
                at: GateAt::BeforeRollout,
                kind: GateKind::Approval { approvers: vec!["alice".into(), "ops-team".into()] },
            },
            Gate {
                name: "ticket".into(),
                at: GateAt::BeforePromotion,
                kind: GateKind::Confirm {
                    url: "https://change.example.com/ok".into(),
                    timeout: Duration::from_secs(300),
                    interval: Duration::from_secs(10),
                },
            },
            Gate {
                name: "step".into(),
                at: GateAt::BeforeStep,
                kind: GateKind::Confirm {
                    url: "http://h:1/x".into(),
                    timeout: Duration::from_secs(30),
                    interval: Duration::from_secs(2),
                },
            },
        ]
    );
    assert!(gates_of("").is_empty());
}

#[test]
fn bad_gates_are_refused_where_the_mistake_is() {
    let one = |gate: &str| format!("      gates:\n        - {gate}\n");
    let too_many = format!(
        "      gates:\n{}",
        (0..=MAX_GATES)
            .map(|i| format!("        - {{name: g{i}, at: before_step, approval: {{approvers: [a]}}}}\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, String, usize, usize, &str)> = vec![
        ("not a list", "      gates: {name: qa}\n".into(), 16, 14, "`gates` of job `d` must be a list of gates"),
        ("no name", one("{at: before_step, approval: {approvers: [a]}}"), 17, 11, "gate 1 of job `d` has no `name`"),
        ("bad name", one("{name: 'a b', at: before_step, approval: {approvers: [a]}}"), 17, 18, "invalid gate name `a b`"),
        (
            "a name twice",
            "      gates:\n        - {name: qa, at: before_step, approval: {approvers: [a]}}\n        - {name: qa, at: before_rollout, approval: {approvers: [a]}}\n".into(),
            18,
            18,
            "gate `qa` is named twice in job `d` (first at line 17, column 18)",
        ),
        ("no at", one("{name: qa, approval: {approvers: [a]}}"), 17, 11, "gate `qa` of job `d` has no `at`"),
        ("a bad at", one("{name: qa, at: before_stpe, approval: {approvers: [a]}}"), 17, 26, "`at` of gate `qa` of job `d` must be a point"),
        ("no kind", one("{name: qa, at: before_step}"), 17, 11, "says neither who nor what opens it"),
        (
            "both kinds",
            one("{name: qa, at: before_step, approval: {approvers: [a]}, confirm: {url: 'http://h/'}}"),
            17,
            67,
            "gate `qa` of job `d` has both `approval` and `confirm`",
        ),
        ("no approvers", one("{name: qa, at: before_step, approval: {approvers: []}}"), 17, 61, "names no approvers"),
        ("a bad approver", one("{name: qa, at: before_step, approval: {approvers: ['a b']}}"), 17, 62, "invalid approver `a b` in gate `qa`"),
        ("an unknown key", one("{name: qa, at: before_step, approval: {approvers: [a]}, when: x}"), 17, 67, "unknown key `when`"),
        ("no url", one("{name: qa, at: before_step, confirm: {timeout: 5m}}"), 17, 39, "the confirm of gate `qa` of job `d` has no `url`"),
        ("an ftp url", one("{name: qa, at: before_step, confirm: {url: 'ftp://h/'}}"), 17, 55, "must start with `http://` or `https://`"),
        ("an url with ${{", one("{name: qa, at: before_step, confirm: {url: 'http://${{ env.H }}/'}}"), 17, 62, "has `${{ }}`"),
        ("a long timeout", one("{name: qa, at: before_step, confirm: {url: 'http://h/', timeout: 25h}}"), 17, 76, "timeout `25h` in gate `qa` of job `d` is over the limit of 24h"),
        ("too many", too_many, 25, 11, "job `d` has 9 gates, over the limit of 8"),
    ];
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|(case, extra, line, column, message)| {
            refused_once(&format!("{GOOD}{extra}"), line, column, message).err().map(|why| format!("{case}: {why}"))
        })
        .collect();
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn waves_read_in_order_and_bad_ones_are_refused_where_the_mistake_is() {
    let text = format!(
        "{GOOD}      waves:\n        - {{name: canary, selector: {{group: canary}}}}\n        - {{name: rest}}\n"
    );
    let pipeline = parse("ci.yml", &text).unwrap_or_else(|err| panic!("{err}"));
    let waves = pipeline.job("d").unwrap().deploy.clone().unwrap().waves;
    let names: Vec<(&str, usize)> = waves.iter().map(|w| (w.name.as_str(), w.selector.len())).collect();
    assert_eq!(names, [("canary", 1), ("rest", 0)]);
    // Waves over environments: one that names an environment may take all
    // of its nodes, wherever it is in the list.
    let text = format!(
        "{GOOD}      waves:\n        - {{name: canary, selector: {{group: canary}}}}\n        - {{name: eu, environment: \
         prod-eu}}\n        - {{name: us, environment: prod-us, selector: {{tier: web}}}}\n"
    );
    let pipeline = parse("ci.yml", &text).unwrap_or_else(|err| panic!("{err}"));
    let waves = pipeline.job("d").unwrap().deploy.clone().unwrap().waves;
    let envs: Vec<(&str, Option<&str>, usize)> =
        waves.iter().map(|w| (w.name.as_str(), w.environment.as_deref(), w.selector.len())).collect();
    assert_eq!(envs, [("canary", None, 1), ("eu", Some("prod-eu"), 0), ("us", Some("prod-us"), 1)]);

    let two = |a: &str, b: &str| format!("      waves:\n        - {a}\n        - {b}\n");
    let cases: Vec<(&str, String, usize, usize, &str)> = vec![
        ("one wave", "      waves: [{name: all}]\n".into(), 16, 14, "`waves` of job `d` must list at least two waves"),
        ("not a list", "      waves: {name: all}\n".into(), 16, 14, "`waves` of job `d` must be a list of waves"),
        ("no name", two("{selector: {a: b}}", "{name: rest}"), 17, 11, "wave 1 of job `d` has no `name`"),
        ("a name twice", two("{name: a, selector: {a: b}}", "{name: a}"), 18, 18, "wave `a` is named twice in job `d`"),
        (
            "a bad name",
            two("{name: 'a b', selector: {a: b}}", "{name: rest}"),
            17,
            18,
            "invalid wave name `a b` in job `d`",
        ),
        ("no selector but last", two("{name: a}", "{name: rest}"), 17, 11, "wave `a` of job `d` has no `selector`"),
        ("an unknown key", two("{name: a, selector: {a: b}, nodes: 2}", "{name: rest}"), 17, 39, "unknown key `nodes`"),
        (
            "a bad environment",
            two("{name: a, environment: 'eu prod'}", "{name: rest}"),
            17,
            34,
            "`environment` of wave `a` of job `d` must be an environment's name, found `eu prod`",
        ),
        (
            "an environment that is a list",
            two("{name: a, environment: [eu]}", "{name: rest}"),
            17,
            34,
            "`environment` of wave `a` of job `d` must be an environment's name, found a list",
        ),
        (
            "blue-green",
            format!("      strategy: {{blue_green: {{}}}}\n{}", two("{name: a, selector: {a: b}}", "{name: rest}")),
            17,
            7,
            "rolls out blue-green, which switches every node at once, so it has no waves",
        ),
    ];
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|(case, extra, line, column, message)| {
            refused_once(&format!("{GOOD}{extra}"), line, column, message).err().map(|why| format!("{case}: {why}"))
        })
        .collect();
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}
