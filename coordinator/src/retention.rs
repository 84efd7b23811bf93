//! Retention, so that a long-lived coordinator does not grow without end:
//! the leader prunes finished runs (record, jobs, logs and artifact
//! references) past the retention policy, deletes their log segments
//! (`crate::segments`), and sweeps the blob store (`crate::blobs`) of every
//! artifact no run refers to any more (`/artifacts/{run}/{job}`), once it is
//! older than `--blob-grace`: a blob is uploaded before the result that
//! refers to it is committed, and the grace covers that window.
//! The store's own history is the business of `crate::compaction`.
//!
//! A release that some node serves keeps its blob (`/rollouts/deployed/`),
//! past its artifact's expiry: a node added later, or one that lost its
//! copy, installs it from there.
//!
//! Cache entries are evicted here too (`crate::caches::evict`: idle past
//! `--cache-expire`, then least recently used past `--cache-budget`), and
//! the blobs they name are kept by the sweep.
//!
//! The policy is Jenkins' "discard old builds": keep at most `keep_runs`
//! finished runs, and none that finished more than `keep_for` ago. Runs that
//! have not finished are never pruned and do not count. Deciding what to
//! prune ([`expired`]) is pure; `run` does the IO.
//!
//! It is one of the leader's controllers ([`Retention`], registered in
//! `crate::controller::registry`): each term starts it with the term's
//! fenced store and stops it when the term ends.
//!
//! Pruning cannot race the scheduler: the scheduler writes a run only while
//! it has not finished, and each delete also compares the run's index entry
//! with the one that was read, so a run that changed since is left for the
//! next pass. Every delete goes through the leader's fenced store.
//!
//! A run's segment files go after the store's delete has committed, so a
//! reader never finds a run whose log bytes are gone. A crash in between
//! leaves orphan files; every pass also sweeps the segments of runs that
//! no longer exist (one directory listing), which deletes those and, in
//! the same step, the segments of the runs it has just pruned.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use drover_telemetry::trace::now_ms;
use tracing::{debug, info, warn};

use crate::blobs::Blobs;
use crate::caches;
use crate::controller::{Controller, ControllerError, Started, Term};
use crate::core::keys;
use crate::core::machine::RunId;
use crate::metrics::METRICS;
use crate::records::{ArtifactRecord, RunSummary};
use crate::sealing;
use crate::segments::Segments;
use crate::store::{Compare, Op, Store, StoreError, Txn, decode};

#[derive(Debug, Clone)]
pub struct Config {
    /// Most finished runs kept; older ones (by run number) are pruned.
    pub keep_runs: usize,
    /// Finished runs older than this are pruned.
    pub keep_for: Duration,
    /// How often the leader looks for runs to prune.
    pub interval: Duration,
    /// How old a blob no run refers to must be before it is deleted.
    pub blob_grace: Duration,
    /// The most bytes the caches may take together (`--cache-budget`).
    pub cache_budget: u64,
    /// How long an entry nobody restores is kept (`--cache-expire`).
    pub cache_expire: Duration,
    /// How long after its run finished a log is sealed into the blob
    /// store (`--seal-logs-after`; see `crate::sealing`).
    pub seal_after: Duration,
    /// How long audit entries are kept (`--audit-retention`), pruned a
    /// whole UTC day at a time once the day is past it.
    pub audit_keep: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keep_runs: 10_000,
            keep_for: Duration::from_secs(30 * 24 * 3600),
            interval: Duration::from_secs(60),
            blob_grace: Duration::from_secs(3600),
            cache_budget: 10 << 30,
            cache_expire: Duration::from_secs(7 * 24 * 3600),
            seal_after: Duration::from_secs(600),
            audit_keep: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Most runs pruned in one transaction: three deletes and a compare each,
/// well under etcd's 128 operations with the fence.
const RUNS_PER_TXN: usize = 25;

/// Which of the runs (from the run index) the policy prunes, oldest first.
pub fn expired(runs: &[RunSummary], keep_runs: usize, keep_for: Duration, now_ms: u64) -> Vec<RunId> {
    let cutoff = now_ms.saturating_sub(keep_for.as_millis() as u64);
    let mut finished: Vec<&RunSummary> = runs.iter().filter(|r| r.state.is_terminal()).collect();
    // Newest first: the first `keep_runs` survive the count.
    finished.sort_by_key(|r| std::cmp::Reverse(r.id));
    let mut out: Vec<RunId> = finished
        .iter()
        .enumerate()
        .filter(|(i, r)| *i >= keep_runs || r.finished_ms.unwrap_or(r.created_ms) < cutoff)
        .map(|(_, r)| r.id)
        .collect();
    out.sort_unstable();
    out
}

/// Retention as a controller: a pass every [`Config::interval`] for as
/// long as the term lasts.
pub struct Retention {
    config: Config,
}

impl Retention {
    pub fn new(config: Config) -> Retention {
        Retention { config }
    }
}

#[async_trait]
impl Controller for Retention {
    fn name(&self) -> &'static str {
        "retention"
    }

    fn prefixes(&self) -> &'static [&'static str] {
        // It deletes only finished runs, which the scheduler never writes
        // again (see the module header), so the two share these safely.
        &[keys::RUN_INDEX, "/runs/", keys::CACHES, keys::SEALED_LOGS]
    }

    async fn start(&self, term: &Term) -> Result<Started, ControllerError> {
        Ok(Started::work(run(term.store.clone(), term.segments.clone(), term.blobs.clone(), self.config.clone())))
    }
}

/// Runs retention passes until the term ends (when its controller is
/// stopped). A failed pass is logged and retried at the next tick. A fenced
/// one ends retention but not the term: the scheduler's next write, or
/// the lease the coordinator can no longer renew, ends that.
async fn run(
    store: Arc<dyn Store>,
    segments: Arc<Segments>,
    blobs: Arc<Blobs>,
    config: Config,
) -> Result<(), ControllerError> {
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first audit day a prune looks at: a year and more before what is
    // kept, then where the last prune stopped.
    let mut audit_from = 0;
    loop {
        tick.tick().await;
        match pass(store.as_ref(), &segments, &blobs, &config).await {
            Ok(()) => {}
            Err(StoreError::Fenced { .. }) => return Ok(()),
            Err(e) => warn!(error = %e, "retention pass failed; retrying at the next one"),
        }
        let before = now_ms().saturating_sub(config.audit_keep.as_millis() as u64) as i64;
        if audit_from == 0 {
            audit_from = (before / 86_400_000 - 400).max(0);
        }
        match crate::audit::prune(store.as_ref(), before, audit_from).await {
            Ok(next) => audit_from = next,
            Err(StoreError::Fenced { .. }) => return Ok(()),
            Err(e) => warn!(error = %e, "cannot prune the audit log; retrying at the next pass"),
        }
    }
}

async fn pass(store: &dyn Store, segments: &Arc<Segments>, blobs: &Blobs, config: &Config) -> Result<(), StoreError> {
    // The last run number, read before the index: a run missing from the
    // index with a number up to it was pruned, never one still to come.
    let last: RunId = match store.get(keys::RUN_SEQ).await? {
        Some(kv) => decode(&kv.key, &kv.value)?,
        None => 0,
    };
    let (kvs, _) = store.range(keys::RUN_INDEX).await?;
    // Every run in the index, by its key: an entry that does not parse
    // still keeps its run's segments.
    let mut alive: HashSet<RunId> =
        kvs.iter().filter_map(|kv| kv.key.strip_prefix(keys::RUN_INDEX)?.parse().ok()).collect();
    let mut summaries = Vec::with_capacity(kvs.len());
    let mut index_revs = std::collections::HashMap::with_capacity(kvs.len());
    for kv in &kvs {
        match decode::<RunSummary>(&kv.key, &kv.value) {
            Ok(s) => {
                index_revs.insert(s.id, kv.mod_revision);
                summaries.push(s);
            }
            Err(e) => warn!(error = %e, "unreadable run index entry; not pruning it"),
        }
    }
    let doomed = expired(&summaries, config.keep_runs, config.keep_for, now_ms());
    let mut pruned = 0;
    for chunk in doomed.chunks(RUNS_PER_TXN) {
        let mut txn = Txn::default();
        for id in chunk {
            txn.compare.push(Compare::ModRevision(keys::run_index(*id), index_revs[id]));
            txn.success.push(Op::DeletePrefix { prefix: keys::run(*id) });
            txn.success.push(Op::DeletePrefix { prefix: keys::artifacts_of(*id) });
            txn.success.push(Op::DeletePrefix { prefix: keys::sealed_logs_of(*id) });
            txn.success.push(Op::delete(keys::run_index(*id)));
        }
        if store.txn(txn).await?.succeeded {
            pruned += chunk.len();
            METRICS.runs_pruned.add(chunk.len() as u64);
            for id in chunk {
                alive.remove(id);
            }
        }
    }
    // Finished runs that are kept: their logs move into the blob store
    // (below, once the orphans are swept).
    let seal_before = now_ms().saturating_sub(config.seal_after.as_millis() as u64);
    let finished: std::collections::HashMap<RunId, i64> = summaries
        .iter()
        .filter(|s| s.finished_ms.is_some_and(|f| f <= seal_before) && alive.contains(&s.id))
        .map(|s| (s.id, index_revs[&s.id]))
        .collect();
    // Now that the store's deletes have committed: the pruned runs'
    // segments, and any left behind by a crash after an earlier prune.
    match segments.sweep_async(alive, last).await {
        Ok(gone) if !gone.is_empty() => debug!(runs = gone.len(), "deleted the log segments of pruned runs"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot delete the log segments of pruned runs; retrying at the next pass"),
    }
    match sealing::seal_finished(store, segments, blobs, &finished).await {
        Ok(0) => {}
        Ok(sealed) => debug!(runs = sealed, "sealed finished runs' logs into the blob store"),
        Err(StoreError::Fenced { epoch }) => return Err(StoreError::Fenced { epoch }),
        Err(e) => warn!(error = %e, "cannot seal finished runs' logs; retrying at the next pass"),
    }
    // Artifacts past their expiry lose their reference (each delete
    // compares the reference's revision, so one written since is kept);
    // then the blobs no reference names any more go.
    let (refs, _) = store.range(keys::ARTIFACTS).await?;
    let now = now_ms();
    let mut keep = HashSet::new();
    let mut expired = Vec::new();
    for kv in &refs {
        let record: ArtifactRecord = decode(&kv.key, &kv.value)?;
        if record.expires_ms <= now {
            expired.push((kv.key.clone(), kv.mod_revision, record.sha256));
        } else {
            keep.insert(record.sha256);
        }
    }
    for chunk in expired.chunks(RUNS_PER_TXN) {
        let mut txn = Txn::default();
        for (key, rev, _) in chunk {
            txn.compare.push(Compare::ModRevision(key.clone(), *rev));
            txn.success.push(Op::delete(key.clone()));
        }
        if store.txn(txn).await?.succeeded {
            info!(artifacts = chunk.len(), "artifacts expired");
        } else {
            // Written since: kept, until the next pass looks again.
            keep.extend(chunk.iter().map(|(_, _, sha)| sha.clone()));
        }
    }
    keep.extend(evict_caches(store, config, now).await?);
    keep.extend(sealing::referenced(store).await?);
    keep.extend(
        crate::rollouts::records::deployed_in(store, None).await?.into_iter().map(|(_, _, d)| d.release.sha256),
    );
    match blobs.sweep(keep, config.blob_grace).await {
        Ok(0) => {}
        Ok(gone) => info!(blobs = gone, "deleted artifacts no run refers to"),
        Err(e) => warn!(error = %e, "cannot sweep the blob store; retrying at the next pass"),
    }
    if pruned > 0 {
        info!(
            pruned,
            first = doomed[0],
            last = doomed[doomed.len() - 1],
            keep_runs = config.keep_runs,
            keep_for_s = config.keep_for.as_secs(),
            "pruned finished runs"
        );
    }
    Ok(())
}

/// Deletes the cache entries [`caches::evict`] picks (each delete compares
/// the entry's revision, so one restored since stays); returns the blobs the
/// others name, which the sweep keeps.
async fn evict_caches(store: &dyn Store, config: &Config, now: u64) -> Result<HashSet<String>, StoreError> {
    let (kvs, _) = store.range(keys::CACHES).await?;
    let mut entries = Vec::with_capacity(kvs.len());
    let mut keep = HashSet::new();
    for kv in &kvs {
        match decode::<caches::CacheRecord>(&kv.key, &kv.value) {
            Ok(record) => entries.push((kv, record)),
            // Its blobs are not known, so the sweep may take them; a
            // restore of it then fails as a miss would.
            Err(e) => warn!(error = %e, "unreadable cache entry; not evicting it"),
        }
    }
    let records: Vec<&caches::CacheRecord> = entries.iter().map(|(_, r)| r).collect();
    let doomed = caches::evict(&records, config.cache_budget, config.cache_expire, now);
    for chunk in doomed.chunks(RUNS_PER_TXN) {
        let mut txn = Txn::default();
        for &i in chunk {
            txn.compare.push(Compare::ModRevision(entries[i].0.key.clone(), entries[i].0.mod_revision));
            txn.success.push(Op::delete(entries[i].0.key.clone()));
        }
        if store.txn(txn).await?.succeeded {
            info!(caches = chunk.len(), budget = config.cache_budget, "evicted cache entries");
        } else {
            keep.extend(chunk.iter().flat_map(|&i| entries[i].1.blobs.iter().map(|b| b.sha256.clone())));
        }
    }
    for (i, (_, record)) in entries.iter().enumerate() {
        if !doomed.contains(&i) {
            keep.extend(record.blobs.iter().map(|b| b.sha256.clone()));
        }
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::machine::RunState;
    use crate::core::machine::Source;

    const DAY: u64 = 24 * 3600 * 1000;

    fn run(id: RunId, state: RunState, finished_days_ago: Option<u64>, now: u64) -> RunSummary {
        RunSummary {
            id,
            name: "p".into(),
            state,
            created_ms: now - 40 * DAY,
            finished_ms: finished_days_ago.map(|d| now - d * DAY),
            source: Source::default(),
            rerun_of: None,
        }
    }

    #[test]
    fn the_policy_prunes_by_count_and_age_and_never_unfinished_runs() {
        use RunState::*;
        let now = 100 * DAY;
        let month = Duration::from_millis(30 * DAY);
        // (case, runs as (id, state, finished days ago), keep_runs, keep_for, pruned)
        type Case = (&'static str, Vec<(RunId, RunState, Option<u64>)>, usize, Duration, Vec<RunId>);
        let cases: Vec<Case> = vec![
            ("nothing to prune", vec![(1, Succeeded, Some(1)), (2, Failed, Some(0))], 10, month, vec![]),
            (
                "over the count: the oldest go",
                vec![(1, Succeeded, Some(3)), (2, Failed, Some(2)), (3, Cancelled, Some(1))],
                2,
                month,
                vec![1],
            ),
            (
                "the count goes by run number, not finish time",
                vec![(1, Succeeded, Some(0)), (2, Succeeded, Some(5))],
                1,
                month,
                vec![1],
            ),
            ("too old", vec![(1, Succeeded, Some(31)), (2, Succeeded, Some(29))], 10, month, vec![1]),
            (
                "both limits at once",
                vec![
                    (1, Succeeded, Some(40)),
                    (2, Succeeded, Some(2)),
                    (3, Succeeded, Some(1)),
                    (4, Succeeded, Some(0)),
                ],
                2,
                month,
                vec![1, 2],
            ),
            (
                "unfinished runs are kept and do not count",
                vec![(1, Running, None), (2, Succeeded, Some(1)), (3, Running, None)],
                1,
                month,
                vec![],
            ),
            ("an old unfinished run is kept", vec![(1, Running, None)], 0, Duration::ZERO, vec![]),
            ("keep none", vec![(1, Succeeded, Some(0)), (2, Running, None)], 0, month, vec![1]),
            ("exactly at the age limit is kept", vec![(1, Succeeded, Some(30))], 10, month, vec![]),
        ];
        for (case, runs, keep_runs, keep_for, want) in cases {
            let runs: Vec<RunSummary> = runs.into_iter().map(|(id, s, f)| run(id, s, f, now)).collect();
            assert_eq!(expired(&runs, keep_runs, keep_for, now), want, "{case}");
        }
    }
}
