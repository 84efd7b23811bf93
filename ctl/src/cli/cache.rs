//! `drover cache`: its subcommand and flags (`drover caches` lists).

use clap::Subcommand;

use super::Remote;
use crate::output::Format;

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Delete the cache entries with KEY (in every scope, or only in
    /// --scope); the next job with that key saves it again.
    ///
    /// Example: drover cache rm cargo-3f2a9c
    Rm {
        /// The entry's key, as `drover caches` lists it.
        key: String,
        /// Only the entry of this scope: a repository URL, or
        /// pipeline:NAME for files submitted inline.
        #[arg(long)]
        scope: Option<String>,
        /// Output format: text, json or yaml (`{"key": KEY, "deleted": N}`).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl CacheCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            CacheCommand::Rm { remote, .. } => remote,
        }
    }
}
