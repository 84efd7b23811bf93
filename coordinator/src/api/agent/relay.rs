//! A follower carries the agents connected to it to the leader, so that
//! agents stay where they are connected and the leader need not hold every
//! agent's connection. Each agent call (the session and the transfers) is
//! made again on the follower's link to the leader (`crate::relay`), with
//! the agent's certificate (as this follower verified it) and address in the
//! metadata ([`api::RELAYED_AGENT`]); the leader checks and serves it as if
//! the agent had called it (`api::relayed`): its own identity checks, the
//! agent's input validated at its edge, the epoch in every message, so
//! fencing is unchanged. The follower reads nothing the agent sends.
//!
//! - **Where a call goes** ([`route`]). To the leader the role names, if it
//!   says it serves carried calls (`LeaderInfo::carries`; one from before
//!   relaying is left to the agents, as before). With none named (an
//!   election), or only one passed over, the call waits for one for up to
//!   [`Relaying::wait`] (three quarters of the election TTL, less than an
//!   agent waits for the answer); then it is refused as before (none
//!   named), or the agent comes back (one passed over). A call that a
//!   coordinator carried is never carried again.
//! - **When the leader goes.** A relayed session that the leader ends or
//!   loses (it died, its term ended, the link broke) is ended with
//!   [`ApiError::ComeBack`]: a redirect to this coordinator, which the agent
//!   follows over the connection it has. A refusal the leader made (a
//!   revoked or misnamed agent) is passed on as it is.
//!   The follower then passes that leader over ([`crate::relay::Relay::suspect`],
//!   for an election TTL: a frozen leader is named until its election lease
//!   lapses), and carries what comes back once another is named. Its link
//!   PINGs the leader every eighth of the election TTL, so a frozen leader
//!   is noticed before the carried agents' heartbeats would notice it.
//! - **When the leader does not lead yet** (its term starts once its
//!   controllers have) or no longer, and says so, the agent is asked back
//!   after [`NOT_LEADING_PAUSE`] or a change of leader, whichever is first.
//! - **When the leader cannot be reached** at the start of a session (by
//!   the same deadline), the agent comes back if another leads by then or
//!   nothing listens at the leader's address (it died; an election
//!   follows); otherwise it is sent to the leader itself (as before
//!   relaying), which it may reach where this follower cannot.

use std::pin::Pin;
use std::time::Duration;

use drover_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::{AgentApi, SessionStream};
use crate::api::status::ApiError;
use crate::api::{RELAYED_AGENT, RELAYED_FROM, Relayed};
use crate::leader::Role;
use crate::metrics::METRICS;

/// How long a session the leader answered "not leading" waits for the role
/// to change before the agent is asked back: it paces the agent's returns
/// while the leader starts its term.
const NOT_LEADING_PAUSE: Duration = Duration::from_millis(250);

/// What a follower needs to relay.
pub struct Relaying {
    pub relay: std::sync::Arc<crate::relay::Relay>,
    /// Where agents reach this coordinator (`--advertise`): where they come
    /// back to.
    pub here: String,
    /// How long a call waits for a leader to be named or reachable.
    pub wait: Duration,
}

/// Where an agent's call goes.
pub(super) enum Route<'a> {
    /// Served here: this coordinator leads, cannot carry the call (no CA
    /// key, a call already carried, a leader from before relaying), or no
    /// leader was named in time (then refused as a follower's).
    Here,
    /// Carried over `link` to the leader at `leader`, answered by
    /// `deadline`.
    Carry { relaying: &'a Relaying, link: Channel, leader: String, deadline: Instant },
    /// The leader named is passed over (it stopped answering) and no other
    /// was named in time: the agent comes back, for the reason given.
    ComeBack { relaying: &'a Relaying, why: String },
}

/// Where `req` goes: to the leader the role names, waiting up to
/// [`Relaying::wait`] for one to be named, or for another than one passed
/// over.
pub(super) async fn route<'a, T>(api: &'a AgentApi, req: &Request<T>) -> Route<'a> {
    let Some(relaying) = api.relaying.as_ref() else {
        return Route::Here;
    };
    if req.extensions().get::<Relayed>().is_some() {
        return Route::Here;
    }
    let deadline = Instant::now() + relaying.wait;
    let mut role = api.role.clone();
    loop {
        let leader = match &*role.borrow_and_update() {
            Role::Leader { .. } => return Route::Here,
            // A leader from before relaying would refuse what we carry.
            Role::Follower { leader: Some(l) } if !l.carries => return Route::Here,
            Role::Follower { leader } => leader.as_ref().map(|l| l.url.clone()),
        };
        if let Some(url) = leader.as_ref().filter(|url| !relaying.relay.is_suspect(url)) {
            return match relaying.relay.channel(url) {
                Ok(Some(link)) => Route::Carry { relaying, link, leader: url.clone(), deadline },
                Ok(None) => Route::Here,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot carry agents to the leader; sending them there");
                    Route::Here
                }
            };
        }
        if tokio::time::timeout_at(deadline, role.changed()).await.is_err() {
            return match leader {
                Some(url) => Route::ComeBack {
                    relaying,
                    why: format!("the leader at {url} does not answer; an election follows"),
                },
                None => Route::Here,
            };
        }
    }
}

impl Relaying {
    /// The agent is asked back to this coordinator, for `why`.
    fn come_back(&self, why: String) -> Status {
        come_back(&self.here, why)
    }
}

/// The agent is asked back to `here`, for `why`.
fn come_back(here: &str, why: String) -> Status {
    ApiError::ComeBack { here: here.to_string(), why }.into()
}

/// The metadata that names the agent a relayed call is for.
fn relayed<T>(req: &Request<T>) -> Result<MetadataMap, Status> {
    let leaf = req
        .peer_certs()
        .and_then(|certs| certs.first().cloned())
        .ok_or_else(|| ApiError::Unauthenticated("a client certificate is required".into()))?;
    let mut metadata = MetadataMap::new();
    metadata.insert_bin(RELAYED_AGENT, MetadataValue::from_bytes(leaf.as_ref()));
    if let Some(value) = req.remote_addr().and_then(|a| a.to_string().parse().ok()) {
        metadata.insert(RELAYED_FROM, value);
    }
    Ok(metadata)
}

/// `message` with the relayed agent's metadata.
fn request<M>(metadata: MetadataMap, message: M) -> Request<M> {
    let mut request = Request::new(message);
    *request.metadata_mut() = metadata;
    request
}

/// What the agent sends, until it stops or breaks.
fn upstream<M>(inbound: Streaming<M>) -> impl Stream<Item = M> {
    inbound.map_while(Result::ok)
}

/// Whether `status` is the leader's own refusal of what the agent is or
/// sent, to pass on as it is; anything else (the leader went, the link
/// broke, the term ended) makes the agent come back.
fn refusal(status: &Status) -> bool {
    use tonic::Code::*;
    std::error::Error::source(status).is_none()
        && matches!(status.code(), PermissionDenied | InvalidArgument | FailedPrecondition | AlreadyExists)
}

/// An agent's session, carried to the leader over `link`.
pub(super) async fn session(
    api: &AgentApi,
    route: Route<'_>,
    req: Request<Streaming<pb::AgentMessage>>,
) -> Result<Response<SessionStream>, Status> {
    let (relaying, link, leader, deadline) = match route {
        Route::Carry { relaying, link, leader, deadline } => (relaying, link, leader, deadline),
        Route::ComeBack { relaying, why } => return Err(relaying.come_back(why)),
        Route::Here => return super::session::open(api, req).await,
    };
    let metadata = relayed(&req)?;
    let up = upstream(req.into_inner());
    let opened = tokio::time::timeout_at(deadline, AgentServiceClient::new(link).session(request(metadata, up))).await;
    let status = match opened {
        Ok(Ok(answer)) => {
            let (relay, gone) = (relaying.relay.clone(), leader.clone());
            let (here, back) = (relaying.here.clone(), relaying.here.clone());
            // Counted while the agent's stream lasts: the guard moves into
            // the stream's closure and is dropped with it.
            let carried = Carried::new();
            let down = answer.into_inner().map(move |item| {
                let _held = &carried;
                item.map_err(|status| match refusal(&status) {
                    true => status,
                    false => {
                        debug!(%status, "the leader ended a carried session");
                        // The link broke (the leader died, froze or is cut
                        // off): pass it over until the next is named.
                        if std::error::Error::source(&status).is_some() {
                            relay.suspect(&gone);
                        }
                        let why = format!("the session with the leader ended ({})", status.message());
                        come_back(&back, why)
                    }
                })
            });
            // The leader ended the stream: the agent comes back. (After an
            // error tonic sends nothing more, so this follows only a clean
            // end.)
            let why = "the leader ended the session".to_string();
            let end = tokio_stream::once(Err(come_back(&here, why)));
            let stream: Pin<Box<dyn Stream<Item = _> + Send>> = Box::pin(down.chain(end));
            return Ok(Response::new(stream));
        }
        // It does not lead (yet: its term starts once its controllers have;
        // or no longer): come back, a moment later, and be carried to
        // whoever leads then.
        Ok(Err(status)) if status.metadata().contains_key(drover_proto::metadata::NOT_LEADER) => {
            let pause = deadline.min(Instant::now() + NOT_LEADING_PAUSE);
            let mut role = api.role.clone();
            let _ = tokio::time::timeout_at(pause, role.changed()).await;
            let why = format!("the leader at {leader} does not lead now ({})", status.message());
            return Err(relaying.come_back(why));
        }
        // The leader's own refusal of the agent.
        Ok(Err(status)) if std::error::Error::source(&status).is_none() => return Err(status),
        Ok(Err(status)) => status,
        Err(_) => Status::deadline_exceeded(format!("the leader did not answer within {:?}", relaying.wait)),
    };
    debug!(%status, %leader, "cannot carry a session to the leader");
    relaying.relay.suspect(&leader);
    let changed = match &*api.role.borrow() {
        Role::Follower { leader: Some(l) } => l.url != leader,
        _ => true,
    };
    if changed || refused_connection(&status) {
        // Another leads now, or nothing listens at the leader's address (it
        // died, and an election follows): come back, and be carried to
        // the next.
        let why = format!("the leader at {leader} could not be reached ({})", status.message());
        return Err(relaying.come_back(why));
    }
    // It may be cut off from this follower alone: the agent tries it.
    Err(ApiError::NotLeader(Some(leader)).into())
}

/// One agent session carried, for `drover_agents_carried`: counted from
/// when the leader takes it until the agent's stream is dropped.
struct Carried;

impl Carried {
    fn new() -> Carried {
        METRICS.agents_carried.add(1);
        Carried
    }
}

impl Drop for Carried {
    fn drop(&mut self) {
        METRICS.agents_carried.add(-1);
    }
}

/// Whether `status` is a connection the leader's host refused: nothing
/// listens at its address.
fn refused_connection(status: &Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The status a relayed transfer ends with: the leader's own, or, when the
/// link broke, one the agent retries (it resumes on its next session).
fn transfer_status(status: Status) -> Status {
    match std::error::Error::source(&status) {
        None => status,
        Some(_) => Status::unavailable(format!("the link to the leader broke: {}", status.message())),
    }
}

pub(super) async fn put_blob(
    link: Channel,
    req: Request<Streaming<pb::BlobUpload>>,
) -> Result<Response<pb::PutBlobResponse>, Status> {
    let metadata = relayed(&req)?;
    let up = upstream(req.into_inner());
    let answer = AgentServiceClient::new(link).put_blob(request(metadata, up)).await.map_err(transfer_status)?;
    Ok(Response::new(answer.into_inner()))
}

pub(super) type BlobStream = Pin<Box<dyn Stream<Item = Result<pb::BlobData, Status>> + Send>>;

pub(super) async fn get_blob(link: Channel, req: Request<pb::GetBlobRequest>) -> Result<Response<BlobStream>, Status> {
    let metadata = relayed(&req)?;
    let answer =
        AgentServiceClient::new(link).get_blob(request(metadata, req.into_inner())).await.map_err(transfer_status)?;
    let down = answer.into_inner().map(|item| item.map_err(transfer_status));
    Ok(Response::new(Box::pin(down)))
}

pub(super) async fn restore_cache(
    link: Channel,
    req: Request<pb::RestoreCacheRequest>,
) -> Result<Response<pb::RestoreCacheResponse>, Status> {
    let metadata = relayed(&req)?;
    let answer = AgentServiceClient::new(link)
        .restore_cache(request(metadata, req.into_inner()))
        .await
        .map_err(transfer_status)?;
    Ok(Response::new(answer.into_inner()))
}

pub(super) async fn save_cache(
    link: Channel,
    req: Request<pb::SaveCacheRequest>,
) -> Result<Response<pb::SaveCacheResponse>, Status> {
    let metadata = relayed(&req)?;
    let answer =
        AgentServiceClient::new(link).save_cache(request(metadata, req.into_inner())).await.map_err(transfer_status)?;
    Ok(Response::new(answer.into_inner()))
}
