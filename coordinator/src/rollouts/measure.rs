//! Measuring an analysis metric (issue 17), the IO: a Prometheus instant
//! query or a GET of a URL gives a value, and the metric's conditions
//! (expressions over `result`) judge it. The leader measures, so each
//! address must be one the coordinator reaches. What the measurements add
//! up to is `drover_deploy::analysis`'s, and when they are taken is the
//! task's in `super::analysis`.

use std::time::Duration;

use tokio::sync::mpsc;

use drover_deploy::analysis::Outcome;
use drover_pipeline::deploy::{Metric, Provider};
use drover_pipeline::expr::{Context, DroverField, JobResult, Status, Value};

use crate::apps::fetch::chain;

/// The longest one measurement may take.
pub const MEASURE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer read.
const MAX_BODY: usize = 1024 * 1024;

/// How the leader calls what a pipeline names (a provider, a gate's
/// webhook): under the coordinator's outbound policy (`crate::outbound`),
/// with a client that follows it. One per term, cloned into each task.
/// An `exec` metric's command goes to the controller's loop instead
/// (`super::probe`), which runs it on a node.
#[derive(Clone)]
pub struct Caller {
    pub client: reqwest::Client,
    pub outbound: crate::outbound::Outbound,
    pub probes: mpsc::UnboundedSender<super::probe::Ask>,
}

impl Caller {
    pub fn new(outbound: &crate::outbound::Outbound, probes: mpsc::UnboundedSender<super::probe::Ask>) -> Caller {
        Caller { client: outbound.client(MEASURE_TIMEOUT), outbound: outbound.clone(), probes }
    }

    /// Why `url` may not be called, in the words a measurement or a gate
    /// keeps.
    pub fn refused(&self, url: &str) -> Option<String> {
        self.outbound.url_problem(url).map(|why| format!("refused to call {url}: {why}"))
    }
}

/// The value of `metric` of rollout `rollout` now, or why there is none
/// (inconclusive, never a failure).
pub async fn measure(caller: &Caller, rollout: u64, metric: &Metric) -> Result<Value, String> {
    let client = &caller.client;
    let called = match &metric.provider {
        Provider::Prometheus { address, .. } => address,
        Provider::Http { url, .. } => url,
        Provider::Exec { command, timeout } => {
            return super::probe::ask(&caller.probes, rollout, &metric.name, command, *timeout).await;
        }
    };
    if let Some(why) = caller.refused(called) {
        return Err(why);
    }
    match &metric.provider {
        Provider::Prometheus { address, query } => {
            let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
            let body = get(client.get(&url).query(&[("query", query)]), address).await?;
            prometheus_value(&body)
        }
        Provider::Exec { .. } => unreachable!("measured above"),
        Provider::Http { url, json_path } => {
            let body = get(client.get(url), url).await?;
            match json_path {
                Some(path) => {
                    let doc: serde_json::Value = serde_json::from_slice(&body)
                        .map_err(|e| format!("{url} did not answer JSON ({e}), which its json_path needs"))?;
                    let found =
                        json_path_value(&doc, path).ok_or_else(|| format!("{url}'s answer has nothing at {path}"))?;
                    json_value(found)
                        .ok_or_else(|| format!("{path} in {url}'s answer is not a number, a string, a boolean or null"))
                }
                None => {
                    let text = String::from_utf8_lossy(&body).trim().to_owned();
                    Ok(text.parse::<f64>().map(Value::Number).unwrap_or(Value::String(text)))
                }
            }
        }
    }
}

/// A metric compared with a baseline, measured once: its Prometheus
/// query's samples split by `compare.node_label` into the values of the
/// canary's nodes and of the baseline's. Either side with no sample is no
/// measurement (inconclusive, never a failure).
pub async fn measure_split(
    caller: &Caller,
    metric: &Metric,
    compare: &drover_pipeline::deploy::Compare,
    split: &super::analysis::Split,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let Provider::Prometheus { address, query } = &metric.provider else {
        return Err("a metric compared with a baseline is measured with Prometheus".to_owned());
    };
    if split.baseline.is_empty() {
        return Err("no node is left on the current version to be the baseline: compare a canary step that leaves \
                    at least as many nodes as it updates"
            .to_owned());
    }
    if let Some(why) = caller.refused(address) {
        return Err(why);
    }
    let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
    let body = get(caller.client.get(&url).query(&[("query", query)]), address).await?;
    let samples = prometheus_samples(&body, &compare.node_label)?;
    let side = |nodes: &[String]| -> Vec<f64> {
        samples.iter().filter(|(node, v)| nodes.contains(node) && !v.is_nan()).map(|(_, v)| *v).collect()
    };
    let (canary, baseline) = (side(&split.canary), side(&split.baseline));
    for (what, nodes, values) in [("canary", &split.canary, &canary), ("baseline", &split.baseline, &baseline)] {
        if values.is_empty() {
            return Err(format!(
                "the query has no sample whose label {} names a node of the {what} ({})",
                compare.node_label,
                nodes.join(", ")
            ));
        }
    }
    Ok((canary, baseline))
}

/// Each sample of a Prometheus vector answer: its `label`'s value and its
/// value (samples without the label are left out).
fn prometheus_samples(body: &[u8], label: &str) -> Result<Vec<(String, f64)>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("Prometheus did not answer JSON: {e}"))?;
    if doc["status"] != "success" {
        return Err(format!("Prometheus refused the query: {}", doc["error"].as_str().unwrap_or("no reason given")));
    }
    if doc["data"]["resultType"] != "vector" {
        return Err("a metric compared with a baseline needs a query that gives a vector, one sample a node".into());
    }
    let result = doc["data"]["result"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut samples = Vec::with_capacity(result.len());
    for sample in result {
        let Some(node) = sample["metric"][label].as_str() else { continue };
        let text = sample["value"][1].as_str().unwrap_or_default();
        let value =
            text.parse::<f64>().map_err(|_| format!("Prometheus's sample of {node} has {text:?}, not a number"))?;
        samples.push((node.to_owned(), value));
    }
    Ok(samples)
}

/// A GET's body, when it answers 2xx.
async fn get(request: reqwest::RequestBuilder, what: &str) -> Result<Vec<u8>, String> {
    let response = request.send().await.map_err(|e| format!("cannot reach {what}: {}", chain(&e)))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("cannot read {what}'s answer: {}", chain(&e)))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned();
        return Err(format!("{what} answered {status}: {text}"));
    }
    if body.len() > MAX_BODY {
        return Err(format!("{what}'s answer is {} bytes, over the limit of {MAX_BODY}", body.len()));
    }
    Ok(body.to_vec())
}

/// The value of a Prometheus query's answer: the first sample of a
/// vector, or a scalar. An empty vector is no data.
fn prometheus_value(body: &[u8]) -> Result<Value, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("Prometheus did not answer JSON: {e}"))?;
    if doc["status"] != "success" {
        return Err(format!("Prometheus refused the query: {}", doc["error"].as_str().unwrap_or("no reason given")));
    }
    let data = &doc["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => match data["result"].as_array().and_then(|r| r.first()) {
            Some(first) => &first["value"],
            None => return Err("the query returned no data".to_owned()),
        },
        Some("scalar") => &data["result"],
        other => return Err(format!("the query gives a {}, not a vector or a scalar", other.unwrap_or("nothing"))),
    };
    let text = sample[1].as_str().ok_or_else(|| "Prometheus's sample has no value".to_owned())?;
    let value: f64 = text.parse().map_err(|_| format!("Prometheus's sample {text:?} is not a number"))?;
    if value.is_nan() {
        return Err("the query's value is NaN (no data to divide)".to_owned());
    }
    Ok(Value::Number(value))
}

/// The value at `path` (`$`, `$.a.b`, `$.a[0]`, `$['a b']`) of `doc`.
pub fn json_path_value<'a>(doc: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut rest = path.strip_prefix('$')?;
    let mut at = doc;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("['") {
            let end = after.find("']")?;
            at = at.get(&after[..end])?;
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            at = at.get(after[..end].parse::<usize>().ok()?)?;
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            at = at.get(&after[..end])?;
            rest = &after[end..];
        } else {
            return None;
        }
    }
    Some(at)
}

fn json_value(v: &serde_json::Value) -> Option<Value> {
    match v {
        serde_json::Value::Null => Some(Value::Null),
        serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
        serde_json::Value::Number(n) => n.as_f64().map(Value::Number),
        serde_json::Value::String(s) => Some(Value::String(s.clone())),
        _ => None,
    }
}

/// How `metric`'s conditions judge `value`, as Argo Rollouts does: a true
/// `success` is a success; else a true `failure` a failure; else, with
/// one condition written, the other side of it; with both, inconclusive.
pub fn judge(metric: &Metric, value: &Value) -> Outcome {
    let ctx = Measured(value);
    let holds = |e: &Option<drover_pipeline::Expr>| e.as_ref().map(|e| e.eval(&ctx).is_truthy());
    match (holds(&metric.success), holds(&metric.failure)) {
        (Some(true), _) => Outcome::Successful,
        (_, Some(true)) => Outcome::Failed,
        (Some(false), None) => Outcome::Failed,
        (None, Some(false)) => Outcome::Successful,
        _ => Outcome::Inconclusive,
    }
}

/// What a condition reads: `result` and nothing else.
struct Measured<'a>(&'a Value);

impl Context for Measured<'_> {
    fn drover(&self, _: DroverField) -> Option<String> {
        None
    }
    fn env(&self, _: &str) -> Option<String> {
        None
    }
    fn matrix(&self, _: &str) -> Option<String> {
        None
    }
    fn need_result(&self, _: &str) -> Option<JobResult> {
        None
    }
    fn status(&self) -> Status {
        Status::Succeeded
    }
    fn result(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_pipeline::expr::Scope;

    #[test]
    fn a_prometheus_answer_gives_its_first_sample_or_says_why_not() {
        // (case, answer, value or the start of the reason)
        let cases: &[(&str, &str, Result<f64, &str>)] = &[
            (
                "a vector",
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}"#,
                Ok(0.25),
            ),
            ("a scalar", r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#, Ok(3.0)),
            (
                "no data",
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                Err("the query returned no data"),
            ),
            (
                "NaN",
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"NaN"]}]}}"#,
                Err("the query's value is NaN"),
            ),
            (
                "a refusal",
                r#"{"status":"error","error":"parse error"}"#,
                Err("Prometheus refused the query: parse error"),
            ),
            (
                "a matrix",
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                Err("the query gives a matrix"),
            ),
            ("not JSON", "<html>", Err("Prometheus did not answer JSON")),
        ];
        for (case, answer, want) in cases {
            match (prometheus_value(answer.as_bytes()), want) {
                (Ok(Value::Number(got)), Ok(want)) => assert_eq!(got, *want, "{case}"),
                (Err(why), Err(want)) => assert!(why.starts_with(want), "{case}: {why}"),
                (got, want) => panic!("{case}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_json_path_reads_keys_indexes_and_quoted_keys() {
        let doc: serde_json::Value = serde_json::json!({"a": {"b": [10, {"c": true}]}, "d e": "x"});
        // (path, the value there, if any)
        let cases = [
            ("$", Some(doc.clone())),
            ("$.a.b[0]", Some(serde_json::json!(10))),
            ("$.a.b[1].c", Some(serde_json::json!(true))),
            ("$['d e']", Some(serde_json::json!("x"))),
            ("$.a.missing", None),
            ("$.a.b[9]", None),
            ("a.b", None),
        ];
        for (path, want) in cases {
            assert_eq!(json_path_value(&doc, path).cloned(), want, "{path}");
        }
    }

    #[test]
    fn a_measurement_is_judged_as_argo_rollouts_judges_it() {
        let scope = Scope { result: true, ..Scope::default() };
        let expr = |text: &str| Some(drover_pipeline::expr::parse(text, &scope).unwrap());
        let metric = |success: Option<drover_pipeline::Expr>, failure: Option<drover_pipeline::Expr>| Metric {
            name: "m".into(),
            provider: Provider::Http { url: "http://x/".into(), json_path: None },
            interval: Duration::from_secs(1),
            count: 1,
            initial_delay: Duration::ZERO,
            success,
            failure,
            failure_limit: 0,
            inconclusive_limit: 0,
            compare: None,
        };
        let both = metric(expr("result < 0.01"), expr("result >= 0.05"));
        let only_success = metric(expr("result < 0.01"), None);
        let only_failure = metric(None, expr("result >= 0.05"));
        // (case, metric, value, outcome)
        let cases = [
            ("success holds", &both, Value::Number(0.001), Outcome::Successful),
            ("failure holds", &both, Value::Number(0.5), Outcome::Failed),
            ("neither: inconclusive", &both, Value::Number(0.02), Outcome::Inconclusive),
            ("only success, false: failed", &only_success, Value::Number(0.02), Outcome::Failed),
            ("only failure, false: successful", &only_failure, Value::Number(0.02), Outcome::Successful),
            ("a string never orders", &both, Value::String("x".into()), Outcome::Inconclusive),
        ];
        for (case, metric, value, want) in cases {
            assert_eq!(judge(metric, &value), want, "{case}");
        }
    }

    #[test]
    fn a_compared_metric_takes_each_nodes_sample_by_its_label() {
        let vector =
            |samples: &str| format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{samples}]}}}}"#);
        let sample = |labels: &str, value: &str| format!(r#"{{"metric":{{{labels}}},"value":[1,"{value}"]}}"#);
        let good = vector(
            &[sample(r#""node":"a""#, "0.5"), sample(r#""job":"x""#, "9"), sample(r#""node":"b""#, "1e-3")].join(","),
        );
        let got = prometheus_samples(good.as_bytes(), "node").unwrap();
        assert_eq!(
            got,
            [("a".to_string(), 0.5), ("b".to_string(), 0.001)],
            "a sample without the label is not a node's"
        );
        let bad = vector(&sample(r#""node":"a""#, "x"));
        let err = prometheus_samples(bad.as_bytes(), "node").unwrap_err();
        assert!(err.contains("sample of a has \"x\", not a number"), "{err}");
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#;
        assert!(
            prometheus_samples(scalar.as_bytes(), "node").unwrap_err().contains("needs a query that gives a vector")
        );
    }
}
