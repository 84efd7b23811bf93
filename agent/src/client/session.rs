//! One session with a coordinator: the Hello and the resending of what it
//! has not acknowledged, then the loop that takes its messages (Welcome,
//! assignments, cancels, acknowledgements), the executor's events and the
//! heartbeats, until the session ends ([`SessionEnd`]), and how a refusal
//! is taken ([`refused`]).

use std::time::Duration;

use drover_proto::metadata;
use drover_proto::v1 as pb;
use pb::agent_message::Msg as Out;
use pb::coordinator_message::Msg as In;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::heartbeats::Heartbeats;
use super::{Agent, AgentError, Held, Stop};
use crate::exec::{self, ExecEvent, Outcome};
use crate::logbuf::LogBuf;
use crate::metrics::METRICS;

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

impl Agent {
    pub(super) async fn session(&mut self, channel: Channel, url: &str, mut stop: watch::Receiver<Stop>) -> SessionEnd {
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
    pub(super) fn on_exec(&mut self, ev: ExecEvent, tx: Option<&mpsc::UnboundedSender<pb::AgentMessage>>) {
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
