//! Users and their roles (`drover user add|role|rm`, `drover users`): a
//! user is a record of its role under `/identity/users/{name}`, and enrolls
//! a key of its own with a join token of kind user (`drover login`), as an
//! agent does. Only the certificate it enrolled last carries its role;
//! removing the user takes the role from every certificate at once.

use drover_pki::enroll::Signed;

use super::{IdentityError, encode, get, new_token, unchanged};
use crate::audit::{self, Entry};
use crate::core::authz::Role;
use crate::core::identity::{Token, TokenKind, TokenRecord, UserRecord};
use crate::core::keys;
use crate::store::{KeyValue, Op, Store, StoreError, Txn, decode};

/// `drover user add NAME --role R`: records the user (or finds it with the
/// same role) and makes a join token for it to log in with; a user that
/// exists with another role is refused (change it with `drover user role`).
pub async fn add_user(
    store: &dyn Store,
    name: &str,
    role: Role,
    ttl: Option<std::time::Duration>,
    (by, source): (&str, Option<std::net::SocketAddr>),
    now_ms: i64,
) -> Result<(UserRecord, Token, TokenRecord), IdentityError> {
    drover_pki::ca::check_agent_name(name)
        .map_err(|e| IdentityError::Invalid(e.to_string().replace("agent name", "user name")))?;
    let key = keys::user(name);
    let seen: Option<(UserRecord, KeyValue)> = get(store, &key).await?;
    let user = match &seen {
        Some((u, _)) if u.role != role => {
            return Err(IdentityError::Precondition(format!(
                "user {name:?} exists with role {}; change its role with `drover user role {name} {}`",
                u.role.as_str(),
                role.as_str()
            )));
        }
        Some((u, _)) => u.clone(),
        None => UserRecord {
            role,
            created_by: by.to_owned(),
            created_ms: now_ms,
            updated_by: String::new(),
            updated_ms: 0,
            serial: String::new(),
            not_after_ms: 0,
            ca: String::new(),
        },
    };
    let (token, record, mut ops, compare) =
        new_token(store, TokenKind::User, name, Default::default(), ttl, by, now_ms).await?;
    let action = if seen.is_some() { "user.token" } else { "user.add" };
    let entry = Entry::ok(now_ms, by, action, name).source(source).detail(&format!(
        "role {}; token {}",
        role.as_str(),
        token.id
    ));
    ops.push(Op::put(key.clone(), encode(&user)));
    ops.push(audit::op(&entry));
    let txn = Txn { compare: vec![compare, unchanged(&key, &seen)], success: ops, failure: Vec::new() };
    if !store.txn(txn).await?.succeeded {
        return Err(IdentityError::Precondition(format!("user {name:?} changed meanwhile; try again")));
    }
    Ok((user, token, record))
}

/// `drover user role NAME ROLE`.
pub async fn set_role(
    store: &dyn Store,
    name: &str,
    role: Role,
    (by, source): (&str, Option<std::net::SocketAddr>),
    now_ms: i64,
) -> Result<UserRecord, IdentityError> {
    let key = keys::user(name);
    let seen: Option<(UserRecord, KeyValue)> = get(store, &key).await?;
    let Some((mut user, _)) = seen.clone() else { return Err(not_found(name)) };
    let was = user.role;
    user.role = role;
    user.updated_by = by.to_owned();
    user.updated_ms = now_ms;
    let entry = Entry::ok(now_ms, by, "user.role", name).source(source).detail(&format!(
        "{} -> {}",
        was.as_str(),
        role.as_str()
    ));
    let txn = Txn {
        compare: vec![unchanged(&key, &seen)],
        success: vec![Op::put(key, encode(&user)), audit::op(&entry)],
        failure: Vec::new(),
    };
    if !store.txn(txn).await?.succeeded {
        return Err(IdentityError::Precondition(format!("user {name:?} changed meanwhile; try again")));
    }
    Ok(user)
}

/// `drover user rm NAME`: every call with its certificates is refused
/// from the next one on.
pub async fn remove(
    store: &dyn Store,
    name: &str,
    (by, source): (&str, Option<std::net::SocketAddr>),
    now_ms: i64,
) -> Result<UserRecord, IdentityError> {
    let key = keys::user(name);
    let seen: Option<(UserRecord, KeyValue)> = get(store, &key).await?;
    let Some((user, _)) = seen.clone() else { return Err(not_found(name)) };
    let entry =
        Entry::ok(now_ms, by, "user.remove", name).source(source).detail(&format!("role {}", user.role.as_str()));
    let txn = Txn {
        compare: vec![unchanged(&key, &seen)],
        success: vec![Op::delete(key), audit::op(&entry)],
        failure: Vec::new(),
    };
    if !store.txn(txn).await?.succeeded {
        return Err(IdentityError::Precondition(format!("user {name:?} changed meanwhile; try again")));
    }
    Ok(user)
}

fn not_found(name: &str) -> IdentityError {
    IdentityError::NotFound(format!("no user {name:?}; `drover users` lists them, `drover user add` adds one"))
}

/// Every user, by name.
pub async fn list(store: &dyn Store) -> Result<Vec<(String, UserRecord)>, StoreError> {
    let (kvs, _) = store.range(keys::USERS).await?;
    kvs.iter().map(|kv| Ok((kv.key[keys::USERS.len()..].to_owned(), decode(&kv.key, &kv.value)?))).collect()
}

/// The part of redeeming a user's token that is the user's: the user must
/// still be on record; the certificate is signed for it and recorded as its
/// only one. Returns the writes for the enrollment's transaction.
pub(super) async fn enroll_user(
    store: &dyn Store,
    signing: &super::Signing,
    name: &str,
    csr: &[u8],
    now_ms: i64,
) -> Result<(Signed, String, Vec<Op>, crate::store::Compare), IdentityError> {
    let key = keys::user(name);
    let seen: Option<(UserRecord, KeyValue)> = get(store, &key).await?;
    let Some((mut user, _)) = seen.clone() else {
        return Err(IdentityError::Precondition(format!(
            "user {name:?} was removed after its token was made; an admin adds it again with `drover user add`"
        )));
    };
    let authority = signing.authority()?;
    let signed = authority.sign_user(csr, name, now_ms, signing.user_cert_ttl)?;
    user.serial = signed.serial.clone();
    user.not_after_ms = signed.not_after_ms;
    user.ca = authority.pin().to_owned();
    Ok((signed, user.ca.clone(), vec![Op::put(key.clone(), encode(&user))], unchanged(&key, &seen)))
}

/// `drover ca refresh`: user `name`, presenting the certificate it enrolled
/// last (`serial`), gets a new one for the key in `csr` from the CA that
/// signs now, lasting `--user-cert-ttl`; recorded as its only one.
pub async fn renew_user(
    store: &dyn Store,
    signing: &super::Signing,
    name: &str,
    serial: &str,
    csr: &[u8],
    source: Option<std::net::SocketAddr>,
    now_ms: i64,
) -> Result<Signed, IdentityError> {
    let actor = format!("user:{name}");
    let result = async {
        let key = keys::user(name);
        let seen: Option<(UserRecord, KeyValue)> = get(store, &key).await?;
        let Some((user, _)) = &seen else { return Err(not_found(name)) };
        if user.serial != serial {
            let serial = user.serial.clone();
            return Err(crate::core::identity::Refusal::UserReplaced { name: name.to_owned(), serial }.into());
        }
        let (signed, _, mut ops, compare) = enroll_user(store, signing, name, csr, now_ms).await?;
        let entry = Entry::ok(now_ms, &actor, "user.renew", name)
            .source(source)
            .detail(&format!("serial {} replaces {serial}", signed.serial));
        ops.push(audit::op(&entry));
        if !store.txn(Txn { compare: vec![compare], success: ops, failure: Vec::new() }).await?.succeeded {
            return Err(IdentityError::Precondition(format!(
                "user {name:?} changed while it renewed (removed, or logged in again); try again"
            )));
        }
        Ok(signed)
    }
    .await;
    if let Err(e) = &result {
        let entry = Entry::refused(now_ms, &actor, "user.renew", name, &e.to_string()).source(source);
        audit::record(store, entry).await;
    }
    result
}

/// An administrator of `drover certs init` renewing its certificate (when
/// the CA rotates): the same name, from the CA that signs now, ending when
/// the one it presents ends (`not_after_ms`), so renewing never extends
/// what an administrator's certificate is good for.
pub async fn renew_admin(
    store: &dyn Store,
    signing: &super::Signing,
    name: &str,
    not_after_ms: i64,
    csr: &[u8],
    source: Option<std::net::SocketAddr>,
    now_ms: i64,
) -> Result<Signed, IdentityError> {
    let actor = format!("admin:{name}");
    let ttl = std::time::Duration::from_millis((not_after_ms - now_ms).max(60_000) as u64);
    let result = match signing.authority() {
        Ok(authority) => authority.sign_admin(csr, name, now_ms, ttl).map_err(IdentityError::from),
        Err(e) => Err(e),
    };
    let entry = match &result {
        Ok(signed) => Entry::ok(now_ms, &actor, "admin.renew", name).detail(&format!("serial {}", signed.serial)),
        Err(e) => Entry::refused(now_ms, &actor, "admin.renew", name, &e.to_string()),
    };
    audit::record(store, entry.source(source)).await;
    result
}
