//! The `jobs` mapping, and the keys of one job that need no file of their
//! own: its name, `runs-on`, `timeout`, `queue-timeout`, `retries`, and
//! `needs` as written. Its `if:` and the `${{ }}` in its `env` are read
//! once its `needs`, `env` and `secrets` are known, which they may name.
//! Whether the jobs a job needs exist, and whether needs form a cycle, can
//! only be told once every job has been read; `graph` checks that, and then
//! `deploy` checks the artifact each deploy job takes from a job it needs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::deploy::ArtifactUse;
use super::{Checker, Entry, ScopeNames, find, matrix};
use crate::yaml::{Kind, Node, Pos, Scalar, ScalarType, abbreviate};
use crate::{Diagnostic, JobSpec, MAX_JOBS, MAX_NAME_LEN, MAX_RETRIES, MAX_TIMEOUT, MatrixCell};
use drover_client::duration;

const JOB_KEYS: &[&str] = &[
    "runs-on",
    "env",
    "timeout",
    "queue-timeout",
    "retries",
    "needs",
    "steps",
    "artifacts",
    "cache",
    "secrets",
    "if",
    "approval",
    "concurrency",
    "matrix",
    "fail-fast",
    "deploy",
];

const DURATION_HINT: &str = "use a whole number with s, m or h, e.g. 90s, 10m, 1h30m";
pub(super) const JOB_NAME_HINT: &str = "job names are used in ids and paths: use 1 to 100 letters, digits, \
     `_`, `.` or `-`, starting with a letter or digit";

/// A job as read, with the positions the graph checks point at.
pub(super) struct JobDraft {
    pub(super) spec: JobSpec,
    /// The `needs` entries as written, in order, with their positions (a
    /// matrix job's name stands for all its expansions).
    pub(super) needs: Vec<(String, Pos)>,
    /// Whether the job has an `artifacts:` key, right or wrong (a deploy
    /// that takes its artifact is not told it has none when it is wrong).
    pub(super) artifacts_written: bool,
    /// For a deploy job, its `artifact:` as written, checked against the
    /// job it names once every job has been read.
    pub(super) deploy_artifact: Option<ArtifactUse>,
}

impl Checker<'_> {
    pub(super) fn jobs(&mut self, jobs_entry: &Entry<'_>) -> Vec<JobSpec> {
        let value = jobs_entry.value;
        let map = match &value.kind {
            Kind::Map(map) if !map.is_empty() => map,
            Kind::Null | Kind::Map(_) => {
                self.error(
                    jobs_entry.value_pos(),
                    "`jobs` is empty",
                    Some("define at least one job, e.g. `jobs: {build: {steps: [{run: make}]}}`".to_owned()),
                );
                return Vec::new();
            }
            _ => {
                self.error(
                    value.pos,
                    format!("`jobs` must be a mapping from job names to jobs, found {}", value.describe()),
                    Some("jobs are keyed by name, e.g. `jobs: {build: {steps: [{run: make}]}}`".to_owned()),
                );
                return Vec::new();
            }
        };
        let entries = self.entries(map, "job", "");
        if entries.len() > MAX_JOBS {
            self.error(
                entries[MAX_JOBS].key_pos,
                format!("too many jobs: {}, over the limit of {MAX_JOBS} jobs", entries.len()),
                Some("split the work into several pipelines".to_owned()),
            );
        }
        let mut drafts: Vec<JobDraft> = Vec::with_capacity(entries.len());
        for entry in &entries {
            self.job_or_matrix(entry, &mut drafts);
        }
        if drafts.len() > MAX_JOBS && entries.len() <= MAX_JOBS {
            self.error(
                jobs_entry.key_pos,
                format!("the jobs expand into {} jobs, over the limit of {MAX_JOBS} jobs", drafts.len()),
                Some("use smaller matrices, or split the work into several pipelines".to_owned()),
            );
        }
        let names: Vec<&str> = entries.iter().map(|entry| entry.key).collect();
        self.needs_graph(&names, &mut drafts);
        self.deploy_artifacts(&drafts);
        drafts.into_iter().map(|draft| draft.spec).collect()
    }

    /// Reads one job as written: a job, or with `matrix:` one job per
    /// combination. A problem is reported once, not once per expansion.
    fn job_or_matrix(&mut self, entry: &Entry<'_>, drafts: &mut Vec<JobDraft>) {
        let matrix_entry = match &entry.value.kind {
            Kind::Map(map) => map.iter().find(|(k, _)| k.scalar_text() == Some("matrix")),
            _ => None,
        };
        let Some((matrix_key, matrix_value)) = matrix_entry else {
            if let Kind::Map(map) = &entry.value.kind
                && let Some((key, _)) = map.iter().find(|(k, _)| k.scalar_text() == Some("fail-fast"))
            {
                self.error(
                    key.pos,
                    format!("`fail-fast` in job `{}` has no matrix to apply to", abbreviate(entry.key)),
                    Some(
                        "`fail-fast: false` lets the other expansions of a `matrix:` go on after one fails".to_owned(),
                    ),
                );
            }
            drafts.push(self.job(entry, None, &[]));
            return;
        };
        let name = abbreviate(entry.key);
        let matrix_entry = Entry { key: "matrix", key_pos: matrix_key.pos, value: matrix_value };
        let mut keys = Vec::new();
        let fail_fast = self.fail_fast(entry, &name);
        let Some(matrix) = self.matrix(&matrix_entry, &name, &mut keys) else {
            // Still check the rest of the job, once.
            self.job(entry, None, &keys);
            return;
        };
        let seen = self.diagnostics.len();
        for (i, combo) in matrix.combos.iter().enumerate() {
            let value = matrix::substitute_job(entry.value, combo);
            let cell = MatrixCell { of: entry.key.to_owned(), values: combo.clone(), fail_fast };
            let expanded = Entry { key: entry.key, key_pos: entry.key_pos, value: &value };
            let before = self.diagnostics.len();
            let draft = self.job(&expanded, Some(cell), &matrix.keys);
            // The same mistake in every expansion is reported once; one
            // that only some combinations make is reported for the first.
            let new: Vec<Diagnostic> = self.diagnostics.drain(before..).collect();
            for d in new {
                if i == 0 || !self.diagnostics[seen..].iter().any(|old| old.line == d.line && old.column == d.column) {
                    self.diagnostics.push(d);
                }
            }
            drafts.push(draft);
        }
    }

    fn fail_fast(&mut self, entry: &Entry<'_>, job: &str) -> bool {
        let Kind::Map(map) = &entry.value.kind else { return true };
        match map.iter().find(|(k, _)| k.scalar_text() == Some("fail-fast")).map(|(_, v)| v) {
            None => true,
            Some(v) => match v.scalar_text() {
                Some("true") => true,
                Some("false") => false,
                _ => {
                    self.error(
                        v.pos,
                        format!("`fail-fast` in job `{job}` must be true or false, found {}", v.describe()),
                        Some("`fail-fast: false` lets the other expansions go on after one fails".to_owned()),
                    );
                    true
                }
            },
        }
    }

    /// Reads one job; `cell`, for one expansion of a matrix whose keys
    /// are `matrix_keys`.
    fn job(&mut self, entry: &Entry<'_>, cell: Option<MatrixCell>, matrix_keys: &[String]) -> JobDraft {
        let full_name = entry.key;
        // Messages quote the name as written; an invalid one may be very long.
        let name = &abbreviate(full_name);
        // What messages call it: "job `build`".
        let owner = &format!("job `{name}`");
        if !is_valid_job_name(full_name) {
            self.error(entry.key_pos, format!("invalid job name `{name}`"), Some(JOB_NAME_HINT.to_owned()));
        }
        let spec_name = cell.as_ref().map_or_else(|| full_name.to_owned(), |c| matrix::cell_name(full_name, &c.values));
        let mut draft = JobDraft {
            spec: JobSpec {
                name: spec_name,
                runs_on: BTreeMap::new(),
                env: BTreeMap::new(),
                timeout: None,
                queue_timeout: None,
                retries: 0,
                needs: Vec::new(),
                steps: Vec::new(),
                artifacts: None,
                skip_artifacts_of: Vec::new(),
                cache: None,
                secrets: Vec::new(),
                condition: None,
                approval: None,
                concurrency: None,
                matrix: cell,
                deploy: None,
            },
            needs: Vec::new(),
            artifacts_written: false,
            deploy_artifact: None,
        };
        let map = match &entry.value.kind {
            Kind::Map(map) => map,
            Kind::Null => {
                self.error(
                    entry.key_pos,
                    format!("job `{name}` is empty"),
                    Some(format!("a job needs steps, e.g. `{name}: {{steps: [{{run: make}}]}}`")),
                );
                return draft;
            }
            _ => {
                self.error(
                    entry.value_pos(),
                    format!("job `{name}` must be a mapping, found {}", entry.value.describe()),
                    Some(format!("e.g. `{name}: {{steps: [{{run: make}}]}}`")),
                );
                return draft;
            }
        };
        let context = format!("in job `{name}`");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, JOB_KEYS, &context);
        let deploys = find(&entries, "deploy").is_some();
        if deploys {
            self.deploy_job_keys(&entries, name);
        }
        draft.artifacts_written = find(&entries, "artifacts").is_some();

        if let Some(entry) = find(&entries, "runs-on") {
            draft.spec.runs_on =
                self.labels(entry.value, &format!("`runs-on` of {owner}"), "e.g. `runs-on: {os: linux}`");
        }
        if let Some(entry) = find(&entries, "env") {
            draft.spec.env = self.env(entry.value, Some(owner));
        }
        if let Some(entry) = find(&entries, "timeout") {
            draft.spec.timeout = self.duration(entry.value, "timeout", owner);
        }
        if let Some(entry) = find(&entries, "queue-timeout") {
            draft.spec.queue_timeout = self.duration(entry.value, "queue-timeout", owner);
        }
        if let Some(entry) = find(&entries, "secrets") {
            draft.spec.secrets = self.secrets(entry.value, name, &draft.spec.env);
        }
        if let Some(entry) = find(&entries, "artifacts") {
            draft.spec.artifacts = self.artifacts(entry.value, name);
        }
        if let Some(entry) = find(&entries, "cache") {
            draft.spec.cache = self.cache(entry, name);
        }
        if let Some(entry) = find(&entries, "approval") {
            draft.spec.approval = self.approval(entry.value, name);
        }
        if let Some(entry) = find(&entries, "retries") {
            draft.spec.retries = self.retries(entry.value, name);
        }
        if let Some(entry) = find(&entries, "needs") {
            let needs = self.needs(entry.value, full_name, name, &mut draft.spec.skip_artifacts_of);
            draft.needs = needs.into_iter().map(|(need, pos)| (need.to_owned(), pos)).collect();
            draft.spec.needs = draft.needs.iter().map(|(need, _)| need.clone()).collect();
        }
        let names = ScopeNames::new(
            draft.needs.iter().map(|(need, _)| need.as_str()),
            self.pipeline_env.keys().chain(draft.spec.env.keys()).map(String::as_str),
            &draft.spec.secrets,
        )
        .with_matrix(matrix_keys);
        let steps = names.with_scope(|scope| {
            if let Some(entry) = find(&entries, "if") {
                draft.spec.condition = self.condition(entry, scope, &format!("condition of job `{name}`"));
            }
            if let Some(entry) = find(&entries, "concurrency") {
                draft.spec.concurrency = self.concurrency(entry.value, scope, &format!("job `{name}`"));
            }
            if let Some(entry) = find(&entries, "env") {
                self.env_interpolations(entry.value, &draft.spec.env, scope, &context);
            }
            if let Some(entry) = find(&entries, "deploy") {
                (draft.spec.deploy, draft.deploy_artifact) = self.deploy(entry, name, scope);
            }
            // A deploy job's steps are its hooks; `deploy_job_keys` said so.
            find(&entries, "steps").filter(|_| !deploys).map(|steps| self.steps(steps, owner, scope))
        });
        match steps {
            Some(steps) => draft.spec.steps = steps,
            None if deploys => {}
            None => self.error(
                entry.key_pos,
                format!("job `{name}` has no steps"),
                Some("add `steps:` with at least one `- run: <command>`".to_owned()),
            ),
        }
        draft
    }

    /// Reads a mapping of agent label names to values: `what` names it in
    /// messages ("`runs-on` of job `a`"), and `example` shows one.
    pub(super) fn labels(&mut self, labels: &Node, what: &str, example: &str) -> BTreeMap<String, String> {
        let context = format!("in {what}");
        let mut out = BTreeMap::new();
        let map = match &labels.kind {
            Kind::Map(map) => map,
            Kind::Null => return out,
            _ => {
                self.error(
                    labels.pos,
                    format!("{what} must be a mapping of agent labels, found {}", labels.describe()),
                    Some(example.to_owned()),
                );
                return out;
            }
        };
        let entries = self.entries(map, "label", &context);
        for entry in entries {
            if entry.key.is_empty() {
                self.error(entry.key_pos, format!("empty label name {context}"), None);
                continue;
            }
            match entry.value.scalar_text() {
                Some(value) if value.contains("${{") && !self.has_run => {
                    self.no_run(entry.value, value, &format!("label `{}` {context}", entry.key));
                }
                Some(value) if value.contains("${{") => self.error(
                    entry.value_pos(),
                    format!("label `{}` {context} has an expression that is not a matrix value", entry.key),
                    Some(
                        "labels are decided before the job runs: only `${{ matrix.NAME }}` of the job's own matrix \
                         can be used in `runs-on`"
                            .to_owned(),
                    ),
                ),
                Some(value) if !value.is_empty() => {
                    out.insert(entry.key.to_owned(), value.to_owned());
                }
                Some(_) => self.error(
                    entry.value_pos(),
                    format!("label `{}` {context} has an empty value", entry.key),
                    Some(format!("give the value the agent's label must have, e.g. `{}: linux`", entry.key)),
                ),
                None => self.error(
                    entry.value_pos(),
                    format!("label `{}` {context} must be a string, found {}", entry.key, entry.value.describe()),
                    Some(format!("e.g. `{}: linux`", entry.key)),
                ),
            }
        }
        out
    }

    /// A duration under `key` (`timeout`, `queue-timeout`) of `owner`
    /// ("job `a`"): longer than zero, at most [`MAX_TIMEOUT`].
    pub(super) fn duration(&mut self, timeout: &Node, key: &str, owner: &str) -> Option<Duration> {
        let text = match &timeout.kind {
            Kind::Null => return None,
            Kind::Scalar(scalar) if scalar.ty == ScalarType::Str => &scalar.text,
            Kind::Scalar(scalar) => {
                // A bare number is most likely seconds or minutes; we make
                // the user say which rather than guess.
                self.error(
                    timeout.pos,
                    format!("{key} `{}` in {owner} has no unit", abbreviate(&scalar.text)),
                    Some(DURATION_HINT.to_owned()),
                );
                return None;
            }
            _ => {
                self.error(
                    timeout.pos,
                    format!("`{key}` in {owner} must be a duration, found {}", timeout.describe()),
                    Some(DURATION_HINT.to_owned()),
                );
                return None;
            }
        };
        match duration::parse(text, duration::PIPELINE_UNITS) {
            Some(d) if d.is_zero() => {
                self.error(
                    timeout.pos,
                    format!("{key} `{text}` in {owner} must be longer than zero"),
                    Some(DURATION_HINT.to_owned()),
                );
                None
            }
            Some(d) if d > MAX_TIMEOUT => {
                self.error(
                    timeout.pos,
                    format!("{key} `{text}` in {owner} is over the limit of 7 days"),
                    Some(format!("the longest allowed {key} is 168h")),
                );
                None
            }
            Some(d) => Some(d),
            None => {
                self.error(
                    timeout.pos,
                    format!("invalid {key} `{}` in {owner}", abbreviate(text)),
                    Some(DURATION_HINT.to_owned()),
                );
                None
            }
        }
    }

    fn retries(&mut self, retries: &Node, job: &str) -> u32 {
        let number = match &retries.kind {
            Kind::Null => return 0,
            Kind::Scalar(Scalar { ty: ScalarType::Int(n), .. }) => Some(*n),
            _ => None,
        };
        if let Some(n) = number.and_then(|n| u32::try_from(n).ok())
            && n <= MAX_RETRIES
        {
            return n;
        }
        let text = retries.scalar_text().map(abbreviate).unwrap_or_default();
        let message = match number {
            Some(n) if n < 0 => {
                format!("`retries` in job `{job}` must not be negative, found {text}")
            }
            Some(_) => {
                format!("`retries` {text} in job `{job}` is over the limit of {MAX_RETRIES}")
            }
            None => format!("`retries` in job `{job}` must be a whole number, found {}", retries.describe()),
        };
        self.error(retries.pos, message, Some(format!("e.g. `retries: 2`; at most {MAX_RETRIES}")));
        0
    }

    /// Reads `needs`: a list of job names, or one name on its own.
    /// `full_name` is the job's name and `job` the name as shown in messages.
    fn needs<'n>(
        &mut self,
        needs: &'n Node,
        full_name: &str,
        job: &str,
        skip_artifacts: &mut Vec<String>,
    ) -> Vec<(&'n str, Pos)> {
        let items: Vec<&Node> = match &needs.kind {
            Kind::Null => return Vec::new(),
            Kind::Scalar(_) => vec![needs],
            Kind::Seq(items) => items.iter().collect(),
            Kind::Map(_) => {
                self.error(
                    needs.pos,
                    format!("`needs` in job `{job}` must be a list of job names, found a mapping"),
                    Some("e.g. `needs: [build, lint]`".to_owned()),
                );
                return Vec::new();
            }
        };
        let mut out: Vec<(&str, Pos)> = Vec::new();
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for item in items {
            // `{job: build, artifacts: false}`: needed, without its artifacts.
            let name = match &item.kind {
                Kind::Map(map) => {
                    let context = format!("in an entry of `needs` of job `{job}`");
                    let entries = self.entries(map, "key", &context);
                    self.unknown_keys(&entries, &["job", "artifacts"], &context);
                    let Some(name) = find(&entries, "job").and_then(|e| e.value.scalar_text()) else {
                        self.error(
                            item.pos,
                            format!("an entry of `needs` in job `{job}` names no `job`"),
                            Some("e.g. `needs: [{job: build, artifacts: false}]`".to_owned()),
                        );
                        continue;
                    };
                    match find(&entries, "artifacts").map(|e| (e.value, e.value.scalar_text())) {
                        None | Some((_, Some("true"))) => {}
                        Some((_, Some("false"))) => skip_artifacts.push(name.to_owned()),
                        Some((node, _)) => {
                            self.error(
                                node.pos,
                                format!("`artifacts` in `needs` of job `{job}` must be true or false"),
                                Some("`artifacts: false` leaves the needed job's artifacts out".to_owned()),
                            );
                        }
                    }
                    name
                }
                _ => match item.scalar_text() {
                    Some(name) => name,
                    None => {
                        self.error(
                            item.pos,
                            format!("entries of `needs` in job `{job}` must be job names, found {}", item.describe()),
                            Some("e.g. `needs: [build, lint]`".to_owned()),
                        );
                        continue;
                    }
                },
            };
            if name == full_name {
                self.error(
                    item.pos,
                    format!("job `{job}` needs itself"),
                    Some(format!("remove `{job}` from its own `needs`")),
                );
                continue;
            }
            if let Some(first) = seen.get(name) {
                let (shown, line) = (abbreviate(name), first.line);
                self.error(
                    item.pos,
                    format!("job `{job}` lists `{shown}` in `needs` twice (first at line {line})"),
                    Some("remove one of them".to_owned()),
                );
                continue;
            }
            seen.insert(name, item.pos);
            out.push((name, item.pos));
        }
        out
    }
}

/// Whether `name` matches `[A-Za-z0-9][A-Za-z0-9_.-]{0,99}`.
pub(super) fn is_valid_job_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names() {
        for name in ["a", "build", "Build-2.x_y", "0", &"a".repeat(100)] {
            assert!(is_valid_job_name(name), "{name}");
        }
        for name in ["", "-a", ".a", "_a", "a b", "a/b", "ü", &"a".repeat(101)] {
            assert!(!is_valid_job_name(name), "{name}");
        }
    }
}
