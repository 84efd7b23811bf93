//! The deploy part of the agent contract: what a rollout tells one node to
//! do ([`DeployAction`]) and what the node answers ([`DeployReport`]). A
//! deploy action is not an attempt: it holds no slot, has no lease and no
//! log, because what it starts (a service) outlives any attempt. The rollout
//! controller owns actions as the scheduler owns attempts; the fleet only
//! carries them to the agent's live session, and the agent's reports back.

use drover_pipeline::deploy::ServiceSpec;
use serde::{Deserialize, Serialize};

/// A release as a node installs it: a file or directory of a job's
/// artifact archive, by the archive's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRef {
    /// Names the release on the node and in `drover services`: derived from
    /// the digest and the path, so the same bits are the same version in
    /// every environment.
    pub version: String,
    pub sha256: String,
    pub size: u64,
    /// The path inside the archive (`dist/app.tar.gz`).
    pub path: String,
    /// The run and commit that built it.
    pub run: String,
    #[serde(default)]
    pub commit: String,
    /// For an artifact by URL (an app's `artifact: {url, sha256}`): where
    /// it came from. Its blob is then the file itself, not an artifact
    /// archive, and `path` is the file's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
}

/// One step of a rollout on one node, for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployAction {
    /// `{rollout}/{seq}`.
    pub id: String,
    pub service: String,
    pub kind: DeployKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployKind {
    /// Install and start the release; with `beside`, keep the old one
    /// serving until a `Switch`.
    Install { release: ReleaseRef, def: ServiceSpec, beside: bool },
    /// Go back to `to` (started with `def` if it is not running), or with
    /// none, stop and remove the service.
    Rollback { to: Option<String>, def: Option<ServiceSpec> },
    /// Blue-green: send traffic to `version`, installed beside.
    Switch { version: String },
    /// Start `version`, which the node serves, afresh beside itself (a
    /// baseline for a canary compared with one).
    Restart { version: String },
    /// Run a hook's steps (name, command) from `release`'s root (installed
    /// first when it is not on the node yet, never started).
    Hook {
        point: String,
        steps: Vec<(String, String)>,
        env: std::collections::BTreeMap<String, String>,
        release: ReleaseRef,
        timeout: std::time::Duration,
    },
}

impl DeployKind {
    /// A word for it, in traces and logs.
    pub fn verb(&self) -> &'static str {
        match self {
            DeployKind::Install { .. } => "install",
            DeployKind::Rollback { .. } => "rollback",
            DeployKind::Switch { .. } => "switch",
            DeployKind::Restart { .. } => "restart",
            DeployKind::Hook { .. } => "hook",
        }
    }
}

/// What a node says became of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    Installed,
    Healthy,
    Failed,
    Switched,
    RolledBack,
    /// A hook's steps all succeeded.
    HookPassed,
    HookFailed,
}

/// A node's report, checked at the edge: `action_id` is `{rollout}/{seq}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployReport {
    pub node: String,
    pub rollout: u64,
    pub seq: u64,
    pub service: String,
    pub state: DeployState,
    pub message: String,
    pub version: String,
    /// A hook's: the exit code of its step that failed, 0 when all passed;
    /// `None` when a step did not exit.
    pub exit_code: Option<i32>,
}

/// A live service's health on a node, as its agent reports it when it
/// changes (and after every Hello).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    pub node: String,
    pub service: String,
    pub version: String,
    pub healthy: bool,
    pub message: String,
}

/// A piece of a service's output from its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsChunk {
    pub data: Vec<u8>,
    pub next_offset: u64,
}

/// Parses an action id, `{rollout}/{seq}`, both decimal.
pub fn parse_action_id(id: &str) -> Result<(u64, u64), String> {
    let bad = || format!("malformed deploy action id {id:?}: expected ROLLOUT/SEQ");
    let (rollout, seq) = id.split_once('/').ok_or_else(bad)?;
    Ok((rollout.parse().map_err(|_| bad())?, seq.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_ids_parse_strictly() {
        assert_eq!(parse_action_id("12/3"), Ok((12, 3)));
        for bad in ["", "12", "12/", "/3", "a/3", "1/2/3", "-1/2", "12/3 "] {
            assert!(parse_action_id(bad).is_err(), "{bad:?}");
        }
    }
}
