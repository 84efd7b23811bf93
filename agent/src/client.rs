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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
use crate::runas::{self, RunAsError};
use crate::watch::{self as step_watch, StepWatch};

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

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "cannot read {path}: {source}; point --tls-dir (or DROVER_AGENT_TLS_DIR) at the agent's bundle, \
         DIR/agents/NAME, from `drover certs issue-agent NAME --dir DIR` (it holds ca.pem, agent-NAME.pem \
         and agent-NAME-key.pem)"
    )]
    Cert { path: PathBuf, source: std::io::Error },
    /// The certificates were read but do not make a TLS configuration (a
    /// PEM that does not parse, a key that does not match).
    #[error(
        "the certificates in {} are not usable: {detail}; check ca.pem, agent-NAME.pem and \
         agent-NAME-key.pem there, or point --tls-dir (or DROVER_AGENT_TLS_DIR) at the agent's bundle, \
         DIR/agents/NAME, from `drover certs issue-agent NAME --dir DIR`",
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
    #[error(transparent)]
    RunAs(#[from] RunAsError),
    #[error("cannot start the step watcher ({} {}): {source}", .program.display(), step_watch::MODE_ARG)]
    Watcher { program: PathBuf, source: std::io::Error },
    /// The coordinator refused the agent for what it is: retrying cannot
    /// help.
    #[error(
        "{url} refused this agent ({code:?}): {reason}; retrying cannot change that, so the agent stops: check \
         --name, --labels and the certificate in --tls-dir"
    )]
    Refused { url: String, code: tonic::Code, reason: String },
}

/// The lock file that keeps a work dir to one agent process.
const LOCK_FILE: &str = ".drover-agent.lock";

/// Takes the work dir's lock for the life of the returned file, and writes
/// our pid into it so that a refused agent can name the holder. The lock
/// goes with the process, however it dies, which is what makes the
/// processes on the work dir that nobody holds leftovers (see
/// [`crate::leftovers`]). The file is opened close-on-exec, so steps do not
/// inherit, and keep, the lock; and it is private to the agent's user
/// (0600, even if it existed with another mode), so a step running as
/// another user (`--run-as`) cannot open it and take the lock.
fn lock_work_dir(work_dir: &Path) -> Result<std::fs::File, AgentError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = work_dir.join(LOCK_FILE);
    let lock_err = |source| AgentError::Lock { path: path.clone(), source };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(lock_err)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(lock_err)?;
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
    /// Kills the attempt (cancel), and moves its fence deadline as leases
    /// are renewed; `None` once it has finished.
    cancel: Option<watch::Sender<exec::Control>>,
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
    /// Refused for now (another agent with this name is connected): it may
    /// pass, so retry, less often.
    Busy(String),
    /// Refused for what the agent is: stop.
    Refused(AgentError),
    /// Draining, and nothing is left to finish or report: exit.
    Drained,
    /// Told to stop at once.
    Stop,
    /// The coordinator acknowledged no heartbeat in time: frozen or cut off.
    Frozen(String),
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

/// How a refusal of the session is taken, by its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Retrying cannot help: stop with the reason.
    Final,
    /// Another agent holds the name for now: retry, and say why.
    Busy,
    /// Anything else (the network, an election, a restart): retry.
    Other,
}

fn refusal(code: tonic::Code) -> Refusal {
    match code {
        tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => Refusal::Final,
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => Refusal::Busy,
        _ => Refusal::Other,
    }
}

/// How a session that the coordinator ended with `status` ends.
fn refused(url: &str, status: &tonic::Status, what: &str) -> SessionEnd {
    let reason = status.message().to_string();
    match refusal(status.code()) {
        Refusal::Final => {
            SessionEnd::Refused(AgentError::Refused { url: url.to_string(), code: status.code(), reason })
        }
        Refusal::Busy => SessionEnd::Busy(format!("{url} {what} for now: {reason}")),
        Refusal::Other => SessionEnd::Failed(format!("{url} {what}: {reason}")),
    }
}

/// Spreads reconnects of many agents over ±25% of the wait, so a restarted
/// coordinator is not hit by all of them at the same instant.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}

/// A session's heartbeats: when each was sent and what it listed, until
/// the coordinator has acknowledged it and renewed (or passed over) it.
#[derive(Debug, Default)]
struct Heartbeats {
    /// The last sequence number used; the first heartbeat is 1.
    seq: u64,
    /// (seq, sent at, the attempts it listed), oldest first.
    sent: VecDeque<(u64, tokio::time::Instant, Vec<String>)>,
    /// The highest sequence number acknowledged.
    acked: u64,
}

/// The most heartbeats remembered: with a coordinator that acknowledges
/// none of them the agent gives up on it long before this many.
const MAX_REMEMBERED_BEATS: usize = 256;

impl Heartbeats {
    /// Records a heartbeat about to be sent; returns its sequence number.
    fn sent(&mut self, running: Vec<String>, now: tokio::time::Instant) -> u64 {
        self.seq += 1;
        self.sent.push_back((self.seq, now, running));
        while self.sent.len() > MAX_REMEMBERED_BEATS {
            self.sent.pop_front();
        }
        self.seq
    }

    /// Takes an acknowledgement of `seq`, saying the leases listed by
    /// `renewed_seq` were renewed: returns when that one was sent and what
    /// it listed, if it is still remembered and no later one has been.
    fn acked(&mut self, seq: u64, renewed_seq: u64) -> Option<(tokio::time::Instant, Vec<String>)> {
        self.acked = self.acked.max(seq.min(self.seq));
        // Heartbeats before the renewed one can no longer renew anything.
        while self.sent.front().is_some_and(|(s, _, _)| *s < renewed_seq) {
            self.sent.pop_front();
        }
        match self.sent.front() {
            Some((s, at, ids)) if *s == renewed_seq => Some((*at, ids.clone())),
            _ => None,
        }
    }

    /// When the oldest heartbeat not yet acknowledged was sent.
    fn unacked_since(&self) -> Option<tokio::time::Instant> {
        self.sent.iter().find(|(s, _, _)| *s > self.acked).map(|(_, at, _)| *at)
    }
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
                instance_id: self.instance_id.clone(),
                unready: self.check_ready(),
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
        let opened = tokio::time::timeout(self.setup_timeout(), client.session(UnboundedReceiverStream::new(rx))).await;
        let Ok(opened) = opened else {
            return SessionEnd::Frozen(format!("{url} did not answer the session within {:?}", self.setup_timeout()));
        };
        let mut inbound = match opened {
            Ok(resp) => resp.into_inner(),
            Err(status) => {
                let meta = status.metadata();
                if let Some(leader) = meta.get(metadata::LEADER).and_then(|v| v.to_str().ok()) {
                    return SessionEnd::Redirect(leader.to_string());
                }
                if meta.contains_key(metadata::NOT_LEADER) {
                    return SessionEnd::NoLeader;
                }
                return refused(url, &status, "refused the session");
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
        self.beats = Heartbeats::default();
        loop {
            if self.drained(&stop) {
                return SessionEnd::Drained;
            }
            // A coordinator that stops acknowledging heartbeats is frozen
            // (SIGSTOP, a hung host) or cut off: move on to another, which
            // leads once the frozen one's election lease has lapsed.
            let frozen_at = self.ack_timeout.and_then(|t| self.beats.unacked_since().map(|since| since + t));
            let frozen = async move {
                match frozen_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = frozen => {
                    let waited = self.ack_timeout.unwrap_or_default();
                    return SessionEnd::Frozen(format!(
                        "{url} acknowledged no heartbeat for {waited:?}: it seems frozen or cut off; trying the coordinators again"
                    ));
                }
                msg = inbound.message() => match msg {
                    Ok(Some(pb::CoordinatorMessage { msg: Some(m) })) => {
                        if let Some(new_period) = self.on_message(m, &tx) {
                            heartbeat = tokio::time::interval(new_period);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return SessionEnd::Failed(format!("{url} closed the session")),
                    Err(s) => return refused(url, &s, "ended the session"),
                },
                Some(ev) = self.exec_rx.recv() => self.on_exec(ev, Some(&tx)),
                _ = heartbeat.tick() => {
                    let running: Vec<String> =
                        self.held.iter().filter(|(_, h)| !h.disowned).map(|(id, _)| id.clone()).collect();
                    let draining = *stop.borrow() == Stop::Drain;
                    let unready = self.check_ready();
                    let seq = self.beats.sent(running.clone(), tokio::time::Instant::now());
                    send(&tx, Out::Heartbeat(pb::Heartbeat { running, draining, seq, unready }));
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
                let ms = |v: u32| (v > 0).then(|| Duration::from_millis(u64::from(v)));
                self.ack_timeout = ms(w.ack_timeout_ms);
                self.fence = ms(w.fence_ms);
                return Some(self.heartbeat);
            }
            In::HeartbeatAck(a) => {
                // The leases of what that heartbeat listed were renewed: the
                // fence moves to its sending plus the fence period.
                if let (Some((sent_at, ids)), Some(fence)) = (self.beats.acked(a.seq, a.renewed_seq), self.fence) {
                    let fence_at = sent_at + fence;
                    for id in ids {
                        if let Some(Held { cancel: Some(control), disowned: false, .. }) = self.held.get(&id) {
                            control.send_if_modified(|c| {
                                let later = c.fence_at.is_some_and(|at| at < fence_at);
                                if later {
                                    c.fence_at = Some(fence_at);
                                }
                                later
                            });
                        }
                    }
                }
            }
            In::Assign(a) => {
                if a.epoch < self.epoch {
                    warn!(attempt = %a.attempt_id, epoch = a.epoch, "refused an assignment from an old epoch");
                    return None;
                }
                // Only jobs are known today. Another kind (a newer
                // coordinator's deploy action) is not run and not accepted:
                // the coordinator's lease then ends the attempt as never
                // started, and nothing here holds a slot for it.
                let Some(pb::assign::Work::Job(job)) = a.work else {
                    warn!(attempt = %a.attempt_id, "refused an assignment of a kind this agent does not run");
                    return None;
                };
                let id = a.attempt_id;
                if !self.held.contains_key(&id) {
                    info!(attempt = %id, "starting attempt");
                    // Until a heartbeat renews it, the lease runs from the
                    // assignment (the coordinator's from when it sent it).
                    let fence_at = self.fence.map(|f| tokio::time::Instant::now() + f);
                    let (cancel_tx, cancel_rx) = watch::channel(exec::Control { cancelled: false, fence_at });
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
                        run_id: job.run_id,
                        job: job.job,
                        attempt: job.attempt,
                        steps: job.steps.into_iter().map(|s| (s.name, s.run)).collect(),
                        env: job.env.into_iter().collect(),
                        timeout: (job.timeout_ms > 0).then(|| Duration::from_millis(job.timeout_ms)),
                        checkout: job.checkout.map(|c| (c.repo, c.commit)),
                        traceparent: (!a.traceparent.is_empty()).then_some(a.traceparent),
                    };
                    METRICS.attempts_running.add(1);
                    tokio::spawn(exec::execute(attempt, self.exec.clone(), self.exec_tx.clone(), cancel_rx));
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
                            cancel.send_modify(|c| c.cancelled = true);
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
                    Outcome::Fenced => 4,
                };
                METRICS.attempts_finished[i].inc();
                held.cancel = None;
                if outcome == Outcome::Fenced {
                    // Not reported: by now the coordinator takes it for lost,
                    // or will once the lease it could not renew runs out.
                    warn!(attempt = %id, %message, "killed an attempt whose lease could not be renewed");
                    self.held.remove(&id);
                    return;
                }
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
                    Outcome::Fenced => unreachable!("fenced attempts are dropped above"),
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
    fn acknowledgements_renew_what_the_renewed_heartbeat_listed_and_tell_a_frozen_coordinator() {
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut beats = Heartbeats::default();
        assert_eq!(beats.unacked_since(), None, "nothing sent, nothing to wait for");
        assert_eq!(beats.sent(ids(&["a"]), t0), 1);
        assert_eq!(beats.sent(ids(&["a", "b"]), t0 + ms(1000)), 2);
        assert_eq!(beats.unacked_since(), Some(t0), "the oldest unacknowledged");
        // Heartbeat 1 acknowledged and renewed.
        assert_eq!(beats.acked(1, 1), Some((t0, ids(&["a"]))));
        assert_eq!(beats.unacked_since(), Some(t0 + ms(1000)));
        // Heartbeat 2 acknowledged, but the coordinator renewed only up to 1
        // (2 said nothing new): the fence still counts from heartbeat 1.
        assert_eq!(beats.acked(2, 1), Some((t0, ids(&["a"]))));
        assert_eq!(beats.unacked_since(), None);
        assert_eq!(beats.sent(ids(&["a", "b"]), t0 + ms(2000)), 3);
        assert_eq!(beats.acked(3, 3), Some((t0 + ms(2000), ids(&["a", "b"]))));
        // An acknowledgement of something never sent renews nothing.
        assert_eq!(beats.acked(9, 9), None);
        assert_eq!(beats.acked, 3, "never beyond what was sent");
        // A coordinator that acknowledges nothing: memory stays bounded.
        for i in 0..1000 {
            beats.sent(ids(&["a"]), t0 + ms(3000 + i));
        }
        assert_eq!(beats.sent.len(), MAX_REMEMBERED_BEATS);
        assert_eq!(beats.unacked_since(), Some(t0 + ms(3000 + 1000 - MAX_REMEMBERED_BEATS as u64)));
    }

    #[test]
    fn refusals_for_what_the_agent_is_stop_it_and_others_are_retried() {
        use tonic::Code;
        let cases = [
            (Code::PermissionDenied, Refusal::Final),
            (Code::InvalidArgument, Refusal::Final),
            (Code::FailedPrecondition, Refusal::Busy),
            (Code::AlreadyExists, Refusal::Busy),
            (Code::Unavailable, Refusal::Other),
            (Code::Unauthenticated, Refusal::Other),
            (Code::Internal, Refusal::Other),
            (Code::Unknown, Refusal::Other),
        ];
        for (code, want) in cases {
            assert_eq!(refusal(code), want, "{code:?}");
        }
        let status =
            tonic::Status::permission_denied("this certificate belongs to agent \"a1\", which cannot act as \"a2\"");
        let SessionEnd::Refused(e) = refused("https://c:1", &status, "refused the session") else {
            panic!("PermissionDenied stops the agent");
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "https://c:1 refused this agent (PermissionDenied): this certificate belongs to agent \"a1\", \
                 which cannot act as \"a2\"; retrying cannot change that"
            ),
            "{msg}"
        );
        let status = tonic::Status::failed_precondition("agent \"a1\" is connected from another process");
        let SessionEnd::Busy(why) = refused("https://c:1", &status, "refused the session") else {
            panic!("FailedPrecondition is retried");
        };
        assert_eq!(why, "https://c:1 refused the session for now: agent \"a1\" is connected from another process");
    }

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
        let msg = err.to_string();
        assert!(
            msg.contains("point --tls-dir (or DROVER_AGENT_TLS_DIR) at the agent's bundle, DIR/agents/NAME"),
            "{msg}"
        );
        assert!(msg.contains("`drover certs issue-agent NAME --dir DIR`"), "{msg}");
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
