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
//! Deploy actions go to the deploy executor ([`crate::deploy::executor`]),
//! one queue per service; the protocol keeps the latest report and the
//! latest health of each service and sends them again after every Hello.
//! A request for a service's output is read beside the service's queue and
//! answered on the session that asked. Services outlive the
//! agent: stopping or draining it leaves them running, and the next agent
//! process adopts them. An action under way when the agent stops is cut
//! short without a final report; sent again, it finds what was done.
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
//! `protocol` the agent's side of the protocol without IO (what it holds,
//! what it answers), which the benchmark's simulated agents drive too;
//! `session` one session with a coordinator, driving `protocol` and the
//! executor; `heartbeats` what was sent and what was acknowledged; `setup`
//! what the agent checks and takes before it connects (certificates,
//! coordinator URLs, the work dir lock) and the errors that stop it;
//! `renew` the renewal of the agent's certificate at half its life (or by
//! a retiring CA's deadline), over the session's connection. The TLS
//! bundle is read again for every connection, so a renewed certificate, or
//! a trust bundle the coordinator sent, is the next connection's.
//! Loading certificates, endpoints, the choice of coordinator and backoff
//! are `drover_client`'s, shared with the CLI and the benchmark.

mod heartbeats;
pub mod protocol;
mod renew;
mod session;
mod setup;
mod transfer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use drover_client::chain::error_chain;
use drover_client::endpoint::{EndpointError, Transport, endpoint};
use drover_client::targets::{Backoff, Targets};
use drover_client::tls::{Bundle, ClientTls};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::deploy::executor::{self as deploy, Executor};
use crate::exec::{self, ExecEvent};
use crate::leftovers;
use crate::runas;
use crate::watch::{self as step_watch, StepWatch};
use protocol::Protocol;
use session::SessionEnd;
pub use setup::AgentError;
use setup::lock_work_dir;

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
    /// The most bytes this agent's own copy of caches may take
    /// (`WORK_DIR/.caches`); past it the least recently used go.
    pub cache_budget: u64,
    /// Where deployed services keep their releases and state
    /// ([`crate::deploy::executor`]); None: `WORK_DIR/.services`, which the
    /// cleanup of leftover workspaces never touches.
    pub services_dir: Option<PathBuf>,
    /// The address services' proxies listen on, each on its service's port.
    pub service_address: std::net::IpAddr,
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

pub struct Agent {
    config: Config,
    /// The current session's channel, for artifact transfers
    /// (`transfer`); None between sessions.
    channel: watch::Sender<Option<tonic::transport::Channel>>,
    /// Which coordinator to dial next: the leader a follower named, else
    /// the configured ones in turn, passing over one that stopped
    /// acknowledging heartbeats (followers keep naming a frozen leader until
    /// its election lease lapses, and following them there would only hang).
    targets: Targets,
    /// What the agent holds and answers, across sessions.
    proto: Protocol,
    /// When to renew the agent's certificate, across sessions.
    renewal: renew::Schedule,
    /// What kills each running attempt (cancel) and moves its fence
    /// deadline as leases are renewed; an attempt leaves once it finished.
    controls: HashMap<String, watch::Sender<exec::Control>>,
    exec_tx: mpsc::UnboundedSender<ExecEvent>,
    exec_rx: mpsc::UnboundedReceiver<ExecEvent>,
    /// Carries out deploy actions, one task per service, and reads
    /// services' output; its reports and services' health changes arrive
    /// on `deploy_rx`.
    deploy: Executor,
    deploy_rx: mpsc::UnboundedReceiver<deploy::Event>,
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

/// The agent's TLS directory: `ca.pem`, `agent-NAME.pem` and
/// `agent-NAME-key.pem`.
pub(crate) fn tls_bundle(dir: &std::path::Path, name: &str) -> Bundle {
    Bundle {
        dir: dir.to_path_buf(),
        cert: format!("agent-{name}"),
        shown: "agent-NAME".into(),
        fix: "point --tls-dir (or DROVER_AGENT_TLS_DIR) at the agent's bundle, DIR/agents/NAME, from \
              `drover certs issue-agent NAME --dir DIR`"
            .into(),
    }
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
        // Read here to refuse a missing or broken bundle at once; every
        // connection reads it again (see `connect_loop`).
        let tls = ClientTls::load(tls_bundle(&config.tls_dir, &config.name))?;
        let targets = Targets::spread(config.coordinators.clone(), &config.name).ok_or(AgentError::NoCoordinator)?;
        for url in targets.urls() {
            endpoint(url, &tls, &Transport::AGENT)?;
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
        let caches = exec::cache::LocalCaches::open(&config.work_dir.join(".caches"), config.cache_budget)
            .map_err(|source| AgentError::WorkDir { path: config.work_dir.join(".caches"), source })?;
        exec.caches = Some(Arc::new(caches));
        let (channel, channel_rx) = watch::channel(None);
        let transfer: Arc<dyn exec::artifacts::Transfer> = Arc::new(transfer::ChannelTransfer { channel: channel_rx });
        exec.transfer = Some(Arc::clone(&transfer));
        let services_dir = config.services_dir.clone().unwrap_or_else(|| config.work_dir.join(".services"));
        let services_err = |source| AgentError::ServicesDir { path: services_dir.clone(), source };
        std::fs::create_dir_all(&services_dir).map_err(services_err)?;
        let services_dir = std::fs::canonicalize(&services_dir).map_err(services_err)?;
        if let Some(user) = &exec.user {
            // The run-as user reaches its releases, and lists nothing.
            runas::set_private_mode(&services_dir, 0o711, euid)?;
            runas::check_reachable(&services_dir, user)?;
        }
        let launch = config
            .watcher
            .clone()
            .unwrap_or_else(|| step_watch::Launch { program: PathBuf::from("/proc/self/exe"), log_format: "text" });
        let mut deploy_config =
            deploy::Config::new(services_dir, config.service_address, exec.user.clone(), launch, transfer);
        // Deploy hooks' steps are named for this node and, like a job's
        // steps, die with the agent.
        deploy_config.node = config.name.clone();
        deploy_config.watch = Arc::clone(&exec.watch);
        let (deploy, deploy_rx) = Executor::new(deploy_config);
        let exec = Arc::new(exec);
        let (exec_tx, exec_rx) = mpsc::unbounded_channel();
        Ok(Agent {
            config,
            channel,
            targets,
            proto: Protocol::new(),
            renewal: renew::Schedule::default(),
            controls: HashMap::new(),
            exec_tx,
            exec_rx,
            deploy,
            deploy_rx,
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
        self.proto.ack_timeout().map_or(Duration::from_secs(5), |t| t.max(Duration::from_millis(500)) * 2)
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

    /// Whether the owner asked for a drain and nothing is left to finish
    /// or report.
    fn drained(&self, stop: &watch::Receiver<Stop>) -> bool {
        *stop.borrow() == Stop::Drain && self.proto.is_empty()
    }

    /// Runs, reconnecting whenever the session ends, until `stop` says
    /// [`Stop::Now`] (every running attempt is killed) or [`Stop::Drain`]
    /// and every attempt held has finished and its result is acknowledged,
    /// or until the coordinator refuses the agent for good
    /// ([`AgentError::Refused`]; every running attempt is killed).
    pub async fn run(mut self, stop: watch::Receiver<Stop>) -> Result<(), AgentError> {
        // The services deployed before: their releases adopted, their
        // ports open again.
        self.deploy.adopt();
        let result = self.connect_loop(stop).await;
        // The caller says why (once); here only what it costs.
        if result.is_err() && !self.proto.is_empty() {
            warn!(attempts = self.proto.len(), "stopping: killing every attempt held");
            self.kill_all().await;
        }
        // The watcher kills whatever is still listed (nothing, normally).
        self.exec.watch.exit();
        result
    }

    async fn connect_loop(&mut self, mut stop: watch::Receiver<Stop>) -> Result<(), AgentError> {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        // The connection a follower asked us back over, and its URL.
        let mut back: Option<(String, tonic::transport::Channel)> = None;
        'reconnect: loop {
            if self.drained(&stop) {
                info!("drained: every attempt finished and reported; exiting");
                return Ok(());
            }
            let redirected = self.targets.redirected();
            let url = self.targets.next(tokio::time::Instant::now());
            let for_session = stop.clone();
            let reuse = back.take().filter(|(at, _)| *at == url).map(|(_, channel)| channel);
            let session = async {
                let started = tokio::time::Instant::now();
                if let Some(channel) = reuse {
                    let end = self.session(channel.clone(), &url, for_session).await;
                    return (end, Some(channel), started.elapsed());
                }
                // The bundle is read afresh for every connection, so a
                // renewed certificate is the next connection's.
                let tls = ClientTls::load(tls_bundle(&self.config.tls_dir, &self.config.name));
                let (end, channel) =
                    match tls.map_err(EndpointError::from).and_then(|tls| endpoint(&url, &tls, &Transport::AGENT)) {
                        // A frozen coordinator's kernel still accepts the TCP
                        // connection; the TLS handshake is what hangs.
                        Ok(ep) => match tokio::time::timeout(self.setup_timeout(), ep.connect()).await {
                            Ok(Ok(channel)) => (self.session(channel.clone(), &url, for_session).await, Some(channel)),
                            Ok(Err(e)) => {
                                (SessionEnd::Failed(format!("cannot connect to {url}: {}", error_chain(&e))), None)
                            }
                            Err(_) => (
                                SessionEnd::Failed(format!(
                                    "connecting to {url} took over {:?}: is it frozen?",
                                    self.setup_timeout()
                                )),
                                None,
                            ),
                        },
                        Err(e) => (SessionEnd::Failed(e.to_string()), None),
                    };
                (end, channel, started.elapsed())
            };
            // The longest this wait may grow to.
            let mut ceiling = MAX_BACKOFF;
            tokio::select! {
                (end, channel, lasted) = session => {
                    if lasted > Duration::from_secs(10) {
                        backoff.reset();
                    }
                    match end {
                        // A follower that carried the session to the leader
                        // asks us back: over the connection we have, after
                        // the shortest wait (it waited for a leader first).
                        SessionEnd::Redirect(here) if here == url => {
                            info!(%url, "the follower carrying the session asks us back");
                            back = channel.map(|channel| (url.clone(), channel));
                            self.targets.redirect(here);
                            backoff.reset();
                        }
                        SessionEnd::Redirect(leader) if self.targets.is_suspect(&leader, tokio::time::Instant::now()) => {
                            debug!(%url, %leader, "redirected to a coordinator that seemed frozen; waiting for the election");
                            backoff.reset();
                        }
                        SessionEnd::Redirect(leader) => {
                            info!(%url, %leader, "redirected to the leader");
                            self.targets.redirect(leader);
                            continue;
                        }
                        SessionEnd::Frozen(e) => {
                            warn!(error = %e, "session ended");
                            let pass_over = self.proto.ack_timeout().unwrap_or(Duration::from_secs(1)) * 4;
                            self.targets.suspect(url.clone(), tokio::time::Instant::now() + pass_over);
                            backoff.reset();
                        }
                        // An election takes about one lease TTL: poll briskly.
                        SessionEnd::NoLeader => backoff.reset(),
                        // Followers name a leader that does not answer: it
                        // has most likely just died, and a new one will be
                        // elected within the election TTL. Poll briskly.
                        SessionEnd::Failed(e) if redirected => {
                            debug!(error = %e, "the leader we were sent to does not answer");
                            backoff.reset();
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
            let sleep = tokio::time::sleep(backoff.next(ceiling));
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
                    Some(event) = self.deploy_rx.recv() => { self.proto.on_deploy_event(event); }
                    Ok(()) = stop.changed() => {}
                }
            }
        }
        // Every way of stopping now ends here.
        warn!(attempts = self.proto.len(), "stopping now: killing every attempt held");
        self.kill_all().await;
        Ok(())
    }

    /// Kills every running attempt and waits until their processes are gone.
    /// Their results are not reported: the coordinator sees the leases
    /// expire and runs the jobs again where retries allow.
    async fn kill_all(&mut self) {
        for control in self.controls.values() {
            control.send_modify(|c| c.cancelled = true);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.controls.is_empty() {
            match tokio::time::timeout_at(deadline, self.exec_rx.recv()).await {
                Ok(Some(ExecEvent::Finished { id, .. })) => {
                    self.controls.remove(&id);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_certificate_says_where_the_agents_bundle_comes_from() {
        let dir = std::env::temp_dir().join(format!("drover-agent-no-tls-{}", std::process::id()));
        let msg = ClientTls::load(tls_bundle(&dir, "a1")).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("cannot read {}: ", dir.join("ca.pem").display())), "{msg}");
        assert!(
            msg.ends_with(
                "; point --tls-dir (or DROVER_AGENT_TLS_DIR) at the agent's bundle, DIR/agents/NAME, from \
                 `drover certs issue-agent NAME --dir DIR` (it holds ca.pem, agent-NAME.pem and agent-NAME-key.pem)"
            ),
            "{msg}"
        );
    }
}
