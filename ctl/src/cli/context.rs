//! `drover context`: its subcommands and flags.

use std::path::PathBuf;

use clap::Subcommand;

use crate::output::Format;

#[derive(Subcommand)]
pub enum ContextCommand {
    /// List the contexts; * marks the current one.
    ///
    /// Example: drover context ls
    Ls {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Add a context, or replace one of the same name; the first one added
    /// becomes the current one.
    ///
    /// Example: drover context add prod --coordinator https://ci1:7700,https://ci2:7700 --tls-dir ~/drover/admin
    Add {
        /// The context's name.
        name: String,
        /// The coordinators' URLs, comma-separated.
        #[arg(long, value_name = "URLS")]
        coordinator: String,
        /// The TLS directory, the admin's or a user's (made absolute).
        #[arg(long, value_name = "DIR")]
        tls_dir: PathBuf,
        /// Make it the current context.
        #[arg(long = "use")]
        make_current: bool,
    },
    /// Make a context the current one.
    ///
    /// Example: drover context use prod
    Use {
        /// The context's name.
        name: String,
    },
    /// Remove a context.
    ///
    /// Example: drover context rm prod
    Rm {
        /// The context's name.
        name: String,
    },
}
