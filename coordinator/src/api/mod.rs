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
    if let Some(relayed) = req.extensions().get::<Relayed>() {
        return Ok(relayed.presented.clone());
    }
    tls_certificate(req)
}

/// The certificate the client presented in the TLS handshake, read.
fn tls_certificate<T>(req: &Request<T>) -> Result<Presented, ApiError> {
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

/// The metadata a follower puts on an agent's call it relays to the
/// leader (`crate::relay`): the agent's certificate (DER), as the follower
/// verified it in its own TLS handshake with the agent, and the address the
/// agent connected from.
pub(crate) const RELAYED_AGENT: &str = "drover-relayed-agent-bin";
pub(crate) const RELAYED_FROM: &str = "drover-relayed-from";

/// An agent's call that a follower relayed: the agent's certificate stands
/// for the caller, as if the agent had presented it here. Only a
/// coordinator's certificate may relay ([`relayed`]); the metadata on
/// anyone else's call is not read.
#[derive(Debug, Clone)]
pub(crate) struct Relayed {
    der: Vec<u8>,
    presented: Presented,
    /// Where the agent connected from, as the follower saw it.
    pub from: Option<std::net::SocketAddr>,
    /// The follower's id.
    pub via: String,
}

/// The agent a coordinator's call relays, from its metadata; none when the
/// caller (`tls`, its own certificate) is not a coordinator or relays
/// nobody. A relayed certificate must be an agent's, named in its subject
/// alone: a follower carries agents' sessions and transfers, nothing else.
pub(crate) fn relayed(tls: &Presented, metadata: &tonic::metadata::MetadataMap) -> Result<Option<Relayed>, ApiError> {
    let Peer::Coordinator(via) = &tls.peer else {
        return Ok(None);
    };
    let Some(value) = metadata.get_bin(RELAYED_AGENT) else {
        return Ok(None);
    };
    let refused = |why: String| ApiError::PermissionDenied(format!("coordinator {via:?} relays a call that {why}"));
    let der = value.to_bytes().map_err(|e| refused(format!("carries an agent certificate that is not base64: {e}")))?;
    let presented = inspect(&der).map_err(|e| refused(format!("carries an unreadable agent certificate: {e}")))?;
    if !matches!(presented.peer, Peer::Agent(_)) || presented.sans > 0 {
        return Err(refused(format!("is not an agent's ({:?}, {} SANs)", presented.peer, presented.sans)));
    }
    let from = metadata.get(RELAYED_FROM).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    Ok(Some(Relayed { der: der.to_vec(), presented, from, via: via.clone() }))
}

/// Where an agent's call comes from, for its record and the audit log: the
/// agent's address, and the follower that relayed it if one did.
pub(crate) fn agent_source<T>(req: &Request<T>) -> (Option<std::net::SocketAddr>, String) {
    match req.extensions().get::<Relayed>() {
        Some(r) => {
            let at = r.from.map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
            (r.from, format!("{at} via coordinator {}", r.via))
        }
        None => {
            let remote = req.remote_addr();
            (remote, remote.map_or_else(|| "an unknown address".to_string(), |a| a.to_string()))
        }
    }
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
        let mut cert = tls_certificate(&req)?;
        // A follower relaying an agent's call: the agent is the caller.
        if let Some(relayed) = relayed(&cert, req.metadata())? {
            cert = relayed.presented.clone();
            req.extensions_mut().insert(relayed);
        }
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
    let tls = req.peer_certs().and_then(|certs| certs.first().cloned());
    let leaf: &[u8] = match (req.extensions().get::<Relayed>(), &tls) {
        (Some(relayed), _) => &relayed.der,
        (None, Some(leaf)) => leaf.as_ref(),
        (None, None) => return Err(ApiError::PermissionDenied("a client certificate is required".into())),
    };
    drover_pki::labels::agent_labels_from_der(leaf).map_err(|e| {
        ApiError::PermissionDenied(format!(
            "cannot read the labels in the agent's certificate: {e}; issue it again with `drover certs issue-agent`"
        ))
    })
}

/// Only agent certificates may open agent sessions; returns the agent's name.
pub(crate) fn require_agent<T>(req: &Request<T>) -> Result<String, ApiError> {
    match peer(req)? {
        Peer::Agent(name) => Ok(name),
        Peer::Admin(name) | Peer::User(name) | Peer::Coordinator(name) => Err(ApiError::PermissionDenied(format!(
            "certificate {name:?} is not an agent certificate; issue one with `drover certs issue-agent NAME --dir DIR --labels k=v,...`"
        ))),
        Peer::Other { org, name } => Err(ApiError::PermissionDenied(format!(
            "certificate {name:?} has unknown role {org:?}; issue one with `drover certs issue-agent NAME --dir DIR --labels k=v,...`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use drover_pki::enroll::{Authority, agent_request};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use tonic::metadata::{MetadataMap, MetadataValue};

    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    }

    /// A follower's metadata naming the agent certificate `der`.
    fn naming(der: &[u8], from: Option<&str>) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert_bin(RELAYED_AGENT, MetadataValue::from_bytes(der));
        if let Some(from) = from {
            metadata.insert(RELAYED_FROM, from.parse().unwrap());
        }
        metadata
    }

    #[test]
    fn only_a_coordinator_relays_and_only_an_agents_calls() {
        let now = 1_800_000_000_000;
        let ca = Authority::generate(now).unwrap();
        let ttl = Duration::from_secs(3600);
        let (_, csr) = agent_request("a1").unwrap();
        let agent = der(&ca.sign_agent(&csr, "a1", &Default::default(), now, ttl).unwrap().pem);
        let (_, csr) = agent_request("alice").unwrap();
        let user = der(&ca.sign_user(&csr, "alice", now, ttl).unwrap().pem);
        let coordinator = inspect(&der(&ca.sign_coordinator_client("c2", now, ttl).unwrap().cert_pem)).unwrap();
        let as_agent = inspect(&agent).unwrap();

        // A follower relays an agent: the agent is the caller, from where
        // it connected, via the follower.
        let relayed_agent = relayed(&coordinator, &naming(&agent, Some("10.0.0.5:4000"))).unwrap().unwrap();
        assert_eq!(relayed_agent.presented, as_agent);
        assert_eq!(relayed_agent.via, "c2");
        assert_eq!(relayed_agent.from, Some("10.0.0.5:4000".parse().unwrap()));
        // A coordinator that relays nobody is itself (and may do nothing).
        assert!(relayed(&coordinator, &MetadataMap::new()).unwrap().is_none());
        // Anyone else's metadata is not read: an agent cannot pass itself
        // off as another.
        assert!(relayed(&as_agent, &naming(&agent, None)).unwrap().is_none());
        // A follower relays agents alone: a user's certificate, or junk, is
        // refused.
        for (what, bad) in [("a user's", user), ("junk", b"junk".to_vec())] {
            let e = relayed(&coordinator, &naming(&bad, None)).unwrap_err();
            assert!(
                matches!(&e, ApiError::PermissionDenied(m) if m.starts_with("coordinator \"c2\" relays a call that")),
                "{what}: {e}"
            );
        }
    }
}
