//! One simulated agent's side of the agent protocol: connecting (through
//! the swarm's gate, with the real agent's transport settings), following a
//! follower's redirect to the leader, backing off with jitter, and within a
//! session the Hello, heartbeats, and the answers to `Assign`, `Cancel`,
//! `LogAck` and `ResultAck`, holding each attempt until its result is
//! acknowledged.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use drover_proto::metadata;
use drover_proto::v1 as pb;
use pb::agent_message::Msg as Out;
use pb::coordinator_message::Msg as In;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{ClientTlsConfig, Endpoint};

use super::super::{BenchError, error_chain};
use super::{Observed, SimConfig, Tap};

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

/// An attempt from assignment until its result is acknowledged.
struct Held {
    /// The log chunk (sent at offset 0) until it is acknowledged.
    log: Option<Vec<u8>>,
    result: pb::AttemptResult,
    /// The coordinator disowned it: its result is no longer wanted.
    disowned: bool,
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
/// The real agent's endpoint settings: HTTP/2 keepalives notice a dead or
/// paused coordinator within a few seconds.
pub(super) fn endpoint(url: &str, tls: &ClientTlsConfig) -> Result<Endpoint, BenchError> {
    let bad = |e: tonic::transport::Error| BenchError::new(format!("bad coordinator URL {url}: {}", error_chain(&e)));
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(bad)?
        .tls_config(tls.clone())
        .map_err(bad)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true))
}

/// Spreads the retries of many agents over ±25% of the wait, so they do not
/// all hit a coordinator at the same instant.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    d.mul_f64(0.75 + f64::from(nanos % 1000) / 2000.0)
}

pub(super) struct SimAgent {
    name: String,
    tls: ClientTlsConfig,
    config: Arc<SimConfig>,
    tap: Arc<Tap>,
    gate: Arc<Semaphore>,
    held: HashMap<String, Held>,
    /// Highest coordinator epoch seen; older ones are refused.
    epoch: u64,
    heartbeat: Duration,
    /// Index into `config.urls` of the next coordinator to try.
    next: usize,
    /// The leader's URL, when a follower named it.
    leader_hint: Option<String>,
}

impl SimAgent {
    /// An agent that has yet to connect, holding nothing.
    pub(super) fn new(
        name: String,
        tls: ClientTlsConfig,
        config: Arc<SimConfig>,
        tap: Arc<Tap>,
        gate: Arc<Semaphore>,
    ) -> SimAgent {
        SimAgent {
            name,
            tls,
            config,
            tap,
            gate,
            held: HashMap::new(),
            epoch: 0,
            heartbeat: Duration::from_secs(2),
            next: 0,
            leader_hint: None,
        }
    }

    fn target(&mut self) -> String {
        if let Some(url) = self.leader_hint.take() {
            return url;
        }
        let url = self.config.urls[self.next % self.config.urls.len()].clone();
        self.next += 1;
        url
    }

    /// Connects, serves sessions and reconnects until the task is aborted.
    pub(super) async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let redirected = self.leader_hint.is_some();
            let url = self.target();
            match self.session(&url).await {
                SessionEnd::Redirect(leader) => {
                    self.leader_hint = Some(leader);
                    continue;
                }
                SessionEnd::NoLeader => backoff = MIN_BACKOFF,
                // A session that had been up a while broke, most likely
                // because its coordinator died: try the next one at once.
                SessionEnd::Broke { lasted } if lasted >= Duration::from_secs(1) => {
                    backoff = MIN_BACKOFF;
                    continue;
                }
                SessionEnd::Broke { .. } => {}
                // The leader a follower named does not answer: it has most
                // likely just died and an election is under way.
                SessionEnd::Failed if redirected => backoff = MIN_BACKOFF,
                SessionEnd::Failed => {}
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn send(tx: &mpsc::UnboundedSender<pb::AgentMessage>, m: Out) {
        // The stream ends only with the session, which then ends here too.
        let _ = tx.send(pb::AgentMessage { msg: Some(m) });
    }

    /// Sends a whole log from offset 0, in chunks the coordinator takes.
    fn send_log(tx: &mpsc::UnboundedSender<pb::AgentMessage>, id: &str, data: &[u8]) {
        for (i, chunk) in data.chunks(drover_proto::MAX_LOG_CHUNK_BYTES).enumerate() {
            let offset = (i * drover_proto::MAX_LOG_CHUNK_BYTES) as u64;
            Self::send(tx, Out::Log(pb::LogChunk { attempt_id: id.to_string(), offset, data: chunk.to_vec() }));
        }
    }

    async fn session(&mut self, url: &str) -> SessionEnd {
        // Held from dialling until the Welcome, so at most the gate's number
        // of handshakes are in flight.
        let Ok(permit) = self.gate.clone().acquire_owned().await else {
            return SessionEnd::Failed;
        };
        let channel = match endpoint(url, &self.tls) {
            Ok(ep) => match tokio::time::timeout(SESSION_SETUP_TIMEOUT, ep.connect()).await {
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
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::unbounded_channel::<pb::AgentMessage>();
        Self::send(
            &tx,
            Out::Hello(pb::Hello {
                name: self.name.clone(),
                labels: self.config.labels.clone(),
                slots: self.config.slots,
                running: self.held.iter().filter(|(_, h)| !h.disowned).map(|(id, _)| id.clone()).collect(),
                version: concat!("drover-bench ", env!("CARGO_PKG_VERSION")).to_string(),
                draining: false,
                // One simulated agent is one process's session: stable
                // across its reconnects, distinct from every other.
                instance_id: format!("sim-{}", self.name),
                unready: String::new(),
            }),
        );
        // Resend everything not acknowledged, each log before its result.
        for (id, held) in &self.held {
            if held.disowned {
                continue;
            }
            if let Some(data) = &held.log {
                Self::send_log(&tx, id, data);
            }
            Self::send(&tx, Out::Result(held.result.clone()));
        }
        let opened = tokio::time::timeout(SESSION_SETUP_TIMEOUT, client.session(UnboundedReceiverStream::new(rx)));
        let mut inbound = match opened.await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                let meta = status.metadata();
                if let Some(leader) = meta.get(metadata::LEADER).and_then(|v| v.to_str().ok()) {
                    return SessionEnd::Redirect(leader.to_string());
                }
                if meta.contains_key(metadata::NOT_LEADER) {
                    return SessionEnd::NoLeader;
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
        let mut beats: u64 = 0;
        let period = heartbeat_period.unwrap_or(self.heartbeat);
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
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
                        return SessionEnd::Broke { lasted: started.elapsed() };
                    }
                    Err(status) => {
                        self.tap.failed(format!("session with {url} broke: {}", status.message()));
                        return SessionEnd::Broke { lasted: started.elapsed() };
                    }
                },
                _ = heartbeat.tick() => {
                    let running = self.held.iter().filter(|(_, h)| !h.disowned).map(|(id, _)| id.clone()).collect();
                    beats += 1;
                    let heartbeat = pb::Heartbeat { running, draining: false, seq: beats, unready: String::new() };
                    Self::send(&tx, Out::Heartbeat(heartbeat));
                }
            }
        }
    }

    /// Handles one message from the coordinator; returns the new heartbeat
    /// period when a Welcome set one.
    fn on_message(&mut self, msg: In, tx: &mpsc::UnboundedSender<pb::AgentMessage>) -> Option<Duration> {
        match msg {
            In::Welcome(w) => {
                self.epoch = self.epoch.max(w.epoch);
                // The same floor as the real agent, so a zero cannot make
                // the heartbeat a busy loop.
                self.heartbeat = Duration::from_millis(u64::from(w.heartbeat_ms).max(100));
                return Some(self.heartbeat);
            }
            // Simulated attempts end as soon as they start, so there is
            // nothing to fence; acknowledgements only matter to real agents.
            In::HeartbeatAck(_) => {}
            In::Assign(a) => {
                let at = std::time::Instant::now();
                if a.epoch < self.epoch {
                    return None;
                }
                // As the real agent: a kind of work it does not run is
                // neither run nor accepted, and its lease ends it as never
                // started.
                let Some(pb::assign::Work::Job(_)) = a.work else {
                    return None;
                };
                let id = a.attempt_id;
                Self::send(tx, Out::Accepted(pb::Accepted { attempt_id: id.clone() }));
                // An assignment resent after a reconnect is already held,
                // and its result was sent again with the Hello.
                if !self.held.contains_key(&id) {
                    self.tap.observe(Observed::Assigned { attempt_id: id.clone(), at });
                    let log = (self.config.log_bytes > 0).then(|| log_line(self.config.log_bytes));
                    if let Some(data) = &log {
                        Self::send_log(tx, &id, data);
                    }
                    let result = pb::AttemptResult {
                        attempt_id: id.clone(),
                        outcome: pb::Outcome::Succeeded as i32,
                        exit_code: 0,
                        message: String::new(),
                    };
                    Self::send(tx, Out::Result(result.clone()));
                    self.held.insert(id, Held { log, result, disowned: false });
                }
            }
            In::Cancel(c) => {
                if c.epoch < self.epoch {
                    return None;
                }
                // The attempt finished the moment it arrived, so there is
                // nothing to kill. A disowned one is dropped; otherwise its
                // result (already sent) is what the coordinator waits for.
                if c.disown {
                    self.held.remove(&c.attempt_id);
                }
            }
            In::LogAck(a) => {
                if let Some(held) = self.held.get_mut(&a.attempt_id)
                    && held.log.as_ref().is_some_and(|l| a.offset >= l.len() as u64)
                {
                    held.log = None;
                }
            }
            In::ResultAck(a) => {
                let at = std::time::Instant::now();
                self.held.remove(&a.attempt_id);
                self.tap.observe(Observed::ResultAcked { attempt_id: a.attempt_id, accepted: a.accepted, at });
            }
        }
        None
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
