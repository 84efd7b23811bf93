//! Table tests of the pipeline parser: one valid file that must come out as
//! an exact [`Pipeline`], and one small invalid file per kind of mistake,
//! each checked for its message and its exact line and column.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// Removes the first line break and the indentation common to all lines, so
/// that test documents can be indented along with the code. Line numbers in
/// the tests count from the first line after the opening quote.
fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines().map(|line| line.get(indent..).unwrap_or("")).collect::<Vec<_>>().join("\n") + "\n"
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn full_example_parses_to_the_expected_pipeline() {
    let text = dedent(
        r#"
        name: example
        env: {GREETING: hello, VERSION: 1.10, DEBUG: true, COUNT: 0x1F, EMPTY: ""}
        jobs:
          build:
            runs-on: {os: linux, cores: 8}
            env: {MODE: release}
            timeout: 1h30m
            queue-timeout: 30m
            retries: 1
            artifacts: {paths: ["dist/*.tar.gz", reports/], expire: 7d, if-no-files: ignore}
            cache:
              key: "cargo-{{ hashFiles('Cargo.lock', '**/*.toml') }}-v1"
              paths: [target, ~/.cargo/registry]
              restore-keys: [cargo-]
            steps:
              - name: compile
                run: make
              - run: |
                  make install
                  echo done
          test:
            needs: [{job: build, artifacts: false}]
            timeout: 90s
            steps:
              - run: make test
          lint:
            needs: build
            steps: [{run: make lint}]
        "#,
    );
    let pipeline = parse("ci.yaml", &text).unwrap_or_else(|err| panic!("{err}"));
    let expected = Pipeline {
        name: "example".into(),
        env: map(&[("COUNT", "0x1F"), ("DEBUG", "true"), ("EMPTY", ""), ("GREETING", "hello"), ("VERSION", "1.10")]),
        jobs: vec![
            JobSpec {
                name: "build".into(),
                runs_on: map(&[("cores", "8"), ("os", "linux")]),
                env: map(&[("MODE", "release")]),
                timeout: Some(Duration::from_secs(90 * 60)),
                queue_timeout: Some(Duration::from_secs(30 * 60)),
                retries: 1,
                needs: vec![],
                steps: vec![
                    StepSpec { name: Some("compile".into()), run: "make".into(), condition: None },
                    StepSpec { name: None, run: "make install\necho done\n".into(), condition: None },
                ],
                artifacts: Some(ArtifactsSpec {
                    paths: vec!["dist/*.tar.gz".into(), "reports/".into()],
                    expire: Some(Duration::from_secs(7 * 24 * 3600)),
                    if_no_files: IfNoFiles::Ignore,
                }),
                skip_artifacts_of: Vec::new(),
                cache: Some(CacheSpec {
                    key: KeyTemplate {
                        text: "cargo-{{ hashFiles('Cargo.lock', '**/*.toml') }}-v1".into(),
                        parts: vec![
                            KeyPart::Literal("cargo-".into()),
                            KeyPart::HashFiles(vec!["Cargo.lock".into(), "**/*.toml".into()]),
                            KeyPart::Literal("-v1".into()),
                        ],
                    },
                    paths: vec!["target".into(), "~/.cargo/registry".into()],
                    restore_keys: vec!["cargo-".into()],
                }),
                secrets: Vec::new(),
                condition: None,
                approval: None,
                concurrency: None,
                matrix: None,
                deploy: None,
            },
            JobSpec {
                name: "test".into(),
                runs_on: BTreeMap::new(),
                env: BTreeMap::new(),
                timeout: Some(Duration::from_secs(90)),
                queue_timeout: None,
                retries: 0,
                needs: vec!["build".into()],
                steps: vec![StepSpec { name: None, run: "make test".into(), condition: None }],
                artifacts: None,
                skip_artifacts_of: vec!["build".into()],
                cache: None,
                secrets: Vec::new(),
                condition: None,
                approval: None,
                concurrency: None,
                matrix: None,
                deploy: None,
            },
            JobSpec {
                name: "lint".into(),
                runs_on: BTreeMap::new(),
                env: BTreeMap::new(),
                timeout: None,
                queue_timeout: None,
                retries: 0,
                needs: vec!["build".into()],
                steps: vec![StepSpec { name: None, run: "make lint".into(), condition: None }],
                artifacts: None,
                skip_artifacts_of: Vec::new(),
                cache: None,
                secrets: Vec::new(),
                condition: None,
                approval: None,
                concurrency: None,
                matrix: None,
                deploy: None,
            },
        ],
        concurrency: None,
        on: Default::default(),
    };
    assert_eq!(pipeline, expected);
    assert_eq!(pipeline.job("test"), Some(&expected.jobs[1]));
    assert_eq!(pipeline.job("deploy"), None);

    // The scheduler stores pipelines as JSON.
    let json = serde_json::to_string(&pipeline).unwrap();
    assert_eq!(serde_json::from_str::<Pipeline>(&json).unwrap(), pipeline);
}

#[test]
fn anchors_and_merge_keys_work() {
    let text = dedent(
        "
        name: p
        jobs:
          build: &job
            env: {A: b}
            steps: [{run: make}]
          again:
            <<: *job
            retries: 2
        ",
    );
    let pipeline = parse("ci.yaml", &text).unwrap_or_else(|err| panic!("{err}"));
    let again = pipeline.job("again").unwrap();
    assert_eq!(again.env, map(&[("A", "b")]));
    assert_eq!(again.retries, 2);
    assert_eq!(again.steps, pipeline.jobs[0].steps);
}

/// An invalid document and the one diagnostic it must produce.
struct Bad {
    what: &'static str,
    yaml: &'static str,
    line: usize,
    column: usize,
    message: &'static str,
    hint: Option<&'static str>,
}

const STEPS: &str = "steps: [{run: x}]";

fn bad_cases() -> Vec<Bad> {
    vec![
        Bad {
            what: "yaml syntax error",
            yaml: "
                name: p
                jobs:
                  a: {steps: [{run: make}]
            ",
            line: 3,
            column: 6,
            message: "invalid YAML: unclosed bracket '{'",
            hint: None,
        },
        Bad {
            what: "tab indentation",
            yaml: "name: p\njobs:\n\ta: 1\n",
            line: 3,
            column: 2,
            message: "invalid YAML: tabs",
            hint: Some("indent YAML with spaces"),
        },
        Bad {
            what: "an unquoted `: ` in a value",
            yaml: "name: p\njobs:\n  a:\n    steps:\n      - run: echo a: b\n",
            line: 5,
            column: 20,
            message: "invalid YAML: mapping values are not allowed",
            hint: Some("a value that contains `: ` must be quoted"),
        },
        Bad {
            what: "several documents",
            yaml: "
                name: p
                ---
                name: q
            ",
            line: 3,
            column: 1,
            message: "invalid YAML: only single YAML document expected",
            hint: None,
        },
        Bad {
            what: "empty file",
            yaml: "# nothing here\n",
            line: 1,
            column: 1,
            message: "pipeline file is empty",
            hint: Some("`name:` and a `jobs:` mapping"),
        },
        Bad {
            what: "top level is a list",
            yaml: "- name: p\n",
            line: 1,
            column: 1,
            message: "a pipeline file must be a mapping, found a list",
            hint: None,
        },
        Bad {
            what: "unknown top-level key",
            yaml: "
                name: p
                version: 2
                jobs:
                  a: {steps: [{run: x}]}
            ",
            line: 2,
            column: 1,
            message: "unknown key `version` at the top level",
            hint: Some("allowed keys: name, on, env, jobs"),
        },
        Bad {
            what: "unknown job key, with a suggestion",
            yaml: "
                name: p
                jobs:
                  build:
                    steps: [{run: make}]
                    step: x
            ",
            line: 5,
            column: 5,
            message: "unknown key `step` in job `build`",
            hint: Some("did you mean `steps`? allowed keys: runs-on, env, timeout, queue-timeout, retries, needs, steps, artifacts, cache, secrets"),
        },
        Bad {
            what: "unknown job key, misspelt runs-on",
            yaml: "
                name: p
                jobs:
                  build:
                    runs_on: {os: linux}
                    steps: [{run: make}]
            ",
            line: 4,
            column: 5,
            message: "unknown key `runs_on` in job `build`",
            hint: Some("did you mean `runs-on`?"),
        },
        Bad {
            what: "unknown step key",
            yaml: "
                name: p
                jobs:
                  build:
                    steps:
                      - run: make
                        shell: bash
            ",
            line: 6,
            column: 9,
            message: "unknown key `shell` in step 1 of job `build`",
            hint: Some("allowed keys: name, run, if"),
        },
        Bad {
            what: "cycle in needs",
            yaml: "
                name: p
                jobs:
                  a:
                    needs: [b]
                    steps: [{run: x}]
                  b:
                    needs: [c]
                    steps: [{run: x}]
                  c:
                    needs: [a]
                    steps: [{run: x}]
            ",
            line: 4,
            column: 13,
            message: "cycle in needs: a -> b -> c -> a",
            hint: Some("remove one of these needs"),
        },
        Bad {
            what: "cycle through a later job is reported from the earliest one",
            yaml: "
                name: p
                jobs:
                  start:
                    steps: [{run: x}]
                  x:
                    needs: [start, y]
                    steps: [{run: x}]
                  y:
                    needs: [x]
                    steps: [{run: x}]
            ",
            line: 6,
            column: 20,
            message: "cycle in needs: x -> y -> x",
            hint: None,
        },
        Bad {
            what: "needs a missing job, close match",
            yaml: "
                name: p
                jobs:
                  build:
                    steps: [{run: make}]
                  test:
                    needs: [biuld]
                    steps: [{run: make test}]
            ",
            line: 6,
            column: 13,
            message: "job `test` needs `biuld`, which is not defined",
            hint: Some("did you mean `build`?"),
        },
        Bad {
            what: "needs a missing job, no close match",
            yaml: "
                name: p
                jobs:
                  build:
                    steps: [{run: make}]
                  test:
                    needs:
                      - build
                      - deploy
                    steps: [{run: make test}]
            ",
            line: 8,
            column: 9,
            message: "job `test` needs `deploy`, which is not defined",
            hint: Some("defined jobs: build, test"),
        },
        Bad {
            what: "needs itself",
            yaml: "
                name: p
                jobs:
                  a:
                    needs: [a]
                    steps: [{run: x}]
            ",
            line: 4,
            column: 13,
            message: "job `a` needs itself",
            hint: None,
        },
        Bad {
            what: "needs the same job twice",
            yaml: "
                name: p
                jobs:
                  a: {steps: [{run: x}]}
                  b:
                    needs: [a, a]
                    steps: [{run: x}]
            ",
            line: 5,
            column: 16,
            message: "job `b` lists `a` in `needs` twice (first at line 5)",
            hint: None,
        },
        Bad {
            what: "needs is a mapping",
            yaml: "
                name: p
                jobs:
                  a: {steps: [{run: x}]}
                  b:
                    needs: {a: true}
                    steps: [{run: x}]
            ",
            line: 5,
            column: 12,
            message: "`needs` in job `b` must be a list of job names, found a mapping",
            hint: None,
        },
        Bad {
            what: "duplicate job",
            yaml: "
                name: p
                jobs:
                  build:
                    steps: [{run: make}]
                  build:
                    steps: [{run: make}]
            ",
            line: 5,
            column: 3,
            message: "duplicate job `build` (first defined at line 3)",
            hint: None,
        },
        Bad {
            what: "duplicate job key",
            yaml: "
                name: p
                jobs:
                  build:
                    steps: [{run: make}]
                    steps: [{run: make}]
            ",
            line: 5,
            column: 5,
            message: "duplicate key `steps` in job `build` (first defined at line 4)",
            hint: None,
        },
        Bad {
            what: "duplicate top-level key",
            yaml: "
                name: p
                jobs:
                  a: {steps: [{run: x}]}
                name: q
            ",
            line: 4,
            column: 1,
            message: "duplicate key `name` at the top level (first defined at line 1)",
            hint: None,
        },
        Bad {
            what: "duplicate env variable",
            yaml: "
                name: p
                env: {A: 1, A: 2}
                jobs:
                  a: {steps: [{run: x}]}
            ",
            line: 2,
            column: 13,
            message: "duplicate env variable `A` at the top level (first defined at line 2)",
            hint: None,
        },
        Bad {
            what: "job without steps",
            yaml: "
                name: p
                jobs:
                  build:
                    env: {A: b}
            ",
            line: 3,
            column: 3,
            message: "job `build` has no steps",
            hint: Some("add `steps:`"),
        },
        Bad {
            what: "job with an empty list of steps",
            yaml: "
                name: p
                jobs:
                  build:
                    steps: []
            ",
            line: 4,
            column: 12,
            message: "job `build` has no steps",
            hint: None,
        },
        Bad {
            what: "job with nothing in it",
            yaml: "
                name: p
                jobs:
                  build:
            ",
            line: 3,
            column: 3,
            message: "job `build` is empty",
            hint: None,
        },
        Bad {
            what: "step without run",
            yaml: "
                name: p
                jobs:
                  build:
                    steps:
                      - name: compile
            ",
            line: 5,
            column: 9,
            message: "step 1 of job `build` has no `run` command",
            hint: None,
        },
        Bad {
            what: "step with empty run",
            yaml: "
                name: p
                jobs:
                  build:
                    steps:
                      - run: make
                      - run: ''
            ",
            line: 6,
            column: 14,
            message: "`run` in step 2 of job `build` is empty",
            hint: None,
        },
        Bad {
            what: "step as a bare string",
            yaml: "
                name: p
                jobs:
                  build:
                    steps:
                      - make
            ",
            line: 5,
            column: 9,
            message: "step 1 of job `build` must be a mapping with `run`, found string `make`",
            hint: Some("write `- run: make`"),
        },
        Bad {
            what: "duration with words",
            yaml: "
                name: p
                jobs:
                  a:
                    timeout: 10 minutes
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "invalid timeout `10 minutes` in job `a`",
            hint: Some("use a whole number with s, m or h, e.g. 90s, 10m, 1h30m"),
        },
        Bad {
            what: "an artifact path outside the workspace",
            yaml: "
                name: p
                jobs:
                  a:
                    artifacts: {paths: [dist/app, ../secrets]}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 35,
            message: "artifact path `../secrets` of job `a` leaves the workspace with `..`",
            hint: Some("artifacts come from the job's workspace"),
        },
        Bad {
            what: "needs with artifacts that is not a boolean",
            yaml: "
                name: p
                jobs:
                  a: {steps: [{run: x}]}
                  b:
                    needs: [{job: a, artifacts: no}]
                    steps: [{run: x}]
            ",
            line: 5,
            column: 33,
            message: "`artifacts` in `needs` of job `b` must be true or false",
            hint: Some("leaves the needed job's artifacts out"),
        },
        Bad {
            what: "an absolute artifact path",
            yaml: "
                name: p
                jobs:
                  a:
                    artifacts: {paths: [/etc/passwd]}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 25,
            message: "artifact path `/etc/passwd` of job `a` is not inside the workspace",
            hint: Some("relative to the workspace"),
        },
        Bad {
            what: "artifacts without paths",
            yaml: "
                name: p
                jobs:
                  a:
                    artifacts: {expire: 7d}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 16,
            message: "`artifacts` in job `a` has no `paths`",
            hint: Some("e.g. `artifacts: {paths:"),
        },
        Bad {
            what: "an artifact expiry that is not a duration",
            yaml: "
                name: p
                jobs:
                  a:
                    artifacts: {paths: [x], expire: soon}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 37,
            message: "invalid `expire` `soon` in job `a`",
            hint: Some("a whole number with d, h, m or s"),
        },
        Bad {
            what: "a cache key calling an unknown function",
            yaml: "
                name: p
                jobs:
                  a:
                    cache:
                      key: \"cargo-{{ hashFile('Cargo.lock') }}\"
                      paths: [target]
                    steps: [{run: x}]
            ",
            line: 5,
            column: 22,
            message: "cache key of job `a`: unknown function `hashFile`",
            hint: Some("did you mean `hashFiles`? the one function a cache key can use is `hashFiles('glob', ...)`"),
        },
        Bad {
            what: "a cache key with unclosed braces",
            yaml: "
                name: p
                jobs:
                  a:
                    cache:
                      key: cargo-{{ hashFiles('Cargo.lock')
                      paths: [target]
                    steps: [{run: x}]
            ",
            line: 5,
            column: 18,
            message: "cache key of job `a`: `{{` is never closed",
            hint: Some("close the expression with `}}`"),
        },
        Bad {
            what: "a cache key hashing files outside the workspace",
            yaml: "
                name: p
                jobs:
                  a:
                    cache: {key: 'deps-{{ hashFiles(\"lock\", \"../lock\") }}', paths: [x]}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 46,
            message: "cache key of job `a`: the glob `../lock` leaves the workspace with `..`",
            hint: Some("write globs relative to it"),
        },
        Bad {
            what: "a cache key that is not a string",
            yaml: "
                name: p
                jobs:
                  a:
                    cache: {key: [v1], paths: [x]}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 18,
            message: "`key` in the cache of job `a` must be a string, found a list",
            hint: Some("e.g. `cache: {key:"),
        },
        Bad {
            what: "a cache path in another user's home",
            yaml: "
                name: p
                jobs:
                  a:
                    cache: {key: v1, paths: [target, ~root/.cache]}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 38,
            message: "cache path `~root/.cache` of job `a` names another user's home",
            hint: Some("under the step's own home"),
        },
        Bad {
            what: "an absolute cache path",
            yaml: "
                name: p
                jobs:
                  a:
                    cache:
                      key: v1
                      paths:
                        - /var/cache/apt
                    steps: [{run: x}]
            ",
            line: 7,
            column: 11,
            message: "cache path `/var/cache/apt` of job `a` is absolute",
            hint: Some("relative to the workspace, e.g. `target`, or under the step's home as `~/...`"),
        },
        Bad {
            what: "a cache path with ..",
            yaml: "
                name: p
                jobs:
                  a:
                    cache: {key: v1, paths: [~/../other]}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 30,
            message: "cache path `~/../other` of job `a` uses `..`",
            hint: Some("write them without `..`"),
        },
        Bad {
            what: "an empty list of cache paths",
            yaml: "
                name: p
                jobs:
                  a:
                    cache: {key: v1, paths: []}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 29,
            message: "`paths` in the cache of job `a` must be a non-empty list of paths, found a list",
            hint: Some("e.g. `paths: [target, ~/.cargo/registry]`"),
        },
        Bad {
            what: "a restore key with a character keys may not have",
            yaml: "
                name: p
                jobs:
                  a:
                    cache:
                      key: v1
                      paths: [target]
                      restore-keys: [\"cargo-\", \"cargo linux\"]
                    steps: [{run: x}]
            ",
            line: 7,
            column: 38,
            message: "invalid restore key `cargo linux` in job `a`: the character ' ' is not allowed in a cache key \
                      (at character 6)",
            hint: Some("a restore key is a prefix of cache keys"),
        },
        Bad {
            what: "a restore key with an expression",
            yaml: "
                name: p
                jobs:
                  a:
                    cache: {key: v1, paths: [t], restore-keys: ['v-{{ hashFiles(\"a\") }}']}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 52,
            message: "invalid restore key `v-{{ hashFiles(\"a\") }}` in job `a`: the character `{` is not allowed",
            hint: Some("without `{{ }}` expressions"),
        },
        Bad {
            what: "a cache without a key",
            yaml: "
                name: p
                jobs:
                  a:
                    cache: {paths: [target]}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 5,
            message: "`cache` in job `a` has no `key`",
            hint: Some("e.g. `cache: {key: \"cargo-{{ hashFiles('Cargo.lock') }}\", paths: [target]}`"),
        },
        Bad {
            what: "a cache without paths",
            yaml: "
                name: p
                jobs:
                  a:
                    cache:
                      key: v1
                    steps: [{run: x}]
            ",
            line: 4,
            column: 5,
            message: "`cache` in job `a` has no `paths`",
            hint: Some("e.g. `cache: {key:"),
        },
        Bad {
            what: "an unknown key in a cache",
            yaml: "
                name: p
                jobs:
                  a:
                    cache: {key: v1, paths: [x], restore_keys: [v]}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 34,
            message: "unknown key `restore_keys` in the cache of job `a`",
            hint: Some("did you mean `restore-keys`? allowed keys: key, paths, restore-keys"),
        },
        Bad {
            what: "a cache that is not a mapping",
            yaml: "
                name: p
                jobs:
                  a:
                    cache: target
                    steps: [{run: x}]
            ",
            line: 4,
            column: 12,
            message: "`cache` in job `a` must be a mapping with `key` and `paths`, found string `target`",
            hint: Some("e.g. `cache: {key:"),
        },
        Bad {
            what: "queue timeout over the limit",
            yaml: "
                name: p
                jobs:
                  a:
                    queue-timeout: 200h
                    steps: [{run: x}]
            ",
            line: 4,
            column: 20,
            message: "queue-timeout `200h` in job `a` is over the limit of 7 days",
            hint: Some("the longest allowed queue-timeout is 168h"),
        },
        Bad {
            what: "queue timeout without a unit",
            yaml: "
                name: p
                jobs:
                  a:
                    queue-timeout: 10
                    steps: [{run: x}]
            ",
            line: 4,
            column: 20,
            message: "queue-timeout `10` in job `a` has no unit",
            hint: Some("use a whole number with s, m or h"),
        },
        Bad {
            what: "duration in days",
            yaml: "
                name: p
                jobs:
                  a:
                    timeout: 5d
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "invalid timeout `5d` in job `a`",
            hint: Some("use a whole number with s, m or h"),
        },
        Bad {
            what: "zero duration",
            yaml: "
                name: p
                jobs:
                  a:
                    timeout: 0s
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "timeout `0s` in job `a` must be longer than zero",
            hint: Some("use a whole number with s, m or h"),
        },
        Bad {
            what: "negative duration",
            yaml: "
                name: p
                jobs:
                  a:
                    timeout: -1m
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "invalid timeout `-1m` in job `a`",
            hint: Some("use a whole number with s, m or h"),
        },
        Bad {
            what: "duration without a unit",
            yaml: "
                name: p
                jobs:
                  a:
                    timeout: 600
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "timeout `600` in job `a` has no unit",
            hint: Some("use a whole number with s, m or h"),
        },
        Bad {
            what: "duration over the limit",
            yaml: "
                name: p
                jobs:
                  a:
                    timeout: 169h
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "timeout `169h` in job `a` is over the limit of 7 days",
            hint: Some("168h"),
        },
        Bad {
            what: "missing name",
            yaml: "
                jobs:
                  a: {steps: [{run: x}]}
            ",
            line: 1,
            column: 1,
            message: "missing `name` at the top level",
            hint: None,
        },
        Bad {
            what: "missing jobs",
            yaml: "
                name: p
            ",
            line: 1,
            column: 1,
            message: "missing `jobs` at the top level",
            hint: None,
        },
        Bad {
            what: "empty jobs",
            yaml: "
                name: p
                jobs: {}
            ",
            line: 2,
            column: 7,
            message: "`jobs` is empty",
            hint: None,
        },
        Bad {
            what: "jobs as a list",
            yaml: "
                name: p
                jobs:
                  - build
            ",
            line: 3,
            column: 3,
            message: "`jobs` must be a mapping from job names to jobs, found a list",
            hint: None,
        },
        Bad {
            what: "retries as a word",
            yaml: "
                name: p
                jobs:
                  a:
                    retries: lots
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "`retries` in job `a` must be a whole number, found string `lots`",
            hint: None,
        },
        Bad {
            what: "retries over the limit",
            yaml: "
                name: p
                jobs:
                  a:
                    retries: 11
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "`retries` 11 in job `a` is over the limit of 10",
            hint: None,
        },
        Bad {
            what: "negative retries",
            yaml: "
                name: p
                jobs:
                  a:
                    retries: -1
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "`retries` in job `a` must not be negative",
            hint: None,
        },
        Bad {
            what: "runs-on as a string",
            yaml: "
                name: p
                jobs:
                  a:
                    runs-on: linux
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "`runs-on` of job `a` must be a mapping of agent labels, found string `linux`",
            hint: Some("e.g. `runs-on: {os: linux}`"),
        },
        Bad {
            what: "runs-on label with a list value",
            yaml: "
                name: p
                jobs:
                  a:
                    runs-on: {os: [linux, mac]}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 19,
            message: "label `os` in `runs-on` of job `a` must be a string, found a list",
            hint: None,
        },
        Bad {
            what: "runs-on label with an empty value",
            yaml: "
                name: p
                jobs:
                  a:
                    runs-on: {os: ''}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 19,
            message: "label `os` in `runs-on` of job `a` has an empty value",
            hint: None,
        },
        Bad {
            what: "invalid job name",
            yaml: "
                name: p
                jobs:
                  my job:
                    steps: [{run: x}]
            ",
            line: 3,
            column: 3,
            message: "invalid job name `my job`",
            hint: Some("job names are used in ids and paths"),
        },
        Bad {
            what: "job name too long",
            yaml: "
                name: p
                jobs:
                  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: {steps: [{run: x}]}
            ",
            line: 3,
            column: 3,
            message: "invalid job name",
            hint: Some("1 to 100 letters"),
        },
        Bad {
            what: "invalid env name",
            yaml: "
                name: p
                jobs:
                  a:
                    env: {1X: y}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 11,
            message: "invalid env variable name `1X` in job `a`",
            hint: Some("shell identifiers"),
        },
        Bad {
            what: "reserved env name",
            yaml: "
                name: p
                env:
                  DROVER_JOB: x
                jobs:
                  a: {steps: [{run: x}]}
            ",
            line: 3,
            column: 3,
            message: "env variable `DROVER_JOB` at the top level uses the reserved prefix `DROVER_`",
            hint: None,
        },
        Bad {
            what: "LD_PRELOAD in env",
            yaml: "
                name: p
                env:
                  LD_PRELOAD: /tmp/evil.so
                jobs:
                  a: {steps: [{run: x}]}
            ",
            line: 3,
            column: 3,
            message: "env variable `LD_PRELOAD` at the top level is not allowed: `LD_*` variables make the dynamic loader",
            hint: Some("set them inside the step's `run`"),
        },
        Bad {
            what: "BASH_ENV in a job's env",
            yaml: "
                name: p
                jobs:
                  a:
                    env: {BASH_ENV: /tmp/x.sh}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 11,
            message: "env variable `BASH_ENV` in job `a` is not allowed: bash runs the file it names before every step",
            hint: None,
        },
        Bad {
            what: "PATH replaced",
            yaml: "
                name: p
                env:
                  PATH: /nonexistent
                jobs:
                  a: {steps: [{run: x}]}
            ",
            line: 3,
            column: 9,
            message: "env variable `PATH` at the top level must extend the default PATH, not replace it",
            hint: Some("PATH: \"$PATH:/opt/tool/bin\""),
        },
        Bad {
            what: "env variable without a value",
            yaml: "
                name: p
                jobs:
                  a:
                    env:
                      A:
                    steps: [{run: x}]
            ",
            line: 5,
            column: 7,
            message: "env variable `A` in job `a` has no value",
            hint: Some("write `A: \"\"` for an empty value"),
        },
        Bad {
            what: "env variable with a mapping value",
            yaml: "
                name: p
                jobs:
                  a:
                    env: {A: {b: c}}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 14,
            message: "env variable `A` in job `a` must be a string, found a mapping",
            hint: None,
        },
        Bad {
            what: "env as a list",
            yaml: "
                name: p
                env: [A=b]
                jobs:
                  a: {steps: [{run: x}]}
            ",
            line: 2,
            column: 6,
            message: "the top-level `env` must be a mapping of variable names to values, found a list",
            hint: None,
        },
        Bad {
            what: "name as a list",
            yaml: "
                name: [p]
                jobs:
                  a: {steps: [{run: x}]}
            ",
            line: 1,
            column: 7,
            message: "`name` must be a string, found a list",
            hint: None,
        },
        Bad {
            what: "secrets as a mapping",
            yaml: "
                name: p
                jobs:
                  a: {secrets: {A: b}, steps: [{run: x}]}
            ",
            line: 3,
            column: 16,
            message: "`secrets` in job `a` must be a list of secret names, found a mapping",
            hint: Some("secrets: [DEPLOY_TOKEN]"),
        },
        Bad {
            what: "a secret name that is no shell identifier",
            yaml: "
                name: p
                jobs:
                  a: {secrets: [OK, my-token], steps: [{run: x}]}
            ",
            line: 3,
            column: 21,
            message: "invalid secret name `my-token` in job `a`",
            hint: Some("shell identifier"),
        },
        Bad {
            what: "a secret with the reserved prefix",
            yaml: "
                name: p
                jobs:
                  a: {secrets: [DROVER_TOKEN], steps: [{run: x}]}
            ",
            line: 3,
            column: 17,
            message: "secret `DROVER_TOKEN` in job `a` uses the reserved prefix `DROVER_`",
            hint: None,
        },
        Bad {
            what: "a secret that would run code before the step",
            yaml: "
                name: p
                jobs:
                  a: {secrets: [LD_PRELOAD], steps: [{run: x}]}
            ",
            line: 3,
            column: 17,
            message: "secret `LD_PRELOAD` in job `a` may not be set",
            hint: None,
        },
        Bad {
            what: "a secret listed twice",
            yaml: "
                name: p
                jobs:
                  a: {secrets: [TOKEN, TOKEN], steps: [{run: x}]}
            ",
            line: 3,
            column: 24,
            message: "secret `TOKEN` is listed twice in job `a`",
            hint: None,
        },
        Bad {
            what: "a secret that is also a job env variable",
            yaml: "
                name: p
                jobs:
                  a:
                    env: {TOKEN: x}
                    secrets: [TOKEN]
                    steps: [{run: x}]
            ",
            line: 5,
            column: 15,
            message: "`TOKEN` in job `a` is both a secret and a variable in the job's `env`",
            hint: None,
        },
        Bad {
            what: "a condition calling an unknown function",
            yaml: "
                name: p
                jobs:
                  a:
                    if: sucess() && drover.branch == 'main'
                    steps: [{run: x}]
            ",
            line: 4,
            column: 9,
            message: "condition of job `a`: unknown function `sucess`",
            hint: Some("did you mean `success`?"),
        },
        Bad {
            what: "a condition reading an unknown context",
            yaml: "
                name: p
                jobs:
                  a:
                    if: \"github.ref == 'refs/heads/main'\"
                    steps: [{run: x}]
            ",
            line: 4,
            column: 10,
            message: "condition of job `a`: unknown context `github`",
            hint: Some("Drover's own context is `drover`"),
        },
        Bad {
            what: "a condition reading the result of a job that is not needed",
            yaml: "
                name: p
                jobs:
                  build: {steps: [{run: x}]}
                  lint: {steps: [{run: x}]}
                  test:
                    needs: [build]
                    if: needs.lint.result == 'success'
                    steps: [{run: x}]
            ",
            line: 7,
            column: 15,
            message: "condition of job `test`: job `lint` is not in `needs`",
            hint: Some("the job needs build; to read its result, add `lint` to the job's `needs`"),
        },
        Bad {
            what: "a condition with a syntax error",
            yaml: "
                name: p
                jobs:
                  a:
                    if: drover.branch = 'main'
                    steps: [{run: x}]
            ",
            line: 4,
            column: 23,
            message: "condition of job `a`: `=` is not an operator",
            hint: Some("compare with `==`"),
        },
        Bad {
            what: "a condition in `${{ }}` with an unknown field",
            yaml: "
                name: p
                jobs:
                  a:
                    if: ${{ drover.brnch == 'main' }}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 20,
            message: "condition of job `a`: `drover` has no field `brnch`",
            hint: Some("did you mean `drover.branch`?"),
        },
        Bad {
            what: "a condition comparing a result with what no result is",
            yaml: "
                name: p
                jobs:
                  build: {steps: [{run: x}]}
                  test:
                    needs: [build]
                    if: needs.build.result == 'succeeded'
                    steps: [{run: x}]
            ",
            line: 6,
            column: 31,
            message: "condition of job `test`: `needs.build.result` is never 'succeeded'",
            hint: Some("a result is 'success', 'failure', 'cancelled' or 'skipped'"),
        },
        Bad {
            what: "a condition comparing a variable with a boolean",
            yaml: "
                name: p
                env: {DEBUG: 'true'}
                jobs:
                  a:
                    if: env.DEBUG == true
                    steps: [{run: x}]
            ",
            line: 5,
            column: 19,
            message: "condition of job `a`: `==` compares a string with a boolean, which are never equal",
            hint: Some("context values are strings"),
        },
        Bad {
            what: "a condition reading a secret",
            yaml: "
                name: p
                jobs:
                  a:
                    secrets: [TOKEN]
                    if: env.TOKEN != ''
                    steps: [{run: x}]
            ",
            line: 5,
            column: 13,
            message: "condition of job `a`: `TOKEN` is a secret, and expressions cannot read secrets",
            hint: Some("a step reads it as `$TOKEN` in its `run`"),
        },
        Bad {
            what: "an empty condition",
            yaml: "
                name: p
                jobs:
                  a:
                    if:
                    steps: [{run: x}]
            ",
            line: 4,
            column: 5,
            message: "condition of job `a` is empty",
            hint: Some("e.g. `if: drover.branch == 'main'`"),
        },
        Bad {
            what: "a condition that is a list",
            yaml: "
                name: p
                jobs:
                  a:
                    if: [always()]
                    steps: [{run: x}]
            ",
            line: 4,
            column: 9,
            message: "condition of job `a` must be an expression, found a list",
            hint: None,
        },
        Bad {
            what: "an unquoted condition starting with `!`, which YAML reads as a tag",
            yaml: "
                name: p
                jobs:
                  a:
                    if: !cancelled() && drover.branch == 'main'
                    steps: [{run: x}]
            ",
            line: 4,
            column: 25,
            message: "invalid YAML: unsupported tag `!cancelled()`",
            hint: Some("quote an expression that starts with `!`, as in `if: \"!cancelled()\"`"),
        },
        Bad {
            what: "a step's condition reading an unknown field",
            yaml: "
                name: p
                jobs:
                  a:
                    steps:
                      - run: x
                        if: drover.brnch == 'main'
            ",
            line: 6,
            column: 20,
            message: "condition of step 1 of job `a`: `drover` has no field `brnch`",
            hint: Some("did you mean `drover.branch`?"),
        },
        Bad {
            what: "an unknown field in `${{ }}` in a run command",
            yaml: "
                name: p
                jobs:
                  a:
                    steps:
                      - run: echo ${{ drover.sha }}
            ",
            line: 5,
            column: 30,
            message: "`run` in step 1 of job `a`: `drover` has no field `sha`",
            hint: Some("its fields are branch, event, tag and commit"),
        },
        Bad {
            what: "a matrix value in `${{ }}` in a run block, in a job with no matrix",
            yaml: "
                name: p
                jobs:
                  a:
                    steps:
                      - run: |
                          echo start

                          echo ${{ matrix.os }}
            ",
            line: 8,
            column: 27,
            message: "`run` in step 1 of job `a`: `matrix.os` names nothing: the job has no matrix",
            hint: Some("`matrix.NAME` reads a value of the job's `matrix:`"),
        },
        Bad {
            what: "a status function in `${{ }}` in a run command",
            yaml: "
                name: p
                jobs:
                  a:
                    steps: [{run: \"echo ${{ success() }}\"}]
            ",
            line: 4,
            column: 29,
            message: "`run` in step 1 of job `a`: `success()` is allowed only in `if:`",
            hint: None,
        },
        Bad {
            what: "an unclosed `${{` in a job's env value",
            yaml: "
                name: p
                jobs:
                  a:
                    env: {REF: \"v-${{ drover.commit\"}
                    steps: [{run: x}]
            ",
            line: 4,
            column: 19,
            message: "env variable `REF` in job `a`: `${{` is never closed",
            hint: Some("close the expression with `}}`"),
        },
        Bad {
            what: "a needed job's result in `${{ }}` in the top-level env",
            yaml: "
                name: p
                env:
                  WHO: \"${{ needs.a.result }}\"
                jobs:
                  a: {steps: [{run: x}]}
            ",
            line: 3,
            column: 19,
            message: "env variable `WHO` at the top level: job `a` is not in `needs`",
            hint: Some("there are none here"),
        },
        Bad {
            what: "a secret that is also a pipeline env variable",
            yaml: "
                name: p
                env: {TOKEN: x}
                jobs:
                  a:
                    secrets: [TOKEN]
                    steps: [{run: x}]
            ",
            line: 5,
            column: 15,
            message: "`TOKEN` in job `a` is both a secret and a variable in the pipeline's `env`",
            hint: None,
        },
        Bad {
            what: "an approval with no approvers",
            yaml: "
                name: p
                jobs:
                  a: {approval: {required: true, approvers: []}, steps: [{run: x}]}
            ",
            line: 3,
            column: 45,
            message: "the approval of job `a` names no approvers, so nobody could ever let it run",
            hint: None,
        },
        Bad {
            what: "an approval without approvers at all",
            yaml: "
                name: p
                jobs:
                  a: {approval: {required: true}, steps: [{run: x}]}
            ",
            line: 3,
            column: 17,
            message: "names no approvers",
            hint: None,
        },
        Bad {
            what: "an invalid approver",
            yaml: "
                name: p
                jobs:
                  a: {approval: {approvers: ['ops team']}, steps: [{run: x}]}
            ",
            line: 3,
            column: 30,
            message: "invalid approver `ops team` in job `a`",
            hint: None,
        },
        Bad {
            what: "a concurrency mapping without a group",
            yaml: "
                name: p
                concurrency: {cancel-in-progress: true}
                jobs:
                  a: {steps: [{run: x}]}
            ",
            line: 2,
            column: 14,
            message: "the concurrency of the pipeline has no `group`",
            hint: None,
        },
        Bad {
            what: "an unknown context in a job's concurrency group",
            yaml: "
                name: p
                jobs:
                  a: {concurrency: \"db-${{ github.ref }}\", steps: [{run: x}]}
            ",
            line: 3,
            column: 28,
            message: "the concurrency group of job `a`: unknown context `github`",
            hint: None,
        },
    ]
}

#[test]
fn each_mistake_is_reported_at_its_position() {
    let mut failures = Vec::new();
    for case in bad_cases() {
        let text = dedent(case.yaml);
        let diagnostics = match parse("ci.yaml", &text) {
            Ok(pipeline) => {
                failures.push(format!("{}: parsed, to {pipeline:?}", case.what));
                continue;
            }
            Err(err) => err.diagnostics,
        };
        let as_text = diagnostics.iter().map(|d| format!("  {d}\n")).collect::<String>();
        if diagnostics.len() != 1 {
            failures.push(format!("{}: expected one diagnostic, got:\n{as_text}", case.what));
            continue;
        }
        let d = &diagnostics[0];
        let position_ok = (d.line, d.column) == (case.line, case.column);
        let message_ok = d.message.contains(case.message);
        let hint_ok = case.hint.is_none_or(|hint| d.hint.as_deref().is_some_and(|h| h.contains(hint)));
        if !(position_ok && message_ok && hint_ok && d.file == "ci.yaml") {
            failures.push(format!(
                "{}: expected {}:{} `{}` (hint {:?}), got:\n{as_text}",
                case.what, case.line, case.column, case.message, case.hint
            ));
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn independent_mistakes_are_all_reported_in_file_order() {
    let text = dedent(
        "
        name: p
        jobs:
          build:
            step: [{run: make}]
            timeout: 5 minutes
          test:
            needs: [biuld]
            retries: lots
            steps: [{run: make test}]
          test:
            steps: [{run: x}]
        ",
    );
    let err = parse("ci.yaml", &text).unwrap_err();
    let got: Vec<(usize, usize, &str)> =
        err.diagnostics.iter().map(|d| (d.line, d.column, d.message.as_str())).collect();
    assert_eq!(
        got,
        [
            (3, 3, "job `build` has no steps"),
            (4, 5, "unknown key `step` in job `build`"),
            (5, 14, "invalid timeout `5 minutes` in job `build`"),
            (7, 13, "job `test` needs `biuld`, which is not defined"),
            (8, 14, "`retries` in job `test` must be a whole number, found string `lots`"),
            (10, 3, "duplicate job `test` (first defined at line 6)"),
        ]
    );
}

#[test]
fn limits_are_enforced() {
    let too_big = format!("name: p\n#{}\n", "x".repeat(MAX_FILE_BYTES));
    let err = parse("ci.yaml", &too_big).unwrap_err();
    assert_eq!(err.diagnostics.len(), 1);
    assert_eq!((err.diagnostics[0].line, err.diagnostics[0].column), (1, 1));
    assert!(err.diagnostics[0].message.contains("over the limit of 1048576 bytes (1 MiB)"));

    let mut many_jobs = String::from("name: p\njobs:\n");
    for i in 0..=MAX_JOBS {
        many_jobs.push_str(&format!("  j{i}: {{{STEPS}}}\n"));
    }
    let err = parse("ci.yaml", &many_jobs).unwrap_err();
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    let d = &err.diagnostics[0];
    assert_eq!((d.line, d.column), (MAX_JOBS + 3, 3));
    assert_eq!(d.message, "too many jobs: 5001, over the limit of 5000 jobs");

    let mut many_steps = String::from("name: p\njobs:\n  a:\n    steps:\n");
    for _ in 0..=MAX_STEPS_PER_JOB {
        many_steps.push_str("      - run: x\n");
    }
    let err = parse("ci.yaml", &many_steps).unwrap_err();
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    let d = &err.diagnostics[0];
    assert_eq!((d.line, d.column), (MAX_STEPS_PER_JOB + 5, 9));
    assert_eq!(d.message, "job `a` has 101 steps, over the limit of 100");

    // Exactly at the limits is fine.
    let at_limits = dedent(
        "
        name: p
        jobs:
          a:
            timeout: 168h
            retries: 10
            steps: [{run: x}]
        ",
    );
    let pipeline = parse("ci.yaml", &at_limits).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(pipeline.jobs[0].timeout, Some(MAX_TIMEOUT));
    assert_eq!(pipeline.jobs[0].retries, MAX_RETRIES);
}

#[test]
fn long_cycles_and_long_lists_of_problems_are_shortened() {
    let mut ring = String::from("name: p\njobs:\n");
    for i in 0..30 {
        ring.push_str(&format!("  j{i}: {{needs: [j{}], {STEPS}}}\n", (i + 1) % 30));
    }
    let err = parse("ci.yaml", &ring).unwrap_err();
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    assert_eq!(
        err.diagnostics[0].message,
        "cycle in needs: j0 -> j1 -> j2 -> j3 -> j4 -> j5 -> j6 -> j7 -> j8 -> j9 -> (19 more) -> j29 -> j0"
    );

    let mut bogus = String::from("name: p\njobs:\n");
    for i in 0..150 {
        bogus.push_str(&format!("  j{i}: {{{STEPS}, bogus: 1}}\n"));
    }
    let err = parse("ci.yaml", &bogus).unwrap_err();
    assert_eq!(err.diagnostics.len(), 101);
    let last = &err.diagnostics[100];
    assert_eq!((last.line, last.column), (103, 29));
    assert_eq!(last.message, "50 more problems from here on are not shown");
}

#[test]
fn error_display_lists_every_diagnostic() {
    let text = dedent(
        "
        name: p
        jobs:
          a:
            stepz: []
        ",
    );
    let err = parse("ci.yaml", &text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ci.yaml:3:3: job `a` has no steps\n  \
           hint: add `steps:` with at least one `- run: <command>`\n\
         ci.yaml:4:5: unknown key `stepz` in job `a`\n  \
           hint: did you mean `steps`? allowed keys: runs-on, env, timeout, queue-timeout, retries, needs, steps, artifacts, cache, secrets, if, approval, concurrency, matrix, fail-fast, deploy"
    );
}

#[test]
fn secrets_are_checked_against_the_ones_that_exist_only_when_known() {
    let text = dedent(
        "
        name: p
        jobs:
          deploy:
            secrets: [DEPLOY_TOKEN, REGISTRY_PASSWORD]
            steps: [{run: ./deploy}]
        ",
    );
    // Offline (`drover validate`), existence is not known and not checked.
    let pipeline = parse("ci.yaml", &text).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(pipeline.jobs[0].secrets, ["DEPLOY_TOKEN", "REGISTRY_PASSWORD"]);
    assert!(pipeline.uses_secrets());

    let known: std::collections::BTreeSet<String> = ["DEPLOY_TOKEN".to_owned(), "REGISTRY_PASSWD".to_owned()].into();
    let err = parse_with("ci.yaml", &text, &Known { secrets: Some(&known) }).unwrap_err();
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    let d = &err.diagnostics[0];
    assert_eq!((d.line, d.column), (4, 29), "{err}");
    assert_eq!(d.message, "secret `REGISTRY_PASSWORD` of job `deploy` does not exist");
    assert!(d.hint.as_deref().unwrap().contains("did you mean `REGISTRY_PASSWD`?"), "{err}");

    let known: std::collections::BTreeSet<String> = ["DEPLOY_TOKEN".to_owned()].into();
    let err = parse_with("ci.yaml", &text, &Known { secrets: Some(&known) }).unwrap_err();
    let hint = err.diagnostics[0].hint.as_deref().unwrap();
    assert!(hint.contains("drover secret set REGISTRY_PASSWORD"), "{hint}");

    let known: std::collections::BTreeSet<String> = ["DEPLOY_TOKEN".to_owned(), "REGISTRY_PASSWORD".to_owned()].into();
    assert_eq!(parse_with("ci.yaml", &text, &Known { secrets: Some(&known) }).unwrap(), pipeline);
}

#[test]
fn cache_key_errors_point_into_the_key_as_written() {
    // Each key calls `hashFile` for `hashFiles`; the diagnostic points at
    // its `h` when the key is written character for character (on one line,
    // or as a block whose lines are the key's), else where the key starts.
    let cases = [
        ("double quotes", "    cache:\n      key: \"cargo-{{ hashFile('a') }}\"\n      paths: [t]\n", (5, 22)),
        ("single quotes", "    cache:\n      key: 'cargo-{{ hashFile(\"a\") }}'\n      paths: [t]\n", (5, 22)),
        ("plain", "    cache:\n      key: cargo-{{ hashFile('a') }}\n      paths: [t]\n", (5, 21)),
        ("a flow mapping", "    cache: {key: \"cargo-{{ hashFile('a') }}\", paths: [t]}\n", (4, 28)),
        ("an escape", "    cache:\n      key: \"cargo\\x2d{{ hashFile('a') }}\"\n      paths: [t]\n", (5, 12)),
        ("two lines", "    cache:\n      key: cargo-{{\n        hashFile('a') }}\n      paths: [t]\n", (5, 12)),
        ("a block", "    cache:\n      key: >-\n        cargo-{{ hashFile('a') }}\n      paths: [t]\n", (6, 18)),
        ("an anchor", "    cache:\n      key: &k cargo-{{ hashFile('a') }}\n      paths: [t]\n", (5, 24)),
    ];
    for (how, cache, (line, column)) in cases {
        let text = format!("name: p\njobs:\n  a:\n{cache}    steps: [{{run: x}}]\n");
        let err = parse("ci.yaml", &text).unwrap_err();
        assert_eq!(err.diagnostics.len(), 1, "{how}: {err}");
        let d = &err.diagnostics[0];
        assert_eq!(d.message, "cache key of job `a`: unknown function `hashFile`", "{how}");
        assert_eq!((d.line, d.column), (line, column), "{how}: {err}");
    }
}

#[test]
fn conditions_and_expressions_in_strings_are_read() {
    let text = dedent(
        r#"
        name: conditional
        env: {TARGET: staging}
        jobs:
          build:
            env: {REF: "${{ drover.commit }}"}
            steps:
              - run: make
              - if: failure()
                run: ./collect-logs "${{ env.TARGET }}"
          deploy:
            needs: [build]
            if: drover.branch == 'main' && needs.build.result == 'success'
            steps:
              - run: |
                  ./deploy ${{ env.TARGET }} ${{ drover.commit }}
              - if: "!cancelled()"
                run: ./notify
          report:
            needs: [deploy]
            if: ${{ always() }}
            steps: [{run: ./report}]
        "#,
    );
    let pipeline = parse("ci.yaml", &text).unwrap_or_else(|err| panic!("{err}"));
    let condition = |job: &str| pipeline.job(job).unwrap().condition.as_ref().map(Expr::text);
    assert_eq!(condition("build"), None);
    assert_eq!(condition("deploy"), Some("drover.branch == 'main' && needs.build.result == 'success'"));
    assert_eq!(condition("report"), Some(" always() "));
    let steps = |job: &str| -> Vec<Option<&str>> {
        pipeline.job(job).unwrap().steps.iter().map(|step| step.condition.as_ref().map(Expr::text)).collect()
    };
    assert_eq!(steps("build"), [None, Some("failure()")]);
    assert_eq!(steps("deploy"), [None, Some("!cancelled()")]);
    // `${{ }}` is checked and kept as written: nothing is substituted yet.
    assert_eq!(pipeline.jobs[0].env, map(&[("REF", "${{ drover.commit }}")]));
    assert_eq!(pipeline.jobs[0].steps[1].run, "./collect-logs \"${{ env.TARGET }}\"");

    let deploy = pipeline.job("deploy").unwrap().condition.as_ref().unwrap();
    assert!(!deploy.uses_status(), "read as `success() && (...)`");
    assert!(pipeline.job("report").unwrap().condition.as_ref().unwrap().uses_status());

    // Stored as JSON with the conditions as their text; a job without one
    // has no `condition` field, as before conditions existed.
    let json = serde_json::to_string(&pipeline).unwrap();
    assert!(json.contains(r#""condition":"drover.branch == 'main' && needs.build.result == 'success'""#), "{json}");
    assert_eq!(serde_json::from_str::<Pipeline>(&json).unwrap(), pipeline);
    let old = r#"{"name":"p","env":{},"jobs":[{"name":"a","runs_on":{},"env":{},"timeout":null,"retries":0,
        "needs":[],"steps":[{"name":null,"run":"x"}]}]}"#;
    let old: Pipeline = serde_json::from_str(old).unwrap();
    assert_eq!((old.jobs[0].condition.as_ref(), old.jobs[0].steps[0].condition.as_ref()), (None, None));
}

#[test]
fn expression_errors_point_into_the_string_as_written() {
    // Each condition reads `drover.brnch`; the diagnostic points at its `b`
    // when the string is written character for character, else where the
    // string starts.
    let cases = [
        ("plain", "    if: drover.brnch == 'x'\n", (4, 16)),
        ("double quotes", "    if: \"drover.brnch == 'x'\"\n", (4, 17)),
        ("braces", "    if: ${{ drover.brnch == 'x' }}\n", (4, 20)),
        ("an escape", "    if: \"\\x20drover.brnch == 'x'\"\n", (4, 9)),
        ("two lines", "    if: drover.branch == 'x' &&\n      drover.brnch == 'y'\n", (4, 9)),
        ("a literal block", "    if: |\n      drover.branch == 'x' &&\n      drover.brnch == 'y'\n", (6, 14)),
    ];
    for (how, condition, (line, column)) in cases {
        let text = format!("name: p\njobs:\n  a:\n{condition}    steps: [{{run: x}}]\n");
        let err = parse("ci.yaml", &text).unwrap_err();
        assert_eq!(err.diagnostics.len(), 1, "{how}: {err}");
        let d = &err.diagnostics[0];
        assert_eq!(d.message, "condition of job `a`: `drover` has no field `brnch`", "{how}");
        assert_eq!((d.line, d.column), (line, column), "{how}: {err}");
    }
}

#[test]
fn an_approval_names_who_may_decide() {
    let text = "name: p\njobs:\n  deploy:\n    approval: {required: true, approvers: [alice, ops-team, alice]}\n    steps: [{run: ./deploy}]\n  off:\n    approval: {required: false}\n    steps: [{run: 'true'}]\n";
    let pipeline = parse("ci.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pipeline.jobs[0].approval,
        Some(ApprovalSpec { approvers: vec!["alice".into(), "ops-team".into()], timeout: None })
    );
    assert_eq!(pipeline.jobs[1].approval, None, "required: false turns it off");
}
