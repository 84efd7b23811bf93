//! What apps keep in the store, and the calls any coordinator may make on
//! them, leader or not: registering, listing and removing apps, and asking
//! the leader's controller for a sync or a refresh. Every record is JSON,
//! and one that does not decode is an error naming its key.
//!
//! ```text
//! /apps/a/{name}                 AppRecord: the app as registered
//! /apps/status/{name}            AppStatus: what the controller last saw and did
//! /apps/requests/{name}/sync     Request: a sync asked for (`drover app sync`)
//! /apps/requests/{name}/refresh  Request: a fetch asked for (`drover app refresh`)
//! /apps/syncs/{name}/{id}        SyncRecord: one sync, id zero-padded to 10 digits
//! /apps/pins/{name}              Pin: the commit the app is held at (`drover app rollback`)
//! ```
//!
//! A request's number is the store revision that wrote it; the controller
//! takes it (deleting the key only if no newer request replaced it) and
//! records it on the sync it starts, so `drover app sync --wait` can find
//! its sync.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::core::apps::{self as rules, AppSpec};
use crate::core::triggers::escape;
use crate::records::encode;
use crate::store::{Compare, Op, Revision, Store, StoreError, Txn, decode};

pub const PREFIX: &str = "/apps/";
pub const APPS: &str = "/apps/a/";
pub const STATUS: &str = "/apps/status/";
pub const REQUESTS: &str = "/apps/requests/";
pub const SYNCS: &str = "/apps/syncs/";
pub const PINS: &str = "/apps/pins/";

pub fn pin(name: &str) -> String {
    format!("{PINS}{name}")
}

pub fn app(name: &str) -> String {
    format!("{APPS}{name}")
}
pub fn status(name: &str) -> String {
    format!("{STATUS}{name}")
}
pub fn requests_of(name: &str) -> String {
    format!("{REQUESTS}{name}/")
}
pub fn syncs_of(name: &str) -> String {
    format!("{SYNCS}{}/", escape(name))
}
pub fn sync(name: &str, id: u64) -> String {
    format!("{}{id:010}", syncs_of(name))
}

#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("{0}")]
    Invalid(String),
    #[error("app {0} already exists; remove it first with `drover app rm {0}`, or choose another name")]
    Exists(String),
    #[error("app {0} not found; `drover apps` lists them")]
    NotFound(String),
    #[error("there are {} apps, the most a coordinator keeps; remove one with `drover app rm`", rules::MAX_APPS)]
    TooMany,
    #[error("--depends-on would close a cycle: {0}; an app cannot wait for itself")]
    Cycle(String),
    #[error("{0}")]
    Precondition(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An app as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub spec: AppSpec,
    pub created_by: String,
    pub created_ms: u64,
}

/// What the controller last saw of an app and did about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The create revision of the app record it is about: a status left
    /// by an app of the same name that was removed is not this one's.
    pub app_revision: Revision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_commit: Option<String>,
    #[serde(default)]
    pub last_fetch_ms: u64,
    /// When the controller first saw `wanted_commit`: the apps this one
    /// depends on must have been looked at since, before it syncs.
    #[serde(default)]
    pub wanted_since_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    #[serde(default)]
    pub last_error_ms: u64,
    /// `synced` or `out_of_sync`; empty before the first diff.
    #[serde(default)]
    pub sync_status: String,
    #[serde(default)]
    pub health: String,
    /// A line per service that differs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
    /// Since when the nodes have drifted from the commit last synced; 0
    /// when they have not.
    #[serde(default)]
    pub drift_since_ms: u64,
    /// The sync under way, and the commit it syncs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syncing: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syncing_commit: Option<String>,
    /// The last sync id handed out.
    #[serde(default)]
    pub last_sync: u64,
    /// The commit the last automatic sync was for, and when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_auto: Option<(String, u64)>,
    /// Why a sync waits for the apps this one depends on; empty when
    /// nothing blocks it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub blocked: String,
    /// The run each service's `update:` last wrote into git.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub updated: std::collections::BTreeMap<String, u64>,
    /// The services this app has synced: one no file declares any more is
    /// an orphan.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub owned: BTreeSet<String>,
}

/// The commit an app is held at: auto-sync and self-heal converge to it,
/// not to the revision's head, until `drover app unpin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub commit: String,
    pub by: String,
    pub at_ms: u64,
}

/// A sync or a refresh asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub by: String,
    pub at_ms: u64,
    /// For a sync: the revision to sync (`drover app sync --revision`),
    /// when not the app's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// One sync of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub id: u64,
    pub commit: String,
    pub started_by: String,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// `running`, `succeeded`, `failed` (timed out, too) or `superseded`
    /// (a newer commit's sync took over).
    pub outcome: String,
    #[serde(default)]
    pub message: String,
    /// A line per service it changes.
    #[serde(default)]
    pub changes: Vec<String>,
    /// The rollouts it started, one per service.
    #[serde(default)]
    pub rollouts: Vec<u64>,
    /// The services it stops (`--prune`), which the app no longer owns once
    /// it succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// The request it answers (its store revision), 0 for an automatic one.
    #[serde(default)]
    pub request: u64,
}

/// An app, with what the controller last saw of it (none yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppView {
    pub record: AppRecord,
    pub status: Option<AppStatus>,
    pub pin: Option<Pin>,
}

/// Registers an app; a bad setting is refused with its fix and nothing is
/// stored. A name in use is refused.
pub async fn create(store: &dyn Store, spec: AppSpec, by: &str, now_ms: u64) -> Result<AppRecord, AppsError> {
    if let Some(why) = rules::spec_problem(&spec) {
        return Err(AppsError::Invalid(why));
    }
    let key = app(&spec.name);
    if store.get(&key).await?.is_some() {
        return Err(AppsError::Exists(spec.name));
    }
    let (existing, _) = store.range(APPS).await?;
    if existing.len() >= rules::MAX_APPS {
        return Err(AppsError::TooMany);
    }
    let mut graph = std::collections::BTreeMap::new();
    for kv in &existing {
        let other: AppRecord = decode(&kv.key, &kv.value)?;
        graph.insert(other.spec.name, other.spec.depends_on);
    }
    graph.insert(spec.name.clone(), spec.depends_on.clone());
    if let Some(cycle) = rules::cycle(&graph, &spec.name) {
        return Err(AppsError::Cycle(cycle));
    }
    let name = spec.name.clone();
    let record = AppRecord { spec, created_by: by.to_owned(), created_ms: now_ms };
    let txn = Txn {
        compare: vec![Compare::CreateRevision(key.clone(), 0)],
        success: vec![Op::put(key, encode(&record))],
        failure: Vec::new(),
    };
    if !store.txn(txn).await?.succeeded {
        return Err(AppsError::Exists(name));
    }
    Ok(record)
}

/// What applying an apps file did to each app of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub created: Vec<String>,
    pub replaced: Vec<String>,
    pub unchanged: Vec<String>,
}

/// How often [`apply`] reads again when the apps changed under it.
const APPLY_TRIES: usize = 5;

/// Creates or replaces every app of file `file_name` (its text), in one
/// transaction: all of them, or (on any problem, anywhere) none. Apps the
/// file does not name are left as they are. A replaced app fetches at once
/// (a refresh request in the same transaction); its environment cannot
/// change, as what it deployed would be left behind unowned.
pub async fn apply(
    store: &dyn Store,
    file_name: &str,
    text: &str,
    by: &str,
    now_ms: u64,
) -> Result<Applied, AppsError> {
    let specs = rules::file::parse_file(file_name, text).map_err(|problems| AppsError::Invalid(problems.join("\n")))?;
    for _ in 0..APPLY_TRIES {
        let (kvs, _) = store.range(APPS).await?;
        let mut stored = std::collections::BTreeMap::new();
        let mut graph = std::collections::BTreeMap::new();
        for kv in &kvs {
            let record: AppRecord = decode(&kv.key, &kv.value)?;
            graph.insert(record.spec.name.clone(), record.spec.depends_on.clone());
            stored.insert(record.spec.name.clone(), (record, kv.mod_revision));
        }
        if stored.len() + specs.iter().filter(|s| !stored.contains_key(&s.name)).count() > rules::MAX_APPS {
            return Err(AppsError::TooMany);
        }
        for spec in &specs {
            graph.insert(spec.name.clone(), spec.depends_on.clone());
        }
        for spec in &specs {
            if let Some(cycle) = rules::cycle(&graph, &spec.name) {
                return Err(AppsError::Cycle(cycle));
            }
        }
        let mut applied = Applied::default();
        let mut txn = Txn::default();
        for spec in &specs {
            let key = app(&spec.name);
            let record = match stored.get(&spec.name) {
                Some((old, _)) if old.spec == *spec => {
                    applied.unchanged.push(spec.name.clone());
                    continue;
                }
                Some((old, _)) if old.spec.environment != spec.environment => {
                    return Err(AppsError::Invalid(format!(
                        "{file_name}: app {} deploys to environment {}, not {}: an app's environment does not \
                         change (what it deployed would be left behind); remove it with `drover app rm {}` and \
                         apply the file again",
                        spec.name, old.spec.environment, spec.environment, spec.name
                    )));
                }
                Some((old, revision)) => {
                    txn.compare.push(Compare::ModRevision(key.clone(), *revision));
                    applied.replaced.push(spec.name.clone());
                    let request =
                        Request { by: format!("{by}, who applied {file_name}"), at_ms: now_ms, revision: None };
                    txn.success.push(Op::put(format!("{}refresh", requests_of(&spec.name)), encode(&request)));
                    AppRecord { spec: spec.clone(), ..old.clone() }
                }
                None => {
                    txn.compare.push(Compare::CreateRevision(key.clone(), 0));
                    applied.created.push(spec.name.clone());
                    AppRecord { spec: spec.clone(), created_by: by.to_owned(), created_ms: now_ms }
                }
            };
            txn.success.push(Op::put(key, encode(&record)));
        }
        if txn.success.is_empty() || store.txn(txn).await?.succeeded {
            return Ok(applied);
        }
    }
    Err(AppsError::Precondition(format!(
        "the apps changed {APPLY_TRIES} times while {file_name} was applied; nothing was applied, apply it again"
    )))
}

/// Every app by name, with its status.
pub async fn list(store: &dyn Store) -> Result<Vec<AppView>, AppsError> {
    let (kvs, _) = store.range(APPS).await?;
    let (statuses, _) = store.range(STATUS).await?;
    let (pins, _) = store.range(PINS).await?;
    let mut pin_of = std::collections::BTreeMap::new();
    for kv in &pins {
        pin_of.insert(kv.key[PINS.len()..].to_owned(), decode::<Pin>(&kv.key, &kv.value)?);
    }
    let mut by_name = std::collections::BTreeMap::new();
    for kv in &statuses {
        let status: AppStatus = decode(&kv.key, &kv.value)?;
        by_name.insert(kv.key[STATUS.len()..].to_owned(), status);
    }
    kvs.iter()
        .map(|kv| {
            let record: AppRecord = decode(&kv.key, &kv.value)?;
            let status = by_name.remove(&record.spec.name).filter(|s| s.app_revision == kv.create_revision);
            let pin = pin_of.remove(&record.spec.name);
            Ok(AppView { record, status, pin })
        })
        .collect()
}

/// One app, with its status, and its record's create revision.
pub async fn get(store: &dyn Store, name: &str) -> Result<(AppView, Revision), AppsError> {
    let kv = store.get(&app(name)).await?.ok_or_else(|| AppsError::NotFound(name.to_owned()))?;
    let record: AppRecord = decode(&kv.key, &kv.value)?;
    let status = match store.get(&status(name)).await? {
        Some(s) => Some(decode::<AppStatus>(&s.key, &s.value)?).filter(|s| s.app_revision == kv.create_revision),
        None => None,
    };
    let pin = match store.get(&pin(name)).await? {
        Some(p) => Some(decode::<Pin>(&p.key, &p.value)?),
        None => None,
    };
    Ok((AppView { record, status, pin }, kv.create_revision))
}

/// Removes app `name`, its status, requests and history; what it deployed
/// keeps running (`drover rollback` and the services' own records stay).
pub async fn remove(store: &dyn Store, name: &str) -> Result<(), AppsError> {
    if store.get(&app(name)).await?.is_none() {
        return Err(AppsError::NotFound(name.to_owned()));
    }
    let ops = vec![
        Op::delete(app(name)),
        Op::delete(status(name)),
        Op::DeletePrefix { prefix: requests_of(name) },
        Op::DeletePrefix { prefix: syncs_of(name) },
        Op::delete(pin(name)),
    ];
    store.txn(Txn::ops(ops)).await?;
    Ok(())
}

/// Asks the leader's controller for a `sync` or a `refresh` of app
/// `name`; the request's number.
pub async fn request(store: &dyn Store, name: &str, kind: &str, request: &Request) -> Result<u64, AppsError> {
    let key = app(name);
    let txn = Txn {
        compare: vec![Compare::ModRevision(key.clone(), 0)],
        success: Vec::new(),
        failure: vec![Op::put(format!("{}{kind}", requests_of(name)), encode(request))],
    };
    let response = store.txn(txn).await?;
    // The compare holds when the app does not exist.
    if response.succeeded {
        return Err(AppsError::NotFound(name.to_owned()));
    }
    Ok(u64::try_from(response.revision).unwrap_or_default())
}

/// Pins app `name` to `commit` and asks for a sync; the request's number.
pub async fn pin_to(store: &dyn Store, name: &str, commit: &str, by: &str, now_ms: u64) -> Result<u64, AppsError> {
    let key = app(name);
    let txn = Txn {
        compare: vec![Compare::ModRevision(key, 0)],
        success: Vec::new(),
        failure: vec![
            Op::put(pin(name), encode(&Pin { commit: commit.to_owned(), by: by.to_owned(), at_ms: now_ms })),
            Op::put(
                format!("{}sync", requests_of(name)),
                encode(&Request { by: by.to_owned(), at_ms: now_ms, revision: None }),
            ),
        ],
    };
    let response = store.txn(txn).await?;
    if response.succeeded {
        return Err(AppsError::NotFound(name.to_owned()));
    }
    Ok(u64::try_from(response.revision).unwrap_or_default())
}

/// Lets app `name` follow its revision again, and fetches it now.
pub async fn unpin(store: &dyn Store, name: &str, by: &str, now_ms: u64) -> Result<(), AppsError> {
    let Some(_) = store.get(&pin(name)).await? else {
        if store.get(&app(name)).await?.is_none() {
            return Err(AppsError::NotFound(name.to_owned()));
        }
        return Err(AppsError::Precondition(format!("app {name} is not pinned; `drover app rollback` pins it")));
    };
    let ops = vec![
        Op::delete(pin(name)),
        Op::put(
            format!("{}refresh", requests_of(name)),
            encode(&Request { by: by.to_owned(), at_ms: now_ms, revision: None }),
        ),
    ];
    store.txn(Txn::ops(ops)).await?;
    Ok(())
}

/// Asks for a fetch of every app of repository `url` (a webhook's push);
/// how many.
pub async fn refresh_repo(store: &dyn Store, url: &str, by: &str, now_ms: u64) -> Result<usize, AppsError> {
    let (kvs, _) = store.range(APPS).await?;
    let mut ops = Vec::new();
    for kv in &kvs {
        let record: AppRecord = decode(&kv.key, &kv.value)?;
        if record.spec.repo == url {
            let request = Request { by: by.to_owned(), at_ms: now_ms, revision: None };
            ops.push(Op::put(format!("{}refresh", requests_of(&record.spec.name)), encode(&request)));
        }
    }
    let n = ops.len();
    if n > 0 {
        store.txn(Txn::ops(ops)).await?;
    }
    Ok(n)
}

/// Every sync of app `name`, newest first.
pub async fn history(store: &dyn Store, name: &str) -> Result<Vec<SyncRecord>, AppsError> {
    if store.get(&app(name)).await?.is_none() {
        return Err(AppsError::NotFound(name.to_owned()));
    }
    let (kvs, _) = store.range(&syncs_of(name)).await?;
    let mut out: Vec<SyncRecord> = kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}
