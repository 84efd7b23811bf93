//! A deploy's `analysis:` read from files: good ones to the exact
//! [`Analysis`], with the defaults filled in; bad ones each to one
//! diagnostic at its line and column, with a hint; and the same rules in a
//! desired-state file.

use super::refused_once;
use std::time::Duration;

use crate::deploy::{Analysis, AnalysisRun, Metric, Provider};
use crate::expr::Scope;
use crate::{Expr, MAX_ANALYSIS_METRICS, parse};

/// A pipeline whose deploy job `d` has an analysis of one metric, lines 16
/// to 20; lines appended start at line 21 (metric keys twelve spaces in, a
/// metric ten, a job key four).
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
      analysis:
        metrics:
          - name: error-rate
            prometheus: {address: \"http://prometheus:9090\", query: \"sum(rate(errors_total[1m]))\"}
            success: result < 0.01
";

/// The analysis of [`GOOD`], lines 16 to 20.
const ANALYSIS: &str = "      analysis:
        metrics:
          - name: error-rate
            prometheus: {address: \"http://prometheus:9090\", query: \"sum(rate(errors_total[1m]))\"}
            success: result < 0.01
";

/// The provider of [`GOOD`]'s metric, line 19.
pub(super) const PROMETHEUS: &str =
    "            prometheus: {address: \"http://prometheus:9090\", query: \"sum(rate(errors_total[1m]))\"}\n";

/// [`GOOD`] with each `(from, to)` replaced once, then `extra` appended.
pub(super) fn file(replace: &[(&str, &str)], extra: &str) -> String {
    let mut text = GOOD.to_owned();
    for (from, to) in replace {
        assert!(text.contains(from), "{from:?} is in the file");
        text = text.replacen(from, to, 1);
    }
    text + extra
}

fn condition(text: &str) -> Option<Expr> {
    Some(crate::expr::parse(text, &Scope { result: true, ..Scope::default() }).unwrap())
}

/// [`GOOD`]'s metric, every default filled in.
pub(super) fn error_rate() -> Metric {
    Metric {
        name: "error-rate".into(),
        provider: Provider::Prometheus {
            address: "http://prometheus:9090".into(),
            query: "sum(rate(errors_total[1m]))".into(),
        },
        interval: Duration::from_secs(10),
        count: 1,
        initial_delay: Duration::ZERO,
        success: condition("result < 0.01"),
        failure: None,
        failure_limit: 0,
        inconclusive_limit: 0,
        compare: None,
    }
}

pub(super) fn analysis_of(text: &str) -> Option<Analysis> {
    let pipeline = parse("ci.yml", text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    // What the store keeps reads back the same.
    let json = serde_json::to_string(&pipeline).unwrap();
    assert_eq!(serde_json::from_str::<crate::Pipeline>(&json).unwrap(), pipeline);
    pipeline.job("d").unwrap().deploy.clone().unwrap().analysis
}

#[test]
fn a_full_analysis_reads_to_its_metrics() {
    let full = "      analysis:
        run: both
        metrics:
          - name: error-rate
            prometheus: {address: \"http://prometheus:9090\", query: \"sum(rate(errors_total[1m]))\"}
            interval: 5s
            count: 3
            initial_delay: 1m30s
            success: result < 0.01
            failure: result >= 0.05
            failure_limit: 1
            inconclusive_limit: 3
          - name: ready
            http: {url: \"https://10.0.0.5:9000/stats?x=1\", json_path: \"$.data['is ready'][0].ok\"}
            success: result == true
";
    let full = format!(
        "{full}          - name: body.count_2
            http:
              url: http://user@[::1]:8080/count
            failure: result > 100 || result == null
            initial_delay: 0s
            interval: 1h
            count: 100
            inconclusive_limit: 100
"
    );
    let want = Analysis {
        metrics: vec![
            Metric {
                interval: Duration::from_secs(5),
                count: 3,
                initial_delay: Duration::from_secs(90),
                failure: condition("result >= 0.05"),
                failure_limit: 1,
                inconclusive_limit: 3,
                ..error_rate()
            },
            Metric {
                name: "ready".into(),
                provider: Provider::Http {
                    url: "https://10.0.0.5:9000/stats?x=1".into(),
                    json_path: Some("$.data['is ready'][0].ok".into()),
                },
                success: condition("result == true"),
                ..error_rate()
            },
            Metric {
                name: "body.count_2".into(),
                provider: Provider::Http { url: "http://user@[::1]:8080/count".into(), json_path: None },
                interval: Duration::from_secs(3600),
                count: 100,
                success: None,
                failure: condition("result > 100 || result == null"),
                inconclusive_limit: 100,
                ..error_rate()
            },
        ],
        run: AnalysisRun::Both,
    };
    assert_eq!(analysis_of(&file(&[(ANALYSIS, &full)], "")), Some(want));
}

#[test]
fn defaults_are_filled_in_and_no_analysis_is_none() {
    assert_eq!(analysis_of(GOOD), Some(Analysis { metrics: vec![error_rate()], run: AnalysisRun::Steps }));
    // A failure condition alone, and json paths of every form.
    for path in ["$", "$.a", "$.a-b.c_d", "$.a[0].b", "$[12]", "$['key with space']", "$.x['y'][3]"] {
        let http = format!("            http: {{url: \"http://stats:9000/\", json_path: \"{path}\"}}\n");
        let text = file(&[(PROMETHEUS, &http), ("success: result < 0.01", "failure: result")], "");
        let metric = &analysis_of(&text).unwrap().metrics[0];
        assert_eq!(
            metric.provider,
            Provider::Http { url: "http://stats:9000/".into(), json_path: Some(path.into()) },
            "{path}"
        );
        assert_eq!((&metric.success, &metric.failure), (&None, &condition("result")), "{path}");
    }
    let without = file(&[(ANALYSIS, "")], "");
    assert_eq!(analysis_of(&without), None);
    let pipeline = parse("ci.yml", &without).unwrap();
    let json = serde_json::to_value(pipeline.job("d").unwrap()).unwrap();
    assert!(json["deploy"].get("analysis").is_none(), "no analysis, no key: {json}");
}

#[test]
fn bad_analyses_are_refused_where_the_mistake_is() {
    let http = |url: &str, path: &str| format!("            http: {{url: \"{url}\", json_path: \"{path}\"}}\n");
    let address = |address: &str| format!("prometheus: {{address: \"{address}\", query: \"up\"}}");
    let prometheus = "prometheus: {address: \"http://prometheus:9090\", query: \"sum(rate(errors_total[1m]))\"}";
    let (ftp, spaced, no_host, long) = (
        address("ftp://prometheus:9090"),
        address("http://prom etheus:9090"),
        address("http://:9090"),
        address(&format!("http://p/{}", "a".repeat(2040))),
    );
    let expanded = address("http://${{ env.HOST }}:9090");
    let expanded_path = http("http://stats:9000/", "$.${{ env.KEY }}");
    let (long_query, empty_query) = (
        format!("prometheus: {{address: \"http://p\", query: \"{}\"}}", "1".repeat(4097)),
        "prometheus: {address: \"http://p\", query: \" \"}".to_owned(),
    );
    let (double_dot, no_dollar, bad_index, unclosed, long_path) = (
        http("http://stats:9000/", "$.a..b"),
        http("http://stats:9000/", "a.b"),
        http("http://stats:9000/", "$.items[x]"),
        http("http://stats:9000/", "$['a"),
        http("http://stats:9000/", &format!("$.{}", "a".repeat(255))),
    );
    let too_many = format!(
        "      analysis:\n        metrics:\n{}",
        (0..=MAX_ANALYSIS_METRICS)
            .map(|i| format!(
                "          - {{name: m{i}, prometheus: {{address: 'http://p', query: up}}, success: result}}\n"
            ))
            .collect::<String>()
    );
    let second =
        "          - name: error-rate\n            http: {url: \"http://x:1/\"}\n            success: result == 1\n";
    // (case, replacements, lines appended, line, column, message)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, usize, usize, &'a str);
    let cases: Vec<Case<'_>> = vec![
        // The analysis and its list.
        (
            "an analysis that is a list",
            vec![(ANALYSIS, "      analysis: [error-rate]\n")],
            "",
            16,
            17,
            "`analysis` in the deploy of job `d` must be a mapping with `metrics`",
        ),
        ("no metrics", vec![(ANALYSIS, "      analysis: {}\n")], "", 16, 7, "the analysis of job `d` has no `metrics`"),
        (
            "no metric",
            vec![(ANALYSIS, "      analysis: {metrics: []}\n")],
            "",
            16,
            27,
            "the metrics of the analysis of job `d` must be a list of 1 to 10",
        ),
        (
            "an unknown key in the analysis",
            vec![("        metrics:\n", "        dry_run: true\n        metrics:\n")],
            "",
            17,
            9,
            "unknown key `dry_run` in the analysis of job `d`",
        ),
        ("too many metrics", vec![(ANALYSIS, too_many.as_str())], "", 28, 13, "has 11 metrics, over the limit of 10"),
        (
            "a metric that is a name",
            vec![(ANALYSIS, "      analysis: {metrics: [error-rate]}\n")],
            "",
            16,
            28,
            "metric 1 of the analysis of job `d` must be a mapping",
        ),
        // A metric's keys.
        (
            "an unknown key",
            vec![],
            "            intervl: 5s\n",
            21,
            13,
            "unknown key `intervl` in metric `error-rate` of the analysis of job `d`",
        ),
        (
            "no name",
            vec![("- name: error-rate\n            prometheus", "- prometheus")],
            "",
            18,
            13,
            "metric 1 of the analysis of job `d` has no `name`",
        ),
        (
            "an invalid name",
            vec![("name: error-rate", "name: error rate")],
            "",
            18,
            19,
            "invalid metric name `error rate`",
        ),
        (
            "a duplicate name",
            vec![],
            second,
            21,
            19,
            "metric `error-rate` is named twice in the analysis of job `d` (first at line 18, column 19)",
        ),
        (
            "two providers",
            vec![],
            "            http: {url: \"http://x\"}\n",
            21,
            13,
            "metric `error-rate` of the analysis of job `d` has both `prometheus` and `http`",
        ),
        (
            "no provider",
            vec![(PROMETHEUS, "")],
            "",
            18,
            13,
            "metric `error-rate` of the analysis of job `d` names no provider",
        ),
        (
            "no condition",
            vec![("            success: result < 0.01\n", "")],
            "",
            18,
            13,
            "metric `error-rate` of the analysis of job `d` has neither `success` nor `failure`",
        ),
        // Durations and numbers.
        (
            "a bad interval",
            vec![],
            "            interval: 5x\n",
            21,
            23,
            "invalid interval `5x` in metric `error-rate`",
        ),
        ("an interval of zero", vec![], "            interval: 0s\n", 21, 23, "must be longer than zero"),
        (
            "an interval over an hour",
            vec![],
            "            interval: 61m\n",
            21,
            23,
            "interval `61m` in metric `error-rate` of the analysis of job `d` is over the limit of 1h",
        ),
        ("an initial delay over an hour", vec![], "            initial_delay: 2h\n", 21, 28, "over the limit of 1h"),
        ("an initial delay without a unit", vec![], "            initial_delay: 0\n", 21, 28, "has no unit"),
        (
            "count 0",
            vec![],
            "            count: 0\n",
            21,
            20,
            "`count` of metric `error-rate` of the analysis of job `d` must be 1 to 100, found 0",
        ),
        ("count over the limit", vec![], "            count: 101\n", 21, 20, "must be 1 to 100, found 101"),
        (
            "a failure limit over the count",
            vec![],
            "            count: 3\n            failure_limit: 4\n",
            22,
            28,
            "`failure_limit` of metric `error-rate` of the analysis of job `d` must be 0 to 3, found 4",
        ),
        (
            "an inconclusive limit over the default count",
            vec![],
            "            inconclusive_limit: 2\n",
            21,
            33,
            "`inconclusive_limit` of metric `error-rate` of the analysis of job `d` must be 0 to 1, found 2",
        ),
        // Providers.
        (
            "a provider that is a URL",
            vec![(prometheus, "prometheus: http://prometheus:9090")],
            "",
            19,
            25,
            "`prometheus` of metric `error-rate` of the analysis of job `d` must be a mapping",
        ),
        (
            "a provider without its query",
            vec![(", query: \"sum(rate(errors_total[1m]))\"", "")],
            "",
            19,
            13,
            "`prometheus` of metric `error-rate` of the analysis of job `d` has no `query`",
        ),
        (
            "an unknown key in a provider",
            vec![("[1m]))\"}", "[1m]))\", step: 1m}")],
            "",
            19,
            99,
            "unknown key `step` in `prometheus` of metric `error-rate`",
        ),
        (
            "an address of another scheme",
            vec![(prometheus, ftp.as_str())],
            "",
            19,
            36,
            "`address` of metric `error-rate` of the analysis of job `d` must start with `http://` or `https://`",
        ),
        (
            "an address with a space",
            vec![(prometheus, spaced.as_str())],
            "",
            19,
            47,
            "has a space or a control character",
        ),
        ("an address with no host", vec![(prometheus, no_host.as_str())], "", 19, 36, "names no host"),
        ("an address too long", vec![(prometheus, long.as_str())], "", 19, 36, "is over the limit of 2048 characters"),
        ("an empty query", vec![(prometheus, empty_query.as_str())], "", 19, 54, "`query` of metric `error-rate`"),
        (
            "a query too long",
            vec![(prometheus, long_query.as_str())],
            "",
            19,
            54,
            "has 4097 bytes, over the limit of 4096",
        ),
        (
            "a json path with `..`",
            vec![(PROMETHEUS, double_dot.as_str())],
            "",
            19,
            63,
            "`json_path` of metric `error-rate` of the analysis of job `d`, `$.a..b`, is not a simple JSONPath: \
             expected a name after `.`",
        ),
        ("a json path without `$`", vec![(PROMETHEUS, no_dollar.as_str())], "", 19, 59, "it must start with `$`"),
        ("a json path with a bad index", vec![(PROMETHEUS, bad_index.as_str())], "", 19, 67, "expected an index"),
        (
            "a json path with an unclosed key",
            vec![(PROMETHEUS, unclosed.as_str())],
            "",
            19,
            61,
            "quote is never closed",
        ),
        (
            "a json path too long",
            vec![(PROMETHEUS, long_path.as_str())],
            "",
            19,
            59,
            "over the limit of 256 characters",
        ),
        // Expressions, pointed at inside the string.
        (
            "a string ordered",
            vec![("result < 0.01", "result < 'x'")],
            "",
            20,
            29,
            "`success` of metric `error-rate` of the analysis of job `d`: `<` compares numbers only, and its right \
             side is a string",
        ),
        ("a syntax error", vec![("result < 0.01", "result <> 1")], "", 20, 30, "expected a value, found `>`"),
        (
            "a syntax error in quotes",
            vec![("result < 0.01", "\"result < 0.01 &&\"")],
            "",
            20,
            39,
            "expected a value, found the end of the expression",
        ),
        (
            "a run's context",
            vec![],
            "            failure: drover.branch == 'main'\n",
            21,
            22,
            "`failure` of metric `error-rate` of the analysis of job `d`: `drover` cannot be read in an analysis",
        ),
        ("a misspelt result", vec![("result < 0.01", "reslt < 0.01")], "", 20, 22, "unknown context `reslt`"),
        (
            "an empty condition",
            vec![("result < 0.01", "")],
            "",
            20,
            13,
            "`success` of metric `error-rate` of the analysis of job `d` is empty",
        ),
        (
            "`result` in a job's `if:`",
            vec![],
            "    if: result < 0.01\n",
            21,
            9,
            "condition of job `d`: `result` is allowed only in the `success` and `failure` of an analysis metric",
        ),
        // `${{ }}`, which nothing fills in.
        (
            "`${{` in an address",
            vec![(prometheus, expanded.as_str())],
            "",
            19,
            43,
            "`address` of metric `error-rate` of the analysis of job `d` has `${{ }}`, but an analysis is used as it \
             is written",
        ),
        (
            "`${{` in a condition",
            vec![("result < 0.01", "${{ result < 0.01 }}")],
            "",
            20,
            22,
            "`success` of metric `error-rate` of the analysis of job `d` has `${{ }}`",
        ),
        (
            "`${{` in a json path",
            vec![(PROMETHEUS, expanded_path.as_str())],
            "",
            19,
            61,
            "`json_path` of metric `error-rate` of the analysis of job `d` has `${{ }}`",
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
    // (case, replacements, lines appended, the hint)
    let cases = [
        ("a misspelt key", vec![], "            intervl: 5s\n", "did you mean `interval`?"),
        ("a misspelt result", vec![("result < 0.01", "reslt < 0.01")], "", "did you mean `result`?"),
        ("two providers", vec![], "            http: {url: \"http://x\"}\n", "a metric measures one thing"),
        ("a limit", vec![], "            failure_limit: 2\n", "at most its `count`"),
        ("a run's context", vec![("result < 0.01", "env.A")], "", "read only `result`"),
    ];
    for (case, replace, extra, hint) in cases {
        let err = parse("ci.yml", &file(&replace, extra)).expect_err(case);
        let got = err.diagnostics[0].hint.as_deref().unwrap_or_default();
        assert!(got.contains(hint), "{case}: {err}");
    }
}

#[test]
fn every_mistake_in_an_analysis_is_reported_in_one_pass() {
    let text = file(
        &[("name: error-rate", "name: -x"), ("http://prometheus:9090", "ftp://p"), ("< 0.01", "< 'x'")],
        "            count: 0\n            failure_limit: 200\n            bogus: 1\n\
         \x20         - name: b\n            http: {url: \"http://x/\", json_path: x}\n\
         \x20         - name: c\n            prometheus: {address: \"http://p\", query: up}\n",
    );
    let err = parse("ci.yml", &text).unwrap_err();
    let got: Vec<(usize, usize)> = err.diagnostics.iter().map(|d| (d.line, d.column)).collect();
    // The name, the address, the condition, the count, the limit (over the
    // most a count can be), the unknown key; metric `b` judges nothing and
    // has a bad path; metric `c` judges nothing.
    let want = [(18, 19), (19, 36), (20, 29), (21, 20), (22, 28), (23, 13), (24, 13), (25, 49), (26, 13)];
    assert_eq!(got, want, "{err}");
}
