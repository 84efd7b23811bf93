//! Expressions wherever they are written: the `if:` of a job or a step, and
//! `${{ }}` in `env` values and `run` scripts. [`crate::expr`] reads them;
//! a problem is reported at its very character in the file when the string
//! is written there as it is (on one line, quoted or not, or as a literal
//! block), else where the string starts, as `cache` does for cache keys.
//!
//! What the names in an expression may refer to (the [`Scope`]) comes from
//! the job: its `needs`, the variables of the top-level `env` and its own,
//! its secrets (only to say that expressions cannot read them), and the
//! keys of its matrix.
//!
//! A desired-state file (`app`) has no run to read: there, `${{ }}` and
//! `if:` are refused wherever the pipeline's rules would read them
//! (`Checker::has_run`), each pointed at.

use std::collections::BTreeMap;

use super::{Checker, Entry};
use crate::expr::{self, Expr, Scope};
use crate::yaml::{Kind, Node};

const CONDITION_EXAMPLE: &str = "e.g. `if: drover.branch == 'main'`, or `if: failure()`";
/// Why `${{ }}` and `if:` cannot be read in a desired-state file.
const NO_RUN: &str = "a desired-state file is not a pipeline, and there is no run to read it against";

/// The names a job's expressions may use, owned, so that a [`Scope`] can
/// borrow them while the checker is borrowed mutably.
pub(super) struct ScopeNames {
    needs: Vec<String>,
    env: Vec<String>,
    secrets: Vec<String>,
    matrix: Vec<String>,
}

impl ScopeNames {
    /// The names of a job with these `needs`, variables (the top-level
    /// `env`'s and its own) and secrets.
    pub(super) fn new<'a>(
        needs: impl IntoIterator<Item = &'a str>,
        env: impl IntoIterator<Item = &'a str>,
        secrets: &[String],
    ) -> ScopeNames {
        let mut env: Vec<String> = env.into_iter().map(str::to_owned).collect();
        env.sort();
        env.dedup();
        ScopeNames {
            needs: needs.into_iter().map(str::to_owned).collect(),
            env,
            secrets: secrets.to_vec(),
            matrix: Vec::new(),
        }
    }

    /// The same names, with the keys of the job's matrix.
    pub(super) fn with_matrix(mut self, keys: &[String]) -> ScopeNames {
        self.matrix = keys.to_vec();
        self
    }

    /// Calls `f` with the scope these names make, for an `if:`.
    pub(super) fn with_scope<R>(&self, f: impl FnOnce(&Scope<'_>) -> R) -> R {
        fn refs(names: &[String]) -> Vec<&str> {
            names.iter().map(String::as_str).collect()
        }
        let (needs, env, secrets, matrix) =
            (refs(&self.needs), refs(&self.env), refs(&self.secrets), refs(&self.matrix));
        f(&Scope { needs: &needs, env: &env, secrets: &secrets, matrix: &matrix, allow_status: true, result: false })
    }
}

impl Checker<'_> {
    /// Reads the `if:` in `entry`; `subject` names it in messages, e.g.
    /// "condition of job `a`".
    pub(super) fn condition(&mut self, entry: &Entry<'_>, scope: &Scope<'_>, subject: &str) -> Option<Expr> {
        let node = entry.value;
        if !self.has_run {
            // Hooks are the only steps of a desired-state file, and the
            // agent runs a hook's steps in order until one fails.
            self.error(
                entry.key_pos,
                format!("{subject} cannot be read: {NO_RUN}"),
                Some("leave `if:` out: a hook's steps run in order, and the first that fails ends the hook".to_owned()),
            );
            return None;
        }
        let text = match &node.kind {
            Kind::Scalar(scalar) => &scalar.text,
            Kind::Null => {
                self.error(entry.key_pos, format!("{subject} is empty"), Some(CONDITION_EXAMPLE.to_owned()));
                return None;
            }
            _ => {
                self.error(
                    node.pos,
                    format!("{subject} must be an expression, found {}", node.describe()),
                    Some(CONDITION_EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        match expr::condition_with_budget(text, scope, &mut self.suggestion_budget) {
            Ok(expr) => Some(expr),
            Err(err) => {
                self.error(node.pos_at(err.offset), format!("{subject}: {}", err.message), err.hint);
                None
            }
        }
    }

    /// Checks the `${{ }}` in the string `node`, if it is one; `subject`
    /// names it in messages, e.g. "`run` in step 1 of job `a`".
    pub(super) fn interpolated(&mut self, node: &Node, scope: &Scope<'_>, subject: &str) {
        let Some(text) = node.scalar_text().filter(|text| text.contains("${{")) else {
            return;
        };
        if !self.has_run {
            self.no_run(node, text, subject);
            return;
        }
        if let Err(err) = expr::interpolations_with_budget(text, scope, &mut self.suggestion_budget) {
            self.error(node.pos_at(err.offset), format!("{subject}: {}", err.message), err.hint);
        }
    }

    /// Reports the first `${{` in `text`, the string `node`, where there is
    /// no run to read it; `subject` names it in messages.
    pub(super) fn no_run(&mut self, node: &Node, text: &str, subject: &str) {
        let offset = text.find("${{").map_or(0, |at| text[..at].chars().count());
        self.error(
            node.pos_at(offset),
            format!("{subject} has `${{{{ }}}}`, but {NO_RUN}"),
            Some(
                "write the value itself; a service's command and its hooks read their environment as `$NAME`"
                    .to_owned(),
            ),
        );
    }

    /// Checks the `${{ }}` in the values of the `env` mapping `env` that
    /// were kept (`kept`: the others were reported already); `context` says
    /// where the mapping is, e.g. "in job `a`".
    pub(super) fn env_interpolations(
        &mut self,
        env: &Node,
        kept: &BTreeMap<String, String>,
        scope: &Scope<'_>,
        context: &str,
    ) {
        let Kind::Map(map) = &env.kind else {
            return;
        };
        let mut seen = std::collections::HashSet::new();
        for (key, value) in map {
            // A repeated key was reported already; its first value is the one kept.
            if let Some(name) = key.scalar_text().filter(|name| kept.contains_key(*name) && seen.insert(*name)) {
                self.interpolated(value, scope, &format!("env variable `{name}` {context}"));
            }
        }
    }
}
