//! `drover repo`: its subcommands and their flags (`drover repos` lists).

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::Remote;
use crate::output::Format;

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Register a repository whose pushes, tags, pull requests and
    /// schedules start runs of its .drover.yml (as its `on:` says). The
    /// coordinator polls it with `git ls-remote`; its first poll only
    /// records the heads.
    ///
    /// Example: drover repo add web --url https://git.example.com/web.git --poll 1m --branches 'main,release/*'
    Add {
        /// The repository's name: letters, digits, `_`, `.` and `-`.
        name: String,
        /// Where it is: an https, http, ssh, git or file URL, an absolute
        /// path, or user@host:path.
        #[arg(long)]
        url: String,
        /// How often to poll it, between 1s and 24h (e.g. 30s, 5m).
        #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
        poll: Option<Duration>,
        /// Branch globs whose pushes start runs, comma-separated or
        /// repeated (`*` within a segment, `**` across); every branch when
        /// left out.
        #[arg(long, value_name = "PATTERNS", value_parser = parse_patterns)]
        branches: Vec<Vec<String>>,
        /// A file holding the webhook's shared secret (one final line
        /// break removed); it is sealed, and never shown again.
        #[arg(long, value_name = "FILE")]
        webhook_secret_file: Option<PathBuf>,
        /// Give pull-request runs of this repository the secrets their
        /// jobs declare (by default they get none: a pull request runs
        /// code its author chose).
        #[arg(long)]
        trusted: bool,
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a repository: it starts no more runs; the runs it started
    /// stay.
    ///
    /// Example: drover repo rm web
    Rm {
        /// The repository's name, as `drover repos` lists it.
        name: String,
        /// Output format: text, json or yaml (`{"removed": NAME}`).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl RepoCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            RepoCommand::Add { remote, .. } | RepoCommand::Rm { remote, .. } => remote,
        }
    }
}

/// `--branches main,release/*`: patterns split at commas, except those
/// inside a `{a,b}` choice; the coordinator checks each.
pub fn parse_patterns(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    let out: Vec<String> = out.into_iter().map(|p| p.trim().to_string()).collect();
    if out.iter().any(String::is_empty) {
        return Err(format!("{text:?} has an empty pattern; write patterns separated by commas (main,release/*)"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_patterns_split_at_commas_outside_choices() {
        let some = |list: &[&str]| Ok(list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(parse_patterns("main"), some(&["main"]));
        assert_eq!(parse_patterns("main, release/*"), some(&["main", "release/*"]));
        assert_eq!(parse_patterns("feature/{a,b},main"), some(&["feature/{a,b}", "main"]));
        assert!(parse_patterns("main,,dev").unwrap_err().contains("empty pattern"));
        assert!(parse_patterns("").is_err());
    }
}
