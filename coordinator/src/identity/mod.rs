//! Agents' identities in the store: join tokens made, listed, revoked and
//! redeemed; enrolled agents' certificates signed and renewed; the deny
//! list. Any coordinator does this (straight to the store, like secrets);
//! each change is one transaction with its audit entry, and a token is
//! burned in the transaction that records the identity it bought. The
//! rules are `core::identity`'s; [`gate`] keeps every coordinator's view of
//! the deny list and current certificates, which agent sessions are
//! checked against and closed by.

pub mod ca;
pub mod gate;
pub mod job_key;
pub mod users;

use std::collections::BTreeMap;
use std::time::Duration;

use drover_pki::enroll::{Authority, CsrError, Signed};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::audit::{self, Entry};
use crate::core::identity::{
    DEFAULT_TOKEN_TTL, Denial, IdentityRecord, MAX_TOKEN_TTL, MAX_TOKENS, MIN_TOKEN_TTL, Refusal, Token, TokenKind,
    TokenRecord, TokenState, admit, hex, redeem,
};
use crate::core::keys;
use crate::store::{Compare, KeyValue, Op, Store, StoreError, Txn, decode};

pub use gate::Gate;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A token, enrollment or session refused: permission denied.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error(
        "this coordinator holds no CA key, so it cannot sign agents' certificates; give it the CA's key \
         (ca-key.pem in its --tls-dir, as `drover certs init` makes it, or --ca-key FILE)"
    )]
    NoAuthority,
    #[error("{0}")]
    Precondition(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What signing agents' certificates takes: the CAs (with no signing one,
/// enrollment is off) and how long a certificate lasts.
#[derive(Debug, Clone)]
pub struct Signing {
    pub keyring: std::sync::Arc<ca::Keyring>,
    pub cert_ttl: Duration,
    /// How long a user's certificate lasts (`--user-cert-ttl`); a user logs
    /// in again after it.
    pub user_cert_ttl: Duration,
}

impl Signing {
    /// The CA that signs now.
    pub fn authority(&self) -> Result<std::sync::Arc<Authority>, IdentityError> {
        let trust = self.keyring.trust();
        match (&trust.signer, &trust.problem) {
            (Some(signer), _) => Ok(signer.clone()),
            (None, Some(problem)) => Err(IdentityError::Precondition(problem.clone())),
            (None, None) => Err(IdentityError::NoAuthority),
        }
    }
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("identity records serialize")
}

pub(crate) async fn get<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(T, KeyValue)>, StoreError> {
    match store.get(key).await? {
        Some(kv) => Ok(Some((decode(&kv.key, &kv.value)?, kv))),
        None => Ok(None),
    }
}

/// The compare that holds `key` as it was read: unchanged, or still absent.
pub(crate) fn unchanged<T>(key: &str, seen: &Option<(T, KeyValue)>) -> Compare {
    match seen {
        Some((_, kv)) => Compare::ModRevision(key.to_owned(), kv.mod_revision),
        None => Compare::CreateRevision(key.to_owned(), 0),
    }
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), IdentityError> {
    if labels.is_empty() {
        return Ok(());
    }
    let text = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    match drover_client::labels::parse(&text) {
        Ok(parsed) if &parsed == labels => Ok(()),
        Ok(_) => Err(IdentityError::Invalid(format!("labels {text:?} do not read back as given"))),
        Err(e) => Err(IdentityError::Invalid(format!("invalid labels: {e}"))),
    }
}

/// `drover agent-token create`: a single-use token for agent `name` with
/// `labels`, for `ttl` (None: the default). Refused for a banned name.
/// Prunes tokens that ended a day ago in the same transaction.
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    labels: BTreeMap<String, String>,
    ttl: Option<Duration>,
    by: &str,
    source: Option<std::net::SocketAddr>,
    now_ms: i64,
) -> Result<(Token, TokenRecord), IdentityError> {
    drover_pki::ca::check_agent_name(name).map_err(|e| IdentityError::Invalid(e.to_string()))?;
    check_labels(&labels)?;
    let denial: Option<(Denial, KeyValue)> = get(store, &keys::denied(name)).await?;
    if let Some((d, _)) = denial.as_ref().filter(|(d, _)| d.ban) {
        return Err(Refusal::Banned { name: name.to_owned(), by: d.by.clone() }.into());
    }
    let (token, record, mut ops, compare) = new_token(store, TokenKind::Agent, name, labels, ttl, by, now_ms).await?;
    let entry = Entry::ok(now_ms, by, "agent-token.create", name)
        .source(source)
        .detail(&format!("token {} until {}", token.id, record.expires_ms));
    ops.push(audit::op(&entry));
    let txn = Txn { compare: vec![compare], success: ops, failure: Vec::new() };
    if !store.txn(txn).await?.succeeded {
        return Err(IdentityError::Precondition(
            "a token with the same id was made at the same moment; try again".into(),
        ));
    }
    Ok((token, record))
}

/// A new token of `kind` for `name`, and the writes that store it (and
/// prune tokens that ended a day ago) with the compare that keeps its id
/// unique, for the caller's transaction.
pub(crate) async fn new_token(
    store: &dyn Store,
    kind: TokenKind,
    name: &str,
    labels: BTreeMap<String, String>,
    ttl: Option<Duration>,
    by: &str,
    now_ms: i64,
) -> Result<(Token, TokenRecord, Vec<Op>, Compare), IdentityError> {
    let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL);
    if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
        return Err(IdentityError::Invalid(format!(
            "a join token lives {}s to {}h; {}s is outside that (the default is {} minutes)",
            MIN_TOKEN_TTL.as_secs(),
            MAX_TOKEN_TTL.as_secs() / 3600,
            ttl.as_secs(),
            DEFAULT_TOKEN_TTL.as_secs() / 60
        )));
    }
    let (existing, _) = store.range(keys::TOKENS).await?;
    let mut ops = Vec::new();
    let mut kept = 0;
    for kv in &existing {
        let t: TokenRecord = decode(&kv.key, &kv.value)?;
        if t.prunable(now_ms) { ops.push(Op::delete(kv.key.clone())) } else { kept += 1 }
    }
    if kept >= MAX_TOKENS {
        return Err(IdentityError::Precondition(format!(
            "{kept} join tokens are kept, the limit is {MAX_TOKENS}; revoke unused ones (`drover agent-token ls`, \
             `drover agent-token revoke ID`); ended ones go a day after they end"
        )));
    }
    let rng = SystemRandom::new();
    let (mut id, mut secret) = ([0u8; 4], [0u8; 32]);
    rng.fill(&mut id)
        .and_then(|()| rng.fill(&mut secret))
        .map_err(|_| IdentityError::Precondition("the system has no randomness to make a token with".into()))?;
    let token = Token::from_bytes(id, secret);
    let record = TokenRecord {
        kind,
        name: name.to_owned(),
        labels,
        hash: sha256_hex(&token.secret),
        created_by: by.to_owned(),
        created_ms: now_ms,
        expires_ms: now_ms + ttl.as_millis() as i64,
        used_ms: None,
        used_from: String::new(),
        revoked_ms: None,
        revoked_by: String::new(),
    };
    let key = keys::token(&token.id);
    ops.push(Op::put(key.clone(), encode(&record)));
    Ok((token, record, ops, Compare::CreateRevision(key, 0)))
}

/// Every join token kept, by id.
pub async fn list_tokens(store: &dyn Store) -> Result<Vec<(String, TokenRecord)>, StoreError> {
    let (kvs, _) = store.range(keys::TOKENS).await?;
    kvs.iter().map(|kv| Ok((kv.key[keys::TOKENS.len()..].to_owned(), decode(&kv.key, &kv.value)?))).collect()
}

/// `drover agent-token revoke ID`: an unused token can no longer be used.
pub async fn revoke_token(
    store: &dyn Store,
    id: &str,
    by: &str,
    source: Option<std::net::SocketAddr>,
    now_ms: i64,
) -> Result<TokenRecord, IdentityError> {
    let key = keys::token(id);
    let seen: Option<(TokenRecord, KeyValue)> = get(store, &key).await?;
    let Some((mut t, _)) = seen.clone() else {
        return Err(IdentityError::NotFound(format!("no join token {id:?}; `drover agent-token ls` lists them by id")));
    };
    match t.state(now_ms) {
        TokenState::Used => {
            return Err(IdentityError::Precondition(format!(
                "join token {id} was already used by agent {:?}; to cut that agent off, `drover agent revoke {}`",
                t.name, t.name
            )));
        }
        TokenState::Revoked => return Ok(t),
        TokenState::Unused | TokenState::Expired => {}
    }
    t.revoked_ms = Some(now_ms);
    t.revoked_by = by.to_owned();
    let entry = Entry::ok(now_ms, by, "agent-token.revoke", &t.name).source(source).detail(&format!("token {id}"));
    let txn = Txn {
        compare: vec![unchanged(&key, &seen)],
        success: vec![Op::put(key, encode(&t)), audit::op(&entry)],
        failure: Vec::new(),
    };
    if !store.txn(txn).await?.succeeded {
        return Err(IdentityError::Precondition(format!("join token {id} changed meanwhile (used?); list it again")));
    }
    Ok(t)
}

/// Redeems a join token for the key in `csr`: the identity recorded and
/// the token burned in one transaction with the audit entry. Every refusal
/// is audited too, at warning level when the token was wrong.
pub async fn enroll(
    store: &dyn Store,
    (signing, refusals): (&Signing, &audit::Throttle),
    token_text: &str,
    csr: &[u8],
    source: Option<std::net::SocketAddr>,
    now_ms: i64,
) -> Result<(IdentityRecord, Signed), IdentityError> {
    // Enrollment is served without a certificate: refusals are audited at
    // most once a minute per address, so a caller guessing tokens cannot
    // flood the audit log.
    let address = source.map(|a| a.ip().to_string()).unwrap_or_default();
    let refuse = |actor: &str, target: &str, e: &IdentityError| {
        let left_out = refusals.allow(&format!("enroll:{address}"), std::time::Instant::now(), audit::REFUSAL_EVERY)?;
        let mut why = e.to_string();
        if left_out > 0 {
            why = format!("{why} ({left_out} more refusals from this address since the last entry)");
        }
        Some(Entry::refused(now_ms, actor, "agent.enroll", target, &why).source(source).warning())
    };
    let token = match Token::parse(token_text) {
        Ok(t) => t,
        Err(r) => {
            let e = IdentityError::from(r);
            if let Some(entry) = refuse("anonymous", "", &e) {
                audit::record(store, entry).await;
            }
            return Err(e);
        }
    };
    let actor = format!("token:{}", token.id);
    let result = redeem_and_sign(store, signing, &token, csr, source, now_ms).await;
    if let Err(e) = &result {
        let target = match get::<TokenRecord>(store, &keys::token(&token.id)).await {
            Ok(Some((t, _))) => t.name,
            _ => String::new(),
        };
        if let Some(entry) = refuse(&actor, &target, e) {
            audit::record(store, entry).await;
        }
    }
    result
}

async fn redeem_and_sign(
    store: &dyn Store,
    signing: &Signing,
    token: &Token,
    csr: &[u8],
    source: Option<std::net::SocketAddr>,
    now_ms: i64,
) -> Result<(IdentityRecord, Signed), IdentityError> {
    let authority = signing.authority()?;
    let token_key = keys::token(&token.id);
    let seen: Option<(TokenRecord, KeyValue)> = get(store, &token_key).await?;
    let name = seen.as_ref().map(|(t, _)| t.name.clone()).unwrap_or_default();
    let denial_key = keys::denied(&name);
    let denial: Option<(Denial, KeyValue)> = if name.is_empty() { None } else { get(store, &denial_key).await? };
    redeem(
        &token.id,
        seen.as_ref().map(|(t, _)| t),
        &sha256_hex(&token.secret),
        denial.as_ref().map(|(d, _)| d),
        now_ms,
    )?;
    let (mut t, _) = seen.clone().expect("redeem found it");
    if t.kind == TokenKind::User {
        return redeem_user(store, signing, token, (t, seen), csr, source, now_ms).await;
    }
    let signed = authority.sign_agent(csr, &t.name, &t.labels, now_ms, signing.cert_ttl)?;
    let identity_key = keys::identity(&t.name);
    let before: Option<(IdentityRecord, KeyValue)> = get(store, &identity_key).await?;
    let identity = enrolled(&t.name, t.labels.clone(), (&signed, authority.pin()), &token.id, now_ms);
    t.used_ms = Some(now_ms);
    t.used_from = source.map(|a| a.to_string()).unwrap_or_else(|| "an unknown address".into());
    let detail = match (&before, &denial) {
        (_, Some(_)) => format!("token {}; serial {}; lifts its revocation", token.id, signed.serial),
        (Some(_), None) => format!("token {}; serial {}; replaces its certificate", token.id, signed.serial),
        (None, None) => format!("token {}; serial {}", token.id, signed.serial),
    };
    let entry =
        Entry::ok(now_ms, &format!("token:{}", token.id), "agent.enroll", &t.name).source(source).detail(&detail);
    let mut success = vec![
        Op::put(token_key.clone(), encode(&t)),
        Op::put(identity_key.clone(), encode(&identity)),
        audit::op(&entry),
    ];
    if denial.is_some() {
        success.push(Op::delete(denial_key.clone()));
    }
    let txn = Txn {
        compare: vec![unchanged(&token_key, &seen), unchanged(&identity_key, &before), unchanged(&denial_key, &denial)],
        success,
        failure: Vec::new(),
    };
    if !store.txn(txn).await?.succeeded {
        return Err(IdentityError::Precondition(format!(
            "join token {} or agent {:?} changed while it was being redeemed (a second use of the token?); \
             create a new token",
            token.id, t.name
        )));
    }
    Ok((identity, signed))
}

/// The identity a certificate signed at enrollment, with `token`, gives.
fn enrolled(
    name: &str,
    labels: BTreeMap<String, String>,
    (signed, ca): (&Signed, &str),
    token: &str,
    now_ms: i64,
) -> IdentityRecord {
    IdentityRecord {
        name: name.to_owned(),
        labels,
        serial: signed.serial.clone(),
        previous_serial: String::new(),
        not_before_ms: signed.not_before_ms,
        not_after_ms: signed.not_after_ms,
        signed_ms: now_ms,
        enrolled_ms: now_ms,
        renewals: 0,
        token: token.to_owned(),
        ca: ca.to_owned(),
    }
}

/// A user's token redeemed: the user's certificate signed and recorded,
/// the token burned, in one transaction. The identity returned names the
/// user, with no labels.
async fn redeem_user(
    store: &dyn Store,
    signing: &Signing,
    token: &Token,
    (mut t, seen): (TokenRecord, Option<(TokenRecord, KeyValue)>),
    csr: &[u8],
    source: Option<std::net::SocketAddr>,
    now_ms: i64,
) -> Result<(IdentityRecord, Signed), IdentityError> {
    let (signed, ca, mut ops, compare) = users::enroll_user(store, signing, &t.name, csr, now_ms).await?;
    t.used_ms = Some(now_ms);
    t.used_from = source.map(|a| a.to_string()).unwrap_or_else(|| "an unknown address".into());
    let token_key = keys::token(&token.id);
    let entry = Entry::ok(now_ms, &format!("token:{}", token.id), "user.login", &t.name)
        .source(source)
        .detail(&format!("token {}; serial {}", token.id, signed.serial));
    ops.push(Op::put(token_key.clone(), encode(&t)));
    ops.push(audit::op(&entry));
    let txn = Txn { compare: vec![unchanged(&token_key, &seen), compare], success: ops, failure: Vec::new() };
    if !store.txn(txn).await?.succeeded {
        return Err(IdentityError::Precondition(format!(
            "join token {} or user {:?} changed while it was being redeemed; ask for a new token",
            token.id, t.name
        )));
    }
    let identity = enrolled(&t.name, BTreeMap::new(), (&signed, &ca), &token.id, now_ms);
    Ok((identity, signed))
}

/// An enrolled agent presenting its current certificate (`serial`) gets a
/// new one for the key in `csr`, with the name and labels on record; the
/// old one stays accepted until it expires.
pub async fn renew(
    store: &dyn Store,
    signing: &Signing,
    name: &str,
    serial: &str,
    csr: &[u8],
    source: Option<std::net::SocketAddr>,
    now_ms: i64,
) -> Result<(IdentityRecord, Signed), IdentityError> {
    let actor = format!("agent:{name}");
    let result = async {
        let authority = signing.authority()?;
        let key = keys::identity(name);
        let seen: Option<(IdentityRecord, KeyValue)> = get(store, &key).await?;
        let denial: Option<(Denial, KeyValue)> = get(store, &keys::denied(name)).await?;
        admit(name, serial, seen.as_ref().map(|(i, _)| i), denial.as_ref().map(|(d, _)| d))?;
        let Some((mut identity, _)) = seen.clone() else {
            return Err(IdentityError::Precondition(format!(
                "agent {name:?} holds a certificate issued by hand (`drover certs issue-agent`), which is not \
                 renewed; enroll it with a join token to have its certificate renewed"
            )));
        };
        if identity.serial != serial {
            return Err(IdentityError::Precondition(format!(
                "agent {name:?} renewed already (its current certificate is serial {}); reconnect with it",
                identity.serial
            )));
        }
        // Off the async workers: a burst of renewals (a CA's reissue, a
        // fleet started at once) must not hold up the scheduler's turns.
        let (csr_owned, labels, ttl, who) = (csr.to_vec(), identity.labels.clone(), signing.cert_ttl, name.to_owned());
        let signer = authority.clone();
        let signed = tokio::task::spawn_blocking(move || signer.sign_agent(&csr_owned, &who, &labels, now_ms, ttl))
            .await
            .map_err(|e| IdentityError::Csr(CsrError::Sign(format!("the signing task failed: {e}"))))??;
        identity.previous_serial = std::mem::replace(&mut identity.serial, signed.serial.clone());
        identity.not_before_ms = signed.not_before_ms;
        identity.not_after_ms = signed.not_after_ms;
        identity.signed_ms = now_ms;
        identity.renewals += 1;
        identity.ca = authority.pin().to_owned();
        let entry = Entry::ok(now_ms, &actor, "agent.renew", name)
            .source(source)
            .detail(&format!("serial {} replaces {}", identity.serial, identity.previous_serial));
        let txn = Txn {
            compare: vec![unchanged(&key, &seen), unchanged(&keys::denied(name), &denial)],
            success: vec![Op::put(key, encode(&identity)), audit::op(&entry)],
            failure: Vec::new(),
        };
        if !store.txn(txn).await?.succeeded {
            return Err(IdentityError::Precondition(format!(
                "agent {name:?}'s identity changed while it renewed (revoked, or enrolled again); try again"
            )));
        }
        Ok((identity, signed))
    }
    .await;
    if let Err(e) = &result {
        let warn = matches!(e, IdentityError::Refused(_));
        let entry = Entry::refused(now_ms, &actor, "agent.renew", name, &e.to_string()).source(source);
        audit::record(store, if warn { entry.warning() } else { entry }).await;
    }
    result
}

/// What `drover agent revoke|ban|unban` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Revoke,
    Ban,
    Unban,
}

impl Access {
    pub fn parse(text: &str) -> Result<Access, IdentityError> {
        match text {
            "revoke" => Ok(Access::Revoke),
            "ban" => Ok(Access::Ban),
            "unban" => Ok(Access::Unban),
            other => Err(IdentityError::Invalid(format!("unknown action {other:?}: use revoke, ban or unban"))),
        }
    }

    fn action(self) -> &'static str {
        match self {
            Access::Revoke => "agent.revoke",
            Access::Ban => "agent.ban",
            Access::Unban => "agent.unban",
        }
    }
}

/// Puts `name` on the deny list (revoke, ban) or takes it off (unban).
/// Every coordinator's [`Gate`] sees the change through its watch and closes
/// the agent's sessions. Returns the name's state after it.
pub async fn set_access(
    store: &dyn Store,
    name: &str,
    access: Access,
    by: &str,
    source: Option<std::net::SocketAddr>,
    now_ms: i64,
) -> Result<Option<Denial>, IdentityError> {
    drover_pki::ca::check_agent_name(name).map_err(|e| IdentityError::Invalid(e.to_string()))?;
    let key = keys::denied(name);
    let denial = match access {
        Access::Revoke => Some(Denial { ban: false, by: by.to_owned(), at_ms: now_ms }),
        Access::Ban => Some(Denial { ban: true, by: by.to_owned(), at_ms: now_ms }),
        Access::Unban => None,
    };
    let entry = Entry::ok(now_ms, by, access.action(), name).source(source);
    let write = match &denial {
        Some(d) => Op::put(key, encode(d)),
        None => Op::delete(key),
    };
    store.txn(Txn::ops(vec![write, audit::op(&entry)])).await?;
    Ok(denial)
}

/// Every enrolled agent and every name on the deny list, by name.
pub async fn list_identities(
    store: &dyn Store,
) -> Result<BTreeMap<String, (Option<IdentityRecord>, Option<Denial>)>, StoreError> {
    let mut out: BTreeMap<String, (Option<IdentityRecord>, Option<Denial>)> = BTreeMap::new();
    let (ids, _) = store.range(keys::IDENTITIES).await?;
    for kv in ids {
        let i: IdentityRecord = decode(&kv.key, &kv.value)?;
        let name = i.name.clone();
        out.entry(name).or_default().0 = Some(i);
    }
    let (denied, _) = store.range(keys::DENIED).await?;
    for kv in denied {
        let d: Denial = decode(&kv.key, &kv.value)?;
        out.entry(kv.key[keys::DENIED.len()..].to_owned()).or_default().1 = Some(d);
    }
    Ok(out)
}
