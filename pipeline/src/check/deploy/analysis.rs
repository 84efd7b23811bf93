//! A deploy's `analysis:`, the metrics that judge each step of a rollout
//! ([`crate::deploy::Analysis`]):
//!
//! ```yaml
//! analysis:
//!   run: steps                  # steps (the default) | background | both
//!   metrics:                    # 1 to MAX_ANALYSIS_METRICS, names unique
//!     - name: error-rate        # a job's name grammar
//!       prometheus: {address: "http://prometheus:9090", query: "sum(rate(errors_total[1m]))"}
//!       interval: 5s            # 1s to 1h; 10s when left out
//!       count: 3                # 1 to MAX_ANALYSIS_COUNT; 1
//!       initial_delay: 10s      # 0s to 1h; 0s
//!       success: result < 0.01  # at least one of success and failure
//!       failure: result >= 0.05
//!       failure_limit: 0        # 0 to count; 0
//!       inconclusive_limit: 1   # 0 to count; 0
//!     - name: ready
//!       http: {url: "http://10.0.0.5:9000/stats", json_path: "$.ready"}
//!       success: result == true
//!     - name: smoke
//!       exec: {command: ./smoke-test, timeout: 30s}   # success: result == 0 when no condition is written
//! ```
//!
//! A metric names exactly one provider (`provider.rs`). Its conditions are expressions
//! read with a scope of their own, in which `result` is the one context
//! (`expr`'s analysis conditions), each fault pointed at inside the string
//! as an `if:`'s is. They read no run, so a desired-state file has them as
//! a pipeline does. The provider's strings are used as they are written:
//! `${{ }}`, which nothing would fill in, is refused in them and in the
//! conditions.

use std::time::Duration;

use drover_client::duration;

use super::super::{Checker, Entry, find};
use super::Listed;
use super::provider::{PROVIDER_HINT, PROVIDERS};
use crate::deploy::{Analysis, AnalysisRun, Compare, Metric, Provider, Worse};
use crate::expr::{self, Expr, Scope};
use crate::yaml::{Kind, Node, Pos, ScalarType};
use crate::{MAX_ANALYSIS_COUNT, MAX_ANALYSIS_METRICS, MIN_COMPARE_COUNT};

const METRIC_KEYS: &[&str] = &[
    "name",
    "prometheus",
    "http",
    "exec",
    "interval",
    "count",
    "initial_delay",
    "success",
    "failure",
    "failure_limit",
    "inconclusive_limit",
    "compare",
];
/// The longest `interval` and `initial_delay`.
const MAX_WAIT: Duration = Duration::from_secs(60 * 60);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// An `exec` metric's condition when it has none: exit code 0 passes.
const EXEC_SUCCESS: &str = "result == 0";

const EXAMPLE: &str = "e.g. `analysis: {metrics: [{name: error-rate, prometheus: {address: \
     \"http://prometheus:9090\", query: \"sum(rate(errors_total[1m]))\"}, success: result < 0.01}]}`";
const CONDITION_HINT: &str =
    "an expression over `result`, the measured value, e.g. `success: result < 0.01` or `failure: result >= 0.05`";

impl Checker<'_> {
    /// Reads the `analysis` of the deploy of `owner` ("job `d`").
    pub(super) fn analysis(&mut self, entry: &Entry<'_>, owner: &str) -> Option<Analysis> {
        let Kind::Map(map) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!(
                    "`analysis` in the deploy of {owner} must be a mapping with `metrics`, found {}",
                    entry.value.describe()
                ),
                Some(EXAMPLE.to_owned()),
            );
            return None;
        };
        let context = format!("in the analysis of {owner}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, &["metrics", "run"], &context);
        let run = match find(&entries, "run").map(|e| (e, e.value.scalar_text())) {
            None => Some(AnalysisRun::Steps),
            Some((_, Some("steps"))) => Some(AnalysisRun::Steps),
            Some((_, Some("background"))) => Some(AnalysisRun::Background),
            Some((_, Some("both"))) => Some(AnalysisRun::Both),
            Some((e, _)) => {
                self.error(
                    e.value_pos(),
                    format!(
                        "`run` of the analysis of {owner} must be `steps`, `background` or `both`, found {}",
                        e.value.describe()
                    ),
                    Some(
                        "`steps` judges each step once its nodes are healthy, `background` measures for the whole \
                         rollout and goes back on a failure, `both` does both"
                            .to_owned(),
                    ),
                );
                None
            }
        };
        let Some(metrics) = find(&entries, "metrics") else {
            self.error(entry.key_pos, format!("the analysis of {owner} has no `metrics`"), Some(EXAMPLE.to_owned()));
            return None;
        };
        let items = match &metrics.value.kind {
            Kind::Seq(items) if !items.is_empty() => items,
            _ => {
                self.error(
                    metrics.value_pos(),
                    format!(
                        "the metrics of the analysis of {owner} must be a list of 1 to {MAX_ANALYSIS_METRICS}, found \
                         {}",
                        metrics.value.describe()
                    ),
                    Some(EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        if items.len() > MAX_ANALYSIS_METRICS {
            self.error(
                items[MAX_ANALYSIS_METRICS].pos,
                format!(
                    "the analysis of {owner} has {} metrics, over the limit of {MAX_ANALYSIS_METRICS}",
                    items.len()
                ),
                Some("judge a step by the few metrics that tell a bad release, such as its error rate".to_owned()),
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        // Each good name, and where it is first written.
        let mut names: Vec<(String, Pos)> = Vec::with_capacity(items.len());
        let background_only = run == Some(AnalysisRun::Background);
        for (i, item) in items.iter().enumerate() {
            match self.metric(item, i + 1, owner, &mut names, background_only) {
                Some(metric) => out.push(metric),
                None => ok = false,
            }
        }
        ok.then_some(Analysis { metrics: out, run: run? })
    }

    /// Reads metric `number` (from 1) of the analysis of `owner`, whose
    /// name must not be one of `names`, which it joins; in an analysis that
    /// runs in the background only (`background_only`), `count` does not
    /// bound the limits.
    fn metric(
        &mut self,
        item: &Node,
        number: usize,
        owner: &str,
        names: &mut Vec<(String, Pos)>,
        background_only: bool,
    ) -> Option<Metric> {
        let within = format!("the analysis of {owner}");
        let listed = Listed { noun: "metric", within: &within, example: "error-rate" };
        let (subject, entries) = self.list_item(item, number, &listed, METRIC_KEYS, EXAMPLE)?;
        let name = self.item_name(find(&entries, "name"), item.pos, &subject, &listed, names);
        let providers: Vec<&Entry<'_>> = entries.iter().filter(|e| PROVIDERS.contains(&e.key)).collect();
        let provider = match providers.as_slice() {
            [] => {
                self.error(item.pos, format!("{subject} names no provider"), Some(PROVIDER_HINT.to_owned()));
                None
            }
            [one] => self.provider(one, &subject),
            [first, second, ..] => {
                self.error(
                    second.key_pos,
                    format!("{subject} has both `{}` and `{}`", first.key, second.key),
                    Some(format!("a metric measures one thing: {PROVIDER_HINT}")),
                );
                None
            }
        };
        let interval = match find(&entries, "interval") {
            Some(e) => self.bounded_duration(e, "interval", &subject, MAX_WAIT),
            None => Some(DEFAULT_INTERVAL),
        };
        let initial_delay = match find(&entries, "initial_delay") {
            Some(e) if is_zero(e.value) => Some(Duration::ZERO),
            Some(e) => self.bounded_duration(e, "initial_delay", &subject, MAX_WAIT),
            None => Some(Duration::ZERO),
        };
        let count = match find(&entries, "count") {
            Some(e) => self.whole(
                e,
                &format!("`count` of {subject}"),
                1,
                MAX_ANALYSIS_COUNT,
                "how many times the metric is measured at each step; 1 when left out",
            ),
            None => Some(1),
        };
        // With a wrong count, the limits are still checked as far as they can be.
        let most = if background_only { MAX_ANALYSIS_COUNT } else { count.unwrap_or(MAX_ANALYSIS_COUNT) };
        let limit = |checker: &mut Self, key: &str, what: &str| match find(&entries, key) {
            Some(e) => checker.whole(
                e,
                &format!("`{key}` of {subject}"),
                0,
                most,
                &format!("how many {what} measurements the metric tolerates, at most its `count`; 0 when left out"),
            ),
            None => Some(0),
        };
        let failure_limit = limit(self, "failure_limit", "failed");
        let inconclusive_limit = limit(self, "inconclusive_limit", "inconclusive");
        let condition = |checker: &mut Self, key: &str| match find(&entries, key) {
            Some(e) => checker.metric_condition(e, &subject).map(Some),
            None => Some(None),
        };
        let success = condition(self, "success");
        let failure = condition(self, "failure");
        let compare = match find(&entries, "compare") {
            Some(e) => match self.compare(e, &subject) {
                None => return None,
                Some(compare) => {
                    let conditions = [find(&entries, "success"), find(&entries, "failure")];
                    if let Some(c) = conditions.iter().flatten().next() {
                        self.error(
                            c.key_pos,
                            format!("{subject} is compared with a baseline, so it has no `{}`", c.key),
                            Some("the comparison judges it; leave the condition out".to_owned()),
                        );
                        return None;
                    }
                    if !matches!(provider, Some(Provider::Prometheus { .. }) | None) {
                        self.error(
                            e.key_pos,
                            format!("{subject} is compared with a baseline, which needs a `prometheus` provider"),
                            Some(
                                "a baseline comparison splits a Prometheus query's samples by node; measure the \
                                 metric with `prometheus: {address, query}`"
                                    .to_owned(),
                            ),
                        );
                        return None;
                    }
                    if count.is_some_and(|n| n < MIN_COMPARE_COUNT) {
                        let at = find(&entries, "count").map_or(item.pos, |c| c.value.pos);
                        self.error(
                            at,
                            format!(
                                "{subject} is compared with a baseline, which needs a `count` of at least \
                                 {MIN_COMPARE_COUNT}"
                            ),
                            Some(format!(
                                "the judge compares at least {MIN_COMPARE_COUNT} measurements of each side, e.g. \
                                 `count: 10`"
                            )),
                        );
                        return None;
                    }
                    Some(compare)
                }
            },
            None => None,
        };
        let (success, failure) = match (success, failure) {
            // An exec metric is judged by its exit code unless told otherwise.
            (Some(None), Some(None)) if matches!(provider, Some(Provider::Exec { .. })) => {
                let scope = Scope { result: true, ..Scope::default() };
                (Some(Some(expr::parse(EXEC_SUCCESS, &scope).expect("a good condition"))), Some(None))
            }
            other => other,
        };
        if compare.is_none() && matches!((&success, &failure), (Some(None), Some(None))) {
            self.error(
                item.pos,
                format!("{subject} has neither `success` nor `failure`"),
                Some(CONDITION_HINT.to_owned()),
            );
            return None;
        }
        Some(Metric {
            name: name?,
            provider: provider?,
            interval: interval?,
            count: count?,
            initial_delay: initial_delay?,
            success: success?,
            failure: failure?,
            failure_limit: failure_limit?,
            inconclusive_limit: inconclusive_limit?,
            compare,
        })
    }

    /// Reads a metric's `compare: {baseline: {node_label, worse}}`.
    fn compare(&mut self, entry: &Entry<'_>, subject: &str) -> Option<Compare> {
        let example = "e.g. `compare: {baseline: {node_label: node, worse: higher}}`";
        let bad = |checker: &mut Self, pos, what: String| {
            checker.error(pos, what, Some(example.to_owned()));
            None
        };
        let Kind::Map(map) = &entry.value.kind else {
            return bad(self, entry.value_pos(), format!("`compare` of {subject} must be a mapping"));
        };
        let context = format!("in the compare of {subject}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, &["baseline"], &context);
        let Some(baseline) = find(&entries, "baseline") else {
            return bad(self, entry.key_pos, format!("the compare of {subject} names no `baseline`"));
        };
        let Kind::Map(map) = &baseline.value.kind else {
            return bad(self, baseline.value_pos(), format!("`baseline` of {subject} must be a mapping"));
        };
        let context = format!("in the baseline of {subject}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, &["node_label", "worse"], &context);
        let node_label = match find(&entries, "node_label").map(|e| (e, e.value.scalar_text())) {
            Some((_, Some(label)))
                if !label.is_empty()
                    && label.len() <= 128
                    && label.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                label.to_owned()
            }
            Some((e, _)) => {
                return bad(
                    self,
                    e.value_pos(),
                    format!("`node_label` of {subject} must be a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`)"),
                );
            }
            None => {
                return bad(
                    self,
                    baseline.key_pos,
                    format!("the baseline of {subject} has no `node_label`, the label that names each sample's node"),
                );
            }
        };
        let worse = match find(&entries, "worse").map(|e| (e, e.value.scalar_text())) {
            None | Some((_, Some("higher"))) => Worse::Higher,
            Some((_, Some("lower"))) => Worse::Lower,
            Some((e, _)) => {
                return bad(
                    self,
                    e.value_pos(),
                    format!("`worse` of {subject} must be `higher` (latency, errors) or `lower` (throughput)"),
                );
            }
        };
        Some(Compare { node_label, worse })
    }

    /// Reads a metric's `success` or `failure` (`entry`): an expression
    /// whose one context is `result`.
    fn metric_condition(&mut self, entry: &Entry<'_>, subject: &str) -> Option<Expr> {
        let node = entry.value;
        let what = format!("`{}` of {subject}", entry.key);
        let text = match &node.kind {
            Kind::Scalar(scalar) => &scalar.text,
            Kind::Null => {
                self.error(entry.key_pos, format!("{what} is empty"), Some(CONDITION_HINT.to_owned()));
                return None;
            }
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be an expression, found {}", node.describe()),
                    Some(CONDITION_HINT.to_owned()),
                );
                return None;
            }
        };
        if text.contains("${{") {
            let hint = "write the expression alone, e.g. `success: result < 0.01`: it is read as one as it is";
            self.unfilled(node, text, &what, hint);
            return None;
        }
        let scope = Scope { result: true, ..Scope::default() };
        match expr::parse_with_budget(text, &scope, &mut self.suggestion_budget) {
            Ok(expr) => Some(expr),
            Err(err) => {
                self.error(node.pos_at(err.offset), format!("{what}: {}", err.message), err.hint);
                None
            }
        }
    }
}

/// Whether `node` is a duration of zero (`0s`), which `initial_delay`
/// takes and the other durations do not.
fn is_zero(node: &Node) -> bool {
    match &node.kind {
        Kind::Scalar(scalar) if scalar.ty == ScalarType::Str => {
            duration::parse(&scalar.text, duration::PIPELINE_UNITS) == Some(Duration::ZERO)
        }
        _ => false,
    }
}
