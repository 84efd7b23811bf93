//! Pipeline files: the YAML format users write, parsed and checked into a
//! [`Pipeline`] that the scheduler can run.
//!
//! This module does no IO. The caller reads the file and hands its name and
//! text to [`parse`], which either returns a fully validated [`Pipeline`] or a
//! [`PipelineError`] listing every problem it found, each with
//! `file:line:column` and, where we can say more, a hint.
//!
//! Parsing happens in two stages, so that one mistake does not hide the next:
//! `yaml` turns the text into an untyped tree whose nodes remember where they
//! came from, and `check` walks that tree by hand, building the pipeline and
//! collecting diagnostics as it goes. Only YAML syntax errors stop early,
//! because after one of those there is no tree to walk.
//!
//! [`cache_key`] reads the template of a job's `cache: key:` (at submit, as
//! part of `check`) and renders it into a key (on the agent, which hashes
//! the files); it is public for the agent's sake.
//!
//! [`yaml`] is the YAML reader with positions that `check` walks; it is
//! public so that Drover's other YAML files (environments, and apps')
//! report problems at `file:line:column` the same way.
//!
//! [`triggers`] is `on:`, the events that start a pipeline, and what the
//! coordinator's triggers ask of it ([`triggers::Triggers::wants`]) and of
//! its cron schedules.
//!
//! [`expr`] is the expression language of `if:` conditions, of `${{ }}`
//! in `env` values and `run` scripts, and of a deploy's analysis metrics'
//! `success` and `failure` (over `result`, the measured value): read and
//! checked at submit (as part of `check`), evaluated by the caller against
//! the run ([`expr::passes`]) or the measurement. Its header is the
//! language's reference.
//!
//! [`deploy`] holds the types of a job's `deploy:` (a release rolled out as
//! a service over an environment), which `check` reads and checks.
//!
//! [`app`] is GitOps' desired state: the files of an app's directory, one
//! service each, read by [`app::parse_service_file`] and
//! [`app::parse_desired`] with the same diagnostics, and checked by the same
//! rules as a deploy job's service, strategy, hooks, analysis and
//! durations. A desired-state file has no run, so `${{ }}` and `if:` are
//! refused in it.
//! A file's `update:` names the pipeline whose builds Drover writes into
//! it, with [`app::set_artifact`], which keeps the rest of its text.
//!
//! The format, in short:
//!
//! ```yaml
//! name: example
//! on: {push: {branches: [main]}, pull_request: {branches: [main]}}   # optional: see `triggers`
//! env: {GREETING: hello}       # optional
//! jobs:
//!   build:
//!     if: drover.branch == 'main'   # optional: an expression (see `expr`); read as `success() && (...)`
//!     runs-on: {os: linux}     # agent labels that must all match; optional
//!     env: {MODE: release, REF: "${{ drover.commit }}"}   # optional; `${{ }}` is filled in at assignment
//!     timeout: 10m             # optional: whole numbers with s, m, h, e.g. 1h30m
//!     queue-timeout: 30m       # optional: how long to wait when no connected agent has the labels
//!     retries: 1               # optional: retries after a failed or lost attempt
//!     artifacts:               # optional: packed after the steps succeed, for jobs that need this one
//!       paths: [dist/app]
//!     cache:                   # optional: restored before the steps, saved after they succeed
//!       key: "cargo-{{ hashFiles('Cargo.lock') }}"
//!       paths: [target, ~/.cargo/registry]
//!       restore-keys: [cargo-]   # optional: prefixes tried when the key has no entry
//!     secrets: [DEPLOY_TOKEN]  # optional: secrets (`drover secret set`) the steps get as env variables
//!     steps:
//!       - name: compile        # optional
//!         run: make
//!       - if: failure()        # optional: when the step runs
//!         run: ./collect-logs
//!   test:
//!     needs: [build]          # or [{job: build, artifacts: false}]
//!     matrix: {rust: [stable, beta], os: [linux]}   # optional: one job per combination, see `check/matrix.rs`
//!     fail-fast: false         # optional, with a matrix: one failure does not cancel the others
//!     if: always() && needs.build.result != 'skipped'   # `needs.JOB.result` for a job in `needs`
//!     steps:
//!       - run: make test
//!   deploy-staging:            # a deploy job: no steps, runs-on, retries, matrix, cache or artifacts
//!     needs: [build]
//!     deploy:                  # see `deploy` for every key
//!       environment: staging   # defined with `drover env create`
//!       artifact: build:dist/app   # JOB:PATH, a file of the artifacts of a job in `needs`
//!       service:
//!         name: web
//!         command: ./app --port ${PORT}   # run from the unpacked release
//!         port: 8080           # the port users connect to; the node's proxy owns it
//!         health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}   # or tcp: true, exec: CMD
//!       strategy: {rolling: {max_parallel: 1}}   # or {canary: {steps: [{nodes: 10%}, {pause: manual}]}}
//!                              # or {blue_green: {}}
//!       hooks: {before: [{run: ./migrate}]}      # optional: before, after_batch, after, on_failure
//!       analysis:              # optional: metrics that judge each step of the rollout
//!         metrics: [{name: errors, prometheus: {address: "http://prom:9090", query: "..."}, success: result < 0.01}]
//! ```

pub mod app;
pub mod cache_key;
mod check;
pub mod deploy;
pub mod expr;
#[cfg(test)]
mod tests;
pub mod triggers;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use deploy::DeploySpec;
pub use expr::Expr;

/// The largest pipeline file we read, in bytes. Pipelines are small; a bigger
/// file is almost certainly a mistake, and the cap bounds the work and memory
/// one submission can cost the coordinator.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// The most jobs one pipeline may have.
pub const MAX_JOBS: usize = 5000;
/// The most steps one job may have.
pub const MAX_STEPS_PER_JOB: usize = 100;
/// The most automatic retries one job may ask for.
pub const MAX_RETRIES: u32 = 10;
/// The longest timeout a job may ask for: seven days.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The longest job or pipeline name, in characters.
pub const MAX_NAME_LEN: usize = 100;
/// The most artifact paths (globs) one job may list.
pub const MAX_ARTIFACT_PATHS: usize = 100;
/// The longest concurrency group, in characters.
pub const MAX_GROUP_LEN: usize = 200;
/// The most jobs one `matrix:` may expand into.
pub const MAX_MATRIX_JOBS: usize = 256;
/// The most combinations a `matrix:` may have before `exclude:` removes
/// some: bounds the work of expanding one.
pub const MAX_MATRIX_PRODUCT: usize = 4096;
/// The most keys one `matrix:` may have.
pub const MAX_MATRIX_KEYS: usize = 16;
/// The longest matrix value, in characters.
pub const MAX_MATRIX_VALUE_LEN: usize = 64;
/// The longest name of an expanded job, `test (rust=beta, os=linux)`, in
/// characters.
pub const MAX_MATRIX_NAME_LEN: usize = 200;
/// The most approvers one job may list.
pub const MAX_APPROVERS: usize = 50;
/// The most secrets one job may list.
pub const MAX_SECRETS_PER_JOB: usize = 100;
/// The longest an artifact may be kept: a year.
pub const MAX_EXPIRE: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The longest cache key, in characters: the template as written, and the
/// key it renders to. Keys go into store keys and file names.
pub const MAX_CACHE_KEY_LEN: usize = 512;
/// The most `{{ }}` expressions one cache key template may have.
pub const MAX_CACHE_KEY_EXPRESSIONS: usize = 8;
/// The most globs one `hashFiles(...)` may take.
pub const MAX_HASH_FILES_GLOBS: usize = 16;
/// The most paths one job's `cache` may list.
pub const MAX_CACHE_PATHS: usize = 20;
/// The most `restore-keys` one job's `cache` may list.
pub const MAX_RESTORE_KEYS: usize = 10;
/// The longest expression (an `if:`, or one `${{ }}`), in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 1024;
/// How deep an expression may nest: each `(`, `!` and function call opens
/// a level.
pub const MAX_EXPRESSION_DEPTH: usize = 32;
/// The most nodes (literals, contexts, calls, operators) one expression
/// may have.
pub const MAX_EXPRESSION_NODES: usize = 256;
/// The prefix of environment variables that Drover sets itself, which
/// pipelines therefore may not define.
pub const RESERVED_ENV_PREFIX: &str = "DROVER_";
/// The longest environment name a deploy may name, in characters: the
/// limit of `drover env create`.
pub const MAX_ENVIRONMENT_NAME_LEN: usize = 63;
/// The longest service name, in characters.
pub const MAX_SERVICE_NAME_LEN: usize = 64;
/// The most steps (shares and pauses) one canary may have.
pub const MAX_CANARY_STEPS: usize = 20;
/// The most metrics one `analysis:` holds.
pub const MAX_ANALYSIS_METRICS: usize = 10;
/// The most waves one rollout may have.
pub const MAX_WAVES: usize = 16;
/// The most gates one rollout may have.
pub const MAX_GATES: usize = 8;
/// The longest a webhook gate (`confirm:`) waits for a 2xx answer.
pub const MAX_GATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The fewest measurements of a metric compared with a baseline: the
/// judge's smallest sample (`drover_deploy::compare::MIN_SAMPLES`).
pub const MIN_COMPARE_COUNT: u32 = 5;
/// The most measurements of one metric per step.
pub const MAX_ANALYSIS_COUNT: u32 = 100;
/// The most nodes a rolling deploy may update at once.
pub const MAX_ROLLING_PARALLEL: u32 = 1000;
/// The most checks in a row a health check may ask for (`healthy_after`,
/// `unhealthy_after`).
pub const MAX_HEALTH_RUN: u32 = 100;
/// The failures in a row that make a healthy node unhealthy when
/// `unhealthy_after` is not written.
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 3;
/// The longest time between two health checks.
pub const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// The longest a node may take to become healthy (a health check's `timeout`).
pub const MAX_HEALTH_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// A deploy's `progress_deadline` when it is not written.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// The longest `progress_deadline` a deploy may ask for.
pub const MAX_PROGRESS_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);
/// The environment variable a service reads its port from, which Drover
/// sets and a service's `env` therefore may not.
pub const SERVICE_PORT_VAR: &str = "PORT";
/// The most services (desired-state files) one app's directory may hold:
/// bounds the work of one sync, and what one diff of the app compares.
pub const MAX_APP_SERVICES: usize = 100;
/// The most nodes a desired-state file's `nodes: count` may ask for: more
/// than any environment has, so a number above it is a mistake.
pub const MAX_APP_NODE_COUNT: u32 = 1000;
/// The longest `url` of a desired-state file's artifact, in characters.
pub const MAX_ARTIFACT_URL_LEN: usize = 2048;

/// A validated pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    /// The pipeline's display name.
    pub name: String,
    /// Environment variables for every job; a job's own `env` wins over these.
    pub env: BTreeMap<String, String>,
    /// The jobs, in the order the file lists them. Names are unique.
    pub jobs: Vec<JobSpec>,
    /// One run of its group is active at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencySpec>,
    /// Its `on:`: the events that start it.
    #[serde(default)]
    pub on: triggers::Triggers,
}

/// One job of a [`Pipeline`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Unique within the pipeline and safe to use in ids and paths: it matches
    /// `[A-Za-z0-9][A-Za-z0-9_.-]{0,99}`.
    pub name: String,
    /// Agent labels that must all match for an agent to take this job.
    pub runs_on: BTreeMap<String, String>,
    /// Environment variables for this job's steps.
    pub env: BTreeMap<String, String>,
    /// How long one attempt may run; `None` leaves it to the coordinator's default.
    pub timeout: Option<Duration>,
    /// How long the job may wait for an agent with its labels when no
    /// connected agent has them; `None` leaves it to the run's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<Duration>,
    /// How many times to retry automatically after a failed or lost attempt.
    pub retries: u32,
    /// Jobs that must succeed before this one starts, without duplicates. All
    /// of them exist, none is this job, and there are no cycles.
    pub needs: Vec<String>,
    /// The steps, run in order; there is at least one, but for a deploy
    /// job, which has none: its steps are its deploy's hooks.
    pub steps: Vec<StepSpec>,
    /// What the agent packs after the steps succeed, for the jobs that
    /// need this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ArtifactsSpec>,
    /// Jobs in `needs` whose artifacts this job does not get
    /// (`needs: [{job: build, artifacts: false}]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_artifacts_of: Vec<String>,
    /// What the agent restores before the steps and saves after they
    /// succeed, under a key, for later runs of this job and others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// Names of the secrets its steps get as env variables of the same
    /// name. Only names: values are resolved when an attempt is assigned and
    /// never stored with the pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Its `if:`: whether it runs once its needs are done ([`expr::passes`]:
    /// with none, when they all succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
    /// A person must approve it (`drover approve`) before it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSpec>,
    /// One job of its group runs at a time, across runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencySpec>,
    /// For one expansion of a `matrix:`: its values, and the job as
    /// written, which `needs:` and `needs.JOB.result` name for all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<MatrixCell>,
    /// Its `deploy:`: the job rolls a release out over an environment
    /// rather than running steps on one agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySpec>,
}

/// One combination of a job's `matrix:`, which became a job of its own
/// named `test (rust=beta, os=linux)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixCell {
    /// The job's name as written (`test`).
    pub of: String,
    /// Its values, in the order the matrix lists the keys (then the keys
    /// only `include:` adds): `matrix.NAME` in expressions.
    pub values: Vec<(String, String)>,
    /// When one expansion fails, the others still queued or running are
    /// cancelled (`fail-fast: true`, the default).
    pub fail_fast: bool,
}

impl MatrixCell {
    /// The value of `name`, if the combination has one.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `concurrency:` on the pipeline or a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencySpec {
    /// The group, as written: `${{ }}` is filled in when the run is
    /// submitted.
    pub group: String,
    /// A newer run in the group cancels the older one, rather than waiting.
    #[serde(default)]
    pub cancel_in_progress: bool,
}

/// A job's required `approval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalSpec {
    /// Who may approve or reject it (certificate names); never empty.
    pub approvers: Vec<String>,
    /// How long it may wait for a decision before it fails; `None`: for
    /// as long as its run lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// A job's `artifacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactsSpec {
    /// Globs relative to the workspace (a directory takes all of it); none
    /// absolute or with `..`.
    pub paths: Vec<String>,
    /// How long the coordinator keeps them; `None` for its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<Duration>,
    /// What a glob that matches nothing does.
    #[serde(default)]
    pub if_no_files: IfNoFiles,
}

/// What an artifact glob that matches nothing does to its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IfNoFiles {
    /// The job fails, naming the glob.
    #[default]
    Error,
    /// Nothing is packed for that glob.
    Ignore,
}

/// A job's `cache`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSpec {
    /// The key as written, e.g. `cargo-{{ hashFiles('Cargo.lock') }}`, and
    /// its parts; the agent renders it ([`KeyTemplate::render`]).
    pub key: KeyTemplate,
    /// What is cached: paths relative to the workspace, or under the step's
    /// home as `~/...`. No `..`, no other absolute path.
    pub paths: Vec<String>,
    /// Prefixes tried, in order, when the key has no exact entry: the newest
    /// entry whose key starts with the prefix is restored. Each is made of
    /// the characters a key may have ([`cache_key::key_problem`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_keys: Vec<String>,
}

/// A cache key as written, read by [`cache_key::parse_template`]: literal
/// text and `{{ hashFiles('glob', ...) }}` expressions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyTemplate {
    /// The template as written.
    pub text: String,
    /// Its parts, in order. Literals hold only the characters a key may
    /// have; at most [`MAX_CACHE_KEY_EXPRESSIONS`] are expressions.
    pub parts: Vec<KeyPart>,
}

/// One part of a [`KeyTemplate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyPart {
    /// Text that stands for itself.
    Literal(String),
    /// `hashFiles('glob', ...)`: a hash of the workspace files the globs
    /// match. The globs are relative to the workspace (none absolute or
    /// with `..`); there are 1 to [`MAX_HASH_FILES_GLOBS`] of them.
    HashFiles(Vec<String>),
}

/// One step of a [`JobSpec`]: a shell command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    /// An optional label for logs and UIs.
    pub name: Option<String>,
    /// The shell command; never empty. Any `${{ }}` in it was checked at
    /// submit, and is filled in when an attempt is assigned.
    pub run: String,
    /// Its `if:`: whether it runs, given how the steps before it went
    /// ([`expr::passes`]: with none, when they all succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
}

impl Pipeline {
    /// The job called `name`, if there is one.
    pub fn job(&self, name: &str) -> Option<&JobSpec> {
        self.jobs.iter().find(|job| job.name == name)
    }

    /// The expansions of the matrix job written as `name`.
    pub fn expansions<'p>(&'p self, name: &'p str) -> impl Iterator<Item = &'p JobSpec> + 'p {
        self.jobs.iter().filter(move |job| job.matrix.as_ref().is_some_and(|m| m.of == name))
    }

    /// Whether any job declares secrets.
    pub fn uses_secrets(&self) -> bool {
        self.jobs.iter().any(|job| !job.secrets.is_empty())
    }
}

/// Everything that is wrong with a pipeline file (or with the desired-state
/// files of an app, [`app`]).
#[derive(Debug, thiserror::Error)]
#[error("{}", render_all(.diagnostics))]
pub struct PipelineError {
    /// Sorted by position in the file (for an app's files, file by file in
    /// the order given); never empty.
    pub diagnostics: Vec<Diagnostic>,
}

/// One problem in a pipeline file, located at the offending token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name given to [`parse`] (or to [`app`]'s functions).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when we can say more than the message does.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

fn render_all(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(Diagnostic::to_string).collect::<Vec<_>>().join("\n")
}

/// The longest secret name, in characters.
pub const MAX_SECRET_NAME_LEN: usize = 100;

/// Why `name` cannot name a secret, if it cannot: secrets become steps'
/// environment variables of the same name, so the rules of `env` names
/// apply (`drover secret set` and `secrets:` share them).
pub fn secret_name_problem(name: &str) -> Option<String> {
    if name.chars().count() > MAX_SECRET_NAME_LEN {
        return Some(format!("a secret name has at most {MAX_SECRET_NAME_LEN} characters"));
    }
    check::secret_name_problem(name)
}

/// What a caller knows of the world outside the pipeline file, checked
/// against what the file names. Unknown (`None`) is not checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// The names of the secrets that exist.
    pub secrets: Option<&'a std::collections::BTreeSet<String>>,
}

/// Parses and validates the pipeline file `file_name` whose contents are `text`.
///
/// `file_name` is only used in diagnostics.
pub fn parse(file_name: &str, text: &str) -> Result<Pipeline, PipelineError> {
    parse_with(file_name, text, &Known::default())
}

/// [`parse`], also checking what the file names against what `known` says exists.
pub fn parse_with(file_name: &str, text: &str, known: &Known<'_>) -> Result<Pipeline, PipelineError> {
    let hint = "split it into several pipelines, or move long scripts into files in the repository";
    let root = load(file_name, text, "pipeline file", hint).map_err(|d| PipelineError { diagnostics: vec![d] })?;
    check::pipeline(file_name, &root, known).map_err(|diagnostics| PipelineError { diagnostics })
}

/// The YAML tree of the file `file_name` whose contents are `text`, or the
/// one problem that leaves none to check: it is over [`MAX_FILE_BYTES`]
/// (`noun` names the file, "pipeline file", and `hint` says what to do),
/// or it is not YAML.
fn load(file_name: &str, text: &str, noun: &str, hint: &str) -> Result<yaml::Node, Diagnostic> {
    if text.len() > MAX_FILE_BYTES {
        // Refuse before parsing, so an oversized file costs us nothing.
        return Err(Diagnostic {
            file: file_name.to_owned(),
            line: 1,
            column: 1,
            message: format!("{noun} is {} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB)", text.len()),
            hint: Some(hint.to_owned()),
        });
    }
    yaml::load(text).map_err(|err| Diagnostic {
        file: file_name.to_owned(),
        line: err.pos.line,
        column: err.pos.column,
        message: format!("invalid YAML: {}", err.message),
        hint: err.hint,
    })
}
