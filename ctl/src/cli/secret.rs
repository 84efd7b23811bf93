//! `drover secret`: its subcommands and their flags.

use std::path::PathBuf;

use clap::Subcommand;

use super::Remote;
use crate::output::Format;

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Create or replace a secret. The value comes from standard input (one
    /// final line break removed) or, byte for byte, from --from-file; at
    /// most 64 KiB. Jobs get it as the variable NAME with `secrets: [NAME]`,
    /// and it is masked as `***` in their logs. Or pipe it in: `printf '%s'
    /// "$TOKEN" | drover secret set DEPLOY_TOKEN`.
    ///
    /// Example: drover secret set DEPLOY_TOKEN --from-file token.txt
    Set {
        /// The secret's name: letters, digits and `_`, not starting with a
        /// digit (it becomes the variable's name).
        name: String,
        /// Read the value from this file instead of standard input.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the secrets: name, size, when and by whom each was last set.
    /// Values are never shown.
    ///
    /// Example: drover secret ls -o json
    Ls {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a secret; jobs that declare it fail until it is set again.
    ///
    /// Example: drover secret rm DEPLOY_TOKEN
    Rm {
        /// The secret's name.
        name: String,
        /// Output format: text, json or yaml (`{"removed": NAME}`).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl SecretCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            SecretCommand::Set { remote, .. } | SecretCommand::Ls { remote, .. } | SecretCommand::Rm { remote, .. } => {
                remote
            }
        }
    }
}
