//! The gRPC edge. Prost types from `drover-proto` are converted to domain
//! types here and go no further; errors become `Status` only in
//! [`status`]. Both services check the caller's certificate role first.

pub mod agent;
pub mod apps;
pub mod blobs;
pub mod caches;
pub mod control;
pub mod deploys;
pub mod environments;
pub mod identity;
pub mod notifications;
pub mod releases;
pub mod repos;
pub mod rollouts;
pub mod status;
pub mod stores;
pub mod streams;
pub mod views;

use tokio::sync::watch;
use tonic::Request;

use crate::leader::Role;
use crate::scheduler::Handle;
use std::sync::Arc;

use crate::core::authz::{Action, Caller};
use crate::identity::Gate;
use drover_pki::peer::{Peer, Presented, inspect};
use status::ApiError;

/// The scheduler and epoch when this coordinator leads; otherwise an error
/// that tells the client where the leader is.
pub(crate) fn leader(role: &watch::Receiver<Role>) -> Result<(Handle, u64), ApiError> {
    match &*role.borrow() {
        Role::Leader { sched, epoch } => Ok((sched.clone(), *epoch as u64)),
        Role::Follower { leader } => Err(ApiError::NotLeader(leader.as_ref().map(|l| l.url.clone()))),
    }
}

/// The caller's verified client certificate, read. One with subject
/// alternative names is refused: a client is named by its subject alone,
/// and a certificate that also names something else (two URI SANs, a
/// host) was not made by `drover certs` or enrollment for a client.
fn certificate<T>(req: &Request<T>) -> Result<Presented, ApiError> {
    let certs =
        req.peer_certs().ok_or_else(|| ApiError::PermissionDenied("a client certificate is required".into()))?;
    let leaf = certs.first().ok_or_else(|| ApiError::PermissionDenied("a client certificate is required".into()))?;
    let cert = inspect(leaf.as_ref())
        .map_err(|e| ApiError::PermissionDenied(format!("cannot read the client certificate: {e}")))?;
    if cert.sans > 0 {
        return Err(ApiError::PermissionDenied(format!(
            "the client certificate carries {} subject alternative name(s); Drover's client certificates name \
             their holder in the subject only: use one from `drover certs` or enrollment",
            cert.sans
        )));
    }
    Ok(cert)
}

/// The holder of a web UI session, on a request the UI makes in process
/// (`crate::ui`): the certificate the session was made with, as if it
/// were presented now. Only the coordinator's own code can put it on a
/// request; the network cannot.
#[derive(Debug, Clone)]
pub struct OnBehalf(pub Presented);

/// Who a request is from: the holder a web UI session vouches for
/// ([`OnBehalf`]), else the verified client certificate. For the streams
/// that look the caller up again as users change (`streams::while_allowed`).
pub(crate) fn holder<T>(req: &Request<T>) -> Result<Presented, ApiError> {
    match req.extensions().get::<OnBehalf>() {
        Some(OnBehalf(presented)) => Ok(presented.clone()),
        None => certificate(req),
    }
}

/// The caller's identity from its verified client certificate.
fn peer<T>(req: &Request<T>) -> Result<Peer, ApiError> {
    Ok(certificate(req)?.peer)
}

/// An agent's name and its certificate (serial, validity), for checks
/// against the deny list and the enrolled identity.
pub(crate) fn presented<T>(req: &Request<T>) -> Result<(String, Presented), ApiError> {
    let name = require_agent(req)?;
    Ok((name, certificate(req)?))
}

/// Every service but enrollment is wrapped in this guard. A call without a
/// client certificate ends here, before any handler (the listener lets a
/// client without one finish the TLS handshake, for `EnrollService`; a
/// certificate that is presented is verified against the CA in the
/// handshake as before). Otherwise the caller is read once, here, from its
/// certificate and the store's view in `gate` (a user's role now), and put
/// on the request for [`authorize`].
pub fn guard(gate: Arc<Gate>) -> impl Fn(Request<()>) -> Result<Request<()>, tonic::Status> + Clone + Send + Sync {
    move |mut req: Request<()>| {
        if req.peer_certs().is_none_or(|certs| certs.is_empty()) {
            return Err(ApiError::Unauthenticated(
                "a client certificate is required (only enrollment is served without one); give the CLI \
                 --tls-dir (or `drover login`), or enroll an agent with --join-token"
                    .into(),
            )
            .into());
        }
        let cert = certificate(&req)?;
        let caller = gate.caller(&cert);
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

/// Whether the caller may do `action` (`core::authz::authorize`, the one
/// decision), from the identity [`guard`] put on the request; returns the
/// caller. A request without one (a service not behind the guard) is
/// refused: deny by default.
pub(crate) fn authorize<T>(req: &Request<T>, action: Action) -> Result<Caller, ApiError> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::PermissionDenied("the caller is not known (deny by default)".into()))?;
    crate::core::authz::authorize(&caller, action).map_err(ApiError::PermissionDenied)?;
    Ok(caller)
}

/// Whether `caller` may deploy by hand to each of `envs`: an environment's
/// `deploy_role` may ask more than an operator. An environment that does
/// not exist asks nothing here (what deploys to it is refused elsewhere).
pub(crate) async fn may_deploy<'a>(
    store: &dyn crate::store::Store,
    caller: &Caller,
    envs: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    for env in envs {
        match crate::environments::get(store, env).await {
            Ok(record) => {
                let what = format!("environment {env:?}");
                crate::core::authz::may_deploy(caller, &what, record.spec.deploy_role)
                    .map_err(ApiError::PermissionDenied)?
            }
            Err(crate::environments::EnvironmentsError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The environments a pipeline's deploy jobs deploy to (waves' too).
pub(crate) fn deploy_envs(pipeline: &drover_pipeline::Pipeline) -> Vec<&str> {
    let mut envs: Vec<&str> = Vec::new();
    for deploy in pipeline.jobs.iter().filter_map(|j| j.deploy.as_ref()) {
        let waves = deploy.waves.iter().filter_map(|w| w.environment.as_deref());
        for env in std::iter::once(deploy.environment.as_str()).chain(waves) {
            if !envs.contains(&env) {
                envs.push(env);
            }
        }
    }
    envs
}

/// [`authorize`], for handlers that want only the caller's name.
pub(crate) fn allowed<T>(req: &Request<T>, action: Action) -> Result<String, ApiError> {
    Ok(authorize(req, action)?.name().to_owned())
}

/// The labels an agent's certificate gives it (`drover certs issue-agent
/// --labels`): the only labels it may have.
pub(crate) fn agent_cert_labels<T>(req: &Request<T>) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let leaf = req
        .peer_certs()
        .and_then(|certs| certs.first().cloned())
        .ok_or_else(|| ApiError::PermissionDenied("a client certificate is required".into()))?;
    drover_pki::labels::agent_labels_from_der(leaf.as_ref()).map_err(|e| {
        ApiError::PermissionDenied(format!(
            "cannot read the labels in the agent's certificate: {e}; issue it again with `drover certs issue-agent`"
        ))
    })
}

/// Only agent certificates may open agent sessions; returns the agent's name.
pub(crate) fn require_agent<T>(req: &Request<T>) -> Result<String, ApiError> {
    match peer(req)? {
        Peer::Agent(name) => Ok(name),
        Peer::Admin(name) | Peer::User(name) => Err(ApiError::PermissionDenied(format!(
            "certificate {name:?} is not an agent certificate; issue one with `drover certs issue-agent NAME --dir DIR --labels k=v,...`"
        ))),
        Peer::Other { org, name } => Err(ApiError::PermissionDenied(format!(
            "certificate {name:?} has unknown role {org:?}; issue one with `drover certs issue-agent NAME --dir DIR --labels k=v,...`"
        ))),
    }
}
