//! What a webhook's body says happened, for the events Drover starts runs
//! on: a push to a branch, a pushed tag, and a pull (merge) request opened,
//! reopened or updated. Anything else (GitHub's `ping`, a deleted branch,
//! a closed pull request, an issue comment) is `Ignored`, with the reason,
//! and starts nothing. Pure: the listener has already authenticated the
//! body.

use serde_json::Value;

/// What happened, as far as triggers care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `branch` moved from `before` (absent for a new branch) to `after`.
    Push {
        branch: String,
        before: Option<String>,
        after: String,
    },
    Tag {
        tag: String,
        commit: String,
    },
    PullRequest {
        number: u64,
        head_commit: String,
        head_branch: String,
        target_branch: String,
    },
    /// Nothing to start, and why.
    Ignored(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(String);

fn bad(what: impl Into<String>) -> PayloadError {
    PayloadError(what.into())
}

/// Reads the body of a `provider` (`verify::Provider`) webhook whose
/// event header said `event`.
pub fn parse(provider: super::verify::Provider, event: &str, body: &[u8]) -> Result<Event, PayloadError> {
    use super::verify::Provider;
    let json: Value = serde_json::from_slice(body).map_err(|err| bad(format!("the body is not JSON: {err}")))?;
    match (provider, event) {
        (Provider::GitHub | Provider::Gitea, "push") | (Provider::GitLab, "Push Hook" | "Tag Push Hook") => push(&json),
        (Provider::GitHub | Provider::Gitea, "pull_request") => github_pull_request(&json),
        (Provider::GitLab, "Merge Request Hook") => gitlab_merge_request(&json),
        (_, other) => Ok(Event::Ignored(format!("event `{}` starts no run", clip(other)))),
    }
}

fn push(json: &Value) -> Result<Event, PayloadError> {
    let reference = text(json, &["ref"])?;
    let after = text(json, &["after"])?;
    let deleted = json.get("deleted").and_then(Value::as_bool).unwrap_or(false) || is_zero(&after);
    if deleted {
        return Ok(Event::Ignored(format!("{} was deleted", clip(&reference))));
    }
    let after = commit(&after, "after")?;
    if let Some(tag) = reference.strip_prefix("refs/tags/") {
        return Ok(Event::Tag { tag: ref_name(tag, "ref")?, commit: after });
    }
    let Some(branch) = reference.strip_prefix("refs/heads/") else {
        return Ok(Event::Ignored(format!("{} is neither a branch nor a tag", clip(&reference))));
    };
    let before =
        json.get("before").and_then(Value::as_str).filter(|b| !is_zero(b)).map(|b| commit(b, "before")).transpose()?;
    Ok(Event::Push { branch: ref_name(branch, "ref")?, before, after })
}

fn github_pull_request(json: &Value) -> Result<Event, PayloadError> {
    let action = text(json, &["action"])?;
    if !matches!(action.as_str(), "opened" | "reopened" | "synchronize") {
        return Ok(Event::Ignored(format!("pull request action `{}` starts no run", clip(&action))));
    }
    let number = json.get("number").and_then(Value::as_u64).ok_or_else(|| bad("the pull request has no `number`"))?;
    Ok(Event::PullRequest {
        number,
        head_commit: commit(&text(json, &["pull_request", "head", "sha"])?, "pull_request.head.sha")?,
        head_branch: ref_name(&text(json, &["pull_request", "head", "ref"])?, "pull_request.head.ref")?,
        target_branch: ref_name(&text(json, &["pull_request", "base", "ref"])?, "pull_request.base.ref")?,
    })
}

fn gitlab_merge_request(json: &Value) -> Result<Event, PayloadError> {
    let attrs = json.get("object_attributes").ok_or_else(|| bad("the merge request has no `object_attributes`"))?;
    let action = text(attrs, &["action"]).unwrap_or_default();
    if !matches!(action.as_str(), "open" | "reopen" | "update") {
        return Ok(Event::Ignored(format!("merge request action `{}` starts no run", clip(&action))));
    }
    let number = attrs.get("iid").and_then(Value::as_u64).ok_or_else(|| bad("the merge request has no `iid`"))?;
    Ok(Event::PullRequest {
        number,
        head_commit: commit(&text(attrs, &["last_commit", "id"])?, "object_attributes.last_commit.id")?,
        head_branch: ref_name(&text(attrs, &["source_branch"])?, "object_attributes.source_branch")?,
        target_branch: ref_name(&text(attrs, &["target_branch"])?, "object_attributes.target_branch")?,
    })
}

/// The string at `path` in `json`.
fn text(json: &Value, path: &[&str]) -> Result<String, PayloadError> {
    let mut at = json;
    for key in path {
        at = at.get(key).ok_or_else(|| bad(format!("the body has no `{}`", path.join("."))))?;
    }
    at.as_str().map(str::to_string).ok_or_else(|| bad(format!("`{}` in the body is not a string", path.join("."))))
}

fn is_zero(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) hex digits.
fn commit(sha: &str, field: &str) -> Result<String, PayloadError> {
    if matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha.to_ascii_lowercase())
    } else {
        Err(bad(format!("`{field}` is not a full commit id: `{}`", clip(sha))))
    }
}

/// A branch or tag name as git allows it, roughly: what could reach a git
/// command line or a store key must not start with `-` or hold `..`,
/// spaces or control characters.
fn ref_name(name: &str, field: &str) -> Result<String, PayloadError> {
    let valid = (1..=255).contains(&name.len())
        && !name.starts_with(['-', '/'])
        && !name.ends_with('/')
        && !name.contains("..")
        && !name.contains("//")
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\'));
    if valid { Ok(name.to_string()) } else { Err(bad(format!("`{field}` is not a valid ref name: `{}`", clip(name)))) }
}

fn clip(text: &str) -> String {
    text.chars().take(100).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::super::verify::Provider;
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "89abcdef0123456789abcdef0123456789abcdef";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn events_are_read_from_each_senders_body() {
        let push =
            |r: &str, before: &str, after: &str| format!(r#"{{"ref":"{r}","before":"{before}","after":"{after}"}}"#);
        let gh_pr = |action: &str| {
            format!(
                r#"{{"action":"{action}","number":7,"pull_request":{{"head":{{"sha":"{B}","ref":"feature/x"}},"base":{{"ref":"main"}}}}}}"#
            )
        };
        let gl_mr = format!(
            r#"{{"object_attributes":{{"action":"update","iid":3,"last_commit":{{"id":"{B}"}},"source_branch":"fix","target_branch":"main"}}}}"#
        );
        // (case, provider, event header, body, what it says)
        type Case = (&'static str, Provider, &'static str, String, Result<Event, PayloadError>);
        let cases: Vec<Case> = vec![
            (
                "a push",
                Provider::GitHub,
                "push",
                push("refs/heads/main", A, B),
                Ok(Event::Push { branch: "main".into(), before: Some(A.into()), after: B.into() }),
            ),
            (
                "a new branch",
                Provider::Gitea,
                "push",
                push("refs/heads/release/1", ZERO, B),
                Ok(Event::Push { branch: "release/1".into(), before: None, after: B.into() }),
            ),
            (
                "a tag",
                Provider::GitHub,
                "push",
                push("refs/tags/v1.0", ZERO, B),
                Ok(Event::Tag { tag: "v1.0".into(), commit: B.into() }),
            ),
            (
                "a GitLab tag",
                Provider::GitLab,
                "Tag Push Hook",
                push("refs/tags/v2", ZERO, A),
                Ok(Event::Tag { tag: "v2".into(), commit: A.into() }),
            ),
            (
                "a deleted branch",
                Provider::GitHub,
                "push",
                push("refs/heads/old", A, ZERO),
                Ok(Event::Ignored("refs/heads/old was deleted".into())),
            ),
            (
                "a pull request",
                Provider::GitHub,
                "pull_request",
                gh_pr("synchronize"),
                Ok(Event::PullRequest {
                    number: 7,
                    head_commit: B.into(),
                    head_branch: "feature/x".into(),
                    target_branch: "main".into(),
                }),
            ),
            (
                "a closed pull request",
                Provider::GitHub,
                "pull_request",
                gh_pr("closed"),
                Ok(Event::Ignored("pull request action `closed` starts no run".into())),
            ),
            (
                "a GitLab merge request",
                Provider::GitLab,
                "Merge Request Hook",
                gl_mr,
                Ok(Event::PullRequest {
                    number: 3,
                    head_commit: B.into(),
                    head_branch: "fix".into(),
                    target_branch: "main".into(),
                }),
            ),
            ("a ping", Provider::GitHub, "ping", "{}".into(), Ok(Event::Ignored("event `ping` starts no run".into()))),
            (
                "not JSON",
                Provider::GitHub,
                "push",
                "nope".into(),
                Err(bad("the body is not JSON: expected ident at line 1 column 2")),
            ),
            (
                "no after",
                Provider::GitHub,
                "push",
                r#"{"ref":"refs/heads/main"}"#.into(),
                Err(bad("the body has no `after`")),
            ),
            (
                "a short commit",
                Provider::GitHub,
                "push",
                push("refs/heads/main", A, "abc"),
                Err(bad("`after` is not a full commit id: `abc`")),
            ),
            (
                "a branch that could be an option",
                Provider::GitHub,
                "push",
                push("refs/heads/--upload-pack=x", A, B),
                Err(bad("`ref` is not a valid ref name: `--upload-pack=x`")),
            ),
        ];
        for (case, provider, event, body, want) in cases {
            assert_eq!(parse(provider, event, body.as_bytes()), want, "{case}");
        }
    }
}
