//! Connecting to the coordinator with the admin certificate, and the CLI's
//! exit codes: 0 ok, 1 the run failed, 2 invalid input or usage, 3 the
//! coordinator cannot be reached or refuses us.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use drover_proto::v1::control_service_client::ControlServiceClient;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const EXIT_FAILED: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;

/// An error that ends the CLI with a chosen exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    pub fn new(code: i32, message: impl Into<String>) -> Exit {
        Exit { code, message: message.into() }
    }
}

pub type Client = ControlServiceClient<Channel>;

/// The metadata keys a follower's refusal carries (see the coordinator's
/// `api/status.rs`).
const LEADER_METADATA: &str = "drover-leader";
const NOT_LEADER_METADATA: &str = "drover-not-leader";

/// How often a call is tried (on other coordinators, or after a redirect)
/// before the CLI gives up with exit 3.
const MAX_TRIES: usize = 10;

fn read(dir: &Path, file: &str) -> Result<Vec<u8>, Exit> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|e| {
        Exit::new(
            EXIT_UNREACHABLE,
            format!(
                "cannot read {}: {e}; point --tls-dir (or DROVER_TLS_DIR) at the directory made by `drover certs init`",
                path.display()
            ),
        )
    })
}

/// A connection to one of several coordinators, which follows redirects to
/// the leader and moves on when a coordinator dies.
pub struct Conn {
    endpoints: Vec<String>,
    tls: ClientTlsConfig,
    next: usize,
    client: Client,
}

async fn dial(url: &str, tls: &ClientTlsConfig) -> Result<Client, Exit> {
    let bad_url = |e: String| {
        Exit::new(EXIT_INVALID, format!("bad coordinator URL {url:?}: {e}; use e.g. https://127.0.0.1:7700"))
    };
    if !url.starts_with("https://") {
        return Err(bad_url("it must start with https:// (Drover always uses TLS)".into()));
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad_url(e.to_string()))?
        .tls_config(tls.clone())
        .map_err(|e| bad_url(e.to_string()))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(3))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        Exit::new(
            EXIT_UNREACHABLE,
            format!(
                "cannot reach the coordinator at {url}: {}; check that it runs and that --coordinator (or DROVER_COORDINATOR) points at it",
                error_chain(&e)
            ),
        )
    })?;
    Ok(ControlServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

/// Whether a failed call may be sent again: a follower's refusal always
/// (nothing happened), other unavailability only for calls that are safe to
/// repeat.
fn retryable(status: &tonic::Status, idempotent: bool) -> bool {
    status.metadata().contains_key(NOT_LEADER_METADATA)
        || (idempotent && matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled))
}

impl Conn {
    /// Connects to the first coordinator in the comma-separated list that
    /// answers.
    pub async fn connect(urls: &str, tls_dir: &Path) -> Result<Conn, Exit> {
        let ca = Certificate::from_pem(read(tls_dir, "ca.pem")?);
        let identity = Identity::from_pem(read(tls_dir, "admin.pem")?, read(tls_dir, "admin-key.pem")?);
        let tls = ClientTlsConfig::new().ca_certificate(ca).identity(identity);
        let endpoints: Vec<String> =
            urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect();
        if endpoints.is_empty() {
            return Err(Exit::new(EXIT_INVALID, "no coordinator URL given; pass --coordinator https://HOST:PORT"));
        }
        let mut last = None;
        for (i, url) in endpoints.iter().enumerate() {
            match dial(url, &tls).await {
                Ok(client) => {
                    return Ok(Conn { next: i + 1, endpoints: endpoints.clone(), tls, client });
                }
                Err(e) if e.code == EXIT_INVALID => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    /// Moves to the next coordinator that answers, or to `leader`.
    async fn move_on(&mut self, leader: Option<String>) -> Result<(), Exit> {
        if let Some(url) = leader
            && let Ok(client) = dial(&url, &self.tls).await
        {
            self.client = client;
            return Ok(());
        }
        let mut last = None;
        for _ in 0..self.endpoints.len() {
            let url = self.endpoints[self.next % self.endpoints.len()].clone();
            self.next += 1;
            match dial(&url, &self.tls).await {
                Ok(client) => {
                    self.client = client;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    /// Makes a call, following redirects to the leader and, for idempotent
    /// calls, moving on to another coordinator when one goes away.
    pub async fn call<T, F, Fut>(&mut self, idempotent: bool, mut f: F) -> Result<T, Exit>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut tries = 0;
        loop {
            let status = match f(self.client.clone()).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => status,
            };
            tries += 1;
            if tries >= MAX_TRIES || !retryable(&status, idempotent) {
                return Err(status_exit(status));
            }
            let leader = status.metadata().get(LEADER_METADATA).and_then(|v| v.to_str().ok()).map(str::to_string);
            if leader.is_none() {
                // No leader yet, or the coordinator went away: an election
                // takes about one lease TTL.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Err(e) = self.move_on(leader).await
                && tries + 1 >= MAX_TRIES
            {
                return Err(e);
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Maps a failed call to an exit code and a message that says what to do.
pub fn status_exit(status: tonic::Status) -> Exit {
    let msg = status.message().to_string();
    match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange => {
            Exit::new(EXIT_INVALID, msg)
        }
        Code::PermissionDenied | Code::Unauthenticated => Exit::new(
            EXIT_UNREACHABLE,
            format!(
                "the coordinator refused us: {msg}; use the admin certificate from `drover certs init` (--tls-dir)"
            ),
        ),
        Code::Unavailable => {
            let detail = match status.source() {
                Some(src) => format!("{msg}: {}", error_chain(src)),
                None => msg,
            };
            Exit::new(EXIT_UNREACHABLE, format!("coordinator unavailable: {detail}"))
        }
        _ => {
            let detail = match status.source() {
                Some(src) => format!("{msg}: {}", error_chain(src)),
                None => msg,
            };
            Exit::new(EXIT_UNREACHABLE, format!("the coordinator failed: {detail}"))
        }
    }
}

use std::error::Error as _;
