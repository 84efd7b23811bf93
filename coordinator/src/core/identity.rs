//! The rules of agents' identities, pure: join tokens (their form, their
//! limits, whether one may be redeemed), who may hold an agent session (a
//! revoked or banned name, a certificate that enrollment or renewal
//! replaced) and when a certificate is renewed. The records live in the
//! store under `/identity/` (`crate::identity`); the CA signs in
//! `drover_pki::enroll`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What every join token starts with, so one is recognisable in a leak
/// scanner and never taken for another secret.
pub const TOKEN_PREFIX: &str = "djt_";
/// A token's public id: 8 hex digits. Its secret: 64.
pub const TOKEN_ID_HEX: usize = 8;
pub const TOKEN_SECRET_HEX: usize = 64;
/// A token's life, by default (SPIRE's join tokens live 600 s).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(10);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The most tokens kept (used, expired and revoked ones count until they
/// are a day past their end, when creating a token prunes them).
pub const MAX_TOKENS: usize = 1000;
/// How long a used, expired or revoked token stays listed.
pub const TOKEN_KEPT: Duration = Duration::from_secs(24 * 3600);
/// An agent certificate's life, by default (`--agent-cert-ttl`), and its
/// bounds. Renewed at half of it.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MIN_CERT_TTL: Duration = Duration::from_secs(10);
pub const MAX_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Whom a join token enrolls: an agent (`drover agent-token create`) or a
/// user (`drover user add`, redeemed by `drover login`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    #[default]
    Agent,
    User,
}

/// A join token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    #[serde(default)]
    pub kind: TokenKind,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// SHA-256 of the secret part, hex.
    pub hash: String,
    pub created_by: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    #[serde(default)]
    pub used_ms: Option<i64>,
    /// Where it was used from.
    #[serde(default)]
    pub used_from: String,
    #[serde(default)]
    pub revoked_ms: Option<i64>,
    #[serde(default)]
    pub revoked_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Unused,
    Used,
    Expired,
    Revoked,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Unused => "unused",
            TokenState::Used => "used",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }
}

impl TokenRecord {
    /// The command that makes a new token for the same name.
    pub fn fix(&self) -> String {
        match self.kind {
            TokenKind::Agent => format!("`drover agent-token create --name {}`", self.name),
            TokenKind::User => format!("`drover user add {} --role ROLE`", self.name),
        }
    }

    pub fn state(&self, now_ms: i64) -> TokenState {
        match (self.used_ms, self.revoked_ms) {
            (Some(_), _) => TokenState::Used,
            (None, Some(_)) => TokenState::Revoked,
            (None, None) if now_ms >= self.expires_ms => TokenState::Expired,
            (None, None) => TokenState::Unused,
        }
    }

    /// When it stopped being usable, and by whom or from where.
    pub fn ended(&self) -> (i64, &str) {
        match (self.used_ms, self.revoked_ms) {
            (Some(at), _) => (at, &self.used_from),
            (None, Some(at)) => (at, &self.revoked_by),
            (None, None) => (0, ""),
        }
    }

    /// Whether creating a token may drop it: ended a day ago.
    pub fn prunable(&self, now_ms: i64) -> bool {
        let end = match (self.used_ms, self.revoked_ms) {
            (Some(at), _) | (None, Some(at)) => at,
            (None, None) => self.expires_ms,
        };
        self.state(now_ms) != TokenState::Unused && now_ms - end >= TOKEN_KEPT.as_millis() as i64
    }
}

/// A join token as given: its public id and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub secret: String,
}

impl Token {
    /// `djt_{id}_{secret}`, from random bytes (4 for the id, 32 for the secret).
    pub fn from_bytes(id: [u8; 4], secret: [u8; 32]) -> Token {
        Token { id: hex(&id), secret: hex(&secret) }
    }

    pub fn text(&self) -> String {
        format!("{TOKEN_PREFIX}{}_{}", self.id, self.secret)
    }

    /// Reads a token as printed. The error never repeats the text: it may
    /// be a real token with a typo.
    pub fn parse(text: &str) -> Result<Token, Refusal> {
        let rest = text.trim().strip_prefix(TOKEN_PREFIX).ok_or(Refusal::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(Refusal::Malformed)?;
        let is_hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_hex(id, TOKEN_ID_HEX) || !is_hex(secret, TOKEN_SECRET_HEX) {
            return Err(Refusal::Malformed);
        }
        Ok(Token { id: id.to_owned(), secret: secret.to_owned() })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An enrolled agent: the certificate it holds now (and the one before,
/// which stays accepted until it expires, so a renewal never cuts a session
/// that reconnects on the old files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub serial: String,
    #[serde(default)]
    pub previous_serial: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    /// When the current certificate was signed (its not-before is a
    /// little earlier, for clock skew).
    pub signed_ms: i64,
    pub enrolled_ms: i64,
    #[serde(default)]
    pub renewals: u32,
    /// The token it enrolled with.
    pub token: String,
    /// The pin of the CA that signed its current certificate; empty: the
    /// CA of the files, from before any rotation (`core::ca`).
    #[serde(default)]
    pub ca: String,
}

impl IdentityRecord {
    /// When its current certificate should be renewed: half its life.
    pub fn renew_at_ms(&self) -> i64 {
        self.signed_ms + (self.not_after_ms - self.signed_ms) / 2
    }
}

/// A name on the deny list: revoked (its certificates refused, a new
/// enrollment lifts it) or banned (and no enrollment until unbanned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub ban: bool,
    pub by: String,
    pub at_ms: i64,
}

impl Denial {
    pub fn state(&self) -> &'static str {
        if self.ban { "banned" } else { "revoked" }
    }
}

/// Why a token, an enrollment or a session was refused; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this is not a join token (they read djt_ID_SECRET); copy it whole from `drover agent-token create`")]
    Malformed,
    #[error(
        "no such join token (never created, or pruned a day after it ended); create one with `drover agent-token create --name NAME`"
    )]
    Unknown,
    #[error(
        "join token {id} was already used (at {at_ms} ms, from {from}); tokens are single-use: create a new one with {fix}"
    )]
    Used { id: String, fix: String, at_ms: i64, from: String },
    #[error("join token {id} expired {ago_s}s ago; create a new one with {fix}")]
    Expired { id: String, fix: String, ago_s: i64 },
    #[error("join token {id} was revoked by {by}; create a new one with {fix}")]
    Revoked { id: String, fix: String, by: String },
    #[error("agent {name:?} is banned (by {by}): it cannot enroll or connect until `drover agent unban {name}`")]
    Banned { name: String, by: String },
    #[error(
        "agent {name:?} was revoked (by {by}): its certificates are refused; enroll it again with a new join token (`drover agent-token create --name {name}`)"
    )]
    AgentRevoked { name: String, by: String },
    #[error(
        "this certificate (serial {serial}) is no longer agent {name:?}'s: the agent enrolled or renewed since; use the agent's current certificate"
    )]
    Replaced { name: String, serial: String },
    #[error(
        "this certificate is no longer user {name:?}'s (it logged in since, with serial {serial}); use its current \
         certificate, or log in again with `drover login`"
    )]
    UserReplaced { name: String, serial: String },
}

/// Whether the token stored under `id` may be redeemed now by the holder of
/// `secret_hash`, for a name that is `denied` or not. The secret is
/// compared in constant time.
pub fn redeem(
    id: &str,
    record: Option<&TokenRecord>,
    secret_hash: &str,
    denied: Option<&Denial>,
    now_ms: i64,
) -> Result<(), Refusal> {
    let Some(t) = record else { return Err(Refusal::Unknown) };
    // Both are SHA-256 in hex: compared without an early exit anyway.
    let differ = t.hash.len() != secret_hash.len()
        || t.hash.bytes().zip(secret_hash.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0;
    if differ {
        return Err(Refusal::Unknown);
    }
    let (id, fix) = (id.to_owned(), t.fix());
    match t.state(now_ms) {
        TokenState::Used => {
            return Err(Refusal::Used { id, fix, at_ms: t.used_ms.unwrap_or(0), from: t.used_from.clone() });
        }
        TokenState::Revoked => return Err(Refusal::Revoked { id, fix, by: t.revoked_by.clone() }),
        TokenState::Expired => return Err(Refusal::Expired { id, fix, ago_s: (now_ms - t.expires_ms) / 1000 }),
        TokenState::Unused => {}
    }
    if let Some(d) = denied.filter(|d| d.ban && t.kind == TokenKind::Agent) {
        return Err(Refusal::Banned { name: t.name.clone(), by: d.by.clone() });
    }
    Ok(())
}

/// A user (`drover user add`): its role, and the certificate it enrolled
/// last with `drover login` (only that one is accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub role: crate::core::authz::Role,
    pub created_by: String,
    pub created_ms: i64,
    #[serde(default)]
    pub updated_by: String,
    #[serde(default)]
    pub updated_ms: i64,
    #[serde(default)]
    pub serial: String,
    #[serde(default)]
    pub not_after_ms: i64,
    /// The pin of the CA that signed its certificate (see
    /// [`IdentityRecord::ca`]).
    #[serde(default)]
    pub ca: String,
}

/// The role of user `name` presenting a certificate with `serial`: none
/// when the user is not on record (removed, or never added) or the
/// certificate is not the one it enrolled last. Deny wins.
pub fn user_role(name: &str, serial: &str, record: Option<&UserRecord>) -> Result<crate::core::authz::Role, String> {
    match record {
        None => Err(format!(
            "user {name:?} is not on record (removed, or never added); an admin adds users with \
             `drover user add {name} --role viewer|operator|admin`"
        )),
        Some(u) if u.serial != serial => Err(format!(
            "this certificate (serial {serial}) is no longer user {name:?}'s; log in again with a new token \
             (`drover user add {name} --role {}` by an admin)",
            u.role.as_str()
        )),
        Some(u) => Ok(u.role),
    }
}

/// Whether agent `name`, presenting a certificate with `serial`, may hold a
/// session or renew: not on the deny list, and, once it has enrolled, with
/// its current certificate or the one before. A name that never enrolled
/// (a certificate issued by hand with `drover certs issue-agent`) is
/// judged by the deny list alone.
pub fn admit(
    name: &str,
    serial: &str,
    identity: Option<&IdentityRecord>,
    denied: Option<&Denial>,
) -> Result<(), Refusal> {
    if let Some(d) = denied {
        let (name, by) = (name.to_owned(), d.by.clone());
        return Err(if d.ban { Refusal::Banned { name, by } } else { Refusal::AgentRevoked { name, by } });
    }
    match identity {
        Some(i) if i.serial != serial && (i.previous_serial.is_empty() || i.previous_serial != serial) => {
            Err(Refusal::Replaced { name: name.to_owned(), serial: serial.to_owned() })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a case expects: Ok, or an error containing the text.
    type Want = Result<(), &'static str>;
    type RedeemCase<'a> = (Option<TokenRecord>, &'a str, Option<&'a Denial>, i64, Want);
    type AdmitCase<'a> = (&'a str, Option<&'a IdentityRecord>, Option<&'a Denial>, Want);

    fn token(used: Option<i64>, revoked: Option<i64>) -> TokenRecord {
        TokenRecord {
            kind: TokenKind::Agent,
            name: "a1".into(),
            labels: BTreeMap::new(),
            hash: "ab".repeat(32),
            created_by: "admin:root".into(),
            created_ms: 0,
            expires_ms: 600_000,
            used_ms: used,
            used_from: if used.is_some() { "10.0.0.9:5000".into() } else { String::new() },
            revoked_ms: revoked,
            revoked_by: if revoked.is_some() { "admin:root".into() } else { String::new() },
        }
    }

    #[test]
    fn tokens_read_back_as_made_and_nothing_else_reads_as_one() {
        let t = Token::from_bytes([0xde, 0xad, 0xbe, 0xef], [7; 32]);
        assert_eq!(t.text(), format!("djt_deadbeef_{}", "07".repeat(32)));
        assert_eq!(Token::parse(&format!(" {} \n", t.text())).unwrap(), t);
        let secret = "07".repeat(32);
        for bad in [
            String::new(),
            format!("deadbeef_{secret}"),
            format!("djt_deadbee_{secret}"),
            format!("djt_DEADBEEF_{secret}"),
            format!("djt_deadbeef_{}", &secret[1..]),
            format!("djt_deadbeef{secret}"),
            format!("djt_deadbeef_{secret}x"),
        ] {
            assert_eq!(Token::parse(&bad), Err(Refusal::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_token_is_redeemed_once_before_it_expires_and_never_for_a_banned_name() {
        let good = "ab".repeat(32);
        let ban = Denial { ban: true, by: "admin:root".into(), at_ms: 1 };
        let revoked = Denial { ban: false, by: "admin:root".into(), at_ms: 1 };
        let unused = token(None, None);
        let user = TokenRecord { kind: TokenKind::User, ..token(None, None) };
        let cases: Vec<RedeemCase> = vec![
            (Some(unused.clone()), &good, None, 1_000, Ok(())),
            // A revocation (not a ban) is lifted by enrolling again.
            (Some(unused.clone()), &good, Some(&revoked), 1_000, Ok(())),
            (None, &good, None, 1_000, Err("no such join token")),
            (Some(unused.clone()), "cd", None, 1_000, Err("no such join token")),
            (Some(unused.clone()), &good, None, 600_000, Err("join token t1 expired 0s ago")),
            (Some(unused.clone()), &good, None, 660_000, Err("expired 60s ago")),
            (Some(token(Some(5), None)), &good, None, 1_000, Err("was already used (at 5 ms, from 10.0.0.9:5000)")),
            (Some(token(None, Some(5))), &good, None, 1_000, Err("was revoked by admin:root")),
            (Some(unused.clone()), &good, Some(&ban), 1_000, Err("agent \"a1\" is banned (by admin:root)")),
            // A user's token says how a user gets a new one, and the agents'
            // deny list is not the users'.
            (Some(user.clone()), &good, None, 660_000, Err("create a new one with `drover user add a1 --role ROLE`")),
            (Some(user.clone()), &good, Some(&ban), 1_000, Ok(())),
        ];
        for (record, hash, denied, now, want) in cases {
            let got = redeem("t1", record.as_ref(), hash, denied, now).map_err(|e| e.to_string());
            match (&got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(want)) => assert!(e.contains(want), "want {want:?}: {e}"),
                _ => panic!("{record:?} {hash} {denied:?} {now}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn token_states_and_pruning() {
        let day = TOKEN_KEPT.as_millis() as i64;
        let cases = [
            (token(None, None), 0, TokenState::Unused, false),
            (token(None, None), 600_000, TokenState::Expired, false),
            (token(None, None), 600_000 + day, TokenState::Expired, true),
            (token(Some(10), None), 20, TokenState::Used, false),
            (token(Some(10), None), 10 + day, TokenState::Used, true),
            (token(None, Some(10)), 10 + day - 1, TokenState::Revoked, false),
            (token(Some(10), Some(5)), 20, TokenState::Used, false),
        ];
        for (t, now, state, prunable) in cases {
            assert_eq!(t.state(now), state, "{t:?} at {now}");
            assert_eq!(t.prunable(now), prunable, "{t:?} at {now}");
        }
    }

    #[test]
    fn a_session_needs_a_name_off_the_deny_list_and_its_current_certificate() {
        let id = IdentityRecord {
            name: "a1".into(),
            labels: BTreeMap::new(),
            serial: "02".into(),
            previous_serial: "01".into(),
            not_before_ms: 900,
            not_after_ms: 3_000,
            signed_ms: 1_000,
            enrolled_ms: 1_000,
            renewals: 1,
            token: "t1".into(),
            ca: String::new(),
        };
        let fresh = IdentityRecord { previous_serial: String::new(), ..id.clone() };
        let ban = Denial { ban: true, by: "admin:root".into(), at_ms: 1 };
        let revoked = Denial { ban: false, by: "admin:bob".into(), at_ms: 1 };
        let cases: Vec<AdmitCase> = vec![
            ("02", Some(&id), None, Ok(())),
            ("01", Some(&id), None, Ok(())),
            ("03", Some(&id), None, Err("serial 03) is no longer agent \"a1\"'s")),
            ("", Some(&fresh), None, Err("is no longer")),
            // Hand-issued: the deny list alone.
            ("99", None, None, Ok(())),
            ("99", None, Some(&revoked), Err("agent \"a1\" was revoked (by admin:bob)")),
            ("02", Some(&id), Some(&ban), Err("agent \"a1\" is banned")),
        ];
        for (serial, identity, denied, want) in cases {
            let got = admit("a1", serial, identity, denied).map_err(|e| e.to_string());
            match (&got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(want)) => assert!(e.contains(want), "want {want:?}: {e}"),
                _ => panic!("{serial} {identity:?} {denied:?}: want {want:?}, got {got:?}"),
            }
        }
        assert_eq!(id.renew_at_ms(), 2_000);
    }

    #[test]
    fn a_user_has_its_role_only_with_the_certificate_it_enrolled_last() {
        use crate::core::authz::Role;
        let u = UserRecord {
            role: Role::Operator,
            created_by: "admin:root".into(),
            created_ms: 1,
            updated_by: String::new(),
            updated_ms: 0,
            serial: "0a".into(),
            not_after_ms: 10,
            ca: String::new(),
        };
        assert_eq!(user_role("bob", "0a", Some(&u)), Ok(Role::Operator));
        let err = user_role("bob", "0b", Some(&u)).unwrap_err();
        assert!(err.contains("serial 0b) is no longer user \"bob\"'s") && err.contains("--role operator"), "{err}");
        let fresh = UserRecord { serial: String::new(), ..u };
        assert!(user_role("bob", "0a", Some(&fresh)).is_err());
        assert!(user_role("bob", "0a", None).unwrap_err().contains("not on record"));
    }
}
