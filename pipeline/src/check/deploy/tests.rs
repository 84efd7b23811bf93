//! Deploy jobs read from files: good ones to the exact [`DeploySpec`], bad
//! ones each to one diagnostic at its line and column, with a hint.

use super::refused_once;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::deploy::{
    ArtifactRef, Canary, CanaryStep, DeploySpec, HealthCheck, HealthSpec, Hooks, OnNewer, Pause, Rolling, ServiceSpec,
    Share, Strategy,
};
use crate::{StepSpec, parse};

/// A pipeline with a build job and a deploy job `d`. Lines 9 to 15 are the
/// deploy's required keys; `deploy_extra` follows at line 16 (deploy keys,
/// six spaces in), then `job_extra` (job keys, four spaces in).
const GOOD: &str = "\
name: p
jobs:
  build:
    artifacts: {paths: [dist/, 'pkg/*.tar.gz']}
    steps: [{run: make}]
  d:
    needs: [build]
    deploy:
      environment: staging
      artifact: build:dist/app.tar.gz
      service:
        name: web
        command: ./app --port ${PORT}
        port: 8080
        health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}
";

/// The service of [`GOOD`], lines 11 to 15.
const SERVICE: &str = "      service:
        name: web
        command: ./app --port ${PORT}
        port: 8080
        health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}
";

/// [`GOOD`] with each `(from, to)` replaced once, then `extra` appended.
fn file(replace: &[(&str, &str)], extra: &str) -> String {
    let mut text = GOOD.to_owned();
    for (from, to) in replace {
        assert!(text.contains(from), "{from:?} is in the file");
        text = text.replacen(from, to, 1);
    }
    text + extra
}

/// The deploy of [`GOOD`] as it must come out.
fn good() -> DeploySpec {
    DeploySpec {
        environment: "staging".into(),
        artifact: ArtifactRef { job: "build".into(), path: "dist/app.tar.gz".into() },
        service: ServiceSpec {
            name: "web".into(),
            command: "./app --port ${PORT}".into(),
            env: BTreeMap::new(),
            port: 8080,
            health: HealthSpec {
                check: HealthCheck::Http("/healthz".into()),
                interval: Duration::from_secs(1),
                healthy_after: 3,
                unhealthy_after: 3,
                timeout: Duration::from_secs(60),
            },
        },
        strategy: Strategy::Rolling(Rolling { max_parallel: 1, max_unavailable: 0 }),
        progress_deadline: Duration::from_secs(600),
        auto_rollback: true,
        irreversible: false,
        on_newer: OnNewer::Queue,
        hooks: Hooks::default(),
        analysis: None,
        gates: Vec::new(),
        waves: Vec::new(),
    }
}

fn step(run: &str) -> StepSpec {
    StepSpec { name: None, run: run.into(), condition: None }
}

#[test]
fn good_deploy_jobs_parse_to_their_spec() {
    let status = crate::expr::Scope { allow_status: true, ..Default::default() };
    let health = "health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}";
    let secs = Duration::from_secs;
    // (case, replacements, lines appended, the spec)
    type Case = (&'static str, Vec<(&'static str, &'static str)>, &'static str, DeploySpec);
    let cases: Vec<Case> = vec![
        ("the defaults", vec![], "", good()),
        (
            "rolling, and every optional key",
            vec![],
            "      strategy: {rolling: {max_parallel: 2, max_unavailable: 1}}\n      progress_deadline: 1h30m\n      \
             auto_rollback: false\n      on_newer: supersede\n",
            DeploySpec {
                strategy: Strategy::Rolling(Rolling { max_parallel: 2, max_unavailable: 1 }),
                progress_deadline: secs(5400),
                auto_rollback: false,
                on_newer: OnNewer::Supersede,
                ..good()
            },
        ),
        ("rolling with nothing said", vec![], "      strategy: {rolling: }\n      on_newer: queue\n", good()),
        ("a one-way door", vec![], "      irreversible: true\n", DeploySpec { irreversible: true, ..good() }),
        (
            "canary with shares, counts and pauses",
            vec![],
            "      strategy:\n        canary:\n          steps: [{nodes: 10%}, {pause: 30s}, {nodes: 2}, {pause: manual}, \
             {nodes: 100%}]\n",
            DeploySpec {
                strategy: Strategy::Canary(Canary {
                    steps: vec![
                        CanaryStep::Nodes(Share::Percent(10)),
                        CanaryStep::Pause(Pause::For(secs(30))),
                        CanaryStep::Nodes(Share::Count(2)),
                        CanaryStep::Pause(Pause::Manual),
                        CanaryStep::Nodes(Share::Percent(100)),
                    ],
                }),
                ..good()
            },
        ),
        (
            "blue-green",
            vec![],
            "      strategy: {blue_green: {}}\n",
            DeploySpec { strategy: Strategy::BlueGreen, ..good() },
        ),
        (
            "a tcp health check, unhealthy_after, and the service's env",
            vec![(health, "health: {tcp: true, interval: 5s, healthy_after: 2, unhealthy_after: 5, timeout: 10s}")],
            "        env: {RUST_LOG: info, MODE: '${{ drover.branch }}'}\n",
            {
                let mut spec = good();
                spec.service.health = HealthSpec {
                    check: HealthCheck::Tcp,
                    interval: secs(5),
                    healthy_after: 2,
                    unhealthy_after: 5,
                    timeout: secs(10),
                };
                spec.service.env = [("MODE", "${{ drover.branch }}"), ("RUST_LOG", "info")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                spec
            },
        ),
        (
            "an exec health check",
            vec![(health, "health: {exec: ./check --ready, interval: 2s, healthy_after: 1, timeout: 2s}")],
            "",
            {
                let mut spec = good();
                spec.service.health = HealthSpec {
                    check: HealthCheck::Exec("./check --ready".into()),
                    interval: secs(2),
                    healthy_after: 1,
                    unhealthy_after: 3,
                    timeout: secs(2),
                };
                spec
            },
        ),
        (
            "hooks, read as steps",
            vec![],
            "      hooks:\n        before: [{run: ./migrate}]\n        after_batch: [{name: smoke, run: ./smoke}]\n        \
             after: [{run: ./notify}]\n        on_failure: [{run: ./page, if: always()}]\n",
            DeploySpec {
                hooks: Hooks {
                    before: vec![step("./migrate")],
                    after_batch: vec![StepSpec { name: Some("smoke".into()), ..step("./smoke") }],
                    after: vec![step("./notify")],
                    on_failure: vec![StepSpec {
                        condition: Some(crate::expr::parse_condition("always()", &status).unwrap()),
                        ..step("./page")
                    }],
                },
                ..good()
            },
        ),
        (
            "an artifact path in its normal form, under a glob of the job's paths",
            vec![("build:dist/app.tar.gz", "build:./pkg//v1.tar.gz/app")],
            "",
            DeploySpec { artifact: ArtifactRef { job: "build".into(), path: "pkg/v1.tar.gz/app".into() }, ..good() },
        ),
    ];
    for (case, replace, extra, want) in cases {
        let text = file(&replace, extra);
        let pipeline = parse("ci.yml", &text).unwrap_or_else(|err| panic!("{case}: {err}"));
        let job = pipeline.job("d").unwrap();
        assert_eq!(job.deploy.as_ref(), Some(&want), "{case}");
        assert!(job.steps.is_empty(), "{case}: a deploy job's steps are its hooks");
        assert!(pipeline.job("build").unwrap().deploy.is_none(), "{case}");
        // What the store keeps reads back the same.
        let json = serde_json::to_string(&pipeline).unwrap();
        assert_eq!(serde_json::from_str::<crate::Pipeline>(&json).unwrap(), pipeline, "{case}");
    }
}

#[test]
fn a_job_without_deploy_is_stored_as_before() {
    let pipeline = parse("ci.yml", GOOD).unwrap();
    let json = serde_json::to_value(pipeline.job("build").unwrap()).unwrap();
    assert!(json.get("deploy").is_none(), "{json}");
    let deploy = serde_json::to_value(pipeline.job("d").unwrap()).unwrap();
    assert!(deploy["deploy"]["hooks"].is_null(), "no hooks, no key: {deploy}");
}

#[test]
fn bad_deploy_jobs_are_refused_where_the_mistake_is() {
    let health = "health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}";
    let twenty_one = format!("      strategy: {{canary: {{steps: [{}]}}}}\n", ["{nodes: 1}"; 21].join(", "));
    // (case, replacements, lines appended, line, column, message)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, usize, usize, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "an unknown key",
            vec![],
            "      strategie: {blue_green: {}}\n",
            16,
            7,
            "unknown key `strategie` in the deploy of job `d`",
        ),
        (
            "no environment",
            vec![("      environment: staging\n", "")],
            "",
            8,
            5,
            "the deploy of job `d` has no `environment`",
        ),
        (
            "no artifact",
            vec![("      artifact: build:dist/app.tar.gz\n", "")],
            "",
            8,
            5,
            "the deploy of job `d` has no `artifact`",
        ),
        ("no service", vec![(SERVICE, "")], "", 8, 5, "the deploy of job `d` has no `service`"),
        (
            "an artifact of a matrix job",
            vec![("    steps: [{run: make}]\n  d:", "    matrix: {os: [a, b]}\n    steps: [{run: make}]\n  d:")],
            "",
            11,
            17,
            "a matrix job: each of its 2 expansions packs its own",
        ),
        ("an invalid environment", vec![("staging", "stag ing")], "", 9, 20, "invalid environment name `stag ing`"),
        (
            "an artifact of a job not in needs",
            vec![("needs: [build]", "needs: []")],
            "",
            10,
            17,
            "the artifact of job `d` comes from `build`, which is not in its `needs`",
        ),
        (
            "an artifact of a job not defined",
            vec![("build:dist", "biuld:dist")],
            "",
            10,
            17,
            "comes from `biuld`, which is not defined",
        ),
        (
            "an artifact of a job without artifacts",
            vec![("    artifacts: {paths: [dist/, 'pkg/*.tar.gz']}\n", "    env: {A: b}\n")],
            "",
            10,
            17,
            "job `build` has no `artifacts:`, so job `d` has nothing to deploy",
        ),
        (
            "an artifact whose job's artifacts are left out",
            vec![("needs: [build]", "needs: [{job: build, artifacts: false}]")],
            "",
            10,
            17,
            "its `needs` leaves those artifacts out",
        ),
        (
            "an artifact with no job",
            vec![("build:dist/app.tar.gz", "dist/app.tar.gz")],
            "",
            10,
            17,
            "`artifact` `dist/app.tar.gz` in the deploy of job `d` names no job",
        ),
        (
            "`..` in the artifact path",
            vec![("build:dist/app.tar.gz", "build:dist/../app")],
            "",
            10,
            28,
            "leaves the artifact with `..`",
        ),
        (
            "an absolute artifact path",
            vec![("build:dist/app.tar.gz", "build:/dist/app")],
            "",
            10,
            23,
            "the artifact path `/dist/app` of job `d` is absolute",
        ),
        ("a glob as the artifact", vec![("build:dist/app.tar.gz", "build:dist/*.gz")], "", 10, 28, "is a glob"),
        (
            "an artifact path its job does not pack",
            vec![("build:dist/app.tar.gz", "build:src/app")],
            "",
            10,
            23,
            "`src/app` is not among the artifacts of job `build`",
        ),
        ("an invalid service name", vec![("name: web", "name: -web")], "", 12, 15, "invalid service name `-web`"),
        (
            "an empty command",
            vec![("./app --port ${PORT}", "' '")],
            "",
            13,
            18,
            "`command` of service `web` in job `d` is empty",
        ),
        (
            "PORT in the service's env",
            vec![],
            "        env: {PORT: '80'}\n",
            16,
            15,
            "env variable `PORT` of service `web` in job `d` is Drover's",
        ),
        (
            "port 0",
            vec![("port: 8080", "port: 0")],
            "",
            14,
            15,
            "`port` of service `web` in job `d` must be 1 to 65535, found 0",
        ),
        ("port 70000", vec![("port: 8080", "port: 70000")], "", 14, 15, "must be 1 to 65535, found 70000"),
        (
            "a port that is text",
            vec![("port: 8080", "port: http")],
            "",
            14,
            15,
            "must be a whole number from 1 to 65535",
        ),
        (
            "two health kinds",
            vec![("{http: /healthz,", "{http: /healthz, tcp: true,")],
            "",
            15,
            34,
            "the health check of service `web` in job `d` has both `http` and `tcp`",
        ),
        (
            "no health kind",
            vec![(health, "health: {interval: 1s, healthy_after: 3, timeout: 60s}")],
            "",
            15,
            9,
            "the health check of service `web` in job `d` names no check",
        ),
        ("an http path without /", vec![("/healthz", "healthz")], "", 15, 24, "must start with `/`"),
        ("tcp: false", vec![("http: /healthz", "tcp: false")], "", 15, 23, "`tcp` of the health check"),
        (
            "a bad interval",
            vec![("interval: 1s", "interval: 1x")],
            "",
            15,
            44,
            "invalid health interval `1x` in job `d`",
        ),
        (
            "an interval without a unit",
            vec![("interval: 1s", "interval: 5")],
            "",
            15,
            44,
            "health interval `5` in job `d` has no unit",
        ),
        ("an interval over the limit", vec![("interval: 1s", "interval: 2h")], "", 15, 44, "over the limit of 1h"),
        ("healthy_after 0", vec![("healthy_after: 3", "healthy_after: 0")], "", 15, 63, "must be 1 to 100, found 0"),
        (
            "a timeout too short for its checks",
            vec![("timeout: 60s", "timeout: 2s")],
            "",
            15,
            75,
            "waits 2s for a node to become healthy, less than 3 checks every 1s take",
        ),
        (
            "no timeout",
            vec![(", timeout: 60s", "")],
            "",
            15,
            9,
            "the health check of service `web` in job `d` has no `timeout`",
        ),
        (
            "a bad progress deadline",
            vec![],
            "      progress_deadline: 25h\n",
            16,
            26,
            "progress_deadline `25h` in job `d` is over the limit of 24h",
        ),
        ("a progress deadline of zero", vec![], "      progress_deadline: 0s\n", 16, 26, "must be longer than zero"),
        (
            "auto_rollback not a boolean",
            vec![],
            "      auto_rollback: yes\n",
            16,
            22,
            "`auto_rollback` in the deploy of job `d` must be true or false",
        ),
        (
            "a bad on_newer",
            vec![],
            "      on_newer: replace\n",
            16,
            17,
            "`on_newer` in the deploy of job `d` must be `queue` or `supersede`",
        ),
        (
            "an unknown strategy",
            vec![],
            "      strategy: {canery: {steps: [{nodes: 10%}]}}\n",
            16,
            18,
            "unknown key `canery` in the strategy of job `d`",
        ),
        (
            "a strategy as a word",
            vec![],
            "      strategy: blue_green\n",
            16,
            17,
            "`strategy` in the deploy of job `d` must be a mapping",
        ),
        (
            "two strategies",
            vec![],
            "      strategy: {rolling: {}, blue_green: {}}\n",
            16,
            31,
            "names both `rolling` and `blue_green`",
        ),
        (
            "max_unavailable over max_parallel",
            vec![],
            "      strategy: {rolling: {max_parallel: 2, max_unavailable: 3}}\n",
            16,
            62,
            "`max_unavailable` of the rolling strategy of job `d` must be 0 to 2, found 3",
        ),
        (
            "blue-green with settings",
            vec![],
            "      strategy: {blue_green: {switch: now}}\n",
            16,
            30,
            "`blue_green` in the deploy of job `d` takes no settings",
        ),
        (
            "a canary starting with a pause",
            vec![],
            "      strategy: {canary: {steps: [{pause: 30s}, {nodes: 50%}]}}\n",
            16,
            35,
            "the canary of job `d` starts with a pause",
        ),
        (
            "a share of 0%",
            vec![],
            "      strategy: {canary: {steps: [{nodes: 0%}]}}\n",
            16,
            43,
            "`nodes: 0%` in canary step 1 of job `d` must be from 1% to 100%",
        ),
        (
            "a share of 101%",
            vec![],
            "      strategy: {canary: {steps: [{nodes: 10%}, {nodes: 101%}]}}\n",
            16,
            57,
            "`nodes: 101%` in canary step 2",
        ),
        (
            "a count of 0",
            vec![],
            "      strategy: {canary: {steps: [{nodes: 0}]}}\n",
            16,
            43,
            "`nodes: 0` in canary step 1 of job `d` must be at least 1",
        ),
        (
            "a bad pause",
            vec![],
            "      strategy: {canary: {steps: [{nodes: 1}, {pause: later}]}}\n",
            16,
            55,
            "invalid pause `later` in job `d`",
        ),
        (
            "a step with both",
            vec![],
            "      strategy: {canary: {steps: [{nodes: 1, pause: 1s}]}}\n",
            16,
            46,
            "canary step 1 of job `d` has both `nodes` and `pause`",
        ),
        (
            "too many canary steps",
            vec![],
            twenty_one.as_str(),
            16,
            275,
            "the canary of job `d` has 21 steps, over the limit of 20",
        ),
        (
            "an unknown hook",
            vec![],
            "      hooks: {beforehand: [{run: x}]}\n",
            16,
            15,
            "unknown key `beforehand` in the hooks of job `d`",
        ),
        ("an empty hook", vec![], "      hooks: {after: []}\n", 16, 22, "hook `after` of job `d` has no steps"),
        (
            "a hook step without run",
            vec![],
            "      hooks: {before: [{name: x}]}\n",
            16,
            24,
            "step 1 of job `d` hook `before` has no `run` command",
        ),
        (
            "a deploy job with steps",
            vec![],
            "    steps: [{run: make}]\n",
            16,
            5,
            "job `d` deploys, so it cannot have `steps`",
        ),
        (
            "a deploy job with runs-on",
            vec![],
            "    runs-on: {os: linux}\n",
            16,
            5,
            "job `d` deploys, so it cannot have `runs-on`",
        ),
        (
            "a deploy job with retries",
            vec![],
            "    retries: 2\n",
            16,
            5,
            "job `d` deploys, so it cannot have `retries`",
        ),
        (
            "a deploy job with a matrix",
            vec![],
            "    matrix: {os: [a, b]}\n",
            16,
            5,
            "job `d` deploys, so it cannot have `matrix`",
        ),
        (
            "a deploy job with a cache",
            vec![],
            "    cache: {key: k, paths: [x]}\n",
            16,
            5,
            "job `d` deploys, so it cannot have `cache`",
        ),
        (
            "a deploy job with artifacts",
            vec![],
            "    artifacts: {paths: [x]}\n",
            16,
            5,
            "job `d` deploys, so it cannot have `artifacts`",
        ),
    ];
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|(case, replace, extra, line, column, message)| {
            refused_once(&file(&replace, extra), line, column, message).err().map(|why| format!("{case}: {why}"))
        })
        .collect();
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn hints_say_what_was_meant() {
    // (case, lines appended, the hint)
    let cases = [
        ("a misspelt key", "      strategie: {blue_green: {}}\n", "did you mean `strategy`?"),
        ("a misspelt strategy", "      strategy: {canery: {steps: [{nodes: 1}]}}\n", "did you mean `canary`?"),
        ("a misspelt on_newer", "      on_newer: supersed\n", "did you mean `supersede`?"),
    ];
    for (case, extra, hint) in cases {
        let err = parse("ci.yml", &file(&[], extra)).expect_err(case);
        let got = err.diagnostics[0].hint.as_deref().unwrap_or_default();
        assert!(got.contains(hint), "{case}: {err}");
    }
    let err = parse("ci.yml", &file(&[("build:dist", "biuld:dist")], "")).unwrap_err();
    assert!(err.to_string().contains("did you mean `build`?"), "{err}");
}

#[test]
fn every_mistake_in_a_deploy_is_reported_in_one_pass() {
    let text = file(
        &[("staging", "-staging"), ("port: 8080", "port: 0"), ("/healthz", "healthz")],
        "      strategy: {canary: {steps: [{pause: manual}, {nodes: 0%}]}}\n      on_newer: later\n    retries: 1\n",
    );
    let err = parse("ci.yml", &text).unwrap_err();
    let got: Vec<(usize, usize)> = err.diagnostics.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(got, [(9, 20), (14, 15), (15, 24), (16, 35), (16, 60), (17, 17), (18, 5)], "{err}");
}
