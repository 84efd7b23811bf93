//! One agent's session: the Hello checked (the certificate's name, labels
//! and standing on the deny list), then every message converted and sent on
//! to the scheduler in order, and the scheduler's replies converted back.
//! A session whose name is put on the deny list while it is open is closed
//! at once with the reason, and its attempts are lost (`Event::AgentRevoked`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use drover_proto::v1 as pb;
use drover_telemetry::trace::now_ms;
use pb::agent_message::Msg as In;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::super::status::ApiError;
use super::{AgentApi, HeartbeatGate, Outbound, SessionStream, check_hello, owned_labels, to_event, to_proto};
use crate::api::blobs::check_artifact;
use crate::audit::{self, Entry};
use crate::core::fleet::{AgentHello, ToAgent};
use crate::metrics::METRICS;
use crate::scheduler::Event;

pub(super) async fn open(
    api: &AgentApi,
    req: Request<Streaming<pb::AgentMessage>>,
) -> Result<Response<SessionStream>, Status> {
    let (name, cert) = crate::api::presented(&req)?;
    let cert_labels = crate::api::agent_cert_labels(&req)?;
    let (remote, peer) = crate::api::agent_source(&req);
    let via = req.extensions().get::<crate::api::Relayed>().map(|r| r.via.clone()).unwrap_or_default();
    let via_out = via.clone();
    let actor = format!("agent:{name}");
    // Subscribed before the check, so a revocation that lands after it
    // still closes this session.
    let mut denied = api.gate.subscribe();
    if let Err(e) = api.gate.admit(&name, &cert.serial) {
        let e = ApiError::from(e);
        if matches!(e, ApiError::PermissionDenied(_)) {
            METRICS.agent_refusals.inc();
            warn!(agent = %name, reason = %e, "refused an agent's session");
            if let Some(left_out) = api.refusals.allow(&name, std::time::Instant::now(), audit::REFUSAL_EVERY) {
                let mut why = e.to_string();
                if left_out > 0 {
                    why = format!("{why} ({left_out} more refusals since the last entry)");
                }
                let entry = Entry::refused(now_ms() as i64, &actor, "agent.session", &name, &why);
                audit::record(api.store.as_ref(), entry.source(remote).warning()).await;
            }
        }
        return Err(e.into());
    }
    let renew_at = api.gate.renew_at_ms(&name, &cert.serial, now_ms() as i64);
    // The CAs to trust, sent in the Welcome and again whenever a rotation
    // changes them while the session is open.
    let keyring = api.gate.keyring().cloned();
    let mut trust = keyring.as_ref().map(|k| k.subscribe());
    let bundle = keyring.as_ref().map(|k| k.trust().agents_bundle()).unwrap_or_default();
    let (sched, epoch) = crate::api::leader(&api.role)?;
    // Before the Hello is taken: without the key no Assign can be sent.
    let job_key = api.job_key.get().await.map_err(ApiError::from)?;
    let out_name = name.clone();
    let mut inbound = req.into_inner();
    let hello = match inbound.message().await? {
        Some(pb::AgentMessage { msg: Some(In::Hello(h)) }) => h,
        _ => return Err(ApiError::Invalid("the first message of a session must be Hello".into()).into()),
    };
    if hello.name != name {
        let why = format!("this certificate belongs to agent {name:?}, which cannot act as {:?}", hello.name);
        let entry = Entry::refused(now_ms() as i64, &actor, "agent.session", &hello.name, &why);
        audit::record(api.store.as_ref(), entry.source(remote).warning()).await;
        return Err(ApiError::PermissionDenied(why).into());
    }
    let claimed: BTreeMap<String, String> = hello.labels.into_iter().collect();
    let checked = check_hello(&claimed, hello.slots, &hello.running, &hello.instance_id, &hello.unready)
        .and_then(|running| crate::api::caches::check_hello_caches(&hello.caches).map(|()| running));
    let running = match checked {
        Ok(running) => running,
        Err(why) => {
            METRICS.agent_refusals.inc();
            warn!(agent = %name, reason = %why, "refused an agent's Hello");
            return Err(ApiError::Invalid(format!("agent {name:?}: {why}")).into());
        }
    };
    let labels = match owned_labels(&name, &claimed, &cert_labels) {
        Ok(labels) => labels,
        Err(why) => {
            METRICS.agent_refusals.inc();
            warn!(agent = %name, reason = %why, "refused an agent's labels");
            return Err(ApiError::PermissionDenied(why).into());
        }
    };
    let conn = api.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(4096);
    let (reply, accepted) = oneshot::channel();
    let acks = tx.clone();
    sched
        .send(Event::AgentHello(AgentHello {
            conn,
            name: name.clone(),
            labels,
            slots: hello.slots,
            running,
            draining: hello.draining,
            unready: hello.unready,
            caches: hello.caches,
            instance: hello.instance_id,
            peer,
            version: crate::api::agent::bounded(&hello.version, 64),
            via,
            tx,
            reply,
        }))
        .await
        .map_err(ApiError::from)?;
    match accepted.await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(ApiError::AlreadyConnected(why).into()),
        Err(_) => return Err(ApiError::from(crate::scheduler::SchedError::Stopped).into()),
    }

    let mut gate = HeartbeatGate::new(api.lease_ttl / 4);
    let blobs = api.blobs.clone();
    let (identities, store, serial) = (api.gate.clone(), api.store.clone(), cert.serial.clone());
    let (kill_tx, kill_rx) = oneshot::channel::<Status>();
    let connected = keyring.map(|k| k.connected(conn, cert.issuer.clone()));
    tokio::spawn(async move {
        let _connected = connected;
        let revoked = loop {
            let message = tokio::select! {
                message = inbound.message() => message,
                Ok(()) = async { match trust.as_mut() { Some(t) => t.changed().await, None => std::future::pending().await } } => {
                    let ca_pem = trust.as_mut().map(|t| t.borrow_and_update().agents_bundle()).unwrap_or_default();
                    let renew_cert_at_ms = identities.renew_at_ms(&name, &serial, now_ms() as i64);
                    let _ = acks.try_send(ToAgent::Trust { ca_pem, renew_cert_at_ms });
                    continue;
                }
                named = denied.recv() => {
                    let mine = match named {
                        Ok(denied) => denied == name,
                        // Names were missed: look this one up again.
                        Err(broadcast::error::RecvError::Lagged(_)) => identities.admit(&name, &serial).is_err(),
                        Err(broadcast::error::RecvError::Closed) => false,
                    };
                    match identities.admit(&name, &serial) {
                        Err(why) if mine => break Some(why.to_string()),
                        _ => continue,
                    }
                }
            };
            match message {
                // A term that ended takes its sessions with it: no more
                // acknowledgements, the agent goes to the next leader.
                Ok(Some(_)) if sched.is_closed() => break None,
                Ok(Some(pb::AgentMessage { msg: Some(msg) })) => {
                    let heartbeat = match &msg {
                        In::Heartbeat(h) => Some(h.seq),
                        _ => None,
                    };
                    // A malformed message (an attempt id that does not
                    // parse, a list past the limits) costs only itself.
                    let event = to_event(conn, &name, msg);
                    if let Err(e) = &event {
                        METRICS.agent_refusals.inc();
                        warn!(agent = %name, error = %e, "refused a malformed message");
                    }
                    if let Some(seq) = heartbeat {
                        // Acknowledged on arrival, before the scheduler
                        // (or the store behind it) is involved: the ack
                        // says this process is alive and holds the
                        // session. A refused heartbeat renews nothing, so
                        // its ack names the last one that did. A full
                        // buffer means the agent stopped reading; its own
                        // timeout will tell it.
                        let (forward, renewed_seq) = match &event {
                            Ok(event) => gate.take(seq, event, Instant::now()),
                            Err(_) => (false, gate.renewed_seq),
                        };
                        let _ = acks.try_send(ToAgent::HeartbeatAck { seq, renewed_seq });
                        if !forward {
                            continue;
                        }
                    }
                    let Ok(mut event) = event else { continue };
                    check_artifact(&blobs, &mut event).await;
                    if sched.send(event).await.is_err() {
                        break None;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break None,
                Err(status) => {
                    debug!(agent = %name, %status, "agent stream broke");
                    break None;
                }
            }
        };
        match revoked {
            None => {
                let _ = sched.send(Event::AgentGone { conn, name }).await;
            }
            Some(why) => {
                warn!(agent = %name, reason = %why, "closing a revoked agent's session; its attempts are lost");
                let _ = kill_tx.send(Status::permission_denied(why.clone()));
                let entry = Entry::ok(now_ms() as i64, "coordinator", "agent.session-closed", &name).detail(&why);
                audit::record(store.as_ref(), entry).await;
                let _ = sched.send(Event::AgentRevoked { conn, name, reason: why }).await;
            }
        }
    });
    let outbound = Arc::new(Outbound {
        name: out_name,
        epoch,
        limits: (api.max_artifact_bytes, api.max_artifact_file_bytes),
        vault: api.vault.clone(),
        job_key,
        renew_at,
        bundle,
        carried_by: via_out,
    });
    let out = futures_util::StreamExt::then(ReceiverStream::new(rx), move |m| {
        let outbound = outbound.clone();
        async move { Ok(to_proto(m, &outbound).await) }
    });
    // A revocation ends the stream with its reason: tonic sends the first
    // error as the call's status and stops.
    let kill = futures_util::stream::once(kill_rx);
    let kill = futures_util::StreamExt::filter_map(kill, |status| async move { status.ok().map(Err) });
    Ok(Response::new(Box::pin(futures_util::stream::select(out, kill))))
}
