//! One simulated agent: its connections and its executor. What it answers
//! is the real agent's protocol core, `drover_agent::client::protocol`
//! (the Hello listing held attempts and what it sends again, refusing an
//! older epoch, heartbeats at the Welcome's period, `Accepted`, `LogAck`,
//! `ResultAck`, `Cancel`); the choice of coordinator (a follower's
//! redirect, the URLs in turn), the endpoints and the jittered backoff are
//! `drover_client`'s, as the real agent's are. What is its own: dialling
//! through the swarm's gate, an executor that succeeds at once (optionally
//! sending a log in chunks first), and what it tells the benchmark driver.
//! An enrolled agent also renews its certificate over the session's channel
//! when the benchmark says so (`super::identity`), and loads the new files
//! for its next connection.
//!
//! Unlike the real agent it does not leave a coordinator that acknowledges
//! no heartbeats (its attempts end at once, so nothing needs fencing), it
//! takes no notice of a CA rotation's `Trust` (the benchmark rotates no
//! CA), and it keeps no metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use drover_agent::client::protocol::{Action, Protocol};
use drover_agent::exec::{ExecEvent, Outcome};
use drover_client::chain::error_chain;
use drover_client::endpoint::{Transport, endpoint};
use drover_client::targets::{Backoff, Follower, Targets, follower_at};
use drover_client::tls::ClientTls;
use drover_proto::v1 as pb;
use pb::agent_message::Msg as Out;
use pb::coordinator_message::Msg as In;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::identity::{Renewal, Renewer};
use super::{Observed, SimConfig, Tap, load_tls};

/// Counts an agent as connected for as long as it lives.
struct ConnectedGuard<'a>(&'a Tap);

impl<'a> ConnectedGuard<'a> {
    fn new(tap: &'a Tap) -> Self {
        tap.connected.fetch_add(1, Ordering::Relaxed);
        tap.sessions.fetch_add(1, Ordering::Relaxed);
        ConnectedGuard(tap)
    }
}

impl Drop for ConnectedGuard<'_> {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a session ended.
enum SessionEnd {
    /// A follower named the leader: go there at once.
    Redirect(String),
    /// No leader at the moment (an election is under way): retry soon.
    NoLeader,
    /// No session came about.
    Failed,
    /// A session was welcomed and then broke after `lasted`.
    Broke { lasted: Duration },
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Bounds the TLS handshake, which the endpoint's connect timeout does not
/// cover, and the wait for the coordinator to take the Hello.
const SESSION_SETUP_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) struct SimAgent {
    name: String,
    tls: ClientTls,
    config: Arc<SimConfig>,
    tap: Arc<Tap>,
    gate: Arc<Semaphore>,
    targets: Targets,
    /// What it holds and answers: the real agent's protocol.
    proto: Protocol,
    /// The log every attempt prints, when it prints one.
    log: Option<Arc<[u8]>>,
    /// An enrolled agent's renewals; None for one with a hand-issued
    /// certificate, which never renews.
    renewer: Option<Renewer>,
}

impl SimAgent {
    /// An agent that has yet to connect, holding nothing. `targets` are the
    /// swarm's URLs.
    pub(super) fn new(
        name: String,
        tls: ClientTls,
        targets: Targets,
        config: Arc<SimConfig>,
        tap: Arc<Tap>,
        gate: Arc<Semaphore>,
        renewer: Option<Renewer>,
    ) -> SimAgent {
        let log = (config.log_bytes > 0).then(|| log_line(config.log_bytes).into());
        SimAgent { name, tls, config, tap, gate, targets, proto: Protocol::new(), log, renewer }
    }

    /// Connects, serves sessions and reconnects until the task is aborted.
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::new(MIN_BACKOFF);
        loop {
            let redirected = self.targets.redirected();
            let url = self.targets.next(Instant::now());
            match self.session(&url).await {
                SessionEnd::Redirect(leader) => {
                    self.targets.redirect(leader);
                    continue;
                }
                SessionEnd::NoLeader => backoff.reset(),
                // A session that had been up a while broke, most likely
                // because its coordinator died: try the next one at once.
                SessionEnd::Broke { lasted } if lasted >= Duration::from_secs(1) => {
                    backoff.reset();
                    continue;
                }
                SessionEnd::Broke { .. } => {}
                // The leader a follower named does not answer: it has most
                // likely just died and an election is under way.
                SessionEnd::Failed if redirected => backoff.reset(),
                SessionEnd::Failed => {}
            }
            tokio::time::sleep(backoff.next(MAX_BACKOFF)).await;
        }
    }

    fn send(tx: &mpsc::UnboundedSender<pb::AgentMessage>, m: Out) {
        // The stream ends only with the session, which then ends here too.
        let _ = tx.send(pb::AgentMessage { msg: Some(m) });
    }

    async fn session(&mut self, url: &str) -> SessionEnd {
        // Held from dialling until the Welcome, so at most the gate's number
        // of handshakes are in flight.
        let Ok(permit) = self.gate.clone().acquire_owned().await else {
            return SessionEnd::Failed;
        };
        let channel = match endpoint(url, &self.tls, &Transport::AGENT) {
            Ok(ep) => match tokio::time::timeout(SESSION_SETUP_TIMEOUT, source(ep, url, &self.name).connect()).await {
                Ok(Ok(channel)) => channel,
                Ok(Err(e)) => {
                    self.tap.failed(format!("cannot connect to {url}: {}", error_chain(&e)));
                    return SessionEnd::Failed;
                }
                Err(_) => {
                    self.tap.failed(format!("connecting to {url} took over {SESSION_SETUP_TIMEOUT:?}"));
                    return SessionEnd::Failed;
                }
            },
            Err(e) => {
                self.tap.failed(e.to_string());
                return SessionEnd::Failed;
            }
        };
        // Only an enrolled agent keeps the channel for its renewals.
        let renewal_channel = self.renewer.is_some().then(|| channel.clone());
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::unbounded_channel::<pb::AgentMessage>();
        let hello = pb::Hello {
            name: self.name.clone(),
            labels: self.config.labels.clone(),
            slots: self.config.slots,
            running: Vec::new(),
            version: concat!("drover-bench ", env!("CARGO_PKG_VERSION")).to_string(),
            draining: false,
            // One simulated agent is one process's session: stable across
            // its reconnects, distinct from every other.
            instance_id: format!("sim-{}", self.name),
            unready: String::new(),
            caches: Vec::new(),
        };
        for m in self.proto.hello(hello) {
            Self::send(&tx, m);
        }
        let opened = tokio::time::timeout(SESSION_SETUP_TIMEOUT, client.session(UnboundedReceiverStream::new(rx)));
        let mut inbound = match opened.await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                match follower_at(url, &status) {
                    Some(Follower::Leader(leader)) => return SessionEnd::Redirect(leader),
                    Some(Follower::Election) => return SessionEnd::NoLeader,
                    None => {}
                }
                self.tap.failed(format!("{url} refused the session: {:?}: {}", status.code(), status.message()));
                return SessionEnd::Failed;
            }
            Err(_) => {
                self.tap.failed(format!("{url} did not take the Hello within {SESSION_SETUP_TIMEOUT:?}"));
                return SessionEnd::Failed;
            }
        };
        // The coordinator answers a Hello with a Welcome first; only then is
        // the agent schedulable, so only then does it count as connected.
        let heartbeat_period = match tokio::time::timeout(SESSION_SETUP_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::CoordinatorMessage { msg: Some(m) }))) => self.on_message(m, &tx),
            Ok(Ok(_)) => {
                self.tap.failed(format!("{url} ended the session before its Welcome"));
                return SessionEnd::Failed;
            }
            Ok(Err(status)) => {
                self.tap.failed(format!("{url} broke the session before its Welcome: {}", status.message()));
                return SessionEnd::Failed;
            }
            Err(_) => {
                self.tap.failed(format!("no Welcome from {url} within {SESSION_SETUP_TIMEOUT:?}"));
                return SessionEnd::Failed;
            }
        };
        drop(permit);
        let tap = self.tap.clone();
        let _connected = ConnectedGuard::new(&tap);
        let started = Instant::now();
        let period = heartbeat_period.unwrap_or(self.proto.heartbeat_period());
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Out of `self` for the session, so the loop can wait on it while
        // the handlers use `self`.
        let mut renewer = self.renewer.take();
        if let (Some(r), Some(channel)) = (renewer.as_mut(), renewal_channel) {
            r.attach(channel);
        }
        let end = loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(pb::CoordinatorMessage { msg: Some(m) })) => {
                        if let Some(period) = self.on_message(m, &tx) {
                            heartbeat = tokio::time::interval_at(Instant::now() + period, period);
                            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        self.tap.failed(format!("{url} closed the session"));
                        break SessionEnd::Broke { lasted: started.elapsed() };
                    }
                    // A follower that carried the session lost the leader
                    // and asks us back (or names where to go).
                    Err(status) => {
                        if let Some(Follower::Leader(to)) = follower_at(url, &status) {
                            break SessionEnd::Redirect(to);
                        }
                        self.tap.failed(format!("session with {url} broke: {}", status.message()));
                        break SessionEnd::Broke { lasted: started.elapsed() };
                    }
                },
                _ = heartbeat.tick() => {
                    Self::send(&tx, self.proto.heartbeat(false, String::new(), Instant::now()));
                }
                renewal = Self::next_renewal(&mut renewer), if renewer.is_some() => self.renewed(renewal),
            }
        };
        if let Some(lost) = renewer.as_mut().and_then(Renewer::detach) {
            self.tap.renewed(lost);
        }
        self.renewer = renewer;
        end
    }

    /// The next renewal of an enrolled agent to end; never for another.
    async fn next_renewal(renewer: &mut Option<Renewer>) -> Renewal {
        match renewer {
            Some(r) => r.next().await,
            None => std::future::pending().await,
        }
    }

    /// A renewal ended: the next connection uses the new certificate, as the
    /// real agent's reads its files afresh; the driver hears of it.
    fn renewed(&mut self, mut renewal: Renewal) {
        if renewal.error.is_none() {
            match load_tls(self.tls.dir(), &self.name) {
                Ok(tls) => self.tls = tls,
                Err(e) => renewal.error = Some(format!("the renewed bundle cannot be loaded: {e}")),
            }
        }
        self.tap.renewed(renewal);
    }

    /// Carries out what the protocol answers to one message from the
    /// coordinator, and tells the driver what it saw; returns the new
    /// heartbeat period when a Welcome set one.
    fn on_message(&mut self, msg: In, tx: &mpsc::UnboundedSender<pb::AgentMessage>) -> Option<Duration> {
        // Taken before anything else is done with the message.
        let at = std::time::Instant::now();
        let acked = match &msg {
            In::ResultAck(a) => Some((a.attempt_id.clone(), a.accepted)),
            _ => None,
        };
        let mut period = None;
        let mut started = Vec::new();
        for action in self.proto.on_message(msg, Instant::now()) {
            match action {
                Action::Send(m) => Self::send(tx, m),
                Action::Start { attempt, .. } => started.push(attempt.id),
                Action::HeartbeatEvery(every) | Action::HeartbeatPace(every) => period = Some(every),
                // Simulated attempts end as soon as they start: nothing is
                // ever running to kill or fence.
                Action::Kill(_) | Action::Fence { .. } => {}
                // Simulated agents deploy nothing; the benchmark sends no
                // deploy actions.
                Action::Deploy(_) => {}
                // The benchmark rotates no CA: its agents take a trust
                // bundle only with a renewal, and renew when it signals
                // them, not by a retiring CA's deadline.
                Action::Trust(_) | Action::RenewBy(_) => {}
            }
        }
        if let Some((attempt_id, accepted)) = acked {
            self.tap.observe(Observed::ResultAcked { attempt_id, accepted, at });
        }
        // Run once `Accepted` is on its way, as the real agent's executor
        // reports only after the session has accepted.
        for id in started {
            self.tap.observe(Observed::Assigned { attempt_id: id.clone(), at });
            self.execute(id, tx);
        }
        period
    }

    /// The simulated executor: a log in chunks of at most
    /// `MAX_LOG_CHUNK_BYTES` (as a real step's output arrives in pieces),
    /// then success.
    fn execute(&mut self, id: String, tx: &mpsc::UnboundedSender<pb::AgentMessage>) {
        if let Some(log) = &self.log {
            for chunk in log.chunks(drover_proto::MAX_LOG_CHUNK_BYTES) {
                let output = ExecEvent::Output { id: id.clone(), data: chunk.to_vec() };
                if let Some(m) = self.proto.on_exec(output) {
                    Self::send(tx, m);
                }
            }
        }
        let finished = ExecEvent::Finished {
            id,
            outcome: Outcome::Succeeded,
            exit_code: 0,
            message: String::new(),
            artifact: None,
            cache: None,
        };
        if let Some(m) = self.proto.on_exec(finished) {
            Self::send(tx, m);
        }
    }
}

/// A log of `n` bytes: dots ending in a newline, as one line of output.
fn log_line(n: usize) -> Vec<u8> {
    let mut line = vec![b'.'; n];
    if let Some(last) = line.last_mut() {
        *last = b'\n';
    }
    line
}

/// How many loopback addresses the simulated agents connect from.
const SOURCES: usize = 16;

/// `ep` connecting from one of [`SOURCES`] loopback addresses, by the
/// agent's name, when `url` is on the loopback address: one source address
/// has about 28,000 ports to one coordinator, fewer than a large swarm
/// needs.
fn source(ep: tonic::transport::Endpoint, url: &str, name: &str) -> tonic::transport::Endpoint {
    if !url.starts_with("https://127.0.0.1:") {
        return ep;
    }
    let at = drover_client::targets::spread_index(name, SOURCES) as u8;
    ep.local_address(Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1 + at))))
}
