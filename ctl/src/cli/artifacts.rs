//! `drover artifacts get`: its flags (`drover artifacts RUN` lists).

use std::path::PathBuf;

use clap::Subcommand;

use super::Remote;

#[derive(Subcommand)]
pub enum ArtifactsCommand {
    /// Download a job's artifacts and unpack them into a directory, checked
    /// against their sha256; nothing is written outside it.
    ///
    /// Example: drover artifacts get 7 build -o out/
    Get {
        /// The run's number.
        run: String,
        /// The job whose artifacts to get.
        job: String,
        /// The directory to unpack into; it must not exist, or be empty.
        #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
        dest: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
}
