//! Transactions on etcd: mapping the store's [`Txn`], compares and
//! operations onto etcd's, and fitting them to etcd's limits
//! ([`MAX_TXN_OPS`], [`MAX_REQUEST_BYTES`], no key written twice). A
//! transaction without compares is split, in order, into as many etcd
//! transactions as the limits need; one with compares is sent whole or
//! refused, and values too large for any request are refused before
//! anything is sent. The module doc of `store::etcd` gives the contract;
//! the limits are kept here, with the size estimates, because they only
//! make sense together.

use std::collections::HashSet;

use etcd_client::{CompareOp, DeleteOptions, PutOptions, TxnOp, TxnOpResponse};

use super::endpoints::Call;
use super::{EtcdStore, header_revision};
use crate::store::{Compare, Op, Result, StoreError, Txn, TxnResponse};

/// The most compares, or operations in one branch, that one etcd transaction
/// may have: etcd's default `--max-txn-ops`. Unconditional transactions are
/// split to fit; callers must keep transactions with compares within it.
pub const MAX_TXN_OPS: usize = 128;

/// The largest request etcd accepts: its default `--max-request-bytes`
/// (1.5 MiB). Values are limited to what fits in one request by themselves.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Room left in every request for what etcd adds around a transaction before
/// it checks the size (the raft request header), and for our estimate of the
/// protobuf framing being a little off.
const REQUEST_OVERHEAD_BYTES: usize = 4096;

/// Our estimate of the protobuf framing of one operation or compare: tags,
/// lengths and the lease id.
pub(super) const OP_OVERHEAD_BYTES: usize = 32;

/// What [`Store::split`](crate::store::Store::split) leaves in each request for the compares the caller
/// adds (the leader's fence is one compare and one read).
const COMPARE_ROOM_BYTES: usize = 16 * 1024;

/// The part of [`MAX_REQUEST_BYTES`] that operations may fill.
pub(super) const REQUEST_BUDGET: usize = MAX_REQUEST_BYTES - REQUEST_OVERHEAD_BYTES;

impl EtcdStore {
    /// [`Store::split`](crate::store::Store::split): unconditional chunks that leave room in each request
    /// for the compares the caller adds.
    pub(super) fn split_leaving_compare_room(&self, ops: Vec<Op>) -> Vec<Vec<Op>> {
        if ops.is_empty() {
            return Vec::new();
        }
        self.split_unconditional(ops, COMPARE_ROOM_BYTES)
    }

    /// [`Store::txn`](crate::store::Store::txn): one etcd transaction for a transaction with compares,
    /// as many as etcd's limits need for one without.
    pub(super) async fn run_txn(&self, txn: Txn) -> Result<TxnResponse> {
        // As in the embedded store, sizes are checked for both branches, so a
        // transaction does not pass or fail them depending on its compares.
        self.check_value_sizes(&txn.success)?;
        self.check_value_sizes(&txn.failure)?;
        if !txn.compare.is_empty() {
            self.check_conditional(&txn)?;
            return self.send_txn(&txn.compare, &txn.success, &txn.failure).await;
        }
        // Without compares the success branch always runs and the failure
        // branch never does, so only the former is sent.
        let mut response = TxnResponse { succeeded: true, revision: 0, gets: Vec::new() };
        for chunk in self.split_unconditional(txn.success, 0) {
            let part = self.send_txn(&[], &chunk, &[]).await?;
            response.revision = part.revision;
            response.gets.extend(part.gets);
        }
        Ok(response)
    }

    fn to_txn_op(&self, op: &Op) -> TxnOp {
        match op {
            Op::Put { key, value, lease } => {
                let options = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
                TxnOp::put(self.full_key(key), value.clone(), options)
            }
            Op::Delete { key } => TxnOp::delete(self.full_key(key), None),
            Op::DeletePrefix { prefix } => {
                TxnOp::delete(self.full_key(prefix), Some(DeleteOptions::new().with_prefix()))
            }
            Op::Get { key } => TxnOp::get(self.full_key(key), None),
        }
    }

    fn to_compare(&self, compare: &Compare) -> etcd_client::Compare {
        // etcd treats a missing key as having revisions 0, so `0` means
        // "absent" exactly as in the trait; a value compare on a missing key
        // is always false.
        match compare {
            Compare::ModRevision(key, rev) => {
                etcd_client::Compare::mod_revision(self.full_key(key), CompareOp::Equal, *rev)
            }
            Compare::CreateRevision(key, rev) => {
                etcd_client::Compare::create_revision(self.full_key(key), CompareOp::Equal, *rev)
            }
            Compare::Value(key, value) => {
                etcd_client::Compare::value(self.full_key(key), CompareOp::Equal, value.clone())
            }
        }
    }

    /// Sends one etcd transaction that is known to be within etcd's limits.
    async fn send_txn(&self, compare: &[Compare], success: &[Op], failure: &[Op]) -> Result<TxnResponse> {
        let txn = etcd_client::Txn::new()
            .when(compare.iter().map(|c| self.to_compare(c)).collect::<Vec<_>>())
            .and_then(success.iter().map(|op| self.to_txn_op(op)).collect::<Vec<_>>())
            .or_else(failure.iter().map(|op| self.to_txn_op(op)).collect::<Vec<_>>());
        // etcd answers a put with a missing lease with "lease not found";
        // report the first lease the transaction uses.
        let lease = success
            .iter()
            .chain(failure)
            .find_map(|op| match op {
                Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                _ => None,
            })
            .unwrap_or(0);
        let call = Call { what: "the transaction", idempotent: false, lease };
        let resp = self
            .call(call, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
        let gets = resp
            .op_responses()
            .into_iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| self.to_kv(kv))),
                _ => None,
            })
            .collect();
        Ok(TxnResponse { succeeded: resp.succeeded(), revision: header_revision(resp.header()), gets })
    }

    /// Our estimate of an operation's size in an etcd request.
    fn op_bytes(&self, op: &Op) -> usize {
        OP_OVERHEAD_BYTES
            + match op {
                Op::Put { key, value, .. } => self.key_bytes(key) + value.len(),
                Op::Delete { key } | Op::Get { key } => self.key_bytes(key),
                // The range end is about as long as the key.
                Op::DeletePrefix { prefix } => 2 * self.key_bytes(prefix),
            }
    }

    fn compare_bytes(&self, compare: &Compare) -> usize {
        OP_OVERHEAD_BYTES
            + match compare {
                Compare::ModRevision(key, _) | Compare::CreateRevision(key, _) => self.key_bytes(key),
                Compare::Value(key, value) => self.key_bytes(key) + value.len(),
            }
    }

    /// Fails with `ValueTooLarge` for a put that would not fit in an etcd
    /// request even on its own.
    fn check_value_sizes(&self, ops: &[Op]) -> Result<()> {
        for op in ops {
            if let Op::Put { key, value, .. } = op {
                let bytes = self.op_bytes(op);
                if bytes > REQUEST_BUDGET {
                    let limit = REQUEST_BUDGET - (bytes - value.len());
                    return Err(StoreError::ValueTooLarge { key: key.clone(), size: value.len(), limit });
                }
            }
        }
        Ok(())
    }

    /// Splits the operations of a transaction without compares into etcd
    /// transactions that each respect etcd's limits, keeping their order,
    /// with `reserve` bytes of each request left for compares.
    pub(super) fn split_unconditional(&self, mut ops: Vec<Op>, reserve: usize) -> Vec<Vec<Op>> {
        let budget = REQUEST_BUDGET - reserve;
        // First find where each chunk starts, then cut the operations there.
        let mut starts = Vec::new();
        let mut len = 0;
        let mut bytes = 0;
        let mut written = WrittenKeys::default();
        for (i, op) in ops.iter().enumerate() {
            let op_bytes = self.op_bytes(op);
            if len > 0 && (len == MAX_TXN_OPS || bytes + op_bytes > budget || written.conflicts(op).is_some()) {
                starts.push(i);
                len = 0;
                bytes = 0;
                written = WrittenKeys::default();
            }
            len += 1;
            bytes += op_bytes;
            written.add(op);
        }
        // Even an empty transaction is sent once, for the current revision.
        let mut chunks = Vec::with_capacity(starts.len() + 1);
        for start in starts.into_iter().rev() {
            chunks.push(ops.split_off(start));
        }
        chunks.push(ops);
        chunks.reverse();
        chunks
    }

    /// Checks that a transaction with compares fits in one etcd transaction.
    fn check_conditional(&self, txn: &Txn) -> Result<()> {
        let most = txn.compare.len().max(txn.success.len()).max(txn.failure.len());
        if most > MAX_TXN_OPS {
            return Err(StoreError::Rejected(format!(
                "transaction has {} compares, {} success and {} failure operations, over etcd's limit of \
                 {MAX_TXN_OPS} per list (--max-txn-ops); a transaction with compares cannot be split, so write \
                 in chunks of at most store::etcd::MAX_TXN_OPS",
                txn.compare.len(),
                txn.success.len(),
                txn.failure.len()
            )));
        }
        let bytes = txn.compare.iter().map(|c| self.compare_bytes(c)).sum::<usize>()
            + txn.success.iter().chain(&txn.failure).map(|op| self.op_bytes(op)).sum::<usize>();
        if bytes > REQUEST_BUDGET {
            return Err(StoreError::Rejected(format!(
                "transaction is about {bytes} bytes, over etcd's request limit of {MAX_REQUEST_BYTES} bytes \
                 (--max-request-bytes); a transaction with compares cannot be split"
            )));
        }
        for branch in [&txn.success, &txn.failure] {
            let mut written = WrittenKeys::default();
            for op in branch.iter() {
                if let Some(key) = written.conflicts(op) {
                    return Err(StoreError::Rejected(format!(
                        "transaction writes {key} twice in one branch (or puts it inside a prefix it deletes); \
                         etcd refuses that"
                    )));
                }
                written.add(op);
            }
        }
        Ok(())
    }
}

/// The keys one etcd transaction writes, to find the writes etcd refuses to
/// combine: a key put twice, or put and deleted (by key or prefix), in
/// either order.
#[derive(Default)]
struct WrittenKeys<'a> {
    puts: HashSet<&'a str>,
    deletes: HashSet<&'a str>,
    deleted_prefixes: Vec<&'a str>,
}

impl<'a> WrittenKeys<'a> {
    /// The key that `op` would write a second time, if any.
    fn conflicts(&self, op: &'a Op) -> Option<&'a str> {
        match op {
            Op::Put { key, .. } => (self.puts.contains(key.as_str())
                || self.deletes.contains(key.as_str())
                || self.deleted_prefixes.iter().any(|p| key.starts_with(p)))
            .then_some(key.as_str()),
            Op::Delete { key } => self.puts.contains(key.as_str()).then_some(key.as_str()),
            Op::DeletePrefix { prefix } => self.puts.iter().find(|k| k.starts_with(prefix.as_str())).copied(),
            Op::Get { .. } => None,
        }
    }

    fn add(&mut self, op: &'a Op) {
        match op {
            Op::Put { key, .. } => {
                self.puts.insert(key);
            }
            Op::Delete { key } => {
                self.deletes.insert(key);
            }
            Op::DeletePrefix { prefix } => self.deleted_prefixes.push(prefix),
            Op::Get { .. } => {}
        }
    }
}
