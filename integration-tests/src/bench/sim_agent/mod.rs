//! Simulated agents: tokio tasks that speak the real agent protocol (one
//! `AgentService.Session` stream over mutual TLS, each with its own agent
//! certificate) but execute nothing. On `Assign` an agent records the time,
//! replies `Accepted`, optionally sends a log (in chunks of at most
//! `MAX_LOG_CHUNK_BYTES`, as the real agent does), and reports
//! `OUTCOME_SUCCEEDED` at once; it holds the attempt until the coordinator
//! acknowledges the result, sends heartbeats at the period the `Welcome`
//! sets, and obeys `Cancel`, `LogAck` and `ResultAck`.
//!
//! The session rules are the real agent's own code: its protocol core
//! (`drover_agent::client::protocol`: Hello first, listing the attempts
//! still held, whose unacknowledged log and result are sent again;
//! assignments and cancels from an older epoch refused), and
//! `drover_client`'s choice of coordinator (a follower's `Unavailable` with
//! `drover-leader` metadata sends the agent to the leader, one with only
//! `drover-not-leader` means an election is under way, retried in 100 ms;
//! a session that breaks moves on to the next coordinator URL). The
//! transport settings (keepalives, timeouts) are the real agent's too
//! (`Transport::AGENT`), so the coordinator sees the same load per agent.
//!
//! Because nothing runs, the coordinator, not the agents, is what a
//! benchmark with these agents measures; and thousands of them fit in one
//! process, which real agent processes would not on a small machine.
//!
//! An agent may also start from a join token instead of a hand-issued
//! certificate ([`enroll`], then [`Swarm::spawn_enrolled`]); such an agent
//! renews its certificate over its session's channel when the benchmark
//! tells every agent at once ([`Swarm::renew_all`]), keeping its session.
//! Agents started with [`Swarm::spawn`] never renew, and their session loop
//! is as it was.
//!
//! This module has the swarm and what its driver sees; `session` has one
//! agent's connections and its simulated executor; `identity` enrollment
//! and renewal; `procs` swarms in child processes, for more agents than one
//! process may hold sockets for.

mod identity;
pub mod procs;
mod session;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_client::endpoint::{Transport, endpoint};
use drover_client::targets::Targets;
use drover_client::tls::ClientTls;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{BenchError, tls_bundle};
use identity::Renewer;
pub use identity::{Enrolled, Renewal, enroll, whoami};
use session::SimAgent;

/// What every agent of a swarm is like.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The coordinators' URLs, tried in turn; redirects to the leader are
    /// followed.
    pub urls: Vec<String>,
    pub slots: u32,
    /// Bytes of log to send for each attempt before its result; 0 sends no
    /// log at all.
    pub log_bytes: usize,
    /// The labels every agent claims in its Hello; its certificate must
    /// carry them ([`SimConfig::labels_arg`] for `drover certs issue-agent
    /// --labels`).
    pub labels: HashMap<String, String>,
}

impl SimConfig {
    /// The labels as `k=v,k=v`, sorted, for `--labels`.
    pub fn labels_arg(&self) -> String {
        let mut pairs: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        pairs.join(",")
    }
}

/// What an agent saw, with the moment it saw it, for the benchmark driver.
#[derive(Debug, Clone)]
pub enum Observed {
    /// An assignment of a new attempt arrived; `at` is taken before anything
    /// else is done with it.
    Assigned { attempt_id: String, at: std::time::Instant },
    /// The coordinator acknowledged the attempt's result, which it does only
    /// after committing the result (and, for the last job, the run's end).
    ResultAcked { attempt_id: String, accepted: bool, at: std::time::Instant },
}

impl Observed {
    /// The run the attempt belongs to: attempt ids are `run/job/attempt`.
    pub fn run_id(&self) -> &str {
        let (Observed::Assigned { attempt_id, .. } | Observed::ResultAcked { attempt_id, .. }) = self;
        attempt_id.split('/').next().unwrap_or_default()
    }
}

/// Shared by the agents of a swarm and its driver.
struct Tap {
    /// Agents whose current session got its Welcome.
    connected: AtomicUsize,
    /// Sessions that got a Welcome, reconnects included.
    sessions: AtomicU64,
    /// Connection attempts that failed or sessions that broke.
    failures: AtomicU64,
    /// The latest failure, for diagnostics when a wait times out.
    last_failure: Mutex<String>,
    events: mpsc::UnboundedSender<Observed>,
    /// Enrolled agents' renewals that ended, in the order they did.
    renewals: Mutex<Vec<Renewal>>,
}

impl Tap {
    fn observe(&self, event: Observed) {
        // The receiver lives as long as the swarm, which outlives its agents.
        let _ = self.events.send(event);
    }

    fn renewed(&self, renewal: Renewal) {
        if let Ok(mut renewals) = self.renewals.lock() {
            renewals.push(renewal);
        }
    }

    fn failed(&self, why: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_failure.lock() {
            *last = why;
        }
    }
}

/// A set of simulated agents on one fleet, running on a tokio runtime until
/// the swarm is dropped.
pub struct Swarm {
    runtime: tokio::runtime::Handle,
    /// The directory `drover certs init` was given; agent NAME's bundle is
    /// agents/NAME in it.
    certs: PathBuf,
    config: Arc<SimConfig>,
    tap: Arc<Tap>,
    events: mpsc::UnboundedReceiver<Observed>,
    tasks: Vec<JoinHandle<()>>,
    /// Bounds how many agents dial, shake hands and say Hello at the same
    /// moment, so thousands of TLS handshakes do not swamp a small machine.
    gate: Arc<Semaphore>,
    /// Tells enrolled agents to renew, with the moment it did.
    renew: watch::Sender<Option<std::time::Instant>>,
}

/// A wait for `n` connected agents, looked at again and again.
struct ConnectWait {
    n: usize,
    deadline: std::time::Instant,
    last_report: std::time::Instant,
    /// Where the agents run, for the error (" in 4 processes").
    place: String,
}

impl ConnectWait {
    fn new(n: usize, deadline: std::time::Instant, place: &str) -> ConnectWait {
        ConnectWait { n, deadline, last_report: std::time::Instant::now(), place: place.to_string() }
    }

    /// Done with `connected` agents, failed at the deadline (with the
    /// `failures` so far), or not yet, calling `progress` about every 5 s.
    fn look(
        &mut self,
        connected: usize,
        failures: impl FnOnce() -> (u64, String),
        progress: &mut impl FnMut(usize),
    ) -> Option<Result<(), BenchError>> {
        let (n, place) = (self.n, &self.place);
        if connected >= n {
            return Some(Ok(()));
        }
        if std::time::Instant::now() >= self.deadline {
            let (failures, last) = failures();
            return Some(Err(BenchError::new(format!(
                "only {connected} of {n} simulated agents{place} connected before the deadline; {failures} \
                 connection failures, the latest: {last}"
            ))));
        }
        if self.last_report.elapsed() >= Duration::from_secs(5) {
            progress(connected);
            self.last_report = std::time::Instant::now();
        }
        None
    }
}

/// Loads agent `name`'s bundle from `dir`, as a real agent's `--tls-dir`.
fn load_tls(dir: &Path, name: &str) -> Result<ClientTls, BenchError> {
    ClientTls::load(tls_bundle(dir, &format!("agent-{name}"), "agent-NAME")).map_err(|e| BenchError::new(e.to_string()))
}

impl Swarm {
    /// A swarm whose agents use their bundles under `certs` (the directory
    /// given to `drover certs init`) and connect at most
    /// `concurrent_connects` at a time.
    pub fn new(
        runtime: tokio::runtime::Handle,
        certs: &Path,
        config: SimConfig,
        concurrent_connects: usize,
    ) -> Result<Swarm, BenchError> {
        if config.urls.is_empty() {
            return Err(BenchError::new("simulated agents need at least one coordinator URL"));
        }
        let (tx, events) = mpsc::unbounded_channel();
        let tap = Arc::new(Tap {
            connected: AtomicUsize::new(0),
            sessions: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_failure: Mutex::new(String::new()),
            events: tx,
            renewals: Mutex::new(Vec::new()),
        });
        Ok(Swarm {
            runtime,
            certs: certs.to_path_buf(),
            config: Arc::new(config),
            tap,
            events,
            tasks: Vec::new(),
            gate: Arc::new(Semaphore::new(concurrent_connects.max(1))),
            renew: watch::Sender::new(None),
        })
    }

    /// Agent `name`'s bundle directory, agents/NAME: where
    /// `drover certs issue-agent` puts it, and where [`enroll`] should.
    pub fn bundle_dir(&self, name: &str) -> PathBuf {
        self.certs.join("agents").join(name)
    }

    /// Starts agent `name` with its bundle, agents/NAME (issued
    /// beforehand), as a real agent's `--tls-dir`. It connects on its own,
    /// in the background.
    pub fn spawn(&mut self, name: &str) -> Result<(), BenchError> {
        self.start(name, None)
    }

    /// Starts agent `name`, enrolled beforehand with a join token into its
    /// bundle directory ([`enroll`]), like [`Swarm::spawn`]; it renews its
    /// certificate when [`Swarm::renew_all`] says so.
    pub fn spawn_enrolled(&mut self, name: &str) -> Result<(), BenchError> {
        let renewer = Renewer::new(name.to_string(), self.renew.subscribe(), self.bundle_dir(name));
        self.start(name, Some(renewer))
    }

    fn start(&mut self, name: &str, renewer: Option<Renewer>) -> Result<(), BenchError> {
        let tls = load_tls(&self.bundle_dir(name), name)?;
        for url in &self.config.urls {
            endpoint(url, &tls, &Transport::AGENT).map_err(|e| BenchError::new(e.to_string()))?;
        }
        // Spread by name over the coordinators, as real agents are.
        let targets = Targets::spread(self.config.urls.clone(), name)
            .ok_or_else(|| BenchError::new("simulated agents need at least one coordinator URL"))?;
        let agent = SimAgent::new(
            name.to_string(),
            tls,
            targets,
            self.config.clone(),
            self.tap.clone(),
            self.gate.clone(),
            renewer,
        );
        self.tasks.push(self.runtime.spawn(agent.run()));
        Ok(())
    }

    /// How many agents were started.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Agents whose current session has been welcomed.
    pub fn connected(&self) -> usize {
        self.tap.connected.load(Ordering::Relaxed)
    }

    /// Sessions welcomed so far, reconnects included.
    pub fn sessions(&self) -> u64 {
        self.tap.sessions.load(Ordering::Relaxed)
    }

    /// Failed connection attempts and broken sessions so far, and the latest
    /// reason.
    pub fn failures(&self) -> (u64, String) {
        let last = self.tap.last_failure.lock().map(|s| s.clone()).unwrap_or_default();
        (self.tap.failures.load(Ordering::Relaxed), last)
    }

    /// Tells every enrolled agent to renew its certificate now, all at once;
    /// returns the moment it did, from which [`Renewal::latency`] counts.
    /// An agent between sessions renews on its next one.
    pub fn renew_all(&self) -> std::time::Instant {
        let now = std::time::Instant::now();
        self.renew.send_replace(Some(now));
        now
    }

    /// The renewals that ended so far, through or failed.
    pub fn renewals(&self) -> Vec<Renewal> {
        self.tap.renewals.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many renewals ended so far.
    pub fn renewals_ended(&self) -> usize {
        self.tap.renewals.lock().map(|r| r.len()).unwrap_or_default()
    }

    /// Waits until at least `n` agents are connected; `progress` is called
    /// about every 5 seconds with the count so far.
    pub async fn wait_connected(
        &self,
        n: usize,
        deadline: Instant,
        mut progress: impl FnMut(usize),
    ) -> Result<(), BenchError> {
        let mut wait = ConnectWait::new(n, deadline.into_std(), "");
        loop {
            if let Some(done) = wait.look(self.connected(), || self.failures(), &mut progress) {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next thing an agent saw, waiting until `deadline`.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Observed, BenchError> {
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(BenchError::new("the simulated agents' event channel closed")),
            Err(_) => {
                let (failures, last) = self.failures();
                Err(BenchError::new(format!(
                    "no simulated agent saw anything before the deadline ({} of {} connected; {failures} connection failures, the latest: {last})",
                    self.connected(),
                    self.len()
                )))
            }
        }
    }

    /// Forgets everything seen so far.
    pub fn drain_events(&mut self) {
        while self.events.try_recv().is_ok() {}
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        // Aborting drops each agent's session, which closes its connection.
        for task in &self.tasks {
            task.abort();
        }
    }
}
