//! `drover`, the command-line interface: submit, watch and steer runs, list
//! agents, make certificates, log in as a user, and `drover dev` for a
//! local fleet.

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

/// `i_call!(client.method(request))`: the same, on the identity service of
/// the connection of control client `client`.
macro_rules! i_call {
    ($c:ident . $m:ident ( $req:expr )) => {{
        let req = $req;
        let mut i = $c.identity();
        async move { i.$m(req).await }
    }};
}

mod apps;
mod authorities;
mod caches;
mod cli;
mod client;
mod commands;
mod context;
mod dev;
mod environments;
mod follow;
mod identity;
mod login;
mod notify;
mod out;
mod output;
mod releases;
mod repos;
mod resume;
mod rollouts;
mod secrets;
mod states;
mod term;
mod users;
mod validate;
mod view;
mod worktree;

use drover_pki::ca;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use drover_proto::v1 as pb;

use cli::{CertsCommand, Cli, Command, ContextCommand, Remote, RemoteBefore};
use client::{Conn, EXIT_INVALID, Exit};
use out::outln;
use output::Format;

fn main() {
    let cli = Cli::parse();
    // One thread: a CLI call is a few requests in a row, and starting worker
    // threads cost each call about a tenth of its time (`drover agents`,
    // 7.4 ms wall with two workers, 6.6 ms with none, on a 2-core VM).
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("can start the tokio runtime");
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

/// The coordinator URLs and TLS directory for `remote` (flags after the
/// command, then before it, then the context; see `context`).
fn target(remote: &Remote, before: &RemoteBefore) -> Result<(String, PathBuf), Exit> {
    let r = remote.or(before);
    context::resolve(r.coordinator, r.tls_dir, r.context.as_deref())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let reconnect = cli.command.streams().cloned().unwrap_or_default().or(&cli.streams);
    match cli.command {
        Command::Certs { command: CertsCommand::Init { dir, hosts } } => {
            ca::init(&dir, &hosts)?;
            let (ca, coordinator, admin) = (ca::ca_dir(&dir), ca::coordinator_dir(&dir), ca::admin_dir(&dir));
            outln!("created a CA, the coordinator's and the admin's certificates in {}:", dir.display());
            outln!(
                "  {}/  the CA and its key, with the operator, for `drover certs issue-agent --dir {}` \
                 (the coordinator's directory holds the key too, to sign agents and users that enroll)",
                ca.display(),
                dir.display()
            );
            outln!(
                "  {}/  copy to each coordinator host: drover-coordinator --tls-dir {} (its secrets.key seals \
                 secrets and its ca-key.pem signs enrollments: every coordinator needs the same ones)",
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
        Command::Certs { command: CertsCommand::SecretsKey { dir } } => {
            let key = ca::coordinator_dir(&dir).join(drover_pki::secrets_key::FILE);
            drover_pki::secrets_key::generate(&key)?;
            outln!(
                "created {}: copy it to each coordinator host beside coordinator.pem (every coordinator needs the \
                 same key), then restart them",
                key.display()
            );
            Ok(())
        }
        Command::Dev { args, .. } => dev::run(args, reconnect).await,
        Command::Validate { files } => Ok(validate::run(&files)?),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "drover", &mut std::io::stdout());
            Ok(())
        }
        Command::Version { output, remote } => {
            let (urls, tls) = target(&remote, &cli.remote)?;
            commands::version(&urls, &tls, output).await
        }
        Command::Context { command } => {
            match command {
                ContextCommand::Ls { output } => context::list(output)?,
                ContextCommand::Add { name, coordinator, tls_dir, make_current } => {
                    context::add(&name, &coordinator, &tls_dir, make_current)?
                }
                ContextCommand::Use { name } => context::use_context(&name)?,
                ContextCommand::Rm { name } => context::remove(&name)?,
            }
            Ok(())
        }
        Command::Run { file, repo, reference, path, follow, detach, raw, no_color, queue_timeout, remote, .. } => {
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
            let (urls, tls) = target(&remote, &cli.remote)?;
            let mut conn = Conn::connect(&urls, &tls).await?;
            let queue_timeout_ms = queue_timeout.map_or(0, |d| d.as_millis() as u64);
            let req = pb::SubmitRunRequest { source: Some(source), queue_timeout_ms };
            let paint = view::Paint::detect(no_color);
            submit(&mut conn, req, following(follow, detach), raw, paint, reconnect).await
        }
        Command::Access(cli::AccessCommand::Login(args)) => login::run(args, &cli.remote).await,
        Command::Ca { command } => {
            // The CA commands write into the TLS directory they connect
            // with: its ca.pem, and its own certificate when renewed.
            authorities::check(&command)?;
            // `refresh --ca-pin` connects without ca.pem: the module connects.
            let (urls, tls) = target(command.remote(), &cli.remote)?;
            authorities::run(&urls, &tls, command).await
        }
        command => {
            let remote = command.remote().expect("every other command reaches a coordinator");
            let (urls, tls) = target(remote, &cli.remote)?;
            let mut conn = Conn::connect(&urls, &tls).await?;
            control(&mut conn, command, reconnect).await
        }
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
        Command::Runs { limit, states, name, since, output, .. } => {
            let created_after_ms = since.map_or(0, |d| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                now.saturating_sub(d).as_millis() as u64
            });
            let states = states.into_iter().map(|s| s.proto() as i32).collect();
            let req = pb::ListRunsRequest { limit, states, name: name.unwrap_or_default(), created_after_ms };
            commands::runs(conn, req, output).await
        }
        Command::Status { run, output, json, .. } => {
            commands::status(conn, run, if json { Format::Json } else { output }).await
        }
        Command::Logs { run, job, attempt, follow, raw, output, .. } => {
            let req = pb::GetLogsRequest { run_id: run, job, attempt, follow };
            commands::logs(conn, req, raw, output, reconnect).await
        }
        Command::Cancel { run, .. } => commands::cancel(conn, run).await,
        Command::Artifacts { command: Some(cli::ArtifactsCommand::Get { run, job, dest, .. }), .. } => {
            commands::artifacts_get(conn, run, job, &dest).await
        }
        Command::Artifacts { run, job, output, .. } => {
            commands::artifacts(conn, run.expect("clap requires RUN"), job, output).await
        }
        Command::Watch { run, raw, output, no_color, .. } => {
            let watch = async {
                match output.for_stream("watch")? {
                    Format::Json => follow::follow_json(conn, &run, reconnect).await,
                    _ => follow::follow(conn, &run, raw, view::Paint::detect(no_color), reconnect).await,
                }
            };
            Ok(follow::until_interrupted(&run, watch).await?)
        }
        Command::Rerun { run, failed, jobs, follow, detach, no_color, .. } => {
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
        Command::Secret { command } => match command {
            cli::SecretCommand::Set { name, from_file, output, .. } => {
                let value = secrets::read_value(from_file.as_deref())?;
                secrets::set(conn, name, value, output).await
            }
            cli::SecretCommand::Ls { output, .. } => secrets::list(conn, output).await,
            cli::SecretCommand::Rm { name, output, .. } => secrets::remove(conn, name, output).await,
        },
        Command::Caches { output, .. } => caches::list(conn, output).await,
        Command::Approve { run, job, comment, output, .. } => {
            commands::decide(conn, pb::DecideJobRequest { run_id: run, job, approve: true, comment }, output).await
        }
        Command::Reject { run, job, reason, output, .. } => {
            let req = pb::DecideJobRequest { run_id: run, job, approve: false, comment: reason };
            commands::decide(conn, req, output).await
        }
        Command::Cache { command: cli::CacheCommand::Rm { key, scope, output, .. } } => {
            caches::remove(conn, key, scope, output).await
        }
        Command::Repos { output, .. } => repos::list(conn, output).await,
        Command::Repo {
            command: cli::RepoCommand::Add { name, url, poll, branches, webhook_secret_file, trusted, output, .. },
        } => {
            let webhook_secret = match webhook_secret_file {
                Some(file) => repos::read_secret(&file)?,
                None => Vec::new(),
            };
            let poll_ms = poll.map_or(0, |d| (d.as_millis() as u64).max(1));
            let branches = branches.into_iter().flatten().collect();
            let req = pb::AddRepoRequest { name, url, poll_ms, branches, webhook_secret, trusted };
            repos::add(conn, req, output).await
        }
        Command::Repo { command: cli::RepoCommand::Rm { name, output, .. } } => repos::remove(conn, name, output).await,
        Command::Envs { output, .. } => environments::list(conn, output).await,
        Command::Env { command } => match command {
            cli::EnvCommand::Create {
                name,
                selector,
                require_approval,
                approvers,
                branches,
                description,
                deploy_role,
                output,
                ..
            } => {
                let selector = selector.into_iter().collect();
                let branches = branches.into_iter().flatten().collect();
                let deploy_role = deploy_role.map(|r| r.as_str().to_owned()).unwrap_or_default();
                let req = pb::CreateEnvironmentRequest {
                    name,
                    selector,
                    require_approval,
                    approvers,
                    branches,
                    description,
                    deploy_role,
                };
                environments::create(conn, req, output).await
            }
            cli::EnvCommand::Apply { file, output, .. } => {
                let (name, text) = environments::read_file(&file)?;
                environments::apply(conn, name, text, output).await
            }
            cli::EnvCommand::Show { name, output, .. } => environments::show(conn, name, output).await,
            cli::EnvCommand::Rm { name, output, .. } => environments::remove(conn, name, output).await,
            cli::EnvCommand::Freeze { name, reason, duration, output, .. } => {
                releases::freeze(conn, name, reason, duration, output).await
            }
            cli::EnvCommand::Unfreeze { name, output, .. } => releases::unfreeze(conn, name, output).await,
            cli::EnvCommand::Freezes { output, .. } => releases::freezes(conn, output).await,
        },
        Command::Rollouts(cli::RolloutsArgs { env, service, output, .. }) => {
            rollouts::list(conn, env.unwrap_or_default(), service.unwrap_or_default(), output).await
        }
        Command::Rollout { command } => match command {
            cli::RolloutCommand::Status { id, follow, output, .. } => rollouts::status(conn, id, follow, output).await,
            cli::RolloutCommand::Promote { id, full, output, .. } => {
                rollouts::act(conn, id, "promote", full, output).await
            }
            cli::RolloutCommand::Pause { id, output, .. } => rollouts::act(conn, id, "pause", false, output).await,
            cli::RolloutCommand::Resume { id, output, .. } => rollouts::act(conn, id, "resume", false, output).await,
            cli::RolloutCommand::Abort { id, output, .. } => rollouts::act(conn, id, "abort", false, output).await,
            cli::RolloutCommand::Approve { id, gate, comment, output, .. } => {
                rollouts::decide(conn, id, "approve", gate, comment.unwrap_or_default(), output).await
            }
            cli::RolloutCommand::Reject { id, gate, reason, output, .. } => {
                rollouts::decide(conn, id, "reject", gate, reason, output).await
            }
            cli::RolloutCommand::Override { id, reason, output, .. } => {
                rollouts::decide(conn, id, "override", None, reason, output).await
            }
        },
        Command::Rollback(args) => rollouts::rollback(conn, args).await,
        Command::Service { command: cli::ServiceCommand::Logs { service, env, node, follow, output, .. } } => {
            rollouts::service_logs(conn, service, env, node, follow, output).await
        }
        Command::Services(cli::ServicesArgs { env, output, .. }) => {
            rollouts::services(conn, env.unwrap_or_default(), output).await
        }
        Command::Apps(cli::AppsArgs { output, .. }) => apps::list(conn, output).await,
        Command::App { command } => apps::run(conn, command).await,
        Command::Release { command } => releases::run(conn, command).await,
        Command::Notify { command } => notify::run(conn, command).await,
        Command::AgentToken { command } => identity::tokens(conn, command).await,
        Command::Agent { command } => identity::agent(conn, command).await,
        Command::Audit(args) => identity::audit(conn, args).await,
        Command::Access(command) => users::run(conn, command).await,
        Command::Agents { output, .. } => commands::agents(conn, output).await,
        Command::Cluster { output, .. } => commands::cluster(conn, output).await,
        Command::Certs { .. }
        | Command::Dev { .. }
        | Command::Run { .. }
        | Command::Validate { .. }
        | Command::Completion { .. }
        | Command::Version { .. }
        | Command::Ca { .. }
        | Command::Context { .. } => {
            unreachable!("handled in run()")
        }
    }
}
