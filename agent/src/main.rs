//! `drover-agent`: parses flags and runs [`drover_agent::client::Agent`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::time::Duration;

use clap::Parser;
use drover_agent::client::{Agent, Config, Stop};
use tokio::sync::watch;

/// Dials a Drover coordinator, pulls job attempts and runs their steps.
#[derive(Parser)]
#[command(name = "drover-agent", version)]
struct Args {
    /// The coordinators' URLs, comma-separated, e.g.
    /// https://10.0.0.1:7700,https://10.0.0.2:7700. The agent tries them in
    /// turn and follows redirects to the leader.
    #[arg(long, env = "DROVER_COORDINATOR", value_delimiter = ',', required = true)]
    coordinator: Vec<String>,
    /// This agent's name; must match its certificate (agent-NAME.pem).
    #[arg(long)]
    name: String,
    /// Labels that jobs select with `runs-on`, as k=v,k=v.
    #[arg(long, default_value = "", value_parser = parse_labels)]
    labels: BTreeMap<String, String>,
    /// How many attempts may run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    slots: u32,
    /// Where attempts get their workspaces.
    #[arg(long, default_value = ".drover/work")]
    work_dir: PathBuf,
    /// Directory with ca.pem, agent-NAME.pem and agent-NAME-key.pem.
    #[arg(long, env = "DROVER_TLS_DIR", default_value = ".drover/tls")]
    tls_dir: PathBuf,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address
    /// (plain HTTP).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Log format on stderr: text or json.
    #[arg(long, default_value = "text")]
    log_format: drover_telemetry::logging::LogFormat,
    /// Export traces with OTLP over gRPC to this collector, e.g.
    /// http://127.0.0.1:4317.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// On SIGTERM or SIGINT the agent drains: it takes no new work and
    /// exits once the attempts it runs have finished and been reported. Past
    /// this long (e.g. 30s, 10m, 2h; 0s: at once), or on a second signal, it
    /// kills them and exits; their jobs run again elsewhere where `retries`
    /// allow.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    drain_timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration; use e.g. 30s, 10m, 2h"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} has unknown unit {unit:?}; use s, m or h")),
    }
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?} is not k=v; write labels as os=linux,arch=x86_64"))?;
        if k.is_empty() || v.is_empty() {
            return Err(format!("label {pair:?} has an empty key or value"));
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label {k:?} is given twice"));
        }
    }
    Ok(labels)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = drover_telemetry::trace::init(args.log_format, "drover-agent", args.otlp_endpoint.as_deref())
        .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
        // Printed like the coordinator's address line, so a supervisor (or a
        // test) that asked for port 0 learns the port.
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "metrics on http://{}/metrics", listener.local_addr()?).and_then(|()| out.flush());
        }
        tokio::spawn(drover_telemetry::http::serve(listener, drover_agent::metrics::observe, std::future::pending()));
    }
    let agent = Agent::new(Config {
        coordinators: args.coordinator.into_iter().map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect(),
        name: args.name,
        labels: args.labels,
        slots: args.slots,
        work_dir: args.work_dir,
        tls_dir: args.tls_dir,
    })?;
    let (stop_tx, stop) = watch::channel(Stop::Run);
    tokio::spawn(signals(stop_tx, args.drain_timeout));
    agent.run(stop).await;
    Ok(())
}

/// The first SIGTERM or SIGINT drains; a second one, or the drain timeout,
/// stops at once.
async fn signals(stop: watch::Sender<Stop>, drain_timeout: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!(timeout_s = drain_timeout.as_secs(), "signal received: draining (a second signal stops at once)");
    let _ = stop.send(Stop::Drain);
    tokio::select! {
        _ = term.recv() => tracing::warn!("second signal: stopping at once"),
        _ = int.recv() => tracing::warn!("second signal: stopping at once"),
        _ = tokio::time::sleep(drain_timeout) => tracing::warn!("drain timeout reached: stopping at once"),
    }
    let _ = stop.send(Stop::Now);
}
