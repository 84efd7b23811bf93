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
//!   tried again until a newer one arrives or someone syncs by hand; a sync
//!   under way for an older commit is replaced (its rollouts are superseded
//!   by the new one's). Drift
//!   on the commit last synced, with `--self-heal`: at most once per
//!   [`SELF_HEAL_BACKOFF`]. `--detect-only` never syncs on its own: drift
//!   is only reported. A sync asked for by hand always goes.

use std::collections::BTreeMap;
use std::time::Duration;

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
/// How long a sync may run before it is ended and its rollouts aborted,
/// when `--sync-timeout` is not given; and its bounds.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const MIN_SYNC_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_SYNC_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest `--known-hosts` text.
pub const MAX_KNOWN_HOSTS_BYTES: usize = 64 * 1024;
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
    /// How long a sync may run (ms); 0 for [`DEFAULT_SYNC_TIMEOUT`].
    #[serde(default)]
    pub sync_timeout_ms: u64,
    /// The secret (`drover secret set`) holding the private key git uses
    /// for an ssh URL, to fetch and to push image updates; empty: the
    /// coordinator's own ssh setup.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deploy_key: String,
    /// The host keys ssh trusts with the deploy key (known_hosts lines):
    /// no host key is trusted on first use.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub known_hosts: String,
    /// The least role that may sync, roll back, pin or unpin it by hand,
    /// beyond its environment's `deploy_role`; none: any operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_role: Option<crate::core::authz::Role>,
}

impl AppSpec {
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    /// How long a sync may run before it is ended.
    pub fn sync_timeout(&self) -> Duration {
        if self.sync_timeout_ms == 0 { DEFAULT_SYNC_TIMEOUT } else { Duration::from_millis(self.sync_timeout_ms) }
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
            let timeout = spec.sync_timeout();
            (!(MIN_SYNC_TIMEOUT..=MAX_SYNC_TIMEOUT).contains(&timeout)).then(|| {
                format!("--sync-timeout {}ms is out of range: between 1s and 24h (e.g. 10m)", timeout.as_millis())
            })
        })
        .or_else(|| access_problem(&spec.repo, &spec.deploy_key, &spec.known_hosts))
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

pub(crate) fn environment_problem(name: &str) -> Option<String> {
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

/// Whether git reaches `repo` over ssh: `ssh://…`, or `[user@]host:path`
/// (scp's form).
pub fn is_ssh_url(repo: &str) -> bool {
    if repo.starts_with("ssh://") || repo.starts_with("git+ssh://") {
        return true;
    }
    match repo.split_once(':') {
        Some((host, _)) => !host.contains('/') && !repo.contains("://") && !host.is_empty(),
        None => false,
    }
}

/// `--deploy-key SECRET` with `--known-hosts FILE`: both or neither, for
/// an ssh URL, the known hosts each a line of `hosts keytype key`.
pub fn access_problem(repo: &str, deploy_key: &str, known_hosts: &str) -> Option<String> {
    if deploy_key.is_empty() {
        return (!known_hosts.is_empty())
            .then(|| "--known-hosts goes with --deploy-key SECRET, the key ssh uses with those hosts".to_owned());
    }
    if let Some(why) = drover_pipeline::secret_name_problem(deploy_key) {
        return Some(format!("--deploy-key: {why}"));
    }
    if !is_ssh_url(repo) {
        return Some(format!(
            "--deploy-key is for a repository reached over ssh (ssh://git@host/ops/deploy.git or \
             git@host:ops/deploy.git), not {repo}"
        ));
    }
    if known_hosts.trim().is_empty() {
        return Some(
            "--deploy-key needs --known-hosts FILE, the host keys of the repository's server (e.g. from \
             `ssh-keyscan HOST`, checked against what the server publishes): Drover never trusts a host key on \
             first use"
                .to_owned(),
        );
    }
    if known_hosts.len() > MAX_KNOWN_HOSTS_BYTES {
        return Some(format!(
            "--known-hosts is {} bytes, over the limit of {MAX_KNOWN_HOSTS_BYTES}",
            known_hosts.len()
        ));
    }
    for (i, line) in known_hosts.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = line.split_whitespace().count();
        if fields < 3 || line.chars().any(|c| c.is_control() && c != '\t') {
            return Some(format!(
                "--known-hosts line {}: not a known_hosts line (`HOSTS KEYTYPE KEY`, as ssh-keyscan prints them)",
                i + 1
            ));
        }
    }
    None
}

pub fn poll_problem(poll: Duration) -> Option<String> {
    (poll < MIN_POLL || poll > MAX_POLL).then(|| {
        format!("--poll {}ms is out of range: poll between every 1s and every 24h (e.g. 30s, 5m)", poll.as_millis())
    })
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
    /// A sync runs, for this commit.
    pub syncing: Option<&'a str>,
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
    if let Some(syncing) = facts.syncing {
        // A sync runs: a newer commit replaces it, with --auto-sync (a
        // sync stuck on a canary's pause must not hold every later commit
        // back); anything else waits for it.
        let newer = syncing != facts.wanted && facts.spec.auto_sync && !facts.spec.detect_only;
        let tried = facts.last_auto.is_some_and(|(c, _)| c == facts.wanted);
        return (newer && !tried).then_some(Start::AutoSync);
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

mod deps;
mod diff;
pub mod file;
#[cfg(test)]
mod tests;

pub use deps::{DepState, blocked_by, cycle, depends_problem};
pub use diff::{
    NodeDiff, NodeStatus, Running, ServiceDiff, ServiceStatus, SyncStatus, Wanted, def_changes, diff, health,
    sync_status,
};
