//! What the rollout controller keeps in the store, and where.
//!
//! ```text
//! /rollouts/seq                                   the last rollout id handed out
//! /rollouts/r/{id}                                RolloutRecord (id zero-padded to 10 digits)
//! /rollouts/releases/{env}/{service}/{version}    Catalogued: a release and how it runs, for rollbacks
//! /rollouts/deployed/{env}/{service}/{node}       Deployed: what each node serves, for `drover services`
//! ```
//!
//! Names are escaped to one key segment each (`core::triggers::escape`).

use std::collections::BTreeMap;

use drover_deploy::rollout::Rollout;
use drover_pipeline::deploy::{DeploySpec, ServiceSpec};
use serde::{Deserialize, Serialize};

use crate::core::fleet::ReleaseRef;
use crate::core::machine::RunId;
use crate::core::triggers::escape;
use crate::store::{Store, StoreError, decode};

pub const PREFIX: &str = "/rollouts/";
pub const SEQ: &str = "/rollouts/seq";
pub const RECORDS: &str = "/rollouts/r/";
pub const RELEASES: &str = "/rollouts/releases/";
pub const DEPLOYED: &str = "/rollouts/deployed/";

pub fn record(id: u64) -> String {
    format!("{RECORDS}{id:010}")
}

pub fn release(env: &str, service: &str, version: &str) -> String {
    format!("{RELEASES}{}/{}/{}", escape(env), escape(service), escape(version))
}

pub fn deployed_of(env: &str, service: &str) -> String {
    format!("{DEPLOYED}{}/{}/", escape(env), escape(service))
}

pub fn deployed(env: &str, service: &str, node: &str) -> String {
    format!("{}{}", deployed_of(env, service), escape(node))
}

/// The deploy job a rollout belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub run: RunId,
    pub job: String,
    pub attempt: u32,
}

/// One rollout of one release of a service over an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub id: u64,
    pub env: String,
    pub service: String,
    /// The deploy job it runs for; none for a rollback asked for by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRef>,
    /// The branch of the run it deploys from, for the environment's
    /// branch filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub release: ReleaseRef,
    /// The deploy as the pipeline wrote it: the service, the strategy, the
    /// progress deadline, what a newer deploy does.
    pub deploy: DeploySpec,
    /// The machine's state; none while it waits for an older rollout of the
    /// service (its nodes are chosen when it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    pub created_ms: u64,
    /// When it started; the progress deadline counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// How it ended or why it waits, in words.
    #[serde(default)]
    pub message: String,
    /// The action in flight on each node, by its sequence number: a report
    /// about another is stale.
    #[serde(default)]
    pub inflight: BTreeMap<String, u64>,
    /// The last action number handed out.
    #[serde(default)]
    pub seq: u64,
    /// Who started it: a run's deploy job, or a person.
    pub by: String,
    /// A rollback straight to its release on every node at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fast_track: bool,
    /// Its spans' ids and start times (`super::trace`).
    #[serde(default)]
    pub trace: super::trace::RolloutTrace,
    /// A `before`, `after` or `on_failure` hook in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<super::hooks::Pending>,
    /// `after_batch` hooks in flight, by node.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub batch_hooks: super::hooks::BatchHooks,
    /// Why its `after` or `on_failure` hook failed, which fails its job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_failed: Option<String>,
    /// For an app's sync, the nodes its file narrows the environment's to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<drover_pipeline::app::NodeSelection>,
    /// A removal (an app's prune): each node stops the service rather than
    /// installing a release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
    /// For a rollout with no job (an app's sync, `drover rollback`): its
    /// hooks' output, the last [`super::hooks::MAX_HOOK_LOG`] bytes, kept
    /// with the record as a deploy job keeps it in its log.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hook_log: String,
    /// The step whose metrics are being measured, if one is
    /// (`super::analysis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysing: Option<super::analysis::Analysing>,
    /// An automatic change (a deploy job, an auto-sync): it never installs
    /// a release built by an older run than what the nodes serve.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guard_downgrade: bool,
    /// A step whose gate passed while its environment was frozen: the next
    /// step waits for the freeze to end (`crate::freezes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by_freeze: Option<u32>,
    /// Its background analysis under way, if it has one (`super::analysis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<super::analysis::Analysing>,
    /// The nodes the step being analysed compares, canary and baseline,
    /// when a metric is compared with a baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<super::analysis::Split>,
    /// How many analysis runs it has begun.
    #[serde(default)]
    pub analysis_runs: u32,
    /// Every measurement of its analysis, the last
    /// [`super::analysis::MAX_MEASUREMENTS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<super::analysis::Measurement>,
    /// Every gate asked, in order, with who or what decided it
    /// (`super::gates`); the last [`super::gates::MAX_GATE_RECORDS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<super::gates::GateRecord>,
    /// An admin's override of its environment's freeze and deploy
    /// windows, kept as the audit of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overridden: Option<Override>,
    /// With waves in other environments: the environment of each node not
    /// in `env`, where its release is recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_envs: BTreeMap<String, String>,
}

/// Who let a rollout pass a freeze or closed deploy windows, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub by: String,
    pub reason: String,
    pub at_ms: u64,
}

impl RolloutRecord {
    /// Its phase as `drover rollouts` shows it: `queued` before it starts.
    pub fn phase(&self) -> &'static str {
        match &self.rollout {
            Some(r) => r.phase.as_str(),
            None if self.finished_ms.is_some() => "failed",
            None => "queued",
        }
    }

    /// Whether it has reached its end.
    pub fn is_finished(&self) -> bool {
        self.finished_ms.is_some()
    }

    /// Every environment it deploys to: its own, then those its waves
    /// name, each once.
    pub fn envs(&self) -> Vec<&str> {
        let mut envs = vec![self.env.as_str()];
        for env in self.deploy.waves.iter().filter_map(|w| w.environment.as_deref()) {
            if !envs.contains(&env) {
                envs.push(env);
            }
        }
        envs
    }

    /// Whether it deploys to environment `env`.
    pub fn touches(&self, env: &str) -> bool {
        self.envs().contains(&env)
    }

    /// Whether it and `other` deploy the same service to an environment
    /// (then one waits for the other).
    pub fn shares(&self, other: &RolloutRecord) -> bool {
        self.service == other.service && self.envs().iter().any(|env| other.touches(env))
    }

    /// The environment of its node `node`.
    pub fn env_of(&self, node: &str) -> &str {
        self.node_envs.get(node).map_or(self.env.as_str(), String::as_str)
    }
}

/// `deploy` for a rollout in its one environment (a rollback, a removal):
/// without waves, if its waves span environments.
pub fn in_one_environment(mut deploy: DeploySpec) -> DeploySpec {
    if deploy.waves.iter().any(|w| w.environment.is_some()) {
        deploy.waves.clear();
    }
    deploy
}

/// A release of a service as catalogued for an environment: what a
/// rollback to it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogued {
    pub release: ReleaseRef,
    pub def: ServiceSpec,
}

/// What a node of an environment serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub node: String,
    pub release: ReleaseRef,
    /// The rollout that put it there.
    pub rollout: u64,
    pub healthy: bool,
    pub since_ms: u64,
    /// Why it is unhealthy, from its node's last report, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health_message: String,
    /// When its health was last reported (or it was deployed).
    #[serde(default)]
    pub health_ms: u64,
}

/// Every rollout, oldest first.
pub async fn list(store: &dyn Store) -> Result<Vec<RolloutRecord>, StoreError> {
    let (kvs, _) = store.range(RECORDS).await?;
    kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect()
}

pub async fn get(store: &dyn Store, id: u64) -> Result<Option<RolloutRecord>, StoreError> {
    match store.get(&record(id)).await? {
        Some(kv) => Ok(Some(decode(&kv.key, &kv.value)?)),
        None => Ok(None),
    }
}

/// What every node of `env` (or of every environment) serves, by
/// environment, service and node.
pub async fn deployed_in(store: &dyn Store, env: Option<&str>) -> Result<Vec<(String, String, Deployed)>, StoreError> {
    let prefix = match env {
        Some(env) => format!("{DEPLOYED}{}/", escape(env)),
        None => DEPLOYED.to_string(),
    };
    let (kvs, _) = store.range(&prefix).await?;
    let mut out = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let d: Deployed = decode(&kv.key, &kv.value)?;
        let mut parts = kv.key[DEPLOYED.len()..].split('/');
        let (Some(env), Some(service)) = (parts.next(), parts.next()) else { continue };
        out.push((unescape(&kv.key, env)?, unescape(&kv.key, service)?, d));
    }
    Ok(out)
}

/// Undoes [`escape`] for `segment` of `key`; a segment that is not what
/// `escape` writes is an error naming the key.
pub fn unescape(key: &str, segment: &str) -> Result<String, StoreError> {
    let bad = |detail: &str| StoreError::Corrupt {
        path: key.to_string(),
        detail: format!("key segment {segment:?}: {detail}"),
    };
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(|| bad("a `%` without two hex digits"))?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad("a `%` without two hex digits"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad("a `%` without two hex digits"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("not UTF-8 once unescaped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_their_key_segments() {
        for name in ["web", "release/1.2", "a b%c", "ü"] {
            assert_eq!(unescape("k", &escape(name)).unwrap(), name);
        }
        for bad in ["a%", "a%4", "a%zz", "%FF"] {
            let err = unescape("/rollouts/deployed/x", bad).unwrap_err().to_string();
            assert!(err.contains("/rollouts/deployed/x") && err.contains(bad), "{bad}: {err}");
        }
        assert_eq!(record(42), "/rollouts/r/0000000042");
        assert!(deployed("prod", "web", "n1").starts_with(&deployed_of("prod", "web")));
    }
}
