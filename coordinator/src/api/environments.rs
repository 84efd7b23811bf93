//! The control API's calls on environments: `drover env create|apply|rm`
//! (any coordinator, straight to the store: `crate::environments`) and
//! `drover envs`, `drover env show`, whose nodes are the agents the
//! leader's fleet knows (in memory, as for `drover agents`), matched by
//! `crate::core::environments::nodes`; a follower refuses these naming the
//! leader, and the CLI follows.

use std::collections::BTreeMap;

use drover_proto::v1 as pb;
use drover_telemetry::trace::now_ms;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::allowed;
use super::status::ApiError;
use crate::core::authz::{Action, Area};
use crate::core::environments::{self as rules, Spec};
use crate::core::fleet::AgentInfo;
use crate::environments::{self, EnvironmentRecord};
use crate::leader::Role;
use crate::store::Store;

fn environment_view(record: EnvironmentRecord, agents: &[AgentInfo], now_ms: u64) -> pb::Environment {
    let nodes = rules::nodes(&record.spec.selector, agents);
    let connected = nodes.iter().filter(|n| n.connected).count() as u32;
    let closed = record.spec.closed(now_ms);
    let EnvironmentRecord { spec, created_ms, created_by, updated_ms, updated_by } = record;
    pb::Environment {
        name: spec.name,
        selector: spec.selector.into_iter().collect(),
        require_approval: spec.require_approval,
        approvers: spec.approvers,
        branches: spec.branches,
        description: spec.description,
        deploy_role: spec.deploy_role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        created_ms,
        created_by,
        updated_ms,
        updated_by,
        nodes_connected: connected,
        windows: spec
            .windows
            .into_iter()
            .map(|w| pb::EnvironmentWindow {
                kind: w.kind.as_str().to_owned(),
                cron: w.cron,
                for_ms: w.for_ms,
                timezone: w.timezone,
                reason: w.reason,
            })
            .collect(),
        reopens_ms: closed.as_ref().and_then(|c| c.reopens_ms).unwrap_or(0),
        closed: closed.map(|c| c.why).unwrap_or_default(),
        nodes: nodes
            .into_iter()
            .map(|n| pb::EnvironmentNode {
                ready: n.ready(),
                name: n.name,
                connected: n.connected,
                draining: n.draining,
                unready: n.unready,
                last_seen_ms: n.last_seen_ms,
            })
            .collect(),
    }
}

/// The agents the leader knows, connected or away; a follower's refusal
/// names the leader.
async fn agents(role: &watch::Receiver<Role>) -> Result<Vec<AgentInfo>, ApiError> {
    let (sched, _) = super::leader(role)?;
    Ok(sched.agents().await?)
}

pub(super) async fn create(
    store: &dyn Store,
    role: &watch::Receiver<Role>,
    req: Request<pb::CreateEnvironmentRequest>,
) -> Result<Response<pb::Environment>, Status> {
    let by = allowed(&req, Action::Administer(Area::Environments))?;
    let req = req.into_inner();
    let spec = Spec {
        name: req.name,
        selector: req.selector.into_iter().collect::<BTreeMap<_, _>>(),
        require_approval: req.require_approval,
        approvers: req.approvers,
        branches: req.branches,
        description: req.description,
        // Deploy windows come from a file (`drover env apply -f`).
        windows: Vec::new(),
        deploy_role: match req.deploy_role.as_str() {
            "" => None,
            role => match crate::core::environments::deploy_role_problem(role) {
                Some(why) => return Err(ApiError::Invalid(why).into()),
                None => crate::core::authz::Role::parse(role).ok(),
            },
        },
    };
    let record = environments::create(store, spec, &by, now_ms()).await.map_err(ApiError::from)?;
    tracing::info!(environment = %record.spec.name, selector = ?record.spec.selector, by = %by, "environment created");
    // Its nodes when this coordinator leads; a follower answers without
    // them rather than fail a create that is done.
    let agents = agents(role).await.unwrap_or_default();
    Ok(Response::new(environment_view(record, &agents, now_ms())))
}

pub(super) async fn apply(
    store: &dyn Store,
    req: Request<pb::ApplyEnvironmentsRequest>,
) -> Result<Response<pb::ApplyEnvironmentsResponse>, Status> {
    let by = allowed(&req, Action::Administer(Area::Environments))?;
    let req = req.into_inner();
    let applied = environments::apply(store, &req.file_name, &req.text, &by, now_ms()).await.map_err(ApiError::from)?;
    tracing::info!(
        file = %req.file_name, created = ?applied.created, replaced = ?applied.replaced, by = %by,
        "environments applied"
    );
    Ok(Response::new(pb::ApplyEnvironmentsResponse {
        created: applied.created,
        replaced: applied.replaced,
        unchanged: applied.unchanged,
    }))
}

pub(super) async fn list(
    store: &dyn Store,
    role: &watch::Receiver<Role>,
    req: Request<pb::ListEnvironmentsRequest>,
) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
    allowed(&req, Action::Read)?;
    let agents = agents(role).await?;
    let records = environments::list(store).await.map_err(ApiError::from)?;
    let environments = records.into_iter().map(|r| environment_view(r, &agents, now_ms())).collect();
    Ok(Response::new(pb::ListEnvironmentsResponse { environments }))
}

pub(super) async fn get(
    store: &dyn Store,
    role: &watch::Receiver<Role>,
    req: Request<pb::GetEnvironmentRequest>,
) -> Result<Response<pb::Environment>, Status> {
    allowed(&req, Action::Read)?;
    let agents = agents(role).await?;
    let record = environments::get(store, &req.into_inner().name).await.map_err(ApiError::from)?;
    Ok(Response::new(environment_view(record, &agents, now_ms())))
}

pub(super) async fn remove(
    store: &dyn Store,
    req: Request<pb::RemoveEnvironmentRequest>,
) -> Result<Response<pb::RemoveEnvironmentResponse>, Status> {
    let by = allowed(&req, Action::Administer(Area::Environments))?;
    let name = req.into_inner().name;
    environments::remove(store, &name).await.map_err(ApiError::from)?;
    tracing::info!(environment = %name, by = %by, "environment removed");
    Ok(Response::new(pb::RemoveEnvironmentResponse {}))
}
