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
mod context;
mod dev;
mod follow;
mod out;
mod output;
mod resume;
mod states;
mod term;
mod validate;
mod view;
mod worktree;

use drover_pki::ca;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use drover_proto::v1 as pb;

use client::{Conn, EXIT_INVALID, Exit};
use out::outln;
use output::Format;

/// Drover: pipelines on pull-based agents, from the repository to the fleet.
#[derive(Parser)]
#[command(name = "drover", version)]
struct Cli {
    /// The coordinators' URLs, comma-separated; the CLI tries them in turn
    /// and follows redirects to the leader. Default: the context's, else
    /// https://127.0.0.1:7700.
    #[arg(long, global = true, env = "DROVER_COORDINATOR", value_name = "URLS")]
    coordinator: Option<String>,
    /// Directory with ca.pem, admin.pem and admin-key.pem: DIR/admin after
    /// `drover certs init --dir DIR`. Default: the context's, else
    /// .drover/tls.
    #[arg(long, global = true, env = "DROVER_TLS_DIR", value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// The context (see `drover context`) whose coordinator and TLS
    /// directory to use, instead of the current one.
    #[arg(long, global = true, env = "DROVER_CONTEXT", value_name = "NAME")]
    context: Option<String>,
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
    },
    /// Cancel a run: queued jobs are dropped and running ones killed.
    ///
    /// Example: drover cancel 7
    Cancel {
        /// The run's number.
        run: String,
    },
    /// List agents: name, labels, slots in use, last seen.
    ///
    /// Example: drover agents -o json
    Agents {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Show the coordinators, which one leads, the epoch and the store's
    /// health.
    ///
    /// Example: drover cluster -o yaml
    Cluster {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Print the CLI's version and, when one answers, the coordinator's.
    ///
    /// Example: drover version -o json
    Version {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Print a shell completion script for bash, zsh, fish, elvish or
    /// PowerShell.
    ///
    /// Example: drover completion bash > ~/.local/share/bash-completion/completions/drover
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
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
    Dev(dev::DevArgs),
}

#[derive(Subcommand)]
enum ContextCommand {
    /// List the contexts; * marks the current one.
    Ls {
        /// Output format: text, json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Add a context, or replace one of the same name, from --coordinator
    /// and --tls-dir (both needed; the directory is made absolute); the
    /// first one added becomes the current one.
    Add {
        /// The context's name.
        name: String,
        /// Make it the current context.
        #[arg(long = "use")]
        make_current: bool,
    },
    /// Make a context the current one.
    Use {
        /// The context's name.
        name: String,
    },
    /// Remove a context.
    Rm {
        /// The context's name.
        name: String,
    },
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
        Command::Validate { files } => Ok(validate::run(&files)?),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "drover", &mut std::io::stdout());
            Ok(())
        }
        Command::Version { output } => {
            let (urls, tls) = context::resolve(cli.coordinator, cli.tls_dir, cli.context.as_deref())?;
            commands::version(&urls, &tls, output).await
        }
        Command::Context { command } => {
            match command {
                ContextCommand::Ls { output } => context::list(output)?,
                ContextCommand::Add { name, make_current } => {
                    let (Some(urls), Some(dir)) = (cli.coordinator, cli.tls_dir) else {
                        return Err(Exit::new(
                            EXIT_INVALID,
                            format!("a context needs both: drover context add {name} --coordinator URLS --tls-dir DIR"),
                        )
                        .into());
                    };
                    context::add(&name, &urls, &dir, make_current)?
                }
                ContextCommand::Use { name } => context::use_context(&name)?,
                ContextCommand::Rm { name } => context::remove(&name)?,
            }
            Ok(())
        }
        Command::Run { file, repo, reference, path, follow, detach, raw, no_color, queue_timeout } => {
            // The file is read and checked before connecting: a file the
            // coordinator would refuse costs no round trip, and one over
            // gRPC's message limit would only get a transport error.
            let source = match (file, repo) {
                (Some(file), _) => {
                    let yaml = read_pipeline(&file)?;
                    let file_name = file.to_string_lossy().into_owned();
                    // Checked here first, with the coordinator's own rules:
                    // a bad file is exit 2 whether or not a coordinator is
                    // reachable.
                    if let Err(e) = drover_pipeline::parse(&file_name, &yaml) {
                        eprintln!("{e}");
                        return Err(Exit::new(EXIT_INVALID, format!("{file_name} is not a valid pipeline")).into());
                    }
                    pb::submit_run_request::Source::Inline(pb::InlinePipeline { file_name, yaml })
                }
                (None, repo) => {
                    let repo = match repo {
                        Some(repo) => absolute_repo(&repo),
                        None => {
                            let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
                            let Some(top) = worktree::top(&here) else {
                                return Err(Exit::new(
                                    EXIT_INVALID,
                                    "give a pipeline FILE, or --repo URL; or run it in a git work tree to run its \
                                     .drover.yml at HEAD",
                                )
                                .into());
                            };
                            top.to_string_lossy().into_owned()
                        }
                    };
                    if let Some(warning) = worktree::uncommitted(Path::new(&repo), &reference) {
                        eprintln!("{warning}");
                    }
                    pb::submit_run_request::Source::Git(pb::GitSource { repo, r#ref: reference, file: path })
                }
            };
            let (urls, tls) = context::resolve(cli.coordinator, cli.tls_dir, cli.context.as_deref())?;
            let mut conn = Conn::connect(&urls, &tls).await?;
            let queue_timeout_ms = queue_timeout.map_or(0, |d| d.as_millis() as u64);
            let req = pb::SubmitRunRequest { source: Some(source), queue_timeout_ms };
            let paint = view::Paint::detect(no_color);
            submit(&mut conn, req, following(follow, detach), raw, paint, cli.reconnect_timeout).await
        }
        command => {
            let (urls, tls) = context::resolve(cli.coordinator, cli.tls_dir, cli.context.as_deref())?;
            let mut conn = Conn::connect(&urls, &tls).await?;
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

/// A run state as `drover runs --status` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RunStateArg {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStateArg {
    fn proto(self) -> pb::RunState {
        match self {
            RunStateArg::Running => pb::RunState::Running,
            RunStateArg::Succeeded => pb::RunState::Succeeded,
            RunStateArg::Failed => pb::RunState::Failed,
            RunStateArg::Cancelled => pb::RunState::Cancelled,
        }
    }
}

/// `--since`: a duration with days too (`7d`).
fn parse_since(text: &str) -> Result<Duration, String> {
    drover_client::duration::parse(text, drover_client::duration::FLAG_UNITS).ok_or_else(|| {
        format!("{text:?} is not a duration: write whole numbers with units d, h, m or s, largest first (30m, 2h, 7d)")
    })
}

/// `--queue-timeout`: longer than zero, at most 7 days, as in files.
fn parse_queue_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("a queue timeout must be longer than zero".to_string()),
        d if d > drover_pipeline::MAX_TIMEOUT => Err(format!("{text} is over the limit of 7 days (168h)")),
        d => Ok(d),
    }
}

/// The coordinator's limit on a pipeline file.
const MAX_PIPELINE_BYTES: u64 = drover_pipeline::MAX_FILE_BYTES as u64;

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
    req: pb::SubmitRunRequest,
    follow: bool,
    raw: bool,
    paint: view::Paint,
    reconnect: Duration,
) -> anyhow::Result<()> {
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
        let run = &resp.run_id;
        follow::until_interrupted(run, follow::follow(conn, run, raw, paint, reconnect)).await?;
    } else {
        outln!("{}", resp.run_id);
    }
    Ok(())
}

/// Whether `run` and `rerun` follow the new run: when asked, or by default
/// when stdout is a terminal, as `nomad job run` does.
fn following(follow: bool, detach: bool) -> bool {
    use std::io::IsTerminal;
    follow || (!detach && std::io::stdout().is_terminal())
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
        Command::Runs { limit, states, name, since, output } => {
            let created_after_ms = since.map_or(0, |d| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                now.saturating_sub(d).as_millis() as u64
            });
            let states = states.into_iter().map(|s| s.proto() as i32).collect();
            let req = pb::ListRunsRequest { limit, states, name: name.unwrap_or_default(), created_after_ms };
            commands::runs(conn, req, output).await
        }
        Command::Status { run, output, json } => {
            commands::status(conn, run, if json { Format::Json } else { output }).await
        }
        Command::Logs { run, job, attempt, follow, raw, output } => {
            let req = pb::GetLogsRequest { run_id: run, job, attempt, follow };
            commands::logs(conn, req, raw, output, reconnect).await
        }
        Command::Cancel { run } => commands::cancel(conn, run).await,
        Command::Watch { run, raw, output, no_color } => {
            let watch = async {
                match output.for_stream("watch")? {
                    Format::Json => follow::follow_json(conn, &run, reconnect).await,
                    _ => follow::follow(conn, &run, raw, view::Paint::detect(no_color), reconnect).await,
                }
            };
            Ok(follow::until_interrupted(&run, watch).await?)
        }
        Command::Rerun { run, failed, jobs, follow, detach, no_color } => {
            let req = pb::RerunRunRequest { run_id: run, failed, jobs };
            let resp = conn.call(false, |c| c_call!(c.rerun_run(req.clone()))).await?;
            if following(follow, detach) {
                eprintln!("started run {} (a rerun of run {})", resp.run_id, req.run_id);
                let run = &resp.run_id;
                let paint = view::Paint::detect(no_color);
                follow::until_interrupted(run, follow::follow(conn, run, false, paint, reconnect)).await?;
            } else {
                outln!("{}", resp.run_id);
            }
            Ok(())
        }
        Command::Agents { output } => commands::agents(conn, output).await,
        Command::Cluster { output } => commands::cluster(conn, output).await,
        Command::Certs { .. }
        | Command::Dev(_)
        | Command::Run { .. }
        | Command::Validate { .. }
        | Command::Completion { .. }
        | Command::Version { .. }
        | Command::Context { .. } => {
            unreachable!("handled in run()")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

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
