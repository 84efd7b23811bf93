//! `drover env`: its subcommands and their flags (`drover envs` lists).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;

use super::Remote;
use super::repo::parse_patterns;
use crate::output::Format;

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Define an environment: the agents whose certificates' labels include
    /// every label of --selector are its nodes, where deploys to it go.
    /// Labels are the coordinator's (`drover certs issue-agent --labels`),
    /// not what an agent claims. Change one with `drover env apply`.
    ///
    /// Example: drover env create staging --selector role=web,env=staging --branches 'main,release/*'
    Create {
        /// The environment's name: letters, digits, `_`, `.` and `-`, at
        /// most 63, starting with a letter or a digit.
        name: String,
        /// The labels every node must have, k=v,k=v (1 to 16).
        #[arg(long, value_name = "LABELS", value_parser = parse_selector)]
        selector: BTreeMap<String, String>,
        /// Deploys to it wait for an approval from one of --approvers.
        #[arg(long)]
        require_approval: bool,
        /// Who may approve a deploy to it: certificate names,
        /// comma-separated or repeated.
        #[arg(long, value_name = "NAMES", value_delimiter = ',')]
        approvers: Vec<String>,
        /// Branch globs whose pipelines may deploy to it, comma-separated
        /// or repeated (`*` within a segment, `**` across); every branch
        /// when left out.
        #[arg(long, value_name = "PATTERNS", value_parser = parse_patterns)]
        branches: Vec<Vec<String>>,
        /// One line saying what it is.
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
        /// The least role that may deploy to it by hand (`drover run` of a
        /// pipeline that deploys here, rollout actions, rollbacks, app
        /// syncs): operator or admin; any operator when left out.
        #[arg(long, value_name = "ROLE", value_enum)]
        deploy_role: Option<DeployRole>,
        /// Output format: text, json or yaml (the environment, with its
        /// nodes).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Create or replace the environments of a YAML file, all of them or
    /// (on any mistake, reported at file:line:column) none. Environments
    /// the file does not name stay as they are.
    ///
    /// The file: `environments: [{name: staging, selector: {role: web,
    /// env: staging}, require_approval: false, approvers: [alice],
    /// branches: [main], description: TEXT, windows: [{allow: "0 9 * *
    /// 1-5", for: 8h, timezone: Europe/Berlin}, {deny: "0 0 24 12 *",
    /// for: 48h, reason: christmas}]}]`.
    ///
    /// Example: drover env apply -f environments.yml
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
    /// Show one environment: its selector, approval, branches, and each
    /// node with its connection.
    ///
    /// Example: drover env show staging
    Show {
        /// The environment's name, as `drover envs` lists it.
        name: String,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove an environment definition; its agents are not touched.
    ///
    /// Example: drover env rm staging
    Rm {
        /// The environment's name, as `drover envs` lists it.
        name: String,
        /// Output format: text, json or yaml (`{"removed": NAME}`).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Freeze an environment: no new release starts there (deploy jobs,
    /// promotions and app syncs wait), a rollout under way holds before
    /// its next step, and when the freeze ends only the newest waiting
    /// rollout of each service starts. Rollbacks pass a freeze.
    ///
    /// Example: drover env freeze production --for 48h --reason "end-of-quarter freeze"
    Freeze {
        /// The environment's name.
        name: String,
        /// Why, for whoever waits (at most 500 characters).
        #[arg(long)]
        reason: String,
        /// How long (e.g. 2h, 3d); without it, until `drover env unfreeze`.
        #[arg(long = "for", value_name = "DURATION", value_parser = super::parse::parse_since)]
        duration: Option<std::time::Duration>,
        /// Output format: text, json or yaml (the freeze).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// End an environment's freeze: what waited goes on.
    ///
    /// Example: drover env unfreeze production
    Unfreeze {
        /// The environment's name.
        name: String,
        /// Output format: text, json or yaml (the freeze ended).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// The environments frozen now, with why, by whom and until when.
    ///
    /// Example: drover env freezes
    Freezes {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl EnvCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            EnvCommand::Create { remote, .. }
            | EnvCommand::Apply { remote, .. }
            | EnvCommand::Show { remote, .. }
            | EnvCommand::Rm { remote, .. }
            | EnvCommand::Freeze { remote, .. }
            | EnvCommand::Unfreeze { remote, .. }
            | EnvCommand::Freezes { remote, .. } => remote,
        }
    }
}

/// `--selector role=web,env=staging`: the agent label grammar; the
/// coordinator checks the rest (how many, each label's form).
fn parse_selector(text: &str) -> Result<BTreeMap<String, String>, String> {
    drover_client::labels::parse(text)
        .map_err(|why| format!("{why} (a selector is the labels every node must have, e.g. role=web,env=staging)"))
}

/// The least role that may deploy by hand to an environment or an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeployRole {
    Operator,
    Admin,
}

impl DeployRole {
    /// As the coordinator reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployRole::Operator => "operator",
            DeployRole::Admin => "admin",
        }
    }
}
