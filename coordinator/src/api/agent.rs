//! The agent-facing service: one bidirectional stream per agent. The first
//! message must be a Hello naming the same agent as the client certificate;
//! after that every message is converted and forwarded to the scheduler in
//! order, and the scheduler's replies flow back on the response stream.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::time::Instant;

use drover_proto::v1 as pb;
use pb::agent_message::Msg as In;
use pb::coordinator_message::Msg as Out;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use super::blobs::{self, artifact};
use super::control::artifact_view;
use super::status::ApiError;
use crate::blobs::Blobs;
use crate::caches::Caches;
use crate::core::fleet::{AttemptId, ToAgent, Work};
use crate::core::machine::Outcome;
use crate::leader::Role;
use crate::scheduler::Event;
use crate::secrets::Vault;

pub struct AgentApi {
    pub(super) role: watch::Receiver<Role>,
    next_conn: AtomicU64,
    /// The attempt lease TTL: heartbeats that change nothing go to the
    /// scheduler (and renew leases) every quarter of it.
    lease_ttl: Duration,
    /// Where artifacts go, and the most bytes one may have.
    pub(super) blobs: Arc<Blobs>,
    pub(super) max_artifact_bytes: u64,
    /// The most bytes one file in an artifact may have, sent to agents.
    max_artifact_file_bytes: u64,
    /// Where the secrets of an Assign come from.
    vault: Arc<Vault>,
    /// The caches agents restore and save.
    pub(super) caches: Arc<Caches>,
    /// Who may hold a session: the deny list and enrolled certificates.
    gate: Arc<crate::identity::Gate>,
    /// Where refusals are audited.
    store: Arc<dyn crate::store::Store>,
    /// Refused sessions audited once a minute per name.
    refusals: crate::audit::Throttle,
    /// The key of the attempts' job tokens.
    pub(super) job_key: Arc<crate::identity::job_key::JobKey>,
    /// How this coordinator carries agents to the leader while it follows;
    /// none: it sends them there.
    relaying: Option<relay::Relaying>,
}

impl AgentApi {
    pub fn new(
        role: watch::Receiver<Role>,
        lease_ttl: Duration,
        blobs: Arc<Blobs>,
        (max_artifact_bytes, max_artifact_file_bytes): (u64, u64),
        vault: Arc<Vault>,
        caches: Arc<Caches>,
        (gate, store): (Arc<crate::identity::Gate>, Arc<dyn crate::store::Store>),
    ) -> AgentApi {
        let next_conn = AtomicU64::new(1);
        AgentApi {
            role,
            next_conn,
            lease_ttl,
            blobs,
            max_artifact_bytes,
            max_artifact_file_bytes,
            vault,
            caches,
            gate,
            job_key: Arc::new(crate::identity::job_key::JobKey::new(store.clone())),
            store,
            refusals: crate::audit::Throttle::default(),
            relaying: None,
        }
    }

    /// Carries the agents connected to this coordinator to the leader while
    /// it follows (`relay`).
    pub fn relaying(mut self, relaying: relay::Relaying) -> AgentApi {
        self.relaying = Some(relaying);
        self
    }
}

/// Decides which of a session's heartbeats go on to the scheduler. Every
/// heartbeat is acknowledged at the edge as it arrives (so an agent can tell
/// a frozen coordinator from a quiet one), but only those that say something
/// new (what the agent runs, whether it drains, whether it is ready) or that
/// are due to renew leases reach the scheduler: agents heartbeat often for
/// the sake of failure detection, and the scheduler need not hear them all.
#[derive(Debug)]
struct HeartbeatGate {
    /// Send one on at least this often, so leases are renewed.
    every: Duration,
    last: Option<(Instant, Vec<AttemptId>, bool, String)>,
    /// The latest heartbeat sent on to the scheduler.
    renewed_seq: u64,
}

impl HeartbeatGate {
    fn new(every: Duration) -> HeartbeatGate {
        HeartbeatGate { every, last: None, renewed_seq: 0 }
    }

    /// Whether heartbeat number `seq` (as the edge converted it, `event`),
    /// arriving at `now`, goes on to the scheduler; and the
    /// acknowledgement's `renewed_seq`.
    fn take(&mut self, seq: u64, event: &Event, now: Instant) -> (bool, u64) {
        let Event::Heartbeat { running: held, draining: drains, unready: why, .. } = event else {
            return (false, self.renewed_seq);
        };
        let forward = match &self.last {
            None => true,
            Some((at, running, draining, unready)) => {
                now.duration_since(*at) >= self.every || running != held || draining != drains || unready != why
            }
        };
        if forward {
            self.last = Some((now, held.clone(), *drains, why.clone()));
            self.renewed_seq = seq;
        }
        (forward, self.renewed_seq)
    }
}

/// The values of an attempt's secrets, read from the vault as its Assign
/// goes out (so never held by the scheduler or written with the run), or
/// the message the agent fails the attempt with when one cannot be had.
async fn resolve_secrets(
    vault: &Vault,
    names: &[String],
    withheld_from: Option<&str>,
) -> (BTreeMap<String, Vec<u8>>, String) {
    if names.is_empty() {
        return (BTreeMap::new(), String::new());
    }
    // A pull request runs code its author chose; a repository's secrets go
    // only to the pull requests of a repository its admins trust.
    if let Some(repo) = withheld_from {
        let error = format!(
            "secrets are withheld from pull-request runs of repository {repo}, which is not trusted; mark it \
             trusted with `drover repo rm {repo}` and `drover repo add {repo} --url URL --trusted` if its pull \
             requests may read secrets"
        );
        return (BTreeMap::new(), error);
    }
    match vault.resolve(names).await {
        Ok((values, missing)) if missing.is_empty() => (values, String::new()),
        Ok((_, missing)) => {
            let list = missing.join(", ");
            let error = format!(
                "secret {list} no longer exists (deleted after the run was submitted); set it with \
                 `drover secret set {}` and rerun",
                missing[0]
            );
            (BTreeMap::new(), error)
        }
        Err(e) => {
            warn!(error = %e, "cannot deliver an attempt's secrets");
            (BTreeMap::new(), format!("the coordinator could not deliver the job's secrets: {e}"))
        }
    }
}

/// A job's `cache:` as the agent gets it: the key's parts, the paths and
/// the restore-keys.
fn cache_work(c: drover_pipeline::CacheSpec) -> pb::CacheWork {
    use drover_pipeline::KeyPart;
    let key = c
        .key
        .parts
        .into_iter()
        .map(|part| pb::CacheKeyPart {
            part: Some(match part {
                KeyPart::Literal(text) => pb::cache_key_part::Part::Text(text),
                KeyPart::HashFiles(globs) => pb::cache_key_part::Part::HashFiles(pb::HashFiles { globs }),
            }),
        })
        .collect();
    pb::CacheWork { key, paths: c.paths, restore_keys: c.restore_keys }
}

/// What converting a session's messages takes.
pub(super) struct Outbound {
    /// The agent's name, which its attempts' job tokens are bound to.
    pub name: String,
    /// The leadership term the session belongs to, which agents use to
    /// refuse a deposed leader.
    pub epoch: u64,
    /// `--max-artifact-bytes` and `--max-artifact-file-bytes`.
    pub limits: (u64, u64),
    pub vault: Arc<Vault>,
    pub job_key: Arc<[u8; 32]>,
    /// For the Welcome: when the agent's certificate is due for renewal (0:
    /// never), and the CAs to trust (empty: as they are).
    pub renew_at: i64,
    pub bundle: String,
    /// The follower carrying the session (its id), or empty.
    pub carried_by: String,
}

/// Converts a scheduler message for the session `out` describes. An
/// Assign's secrets are resolved here, at the last moment, and its job
/// token made.
async fn to_proto(msg: ToAgent, out: &Outbound) -> pb::CoordinatorMessage {
    let (epoch, vault, (renew_at, bundle)) = (out.epoch, out.vault.as_ref(), (out.renew_at, out.bundle.as_str()));
    let (max_artifact_bytes, max_artifact_file_bytes) = out.limits;
    let msg = match msg {
        ToAgent::Welcome { heartbeat, idle_heartbeat, lease_ttl, epoch, ack_timeout, fence } => {
            Out::Welcome(pb::Welcome {
                epoch,
                heartbeat_ms: heartbeat.as_millis() as u32,
                idle_heartbeat_ms: idle_heartbeat.as_millis() as u32,
                lease_ttl_ms: lease_ttl.as_millis() as u32,
                ack_timeout_ms: ack_timeout.as_millis() as u32,
                fence_ms: fence.as_millis() as u32,
                renew_cert_at_ms: renew_at,
                ca_pem: bundle.to_owned(),
                carried_by: out.carried_by.clone(),
            })
        }
        ToAgent::Trust { ca_pem, renew_cert_at_ms } => Out::Trust(pb::Trust { ca_pem, renew_cert_at_ms }),
        ToAgent::IdlePeriod { idle_heartbeat } => {
            Out::IdlePeriod(pb::IdlePeriod { idle_heartbeat_ms: idle_heartbeat.as_millis() as u32 })
        }
        ToAgent::HeartbeatAck { seq, renewed_seq } => Out::HeartbeatAck(pb::HeartbeatAck { seq, renewed_seq }),
        ToAgent::Assign(a) => {
            let work = match a.work {
                Work::Job {
                    steps,
                    env,
                    timeout,
                    checkout,
                    artifacts,
                    inputs,
                    secrets,
                    cache,
                    need_results,
                    branch,
                    tag,
                    matrix,
                    event,
                    withhold_secrets,
                } => {
                    let (secrets, secrets_error) = resolve_secrets(vault, &secrets, withhold_secrets.as_deref()).await;
                    pb::assign::Work::Job(pb::JobWork {
                        run_id: a.id.run.to_string(),
                        job: a.id.job.clone(),
                        attempt: a.id.attempt,
                        steps: steps
                            .into_iter()
                            .map(|s| pb::Step {
                                name: s.name.unwrap_or_default(),
                                run: s.run,
                                condition: s.condition.map(|c| c.text().to_string()).unwrap_or_default(),
                            })
                            .collect(),
                        env: env.into_iter().collect(),
                        timeout_ms: timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
                        checkout: checkout.map(|(repo, commit)| pb::Checkout { repo, commit }),
                        artifacts: artifacts.map(|a| pb::ArtifactSpec {
                            paths: a.paths,
                            ignore_missing: a.if_no_files == drover_pipeline::IfNoFiles::Ignore,
                            max_bytes: max_artifact_bytes,
                            max_file_bytes: max_artifact_file_bytes,
                        }),
                        inputs: inputs
                            .into_iter()
                            .map(|(job, a)| pb::ArtifactInput { job, artifact: Some(artifact_view(&a)) })
                            .collect(),
                        secrets: secrets.into_iter().collect(),
                        secrets_error,
                        cache: cache.map(cache_work),
                        need_results: need_results.into_iter().collect(),
                        branch: branch.unwrap_or_default(),
                        tag: tag.unwrap_or_default(),
                        matrix: matrix.into_iter().collect(),
                        event: event.as_str().to_string(),
                        job_token: crate::core::job_token::mint(out.job_key.as_ref(), &out.name, &a.id.to_string()),
                    })
                }
            };
            Out::Assign(pb::Assign {
                attempt_id: a.id.to_string(),
                epoch,
                traceparent: a.traceparent.unwrap_or_default(),
                log_cap: a.log_cap,
                work: Some(work),
            })
        }
        ToAgent::Cancel { id, reason, disown } => {
            Out::Cancel(pb::Cancel { attempt_id: id.to_string(), reason, epoch, disown })
        }
        ToAgent::Deploy(a) => Out::Deploy(super::deploys::action(*a, epoch)),
        ToAgent::ServiceLogs { request_id, service, offset, max_bytes } => {
            Out::ServiceLogs(pb::ServiceLogsRequest { request_id, service, offset, max_bytes })
        }
        ToAgent::LogAck { id, offset } => Out::LogAck(pb::LogAck { attempt_id: id.to_string(), offset }),
        ToAgent::ResultAck { id, accepted } => Out::ResultAck(pb::ResultAck { attempt_id: id.to_string(), accepted }),
    };
    pb::CoordinatorMessage { msg: Some(msg) }
}

/// Converts one message after the Hello into a scheduler event. Every
/// attempt id is parsed here, once: a malformed one refuses its message.
fn to_event(conn: u64, name: &str, msg: In) -> Result<Event, ApiError> {
    let name = name.to_string();
    Ok(match msg {
        In::Hello(_) => return Err(ApiError::Invalid("Hello may only be the first message".into())),
        In::Heartbeat(h) => {
            let running = check_held(&h.running).map_err(ApiError::Invalid)?;
            check_unready(&h.unready).map_err(ApiError::Invalid)?;
            let received = Instant::now();
            Event::Heartbeat { conn, name, running, draining: h.draining, unready: h.unready, received }
        }
        In::HookOutput(h) => {
            let (rollout, seq, data) = super::deploys::hook_output(h).map_err(ApiError::Invalid)?;
            Event::HookOutput { conn, node: name, rollout, seq, data }
        }
        In::ServiceHealth(h) => {
            Event::ServiceHealth { conn, report: super::deploys::health(&name, h).map_err(ApiError::Invalid)? }
        }
        In::ServiceLogs(c) => {
            let (request_id, answer) = super::deploys::logs_chunk(c).map_err(ApiError::Invalid)?;
            Event::ServiceLogsChunk { conn, name, request_id, answer }
        }
        In::DeployReport(r) => {
            Event::DeployReport { conn, report: super::deploys::report(&name, r).map_err(ApiError::Invalid)? }
        }
        In::Accepted(a) => Event::Accepted { conn, name, id: attempt_id(&a.attempt_id).map_err(ApiError::Invalid)? },
        In::Log(l) => {
            let id = attempt_id(&l.attempt_id).map_err(ApiError::Invalid)?;
            Event::Log { conn, name, id, offset: l.offset, data: l.data }
        }
        In::Result(r) => {
            let id = attempt_id(&r.attempt_id).map_err(ApiError::Invalid)?;
            let outcome = match pb::Outcome::try_from(r.outcome) {
                Ok(pb::Outcome::Succeeded) => match (artifact(r.artifact), super::caches::note(r.cache)) {
                    (Ok(artifact), Ok(cache)) => Outcome::Succeeded { artifact, cache },
                    (Err(detail), _) | (_, Err(detail)) => Outcome::Failed { exit_code: -1, detail },
                },
                Ok(pb::Outcome::Failed) => {
                    Outcome::Failed { exit_code: r.exit_code, detail: bounded(&r.message, MAX_RESULT_MESSAGE) }
                }
                Ok(pb::Outcome::TimedOut) => Outcome::TimedOut,
                Ok(pb::Outcome::Cancelled) => Outcome::Cancelled,
                // Dropping the result would leave the attempt held and its
                // lease renewed for ever; end it, and retry where allowed.
                _ => Outcome::Lost { reason: format!("the agent reported an unknown outcome ({})", r.outcome) },
            };
            Event::Result { conn, name, id, outcome, message: r.message }
        }
    })
}

/// Most labels an agent may have.
pub const MAX_LABELS: usize = 64;
/// Longest label key and value, in bytes.
pub const MAX_LABEL_KEY: usize = 63;
pub const MAX_LABEL_VALUE: usize = 255;
/// Most slots an agent may offer (the agent's own flag allows as many).
pub const MAX_SLOTS: u32 = 1024;
/// Most attempts a Hello or heartbeat may list, and the longest id.
pub const MAX_HELD: usize = 4096;
pub const MAX_ATTEMPT_ID: usize = 512;

/// Checks what an agent says about itself at Hello, before anything of it
/// reaches the scheduler or the store: an agent is untrusted, and its
/// labels are stored with its record. Returns the attempts it holds.
fn check_hello(
    labels: &BTreeMap<String, String>,
    slots: u32,
    running: &[String],
    instance: &str,
    unready: &str,
) -> Result<Vec<AttemptId>, String> {
    if slots == 0 || slots > MAX_SLOTS {
        return Err(format!("an agent offers 1 to {MAX_SLOTS} slots, not {slots}"));
    }
    if labels.len() > MAX_LABELS {
        return Err(format!("{} labels are more than the limit of {MAX_LABELS}", labels.len()));
    }
    for (key, value) in labels {
        if key.is_empty() || key.len() > MAX_LABEL_KEY || value.is_empty() || value.len() > MAX_LABEL_VALUE {
            return Err(format!(
                "label {:?} must have a key of 1 to {MAX_LABEL_KEY} bytes and a value of 1 to {MAX_LABEL_VALUE} bytes",
                abbreviate(key)
            ));
        }
    }
    let held = check_held(running)?;
    check_unready(unready)?;
    if instance.len() > 64 {
        return Err("the instance id is longer than 64 bytes".into());
    }
    Ok(held)
}

/// The labels an agent gets: those its certificate gives it. Labels decide
/// where jobs (and later deployments and secrets) go, so they belong to the
/// coordinator, not to what the agent says; an agent that claims a label its
/// certificate does not give it is refused with what to do. Claiming fewer
/// (or none) is fine: the agent still gets all of its certificate's.
fn owned_labels(
    name: &str,
    claimed: &BTreeMap<String, String>,
    cert: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let beyond: Vec<String> =
        claimed.iter().filter(|(k, v)| cert.get(*k) != Some(*v)).map(|(k, v)| format!("{k}={v}")).collect();
    if beyond.is_empty() {
        return Ok(cert.clone());
    }
    let given = if cert.is_empty() {
        "none".to_string()
    } else {
        cert.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    };
    let wanted: BTreeMap<&String, &String> = cert.iter().chain(claimed.iter()).collect();
    let wanted = wanted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    Err(format!(
        "agent {name:?} claims labels its certificate does not give it: {} (the certificate gives: {given}); \
         labels belong to the coordinator: issue the agent a certificate with them \
         (`drover certs issue-agent {name} --dir DIR --labels {wanted}`), or drop them from --labels",
        beyond.join(",")
    ))
}

/// The longest reason an agent may give for not being ready.
pub const MAX_UNREADY: usize = 512;

fn check_unready(unready: &str) -> Result<(), String> {
    if unready.len() > MAX_UNREADY {
        return Err(format!("its reason for not being ready is longer than {MAX_UNREADY} bytes"));
    }
    Ok(())
}

/// The attempts a Hello or heartbeat lists, parsed.
fn check_held(running: &[String]) -> Result<Vec<AttemptId>, String> {
    if running.len() > MAX_HELD {
        return Err(format!("it lists {} attempts it holds, more than the limit of {MAX_HELD}", running.len()));
    }
    running.iter().map(|id| attempt_id(id)).collect()
}

/// An attempt id as an agent sends it, parsed. Ids come from the
/// coordinator's own assignments, so one that does not parse is the agent's
/// fault: the message carrying it is refused. One that parses but is no
/// longer the agent's is the fleet's to judge (it disowns it).
pub(super) fn attempt_id(id: &str) -> Result<AttemptId, String> {
    if id.len() > MAX_ATTEMPT_ID {
        return Err(format!("attempt id {:?} is longer than {MAX_ATTEMPT_ID} bytes", abbreviate(id)));
    }
    id.parse()
}

/// Whether `token` is attempt `id`'s job token on agent `name`
/// (`core::job_token`); a wrong one is a forgery, audited at warning level
/// (once a minute per agent name).
pub(super) async fn check_job_token(api: &AgentApi, name: &str, id: &AttemptId, token: &str) -> Result<(), Status> {
    let key = api.job_key.get().await.map_err(ApiError::from)?;
    let Err(e) = crate::core::job_token::check(key.as_ref(), name, &id.to_string(), token) else {
        return Ok(());
    };
    crate::metrics::METRICS.agent_refusals.inc();
    warn!(agent = %name, attempt = %id, reason = %e, "refused a job token");
    if matches!(e, crate::core::job_token::JobTokenError::Wrong { .. })
        && api.refusals.allow(name, std::time::Instant::now(), crate::audit::REFUSAL_EVERY).is_some()
    {
        let actor = format!("agent:{name}");
        let at = drover_telemetry::trace::now_ms() as i64;
        let entry = crate::audit::Entry::refused(at, &actor, "job-token", &id.to_string(), &e.to_string());
        crate::audit::record(api.store.as_ref(), entry.warning()).await;
    }
    Err(ApiError::PermissionDenied(e.to_string()).into())
}

/// The longest result message kept from an agent (it is stored with the
/// job); longer ones are cut, with an ellipsis.
pub const MAX_RESULT_MESSAGE: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

pub(super) fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    type SessionStream = SessionStream;
    type GetBlobStream = Pin<Box<dyn Stream<Item = Result<pb::BlobData, Status>> + Send>>;

    /// An agent uploads a job's artifacts (see `blobs::put`).
    async fn put_blob(&self, req: Request<Streaming<pb::BlobUpload>>) -> Result<Response<pb::PutBlobResponse>, Status> {
        match relay::route(self, &req).await {
            relay::Route::Here => {}
            relay::Route::Carry { link, .. } => return relay::put_blob(link, req).await,
            relay::Route::ComeBack { why, .. } => return Err(Status::unavailable(why)),
        }
        blobs::put(self, req).await
    }

    /// An agent downloads what an attempt of its needs (see `blobs::get`).
    async fn get_blob(&self, req: Request<pb::GetBlobRequest>) -> Result<Response<Self::GetBlobStream>, Status> {
        match relay::route(self, &req).await {
            relay::Route::Here => {}
            relay::Route::Carry { link, .. } => return relay::get_blob(link, req).await,
            relay::Route::ComeBack { why, .. } => return Err(Status::unavailable(why)),
        }
        blobs::get(self, req).await
    }

    /// The cache entry an attempt of the agent's restores (see `caches::restore`).
    async fn restore_cache(
        &self,
        req: Request<pb::RestoreCacheRequest>,
    ) -> Result<Response<pb::RestoreCacheResponse>, Status> {
        match relay::route(self, &req).await {
            relay::Route::Here => {}
            relay::Route::Carry { link, .. } => return relay::restore_cache(link, req).await,
            relay::Route::ComeBack { why, .. } => return Err(Status::unavailable(why)),
        }
        super::caches::restore(self, req).await
    }

    /// Records what an attempt of the agent's saved (see `caches::save`).
    async fn save_cache(&self, req: Request<pb::SaveCacheRequest>) -> Result<Response<pb::SaveCacheResponse>, Status> {
        match relay::route(self, &req).await {
            relay::Route::Here => {}
            relay::Route::Carry { link, .. } => return relay::save_cache(link, req).await,
            relay::Route::ComeBack { why, .. } => return Err(Status::unavailable(why)),
        }
        super::caches::save(self, req).await
    }

    /// An agent's session (see `session::open`), or, on a follower, the
    /// leader's carried to it (see `relay`).
    async fn session(&self, req: Request<Streaming<pb::AgentMessage>>) -> Result<Response<SessionStream>, Status> {
        let route = relay::route(self, &req).await;
        relay::session(self, route, req).await
    }
}

pub mod relay;
mod session;
#[cfg(test)]
mod tests;
