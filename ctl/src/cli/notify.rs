//! `drover notify`'s subcommands: the webhooks the leader tells about
//! rollouts, analyses, gates, freezes and app syncs (issue 17).

use clap::{Subcommand, ValueEnum};

use super::Remote;
use crate::output::Format;

/// What a target is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum BodyFormat {
    /// The notice as a JSON object.
    #[default]
    Json,
    /// A Slack incoming-webhook message (Mattermost and Rocket.Chat take it
    /// too).
    Slack,
}

impl BodyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyFormat::Json => "json",
            BodyFormat::Slack => "slack",
        }
    }
}

/// The least severity a target takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum MinSeverity {
    /// Everything.
    #[default]
    Info,
    /// Rollbacks, failed or inconclusive analyses, failed syncs, and what
    /// is critical.
    Warning,
    /// Failed and frozen rollouts only.
    Critical,
}

impl MinSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            MinSeverity::Info => "info",
            MinSeverity::Warning => "warning",
            MinSeverity::Critical => "critical",
        }
    }
}

#[derive(Subcommand)]
pub enum NotifyCommand {
    /// Add a webhook that is told what happens (or replace the one of that
    /// name): rollouts started, succeeded, rolled back, failed or frozen;
    /// analyses failed or inconclusive; gates waiting or decided; freezes
    /// started or ended; app syncs failed or succeeded. It is POSTed each
    /// notice it wants, as JSON or as a Slack message, tried up to 5 times
    /// within a minute; a rollout never waits for it. At most 32 targets.
    ///
    /// Example: drover notify add ops --url https://hooks.slack.com/services/... --format slack --min-severity warning
    Add {
        /// The target's name: letters, digits, `_`, `.` and `-`.
        name: String,
        /// Where to POST: http:// or https://, at most 2048 characters.
        /// Listings show only its scheme and host (a Slack webhook's URL
        /// is its credential).
        #[arg(long)]
        url: String,
        /// What to send: the notice as JSON, or a Slack message.
        #[arg(long, value_enum, default_value_t)]
        format: BodyFormat,
        /// The least severity it takes.
        #[arg(long, value_enum, default_value_t)]
        min_severity: MinSeverity,
        /// Only these environments' notices, comma-separated or repeated
        /// (at most 16); by default every environment's.
        #[arg(long = "env", value_name = "ENV", value_delimiter = ',')]
        environments: Vec<String>,
        /// Only these kinds, comma-separated; by default every kind:
        /// rollout_started, rollout_succeeded, rollout_rolled_back,
        /// rollout_failed, rollout_frozen, analysis_failed,
        /// analysis_inconclusive, gate_waiting, gate_decided,
        /// freeze_started, freeze_ended, sync_failed, sync_succeeded.
        #[arg(long, value_name = "KINDS", value_delimiter = ',')]
        kinds: Vec<String>,
        /// Output format: text, json or yaml (the target).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a target: it is told nothing more.
    ///
    /// Example: drover notify rm ops
    Rm {
        /// The target's name.
        name: String,
        /// Output format: text, json or yaml (the target removed).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the targets: where each goes (scheme and host), its format
    /// and what it takes.
    ///
    /// Example: drover notify list -o json
    List {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Send a target one notice of kind `test` now, once, whatever it
    /// filters, and show how it answered; exit 1 unless it answered 2xx.
    ///
    /// Example: drover notify test ops
    Test {
        /// The target's name.
        name: String,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl NotifyCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            NotifyCommand::Add { remote, .. }
            | NotifyCommand::Rm { remote, .. }
            | NotifyCommand::List { remote, .. }
            | NotifyCommand::Test { remote, .. } => remote,
        }
    }
}
