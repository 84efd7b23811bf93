//! More of an analysis read from files: a metric compared with a baseline
//! (`compare: {baseline: ...}`), a metric measured by a command on a node
//! (`exec:`), and an analysis in a desired-state file, each with what it
//! reads to and its mistakes at their line and column.

use super::analysis_tests::{PROMETHEUS, analysis_of, error_rate, file};
use super::refused_once;
use crate::deploy::{Analysis, AnalysisRun};
use crate::parse;

#[test]
fn a_metric_compared_with_a_baseline_reads_and_its_mistakes_are_refused() {
    use crate::deploy::{Compare, Worse};
    let success = "            success: result < 0.01\n";
    let compared = "            compare: {baseline: {node_label: node}}\n            count: 10\n";
    let metric = &analysis_of(&file(&[(success, compared)], "")).unwrap().metrics[0];
    assert_eq!(metric.compare, Some(Compare { node_label: "node".into(), worse: Worse::Higher }));
    assert_eq!((metric.success.clone(), metric.failure.clone(), metric.count), (None, None, 10));

    // (case, what replaces the success line, line, column, message)
    let cases: &[(&str, &str, usize, usize, &str)] = &[
        (
            "a condition as well",
            "            compare: {baseline: {node_label: node}}\n            count: 10\n            success: result < 1\n",
            22,
            13,
            "is compared with a baseline, so it has no `success`",
        ),
        (
            "too few",
            "            compare: {baseline: {node_label: node}}\n            count: 3\n",
            21,
            20,
            "needs a `count` of at least 5",
        ),
        (
            "no node label",
            "            compare: {baseline: {worse: higher}}\n            count: 10\n",
            20,
            23,
            "has no `node_label`",
        ),
        (
            "a bad label",
            "            compare: {baseline: {node_label: 'a-b'}}\n            count: 10\n",
            20,
            46,
            "must be a Prometheus label name",
        ),
        (
            "a bad worse",
            "            compare: {baseline: {node_label: n, worse: up}}\n            count: 10\n",
            20,
            56,
            "must be `higher` (latency, errors) or `lower`",
        ),
        ("no baseline", "            compare: {}\n            count: 10\n", 20, 13, "names no `baseline`"),
    ];
    let mut failures: Vec<String> = cases
        .iter()
        .filter_map(|(case, replace, line, column, message)| {
            let text = file(&[(success, replace)], "");
            refused_once(&text, *line, *column, message).err().map(|why| format!("{case}: {why}"))
        })
        .collect();
    let http = "            http: {url: \"http://stats:9000/\"}\n";
    match parse("ci.yml", &file(&[(PROMETHEUS, http), (success, compared)], "")) {
        Ok(_) => failures.push("an http provider: parsed".into()),
        Err(err) if err.to_string().contains("needs a `prometheus` provider") => {}
        Err(err) => failures.push(format!("an http provider: {err}")),
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn an_exec_metric_reads_with_its_exit_code_judged_and_its_mistakes_are_refused() {
    use crate::expr::Scope;
    use std::time::Duration;
    let success = "            success: result < 0.01\n";
    let exec = "            exec: {command: ./smoke --quick}\n";
    let metric = &analysis_of(&file(&[(PROMETHEUS, exec), (success, "")], "")).unwrap().metrics[0];
    assert_eq!(
        metric.provider,
        crate::deploy::Provider::Exec { command: "./smoke --quick".into(), timeout: Duration::from_secs(30) }
    );
    let exit_zero = crate::expr::parse("result == 0", &Scope { result: true, ..Scope::default() }).unwrap();
    assert_eq!((&metric.success, &metric.failure), (&Some(exit_zero), &None), "judged by its exit code");
    // Conditions written are kept, as a timeout is.
    let written = "            exec: {command: ./smoke, timeout: 2m}\n";
    let metric = &analysis_of(&file(&[(PROMETHEUS, written)], "")).unwrap().metrics[0];
    assert_eq!(
        metric.provider,
        crate::deploy::Provider::Exec { command: "./smoke".into(), timeout: Duration::from_secs(120) }
    );
    assert!(metric.success.is_some());

    // (case, what replaces the provider line, line, column, message)
    let long = format!("            exec: {{command: '{}'}}\n", "x".repeat(4097));
    let cases: &[(&str, &str, usize, usize, &str)] = &[
        (
            "no command",
            "            exec: {timeout: 5s}\n",
            19,
            13,
            "`exec` of metric `error-rate` of the analysis of job `d` has no `command`",
        ),
        (
            "an empty command",
            "            exec: {command: ' '}\n",
            19,
            29,
            "`command` of metric `error-rate` of the analysis of job `d` is empty",
        ),
        ("a long command", &long, 19, 29, "has 4097 bytes, over the limit of 4096"),
        ("a command to fill in", "            exec: {command: 'check ${{ env.X }}'}\n", 19, 36, "has `${{ }}`"),
        (
            "a timeout over the limit",
            "            exec: {command: ./c, timeout: 11m}\n",
            19,
            43,
            "timeout `11m` in `exec` of metric `error-rate`",
        ),
        (
            "an unknown key",
            "            exec: {command: ./c, run: x}\n",
            19,
            34,
            "unknown key `run` in `exec` of metric `error-rate`",
        ),
        (
            "a list",
            "            exec: [./c]\n",
            19,
            19,
            "`exec` of metric `error-rate` of the analysis of job `d` must be a mapping",
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(case, replace, line, column, message)| {
            let text = file(&[(PROMETHEUS, replace)], "");
            refused_once(&text, *line, *column, message).err().map(|why| format!("{case}: {why}"))
        })
        .collect();
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_desired_state_file_has_an_analysis_as_a_deploy_does() {
    let text = "\
artifact: {run: 42, job: build, path: dist/app.tar.gz}
service:
  name: web
  command: ./app --port ${PORT}
  port: 8080
  health: {http: /, interval: 1s, healthy_after: 2, timeout: 30s}
analysis:
  metrics:
    - name: error-rate
      prometheus: {address: \"http://prometheus:9090\", query: \"sum(rate(errors_total[1m]))\"}
      success: result < 0.01
";
    let service = crate::app::parse_service_file("deploy/web.yaml", text).unwrap_or_else(|err| panic!("{err}"));
    let want = Analysis { metrics: vec![error_rate()], run: AnalysisRun::Steps };
    assert_eq!(service.analysis.as_ref(), Some(&want));
    assert_eq!(service.deploy_spec("production").analysis, Some(want));
    let json = serde_json::to_string(&service).unwrap();
    assert_eq!(serde_json::from_str::<crate::app::ServiceFile>(&json).unwrap(), service);

    // The same rules, naming the file; `${{ }}` is refused as a deploy's is.
    let cases = [
        (
            "result < 0.01",
            "result < 'x'",
            11,
            23,
            "`success` of metric `error-rate` of the analysis of `deploy/web.yaml`: `<`",
        ),
        (
            "http://prometheus:9090",
            "http://${{ x }}",
            10,
            37,
            "`address` of metric `error-rate` of the analysis of `deploy/web.yaml` has `${{ }}`",
        ),
        ("  metrics:\n", "  metric:\n", 8, 3, "unknown key `metric` in the analysis of `deploy/web.yaml`"),
    ];
    for (from, to, line, column, message) in cases {
        let err = crate::app::parse_service_file("deploy/web.yaml", &text.replacen(from, to, 1)).unwrap_err();
        let found = err.diagnostics.iter().any(|d| (d.line, d.column) == (line, column) && d.message.contains(message));
        assert!(found, "{from:?}: {err}");
    }
}
