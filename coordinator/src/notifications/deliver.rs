//! Delivery: the [`Notifier`] handle and the tasks behind it.
//!
//! ```text
//! send ──try_send──▶ queue ──▶ dispatch: targets read once per batch,
//!                               wants() per target
//!                                 ├──try_send──▶ target a's queue ──▶ post, retry, post …
//!                                 └──try_send──▶ target b's queue ──▶ post …
//! ```
//!
//! Neither queue ever makes a sender wait: a full one drops the notice and
//! counts it. Each target's task posts its notices one after the other, so
//! a target sees them in the order they were sent, and a target that does
//! not answer holds up only its own queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use drover_client::chain::error_chain;
use drover_client::targets::Backoff;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{Kind, Notice, Target, body, load, wants};
use crate::metrics::METRICS;
use crate::store::Store;

/// The longest one POST may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The most notices taken from the queue at once, for one read of the
/// targets.
const BATCH: usize = 256;
/// The most of an answer that is not 2xx kept for the log.
const MAX_ANSWER_CHARS: usize = 200;

/// How the notifier queues and retries; [`Settings::default`] in
/// production, shorter waits in tests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Notices waiting to be routed to their targets.
    pub queue: usize,
    /// Notices waiting for one target.
    pub target_queue: usize,
    /// The wait after the first failed try; it doubles (jittered ±25%).
    pub first_retry: Duration,
    /// The longest wait between two tries.
    pub max_retry: Duration,
    /// The most tries of one notice.
    pub attempts: u32,
    /// No try starts this long after the first.
    pub give_up_after: Duration,
    /// The longest one try may take.
    pub call_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            queue: 1024,
            target_queue: 256,
            first_retry: Duration::from_millis(500),
            max_retry: Duration::from_secs(8),
            attempts: 5,
            give_up_after: Duration::from_secs(60),
            call_timeout: CALL_TIMEOUT,
        }
    }
}

/// What became of the notices sent through one notifier (the process-wide
/// totals are `drover_notifications_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// A target answered 2xx (each target counts once per notice).
    pub delivered: u64,
    /// A target gave no 2xx in all its tries.
    pub failed: u64,
    /// A queue was full: the notice was not sent (to that target).
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        METRICS.notifications[0].inc();
    }

    fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        METRICS.notifications[1].inc();
    }

    /// Counts a dropped notice; true for the first and every hundredth
    /// after, which are logged (a full queue drops many at once).
    fn dropped(&self) -> bool {
        METRICS.notifications[2].inc();
        self.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(100)
    }
}

/// Sends notices to the targets that want them, never making the sender
/// wait (see the module header). Cheap to clone: every clone feeds the
/// same queue, and the tasks end once the last clone is dropped and the
/// queues have drained.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Notice>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("counts", &self.counts()).finish()
    }
}

/// One notice for one target, as the target was when the notice was
/// routed.
struct Job {
    target: Arc<Target>,
    notice: Arc<Notice>,
}

impl Notifier {
    /// Starts delivering to the targets in `store`, with the default
    /// settings. Call it within a tokio runtime.
    pub fn spawn(store: Arc<dyn Store>) -> Notifier {
        Notifier::spawn_with(store, Settings::default())
    }

    pub fn spawn_with(store: Arc<dyn Store>, settings: Settings) -> Notifier {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let counters = Arc::new(Counters::default());
        tokio::spawn(dispatch(store, rx, settings, counters.clone()));
        Notifier { tx, counters }
    }

    /// A notifier that hands its notices to the receiver rather than to
    /// any target: for tests that check what a controller sends.
    pub fn channel(capacity: usize) -> (Notifier, mpsc::Receiver<Notice>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Notifier { tx, counters: Arc::default() }, rx)
    }

    /// A notifier that sends nothing, for tests that need one.
    pub fn off() -> Notifier {
        Notifier::channel(1).0
    }

    /// Queues `notice` for the targets that want it and returns at once;
    /// when the queue is full it is dropped and counted instead. Never
    /// fails and never waits.
    pub fn send(&self, notice: Notice) {
        match self.tx.try_send(notice) {
            Ok(()) => {}
            Err(TrySendError::Full(notice)) => {
                if self.counters.dropped() {
                    warn!(
                        kind = notice.kind.as_str(),
                        environment = %notice.environment,
                        service = %notice.service,
                        dropped = self.counts().dropped,
                        "the notification queue is full (targets answer slowly, or too much happens at once); \
                         notices are dropped"
                    );
                }
            }
            // Nothing delivers any more (a test's notifier, or the process
            // is stopping).
            Err(TrySendError::Closed(_)) => {}
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The client every POST goes through: no redirects followed (an answer
/// that is not 2xx is a failure, not a hint), the call's timeout set per
/// request.
fn client(settings: &Settings) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(settings.call_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("drover-coordinator/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with timeouts and no redirects builds")
}

/// Routes each notice to the task of each target that wants it, reading
/// the targets once per batch, until every [`Notifier`] is gone.
async fn dispatch(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Notice>, settings: Settings, counters: Arc<Counters>) {
    let client = client(&settings);
    let mut targets: Vec<Arc<Target>> = Vec::new();
    let mut workers: HashMap<String, mpsc::Sender<Job>> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        match load(store.as_ref()).await {
            Ok(now) => targets = now.into_iter().map(Arc::new).collect(),
            Err(e) => warn!(error = %e, "cannot read the notification targets; sending to those read before"),
        }
        // A removed target's task ends once it has sent what it holds.
        workers.retain(|name, _| targets.iter().any(|t| &t.name == name));
        for notice in batch.drain(..) {
            let notice = Arc::new(notice);
            for target in targets.iter().filter(|t| wants(t, &notice)) {
                let worker = workers.entry(target.name.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(settings.target_queue.max(1));
                    tokio::spawn(work(rx, client.clone(), settings.clone(), counters.clone()));
                    tx
                });
                match worker.try_send(Job { target: target.clone(), notice: notice.clone() }) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        if counters.dropped() {
                            warn!(
                                target = %target.name,
                                url = %target.shown_url(),
                                kind = notice.kind.as_str(),
                                "notification target's queue is full (it answers slowly or not at all); \
                                 notices to it are dropped"
                            );
                        }
                    }
                    // Its task panicked; a new one is started next time.
                    Err(TrySendError::Closed(_)) => {
                        counters.dropped();
                        workers.remove(&target.name);
                    }
                }
            }
        }
    }
}

/// One target's task: its notices in order, each with its retries.
async fn work(mut rx: mpsc::Receiver<Job>, client: reqwest::Client, settings: Settings, counters: Arc<Counters>) {
    while let Some(Job { target, notice }) = rx.recv().await {
        match deliver(&client, &settings, &target, &notice).await {
            Ok(tries) => {
                counters.delivered();
                debug!(target = %target.name, kind = notice.kind.as_str(), tries, "notification delivered");
            }
            Err((tries, why)) => {
                counters.failed();
                warn!(
                    target = %target.name,
                    url = %target.shown_url(),
                    kind = notice.kind.as_str(),
                    environment = %notice.environment,
                    service = %notice.service,
                    tries,
                    error = %why,
                    "notification not delivered; `drover notify test {}` tries the target again",
                    target.name
                );
            }
        }
    }
}

/// How one POST ended.
enum Answer {
    /// An HTTP status, and for one that is not 2xx the start of the body.
    Status(u16, String),
    /// No answer: why (connection refused, timed out, …).
    Unanswered(String),
}

impl Answer {
    fn delivered(&self) -> bool {
        matches!(self, Answer::Status(200..=299, _))
    }

    /// Whether trying again may help: no answer, a server error, or "too
    /// many requests" and "request timeout". A 4xx otherwise (a removed
    /// Slack webhook's 404) or a redirect will answer the same again.
    fn retryable(&self) -> bool {
        match self {
            Answer::Unanswered(_) => true,
            Answer::Status(status, _) => *status >= 500 || *status == 429 || *status == 408,
        }
    }

    fn why(&self) -> String {
        match self {
            Answer::Status(status, text) if text.is_empty() => format!("answered {status}"),
            Answer::Status(status, text) => format!("answered {status}: {text}"),
            Answer::Unanswered(why) => why.clone(),
        }
    }
}

/// POSTs `body` to `url` once, within `timeout`.
async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>, timeout: Duration) -> Answer {
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(timeout)
        .body(body)
        .send()
        .await;
    // reqwest's errors name the URL, which may hold a token.
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return Answer::Unanswered(error_chain(&e.without_url())),
    };
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Answer::Status(status, String::new());
    }
    let text = match response.chunk().await {
        Ok(Some(chunk)) => String::from_utf8_lossy(&chunk).chars().take(MAX_ANSWER_CHARS).collect::<String>(),
        _ => String::new(),
    };
    Answer::Status(status, text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Sends `notice` to `target` until it answers 2xx, with retries as
/// `settings` say: the tries it took, or the tries and why the last failed.
async fn deliver(
    client: &reqwest::Client,
    settings: &Settings,
    target: &Target,
    notice: &Notice,
) -> Result<u32, (u32, String)> {
    let body = serde_json::to_vec(&body(target, notice)).expect("a JSON value serializes");
    let first = Instant::now();
    let mut backoff = Backoff::new(settings.first_retry);
    let mut tries = 0;
    loop {
        tries += 1;
        let left = settings.give_up_after.saturating_sub(first.elapsed()).max(Duration::from_millis(1));
        let answer = post(client, &target.url, body.clone(), settings.call_timeout.min(left)).await;
        if answer.delivered() {
            return Ok(tries);
        }
        let wait = backoff.next(settings.max_retry);
        if !answer.retryable() || tries >= settings.attempts || first.elapsed() + wait >= settings.give_up_after {
            return Err((tries, answer.why()));
        }
        debug!(target = %target.name, tries, error = %answer.why(), "notification not delivered yet; trying again");
        tokio::time::sleep(wait).await;
    }
}

/// What `drover notify test` saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// The HTTP status; 0 without an answer.
    pub status: u16,
    /// Why it was not delivered; empty when the target answered 2xx.
    pub error: String,
    pub took: Duration,
}

/// Sends `target` one [`Kind::Test`] notice now, once, without retries,
/// whatever its filters, and says how it answered: what
/// `drover notify test` shows.
pub async fn send_test(target: &Target, by: &str, at_ms: u64) -> Tried {
    let environment = target.environments.first().cloned().unwrap_or_default();
    let notice = Notice::new(
        Kind::Test,
        environment,
        "",
        format!("a test of notification target {} (`drover notify test`, by {by})", target.name),
        at_ms,
    )
    .with_severity(target.min_severity)
    .with_field("target", target.name.clone());
    let settings = Settings::default();
    let body = serde_json::to_vec(&body(target, &notice)).expect("a JSON value serializes");
    let started = Instant::now();
    let answer = post(&client(&settings), &target.url, body, settings.call_timeout).await;
    let took = started.elapsed();
    match answer {
        Answer::Status(status, _) if answer.delivered() => Tried { status, error: String::new(), took },
        Answer::Status(status, _) => Tried { status, error: answer.why(), took },
        Answer::Unanswered(why) => Tried { status: 0, error: why, took },
    }
}
