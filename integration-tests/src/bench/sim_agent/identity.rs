//! Enrolled identities for simulated agents: enrollment with a join token
//! into the bundle directory the swarm reads, and the renewal of the
//! certificate over the session's own channel when the benchmark says so.
//!
//! Enrollment is `drover_client::enroll`'s, as `drover-agent --join-token`
//! does it (a key of the agent's own, a connection pinned to the CA, the
//! bundle written whole). The renewal follows the real agent's
//! (`drover_agent`'s `client::renew`, which is private to the agent) step
//! for step, with the same pieces (`drover_agent::identity`): a new key and
//! CSR under the same name, `AgentCertService.Renew` on the channel the
//! session runs on, the answer's name and key checked, the certificate and
//! key (and the CAs, when the answer carries a trust bundle) replaced
//! atomically; the session goes on, and the next one uses the new files.
//! What differs is when: a simulated agent renews when the benchmark
//! signals all of them at once ([`super::Swarm::renew_all`]), not at its
//! certificate's half life, so that the burst is the benchmark's.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use drover_agent::identity::{self, Files, Request};
use drover_client::chain::error_chain;
use drover_client::enroll::{self as shared, CaPin, Holder, PATIENCE, Progress};
use drover_proto::v1 as pb;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::super::BenchError;

/// How long one `Renew` call may take, as for the real agent.
const RENEW_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One agent's enrollment, for the driver.
#[derive(Debug, Clone, Copy)]
pub struct Enrolled {
    /// From the new key to the bundle on disk.
    pub took: Duration,
    /// Tries that failed in a way worth another (a busy coordinator, one
    /// between leaders) before the one that worked.
    pub retries: u32,
}

/// Enrolls agent `name` with `token` into `dir` (its bundle directory,
/// where [`super::Swarm::spawn_enrolled`] reads it), trusting the
/// coordinators in `urls` by `pin`.
pub async fn enroll(
    urls: Vec<String>,
    dir: PathBuf,
    name: String,
    token: String,
    pin: &str,
) -> Result<Enrolled, BenchError> {
    let pin = CaPin::parse(pin).map_err(|e| BenchError::new(format!("the coordinator's CA pin {pin:?}: {e}")))?;
    let e = shared::Enrollment {
        holder: Holder::Agent,
        coordinators: urls,
        name,
        tls_dir: dir,
        token,
        pin,
        patience: PATIENCE,
    };
    let mut retries = 0;
    let started = std::time::Instant::now();
    shared::enroll(&e, |progress| {
        if let Progress::Retrying { .. } = progress {
            retries += 1;
        }
    })
    .await
    .map_err(|err| BenchError::new(format!("agent {} could not enroll: {}", e.name, error_chain(&err))))?;
    Ok(Enrolled { took: started.elapsed(), retries })
}

/// One agent's renewal, for the driver.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub agent: String,
    /// From the benchmark's signal until the new certificate and key were
    /// on disk (or the renewal failed).
    pub latency: Duration,
    /// Why it failed; None when it went through.
    pub error: Option<String>,
}

type InFlight = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// An enrolled agent's side of the renewals: the benchmark's signal (the
/// moment it was given), and the renewal under way, which outlives the
/// session loop's turns but not the session.
pub(super) struct Renewer {
    /// The agent's name.
    name: String,
    signal: watch::Receiver<Option<std::time::Instant>>,
    /// The agent's bundle directory.
    dir: PathBuf,
    /// The session's channel, while one is up.
    channel: Option<Channel>,
    in_flight: Option<(std::time::Instant, InFlight)>,
}

impl Renewer {
    pub(super) fn new(name: String, signal: watch::Receiver<Option<std::time::Instant>>, dir: PathBuf) -> Renewer {
        Renewer { name, signal, dir, channel: None, in_flight: None }
    }

    /// A session is up on `channel`: renewals go over it.
    pub(super) fn attach(&mut self, channel: Channel) {
        self.channel = Some(channel);
    }

    /// The session ended: a renewal under way ends with it, failed (a
    /// signal not yet seen is taken up by the next session).
    pub(super) fn detach(&mut self) -> Option<Renewal> {
        self.channel = None;
        let (at, _) = self.in_flight.take()?;
        let error = Some("the session ended while the renewal was under way".to_string());
        Some(Renewal { agent: self.name.clone(), latency: at.elapsed(), error })
    }

    /// The next renewal to finish: waits for the signal, then renews over
    /// the session's channel. Cancel-safe, so the session loop can select
    /// on it: the renewal under way is kept across its turns.
    pub(super) async fn next(&mut self) -> Renewal {
        loop {
            if let Some((at, renewal)) = &mut self.in_flight {
                let error = renewal.await.err();
                let renewal = Renewal { agent: self.name.clone(), latency: at.elapsed(), error };
                self.in_flight = None;
                return renewal;
            }
            if self.signal.changed().await.is_err() {
                // The swarm is gone, and the agent with it shortly.
                std::future::pending::<()>().await;
            }
            let at = *self.signal.borrow_and_update();
            if let (Some(at), Some(channel)) = (at, &self.channel) {
                let renewal = renew(channel.clone(), self.dir.clone(), self.name.clone());
                self.in_flight = Some((at, Box::pin(renewal)));
            }
        }
    }
}

/// Renews agent `name`'s certificate over `channel` and replaces its
/// certificate and key in `dir`, as the real agent does.
async fn renew(channel: Channel, dir: PathBuf, name: String) -> Result<(), String> {
    // The key made and the files written off the runtime, as the real
    // agent does: a thousand at once would stall every simulated agent's
    // session (and so the jobs they run) in this one process.
    let who = name.clone();
    let request = tokio::task::spawn_blocking(move || Request::new(&who))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot make a new key and CSR: {e}"))?;
    let mut client = pb::agent_cert_service_client::AgentCertServiceClient::new(channel);
    let call = client.renew(pb::RenewRequest { csr: request.csr_der.clone() });
    let cert = match tokio::time::timeout(RENEW_CALL_TIMEOUT, call).await {
        Ok(Ok(answer)) => answer.into_inner(),
        Ok(Err(status)) => return Err(format!("the coordinator refused ({:?}): {}", status.code(), status.message())),
        Err(_) => return Err(format!("no answer within {RENEW_CALL_TIMEOUT:?}")),
    };
    if cert.name != name {
        return Err(format!("the new certificate is for agent {:?}, not {name:?}", cert.name));
    }
    identity::check_pair(&cert.certificate_pem, &request.key_pem)?;
    // The answer's trust bundle, when it sends one, becomes ca.pem.
    let ca_pem = (!cert.ca_pem.is_empty()).then_some(cert.ca_pem.as_str());
    if ca_pem.is_some_and(|pem| identity::first_cert(pem).is_none()) {
        return Err("its trust bundle (ca_pem) holds no PEM certificate".into());
    }
    let ca_pem = ca_pem.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let base = identity::base(&name);
        let files = Files {
            base: &base,
            cert_pem: &cert.certificate_pem,
            key_pem: &request.key_pem,
            ca_pem: ca_pem.as_deref(),
        };
        identity::install(&dir, files).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Who the coordinator at `url` takes the holder of agent `name`'s bundle
/// in `dir` for, over a new connection with it: a renewed certificate
/// works for the next session.
pub async fn whoami(url: &str, dir: &Path, name: &str) -> Result<pb::WhoAmIResponse, BenchError> {
    use drover_client::endpoint::{Transport, endpoint};
    let tls = super::load_tls(dir, name)?;
    let endpoint = endpoint(url, &tls, &Transport::CONTROL).map_err(|e| BenchError::new(e.to_string()))?;
    let channel = tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
        .await
        .map_err(|_| BenchError::new(format!("connecting to {url} as agent {name} took over 10s")))?
        .map_err(|e| BenchError::new(format!("cannot connect to {url} as agent {name}: {}", error_chain(&e))))?;
    let mut client = pb::identity_service_client::IdentityServiceClient::new(channel);
    let answer = client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map_err(|s| BenchError::new(format!("WhoAmI as agent {name} on {url}: {:?}: {}", s.code(), s.message())))?;
    Ok(answer.into_inner())
}
