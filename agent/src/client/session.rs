//! One session with a coordinator: the Hello and the resending of what it
//! has not acknowledged, then the loop that takes its messages (Welcome,
//! assignments, cancels, deploy actions, requests for a service's output,
//! trust bundles, acknowledgements), the executor's and the deploy
//! executor's events and the heartbeats, and the renewal of the agent's
//! certificate when it is due (`super::renew`; the wait for it is worked
//! out afresh on every turn of the loop, so a `Trust` that brings it
//! forward is acted on at once), until the session ends ([`SessionEnd`]),
//! and how a refusal is taken ([`refused`]). What to answer is
//! [`super::protocol`]'s; this driver carries it out: it sends, starts and
//! kills attempts, moves their fences, writes the trust bundle into the
//! TLS directory (which the next connection reads), and keeps the agent's
//! metrics.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use drover_client::targets::{Follower, follower_at};
use drover_proto::v1 as pb;
use futures_util::future::OptionFuture;
use pb::agent_message::Msg as Out;
use pb::coordinator_message::Msg as In;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tracing::{info, warn};

use super::protocol::{self, Action};
use super::renew;
use super::{Agent, AgentError, Stop};
use crate::deploy::executor;
use crate::exec::{self, ExecEvent, Outcome};
use crate::identity;
use crate::metrics::METRICS;

/// A certificate renewal under way.
type Renewing = Pin<Box<dyn Future<Output = Result<renew::Renewed, renew::RenewError>> + Send>>;

/// Why a session ended.
pub(super) enum SessionEnd {
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

/// How a session that the coordinator ended or refused with `status`
/// ends: a follower's redirect, or the coordinator's refusal.
fn ended(url: &str, status: &tonic::Status, what: &str) -> SessionEnd {
    match follower_at(url, status) {
        Some(Follower::Leader(leader)) => SessionEnd::Redirect(leader),
        Some(Follower::Election) => SessionEnd::NoLeader,
        None => refused(url, status, what),
    }
}

impl Agent {
    pub(super) async fn session(&mut self, channel: Channel, url: &str, stop: watch::Receiver<Stop>) -> SessionEnd {
        // Artifact transfers go over this session's connection while it
        // lasts.
        self.channel.send_replace(Some(channel.clone()));
        let end = self.run_session(channel, url, stop).await;
        self.channel.send_replace(None);
        end
    }

    async fn run_session(&mut self, channel: Channel, url: &str, mut stop: watch::Receiver<Stop>) -> SessionEnd {
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel.clone());
        let (tx, rx) = mpsc::unbounded_channel::<pb::AgentMessage>();
        let send = |tx: &mpsc::UnboundedSender<pb::AgentMessage>, m: Out| {
            let _ = tx.send(pb::AgentMessage { msg: Some(m) });
        };
        let hello = pb::Hello {
            name: self.config.name.clone(),
            labels: self.config.labels.clone().into_iter().collect(),
            slots: self.config.slots,
            running: Vec::new(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            draining: *stop.borrow() == Stop::Drain,
            instance_id: self.instance_id.clone(),
            unready: self.check_ready(),
            caches: self.exec.caches.as_ref().map(|c| c.entries(1000)).unwrap_or_default(),
        };
        for m in self.proto.hello(hello) {
            send(&tx, m);
        }
        let opened = tokio::time::timeout(self.setup_timeout(), client.session(UnboundedReceiverStream::new(rx))).await;
        let Ok(opened) = opened else {
            return SessionEnd::Frozen(format!("{url} did not answer the session within {:?}", self.setup_timeout()));
        };
        let mut inbound = match opened {
            Ok(resp) => resp.into_inner(),
            Err(status) => return ended(url, &status, "refused the session"),
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
        let mut heartbeat = tokio::time::interval(self.proto.heartbeat_period());
        // Readiness is checked at the busy rate even while heartbeats are
        // rare, and a change is told at once.
        let mut readiness = tokio::time::interval(self.proto.busy_heartbeat_period());
        readiness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A certificate renewal under way on this session's connection,
        // with its ticket from the schedule; dropped with the session (its
        // files are written whole or not at all), and tried again on the
        // next one.
        let mut renewing: Option<(u64, Renewing)> = None;
        loop {
            if self.drained(&stop) {
                return SessionEnd::Drained;
            }
            // A coordinator that stops acknowledging heartbeats is frozen
            // (SIGSTOP, a hung host) or cut off: move on to another, which
            // leads once the frozen one's election lease has lapsed.
            let frozen_at = self.proto.frozen_at();
            let frozen = async move {
                match frozen_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // Worked out on every turn, so that a message that moved the
            // renewal earlier (a `Trust`) re-arms the timer.
            let renew_wait = if renewing.is_none() { self.renewal.wait(identity::now_ms()) } else { None };
            let renew_due = async move {
                match renew_wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = renew_due => {
                    info!("renewing the agent's certificate");
                    let (dir, name) = (self.config.tls_dir.clone(), self.config.name.clone());
                    let ticket = self.renewal.start();
                    renewing = Some((ticket, Box::pin(renew::renew(channel.clone(), dir, name))));
                }
                Some(result) = OptionFuture::from(renewing.as_mut().map(|(_, r)| r)) => {
                    let ticket = renewing.take().map_or(0, |(ticket, _)| ticket);
                    self.on_renewed(result, ticket);
                }
                () = frozen => {
                    let waited = self.proto.ack_timeout().unwrap_or_default();
                    // A follower carries the session: more often than not
                    // the leader behind it froze, and the follower will
                    // carry the session to the next one. Reopen there,
                    // over this connection; a follower that froze itself
                    // does not answer, and is passed over then.
                    if self.proto.carried() {
                        warn!(
                            "{url} acknowledged no heartbeat for {waited:?}: the leader behind it seems frozen; \
                             reopening the session there"
                        );
                        return SessionEnd::Redirect(url.to_string());
                    }
                    return SessionEnd::Frozen(format!(
                        "{url} acknowledged no heartbeat for {waited:?}: it seems frozen or cut off; trying the coordinators again"
                    ));
                }
                msg = inbound.message() => match msg {
                    Ok(Some(pb::CoordinatorMessage { msg: Some(m) })) => {
                        if let Some((period, now)) = self.on_message(m, &tx) {
                            let first = tokio::time::Instant::now() + if now { Duration::ZERO } else { period };
                            heartbeat = tokio::time::interval_at(first, period);
                            let busy = self.proto.busy_heartbeat_period();
                            if readiness.period() != busy {
                                readiness = tokio::time::interval(busy);
                                readiness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            }
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return SessionEnd::Failed(format!("{url} closed the session")),
                    // A follower that carried the session to the leader
                    // lost it, and asks the agent back (or names where to go).
                    Err(s) => return ended(url, &s, "ended the session"),
                },
                Some(ev) = self.exec_rx.recv() => self.on_exec(ev, Some(&tx)),
                Some(event) = self.deploy_rx.recv() => send(&tx, self.proto.on_deploy_event(event)),
                _ = readiness.tick() => {
                    let before = self.unready.clone();
                    if self.check_ready() != before {
                        heartbeat.reset_immediately();
                    }
                }
                _ = heartbeat.tick() => {
                    let draining = *stop.borrow() == Stop::Drain;
                    let unready = self.check_ready();
                    send(&tx, self.proto.heartbeat(draining, unready, tokio::time::Instant::now()));
                }
                Ok(()) = stop.changed() => match *stop.borrow_and_update() {
                    Stop::Now => return SessionEnd::Stop,
                    // Say so at once, so the coordinator assigns nothing more.
                    Stop::Drain => {
                        info!(attempts = self.proto.len(), "draining: finishing the attempts held, taking no new work");
                        heartbeat.reset_immediately();
                    }
                    Stop::Run => {}
                },
            }
        }
    }

    /// Takes the outcome of the certificate renewal started with `ticket`
    /// into the schedule.
    fn on_renewed(&mut self, result: Result<renew::Renewed, renew::RenewError>, ticket: u64) {
        match result {
            Ok(renewed) => {
                info!(
                    not_after = %identity::utc(renewed.not_after_ms),
                    "renewed the agent's certificate; the next connection uses it"
                );
                self.renewal.renewed(renewed.renew_at_ms, ticket);
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?renew::RETRY_AFTER, "cannot renew the agent's certificate; the old one is used meanwhile");
                self.renewal.failed(identity::now_ms());
            }
        }
    }

    /// Carries out what the protocol answers to one message from the
    /// coordinator. Returns a new heartbeat period when there is one, and
    /// whether to heartbeat at once (a Welcome) or a period from now (the
    /// agent went idle or busy).
    fn on_message(&mut self, msg: In, tx: &mpsc::UnboundedSender<pb::AgentMessage>) -> Option<(Duration, bool)> {
        let mut period = None;
        let welcome = matches!(msg, In::Welcome(_));
        let actions = self.proto.on_message(msg, tokio::time::Instant::now());
        if welcome {
            self.renewal.welcomed(self.proto.renew_cert_at_ms());
        }
        for action in actions {
            match action {
                Action::Send(m) => {
                    let _ = tx.send(pb::AgentMessage { msg: Some(m) });
                }
                Action::Start { attempt, fence_at } => {
                    let (control, control_rx) = watch::channel(exec::Control { cancelled: false, fence_at });
                    self.controls.insert(attempt.id.clone(), control);
                    METRICS.attempts_running.add(1);
                    tokio::spawn(exec::execute(*attempt, self.exec.clone(), self.exec_tx.clone(), control_rx));
                }
                Action::Kill(id) => {
                    if let Some(control) = self.controls.get(&id) {
                        control.send_modify(|c| c.cancelled = true);
                    }
                }
                Action::Fence { id, at } => {
                    if let Some(control) = self.controls.get(&id) {
                        control.send_modify(|c| c.fence_at = Some(at));
                    }
                }
                Action::HeartbeatEvery(every) => period = Some((every, true)),
                Action::HeartbeatPace(every) => period = Some((every, false)),
                Action::Trust(ca_pem) => self.trust(&ca_pem),
                Action::RenewBy(by_ms) => {
                    info!(by = %identity::utc(by_ms), "the certificate's CA is retiring: renewing the certificate by then");
                    self.renewal.renew_by(by_ms);
                }
                Action::Deploy(request) => match request {
                    executor::Request::Order(order) => self.deploy.submit(*order),
                    executor::Request::Logs(request) => {
                        // Read off this loop; the answer goes out on this
                        // session, or nowhere once it has ended.
                        let (read, tx) = (self.deploy.logs(request), tx.clone());
                        tokio::spawn(async move {
                            let _ = tx.send(pb::AgentMessage { msg: Some(protocol::service_logs(read.await)) });
                        });
                    }
                },
            }
        }
        period
    }

    /// Writes the coordinator's trust bundle as the TLS directory's
    /// `ca.pem`, which the next connection reads. A write that fails is
    /// logged and the session goes on: the old bundle still works until
    /// the rotation removes a CA, and the next Welcome sends the bundle
    /// again.
    fn trust(&self, ca_pem: &str) {
        match identity::install_trust(&self.config.tls_dir, ca_pem) {
            Ok(true) => {
                let cas = ca_pem.matches("-----BEGIN CERTIFICATE-----").count();
                info!(dir = %self.config.tls_dir.display(), "trusting {cas} CAs from the next connection on");
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "cannot write the coordinator's trust bundle; the old ca.pem is used meanwhile")
            }
        }
    }

    /// Takes an executor event into the protocol's state, and sends what it
    /// says when connected.
    pub(super) fn on_exec(&mut self, ev: ExecEvent, tx: Option<&mpsc::UnboundedSender<pb::AgentMessage>>) {
        match &ev {
            ExecEvent::Output { id, data } if self.proto.holds(id) => METRICS.log_bytes.add(data.len() as u64),
            ExecEvent::Output { .. } => {}
            ExecEvent::Finished { id, outcome, .. } => {
                if self.controls.remove(id).is_some() {
                    METRICS.attempts_running.add(-1);
                }
                let i = match outcome {
                    Outcome::Succeeded => 0,
                    Outcome::Failed => 1,
                    Outcome::TimedOut => 2,
                    Outcome::Cancelled => 3,
                    Outcome::Fenced => 4,
                };
                METRICS.attempts_finished[i].inc();
            }
        }
        if let (Some(m), Some(tx)) = (self.proto.on_exec(ev), tx) {
            let _ = tx.send(pb::AgentMessage { msg: Some(m) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
