//! The control API's streams: a run's events and logs, live or finished,
//! for `WatchRun` and `GetLogs`. A follower replays the run from its
//! creation revision through a prefix watch (or a listing, when the history
//! was compacted), reads each log chunk's bytes from its segment file, and
//! sends only what the client has not had; every stream ends when the
//! coordinator shuts down ([`until_closing`]).

use std::collections::{BTreeMap, HashMap};
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

/// Ends a response stream with PERMISSION_DENIED as soon as its caller, a
/// user presenting `cert`, may no longer read: removed, or its certificate
/// replaced (deny wins, for a stream held open as for the next call).
/// Administrators' streams are returned as they are.
pub(super) fn while_allowed<T: Send + 'static>(
    inner: Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>,
    gate: Arc<crate::identity::Gate>,
    cert: drover_pki::peer::Presented,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    use tokio_stream::StreamExt;
    if !matches!(cert.peer, drover_pki::peer::Peer::User(_)) {
        return inner;
    }
    let users = gate.users_changed();
    let stream = futures_util::stream::unfold(Some((inner, users)), move |state| {
        let (gate, cert) = (gate.clone(), cert.clone());
        async move {
            let (mut inner, mut users) = state?;
            loop {
                tokio::select! {
                    item = inner.next() => return item.map(|item| (item, Some((inner, users)))),
                    changed = users.changed() => {
                        if changed.is_err() {
                            // No gate to ask any more: the stream goes on.
                            return inner.next().await.map(|item| (item, Some((inner, users))));
                        }
                        let caller = gate.caller(&cert);
                        if let Err(why) = crate::core::authz::authorize(&caller, crate::core::authz::Action::Read) {
                            return Some((Err(ApiError::PermissionDenied(why).into()), None));
                        }
                    }
                }
            }
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
    /// Start from a listing of the run as it is now, not its history.
    pub(super) from_now: bool,
}

/// A follower's view of one run, fed with batches of keys (one revision of
/// a watch, or a whole listing) and turning them into client events.
struct Follower {
    id: RunId,
    filter: WatchFilter,
    record: Option<RunRecord>,
    /// Where each job's spec is in the record's pipeline, so that a batch
    /// finds a job's `needs` without scanning every job: a run may have
    /// 5,000, and following one scanned them for every job that changed.
    spec_at: HashMap<String, usize>,
    jobs: BTreeMap<String, JobRecord>,
    /// Log bytes already sent, per (job, attempt).
    sent: BTreeMap<(String, u32), u64>,
}

impl Follower {
    fn new(id: RunId, filter: WatchFilter) -> Follower {
        Follower { id, filter, record: None, spec_at: HashMap::new(), jobs: BTreeMap::new(), sent: BTreeMap::new() }
    }

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

    /// Applies one batch of puts (one store transaction: a burst of the
    /// scheduler, which may hold many jobs' changes) and returns what to
    /// send, in the order it happened: the log chunks not sent before (to
    /// be read from their segments) and the run (when its record changed,
    /// with every job) or else each changed job. See [`Batch`] for the
    /// order.
    fn batch(&mut self, kvs: Vec<KeyValue>) -> Result<Batch, ApiError> {
        use pb::run_event::Event as E;
        let mut run_changed = false;
        let mut changed_jobs = Vec::new();
        // Per job, in the order of their offsets.
        let mut logs: BTreeMap<String, Vec<Chunk>> = BTreeMap::new();
        for kv in kvs {
            match keys::parse_run_key(self.id, &kv.key) {
                Some(RunKey::Run) => {
                    let record = decode::<RunRecord>(&kv.key, &kv.value)?;
                    self.spec_at = record.pipeline.jobs.iter().enumerate().map(|(i, j)| (j.name.clone(), i)).collect();
                    self.record = Some(record);
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
                        logs.entry(job.to_string()).or_default().push(Chunk {
                            job: job.to_string(),
                            attempt,
                            offset,
                            meta,
                        });
                    }
                }
                _ => {}
            }
        }
        let Some(record) = &self.record else { return Ok(Batch::default()) };
        let mut items = Vec::new();
        if run_changed {
            items.extend(logs.into_values().flatten().map(Item::Log));
            items.push(Item::Event(Box::new(E::Run(run_view(record, &self.jobs)))));
            return Ok(Batch { items });
        }
        changed_jobs.retain(|name| self.filter.job.as_deref().is_none_or(|f| f == name));
        let (mut ended, mut going): (Vec<String>, Vec<String>) =
            changed_jobs.into_iter().partition(|name| self.jobs[name].state.is_terminal());
        ended.sort_by_key(|name| (self.jobs[name].finished_ms, name.clone()));
        going.sort_by_key(|name| (self.jobs[name].state.order(), name.clone()));
        let event = |name: &str| {
            let spec = self.spec_at.get(name).and_then(|&i| record.pipeline.jobs.get(i));
            let needs = spec.map(|s| s.needs.as_slice()).unwrap_or_default();
            Item::Event(Box::new(E::Job(job_view(name, needs, &self.jobs[name]))))
        };
        // Output of attempts whose state did not change: it was printed
        // before anything this burst decided.
        for (job, chunks) in logs.iter_mut() {
            if !ended.contains(job) && !going.contains(job) {
                items.extend(chunks.drain(..).map(Item::Log));
            }
        }
        // Jobs that ended: what they printed last, then how they ended;
        // their ends are what queued the next jobs.
        for name in &ended {
            items.extend(logs.remove(name).unwrap_or_default().into_iter().map(Item::Log));
            items.push(event(name));
        }
        // Jobs queued, assigned or started: the state, then what they
        // printed since.
        for name in &going {
            items.push(event(name));
            items.extend(logs.remove(name).unwrap_or_default().into_iter().map(Item::Log));
        }
        Ok(Batch { items })
    }
}

/// What one batch of keys gives a follower to send, in the order it
/// happened as far as the keys tell: a job's output after the state it
/// started in and before the state it ended in, and jobs that ended before
/// the jobs their end queued, assigned or started. A client printing the
/// items in order shows `[build] succeeded` before `[test] assigned`, and
/// `[test] running` before the first line `test` printed.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) items: Vec<Item>,
}

/// One thing to send: log bytes (read from their segment when sent), or a
/// run or job event.
pub(super) enum Item {
    Log(Chunk),
    Event(Box<pb::run_event::Event>),
}

/// About the most log bytes read from their segments at once, so that
/// replaying a big log never holds all of it in memory.
const READ_BYTES: u64 = 4 << 20;

/// Sends a batch's items in order, reading the log chunks of run `id`
/// from their segments a group of consecutive chunks at a time. Returns
/// false when the client has gone.
pub(super) async fn send_batch(
    store: &dyn Store,
    segments: &Arc<Segments>,
    id: RunId,
    batch: Batch,
    tx: &mpsc::Sender<Result<pb::RunEvent, Status>>,
) -> Result<bool, ApiError> {
    use pb::run_event::Event as E;
    let mut items = batch.items.into_iter().peekable();
    while let Some(item) = items.next() {
        let event = match item {
            Item::Event(event) => *event,
            Item::Log(first) => {
                let mut bytes = u64::from(first.meta.len);
                let mut group = vec![first];
                while let Some(Item::Log(c)) = items.next_if(|i| matches!(i, Item::Log(_)) && bytes < READ_BYTES) {
                    bytes += u64::from(c.meta.len);
                    group.push(c);
                }
                for log in read_logs(store, segments, id, group).await? {
                    if tx.send(Ok(pb::RunEvent { event: Some(E::Log(log)) })).await.is_err() {
                        return Ok(false);
                    }
                }
                continue;
            }
        };
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
        Err(e @ SegmentError::Missing { .. }) => {
            // Sealed into the blob store since the chunks were listed?
            if let Some(blobs) = segments.sealed()
                && let Some(data) = crate::sealing::read(store, blobs, id, &chunks).await?
            {
                return Ok(chunks
                    .into_iter()
                    .zip(data)
                    .map(|(c, data)| pb::LogData { job: c.job, attempt: c.attempt, offset: c.offset, data })
                    .collect());
            }
            match store.get(&keys::run(id)).await {
                Ok(None) => Err(run_not_found(store, id).await),
                _ => Err(StoreError::from(e).into()),
            }
        }
        Err(e) => Err(StoreError::from(e).into()),
    }
}

/// Follows a run until it (or the filtered job) is finished or the client
/// goes away. It replays the run's history from its creation, so a client
/// that attaches late still sees every state change; when that history has
/// been compacted away, or the watch falls behind, it lists the run again
/// and resends only what the client has not seen. With `from_now` it starts
/// from that listing instead, so a client that has just read the run's
/// state never sees a job go back through its history.
pub(super) async fn follow_run(
    store: Arc<dyn Store>,
    segments: Arc<Segments>,
    id: RunId,
    filter: WatchFilter,
    tx: mpsc::Sender<Result<pb::RunEvent, Status>>,
) {
    let mut follower = Follower::new(id, filter);
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
    if f.filter.from_now {
        let (kvs, rev) = store.range(&prefix).await?;
        if !send(f.batch(kvs)?).await? || f.done() {
            return Ok(());
        }
        start = rev + 1;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::machine::tests::pipeline;
    use crate::core::machine::{JobState, Run, Source};
    use crate::records::encode;

    fn kv(key: String, value: Vec<u8>) -> KeyValue {
        KeyValue { key, value, create_revision: 1, mod_revision: 1, version: 1, lease: 0 }
    }

    /// What a batch sends, as `log JOB` and `JOB state` lines.
    fn shown(batch: Batch) -> Vec<String> {
        use pb::run_event::Event as E;
        batch
            .items
            .into_iter()
            .map(|item| match item {
                Item::Log(c) => format!("log {}", c.job),
                Item::Event(event) => match event.as_ref() {
                    E::Job(j) => format!("{} {}", j.name, j.state().as_str_name()),
                    E::Run(r) => format!("run {}", r.state().as_str_name()),
                    E::Log(_) => unreachable!("logs are Item::Log"),
                },
            })
            .collect()
    }

    #[test]
    fn one_burst_is_sent_in_the_order_it_happened() {
        // prepare → build; lint on its own. In one burst: prepare prints its
        // last line and succeeds, which assigns build; lint starts and
        // prints; a job still running elsewhere prints too.
        let p = pipeline(&[("prepare", &[], 0), ("build", &["prepare"], 0), ("lint", &[], 0), ("other", &[], 0)]);
        let run = Run::new(1, p, Source::default(), 0);
        let mut f = Follower::new(1, WatchFilter { job: None, attempt: 0, logs: true, from_now: false });
        let mut first: Vec<KeyValue> = vec![kv(keys::run(1), encode(&run.record))];
        first.extend(run.jobs.iter().map(|(name, j)| kv(keys::job(1, name), encode(j))));
        f.batch(first).unwrap();

        let with = |name: &str, state: JobState| {
            let mut j = run.jobs[name].clone();
            j.state = state;
            j.finished_ms = state.is_terminal().then_some(5);
            kv(keys::job(1, name), encode(&j))
        };
        let log = |name: &str| kv(keys::log_chunk(1, name, 1, 0), ChunkMeta::of(b"x\n").encode());
        // Keys as the store lists them: by name, so `build` before `prepare`.
        let burst = vec![
            with("build", JobState::Assigned),
            with("lint", JobState::Running),
            log("lint"),
            log("other"),
            with("prepare", JobState::Succeeded),
            log("prepare"),
        ];
        let batch = f.batch(burst).unwrap();
        // Each job's event carries its needs, from the pipeline.
        let needs: Vec<(&str, &[String])> = batch
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Event(event) => match event.as_ref() {
                    pb::run_event::Event::Job(j) => Some((j.name.as_str(), j.needs.as_slice())),
                    _ => None,
                },
                Item::Log(_) => None,
            })
            .collect();
        assert_eq!(needs, [("prepare", &[][..]), ("build", &["prepare".to_string()][..]), ("lint", &[][..])]);
        assert_eq!(
            shown(batch),
            [
                "log other",
                "log prepare",
                "prepare JOB_STATE_SUCCEEDED",
                "build JOB_STATE_ASSIGNED",
                "lint JOB_STATE_RUNNING",
                "log lint"
            ]
        );
    }
    /// A run that went queued → running → succeeded in three writes, then
    /// ended: what a follower from its creation and one from now are sent.
    #[tokio::test]
    async fn from_now_starts_from_the_runs_state_not_its_history() {
        use crate::controller::tests::{TestDir, store_and_segments};
        use crate::core::machine::RunState;
        use crate::store::{Op, Txn};

        let dir = TestDir::new("follow-from-now");
        let (store, segments) = store_and_segments(&dir).await;
        let p = pipeline(&[("build", &[], 0)]);
        let mut run = Run::new(7, p, Source::default(), 0);
        let put = |ops: Vec<Op>| {
            let store = store.clone();
            async move { store.txn(Txn::ops(ops)).await.unwrap() }
        };
        let job = |state: JobState| {
            let mut j = run.jobs["build"].clone();
            j.state = state;
            Op::put(keys::job(7, "build"), encode(&j))
        };
        put(vec![Op::put(keys::run(7), encode(&run.record)), job(JobState::Queued)]).await;
        put(vec![job(JobState::Running)]).await;
        put(vec![job(JobState::Succeeded)]).await;
        run.record.state = RunState::Succeeded;
        run.record.finished_ms = Some(9);
        put(vec![Op::put(keys::run(7), encode(&run.record))]).await;

        let followed = |from_now: bool| {
            let (store, segments) = (store.clone(), segments.clone());
            async move {
                let (tx, mut rx) = mpsc::channel(64);
                let filter = WatchFilter { job: None, attempt: 0, logs: false, from_now };
                follow_run(store, segments, 7, filter, tx).await;
                let mut seen = Vec::new();
                while let Ok(event) = rx.try_recv() {
                    let event = event.unwrap().event.unwrap();
                    if let pb::run_event::Event::Run(r) = &event {
                        seen.extend(r.jobs.iter().map(|j| format!("(in run) {} {}", j.name, j.state().as_str_name())));
                    }
                    seen.extend(shown(Batch { items: vec![Item::Event(Box::new(event))] }));
                }
                seen
            }
        };
        let history = followed(false).await;
        let states: Vec<&String> = history.iter().filter(|s| s.starts_with("build ")).collect();
        assert_eq!(states, ["build JOB_STATE_RUNNING", "build JOB_STATE_SUCCEEDED"], "{history:?}");
        // One event: the run as it ended, with its jobs as they are.
        assert_eq!(followed(true).await, ["(in run) build JOB_STATE_SUCCEEDED", "run RUN_STATE_SUCCEEDED"]);
    }
}
