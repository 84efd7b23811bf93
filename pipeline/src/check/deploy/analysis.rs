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
//! ```
//!
//! A metric names exactly one provider. Its conditions are expressions
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
use crate::deploy::{Analysis, AnalysisRun, Compare, Metric, Provider, Worse};
use crate::expr::{self, Expr, Scope};
use crate::yaml::{Kind, Node, Pos, ScalarType, abbreviate};
use crate::{MAX_ANALYSIS_COUNT, MAX_ANALYSIS_METRICS, MIN_COMPARE_COUNT};

const METRIC_KEYS: &[&str] = &[
    "name",
    "prometheus",
    "http",
    "interval",
    "count",
    "initial_delay",
    "success",
    "failure",
    "failure_limit",
    "inconclusive_limit",
    "compare",
];
const PROVIDERS: &[&str] = &["prometheus", "http"];
/// The longest `interval` and `initial_delay`.
const MAX_WAIT: Duration = Duration::from_secs(60 * 60);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The longest Prometheus `address` and `http` `url`, in characters.
const MAX_URL_LEN: usize = 2048;
/// The longest Prometheus `query`, in bytes.
const MAX_QUERY_BYTES: usize = 4096;
/// The longest `json_path`, in characters.
const MAX_JSON_PATH_LEN: usize = 256;

const EXAMPLE: &str = "e.g. `analysis: {metrics: [{name: error-rate, prometheus: {address: \
     \"http://prometheus:9090\", query: \"sum(rate(errors_total[1m]))\"}, success: result < 0.01}]}`";
const PROVIDER_HINT: &str = "give one of `prometheus: {address: \"http://prometheus:9090\", query: ...}` (a PromQL \
     query) and `http: {url: \"http://...\", json_path: $.value}` (a GET whose answer holds the value)";
const PROMETHEUS_EXAMPLE: &str =
    "e.g. `prometheus: {address: \"http://prometheus:9090\", query: \"sum(rate(errors_total[1m]))\"}`";
const HTTP_EXAMPLE: &str = "e.g. `http: {url: \"http://10.0.0.5:9000/stats\", json_path: $.ready}`";
const CONDITION_HINT: &str =
    "an expression over `result`, the measured value, e.g. `success: result < 0.01` or `failure: result >= 0.05`";
const URL_HINT: &str =
    "an `http://` or `https://` URL with a host the coordinator reaches, e.g. \"http://prometheus:9090\"";
const MEASURED_AS_WRITTEN: &str = "write the value itself: the coordinator measures with the text of the file";
const JSON_PATH_HINT: &str = "a simple JSONPath: `$` (the whole answer), then parts `.name`, `[0]` or `['a key']`, \
     e.g. `$.data.ready` or `$.items[0].value`";

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

    /// Reads a metric's provider, `prometheus` or `http` (`entry`).
    fn provider(&mut self, entry: &Entry<'_>, subject: &str) -> Option<Provider> {
        let prometheus = entry.key == "prometheus";
        let (keys, example): (&[&str], _) = if prometheus {
            (&["address", "query"], PROMETHEUS_EXAMPLE)
        } else {
            (&["url", "json_path"], HTTP_EXAMPLE)
        };
        let Kind::Map(map) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!("`{}` of {subject} must be a mapping, found {}", entry.key, entry.value.describe()),
                Some(example.to_owned()),
            );
            return None;
        };
        let context = format!("in `{}` of {subject}", entry.key);
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, keys, &context);
        let required =
            |checker: &mut Self, key: &str, read: fn(&mut Self, &Entry<'_>, &str) -> Option<String>| match find(
                &entries, key,
            ) {
                Some(e) => read(checker, e, &format!("`{key}` of {subject}")),
                None => {
                    checker.error(
                        entry.key_pos,
                        format!("`{}` of {subject} has no `{key}`", entry.key),
                        Some(example.to_owned()),
                    );
                    None
                }
            };
        if prometheus {
            let address = required(self, "address", Self::endpoint);
            let query = required(self, "query", Self::query);
            return Some(Provider::Prometheus { address: address?, query: query? });
        }
        let url = required(self, "url", Self::endpoint);
        let json_path = match find(&entries, "json_path") {
            Some(e) => self.json_path(e, &format!("`json_path` of {subject}")).map(Some),
            None => Some(None),
        };
        Some(Provider::Http { url: url?, json_path: json_path? })
    }

    /// A Prometheus `address` or an `http` `url`; `subject` names it.
    fn endpoint(&mut self, entry: &Entry<'_>, subject: &str) -> Option<String> {
        self.called_url(entry, subject, "an analysis", (URL_HINT, MEASURED_AS_WRITTEN), MAX_URL_LEN)
    }

    /// A Prometheus `query`; `subject` names it.
    fn query(&mut self, entry: &Entry<'_>, subject: &str) -> Option<String> {
        let node = entry.value;
        let hint = || Some("a PromQL query whose answer is one number, e.g. `sum(rate(errors_total[1m]))`".to_owned());
        let problem = match node.scalar_text() {
            None => format!("{subject} must be a PromQL query, found {}", node.describe()),
            Some(query) if query.trim().is_empty() => format!("{subject} is empty"),
            Some(query) if query.contains("${{") => {
                self.unfilled(node, query, subject, MEASURED_AS_WRITTEN);
                return None;
            }
            Some(query) if query.len() > MAX_QUERY_BYTES => {
                format!("{subject} has {} bytes, over the limit of {MAX_QUERY_BYTES}", query.len())
            }
            Some(query) => return Some(query.to_owned()),
        };
        self.error(entry.value_pos(), problem, hint());
        None
    }

    /// An `http` provider's `json_path`; `subject` names it.
    fn json_path(&mut self, entry: &Entry<'_>, subject: &str) -> Option<String> {
        let node = entry.value;
        let Some(path) = node.scalar_text() else {
            self.error(
                entry.value_pos(),
                format!("{subject} must be a JSONPath, found {}", node.describe()),
                Some(JSON_PATH_HINT.to_owned()),
            );
            return None;
        };
        if path.contains("${{") {
            self.unfilled(node, path, subject, MEASURED_AS_WRITTEN);
            return None;
        }
        let problem = if path.chars().count() > MAX_JSON_PATH_LEN {
            Some((0, format!("{subject} is over the limit of {MAX_JSON_PATH_LEN} characters")))
        } else {
            json_path_problem(path)
                .map(|(at, what)| (at, format!("{subject}, `{}`, is not a simple JSONPath: {what}", abbreviate(path))))
        };
        if let Some((at, message)) = problem {
            self.error(node.pos_at(at), message, Some(JSON_PATH_HINT.to_owned()));
            return None;
        }
        Some(path.to_owned())
    }

    /// Reports the first `${{` in `text`, the string `node` of an analysis,
    /// which nothing fills in; `subject` names it, `hint` says what to
    /// write instead.
    fn unfilled(&mut self, node: &Node, text: &str, subject: &str, hint: &str) {
        let offset = text.find("${{").map_or(0, |at| text[..at].chars().count());
        self.error(
            node.pos_at(offset),
            format!("{subject} has `${{{{ }}}}`, but an analysis is used as it is written, with nothing filled in"),
            Some(hint.to_owned()),
        );
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

/// Where `path` leaves the grammar of a simple JSONPath (see
/// [`Provider::Http`]), and how: the offset of the character, in
/// characters.
fn json_path_problem(path: &str) -> Option<(usize, String)> {
    let chars: Vec<char> = path.chars().collect();
    if let Some(at) = chars.iter().position(|c| c.is_control()) {
        return Some((at, "it has a control character".to_owned()));
    }
    if chars.first() != Some(&'$') {
        return Some((0, "it must start with `$`, the whole answer".to_owned()));
    }
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    let mut at = 1;
    while at < chars.len() {
        let start = at + 1;
        match chars[at] {
            '.' => {
                let length = chars[start..].iter().take_while(|&&c| is_name(c)).count();
                if length == 0 {
                    return Some((start, "expected a name after `.` (letters, digits, `_` or `-`)".to_owned()));
                }
                at = start + length;
            }
            '[' if chars.get(start) == Some(&'\'') => {
                let length = chars[start + 1..].iter().take_while(|&&c| c != '\'').count();
                let close = start + 1 + length;
                if close == chars.len() {
                    return Some((start, "this key's quote is never closed".to_owned()));
                }
                if length == 0 {
                    return Some((start, "a key in quotes is not empty".to_owned()));
                }
                if chars.get(close + 1) != Some(&']') {
                    return Some((close + 1, "expected `]` after the key".to_owned()));
                }
                at = close + 2;
            }
            '[' if chars.get(start).is_some_and(char::is_ascii_digit) => {
                let length = chars[start..].iter().take_while(|c| c.is_ascii_digit()).count();
                let digits: String = chars[start..start + length].iter().collect();
                if digits.parse::<u32>().is_err() {
                    return Some((start, format!("the index is over {}", u32::MAX)));
                }
                if chars.get(start + length) != Some(&']') {
                    return Some((start + length, "expected `]` after the index".to_owned()));
                }
                at = start + length + 1;
            }
            '[' => {
                return Some((
                    start,
                    "expected an index, as in `[0]`, or a key in quotes, as in `['a key']`".to_owned(),
                ));
            }
            c => {
                let shown = if c.is_whitespace() { "a space".to_owned() } else { format!("`{c}`") };
                return Some((at, format!("expected `.` or `[`, found {shown}")));
            }
        }
    }
    None
}
