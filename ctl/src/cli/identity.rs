//! `drover agent-token`, `drover agent` and `drover audit`: their
//! subcommands and flags (issue 18: agents that enroll with a join token,
//! their access, the audit log).

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::Remote;
use super::parse::parse_since;
use crate::output::Format;

#[derive(Subcommand)]
pub enum AgentTokenCommand {
    /// Create a join token: one agent, under --name and with --labels,
    /// enrolls with it once, before it expires. The agent makes its own
    /// key; the coordinator signs it a short-lived certificate with that
    /// name and those labels, and renews it. The token is shown only this
    /// once, with the `drover-agent` command line that uses it.
    ///
    /// Example: drover agent-token create --name builder-1 --labels os=linux,arch=x86_64 --ttl 30m
    Create {
        /// The agent's name, as it will give `drover-agent --name`.
        #[arg(long)]
        name: String,
        /// The labels its certificate will give it, as k=v,k=v (jobs select
        /// them with `runs-on`).
        #[arg(long, default_value = "", value_parser = drover_client::labels::parse)]
        labels: BTreeMap<String, String>,
        /// How long the token may wait to be used, 10s to 24h: whole
        /// numbers with d, h, m or s (30m, 2h). Default: the coordinator's,
        /// 10m.
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// Output format: text, json or yaml (the token, with `secret` and
        /// `ca_pin`).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// List join tokens: id, agent name, labels, state (unused, used,
    /// expired, revoked), who created each, and when it expires or ended.
    /// Secrets are never shown (the coordinator keeps only their hashes).
    ///
    /// Example: drover agent-token ls -o wide
    Ls {
        /// Output format: text, wide (when each was created, and who or
        /// what ended it), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke an unused token, so that nobody can enroll with it; a used
    /// one cannot be (`drover agent revoke NAME` revokes the agent).
    ///
    /// Example: drover agent-token revoke 7f3a9c2b
    Revoke {
        /// The token's id, as `drover agent-token ls` lists it.
        id: String,
        /// Output format: text, json or yaml (the token as it is then).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl AgentTokenCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            AgentTokenCommand::Create { remote, .. }
            | AgentTokenCommand::Ls { remote, .. }
            | AgentTokenCommand::Revoke { remote, .. } => remote,
        }
    }
}

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Revoke an agent: every coordinator refuses its certificates and
    /// closes its sessions; it must enroll again with a new join token.
    ///
    /// Example: drover agent revoke builder-1
    Revoke {
        /// The agent's name, as `drover agents` or `drover agent
        /// identities` lists it.
        name: String,
        /// Output format: text, json or yaml (the agent's access).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Ban an agent's name: revoke it, and refuse any enrollment under the
    /// name until `drover agent unban NAME`.
    ///
    /// Example: drover agent ban builder-1
    Ban {
        /// The agent's name.
        name: String,
        /// Output format: text, json or yaml (the agent's access).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lift a ban or a revocation of an agent's name: it may enroll again
    /// (with a new join token, `drover agent-token create --name NAME`).
    ///
    /// Example: drover agent unban builder-1
    Unban {
        /// The agent's name.
        name: String,
        /// Output format: text, json or yaml (the agent's access).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// List agents' identities: the enrolled agents, with their labels,
    /// certificate serial, expiry and renewals, and the names revoked or
    /// banned.
    ///
    /// Example: drover agent identities -o wide
    Identities {
        /// Output format: text, wide (whole serials, enrollment and issue
        /// times), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl AgentCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            AgentCommand::Revoke { remote, .. }
            | AgentCommand::Ban { remote, .. }
            | AgentCommand::Unban { remote, .. }
            | AgentCommand::Identities { remote, .. } => remote,
        }
    }
}

// `drover audit`'s flags.
#[derive(Args)]
pub struct AuditArgs {
    /// Only entries within this long (30m, 2h, 7d); by default from the
    /// oldest entry kept.
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    pub since: Option<Duration>,
    /// Only this actor's entries, as the ACTOR column shows it
    /// (`admin:alice`, `agent:builder-1`, `token:ID`).
    #[arg(long)]
    pub actor: Option<String>,
    /// The most entries to list: the newest that match, still printed
    /// oldest first. Default: the coordinator's, 1000 (at most 10000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Output format: text, json or yaml.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub remote: Remote,
}

/// `--ttl`: longer than zero (zero would ask for the coordinator's
/// default, which leaving the flag out says more plainly).
pub(super) fn parse_ttl(text: &str) -> Result<Duration, String> {
    match parse_since(text)? {
        d if d.is_zero() => Err("a token's --ttl must be longer than zero; leave it out for the default, 10m".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_a_duration_longer_than_zero() {
        assert_eq!(parse_ttl("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_ttl("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_ttl("0s").unwrap_err().contains("longer than zero"));
        assert!(parse_ttl("ten").unwrap_err().contains("is not a duration"));
    }
}
