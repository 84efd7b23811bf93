//! `drover`, the command-line interface: submit, watch and steer runs, list
//! agents, make certificates, and `drover dev` for a local fleet.

/// `c_call!(client.method(request))`: builds the request now and returns a
/// future that owns the client, the shape `Conn::call` needs to retry.
/// Defined before the `mod` lines, so every module of the CLI can use it.
macro_rules! c_call {
    ($c:ident . $m:ident ( $req:expr )) => {{
        let req = $req;
        let mut c = $c;
        async move { c.$m(req).await }
    }};
}

mod client;
mod commands;
mod dev;
mod follow;
mod out;
mod resume;
mod states;
mod term;

use drover_pki::ca;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use drover_proto::v1 as pb;

use client::{Conn, EXIT_INVALID, Exit};
use out::outln;

/// Drover: pipelines on pull-based agents, from the repository to the fleet.
#[derive(Parser)]
#[command(name = "drover", version)]
struct Cli {
    /// The coordinators' URLs, comma-separated; the CLI tries them in turn
    /// and follows redirects to the leader.
    #[arg(long, global = true, env = "DROVER_COORDINATOR", default_value = "https://127.0.0.1:7700")]
    coordinator: String,
    /// Directory with ca.pem, admin.pem and admin-key.pem: DIR/admin after
    /// `drover certs init --dir DIR`.
    #[arg(long, global = true, env = "DROVER_TLS_DIR", default_value = ".drover/tls")]
    tls_dir: PathBuf,
    /// How long `run --follow`, `logs` and `dev` keep trying to reach a
    /// coordinator again when the one they stream from goes away (restarted,
    /// failed over). Once one answers they go on where they stopped; when
    /// the time runs out they exit 3. Whole numbers with h, m, s or ms (30s,
    /// 5m; 0s gives up at once), e.g. `drover --reconnect-timeout 5m run
    /// --follow ci.yml`.
    #[arg(
        long,
        global = true,
        env = "DROVER_RECONNECT_TIMEOUT",
        default_value = "60s",
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    reconnect_timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit a pipeline, from a file or from a git repository at a ref.
    Run {
        /// The pipeline file to submit (not with --repo).
        #[arg(conflicts_with = "repo", required_unless_present = "repo")]
        file: Option<PathBuf>,
        /// A git repository: a URL, a file:// URL or a local path.
        #[arg(long)]
        repo: Option<String>,
        /// Branch, tag or commit to run (with --repo).
        #[arg(long = "ref", default_value = "HEAD", requires = "repo")]
        reference: String,
        /// The pipeline file's path in the repository (with --repo).
        #[arg(long = "file", default_value = ".drover.yml", requires = "repo")]
        path: String,
        /// Show live progress until the run ends; exit 1 if it fails.
        #[arg(long, short)]
        follow: bool,
        /// With --follow: print job output as the steps wrote it, terminal
        /// escape sequences included (by default only colours pass).
        #[arg(long, requires = "follow")]
        raw: bool,
    },
    /// List recent runs, newest first.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show a run and its jobs.
    Status {
        run: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's log (every attempt, unless --attempt is given).
    Logs {
        run: String,
        job: String,
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
    },
    /// Cancel a run: queued jobs are dropped and running ones killed.
    Cancel { run: String },
    /// List agents: name, labels, slots in use, last seen.
    Agents,
    /// Show the coordinators, which one leads, the epoch and the store's
    /// health.
    Cluster,
    /// Make certificates for mutual TLS.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Start a local coordinator and agents on the embedded store and run
    /// the sample pipeline with live progress.
    Dev(dev::DevArgs),
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a CA, the coordinator's certificate and the admin certificate,
    /// each in its own directory under DIR (ca/, coordinator/, admin/).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Extra host names or IP addresses for the coordinator certificate.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue a client certificate for each agent NAME, in a bundle directory
    /// DIR/agents/NAME to copy to the agent's host.
    IssueAgent {
        #[arg(required = true)]
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
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("can start the tokio runtime");
    let result = runtime.block_on(run(cli));
    if let Err(e) = result {
        // Stdout's reader went away mid-output (`drover logs 1 a | head`).
        for cause in e.chain() {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                out::exit_if_broken_pipe(io);
            }
        }
        let code = match e.downcast_ref::<Exit>() {
            Some(exit) => exit.code,
            None => EXIT_INVALID,
        };
        eprintln!("drover: {e:#}");
        std::process::exit(code);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Certs { command: CertsCommand::Init { dir, hosts } } => {
            ca::init(&dir, &hosts)?;
            let (ca, coordinator, admin) = (ca::ca_dir(&dir), ca::coordinator_dir(&dir), ca::admin_dir(&dir));
            outln!("created a CA, the coordinator's and the admin's certificates in {}:", dir.display());
            outln!(
                "  {}/  the CA and its key: keep it offline, with the operator; only \
                 `drover certs issue-agent --dir {}` needs it",
                ca.display(),
                dir.display()
            );
            outln!(
                "  {}/  copy to each coordinator host: drover-coordinator --tls-dir {}",
                coordinator.display(),
                coordinator.display()
            );
            outln!(
                "  {}/  for whoever runs the drover CLI: DROVER_TLS_DIR={} (or --tls-dir)",
                admin.display(),
                admin.display()
            );
            outln!("next, for each agent: drover certs issue-agent NAME --dir {} --labels k=v,...", dir.display());
            Ok(())
        }
        Command::Certs { command: CertsCommand::IssueAgent { names, dir, labels } } => {
            let bundles = ca::issue_agents(&dir, &names, &labels)?;
            let labels = drover_client::labels::text(&labels);
            let (shown, flag) = if labels.is_empty() {
                ("no labels".to_string(), String::new())
            } else {
                (format!("labels {labels}"), format!(" --labels {labels}"))
            };
            for (name, bundle) in names.iter().zip(&bundles) {
                outln!(
                    "created {}/ for agent {name} ({shown}): copy it to the agent's host and start \
                     drover-agent --name {name}{flag} --tls-dir DIR_ON_THAT_HOST",
                    bundle.display()
                );
            }
            Ok(())
        }
        Command::Dev(args) => dev::run(args, cli.reconnect_timeout).await,
        Command::Run { file, repo, reference, path, follow, raw } => {
            // The file is read and checked before connecting: a file the
            // coordinator would refuse costs no round trip, and one over
            // gRPC's message limit would only get a transport error.
            let source = match (file, repo) {
                (Some(file), _) => pb::submit_run_request::Source::Inline(pb::InlinePipeline {
                    file_name: file.to_string_lossy().into_owned(),
                    yaml: read_pipeline(&file)?,
                }),
                (None, Some(repo)) => pb::submit_run_request::Source::Git(pb::GitSource {
                    repo: absolute_repo(&repo),
                    r#ref: reference,
                    file: path,
                }),
                (None, None) => unreachable!("clap requires a file or --repo"),
            };
            let mut conn = Conn::connect(&cli.coordinator, &cli.tls_dir).await?;
            submit(&mut conn, source, follow, raw, cli.reconnect_timeout).await
        }
        command => {
            let mut conn = Conn::connect(&cli.coordinator, &cli.tls_dir).await?;
            control(&mut conn, command, cli.reconnect_timeout).await
        }
    }
}

/// Parses a duration flag: whole numbers each followed by h, m, s or ms,
/// largest unit first (`90s`, `1m30s`, `500ms`), as the coordinator's flags
/// take them (less days: nobody waits days for a coordinator).
fn parse_duration(text: &str) -> Result<Duration, String> {
    // The flags' grammar, less days: nobody waits days for a coordinator.
    const UNITS: &drover_client::duration::Units = &[
        ("h", Duration::from_secs(3600)),
        ("m", Duration::from_secs(60)),
        ("s", Duration::from_secs(1)),
        ("ms", Duration::from_millis(1)),
    ];
    drover_client::duration::parse(text, UNITS).ok_or_else(|| {
        format!(
            "{text:?} is not a duration: write whole numbers with units h, m, s or ms, largest first (500ms, 30s, 1m30s, 5m)"
        )
    })
}

/// The coordinator's limit on a pipeline file (`MAX_FILE_BYTES` in
/// coordinator/src/pipeline/mod.rs; the CLI does not depend on the
/// coordinator crate).
const MAX_PIPELINE_BYTES: u64 = 1024 * 1024;

/// Reads a pipeline file, refusing one over the coordinator's limit with
/// exit 2 before reading it all.
pub(crate) fn read_pipeline(file: &Path) -> Result<String, Exit> {
    use std::io::Read;
    let cannot = |e: std::io::Error| Exit::new(EXIT_INVALID, format!("cannot read {}: {e}", file.display()));
    let too_big = |size: String| {
        Exit::new(
            EXIT_INVALID,
            format!(
                "{} is {size}, over the limit of 1 MiB ({MAX_PIPELINE_BYTES} bytes) for a pipeline file; \
                 split it into several pipelines, or move long scripts into files in the repository",
                file.display()
            ),
        )
    };
    let f = std::fs::File::open(file).map_err(cannot)?;
    let size = f.metadata().map_err(cannot)?.len();
    if size > MAX_PIPELINE_BYTES {
        return Err(too_big(format!("{size} bytes")));
    }
    // A pipe or a file that grew since has no trustworthy size: read one
    // byte past the limit at most.
    let mut bytes = Vec::new();
    f.take(MAX_PIPELINE_BYTES + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_PIPELINE_BYTES {
        return Err(too_big("more than that".to_string()));
    }
    String::from_utf8(bytes)
        .map_err(|_| Exit::new(EXIT_INVALID, format!("cannot read {}: it is not UTF-8 text", file.display())))
}

/// `drover run`: submits the pipeline and, with `follow`, shows the run,
/// waiting up to `reconnect` for a coordinator that went away.
async fn submit(
    conn: &mut Conn,
    source: pb::submit_run_request::Source,
    follow: bool,
    raw: bool,
    reconnect: Duration,
) -> anyhow::Result<()> {
    let req = pb::SubmitRunRequest { source: Some(source) };
    // Not idempotent: retried only on a follower's refusal.
    // Inside a traced step (TRACEPARENT set), the new run continues
    // that trace.
    let traceparent: Option<tonic::metadata::MetadataValue<_>> =
        std::env::var("TRACEPARENT").ok().and_then(|t| t.parse().ok());
    let resp = conn
        .call(false, |mut c| {
            let mut request = tonic::Request::new(req.clone());
            if let Some(tp) = &traceparent {
                request.metadata_mut().insert("traceparent", tp.clone());
            }
            async move { c.submit_run(request).await }
        })
        .await?;
    if follow {
        eprintln!("submitted run {}", resp.run_id);
        follow::follow(conn, &resp.run_id, raw, reconnect).await?;
    } else {
        outln!("{}", resp.run_id);
    }
    Ok(())
}

fn absolute_repo(repo: &str) -> String {
    // A local path must be absolute: the coordinator and the agents resolve
    // it from their own working directories.
    let p = Path::new(repo);
    if !repo.contains("://")
        && p.exists()
        && let Ok(abs) = std::fs::canonicalize(p)
    {
        return abs.to_string_lossy().into_owned();
    }
    repo.to_string()
}

/// Every command but `run`, `certs` and `dev`; `reconnect` is how long a
/// log stream that broke waits for a coordinator.
async fn control(conn: &mut Conn, command: Command, reconnect: Duration) -> anyhow::Result<()> {
    match command {
        Command::Runs { limit } => commands::runs(conn, limit).await,
        Command::Status { run, json } => commands::status(conn, run, json).await,
        Command::Logs { run, job, attempt, follow, raw } => {
            commands::logs(conn, pb::GetLogsRequest { run_id: run, job, attempt, follow }, raw, reconnect).await
        }
        Command::Cancel { run } => commands::cancel(conn, run).await,
        Command::Agents => commands::agents(conn).await,
        Command::Cluster => commands::cluster(conn).await,
        Command::Certs { .. } | Command::Dev(_) | Command::Run { .. } => {
            unreachable!("handled in run()")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags() {
        let ok = [
            ("60s", Duration::from_secs(60)),
            ("0s", Duration::ZERO),
            ("5m", Duration::from_secs(300)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("500ms", Duration::from_millis(500)),
            ("2s500ms", Duration::from_millis(2500)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for text in ["", "60", "s", "1.5s", "30s1m", "1m1m", "5 m", "1d", "-1s", "99999999999s"] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("is not a duration"), "{text}: {err}");
        }
    }
}
