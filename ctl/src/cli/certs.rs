//! `drover certs`: its subcommands and flags.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create a CA, the coordinator's certificate and the admin certificate,
    /// each in its own directory under DIR (ca/, coordinator/, admin/).
    ///
    /// Example: drover certs init --dir certs --host ci.example.com
    Init {
        /// Where the directories go (ca/, coordinator/, admin/).
        #[arg(long)]
        dir: PathBuf,
        /// Extra host names or IP addresses for the coordinator certificate.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue a client certificate for each agent NAME, in a bundle directory
    /// DIR/agents/NAME to copy to the agent's host.
    ///
    /// Example: drover certs issue-agent builder-1 builder-2 --dir certs --labels os=linux
    IssueAgent {
        /// The agents' names, as each will give `drover-agent --name`.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// The directory given to `drover certs init` (it holds ca/).
        #[arg(long)]
        dir: PathBuf,
        /// The labels the agents may claim, as k=v,k=v; they are written
        /// into the certificate, and the agent's --labels must not go beyond
        /// them.
        #[arg(long, default_value = "", value_parser = drover_client::labels::parse)]
        labels: std::collections::BTreeMap<String, String>,
    },
    /// Make the key that seals secrets at rest, DIR/coordinator/secrets.key
    /// (mode 0600), for a directory made before `drover certs init` made
    /// one; never replaces a key.
    ///
    /// Example: drover certs secrets-key --dir certs
    SecretsKey {
        /// The directory given to `drover certs init` (it holds coordinator/).
        #[arg(long)]
        dir: PathBuf,
    },
}
