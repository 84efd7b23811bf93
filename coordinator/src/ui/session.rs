//! The web UI's login links and sessions, in the store so that every
//! coordinator, follower or leader, knows them.
//!
//! `drover ui` asks `IdentityService.CreateUiLogin` for a link: a random
//! secret whose SHA-256 keys a [`Grant`] (who asked, with the serial of the
//! certificate it asked with) under `/ui/logins/`, leased for
//! [`LOGIN_TTL`]. Opening the link redeems it in one transaction that
//! compares the grant's revision, deletes it and writes a [`Session`]
//! under `/ui/sessions/` (by the SHA-256 of another secret, the cookie),
//! leased for the session's life: a link works once, and a session ends
//! when its lease does, whoever is looking. The store never holds a
//! secret, only its hash.
//!
//! A session is its holder's certificate seen through the gate at every
//! request (`Gate::session_caller`): a user removed, or whose certificate
//! was replaced since, has no role from the next request on, as on the
//! API. Each session has a CSRF token of its own, which every form posts
//! back ([`csrf_matches`]).

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::keys;
use crate::store::{Compare, Op, Store, StoreError, Txn, decode};

/// How long a login link may wait to be opened.
pub const LOGIN_TTL: Duration = Duration::from_secs(5 * 60);
/// The default of `--ui-session-ttl`.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The name of the session cookie.
pub const COOKIE: &str = "drover_session";
/// The longest `next` path a link carries.
const MAX_NEXT: usize = 512;

/// A login link waiting to be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub holder: Holder,
    /// The UI path to land on.
    pub next: String,
    pub expires_ms: i64,
}

/// Whose a link or session is: the certificate that asked for the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub name: String,
    /// An administrator's certificate (`drover certs init`'s) rather than
    /// a user's.
    pub admin: bool,
    /// The serial of the certificate, lower-case hex: a user's session
    /// lasts only while it is the user's current certificate.
    pub serial: String,
}

/// A browser's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub holder: Holder,
    /// What every form of this session posts back.
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(
        "this login link was used already, or has expired (a link works once, within {} minutes); \
         run `drover ui` for a new one",
        LOGIN_TTL.as_secs() / 60
    )]
    Spent,
    #[error("{0}")]
    Invalid(String),
    #[error("cannot reach the store: {0}")]
    Store(#[from] StoreError),
}

/// A random secret: 32 bytes, URL-safe base64.
fn secret() -> Result<String, SessionError> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SessionError::Invalid("the system's random number generator failed".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `next` is a path of the UI to land on: absolute, on this
/// origin (`//host` is another), printable, bounded.
pub fn next_problem(next: &str) -> Option<String> {
    if next.is_empty() {
        return None;
    }
    if next.len() > MAX_NEXT {
        return Some(format!("the page to open is over {MAX_NEXT} bytes"));
    }
    if !next.starts_with('/') || next.starts_with("//") || next.contains('\\') {
        return Some(format!("the page to open must be a path of the UI, such as /runs/12, not {next:?}"));
    }
    if next.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some("the page to open holds a control character or a space".into());
    }
    None
}

/// Makes a login link's secret for `holder`: the grant is stored, leased
/// for [`LOGIN_TTL`].
pub async fn create_login(
    store: &dyn Store,
    holder: Holder,
    next: &str,
    now_ms: i64,
) -> Result<(String, Grant), SessionError> {
    if let Some(problem) = next_problem(next) {
        return Err(SessionError::Invalid(problem));
    }
    let secret = secret()?;
    let grant = Grant { holder, next: next.to_owned(), expires_ms: now_ms + LOGIN_TTL.as_millis() as i64 };
    let lease = store.lease_grant(LOGIN_TTL).await?;
    let value = serde_json::to_vec(&grant).expect("a grant serialises");
    store.txn(Txn::ops(vec![Op::Put { key: login_key(&secret), value, lease }])).await?;
    Ok((secret, grant))
}

fn login_key(secret: &str) -> String {
    format!("{}{}", keys::UI_LOGINS, hash(secret))
}

fn session_key(secret: &str) -> String {
    format!("{}{}", keys::UI_SESSIONS, hash(secret))
}

/// Redeems a login link: the grant is deleted and a session written in one
/// transaction, so a link works once. Returns the session's secret (the
/// cookie's value), the session and the page to land on.
pub async fn redeem(
    store: &dyn Store,
    login_secret: &str,
    ttl: Duration,
    now_ms: i64,
) -> Result<(String, Session, String), SessionError> {
    if login_secret.is_empty() || login_secret.len() > 64 {
        return Err(SessionError::Spent);
    }
    let key = login_key(login_secret);
    let Some(kv) = store.get(&key).await? else { return Err(SessionError::Spent) };
    let grant: Grant = decode(&key, &kv.value)?;
    if grant.expires_ms <= now_ms {
        return Err(SessionError::Spent);
    }
    let cookie = secret()?;
    let session = Session {
        holder: grant.holder,
        csrf: secret()?,
        created_ms: now_ms,
        expires_ms: now_ms + ttl.as_millis() as i64,
    };
    let lease = store.lease_grant(ttl).await?;
    let value = serde_json::to_vec(&session).expect("a session serialises");
    let done = store
        .txn(Txn {
            compare: vec![Compare::ModRevision(key.clone(), kv.mod_revision)],
            success: vec![Op::delete(key), Op::Put { key: session_key(&cookie), value, lease }],
            failure: Vec::new(),
        })
        .await?;
    if !done.succeeded {
        let _ = store.lease_revoke(lease).await;
        return Err(SessionError::Spent);
    }
    let next = if grant.next.is_empty() { "/runs".to_owned() } else { grant.next };
    Ok((cookie, session, next))
}

/// The session a cookie names, if it is live.
pub async fn find(store: &dyn Store, cookie: &str, now_ms: i64) -> Result<Option<Session>, SessionError> {
    if cookie.is_empty() || cookie.len() > 64 {
        return Ok(None);
    }
    let key = session_key(cookie);
    let Some(kv) = store.get(&key).await? else { return Ok(None) };
    let session: Session = decode(&key, &kv.value)?;
    Ok((session.expires_ms > now_ms).then_some(session))
}

/// Ends a session (logging out).
pub async fn end(store: &dyn Store, cookie: &str) -> Result<(), SessionError> {
    store.txn(Txn::ops(vec![Op::delete(session_key(cookie))])).await?;
    Ok(())
}

/// Whether a form's CSRF token is its session's, compared in constant time.
pub fn csrf_matches(session: &Session, given: &str) -> bool {
    let (a, b) = (session.csrf.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// The `Set-Cookie` of a new session: the browser sends it only over
/// HTTPS, never to scripts, and never with a request another site starts.
pub fn set_cookie(secret: &str, ttl: Duration) -> String {
    format!("{COOKIE}={secret}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict", ttl.as_secs())
}

/// The `Set-Cookie` that removes it.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};

    fn holder() -> Holder {
        Holder { name: "otto".into(), admin: false, serial: "ab12".into() }
    }

    #[tokio::test]
    async fn a_link_opens_one_session_once_and_the_session_ends_with_its_life() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        let (secret, grant) = create_login(store.as_ref(), holder(), "/runs/3", 1_000).await.unwrap();
        assert_eq!(grant.expires_ms, 1_000 + LOGIN_TTL.as_millis() as i64);
        let (cookie, session, next) = redeem(store.as_ref(), &secret, Duration::from_secs(60), 2_000).await.unwrap();
        assert_eq!((session.holder.clone(), next.as_str()), (holder(), "/runs/3"));
        assert!(matches!(
            redeem(store.as_ref(), &secret, Duration::from_secs(60), 2_000).await,
            Err(SessionError::Spent)
        ));
        assert_eq!(find(store.as_ref(), &cookie, 3_000).await.unwrap(), Some(session.clone()));
        assert_eq!(find(store.as_ref(), &cookie, 62_000).await.unwrap(), None, "past its life");
        assert_eq!(find(store.as_ref(), "nope", 3_000).await.unwrap(), None);
        assert!(csrf_matches(&session, &session.csrf));
        assert!(!csrf_matches(&session, "x"));
        assert!(!csrf_matches(&session, ""));
        end(store.as_ref(), &cookie).await.unwrap();
        assert_eq!(find(store.as_ref(), &cookie, 3_000).await.unwrap(), None, "logged out");
    }

    #[tokio::test]
    async fn an_expired_link_is_spent() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        let (secret, grant) = create_login(store.as_ref(), holder(), "", 1_000).await.unwrap();
        let late = grant.expires_ms;
        assert!(matches!(
            redeem(store.as_ref(), &secret, Duration::from_secs(60), late).await,
            Err(SessionError::Spent)
        ));
    }

    #[test]
    fn only_paths_of_the_ui_are_places_to_land() {
        let cases = [
            ("", true),
            ("/runs/12", true),
            ("/runs/12/jobs/build%20x/log#L3", true),
            ("runs", false),
            ("//evil.example/", false),
            ("https://evil.example/", false),
            ("/\\evil", false),
            ("/runs 1", false),
            ("/runs\n", false),
        ];
        for (next, ok) in cases {
            assert_eq!(next_problem(next).is_none(), ok, "{next:?}");
        }
        assert!(next_problem(&format!("/{}", "a".repeat(MAX_NEXT))).is_some());
    }

    #[test]
    fn the_cookie_is_read_among_others_and_set_strictly() {
        assert_eq!(cookie("a=1; drover_session=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie("drover_session_x=1", COOKIE), None);
        let set = set_cookie("s", Duration::from_secs(60));
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age=60", "Path=/"] {
            assert!(set.contains(part), "{set}");
        }
    }
}
