//! A job's `secrets`: the names of secrets (set with `drover secret set`)
//! that the job's steps get as environment variables of the same name.
//!
//! ```yaml
//! deploy:
//!   secrets: [DEPLOY_TOKEN, REGISTRY_PASSWORD]
//! ```
//!
//! A name follows the rules of `env` names (a shell identifier, not
//! `DROVER_*`, none of the variables that run code before a step), and may
//! not also be an `env` variable of the job or the pipeline: one of the two
//! would silently win. Whether each secret exists is checked only when the
//! caller knows which exist ([`crate::Known`]): the coordinator at submit,
//! not `drover validate` offline.

use std::collections::BTreeMap;

use super::Checker;
use super::env::{denied_env_name, is_shell_identifier};
use super::suggest::closest;
use crate::yaml::{Kind, Node, abbreviate};
use crate::{MAX_SECRETS_PER_JOB, RESERVED_ENV_PREFIX};

const EXAMPLE: &str = "e.g. `secrets: [DEPLOY_TOKEN]`";
const NAME_HINT: &str = "a secret becomes the step's environment variable of the same name, so its name must be a \
     shell identifier: letters, digits and `_`, not starting with a digit";

/// Why `name` cannot be a secret's name, without the job's context.
pub(crate) fn secret_name_problem(name: &str) -> Option<String> {
    if !is_shell_identifier(name) {
        Some(format!("invalid secret name {name:?}: {NAME_HINT}"))
    } else if name.starts_with(RESERVED_ENV_PREFIX) {
        Some(format!(
            "secret name {name:?} uses the reserved prefix `{RESERVED_ENV_PREFIX}`, which Drover's own variables use"
        ))
    } else {
        denied_env_name(name).map(|why| format!("secret name {name:?} may not be used: {why}"))
    }
}

impl Checker<'_> {
    /// Reads the `secrets` of job `job`, whose own `env` is `job_env`.
    pub(super) fn secrets(&mut self, node: &Node, job: &str, job_env: &BTreeMap<String, String>) -> Vec<String> {
        let pipeline_env = std::mem::take(&mut self.pipeline_env);
        let out = self.secret_names(node, job, job_env, &pipeline_env);
        self.pipeline_env = pipeline_env;
        out
    }

    fn secret_names(
        &mut self,
        node: &Node,
        job: &str,
        job_env: &BTreeMap<String, String>,
        pipeline_env: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let items: &[Node] = match &node.kind {
            Kind::Seq(items) => items,
            Kind::Null => return Vec::new(),
            _ => {
                self.error(
                    node.pos,
                    format!("`secrets` in job `{job}` must be a list of secret names, found {}", node.describe()),
                    Some(EXAMPLE.to_owned()),
                );
                return Vec::new();
            }
        };
        if items.len() > MAX_SECRETS_PER_JOB {
            self.error(
                items[MAX_SECRETS_PER_JOB].pos,
                format!("job `{job}` lists {} secrets, over the limit of {MAX_SECRETS_PER_JOB}", items.len()),
                Some("split the job, or keep related values in one secret".to_owned()),
            );
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::new();
        for item in items {
            let Some(name) = item.scalar_text().filter(|_| matches!(item.kind, Kind::Scalar(_))) else {
                self.error(
                    item.pos,
                    format!("secret names in job `{job}` must be text, found {}", item.describe()),
                    Some(EXAMPLE.to_owned()),
                );
                continue;
            };
            let shown = abbreviate(name);
            let problem = if !is_shell_identifier(name) {
                Some((format!("invalid secret name `{shown}` in job `{job}`"), NAME_HINT.to_owned()))
            } else if name.starts_with(RESERVED_ENV_PREFIX) {
                Some((
                    format!("secret `{name}` in job `{job}` uses the reserved prefix `{RESERVED_ENV_PREFIX}`"),
                    format!("Drover sets {RESERVED_ENV_PREFIX}* variables itself; store the secret under another name"),
                ))
            } else if let Some(why) = denied_env_name(name) {
                Some((format!("secret `{name}` in job `{job}` may not be set: {why}"), "choose another name".into()))
            } else if out.iter().any(|seen| seen == name) {
                Some((format!("secret `{name}` is listed twice in job `{job}`"), "list each secret once".into()))
            } else if job_env.contains_key(name) || pipeline_env.contains_key(name) {
                let whose = if job_env.contains_key(name) { "the job's" } else { "the pipeline's" };
                Some((
                    format!("`{name}` in job `{job}` is both a secret and a variable in {whose} `env`"),
                    "a step gets a secret as the variable of the same name; remove one of the two".into(),
                ))
            } else if let Some(known) = self.known.secrets.filter(|known| !known.contains(name)) {
                let names: Vec<&str> = known.iter().map(String::as_str).collect();
                let hint = match closest(name, &names, &mut self.suggestion_budget) {
                    Some(close) => format!("did you mean `{close}`? or set it with `drover secret set {name}`"),
                    None => format!("set it first with `drover secret set {name}`; `drover secret ls` lists them"),
                };
                Some((format!("secret `{name}` of job `{job}` does not exist"), hint))
            } else {
                None
            };
            match problem {
                Some((message, hint)) => self.error(item.pos, message, Some(hint)),
                None => out.push(name.to_owned()),
            }
        }
        out
    }
}
