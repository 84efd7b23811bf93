//! The control API's streams: a run's events and logs, live or finished,
//! for `WatchRun` and `GetLogs`. A follower replays the run from its
//! creation revision through a prefix watch (or a listing, when the history
//! was compacted), reads each log chunk's bytes from its segment file, and
//! sends only what the client has not had; every stream ends when the
//! coordinator shuts down ([`until_closing`]).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use drover_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::Status;

use super::control::{job_view, run_not_found, run_view};
use super::status::ApiError;
use crate::core::keys::{self, RunKey};
use crate::core::machine::{JobRecord, RunId, RunRecord};
use crate::segments::{Chunk, ChunkMeta, SegmentError, Segments};
use crate::store::{KeyValue, Store, StoreError, WatchMessage, decode};

/// Ends a response stream, with [`ApiError::ShuttingDown`], once `closing`
/// turns true.
pub(super) fn until_closing<T: Send + 'static>(
    inner: impl Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    closing: watch::Receiver<bool>,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    use tokio_stream::StreamExt;
    let stream = futures_util::stream::unfold(Some((inner, closing)), |state| async move {
        let (mut inner, mut closing) = state?;
        let closed = tokio::select! {
            item = inner.next() => Err(item),
            _ = closing.wait_for(|c| *c) => Ok(()),
        };
        match closed {
            Ok(()) => Some((Err(ApiError::ShuttingDown.into()), None)),
            Err(item) => item.map(|item| (item, Some((inner, closing)))),
        }
    });
    Box::pin(stream)
}

pub(super) type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;
pub(super) type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogData, Status>> + Send>>;

/// What a run watch passes on to the client.
#[derive(Clone)]
pub(super) struct WatchFilter {
    /// Only this job's logs and state; `None` for the whole run.
    pub(super) job: Option<String>,
    /// Only this attempt's logs; 0 for all.
    pub(super) attempt: u32,
    pub(super) logs: bool,
}

/// A follower's view of one run, fed with batches of keys (one revision of
/// a watch, or a whole listing) and turning them into client events.
struct Follower {
    id: RunId,
    filter: WatchFilter,
    record: Option<RunRecord>,
    jobs: BTreeMap<String, JobRecord>,
    /// Log bytes already sent, per (job, attempt).
    sent: BTreeMap<(String, u32), u64>,
}

impl Follower {
    fn wants_log(&self, job: &str, attempt: u32) -> bool {
        self.filter.logs
            && self.filter.job.as_deref().is_none_or(|j| j == job)
            && (self.filter.attempt == 0 || self.filter.attempt == attempt)
    }

    fn done(&self) -> bool {
        let Some(record) = &self.record else { return false };
        match &self.filter.job {
            Some(job) => record.state.is_terminal() || self.jobs.get(job).is_some_and(|j| j.state.is_terminal()),
            None => record.state.is_terminal(),
        }
    }

    /// Applies one batch of puts and returns what to send: the log chunks
    /// not sent before (to be read from their segments), then the run (when
    /// its record changed, with every job) or else each changed job.
    fn batch(&mut self, kvs: Vec<KeyValue>) -> Result<Batch, ApiError> {
        use pb::run_event::Event as E;
        let mut run_changed = false;
        let mut changed_jobs = Vec::new();
        let mut logs = Vec::new();
        for kv in kvs {
            match keys::parse_run_key(self.id, &kv.key) {
                Some(RunKey::Run) => {
                    self.record = Some(decode::<RunRecord>(&kv.key, &kv.value)?);
                    run_changed = true;
                }
                Some(RunKey::Job(name)) => {
                    let name = name.to_string();
                    self.jobs.insert(name.clone(), decode::<JobRecord>(&kv.key, &kv.value)?);
                    changed_jobs.push(name);
                }
                Some(RunKey::Log { job, attempt, offset }) if self.wants_log(job, attempt) => {
                    let meta = ChunkMeta::decode(&kv.key, &kv.value)?;
                    let end = offset + u64::from(meta.len);
                    let seen = self.sent.entry((job.to_string(), attempt)).or_insert(0);
                    if end > *seen {
                        *seen = end;
                        logs.push(Chunk { job: job.to_string(), attempt, offset, meta });
                    }
                }
                _ => {}
            }
        }
        let Some(record) = &self.record else { return Ok(Batch::default()) };
        let mut out = Vec::new();
        if run_changed {
            out.push(E::Run(run_view(record, &self.jobs)));
        } else {
            for name in changed_jobs {
                if self.filter.job.as_deref().is_none_or(|f| f == name) {
                    let needs = record.pipeline.job(&name).map(|s| s.needs.as_slice()).unwrap_or_default();
                    out.push(E::Job(job_view(&name, needs, &self.jobs[&name])));
                }
            }
        }
        Ok(Batch { logs, events: out })
    }
}

/// What one batch of keys gives a follower to send.
#[derive(Default)]
pub(super) struct Batch {
    /// Log chunks, in the order to send them.
    pub(super) logs: Vec<Chunk>,
    /// Run and job events, sent after the logs.
    pub(super) events: Vec<pb::run_event::Event>,
}

/// About the most log bytes read from their segments at once, so that
/// replaying a big log never holds all of it in memory.
const READ_BYTES: u64 = 4 << 20;

/// Reads chunks of run `id` from their segments and sends them as log
/// events, then sends `events`. Output comes before the state change
/// committed with it: the lines a job printed precede the news that it
/// finished. Returns false when the client has gone.
pub(super) async fn send_batch(
    store: &dyn Store,
    segments: &Arc<Segments>,
    id: RunId,
    batch: Batch,
    tx: &mpsc::Sender<Result<pb::RunEvent, Status>>,
) -> Result<bool, ApiError> {
    use pb::run_event::Event as E;
    let mut logs = batch.logs.into_iter().peekable();
    while logs.peek().is_some() {
        let mut group = Vec::new();
        let mut bytes = 0;
        while let Some(c) = logs.next_if(|_| bytes < READ_BYTES) {
            bytes += u64::from(c.meta.len);
            group.push(c);
        }
        for log in read_logs(store, segments, id, group).await? {
            if tx.send(Ok(pb::RunEvent { event: Some(E::Log(log)) })).await.is_err() {
                return Ok(false);
            }
        }
    }
    for event in batch.events {
        if tx.send(Ok(pb::RunEvent { event: Some(event) })).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The bytes of chunks of run `id`, each checked against its checksum. A
/// missing or damaged segment is an error naming the file and offset; a
/// missing one of a run that has just been pruned is the run's absence.
async fn read_logs(
    store: &dyn Store,
    segments: &Arc<Segments>,
    id: RunId,
    chunks: Vec<Chunk>,
) -> Result<Vec<pb::LogData>, ApiError> {
    if chunks.is_empty() {
        return Ok(Vec::new());
    }
    match segments.read_async(id, chunks.clone()).await {
        Ok(data) => Ok(chunks
            .into_iter()
            .zip(data)
            .map(|(c, data)| pb::LogData { job: c.job, attempt: c.attempt, offset: c.offset, data })
            .collect()),
        Err(e @ SegmentError::Missing { .. }) => match store.get(&keys::run(id)).await {
            Ok(None) => Err(run_not_found(store, id).await),
            _ => Err(StoreError::from(e).into()),
        },
        Err(e) => Err(StoreError::from(e).into()),
    }
}

/// Follows a run until it (or the filtered job) is finished or the client
/// goes away. It replays the run's history from its creation, so a client
/// that attaches late still sees every state change; when that history has
/// been compacted away, or the watch falls behind, it lists the run again
/// and resends only what the client has not seen.
pub(super) async fn follow_run(
    store: Arc<dyn Store>,
    segments: Arc<Segments>,
    id: RunId,
    filter: WatchFilter,
    tx: mpsc::Sender<Result<pb::RunEvent, Status>>,
) {
    let mut follower = Follower { id, filter, record: None, jobs: BTreeMap::new(), sent: BTreeMap::new() };
    if let Err(e) = follow(&store, &segments, &mut follower, &tx).await {
        let _ = tx.send(Err(e.into())).await;
    }
}

async fn follow(
    store: &Arc<dyn Store>,
    segments: &Arc<Segments>,
    f: &mut Follower,
    tx: &mpsc::Sender<Result<pb::RunEvent, Status>>,
) -> Result<(), ApiError> {
    let id = f.id;
    let send = |batch: Batch| send_batch(store.as_ref(), segments, id, batch, tx);
    let prefix = keys::run(f.id);
    let created = match store.get(&prefix).await? {
        Some(kv) => kv.create_revision,
        None => return Err(run_not_found(store.as_ref(), f.id).await),
    };
    let mut start = created;
    loop {
        let mut watch = store.watch(&prefix, start).await?;
        loop {
            let msg = tokio::select! {
                msg = watch.recv() => msg,
                _ = tx.closed() => return Ok(()),
            };
            let batch = match msg {
                Some(WatchMessage::Events(events)) => {
                    events.into_iter().filter(|e| e.kind == crate::store::EventKind::Put).map(|e| e.kv).collect()
                }
                Some(WatchMessage::Compacted { .. }) | None => break,
            };
            if !send(f.batch(batch)?).await? || f.done() {
                return Ok(());
            }
        }
        // History is gone: take a listing and go on from its revision.
        let (kvs, rev) = store.range(&prefix).await?;
        if !send(f.batch(kvs)?).await? || f.done() {
            return Ok(());
        }
        start = rev + 1;
    }
}
