//! `drover rollout`'s subcommands, and the arguments of `drover rollouts`,
//! `drover rollback`, `drover services` and `drover service logs`.

use clap::{Args, Subcommand};

use super::Remote;
use crate::output::Format;

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Show a rollout: its phase, step, and each node's state, with why a
    /// node failed; --follow prints it again as it changes until the
    /// rollout ends (exit 0 if it succeeded, 1 if not; with -o json, one
    /// JSON line per change).
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
    /// Open the approval gate the rollout waits at (`gates:` in its
    /// deploy); you must be one of the gate's approvers. Who approved,
    /// when and the comment are kept with the rollout.
    ///
    /// Example: drover rollout approve 12 --gate qa --comment "smoke tests pass"
    Approve {
        /// The rollout's id.
        id: u64,
        /// The gate it must be waiting at (by default, the one it waits at).
        #[arg(long, value_name = "NAME")]
        gate: Option<String>,
        /// Kept with the gate.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// Output format: text, json or yaml (the rollout).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Refuse the approval gate the rollout waits at: before the rollout,
    /// it ends untouched; later, the step fails (and goes back, or pauses
    /// with `auto_rollback: false`).
    ///
    /// Example: drover rollout reject 12 --reason "error budget spent"
    Reject {
        /// The rollout's id.
        id: u64,
        /// The gate it must be waiting at (by default, the one it waits at).
        #[arg(long, value_name = "NAME")]
        gate: Option<String>,
        /// Why, kept with the gate and the rollout.
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Output format: text, json or yaml (the rollout).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Let the rollout pass its environment's freeze and deploy windows,
    /// in an emergency: it starts (or takes its next step) now. Who and
    /// why are kept with the rollout and logged by the coordinator.
    ///
    /// Example: drover rollout override 12 --reason "hotfix for INC-4411"
    Override {
        /// The rollout's id.
        id: u64,
        /// Why, kept with the rollout.
        #[arg(long, value_name = "TEXT")]
        reason: String,
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
            | RolloutCommand::Abort { remote, .. }
            | RolloutCommand::Approve { remote, .. }
            | RolloutCommand::Reject { remote, .. }
            | RolloutCommand::Override { remote, .. } => remote,
        }
    }
}

// `drover rollouts`' flags.
#[derive(Args)]
pub struct RolloutsArgs {
    /// Only this environment's.
    #[arg(long)]
    pub env: Option<String>,
    /// Only this service's.
    #[arg(long)]
    pub service: Option<String>,
    /// Output format: text, json or yaml.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub remote: Remote,
}

// `drover rollback`'s arguments and flags.
#[derive(Args)]
pub struct RollbackArgs {
    /// The service's name.
    pub service: String,
    /// Its environment.
    #[arg(long)]
    pub env: String,
    /// The version to go back to (`drover rollouts` shows them); by
    /// default the one before the current.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Step by step with the service's last strategy (canary steps and
    /// pauses included), not every node at once.
    #[arg(long)]
    pub staged: bool,
    /// Go back from a one-way door (a release deployed with
    /// `irreversible: true`); needs --reason.
    #[arg(long, requires = "reason")]
    pub force: bool,
    /// Why a forced rollback goes back, kept with its rollout.
    #[arg(long, requires = "force", value_name = "TEXT")]
    pub reason: Option<String>,
    /// Follow the rollback's rollout until it ends, as `drover rollout
    /// status --follow`.
    #[arg(short, long)]
    pub follow: bool,
    /// Output format: text, json or yaml (the rollback's rollout).
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub remote: Remote,
}

// `drover services`' flags.
#[derive(Args)]
pub struct ServicesArgs {
    /// Only this environment's.
    #[arg(long)]
    pub env: Option<String>,
    /// Output format: text, json or yaml.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Print the service's output on each of its nodes in the environment
    /// (the last 64 KiB of each), prefixed with the node when there are
    /// several; -f goes on printing what they add.
    ///
    /// Example: drover service logs web --env staging -f
    Logs {
        /// The service's name.
        service: String,
        /// Its environment.
        #[arg(long)]
        env: String,
        /// Only this node's.
        #[arg(long)]
        node: Option<String>,
        /// Keep printing what the service writes (Ctrl-C ends it).
        #[arg(short, long)]
        follow: bool,
        /// Output format: text, or json (JSON lines: `node`, `line`).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}
