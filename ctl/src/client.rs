//! Connecting to the coordinator with the TLS directory's certificate (a
//! user's from `drover login` when it holds one, else the admin's:
//! [`bundle`]), and the CLI's exit codes (README.md has the table): 0 ok, 1 the run failed, 2 invalid
//! input or usage, 3 the coordinator cannot be reached, is unavailable or
//! at its limits, 4 not found, 5 permission denied (our certificate or its
//! role refused), 130 interrupted, 141 broken pipe (`out`).
//!
//! A plain call fails over between coordinators and gives up after a few
//! quick tries ([`Conn::call`]). A stream that follows a run or a log
//! outlives single calls, so it is opened again with [`Conn::call_patiently`],
//! which keeps trying for the `--reconnect-timeout` window ([`Patience`]):
//! long enough for a coordinator to be restarted, not forever.

use std::error::Error as _;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use drover_client::chain::error_chain;
use drover_client::endpoint::{Transport, endpoint};
use drover_client::targets::{Follower, Targets, follower};
use drover_client::tls::{Bundle, ClientTls};
use drover_proto::v1::control_service_client::ControlServiceClient;
use tonic::Code;
use tonic::transport::Channel;

pub const EXIT_FAILED: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;
/// What the call names does not exist (a run, a job, a context's run).
pub const EXIT_NOT_FOUND: i32 = 4;
/// The coordinator refused who we are: the certificate's role, or the
/// certificate itself.
pub const EXIT_PERMISSION: i32 = 5;
/// Ctrl-C, as a shell reports a process that SIGINT ended.
pub const EXIT_INTERRUPTED: i32 = 130;

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

/// The control service's client, and the channel under it, which the
/// other services on the same connection (apps) share.
#[derive(Clone)]
pub struct Client {
    control: ControlServiceClient<Channel>,
    channel: Channel,
}

impl Client {
    /// The app service on the same connection.
    pub fn apps(&self) -> drover_proto::v1::app_service_client::AppServiceClient<Channel> {
        drover_proto::v1::app_service_client::AppServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    /// The release service on the same connection.
    pub fn releases(&self) -> drover_proto::v1::release_service_client::ReleaseServiceClient<Channel> {
        drover_proto::v1::release_service_client::ReleaseServiceClient::new(self.channel.clone())
    }

    /// The notification service on the same connection.
    pub fn notifications(&self) -> drover_proto::v1::notification_service_client::NotificationServiceClient<Channel> {
        drover_proto::v1::notification_service_client::NotificationServiceClient::new(self.channel.clone())
    }

    /// The identity service on the same connection: join tokens, agents'
    /// access, the audit log.
    pub fn identity(&self) -> drover_proto::v1::identity_service_client::IdentityServiceClient<Channel> {
        drover_proto::v1::identity_service_client::IdentityServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }
}

impl std::ops::Deref for Client {
    type Target = ControlServiceClient<Channel>;
    fn deref(&self) -> &Self::Target {
        &self.control
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.control
    }
}

/// How long one call may wait for its answer (a stream: for its first
/// response) before it counts as unanswered, so that the CLI never waits
/// for ever: longer than anything a coordinator does before it answers
/// (reading a pipeline or an app's files from git, `--git-timeout`, 60s by
/// default).
const CALL_PATIENCE: Duration = Duration::from_secs(120);

/// How often a call is tried (on other coordinators, or after a redirect)
/// before the CLI gives up with exit 3.
const MAX_TRIES: usize = 10;

/// What to do about a TLS directory whose certificates are missing,
/// unusable or refused: point the CLI at one with either kind.
const TLS_DIR_ADVICE: &str = "point --tls-dir (or DROVER_TLS_DIR, or a context) at the admin directory that `drover \
                              certs init --dir DIR` made, DIR/admin, or at a user's directory from `drover login`";

/// The certificate a TLS directory holds: a user's (`user.pem` and
/// `user-key.pem`, which `drover login` writes) when `user.pem` is there,
/// else the admin's (`admin.pem` and `admin-key.pem`).
pub fn bundle(tls_dir: &Path) -> Bundle {
    let user = tls_dir.join("user.pem").is_file();
    let name = if user { "user" } else { "admin" };
    Bundle { dir: tls_dir.to_path_buf(), cert: name.into(), shown: name.into(), fix: TLS_DIR_ADVICE.into() }
}

/// A connection to one of several coordinators, which follows redirects to
/// the leader and moves on when a coordinator dies.
pub struct Conn {
    targets: Targets,
    tls: ClientTls,
    client: Client,
    /// The URL `client` talks to.
    url: String,
    /// Whether any coordinator has answered a call on this `Conn`; see
    /// [`refused_certificate`].
    answered: bool,
}

async fn dial(url: &str, tls: &ClientTls) -> Result<Client, Exit> {
    let tls_dir = tls.dir();
    // A bad URL or unusable certificates: the user's input.
    let endpoint = endpoint(url, tls, &Transport::CONTROL).map_err(|e| Exit::new(EXIT_INVALID, e.to_string()))?;
    let channel = endpoint.connect().await.map_err(|e| {
        let chain = error_chain(&e);
        if chain.contains("invalid peer certificate") {
            // We did not accept the coordinator's certificate: most often
            // ca.pem is from another `drover certs init`.
            return Exit::new(
                EXIT_UNREACHABLE,
                format!(
                    "the coordinator at {url} presented a certificate that {}/ca.pem does not vouch for ({chain}); \
                     check --tls-dir (or DROVER_TLS_DIR, or the context): it must be DIR/admin from the `drover \
                     certs init --dir DIR` that made the coordinator's certificates, or a user's directory that \
                     `drover login` wrote for this coordinator; and the URL's host must be in the coordinator's \
                     certificate (`drover certs init --host`); after a CA rotation's reissue, a directory that missed \
                     `drover ca refresh` needs the new CA: run `drover ca refresh --ca-pin sha256:…` with the \
                     new CA's pin, which `drover ca status -o wide` shows on any CLI that works (or ask the admin)",
                    tls_dir.display()
                ),
            );
        }
        if chain.contains("alert") {
            // The server ended the handshake with an alert: it did not
            // accept our certificate.
            return refused_certificate(url, tls_dir, &chain);
        }
        Exit::new(
            EXIT_UNREACHABLE,
            format!(
                "cannot reach the coordinator at {url}: {}; check that it runs and that --coordinator (or DROVER_COORDINATOR) points at it",
                error_chain(&e)
            ),
        )
    })?;
    Ok(Client { control: ControlServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20), channel })
}

/// Whether a failed call may be sent again: a follower's refusal always
/// (nothing happened), other unavailability only for calls that are safe to
/// repeat.
fn retryable(status: &tonic::Status, idempotent: bool) -> bool {
    follower(status).is_some()
        || (idempotent && matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled))
}

impl Conn {
    /// Connects to the first coordinator in the comma-separated list that
    /// answers.
    pub async fn connect(urls: &str, tls_dir: &Path) -> Result<Conn, Exit> {
        let tls = ClientTls::load(bundle(tls_dir)).map_err(|e| Exit::new(EXIT_INVALID, e.to_string()))?;
        let endpoints: Vec<String> =
            urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect();
        let Some(mut targets) = Targets::new(endpoints) else {
            return Err(Exit::new(EXIT_INVALID, "no coordinator URL given; pass --coordinator https://HOST:PORT"));
        };
        let mut last = None;
        for _ in 0..targets.urls().len() {
            let url = targets.next_in_turn();
            match dial(&url, &tls).await {
                Ok(client) => return Ok(Conn { targets, tls, client, url, answered: false }),
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
            self.url = url;
            return Ok(());
        }
        let mut last = None;
        for _ in 0..self.targets.urls().len() {
            let url = self.targets.next_in_turn();
            match dial(&url, &self.tls).await {
                Ok(client) => {
                    self.client = client;
                    self.url = url;
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
            let status = match tokio::time::timeout(CALL_PATIENCE, f(self.client.clone())).await {
                Ok(Ok(resp)) => {
                    self.answered = true;
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => status,
                // Nothing came back, not even an error. On a connection
                // never answered, the certificate refused is the likely
                // cause (a refusal can reach the client in a way that
                // leaves the call waiting).
                Err(_) if !self.answered => {
                    let detail = format!("no answer within {}s", CALL_PATIENCE.as_secs());
                    return Err(refused_certificate(&self.url, self.tls.dir(), &detail));
                }
                Err(_) => tonic::Status::unavailable(format!(
                    "the coordinator at {} gave no answer within {}s",
                    self.url,
                    CALL_PATIENCE.as_secs()
                )),
            };
            if !broken_connection(&status) {
                self.answered = true;
            }
            tries += 1;
            if tries >= MAX_TRIES || !retryable(&status, idempotent) {
                if !self.answered && broken_connection(&status) {
                    let detail = status.source().map_or_else(|| status.message().to_string(), error_chain);
                    return Err(refused_certificate(&self.url, self.tls.dir(), &detail));
                }
                return Err(status_exit(status));
            }
            let leader = leader_named(&status);
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

    /// Opens a stream again (an idempotent call: a watch or a log follow)
    /// after `broke` ended the last one, or opens it for the first time
    /// when `broke` is None, with `patience`: while no coordinator answers
    /// it keeps trying, on every coordinator in turn and after redirects,
    /// until the patience's window has passed since the stream broke, and
    /// then gives up with exit 3. A refusal that trying again cannot change
    /// (a run that does not exist, a certificate refused) ends it at once.
    ///
    /// `tell` hears [`Notice::Lost`] once per outage (a redirect to the
    /// leader is no outage), and [`Notice::Waiting`] before each later try,
    /// for a countdown; the caller says it is back when the stream delivers
    /// again ([`Patience::heard`]).
    pub async fn call_patiently<T, F, Fut>(
        &mut self,
        patience: &mut Patience,
        broke: Option<tonic::Status>,
        mut tell: impl FnMut(Notice),
        mut f: F,
    ) -> Result<T, Exit>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let since = *patience.since.get_or_insert_with(Instant::now);
        let deadline = since + patience.window;
        let mut pause = Duration::from_millis(100);
        let mut failed = broke;
        loop {
            if let Some(status) = failed.take() {
                // A status with a source was made up by tonic from a
                // connection that broke, whatever its code; that is what
                // this waits out.
                if !retryable(&status, true) && status.source().is_none() {
                    return Err(status_exit(status));
                }
                patience.tries += 1;
                let redirect = follower(&status).is_some();
                let leader = leader_named(&status);
                // Tonic's account of a connection that broke is a chain of
                // h2, hyper and rustls errors: the user needs to know only
                // that it broke.
                let why = if status.source().is_some() {
                    "the connection broke".to_string()
                } else {
                    status.message().to_string()
                };
                // What to say if the time runs out: the last failure, which
                // a failed dial describes better than the call that found
                // the connection gone.
                let mut last = status_exit(status);
                let left = deadline.saturating_duration_since(Instant::now());
                // A few tries even with no window at all, as a plain call
                // gets: a failover between live coordinators needs no
                // patience.
                if left.is_zero() && patience.tries >= PATIENT_MIN_TRIES {
                    return Err(patience.gave_up(&last));
                }
                if !redirect && !patience.window.is_zero() {
                    if patience.said {
                        tell(Notice::Waiting { left });
                    } else {
                        patience.said = true;
                        tell(Notice::Lost { url: self.url.clone(), left, why });
                    }
                }
                if leader.is_none() {
                    // Nobody to go to at once: the coordinator is down or an
                    // election is under way (about one lease TTL). Back off,
                    // so that a long outage costs a try a second, not ten.
                    tokio::time::sleep(pause.min(left.max(Duration::from_millis(100)))).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                // A dial into a black hole must not run past the window.
                let bound = deadline.max(Instant::now() + Duration::from_secs(1));
                match tokio::time::timeout_at(bound, self.move_on(leader)).await {
                    Ok(Ok(())) | Err(_) => {}
                    Ok(Err(e)) => last = e,
                }
                if Instant::now() >= deadline && patience.tries >= PATIENT_MIN_TRIES {
                    return Err(patience.gave_up(&last));
                }
            }
            // A coordinator that takes the connection but never answers
            // (stopped, not dead) must not hold the call past the window;
            // one that is merely slow gets a second at least.
            let bound = deadline.max(Instant::now() + Duration::from_secs(1));
            match tokio::time::timeout_at(bound, f(self.client.clone())).await {
                Ok(Ok(resp)) => {
                    self.answered = true;
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => failed = Some(status),
                Err(_) => failed = Some(tonic::Status::unavailable(format!("{} did not answer in time", self.url))),
            }
        }
    }

    /// The URL of the coordinator this connection talks to now.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every coordinator URL this connection was given, as configured
    /// (`--coordinator`, the variable or the context), in their order.
    pub fn urls(&self) -> &[String] {
        self.targets.urls()
    }
}

/// How many times [`Conn::call_patiently`] tries, however short its window.
const PATIENT_MIN_TRIES: usize = 3;

/// How long a stream waits for a coordinator to come back
/// (`--reconnect-timeout`), and where it is in an outage. One per stream
/// that is followed, kept across its reopenings: an outage lasts from the
/// moment the stream broke until it delivers again, however many times it
/// is opened in between (a coordinator may take the call and then fail it,
/// when its store is unavailable).
pub struct Patience {
    window: Duration,
    /// What the user can do about the run or log when the time has run out.
    hint: String,
    /// When the current outage began; None while the stream delivers.
    since: Option<Instant>,
    /// Failed tries in the current outage.
    tries: usize,
    /// Whether the current outage has been announced.
    said: bool,
}

/// What [`Conn::call_patiently`] has to say while it waits.
pub enum Notice {
    /// The coordinator at `url` went away (said once per outage); `left` is
    /// what remains of the window.
    Lost { url: String, left: Duration, why: String },
    /// Still trying, with `left` to go.
    Waiting { left: Duration },
}

impl Patience {
    /// `hint` is added to the message when the time runs out: what goes on
    /// without this client, and how to look at it again.
    pub fn new(window: Duration, hint: impl Into<String>) -> Patience {
        Patience { window, hint: hint.into(), since: None, tries: 0, said: false }
    }

    /// The stream delivered: an outage, if there was one, is over. Returns
    /// how long it lasted when it was announced, so that the caller can
    /// say it is back.
    pub fn heard(&mut self) -> Option<Duration> {
        let since = self.since.take()?;
        self.tries = 0;
        std::mem::take(&mut self.said).then(|| since.elapsed())
    }

    fn gave_up(&self, last: &Exit) -> Exit {
        Exit::new(
            EXIT_UNREACHABLE,
            format!(
                "gave up reconnecting to the coordinator after {} (--reconnect-timeout): {}; {}",
                human(self.window),
                last.message,
                self.hint
            ),
        )
    }
}

/// A duration as the flags take it: `60s`, `1m30s`, `500ms`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// Whether tonic made the status up from a connection that broke below
/// gRPC (TLS, TCP), rather than a server sending it.
fn broken_connection(status: &tonic::Status) -> bool {
    status.source().is_some_and(|e| e.is::<tonic::transport::Error>())
}

/// The coordinator did not accept our client certificate. With TLS 1.3 the
/// client finishes its half of the handshake before the server has checked
/// the client's certificate, so a refusal shows up as the first call
/// failing: with the server's alert when the client reads it in time, or as
/// "broken pipe" or "connection closed" when it writes first. A connection
/// that was made but never answered one call, on every coordinator tried,
/// is taken for a refusal; the detail is kept for the rare other cause.
fn refused_certificate(url: &str, tls_dir: &Path, detail: &str) -> Exit {
    Exit::new(
        EXIT_PERMISSION,
        format!(
            "the coordinator at {url} refused the client certificate in {} (it closed the connection after the TLS \
             handshake: {detail}); the certificate is probably not from the coordinator's CA, or has expired: check \
             --tls-dir (or DROVER_TLS_DIR, or the context), which must be DIR/admin from the `drover certs init --dir \
             DIR` that made the coordinator's certificates, or a user's directory from `drover login` (log in again \
             with a new token from `drover user add` when its certificate has expired)",
            tls_dir.display()
        ),
    )
}

/// The leader a follower's refusal names, if any.
fn leader_named(status: &tonic::Status) -> Option<String> {
    match follower(status) {
        Some(Follower::Leader(url)) => Some(url),
        Some(Follower::Election) | None => None,
    }
}

/// Maps a failed call to an exit code and a message that says what to do.
pub fn status_exit(status: tonic::Status) -> Exit {
    let msg = status.message().to_string();
    match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange => {
            Exit::new(EXIT_INVALID, msg)
        }
        Code::NotFound => Exit::new(EXIT_NOT_FOUND, msg),
        // The coordinator is at --max-active-runs or --max-queued-jobs; its
        // message gives the counts, the limit and what to do.
        Code::ResourceExhausted => Exit::new(EXIT_UNREACHABLE, msg),
        Code::PermissionDenied | Code::Unauthenticated => Exit::new(
            EXIT_PERMISSION,
            format!(
                "the coordinator refused us: {msg}; `drover whoami` says who the certificate in --tls-dir (or \
                 DROVER_TLS_DIR, or the context) is and what it may do: the admin's, DIR/admin from `drover certs \
                 init --dir DIR`, may do everything, a user's (`drover login`) what its role allows"
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

#[cfg(test)]
mod tests;
