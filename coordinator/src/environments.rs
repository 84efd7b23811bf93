//! Environments in the store: what `drover env create|apply|rm` write
//! under `/environments/{name}` and what `drover envs` reads. Any
//! coordinator serves them, leader or not, straight to the store; the
//! listing's nodes come from the leader's fleet and are matched by the
//! pure rules (`crate::core::environments`), which also check every
//! definition before anything is written. An apply writes all of its file
//! in one transaction, or nothing. Every record is JSON, and one that does
//! not decode is an error naming its key, never skipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::environments::{self as rules, Spec};
use crate::core::keys;
use crate::records::encode;
use crate::store::{Compare, Op, Store, StoreError, Txn, decode};

/// How often an apply that lost a race with another write reads again
/// before it gives up.
const APPLY_TRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum EnvironmentsError {
    /// Every problem of a definition, one a line, each with its fix.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// An environments file's problems, each at file:line:column.
    #[error("invalid environments file:\n{}", .0.join("\n"))]
    File(Vec<String>),
    #[error(
        "environment {0:?} exists already; change it with `drover env apply -f FILE`, or remove it first with \
         `drover env rm {0}`"
    )]
    Exists(String),
    #[error("environment {0:?} does not exist; `drover envs` lists them")]
    NotFound(String),
    #[error("{0}")]
    TooMany(String),
    #[error(
        "the environments changed while this apply was being written ({APPLY_TRIES} times); nothing was applied: \
         apply the file again"
    )]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `/environments/{name}` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    #[serde(flatten)]
    pub spec: Spec,
    pub created_ms: u64,
    pub created_by: String,
    /// The last replacing apply; the creation until one.
    pub updated_ms: u64,
    pub updated_by: String,
}

/// What an apply did to each environment of its file, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub created: Vec<String>,
    pub replaced: Vec<String>,
    /// Defined in the file exactly as stored: not written.
    pub unchanged: Vec<String>,
}

/// Defines an environment; every bad setting is refused with its fix and
/// nothing is stored. A name in use is refused.
pub async fn create(
    store: &dyn Store,
    spec: Spec,
    by: &str,
    now_ms: u64,
) -> Result<EnvironmentRecord, EnvironmentsError> {
    let spec = rules::check(spec).map_err(EnvironmentsError::Invalid)?;
    let key = keys::environment(&spec.name);
    if store.get(&key).await?.is_some() {
        return Err(EnvironmentsError::Exists(spec.name));
    }
    let (existing, _) = store.range(keys::ENVIRONMENTS).await?;
    if let Some(why) = rules::count_problem(existing.len() + 1) {
        return Err(EnvironmentsError::TooMany(why));
    }
    let record = EnvironmentRecord {
        spec,
        created_ms: now_ms,
        created_by: by.to_owned(),
        updated_ms: now_ms,
        updated_by: by.to_owned(),
    };
    let txn = Txn {
        compare: vec![Compare::CreateRevision(key.clone(), 0)],
        success: vec![Op::put(key, encode(&record))],
        failure: Vec::new(),
    };
    if !store.txn(txn).await?.succeeded {
        return Err(EnvironmentsError::Exists(record.spec.name));
    }
    Ok(record)
}

/// Creates or replaces every environment of file `file_name` (its text),
/// in one transaction: all of them, or (on any problem, anywhere) none.
/// Environments the file does not name are left as they are.
pub async fn apply(
    store: &dyn Store,
    file_name: &str,
    text: &str,
    by: &str,
    now_ms: u64,
) -> Result<Applied, EnvironmentsError> {
    let specs = rules::parse_file(file_name, text).map_err(EnvironmentsError::File)?;
    for _ in 0..APPLY_TRIES {
        let (kvs, _) = store.range(keys::ENVIRONMENTS).await?;
        let mut stored = BTreeMap::new();
        for kv in &kvs {
            let record: EnvironmentRecord = decode(&kv.key, &kv.value)?;
            stored.insert(record.spec.name.clone(), (record, kv.mod_revision));
        }
        let new = specs.iter().filter(|s| !stored.contains_key(&s.name)).count();
        if let Some(why) = rules::count_problem(stored.len() + new) {
            return Err(EnvironmentsError::TooMany(why));
        }
        let mut applied = Applied::default();
        let (mut compare, mut success) = (Vec::new(), Vec::new());
        for spec in &specs {
            let key = keys::environment(&spec.name);
            let record = match stored.get(&spec.name) {
                Some((old, _)) if old.spec == *spec => {
                    applied.unchanged.push(spec.name.clone());
                    continue;
                }
                Some((old, revision)) => {
                    compare.push(Compare::ModRevision(key.clone(), *revision));
                    applied.replaced.push(spec.name.clone());
                    EnvironmentRecord {
                        spec: spec.clone(),
                        updated_ms: now_ms,
                        updated_by: by.to_owned(),
                        ..old.clone()
                    }
                }
                None => {
                    compare.push(Compare::CreateRevision(key.clone(), 0));
                    applied.created.push(spec.name.clone());
                    EnvironmentRecord {
                        spec: spec.clone(),
                        created_ms: now_ms,
                        created_by: by.to_owned(),
                        updated_ms: now_ms,
                        updated_by: by.to_owned(),
                    }
                }
            };
            success.push(Op::put(key, encode(&record)));
        }
        if success.is_empty() {
            return Ok(applied);
        }
        if store.txn(Txn { compare, success, failure: Vec::new() }).await?.succeeded {
            return Ok(applied);
        }
    }
    Err(EnvironmentsError::Contended)
}

/// Deploy jobs to an environment that requires approval wait for one of
/// its approvers (the run machine's approval gate): a job without an
/// `approval:` gets one naming the environment's approvers; a job with its
/// own keeps it, with the environment's approvers added. A job whose waves
/// go to other environments too is approved by someone who may approve for
/// every one of them that requires it (refused, naming them, when no one
/// may). Reads the environments only when the pipeline deploys; an
/// environment that does not exist is left to the rollout, which fails
/// saying so.
pub async fn gate_deploys(
    store: &dyn Store,
    pipeline: &mut drover_pipeline::Pipeline,
) -> Result<(), EnvironmentsError> {
    if !pipeline.jobs.iter().any(|j| j.deploy.is_some()) {
        return Ok(());
    }
    let (kvs, _) = store.range(keys::ENVIRONMENTS).await?;
    let envs: Vec<EnvironmentRecord> = kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect::<Result<_, _>>()?;
    for job in &mut pipeline.jobs {
        let Some(deploy) = &job.deploy else { continue };
        let names =
            std::iter::once(&deploy.environment).chain(deploy.waves.iter().filter_map(|w| w.environment.as_ref()));
        let mut gated: Vec<&EnvironmentRecord> = Vec::new();
        for name in names {
            if let Some(env) = envs.iter().find(|e| &e.spec.name == name && e.spec.require_approval)
                && !gated.iter().any(|g| g.spec.name == env.spec.name)
            {
                gated.push(env);
            }
        }
        let Some((first, others)) = gated.split_first() else { continue };
        let approvers: Vec<&String> =
            first.spec.approvers.iter().filter(|a| others.iter().all(|o| o.spec.approvers.contains(a))).collect();
        if approvers.is_empty() {
            let named: Vec<&str> = gated.iter().map(|g| g.spec.name.as_str()).collect();
            return Err(EnvironmentsError::Invalid(vec![format!(
                "deploy job `{}` goes to environments {} that require approval, and no approver may approve for \
                 all of them; give them an approver in common (`drover env apply`), or deploy to each from a job of \
                 its own",
                job.name,
                named.join(" and ")
            )]));
        }
        let gate =
            job.approval.get_or_insert_with(|| drover_pipeline::ApprovalSpec { approvers: Vec::new(), timeout: None });
        for approver in approvers {
            if !gate.approvers.contains(approver) {
                gate.approvers.push(approver.clone());
            }
        }
    }
    Ok(())
}

/// Every environment, by name.
pub async fn list(store: &dyn Store) -> Result<Vec<EnvironmentRecord>, EnvironmentsError> {
    let (kvs, _) = store.range(keys::ENVIRONMENTS).await?;
    Ok(kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect::<Result<_, _>>()?)
}

/// Environment `name`.
pub async fn get(store: &dyn Store, name: &str) -> Result<EnvironmentRecord, EnvironmentsError> {
    let Some(kv) = store.get(&keys::environment(name)).await? else {
        return Err(EnvironmentsError::NotFound(name.to_owned()));
    };
    Ok(decode(&kv.key, &kv.value)?)
}

/// Removes environment `name`.
pub async fn remove(store: &dyn Store, name: &str) -> Result<(), EnvironmentsError> {
    let key = keys::environment(name);
    let txn = Txn {
        compare: vec![Compare::CreateRevision(key.clone(), 0)],
        success: Vec::new(),
        failure: vec![Op::delete(key)],
    };
    if store.txn(txn).await?.succeeded {
        return Err(EnvironmentsError::NotFound(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::tests::{TestDir, store_and_segments};

    fn spec(name: &str, selector: &str) -> Spec {
        Spec { name: name.into(), selector: drover_client::labels::parse(selector).unwrap(), ..Spec::default() }
    }

    #[tokio::test]
    async fn create_apply_and_remove_write_all_or_nothing() {
        let dir = TestDir::new("environments");
        let (store, _segments) = store_and_segments(&dir).await;
        let store = store.as_ref();

        let made = create(store, spec("staging", "role=web,env=staging"), "alice", 5).await.unwrap();
        assert_eq!((made.created_by.as_str(), made.updated_ms), ("alice", 5));
        let again = create(store, spec("staging", "role=db"), "bob", 6).await.unwrap_err();
        assert!(matches!(again, EnvironmentsError::Exists(_)), "{again}");
        let bad = create(store, spec("bad name", ""), "bob", 6).await.unwrap_err();
        assert_eq!(bad.to_string().lines().count(), 2, "every problem: {bad}");

        // A file with one mistake writes none of its environments.
        let file = "environments:\n  - name: staging\n    selector: {role: web, env: staging}\n    \
                    description: changed\n  - name: prod\n    selector: {role: web, env: prod}\n  - name: qa\n    \
                    selector: {}\n";
        let err = apply(store, "envs.yml", file, "bob", 7).await.unwrap_err();
        assert!(err.to_string().contains("envs.yml:8:15: the selector is empty"), "{err}");
        let names: Vec<String> = list(store).await.unwrap().into_iter().map(|r| r.spec.name).collect();
        assert_eq!(names, ["staging"]);
        assert_eq!(get(store, "staging").await.unwrap().spec.description, "");

        // Fixed, it creates and replaces in one go, and says which.
        let file = file.replace("selector: {}", "selector: {role: qa}");
        let applied = apply(store, "envs.yml", &file, "bob", 8).await.unwrap();
        assert_eq!(applied.created, ["prod", "qa"]);
        assert_eq!(applied.replaced, ["staging"]);
        let staging = get(store, "staging").await.unwrap();
        assert_eq!((staging.spec.description.as_str(), staging.created_by.as_str()), ("changed", "alice"));
        assert_eq!((staging.updated_by.as_str(), staging.updated_ms), ("bob", 8));
        let applied = apply(store, "envs.yml", &file, "carol", 9).await.unwrap();
        assert_eq!(applied.unchanged, ["staging", "prod", "qa"]);
        assert_eq!(get(store, "qa").await.unwrap().updated_by, "bob", "an unchanged environment is not written");

        remove(store, "qa").await.unwrap();
        assert!(matches!(remove(store, "qa").await.unwrap_err(), EnvironmentsError::NotFound(_)));
        assert!(matches!(get(store, "qa").await.unwrap_err(), EnvironmentsError::NotFound(_)));
    }

    #[tokio::test]
    async fn the_limit_counts_what_is_stored_and_what_a_file_adds() {
        let dir = TestDir::new("environments-limit");
        let (store, _segments) = store_and_segments(&dir).await;
        let store = store.as_ref();
        // Four files of 50: a file holds at most 64.
        for part in 0..4 {
            let mut file = String::from("environments:\n");
            for i in part * 50..(part + 1) * 50 {
                file.push_str(&format!("  - {{name: e{i}, selector: {{n: '{i}'}}}}\n"));
            }
            assert_eq!(apply(store, "envs.yml", &file, "a", 1).await.unwrap().created.len(), 50);
        }
        let err = create(store, spec("one-more", "r=w"), "a", 2).await.unwrap_err();
        assert!(err.to_string().contains("201 environments, over the limit of 200"), "{err}");
        remove(store, "e0").await.unwrap();
        create(store, spec("one-more", "r=w"), "a", 3).await.unwrap();
    }
}
