//! Controllers: the leader-only work of a coordinator, each started when a
//! term begins and stopped when it ends, and the registry that lists them.
//!
//! A controller is a reconciler in kube-rs's sense: it owns some of the
//! store's key space ([`Controller::prefixes`]), works from what the store
//! holds rather than from why it was woken, and writes only through the
//! term's fenced store, so a controller of a term that has ended can change
//! nothing. The run scheduler ([`SchedulerController`]), retention
//! (`crate::retention`) and, on etcd, the compaction of the store's history
//! (`crate::compaction`) are the first three, and the triggers (push
//! polling, webhooks' deliveries and cron, `crate::triggers`) the fourth;
//! rollouts and drift detection will be more. Adding one is writing its module and
//! one line in [`registry`].
//!
//! **The shape.** A controller is a factory of per-term work:
//! [`Controller::start`] borrows the controller (its configuration lives in
//! it, built once by [`registry`]) and a [`Term`], does what must succeed
//! before the coordinator announces that it leads (the scheduler recovers
//! every unfinished run there), and returns [`Started`]: the future that
//! does the rest of the term's work, and what the controller offers the
//! API while the term lasts (only the scheduler offers anything, its
//! [`Handle`]). kube-rs's `Controller::run` has the same split: building
//! the controller can fail, running it is a future. Starting in two steps
//! keeps today's order of a term exactly: a store that fails the
//! scheduler's recovery ends the term before any client is sent to it, and
//! the API reaches the scheduler from the moment the term is announced. A
//! single `run(term, stop)` would have needed a side channel to hand the
//! scheduler's handle out of a running future.
//!
//! **Stopping is cancellation.** When the term ends the leader drops every
//! controller's work (each stops at its next `.await`) and waits until all
//! have, so the controllers of two terms never run side by side in one
//! process. There is no cooperative stop signal because nothing useful can
//! happen between "stop" and "stopped": the term is over, and any write
//! would be fenced. A controller must therefore be correct when dropped at
//! any await point; writing each change in one fenced transaction, as the
//! scheduler and retention do, makes it so.
//!
//! **Failure ends the term.** Work that returns an error (or panics) ends
//! the term: the leader steps down and campaigns again, and the next term
//! starts every controller afresh from the store. Work that returns `Ok`
//! has nothing more to do this term and the others go on; retention
//! does that when its store is fenced, leaving the scheduler (or the lost
//! lease) to end the term, as it always has.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::task::{AbortHandle, JoinError, JoinHandle};
use tracing::debug;

use crate::compaction;
use crate::core::keys;
use crate::retention;
use crate::scheduler::{self, Handle, Scheduler};
use crate::segments::Segments;
use crate::store::{Revision, Store, StoreError};
use crate::triggers;

/// What a term gives each of its controllers.
#[derive(Clone)]
pub struct Term {
    /// The leader key's create revision: it grows with every term, and
    /// agents refuse messages from an older one.
    pub epoch: Revision,
    /// The store, fenced with `epoch` (`crate::store::fenced`): every
    /// transaction fails once another coordinator leads.
    pub store: Arc<dyn Store>,
    /// Where log bytes live, outside the key space.
    pub segments: Arc<Segments>,
    /// Where artifacts live.
    pub blobs: Arc<crate::blobs::Blobs>,
    /// The term's scheduler, for the controllers started after the one
    /// that runs it (the triggers submit through it); `None` before.
    pub sched: Option<Handle>,
    /// Where the controllers send notices (`crate::notifications`):
    /// the process's one notifier, so what a term sent just before it
    /// ended is still delivered. Sending never waits.
    pub notifier: crate::notifications::Notifier,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A store call failed: fenced, unavailable, or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The controller cannot go on this term; it has logged the details.
    #[error("{0}")]
    Failed(String),
    #[error("it panicked: {0}")]
    Panicked(String),
}

/// What [`Controller::start`] returns: the controller's work for the rest
/// of the term, and what it offers the API meanwhile.
pub struct Started {
    work: Work,
    /// The scheduler's handle, through which the API submits, cancels and
    /// lists agents (`crate::leader::Role::Leader`).
    sched: Option<Handle>,
}

enum Work {
    /// A future, which the term runs as a task of its own so that a busy
    /// controller does not hold up the others.
    Future(BoxFuture<'static, Result<(), ControllerError>>),
    /// A task the controller has spawned itself, and why its end, however
    /// it comes, ends the term.
    Spawned(JoinHandle<()>, String),
}

impl Started {
    /// Work that runs until the term ends, returns `Ok` once it has nothing
    /// more to do this term, or fails.
    pub fn work(work: impl Future<Output = Result<(), ControllerError>> + Send + 'static) -> Started {
        Started { work: Work::Future(Box::pin(work)), sched: None }
    }

    /// Work already running in `task` (the scheduler's loop, which
    /// [`Scheduler::start`] spawns). The term owns the task: it aborts it
    /// when the term ends, and the task ending first ends the term with
    /// `ended` as the reason.
    pub fn spawned(task: JoinHandle<()>, ended: impl Into<String>) -> Started {
        Started { work: Work::Spawned(task, ended.into()), sched: None }
    }

    /// Offers the scheduler's handle to the API for the term.
    pub fn with_scheduler(self, sched: Handle) -> Started {
        Started { sched: Some(sched), ..self }
    }
}

/// Leader-only work, started with each term (see the module header).
#[async_trait]
pub trait Controller: Send + Sync {
    /// A short name for logs and errors.
    fn name(&self) -> &'static str;

    /// The key prefixes this controller writes (`crate::core::keys`). The map of
    /// who writes what; the election's `/cluster/` is never a controller's.
    fn prefixes(&self) -> &'static [&'static str];

    /// Prepares the term's work; an error ends the term before it is
    /// announced.
    async fn start(&self, term: &Term) -> Result<Started, ControllerError>;
}

/// What the leader's controllers are configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub scheduler: scheduler::Config,
    pub retention: retention::Config,
    /// Compaction of the store's history; `None` on the embedded store,
    /// which bounds its own.
    pub compaction: Option<compaction::Config>,
    /// Repositories and schedules that start runs; `None` leaves them off
    /// (tests of other controllers).
    pub triggers: Option<triggers::Config>,
    /// Apps that converge what runs to git; `None` leaves them off.
    pub apps: Option<crate::apps::Config>,
    /// What the rollouts' analyses and gates may call.
    pub outbound: crate::outbound::Outbound,
}

/// The leader's controllers, in the order each term starts them. This is
/// the one place a controller is registered.
pub fn registry(config: &Config) -> Vec<Box<dyn Controller>> {
    let mut controllers: Vec<Box<dyn Controller>> = vec![
        // First: the term is not announced until every unfinished run has
        // been recovered.
        Box::new(SchedulerController { config: config.scheduler.clone() }),
        Box::new(retention::Retention::new(config.retention.clone())),
    ];
    if let Some(compaction) = &config.compaction {
        controllers.push(Box::new(compaction::Compaction::new(compaction.clone())));
    }
    // After the scheduler, whose handle it submits through.
    if let Some(config) = &config.triggers {
        controllers.push(Box::new(triggers::Triggers::new(config.clone())));
    }
    // After the scheduler, which carries its actions and notes.
    controllers.push(Box::new(crate::rollouts::Rollouts { outbound: config.outbound.clone() }));
    // After the scheduler, which carries its syncs to the rollouts.
    if let Some(config) = &config.apps {
        controllers.push(Box::new(crate::apps::Apps::new(config.clone())));
    }
    controllers
}

/// A controller that could not start, or whose work failed.
#[derive(Debug, thiserror::Error)]
#[error("controller {controller}: {error}")]
pub struct Failure {
    pub controller: &'static str,
    pub error: ControllerError,
}

/// How one controller's task ended: its name, and the task's result.
type Ended = (&'static str, Result<Result<(), ControllerError>, JoinError>);

/// The controllers of one term, started.
pub struct Running {
    /// Each controller's task, ending with its name and result.
    tasks: FuturesUnordered<BoxFuture<'static, Ended>>,
    /// The same tasks, to abort them when the term ends.
    aborts: Vec<AbortHandle>,
    sched: Option<Handle>,
}

impl Running {
    /// Starts `controllers` in order, each once the one before it has
    /// started. If one cannot start, those already started are stopped.
    pub async fn start(controllers: &[Box<dyn Controller>], term: &Term) -> Result<Running, Failure> {
        let mut running = Running { tasks: FuturesUnordered::new(), aborts: Vec::new(), sched: None };
        let mut term = term.clone();
        for controller in controllers {
            let name = controller.name();
            let started = match controller.start(&term).await {
                Ok(started) => started,
                Err(error) => {
                    running.stop().await;
                    return Err(Failure { controller: name, error });
                }
            };
            if let Some(sched) = started.sched {
                term.sched = Some(sched.clone());
                running.sched = Some(sched);
            }
            let (abort, ended): (AbortHandle, BoxFuture<'static, Ended>) = match started.work {
                Work::Future(work) => {
                    let task = tokio::spawn(work);
                    (task.abort_handle(), Box::pin(async move { (name, task.await) }))
                }
                Work::Spawned(task, ended) => (
                    task.abort_handle(),
                    Box::pin(async move { (name, task.await.map(|()| Err(ControllerError::Failed(ended)))) }),
                ),
            };
            running.aborts.push(abort);
            running.tasks.push(ended);
            debug!(epoch = term.epoch, controller = name, prefixes = ?controller.prefixes(), "controller started");
        }
        Ok(running)
    }

    /// The scheduler's handle, if a controller runs the scheduler.
    pub fn scheduler(&self) -> Option<Handle> {
        self.sched.clone()
    }

    /// Waits for a controller to fail (return an error, or panic); never
    /// returns if none does. Work that finishes without an error is
    /// forgotten. Cancel-safe, so it can be a branch of a `select!`.
    pub async fn failed(&mut self) -> Failure {
        while let Some((controller, ended)) = self.tasks.next().await {
            let error = match ended {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error,
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".to_string());
                    ControllerError::Panicked(message)
                }
                // Only `stop` aborts, and it takes `self`.
                Err(_) => continue,
            };
            return Failure { controller, error };
        }
        std::future::pending().await
    }

    /// Stops every controller, and waits until each task has stopped (at
    /// its next `.await`) and been dropped.
    pub async fn stop(mut self) {
        self.sched = None;
        for abort in &self.aborts {
            abort.abort();
        }
        while self.tasks.next().await.is_some() {}
    }
}

/// Runs the [`Scheduler`] for the term. It lives here rather than in the
/// scheduler's module only while that module is being restructured.
pub struct SchedulerController {
    config: scheduler::Config,
}

#[async_trait]
impl Controller for SchedulerController {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn prefixes(&self) -> &'static [&'static str] {
        // `/runs/` has no constant in `keys`; `keys::run` makes one run's.
        &[keys::RUN_SEQ, keys::RUN_INDEX, "/runs/", keys::AGENTS]
    }

    async fn start(&self, term: &Term) -> Result<Started, ControllerError> {
        let mut config = self.config.clone();
        config.epoch = term.epoch as u64;
        let (sched, task) = Scheduler::start(term.store.clone(), term.segments.clone(), config).await?;
        // It logs why it stops: its writes were fenced, or the store
        // refused one.
        Ok(Started::spawned(task, "the scheduler stopped writing").with_scheduler(sched))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::{Notify, mpsc};

    use super::*;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use crate::store::fenced::Fenced;
    use crate::store::{Op, Txn};

    /// A scratch directory under the system temp dir, removed on drop.
    pub(crate) struct TestDir(PathBuf);

    impl TestDir {
        pub(crate) fn new(name: &str) -> TestDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("drover-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TestDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An embedded store (without fsync) and log segments in `dir`.
    pub(crate) async fn store_and_segments(dir: &TestDir) -> (Arc<dyn Store>, Arc<Segments>) {
        let opts = EmbeddedOptions { fsync: false, ..EmbeddedOptions::default() };
        let store = EmbeddedStore::open(&dir.path().join("store"), opts).await.unwrap();
        let segments = Arc::new(Segments::open(&dir.path().join("blobs"), false).unwrap());
        (store, segments)
    }

    /// What a [`Recorder`] saw.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Seen {
        /// Started in the term with this epoch.
        Started(&'static str, Revision),
        /// Refused to start in the term with this epoch.
        Refused(&'static str, Revision),
        /// Its work was dropped (stopped) or returned.
        Stopped(&'static str),
    }

    /// How a [`Recorder`] behaves.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Behaviour {
        /// Works until stopped, or fails once its test tells it to.
        Run,
        /// Refuses to start.
        FailToStart,
        /// Starts, then fails at once.
        Fail,
        /// Starts, then panics.
        Panic,
        /// Starts, then finishes at once without an error.
        Finish,
    }

    /// A controller that reports its starts and stops, and writes under its
    /// prefix through the term's store at start (so a test sees the fence).
    pub(crate) struct Recorder {
        name: &'static str,
        behaviour: Behaviour,
        seen: mpsc::UnboundedSender<Seen>,
        /// Makes a running [`Behaviour::Run`] fail, in whichever term.
        fail: Arc<Notify>,
    }

    /// Sends `Stopped` when the work holding it goes.
    struct OnDrop(&'static str, mpsc::UnboundedSender<Seen>);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            let _ = self.1.send(Seen::Stopped(self.0));
        }
    }

    #[async_trait]
    impl Controller for Recorder {
        fn name(&self) -> &'static str {
            self.name
        }

        fn prefixes(&self) -> &'static [&'static str] {
            &["/test/"]
        }

        async fn start(&self, term: &Term) -> Result<Started, ControllerError> {
            let name = self.name;
            if self.behaviour == Behaviour::FailToStart {
                let _ = self.seen.send(Seen::Refused(name, term.epoch));
                return Err(ControllerError::Failed(format!("{name} cannot start")));
            }
            term.store.txn(Txn::ops(vec![Op::put(format!("/test/{name}"), "started")])).await?;
            let _ = self.seen.send(Seen::Started(name, term.epoch));
            let guard = OnDrop(name, self.seen.clone());
            let (behaviour, fail) = (self.behaviour, self.fail.clone());
            Ok(Started::work(async move {
                let _guard = guard;
                match behaviour {
                    Behaviour::Fail => Err(ControllerError::Failed(format!("{name} gave up"))),
                    Behaviour::Panic => panic!("{name} fell over"),
                    Behaviour::Finish => Ok(()),
                    Behaviour::Run | Behaviour::FailToStart => {
                        fail.notified().await;
                        Err(ControllerError::Failed(format!("{name} was told to fail")))
                    }
                }
            }))
        }
    }

    /// A [`Recorder`], and what makes it fail while it runs.
    pub(crate) fn recorder(
        name: &'static str,
        behaviour: Behaviour,
        seen: &mpsc::UnboundedSender<Seen>,
    ) -> (Box<dyn Controller>, Arc<Notify>) {
        let fail = Arc::new(Notify::new());
        (Box::new(Recorder { name, behaviour, seen: seen.clone(), fail: fail.clone() }), fail)
    }

    /// Everything seen so far, without waiting.
    fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// A term on a fresh store whose leader key is ours, and the store
    /// without the fence.
    async fn term_and_store(dir: &TestDir) -> (Term, Arc<dyn Store>) {
        let (store, segments) = store_and_segments(dir).await;
        let blobs = Arc::new(crate::blobs::Blobs::open(&dir.path().join("blobs"), false).unwrap());
        let epoch = store.txn(Txn::ops(vec![Op::put(keys::LEADER, "us")])).await.unwrap().revision;
        let notifier = crate::notifications::Notifier::off();
        (
            Term {
                epoch,
                store: Fenced::new(store.clone(), keys::LEADER, epoch),
                segments,
                blobs,
                sched: None,
                notifier,
            },
            store,
        )
    }

    async fn term(dir: &TestDir) -> Term {
        term_and_store(dir).await.0
    }

    /// Bounds a wait that should end at once, so a broken test fails
    /// instead of hanging; it is never the reason a test passes.
    async fn soon<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f).await.expect("did not happen within 10s")
    }

    #[tokio::test]
    async fn controllers_start_in_order_and_all_stop_with_the_term() {
        let dir = TestDir::new("controllers-order");
        let term = term(&dir).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let controllers = vec![recorder("a", Behaviour::Run, &tx).0, recorder("b", Behaviour::Run, &tx).0];
        let running = Running::start(&controllers, &term).await.unwrap();
        assert_eq!(drain(&mut rx), vec![Seen::Started("a", term.epoch), Seen::Started("b", term.epoch)]);
        assert!(running.scheduler().is_none());
        running.stop().await;
        let mut stopped = drain(&mut rx);
        stopped.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(stopped, vec![Seen::Stopped("a"), Seen::Stopped("b")], "stop waits for every controller");
    }

    #[tokio::test]
    async fn a_controller_that_cannot_start_stops_those_started_before_it() {
        let dir = TestDir::new("controllers-start");
        let term = term(&dir).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let controllers = vec![
            recorder("a", Behaviour::Run, &tx).0,
            recorder("b", Behaviour::FailToStart, &tx).0,
            recorder("c", Behaviour::Run, &tx).0,
        ];
        let failure = Running::start(&controllers, &term).await.err().expect("b cannot start");
        assert_eq!(failure.to_string(), "controller b: b cannot start");
        let seen = drain(&mut rx);
        assert_eq!(
            seen,
            [Seen::Started("a", term.epoch), Seen::Refused("b", term.epoch), Seen::Stopped("a")],
            "c never started"
        );
    }

    #[tokio::test]
    async fn a_failed_or_panicked_controller_is_reported_and_a_finished_one_is_not() {
        let dir = TestDir::new("controllers-fail");
        let term = term(&dir).await;
        let (tx, _rx) = mpsc::unbounded_channel();
        // (case, the odd one out, what `failed` says)
        let cases = [
            ("fails", Behaviour::Fail, Some("controller odd: odd gave up")),
            ("panics", Behaviour::Panic, Some("controller odd: it panicked: odd fell over")),
            ("finishes", Behaviour::Finish, None),
        ];
        for (case, behaviour, want) in cases {
            let controllers = vec![recorder("steady", Behaviour::Run, &tx).0, recorder("odd", behaviour, &tx).0];
            let mut running = Running::start(&controllers, &term).await.unwrap();
            match want {
                Some(want) => assert_eq!(soon(running.failed()).await.to_string(), want, "{case}"),
                None => {
                    // The finished one is taken out of the set without being
                    // reported; with only the steady one left, nothing fails.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                    while running.tasks.len() > 1 {
                        let waited = tokio::time::timeout(Duration::from_millis(10), running.failed()).await;
                        assert!(waited.is_err(), "{case}: a controller that finished is not a failure");
                        assert!(tokio::time::Instant::now() < deadline, "{case}: the finished one is still in the set");
                    }
                }
            }
            running.stop().await;
        }
    }

    #[tokio::test]
    async fn controllers_write_through_the_terms_fence() {
        let dir = TestDir::new("controllers-fence");
        let (term, raw) = term_and_store(&dir).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let controllers = vec![recorder("a", Behaviour::Run, &tx).0];
        Running::start(&controllers, &term).await.unwrap().stop().await;
        // Another coordinator's leader key (a new create revision): the old
        // term's store refuses the write at start.
        raw.txn(Txn::ops(vec![Op::delete(keys::LEADER)])).await.unwrap();
        raw.txn(Txn::ops(vec![Op::put(keys::LEADER, "them")])).await.unwrap();
        let failure = Running::start(&controllers, &term).await.err().expect("fenced");
        assert!(matches!(failure.error, ControllerError::Store(StoreError::Fenced { .. })), "{failure}");
        assert_eq!(drain(&mut rx), vec![Seen::Started("a", term.epoch), Seen::Stopped("a")]);
    }

    #[tokio::test]
    async fn the_registry_lists_the_scheduler_first_and_names_are_unique() {
        let mut config = Config {
            scheduler: scheduler::Config::default(),
            retention: retention::Config::default(),
            compaction: None,
            triggers: None,
            apps: None,
            outbound: Default::default(),
        };
        let names = |config: &Config| registry(config).iter().map(|c| c.name()).collect::<Vec<_>>();
        assert_eq!(names(&config), ["scheduler", "retention", "rollouts"]);
        config.compaction = Some(compaction::Config { every: Duration::from_secs(60) });
        assert_eq!(names(&config), ["scheduler", "retention", "compaction", "rollouts"]);
        let dir = TestDir::new("controllers-registry");
        let (store, _) = store_and_segments(&dir).await;
        config.triggers = Some(triggers::Config {
            interval: Duration::from_secs(1),
            git: crate::submit::GitOptions { scratch: dir.path().to_path_buf(), timeout: Duration::from_secs(1) },
            vault: Arc::new(crate::secrets::Vault::open(store, &dir.path().join("no.key"))),
        });
        assert_eq!(names(&config), ["scheduler", "retention", "compaction", "triggers", "rollouts"]);
        let controllers = registry(&config);
        for c in &controllers {
            for prefix in c.prefixes() {
                assert!(prefix.starts_with('/'), "{}: {prefix}", c.name());
                assert!(!prefix.starts_with("/cluster/"), "{}: the election's keys are not a controller's", c.name());
            }
        }
    }
}
