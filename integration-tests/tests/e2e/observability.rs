//! Metrics and health endpoints on the real binaries.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{AgentSpec, Fleet, http_get, wait_for};

/// Parses the Prometheus text format strictly enough to catch mistakes:
/// every sample line is `name{labels} value` with a number, and every
/// sample belongs to a metric announced by `# TYPE`.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        assert!(types.contains_key(name) || types.contains_key(base), "sample without TYPE: {line}");
        samples.insert(series.to_string(), value);
    }
    samples
}

#[test]
fn metrics_count_the_jobs_just_run_and_health_endpoints_answer() {
    let mut fleet = Fleet::start_with("metrics", &["--metrics-listen", "127.0.0.1:0"]);
    let coordinator_metrics = fleet.metrics[0].clone().expect("the coordinator printed its metrics address");
    let extra = ["--metrics-listen", "127.0.0.1:0", "--log-format", "json"];
    let (i, agent_metrics) = fleet.start_agent("a1", AgentSpec { slots: 2, extra: &extra, ..AgentSpec::default() });
    let agent_metrics = agent_metrics.expect("the agent printed its metrics address");
    let log = fleet.agents[i].log.clone();
    fleet.wait_agents(1);
    let run = fleet.submit(
        "two.yml",
        "name: two\njobs:\n  a:\n    steps:\n      - run: echo a\n  b:\n    needs: [a]\n    steps:\n      - run: echo b\n",
    );
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");

    let (status, body) = http_get(&coordinator_metrics, "/metrics").expect("coordinator /metrics");
    assert_eq!(status, 200);
    let m = parse_prometheus(&body);
    assert_eq!(m.get("drover_jobs_finished_total{result=\"succeeded\"}"), Some(&2.0), "{body}");
    assert_eq!(m.get("drover_runs_submitted_total"), Some(&1.0), "{body}");
    assert_eq!(m.get("drover_dispatch_latency_seconds_count"), Some(&2.0), "{body}");
    assert_eq!(m.get("drover_agents_connected"), Some(&1.0), "{body}");
    assert_eq!(m.get("drover_is_leader"), Some(&1.0), "{body}");
    assert!(m.get("drover_store_txn_seconds_count").is_some_and(|n| *n > 0.0), "{body}");
    assert!(m.get("drover_log_bytes_total").is_some_and(|n| *n > 0.0), "{body}");
    assert_eq!(http_get(&coordinator_metrics, "/healthz").map(|r| r.0), Some(200));
    let (status, body) = http_get(&coordinator_metrics, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(http_get(&coordinator_metrics, "/nope").map(|r| r.0), Some(404));

    let body = wait_for("agent metrics", Duration::from_secs(10), || {
        let (_, body) = http_get(&agent_metrics, "/metrics")?;
        body.contains("drover_agent_attempts_finished_total{outcome=\"succeeded\"} 2").then_some(body)
    });
    let m = parse_prometheus(&body);
    assert_eq!(m.get("drover_agent_connected"), Some(&1.0), "{body}");
    assert_eq!(http_get(&agent_metrics, "/readyz").map(|r| r.0), Some(200));
    // --log-format json: every log line is a JSON object.
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(!logs.is_empty());
    for line in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}
