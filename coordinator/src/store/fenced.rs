//! Fencing: a store wrapper that makes every transaction also check that
//! this coordinator still holds leadership, that is, that the leader key
//! still has the create revision it had when we won it (our epoch). A
//! paused or partitioned old leader therefore cannot write anything once
//! another coordinator has taken over: its transactions fail, and it learns
//! it has lost. Reads pass through unchanged.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{
    Compare, EndpointHealth, KeyValue, LeaseId, Op, Result, Revision, Store, StoreError, Txn, TxnResponse, WatchMessage,
};

pub struct Fenced {
    inner: Arc<dyn Store>,
    leader_key: String,
    epoch: Revision,
}

impl Fenced {
    pub fn new(inner: Arc<dyn Store>, leader_key: &str, epoch: Revision) -> Arc<Fenced> {
        Arc::new(Fenced { inner, leader_key: leader_key.to_string(), epoch })
    }
}

#[async_trait]
impl Store for Fenced {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn stopped(&self) -> Option<String> {
        self.inner.stopped()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        self.inner.range(prefix).await
    }

    fn split(&self, ops: Vec<Op>) -> Vec<Vec<Op>> {
        self.inner.split(ops)
    }

    async fn txn(&self, mut txn: Txn) -> Result<TxnResponse> {
        let had_compares = !txn.compare.is_empty();
        txn.compare.push(Compare::CreateRevision(self.leader_key.clone(), self.epoch));
        // On failure, read the leader key to tell a lost fence from a caller
        // compare that did not hold.
        txn.failure.push(Op::Get { key: self.leader_key.clone() });
        let mut resp = self.inner.txn(txn).await?;
        if resp.succeeded {
            return Ok(resp);
        }
        let leader = resp.gets.pop().flatten();
        if !had_compares || leader.is_none_or(|kv| kv.create_revision != self.epoch) {
            return Err(StoreError::Fenced { epoch: self.epoch });
        }
        Ok(resp)
    }

    async fn watch(&self, prefix: &str, start: Revision) -> Result<mpsc::Receiver<WatchMessage>> {
        self.inner.watch(prefix, start).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.lease_revoke(lease).await
    }

    /// Not fenced: compacting is harmless, whoever does it.
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn endpoint_health(&self) -> Vec<EndpointHealth> {
        self.inner.endpoint_health().await
    }
}
