//! Notification targets in the store, `/notifications/{name}`: a webhook's
//! URL, the body it takes, and which notices it wants. Checked whole before
//! they are written, each problem saying what to do; any coordinator writes
//! them, and the leader's notifier reads them.

use serde::{Deserialize, Serialize};

use super::{Kind, Severity};
use crate::core::environments::{MAX_NAME_LEN, name_problem};
use crate::core::triggers::escape;
use crate::records::encode;
use crate::store::{Compare, Op, Store, StoreError, Txn, decode};

pub const NOTIFICATIONS: &str = "/notifications/";
/// The most targets a cluster keeps: each notice goes to each target that
/// wants it, and the notifier reads them all for every batch of notices.
pub const MAX_TARGETS: usize = 32;
/// The longest URL, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// The most environments one target names.
pub const MAX_TARGET_ENVIRONMENTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum NotificationsError {
    #[error("{0}")]
    Invalid(String),
    #[error("there is no notification target {0:?}; `drover notify list` lists them")]
    NotFound(String),
    #[error(
        "there are {MAX_TARGETS} notification targets, the most a cluster keeps; remove one with `drover notify rm \
         NAME`, or let one target take more (`--env` and `--kinds` left out take every environment and kind)"
    )]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The body a target takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The notice as a JSON object.
    #[default]
    Json,
    /// A Slack incoming-webhook message (Mattermost and Rocket.Chat take
    /// it too).
    Slack,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }

    /// The format `text` names; empty is [`Format::Json`].
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "" | "json" => Ok(Format::Json),
            "slack" => Ok(Format::Slack),
            _ => Err(format!(
                "unknown format {text:?}: use json (the notice as a JSON object) or slack (a Slack incoming-webhook \
                 message)"
            )),
        }
    }
}

/// A webhook that is told about the notices it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// A name like an environment's.
    pub name: String,
    /// Where notices are POSTed. A Slack webhook's URL is its credential:
    /// it is never logged nor listed whole ([`Target::shown_url`]).
    pub url: String,
    pub format: Format,
    /// The least severity it takes.
    pub min_severity: Severity,
    /// The environments whose notices it takes; empty: every one.
    pub environments: Vec<String>,
    /// The kinds ([`Kind::as_str`]) it takes; empty: every one.
    pub kinds: Vec<String>,
    pub created_by: String,
    pub created_ms: u64,
}

impl Target {
    /// The URL as logs and listings show it: its scheme, host and port,
    /// and `/…` when it has more (a path or a query, which may hold a
    /// token); never a user or a password.
    pub fn shown_url(&self) -> String {
        shown_url(&self.url)
    }
}

fn shown_url(url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return "(not a URL)".to_owned();
    };
    let host = parsed.host_str().unwrap_or_default();
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let more = if parsed.path() != "/" || parsed.query().is_some() { "/…" } else { "" };
    format!("{}://{host}{port}{more}", parsed.scheme())
}

fn key(name: &str) -> String {
    format!("{NOTIFICATIONS}{}", escape(name))
}

/// Why `url` cannot be a target's, if it cannot. The URL itself is not
/// repeated: it may hold a token.
fn url_problem(url: &str) -> Option<String> {
    let example = "e.g. --url https://hooks.slack.com/services/T000/B000/XXXX";
    let chars = url.chars().count();
    if chars == 0 {
        return Some(format!("give the webhook's --url, {example}"));
    }
    if chars > MAX_URL_CHARS {
        return Some(format!("--url is {chars} characters, over the limit of {MAX_URL_CHARS}"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("--url has a space or a control character; quote it whole, without spaces".to_owned());
    }
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://")) else {
        return Some(format!("--url must start with http:// or https://; {example}"));
    };
    // Read as browsers do, `http:///x` would go to host `x`: the text
    // itself must name a host (after any `user@`, before any port).
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Some(format!("--url names no host; {example}"));
    }
    match reqwest::Url::parse(url) {
        Ok(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => None,
        Ok(_) => Some(format!("--url names no host; {example}")),
        Err(e) => Some(format!("--url is not a URL ({e}); {example}")),
    }
}

/// `target` as it will be kept: its name, URL, environments and kinds
/// checked (each environment and kind once, in the order given), or the
/// first problem with what to do about it.
pub fn check(target: Target) -> Result<Target, String> {
    if name_problem(&target.name).is_some() {
        return Err(format!(
            "invalid notification target name {:?}: use letters, digits, `_`, `.` and `-`, starting with a letter or \
             a digit, at most {MAX_NAME_LEN} characters (e.g. `ops`, `slack-prod`)",
            target.name
        ));
    }
    if let Some(why) = url_problem(&target.url) {
        return Err(why);
    }
    let mut environments: Vec<String> = Vec::new();
    for env in target.environments.iter().map(|e| e.trim()) {
        if let Some(why) = name_problem(env) {
            return Err(format!("--env: {why}"));
        }
        if !environments.iter().any(|e| e == env) {
            environments.push(env.to_owned());
        }
    }
    if environments.len() > MAX_TARGET_ENVIRONMENTS {
        return Err(format!(
            "--env names {} environments, over the limit of {MAX_TARGET_ENVIRONMENTS}; leave it out to take every \
             environment, or add a second target",
            environments.len()
        ));
    }
    let mut kinds: Vec<String> = Vec::new();
    for kind in target.kinds.iter().map(|k| k.trim()) {
        if Kind::parse(kind).is_none() {
            let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(format!("--kinds: unknown kind {kind:?}; the kinds are {}", all.join(", ")));
        }
        if !kinds.iter().any(|k| k == kind) {
            kinds.push(kind.to_owned());
        }
    }
    Ok(Target { environments, kinds, ..target })
}

/// Adds `target`, or replaces the one of its name.
pub async fn add(store: &dyn Store, target: Target) -> Result<Target, NotificationsError> {
    let target = check(target).map_err(NotificationsError::Invalid)?;
    let k = key(&target.name);
    let (existing, _) = store.range(NOTIFICATIONS).await?;
    if existing.len() >= MAX_TARGETS && !existing.iter().any(|kv| kv.key == k) {
        return Err(NotificationsError::TooMany);
    }
    store.txn(Txn::ops(vec![Op::put(k, encode(&target))])).await?;
    Ok(target)
}

/// Removes the target `name`; the target it removed.
pub async fn remove(store: &dyn Store, name: &str) -> Result<Target, NotificationsError> {
    let k = key(name);
    let not_found = || NotificationsError::NotFound(name.to_owned());
    let kv = store.get(&k).await?.ok_or_else(not_found)?;
    let target: Target = decode(&kv.key, &kv.value)?;
    let txn = Txn {
        compare: vec![Compare::ModRevision(k.clone(), kv.mod_revision)],
        success: vec![Op::delete(k)],
        failure: vec![],
    };
    if !store.txn(txn).await?.succeeded {
        return Err(not_found());
    }
    Ok(target)
}

/// The target `name`.
pub async fn get(store: &dyn Store, name: &str) -> Result<Target, NotificationsError> {
    let kv = store.get(&key(name)).await?.ok_or_else(|| NotificationsError::NotFound(name.to_owned()))?;
    Ok(decode(&kv.key, &kv.value)?)
}

/// Every target, by name, for `drover notify list`.
pub async fn list(store: &dyn Store) -> Result<Vec<Target>, NotificationsError> {
    Ok(load(store).await?)
}

/// Every target, by name, for the notifier. A record that does not decode
/// is an error naming its key, never skipped.
pub async fn load(store: &dyn Store) -> Result<Vec<Target>, StoreError> {
    let (kvs, _) = store.range(NOTIFICATIONS).await?;
    let mut targets = kvs.iter().map(|kv| decode::<Target>(&kv.key, &kv.value)).collect::<Result<Vec<_>, _>>()?;
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_path_query_or_user() {
        let cases = [
            ("https://hooks.slack.com/services/T0/B0/secret", "https://hooks.slack.com/…"),
            ("http://127.0.0.1:8080/hook?token=x", "http://127.0.0.1:8080/…"),
            ("https://user:pw@example.com", "https://example.com"),
            ("https://example.com/", "https://example.com"),
            ("http://[::1]:9/x", "http://[::1]:9/…"),
            ("not a url", "(not a URL)"),
        ];
        for (url, want) in cases {
            assert_eq!(shown_url(url), want, "{url}");
        }
    }
}
