//! Connecting to the coordinator with the admin certificate, and the CLI's
//! exit codes: 0 ok, 1 the run failed, 2 invalid input or usage, 3 the
//! coordinator cannot be reached or refuses us.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_proto::metadata;
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

/// How often a call is tried (on other coordinators, or after a redirect)
/// before the CLI gives up with exit 3.
const MAX_TRIES: usize = 10;

/// Reads one of the admin's TLS files. A missing file is a usage problem
/// (exit 2), not an unreachable coordinator.
fn read(dir: &Path, file: &str) -> Result<Vec<u8>, Exit> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|e| {
        Exit::new(
            EXIT_INVALID,
            format!(
                "cannot read {}: {e}; point --tls-dir (or DROVER_TLS_DIR) at the directory made by `drover certs init`",
                path.display()
            ),
        )
    })
}

/// Reads a certificate file and checks that it holds a PEM certificate:
/// tonic takes a file without one silently (an empty trust store, no client
/// certificate), and the handshake would then fail with an obscure error.
fn read_cert(dir: &Path, file: &str) -> Result<Vec<u8>, Exit> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    let pem = read(dir, file)?;
    if !pem.windows(BEGIN.len()).any(|w| w == BEGIN) {
        return Err(bad_certs(dir, &format!("{file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
    }
    Ok(pem)
}

/// A connection to one of several coordinators, which follows redirects to
/// the leader and moves on when a coordinator dies.
pub struct Conn {
    endpoints: Vec<String>,
    tls: ClientTlsConfig,
    tls_dir: PathBuf,
    next: usize,
    client: Client,
}

async fn dial(url: &str, tls: &ClientTlsConfig, tls_dir: &Path) -> Result<Client, Exit> {
    let bad_url = |e: String| {
        Exit::new(EXIT_INVALID, format!("bad coordinator URL {url:?}: {e}; use e.g. https://127.0.0.1:7700"))
    };
    if !url.starts_with("https://") {
        return Err(bad_url("it must start with https:// (Drover always uses TLS)".into()));
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad_url(e.to_string()))?
        .tls_config(tls.clone())
        .map_err(|e| {
            // Without tonic's outer "transport error" when there is more to say.
            let detail = e.source().map_or_else(|| e.to_string(), error_chain);
            bad_certs(tls_dir, detail.trim_end_matches('.'))
        })?
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

/// The certificates were read but do not make a TLS configuration (a PEM
/// that does not parse, a key that does not match its certificate).
fn bad_certs(tls_dir: &Path, detail: &str) -> Exit {
    Exit::new(
        EXIT_INVALID,
        format!(
            "the certificates in {} are not usable: {}; check ca.pem, admin.pem and admin-key.pem there, \
             or point --tls-dir (or DROVER_TLS_DIR) at the directory made by `drover certs init`",
            tls_dir.display(),
            detail
        ),
    )
}

/// Whether a failed call may be sent again: a follower's refusal always
/// (nothing happened), other unavailability only for calls that are safe to
/// repeat.
fn retryable(status: &tonic::Status, idempotent: bool) -> bool {
    status.metadata().contains_key(metadata::NOT_LEADER)
        || (idempotent && matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled))
}

impl Conn {
    /// Connects to the first coordinator in the comma-separated list that
    /// answers.
    pub async fn connect(urls: &str, tls_dir: &Path) -> Result<Conn, Exit> {
        let ca = Certificate::from_pem(read_cert(tls_dir, "ca.pem")?);
        let identity = Identity::from_pem(read_cert(tls_dir, "admin.pem")?, read(tls_dir, "admin-key.pem")?);
        let tls = ClientTlsConfig::new().ca_certificate(ca).identity(identity);
        let endpoints: Vec<String> =
            urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect();
        if endpoints.is_empty() {
            return Err(Exit::new(EXIT_INVALID, "no coordinator URL given; pass --coordinator https://HOST:PORT"));
        }
        let mut last = None;
        for (i, url) in endpoints.iter().enumerate() {
            match dial(url, &tls, tls_dir).await {
                Ok(client) => {
                    return Ok(Conn {
                        next: i + 1,
                        endpoints: endpoints.clone(),
                        tls,
                        tls_dir: tls_dir.to_path_buf(),
                        client,
                    });
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
            && let Ok(client) = dial(&url, &self.tls, &self.tls_dir).await
        {
            self.client = client;
            return Ok(());
        }
        let mut last = None;
        for _ in 0..self.endpoints.len() {
            let url = self.endpoints[self.next % self.endpoints.len()].clone();
            self.next += 1;
            match dial(&url, &self.tls, &self.tls_dir).await {
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
            let leader = status.metadata().get(metadata::LEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
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
