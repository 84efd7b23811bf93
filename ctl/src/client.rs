//! Connecting to the coordinator with the admin certificate, and the CLI's
//! exit codes: 0 ok, 1 the run failed, 2 invalid input or usage, 3 the
//! coordinator cannot be reached or refuses us.

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

pub async fn connect(url: &str, tls_dir: &Path) -> Result<Client, Exit> {
    let ca = Certificate::from_pem(read(tls_dir, "ca.pem")?);
    let identity = Identity::from_pem(read(tls_dir, "admin.pem")?, read(tls_dir, "admin-key.pem")?);
    let bad_url = |e: String| {
        Exit::new(EXIT_INVALID, format!("bad coordinator URL {url:?}: {e}; use e.g. https://127.0.0.1:7700"))
    };
    if !url.starts_with("https://") {
        return Err(bad_url("it must start with https:// (Drover always uses TLS)".into()));
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad_url(e.to_string()))?
        .tls_config(ClientTlsConfig::new().ca_certificate(ca).identity(identity))
        .map_err(|e| bad_url(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
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
