//! Apps (issue 16), the rules: what an app's settings may be, how the
//! desired state its files declare compares with what the environment's
//! nodes serve, and when the controller syncs on its own. Pure: the
//! `apps` controller and the API hand in the rendered files, each node's
//! release and the releases' definitions, and act on what comes back.
//!
//! - **Diff.** Per service of the files, per node: `missing` (nothing of
//!   it runs there), `out_of_sync` (another release runs), `unhealthy` (the
//!   release asked for runs but fails its health check: stopped by hand,
//!   crashed) or `in_sync`. A service runs where it ran, and on the nodes
//!   the caller says it should (the environment's connected nodes its
//!   `nodes:` selects, when the caller knows them). A service this app
//!   synced once that no file declares any more is `orphaned`.
//! - **When to sync on its own** ([`decide`]). A new commit, with
//!   `--auto-sync`: once per commit, so a commit whose sync failed is not
//!   tried again until a newer one arrives or someone syncs by hand. Drift
//!   on the commit last synced, with `--self-heal`: at most once per
//!   [`SELF_HEAL_BACKOFF`]. `--detect-only` never syncs on its own: drift
//!   is only reported. A sync asked for by hand always goes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drover_pipeline::deploy::ServiceSpec;

use super::environments::Node;

/// How often an app's revision is fetched when `--poll` is not given.
pub const DEFAULT_POLL: Duration = Duration::from_secs(30);
/// The shortest and the longest `--poll`.
pub const MIN_POLL: Duration = Duration::from_secs(1);
pub const MAX_POLL: Duration = Duration::from_secs(24 * 60 * 60);
/// The most apps a store holds.
pub const MAX_APPS: usize = 1000;
/// The longest app name.
pub const MAX_NAME_LEN: usize = 63;
/// The longest `--path` and `--revision`.
pub const MAX_PATH_LEN: usize = 1024;
pub const MAX_REVISION_LEN: usize = 255;
/// The most apps one app may depend on.
pub const MAX_DEPENDS_ON: usize = 16;
/// Self-heal syncs a drifted app at most this often.
pub const SELF_HEAL_BACKOFF: Duration = Duration::from_secs(5);

/// An app as `drover app create` registers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppSpec {
    pub name: String,
    /// The repository's URL, under the rules of `drover repo add --url`.
    pub repo: String,
    /// The directory of the desired-state files, relative to the root.
    pub path: String,
    pub environment: String,
    /// A branch, a tag or a commit; empty for the default branch.
    #[serde(default)]
    pub revision: String,
    pub poll_ms: u64,
    #[serde(default)]
    pub auto_sync: bool,
    #[serde(default)]
    pub self_heal: bool,
    #[serde(default)]
    pub prune: bool,
    #[serde(default)]
    pub detect_only: bool,
    /// Apps that must be synced and healthy before this one syncs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

impl AppSpec {
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    /// The revision git is asked for: the default branch when none is named.
    pub fn reference(&self) -> &str {
        if self.revision.is_empty() { "HEAD" } else { &self.revision }
    }
}

/// Why `spec` cannot be an app, if it cannot: the first problem, with how
/// to fix it.
pub fn spec_problem(spec: &AppSpec) -> Option<String> {
    name_problem(&spec.name)
        .or_else(|| super::triggers::url_problem(&spec.repo))
        .or_else(|| path_problem(&spec.path))
        .or_else(|| revision_problem(&spec.revision))
        .or_else(|| environment_problem(&spec.environment))
        .or_else(|| poll_problem(spec.poll()))
        .or_else(|| depends_problem(&spec.name, &spec.depends_on))
        .or_else(|| {
            (spec.detect_only && (spec.auto_sync || spec.self_heal)).then(|| {
                "--detect-only only reports drift, so it cannot go with --auto-sync or --self-heal; choose one"
                    .to_owned()
            })
        })
}

fn is_name(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= max
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub fn name_problem(name: &str) -> Option<String> {
    (!is_name(name, MAX_NAME_LEN)).then(|| {
        format!(
            "invalid app name {name:?}: use letters, digits, `_`, `.` and `-`, starting with a letter or a digit, \
             at most {MAX_NAME_LEN} characters (e.g. `web`)"
        )
    })
}

fn environment_problem(name: &str) -> Option<String> {
    (!is_name(name, drover_pipeline::MAX_ENVIRONMENT_NAME_LEN))
        .then(|| format!("invalid environment name {name:?}; name one that `drover envs` lists, e.g. --env staging"))
}

/// `--path`: a directory relative to the repository's root, in normal form
/// (`deploy/prod`); `.` is the root.
pub fn path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("--path is empty; give the directory of the desired-state files, e.g. --path deploy".to_owned());
    }
    if path.len() > MAX_PATH_LEN {
        return Some(format!("--path is {} bytes, over the limit of {MAX_PATH_LEN}", path.len()));
    }
    if path == "." {
        return None;
    }
    let bad = path.starts_with('/')
        || path.ends_with('/')
        || path.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        || path.chars().any(|c| c.is_control() || matches!(c, '*' | '?' | '[' | '\\' | ':'));
    bad.then(|| {
        format!(
            "--path {path:?} is not a directory of the repository in normal form: write it relative to the root, \
             with no `.`, `..`, empty parts, globs or trailing `/` (e.g. deploy/prod, or . for the root)"
        )
    })
}

/// `--revision`: a branch, a tag or a commit id, as git's ref rules allow.
pub fn revision_problem(revision: &str) -> Option<String> {
    if revision.len() > MAX_REVISION_LEN {
        return Some(format!("--revision is {} bytes, over the limit of {MAX_REVISION_LEN}", revision.len()));
    }
    let bad = revision.starts_with('-')
        || revision.contains("..")
        || revision.chars().any(|c| c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*'));
    bad.then(|| {
        format!("--revision {revision:?} is not a branch, a tag or a commit; e.g. --revision main, v1.2 or a SHA")
    })
}

/// `--depends-on`: app names, not the app itself, none twice, at most
/// [`MAX_DEPENDS_ON`]. An app not registered yet is allowed: the sync waits
/// for it.
pub fn depends_problem(name: &str, depends_on: &[String]) -> Option<String> {
    if depends_on.len() > MAX_DEPENDS_ON {
        return Some(format!("--depends-on names {} apps, over the limit of {MAX_DEPENDS_ON}", depends_on.len()));
    }
    for (i, dep) in depends_on.iter().enumerate() {
        if let Some(why) = name_problem(dep) {
            return Some(format!("--depends-on: {why}"));
        }
        if dep == name {
            return Some(format!("app {name} cannot depend on itself; remove it from --depends-on"));
        }
        if depends_on[..i].contains(dep) {
            return Some(format!("--depends-on names app {dep} twice"));
        }
    }
    None
}

/// A cycle the dependencies of `graph` (each app's `depends_on`) close
/// through app `from`, as the path `a -> b -> a`; none when there is none.
pub fn cycle(graph: &BTreeMap<String, Vec<String>>, from: &str) -> Option<String> {
    fn visit<'g>(
        graph: &'g BTreeMap<String, Vec<String>>,
        from: &str,
        at: &'g str,
        path: &mut Vec<&'g str>,
        seen: &mut BTreeSet<&'g str>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == from {
                path.push(next);
                return true;
            }
            if seen.insert(next) {
                path.push(next);
                if visit(graph, from, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let (key, _) = graph.get_key_value(from)?;
    let mut path = vec![key.as_str()];
    let mut seen = BTreeSet::new();
    visit(graph, from, key, &mut path, &mut seen).then(|| path.join(" -> "))
}

/// How an app another depends on stands, as the controller last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepState {
    pub sync_status: String,
    pub health: String,
    pub syncing: bool,
    /// When it was last fetched and compared.
    pub last_fetch_ms: u64,
}

/// What keeps an app's sync waiting: each app it depends on that is not
/// synced and healthy, with how it stands (not registered, too). A
/// dependency not looked at since `since` (when this app first saw what
/// it would sync; a look in the same moment may have fetched just before
/// a push) is not known to be synced to what was pushed with it: it is
/// looked at again (the second list) before this app goes on.
pub fn blocked_by(
    depends_on: &[String],
    states: &BTreeMap<String, DepState>,
    since: u64,
) -> Option<(String, Vec<String>)> {
    let mut stale = Vec::new();
    let waits: Vec<String> = depends_on
        .iter()
        .filter_map(|dep| match states.get(dep) {
            None => Some(format!("app {dep} (not registered)")),
            Some(s) if s.syncing || s.sync_status != "synced" || s.health != "healthy" => {
                let sync = if s.syncing { "syncing" } else { s.sync_status.as_str() };
                Some(format!("app {dep} ({sync}, {})", s.health))
            }
            Some(s) if s.last_fetch_ms <= since => {
                stale.push(dep.clone());
                Some(format!("app {dep} (being fetched again)"))
            }
            Some(_) => None,
        })
        .collect();
    (!waits.is_empty()).then(|| (format!("waiting for {} to be synced and healthy", waits.join(", ")), stale))
}

pub fn poll_problem(poll: Duration) -> Option<String> {
    (poll < MIN_POLL || poll > MAX_POLL).then(|| {
        format!("--poll {}ms is out of range: poll between every 1s and every 24h (e.g. 30s, 5m)", poll.as_millis())
    })
}

/// A service of the desired state, resolved: the release its file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub service: String,
    pub file: String,
    /// The release's version, or why it cannot be resolved (a run that
    /// does not exist, a digest that does not match).
    pub version: Result<String, String>,
    /// The artifact's digest, for the field diff.
    pub sha256: String,
    pub def: ServiceSpec,
    /// The nodes it should run on, when the caller knows them.
    pub nodes: Option<Vec<String>>,
}

/// What one node serves of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub node: String,
    pub version: String,
    pub sha256: String,
    pub healthy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    InSync,
    OutOfSync,
    Missing,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    InSync,
    OutOfSync,
    Missing,
    Orphaned,
    /// Its release cannot be resolved.
    Error,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::InSync => "in_sync",
            NodeStatus::OutOfSync => "out_of_sync",
            NodeStatus::Missing => "missing",
            NodeStatus::Unhealthy => "unhealthy",
        }
    }
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::InSync => "in_sync",
            ServiceStatus::OutOfSync => "out_of_sync",
            ServiceStatus::Missing => "missing",
            ServiceStatus::Orphaned => "orphaned",
            ServiceStatus::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeDiff {
    pub node: String,
    pub status: NodeStatus,
    pub running: String,
    pub wanted: String,
    pub healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceDiff {
    pub service: String,
    /// Empty for an orphan.
    pub file: String,
    pub status: ServiceStatus,
    pub version: String,
    pub nodes: Vec<NodeDiff>,
    /// `command: ./a -> ./b`, one line per field that differs from what
    /// the running release was started with; the reason for [`ServiceStatus::Error`].
    pub fields: Vec<String>,
}

impl ServiceDiff {
    /// One line for `drover apps`' drift column and the sync's record.
    pub fn summary(&self) -> String {
        let differ: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.status != NodeStatus::InSync)
            .map(|n| format!("{} {}", n.node, n.status.as_str()))
            .collect();
        match self.status {
            ServiceStatus::Error => format!("{}: {}", self.service, self.fields.join("; ")),
            ServiceStatus::Orphaned => format!("{}: orphaned (no file declares it)", self.service),
            ServiceStatus::Missing => format!("{}: missing, wants {}", self.service, self.version),
            _ => format!("{}: {} (wants {})", self.service, differ.join(", "), self.version),
        }
    }
}

/// The desired state against what runs. `running` is what each node
/// serves, by service; `defs` the definition a release of a service was
/// started with, by (service, version); `owned` the services this app
/// synced before.
pub fn diff(
    wanted: &[Wanted],
    running: &BTreeMap<String, Vec<Running>>,
    defs: &BTreeMap<(String, String), ServiceSpec>,
    owned: &BTreeSet<String>,
) -> Vec<ServiceDiff> {
    let mut out = Vec::new();
    for w in wanted {
        let version = match &w.version {
            Ok(v) => v.clone(),
            Err(why) => {
                out.push(ServiceDiff {
                    service: w.service.clone(),
                    file: w.file.clone(),
                    status: ServiceStatus::Error,
                    version: String::new(),
                    nodes: Vec::new(),
                    fields: vec![why.clone()],
                });
                continue;
            }
        };
        let here: &[Running] = running.get(&w.service).map_or(&[], Vec::as_slice);
        let mut names: BTreeSet<&str> = here.iter().map(|r| r.node.as_str()).collect();
        if let Some(nodes) = &w.nodes {
            names.extend(nodes.iter().map(String::as_str));
        }
        let nodes: Vec<NodeDiff> = names
            .into_iter()
            .map(|node| {
                let on = here.iter().find(|r| r.node == node);
                let status = match on {
                    None => NodeStatus::Missing,
                    Some(r) if r.version != version => NodeStatus::OutOfSync,
                    Some(r) if !r.healthy => NodeStatus::Unhealthy,
                    Some(_) => NodeStatus::InSync,
                };
                NodeDiff {
                    node: node.to_owned(),
                    status,
                    running: on.map(|r| r.version.clone()).unwrap_or_default(),
                    wanted: version.clone(),
                    healthy: on.is_some_and(|r| r.healthy),
                }
            })
            .collect();
        let status = if here.is_empty() {
            ServiceStatus::Missing
        } else if nodes.iter().all(|n| n.status == NodeStatus::InSync) {
            ServiceStatus::InSync
        } else {
            ServiceStatus::OutOfSync
        };
        // The fields that differ from what the most common other release runs with.
        let mut fields = Vec::new();
        if let Some(other) = here.iter().find(|r| r.version != version) {
            if other.sha256 != w.sha256 {
                fields.push(format!("artifact: sha256:{} -> sha256:{}", short(&other.sha256), short(&w.sha256)));
            }
            if let Some(def) = defs.get(&(w.service.clone(), other.version.clone())) {
                fields.extend(def_changes(def, &w.def));
            }
        }
        out.push(ServiceDiff { service: w.service.clone(), file: w.file.clone(), status, version, nodes, fields });
    }
    for service in owned {
        if wanted.iter().any(|w| &w.service == service) {
            continue;
        }
        let Some(here) = running.get(service).filter(|h| !h.is_empty()) else { continue };
        out.push(ServiceDiff {
            service: service.clone(),
            file: String::new(),
            status: ServiceStatus::Orphaned,
            version: String::new(),
            nodes: here
                .iter()
                .map(|r| NodeDiff {
                    node: r.node.clone(),
                    status: NodeStatus::OutOfSync,
                    running: r.version.clone(),
                    wanted: String::new(),
                    healthy: r.healthy,
                })
                .collect(),
            fields: Vec::new(),
        });
    }
    out
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// `field: old -> new` for each field of a service's definition that differs.
pub fn def_changes(old: &ServiceSpec, new: &ServiceSpec) -> Vec<String> {
    let mut out = Vec::new();
    if old.command != new.command {
        out.push(format!("command: {:?} -> {:?}", old.command, new.command));
    }
    if old.port != new.port {
        out.push(format!("port: {} -> {}", old.port, new.port));
    }
    let keys: BTreeSet<&String> = old.env.keys().chain(new.env.keys()).collect();
    for key in keys {
        match (old.env.get(key), new.env.get(key)) {
            (a, b) if a == b => {}
            (None, Some(b)) => out.push(format!("env.{key}: (unset) -> {b:?}")),
            (Some(a), None) => out.push(format!("env.{key}: {a:?} -> (unset)")),
            (Some(a), Some(b)) => out.push(format!("env.{key}: {a:?} -> {b:?}")),
            (None, None) => {}
        }
    }
    if old.health != new.health {
        out.push(format!("health: {:?} -> {:?}", old.health, new.health));
    }
    out
}

/// How an app stands, for `drover apps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    Synced,
    OutOfSync,
}

/// Whether every service is in sync (an orphan counts only with `prune`).
pub fn sync_status(diffs: &[ServiceDiff], prune: bool) -> SyncStatus {
    let drifted = diffs.iter().any(|d| match d.status {
        ServiceStatus::InSync => false,
        ServiceStatus::Orphaned => prune,
        _ => true,
    });
    if drifted { SyncStatus::OutOfSync } else { SyncStatus::Synced }
}

/// The app's health: `progressing` while a sync runs, `missing` when a
/// service runs nowhere, `degraded` when a node fails its check.
pub fn health(diffs: &[ServiceDiff], syncing: bool) -> &'static str {
    if syncing {
        return "progressing";
    }
    if diffs.iter().any(|d| d.status == ServiceStatus::Missing) {
        return "missing";
    }
    if diffs.iter().flat_map(|d| &d.nodes).any(|n| n.status == NodeStatus::Unhealthy || !n.healthy) {
        return "degraded";
    }
    "healthy"
}

/// What the controller knows of an app when it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    pub spec: &'a AppSpec,
    /// The commit the revision names now.
    pub wanted: &'a str,
    /// The commit last synced in full.
    pub synced: Option<&'a str>,
    /// The commit the last automatic sync was for, and when it started.
    pub last_auto: Option<(&'a str, u64)>,
    /// A sync runs.
    pub syncing: bool,
    /// A person asked for a sync, by this name.
    pub asked_by: Option<&'a str>,
}

/// Why a sync starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Asked(String),
    AutoSync,
    SelfHeal,
}

impl Start {
    pub fn by(&self) -> String {
        match self {
            Start::Asked(by) => by.clone(),
            Start::AutoSync => "auto-sync".to_owned(),
            Start::SelfHeal => "self-heal".to_owned(),
        }
    }
}

/// Whether to start a sync now, and why. `drift` is the diff's verdict.
pub fn decide(facts: &Facts<'_>, drift: SyncStatus, now_ms: u64) -> Option<Start> {
    if facts.syncing {
        return None;
    }
    if let Some(by) = facts.asked_by {
        return Some(Start::Asked(by.to_owned()));
    }
    if facts.spec.detect_only || drift == SyncStatus::Synced {
        return None;
    }
    let new_commit = facts.synced != Some(facts.wanted);
    let tried = |commit: &str| facts.last_auto.is_some_and(|(c, _)| c == commit);
    if new_commit {
        return (facts.spec.auto_sync && !tried(facts.wanted)).then_some(Start::AutoSync);
    }
    let backoff = u64::try_from(SELF_HEAL_BACKOFF.as_millis()).unwrap_or(u64::MAX);
    let cooled = facts.last_auto.is_none_or(|(_, at)| now_ms.saturating_sub(at) >= backoff);
    (facts.spec.self_heal && cooled).then_some(Start::SelfHeal)
}

/// The nodes a service with `count` runs on, of the environment's `nodes`
/// (already narrowed to its selector): the ready ones, those already
/// running it first (`previous`), then by name.
pub fn pick(mut nodes: Vec<Node>, count: Option<u32>, previous: &BTreeMap<String, String>) -> Vec<Node> {
    let Some(count) = count else { return nodes };
    nodes.sort_by(|a, b| {
        (!a.ready(), !previous.contains_key(&a.name), &a.name).cmp(&(
            !b.ready(),
            !previous.contains_key(&b.name),
            &b.name,
        ))
    });
    nodes.truncate(count as usize);
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}

#[cfg(test)]
mod tests;
