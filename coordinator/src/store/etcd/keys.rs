//! The key prefix that keeps deployments sharing one etcd apart: added to
//! every key sent and stripped from every key that comes back (ranges, gets,
//! a transaction's gets, watch events). The module doc of `store::etcd` says
//! which prefixes stay apart. Every call that names a key goes through here,
//! so that no path can forget the prefix on the way out or leak it on the
//! way back.

use super::EtcdStore;
use crate::store::KeyValue;

impl EtcdStore {
    /// The key as etcd stores it: the prefix, then the key.
    pub(super) fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// Bytes a key takes on the wire, prefix included.
    pub(super) fn key_bytes(&self, key: &str) -> usize {
        self.prefix.len() + key.len()
    }

    pub(super) fn to_kv(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        to_kv(kv, &self.prefix)
    }
}

/// An etcd key-value as the store's, with our prefix stripped. A free
/// function, because a watch's forwarding task outlives the call that
/// started it and keeps only a copy of the prefix.
pub(super) fn to_kv(kv: &etcd_client::KeyValue, prefix: &str) -> KeyValue {
    KeyValue {
        key: strip_prefix(kv.key(), prefix),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn strip_prefix(key: &[u8], prefix: &str) -> String {
    String::from_utf8_lossy(key.strip_prefix(prefix.as_bytes()).unwrap_or(key)).into_owned()
}
