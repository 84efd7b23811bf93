//! `drover dev`: the whole loop on one machine. It makes certificates if
//! they are missing, starts a coordinator on the embedded store and local
//! agents (the real binaries, found next to `drover`), runs a pipeline with
//! live progress, and stops everything it started. Certificates are laid
//! out as in production (see `drover_pki::ca`): the coordinator, each agent and the
//! CLI get their own directory, and each agent's certificate carries the
//! labels it runs with.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use drover_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::{self, EXIT_INTERRUPTED, Exit};
use crate::follow;
use crate::out::outln;
use drover_pki::ca;

#[derive(clap::Args)]
pub struct DevArgs {
    /// The pipeline to run.
    #[arg(long, default_value = "examples/pipeline.yml")]
    pipeline: PathBuf,
    /// Where certificates, the store, workspaces and process logs go.
    #[arg(long, default_value = ".drover/dev")]
    dir: PathBuf,
    /// How many local agents to start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    agents: u32,
    /// Slots per agent.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    slots: u32,
    /// Keep the coordinator and agents running after the run, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// No colour in the live view (also: the NO_COLOR variable, or stdout
    /// not a terminal).
    #[arg(long)]
    no_color: bool,
}

/// The directory holding the `drover` binary, where cargo also puts
/// `drover-coordinator` and `drover-agent`.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the drover binary's path")?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!("{} not found next to {}; build all binaries with `cargo build --release`", name, exe.display());
    }
    Ok(path)
}

/// The agents' labels, which go on their command lines and into their
/// certificates alike. The sample pipeline routes its lint job to agent=2.
fn agent_labels(i: usize) -> String {
    format!("os=linux,agent={}", i + 1)
}

/// Makes what is missing under `tls`: the CA, coordinator and admin
/// directories, and a bundle per agent with its labels. An agent whose
/// bundle exists keeps it: its name fixes its labels, so they match.
fn ensure_certs(tls: &Path, agents: &[String]) -> anyhow::Result<()> {
    if !ca::ca_dir(tls).join("ca-key.pem").exists() {
        ca::init(tls, &[]).with_context(|| {
            format!("cannot make certificates for drover dev; remove {} to start afresh", tls.display())
        })?;
        outln!("created certificates in {}", tls.display());
    }
    for (i, name) in agents.iter().enumerate() {
        if !ca::agent_dir(tls, name).exists() {
            let labels = drover_client::labels::parse(&agent_labels(i)).map_err(anyhow::Error::msg)?;
            ca::issue_agents(tls, std::slice::from_ref(name), &labels)?;
        }
    }
    Ok(())
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<Stdio> {
    let path = dir.join(format!("{name}.log"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Stdio::from(f))
}

/// `drover dev`; `reconnect` is `--reconnect-timeout`, for the follow of the
/// sample run.
pub async fn run(args: DevArgs, reconnect: Duration) -> anyhow::Result<()> {
    if !args.pipeline.exists() {
        return Err(Exit::new(
            client::EXIT_INVALID,
            format!("{} not found; run from the repository root or pass --pipeline", args.pipeline.display()),
        )
        .into());
    }
    let yaml = crate::read_pipeline(&args.pipeline)?;
    let tls = args.dir.join("tls");
    let logs = args.dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let names: Vec<String> = (1..=args.agents).map(|i| format!("dev-agent-{i}")).collect();
    ensure_certs(&tls, &names)?;

    let mut children: Vec<Child> = Vec::new();
    let mut coordinator = Command::new(sibling("drover-coordinator")?)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(args.dir.join("data"))
        .arg("--tls-dir")
        .arg(ca::coordinator_dir(&tls))
        .arg("--ui-listen")
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(log_file(&logs, "coordinator")?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start drover-coordinator")?;
    let stdout = coordinator.stdout.take().expect("piped");
    children.push(coordinator);
    let mut lines = BufReader::new(stdout).lines();
    // Its banner: the API's address, then the web UI's.
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        let mut api = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.strip_prefix("drover-coordinator listening on ") {
                api = Some(addr.to_string());
            } else if line.starts_with("web UI on ") {
                return api;
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(addr) = addr else {
        // Its own words, from the end of its log, rather than a connection
        // refused later.
        let log = logs.join("coordinator.log");
        let said = startup_error(&std::fs::read_to_string(&log).unwrap_or_default());
        bail!("the coordinator did not start: {said} (its log: {})", log.display());
    };
    let url = format!("https://{addr}");
    outln!("coordinator on {url} (embedded store in {})", args.dir.join("data").display());

    for (i, name) in names.iter().enumerate() {
        let child = Command::new(sibling("drover-agent")?)
            .arg("--coordinator")
            .arg(&url)
            .arg("--name")
            .arg(name)
            .arg("--labels")
            .arg(agent_labels(i))
            .arg("--slots")
            .arg(args.slots.to_string())
            .arg("--work-dir")
            .arg(args.dir.join("work").join(name))
            .arg("--tls-dir")
            .arg(ca::agent_dir(&tls, name))
            .stdout(Stdio::null())
            .stderr(log_file(&logs, name)?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start drover-agent")?;
        children.push(child);
    }

    let admin = ca::admin_dir(&tls);
    let run = async {
        let mut conn = client::Conn::connect(&url, &admin).await?;
        wait_for_agents(&mut conn, names.len()).await?;
        outln!("{} agents connected; process logs in {}", names.len(), logs.display());
        let link = pb::CreateUiLoginRequest { next: String::new() };
        let link = conn.call(false, |c| i_call!(c.create_ui_login(link.clone()))).await?;
        outln!("web UI: {} (a single-use link; `drover ui` makes another)", crate::term::field(&link.url));
        let req = pb::SubmitRunRequest {
            source: Some(pb::submit_run_request::Source::Inline(pb::InlinePipeline {
                file_name: args.pipeline.to_string_lossy().into_owned(),
                yaml,
            })),
            ..Default::default()
        };
        let resp = conn.call(false, |c| c_call!(c.submit_run(req.clone()))).await?;
        follow::follow(&mut conn, &resp.run_id, false, crate::view::Paint::detect(args.no_color), reconnect)
            .await
            .map_err(anyhow::Error::from)
    };
    // Ctrl-C before the run ends stops everything: exit 130.
    let mut result = tokio::select! {
        r = run => r,
        () = stop_signal() => Err(Exit::new(EXIT_INTERRUPTED, "interrupted; the local fleet is stopped").into()),
    };
    // A coordinator that exited (its data directory held by another, a
    // store it cannot open) is the cause, not the connection it refused:
    // say what it said. It may be on its way out when the connection
    // fails (a busy machine): give it a while.
    if result.is_err()
        && let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(10), children[0].wait()).await
    {
        let log = logs.join("coordinator.log");
        let said = startup_error(&std::fs::read_to_string(&log).unwrap_or_default());
        result = Err(anyhow::anyhow!("the coordinator exited ({status}): {said} (its log: {})", log.display()));
    }
    // With --keep the fleet stays up, whatever the run came to, until
    // Ctrl-C, which is then the way to stop it: exit as the run did.
    let interrupted =
        result.as_ref().err().and_then(|e| e.downcast_ref::<Exit>()).is_some_and(|e| e.code == EXIT_INTERRUPTED);
    if args.keep && !interrupted {
        match crate::context::add("dev", &url, &admin, true) {
            Ok(()) => {
                outln!(
                    "still running: `drover runs`, `drover agents` in another terminal reach it; Ctrl-C (or SIGTERM) stops"
                )
            }
            Err(e) => result = result.and(Err(e.into())),
        }
        stop_signal().await;
    }
    // Agents drain on a first signal and stop at once (killing their steps)
    // on a second: send both, so an interrupted run leaves nothing behind.
    // The coordinator (the first child) steps down on SIGTERM.
    for (i, child) in children.iter().enumerate() {
        if let Some(pid) = child.id() {
            let signals: &[i32] = if i == 0 { &[libc::SIGTERM] } else { &[libc::SIGTERM, libc::SIGINT] };
            for sig in signals {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid as i32, *sig);
                }
            }
        }
    }
    for child in &mut children {
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
    result
}

/// What a coordinator that exited at start-up said last: its final error
/// line (`Error: ...`), else its last line, else that it said nothing.
fn startup_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match lines.iter().rev().find_map(|l| l.strip_prefix("Error: ")).or(lines.last().copied()) {
        Some(line) => line.to_string(),
        None => "it exited without a word".to_string(),
    }
}

async fn wait_for_agents(conn: &mut client::Conn, n: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let agents = conn.call(true, |c| c_call!(c.list_agents(pb::ListAgentsRequest {}))).await?.agents;
        // The list keeps agents that have gone; count only connected ones.
        let connected = agents.iter().filter(|a| a.connected).count();
        if connected >= n {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("only {connected} of {n} agents connected within 20s; see the agent logs");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ctrl-C (SIGINT), or SIGTERM (`kill`, a service manager): either stops
/// the local fleet, so that no coordinator or agent outlives `drover dev`.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordinator_start_up_error_is_its_last_error_line() {
        let log = "2026-12-02T01:00:00Z  INFO starting\nError: data directory /d is in use by another drover-coordinator (pid 7)\n";
        assert_eq!(startup_error(log), "data directory /d is in use by another drover-coordinator (pid 7)");
        assert_eq!(startup_error("a\nlast words\n\n"), "last words");
        assert_eq!(startup_error(""), "it exited without a word");
    }
}
