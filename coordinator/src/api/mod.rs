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
use drover_pki::peer::{Peer, peer_from_der};
use status::ApiError;

/// The scheduler and epoch when this coordinator leads; otherwise an error
/// that tells the client where the leader is.
pub(crate) fn leader(role: &watch::Receiver<Role>) -> Result<(Handle, u64), ApiError> {
    match &*role.borrow() {
        Role::Leader { sched, epoch } => Ok((sched.clone(), *epoch as u64)),
        Role::Follower { leader } => Err(ApiError::NotLeader(leader.as_ref().map(|l| l.url.clone()))),
    }
}

/// The caller's identity from its verified client certificate.
fn peer<T>(req: &Request<T>) -> Result<Peer, ApiError> {
    let certs =
        req.peer_certs().ok_or_else(|| ApiError::PermissionDenied("a client certificate is required".into()))?;
    let leaf = certs.first().ok_or_else(|| ApiError::PermissionDenied("a client certificate is required".into()))?;
    peer_from_der(leaf.as_ref())
        .map_err(|e| ApiError::PermissionDenied(format!("cannot read the client certificate's subject: {e}")))
}

/// Only admin certificates may use the control API.
pub(crate) fn require_admin<T>(req: &Request<T>) -> Result<String, ApiError> {
    match peer(req)? {
        Peer::Admin(name) => Ok(name),
        Peer::Agent(name) => Err(ApiError::PermissionDenied(format!(
            "the certificate of agent {name:?} cannot use the control API; use an admin certificate (DIR/admin from `drover certs init --dir DIR`)"
        ))),
        Peer::Other { org, name } => Err(ApiError::PermissionDenied(format!(
            "certificate {name:?} has unknown role {org:?}; use an admin certificate"
        ))),
    }
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
        Peer::Admin(name) => Err(ApiError::PermissionDenied(format!(
            "certificate {name:?} is not an agent certificate; issue one with `drover certs issue-agent NAME --dir DIR --labels k=v,...`"
        ))),
        Peer::Other { org, name } => Err(ApiError::PermissionDenied(format!(
            "certificate {name:?} has unknown role {org:?}; issue one with `drover certs issue-agent NAME --dir DIR --labels k=v,...`"
        ))),
    }
}
