//! The `deploy:` of a job, as checked: a release (an artifact of a job this
//! one needs) rolled out as a service over an environment's nodes.
//!
//! ```yaml
//! deploy-staging:
//!   needs: [build]
//!   deploy:
//!     environment: staging
//!     artifact: build:dist/app.tar.gz
//!     service:
//!       name: web
//!       command: ./app --port ${PORT}
//!       env: {RUST_LOG: info}
//!       port: 8080
//!       health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}
//!     strategy: {canary: {steps: [{nodes: 10%}, {pause: 30s}, {nodes: 50%}, {pause: manual}, {nodes: 100%}]}}
//!     progress_deadline: 10m
//!     auto_rollback: true
//!     irreversible: false    # true: a one-way door; a failure freezes, never rolls back
//!     on_newer: queue
//!     hooks: {before: [{run: ./migrate}], after_batch: [{run: ./smoke}]}
//!     analysis:                # metrics that judge each step: see `Analysis`
//!       metrics:
//!         - name: error-rate
//!           prometheus: {address: "http://prometheus:9090", query: "sum(rate(errors_total[1m]))"}
//!           success: result < 0.01
//! ```
//!
//! The checking is `check/deploy`'s; these are only the types. The
//! strategy types have the shape of `drover_deploy::rollout`'s
//! (`Strategy`, `Canary`, `CanaryStep`, `Share`, `Pause`), one variant for
//! one variant, so that the coordinator maps one onto the other without a
//! rule of its own; this crate does not depend on that one, which keeps the
//! language apart from the rollout machine. A timed pause is a [`Duration`]
//! here, as every duration of the language is, and milliseconds there.
//! [`Rolling`] also keeps `max_unavailable`, which the rollout machine need
//! not model: a node serves its old release until its new one is healthy.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::StepSpec;

/// A job's `deploy`: which release goes where, run how, rolled out how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySpec {
    /// The environment's name (`drover env create`), in the grammar of
    /// environment names. Whether it exists is the coordinator's to check.
    pub environment: String,
    /// The release: one file of an artifact of a job this one needs.
    pub artifact: ArtifactRef,
    /// What runs on each node, and how its health is told.
    pub service: ServiceSpec,
    /// How the release spreads over the nodes; rolling one node at a time
    /// when the file says nothing.
    pub strategy: Strategy,
    /// Past this, a rollout that has not finished is aborted (and rolled
    /// back when `auto_rollback` says so); at most
    /// [`crate::MAX_PROGRESS_DEADLINE`], [`crate::DEFAULT_PROGRESS_DEADLINE`]
    /// when not written.
    pub progress_deadline: Duration,
    /// Whether a failed rollout puts every node it touched back on its last
    /// healthy release (the default), or stops where it stands for a person.
    pub auto_rollback: bool,
    /// A one-way door (an irreversible migration): a failure freezes the
    /// rollout where it stands (and says so loudly) rather than roll back,
    /// whatever `auto_rollback` says, a progress deadline pauses it rather
    /// than abort it, and going back from this release needs `drover
    /// rollback --force --reason`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub irreversible: bool,
    /// What a newer deploy of the same service does while this one rolls.
    #[serde(default)]
    pub on_newer: OnNewer,
    /// Steps run at fixed points of the rollout.
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    /// Metrics measured at each step's gate: a step goes on only when they
    /// pass, goes back when one fails, and pauses for a person when one is
    /// inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// Gates at named points of the rollout, each opened by a person or a
    /// webhook before the rollout goes past it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    /// The environment's nodes in groups rolled out one after the other,
    /// each as `strategy` says, with the analysis and the `before_wave`
    /// gates between two; none: one wave of every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Wave>,
}

/// One of `waves:`: a group of nodes, by agent labels, of the deploy's
/// environment or of another one.
///
/// ```yaml
/// waves:                              # 2 to MAX_WAVES, names unique
///   - {name: canary, selector: {group: canary}}
///   - {name: region-a, selector: {region: a}}
///   - {name: rest}                    # the last may leave out its selector
///   - {name: eu, environment: production-eu}   # every node of that environment
/// ```
///
/// A node is in the first wave whose environment it is in and whose
/// selector its labels match. A wave without a selector takes every node
/// of its environment left: the last wave, or one that names an
/// environment. A node in no wave, or a wave with no node, refuses the
/// rollout before any node is touched. Not with `blue_green`, which
/// switches every node at once. Not in a desired-state file, whose app
/// deploys to its own environment.
///
/// Waves across environments make one rollout of them all, with one
/// promote or abort: each environment's branch filter must admit the
/// release, a freeze or a closed window of any of them holds it, each
/// node's release is recorded in its own environment, and while it runs
/// no other rollout of the service starts in any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// In the grammar of a job's name.
    pub name: String,
    /// The labels each of its nodes has (beside the environment's);
    /// empty only for the last wave, or one that names an environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The environment whose nodes it takes; `None`: the deploy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// `artifact: JOB:PATH`: the file `path` of the artifacts of job `job`.
/// The release is that artifact, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// A job in the deploy job's `needs` that has `artifacts:` (not a
    /// matrix job), whose artifacts the deploy job does not leave out.
    pub job: String,
    /// Relative, without `.`, `..`, empty parts or glob characters: the
    /// normal form of a path inside the artifact (`dist/app.tar.gz`). One
    /// of that job's `artifacts: paths` matches it or a directory above it.
    pub path: String,
}

/// The service a release runs on each node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// 1 to [`crate::MAX_SERVICE_NAME_LEN`] of `[A-Za-z0-9_.-]`, starting
    /// with a letter or digit.
    pub name: String,
    /// The command, run from the unpacked release; never empty. `${PORT}`
    /// in it is the service's own variable (the port the node's proxy sends
    /// its traffic to), not an expression. Any `${{ }}` was checked at
    /// submit.
    pub command: String,
    /// Its environment variables, under the rules of a job's `env`; never
    /// `PORT`, which Drover sets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The port users connect to, which the node's proxy owns; 1 to 65535.
    pub port: u16,
    /// How a node's service is told healthy.
    pub health: HealthSpec,
}

/// A service's health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// What is checked.
    pub check: HealthCheck,
    /// The time between two checks; at most [`crate::MAX_HEALTH_INTERVAL`].
    pub interval: Duration,
    /// This many passes in a row make a node healthy; 1 to
    /// [`crate::MAX_HEALTH_RUN`].
    pub healthy_after: u32,
    /// This many failures in a row make a healthy node unhealthy; 1 to
    /// [`crate::MAX_HEALTH_RUN`], [`crate::DEFAULT_UNHEALTHY_AFTER`] when
    /// not written.
    pub unhealthy_after: u32,
    /// How long a node may take, once its release started, to become
    /// healthy; past it the node fails. Long enough for `healthy_after`
    /// checks; at most [`crate::MAX_HEALTH_TIMEOUT`].
    pub timeout: Duration,
}

/// The one kind of a [`HealthSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheck {
    /// `http: /healthz`: a GET of this path (starting with `/`) on the
    /// service's port passes with a 2xx answer.
    Http(String),
    /// `tcp: true`: a connection to the service's port passes.
    Tcp,
    /// `exec: ./check`: this command, run from the release, passes when it
    /// exits 0; never empty.
    Exec(String),
}

/// How a release spreads over the nodes: `drover_deploy::rollout::Strategy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Batches of nodes, one after the other.
    Rolling(Rolling),
    /// Steps that are shares of the nodes, with timed or manual pauses.
    Canary(Canary),
    /// The new release started beside the old on every node, then one
    /// switch of traffic on all of them.
    BlueGreen,
}

/// `rolling:`'s settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rolling {
    /// How many nodes are updated at once; 1 (the default) to
    /// [`crate::MAX_ROLLING_PARALLEL`].
    pub max_parallel: u32,
    /// How many nodes may be out of service at once; 0 (the default) to
    /// `max_parallel`. Agents start a node's new release beside the old
    /// one and switch only once it is healthy, so an update takes no node
    /// out of service, and 0 always holds; a higher value changes nothing.
    pub max_unavailable: u32,
}

/// A canary's steps, in order: `drover_deploy::rollout::Canary`. The first
/// is a share; there are at most [`crate::MAX_CANARY_STEPS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// The steps, as written.
    pub steps: Vec<CanaryStep>,
}

/// One canary step: `drover_deploy::rollout::CanaryStep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryStep {
    /// `{nodes: 10%}`: update nodes until this share of them runs the release.
    Nodes(Share),
    /// `{pause: 30s}`, `{pause: manual}`: then wait before the next step.
    Pause(Pause),
}

/// How many of the nodes: `drover_deploy::rollout::Share`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Share {
    /// `10%`: 1 to 100 per cent, rounded up (at least one node).
    Percent(u32),
    /// `3`: at least 1; more than there are nodes means all of them.
    Count(u32),
}

/// A pause after a canary step: `drover_deploy::rollout::Pause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pause {
    /// `30s`: for this long.
    For(Duration),
    /// `manual`: until someone promotes the rollout (`drover rollout promote`).
    Manual,
}

/// `on_newer:`, what a newer deploy of the same service does while this
/// one is rolling out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNewer {
    /// It waits for this one to finish (the default).
    #[default]
    Queue,
    /// It takes over: this one stops where it stands.
    Supersede,
}

/// `hooks:`, steps run at fixed points of a rollout, each list read as a
/// job's `steps`; an empty list is a hook not written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hooks {
    /// Once, on one node of the environment, before the first batch (a
    /// database migration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<StepSpec>,
    /// On each node after its switch; a failure fails that batch as a failed
    /// health check does (smoke tests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_batch: Vec<StepSpec>,
    /// Once, after the rollout succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<StepSpec>,
    /// Once, after a rollback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<StepSpec>,
}

impl Hooks {
    /// Whether no hook is written.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after_batch.is_empty() && self.after.is_empty() && self.on_failure.is_empty()
    }
}

/// `analysis:`, the metrics that judge each step of a rollout once its
/// nodes are healthy (Argo Rollouts' analysis, Flagger's metric checks):
///
/// ```yaml
/// analysis:
///   run: steps                # steps (the default), background or both
///   metrics:
///     - name: error-rate
///       prometheus: {address: "http://prometheus:9090", query: "sum(rate(errors_total[1m]))"}
///       interval: 5s            # between measurements; default 10s
///       count: 3                # measurements per step; default 1
///       initial_delay: 10s      # before the first; default 0s
///       success: result < 0.01  # an expression over `result`
///       failure: result >= 0.05
///       failure_limit: 0        # failed measurements tolerated; default 0
///       inconclusive_limit: 1   # inconclusive ones tolerated; default 0
///     - name: ready
///       http: {url: "http://10.0.0.5:9000/stats", json_path: "$.ready"}
///       success: result == true
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// 1 to [`crate::MAX_ANALYSIS_METRICS`], names unique, in the order
    /// written.
    pub metrics: Vec<Metric>,
    /// When the metrics are measured: `steps` (the default), `background`
    /// or `both`.
    #[serde(default, skip_serializing_if = "AnalysisRun::is_steps")]
    pub run: AnalysisRun,
}

/// `run:` of an [`Analysis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisRun {
    /// At each step's gate, once its nodes are healthy: `count`
    /// measurements judge the step.
    #[default]
    Steps,
    /// For the whole rollout, from its start to its end, every `interval`
    /// (`count` does not apply): once more than `failure_limit`
    /// measurements of the rollout failed, it goes back; once more than
    /// `inconclusive_limit` could not be judged, it pauses for a person.
    Background,
    /// Both.
    Both,
}

impl AnalysisRun {
    pub fn is_steps(&self) -> bool {
        *self == AnalysisRun::Steps
    }
    /// Whether steps are judged by the metrics.
    pub fn at_steps(self) -> bool {
        matches!(self, AnalysisRun::Steps | AnalysisRun::Both)
    }
    /// Whether the metrics are measured for the whole rollout.
    pub fn in_background(self) -> bool {
        matches!(self, AnalysisRun::Background | AnalysisRun::Both)
    }
}

/// One metric of an [`Analysis`]: where its value comes from, how often it
/// is measured, and the conditions that judge each measurement.
///
/// A measurement is judged as Argo Rollouts does: `success` true is a
/// success; else `failure` true is a failure; with only `success` written,
/// its being false is a failure, and with only `failure` written, its being
/// false is a success; with both written and neither true, the measurement
/// is inconclusive. A provider that cannot answer, or a query with no data,
/// is inconclusive too (never a failure). The metric fails once more than
/// `failure_limit` measurements failed, is inconclusive once more than
/// `inconclusive_limit` were, and passes when `count` measurements are in
/// without either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    /// In the grammar of a job's name; unique in its analysis.
    pub name: String,
    pub provider: Provider,
    /// Between two measurements: 1s to 1h; 10s when not written.
    pub interval: Duration,
    /// Measurements per step: 1 (the default) to
    /// [`crate::MAX_ANALYSIS_COUNT`].
    pub count: u32,
    /// Before the first measurement: 0s (the default) to 1h.
    pub initial_delay: Duration,
    /// Conditions over `result`, the measured value (the analysis
    /// conditions of [`crate::expr`]); at least one of the two is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<crate::Expr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<crate::Expr>,
    /// 0 (the default) to `count`.
    pub failure_limit: u32,
    /// 0 (the default) to `count`.
    pub inconclusive_limit: u32,
    /// `compare: {baseline: {node_label, worse}}`: judged against a
    /// baseline rather than by conditions (which it then has none of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
}

/// A metric judged against a baseline (Kayenta's canary analysis): at a
/// canary step, each measurement splits the Prometheus query's vector by
/// `node_label` into the canary's nodes (those updated so far) and as many
/// nodes still on the current version, the baseline, which starts that
/// version afresh as the step starts its canary (so both sides are of an
/// age); once `count`
/// measurements are in, the two samples are compared with a one-sided
/// Mann-Whitney U test (`drover_deploy::compare`): the step fails when the
/// canary is significantly worse (p < 0.01) by more than 10% of the
/// baseline's median.
///
/// ```yaml
/// - name: latency
///   prometheus: {address: "http://prometheus:9090", query: "avg by (node) (rate(req_seconds_sum[30s]) / rate(req_seconds_count[30s]))"}
///   compare: {baseline: {node_label: node, worse: higher}}
///   interval: 5s
///   count: 10                  # at least MIN_COMPARE_COUNT
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The label of the query's samples that holds each node's name (as
    /// the agents are named).
    pub node_label: String,
    pub worse: Worse,
}

/// Which way a compared metric is worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Worse {
    /// Latency, errors.
    Higher,
    /// Throughput, successes.
    Lower,
}

/// Where a [`Metric`]'s value comes from. The coordinator calls a
/// `prometheus` address or an `http` URL itself, so each must be one it
/// reaches; an `exec` command runs on a node of the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// `prometheus: {address, query}`: an instant query (PromQL) of the
    /// Prometheus server at `address` (`http://` or `https://`, with a
    /// host, at most 2048 characters); `query` is not empty, at most 4096
    /// bytes. Neither has `${{ }}`, which nothing fills in. Its
    /// result is the value of the first sample of a vector, or of a
    /// scalar; an empty vector is no data.
    Prometheus { address: String, query: String },
    /// `http: {url, json_path}`: a GET of `url` (written as a Prometheus
    /// `address` is) that must answer 2xx. With `json_path` (`$.a.b[0]`),
    /// the result is that value of the JSON body (a number, a string, a
    /// boolean or null); without, the body as text, as a number when it
    /// reads as one.
    ///
    /// `json_path` is a simple JSONPath, at most 256 characters:
    ///
    /// ```text
    /// path  = "$" { "." name | "[" index "]" | "[" "'" key "'" "]" }
    /// name  = one or more of ASCII letters, digits, "_" and "-"
    /// index = one or more digits (a list's element, from 0), at most 4294967295
    /// key   = one or more characters but "'" and control characters
    /// ```
    ///
    /// `$` is the whole body; `$.data.ready`, `$.items[0].value` and
    /// `$['error rate']` pick a value out of it. There are no wildcards,
    /// filters, slices or `..`.
    Http {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        json_path: Option<String>,
    },
    /// `exec: {command, timeout}`: `command` (not empty, at most 4096
    /// bytes, no `${{ }}`) runs with `bash -eo pipefail -c` on a node of
    /// the rollout, from the new release's root, as the deploy's hooks do
    /// (as the agent's `--run-as` user, with a clean environment and the
    /// service's `env`). Its exit code is the result; a metric with no
    /// condition written has `success: result == 0`. A command killed by
    /// a signal, past its `timeout` (1s to 10m; 30s), or whose node is
    /// away gives no value (inconclusive). The node is the first the
    /// rollout updated and that is healthy, else its first.
    Exec { command: String, timeout: Duration },
}

/// One of `gates:`, a point of a rollout it may not pass until the gate
/// opens:
///
/// ```yaml
/// gates:
///   - name: qa-sign-off              # a job's name grammar; unique
///     at: before_rollout             # before_rollout | before_step | before_wave | before_promotion
///     approval: {approvers: [alice, ops-team]}
///   - name: change-ticket
///     at: before_promotion
///     confirm: {url: "https://change.example.com/drover", timeout: 10m, interval: 15s}
/// ```
///
/// An `approval` gate opens when one of its approvers runs `drover rollout
/// approve ID`; `drover rollout reject ID --reason` refuses it. A `confirm`
/// gate is a webhook: the coordinator POSTs the rollout (JSON) to `url`
/// every `interval` until it answers 2xx, which opens it; with no 2xx
/// within `timeout`, it is refused. A refused gate before the rollout ends
/// it unstarted; one later fails the step (rolled back, or paused as
/// `auto_rollback: false` says). Who or what opened each gate is kept with
/// the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub name: String,
    pub at: GateAt,
    pub kind: GateKind,
}

/// Where a [`Gate`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateAt {
    /// Before any node is touched.
    BeforeRollout,
    /// Before each step after the first (a canary's next share, a rolling
    /// update's next batch) within a wave, once the step before it passed
    /// its analysis.
    BeforeStep,
    /// Before each wave after the first, once the wave before it passed.
    BeforeWave,
    /// Once every node is updated and healthy, before the rollout counts
    /// as done: what the next environment's deploy waits for.
    BeforePromotion,
}

impl GateAt {
    pub fn as_str(self) -> &'static str {
        match self {
            GateAt::BeforeRollout => "before_rollout",
            GateAt::BeforeStep => "before_step",
            GateAt::BeforeWave => "before_wave",
            GateAt::BeforePromotion => "before_promotion",
        }
    }
}

/// What opens a [`Gate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// A person: one of 1 to [`crate::MAX_APPROVERS`] certificate names.
    Approval { approvers: Vec<String> },
    /// A webhook that answers 2xx: `url` as an analysis provider's;
    /// `timeout` 1s to [`crate::MAX_GATE_TIMEOUT`] (5m when not written);
    /// `interval` 1s to 1h (10s), between two calls.
    Confirm { url: String, timeout: Duration, interval: Duration },
}
