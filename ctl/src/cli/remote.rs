//! The flags that say where the coordinator is (`--coordinator`,
//! `--tls-dir`, `--context`) and how long a stream waits for one
//! (`--reconnect-timeout`): on the commands that use them, and before any
//! command, where the environment variables fill them in. Flags after the
//! command win over those before it, which win over the variables.
//! [`Command::remote`] and [`Command::streams`] say which commands take them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{
    AppsArgs, ArtifactsCommand, AuditArgs, Command, RollbackArgs, RolloutsArgs, ServiceCommand, ServicesArgs,
    parse_duration,
};

// Where the coordinator is, for the commands that reach one: flags after
// the command win over those before it, which win over the variables.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    /// The coordinators' URLs, comma-separated; the CLI tries them in turn
    /// and follows redirects to the leader. Default: DROVER_COORDINATOR,
    /// else the context's, else https://127.0.0.1:7700.
    #[arg(long, value_name = "URLS")]
    pub coordinator: Option<String>,
    /// Directory with ca.pem and a client certificate: a user's, user.pem
    /// and user-key.pem (`drover login`), else the admin's, admin.pem and
    /// admin-key.pem (DIR/admin after `drover certs init --dir DIR`).
    /// Default: DROVER_TLS_DIR, else the context's, else .drover/tls.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// The context (see `drover context`) whose coordinator and TLS
    /// directory to use, instead of the current one (also DROVER_CONTEXT).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

// The same flags before the command, where the variables fill them in.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteBefore {
    /// The coordinators' URLs, comma-separated (for the commands that reach
    /// one; also after the command).
    #[arg(long, env = "DROVER_COORDINATOR", value_name = "URLS")]
    pub coordinator: Option<String>,
    /// The TLS directory, the admin's or a user's (also after the command).
    #[arg(long, env = "DROVER_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// The context to use instead of the current one (also after the
    /// command).
    #[arg(long, env = "DROVER_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
}

impl Remote {
    /// These flags, with those given before the command (or the
    /// variables) filling the gaps.
    pub fn or(&self, before: &RemoteBefore) -> Remote {
        Remote {
            coordinator: self.coordinator.clone().or_else(|| before.coordinator.clone()),
            tls_dir: self.tls_dir.clone().or_else(|| before.tls_dir.clone()),
            context: self.context.clone().or_else(|| before.context.clone()),
        }
    }
}

// For the commands that stream from a coordinator (`run`, `rerun`,
// `watch`, `logs`, `dev`).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Streams {
    /// How long to keep trying to reach a coordinator again when the one
    /// streaming goes away (restarted, failed over); once one answers the
    /// stream goes on where it stopped, and when the time runs out the
    /// command exits 3. Whole numbers with h, m, s or ms (30s, 5m; 0s gives
    /// up at once). Default: DROVER_RECONNECT_TIMEOUT, else 60s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub reconnect_timeout: Option<Duration>,
}

// The same flag before the command, where the variable fills it in.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamsBefore {
    /// How long a stream waits for a coordinator to come back (for the
    /// commands that stream; also after the command).
    #[arg(long, env = "DROVER_RECONNECT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub reconnect_timeout: Option<Duration>,
}

impl Streams {
    /// The timeout, from after the command, else before it (or the
    /// variable), else 60s.
    pub fn or(&self, before: &StreamsBefore) -> Duration {
        self.reconnect_timeout.or(before.reconnect_timeout).unwrap_or(Duration::from_secs(60))
    }
}

impl Command {
    /// The coordinator flags given after the command, for those that reach
    /// one.
    pub fn remote(&self) -> Option<&Remote> {
        match self {
            Command::Run { remote, .. }
            | Command::Rerun { remote, .. }
            | Command::Watch { remote, .. }
            | Command::Logs { remote, .. }
            | Command::Runs { remote, .. }
            | Command::Status { remote, .. }
            | Command::Cancel { remote, .. }
            | Command::Artifacts { command: None, remote, .. }
            | Command::Artifacts { command: Some(ArtifactsCommand::Get { remote, .. }), .. }
            | Command::Agents { remote, .. }
            | Command::Cluster { remote, .. }
            | Command::Version { remote, .. }
            | Command::Caches { remote, .. }
            | Command::Approve { remote, .. }
            | Command::Reject { remote, .. }
            | Command::Repos { remote, .. }
            | Command::Envs { remote, .. }
            | Command::Rollouts(RolloutsArgs { remote, .. })
            | Command::Services(ServicesArgs { remote, .. })
            | Command::Rollback(RollbackArgs { remote, .. })
            | Command::Apps(AppsArgs { remote, .. })
            | Command::Audit(AuditArgs { remote, .. })
            | Command::Service { command: ServiceCommand::Logs { remote, .. } } => Some(remote),
            Command::Secret { command } => Some(command.remote()),
            Command::Cache { command } => Some(command.remote()),
            Command::Repo { command } => Some(command.remote()),
            Command::Env { command } => Some(command.remote()),
            Command::Rollout { command } => Some(command.remote()),
            Command::App { command } => Some(command.remote()),
            Command::Release { command } => Some(command.remote()),
            Command::Notify { command } => Some(command.remote()),
            Command::AgentToken { command } => Some(command.remote()),
            Command::Agent { command } => Some(command.remote()),
            Command::Ca { command } => Some(command.remote()),
            Command::Access(command) => command.remote(),
            Command::Validate { .. }
            | Command::Completion { .. }
            | Command::Context { .. }
            | Command::Certs { .. }
            | Command::Dev { .. } => None,
        }
    }

    /// `--reconnect-timeout` given after the command, for those that
    /// stream.
    pub fn streams(&self) -> Option<&Streams> {
        match self {
            Command::Run { streams, .. }
            | Command::Rerun { streams, .. }
            | Command::Watch { streams, .. }
            | Command::Logs { streams, .. }
            | Command::Dev { streams, .. } => Some(streams),
            _ => None,
        }
    }
}
