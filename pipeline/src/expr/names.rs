//! What the contexts in an expression name, checked against the [`Scope`]:
//! `drover`'s fields, the variables `env` may read, the matrix, and the
//! jobs in `needs`; or, in an analysis metric's condition, `result` and
//! nothing else. A name that is not there is refused with what is (or a
//! "did you mean").

use super::tree::{ContextRef, Function};
use super::{DroverField, ExprError, Scope};
use crate::check::suggest::{closest, list_some};
use crate::yaml::abbreviate;

const CONTEXTS: [&str; 4] = ["drover", "env", "matrix", "needs"];
/// What an analysis metric's condition reads.
const RESULT: &str = "result";
const RESULT_HINT: &str = "a metric's `success` and `failure` read only `result`, the measured value, e.g. \
     `result < 0.01`";

/// The scope the parser checks against (`None`: names are not checked),
/// and its budget for suggestions.
pub(super) struct Names<'s, 'b> {
    pub(super) scope: Option<&'s Scope<'s>>,
    pub(super) budget: &'b mut usize,
}

impl Names<'_, '_> {
    /// What `root` and `keys` name, checked against the scope.
    pub(super) fn resolve(
        &mut self,
        root: &str,
        offset: usize,
        keys: &[(String, usize)],
    ) -> Result<ContextRef, ExprError> {
        if root == RESULT {
            return self.result(offset, keys);
        }
        if self.scope.is_some_and(|scope| scope.result) {
            return Err(self.not_in_analysis(root, offset));
        }
        if !CONTEXTS.contains(&root) {
            return Err(self.unknown_context(root, offset));
        }
        let Some((key, at)) = keys.first().map(|(key, at)| (key.as_str(), *at)) else {
            let hint = match root {
                "drover" => "its fields: drover.branch, drover.event, drover.tag, drover.commit",
                "needs" => "a needed job's result is `needs.JOB.result`",
                _ => "name one of its values, as in `env.NAME`",
            };
            return Err(ExprError::new(offset, format!("`{root}` alone is not a value"), Some(hint.to_owned())));
        };
        let (reference, fields) = match root {
            "drover" => (ContextRef::Drover(self.drover_field(key, at)?), 1),
            "env" => {
                self.check_env(key, at)?;
                (ContextRef::Env(key.to_owned()), 1)
            }
            "matrix" => {
                self.check_matrix(key, at)?;
                (ContextRef::Matrix(key.to_owned()), 1)
            }
            _ => {
                self.check_need(key, at, keys.get(1).map(|(next, _)| next.as_str()))?;
                let job = abbreviate(key);
                match keys.get(1) {
                    Some((field, _)) if field == "result" => {}
                    Some((field, at)) => {
                        return Err(ExprError::new(
                            *at,
                            format!("`needs.{job}` has no field `{}`", abbreviate(field)),
                            Some(format!("a needed job has one field, `result`: `needs.{job}.result`")),
                        ));
                    }
                    None => {
                        return Err(ExprError::new(
                            at,
                            format!("`needs.{job}` alone is not a value"),
                            Some(format!("its result is `needs.{job}.result`")),
                        ));
                    }
                }
                (ContextRef::NeedResult(key.to_owned()), 2)
            }
        };
        if let Some((extra, at)) = keys.get(fields) {
            let path: Vec<&str> = keys[..fields].iter().map(|(k, _)| k.as_str()).collect();
            let path = abbreviate(&format!("{root}.{}", path.join(".")));
            let message = format!("`{path}` has no field `{}`", abbreviate(extra));
            return Err(ExprError::new(*at, message, Some("its value is a string".to_owned())));
        }
        Ok(reference)
    }

    /// `result`, where the scope allows it (or names are not checked).
    fn result(&mut self, offset: usize, keys: &[(String, usize)]) -> Result<ContextRef, ExprError> {
        if self.scope.is_some_and(|scope| !scope.result) {
            return Err(ExprError::new(
                offset,
                "`result` is allowed only in the `success` and `failure` of an analysis metric",
                Some(
                    "`result` is the value a metric of a deploy's `analysis:` measured; here the contexts are \
                     drover, env, matrix and needs"
                        .to_owned(),
                ),
            ));
        }
        if let Some((key, at)) = keys.first() {
            return Err(ExprError::new(
                *at,
                format!("`result` has no field `{}`", abbreviate(key)),
                Some(
                    "`result` is the measured value itself: a number, a string, a boolean or null (with \
                     `json_path`, the provider picks the value out of the answer)"
                        .to_owned(),
                ),
            ));
        }
        Ok(ContextRef::Result)
    }

    /// The error for the context `root` in an analysis metric's condition,
    /// which reads only `result`.
    fn not_in_analysis(&mut self, root: &str, offset: usize) -> ExprError {
        let shown = abbreviate(root);
        if CONTEXTS.contains(&root) {
            return ExprError::new(
                offset,
                format!("`{shown}` cannot be read in an analysis metric's condition"),
                Some(format!("{RESULT_HINT}: a measurement is not a run")),
            );
        }
        let hint = if Function::ALL.iter().any(|(name, _, _)| *name == root) {
            format!("`{root}` is a function: call it, `{root}()`")
        } else {
            match closest(root, &[RESULT, "true", "false", "null"], self.budget) {
                Some(close) => format!("did you mean `{close}`? {RESULT_HINT}"),
                None => format!("{RESULT_HINT}; text is written in single quotes, e.g. 'ok'"),
            }
        };
        ExprError::new(offset, format!("unknown context `{shown}`"), Some(hint))
    }

    fn drover_field(&mut self, field: &str, at: usize) -> Result<DroverField, ExprError> {
        if let Some((_, field)) = DroverField::ALL.iter().find(|(name, _)| *name == field) {
            return Ok(*field);
        }
        let names: Vec<&str> = DroverField::ALL.iter().map(|(name, _)| *name).collect();
        let list = "its fields are branch, event, tag and commit";
        let hint = match closest(field, &names, self.budget) {
            Some(close) => format!("did you mean `drover.{close}`? {list}"),
            None => list.to_owned(),
        };
        Err(ExprError::new(at, format!("`drover` has no field `{}`", abbreviate(field)), Some(hint)))
    }

    fn unknown_context(&mut self, root: &str, offset: usize) -> ExprError {
        let list = "the contexts are drover, env, matrix and needs";
        let hint = if root == "github" {
            "Drover's own context is `drover`: drover.branch, drover.event, drover.tag, drover.commit".to_owned()
        } else if Function::ALL.iter().any(|(name, _, _)| *name == root) {
            format!("`{root}` is a function: call it, `{root}()`")
        } else {
            let candidates = [CONTEXTS.as_slice(), &["true", "false", "null"]].concat();
            match closest(root, &candidates, self.budget) {
                Some(close) => format!("did you mean `{close}`? {list}"),
                None => format!("{list}; text is written in single quotes, e.g. 'main'"),
            }
        };
        ExprError::new(offset, format!("unknown context `{}`", abbreviate(root)), Some(hint))
    }

    fn check_env(&mut self, name: &str, at: usize) -> Result<(), ExprError> {
        let Some(scope) = self.scope.filter(|scope| !scope.env.contains(&name)) else {
            return Ok(());
        };
        let shown = abbreviate(name);
        if scope.secrets.contains(&name) {
            return Err(ExprError::new(
                at,
                format!("`{shown}` is a secret, and expressions cannot read secrets"),
                Some(format!("a step reads it as `${shown}` in its `run`")),
            ));
        }
        let hint = match closest(name, scope.env, self.budget) {
            Some(close) => format!("did you mean `env.{close}`?"),
            None if scope.env.is_empty() => {
                "`env.NAME` reads the variables the pipeline's `env` and the job's `env` set, and there are none; \
                 a step reads other variables as `$NAME`"
                    .to_owned()
            }
            None => format!(
                "`env.NAME` reads the variables the pipeline's `env` and the job's `env` set: {}; a step reads \
                 others as `$NAME`",
                list_some(scope.env)
            ),
        };
        Err(ExprError::new(at, format!("`env.{shown}` is not set by the pipeline or the job"), Some(hint)))
    }

    fn check_matrix(&mut self, name: &str, at: usize) -> Result<(), ExprError> {
        let Some(scope) = self.scope.filter(|scope| !scope.matrix.contains(&name)) else {
            return Ok(());
        };
        let shown = abbreviate(name);
        if scope.matrix.is_empty() {
            return Err(ExprError::new(
                at,
                format!("`matrix.{shown}` names nothing: the job has no matrix"),
                Some("`matrix.NAME` reads a value of the job's `matrix:`".to_owned()),
            ));
        }
        let hint = match closest(name, scope.matrix, self.budget) {
            Some(close) => format!("did you mean `matrix.{close}`?"),
            None => format!("the job's matrix has {}", list_some(scope.matrix)),
        };
        Err(ExprError::new(at, format!("the job's matrix has no `{shown}`"), Some(hint)))
    }

    /// Checks that `job` is needed; `next` is the key written after it.
    fn check_need(&mut self, job: &str, at: usize, next: Option<&str>) -> Result<(), ExprError> {
        let Some(scope) = self.scope.filter(|scope| !scope.needs.contains(&job)) else {
            return Ok(());
        };
        let shown = abbreviate(job);
        let add = format!("to read its result, add `{shown}` to the job's `needs`");
        // `needs.deploy.prod.result` for the job `deploy.prod`.
        let dotted = next.map(|next| format!("{job}.{next}")).filter(|name| scope.needs.contains(&name.as_str()));
        let hint = if let Some(dotted) = dotted {
            format!("a job name with `.` is written in brackets: `needs['{}'].result`", abbreviate(&dotted))
        } else if let Some(close) = closest(job, scope.needs, self.budget) {
            format!("did you mean `{close}`? {add}")
        } else if scope.needs.is_empty() {
            format!("`needs.JOB.result` reads the jobs in `needs`, and there are none here; {add}")
        } else {
            format!("the job needs {}; {add}", list_some(scope.needs))
        };
        Err(ExprError::new(at, format!("job `{shown}` is not in `needs`"), Some(hint)))
    }
}
