//! Checks a YAML tree against the pipeline format and builds the [`Pipeline`].
//!
//! The checker never stops at the first problem. Each part of the file is
//! checked on its own, and a part that is wrong is left out (or replaced by a
//! harmless default) so that checking can go on. Once every job has been
//! read, the `needs` graph is checked as a whole: missing jobs, then cycles.
//!
//! One `Checker` collects the diagnostics, and its methods are grouped by
//! the part of the file they read:
//!
//! - this file: the entry point [`pipeline`], the top-level keys, and the
//!   helpers every part uses (`Checker::error`, `entries`, `find`,
//!   `unknown_keys`);
//! - `jobs`: the `jobs` mapping and each job's keys (`runs-on`, `timeout`,
//!   `retries`, and `needs` as written);
//! - `steps`: a job's `steps`;
//! - `artifacts`: a job's `artifacts` (paths inside the workspace, `expire`,
//!   `if-no-files`);
//! - `cache`: a job's `cache` (its `key` template, read by
//!   [`crate::cache_key`] and faults pointed at inside the string; `paths`
//!   in the workspace or the step's home; `restore-keys`);
//! - `env`: `env` mappings and what a pipeline may set in them;
//! - `expressions`: the `if:` of jobs and steps, and `${{ }}` in `env`
//!   values and `run` scripts, read by [`crate::expr`] and faults pointed
//!   at inside the string;
//! - `secrets`: a job's `secrets`, and whether they exist when that is known;
//! - `deploy`: a job's `deploy` (environment, `artifact: JOB:PATH`, service
//!   and health check, strategy, hooks read as steps, and the analysis
//!   metrics, whose conditions are expressions over `result`), the job keys
//!   a deploy job may not have, and, once every job is read, the artifact
//!   checked against the job it names;
//! - `triggers`: `on:`, the events that start the pipeline (globs and cron
//!   expressions checked);
//! - `graph`: the `needs` of all jobs together: missing jobs, then cycles;
//! - `suggest`: "did you mean" for misspelled keys, job names and (for
//!   `cache_key`) functions;
//! - `app`: not a part of a pipeline but a file of its own, a desired-state
//!   file ([`crate::app`]), read by a checker without a run
//!   (`Checker::has_run`) with `deploy`'s checks of the service, strategy,
//!   hooks, analysis and durations, and the files of an app's directory
//!   together.
//!
//! A new key joins its mapping's list of allowed keys and is read where that
//! mapping is read: a top-level key (such as the triggers, `on:`) here, a
//! job key in `jobs`, a step key in `steps`. A key with rules of its own gets
//! a file of its own, called from there as `env` is: `matrix`, concurrency
//! groups, approvals and `deploy` from `jobs`; `if:` conditions and `${{ }}`
//! expressions, which may appear in several places, are read in
//! `expressions`, which each of those places calls.

use std::collections::{BTreeMap, HashMap};

use super::yaml::{Kind, Node, Pos, abbreviate};
use super::{Diagnostic, Known, MAX_NAME_LEN, Pipeline};

pub(crate) mod app;
mod approval;
mod artifacts;
mod cache;
mod concurrency;
mod deploy;
mod env;
mod expressions;
mod graph;
mod jobs;
mod matrix;
mod secrets;
mod steps;
pub(crate) mod suggest;
mod triggers;
mod url;

use expressions::ScopeNames;
pub(super) use secrets::secret_name_problem;
use suggest::{SUGGESTION_BUDGET, closest};

/// The most diagnostics we return for one file.
const MAX_DIAGNOSTICS: usize = 100;

const TOP_LEVEL_KEYS: &[&str] = &["name", "on", "env", "jobs", "concurrency"];

/// Checks the document `root` of the file `file`.
pub(super) fn pipeline(file: &str, root: &Node, known: &Known<'_>) -> Result<Pipeline, Vec<Diagnostic>> {
    let mut checker = Checker::new(file, *known, true);
    let pipeline = checker.top_level(root);
    let diagnostics = sorted(checker.diagnostics);
    if diagnostics.is_empty() {
        return Ok(pipeline);
    }
    Err(capped(diagnostics))
}

/// The diagnostics of one file as they are shown: like a compiler's output,
/// top to bottom. A value reached through several aliases can produce the
/// same diagnostic more than once; it is shown once.
fn sorted(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
    diagnostics.dedup();
    diagnostics
}

/// At most [`MAX_DIAGNOSTICS`] of `diagnostics`, and a last one that says
/// how many more there are.
fn capped(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    if diagnostics.len() > MAX_DIAGNOSTICS {
        // Nobody reads thousands of diagnostics, and they have to fit in
        // one RPC reply; point at where the unshown ones start.
        let hidden = diagnostics.len() - MAX_DIAGNOSTICS;
        diagnostics.truncate(MAX_DIAGNOSTICS + 1);
        let last = &mut diagnostics[MAX_DIAGNOSTICS];
        last.message = format!("{hidden} more problems from here on are not shown");
        last.hint = Some("fix the problems above and check again".to_owned());
    }
    diagnostics
}

/// One check of one file. Its methods are spread over this module's files,
/// each reading one part of the format into the pipeline.
struct Checker<'a> {
    file: &'a str,
    /// What the caller knows of the world outside the file.
    known: Known<'a>,
    /// The top-level `env`, once read (jobs check their secrets against it).
    pipeline_env: BTreeMap<String, String>,
    diagnostics: Vec<Diagnostic>,
    /// What is left of [`SUGGESTION_BUDGET`].
    suggestion_budget: usize,
    /// Whether the file's values are read for a run, which `${{ }}` and
    /// `if:` read: true for a pipeline, false for a desired-state file
    /// (`app`), where both are refused.
    has_run: bool,
}

/// One entry of a mapping whose key is a string.
#[derive(Clone, Copy)]
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

impl<'a> Checker<'a> {
    fn new(file: &'a str, known: Known<'a>, has_run: bool) -> Checker<'a> {
        Checker {
            file,
            known,
            pipeline_env: BTreeMap::new(),
            diagnostics: Vec::new(),
            suggestion_budget: SUGGESTION_BUDGET,
            has_run,
        }
    }
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
        let mut pipeline = Pipeline {
            name: String::new(),
            env: BTreeMap::new(),
            jobs: Vec::new(),
            concurrency: None,
            on: Default::default(),
        };
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
        if let Some(entry) = find(&entries, "on") {
            pipeline.on = self.triggers(entry);
        }
        if let Some(entry) = find(&entries, "env") {
            pipeline.env = self.env(entry.value, None);
            self.pipeline_env = pipeline.env.clone();
            let names = ScopeNames::new([], pipeline.env.keys().map(String::as_str), &[]);
            names.with_scope(|scope| {
                self.env_interpolations(entry.value, &pipeline.env, scope, "at the top level");
            });
        }
        if let Some(entry) = find(&entries, "concurrency") {
            let names = ScopeNames::new([], pipeline.env.keys().map(String::as_str), &[]);
            pipeline.concurrency = names.with_scope(|scope| self.concurrency(entry.value, scope, "the pipeline"));
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
        if !is_pipeline_name(name) {
            self.error(
                entry.value_pos(),
                format!("invalid pipeline name `{}`", abbreviate(name)),
                Some(format!("a pipeline name is one line of at most {MAX_NAME_LEN} characters")),
            );
            return None;
        }
        Some(name.to_owned())
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

/// Whether `name` may be a pipeline's `name`: display text, so only kept
/// to one line of 1 to [`MAX_NAME_LEN`] characters, not all spaces.
fn is_pipeline_name(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

fn find<'e, 'n>(entries: &'e [Entry<'n>], key: &str) -> Option<&'e Entry<'n>> {
    entries.iter().find(|entry| entry.key == key)
}
