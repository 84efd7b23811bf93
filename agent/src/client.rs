//! The agent's connection to the coordinator: dial out over mutual TLS, open
//! one session stream, say Hello, and then react to what arrives. Prost
//! types stop here; the executor sees only [`exec::Attempt`].
//!
//! The agent holds each attempt from the moment it is assigned until the
//! coordinator acknowledges its result. While held, the attempt's unacked
//! log chunks and its result survive any number of reconnects: after a
//! reconnect the Hello lists the held attempts, and the agent resends what
//! was not acknowledged. An attempt the coordinator disowns (Cancel) is
//! killed and dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_proto::metadata;
use drover_proto::v1 as pb;
use drover_telemetry::logging::error_chain;
use pb::agent_message::Msg as Out;
use pb::coordinator_message::Msg as In;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::{debug, info, warn};

use crate::exec::{self, ExecEvent, Outcome};
use crate::leftovers;
use crate::logbuf::LogBuf;
use crate::metrics::METRICS;

#[derive(Debug, Clone)]
pub struct Config {
    /// The coordinators' URLs; the agent tries them in turn and follows
    /// redirects to the leader.
    pub coordinators: Vec<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
    pub work_dir: PathBuf,
    pub tls_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "cannot read {path}: {source}; point --tls-dir (or DROVER_TLS_DIR) at the directory made by \
         `drover certs init`, holding ca.pem and agent-NAME.pem and agent-NAME-key.pem from \
         `drover certs issue-agent NAME`"
    )]
    Cert { path: PathBuf, source: std::io::Error },
    /// The certificates were read but do not make a TLS configuration (a
    /// PEM that does not parse, a key that does not match).
    #[error(
        "the certificates in {} are not usable: {detail}; check ca.pem, agent-NAME.pem and \
         agent-NAME-key.pem there (`drover certs issue-agent NAME` makes the agent's)",
        .dir.display()
    )]
    Tls { dir: PathBuf, detail: String },
    #[error("bad coordinator URL {url:?}: {detail}; use e.g. https://10.0.0.1:7700")]
    Url { url: String, detail: String },
    #[error("cannot create the work directory {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error("cannot take the work dir lock {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error(
        "work dir {} is in use by another drover-agent{}; give each agent its own --work-dir",
        .path.display(),
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    WorkDirInUse { path: PathBuf, pid: Option<u32> },
}

/// The lock file that keeps a work dir to one agent process.
const LOCK_FILE: &str = ".drover-agent.lock";

/// Takes the work dir's lock for the life of the returned file, and writes
/// our pid into it so that a refused agent can name the holder. The lock
/// goes with the process, however it dies, which is what makes the
/// processes on the work dir that nobody holds leftovers (see
/// [`crate::leftovers`]). The file is opened close-on-exec, so steps do not
/// inherit, and keep, the lock.
fn lock_work_dir(work_dir: &Path) -> Result<std::fs::File, AgentError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = work_dir.join(LOCK_FILE);
    let lock_err = |source| AgentError::Lock { path: path.clone(), source };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(lock_err)?;
    // SAFETY: flock(2) on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(lock_err(e));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(AgentError::WorkDirInUse { path: work_dir.to_path_buf(), pid: text.trim().parse().ok() });
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(lock_err)?;
    Ok(file)
}

struct Held {
    log: LogBuf,
    result: Option<pb::AttemptResult>,
    /// Set to true to kill the attempt; `None` once it has finished.
    cancel: Option<watch::Sender<bool>>,
    /// The coordinator disowned the attempt: drop it once it has stopped.
    disowned: bool,
}

/// Why a session ended.
enum SessionEnd {
    /// A follower named the leader: go there at once.
    Redirect(String),
    /// No leader at the moment (an election is under way): retry soon.
    NoLeader,
    Failed(String),
    /// Draining, and nothing is left to finish or report: exit.
    Drained,
    /// Told to stop at once.
    Stop,
}

/// What the agent's owner asks of it (the binary maps signals to these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep taking work.
    Run,
    /// Take no new work; finish the attempts held, report them, then exit.
    Drain,
    /// Kill every attempt held and exit.
    Now,
}

/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Spreads reconnects of many agents over ±25% of the wait, so a restarted
/// coordinator is not hit by all of them at the same instant.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}

pub struct Agent {
    config: Config,
    tls: ClientTlsConfig,
    /// Index into `config.coordinators` of the next one to try.
    next: usize,
    /// The leader's URL, when a follower told us.
    leader_hint: Option<String>,
    held: HashMap<String, Held>,
    exec_tx: mpsc::UnboundedSender<ExecEvent>,
    exec_rx: mpsc::UnboundedReceiver<ExecEvent>,
    /// Highest coordinator epoch seen; older ones are refused.
    epoch: u64,
    heartbeat: Duration,
    /// Held, never read: the work dir is ours while the file is open.
    _lock: std::fs::File,
}

/// What went wrong, without tonic's outer "transport error" when there is
/// more to say.
fn cause(e: &tonic::transport::Error) -> String {
    use std::error::Error as _;
    let text = e.source().map_or_else(|| e.to_string(), error_chain);
    text.trim_end_matches('.').to_string()
}

/// An endpoint for one coordinator URL. HTTP/2 keepalives notice a dead or
/// paused coordinator within a few seconds, well inside an attempt's lease,
/// so the agent moves to the new leader before anyone declares it lost.
///
/// Only `https://` URLs are taken: the coordinator listens with TLS only,
/// and a plain-text dial would fail, and be retried, forever.
fn endpoint(url: &str, tls: &ClientTlsConfig, tls_dir: &Path) -> Result<Endpoint, AgentError> {
    let url_err = |detail: String| AgentError::Url { url: url.to_string(), detail };
    if !url.starts_with("https://") {
        return Err(url_err("it must start with https:// (Drover always uses TLS)".into()));
    }
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| url_err(error_chain(&e)))?
        .tls_config(tls.clone())
        .map_err(|e| AgentError::Tls { dir: tls_dir.to_path_buf(), detail: cause(&e) })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true))
}

fn read(dir: &std::path::Path, file: &str) -> Result<Vec<u8>, AgentError> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|source| AgentError::Cert { path, source })
}

/// Reads a certificate file and checks that it holds a PEM certificate:
/// tonic takes a file without one silently (an empty trust store, no client
/// certificate), and every handshake would then fail, forever.
fn read_cert(dir: &std::path::Path, file: &str) -> Result<Vec<u8>, AgentError> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    let pem = read(dir, file)?;
    if !pem.windows(BEGIN.len()).any(|w| w == BEGIN) {
        let detail = format!("{file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        return Err(AgentError::Tls { dir: dir.to_path_buf(), detail });
    }
    Ok(pem)
}

impl Agent {
    /// Checks the configuration, takes the work dir (canonical from here
    /// on, so steps see an absolute `DROVER_WORKSPACE`) and cleans up what
    /// an earlier agent on it left behind.
    pub fn new(mut config: Config) -> Result<Agent, AgentError> {
        let ca = Certificate::from_pem(read_cert(&config.tls_dir, "ca.pem")?);
        let identity = Identity::from_pem(
            read_cert(&config.tls_dir, &format!("agent-{}.pem", config.name))?,
            read(&config.tls_dir, &format!("agent-{}-key.pem", config.name))?,
        );
        let tls = ClientTlsConfig::new().ca_certificate(ca).identity(identity);
        if config.coordinators.is_empty() {
            return Err(AgentError::Url { url: String::new(), detail: "no coordinator URL given".into() });
        }
        for url in &config.coordinators {
            endpoint(url, &tls, &config.tls_dir)?;
        }
        let work_dir_err = |source| AgentError::WorkDir { path: config.work_dir.clone(), source };
        std::fs::create_dir_all(&config.work_dir).map_err(work_dir_err)?;
        let work_dir = std::fs::canonicalize(&config.work_dir).map_err(work_dir_err)?;
        config.work_dir = work_dir;
        let lock = lock_work_dir(&config.work_dir)?;
        leftovers::clean_up(&config.work_dir);
        let (exec_tx, exec_rx) = mpsc::unbounded_channel();
        Ok(Agent {
            config,
            tls,
            next: 0,
            leader_hint: None,
            held: HashMap::new(),
            exec_tx,
            exec_rx,
            epoch: 0,
            heartbeat: Duration::from_secs(2),
            _lock: lock,
        })
    }

    /// The URL to dial next: the leader we were told about, else the next
    /// of the configured coordinators in turn.
    fn target(&mut self) -> String {
        if let Some(url) = self.leader_hint.take() {
            return url;
        }
        let url = self.config.coordinators[self.next % self.config.coordinators.len()].clone();
        self.next += 1;
        url
    }

    /// Whether the owner asked for a drain and nothing is left to finish
    /// or report.
    fn drained(&self, stop: &watch::Receiver<Stop>) -> bool {
        *stop.borrow() == Stop::Drain && self.held.is_empty()
    }

    /// Runs, reconnecting whenever the session ends, until `stop` says
    /// [`Stop::Now`] (every running attempt is killed) or [`Stop::Drain`]
    /// and every attempt held has finished and its result is acknowledged.
    pub async fn run(mut self, mut stop: watch::Receiver<Stop>) {
        let mut backoff = Duration::from_millis(100);
        'reconnect: loop {
            if self.drained(&stop) {
                info!("drained: every attempt finished and reported; exiting");
                return;
            }
            let redirected = self.leader_hint.is_some();
            let url = self.target();
            let for_session = stop.clone();
            let session = async {
                let started = tokio::time::Instant::now();
                let end = match endpoint(&url, &self.tls, &self.config.tls_dir) {
                    Ok(ep) => match ep.connect().await {
                        Ok(channel) => self.session(channel, &url, for_session).await,
                        Err(e) => SessionEnd::Failed(format!("cannot connect to {url}: {}", error_chain(&e))),
                    },
                    Err(e) => SessionEnd::Failed(e.to_string()),
                };
                (end, started.elapsed())
            };
            tokio::select! {
                (end, lasted) = session => {
                    if lasted > Duration::from_secs(10) {
                        backoff = Duration::from_millis(100);
                    }
                    match end {
                        SessionEnd::Redirect(leader) => {
                            info!(%url, %leader, "redirected to the leader");
                            self.leader_hint = Some(leader);
                            continue;
                        }
                        // An election takes about one lease TTL: poll briskly.
                        SessionEnd::NoLeader => backoff = Duration::from_millis(100),
                        // Followers name a leader that does not answer: it
                        // has most likely just died, and a new one will be
                        // elected within the election TTL. Poll briskly.
                        SessionEnd::Failed(e) if redirected => {
                            debug!(error = %e, "the leader we were sent to does not answer");
                            backoff = Duration::from_millis(100);
                        }
                        SessionEnd::Failed(e) => warn!(error = %e, "session ended"),
                        // The top of the loop says so and returns.
                        SessionEnd::Drained => continue,
                        SessionEnd::Stop => break 'reconnect,
                    }
                }
                _ = stop.wait_for(|s| *s == Stop::Now) => break 'reconnect,
            }
            // Keep taking output while disconnected, so nothing is lost.
            let sleep = tokio::time::sleep(jitter(backoff));
            tokio::pin!(sleep);
            loop {
                if *stop.borrow() == Stop::Now {
                    break 'reconnect;
                }
                if self.drained(&stop) {
                    break;
                }
                tokio::select! {
                    _ = &mut sleep => break,
                    Some(ev) = self.exec_rx.recv() => { self.on_exec(ev, None); }
                    Ok(()) = stop.changed() => {}
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        // Every way of stopping now ends here.
        warn!(attempts = self.held.len(), "stopping now: killing every attempt held");
        self.kill_all().await;
    }

    /// Kills every running attempt and waits until their processes are gone.
    /// Their results are not reported: the coordinator sees the leases
    /// expire and runs the jobs again where retries allow.
    async fn kill_all(&mut self) {
        for held in self.held.values() {
            if let Some(c) = &held.cancel {
                let _ = c.send(true);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.held.values().any(|h| h.cancel.is_some()) {
            match tokio::time::timeout_at(deadline, self.exec_rx.recv()).await {
                Ok(Some(ExecEvent::Finished { id, .. })) => {
                    if let Some(h) = self.held.get_mut(&id) {
                        h.cancel = None;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    }

    async fn session(&mut self, channel: Channel, url: &str, mut stop: watch::Receiver<Stop>) -> SessionEnd {
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::unbounded_channel::<pb::AgentMessage>();
        let send = |tx: &mpsc::UnboundedSender<pb::AgentMessage>, m: Out| {
            let _ = tx.send(pb::AgentMessage { msg: Some(m) });
        };
        send(
            &tx,
            Out::Hello(pb::Hello {
                name: self.config.name.clone(),
                labels: self.config.labels.clone().into_iter().collect(),
                slots: self.config.slots,
                running: self.held.iter().filter(|(_, h)| !h.disowned).map(|(id, _)| id.clone()).collect(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                draining: *stop.borrow() == Stop::Drain,
            }),
        );
        // Resend everything not acknowledged, logs before results.
        for (id, held) in &self.held {
            for (offset, data) in held.log.unacked() {
                send(&tx, Out::Log(pb::LogChunk { attempt_id: id.clone(), offset: *offset, data: data.clone() }));
            }
            if let Some(result) = &held.result {
                send(&tx, Out::Result(result.clone()));
            }
        }
        let mut inbound = match client.session(UnboundedReceiverStream::new(rx)).await {
            Ok(resp) => resp.into_inner(),
            Err(status) => {
                let meta = status.metadata();
                if let Some(leader) = meta.get(metadata::LEADER).and_then(|v| v.to_str().ok()) {
                    return SessionEnd::Redirect(leader.to_string());
                }
                if meta.contains_key(metadata::NOT_LEADER) {
                    return SessionEnd::NoLeader;
                }
                return SessionEnd::Failed(format!("{url} refused the session: {}", status.message()));
            }
        };
        info!(coordinator = %url, "connected");
        METRICS.sessions.inc();
        METRICS.connected.set(1);
        // Whatever ends the session, the agent is no longer connected.
        struct Disconnected;
        impl Drop for Disconnected {
            fn drop(&mut self) {
                METRICS.connected.set(0);
            }
        }
        let _disconnected = Disconnected;
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        loop {
            if self.drained(&stop) {
                return SessionEnd::Drained;
            }
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(pb::CoordinatorMessage { msg: Some(m) })) => {
                        if let Some(new_period) = self.on_message(m, &tx) {
                            heartbeat = tokio::time::interval(new_period);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return SessionEnd::Failed(format!("{url} closed the session")),
                    Err(s) => return SessionEnd::Failed(format!("session with {url} broke: {}", s.message())),
                },
                Some(ev) = self.exec_rx.recv() => self.on_exec(ev, Some(&tx)),
                _ = heartbeat.tick() => {
                    let running = self.held.iter().filter(|(_, h)| !h.disowned).map(|(id, _)| id.clone()).collect();
                    let draining = *stop.borrow() == Stop::Drain;
                    send(&tx, Out::Heartbeat(pb::Heartbeat { running, draining }));
                }
                Ok(()) = stop.changed() => match *stop.borrow_and_update() {
                    Stop::Now => return SessionEnd::Stop,
                    // Say so at once, so the coordinator assigns nothing more.
                    Stop::Drain => {
                        info!(attempts = self.held.len(), "draining: finishing the attempts held, taking no new work");
                        heartbeat.reset_immediately();
                    }
                    Stop::Run => {}
                },
            }
        }
    }

    /// Handles one message from the coordinator. Returns a new heartbeat
    /// period when the coordinator set one.
    fn on_message(&mut self, msg: In, tx: &mpsc::UnboundedSender<pb::AgentMessage>) -> Option<Duration> {
        match msg {
            In::Welcome(w) => {
                self.epoch = self.epoch.max(w.epoch);
                self.heartbeat = Duration::from_millis(u64::from(w.heartbeat_ms).max(100));
                return Some(self.heartbeat);
            }
            In::Assign(a) => {
                if a.epoch < self.epoch {
                    warn!(attempt = %a.attempt_id, epoch = a.epoch, "refused an assignment from an old epoch");
                    return None;
                }
                let id = a.attempt_id.clone();
                if !self.held.contains_key(&id) {
                    info!(attempt = %id, "starting attempt");
                    let (cancel_tx, cancel_rx) = watch::channel(false);
                    self.held.insert(
                        id.clone(),
                        Held {
                            log: LogBuf::new(a.log_cap.max(1)),
                            result: None,
                            cancel: Some(cancel_tx),
                            disowned: false,
                        },
                    );
                    let attempt = exec::Attempt {
                        id: id.clone(),
                        run_id: a.run_id,
                        job: a.job,
                        attempt: a.attempt,
                        steps: a.steps.into_iter().map(|s| (s.name, s.run)).collect(),
                        env: a.env.into_iter().collect(),
                        timeout: (a.timeout_ms > 0).then(|| Duration::from_millis(a.timeout_ms)),
                        checkout: a.checkout.map(|c| (c.repo, c.commit)),
                        traceparent: (!a.traceparent.is_empty()).then_some(a.traceparent),
                    };
                    METRICS.attempts_running.add(1);
                    tokio::spawn(exec::execute(
                        attempt,
                        self.config.name.clone(),
                        self.config.work_dir.clone(),
                        self.exec_tx.clone(),
                        cancel_rx,
                    ));
                }
                let _ = tx.send(pb::AgentMessage { msg: Some(Out::Accepted(pb::Accepted { attempt_id: id })) });
            }
            In::Cancel(c) => {
                if c.epoch < self.epoch {
                    warn!(attempt = %c.attempt_id, "refused a cancel from an old epoch");
                    return None;
                }
                if let Some(held) = self.held.get_mut(&c.attempt_id) {
                    info!(attempt = %c.attempt_id, reason = %c.reason, "killing attempt");
                    match &held.cancel {
                        Some(cancel) => {
                            let _ = cancel.send(true);
                        }
                        None if c.disown => {
                            // Already finished: nothing to kill, nothing to report.
                            self.held.remove(&c.attempt_id);
                            return None;
                        }
                        None => {}
                    }
                    // A cancelled run still wants the result; a disowned
                    // attempt's result would only be refused.
                    held.disowned |= c.disown;
                }
            }
            In::LogAck(a) => {
                if let Some(held) = self.held.get_mut(&a.attempt_id) {
                    held.log.ack(a.offset);
                }
            }
            In::ResultAck(a) => {
                if !a.accepted {
                    debug!(attempt = %a.attempt_id, "the coordinator refused our result (stale attempt)");
                }
                self.held.remove(&a.attempt_id);
            }
        }
        None
    }

    /// Takes an executor event into the held state and sends it when
    /// connected.
    fn on_exec(&mut self, ev: ExecEvent, tx: Option<&mpsc::UnboundedSender<pb::AgentMessage>>) {
        let send = |m: Out| {
            if let Some(tx) = tx {
                let _ = tx.send(pb::AgentMessage { msg: Some(m) });
            }
        };
        match ev {
            ExecEvent::Output { id, data } => {
                let Some(held) = self.held.get_mut(&id) else { return };
                if held.disowned {
                    return;
                }
                METRICS.log_bytes.add(data.len() as u64);
                if let Some((offset, data)) = held.log.append(&data) {
                    send(Out::Log(pb::LogChunk { attempt_id: id, offset, data }));
                }
            }
            ExecEvent::Finished { id, outcome, exit_code, message } => {
                let Some(held) = self.held.get_mut(&id) else { return };
                METRICS.attempts_running.add(-1);
                let i = match outcome {
                    Outcome::Succeeded => 0,
                    Outcome::Failed => 1,
                    Outcome::TimedOut => 2,
                    Outcome::Cancelled => 3,
                };
                METRICS.attempts_finished[i].inc();
                held.cancel = None;
                if held.disowned {
                    self.held.remove(&id);
                    return;
                }
                info!(attempt = %id, ?outcome, exit_code, "attempt finished");
                let outcome = match outcome {
                    Outcome::Succeeded => pb::Outcome::Succeeded,
                    Outcome::Failed => pb::Outcome::Failed,
                    Outcome::TimedOut => pb::Outcome::TimedOut,
                    Outcome::Cancelled => pb::Outcome::Cancelled,
                };
                let result = pb::AttemptResult { attempt_id: id, outcome: outcome as i32, exit_code, message };
                held.result = Some(result.clone());
                send(Out::Result(result));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_are_taken() {
        let tls = ClientTlsConfig::new();
        let dir = Path::new("tls");
        for url in ["http://127.0.0.1:7700", "127.0.0.1:7700", "localhost:7700", "grpc://h:1"] {
            let err = endpoint(url, &tls, dir).unwrap_err();
            assert!(matches!(err, AgentError::Url { .. }), "{url}: {err:?}");
            assert!(err.to_string().contains("must start with https:// (Drover always uses TLS)"), "{err}");
        }
        endpoint("https://127.0.0.1:7700", &tls, dir).unwrap();
    }

    #[test]
    fn certificates_that_do_not_parse_are_a_certificate_error_naming_the_dir() {
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(broken));
        let err = endpoint("https://127.0.0.1:7700", &tls, Path::new("/etc/drover/tls")).unwrap_err();
        assert!(matches!(err, AgentError::Tls { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("the certificates in /etc/drover/tls are not usable: "), "{msg}");
        assert!(!msg.contains("transport error") && !msg.contains("URL"), "{msg}");

        let dir = std::env::temp_dir().join(format!("drover-agent-cert-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "garbage").unwrap();
        let err = read_cert(&dir, "ca.pem").unwrap_err();
        assert!(err.to_string().contains("ca.pem holds no PEM certificate"), "{err}");
        let err = read_cert(&dir, "agent-x.pem").unwrap_err();
        assert!(err.to_string().contains("point --tls-dir (or DROVER_TLS_DIR) at the directory made by"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_work_dir_is_refused_naming_the_holder_until_it_is_released() {
        let dir = std::env::temp_dir().join(format!("drover-agent-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = lock_work_dir(&dir).unwrap();
        // flock locks belong to open files, so a second open in this very
        // process conflicts like another agent would.
        let err = lock_work_dir(&dir).unwrap_err();
        assert!(matches!(err, AgentError::WorkDirInUse { pid: Some(p), .. } if p == std::process::id()), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("work dir {} is in use by another drover-agent (pid ", dir.display())), "{msg}");
        assert!(msg.contains("--work-dir"), "{msg}");
        drop(held);
        drop(lock_work_dir(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
