//! The rules of environments, apart from the store and the gRPC edge
//! (`crate::environments`, `crate::api::environments`): what an
//! environment's definition may be ([`check`] and the `*_problem`
//! functions it is made of, each naming the limit and the fix), which
//! agents are its nodes ([`selects`], [`nodes`]: those whose
//! coordinator-owned labels, the labels in their certificates, include
//! every label of its selector), and the declarative file
//! (`environments/file.rs`, [`parse_file`]: every problem at
//! file:line:column). Recurring deploy windows, when deploys may go
//! ahead, are `environments/windows.rs` ([`closed`]). Pure: the agents and
//! the time are handed in.
//!
//! An environment may require approval and may admit only pipelines from
//! some branches ([`Spec::admits`]); both are stored now for the deploy
//! jobs that come next (issue 15). Services per node come with the deploy
//! executor.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::fleet::AgentInfo;

mod file;
#[cfg(test)]
mod tests;
mod windows;

pub use file::parse_file;
pub use windows::{
    Closed, DEFAULT_TIMEZONE, MAX_REASON_LEN, MAX_REOPEN_STEPS, MAX_WINDOW_MS, MAX_WINDOWS, MIN_WINDOW_MS, Window,
    WindowKind, closed, hours, parse_for, timezone_problem, window_cron_problem, window_for_problem,
    window_kind_problem, window_problems, window_reason_problem, windows_size_problem,
};

/// The most environments a cluster may define.
pub const MAX_ENVIRONMENTS: usize = 200;
/// The most environments one file may define: an apply is one store
/// transaction, and at most 64 of the largest definitions fit in one of
/// etcd's (128 operations, 1.5 MiB).
pub const MAX_FILE_ENVIRONMENTS: usize = 64;
/// The longest environment name (`[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`).
pub const MAX_NAME_LEN: usize = 63;
/// The most labels one selector may have.
pub const MAX_SELECTOR_LABELS: usize = 16;
/// The most approvers one environment may name, as one job may.
pub const MAX_APPROVERS: usize = drover_pipeline::MAX_APPROVERS;
/// The longest approver, a certificate's name.
pub const MAX_APPROVER_LEN: usize = 64;
/// The most branch patterns one environment may have.
pub const MAX_BRANCH_PATTERNS: usize = drover_pipeline::triggers::MAX_PATTERNS;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 200;
/// The largest environments file, in bytes.
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// An environment as defined, by `drover env create` or a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    /// The labels every node must have.
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub require_approval: bool,
    /// Certificate names who may approve a deploy to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Branch globs whose pipelines may deploy to it; none: every branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// When deploys may go ahead ([`closed`]); none: always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// The least role that may deploy to it by hand (`drover run` of a
    /// pipeline that deploys here, rollout actions, rollbacks, app syncs);
    /// none: any operator. Runs started by a repository's triggers deploy
    /// as the repository, which an admin registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_role: Option<crate::core::authz::Role>,
}

/// Why `role` cannot be an environment's deploy role, if it cannot.
pub fn deploy_role_problem(role: &str) -> Option<String> {
    match crate::core::authz::Role::parse(role) {
        Ok(crate::core::authz::Role::Viewer) => {
            Some("`deploy_role` viewer would let nobody less deploy; use operator or admin".to_owned())
        }
        Ok(_) => None,
        Err(why) => Some(format!("`deploy_role`: {why}")),
    }
}

/// Why `name` cannot name an environment, if it cannot: like a job name.
pub fn name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    (!ok).then(|| {
        format!(
            "invalid environment name {name:?}: use letters, digits, `_`, `.` and `-`, starting with a letter or a \
             digit, at most {MAX_NAME_LEN} characters (e.g. `staging`, `prod-eu`)"
        )
    })
}

/// Why a selector of `count` labels is refused, if it is.
pub fn selector_size_problem(count: usize) -> Option<String> {
    if count == 0 {
        return Some(
            "the selector is empty: an environment selects its nodes by the labels in their agents' certificates; \
             give at least one, e.g. `--selector role=web,env=staging` (or `selector: {role: web}` in a file)"
                .to_owned(),
        );
    }
    (count > MAX_SELECTOR_LABELS).then(|| {
        format!(
            "the selector has {count} labels, over the limit of {MAX_SELECTOR_LABELS}; give the agents one label \
             that says what they are for (`drover certs issue-agent --labels role=web`) and select by it"
        )
    })
}

/// Why `key=value` cannot be a selector label, if it cannot: the agent
/// label grammar (`drover_client::labels`), one label.
pub fn label_problem(key: &str, value: &str) -> Option<String> {
    let pair = format!("{key}={value}");
    let parsed = drover_client::labels::parse(&pair);
    let alone = parsed.as_ref().is_ok_and(|l| l.len() == 1 && l.get(key).map(String::as_str) == Some(value));
    if alone {
        return None;
    }
    let why = match parsed {
        // Parsed as text, a `,` would split the label in two.
        _ if key.contains(',') || value.contains(',') => format!("label {pair:?} contains `,`"),
        Err(why) => why,
        Ok(_) => format!("label {pair:?} has an empty key or value, or spaces around them"),
    };
    Some(format!(
        "selector label {pair:?} cannot match an agent label ({why}); a label is KEY=VALUE without `,`, `=`, spaces \
         around them or control characters, at most {} bytes each, as `drover certs issue-agent --labels` takes them",
        drover_client::labels::MAX_LABEL_LEN
    ))
}

/// Why `name` cannot be an approver, if it cannot: a certificate's name.
pub fn approver_problem(name: &str) -> Option<String> {
    let ok = (1..=MAX_APPROVER_LEN).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (!ok).then(|| {
        format!(
            "invalid approver {name:?}: an approver is the name of the certificate that runs `drover approve`: 1 to \
             {MAX_APPROVER_LEN} letters, digits, `.`, `_` or `-` (e.g. `alice`, `ops-team`)"
        )
    })
}

/// Why the approvers are refused as a whole, if they are: too many, or
/// none when approval is required.
pub fn approvers_problem(name: &str, require_approval: bool, count: usize) -> Option<String> {
    if require_approval && count == 0 {
        return Some(format!(
            "environment {name:?} requires approval but names no approvers, so nobody could ever approve a deploy \
             to it; name who may: `--approvers alice,bob` (or `approvers: [alice, bob]` in a file)"
        ));
    }
    (count > MAX_APPROVERS).then(|| {
        format!(
            "{count} approvers, over the limit of {MAX_APPROVERS}; name a team's certificate instead of its members"
        )
    })
}

/// Why a branch pattern is refused, if it is.
pub fn branch_problem(pattern: &str) -> Option<String> {
    drover_pipeline::triggers::pattern_problem(pattern).map(|why| {
        format!(
            "branch pattern {pattern:?} does not parse: {why}; patterns are globs where `*` matches within a path \
             segment and `**` across them (`main`, `release/*`, `hotfix/**`)"
        )
    })
}

/// Why `count` branch patterns are too many, if they are.
pub fn branches_size_problem(count: usize) -> Option<String> {
    (count > MAX_BRANCH_PATTERNS).then(|| {
        format!(
            "{count} branch patterns, over the limit of {MAX_BRANCH_PATTERNS}; use globs (`release/*`) to cover several"
        )
    })
}

/// Why a description is refused, if it is.
pub fn description_problem(text: &str) -> Option<String> {
    if text.chars().count() > MAX_DESCRIPTION_LEN {
        return Some(format!(
            "the description has {} characters, over the limit of {MAX_DESCRIPTION_LEN}; keep it to a line",
            text.chars().count()
        ));
    }
    text.chars()
        .any(char::is_control)
        .then(|| "the description has control characters (a line break?); write it on one line".to_owned())
}

/// Why there would be too many environments, if there would.
pub fn count_problem(count: usize) -> Option<String> {
    (count > MAX_ENVIRONMENTS).then(|| {
        format!(
            "that makes {count} environments, over the limit of {MAX_ENVIRONMENTS}; remove unused ones with \
             `drover env rm NAME`"
        )
    })
}

/// `spec` tidied (approvers once each, in order; branches trimmed; windows
/// trimmed, UTC when they name no zone) and
/// checked: every problem, each with its fix, or the environment to store.
pub fn check(mut spec: Spec) -> Result<Spec, Vec<String>> {
    let mut problems = Vec::new();
    problems.extend(name_problem(&spec.name));
    problems.extend(selector_size_problem(spec.selector.len()));
    problems.extend(spec.selector.iter().filter_map(|(k, v)| label_problem(k, v)));
    let mut approvers: Vec<String> = Vec::new();
    for a in spec.approvers.iter().map(|a| a.trim()) {
        match approver_problem(a) {
            Some(why) => problems.push(why),
            None if !approvers.iter().any(|seen| seen == a) => approvers.push(a.to_owned()),
            None => {}
        }
    }
    problems.extend(approvers_problem(&spec.name, spec.require_approval, approvers.len()));
    spec.approvers = approvers;
    spec.branches = spec.branches.iter().map(|b| b.trim().to_owned()).collect();
    problems.extend(branches_size_problem(spec.branches.len()));
    problems.extend(spec.branches.iter().filter_map(|b| branch_problem(b)));
    spec.description = spec.description.trim().to_owned();
    problems.extend(description_problem(&spec.description));
    spec.windows = spec.windows.into_iter().map(windows::tidy).collect();
    problems.extend(windows_size_problem(spec.windows.len()));
    problems.extend(spec.windows.iter().flat_map(window_problems));
    if problems.is_empty() { Ok(spec) } else { Err(problems) }
}

impl Spec {
    /// Whether a pipeline run from `branch` may deploy here: any, when the
    /// environment names no branches; otherwise only a branch one of its
    /// patterns takes (a run from no known branch, such as a file run by
    /// hand, is not one).
    pub fn admits(&self, branch: Option<&str>) -> bool {
        self.branches.is_empty()
            || branch.is_some_and(|b| self.branches.iter().any(|p| drover_pipeline::triggers::matches(p, b)))
    }

    /// Why deploys here must wait at `now_ms` ([`closed`], naming the
    /// environment), or `None` when they may go ahead.
    pub fn closed(&self, now_ms: u64) -> Option<Closed> {
        windows::judge(Some(&self.name), &self.windows, now_ms)
    }
}

/// Whether an agent with `labels` is a node of an environment with
/// `selector`: it has every label of the selector, with the same value.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A node of an environment, as `drover envs` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// Its agent's labels (from its certificate), which waves select by.
    pub labels: BTreeMap<String, String>,
    pub connected: bool,
    pub draining: bool,
    /// Why it takes no new work, or empty.
    pub unready: String,
    pub last_seen_ms: u64,
}

impl Node {
    /// Connected, not draining, and ready for work.
    pub fn ready(&self) -> bool {
        self.connected && !self.draining && self.unready.is_empty()
    }
}

/// The nodes of an environment with `selector` among the agents the leader
/// knows (connected or away), by name.
pub fn nodes(selector: &BTreeMap<String, String>, agents: &[AgentInfo]) -> Vec<Node> {
    let mut nodes: Vec<Node> = agents
        .iter()
        .filter(|a| selects(selector, &a.labels))
        .map(|a| Node {
            name: a.name.clone(),
            labels: a.labels.clone(),
            connected: a.connected,
            draining: a.draining,
            unready: a.unready.clone(),
            last_seen_ms: a.last_seen_ms,
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}
