//! `drover release`'s subcommands: the reject list (issue 17).

use clap::Subcommand;

use super::Remote;
use crate::output::Format;

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Mark a release of a service as bad: no deploy, promotion, sync,
    /// image update or rollback installs it any more, and an automatic
    /// rollback goes past it to the last release that is not rejected.
    /// Name it by its version (12 hex digits, as `drover services` shows)
    /// or by its artifact's sha256 (64 hex digits: every version built
    /// from those bits).
    ///
    /// Example: drover release reject web 3f9a1c2b7d4e --reason "leaks memory under load"
    Reject {
        /// The service's name, as `drover services` lists it.
        service: String,
        /// A version (12 hex digits) or an artifact's sha256 (64).
        release: String,
        /// Why, for whoever meets the refusal (at most 500 characters).
        #[arg(long)]
        reason: String,
        /// Output format: text, json or yaml (the reject).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lift a reject: the release may be installed again.
    ///
    /// Example: drover release unreject web 3f9a1c2b7d4e
    Unreject {
        /// The service's name.
        service: String,
        /// The version or sha256, as it was rejected.
        release: String,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the rejected releases: of one service, or of all.
    ///
    /// Example: drover release rejects web
    Rejects {
        /// Only this service's.
        service: Option<String>,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl ReleaseCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            ReleaseCommand::Reject { remote, .. }
            | ReleaseCommand::Unreject { remote, .. }
            | ReleaseCommand::Rejects { remote, .. } => remote,
        }
    }
}
