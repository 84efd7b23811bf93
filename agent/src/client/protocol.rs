//! The agent's side of the session protocol, without IO: what it holds and
//! what it answers. Both the real agent's session driver (`session.rs`) and
//! the benchmark's simulated agents (`drover-bench`) drive this one core,
//! so the load generator speaks exactly the agent's protocol.
//!
//! [`Protocol`] holds each attempt from its assignment until the
//! coordinator acknowledges its result, with its unacknowledged log chunks
//! ([`LogBuf`]) and its result, across any number of sessions; the highest
//! coordinator epoch seen (an `Assign` or `Cancel` from an older one is
//! refused); the Welcome's heartbeat period, acknowledgement timeout,
//! fence and when to renew the agent's certificate (which a `Trust` may
//! bring forward); the session's heartbeats ([`Heartbeats`]); and the
//! latest deploy report and the latest health ([`pb::ServiceHealth`]) of
//! each service, sent again after every Hello (a report made while
//! disconnected still arrives; the coordinator takes one twice without
//! harm). A service rolled back to nothing (`ROLLED_BACK` with no version)
//! has no health any more: it is forgotten, and not sent again.
//!
//! A `ServiceLogsRequest` is checked here (a service name as releases take
//! it; a bad one is answered at once with the error) and handed to the
//! deploy executor, whose answer [`service_logs`] puts on the wire; the
//! driver sends it on the session that asked, or drops it when that
//! session has ended (the coordinator then times out; another session's
//! coordinator never gets an answer it did not ask for).
//!
//! The driver calls, each synchronously and with `now` an argument:
//! - [`Protocol::hello`] when a session opens: the Hello (listing the
//!   attempts held) and everything to send again, logs before results;
//! - [`Protocol::on_message`] for each coordinator message: the
//!   [`Action`]s to carry out (send, start an attempt, kill one, move its
//!   fence, change the heartbeat period, write the trust bundle a Welcome
//!   or a `Trust` sent, renew the certificate by a retiring CA's deadline);
//! - [`Protocol::on_exec`] for what the executor reports: the message to
//!   send when connected (the state is kept either way);
//! - [`Protocol::on_deploy_event`] for what the deploy executor reports (a
//!   deploy report, a service's health, a hook's output): the same, except
//!   that a hook's output is not kept: made while disconnected, it is
//!   lost (its hook's final report is kept and sent again like any);
//! - [`Protocol::heartbeat`] when a heartbeat is due, and
//!   [`Protocol::frozen_at`] to know when a coordinator that acknowledges
//!   nothing is to be taken for frozen.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use drover_proto::v1 as pb;
use pb::agent_message::Msg as Out;
use pb::coordinator_message::Msg as In;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::heartbeats::Heartbeats;
use crate::deploy::executor;
use crate::exec::{self, ExecEvent, Outcome};
use crate::logbuf::LogBuf;

/// What the driver is to do after a coordinator message.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this message on the session.
    Send(Out),
    /// Start executing this attempt, killing it at `fence_at` unless a
    /// [`Action::Fence`] moves the deadline first.
    Start { attempt: Box<exec::Attempt>, fence_at: Option<Instant> },
    /// Kill this running attempt; the executor reports it finished.
    Kill(String),
    /// A renewed lease: move this running attempt's fence deadline to `at`.
    Fence { id: String, at: Instant },
    /// The coordinator set the heartbeat period (its Welcome): heartbeat
    /// now, then at this period.
    HeartbeatEvery(Duration),
    /// The agent went from holding nothing to holding an attempt, or back:
    /// heartbeat at this period from now on, the next one a period from
    /// now (see [`Protocol::heartbeat_period`]).
    HeartbeatPace(Duration),
    /// Hand this to the deploy executor: a deploy action (behind the
    /// earlier ones of its service), or a request for a service's output,
    /// whose answer ([`service_logs`]) goes out on this session.
    Deploy(executor::Request),
    /// Trust these CAs from now on: this PEM bundle (every trusted CA's
    /// certificate, the signing one first, as a Welcome or a `Trust` sent
    /// it) becomes the agent's `ca.pem`, which the next connection reads.
    Trust(String),
    /// The certificate's CA is retiring (a `Trust`): renew it by then, in
    /// ms since the Unix epoch, unless it is due sooner.
    RenewBy(i64),
}

/// An attempt from its assignment until its result is acknowledged.
#[derive(Debug)]
struct Held {
    log: LogBuf,
    /// Sent, and sent again after a reconnect, until acknowledged.
    result: Option<pb::AttemptResult>,
    /// Executing: it can be killed, and its fence moves with renewals.
    running: bool,
    /// Its fence deadline while running, when the coordinator asks for one.
    fence_at: Option<Instant>,
    /// The coordinator disowned it: drop it once it has stopped.
    disowned: bool,
}

/// How many times rarer heartbeats are while the agent holds no attempt,
/// before a Welcome or when it does not say (`idle_heartbeat_ms` 0, an
/// older coordinator); see [`Protocol::heartbeat_period`].
pub const IDLE_HEARTBEATS: u32 = 4;

/// The agent's protocol state; see the module header.
#[derive(Debug)]
pub struct Protocol {
    held: HashMap<String, Held>,
    /// Highest coordinator epoch seen; older ones are refused.
    epoch: u64,
    heartbeat: Duration,
    /// From the Welcome: how often to heartbeat while holding nothing.
    idle_heartbeat: Duration,
    /// From the coordinator's Welcome: how long to wait for a heartbeat's
    /// acknowledgement, and the fence (see `Welcome.fence_ms`); None when
    /// the coordinator does not ask for them.
    ack_timeout: Option<Duration>,
    fence: Option<Duration>,
    /// From the Welcome: when to renew the agent's certificate, in ms
    /// since the Unix epoch (wall clock, as the coordinator counts it);
    /// None for a certificate that is never renewed. A `Trust` only ever
    /// brings it forward.
    renew_cert_at_ms: Option<i64>,
    /// This session's heartbeats and their acknowledgements.
    beats: Heartbeats,
    /// This session's Welcome says a follower carries it to the leader.
    carried: bool,
    /// The heartbeat period last said (a Welcome's, or a pace).
    paced: Duration,
    /// The latest deploy report of each service, by service.
    reports: BTreeMap<String, pb::DeployReport>,
    /// The latest health of each service with a live release, by service.
    health: BTreeMap<String, pb::ServiceHealth>,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol::new()
    }
}

impl Protocol {
    /// Holding nothing, before any Welcome: heartbeats every 2 s.
    pub fn new() -> Protocol {
        Protocol {
            held: HashMap::new(),
            epoch: 0,
            heartbeat: Duration::from_secs(2),
            idle_heartbeat: Duration::from_secs(2) * IDLE_HEARTBEATS,
            ack_timeout: None,
            fence: None,
            renew_cert_at_ms: None,
            beats: Heartbeats::default(),
            carried: false,
            paced: Duration::from_secs(2) * IDLE_HEARTBEATS,
            reports: BTreeMap::new(),
            health: BTreeMap::new(),
        }
    }

    /// How many attempts are held (running, or waiting for their result to
    /// be acknowledged).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether `id` is held.
    pub fn holds(&self, id: &str) -> bool {
        self.held.contains_key(id)
    }

    /// How often to heartbeat now: the period the last Welcome set (2 s
    /// before one) while an attempt is held, whose lease the heartbeats
    /// renew, and its idle period (the coordinator's lease TTL; else
    /// [`IDLE_HEARTBEATS`] times rarer) while none is, which is what an
    /// idle fleet costs its coordinator. A frozen coordinator is noticed
    /// then when an idle heartbeat goes unacknowledged (a killed one at
    /// once: its connection closes); the session checks readiness at the
    /// full rate and heartbeats at once when it changes.
    pub fn heartbeat_period(&self) -> Duration {
        if self.held.is_empty() { self.idle_heartbeat } else { self.heartbeat }
    }

    /// The heartbeat period the last Welcome set, idle or not: how often
    /// the session checks readiness.
    pub fn busy_heartbeat_period(&self) -> Duration {
        self.heartbeat
    }

    /// How long a heartbeat may go unacknowledged, when the coordinator
    /// said.
    /// Whether this session's Welcome said a follower carries it.
    pub fn carried(&self) -> bool {
        self.carried
    }

    pub fn ack_timeout(&self) -> Option<Duration> {
        self.ack_timeout
    }

    /// When the last Welcome said to renew the agent's certificate, in ms
    /// since the Unix epoch, or a `Trust` since if it said sooner; None:
    /// never (a hand-issued certificate), or no Welcome yet. The driver
    /// renews (see `client::renew`); the session stream plays no part in
    /// it.
    pub fn renew_cert_at_ms(&self) -> Option<i64> {
        self.renew_cert_at_ms
    }

    /// When the coordinator is to be taken for frozen: the oldest
    /// unacknowledged heartbeat's sending plus the acknowledgement timeout.
    pub fn frozen_at(&self) -> Option<Instant> {
        self.ack_timeout.and_then(|t| self.beats.unacked_since().map(|since| since + t))
    }

    /// The attempts the coordinator still counts as ours.
    fn owned(&self) -> Vec<String> {
        self.held.iter().filter(|(_, h)| !h.disowned).map(|(id, _)| id.clone()).collect()
    }

    /// A session opens: `hello` with the attempts held filled in, then
    /// everything not acknowledged, each attempt's log before its result.
    /// The session's heartbeats start afresh.
    pub fn hello(&mut self, mut hello: pb::Hello) -> Vec<Out> {
        self.beats = Heartbeats::default();
        self.carried = false;
        hello.running = self.owned();
        let mut out = vec![Out::Hello(hello)];
        for (id, held) in &self.held {
            for (offset, data) in held.log.unacked() {
                out.push(Out::Log(pb::LogChunk { attempt_id: id.clone(), offset: *offset, data: data.clone() }));
            }
            if let Some(result) = &held.result {
                out.push(Out::Result(result.clone()));
            }
        }
        out.extend(self.reports.values().cloned().map(Out::DeployReport));
        out.extend(self.health.values().cloned().map(Out::ServiceHealth));
        out
    }

    /// A heartbeat is due: what it says.
    pub fn heartbeat(&mut self, draining: bool, unready: String, now: Instant) -> Out {
        let running = self.owned();
        let seq = self.beats.sent(running.clone(), now);
        Out::Heartbeat(pb::Heartbeat { running, draining, seq, unready })
    }

    /// Takes one message from the coordinator. When the agent has gone
    /// from holding nothing to holding an attempt or back since the pace
    /// was last said, the actions end with the new
    /// [`Protocol::heartbeat_period`].
    pub fn on_message(&mut self, msg: In, now: Instant) -> Vec<Action> {
        let welcome = matches!(msg, In::Welcome(_));
        let mut actions = self.take_message(msg, now);
        // Against the pace last said rather than the state before this
        // message: an attempt dropped by `on_exec` (fenced, disowned),
        // which has no actions to say it with, is caught up here.
        let period = self.heartbeat_period();
        if !welcome && period != self.paced {
            actions.push(Action::HeartbeatPace(period));
        }
        self.paced = period;
        actions
    }

    fn take_message(&mut self, msg: In, now: Instant) -> Vec<Action> {
        match msg {
            In::Welcome(w) => {
                self.epoch = self.epoch.max(w.epoch);
                // A floor, so that a zero cannot make the heartbeat a busy
                // loop.
                self.heartbeat = Duration::from_millis(u64::from(w.heartbeat_ms).max(100));
                let ms = |v: u32| (v > 0).then(|| Duration::from_millis(u64::from(v)));
                // Never more often than when busy.
                self.idle_heartbeat =
                    ms(w.idle_heartbeat_ms).map_or(self.heartbeat * IDLE_HEARTBEATS, |idle| idle.max(self.heartbeat));
                self.ack_timeout = ms(w.ack_timeout_ms);
                self.fence = ms(w.fence_ms);
                self.renew_cert_at_ms = (w.renew_cert_at_ms > 0).then_some(w.renew_cert_at_ms);
                self.carried = !w.carried_by.is_empty();
                let mut actions = vec![Action::HeartbeatEvery(self.heartbeat_period())];
                actions.extend(trust(w.ca_pem));
                actions
            }
            In::IdlePeriod(p) => {
                // Never more often than when busy; 0 says nothing.
                if p.idle_heartbeat_ms > 0 {
                    self.idle_heartbeat = Duration::from_millis(u64::from(p.idle_heartbeat_ms)).max(self.heartbeat);
                }
                Vec::new()
            }
            In::Trust(t) => {
                let mut actions: Vec<Action> = trust(t.ca_pem).into_iter().collect();
                if t.renew_cert_at_ms > 0 {
                    let by = t.renew_cert_at_ms;
                    // Never renewed so far (None) is later than any time.
                    self.renew_cert_at_ms = Some(self.renew_cert_at_ms.map_or(by, |at| at.min(by)));
                    actions.push(Action::RenewBy(by));
                }
                actions
            }
            In::HeartbeatAck(a) => {
                // The leases of what that heartbeat listed were renewed: the
                // fence moves to its sending plus the fence period.
                let (Some((sent_at, ids)), Some(fence)) = (self.beats.acked(a.seq, a.renewed_seq), self.fence) else {
                    return Vec::new();
                };
                let at = sent_at + fence;
                let mut actions = Vec::new();
                for id in ids {
                    if let Some(held) = self.held.get_mut(&id)
                        && held.running
                        && !held.disowned
                        && held.fence_at.is_some_and(|old| old < at)
                    {
                        held.fence_at = Some(at);
                        actions.push(Action::Fence { id, at });
                    }
                }
                actions
            }
            In::Assign(a) => self.assign(a, now),
            In::Deploy(d) => self.deploy(d),
            In::ServiceLogs(r) => match deploy::logs_request(r) {
                Ok(request) => vec![Action::Deploy(executor::Request::Logs(request))],
                Err(chunk) => vec![Action::Send(service_logs(chunk))],
            },
            In::Cancel(c) => {
                if c.epoch < self.epoch {
                    warn!(attempt = %c.attempt_id, "refused a cancel from an old epoch");
                    return Vec::new();
                }
                let Some(held) = self.held.get_mut(&c.attempt_id) else { return Vec::new() };
                info!(attempt = %c.attempt_id, reason = %c.reason, "killing attempt");
                let mut actions = Vec::new();
                if held.running {
                    actions.push(Action::Kill(c.attempt_id.clone()));
                } else if c.disown {
                    // Already finished: nothing to kill, nothing to report.
                    self.held.remove(&c.attempt_id);
                    return actions;
                }
                // A cancelled run still wants the result; a disowned
                // attempt's result would only be refused.
                held.disowned |= c.disown;
                actions
            }
            In::LogAck(a) => {
                if let Some(held) = self.held.get_mut(&a.attempt_id) {
                    held.log.ack(a.offset);
                }
                Vec::new()
            }
            In::ResultAck(a) => {
                if !a.accepted {
                    debug!(attempt = %a.attempt_id, "the coordinator refused our result (stale attempt)");
                }
                self.held.remove(&a.attempt_id);
                Vec::new()
            }
        }
    }

    fn assign(&mut self, a: pb::Assign, now: Instant) -> Vec<Action> {
        if a.epoch < self.epoch {
            warn!(attempt = %a.attempt_id, epoch = a.epoch, "refused an assignment from an old epoch");
            return Vec::new();
        }
        // Only jobs are known today. Another kind (a newer coordinator's
        // deploy action) is not run and not accepted: the coordinator's
        // lease then ends the attempt as never started, and nothing here
        // holds a slot for it.
        let Some(pb::assign::Work::Job(job)) = a.work else {
            warn!(attempt = %a.attempt_id, "refused an assignment of a kind this agent does not run");
            return Vec::new();
        };
        let id = a.attempt_id;
        let mut actions = Vec::with_capacity(2);
        // An assignment sent again after a reconnect is already held: it is
        // accepted again, and not run twice.
        if !self.held.contains_key(&id) {
            info!(attempt = %id, "starting attempt");
            // Until a heartbeat renews it, the lease runs from the
            // assignment (the coordinator's from when it sent it).
            let fence_at = self.fence.map(|f| now + f);
            let held =
                Held { log: LogBuf::new(a.log_cap.max(1)), result: None, running: true, fence_at, disowned: false };
            self.held.insert(id.clone(), held);
            let attempt = exec::Attempt {
                id: id.clone(),
                run_id: job.run_id,
                job: job.job,
                attempt: job.attempt,
                step_conditions: job.steps.iter().map(|s| s.condition.clone()).collect(),
                need_results: job.need_results.into_iter().collect(),
                branch: (!job.branch.is_empty()).then_some(job.branch),
                tag: (!job.tag.is_empty()).then_some(job.tag),
                matrix: job.matrix.into_iter().collect(),
                event: (!job.event.is_empty()).then_some(job.event),
                steps: job.steps.into_iter().map(|s| (s.name, s.run)).collect(),
                env: job.env.into_iter().collect(),
                timeout: (job.timeout_ms > 0).then(|| Duration::from_millis(job.timeout_ms)),
                checkout: job.checkout.map(|c| (c.repo, c.commit)),
                traceparent: (!a.traceparent.is_empty()).then_some(a.traceparent),
                artifacts: job.artifacts.map(|s| exec::artifacts::Spec {
                    paths: s.paths,
                    ignore_missing: s.ignore_missing,
                    max_bytes: s.max_bytes,
                    max_file_bytes: s.max_file_bytes,
                }),
                inputs: job
                    .inputs
                    .into_iter()
                    .filter_map(|i| {
                        let a = i.artifact?;
                        Some(exec::artifacts::Input { job: i.job, sha256: a.sha256, size: a.size })
                    })
                    .collect(),
                secrets: exec::Secrets(job.secrets.into_iter().collect()),
                secrets_error: (!job.secrets_error.is_empty()).then_some(job.secrets_error),
                job_token: exec::JobToken::new(job.job_token),
                cache: job.cache.map(|c| exec::cache::CacheWork {
                    key: c
                        .key
                        .into_iter()
                        .filter_map(|p| match p.part? {
                            pb::cache_key_part::Part::Text(t) => Some(exec::cache::KeyPart::Text(t)),
                            pb::cache_key_part::Part::HashFiles(h) => Some(exec::cache::KeyPart::HashFiles(h.globs)),
                        })
                        .collect(),
                    paths: c.paths,
                    restore_keys: c.restore_keys,
                }),
            };
            actions.push(Action::Start { attempt: Box::new(attempt), fence_at });
        }
        actions.push(Action::Send(Out::Accepted(pb::Accepted { attempt_id: id })));
        actions
    }

    fn deploy(&mut self, d: pb::DeployAction) -> Vec<Action> {
        if d.epoch < self.epoch {
            warn!(action = %d.action_id, service = %d.service, epoch = d.epoch, "refused a deploy action from an old epoch");
            return Vec::new();
        }
        let (action_id, service) = (d.action_id.clone(), d.service.clone());
        // A hook is answered as a hook, whatever was wrong with it.
        let failed_state = match d.kind {
            Some(pb::deploy_action::Kind::Hook(_)) => executor::ReportState::HookFailed,
            _ => executor::ReportState::Failed,
        };
        match deploy::order(d) {
            Ok(order) => vec![Action::Deploy(executor::Request::Order(Box::new(order)))],
            Err(message) => {
                warn!(action = %action_id, %service, %message, "refused a deploy action");
                let failed = executor::Report {
                    action_id,
                    service,
                    state: failed_state,
                    message,
                    version: String::new(),
                    exit_code: None,
                };
                vec![Action::Send(self.on_deploy(failed))]
            }
        }
    }

    /// Takes what the deploy executor reports; returns it to send when
    /// connected.
    pub fn on_deploy_event(&mut self, event: executor::Event) -> Out {
        match event {
            executor::Event::Report(report) => self.on_deploy(report),
            executor::Event::Health(health) => self.on_health(health),
            executor::Event::HookOutput { action_id, data } => Out::HookOutput(deploy::hook_output(action_id, data)),
        }
    }

    /// Keeps a deploy report as its service's latest; returns it to send
    /// when connected. A service rolled back to nothing loses its health.
    pub fn on_deploy(&mut self, report: executor::Report) -> Out {
        let report = deploy::report(report);
        if report.state == pb::DeployState::RolledBack as i32 && report.version.is_empty() {
            self.health.remove(&report.service);
        }
        self.reports.insert(report.service.clone(), report.clone());
        Out::DeployReport(report)
    }

    /// Keeps a service's health as its latest; returns it to send when
    /// connected.
    pub fn on_health(&mut self, health: executor::ServiceHealth) -> Out {
        let health = deploy::health(health);
        self.health.insert(health.service.clone(), health.clone());
        Out::ServiceHealth(health)
    }

    /// Takes an executor event into the held state; returns what to send
    /// when connected.
    pub fn on_exec(&mut self, ev: ExecEvent) -> Option<Out> {
        match ev {
            ExecEvent::Output { id, data } => {
                let held = self.held.get_mut(&id)?;
                if held.disowned {
                    return None;
                }
                let (offset, data) = held.log.append(&data)?;
                Some(Out::Log(pb::LogChunk { attempt_id: id, offset, data }))
            }
            ExecEvent::Finished { id, outcome, exit_code, message, artifact, cache } => {
                let held = self.held.get_mut(&id)?;
                held.running = false;
                held.fence_at = None;
                let outcome = match outcome {
                    Outcome::Succeeded => pb::Outcome::Succeeded,
                    Outcome::Failed => pb::Outcome::Failed,
                    Outcome::TimedOut => pb::Outcome::TimedOut,
                    Outcome::Cancelled => pb::Outcome::Cancelled,
                    Outcome::Fenced => {
                        // Not reported: by now the coordinator takes it for
                        // lost, or will once the lease it could not renew
                        // runs out.
                        warn!(attempt = %id, %message, "killed an attempt whose lease could not be renewed");
                        self.held.remove(&id);
                        return None;
                    }
                };
                if held.disowned {
                    self.held.remove(&id);
                    return None;
                }
                info!(attempt = %id, ?outcome, exit_code, "attempt finished");
                let artifact = artifact.map(|a| pb::Artifact { sha256: a.sha256, size: a.size, files: a.files });
                let cache = cache.map(|c| pb::CacheReport {
                    key: c.key,
                    restored: c.restored.unwrap_or_default(),
                    saved: c.saved,
                    scope_id: c.scope_id,
                });
                let result =
                    pb::AttemptResult { attempt_id: id, outcome: outcome as i32, exit_code, message, artifact, cache };
                held.result = Some(result.clone());
                Some(Out::Result(result))
            }
        }
    }
}

/// What to do with a trust bundle from the coordinator: nothing when it
/// is empty (a coordinator without a CA key, or a `Trust` that changes
/// only the renewal), else write it, unless it holds no certificate, which
/// would leave the agent unable to connect anywhere.
fn trust(ca_pem: String) -> Option<Action> {
    if ca_pem.is_empty() {
        return None;
    }
    if crate::identity::first_cert(&ca_pem).is_none() {
        warn!(bytes = ca_pem.len(), "refused a trust bundle from the coordinator: it holds no PEM certificate");
        return None;
    }
    Some(Action::Trust(ca_pem))
}

/// The answer to a `ServiceLogsRequest`, to send on the session that
/// asked.
pub fn service_logs(chunk: executor::LogsChunk) -> Out {
    Out::ServiceLogs(deploy::logs_chunk(chunk))
}

mod deploy;
#[cfg(test)]
mod tests;
