//! The reject list (issue 17): releases of a service marked as bad, by
//! version (one build of one definition) or by its artifact's sha256 (every
//! version built from those bits). Any coordinator writes it
//! (`drover release reject|unreject`); the leader reads it each time
//! rollouts start (`rollouts::start_ready`), when the apps controller
//! resolves a desired state, and before image update automation writes a
//! build into git:
//!
//! ```text
//! /releases/rejected/{service}/{release}   Rejected
//! ```
//!
//! A rejected release is installed by nothing: a deploy job or a promotion
//! fails, an app's sync refuses it with the reason, an explicit rollback to
//! it is refused, and an automatic rollback goes past it to the newest
//! release of the service that succeeded and is not rejected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::triggers::escape;
use crate::records::encode;
use crate::store::{Compare, Op, Store, StoreError, Txn, decode};

pub const REJECTED: &str = "/releases/rejected/";
/// The most rejects a cluster holds.
pub const MAX_REJECTS: usize = 1000;
/// The longest reason.
pub const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum ReleasesError {
    #[error("{0}")]
    Invalid(String),
    #[error("release {release} of {service} is not rejected; `drover release rejects {service}` lists its rejects")]
    NotFound { service: String, release: String },
    #[error("there are {MAX_REJECTS} rejects, the most a cluster keeps; lift old ones with `drover release unreject`")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A rejected release, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub service: String,
    /// A version (12 hex digits) or a sha256 (64).
    pub release: String,
    pub reason: String,
    pub by: String,
    pub at_ms: u64,
}

impl Rejected {
    pub fn kind(&self) -> &'static str {
        if self.release.len() == 64 { "digest" } else { "version" }
    }

    /// The refusal a deploy, a sync or a rollback of it says.
    pub fn refusal(&self, version: &str) -> String {
        format!(
            "release {version} of {} is rejected ({} {}): {} (by {}); `drover release unreject {} {}` lifts it",
            self.service,
            self.kind(),
            self.release,
            self.reason,
            self.by,
            self.service,
            self.release
        )
    }
}

fn key(service: &str, release: &str) -> String {
    format!("{REJECTED}{}/{}", escape(service), escape(release))
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why `service`, `release` and `reason` cannot be a reject, if they cannot.
pub fn problem(service: &str, release: &str, reason: &str) -> Option<String> {
    if service.is_empty() || service.len() > 64 || service.chars().any(|c| c.is_control() || c == '/') {
        return Some(format!("{service:?} is not a service's name; `drover services` lists them"));
    }
    if !is_hex(release, 12) && !is_hex(release, 64) {
        return Some(format!(
            "{release:?} is neither a version (12 lower-case hex digits, as `drover services` shows) nor an \
             artifact's sha256 (64)"
        ));
    }
    let reason = reason.trim();
    if reason.is_empty() {
        return Some("give a --reason: whoever meets the refusal reads it".to_owned());
    }
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(|c| c.is_control() && c != '\n') {
        return Some(format!("--reason is at most {MAX_REASON_CHARS} characters, without control characters"));
    }
    None
}

/// Rejects `release` of `service`, or says it again with the new reason.
pub async fn reject(store: &dyn Store, r: Rejected) -> Result<Rejected, ReleasesError> {
    if let Some(why) = problem(&r.service, &r.release, &r.reason) {
        return Err(ReleasesError::Invalid(why));
    }
    let r = Rejected { reason: r.reason.trim().to_owned(), ..r };
    let (existing, _) = store.range(REJECTED).await?;
    let k = key(&r.service, &r.release);
    if existing.len() >= MAX_REJECTS && !existing.iter().any(|kv| kv.key == k) {
        return Err(ReleasesError::TooMany);
    }
    store.txn(Txn::ops(vec![Op::put(k, encode(&r))])).await?;
    Ok(r)
}

/// Lifts the reject of `release` of `service`.
pub async fn unreject(store: &dyn Store, service: &str, release: &str) -> Result<(), ReleasesError> {
    let k = key(service, release);
    let not_found = || ReleasesError::NotFound { service: service.to_owned(), release: release.to_owned() };
    let kv = store.get(&k).await?.ok_or_else(not_found)?;
    let txn = Txn {
        compare: vec![Compare::ModRevision(k.clone(), kv.mod_revision)],
        success: vec![Op::delete(k)],
        failure: vec![],
    };
    if !store.txn(txn).await?.succeeded {
        return Err(not_found());
    }
    Ok(())
}

/// Every reject, by service and release.
#[derive(Debug, Clone, Default)]
pub struct Rejects {
    by: BTreeMap<(String, String), Rejected>,
}

impl Rejects {
    /// The reject that names `version` or `sha256` of `service`, if any.
    pub fn find(&self, service: &str, version: &str, sha256: &str) -> Option<&Rejected> {
        let by = |release: &str| self.by.get(&(service.to_owned(), release.to_owned()));
        by(version).or_else(|| if sha256.is_empty() { None } else { by(sha256) })
    }

    pub fn all(&self) -> impl Iterator<Item = &Rejected> {
        self.by.values()
    }
}

/// The reject list, from the store.
pub async fn load(store: &dyn Store) -> Result<Rejects, StoreError> {
    let (kvs, _) = store.range(REJECTED).await?;
    let mut by = BTreeMap::new();
    for kv in kvs {
        let r: Rejected = decode(&kv.key, &kv.value)?;
        by.insert((r.service.clone(), r.release.clone()), r);
    }
    Ok(Rejects { by })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reject_names_a_version_or_a_digest_with_a_reason() {
        let digest = "a".repeat(64);
        // (case, release, reason, what the refusal says; "" for none)
        let cases = [
            ("a version", "3f9a1c2b7d4e", "leaks", ""),
            ("a digest", digest.as_str(), "CVE", ""),
            ("upper-case hex", "3F9A1C2B7D4E", "x", "neither a version"),
            ("a name", "v1.2", "x", "neither a version"),
            ("no reason", "3f9a1c2b7d4e", "  ", "give a --reason"),
            ("a reason too long", "3f9a1c2b7d4e", &"x".repeat(501), "at most 500"),
        ];
        for (case, release, reason, want) in cases {
            match problem("web", release, reason) {
                None => assert!(want.is_empty(), "{case}: accepted"),
                Some(why) => assert!(!want.is_empty() && why.contains(want), "{case}: {why}"),
            }
        }
        assert!(problem("", "3f9a1c2b7d4e", "x").is_some(), "a service is named");
    }

    #[test]
    fn a_release_is_rejected_by_its_version_or_its_digest() {
        let reject = |release: &str| Rejected {
            service: "web".into(),
            release: release.into(),
            reason: "bad".into(),
            by: "alice".into(),
            at_ms: 1,
        };
        let digest = "b".repeat(64);
        let mut rejects = Rejects::default();
        for r in [reject("3f9a1c2b7d4e"), reject(&digest)] {
            rejects.by.insert((r.service.clone(), r.release.clone()), r);
        }
        // (case, service, version, sha256, rejected)
        let cases = [
            ("by version", "web", "3f9a1c2b7d4e", "c".repeat(64), true),
            ("by digest", "web", "000000000000", digest.clone(), true),
            ("neither", "web", "000000000000", "c".repeat(64), false),
            ("another service", "api", "3f9a1c2b7d4e", digest.clone(), false),
            ("no digest known", "web", "000000000000", String::new(), false),
        ];
        for (case, service, version, sha, want) in cases {
            assert_eq!(rejects.find(service, version, &sha).is_some(), want, "{case}");
        }
        let why = reject("3f9a1c2b7d4e").refusal("3f9a1c2b7d4e");
        assert_eq!(
            why,
            "release 3f9a1c2b7d4e of web is rejected (version 3f9a1c2b7d4e): bad (by alice); `drover release \
             unreject web 3f9a1c2b7d4e` lifts it"
        );
    }
}
