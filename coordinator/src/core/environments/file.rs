//! The declarative environments file (`drover env apply -f FILE`), read
//! with every problem at file:line:column:
//!
//! ```yaml
//! environments:
//!   - name: staging
//!     selector: {role: web, env: staging}   # agent labels, all required
//!     description: the staging web tier      # optional
//!   - name: production
//!     selector: {role: web, env: prod}
//!     require_approval: true                 # optional; then approvers are required
//!     approvers: [alice, ops-team]           # certificate names
//!     branches: [main, 'release/*']          # optional: only pipelines of these branches deploy
//!     deploy_role: admin                     # optional: the least role that deploys here by hand
//!     windows:                               # optional: when deploys may go ahead
//!       - allow: "0 9 * * 1-5"               # a five-field cron: when the window opens
//!         for: 8h                            # how long it stays open (30m, 8h, 1h30m)
//!         timezone: Europe/Berlin            # the cron's IANA zone; default UTC
//!       - deny: "0 0 24 12 *"                # a deny window wins over every allow
//!         for: 48h
//!         reason: christmas                  # optional, shown to waiting rollouts
//! ```
//!
//! Read with `crate::core::declared` and checked with the rules of the
//! parent module. Repeated keys are reported with both places; so is an
//! environment named twice.

use std::collections::BTreeMap;

use drover_pipeline::yaml::{Kind, Node, Pos, Scalar, ScalarType};

use crate::core::declared::{self, Listing, describe, shown};

use super::{
    DEFAULT_TIMEZONE, MAX_FILE_BYTES, MAX_FILE_ENVIRONMENTS, Spec, Window, WindowKind, approver_problem,
    approvers_problem, branch_problem, branches_size_problem, check, deploy_role_problem, description_problem,
    label_problem, name_problem, parse_for, selector_size_problem, timezone_problem, window_cron_problem,
    window_kind_problem, window_reason_problem, windows_size_problem,
};

/// The keys of one environment, for the error that names them.
const KEYS: &[&str] =
    &["name", "selector", "require_approval", "approvers", "branches", "description", "windows", "deploy_role"];
/// The keys of one deploy window.
const WINDOW_KEYS: &[&str] = &["allow", "deny", "for", "timezone", "reason"];
const EXAMPLE: &str = "environments:\n  - name: staging\n    selector: {role: web, env: staging}";

/// A scalar's text; numbers and booleans as written.
fn text(node: &Node) -> Option<&str> {
    node.scalar_text()
}

/// A boolean, if the node is one.
fn boolean(node: &Node) -> Option<bool> {
    match &node.kind {
        Kind::Scalar(Scalar { ty: ScalarType::Bool, text, .. }) => Some(text == "true"),
        _ => None,
    }
}

/// Reads the environments of file `file_name`: each checked by the rules,
/// in the file's order, or every problem as `file:line:column: message`.
pub fn parse_file(file_name: &str, text: &str) -> Result<Vec<Spec>, Vec<String>> {
    let listing = Listing { key: "environments", noun: "environment", example: EXAMPLE, max: MAX_FILE_ENVIRONMENTS };
    declared::read(file_name, text, (MAX_FILE_BYTES, &listing), |m| m, |file, items| File { file }.environments(items))
}

struct File<'f, 'a> {
    file: &'f mut declared::File<'a>,
}

impl File<'_, '_> {
    fn problem(&mut self, pos: Pos, message: String) {
        self.file.problem(pos, message);
    }

    fn entries<'n>(&mut self, node: &'n Node, what: &str) -> Option<Vec<(&'n str, &'n Node, Pos)>> {
        self.file.entries(node, what)
    }

    fn environments(&mut self, items: &[Node]) -> Vec<Spec> {
        let mut named = BTreeMap::new();
        let mut specs = Vec::new();
        for item in items {
            let before = self.file.problems.len();
            let Some((spec, name_pos)) = self.environment(item) else { continue };
            // The same rules as for flags, as a whole: what the file's
            // checks passed, they pass too, and tidy it the same way.
            let spec = match check(spec) {
                Ok(spec) => spec,
                Err(problems) => {
                    if self.file.problems.len() == before {
                        problems.into_iter().for_each(|p| self.problem(item.pos, p));
                    }
                    continue;
                }
            };
            if self.file.first_time(&mut named, "environment", &spec.name, name_pos) {
                specs.push(spec);
            }
        }
        specs
    }

    /// One environment, and where its name is; `None` when it has no name
    /// (its other problems are said all the same).
    fn environment(&mut self, item: &Node) -> Option<(Spec, Pos)> {
        let entries = self.entries(item, "an environment")?;
        let mut spec = Spec::default();
        let mut name_pos = None;
        let (mut approvers_pos, mut selector_pos) = (item.pos, None);
        for (key, value, pos) in &entries {
            match *key {
                "name" => match text(value) {
                    Some(name) => {
                        if let Some(why) = name_problem(name) {
                            self.problem(value.pos, why);
                        }
                        spec.name = name.to_owned();
                        name_pos = Some(value.pos);
                    }
                    None => self.problem(value.pos, format!("`name` must be a name, found {}", describe(value))),
                },
                "selector" => {
                    selector_pos = Some(value.pos);
                    spec.selector = self.selector(value);
                }
                "require_approval" => match boolean(value) {
                    Some(b) => spec.require_approval = b,
                    None => {
                        let found =
                            text(value).map_or_else(|| describe(value).to_owned(), |t| format!("`{}`", shown(t)));
                        self.problem(value.pos, format!("`require_approval` is true or false, found {found}"));
                    }
                },
                "approvers" => {
                    approvers_pos = value.pos;
                    spec.approvers = self.list(value, "approvers", approver_problem);
                }
                "branches" => {
                    spec.branches = self.list(value, "branches", branch_problem);
                    if let Some(why) = branches_size_problem(spec.branches.len()) {
                        self.problem(value.pos, why);
                    }
                }
                "description" => match text(value) {
                    Some(text) => {
                        if let Some(why) = description_problem(text.trim()) {
                            self.problem(value.pos, why);
                        }
                        spec.description = text.trim().to_owned();
                    }
                    None => self.problem(value.pos, format!("`description` is text, found {}", describe(value))),
                },
                "windows" => spec.windows = self.windows(value),
                "deploy_role" => match text(value) {
                    Some(role) => match deploy_role_problem(role) {
                        Some(why) => self.problem(value.pos, why),
                        None => spec.deploy_role = crate::core::authz::Role::parse(role).ok(),
                    },
                    None => self.problem(value.pos, format!("`deploy_role` is a role, found {}", describe(value))),
                },
                other => self
                    .problem(*pos, format!("unknown key `{}`; an environment has {}", shown(other), KEYS.join(", "))),
            }
        }
        let Some(name_pos) = name_pos else {
            self.problem(item.pos, "this environment has no `name`; give it one, e.g. `name: staging`".to_owned());
            return None;
        };
        if selector_pos.is_none() {
            let why = selector_size_problem(0).unwrap_or_default();
            self.problem(item.pos, format!("environment `{}` has no `selector`: {why}", shown(&spec.name)));
        }
        let mut approvers: Vec<String> = Vec::new();
        for a in std::mem::take(&mut spec.approvers) {
            if !approvers.contains(&a) {
                approvers.push(a);
            }
        }
        if let Some(why) = approvers_problem(&spec.name, spec.require_approval, approvers.len()) {
            self.problem(approvers_pos, why);
        }
        spec.approvers = approvers;
        Some((spec, name_pos))
    }

    /// A selector: a mapping of labels, each checked.
    fn selector(&mut self, node: &Node) -> BTreeMap<String, String> {
        let mut selector = BTreeMap::new();
        let Some(entries) = self.entries(node, "`selector`") else { return selector };
        if let Some(why) = selector_size_problem(entries.len()) {
            self.problem(node.pos, why);
        }
        for (key, value, pos) in entries {
            let Some(value) = text(value).map(str::to_owned) else {
                let found = describe(value);
                self.problem(
                    value.pos,
                    format!("selector label `{}` must have a single value, found {found}", shown(key)),
                );
                continue;
            };
            if let Some(why) = label_problem(key, &value) {
                self.problem(pos, why);
            }
            selector.insert(key.to_owned(), value);
        }
        selector
    }

    /// A list of names, each checked by `problem`.
    fn list(&mut self, node: &Node, what: &str, problem: fn(&str) -> Option<String>) -> Vec<String> {
        let Kind::Seq(items) = &node.kind else {
            let found = describe(node);
            self.problem(node.pos, format!("`{what}` must be a list (`[a, b]`), found {found}"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match text(item) {
                Some(text) => {
                    let text = text.trim();
                    match problem(text) {
                        Some(why) => self.problem(item.pos, why),
                        None => out.push(text.to_owned()),
                    }
                }
                None => self.problem(item.pos, format!("an item of `{what}` must be text, found {}", describe(item))),
            }
        }
        out
    }
}

impl File<'_, '_> {
    /// `windows:`, a list of deploy windows; only those without a problem.
    fn windows(&mut self, node: &Node) -> Vec<Window> {
        let Kind::Seq(items) = &node.kind else {
            let found = describe(node);
            self.problem(node.pos, format!("`windows` must be a list (`- allow: \"0 9 * * 1-5\"`), found {found}"));
            return Vec::new();
        };
        if let Some(why) = windows_size_problem(items.len()) {
            self.problem(node.pos, why);
        }
        items.iter().filter_map(|item| self.window(item)).collect()
    }

    /// One deploy window, each problem at its value; `None` when it has any.
    fn window(&mut self, item: &Node) -> Option<Window> {
        let before = self.file.problems.len();
        let entries = self.entries(item, "a deploy window")?;
        let mut kinds: Vec<(WindowKind, Pos)> = Vec::new();
        let (mut cron, mut for_ms, mut timezone, mut reason) = (None, None, DEFAULT_TIMEZONE.to_owned(), String::new());
        for (key, value, pos) in &entries {
            match *key {
                "allow" | "deny" => {
                    kinds.push((if *key == "allow" { WindowKind::Allow } else { WindowKind::Deny }, *pos));
                    match text(value).map(str::trim) {
                        Some(text) => {
                            if let Some(why) = window_cron_problem(text) {
                                self.problem(value.pos, why);
                            }
                            cron = Some(text.to_owned());
                        }
                        None => self.problem(
                            value.pos,
                            format!("`{key}` is a cron expression (`\"0 9 * * 1-5\"`), found {}", describe(value)),
                        ),
                    }
                }
                "for" => match text(value).map(str::trim).map(parse_for) {
                    Some(Ok(ms)) => for_ms = Some(ms),
                    Some(Err(why)) => self.problem(value.pos, why),
                    None => self.problem(value.pos, format!("`for` is a duration (`8h`), found {}", describe(value))),
                },
                "timezone" => match text(value).map(str::trim) {
                    Some(name) => {
                        if let Some(why) = timezone_problem(name) {
                            self.problem(value.pos, why);
                        }
                        timezone = name.to_owned();
                    }
                    None => self.problem(
                        value.pos,
                        format!("`timezone` is an IANA name (`Europe/Berlin`), found {}", describe(value)),
                    ),
                },
                "reason" => match text(value).map(str::trim) {
                    Some(text) => {
                        if let Some(why) = window_reason_problem(text) {
                            self.problem(value.pos, why);
                        }
                        reason = text.to_owned();
                    }
                    None => self.problem(value.pos, format!("`reason` is text, found {}", describe(value))),
                },
                other => self.problem(
                    *pos,
                    format!("unknown key `{}`; a deploy window has {}", shown(other), WINDOW_KEYS.join(", ")),
                ),
            }
        }
        let has = |kind| kinds.iter().any(|(k, _)| *k == kind);
        if let Some(why) = window_kind_problem(has(WindowKind::Allow), has(WindowKind::Deny)) {
            // Both: at the second; neither: at the window.
            let at = kinds.get(1).map_or(item.pos, |(_, pos)| *pos);
            self.problem(at, why);
        }
        if for_ms.is_none() && !entries.iter().any(|(key, ..)| *key == "for") {
            self.problem(
                item.pos,
                "this deploy window has no `for`; say how long it stays open, e.g. `for: 8h`".into(),
            );
        }
        if self.file.problems.len() > before {
            return None;
        }
        Some(Window { kind: kinds.first()?.0, cron: cron?, for_ms: for_ms?, timezone, reason })
    }
}
