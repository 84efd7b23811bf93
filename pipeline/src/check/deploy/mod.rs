//! A job's `deploy:`: a release (a file of an artifact of a job this one
//! needs) rolled out as a service over an environment's nodes. The types,
//! and the format with every key, are in [`crate::deploy`].
//!
//! A deploy job has no `steps` (its steps are its hooks), `runs-on` (the
//! environment picks the nodes), `retries` (a rollout has its own
//! rollback), `matrix`, `cache` or `artifacts`; `deploy_job_keys` says so
//! for each, with what to do instead. Its `env`, `secrets`, `if:`,
//! `approval` and `concurrency` are a job's, and its hooks' steps are read
//! as a job's steps, in the job's scope.
//!
//! This file reads the `deploy` mapping: the environment's name, the
//! defaults, `on_newer` and the hooks. `artifact` reads `artifact:
//! JOB:PATH` and, since whether its job is in `needs`, packs artifacts, and
//! packs that path can only be told once every job has been read, checks
//! it then (`jobs` calls `Checker::deploy_artifacts` after the graph).
//! `service` reads the service and its health check, `strategy` the
//! rollout strategy, `analysis` the metrics that judge each step (their
//! conditions read with a scope of their own, in which `result` is the one
//! context).
//!
//! What a desired-state file (`app`) shares with a deploy job, the service,
//! the strategy, the hooks, the analysis and the durations, takes the `owner` messages
//! name it by, preformatted: "job `d`" here, "`deploy/web.yaml`" there.
//!
//! Whether the environment exists is not checked here: environments live
//! in the coordinator's store (`drover env create`), and the pipeline
//! crate reads no store.

mod analysis;
#[cfg(test)]
mod analysis_tests;
mod artifact;
#[cfg(test)]
mod compare_tests;
mod gates;
#[cfg(test)]
mod gates_tests;
mod named;
mod provider;
mod service;
mod strategy;
#[cfg(test)]
mod tests;
mod waves;

use std::time::Duration;

pub(super) use artifact::ArtifactUse;
use named::Listed;
#[cfg(test)]
use named::refused_once;
pub(super) use service::EXAMPLE as SERVICE_EXAMPLE;

use super::suggest::closest;
use super::{Checker, Entry, find};
use crate::deploy::{Analysis, DeploySpec, Gate, Hooks, OnNewer, Rolling, Strategy, Wave};
use crate::expr::Scope;
use crate::yaml::{Kind, ScalarType, abbreviate};
use crate::{DEFAULT_PROGRESS_DEADLINE, MAX_ENVIRONMENT_NAME_LEN, MAX_PROGRESS_DEADLINE};

const DEPLOY_KEYS: &[&str] = &[
    "environment",
    "artifact",
    "service",
    "strategy",
    "progress_deadline",
    "auto_rollback",
    "irreversible",
    "on_newer",
    "hooks",
    "analysis",
    "gates",
    "waves",
];
const HOOK_KEYS: &[&str] = &["before", "after_batch", "after", "on_failure"];
const ON_NEWER: &[&str] = &["queue", "supersede"];

const EXAMPLE: &str = "e.g. `deploy: {environment: staging, artifact: build:dist/app.tar.gz, service: {name: web, \
     command: ./app, port: 8080, health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}}}`";
const ARTIFACT_EXAMPLE: &str =
    "e.g. `artifact: build:dist/app.tar.gz`: the file dist/app.tar.gz of the artifacts of job `build`";
const AUTO_ROLLBACK_HINT: &str = "`true` (the default) puts the nodes back on their last healthy release \
     after a failure, `false` leaves them where the rollout stopped";
const IRREVERSIBLE_HINT: &str = "`true` marks the release as a one-way door (an irreversible migration): a \
     failure freezes the rollout where it stands rather than roll back, and going back needs `drover rollback \
     --force --reason`";
const HOOKS_HINT: &str = "`before` runs once before the first batch, `after_batch` on each node after its switch, \
     `after` once after success, `on_failure` once after a rollback";

/// Job keys a deploy job may not have: the key, why, and what to do.
const NOT_WITH_DEPLOY: &[(&str, &str, &str)] = &[
    (
        "steps",
        "its steps are its deploy's hooks",
        "move the commands to `deploy: hooks:` (`before` runs once before the first batch, `after_batch` on \
         each node after its switch, `after` once after success, `on_failure` once after a rollback)",
    ),
    (
        "runs-on",
        "the environment picks the nodes it runs on",
        "give the nodes an agent label and select them in the environment, e.g. `drover env create staging \
         --selector role=web`",
    ),
    (
        "retries",
        "a rollout goes back on a failure rather than trying again",
        "`auto_rollback: true` (the default) puts the nodes back on their last healthy release; `drover rerun` \
         deploys again",
    ),
    (
        "matrix",
        "a deploy rolls one release out over one environment",
        "write one deploy job per environment, e.g. `deploy-staging` and `deploy-production`",
    ),
    ("cache", "it has no workspace to cache", "cache in the job that builds the release"),
    (
        "artifacts",
        "its release is the artifact it deploys, and it packs none of its own",
        "pack the files in the job that builds them, and name one in `deploy: artifact: JOB:PATH`",
    ),
];

/// How a release rolls out, as a deploy job and a desired-state file both
/// write it: [`Checker::rollout_settings`].
pub(super) struct RolloutSettings {
    pub(super) strategy: Strategy,
    pub(super) progress_deadline: Duration,
    pub(super) auto_rollback: bool,
    pub(super) irreversible: bool,
    pub(super) hooks: Hooks,
    pub(super) analysis: Option<Analysis>,
    pub(super) gates: Vec<Gate>,
    pub(super) waves: Vec<Wave>,
}

impl Checker<'_> {
    /// Reports each key of a deploy job (`entries`) that a deploy job may
    /// not have.
    pub(super) fn deploy_job_keys(&mut self, entries: &[Entry<'_>], job: &str) {
        for (key, why, hint) in NOT_WITH_DEPLOY {
            if let Some(entry) = find(entries, key) {
                self.error(
                    entry.key_pos,
                    format!("job `{job}` deploys, so it cannot have `{key}`: {why}"),
                    Some((*hint).to_owned()),
                );
            }
        }
    }

    /// Reads the `deploy` of job `job`, whose hooks' and service's
    /// expressions may name what `scope` has: the deploy (`None` when a
    /// part is wrong, which is reported) and its artifact as written, for
    /// [`Checker::deploy_artifacts`].
    pub(super) fn deploy(
        &mut self,
        entry: &Entry<'_>,
        job: &str,
        scope: &Scope<'_>,
    ) -> (Option<DeploySpec>, Option<ArtifactUse>) {
        let map = match &entry.value.kind {
            Kind::Map(map) => map,
            _ => {
                self.error(
                    entry.value_pos(),
                    format!("`deploy` in job `{job}` must be a mapping, found {}", entry.value.describe()),
                    Some(EXAMPLE.to_owned()),
                );
                return (None, None);
            }
        };
        let owner = &format!("job `{job}`");
        let context = format!("in the deploy of {owner}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, DEPLOY_KEYS, &context);
        let missing = |checker: &mut Self, key: &str, hint: &str| {
            checker.error(entry.key_pos, format!("the deploy of job `{job}` has no `{key}`"), Some(hint.to_owned()));
        };
        let environment = match find(&entries, "environment") {
            Some(e) => self.environment(e, job),
            None => {
                missing(
                    self,
                    "environment",
                    "name where to deploy, e.g. `environment: staging` (`drover envs` lists them)",
                );
                None
            }
        };
        let artifact = match find(&entries, "artifact") {
            Some(e) => self.artifact(e, job),
            None => {
                missing(self, "artifact", &format!("name the file to deploy, {ARTIFACT_EXAMPLE}, a job in `needs`"));
                None
            }
        };
        let service = match find(&entries, "service") {
            Some(e) => self.service(e, owner, scope),
            None => {
                missing(self, "service", service::EXAMPLE);
                None
            }
        };
        let rollout = self.rollout_settings(&entries, owner, &context, scope, true);
        let on_newer = match find(&entries, "on_newer") {
            Some(e) => self.on_newer(e, job),
            None => Some(OnNewer::Queue),
        };
        let artifact_ref = artifact.as_ref().map(ArtifactUse::reference);
        let spec = match (environment, artifact_ref, service, rollout, on_newer) {
            (Some(environment), Some(artifact), Some(service), Some(rollout), Some(on_newer)) => Some(DeploySpec {
                environment,
                artifact,
                service,
                strategy: rollout.strategy,
                progress_deadline: rollout.progress_deadline,
                auto_rollback: rollout.auto_rollback,
                irreversible: rollout.irreversible,
                on_newer,
                hooks: rollout.hooks,
                analysis: rollout.analysis,
                gates: rollout.gates,
                waves: rollout.waves,
            }),
            _ => None,
        };
        (spec, artifact)
    }

    /// Reads how a release rolls out, which a deploy job and a desired-state
    /// file share, from `entries`, the keys of the deploy of `owner`:
    /// `strategy` (rolling one node at a time when left out),
    /// `progress_deadline`, `auto_rollback`, `hooks`, whose expressions
    /// may name what `scope` has, and `analysis`, whose conditions read
    /// only `result`. `context` says where the keys are, as
    /// their unknown ones are reported ("in the deploy of job `d`", "in
    /// `deploy/web.yaml`"). `None` when one of them is wrong, which is
    /// reported. Waves may name other environments only if `environments`
    /// (a deploy job's, not an app's).
    pub(super) fn rollout_settings(
        &mut self,
        entries: &[Entry<'_>],
        owner: &str,
        context: &str,
        scope: &Scope<'_>,
        environments: bool,
    ) -> Option<RolloutSettings> {
        let strategy = match find(entries, "strategy") {
            Some(e) => self.strategy(e, owner),
            None => Some(Strategy::Rolling(Rolling { max_parallel: 1, max_unavailable: 0 })),
        };
        let progress_deadline = match find(entries, "progress_deadline") {
            Some(e) => self.bounded_duration(e, "progress_deadline", owner, MAX_PROGRESS_DEADLINE),
            None => Some(DEFAULT_PROGRESS_DEADLINE),
        };
        let auto_rollback = match find(entries, "auto_rollback") {
            Some(e) => self.flag(e, &format!("`auto_rollback` {context}"), AUTO_ROLLBACK_HINT),
            None => Some(true),
        };
        let irreversible = match find(entries, "irreversible") {
            Some(e) => self.flag(e, &format!("`irreversible` {context}"), IRREVERSIBLE_HINT),
            None => Some(false),
        };
        let hooks = match find(entries, "hooks") {
            Some(e) => self.hooks(e, owner, scope),
            None => Some(Hooks::default()),
        };
        let analysis = match find(entries, "analysis") {
            Some(e) => self.analysis(e, owner).map(Some),
            None => Some(None),
        };
        let gates = match find(entries, "gates") {
            Some(e) => self.gates(e, owner),
            None => Some(Vec::new()),
        };
        let waves = match find(entries, "waves") {
            Some(e) if matches!(strategy, Some(Strategy::BlueGreen)) => {
                self.error(
                    e.key_pos,
                    format!("{owner} rolls out blue-green, which switches every node at once, so it has no waves"),
                    Some("roll out in waves with `rolling` or `canary`, or leave `waves` out".to_owned()),
                );
                None
            }
            Some(e) => self.waves(e, owner, environments),
            None => Some(Vec::new()),
        };
        Some(RolloutSettings {
            strategy: strategy?,
            progress_deadline: progress_deadline?,
            auto_rollback: auto_rollback?,
            irreversible: irreversible?,
            hooks: hooks?,
            analysis: analysis?,
            gates: gates?,
            waves: waves?,
        })
    }

    fn environment(&mut self, entry: &Entry<'_>, job: &str) -> Option<String> {
        let hint = || {
            Some(format!(
                "an environment's name is 1 to {MAX_ENVIRONMENT_NAME_LEN} letters, digits, `_`, `.` or `-`, \
                 starting with a letter or digit, e.g. `staging` (`drover envs` lists them)"
            ))
        };
        match entry.value.scalar_text() {
            Some(name) if is_name(name, MAX_ENVIRONMENT_NAME_LEN) => Some(name.to_owned()),
            Some(name) => {
                self.error(
                    entry.value_pos(),
                    format!("invalid environment name `{}` in the deploy of job `{job}`", abbreviate(name)),
                    hint(),
                );
                None
            }
            None => {
                self.error(
                    entry.value_pos(),
                    format!(
                        "`environment` in the deploy of job `{job}` must be a name, found {}",
                        entry.value.describe()
                    ),
                    hint(),
                );
                None
            }
        }
    }

    fn on_newer(&mut self, entry: &Entry<'_>, job: &str) -> Option<OnNewer> {
        match entry.value.scalar_text() {
            Some("queue") => Some(OnNewer::Queue),
            Some("supersede") => Some(OnNewer::Supersede),
            found => {
                let close = found.and_then(|text| closest(text, ON_NEWER, &mut self.suggestion_budget));
                let what = "`queue` waits for this rollout to finish, `supersede` stops it where it stands";
                let hint = match close {
                    Some(close) => format!("did you mean `{close}`? {what}"),
                    None => what.to_owned(),
                };
                self.error(
                    entry.value_pos(),
                    format!(
                        "`on_newer` in the deploy of job `{job}` must be `queue` or `supersede`, found {}",
                        entry.value.describe()
                    ),
                    Some(hint),
                );
                None
            }
        }
    }

    /// Reads the `hooks` of the deploy of `owner`, whose expressions may
    /// name what `scope` has.
    fn hooks(&mut self, entry: &Entry<'_>, owner: &str, scope: &Scope<'_>) -> Option<Hooks> {
        let Kind::Map(map) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!("`hooks` in the deploy of {owner} must be a mapping, found {}", entry.value.describe()),
                Some(format!("e.g. `hooks: {{before: [{{run: ./migrate}}]}}`; {HOOKS_HINT}")),
            );
            return None;
        };
        let context = format!("in the hooks of {owner}");
        let entries = self.entries(map, "hook", &context);
        self.unknown_keys(&entries, HOOK_KEYS, &context);
        let mut hooks = Hooks::default();
        let mut ok = true;
        for hook in &entries {
            let Some(steps) = (match hook.key {
                "before" => Some(&mut hooks.before),
                "after_batch" => Some(&mut hooks.after_batch),
                "after" => Some(&mut hooks.after),
                "on_failure" => Some(&mut hooks.on_failure),
                _ => None,
            }) else {
                continue;
            };
            let message = match &hook.value.kind {
                Kind::Seq(items) if !items.is_empty() => None,
                Kind::Seq(_) | Kind::Null => Some(format!("hook `{}` of {owner} has no steps", hook.key)),
                _ => Some(format!(
                    "hook `{}` of {owner} must be a list of steps, found {}",
                    hook.key,
                    hook.value.describe()
                )),
            };
            if let Some(message) = message {
                let hint = format!("e.g. `{}: [{{run: ./smoke}}]`, or leave the hook out", hook.key);
                self.error(hook.value_pos(), message, Some(hint));
                ok = false;
                continue;
            }
            // Read as a job's steps; messages say "step 1 of job `d` hook `before`".
            *steps = self.steps(hook, &format!("{owner} hook `{}`", hook.key), scope);
        }
        ok.then_some(hooks)
    }

    /// A duration under `key` of the deploy of `owner`, at most `max`.
    pub(super) fn bounded_duration(
        &mut self,
        entry: &Entry<'_>,
        key: &str,
        owner: &str,
        max: Duration,
    ) -> Option<Duration> {
        if matches!(entry.value.kind, Kind::Null) {
            self.error(
                entry.key_pos,
                format!("`{key}` in {owner} has no value"),
                Some("give a duration, e.g. 30s, 10m or 1h; or leave the key out".to_owned()),
            );
            return None;
        }
        let duration = self.duration(entry.value, key, owner)?;
        if duration > max {
            self.error(
                entry.value.pos,
                format!(
                    "{key} `{}` in {owner} is over the limit of {}",
                    entry.value.scalar_text().map(abbreviate).unwrap_or_default(),
                    show(max)
                ),
                Some(format!("the longest allowed {key} is {}", show(max))),
            );
            return None;
        }
        Some(duration)
    }

    /// `true` or `false` under `entry`; `subject` names it in messages,
    /// `hint` says what each does.
    fn flag(&mut self, entry: &Entry<'_>, subject: &str, hint: &str) -> Option<bool> {
        match (&entry.value.kind, entry.value.scalar_text()) {
            (Kind::Scalar(s), Some("true")) if s.ty == ScalarType::Bool => Some(true),
            (Kind::Scalar(s), Some("false")) if s.ty == ScalarType::Bool => Some(false),
            _ => {
                self.error(
                    entry.value_pos(),
                    format!("{subject} must be true or false, found {}", entry.value.describe()),
                    Some(hint.to_owned()),
                );
                None
            }
        }
    }

    /// A whole number from `min` to `max` under `entry`; `subject` names it
    /// in messages, `hint` says what it is for.
    pub(super) fn whole(&mut self, entry: &Entry<'_>, subject: &str, min: u32, max: u32, hint: &str) -> Option<u32> {
        let number = match &entry.value.kind {
            Kind::Scalar(s) => match s.ty {
                ScalarType::Int(n) => Some(n),
                _ => None,
            },
            _ => None,
        };
        match number {
            Some(n) if (i128::from(min)..=i128::from(max)).contains(&n) => u32::try_from(n).ok(),
            Some(n) => {
                self.error(
                    entry.value.pos,
                    format!("{subject} must be {min} to {max}, found {n}"),
                    Some(hint.to_owned()),
                );
                None
            }
            None => {
                self.error(
                    entry.value_pos(),
                    format!("{subject} must be a whole number from {min} to {max}, found {}", entry.value.describe()),
                    Some(hint.to_owned()),
                );
                None
            }
        }
    }
}

/// Whether `name` is 1 to `max` of `[A-Za-z0-9_.-]`, starting with a letter
/// or digit: the grammar of environment and service names.
pub(super) fn is_name(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= max
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `d` as the language writes it: `24h`, `10m`, `90s`.
fn show(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}
