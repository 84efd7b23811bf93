//! Compaction of the store's history, as Kubernetes' API server does it:
//! etcd keeps every revision until it is compacted, and stops taking
//! writes at its space quota (2 GiB by default). The embedded store bounds
//! its own history, so only a coordinator on etcd registers this
//! controller (`--etcd-compaction-interval`, on by default there).
//!
//! Every [`Config::every`] the leader compacts up to the revision it saw
//! one period earlier, so a watcher always has at least one period of
//! history to resume from. A new term starts by only noting the revision:
//! the first compaction comes one full period into a term, however often
//! leadership changes.
//!
//! It is the smallest controller, and the example of adding one: this
//! module, and one line in `crate::controller::registry`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::controller::{Controller, ControllerError, Started, Term};
use crate::core::keys;
use crate::store::{Revision, Store, StoreError};

#[derive(Debug, Clone)]
pub struct Config {
    /// How often to compact, and how much history is kept.
    pub every: Duration,
}

/// The compaction controller.
pub struct Compaction {
    config: Config,
}

impl Compaction {
    pub fn new(config: Config) -> Compaction {
        Compaction { config }
    }
}

#[async_trait]
impl Controller for Compaction {
    fn name(&self) -> &'static str {
        "compaction"
    }

    fn prefixes(&self) -> &'static [&'static str] {
        // It writes no key: compaction drops old revisions of every key,
        // never a key's current value.
        &[]
    }

    async fn start(&self, term: &Term) -> Result<Started, ControllerError> {
        Ok(Started::work(run(term.store.clone(), self.config.every)))
    }
}

/// What the store's revision was, and when it was read.
type Mark = (Instant, Revision);

/// Whether to compact now, and to which revision: to the one seen a full
/// period ago. Pure; the loop below does the reads and the compaction.
pub fn due(mark: Option<Mark>, now: Instant, revision: Revision, every: Duration) -> (Option<Revision>, Mark) {
    match mark {
        Some((at, old)) if now.duration_since(at) >= every => (Some(old), (now, revision)),
        Some(mark) => (None, mark),
        None => (None, (now, revision)),
    }
}

/// Compacts every period until the term ends. A failed compaction is
/// logged and tried again at the next tick; a fenced store ends this
/// controller but not the term (see `crate::retention`).
async fn run(store: Arc<dyn Store>, every: Duration) -> Result<(), ControllerError> {
    // Look often enough that a compaction is never much more than a
    // period late, and not so often that it costs anything.
    let mut tick = tokio::time::interval((every / 4).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut mark = None;
    loop {
        tick.tick().await;
        match pass(store.as_ref(), &mut mark, every).await {
            Ok(()) => {}
            Err(StoreError::Fenced { .. }) => return Ok(()),
            Err(e) => warn!(error = %e, "compaction failed; retrying at the next pass"),
        }
    }
}

async fn pass(store: &dyn Store, mark: &mut Option<Mark>, every: Duration) -> Result<(), StoreError> {
    // Any read returns the store's current revision; the run counter is
    // one small key.
    let (_, revision) = store.range(keys::RUN_SEQ).await?;
    let (compact, next) = due(*mark, Instant::now(), revision, every);
    if let Some(rev) = compact {
        store.compact(rev).await?;
        info!(revision = rev, "compacted the store's history");
    }
    *mark = Some(next);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_waits_a_full_period_and_keeps_a_period_of_history() {
        let t0 = Instant::now();
        let every = Duration::from_secs(60);
        let s = Duration::from_secs;
        // (case, mark, seconds after t0, revision now, compact to, new mark)
        type Case = (&'static str, Option<(u64, Revision)>, u64, Revision, Option<Revision>, (u64, Revision));
        let cases: Vec<Case> = vec![
            ("a new term only notes the revision", None, 0, 100, None, (0, 100)),
            ("before a period has passed", Some((0, 100)), 59, 150, None, (0, 100)),
            ("a period later: up to the old revision", Some((0, 100)), 60, 150, Some(100), (60, 150)),
            ("late: still only up to the old revision", Some((0, 100)), 300, 900, Some(100), (300, 900)),
        ];
        for (case, mark, at, revision, want, want_mark) in cases {
            let mark = mark.map(|(secs, rev)| (t0 + s(secs), rev));
            let (got, next) = due(mark, t0 + s(at), revision, every);
            assert_eq!(got, want, "{case}");
            assert_eq!(next, (t0 + s(want_mark.0), want_mark.1), "{case}");
        }
    }
}
