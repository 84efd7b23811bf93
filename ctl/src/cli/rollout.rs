//! `drover rollout`: its subcommands and their flags (`drover rollouts`
//! lists, `drover services` shows what nodes serve).

use clap::Subcommand;

use super::Remote;
use crate::output::Format;

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Show a rollout: its phase, step, and each node's state, with why a
    /// node failed; --follow redraws it until the rollout ends (exit 0 if it
    /// succeeded, 1 if not).
    ///
    /// Example: drover rollout status 12 --follow
    Status {
        /// The rollout's id (`drover rollouts` lists them).
        id: u64,
        /// Redraw as it changes until the rollout ends.
        #[arg(short, long)]
        follow: bool,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// End a canary's pause now and go on to its next step; with --full,
    /// skip every pause left and update every remaining node at once.
    ///
    /// Example: drover rollout promote 12
    Promote {
        /// The rollout's id.
        id: u64,
        /// Skip every pause left and update every remaining node at once.
        #[arg(long)]
        full: bool,
        /// Output format: text, json or yaml (the rollout).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Start no new step (nodes already moving finish); `resume` goes on.
    ///
    /// Example: drover rollout pause 12
    Pause {
        /// The rollout's id.
        id: u64,
        /// Output format: text, json or yaml (the rollout).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Go on with a paused rollout, trying its failed nodes again.
    ///
    /// Example: drover rollout resume 12
    Resume {
        /// The rollout's id.
        id: u64,
        /// Output format: text, json or yaml (the rollout).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop the rollout and put every node it touched back on the release
    /// it ran before (a queued rollout simply ends).
    ///
    /// Example: drover rollout abort 12
    Abort {
        /// The rollout's id.
        id: u64,
        /// Output format: text, json or yaml (the rollout).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl RolloutCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            RolloutCommand::Status { remote, .. }
            | RolloutCommand::Promote { remote, .. }
            | RolloutCommand::Pause { remote, .. }
            | RolloutCommand::Resume { remote, .. }
            | RolloutCommand::Abort { remote, .. } => remote,
        }
    }
}
