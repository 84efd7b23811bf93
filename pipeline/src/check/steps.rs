//! A job's `steps`: a list of at most `MAX_STEPS_PER_JOB` mappings, each
//! with a shell command in `run` (whose `${{ }}` are checked), an optional
//! `name` and an optional `if:`, read in the job's scope (`expressions`).

use super::{Checker, Entry, find};
use crate::expr::Scope;
use crate::yaml::{Kind, Node};
use crate::{MAX_STEPS_PER_JOB, StepSpec};

const STEP_KEYS: &[&str] = &["name", "run", "if"];

impl Checker<'_> {
    /// Reads the steps of `owner` ("job `a`", "job `d` hook `before`"),
    /// whose expressions may name what `scope` has.
    pub(super) fn steps(&mut self, steps_entry: &Entry<'_>, owner: &str, scope: &Scope<'_>) -> Vec<StepSpec> {
        let no_steps_hint = || Some("add at least one step, e.g. `steps: [{run: make}]`".to_owned());
        let steps = steps_entry.value;
        let items = match &steps.kind {
            Kind::Seq(items) if !items.is_empty() => items,
            Kind::Seq(_) => {
                self.error(steps.pos, format!("{owner} has no steps"), no_steps_hint());
                return Vec::new();
            }
            Kind::Null => {
                self.error(steps_entry.key_pos, format!("{owner} has no steps"), no_steps_hint());
                return Vec::new();
            }
            _ => {
                self.error(
                    steps.pos,
                    format!("`steps` in {owner} must be a list of steps, found {}", steps.describe()),
                    Some("e.g. `steps: [{run: make}]`, or one `- run: <command>` per line".to_owned()),
                );
                return Vec::new();
            }
        };
        if items.len() > MAX_STEPS_PER_JOB {
            self.error(
                items[MAX_STEPS_PER_JOB].pos,
                format!("{owner} has {} steps, over the limit of {MAX_STEPS_PER_JOB}", items.len()),
                Some("split the job into several jobs, or move commands into a script".to_owned()),
            );
        }
        items.iter().enumerate().filter_map(|(i, step)| self.step(step, i + 1, owner, scope)).collect()
    }

    fn step(&mut self, step: &Node, number: usize, owner: &str, scope: &Scope<'_>) -> Option<StepSpec> {
        let context = format!("in step {number} of {owner}");
        let map = match &step.kind {
            Kind::Map(map) => map,
            _ => {
                let example = step.scalar_text().map_or("make", abbreviate_ref);
                self.error(
                    step.pos,
                    format!("step {number} of {owner} must be a mapping with `run`, found {}", step.describe()),
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
        let condition = find(&entries, "if")
            .and_then(|entry| self.condition(entry, scope, &format!("condition of step {number} of {owner}")));
        let Some(run_entry) = find(&entries, "run") else {
            self.error(
                step.pos,
                format!("step {number} of {owner} has no `run` command"),
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
            Some(text) => {
                self.interpolated(run, scope, &format!("`run` {context}"));
                Some(StepSpec { name, run: text.to_owned(), condition })
            }
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
}

fn abbreviate_ref(text: &str) -> &str {
    // Only used for examples in hints, where a long command would drown the
    // advice; fall back to a generic command then.
    if text.len() <= 40 && !text.contains('\n') { text } else { "<command>" }
}
