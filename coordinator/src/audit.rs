//! The audit log: who did what to which, from where, when, and whether it
//! was allowed. Entries are appended to the store (`/audit/{day}/…`, never
//! rewritten), listed by `drover audit`, and pruned a day at a time by the
//! retention controller past `--audit-retention`. Each entry is logged too
//! (target `drover::audit`), refusals that look like forgeries at warning
//! level.
//!
//! What is recorded: join tokens created, used (or refused) and revoked;
//! agents enrolled, renewed, revoked, banned and unbanned, and refused
//! sessions; secrets set and removed; approvals; cancels. An entry that
//! changes state goes in the same transaction as the change where the
//! handler writes it ([`op`]); others are appended on their own
//! ([`record`]), and a store that cannot take one loses only the entry, with
//! an error in the log.

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::core::keys;
use crate::store::{Op, Store, StoreError, Txn, decode};

/// How many entries a listing returns at most, and by default.
pub const MAX_LIST: usize = 10_000;
pub const DEFAULT_LIST: usize = 1_000;
/// The longest detail kept.
pub const MAX_DETAIL: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ms: i64,
    /// `admin:NAME`, `agent:NAME`, `token:ID`, or `anonymous`.
    pub actor: String,
    #[serde(default)]
    pub source: String,
    pub action: String,
    #[serde(default)]
    pub target: String,
    /// "ok" or "refused".
    pub outcome: String,
    /// "info" or "warning".
    pub level: String,
    #[serde(default)]
    pub detail: String,
}

impl Entry {
    /// Something `actor` did to `target`, allowed.
    pub fn ok(at_ms: i64, actor: &str, action: &str, target: &str) -> Entry {
        Entry {
            at_ms,
            actor: actor.to_owned(),
            source: String::new(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: "ok".into(),
            level: "info".into(),
            detail: String::new(),
        }
    }

    /// Something `actor` tried and was refused, with why.
    pub fn refused(at_ms: i64, actor: &str, action: &str, target: &str, why: &str) -> Entry {
        Entry { outcome: "refused".into(), ..Entry::ok(at_ms, actor, action, target) }.detail(why)
    }

    pub fn source(mut self, source: Option<std::net::SocketAddr>) -> Entry {
        self.source = source.map(|a| a.to_string()).unwrap_or_default();
        self
    }

    pub fn detail(mut self, detail: &str) -> Entry {
        self.detail = crate::api::agent::bounded(detail, MAX_DETAIL);
        self
    }

    /// A refusal that looks like a forgery or an attack: logged as a warning.
    pub fn warning(mut self) -> Entry {
        self.level = "warning".into();
        self
    }

    fn log(&self) {
        let Entry { actor, source, action, target, outcome, detail, .. } = self;
        if self.level == "warning" {
            warn!(target: "drover::audit", %actor, %source, %action, %target, %outcome, %detail, "audit");
        } else {
            info!(target: "drover::audit", %actor, %source, %action, %target, %outcome, %detail, "audit");
        }
    }
}

fn suffix() -> String {
    let mut bytes = [0u8; 4];
    // Without randomness two entries of one millisecond could share a key;
    // the time then stands alone and the later one is dropped by the
    // create-only compare, which is logged.
    let _ = SystemRandom::new().fill(&mut bytes);
    crate::core::identity::hex(&bytes)
}

/// How often one agent name's refused sessions are audited: a revoked
/// agent that its supervisor restarts in a loop would otherwise write an
/// entry per attempt. The refusals in between are still counted
/// (`agent_refusals`) and logged.
pub const REFUSAL_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// The most names [`Throttle`] remembers; past it, it forgets those whose
/// interval has passed.
const THROTTLE_NAMES: usize = 10_000;

/// Which repeated entries to write: one per key per interval, with the
/// count of those left out since the last one written.
#[derive(Debug, Default)]
pub struct Throttle {
    seen: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
}

impl Throttle {
    /// Whether an entry for `key` at `now` is written (`Some(n)`: with `n`
    /// left out before it), or left out (`None`).
    pub fn allow(&self, key: &str, now: std::time::Instant, every: std::time::Duration) -> Option<u64> {
        let mut seen = self.seen.lock().expect("throttle lock");
        if seen.len() >= THROTTLE_NAMES {
            seen.retain(|_, (at, _)| now.duration_since(*at) < every);
        }
        match seen.get_mut(key) {
            Some((at, skipped)) if now.duration_since(*at) < every => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                *at = now;
                Some(std::mem::take(skipped))
            }
            None => {
                seen.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

/// The write that appends `entry`, for a transaction that makes the change
/// it records; logs it.
pub fn op(entry: &Entry) -> Op {
    entry.log();
    let key = keys::audit_entry(entry.at_ms, &suffix());
    Op::put(key, serde_json::to_vec(entry).expect("an entry serializes"))
}

/// Appends `entry` on its own. A store that refuses it costs only the
/// entry: the error is logged with what it said.
pub async fn record(store: &dyn Store, entry: Entry) {
    let put = op(&entry);
    let key = put.key().to_owned();
    let txn = Txn {
        compare: vec![crate::store::Compare::CreateRevision(key.clone(), 0)],
        success: vec![put],
        failure: Vec::new(),
    };
    match store.txn(txn).await {
        Ok(r) if r.succeeded => {}
        Ok(_) => error!(%key, action = %entry.action, "an audit entry's key was taken; the entry is lost"),
        Err(e) => error!(error = %e, action = %entry.action, actor = %entry.actor, "cannot append to the audit log"),
    }
}

/// Appends what `caller` did from `source`, allowed, now.
pub async fn by_caller(
    store: &dyn Store,
    (caller, source): (&crate::core::authz::Caller, Option<std::net::SocketAddr>),
    action: &str,
    target: &str,
    detail: &str,
) {
    let now = drover_telemetry::trace::now_ms() as i64;
    record(store, Entry::ok(now, &caller.actor(), action, target).source(source).detail(detail)).await;
}

/// Entries from `since_ms` on (0: all kept), by `actor` when given, oldest
/// first, at most `limit` (0: [`DEFAULT_LIST`]; past [`MAX_LIST`] cut to
/// it) of the newest that match.
pub async fn list(
    store: &dyn Store,
    since_ms: i64,
    actor: &str,
    limit: usize,
    now_ms: i64,
) -> Result<Vec<Entry>, StoreError> {
    let limit = if limit == 0 { DEFAULT_LIST } else { limit.min(MAX_LIST) };
    let mut prefixes = Vec::new();
    if since_ms <= 0 {
        prefixes.push(keys::AUDIT.to_owned());
    } else {
        let mut day = since_ms;
        while day <= now_ms + 86_400_000 {
            prefixes.push(keys::audit_day(day));
            day += 86_400_000;
        }
    }
    let mut out = Vec::new();
    for prefix in prefixes {
        let (kvs, _) = store.range(&prefix).await?;
        for kv in kvs {
            let entry: Entry = decode(&kv.key, &kv.value)?;
            if entry.at_ms >= since_ms && (actor.is_empty() || entry.actor == actor) {
                out.push(entry);
            }
        }
    }
    let skip = out.len().saturating_sub(limit);
    Ok(out.split_off(skip))
}

/// Deletes the days of entries wholly older than `before_ms`, from
/// `from_day` (a day number, `at_ms / 86_400_000`) on; returns the first day
/// kept, where the next prune may start.
pub async fn prune(store: &dyn Store, before_ms: i64, from_day: i64) -> Result<i64, StoreError> {
    let first_kept = before_ms.max(0) / 86_400_000;
    let ops: Vec<Op> = (from_day.max(0)..first_kept)
        .map(|day| Op::DeletePrefix { prefix: keys::audit_day(day * 86_400_000) })
        .collect();
    for chunk in store.split(ops) {
        store.txn(Txn::ops(chunk)).await?;
    }
    Ok(first_kept)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Throttle;

    #[test]
    fn a_repeated_entry_is_written_once_an_interval_with_the_count_left_out() {
        let throttle = Throttle::default();
        let (t0, every) = (Instant::now(), Duration::from_secs(60));
        let at = |s: u64| t0 + Duration::from_secs(s);
        // (key, seconds after t0, what allow says)
        let cases = [
            ("a1", 0, Some(0)),
            ("a1", 1, None),
            ("a2", 1, Some(0)),
            ("a1", 59, None),
            ("a1", 60, Some(2)),
            ("a1", 61, None),
            ("a1", 200, Some(1)),
        ];
        for (key, s, want) in cases {
            assert_eq!(throttle.allow(key, at(s), every), want, "{key} at {s}s");
        }
    }
}
