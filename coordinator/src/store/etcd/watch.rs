//! Prefix watches on etcd: one etcd watch stream per watch, confirmed before
//! `watch` returns, and a forwarding task that turns etcd's responses into
//! [`WatchMessage`]s, one revision per message, ending with
//! [`WatchMessage::Compacted`] when etcd reports the start revision
//! compacted, or closing the channel when the stream breaks. The module doc
//! of `store::etcd` says what a watcher must do then. The forwarding task
//! lives here because it outlives the call that opened the watch and must
//! stop when either side goes away.

use etcd_client::{EventType, WatchOptions, WatchStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::endpoints::Call;
use super::{EtcdStore, keys};
use crate::store::{EventKind, Result, Revision, StoreError, WatchEvent, WatchMessage};

/// Capacity of each watch's channel, in messages (one revision each). When it
/// is full, the forwarding task stops reading and etcd buffers for us.
const WATCH_CHANNEL_CAPACITY: usize = 256;

impl EtcdStore {
    /// [`Store::watch`](crate::store::Store::watch): opens the etcd watch,
    /// waits for etcd to confirm it and hands its responses to a forwarding
    /// task.
    pub(super) async fn open_watch(&self, prefix: &str, start: Revision) -> Result<mpsc::Receiver<WatchMessage>> {
        let full = self.full_key(prefix);
        let options = WatchOptions::new().with_prefix().with_start_revision(start.max(0));
        let call = Call { what: "a watch", idempotent: true, lease: 0 };
        let (stream, first) = self
            .call(call, |client| {
                // One revision's events come in one response, which may be
                // far larger than tonic's default 4 MiB limit.
                let mut watch = client.watch_client().max_decoding_message_size(usize::MAX);
                let full = full.clone();
                let options = options.clone();
                async move {
                    let mut stream = watch.watch(full, Some(options)).await?;
                    // Wait for etcd to confirm the watch, so that a write made
                    // after `watch` returns is certainly seen.
                    let first = stream.message().await?;
                    Ok((stream, first))
                }
            })
            .await?;
        let first = match first {
            Some(resp) if resp.created() && resp.canceled() && resp.compact_revision() == 0 => {
                return Err(StoreError::Rejected(format!(
                    "etcd at {} refused the watch: {}",
                    self.label,
                    resp.cancel_reason()
                )));
            }
            Some(resp) => resp,
            None => {
                return Err(StoreError::Unavailable(format!(
                    "etcd at {} unreachable: the watch stream closed before the watch was created",
                    self.label
                )));
            }
        };
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
        let forwarder = WatchForwarder { prefix: self.prefix.clone(), label: self.label.clone(), tx };
        tokio::spawn(forwarder.run(stream, first));
        Ok(rx)
    }
}

/// Moves one etcd watch's responses into the watcher's channel.
struct WatchForwarder {
    prefix: String,
    label: String,
    tx: mpsc::Sender<WatchMessage>,
}

impl WatchForwarder {
    async fn run(self, mut stream: WatchStream, first: etcd_client::WatchResponse) {
        if !self.forward(first).await {
            return;
        }
        loop {
            let message = tokio::select! {
                // The receiver was dropped: stop, which drops the stream and
                // so cancels the watch on etcd.
                () = self.tx.closed() => return,
                message = stream.message() => message,
            };
            match message {
                Ok(Some(resp)) => {
                    if !self.forward(resp).await {
                        return;
                    }
                }
                Ok(None) => {
                    debug!(endpoints = %self.label, "etcd closed the watch stream; closing the watch");
                    return;
                }
                Err(e) => {
                    warn!(endpoints = %self.label, error = %e, "etcd watch stream broke; closing the watch");
                    return;
                }
            }
        }
    }

    /// Forwards one response; returns whether the watch goes on.
    async fn forward(&self, resp: etcd_client::WatchResponse) -> bool {
        if resp.compact_revision() > 0 {
            let compact_revision = resp.compact_revision();
            let _ = self.tx.send(WatchMessage::Compacted { compact_revision }).await;
            return false;
        }
        if resp.canceled() {
            warn!(endpoints = %self.label, reason = resp.cancel_reason(), "etcd canceled a watch; closing it");
            return false;
        }
        // Deliver one revision per message, as the embedded store does. A
        // response may hold several revisions, but never part of one, because
        // fragmenting is not enabled.
        let mut batch: Vec<WatchEvent> = Vec::new();
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let event = WatchEvent {
                kind: match event.event_type() {
                    EventType::Put => EventKind::Put,
                    EventType::Delete => EventKind::Delete,
                },
                kv: keys::to_kv(kv, &self.prefix),
            };
            if batch.last().is_some_and(|last| last.kv.mod_revision != event.kv.mod_revision)
                && self.tx.send(WatchMessage::Events(std::mem::take(&mut batch))).await.is_err()
            {
                return false;
            }
            batch.push(event);
        }
        batch.is_empty() || self.tx.send(WatchMessage::Events(batch)).await.is_ok()
    }
}
