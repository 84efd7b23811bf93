//! What a failed etcd call means for the caller: sorting `etcd-client`'s
//! errors into [`Failure`]s. The sort decides whether the call may be resent
//! to another endpoint (the request certainly never reached a server, or it
//! is safe to repeat) and which `StoreError` the caller finally sees. It is
//! kept apart from the calls themselves because it is the subtle part of
//! failover: it reads tonic's status codes and error chains, which change
//! between releases, and it needs no etcd to reason about.

/// How a failed call failed, which decides whether it may be resent to
/// another endpoint and which [`StoreError`](crate::store::StoreError) it
/// becomes.
#[derive(Debug)]
pub(super) enum Failure {
    /// The request certainly was not applied: it never reached a server, or
    /// the member refused it for lack of a leader.
    NotSent(String),
    /// The connection or the cluster failed; the request may have been applied.
    Unreachable(String),
    /// etcd said something does not exist (a lease).
    NotFound(String),
    /// etcd refused the request itself; resending cannot help.
    Rejected(String),
    /// etcd reported lost or corrupt data.
    DataLoss(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotSent(msg)
            | Failure::Unreachable(msg)
            | Failure::NotFound(msg)
            | Failure::Rejected(msg)
            | Failure::DataLoss(msg) => f.write_str(msg),
        }
    }
}

/// Sorts an etcd-client error by what it means for the caller.
pub(super) fn classify(e: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => classify_status(&status),
        E::TransportError(e) => Failure::NotSent(drover_client::chain::cause(&e)),
        E::IoError(e) => Failure::Unreachable(e.to_string()),
        E::WatchError(msg) | E::LeaseKeepAliveError(msg) | E::Internal(msg) | E::EndpointError(msg) => {
            if msg.contains("not found") { Failure::NotFound(msg) } else { Failure::Unreachable(msg) }
        }
        other => Failure::Rejected(other.to_string()),
    }
}

fn classify_status(status: &tonic::Status) -> Failure {
    use tonic::Code;
    let detail = describe_status(status);
    if is_connect_error(status) {
        return Failure::NotSent(detail);
    }
    match status.code() {
        // "no leader" is answered before the request is proposed.
        Code::Unavailable if status.message().contains("no leader") => Failure::NotSent(detail),
        // Connection errors, "leader changed", "request timed out", "too many
        // requests" and a full database ("database space exceeded") all mean
        // the store cannot take the request now.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::Unknown => Failure::Unreachable(detail),
        Code::NotFound => Failure::NotFound(detail),
        Code::DataLoss => Failure::DataLoss(detail),
        _ => Failure::Rejected(detail),
    }
}

/// Whether the request failed while connecting, so no server has seen it.
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("tcp connect error")
            || text.contains("error trying to connect")
            || text.contains("dns error")
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// A status's message and what lies below it, each text once (tonic's
/// message is often its source's text, and its outer "transport error"
/// says nothing); the code when there is neither.
fn describe_status(status: &tonic::Status) -> String {
    let message = status.message();
    let below = std::error::Error::source(status).map(drover_client::chain::cause).unwrap_or_default();
    match (message.is_empty(), below.is_empty() || message.contains(&below)) {
        (true, true) => format!("{:?}", status.code()),
        (true, false) => below,
        (false, true) => message.to_string(),
        (false, false) => format!("{message}: {below}"),
    }
}
