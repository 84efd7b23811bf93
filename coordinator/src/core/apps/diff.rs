//! The desired state against what runs: per service and node, the fields
//! that differ, and how an app stands (sync status, health).

use std::collections::{BTreeMap, BTreeSet};

use drover_pipeline::deploy::ServiceSpec;

/// A service of the desired state, resolved: the release its file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub service: String,
    pub file: String,
    /// The release's version, or why it cannot be resolved (a run that
    /// does not exist, a digest that does not match).
    pub version: Result<String, String>,
    /// The artifact's digest, for the field diff.
    pub sha256: String,
    pub def: ServiceSpec,
    /// The nodes it should run on, when the caller knows them.
    pub nodes: Option<Vec<String>>,
}

/// What one node serves of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub node: String,
    pub version: String,
    pub sha256: String,
    pub healthy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    InSync,
    OutOfSync,
    Missing,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    InSync,
    OutOfSync,
    Missing,
    Orphaned,
    /// Its release cannot be resolved.
    Error,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::InSync => "in_sync",
            NodeStatus::OutOfSync => "out_of_sync",
            NodeStatus::Missing => "missing",
            NodeStatus::Unhealthy => "unhealthy",
        }
    }
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::InSync => "in_sync",
            ServiceStatus::OutOfSync => "out_of_sync",
            ServiceStatus::Missing => "missing",
            ServiceStatus::Orphaned => "orphaned",
            ServiceStatus::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeDiff {
    pub node: String,
    pub status: NodeStatus,
    pub running: String,
    pub wanted: String,
    pub healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceDiff {
    pub service: String,
    /// Empty for an orphan.
    pub file: String,
    pub status: ServiceStatus,
    pub version: String,
    pub nodes: Vec<NodeDiff>,
    /// `command: ./a -> ./b`, one line per field that differs from what
    /// the running release was started with; the reason for [`ServiceStatus::Error`].
    pub fields: Vec<String>,
}

impl ServiceDiff {
    /// One line for `drover apps`' drift column and the sync's record.
    pub fn summary(&self) -> String {
        let differ: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.status != NodeStatus::InSync)
            .map(|n| format!("{} {}", n.node, n.status.as_str()))
            .collect();
        match self.status {
            ServiceStatus::Error => format!("{}: {}", self.service, self.fields.join("; ")),
            ServiceStatus::Orphaned => format!("{}: orphaned (no file declares it)", self.service),
            ServiceStatus::Missing => format!("{}: missing, wants {}", self.service, self.version),
            _ => format!("{}: {} (wants {})", self.service, differ.join(", "), self.version),
        }
    }
}

/// The desired state against what runs. `running` is what each node
/// serves, by service; `defs` the definition a release of a service was
/// started with, by (service, version); `owned` the services this app
/// synced before.
pub fn diff(
    wanted: &[Wanted],
    running: &BTreeMap<String, Vec<Running>>,
    defs: &BTreeMap<(String, String), ServiceSpec>,
    owned: &BTreeSet<String>,
) -> Vec<ServiceDiff> {
    let mut out = Vec::new();
    for w in wanted {
        let version = match &w.version {
            Ok(v) => v.clone(),
            Err(why) => {
                out.push(ServiceDiff {
                    service: w.service.clone(),
                    file: w.file.clone(),
                    status: ServiceStatus::Error,
                    version: String::new(),
                    nodes: Vec::new(),
                    fields: vec![why.clone()],
                });
                continue;
            }
        };
        let here: &[Running] = running.get(&w.service).map_or(&[], Vec::as_slice);
        let mut names: BTreeSet<&str> = here.iter().map(|r| r.node.as_str()).collect();
        if let Some(nodes) = &w.nodes {
            names.extend(nodes.iter().map(String::as_str));
        }
        let nodes: Vec<NodeDiff> = names
            .into_iter()
            .map(|node| {
                let on = here.iter().find(|r| r.node == node);
                let status = match on {
                    None => NodeStatus::Missing,
                    Some(r) if r.version != version => NodeStatus::OutOfSync,
                    Some(r) if !r.healthy => NodeStatus::Unhealthy,
                    Some(_) => NodeStatus::InSync,
                };
                NodeDiff {
                    node: node.to_owned(),
                    status,
                    running: on.map(|r| r.version.clone()).unwrap_or_default(),
                    wanted: version.clone(),
                    healthy: on.is_some_and(|r| r.healthy),
                }
            })
            .collect();
        let status = if here.is_empty() {
            ServiceStatus::Missing
        } else if nodes.iter().all(|n| n.status == NodeStatus::InSync) {
            ServiceStatus::InSync
        } else {
            ServiceStatus::OutOfSync
        };
        // The fields that differ from what the most common other release runs with.
        let mut fields = Vec::new();
        if let Some(other) = here.iter().find(|r| r.version != version) {
            if other.sha256 != w.sha256 {
                fields.push(format!("artifact: sha256:{} -> sha256:{}", short(&other.sha256), short(&w.sha256)));
            }
            if let Some(def) = defs.get(&(w.service.clone(), other.version.clone())) {
                fields.extend(def_changes(def, &w.def));
            }
        }
        out.push(ServiceDiff { service: w.service.clone(), file: w.file.clone(), status, version, nodes, fields });
    }
    for service in owned {
        if wanted.iter().any(|w| &w.service == service) {
            continue;
        }
        let Some(here) = running.get(service).filter(|h| !h.is_empty()) else { continue };
        out.push(ServiceDiff {
            service: service.clone(),
            file: String::new(),
            status: ServiceStatus::Orphaned,
            version: String::new(),
            nodes: here
                .iter()
                .map(|r| NodeDiff {
                    node: r.node.clone(),
                    status: NodeStatus::OutOfSync,
                    running: r.version.clone(),
                    wanted: String::new(),
                    healthy: r.healthy,
                })
                .collect(),
            fields: Vec::new(),
        });
    }
    out
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// `field: old -> new` for each field of a service's definition that differs.
pub fn def_changes(old: &ServiceSpec, new: &ServiceSpec) -> Vec<String> {
    let mut out = Vec::new();
    if old.command != new.command {
        out.push(format!("command: {:?} -> {:?}", old.command, new.command));
    }
    if old.port != new.port {
        out.push(format!("port: {} -> {}", old.port, new.port));
    }
    let keys: BTreeSet<&String> = old.env.keys().chain(new.env.keys()).collect();
    for key in keys {
        match (old.env.get(key), new.env.get(key)) {
            (a, b) if a == b => {}
            (None, Some(b)) => out.push(format!("env.{key}: (unset) -> {b:?}")),
            (Some(a), None) => out.push(format!("env.{key}: {a:?} -> (unset)")),
            (Some(a), Some(b)) => out.push(format!("env.{key}: {a:?} -> {b:?}")),
            (None, None) => {}
        }
    }
    if old.health != new.health {
        out.push(format!("health: {:?} -> {:?}", old.health, new.health));
    }
    out
}

/// How an app stands, for `drover apps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    Synced,
    OutOfSync,
}

/// Whether every service is in sync (an orphan counts only with `prune`).
pub fn sync_status(diffs: &[ServiceDiff], prune: bool) -> SyncStatus {
    let drifted = diffs.iter().any(|d| match d.status {
        ServiceStatus::InSync => false,
        ServiceStatus::Orphaned => prune,
        _ => true,
    });
    if drifted { SyncStatus::OutOfSync } else { SyncStatus::Synced }
}

/// The app's health: `progressing` while a sync runs, `missing` when a
/// service runs nowhere, `degraded` when a node fails its check.
pub fn health(diffs: &[ServiceDiff], syncing: bool) -> &'static str {
    if syncing {
        return "progressing";
    }
    if diffs.iter().any(|d| d.status == ServiceStatus::Missing) {
        return "missing";
    }
    if diffs.iter().flat_map(|d| &d.nodes).any(|n| n.status == NodeStatus::Unhealthy || !n.healthy) {
        return "degraded";
    }
    "healthy"
}
