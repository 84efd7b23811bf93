//! Freezes (issue 17): an environment frozen with `drover env freeze ENV
//! --reason TEXT [--for DURATION]` takes no new release until it thaws
//! (its time runs out, or `drover env unfreeze`). Any coordinator writes
//! them; the rollout controller reads them while rollouts move:
//!
//! ```text
//! /freezes/{env}   Freeze
//! ```
//!
//! - A rollout of a frozen environment does not start: it waits, saying
//!   why (deploy jobs, promotions and app syncs alike).
//! - One under way finishes the step it is in, and the next step waits.
//! - When the freeze ends, only the newest waiting rollout of each service
//!   starts; the older ones end, superseded.
//! - A rollback (`drover rollback`, a fast track) is the emergency way
//!   out and passes a freeze.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::triggers::escape;
use crate::records::encode;
use crate::store::{Compare, Op, Store, StoreError, Txn, decode};

pub const FREEZES: &str = "/freezes/";
/// The longest freeze with an end: a year. Longer, freeze with no end.
pub const MAX_FREEZE_MS: u64 = 366 * 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("{0}")]
    Invalid(String),
    #[error("environment {0} is not frozen")]
    NotFrozen(String),
    #[error(transparent)]
    Environments(#[from] crate::environments::EnvironmentsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An environment's freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub environment: String,
    pub reason: String,
    pub by: String,
    pub from_ms: u64,
    /// When it thaws by itself; 0: only `drover env unfreeze` ends it.
    pub until_ms: u64,
}

impl Freeze {
    /// Whether it holds at `now_ms`.
    pub fn holds(&self, now_ms: u64) -> bool {
        self.until_ms == 0 || now_ms < self.until_ms
    }

    /// What a waiting rollout says.
    pub fn says(&self) -> String {
        let until = if self.until_ms == 0 {
            "until `drover env unfreeze`".to_owned()
        } else {
            let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(self.until_ms as i64)
                .map_or_else(|| self.until_ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
            format!("until {at}")
        };
        format!("environment {} is frozen {until}: {} (by {})", self.environment, self.reason, self.by)
    }
}

fn key(env: &str) -> String {
    format!("{FREEZES}{}", escape(env))
}

/// Freezes `f.environment`, which must exist, or freezes it again with the
/// new reason and end.
pub async fn freeze(store: &dyn Store, f: Freeze) -> Result<Freeze, FreezeError> {
    crate::environments::get(store, &f.environment).await?;
    let reason = f.reason.trim();
    if reason.is_empty() || reason.chars().count() > crate::releases::MAX_REASON_CHARS {
        return Err(FreezeError::Invalid(format!(
            "give a --reason of 1 to {} characters: whoever waits for the freeze reads it",
            crate::releases::MAX_REASON_CHARS
        )));
    }
    if f.until_ms != 0 && (f.until_ms <= f.from_ms || f.until_ms - f.from_ms > MAX_FREEZE_MS) {
        return Err(FreezeError::Invalid(
            "a freeze ends in the future and within a year; leave out --for and --until for one with no end".to_owned(),
        ));
    }
    let f = Freeze { reason: reason.to_owned(), ..f };
    store.txn(Txn::ops(vec![Op::put(key(&f.environment), encode(&f))])).await?;
    Ok(f)
}

/// Ends the freeze of `env`; the freeze it ended.
pub async fn unfreeze(store: &dyn Store, env: &str) -> Result<Freeze, FreezeError> {
    let k = key(env);
    let kv = store.get(&k).await?.ok_or_else(|| FreezeError::NotFrozen(env.to_owned()))?;
    let f: Freeze = decode(&kv.key, &kv.value)?;
    let txn = Txn {
        compare: vec![Compare::ModRevision(k.clone(), kv.mod_revision)],
        success: vec![Op::delete(k)],
        failure: vec![],
    };
    if !store.txn(txn).await?.succeeded {
        return Err(FreezeError::NotFrozen(env.to_owned()));
    }
    Ok(f)
}

/// Every freeze, by environment (those that have thawed by time too).
pub async fn load(store: &dyn Store) -> Result<BTreeMap<String, Freeze>, StoreError> {
    let (kvs, _) = store.range(FREEZES).await?;
    let mut out = BTreeMap::new();
    for kv in kvs {
        let f: Freeze = decode(&kv.key, &kv.value)?;
        out.insert(f.environment.clone(), f);
    }
    Ok(out)
}
