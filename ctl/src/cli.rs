//! The `drover` command line as clap reads it: the commands, their
//! arguments and flags with their help texts and examples, and the parsers
//! of durations and states. `main.rs` carries the commands out.
//!
//! The flags that reach a coordinator (`--coordinator`, `--tls-dir`,
//! `--context`) belong to the commands that use one ([`Remote`]), and
//! `--reconnect-timeout` to those that stream ([`Streams`]), so that
//! `drover certs --help` does not offer them; they are also taken before
//! the command (`drover --context prod runs`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::dev;
use crate::output::Format;

mod app;
mod artifacts;
mod ca;
mod cache;
mod certs;
mod context;
mod env;
mod identity;
mod notify;
mod parse;
mod release;
mod remote;
mod repo;
mod rollout;
mod secret;
mod user;

pub use app::{AppCommand, AppsArgs};
pub use artifacts::ArtifactsCommand;
pub use ca::{CaCommand, PhaseArg};
pub use cache::CacheCommand;
pub use certs::CertsCommand;
pub use context::ContextCommand;
pub use env::EnvCommand;
pub use identity::{AgentCommand, AgentTokenCommand, AuditArgs};
pub use notify::NotifyCommand;
pub use parse::{RunStateArg, parse_duration};
use parse::{parse_queue_timeout, parse_since};
pub use release::ReleaseCommand;
pub use remote::{Remote, RemoteBefore, Streams, StreamsBefore};
pub use repo::RepoCommand;
pub use rollout::{RollbackArgs, RolloutCommand, RolloutsArgs, ServiceCommand, ServicesArgs};
pub use secret::SecretCommand;
pub use user::{AccessCommand, LoginArgs, UiArgs, UserCommand, UsersArgs, WhoamiArgs};

/// Drover: pipelines on pull-based agents, from the repository to the fleet.
#[derive(Parser)]
#[command(name = "drover", version, after_help = "Example: drover run .drover.yml")]
pub struct Cli {
    #[command(flatten)]
    pub remote: RemoteBefore,
    #[command(flatten)]
    pub streams: StreamsBefore,
    #[command(subcommand)]
    pub command: Command,
}

/// Deferred: a command's flags are built only when it is the one run, so a
/// call does not pay for building the whole tree (`clap::Command::build`
/// builds it all, for the help checks and completions). A deferred command's
/// flags are added after its own help text, so the structs of flags carry
/// plain comments, not doc comments: clap would take a struct's doc comment
/// for the help of every command that flattens it.
#[derive(Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Submit a pipeline, from a file or from a git repository at a ref,
    /// and follow it on a terminal.
    ///
    /// Example: drover run .drover.yml
    Run {
        /// The pipeline file to submit (not with --repo).
        /// Without it (and without --repo), the .drover.yml of the git work
        /// tree you are in, at HEAD.
        #[arg(conflicts_with = "repo")]
        file: Option<PathBuf>,
        /// A git repository: a URL, a file:// URL or a local path.
        #[arg(long)]
        repo: Option<String>,
        /// Branch, tag or commit to run (from --repo, or the work tree).
        #[arg(long = "ref", default_value = "HEAD", conflicts_with = "file")]
        reference: String,
        /// The pipeline file's path in the repository (from --repo, or the
        /// work tree).
        #[arg(long = "file", default_value = ".drover.yml", conflicts_with = "file")]
        path: String,
        /// Show live progress until the run ends; exit 1 if it fails. The
        /// default when stdout is a terminal.
        #[arg(long, short, conflicts_with = "detach")]
        follow: bool,
        /// Print the run's number and return at once, even on a terminal;
        /// `drover watch RUN` follows it later.
        #[arg(long, short)]
        detach: bool,
        /// When following: print job output as the steps wrote it, terminal
        /// escape sequences included (by default only colours pass).
        #[arg(long)]
        raw: bool,
        /// No colour in the live view (also: the NO_COLOR variable, or
        /// stdout not a terminal).
        #[arg(long)]
        no_color: bool,
        /// How long a job may wait while no connected agent has its labels
        /// before it fails, for jobs whose file sets no `queue-timeout:`
        /// (default: the coordinator's `--queue-timeout`, 10m).
        #[arg(long, value_name = "DURATION", value_parser = parse_queue_timeout)]
        queue_timeout: Option<Duration>,
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        streams: Streams,
    },
    /// Check pipeline files offline, as the coordinator would at submit;
    /// exit 2 on any problem.
    ///
    /// Example: drover validate .drover.yml ci/*.yml
    Validate {
        /// The pipeline files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Start a new run of a finished run's pipeline at the same commit:
    /// every job, or with --failed only the jobs that did not succeed and
    /// those after them, reusing the other jobs' results.
    ///
    /// Example: drover rerun 7 --failed --follow
    Rerun {
        /// The run to rerun (it must have finished).
        run: String,
        /// Run again only the jobs that did not succeed, and those after
        /// them; reuse the rest.
        #[arg(long)]
        failed: bool,
        /// Run this job again too, although it succeeded, and those after
        /// it (repeat for more); implies --failed.
        #[arg(long = "job", value_name = "JOB")]
        jobs: Vec<String>,
        /// Show live progress until the new run ends; exit 1 if it fails.
        /// The default when stdout is a terminal.
        #[arg(long, short, conflicts_with = "detach")]
        follow: bool,
        /// Print the new run's number and return at once.
        #[arg(long, short)]
        detach: bool,
        /// No colour in the live view (also: the NO_COLOR variable, or
        /// stdout not a terminal).
        #[arg(long)]
        no_color: bool,
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        streams: Streams,
    },
    /// Follow a run, running or finished, with the live view of `drover
    /// run`: every job's state and output, to the end; exit 1 if it failed.
    /// Ctrl-C stops watching, not the run.
    ///
    /// Example: drover watch 7
    Watch {
        /// The run's number.
        run: String,
        /// Print job output as the steps wrote it, terminal escape
        /// sequences included (by default only colours pass).
        #[arg(long)]
        raw: bool,
        /// Output format: text (the live view), or json (one event per
        /// line: run, job or log).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        /// No colour in the live view (also: the NO_COLOR variable, or
        /// stdout not a terminal).
        #[arg(long)]
        no_color: bool,
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        streams: Streams,
    },
    /// List recent runs, newest first, with their age and duration.
    ///
    /// Example: drover runs --status failed --since 1d -o json
    Runs {
        /// The most runs to list (after the filters).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only runs in this state (repeat for more).
        #[arg(long = "status", value_name = "STATE")]
        states: Vec<RunStateArg>,
        /// Only runs whose pipeline name contains this text.
        #[arg(long)]
        name: Option<String>,
        /// Only runs created within this long (30m, 2h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse_since)]
        since: Option<Duration>,
        /// Output format: text, wide (more columns), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a run and its jobs.
    ///
    /// Example: drover status 7 -o json
    Status {
        /// The run's number, as `drover run` and `drover runs` print it.
        run: String,
        /// Output format: text, wide (durations and start times), json or
        /// yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        /// The same as -o json.
        #[arg(long, conflicts_with = "output")]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a job's log (every attempt, unless --attempt is given).
    ///
    /// Example: drover logs 7 build --follow
    Logs {
        /// The run's number.
        run: String,
        /// The job's name, as the pipeline file has it.
        job: String,
        /// Only this attempt (1, 2, ...); 0 for every attempt.
        #[arg(long, default_value_t = 0)]
        attempt: u32,
        /// Keep printing until the job ends.
        #[arg(long, short)]
        follow: bool,
        /// Print the log's bytes as stored. By default colours pass and every
        /// other control sequence (clear screen, window title, clipboard) is
        /// shown as text, `^[]52;...`, so job output cannot act on your
        /// terminal.
        #[arg(long)]
        raw: bool,
        /// Output format: text, or json (one object per line: job,
        /// attempt, line).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        streams: Streams,
    },
    /// List the artifacts of a run's jobs, or download a job's with `get`.
    ///
    /// Example: drover artifacts 7
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Artifacts {
        #[command(subcommand)]
        command: Option<ArtifactsCommand>,
        /// The run's number.
        #[arg(required = true)]
        run: Option<String>,
        /// Only this job.
        job: Option<String>,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a run: queued jobs are dropped and running ones killed.
    ///
    /// Example: drover cancel 7
    Cancel {
        /// The run's number.
        run: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List agents: name, labels, slots in use, last seen.
    ///
    /// Example: drover agents -o json
    Agents {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show the coordinators, which one leads, the epoch and the store's
    /// health.
    ///
    /// Example: drover cluster -o yaml
    Cluster {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the CLI's version and, when one answers, the coordinator's.
    ///
    /// Example: drover version -o json
    Version {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a shell completion script for bash, zsh, fish, elvish or
    /// PowerShell.
    ///
    /// Example: drover completion bash > ~/.local/share/bash-completion/completions/drover
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Let a job that waits for approval (`approval:` in the pipeline) run;
    /// you must be one of its approvers.
    ///
    /// Example: drover approve 7 deploy --comment "release notes checked"
    Approve {
        /// The run's number.
        run: String,
        /// The job that waits.
        job: String,
        /// Why, for the record (`drover status` shows it).
        #[arg(long, default_value = "")]
        comment: String,
        /// Output format: text, json or yaml (the job as it is then).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Refuse a job that waits for approval: it fails with your reason, and
    /// the jobs after it decide by their conditions.
    ///
    /// Example: drover reject 7 deploy --reason "freeze until Monday"
    Reject {
        /// The run's number.
        run: String,
        /// The job that waits.
        job: String,
        /// Why (required): the job's failure message.
        #[arg(long)]
        reason: String,
        /// Output format: text, json or yaml (the job as it is then).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the cache entries jobs saved (`cache:`), most recently used
    /// first: key, size, last use, the run and job that saved it, scope.
    ///
    /// Example: drover caches -o json
    Caches {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete cache entries (`drover cache rm KEY`).
    ///
    /// Example: drover cache rm cargo-3f2a9c
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Secrets that jobs get as environment variables (`secrets: [NAME]`),
    /// sealed at rest and masked in logs; values are never shown.
    ///
    /// Example: drover secret ls
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// List the repositories that start runs: URL, poll period, branch
    /// filter, the heads last seen, the last poll and the last error.
    ///
    /// Example: drover repos -o wide
    Repos {
        /// Output format: text, wide (every head and schedule), json or
        /// yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Register or remove a repository whose pushes, tags, pull requests
    /// and schedules start runs (`drover repos` lists them).
    ///
    /// Example: drover repo add web --url https://git.example.com/web.git
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// List the environments: selector, nodes connected of those known,
    /// approval and branches; -o wide lists each node.
    ///
    /// Example: drover envs -o wide
    Envs {
        /// Output format: text, wide (each node, connected or not, ready
        /// or draining, last seen), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Define, change, show or remove environments: the sets of agents,
    /// chosen by their certificates' labels, that deploys go to.
    ///
    /// Example: drover env create staging --selector role=web,env=staging
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// List rollouts, newest first: each deploy job's release going over
    /// its environment's nodes, with its phase and how many nodes are done.
    ///
    /// Example: drover rollouts --env production
    Rollouts(RolloutsArgs),
    /// Show a rollout, promote, pause, resume or abort it, or decide its gate.
    ///
    /// Example: drover rollout status 12 --follow
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Put a service back on an earlier release: by default straight to it
    /// on every node at once, skipping canary steps and pauses; with
    /// --staged, step by step as its last rollout went. Rollouts of the
    /// service under way are aborted first.
    ///
    /// Example: drover rollback web --env production --to 3f9a1c2b7d4e
    Rollback(RollbackArgs),
    /// A deployed service's output on its nodes (its stdout and stderr, as
    /// its supervisor keeps them).
    ///
    /// Example: drover service logs web --env staging --node web-1 -f
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// What each node serves, per environment and service: the version,
    /// its artifact's digest, its health, and the run and commit it came
    /// from.
    ///
    /// Example: drover services --env staging
    Services(ServicesArgs),
    /// Reject a release, so that nothing installs it, or lift the reject.
    ///
    /// Example: drover release reject web 3f9a1c2b7d4e --reason "leaks memory"
    Release {
        #[command(subcommand)]
        command: ReleaseCommand,
    },
    /// Webhooks told about rollouts, analyses, gates, freezes and app
    /// syncs, as JSON or Slack messages: add, remove, list or test one.
    ///
    /// Example: drover notify add ops --url https://hooks.slack.com/services/... --format slack
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Join tokens, with which a new agent enrolls: it makes its own key and
    /// gets a short-lived certificate with the token's name and labels,
    /// which it renews. Create, list or revoke them.
    ///
    /// Example: drover agent-token create --name builder-1 --labels os=linux
    AgentToken {
        #[command(subcommand)]
        command: AgentTokenCommand,
    },
    /// An agent's access: revoke its certificates, ban or unban its name,
    /// or list the agents' identities (`drover agents` lists the agents
    /// connected).
    ///
    /// Example: drover agent revoke builder-1
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// The audit log, oldest first: who did what to what, from where, and
    /// how it ended; refusals that look like forgeries are warnings.
    ///
    /// Example: drover audit --since 1h --actor admin:alice
    Audit(AuditArgs),
    /// The certificate authorities and their rotation: show them, move a
    /// rotation on a phase, or bring this CLI's ca.pem and certificate up
    /// to date.
    ///
    /// Example: drover ca status
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    // `login`, `user`, `users` and `whoami`, at the top level.
    #[command(flatten)]
    Access(AccessCommand),
    /// Apps (GitOps): sync status, health, the commit synced and wanted.
    ///
    /// Example: drover apps
    Apps(AppsArgs),
    /// Register, show, sync, diff or remove an app.
    ///
    /// Example: drover app sync web --wait
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Named coordinators and TLS directories to switch between, as
    /// kubectl's contexts; kept in ~/.config/drover/config.yaml.
    ///
    /// Example: drover context add prod --coordinator https://ci.example.com:7700 --tls-dir ~/drover/admin
    Context {
        #[command(subcommand)]
        command: ContextCommand,
    },
    /// Make certificates for mutual TLS.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Start a local coordinator and agents on the embedded store and run
    /// the sample pipeline with live progress.
    ///
    /// Example: drover dev --keep
    Dev {
        #[command(flatten)]
        args: dev::DevArgs,
        #[command(flatten)]
        streams: Streams,
    },
}

#[cfg(test)]
mod tests;
