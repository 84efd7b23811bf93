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

mod certs;
mod client;
mod dev;
mod follow;
mod out;

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

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
    /// Directory with ca.pem, admin.pem and admin-key.pem.
    #[arg(long, global = true, env = "DROVER_TLS_DIR", default_value = ".drover/tls")]
    tls_dir: PathBuf,
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
    /// Create a CA, the coordinator's certificate and the admin certificate.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Extra host names or IP addresses for the coordinator certificate.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue a client certificate for each agent NAME.
    IssueAgent {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        dir: PathBuf,
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
            certs::init(&dir, &hosts)?;
            outln!("created CA, coordinator and admin certificates in {}", dir.display());
            Ok(())
        }
        Command::Certs { command: CertsCommand::IssueAgent { names, dir } } => {
            certs::issue_agents(&dir, &names)?;
            for name in &names {
                outln!("created {}/agent-{name}.pem and agent-{name}-key.pem", dir.display());
            }
            Ok(())
        }
        Command::Dev(args) => dev::run(args).await,
        command => {
            let mut conn = Conn::connect(&cli.coordinator, &cli.tls_dir).await?;
            control(&mut conn, command).await
        }
    }
}

fn fmt_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let ago = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH + Duration::from_millis(ms))
        .unwrap_or_default()
        .as_secs();
    match ago {
        0..60 => format!("{ago}s ago"),
        60..3600 => format!("{}m ago", ago / 60),
        3600..86400 => format!("{}h ago", ago / 3600),
        _ => format!("{}d ago", ago / 86400),
    }
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

async fn control(conn: &mut Conn, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { file, repo, reference, path, follow } => {
            let source = match (file, repo) {
                (Some(file), _) => {
                    let yaml = std::fs::read_to_string(&file)
                        .map_err(|e| Exit::new(EXIT_INVALID, format!("cannot read {}: {e}", file.display())))?;
                    pb::submit_run_request::Source::Inline(pb::InlinePipeline {
                        file_name: file.to_string_lossy().into_owned(),
                        yaml,
                    })
                }
                (None, Some(repo)) => pb::submit_run_request::Source::Git(pb::GitSource {
                    repo: absolute_repo(&repo),
                    r#ref: reference,
                    file: path,
                }),
                (None, None) => unreachable!("clap requires a file or --repo"),
            };
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
                follow::follow(conn, &resp.run_id).await?;
            } else {
                outln!("{}", resp.run_id);
            }
            Ok(())
        }
        Command::Runs { limit } => {
            let runs = conn.call(true, |c| c_call!(c.list_runs(pb::ListRunsRequest { limit }))).await?.runs;
            outln!("{:<6} {:<24} {:<10} {:<12} {:<10}", "RUN", "NAME", "STATE", "COMMIT", "CREATED");
            for r in runs {
                let commit =
                    if r.commit.is_empty() { "-".to_string() } else { r.commit[..12.min(r.commit.len())].to_string() };
                outln!("{:<6} {:<24} {:<10} {:<12} {:<10}", r.id, r.name, r.state, commit, fmt_ms(r.created_ms));
            }
            Ok(())
        }
        Command::Status { run, json } => {
            let r = conn.call(true, |c| c_call!(c.get_run(pb::GetRunRequest { run_id: run.clone() }))).await?;
            if json {
                outln!("{}", run_json(&r));
            } else {
                print_run(&r);
            }
            Ok(())
        }
        Command::Logs { run, job, attempt, follow } => {
            use std::io::Write;
            let req = pb::GetLogsRequest { run_id: run, job, attempt, follow };
            let mut seen = follow::LogSeen::default();
            let mut out = std::io::stdout().lock();
            let mut last_attempt = 0;
            // A stream that breaks (the coordinator died) is opened again on
            // another coordinator; what was printed already is skipped.
            'stream: loop {
                let mut stream = conn.call(true, |c| c_call!(c.get_logs(req.clone()))).await?;
                loop {
                    let chunk = match stream.message().await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => break 'stream,
                        Err(status) if follow::retry_stream(&status) => continue 'stream,
                        Err(status) => return Err(client::status_exit(status).into()),
                    };
                    let Some(data) = seen.fresh(&chunk) else { continue };
                    if chunk.attempt != last_attempt && last_attempt != 0 {
                        writeln!(out, "--- attempt {} ---", chunk.attempt)?;
                    }
                    last_attempt = chunk.attempt;
                    out.write_all(data)?;
                    if follow {
                        out.flush()?;
                    }
                }
            }
            Ok(())
        }
        Command::Cancel { run } => {
            let r = conn.call(true, |c| c_call!(c.cancel_run(pb::CancelRunRequest { run_id: run.clone() }))).await?;
            outln!("run {} {}", r.id, if r.state == "running" { "cancelling" } else { &r.state });
            Ok(())
        }
        Command::Agents => {
            let agents = conn.call(true, |c| c_call!(c.list_agents(pb::ListAgentsRequest {}))).await?.agents;
            outln!("{:<20} {:<32} {:<8} {:<10}", "NAME", "LABELS", "SLOTS", "LAST SEEN");
            for a in agents {
                let mut labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                labels.sort();
                let seen = match (a.connected, a.draining) {
                    (true, true) => "draining".to_string(),
                    (true, false) => "connected".to_string(),
                    (false, _) => fmt_ms(a.last_seen_ms),
                };
                outln!(
                    "{:<20} {:<32} {:<8} {:<10}",
                    a.name,
                    if labels.is_empty() { "-".to_string() } else { labels.join(",") },
                    format!("{}/{}", a.slots_in_use, a.slots),
                    seen
                );
            }
            Ok(())
        }
        Command::Cluster => {
            let c = conn.call(true, |c| c_call!(c.cluster(pb::ClusterRequest {}))).await?;
            outln!("store: {}   epoch: {}   answered by: {}", c.store, c.epoch, c.answered_by);
            outln!("{:<28} {:<34} {:<8} STARTED", "COORDINATOR", "URL", "ROLE");
            for m in &c.coordinators {
                let role = if m.leader { "leader" } else { "follower" };
                outln!("{:<28} {:<34} {:<8} {}", m.id, m.url, role, fmt_ms(m.started_ms));
            }
            if c.leader_id.is_empty() {
                outln!("no leader at the moment (an election is under way)");
            }
            if !c.endpoints.is_empty() {
                outln!("{:<34} {:<9} DETAIL", "STORE ENDPOINT", "HEALTH");
                for e in &c.endpoints {
                    outln!("{:<34} {:<9} {}", e.endpoint, if e.healthy { "healthy" } else { "DOWN" }, e.detail);
                }
            }
            Ok(())
        }
        Command::Certs { .. } | Command::Dev(_) => unreachable!("handled without a connection"),
    }
}

fn print_run(r: &pb::Run) {
    outln!("run {}  {}  {}", r.id, r.name, r.state);
    if !r.repo.is_empty() {
        outln!("source: {} @ {} ({})", r.repo, r.commit, r.file);
    } else {
        outln!("source: {}", r.file);
    }
    outln!("{:<20} {:<11} {:<8} {:<16} DETAIL", "JOB", "STATE", "ATTEMPT", "AGENT");
    for j in &r.jobs {
        let detail = if !j.waiting_for.is_empty() {
            format!("waiting for {}", j.waiting_for)
        } else if !j.needs.is_empty() && j.state == "pending" {
            format!("needs {}", j.needs.join(", "))
        } else {
            j.message.clone()
        };
        let agent = if j.agent.is_empty() { "-" } else { &j.agent };
        outln!("{:<20} {:<11} {:<8} {:<16} {}", j.name, j.state, j.attempt, agent, detail);
    }
}

fn run_json(r: &pb::Run) -> serde_json::Value {
    let jobs: Vec<serde_json::Value> = r
        .jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "name": j.name,
                "state": j.state,
                "needs": j.needs,
                "attempt": j.attempt,
                "agent": j.agent,
                "waiting_for": j.waiting_for,
                "exit_code": j.exit_code,
                "started_ms": j.started_ms,
                "finished_ms": j.finished_ms,
                "message": j.message,
            })
        })
        .collect();
    serde_json::json!({
        "id": r.id,
        "name": r.name,
        "state": r.state,
        "repo": r.repo,
        "commit": r.commit,
        "file": r.file,
        "created_ms": r.created_ms,
        "finished_ms": r.finished_ms,
        "jobs": jobs,
    })
}
