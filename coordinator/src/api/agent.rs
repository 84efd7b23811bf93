//! The agent-facing service: one bidirectional stream per agent. The first
//! message must be a Hello naming the same agent as the client certificate;
//! after that every message is converted and forwarded to the scheduler in
//! order, and the scheduler's replies flow back on the response stream.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use drover_proto::v1 as pb;
use pb::agent_message::Msg as In;
use pb::coordinator_message::Msg as Out;
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::require_agent;
use super::status::ApiError;
use crate::leader::Role;
use crate::machine::Outcome;
use crate::scheduler::{AgentHello, Event, ToAgent};

pub struct AgentApi {
    role: watch::Receiver<Role>,
    next_conn: AtomicU64,
}

impl AgentApi {
    pub fn new(role: watch::Receiver<Role>) -> AgentApi {
        AgentApi { role, next_conn: AtomicU64::new(1) }
    }
}

/// Converts a scheduler message; `epoch` is the leadership term the
/// session belongs to, which agents use to refuse a deposed leader.
fn to_proto(msg: ToAgent, epoch: u64) -> pb::CoordinatorMessage {
    let msg = match msg {
        ToAgent::Welcome { heartbeat, lease_ttl, epoch } => Out::Welcome(pb::Welcome {
            epoch,
            heartbeat_ms: heartbeat.as_millis() as u32,
            lease_ttl_ms: lease_ttl.as_millis() as u32,
        }),
        ToAgent::Assign(a) => Out::Assign(pb::Assign {
            attempt_id: a.id.to_string(),
            run_id: a.id.run.to_string(),
            job: a.id.job.clone(),
            attempt: a.id.attempt,
            steps: a.steps.into_iter().map(|s| pb::Step { name: s.name.unwrap_or_default(), run: s.run }).collect(),
            env: a.env.into_iter().collect(),
            timeout_ms: a.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
            log_cap: a.log_cap,
            checkout: a.checkout.map(|(repo, commit)| pb::Checkout { repo, commit }),
            traceparent: a.traceparent.unwrap_or_default(),
            epoch,
        }),
        ToAgent::Cancel { id, reason, disown } => Out::Cancel(pb::Cancel { attempt_id: id, reason, epoch, disown }),
        ToAgent::LogAck { id, offset } => Out::LogAck(pb::LogAck { attempt_id: id, offset }),
        ToAgent::ResultAck { id, accepted } => Out::ResultAck(pb::ResultAck { attempt_id: id, accepted }),
    };
    pb::CoordinatorMessage { msg: Some(msg) }
}

/// Converts one message after the Hello into a scheduler event.
fn to_event(conn: u64, name: &str, msg: In) -> Result<Event, ApiError> {
    let name = name.to_string();
    Ok(match msg {
        In::Hello(_) => return Err(ApiError::Invalid("Hello may only be the first message".into())),
        In::Heartbeat(h) => Event::Heartbeat { conn, name, running: h.running, draining: h.draining },
        In::Accepted(a) => Event::Accepted { conn, name, id: a.attempt_id },
        In::Log(l) => Event::Log { conn, name, id: l.attempt_id, offset: l.offset, data: l.data },
        In::Result(r) => {
            let outcome = match pb::Outcome::try_from(r.outcome) {
                Ok(pb::Outcome::Succeeded) => Outcome::Succeeded,
                Ok(pb::Outcome::Failed) => Outcome::Failed { exit_code: r.exit_code },
                Ok(pb::Outcome::TimedOut) => Outcome::TimedOut,
                Ok(pb::Outcome::Cancelled) => Outcome::Cancelled,
                // Dropping the result would leave the attempt held and its
                // lease renewed for ever; end it, and retry where allowed.
                _ => Outcome::Lost { reason: format!("the agent reported an unknown outcome ({})", r.outcome) },
            };
            Event::Result { conn, name, id: r.attempt_id, outcome, message: r.message }
        }
    })
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    type SessionStream = SessionStream;

    async fn session(&self, req: Request<Streaming<pb::AgentMessage>>) -> Result<Response<SessionStream>, Status> {
        let name = require_agent(&req)?;
        let (sched, epoch) = super::leader(&self.role)?;
        let mut inbound = req.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::AgentMessage { msg: Some(In::Hello(h)) }) => h,
            _ => return Err(ApiError::Invalid("the first message of a session must be Hello".into()).into()),
        };
        if hello.name != name {
            return Err(ApiError::PermissionDenied(format!(
                "this certificate belongs to agent {name:?}, which cannot act as {:?}",
                hello.name
            ))
            .into());
        }
        if hello.slots == 0 {
            return Err(ApiError::Invalid("an agent needs at least one slot".into()).into());
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(4096);
        let labels: BTreeMap<String, String> = hello.labels.into_iter().collect();
        sched
            .send(Event::AgentHello(AgentHello {
                conn,
                name: name.clone(),
                labels,
                slots: hello.slots,
                running: hello.running,
                draining: hello.draining,
                tx,
            }))
            .await
            .map_err(ApiError::from)?;

        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(pb::AgentMessage { msg: Some(msg) })) => match to_event(conn, &name, msg) {
                        Ok(event) => {
                            if sched.send(event).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => warn!(agent = %name, error = %e, "ignored a malformed message"),
                    },
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(status) => {
                        debug!(agent = %name, %status, "agent stream broke");
                        break;
                    }
                }
            }
            let _ = sched.send(Event::AgentGone { conn, name }).await;
        });
        let out = ReceiverStream::new(rx).map(move |m| Ok(to_proto(m, epoch)));
        Ok(Response::new(Box::pin(out)))
    }
}
