//! The control API's calls on rollouts and services: `drover rollouts`,
//! `drover rollout status`, `drover services` (any coordinator, from the
//! store: `crate::rollouts::records`) and `drover rollout
//! promote|pause|resume|abort` (the leader, whose rollout controller
//! applies it through the scheduler; a follower's refusal names the leader).

use drover_proto::v1 as pb;
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status};

use super::allowed;
use super::status::ApiError;
use crate::core::authz::Action;
use crate::leader::Role;
use crate::rollouts::records::{self, RolloutRecord};
use crate::scheduler::{Event, RollbackCommand, RolloutCommand, Verb};
use crate::store::Store;

/// The longest gate comment or reason, in bytes.
pub const MAX_COMMENT_BYTES: usize = 1024;

fn gate(name: &str) -> Option<String> {
    (!name.is_empty()).then(|| name.to_owned())
}

/// Most rollouts one listing returns.
pub const MAX_LIST: u32 = 1000;

pub fn view(r: RolloutRecord) -> pb::Rollout {
    let machine = r.rollout.as_ref();
    let (hold, hold_until_ms) = match machine.and_then(|m| m.hold) {
        Some(drover_deploy::rollout::Hold::Promote) => ("promote".to_string(), 0),
        Some(drover_deploy::rollout::Hold::Until(t)) => ("until".to_string(), t),
        None => (String::new(), 0),
    };
    pb::Rollout {
        id: r.id,
        phase: r.phase().to_string(),
        strategy: crate::core::rollouts::strategy(&r.deploy.strategy).as_str().to_string(),
        version: r.release.version.clone(),
        sha256: r.release.sha256.clone(),
        artifact_path: r.release.path.clone(),
        run_id: r.job.as_ref().map(|j| j.run.to_string()).unwrap_or_default(),
        job: r.job.as_ref().map(|j| j.job.clone()).unwrap_or_default(),
        commit: r.release.commit.clone(),
        created_ms: r.created_ms,
        started_ms: r.started_ms.unwrap_or_default(),
        finished_ms: r.finished_ms.unwrap_or_default(),
        message: match (&r.message, machine) {
            (m, Some(machine)) if m.is_empty() => machine.message.clone(),
            (m, _) => m.clone(),
        },
        step: machine.map_or(0, |m| m.step),
        waves: r.deploy.waves.iter().map(|w| w.name.clone()).collect(),
        overridden_by: r.overridden.as_ref().map(|o| o.by.clone()).unwrap_or_default(),
        override_reason: r.overridden.as_ref().map(|o| o.reason.clone()).unwrap_or_default(),
        wave: machine.map_or(0, |m| m.wave_of(m.step)),
        steps: machine.map_or(0, |m| m.steps()),
        nodes: machine
            .map(|m| {
                let waves = m.node_waves();
                m.nodes
                    .iter()
                    .zip(waves)
                    .map(|(n, wave)| pb::RolloutNode {
                        wave: r.deploy.waves.get(wave as usize).map(|w| w.name.clone()).unwrap_or_default(),
                        name: n.name.clone(),
                        state: n.state.as_str().to_string(),
                        reason: n.reason.clone(),
                        rollback_to: n.rollback_to.clone().unwrap_or_default(),
                        environment: r.env_of(&n.name).to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        started_by: r.by.clone(),
        progress_deadline_ms: r.deploy.progress_deadline.as_millis() as u64,
        hold,
        hold_until_ms,
        environment: r.env,
        service: r.service,
        hook_log: r.hook_log,
        analysing: r.analysing.is_some(),
        analysing_background: r.background.is_some(),
        analysing_step: r.analysing.map_or(0, |a| a.step),
        measurements: r
            .measurements
            .into_iter()
            .map(|m| pb::RolloutMeasurement {
                background: m.step == crate::rollouts::analysis::BACKGROUND,
                step: if m.step == crate::rollouts::analysis::BACKGROUND { 0 } else { m.step },
                run: m.run,
                metric: m.metric,
                at_ms: m.at_ms,
                value: m.value,
                outcome: m.outcome.as_str().to_owned(),
                message: m.message,
            })
            .collect(),
        gates: r
            .gates
            .iter()
            .map(|g| {
                let kind = r.deploy.gates.iter().find(|spec| spec.name == g.name).map(|spec| &spec.kind);
                let (kind, approvers) = match kind {
                    Some(drover_pipeline::deploy::GateKind::Approval { approvers }) => ("approval", approvers.clone()),
                    Some(drover_pipeline::deploy::GateKind::Confirm { .. }) => ("confirm", Vec::new()),
                    None => ("", Vec::new()),
                };
                pb::RolloutGate {
                    name: g.name.clone(),
                    at: g.at.as_str().to_owned(),
                    has_step: g.step.is_some(),
                    step: g.step.unwrap_or_default(),
                    kind: kind.to_owned(),
                    state: g.state.as_str().to_owned(),
                    by: g.by.clone(),
                    comment: g.comment.clone(),
                    asked_ms: g.asked_ms,
                    decided_ms: g.decided_ms,
                    approvers,
                }
            })
            .collect(),
    }
}

pub(super) async fn list(
    store: &dyn Store,
    req: Request<pb::ListRolloutsRequest>,
) -> Result<Response<pb::ListRolloutsResponse>, Status> {
    allowed(&req, Action::Read)?;
    let req = req.into_inner();
    let limit = match req.limit {
        0 => 50,
        n => n.min(MAX_LIST),
    } as usize;
    let all = records::list(store).await.map_err(ApiError::from)?;
    let rollouts = all
        .into_iter()
        .rev()
        .filter(|r| req.environment.is_empty() || r.touches(&req.environment))
        .filter(|r| req.service.is_empty() || r.service == req.service)
        .take(limit)
        .map(|r| pb::Rollout { hook_log: String::new(), measurements: Vec::new(), gates: Vec::new(), ..view(r) })
        .collect();
    Ok(Response::new(pb::ListRolloutsResponse { rollouts }))
}

pub(super) async fn get(
    store: &dyn Store,
    req: Request<pb::GetRolloutRequest>,
) -> Result<Response<pb::Rollout>, Status> {
    allowed(&req, Action::Read)?;
    let id = req.into_inner().id;
    let r = records::get(store, id).await.map_err(ApiError::from)?;
    let r = r.ok_or_else(|| ApiError::NotFound(format!("there is no rollout {id}; `drover rollouts` lists them")))?;
    Ok(Response::new(view(r)))
}

pub(super) async fn act(
    store: &dyn Store,
    role: &watch::Receiver<Role>,
    req: Request<pb::ActOnRolloutRequest>,
) -> Result<Response<pb::Rollout>, Status> {
    let caller = super::authorize(&req, Action::Deploy)?;
    let by = caller.name().to_owned();
    let source = req.remote_addr();
    let req = req.into_inner();
    if let Some(r) = records::get(store, req.id).await.map_err(ApiError::from)? {
        super::may_deploy(store, &caller, r.envs()).await?;
    }
    let verb = match req.verb.as_str() {
        "promote" => Verb::Promote { full: req.full },
        "pause" => Verb::Pause,
        "resume" => Verb::Resume,
        "abort" => Verb::Abort,
        "approve" => Verb::Approve { gate: gate(&req.gate), comment: req.comment.clone() },
        "reject" if req.comment.trim().is_empty() => {
            return Err(ApiError::Invalid("say why the gate is refused: --reason TEXT".into()).into());
        }
        "reject" => Verb::Reject { gate: gate(&req.gate), reason: req.comment.clone() },
        "override" if req.comment.trim().is_empty() => {
            return Err(ApiError::Invalid("say why the freeze or window is overridden: --reason TEXT".into()).into());
        }
        "override" => Verb::Override { reason: req.comment.clone() },
        other => {
            return Err(ApiError::Invalid(format!(
                "unknown rollout action {other:?}: use promote, pause, resume, abort, approve, reject or override"
            ))
            .into());
        }
    };
    if req.comment.len() > MAX_COMMENT_BYTES {
        return Err(ApiError::Invalid(format!(
            "the comment has {} bytes, over the limit of {MAX_COMMENT_BYTES}",
            req.comment.len()
        ))
        .into());
    }
    if req.full && !matches!(verb, Verb::Promote { .. }) {
        return Err(ApiError::Invalid("--full goes with promote only".into()).into());
    }
    let (sched, _) = super::leader(role)?;
    let (reply, rx) = oneshot::channel();
    let cmd = RolloutCommand { rollout: req.id, verb, by, reply };
    sched.send(Event::RolloutCommand(cmd)).await.map_err(ApiError::Sched)?;
    match rx.await {
        Ok(Ok(())) => {}
        Ok(Err(why)) if why.starts_with("there is no rollout") => return Err(ApiError::NotFound(why).into()),
        Ok(Err(why)) => return Err(ApiError::Precondition(why).into()),
        Err(_) => return Err(ApiError::Sched(crate::scheduler::SchedError::Stopped).into()),
    }
    let action = format!("rollout.{}", req.verb);
    crate::audit::by_caller(store, (&caller, source), &action, &req.id.to_string(), &req.comment).await;
    // The controller committed it before answering.
    let r = records::get(store, req.id).await.map_err(ApiError::from)?;
    let r = r.ok_or_else(|| ApiError::NotFound(format!("there is no rollout {}", req.id)))?;
    Ok(Response::new(view(r)))
}

pub(super) async fn rollback(
    store: &dyn Store,
    role: &watch::Receiver<Role>,
    req: Request<pb::RollbackServiceRequest>,
) -> Result<Response<pb::Rollout>, Status> {
    let caller = super::authorize(&req, Action::Deploy)?;
    let by = caller.name().to_owned();
    let source = req.remote_addr();
    let req = req.into_inner();
    super::may_deploy(store, &caller, [req.environment.as_str()]).await?;
    let target = format!("{}/{}", req.environment, req.service);
    if req.environment.is_empty() || req.service.is_empty() {
        return Err(ApiError::Invalid(
            "name the service and its environment: drover rollback web --env staging".into(),
        )
        .into());
    }
    let (sched, _) = super::leader(role)?;
    let (reply, rx) = oneshot::channel();
    let to = (!req.to_version.is_empty()).then_some(req.to_version);
    let force = req.force.then_some(req.reason);
    let cmd = RollbackCommand { env: req.environment, service: req.service, to, staged: req.staged, by, force, reply };
    sched.send(Event::Rollback(cmd)).await.map_err(ApiError::Sched)?;
    let id = match rx.await {
        Ok(Ok(id)) => id,
        Ok(Err(why)) if why.contains("never been deployed") || why.contains("has no release") => {
            return Err(ApiError::NotFound(why).into());
        }
        Ok(Err(why)) => return Err(ApiError::Precondition(why).into()),
        Err(_) => return Err(ApiError::Sched(crate::scheduler::SchedError::Stopped).into()),
    };
    crate::audit::by_caller(store, (&caller, source), "service.rollback", &target, &format!("rollout {id}")).await;
    let r = records::get(store, id).await.map_err(ApiError::from)?;
    let r = r.ok_or_else(|| ApiError::NotFound(format!("there is no rollout {id}")))?;
    Ok(Response::new(view(r)))
}

/// How long `drover service logs` waits for the node's answer.
const LOGS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The most bytes one answer carries.
pub const MAX_LOGS_BYTES: u32 = 1024 * 1024;

pub(super) async fn service_logs(
    store: &dyn Store,
    role: &watch::Receiver<Role>,
    req: Request<pb::GetServiceLogsRequest>,
) -> Result<Response<pb::GetServiceLogsResponse>, Status> {
    allowed(&req, Action::Read)?;
    let req = req.into_inner();
    let deployed = records::deployed_in(store, Some(&req.environment)).await.map_err(ApiError::from)?;
    if !deployed.iter().any(|(_, s, d)| *s == req.service && d.node == req.node) {
        return Err(ApiError::NotFound(format!(
            "service {} is not deployed on node {} in {}; `drover services --env {}` lists what is",
            req.service, req.node, req.environment, req.environment
        ))
        .into());
    }
    let (sched, _) = super::leader(role)?;
    let (reply, rx) = oneshot::channel();
    let max_bytes = if req.max_bytes == 0 { 64 * 1024 } else { req.max_bytes.min(MAX_LOGS_BYTES) };
    let event =
        Event::ServiceLogs { node: req.node.clone(), service: req.service, offset: req.offset, max_bytes, reply };
    sched.send(event).await.map_err(ApiError::Sched)?;
    match tokio::time::timeout(LOGS_TIMEOUT, rx).await {
        Ok(Ok(Ok(chunk))) => {
            Ok(Response::new(pb::GetServiceLogsResponse { data: chunk.data, next_offset: chunk.next_offset }))
        }
        Ok(Ok(Err(why))) => Err(ApiError::Precondition(format!("node {}: {why}", req.node)).into()),
        Ok(Err(_)) => Err(ApiError::Sched(crate::scheduler::SchedError::Stopped).into()),
        Err(_) => Err(ApiError::Precondition(format!(
            "node {} did not answer within {}s; is its agent connected?",
            req.node,
            LOGS_TIMEOUT.as_secs()
        ))
        .into()),
    }
}

pub(super) async fn services(
    store: &dyn Store,
    role: &watch::Receiver<Role>,
    req: Request<pb::ListServicesRequest>,
) -> Result<Response<pb::ListServicesResponse>, Status> {
    allowed(&req, Action::Read)?;
    let env = req.into_inner().environment;
    let env = (!env.is_empty()).then_some(env);
    let deployed = records::deployed_in(store, env.as_deref()).await.map_err(ApiError::from)?;
    // Connected or not is the leader's to know; a follower says nothing.
    let connected: std::collections::BTreeSet<String> = match super::leader(role) {
        Ok((sched, _)) => {
            sched.agents().await.unwrap_or_default().into_iter().filter(|a| a.connected).map(|a| a.name).collect()
        }
        Err(_) => Default::default(),
    };
    let rejects = crate::releases::load(store).await.map_err(ApiError::from)?;
    let services = deployed
        .into_iter()
        .map(|(environment, service, d)| pb::ServiceInstance {
            rejected: rejects
                .find(&service, &d.release.version, &d.release.sha256)
                .map(|r| r.reason.clone())
                .unwrap_or_default(),
            connected: connected.contains(&d.node),
            environment,
            service,
            node: d.node,
            version: d.release.version,
            sha256: d.release.sha256,
            run_id: d.release.run,
            commit: d.release.commit,
            rollout: d.rollout,
            healthy: d.healthy,
            since_ms: d.since_ms,
            health_message: d.health_message,
            health_ms: d.health_ms,
        })
        .collect();
    Ok(Response::new(pb::ListServicesResponse { services }))
}
