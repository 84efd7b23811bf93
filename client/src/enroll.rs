//! Enrollment with a join token: a client without certificates (an agent
//! started with `--join-token`, a user running `drover login`) gets them
//! from the coordinator.
//!
//! The client makes its own key, which never leaves its TLS directory, and
//! sends the coordinator only a certificate signing request with the token
//! (`EnrollService.Enroll`). It trusts the coordinator through the CA's pin
//! alone (`pin`, over the connection `dial` makes), and the CA it receives
//! must hash to the pin too. Then it writes `ca.pem`, `BASE.pem` and
//! `BASE-key.pem` ([`files`]; the base name is the [`Holder`]'s:
//! `agent-NAME` or `user`).
//!
//! A refusal (`PERMISSION_DENIED`: the token or the name;
//! `INVALID_ARGUMENT`: the request) is final, with the coordinator's words.
//! A coordinator that cannot be reached, or is between leaders, is retried,
//! the next URL each time, with backoff, for the enrollment's patience
//! ([`PATIENCE`] for an agent); the caller hears of each retry
//! ([`Progress`]), since this module does not log. The token is never in a
//! message.
//!
//! An agent's renewal, over the connection it already has, is the agent's
//! (`drover-agent`'s `client::renew`); it uses [`files`] too. The pinned
//! connection, with a client certificate, is the CLI's way back in after a
//! CA rotation it missed ([`pinned_channel`]).

mod dial;
pub mod files;
mod pin;

use std::path::PathBuf;
use std::time::Duration;

use drover_proto::v1 as pb;

use crate::targets::{Backoff, Follower, Targets, follower};
use dial::DialError;
pub use dial::{ClientCert, PinnedError, pinned_channel};
use files::{Files, Request};
pub use pin::{CaPin, PinnedVerifier};

/// How long an agent keeps trying coordinators that do not answer.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Who enrolls: what its files are called, and how messages name it and
/// the command that made its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// An agent (`drover-agent --join-token`): `agent-NAME.pem`.
    Agent,
    /// A user (`drover login`): `user.pem`.
    User,
}

impl Holder {
    /// The bundle's file base name in the TLS directory.
    pub fn base(self, name: &str) -> String {
        match self {
            Holder::Agent => format!("agent-{name}"),
            Holder::User => "user".into(),
        }
    }

    /// The holder in words: "agent", "user".
    pub fn noun(self) -> &'static str {
        match self {
            Holder::Agent => "agent",
            Holder::User => "user",
        }
    }

    /// The command that prints the token and the pin.
    fn issuer(self) -> &'static str {
        match self {
            Holder::Agent => "drover agent-token create",
            Holder::User => "drover user add",
        }
    }

    /// What to do when the coordinator does not enroll at all.
    fn without_enrollment(self) -> &'static str {
        match self {
            Holder::Agent => {
                "this coordinator does not enroll agents: upgrade it, or issue the agent's certificate with \
                 `drover certs issue-agent`"
            }
            Holder::User => {
                "this coordinator does not enroll users: upgrade it, or use the admin's certificate from \
                 `drover certs init`"
            }
        }
    }
}

/// What enrollment needs.
#[derive(Clone)]
pub struct Enrollment {
    pub holder: Holder,
    /// The coordinators' URLs, tried in turn.
    pub coordinators: Vec<String>,
    /// The holder's name: its certificate's common name.
    pub name: String,
    /// Where the bundle goes.
    pub tls_dir: PathBuf,
    /// The join token; never in a message (not even `Debug`).
    pub token: String,
    pub pin: CaPin,
    /// How long to keep trying coordinators that do not answer.
    pub patience: Duration,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("holder", &self.holder)
            .field("coordinators", &self.coordinators)
            .field("name", &self.name)
            .field("tls_dir", &self.tls_dir)
            .field("pin", &self.pin)
            .field("patience", &self.patience)
            .finish_non_exhaustive()
    }
}

/// What [`enroll`] did: the coordinator that signed, and until when the
/// new certificate is valid (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub url: String,
    pub not_after_ms: i64,
}

/// What happens while [`enroll`] tries, for the caller to log or print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// A follower named the leader; the next try goes there.
    Redirected { url: &'a str, leader: &'a str },
    /// A try failed in a way worth another.
    Retrying { error: &'a str },
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("no coordinator URL given; use e.g. --coordinator https://10.0.0.1:7700")]
    NoCoordinator,
    #[error("{0}")]
    Url(String),
    #[error("cannot create the TLS directory {}: {source}", .path.display())]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot make the {}'s key and certificate signing request: {source}", .holder.noun())]
    Key { holder: Holder, source: files::KeyError },
    #[error(
        "the coordinator at {url} presented no CA certificate matching --ca-pin {pin}; check the pin printed by \
         `{}`", .holder.issuer()
    )]
    PinMismatch { url: String, pin: CaPin, holder: Holder },
    #[error(
        "the coordinator at {url} sent a CA certificate that does not match --ca-pin {pin}; check the pin printed \
         by `{}`", .holder.issuer()
    )]
    CaMismatch { url: String, pin: CaPin, holder: Holder },
    #[error("{url} refused the enrollment ({code:?}): {message}")]
    Refused { url: String, code: tonic::Code, message: String },
    #[error("{url} answered the enrollment with a certificate the {} cannot use: {detail}", .holder.noun())]
    BadAnswer { url: String, detail: String, holder: Holder },
    #[error(transparent)]
    Write(#[from] files::WriteError),
    #[error("no coordinator enrolled the {} within {waited:?}; the last error: {last}", .holder.noun())]
    GaveUp { waited: Duration, last: String, holder: Holder },
}

/// Enrolls: makes a key and its request, has a coordinator sign it, checks
/// the answer and writes the bundle into `e.tls_dir` (made, private, when
/// missing), replacing one that is there; see the module header. On
/// success the whole bundle is on disk.
pub async fn enroll(e: &Enrollment, mut progress: impl FnMut(Progress<'_>)) -> Result<Enrolled, EnrollError> {
    let mut targets = Targets::new(e.coordinators.clone()).ok_or(EnrollError::NoCoordinator)?;
    private_dir(&e.tls_dir)?;
    // One key for every try: the coordinator signs at most one request.
    let request = Request::new(&e.name).map_err(|source| EnrollError::Key { holder: e.holder, source })?;
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(500));
    loop {
        let url = targets.next(tokio::time::Instant::now());
        let last = match attempt(&url, e, &request).await {
            Ok(cert) => return finish(&url, e, &request, cert),
            Err(Try::Final(err)) => return Err(err),
            Err(Try::Leader(leader)) if started.elapsed() < e.patience => {
                progress(Progress::Redirected { url: &url, leader: &leader });
                targets.redirect(leader);
                continue;
            }
            Err(Try::Leader(leader)) => format!("{url} sent the {} to the leader {leader}", e.holder.noun()),
            Err(Try::Again(why)) => {
                progress(Progress::Retrying { error: &why });
                why
            }
        };
        let waited = started.elapsed();
        if waited >= e.patience {
            return Err(EnrollError::GaveUp { waited: e.patience, last, holder: e.holder });
        }
        let pause = backoff.next(MAX_BACKOFF).min(e.patience - waited);
        tokio::time::sleep(pause).await;
    }
}

/// Creates `dir` (and its parents) private to its owner (0700) if it is
/// missing; an existing one is left as it is.
pub fn private_dir(dir: &std::path::Path) -> Result<(), EnrollError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| EnrollError::Dir { path: dir.to_path_buf(), source })
}

/// How one try went wrong.
enum Try {
    /// Stop with this.
    Final(EnrollError),
    /// A follower named the leader: go there.
    Leader(String),
    /// Worth another try, maybe elsewhere.
    Again(String),
}

/// One try at `url`: connect trusting the pin, and ask.
async fn attempt(url: &str, e: &Enrollment, request: &Request) -> Result<pb::AgentCertificate, Try> {
    let channel = match dial::connect(url, e.pin).await {
        Ok(channel) => channel,
        Err(DialError::Url(detail)) => return Err(Try::Final(EnrollError::Url(detail))),
        Err(DialError::PinMismatch) => {
            return Err(Try::Final(EnrollError::PinMismatch { url: url.to_string(), pin: e.pin, holder: e.holder }));
        }
        Err(DialError::Connect(why)) => return Err(Try::Again(why)),
    };
    let mut client = pb::enroll_service_client::EnrollServiceClient::new(channel);
    let call = pb::EnrollRequest { token: e.token.clone(), csr: request.csr_der.clone() };
    match client.enroll(call).await {
        Ok(answer) => Ok(answer.into_inner()),
        Err(status) => Err(judge(url, e.holder, &status)),
    }
}

/// What a failed `Enroll` call means for the next try.
fn judge(url: &str, holder: Holder, status: &tonic::Status) -> Try {
    use tonic::Code;
    match follower(status) {
        Some(Follower::Leader(leader)) => return Try::Leader(leader),
        Some(Follower::Election) => return Try::Again(format!("{url} has no leader at the moment")),
        None => {}
    }
    let refused =
        |message: String| Try::Final(EnrollError::Refused { url: url.to_string(), code: status.code(), message });
    match status.code() {
        Code::PermissionDenied | Code::InvalidArgument => refused(status.message().to_string()),
        Code::Unimplemented => refused(format!("{}; {}", status.message(), holder.without_enrollment())),
        code => Try::Again(format!("{url} failed the enrollment ({code:?}): {}", status.message())),
    }
}

/// Checks the answer and writes the bundle.
fn finish(url: &str, e: &Enrollment, request: &Request, cert: pb::AgentCertificate) -> Result<Enrolled, EnrollError> {
    let bad = |detail: String| EnrollError::BadAnswer { url: url.to_string(), detail, holder: e.holder };
    if cert.name != e.name {
        return Err(bad(format!("it is for {} {:?}, not {:?}", e.holder.noun(), cert.name, e.name)));
    }
    match files::first_cert(&cert.ca_pem) {
        Some(ca) if e.pin.matches(&ca) => {}
        _ => return Err(EnrollError::CaMismatch { url: url.to_string(), pin: e.pin, holder: e.holder }),
    }
    files::check_pair(&cert.certificate_pem, &request.key_pem).map_err(bad)?;
    let base = e.holder.base(&e.name);
    let files =
        Files { base: &base, cert_pem: &cert.certificate_pem, key_pem: &request.key_pem, ca_pem: Some(&cert.ca_pem) };
    files::install(&e.tls_dir, files)?;
    Ok(Enrolled { url: url.to_string(), not_after_ms: cert.not_after_ms })
}

#[cfg(test)]
mod tests;
