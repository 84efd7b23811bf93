//! The declarative apps file (`drover app apply -f FILE`), read with every
//! problem at file:line:column:
//!
//! ```yaml
//! apps:
//!   - name: web
//!     repo: https://git.example.com/desired.git
//!     path: deploy/web          # the directory of its desired-state files
//!     env: staging
//!     revision: main            # optional; the default branch when left out
//!     poll: 30s                 # optional
//!     auto_sync: true           # optional, as the flags of `drover app create`
//!     self_heal: true
//!     prune: false
//!     detect_only: false
//!     depends_on: [db]
//!     sync_timeout: 30m
//!     deploy_key: DEPLOY_KEY    # optional, for an ssh URL: a secret's name
//!     known_hosts: |            # with it: the server's host keys
//!       git.example.com ssh-ed25519 AAAA...
//!     deploy_role: admin        # optional: the least role that syncs it by hand
//! ```
//!
//! Each app is checked by the rules of `drover app create` (the parent
//! module), a problem placed at the value it is about; one mistake does
//! not hide the next. Only a YAML syntax error stops early.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_pipeline::yaml::{Kind, Node, Pos, Scalar, ScalarType};

use crate::core::declared::{self, Listing, describe, shown};

use super::{AppSpec, DEFAULT_POLL, depends_problem, name_problem, path_problem, poll_problem, revision_problem};

/// The largest apps file, in bytes.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// The most apps one file holds: it is applied in one store transaction.
pub const MAX_FILE_APPS: usize = 100;

/// The keys of one app, for the error that names them.
const KEYS: &[&str] = &[
    "name",
    "repo",
    "path",
    "env",
    "revision",
    "poll",
    "auto_sync",
    "self_heal",
    "prune",
    "detect_only",
    "depends_on",
    "sync_timeout",
    "deploy_key",
    "known_hosts",
    "deploy_role",
];
const EXAMPLE: &str =
    "apps:\n  - name: web\n    repo: https://git.example.com/desired.git\n    path: deploy\n    env: staging";

/// The flags the shared rules name, as this file's keys.
const FLAGS: &[(&str, &str)] = &[
    ("--sync-timeout", "`sync_timeout`"),
    ("--deploy-key", "`deploy_key`"),
    ("--known-hosts", "`known_hosts`"),
    ("--depends-on", "`depends_on`"),
    ("--detect-only", "`detect_only`"),
    ("--auto-sync", "`auto_sync`"),
    ("--self-heal", "`self_heal`"),
    ("--revision", "`revision`"),
    ("--path", "`path`"),
    ("--poll", "`poll`"),
    ("--url", "`repo`"),
    ("--env", "`env`"),
];

/// A message of the shared rules, speaking of this file's keys.
fn keyed(message: String) -> String {
    FLAGS.iter().fold(message, |m, (flag, key)| m.replace(flag, key))
}

/// Reads the apps of file `file_name`, each checked, in the file's order,
/// or every problem as `file:line:column: message`.
pub fn parse_file(file_name: &str, text: &str) -> Result<Vec<AppSpec>, Vec<String>> {
    let listing = Listing { key: "apps", noun: "app", example: EXAMPLE, max: MAX_FILE_APPS };
    declared::read(file_name, text, (MAX_FILE_BYTES, &listing), keyed, |file, items| File { file }.apps(items))
}

struct File<'f, 'a> {
    file: &'f mut declared::File<'a>,
}

impl File<'_, '_> {
    fn problem(&mut self, pos: Pos, message: String) {
        self.file.problem(pos, message);
    }

    fn apps(&mut self, items: &[Node]) -> Vec<AppSpec> {
        let mut named = BTreeMap::new();
        let mut specs = Vec::new();
        for item in items {
            let before = self.file.problems.len();
            let Some((spec, name_pos)) = self.app(item) else { continue };
            // The rules of `drover app create` as a whole, once each value
            // passed its own.
            if self.file.problems.len() == before
                && let Some(why) = super::spec_problem(&spec)
            {
                self.problem(item.pos, format!("app `{}`: {why}", shown(&spec.name)));
                continue;
            }
            if self.file.first_time(&mut named, "app", &spec.name, name_pos) {
                specs.push(spec);
            }
        }
        specs
    }

    /// One app, and where its name is; `None` when it has no name (its
    /// other problems are said all the same).
    fn app(&mut self, item: &Node) -> Option<(AppSpec, Pos)> {
        let entries = self.file.entries(item, "an app")?;
        let mut spec = AppSpec {
            name: String::new(),
            repo: String::new(),
            path: String::new(),
            environment: String::new(),
            revision: String::new(),
            poll_ms: DEFAULT_POLL.as_millis() as u64,
            auto_sync: false,
            self_heal: false,
            prune: false,
            detect_only: false,
            depends_on: Vec::new(),
            sync_timeout_ms: 0,
            deploy_key: String::new(),
            known_hosts: String::new(),
            deploy_role: None,
        };
        let mut name_pos = None;
        for (key, value, pos) in &entries {
            match *key {
                "name" => {
                    if let Some(name) = self.text(value, "name", name_problem) {
                        spec.name = name;
                        name_pos = Some(value.pos);
                    }
                }
                "repo" => spec.repo = self.text(value, "repo", crate::core::triggers::url_problem).unwrap_or_default(),
                "path" => spec.path = self.text(value, "path", path_problem).unwrap_or_default(),
                "env" => spec.environment = self.text(value, "env", super::environment_problem).unwrap_or_default(),
                "revision" => spec.revision = self.text(value, "revision", revision_problem).unwrap_or_default(),
                "poll" => {
                    if let Some(poll) = self.duration(value, "poll") {
                        match poll_problem(poll) {
                            Some(why) => self.problem(value.pos, why),
                            None => spec.poll_ms = poll.as_millis() as u64,
                        }
                    }
                }
                "sync_timeout" => {
                    if let Some(timeout) = self.duration(value, "sync_timeout") {
                        spec.sync_timeout_ms = timeout.as_millis().max(1) as u64;
                    }
                }
                "auto_sync" => spec.auto_sync = self.boolean(value, key),
                "self_heal" => spec.self_heal = self.boolean(value, key),
                "prune" => spec.prune = self.boolean(value, key),
                "detect_only" => spec.detect_only = self.boolean(value, key),
                "depends_on" => spec.depends_on = self.names(value),
                "deploy_key" => spec.deploy_key = self.text(value, "deploy_key", |_| None).unwrap_or_default(),
                "known_hosts" => spec.known_hosts = self.text(value, "known_hosts", |_| None).unwrap_or_default(),
                "deploy_role" => {
                    let role = self.text(value, "deploy_role", crate::core::environments::deploy_role_problem);
                    spec.deploy_role = role.and_then(|r| crate::core::authz::Role::parse(&r).ok());
                }
                other => self.problem(*pos, format!("unknown key `{}`; an app has {}", shown(other), KEYS.join(", "))),
            }
        }
        let Some(name_pos) = name_pos else {
            if !entries.iter().any(|(key, _, _)| *key == "name") {
                self.problem(item.pos, "this app has no `name`; give it one, e.g. `name: web`".to_owned());
            }
            return None;
        };
        for (key, missing) in [("repo", spec.repo.is_empty()), ("path", spec.path.is_empty())] {
            if missing && !entries.iter().any(|(k, _, _)| *k == key) {
                self.problem(item.pos, format!("app `{}` has no `{key}`", shown(&spec.name)));
            }
        }
        if spec.environment.is_empty() && !entries.iter().any(|(k, _, _)| *k == "env") {
            self.problem(item.pos, format!("app `{}` has no `env`: name the environment it deploys to", spec.name));
        }
        if let Some(why) = depends_problem(&spec.name, &spec.depends_on) {
            let at = entries.iter().find(|(k, _, _)| *k == "depends_on").map_or(item.pos, |(_, v, _)| v.pos);
            self.problem(at, why);
        }
        Some((spec, name_pos))
    }

    /// A text value under `key`, checked by `problem`.
    fn text(&mut self, node: &Node, key: &str, problem: fn(&str) -> Option<String>) -> Option<String> {
        let Some(text) = node.scalar_text() else {
            self.problem(node.pos, format!("`{key}` must be text, found {}", describe(node)));
            return None;
        };
        if let Some(why) = problem(text) {
            self.problem(node.pos, why);
            return None;
        }
        Some(text.to_owned())
    }

    fn boolean(&mut self, node: &Node, key: &str) -> bool {
        match &node.kind {
            Kind::Scalar(Scalar { ty: ScalarType::Bool, text, .. }) => text == "true",
            _ => {
                let found = node.scalar_text().map_or_else(|| describe(node).to_owned(), |t| format!("`{}`", shown(t)));
                self.problem(node.pos, format!("`{key}` is true or false, found {found}"));
                false
            }
        }
    }

    /// A duration (`30s`, `5m`, `1h30m`) under `key`.
    fn duration(&mut self, node: &Node, key: &str) -> Option<Duration> {
        let text = match &node.kind {
            Kind::Scalar(Scalar { ty: ScalarType::Str, text, .. }) => text,
            Kind::Scalar(Scalar { text, .. }) => {
                let message = format!("`{key}: {}` has no unit; write e.g. 30s, 5m or 1h", shown(text));
                self.problem(node.pos, message);
                return None;
            }
            _ => {
                self.problem(node.pos, format!("`{key}` must be a duration (30s, 5m), found {}", describe(node)));
                return None;
            }
        };
        let parsed = drover_client::duration::parse(text, drover_client::duration::PIPELINE_UNITS);
        if parsed.is_none() {
            let message = format!(
                "`{key}: {}` is not a duration: whole numbers with units h, m or s, largest first (30s, 1m30s)",
                shown(text)
            );
            self.problem(node.pos, message);
        }
        parsed
    }

    /// `depends_on`: a list of app names (checked as a whole by the caller).
    fn names(&mut self, node: &Node) -> Vec<String> {
        let Kind::Seq(items) = &node.kind else {
            self.problem(node.pos, format!("`depends_on` must be a list (`[db, cache]`), found {}", describe(node)));
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match item.scalar_text() {
                Some(name) => out.push(name.trim().to_owned()),
                None => {
                    self.problem(item.pos, format!("an app of `depends_on` must be a name, found {}", describe(item)))
                }
            }
        }
        out
    }
}
