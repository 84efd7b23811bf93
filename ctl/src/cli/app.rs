//! `drover app`'s subcommands, and the arguments of `drover apps`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::Remote;
use crate::output::Format;

#[derive(Args)]
pub struct AppsArgs {
    /// Output format: text, wide, json or yaml.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// Register an app: a directory of a git repository whose YAML files
    /// (one per service) declare what an environment runs. The leader
    /// fetches it every --poll, compares it with what the nodes serve, and
    /// with --auto-sync rolls out each new commit.
    ///
    /// Example: drover app create web --repo https://git.example.com/ops/deploy.git --path prod --env production --auto-sync --self-heal
    Create {
        /// The app's name: letters, digits, `_`, `.` and `-`.
        name: String,
        /// The repository: an https, http, ssh, git or file URL, or an
        /// absolute path.
        #[arg(long)]
        repo: String,
        /// The directory of the desired-state files, relative to the
        /// repository's root (`.` for the root).
        #[arg(long)]
        path: String,
        /// The environment the services run in (`drover envs`).
        #[arg(long = "env", value_name = "ENV")]
        environment: String,
        /// A branch, a tag or a commit; the default branch when left out.
        #[arg(long)]
        revision: Option<String>,
        /// How often to fetch it, between 1s and 24h (default 30s).
        #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
        poll: Option<Duration>,
        /// Sync each new commit on its own.
        #[arg(long)]
        auto_sync: bool,
        /// Put back what drifts from the commit last synced (a node on
        /// another release, a service stopped by hand).
        #[arg(long)]
        self_heal: bool,
        /// Stop the services this app synced once that no file declares.
        #[arg(long)]
        prune: bool,
        /// Only report drift (in `drover apps`), never change anything on
        /// its own.
        #[arg(long)]
        detect_only: bool,
        /// Apps that must be synced and healthy before this one syncs,
        /// comma-separated or repeated (a cycle is refused).
        #[arg(long, value_name = "APPS", value_delimiter = ',')]
        depends_on: Vec<String>,
        /// How long a sync may run before it is ended and its rollouts
        /// aborted, between 1s and 24h (default 30m).
        #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
        sync_timeout: Option<Duration>,
        /// For an ssh URL: the secret (`drover secret set`) holding the
        /// private key git fetches and pushes with.
        #[arg(long, value_name = "SECRET", requires = "known_hosts")]
        deploy_key: Option<String>,
        /// With --deploy-key: a known_hosts file of the server's host keys
        /// (e.g. from `ssh-keyscan`); no other host key is trusted.
        #[arg(long, value_name = "FILE", requires = "deploy_key")]
        known_hosts: Option<PathBuf>,
        /// The least role that may sync, roll back, pin or unpin it by hand
        /// (operator or admin); its environment's deploy role applies too.
        #[arg(long, value_name = "ROLE", value_enum)]
        deploy_role: Option<super::env::DeployRole>,
        /// Output format: text, json or yaml (the app).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show an app: its settings, the commit synced and the commit wanted,
    /// its sync status, health, drift and last error.
    ///
    /// Example: drover app status web
    #[command(alias = "show")]
    Status {
        /// The app's name, as `drover apps` lists it.
        name: String,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove an app; what it deployed keeps running.
    ///
    /// Example: drover app rm web
    Rm {
        /// The app's name, as `drover apps` lists it.
        name: String,
        /// Output format: text, json or yaml (`{"removed": NAME}`).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Converge what runs to the app's revision now: a rollout for each
    /// service that differs, with its file's strategy. --dry-run prints
    /// what would change; --wait waits for the sync to end (exit 0 if it
    /// succeeded, 1 if not).
    ///
    /// Example: drover app sync web --wait
    Sync {
        /// The app's name, as `drover apps` lists it.
        name: String,
        /// Print what would change, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Sync this branch, tag or commit, this once (a pipeline syncing
        /// the commit it built: `--revision $DROVER_COMMIT`); the app's
        /// own revision when left out.
        #[arg(long)]
        revision: Option<String>,
        /// Wait for the sync to end.
        #[arg(long)]
        wait: bool,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// The desired state at a revision (the app's own by default) against
    /// what runs, per service, node and field: a plan for any commit.
    ///
    /// Example: drover app diff web --revision feature/bigger-pool -o json
    Diff {
        /// The app's name, as `drover apps` lists it.
        name: String,
        /// A branch, a tag or a commit, merged or not.
        #[arg(long)]
        revision: Option<String>,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Every sync of the app, newest first: its commit, who or what
    /// started it, what it changed and how it ended.
    ///
    /// Example: drover app history web
    History {
        /// The app's name, as `drover apps` lists it.
        name: String,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Go back to an earlier commit and hold there: the app is pinned to
    /// it, synced to it, and auto-sync does not move it until `drover app
    /// unpin`. --wait waits for the sync (exit 0 if it succeeded, 1 if
    /// not).
    ///
    /// Example: drover app rollback web --to 3f9a1c2 --wait
    Rollback {
        /// The app's name, as `drover apps` lists it.
        name: String,
        /// The commit (or tag, or branch, resolved now) to go back to;
        /// `drover app history` lists those synced.
        #[arg(long)]
        to: String,
        /// Wait for the sync to end.
        #[arg(long)]
        wait: bool,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Let a pinned app follow its revision again (fetched now; with
    /// --auto-sync its head is synced).
    ///
    /// Example: drover app unpin web
    Unpin {
        /// The app's name, as `drover apps` lists it.
        name: String,
        /// Output format: text, json or yaml (the app).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Fetch the app's revision now rather than at its next poll.
    ///
    /// Example: drover app refresh web
    Refresh {
        /// The app's name, as `drover apps` lists it.
        name: String,
        /// Output format: text, json or yaml (the app).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Create or replace every app of a YAML file, all of them or, on any
    /// mistake (each reported at file:line:column), none. Apps the file
    /// does not name are left as they are; an app's environment does not
    /// change. The file: `apps: [{name, repo, path, env, revision, poll,
    /// auto_sync, self_heal, prune, detect_only, depends_on,
    /// sync_timeout}]`.
    ///
    /// Example: drover app apply -f apps.yml
    Apply {
        /// The file to apply; `-` reads standard input.
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
        /// Output format: text, json or yaml (`created`, `replaced`,
        /// `unchanged`: names).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl AppCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            AppCommand::Create { remote, .. }
            | AppCommand::Apply { remote, .. }
            | AppCommand::Status { remote, .. }
            | AppCommand::Rm { remote, .. }
            | AppCommand::Sync { remote, .. }
            | AppCommand::Diff { remote, .. }
            | AppCommand::History { remote, .. }
            | AppCommand::Refresh { remote, .. }
            | AppCommand::Rollback { remote, .. }
            | AppCommand::Unpin { remote, .. } => remote,
        }
    }
}
