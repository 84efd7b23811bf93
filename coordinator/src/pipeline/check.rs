//! Checks a YAML tree against the pipeline format and builds the [`Pipeline`].
//!
//! The checker never stops at the first problem. Each part of the file is
//! checked on its own, and a part that is wrong is left out (or replaced by a
//! harmless default) so that checking can go on. Once every job has been
//! read, the `needs` graph is checked as a whole: missing jobs, then cycles.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::yaml::{Kind, Node, Pos, Scalar, ScalarType, abbreviate};
use super::{
    Diagnostic, JobSpec, MAX_JOBS, MAX_NAME_LEN, MAX_RETRIES, MAX_STEPS_PER_JOB, MAX_TIMEOUT, Pipeline,
    RESERVED_ENV_PREFIX, StepSpec,
};
use crate::duration;

/// The most diagnostics we return for one file.
const MAX_DIAGNOSTICS: usize = 100;
/// The most job names we spell out when naming a cycle.
const MAX_CYCLE_NAMES: usize = 10;

const TOP_LEVEL_KEYS: &[&str] = &["name", "env", "jobs"];
const JOB_KEYS: &[&str] = &["runs-on", "env", "timeout", "retries", "needs", "steps"];
const STEP_KEYS: &[&str] = &["name", "run"];

const DURATION_HINT: &str = "use a whole number with s, m or h, e.g. 90s, 10m, 1h30m";
const ENV_NAME_HINT: &str = "env variable names must be shell identifiers: letters, digits \
     and `_`, not starting with a digit";
const DENIED_ENV_HINT: &str = "these variables change how the dynamic loader or bash start every \
     step, before the step's own script runs; set them inside the step's `run` instead if you really mean it";
const PATH_HINT: &str = "steps start with a fixed PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin); \
     extend it with absolute directories, e.g. `PATH: \"$PATH:/opt/tool/bin\"` or `PATH: \"/opt/tool/bin:$PATH\"`";
const CYCLE_HINT: &str = "a job cannot need itself, directly or through other jobs; remove one of these needs";
const JOB_NAME_HINT: &str = "job names are used in ids and paths: use 1 to 100 letters, digits, \
     `_`, `.` or `-`, starting with a letter or digit";

/// Checks the document `root` of the file `file`.
pub(super) fn pipeline(file: &str, root: &Node) -> Result<Pipeline, Vec<Diagnostic>> {
    let mut checker = Checker { file, diagnostics: Vec::new(), suggestion_budget: SUGGESTION_BUDGET };
    let pipeline = checker.top_level(root);
    let mut diagnostics = checker.diagnostics;
    if diagnostics.is_empty() {
        return Ok(pipeline);
    }
    // Read like a compiler's output: top to bottom. A value reached through
    // several aliases can produce the same diagnostic more than once.
    diagnostics.sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
    diagnostics.dedup();
    if diagnostics.len() > MAX_DIAGNOSTICS {
        // Nobody reads thousands of diagnostics, and they have to fit in
        // one RPC reply; point at where the unshown ones start.
        let hidden = diagnostics.len() - MAX_DIAGNOSTICS;
        diagnostics.truncate(MAX_DIAGNOSTICS + 1);
        let last = &mut diagnostics[MAX_DIAGNOSTICS];
        last.message = format!("{hidden} more problems from here on are not shown");
        last.hint = Some("fix the problems above and check again".to_owned());
    }
    Err(diagnostics)
}

/// How much work, in edit-distance table cells, we spend on "did you mean"
/// suggestions per file. A file with thousands of long job names and as many
/// typos could otherwise take seconds; past this budget hints just list names.
const SUGGESTION_BUDGET: usize = 10_000_000;

struct Checker<'a> {
    file: &'a str,
    diagnostics: Vec<Diagnostic>,
    /// What is left of [`SUGGESTION_BUDGET`].
    suggestion_budget: usize,
}

/// One entry of a mapping whose key is a string.
struct Entry<'n> {
    key: &'n str,
    key_pos: Pos,
    value: &'n Node,
}

impl Entry<'_> {
    /// Where to point at a problem with the value. A missing value (`key:`
    /// and nothing after it) "starts" at the colon or even on the next line,
    /// so there we point at the key instead.
    fn value_pos(&self) -> Pos {
        if matches!(self.value.kind, Kind::Null) { self.key_pos } else { self.value.pos }
    }
}

/// A job as read, with the positions the graph checks point at.
struct JobDraft<'n> {
    spec: JobSpec,
    /// The `needs` entries, in order, with their positions.
    needs: Vec<(&'n str, Pos)>,
}

impl Checker<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            hint,
        });
    }

    fn top_level(&mut self, root: &Node) -> Pipeline {
        let mut pipeline = Pipeline { name: String::new(), env: BTreeMap::new(), jobs: Vec::new() };
        let map = match &root.kind {
            Kind::Map(map) => map,
            Kind::Null => {
                // A document with only comments "starts" after them, which
                // is no place to point at; the top of the file is.
                self.error(
                    Pos::START,
                    "pipeline file is empty",
                    Some("a pipeline needs at least `name:` and a `jobs:` mapping".to_owned()),
                );
                return pipeline;
            }
            _ => {
                self.error(
                    root.pos,
                    format!("a pipeline file must be a mapping, found {}", root.describe()),
                    Some("start with `name:` and a `jobs:` mapping".to_owned()),
                );
                return pipeline;
            }
        };
        let entries = self.entries(map, "key", "at the top level");
        self.unknown_keys(&entries, TOP_LEVEL_KEYS, "at the top level");

        match find(&entries, "name") {
            Some(entry) => {
                if let Some(name) = self.pipeline_name(entry) {
                    pipeline.name = name;
                }
            }
            None => {
                self.error(root.pos, "missing `name` at the top level", Some("add e.g. `name: my-pipeline`".to_owned()))
            }
        }
        if let Some(entry) = find(&entries, "env") {
            pipeline.env = self.env(entry.value, None);
        }
        match find(&entries, "jobs") {
            Some(entry) => pipeline.jobs = self.jobs(entry),
            None => self.error(
                root.pos,
                "missing `jobs` at the top level",
                Some("add a `jobs:` mapping with at least one job".to_owned()),
            ),
        }
        pipeline
    }

    fn pipeline_name(&mut self, entry: &Entry<'_>) -> Option<String> {
        let value = entry.value;
        let Some(name) = value.scalar_text() else {
            self.error(
                entry.value_pos(),
                format!("`name` must be a string, found {}", value.describe()),
                Some("e.g. `name: my-pipeline`".to_owned()),
            );
            return None;
        };
        // The name is display text, not an id, so we only keep it to one
        // reasonably short line.
        if name.trim().is_empty() {
            self.error(entry.value_pos(), "`name` is empty", Some("e.g. `name: my-pipeline`".to_owned()));
            return None;
        }
        if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            self.error(
                entry.value_pos(),
                format!("invalid pipeline name `{}`", abbreviate(name)),
                Some(format!("a pipeline name is one line of at most {MAX_NAME_LEN} characters")),
            );
            return None;
        }
        Some(name.to_owned())
    }

    fn jobs(&mut self, jobs_entry: &Entry<'_>) -> Vec<JobSpec> {
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
        let drafts: Vec<JobDraft<'_>> = entries.iter().map(|entry| self.job(entry)).collect();
        self.needs_graph(&entries, &drafts);
        drafts.into_iter().map(|draft| draft.spec).collect()
    }

    fn job<'n>(&mut self, entry: &Entry<'n>) -> JobDraft<'n> {
        let full_name = entry.key;
        // Messages quote the name; an invalid one may be very long.
        let name = &abbreviate(full_name);
        if !is_valid_job_name(full_name) {
            self.error(entry.key_pos, format!("invalid job name `{name}`"), Some(JOB_NAME_HINT.to_owned()));
        }
        let mut draft = JobDraft {
            spec: JobSpec {
                name: full_name.to_owned(),
                runs_on: BTreeMap::new(),
                env: BTreeMap::new(),
                timeout: None,
                retries: 0,
                needs: Vec::new(),
                steps: Vec::new(),
            },
            needs: Vec::new(),
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

        if let Some(entry) = find(&entries, "runs-on") {
            draft.spec.runs_on = self.labels(entry.value, name);
        }
        if let Some(entry) = find(&entries, "env") {
            draft.spec.env = self.env(entry.value, Some(name));
        }
        if let Some(entry) = find(&entries, "timeout") {
            draft.spec.timeout = self.timeout(entry.value, name);
        }
        if let Some(entry) = find(&entries, "retries") {
            draft.spec.retries = self.retries(entry.value, name);
        }
        if let Some(entry) = find(&entries, "needs") {
            draft.needs = self.needs(entry.value, full_name, name);
            draft.spec.needs = draft.needs.iter().map(|(need, _)| (*need).to_owned()).collect();
        }
        match find(&entries, "steps") {
            Some(steps) => draft.spec.steps = self.steps(steps, name),
            None => self.error(
                entry.key_pos,
                format!("job `{name}` has no steps"),
                Some("add `steps:` with at least one `- run: <command>`".to_owned()),
            ),
        }
        draft
    }

    /// Reads the `runs-on` mapping of label names to values of `job`.
    fn labels(&mut self, labels: &Node, job: &str) -> BTreeMap<String, String> {
        let context = format!("in `runs-on` of job `{job}`");
        let mut out = BTreeMap::new();
        let map = match &labels.kind {
            Kind::Map(map) => map,
            Kind::Null => return out,
            _ => {
                self.error(
                    labels.pos,
                    format!("`runs-on` of job `{job}` must be a mapping of agent labels, found {}", labels.describe()),
                    Some("e.g. `runs-on: {os: linux}`".to_owned()),
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

    /// Reads an `env` mapping: the top-level one, or that of `job`.
    fn env(&mut self, env: &Node, job: Option<&str>) -> BTreeMap<String, String> {
        let (subject, context) = match job {
            Some(job) => (format!("`env` of job `{job}`"), format!("in job `{job}`")),
            None => ("the top-level `env`".to_owned(), "at the top level".to_owned()),
        };
        let mut out = BTreeMap::new();
        let map = match &env.kind {
            Kind::Map(map) => map,
            Kind::Null => return out,
            _ => {
                self.error(
                    env.pos,
                    format!("{subject} must be a mapping of variable names to values, found {}", env.describe()),
                    Some("e.g. `env: {GREETING: hello}`".to_owned()),
                );
                return out;
            }
        };
        let entries = self.entries(map, "env variable", &context);
        for entry in entries {
            let key = entry.key;
            let mut ok = true;
            if !is_shell_identifier(key) {
                self.error(
                    entry.key_pos,
                    format!("invalid env variable name `{}` {context}", abbreviate(key)),
                    Some(ENV_NAME_HINT.to_owned()),
                );
                ok = false;
            } else if key.starts_with(RESERVED_ENV_PREFIX) {
                self.error(
                    entry.key_pos,
                    format!(
                        "env variable `{key}` {context} uses the reserved prefix \
                         `{RESERVED_ENV_PREFIX}`"
                    ),
                    Some(format!("Drover sets {RESERVED_ENV_PREFIX}* variables itself; choose another name")),
                );
                ok = false;
            } else if let Some(rule) = denied_env_name(key) {
                self.error(
                    entry.key_pos,
                    format!("env variable `{key}` {context} is not allowed: {rule}"),
                    Some(DENIED_ENV_HINT.to_owned()),
                );
                ok = false;
            }
            let value = match (&entry.value.kind, entry.value.scalar_text()) {
                (_, Some(text)) if text.contains('\0') => {
                    self.error(
                        entry.value_pos(),
                        format!("env variable `{key}` {context} contains a NUL character"),
                        Some("environment variables cannot hold NUL characters".to_owned()),
                    );
                    continue;
                }
                (_, Some(text)) => text,
                (Kind::Null, _) => {
                    self.error(
                        entry.value_pos(),
                        format!("env variable `{key}` {context} has no value"),
                        Some(format!("write `{key}: \"\"` for an empty value")),
                    );
                    continue;
                }
                _ => {
                    self.error(
                        entry.value_pos(),
                        format!("env variable `{key}` {context} must be a string, found {}", entry.value.describe()),
                        Some("env values are strings; numbers and booleans are taken as written".to_owned()),
                    );
                    continue;
                }
            };
            if key == "PATH"
                && let Err(problem) = check_path_extension(value)
            {
                self.error(
                    entry.value_pos(),
                    format!("env variable `PATH` {context} {problem}"),
                    Some(PATH_HINT.to_owned()),
                );
                continue;
            }
            if ok {
                out.insert(key.to_owned(), value.to_owned());
            }
        }
        out
    }

    fn timeout(&mut self, timeout: &Node, job: &str) -> Option<Duration> {
        let text = match &timeout.kind {
            Kind::Null => return None,
            Kind::Scalar(scalar) if scalar.ty == ScalarType::Str => &scalar.text,
            Kind::Scalar(scalar) => {
                // A bare number is most likely seconds or minutes; we make
                // the user say which rather than guess.
                self.error(
                    timeout.pos,
                    format!("timeout `{}` in job `{job}` has no unit", abbreviate(&scalar.text)),
                    Some(DURATION_HINT.to_owned()),
                );
                return None;
            }
            _ => {
                self.error(
                    timeout.pos,
                    format!("`timeout` in job `{job}` must be a duration, found {}", timeout.describe()),
                    Some(DURATION_HINT.to_owned()),
                );
                return None;
            }
        };
        match duration::parse(text, duration::PIPELINE_UNITS) {
            Some(d) if d.is_zero() => {
                self.error(
                    timeout.pos,
                    format!("timeout `{text}` in job `{job}` must be longer than zero"),
                    Some(DURATION_HINT.to_owned()),
                );
                None
            }
            Some(d) if d > MAX_TIMEOUT => {
                self.error(
                    timeout.pos,
                    format!("timeout `{text}` in job `{job}` is over the limit of 7 days"),
                    Some("the longest allowed timeout is 168h".to_owned()),
                );
                None
            }
            Some(d) => Some(d),
            None => {
                self.error(
                    timeout.pos,
                    format!("invalid timeout `{}` in job `{job}`", abbreviate(text)),
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
    fn needs<'n>(&mut self, needs: &'n Node, full_name: &str, job: &str) -> Vec<(&'n str, Pos)> {
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
            let Some(name) = item.scalar_text() else {
                self.error(
                    item.pos,
                    format!("entries of `needs` in job `{job}` must be job names, found {}", item.describe()),
                    Some("e.g. `needs: [build, lint]`".to_owned()),
                );
                continue;
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

    fn steps(&mut self, steps_entry: &Entry<'_>, job: &str) -> Vec<StepSpec> {
        let no_steps_hint = || Some("add at least one step, e.g. `steps: [{run: make}]`".to_owned());
        let steps = steps_entry.value;
        let items = match &steps.kind {
            Kind::Seq(items) if !items.is_empty() => items,
            Kind::Seq(_) => {
                self.error(steps.pos, format!("job `{job}` has no steps"), no_steps_hint());
                return Vec::new();
            }
            Kind::Null => {
                self.error(steps_entry.key_pos, format!("job `{job}` has no steps"), no_steps_hint());
                return Vec::new();
            }
            _ => {
                self.error(
                    steps.pos,
                    format!("`steps` in job `{job}` must be a list of steps, found {}", steps.describe()),
                    Some("e.g. `steps: [{run: make}]`, or one `- run: <command>` per line".to_owned()),
                );
                return Vec::new();
            }
        };
        if items.len() > MAX_STEPS_PER_JOB {
            self.error(
                items[MAX_STEPS_PER_JOB].pos,
                format!("job `{job}` has {} steps, over the limit of {MAX_STEPS_PER_JOB}", items.len()),
                Some("split the job into several jobs, or move commands into a script".to_owned()),
            );
        }
        items.iter().enumerate().filter_map(|(i, step)| self.step(step, i + 1, job)).collect()
    }

    fn step(&mut self, step: &Node, number: usize, job: &str) -> Option<StepSpec> {
        let context = format!("in step {number} of job `{job}`");
        let map = match &step.kind {
            Kind::Map(map) => map,
            _ => {
                let example = step.scalar_text().map_or("make", abbreviate_ref);
                self.error(
                    step.pos,
                    format!("step {number} of job `{job}` must be a mapping with `run`, found {}", step.describe()),
                    Some(format!("write `- run: {example}`")),
                );
                return None;
            }
        };
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, STEP_KEYS, &context);

        let name = match find(&entries, "name") {
            None => None,
            Some(entry) => match entry.value.scalar_text() {
                Some(name) if !name.trim().is_empty() => Some(name.to_owned()),
                Some(_) => {
                    self.error(
                        entry.value_pos(),
                        format!("`name` {context} is empty"),
                        Some("give the step a name, or leave `name` out".to_owned()),
                    );
                    None
                }
                None => {
                    self.error(
                        entry.value_pos(),
                        format!("`name` {context} must be a string, found {}", entry.value.describe()),
                        None,
                    );
                    None
                }
            },
        };
        let Some(run_entry) = find(&entries, "run") else {
            self.error(
                step.pos,
                format!("step {number} of job `{job}` has no `run` command"),
                Some("add `run: <shell command>`".to_owned()),
            );
            return None;
        };
        let run = run_entry.value;
        match run.scalar_text() {
            Some(text) if text.trim().is_empty() => {
                self.error(
                    run.pos,
                    format!("`run` {context} is empty"),
                    Some("give the shell command to run".to_owned()),
                );
                None
            }
            Some(text) if text.contains('\0') => {
                self.error(run.pos, format!("`run` {context} contains a NUL character"), None);
                None
            }
            Some(text) => Some(StepSpec { name, run: text.to_owned() }),
            None if matches!(run.kind, Kind::Null) => {
                self.error(
                    run_entry.key_pos,
                    format!("`run` {context} is empty"),
                    Some("give the shell command to run".to_owned()),
                );
                None
            }
            None => {
                self.error(
                    run.pos,
                    format!("`run` {context} must be a string, found {}", run.describe()),
                    Some("for several lines, use a block: `run: |` followed by indented lines".to_owned()),
                );
                None
            }
        }
    }

    /// Checks that every `needs` entry names a job, and that there are no
    /// cycles. Entries that name missing jobs are dropped before looking for
    /// cycles.
    fn needs_graph(&mut self, entries: &[Entry<'_>], drafts: &[JobDraft<'_>]) {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(drafts.len());
        for (i, draft) in drafts.iter().enumerate() {
            index.entry(draft.spec.name.as_str()).or_insert(i);
        }
        let names: Vec<&str> = entries.iter().map(|entry| entry.key).collect();
        let mut edges: Vec<Vec<(usize, Pos)>> = vec![Vec::new(); drafts.len()];
        for (i, draft) in drafts.iter().enumerate() {
            for &(need, pos) in &draft.needs {
                match index.get(need) {
                    Some(&target) => edges[i].push((target, pos)),
                    None => {
                        let hint = match closest(need, &names, &mut self.suggestion_budget) {
                            Some(close) => format!("did you mean `{close}`?"),
                            None => format!("defined jobs: {}", list_some(&names)),
                        };
                        self.error(
                            pos,
                            format!(
                                "job `{}` needs `{}`, which is not defined",
                                abbreviate(&draft.spec.name),
                                abbreviate(need)
                            ),
                            Some(hint),
                        );
                    }
                }
            }
        }
        let successors: Vec<Vec<usize>> =
            edges.iter().map(|out| out.iter().map(|&(target, _)| target).collect()).collect();
        for component in strongly_connected_components(&successors) {
            if component.len() < 2 {
                // Self-needs were already reported and are not in the graph.
                continue;
            }
            let cycle = shortest_cycle(&successors, &component);
            let mut names: Vec<String> = cycle.iter().map(|&i| abbreviate(&drafts[i].spec.name)).collect();
            if names.len() > MAX_CYCLE_NAMES + 2 {
                // Keep the start, which the position points at, and the end,
                // which shows how the cycle closes.
                let hidden = names.len() - MAX_CYCLE_NAMES - 2;
                names.splice(MAX_CYCLE_NAMES..names.len() - 2, [format!("({hidden} more)")]);
            }
            let (first, second) = (cycle[0], cycle[1]);
            let pos = edges[first].iter().find(|(target, _)| *target == second).map(|&(_, pos)| pos);
            self.error(
                pos.unwrap_or(Pos::START),
                format!("cycle in needs: {}", names.join(" -> ")),
                Some(CYCLE_HINT.to_owned()),
            );
        }
    }

    /// The entries of `map` with string keys, leaving out (and reporting)
    /// keys that are not strings and keys that repeat an earlier one.
    /// `noun` names what the keys are and `context` where the map is, for the
    /// messages.
    fn entries<'n>(&mut self, map: &'n [(Node, Node)], noun: &str, context: &str) -> Vec<Entry<'n>> {
        let mut out: Vec<Entry<'n>> = Vec::with_capacity(map.len());
        let mut seen: HashMap<&str, Pos> = HashMap::with_capacity(map.len());
        let context = if context.is_empty() { String::new() } else { format!(" {context}") };
        for (key, value) in map {
            let Some(text) = key.scalar_text() else {
                self.error(key.pos, format!("{noun} names must be strings, found {}{context}", key.describe()), None);
                continue;
            };
            if let Some(first) = seen.get(text) {
                let line = first.line;
                self.error(
                    key.pos,
                    format!("duplicate {noun} `{}`{context} (first defined at line {line})", abbreviate(text)),
                    Some(format!("each {noun} may appear only once; remove or rename one of them")),
                );
                continue;
            }
            seen.insert(text, key.pos);
            out.push(Entry { key: text, key_pos: key.pos, value });
        }
        out
    }

    fn unknown_keys(&mut self, entries: &[Entry<'_>], allowed: &[&str], context: &str) {
        for entry in entries {
            if allowed.contains(&entry.key) {
                continue;
            }
            let allowed_list = allowed.join(", ");
            let hint = match closest(entry.key, allowed, &mut self.suggestion_budget) {
                Some(close) => format!("did you mean `{close}`? allowed keys: {allowed_list}"),
                None => format!("allowed keys: {allowed_list}"),
            };
            self.error(entry.key_pos, format!("unknown key `{}` {context}", abbreviate(entry.key)), Some(hint));
        }
    }
}

fn abbreviate_ref(text: &str) -> &str {
    // Only used for examples in hints, where a long command would drown the
    // advice; fall back to a generic command then.
    if text.len() <= 40 && !text.contains('\n') { text } else { "<command>" }
}

fn find<'e, 'n>(entries: &'e [Entry<'n>], key: &str) -> Option<&'e Entry<'n>> {
    entries.iter().find(|entry| entry.key == key)
}

/// Whether `name` matches `[A-Za-z0-9][A-Za-z0-9_.-]{0,99}`.
pub(super) fn is_valid_job_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether `name` matches `[A-Za-z_][A-Za-z0-9_]*`.
fn is_shell_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The candidate closest to `word`, if one is close enough to be a likely
/// typo: at most a third of the letters differ, ignoring case. Each
/// comparison is charged to `budget`; once that runs out there is no guess.
fn closest<'c>(word: &str, candidates: &[&'c str], budget: &mut usize) -> Option<&'c str> {
    let word_lower = word.to_lowercase();
    let word_len = word_lower.chars().count();
    let mut best: Option<(usize, &str)> = None;
    for &candidate in candidates {
        let candidate_len = candidate.chars().count();
        let limit = (word_len.max(candidate_len) / 3).max(1);
        if word_len.abs_diff(candidate_len) > limit {
            // The distance is at least the difference in length.
            continue;
        }
        let cost = (word_len + 1) * (candidate_len + 1);
        if cost > *budget {
            return None;
        }
        *budget -= cost;
        let distance = edit_distance(&word_lower, &candidate.to_lowercase());
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// The edit distance between `a` and `b` in characters, where swapping two
/// neighbours counts as one edit (optimal string alignment), because
/// `biuld` for `build` is as typical a typo as a missing letter.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the usual table: two rows back, the previous, the current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j - 1] + cost).min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Lists up to ten names for a hint, so a pipeline with thousands of jobs
/// does not produce a thousand-name hint.
fn list_some(names: &[&str]) -> String {
    const SHOWN: usize = 10;
    let shown: Vec<String> = names.iter().take(SHOWN).map(|name| abbreviate(name)).collect();
    if names.len() > SHOWN {
        format!("{}, and {} more", shown.join(", "), names.len() - SHOWN)
    } else {
        shown.join(", ")
    }
}

/// Tarjan's algorithm, without recursion so that a long chain of jobs cannot
/// overflow the stack. Returns the components in no particular order; each
/// component lists its members in ascending order.
fn strongly_connected_components(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = successors.len();
    let mut order: Vec<Option<usize>> = vec![None; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_order = 0;
    let mut components = Vec::new();
    for root in 0..n {
        if order[root].is_some() {
            continue;
        }
        // Each frame is a node and how many of its successors we have visited.
        let mut frames = vec![(root, 0)];
        order[root] = Some(next_order);
        low[root] = next_order;
        next_order += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(frame) = frames.last_mut() {
            let (node, visited) = *frame;
            if let Some(&next) = successors[node].get(visited) {
                frame.1 += 1;
                match order[next] {
                    None => {
                        order[next] = Some(next_order);
                        low[next] = next_order;
                        next_order += 1;
                        stack.push(next);
                        on_stack[next] = true;
                        frames.push((next, 0));
                    }
                    Some(seen) if on_stack[next] => low[node] = low[node].min(seen),
                    Some(_) => {}
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if Some(low[node]) == order[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                component.sort_unstable();
                components.push(component);
            }
        }
    }
    components.sort_unstable_by_key(|component| component[0]);
    components
}

/// A shortest cycle through the first (earliest in the file) member of
/// `component`, as a list of nodes that starts and ends with that member.
/// Breadth-first search keeps the reported cycle as short as possible.
fn shortest_cycle(successors: &[Vec<usize>], component: &[usize]) -> Vec<usize> {
    let start = component[0];
    let in_component = |node: usize| component.binary_search(&node).is_ok();
    let mut came_from: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in &successors[node] {
            if next == start {
                let mut cycle = vec![start, node];
                let mut at = node;
                while at != start {
                    at = came_from[&at];
                    cycle.push(at);
                }
                cycle.reverse();
                return cycle;
            }
            if in_component(next) && !came_from.contains_key(&next) {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    // Every member of a component of two or more nodes is on a cycle, so
    // the search always returns above; this is only a safe fallback.
    vec![start, start]
}

/// Why an env variable name may not be set by a pipeline, if it may not.
/// Each of these runs code or changes parsing before (or inside) every
/// step's script: the loader's `LD_*`, bash's startup files (`BASH_ENV`,
/// `ENV`), exported functions (`BASH_FUNC_*`), word splitting (`IFS`), the
/// xtrace prompt (`PS4`, which is expanded) and shell options.
pub(super) fn denied_env_name(key: &str) -> Option<&'static str> {
    if key.starts_with("LD_") {
        Some("`LD_*` variables make the dynamic loader load or look up other code in every program a step starts")
    } else if key.starts_with("BASH_FUNC_") {
        Some("`BASH_FUNC_*` variables define shell functions that bash imports before the script runs")
    } else {
        match key {
            "BASH_ENV" | "ENV" => Some("bash runs the file it names before every step"),
            "IFS" => Some("it changes how bash splits words in every step"),
            "PS4" => Some("bash expands it, running any command substitution in it, on every traced line"),
            "SHELLOPTS" | "BASHOPTS" => Some("it turns shell options on before every step's script runs"),
            _ => None,
        }
    }
}

/// A pipeline may only extend the steps' fixed PATH: the value must hold
/// `$PATH` (or `${PATH}`) once as a whole element, and every other element
/// must be an absolute directory. The agent puts its fixed PATH where
/// `$PATH` stands. Replacing PATH outright failed with a bare "cannot
/// start bash" (`PATH=/nonexistent`) and lets a pipeline shadow system
/// tools without saying so.
pub(super) fn check_path_extension(value: &str) -> Result<(), String> {
    let elements: Vec<&str> = value.split(':').collect();
    let references = elements.iter().filter(|e| **e == "$PATH" || **e == "${PATH}").count();
    if references == 0 {
        return Err(format!("must extend the default PATH, not replace it: {value:?} does not contain `$PATH`"));
    }
    if references > 1 {
        return Err(format!("names `$PATH` more than once in {value:?}"));
    }
    for element in elements.iter().filter(|e| **e != "$PATH" && **e != "${PATH}") {
        if !element.starts_with('/') {
            let shown = if element.is_empty() {
                "an empty element (the current directory)".to_owned()
            } else {
                format!("{element:?}")
            };
            return Err(format!("may only add absolute directories, and {value:?} has {shown}"));
        }
        if element.contains('$') {
            return Err(format!("may only add literal directories, and {element:?} refers to another variable"));
        }
    }
    Ok(())
}
