//! Desired-state files read from text: good ones to the exact
//! [`ServiceFile`], bad ones each to one diagnostic at its line and column,
//! with a hint; and the files of a directory checked together.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::app::{
    AppArtifact, DesiredState, NodeSelection, ServiceFile, UpdateSpec, UpdateWrite, parse_desired, parse_service_file,
};
use crate::deploy::{
    Analysis, ArtifactRef, Canary, CanaryStep, DeploySpec, HealthCheck, HealthSpec, Hooks, Metric, OnNewer, Pause,
    Provider, Rolling, ServiceSpec, Share, Strategy,
};
use crate::{MAX_APP_SERVICES, MAX_FILE_BYTES, PipelineError, StepSpec};

const FILE: &str = "deploy/web.yaml";

/// A good file with only the required keys, lines 1 to 6; lines appended
/// start at line 7.
const GOOD: &str = "\
artifact: {run: 42, job: build, path: dist/app.tar.gz}
service:
  name: web
  command: python3 -m http.server ${PORT}
  port: 8080
  health: {http: /, interval: 1s, healthy_after: 2, timeout: 30s}
";

/// The service of [`GOOD`], lines 2 to 6.
const SERVICE: &str = "\
service:
  name: web
  command: python3 -m http.server ${PORT}
  port: 8080
  health: {http: /, interval: 1s, healthy_after: 2, timeout: 30s}
";

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// [`GOOD`] with each `(from, to)` replaced once, then `extra` appended.
fn file(replace: &[(&str, &str)], extra: &str) -> String {
    let mut text = GOOD.to_owned();
    for (from, to) in replace {
        assert!(text.contains(from), "{from:?} is in the file");
        text = text.replacen(from, to, 1);
    }
    text + extra
}

/// [`GOOD`] as it must come out.
fn good() -> ServiceFile {
    ServiceFile {
        file: FILE.into(),
        artifact: AppArtifact::Run { run: 42, job: "build".into(), path: "dist/app.tar.gz".into(), sha256: None },
        update: None,
        service: ServiceSpec {
            name: "web".into(),
            command: "python3 -m http.server ${PORT}".into(),
            env: BTreeMap::new(),
            port: 8080,
            health: HealthSpec {
                check: HealthCheck::Http("/".into()),
                interval: Duration::from_secs(1),
                healthy_after: 2,
                unhealthy_after: 3,
                timeout: Duration::from_secs(30),
            },
        },
        nodes: NodeSelection::default(),
        strategy: Strategy::Rolling(Rolling { max_parallel: 1, max_unavailable: 0 }),
        progress_deadline: Duration::from_secs(600),
        auto_rollback: true,
        irreversible: false,
        hooks: Hooks::default(),
        analysis: None,
        gates: Vec::new(),
        waves: Vec::new(),
    }
}

fn step(run: &str) -> StepSpec {
    StepSpec { name: None, run: run.into(), condition: None }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn good_files_parse_to_their_service() {
    let artifact = "artifact: {run: 42, job: build, path: dist/app.tar.gz}";
    let url = "https://example.com/releases/app-1.2.tar.gz?token=x#top";
    // (case, replacements, lines appended, the file)
    type Case = (&'static str, Vec<(&'static str, String)>, String, ServiceFile);
    let cases: Vec<Case> = vec![
        ("the defaults", vec![], String::new(), good()),
        (
            "every optional key",
            vec![(artifact, format!("artifact: {{run: 7, job: build.x, path: ./dist//app.tar.gz, sha256: {SHA}}}"))],
            "nodes: {selector: {role: web, zone: a}, count: 2}\n\
             strategy: {canary: {steps: [{nodes: 1}, {pause: manual}, {nodes: 100%}]}}\n\
             progress_deadline: 1h\n\
             auto_rollback: false\n\
             hooks: {before: [{run: ./migrate}], after_batch: [{name: smoke, run: ./smoke --port $PORT}]}\n"
                .to_owned(),
            ServiceFile {
                artifact: AppArtifact::Run {
                    run: 7,
                    job: "build.x".into(),
                    path: "dist/app.tar.gz".into(),
                    sha256: Some(SHA.into()),
                },
                nodes: NodeSelection { selector: labels(&[("role", "web"), ("zone", "a")]), count: Some(2) },
                strategy: Strategy::Canary(Canary {
                    steps: vec![
                        CanaryStep::Nodes(Share::Count(1)),
                        CanaryStep::Pause(Pause::Manual),
                        CanaryStep::Nodes(Share::Percent(100)),
                    ],
                }),
                progress_deadline: Duration::from_secs(3600),
                auto_rollback: false,
                hooks: Hooks {
                    before: vec![step("./migrate")],
                    after_batch: vec![StepSpec { name: Some("smoke".into()), ..step("./smoke --port $PORT") }],
                    ..Hooks::default()
                },
                ..good()
            },
        ),
        (
            "an artifact by URL, and the service's env",
            vec![(artifact, format!("artifact: {{url: '{url}', sha256: {SHA}}}"))],
            "  env: {RUST_LOG: info}\n".to_owned(),
            {
                let mut want =
                    ServiceFile { artifact: AppArtifact::Url { url: url.into(), sha256: SHA.into() }, ..good() };
                want.service.env = labels(&[("RUST_LOG", "info")]);
                want
            },
        ),
        (
            "nodes with a count only, and blue-green",
            vec![],
            "nodes: {count: 1000}\nstrategy: {blue_green: {}}\n".to_owned(),
            ServiceFile {
                nodes: NodeSelection { selector: BTreeMap::new(), count: Some(1000) },
                strategy: Strategy::BlueGreen,
                ..good()
            },
        ),
        ("nodes with nothing said", vec![], "nodes: {}\n".to_owned(), good()),
        (
            "an analysis, read as a deploy's",
            vec![],
            "analysis:\n  metrics:\n    - {name: ready, http: {url: 'http://10.0.0.5:9000/stats', json_path: $.ready}, \
             success: result == true}\n"
                .to_owned(),
            ServiceFile {
                analysis: Some(Analysis {
                    metrics: vec![Metric {
                        name: "ready".into(),
                        provider: Provider::Http {
                            url: "http://10.0.0.5:9000/stats".into(),
                            json_path: Some("$.ready".into()),
                        },
                        interval: Duration::from_secs(10),
                        count: 1,
                        initial_delay: Duration::ZERO,
                        success: Some(
                            crate::expr::parse(
                                "result == true",
                                &crate::expr::Scope { result: true, ..Default::default() },
                            )
                            .unwrap(),
                        ),
                        failure: None,
                        failure_limit: 0,
                        inconclusive_limit: 0,
                        compare: None,
                    }],
                    run: Default::default(),
                }),
                ..good()
            },
        ),
        (
            "an update with every key",
            vec![],
            "update: {pipeline: Web build (nightly), job: package, branches: [main, 'release/*'], write: branch}\n"
                .to_owned(),
            ServiceFile {
                update: Some(UpdateSpec {
                    pipeline: "Web build (nightly)".into(),
                    job: "package".into(),
                    branches: vec!["main".into(), "release/*".into()],
                    write: UpdateWrite::Branch,
                }),
                ..good()
            },
        ),
        (
            "an update of the artifact's job, on any branch, as commits",
            vec![],
            "update:\n  pipeline: web-build\n  branches: 'release/**'\n".to_owned(),
            ServiceFile {
                update: Some(UpdateSpec {
                    pipeline: "web-build".into(),
                    job: "build".into(),
                    branches: vec!["release/**".into()],
                    write: UpdateWrite::Commit,
                }),
                ..good()
            },
        ),
    ];
    for (case, replace, extra, want) in cases {
        let replace: Vec<(&str, &str)> = replace.iter().map(|(from, to)| (*from, to.as_str())).collect();
        let text = file(&replace, &extra);
        let got = parse_service_file(FILE, &text).unwrap_or_else(|err| panic!("{case}: {err}"));
        assert_eq!(got, want, "{case}");
        // What the store keeps reads back the same.
        let json = serde_json::to_string(&got).unwrap();
        assert_eq!(serde_json::from_str::<ServiceFile>(&json).unwrap(), got, "{case}");
    }
}

#[test]
fn a_service_file_gives_the_deploy_a_sync_runs() {
    let spec = good().deploy_spec("production");
    let want = DeploySpec {
        environment: "production".into(),
        artifact: ArtifactRef { job: "build".into(), path: "dist/app.tar.gz".into() },
        service: good().service,
        strategy: good().strategy,
        progress_deadline: Duration::from_secs(600),
        auto_rollback: true,
        irreversible: false,
        on_newer: OnNewer::Supersede,
        hooks: Hooks::default(),
        analysis: None,
        gates: Vec::new(),
        waves: Vec::new(),
    };
    assert_eq!(spec, want);
    let by_url = ServiceFile {
        artifact: AppArtifact::Url { url: "https://example.com/v1/app.tgz?x=1".into(), sha256: SHA.into() },
        ..good()
    };
    assert_eq!(by_url.deploy_spec("e").artifact, ArtifactRef { job: String::new(), path: "app.tgz".into() });
}

#[test]
fn bad_files_are_refused_where_the_mistake_is() {
    let artifact = "artifact: {run: 42, job: build, path: dist/app.tar.gz}";
    let health = "health: {http: /, interval: 1s, healthy_after: 2, timeout: 30s}";
    let long_url = format!("artifact: {{url: 'https://example.com/{}.tgz', sha256: {SHA}}}", "a".repeat(2040));
    let url_sha = format!("artifact: {{url: https://example.com/app.tgz, sha256: {SHA}, job: build}}");
    let by_url = |url: &str| format!("artifact: {{url: '{url}', sha256: {SHA}}}");
    let (ftp, no_file, no_host) =
        (by_url("ftp://example.com/app.tgz"), by_url("https://example.com/"), by_url("https:///app.tgz"));
    let spaced = by_url("https://example.com/my app.tgz");
    let url_app = by_url("https://example.com/app.tgz");
    let long_pipeline = format!("update: {{pipeline: {}}}\n", "a".repeat(101));
    // (case, replacements, lines appended, line, column, message)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, usize, usize, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("an unknown key", vec![], "strateg: {blue_green: {}}\n", 7, 1, "unknown key `strateg` in `deploy/web.yaml`"),
        (
            "an environment",
            vec![],
            "environment: staging\n",
            7,
            1,
            "`deploy/web.yaml` is a desired-state file, which has no `environment`",
        ),
        ("on_newer", vec![], "on_newer: queue\n", 7, 1, "which has no `on_newer`: a newer commit always replaces"),
        (
            "a wave in another environment",
            vec![],
            "waves: [{name: a, selector: {x: y}}, {name: eu, environment: prod-eu}]\n",
            7,
            49,
            "wave `eu` of `deploy/web.yaml` names an environment, but an app deploys to its own environment only",
        ),
        ("no artifact", vec![(artifact, "")], "", 2, 1, "`deploy/web.yaml` has no `artifact`"),
        ("no service", vec![(SERVICE, "")], "", 1, 1, "`deploy/web.yaml` has no `service`"),
        (
            "an artifact as a deploy job writes it",
            vec![(artifact, "artifact: build:dist/app.tar.gz")],
            "",
            1,
            11,
            "`artifact` of `deploy/web.yaml` must be a mapping, found",
        ),
        ("an empty artifact", vec![(artifact, "artifact:")], "", 1, 1, "names neither a `run` nor a `url`"),
        (
            "an artifact with neither run nor url",
            vec![("{run: 42, ", "{")],
            "",
            1,
            1,
            "the artifact of `deploy/web.yaml` names neither a `run` nor a `url`",
        ),
        (
            "an artifact with both run and url",
            vec![("path: dist/app.tar.gz}", "path: dist/app.tar.gz, url: 'https://e.com/a'}")],
            "",
            1,
            56,
            "the artifact of `deploy/web.yaml` has both `run` and `url`",
        ),
        (
            "run 0",
            vec![("run: 42", "run: 0")],
            "",
            1,
            17,
            "`run` of the artifact of `deploy/web.yaml` must be a run number",
        ),
        ("a negative run", vec![("run: 42", "run: -3")], "", 1, 17, "must be a run number, 1 or more"),
        ("a run that is text", vec![("run: 42", "run: last")], "", 1, 17, "must be a run number"),
        ("an invalid job", vec![("job: build", "job: -build")], "", 1, 26, "invalid job name `-build` in the artifact"),
        ("no job", vec![("job: build, ", "")], "", 1, 1, "names a run but no `job`"),
        ("no path", vec![(", path: dist/app.tar.gz", "")], "", 1, 1, "names a run but no `path`"),
        (
            "`..` in the path",
            vec![("dist/app.tar.gz", "dist/../app")],
            "",
            1,
            44,
            "the artifact path `dist/../app` of `deploy/web.yaml` leaves the artifact with `..`",
        ),
        ("an absolute path", vec![("dist/app.tar.gz", "/dist/app")], "", 1, 39, "is absolute"),
        ("a glob as the path", vec![("dist/app.tar.gz", "dist/*.gz")], "", 1, 44, "is a glob"),
        ("a path that names no file", vec![("dist/app.tar.gz", "./")], "", 1, 39, "`path` `./` of the artifact"),
        (
            "a short sha256",
            vec![("path: dist/app.tar.gz}", "path: dist/app.tar.gz, sha256: abc}")],
            "",
            1,
            64,
            "`sha256` of the artifact of `deploy/web.yaml` must be 64 lower-case hex digits, found `abc`",
        ),
        (
            "a url without sha256",
            vec![(artifact, "artifact: {url: https://example.com/app.tgz}")],
            "",
            1,
            12,
            "the artifact of `deploy/web.yaml` has a `url` but no `sha256`",
        ),
        (
            "a url of another scheme",
            vec![(artifact, ftp.as_str())],
            "",
            1,
            18,
            "the `url` of the artifact of `deploy/web.yaml` must start with `http://` or `https://`",
        ),
        ("a url with no host", vec![(artifact, no_host.as_str())], "", 1, 18, "names no host"),
        ("a url with a space", vec![(artifact, spaced.as_str())], "", 1, 40, "has a space or a control character"),
        (
            "a url with a job",
            vec![(artifact, url_sha.as_str())],
            "",
            1,
            120,
            "the artifact of `deploy/web.yaml` is the file at its `url`, so it has no `job`",
        ),
        (
            "a url that is too long",
            vec![(artifact, long_url.as_str())],
            "",
            1,
            18,
            "the `url` of the artifact of `deploy/web.yaml` is over the limit of 2048 characters",
        ),
        (
            "a url with no file",
            vec![(artifact, no_file.as_str())],
            "",
            1,
            18,
            "names no file: its path must end in the file's name",
        ),
        ("nodes as a word", vec![], "nodes: all\n", 7, 8, "`nodes` of `deploy/web.yaml` must be a mapping"),
        ("a count of 0", vec![], "nodes: {count: 0}\n", 7, 16, "`nodes: count` of `deploy/web.yaml` must be 1 to 1000"),
        ("a count over the limit", vec![], "nodes: {count: 1001}\n", 7, 16, "must be 1 to 1000, found 1001"),
        ("an unknown nodes key", vec![], "nodes: {selectors: {a: b}}\n", 7, 9, "unknown key `selectors` in the nodes"),
        (
            "a selector that is a list",
            vec![],
            "nodes: {selector: [web]}\n",
            7,
            19,
            "`nodes: selector` of `deploy/web.yaml` must be a mapping of agent labels",
        ),
        ("an empty label value", vec![], "nodes: {selector: {role: ''}}\n", 7, 26, "label `role` in `nodes: selector`"),
        (
            "an expression in a label",
            vec![],
            "nodes: {selector: {role: '${{ drover.branch }}'}}\n",
            7,
            27,
            "label `role` in `nodes: selector` of `deploy/web.yaml` has `${{ }}`, but a desired-state file is not a \
             pipeline",
        ),
        (
            "an expression in the command",
            vec![("http.server ${PORT}", "http.server ${{ drover.commit }}")],
            "",
            4,
            35,
            "`command` of service `web` in `deploy/web.yaml` has `${{ }}`, but a desired-state file is not a pipeline",
        ),
        (
            "an expression in the env",
            vec![],
            "  env: {A: 'x-${{ env.B }}'}\n",
            7,
            15,
            "env variable `A` in service `web` of `deploy/web.yaml` has `${{ }}`",
        ),
        (
            "an expression in a health exec",
            vec![(health, "health: {exec: 'check ${{ x }}', interval: 1s, healthy_after: 2, timeout: 30s}")],
            "",
            6,
            25,
            "`exec` of the health check of service `web` in `deploy/web.yaml` has `${{ }}`",
        ),
        (
            "an expression in a hook",
            vec![],
            "hooks: {before: [{run: './migrate ${{ drover.tag }}'}]}\n",
            7,
            35,
            "`run` in step 1 of `deploy/web.yaml` hook `before` has `${{ }}`",
        ),
        (
            "an if: in a hook",
            vec![],
            "hooks: {after: [{run: ./notify, if: failure()}]}\n",
            7,
            33,
            "condition of step 1 of `deploy/web.yaml` hook `after` cannot be read",
        ),
        (
            "a hook step without run",
            vec![],
            "hooks: {before: [{name: x}]}\n",
            7,
            18,
            "step 1 of `deploy/web.yaml` hook `before` has no `run` command",
        ),
        ("an empty hook", vec![], "hooks: {after: []}\n", 7, 16, "hook `after` of `deploy/web.yaml` has no steps"),
        ("no port", vec![("  port: 8080\n", "")], "", 2, 1, "the service of `deploy/web.yaml` has no `port`"),
        ("an invalid service name", vec![("name: web", "name: -web")], "", 3, 9, "invalid service name `-web`"),
        (
            "PORT in the env",
            vec![],
            "  env: {PORT: '80'}\n",
            7,
            9,
            "env variable `PORT` of service `web` in `deploy/web.yaml` is Drover's",
        ),
        (
            "a timeout too short",
            vec![("timeout: 30s", "timeout: 1s")],
            "",
            6,
            62,
            "waits 1s for a node to become healthy, less than 2 checks every 1s take",
        ),
        (
            "a bad strategy",
            vec![],
            "strategy: {canary: {steps: [{pause: 1s}]}}\n",
            7,
            29,
            "the canary of `deploy/web.yaml` starts with a pause",
        ),
        (
            "a progress deadline over the limit",
            vec![],
            "progress_deadline: 25h\n",
            7,
            20,
            "progress_deadline `25h` in `deploy/web.yaml` is over the limit of 24h",
        ),
        ("a bad auto_rollback", vec![], "auto_rollback: yes\n", 7, 16, "`auto_rollback` in `deploy/web.yaml` must be"),
        ("an update as a word", vec![], "update: web-build\n", 7, 9, "`update` of `deploy/web.yaml` must be a mapping"),
        ("an empty update", vec![], "update:\n", 7, 1, "the update of `deploy/web.yaml` names no `pipeline`"),
        ("an update without pipeline", vec![], "update: {job: build}\n", 7, 1, "names no `pipeline`"),
        (
            "an update's unknown key",
            vec![],
            "update: {pipeline: p, branch: main}\n",
            7,
            23,
            "unknown key `branch` in the update of `deploy/web.yaml`",
        ),
        (
            "an update's pipeline name too long",
            vec![],
            long_pipeline.as_str(),
            7,
            20,
            "invalid pipeline name `aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...` in the update of `deploy/web.yaml`",
        ),
        ("an update's pipeline as a list", vec![], "update: {pipeline: [a]}\n", 7, 20, "invalid pipeline name a list"),
        ("an update's pipeline blank", vec![], "update: {pipeline: ' '}\n", 7, 20, "invalid pipeline name ` `"),
        (
            "an update's bad job",
            vec![],
            "update: {pipeline: p, job: -x}\n",
            7,
            28,
            "invalid job name `-x` in the update of `deploy/web.yaml`",
        ),
        (
            "an update's bad glob",
            vec![],
            "update: {pipeline: p, branches: [main, 'release/[']}\n",
            7,
            40,
            "invalid pattern `release/[` in `branches` of the update of `deploy/web.yaml`",
        ),
        (
            "an update's empty branches",
            vec![],
            "update: {pipeline: p, branches: []}\n",
            7,
            33,
            "`branches` in the update of `deploy/web.yaml` lists no patterns",
        ),
        (
            "an update's branches as a mapping",
            vec![],
            "update: {pipeline: p, branches: {main: x}}\n",
            7,
            33,
            "`branches` in the update of `deploy/web.yaml` must be a list of patterns, found a mapping",
        ),
        (
            "an update's unknown write",
            vec![],
            "update: {pipeline: p, write: merge}\n",
            7,
            30,
            "`write` of the update of `deploy/web.yaml` must be `commit` or `branch`, found `merge`",
        ),
        (
            "an update of a url artifact",
            vec![(artifact, url_app.as_str())],
            "update: {pipeline: p}\n",
            7,
            1,
            "`update` of `deploy/web.yaml` follows a pipeline's builds, but its artifact is a `url`",
        ),
    ];
    let mut failures = Vec::new();
    for (case, replace, extra, line, column, message) in cases {
        let text = file(&replace, extra);
        let err = match parse_service_file(FILE, &text) {
            Ok(_) => {
                failures.push(format!("{case}: parsed"));
                continue;
            }
            Err(err) => err,
        };
        if let Some(problem) = one(&err, FILE, line, column, message) {
            failures.push(format!("{case}: {problem}"));
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

/// Why `err` is not one diagnostic of `file` at `line:column` whose message
/// holds `message`, with a hint.
fn one(err: &PipelineError, file: &str, line: usize, column: usize, message: &str) -> Option<String> {
    match err.diagnostics.as_slice() {
        [d] if d.file == file
            && (d.line, d.column) == (line, column)
            && d.message.contains(message)
            && d.hint.is_some() =>
        {
            None
        }
        _ => Some(format!("expected {file}:{line}:{column} `{message}` with a hint, got:\n{err}")),
    }
}

#[test]
fn whole_files_that_are_wrong_are_refused() {
    let too_big = format!("#{}\n", "x".repeat(MAX_FILE_BYTES));
    // (case, the file, line, column, message)
    let cases: Vec<(&str, &str, usize, usize, &str)> = vec![
        ("an empty file", "", 1, 1, "`deploy/web.yaml` is empty"),
        ("only comments", "# nothing yet\n", 1, 1, "`deploy/web.yaml` is empty"),
        ("a list", "- web\n", 1, 1, "a desired-state file must be a mapping, found a list"),
        ("a word", "web\n", 1, 1, "a desired-state file must be a mapping"),
        ("invalid YAML", "service: name: web\n", 1, 14, "invalid YAML"),
        ("too big", too_big.as_str(), 1, 1, "desired-state file is 1048578 bytes, over the limit of 1048576 bytes"),
    ];
    let mut failures = Vec::new();
    for (case, text, line, column, message) in cases {
        match parse_service_file(FILE, text) {
            Ok(_) => failures.push(format!("{case}: parsed")),
            Err(err) => failures.extend(one(&err, FILE, line, column, message).map(|p| format!("{case}: {p}"))),
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn hints_say_what_was_meant() {
    let artifact = "artifact: {run: 42, job: build, path: dist/app.tar.gz}";
    let upper = format!("path: dist/app.tar.gz, sha256: {}}}", SHA.to_uppercase());
    let by_url = format!("artifact: {{url: 'https://e.com/a.tgz', sha256: {SHA}}}");
    // (case, replacements, lines appended, the hint)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("a misspelt key", vec![], "strateg: {blue_green: {}}\n", "did you mean `strategy`?"),
        ("a deploy job's artifact", vec![(artifact, "artifact: build:dist/app")], "", "name the run too"),
        ("an upper-case sha256", vec![("path: dist/app.tar.gz}", upper.as_str())], "", "write it in lower case"),
        ("a url without sha256", vec![(artifact, "artifact: {url: 'https://e.com/a.tgz'}")], "", "`sha256sum FILE`"),
        ("an expression", vec![("${PORT}", "${{ drover.commit }}")], "", "write the value itself"),
        ("a misspelt update key", vec![], "update: {pipeline: p, branchs: [main]}\n", "did you mean `branches`?"),
        ("a misspelt write", vec![], "update: {pipeline: p, write: comit}\n", "did you mean `commit`?"),
        ("an update as a word", vec![], "update: web-build\n", "`update: {pipeline: web-build}`"),
        (
            "an update of a url artifact",
            vec![(artifact, by_url.as_str())],
            "update: {pipeline: p}\n",
            "updates follow a pipeline's run artifacts: use `artifact: {run: .., job: .., path: ..}`",
        ),
    ];
    for (case, replace, extra, hint) in cases {
        let err = parse_service_file(FILE, &file(&replace, extra)).expect_err(case);
        let got = err.diagnostics[0].hint.as_deref().unwrap_or_default();
        assert!(got.contains(hint), "{case}: {err}\nhint: {got}");
    }
}

#[test]
fn every_mistake_in_a_file_is_reported_in_one_pass() {
    let text = file(
        &[("run: 42", "run: 0"), ("port: 8080", "port: 0"), ("http: /", "http: x")],
        "nodes: {count: 0}\nenvironment: staging\nhooks: {before: [{run: 'a ${{ b }}'}]}\n",
    );
    let err = parse_service_file(FILE, &text).unwrap_err();
    let got: Vec<(usize, usize)> = err.diagnostics.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(got, [(1, 17), (5, 9), (6, 18), (7, 16), (8, 1), (9, 27)], "{err}");
}

/// A good file of service `name` on `port`.
fn service(name: &str, port: u16) -> String {
    file(&[("name: web", &format!("name: {name}")), ("port: 8080", &format!("port: {port}"))], "")
}

#[test]
fn a_directory_is_read_as_one_desired_state() {
    let files = vec![("deploy/api.yaml".to_owned(), service("api", 9000)), (FILE.to_owned(), GOOD.to_owned())];
    let got = parse_desired("deploy/", &files).unwrap_or_else(|err| panic!("{err}"));
    let mut api = good();
    api.file = "deploy/api.yaml".into();
    api.service.name = "api".into();
    api.service.port = 9000;
    let want = DesiredState { services: [("api".to_owned(), api), ("web".to_owned(), good())].into() };
    assert_eq!(got, want);

    // As many services as an app may have.
    let most: Vec<(String, String)> = (0..MAX_APP_SERVICES)
        .map(|i| (format!("deploy/s{i}.yaml"), service(&format!("s{i}"), 8000 + i as u16)))
        .collect();
    assert_eq!(parse_desired("deploy/", &most).unwrap().services.len(), MAX_APP_SERVICES);
}

#[test]
fn a_directory_is_refused_where_its_mistakes_are() {
    let named = |files: &[(&str, String)]| -> Vec<(String, String)> {
        files.iter().map(|(name, text)| ((*name).to_owned(), text.clone())).collect()
    };
    let too_many: Vec<(String, String)> = (0..=MAX_APP_SERVICES)
        .map(|i| (format!("deploy/s{i}.yaml"), service(&format!("s{i}"), 8000 + i as u16)))
        .collect();
    // (case, the files, file, line, column, message)
    type Case = (&'static str, Vec<(String, String)>, &'static str, usize, usize, &'static str);
    let cases: Vec<Case> = vec![
        ("no files", vec![], "deploy/", 1, 1, "the directory holds no .yaml files"),
        (
            "too many files",
            too_many,
            "deploy/",
            1,
            1,
            "the directory holds 101 .yaml files, over the limit of 100 services in one app",
        ),
        (
            "two files of one service",
            named(&[("deploy/a.yaml", service("web", 1)), ("deploy/b.yaml", service("web", 2))]),
            "deploy/b.yaml",
            3,
            9,
            "service `web` of `deploy/b.yaml` is already the service of `deploy/a.yaml`",
        ),
        (
            "two services on one port",
            named(&[
                ("deploy/a.yaml", service("web", 8080)),
                ("deploy/b.yaml", service("api", 9000)),
                ("deploy/c.yaml", service("admin", 8080)),
            ]),
            "deploy/c.yaml",
            5,
            9,
            "`port` 8080 of service `admin` in `deploy/c.yaml` is also the port of service `web` in `deploy/a.yaml`",
        ),
        (
            "a file that is wrong among good ones",
            named(&[
                ("deploy/a.yaml", service("web", 1)),
                ("deploy/b.yaml", file(&[("name: web", "name: api"), ("port: 8080", "port: x")], "")),
            ]),
            "deploy/b.yaml",
            5,
            9,
            "`port` of service `api` in `deploy/b.yaml` must be a whole number",
        ),
    ];
    let mut failures = Vec::new();
    for (case, files, file, line, column, message) in cases {
        match parse_desired("deploy/", &files) {
            Ok(_) => failures.push(format!("{case}: parsed")),
            Err(err) => failures.extend(one(&err, file, line, column, message).map(|p| format!("{case}: {p}"))),
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_file_of_a_directory_is_reported_in_one_pass() {
    let files = vec![
        ("deploy/b.yaml".to_owned(), file(&[("run: 42", "run: 0")], "")),
        ("deploy/a.yaml".to_owned(), "- x\n".to_owned()),
        ("deploy/c.yaml".to_owned(), file(&[("name: web", "name: c"), ("port: 8080", "port: 0")], "")),
        ("deploy/d.yaml".to_owned(), service("web", 9)),
    ];
    let err = parse_desired("deploy/", &files).unwrap_err();
    let got: Vec<(&str, usize, usize)> = err.diagnostics.iter().map(|d| (d.file.as_str(), d.line, d.column)).collect();
    // File by file in the order given; `d` names the service `b` named
    // first, though `b` is wrong elsewhere.
    assert_eq!(
        got,
        [("deploy/b.yaml", 1, 17), ("deploy/a.yaml", 1, 1), ("deploy/c.yaml", 5, 9), ("deploy/d.yaml", 3, 9)],
        "{err}"
    );

    // Many files with many mistakes: at most 100 are shown, and the last
    // says how many more there are (3 in each of 40 files, and each after
    // the first names service `web` again: 159).
    let wrong = file(&[("run: 42", "run: 0"), ("port: 8080", "port: 0"), ("http: /", "http: x")], "");
    let files: Vec<(String, String)> = (0..40).map(|i| (format!("deploy/s{i}.yaml"), wrong.clone())).collect();
    let err = parse_desired("deploy/", &files).unwrap_err();
    assert_eq!(err.diagnostics.len(), 101, "{err}");
    assert_eq!(err.diagnostics[100].message, "59 more problems from here on are not shown");
}
