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
//!
//! A coordinator that refuses the agent for what it is (`PermissionDenied`:
//! a certificate for another name, labels it may not claim;
//! `InvalidArgument`: a Hello it cannot take) will refuse it again on every
//! retry, so the agent stops with the reason ([`AgentError::Refused`], exit
//! code 2). Any other refusal, such as another live agent under the same
//! name, may pass: the agent retries and says why at warn level.
//!
//! The module is cut along its seams: here the agent's configuration, its
//! startup ([`Agent::new`]) and the reconnect loop ([`Agent::run`]);
//! `session` one session with a coordinator (the Hello, what arrives,
//! what the executor reports); `heartbeats` what was sent and what was
//! acknowledged; `setup` what the agent checks and takes before it
//! connects (certificates, coordinator URLs, the work dir lock) and the
//! errors that stop it.

mod heartbeats;
mod session;
mod setup;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_telemetry::logging::error_chain;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tracing::{debug, info, warn};

use crate::exec::{self, ExecEvent};
use crate::leftovers;
use crate::logbuf::LogBuf;
use crate::runas;
use crate::watch::{self as step_watch, StepWatch};
use heartbeats::Heartbeats;
use session::SessionEnd;
pub use setup::AgentError;
use setup::{endpoint, lock_work_dir, read, read_cert};

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
    /// Run steps as this user (a name or a uid), not as the agent's own.
    pub run_as: Option<String>,
    /// How to start the step watcher ([`crate::watch`]); None runs
    /// without one (a library user without the agent binary).
    pub watcher: Option<step_watch::Launch>,
    /// Below this many free bytes in the work directory's file system the
    /// agent says it is not ready and takes no new work. 0: never.
    pub min_free_space: u64,
    /// How long the checkout of a run's commit may take.
    pub git_timeout: Duration,
}

struct Held {
    log: LogBuf,
    result: Option<pb::AttemptResult>,
    /// Kills the attempt (cancel), and moves its fence deadline as leases
    /// are renewed; `None` once it has finished.
    cancel: Option<watch::Sender<exec::Control>>,
    /// The coordinator disowned the attempt: drop it once it has stopped.
    disowned: bool,
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

/// The longest wait between two attempts while the coordinator says that
/// another agent holds our name: long enough not to fill the log, short
/// enough to take over soon after the other one is gone.
const BUSY_BACKOFF: Duration = Duration::from_secs(5);

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
    /// A coordinator that stopped acknowledging heartbeats, and until when
    /// it is passed over: followers keep naming a frozen leader until its
    /// election lease lapses, and following them there would only hang.
    suspect: Option<(String, tokio::time::Instant)>,
    held: HashMap<String, Held>,
    exec_tx: mpsc::UnboundedSender<ExecEvent>,
    exec_rx: mpsc::UnboundedReceiver<ExecEvent>,
    /// Highest coordinator epoch seen; older ones are refused.
    epoch: u64,
    heartbeat: Duration,
    /// From the coordinator's Welcome: how long to wait for a heartbeat's
    /// acknowledgement, and the fence (see `Welcome.fence_ms`); None when
    /// the coordinator does not ask for them.
    ack_timeout: Option<Duration>,
    fence: Option<Duration>,
    /// This session's heartbeats and their acknowledgements.
    beats: Heartbeats,
    /// Why the agent takes no new work for now, or empty.
    unready: String,
    /// Held, never read: the work dir is ours while the file is open.
    _lock: std::fs::File,
    /// What attempts share: the work dir, the run-as user, the watcher.
    exec: Arc<exec::Context>,
    /// Random, made once per process and sent with every Hello: the
    /// coordinator lets this process replace its own old session at once,
    /// and refuses another process under the same name while ours is live.
    instance_id: String,
}

/// 128 random bits as hex, from the kernel's generator.
fn new_instance_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        // Unique enough for telling two processes apart when /dev/urandom
        // is missing: the pid and the time.
        tracing::warn!(error = %e, "cannot read /dev/urandom; the instance id uses the pid and the clock");
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        return format!("{:x}-{nanos:x}", std::process::id());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Agent {
    /// Checks the configuration, takes the work dir (canonical from here
    /// on, so steps see an absolute `DROVER_WORKSPACE`), cleans up what an
    /// earlier agent on it left behind, and starts the step watcher.
    ///
    /// With a run-as user it also makes the TLS directory 0700 and the work
    /// dir 0711, both the agent's, and checks that the user can reach the
    /// work dir; it refuses to start when any of that fails (see
    /// [`crate::runas`]). Without one it still tries to make the TLS
    /// directory private, and only warns when it cannot.
    pub fn new(mut config: Config) -> Result<Agent, AgentError> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let user = match &config.run_as {
            Some(spec) => {
                let user = runas::lookup(spec)?;
                runas::check_allowed(spec, &user, euid)?;
                Some(user)
            }
            None => None,
        };
        match runas::set_private_mode(&config.tls_dir, 0o700, euid) {
            Ok(()) => {}
            Err(e) if user.is_some() => return Err(e.into()),
            Err(e) => warn!(error = %e, "the TLS directory is not private to the agent"),
        }
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
        if let Some(user) = &user {
            runas::set_private_mode(&config.work_dir, 0o711, euid)?;
            runas::check_reachable(&config.work_dir, user)?;
            info!(user = %user.name, uid = user.uid, gid = user.gid, "steps run as another user");
        }
        leftovers::clean_up(&config.work_dir);
        let step_watch = match &config.watcher {
            Some(launch) => StepWatch::start(launch.clone())
                .map_err(|source| AgentError::Watcher { program: launch.program.clone(), source })?,
            None => StepWatch::disabled(),
        };
        let mut exec = exec::Context::new(config.name.clone(), config.work_dir.clone(), user, Arc::new(step_watch));
        exec.git_timeout = config.git_timeout;
        let exec = Arc::new(exec);
        let (exec_tx, exec_rx) = mpsc::unbounded_channel();
        Ok(Agent {
            config,
            tls,
            next: 0,
            leader_hint: None,
            suspect: None,
            held: HashMap::new(),
            exec_tx,
            exec_rx,
            epoch: 0,
            heartbeat: Duration::from_secs(2),
            ack_timeout: None,
            fence: None,
            beats: Heartbeats::default(),
            unready: String::new(),
            _lock: lock,
            exec,
            instance_id: new_instance_id(),
        })
    }

    /// How long connecting and opening a session may take: the heartbeat
    /// acknowledgement timeout once a coordinator told us one (a live
    /// coordinator answers well within it), 5 s before.
    fn setup_timeout(&self) -> Duration {
        self.ack_timeout.map_or(Duration::from_secs(5), |t| t.max(Duration::from_millis(500)) * 2)
    }

    /// Whether `url` stopped acknowledging heartbeats a moment ago.
    fn is_suspect(&self, url: &str) -> bool {
        self.suspect.as_ref().is_some_and(|(s, until)| s == url && *until > tokio::time::Instant::now())
    }

    /// Whether the agent can take new work: its work directory has at
    /// least `--min-free-space` free. Returns why not, or an empty string;
    /// logs and publishes (for `/readyz`) each change.
    fn check_ready(&mut self) -> String {
        let min = self.config.min_free_space;
        let free = if min == 0 { None } else { exec::free_space(&self.config.work_dir) };
        let unready = match free {
            Some(free) if free < min => format!(
                "its work directory {} has {} free, under --min-free-space {}",
                self.config.work_dir.display(),
                crate::size::show(free),
                crate::size::show(min)
            ),
            _ => String::new(),
        };
        if unready != self.unready {
            if unready.is_empty() {
                info!("ready again: taking new work");
            } else {
                warn!(reason = %unready, "not ready: taking no new work");
            }
            crate::metrics::set_unready(&unready);
            self.unready = unready;
        }
        self.unready.clone()
    }

    /// The URL to dial next: the leader we were told about, else the next
    /// of the configured coordinators in turn.
    fn target(&mut self) -> String {
        if let Some(url) = self.leader_hint.take() {
            return url;
        }
        let now = tokio::time::Instant::now();
        let suspect = self.suspect.as_ref().filter(|(_, until)| *until > now).map(|(url, _)| url.clone());
        for _ in 1..self.config.coordinators.len() {
            if Some(&self.config.coordinators[self.next % self.config.coordinators.len()]) != suspect.as_ref() {
                break;
            }
            self.next += 1;
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
    /// and every attempt held has finished and its result is acknowledged,
    /// or until the coordinator refuses the agent for good
    /// ([`AgentError::Refused`]; every running attempt is killed).
    pub async fn run(mut self, stop: watch::Receiver<Stop>) -> Result<(), AgentError> {
        let result = self.connect_loop(stop).await;
        // The caller says why (once); here only what it costs.
        if result.is_err() && !self.held.is_empty() {
            warn!(attempts = self.held.len(), "stopping: killing every attempt held");
            self.kill_all().await;
        }
        // The watcher kills whatever is still listed (nothing, normally).
        self.exec.watch.exit();
        result
    }

    async fn connect_loop(&mut self, mut stop: watch::Receiver<Stop>) -> Result<(), AgentError> {
        let mut backoff = Duration::from_millis(100);
        'reconnect: loop {
            if self.drained(&stop) {
                info!("drained: every attempt finished and reported; exiting");
                return Ok(());
            }
            let redirected = self.leader_hint.is_some();
            let url = self.target();
            let for_session = stop.clone();
            let session = async {
                let started = tokio::time::Instant::now();
                let end = match endpoint(&url, &self.tls, &self.config.tls_dir) {
                    // A frozen coordinator's kernel still accepts the TCP
                    // connection; the TLS handshake is what hangs.
                    Ok(ep) => match tokio::time::timeout(self.setup_timeout(), ep.connect()).await {
                        Ok(Ok(channel)) => self.session(channel, &url, for_session).await,
                        Ok(Err(e)) => SessionEnd::Failed(format!("cannot connect to {url}: {}", error_chain(&e))),
                        Err(_) => SessionEnd::Failed(format!(
                            "connecting to {url} took over {:?}: is it frozen?",
                            self.setup_timeout()
                        )),
                    },
                    Err(e) => SessionEnd::Failed(e.to_string()),
                };
                (end, started.elapsed())
            };
            // The longest this wait may grow to.
            let mut ceiling = MAX_BACKOFF;
            tokio::select! {
                (end, lasted) = session => {
                    if lasted > Duration::from_secs(10) {
                        backoff = Duration::from_millis(100);
                    }
                    match end {
                        SessionEnd::Redirect(leader) if self.is_suspect(&leader) => {
                            debug!(%url, %leader, "redirected to a coordinator that seemed frozen; waiting for the election");
                            backoff = Duration::from_millis(100);
                        }
                        SessionEnd::Redirect(leader) => {
                            info!(%url, %leader, "redirected to the leader");
                            self.leader_hint = Some(leader);
                            continue;
                        }
                        SessionEnd::Frozen(e) => {
                            warn!(error = %e, "session ended");
                            let pass_over = self.ack_timeout.unwrap_or(Duration::from_secs(1)) * 4;
                            self.suspect = Some((url.clone(), tokio::time::Instant::now() + pass_over));
                            backoff = Duration::from_millis(100);
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
                        SessionEnd::Busy(e) => {
                            warn!(error = %e, "the coordinator refused the session; retrying");
                            ceiling = BUSY_BACKOFF;
                        }
                        SessionEnd::Refused(e) => return Err(e),
                        // The top of the loop says so and returns.
                        SessionEnd::Drained => continue,
                        SessionEnd::Stop => break 'reconnect,
                    }
                }
                _ = stop.wait_for(|s| *s == Stop::Now) => break 'reconnect,
            }
            // Keep taking output while disconnected, so nothing is lost.
            backoff = backoff.min(ceiling);
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
            backoff = (backoff * 2).min(ceiling);
        }
        // Every way of stopping now ends here.
        warn!(attempts = self.held.len(), "stopping now: killing every attempt held");
        self.kill_all().await;
        Ok(())
    }

    /// Kills every running attempt and waits until their processes are gone.
    /// Their results are not reported: the coordinator sees the leases
    /// expire and runs the jobs again where retries allow.
    async fn kill_all(&mut self) {
        for held in self.held.values() {
            if let Some(c) = &held.cancel {
                c.send_modify(|c| c.cancelled = true);
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
}
