//! An in-process control client for the benchmark: the admin certificate,
//! one cached channel per coordinator, and the CLI's rules for finding the
//! leader (a follower refuses leader-only calls with `Unavailable`, marks
//! the refusal with `drover-not-leader` and names the leader in
//! `drover-leader` when it knows it). Loading the certificate, the
//! endpoints and the choice of coordinator are `drover_client`'s, as for
//! the CLI.
//!
//! Besides `ControlService`, it makes the admin's `IdentityService` calls
//! the benchmark needs (join tokens, enrolled identities) on the same
//! channels.
//!
//! Calling the coordinator in-process instead of through the `drover` CLI
//! keeps process start-up and TLS handshakes out of the measured times.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use drover_client::chain::error_chain;
use drover_client::endpoint::{Transport, endpoint};
use drover_client::targets::{Follower, Targets, follower};
use drover_client::tls::ClientTls;
use drover_proto::v1 as pb;
use pb::control_service_client::ControlServiceClient;
use pb::identity_service_client::IdentityServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use super::{BenchError, tls_bundle};

pub type Client = ControlServiceClient<Channel>;

/// The longest one call may take. A submit of a 5,000-job pipeline to etcd
/// writes dozens of transactions before it answers, so this is generous;
/// it only bounds a coordinator that stopped answering.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long to wait before asking again while no coordinator leads (an
/// election takes about one election TTL).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

pub struct Control {
    /// Where the last leader-only call succeeded or a follower pointed, else
    /// the coordinators in turn.
    targets: Targets,
    tls: ClientTls,
    /// Channels by URL. A tonic channel reconnects by itself, but one to a
    /// coordinator that was killed is dropped so the next call dials afresh.
    channels: HashMap<String, Channel>,
}

/// The control service's client on `channel`, taking answers as large as a
/// run of 5,000 jobs.
fn control_client(channel: Channel) -> Client {
    ControlServiceClient::new(channel).max_decoding_message_size(64 << 20)
}

/// Whether a call failed because the coordinator could not be reached or
/// its connection broke: a killed coordinator's open connection fails with
/// `Unknown: transport error` rather than `Unavailable`.
fn connection_lost(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled)
}

impl Control {
    /// A client with the admin certificate from `tls_dir` for the given
    /// coordinator URLs. Nothing is dialled until the first call.
    pub fn new(tls_dir: &Path, urls: Vec<String>) -> Result<Control, BenchError> {
        let targets = Targets::new(urls).ok_or_else(|| BenchError::new("no coordinator URL to call"))?;
        let tls = ClientTls::load(tls_bundle(tls_dir, "admin", "admin")).map_err(|e| BenchError::new(e.to_string()))?;
        Ok(Control { targets, tls, channels: HashMap::new() })
    }

    /// The coordinator URLs this client knows.
    pub fn urls(&self) -> &[String] {
        self.targets.urls()
    }

    async fn channel(&mut self, url: &str) -> Result<Channel, BenchError> {
        if let Some(c) = self.channels.get(url) {
            return Ok(c.clone());
        }
        let endpoint = endpoint(url, &self.tls, &Transport::CONTROL).map_err(|e| BenchError::new(e.to_string()))?;
        // The connect timeout covers TCP only; this bounds the TLS handshake.
        let channel = tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
            .await
            .map_err(|_| BenchError::new(format!("connecting to {url} took over 10s")))?
            .map_err(|e| BenchError::new(format!("cannot connect to {url}: {}", error_chain(&e))))?;
        self.channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// Makes a call that only the leader answers, following redirects and
    /// moving on to the next coordinator while none leads or one is dead,
    /// until `deadline`. Other errors end the call.
    ///
    /// A call retried after a connection error may in principle have been
    /// carried out once already (the answer was lost); the benchmark only
    /// retries submits of identical trivial pipelines, where a duplicate run
    /// would do no harm.
    pub async fn leader_call<T, F, Fut>(&mut self, what: &str, deadline: Instant, mut call: F) -> Result<T, BenchError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.leader_call_on(what, deadline, |channel| call(control_client(channel))).await
    }

    /// [`Control::leader_call`] for a call of any service on the channel.
    async fn leader_call_on<T, F, Fut>(&mut self, what: &str, deadline: Instant, mut call: F) -> Result<T, BenchError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        loop {
            let url = self.targets.next(Instant::now());
            let status = match self.channel(&url).await {
                Ok(channel) => match tokio::time::timeout(CALL_TIMEOUT, call(channel)).await {
                    Ok(Ok(response)) => {
                        self.targets.redirect(url);
                        return Ok(response.into_inner());
                    }
                    Ok(Err(status)) => status,
                    Err(_) => return Err(BenchError::new(format!("{what} on {url} took over {CALL_TIMEOUT:?}"))),
                },
                // Treated like a coordinator that answers Unavailable.
                Err(e) => Status::unavailable(e.to_string()),
            };
            match follower(&status) {
                // A follower named the leader: go there at once. If the
                // named leader is dead, the next round's connection error
                // pauses before moving on.
                Some(Follower::Leader(leader)) => self.targets.redirect(leader),
                // No leader at the moment: an election is under way.
                Some(Follower::Election) => tokio::time::sleep(RETRY_PAUSE).await,
                None if connection_lost(&status) => {
                    // This coordinator is gone: forget its channel and try
                    // the next one shortly.
                    self.channels.remove(&url);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                None => {
                    return Err(BenchError::new(format!("{what} on {url}: {:?}: {}", status.code(), status.message())));
                }
            }
            if Instant::now() >= deadline {
                return Err(BenchError::new(format!(
                    "{what}: no leader answered before the deadline; last answer from {url}: {}",
                    status.message()
                )));
            }
        }
    }

    /// Makes a read that any coordinator answers, trying each in turn until
    /// one does or `deadline` passes.
    pub async fn any_call<T, F, Fut>(&mut self, what: &str, deadline: Instant, mut call: F) -> Result<T, BenchError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        loop {
            let url = self.targets.in_turn().to_string();
            let last = match self.channel(&url).await {
                Ok(channel) => match tokio::time::timeout(CALL_TIMEOUT, call(control_client(channel))).await {
                    Ok(Ok(response)) => return Ok(response.into_inner()),
                    Ok(Err(status)) if connection_lost(&status) => {
                        self.channels.remove(&url);
                        status.message().to_string()
                    }
                    Ok(Err(status)) => {
                        return Err(BenchError::new(format!(
                            "{what} on {url}: {:?}: {}",
                            status.code(),
                            status.message()
                        )));
                    }
                    Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
                },
                Err(e) => e.to_string(),
            };
            self.targets.next_in_turn();
            if Instant::now() >= deadline {
                return Err(BenchError::new(format!("{what}: no coordinator answered; last, {url}: {last}")));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Submits an inline pipeline to the leader; returns the run id.
    pub async fn submit(&mut self, yaml: &str, deadline: Instant) -> Result<String, BenchError> {
        let request = pb::SubmitRunRequest {
            source: Some(pb::submit_run_request::Source::Inline(pb::InlinePipeline {
                file_name: "bench.yml".into(),
                yaml: yaml.to_string(),
            })),
            ..Default::default()
        };
        let reply = self
            .leader_call("SubmitRun", deadline, |mut c| {
                let request = request.clone();
                async move { c.submit_run(request).await }
            })
            .await?;
        Ok(reply.run_id)
    }

    /// The run's current state and jobs, from any coordinator.
    pub async fn get_run(&mut self, run_id: &str, deadline: Instant) -> Result<pb::Run, BenchError> {
        let request = pb::GetRunRequest { run_id: run_id.to_string() };
        self.any_call("GetRun", deadline, |mut c| {
            let request = request.clone();
            async move { c.get_run(request).await }
        })
        .await
    }

    /// Whether the run is still stored (not pruned), per any coordinator.
    pub async fn run_exists(&mut self, run_id: &str, deadline: Instant) -> Result<bool, BenchError> {
        let request = pb::GetRunRequest { run_id: run_id.to_string() };
        self.any_call("GetRun", deadline, |mut c| {
            let request = request.clone();
            async move {
                match c.get_run(request).await {
                    Ok(_) => Ok(Response::new(true)),
                    Err(status) if status.code() == tonic::Code::NotFound => Ok(Response::new(false)),
                    Err(status) => Err(status),
                }
            }
        })
        .await
    }

    /// The agents the leader lists.
    pub async fn list_agents(&mut self, deadline: Instant) -> Result<Vec<pb::Agent>, BenchError> {
        let reply = self
            .leader_call("ListAgents", deadline, |mut c| async move { c.list_agents(pb::ListAgentsRequest {}).await })
            .await?;
        Ok(reply.agents)
    }

    /// A single-use join token for agent `name` (no labels, the default
    /// life), from the leader: the secret and the CA's pin, as `drover
    /// agent-token create` prints them.
    pub async fn create_agent_token(&mut self, name: &str, deadline: Instant) -> Result<(String, String), BenchError> {
        let request = pb::CreateAgentTokenRequest { name: name.to_string(), ..Default::default() };
        let reply = self
            .leader_call_on("CreateAgentToken", deadline, |channel| {
                let request = request.clone();
                async move { IdentityServiceClient::new(channel).create_agent_token(request).await }
            })
            .await?;
        Ok((reply.secret, reply.ca_pin))
    }

    /// A single-use web UI login link for the admin, landing on `next`.
    pub async fn create_ui_login(&mut self, next: &str, deadline: Instant) -> Result<String, BenchError> {
        let request = pb::CreateUiLoginRequest { next: next.to_string() };
        let reply = self
            .leader_call_on("CreateUiLogin", deadline, |channel| {
                let request = request.clone();
                async move { IdentityServiceClient::new(channel).create_ui_login(request).await }
            })
            .await?;
        Ok(reply.url)
    }

    /// The enrolled agents the leader knows, with their renewals.
    pub async fn list_agent_identities(&mut self, deadline: Instant) -> Result<Vec<pb::AgentIdentity>, BenchError> {
        let reply = self
            .leader_call_on("ListAgentIdentities", deadline, |channel| async move {
                IdentityServiceClient::new(channel).list_agent_identities(pb::ListAgentIdentitiesRequest {}).await
            })
            .await?;
        Ok(reply.identities)
    }

    /// The URL of the coordinator that leads, per the `Cluster` call, once
    /// one does; polls until `deadline`.
    /// Each coordinator's id, in the order of the URLs this client was
    /// given (empty for one the cluster does not list).
    pub async fn coordinator_ids(&mut self, deadline: Instant) -> Result<Vec<String>, BenchError> {
        let cluster =
            self.any_call("Cluster", deadline, |mut c| async move { c.cluster(pb::ClusterRequest {}).await }).await?;
        let id = |url: &String| cluster.coordinators.iter().find(|c| c.url == *url).map(|c| c.id.clone());
        Ok(self.targets.urls().iter().map(|url| id(url).unwrap_or_default()).collect())
    }

    pub async fn wait_leader(&mut self, deadline: Instant) -> Result<String, BenchError> {
        loop {
            let cluster = self
                .any_call("Cluster", deadline, |mut c| async move { c.cluster(pb::ClusterRequest {}).await })
                .await?;
            if let Some(leader) = cluster.coordinators.iter().find(|c| c.leader) {
                return Ok(leader.url.clone());
            }
            if Instant::now() >= deadline {
                return Err(BenchError::new("no coordinator was elected leader before the deadline"));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
