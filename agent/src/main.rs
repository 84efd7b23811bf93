//! `drover-agent`: parses flags, serves the metrics endpoint when asked,
//! and runs [`drover_agent::client::Agent`], draining it on SIGTERM or SIGINT.
//!
//! The same binary is also the agent's step watcher
//! ([`drover_agent::watch`]): started with `__watch-steps` as its first
//! argument, it is that and nothing else; and a service's supervisor
//! ([`drover_agent::deploy::supervise`]), started as
//! `drover-agent --supervise STATE_DIR`; and a service's proxy
//! ([`drover_agent::deploy::proxy`]), `drover-agent --proxy STATE_DIR`.
//!
//! With `--join-token` and `--ca-pin`, an agent without certificates first
//! enrolls ([`drover_agent::enroll`]).
//!
//! Exit codes: 0 after a drain or a stop; 1 when the agent cannot start (a
//! bad flag, certificate or work dir, a refused or failed enrollment); 2
//! when the coordinator refuses the agent for what it is (its name, its
//! certificate, its labels), which no restart can change.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use drover_agent::client::{Agent, AgentError, Config, Stop};
use drover_agent::deploy::{proxy, supervise};
use drover_agent::enroll::{self, CaPin, Enrollment};
use drover_agent::watch;
use drover_telemetry::logging::LogFormat;
use tokio::sync::watch as tokio_watch;

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
    #[arg(long, default_value = "", value_parser = drover_client::labels::parse)]
    labels: BTreeMap<String, String>,
    /// How many attempts may run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    slots: u32,
    /// Where attempts get their workspaces.
    #[arg(long, default_value = ".drover/work")]
    work_dir: PathBuf,
    /// The agent's bundle, with ca.pem, agent-NAME.pem and agent-NAME-key.pem:
    /// DIR/agents/NAME after `drover certs issue-agent NAME --dir DIR`. The
    /// agent makes it private (mode 0700). Its variable is not the CLI's
    /// DROVER_TLS_DIR, so that a shell set up for `drover` cannot hand the
    /// agent the admin's directory.
    #[arg(long, env = "DROVER_AGENT_TLS_DIR", default_value = ".drover/tls")]
    tls_dir: PathBuf,
    /// Enroll with this join token from `drover agent-token create NAME`:
    /// when --tls-dir does not hold the agent's bundle yet, the agent makes
    /// its own key there, has the coordinator sign it, writes ca.pem,
    /// agent-NAME.pem and agent-NAME-key.pem, and starts. The token is
    /// single-use and never logged; once enrolled the agent needs it no
    /// more (with the bundle present it is ignored). Prefer the variable to
    /// the flag, which other users can read in the process list. Requires
    /// --ca-pin.
    #[arg(long, env = "DROVER_JOIN_TOKEN", hide_env_values = true, requires = "ca_pin", value_name = "TOKEN")]
    join_token: Option<String>,
    /// The CA's fingerprint that `drover agent-token create` printed,
    /// sha256: and 64 lower-case hex digits: the enrolling agent trusts a
    /// coordinator only if it presents this CA, and keeps only a CA
    /// certificate that matches it.
    #[arg(long, value_name = "sha256:HEX", value_parser = drover_agent::enroll::CaPin::parse)]
    ca_pin: Option<CaPin>,
    /// Run steps as this user (a name or a numeric uid, with its groups and
    /// its home as HOME) instead of the agent's own, so that they cannot
    /// read the agent's TLS key, lock or environment. The agent must run as
    /// root; the user may be neither root nor the agent's own. The work
    /// dir becomes mode 0711 and each workspace 0700, owned by the user.
    #[arg(long, value_name = "USER")]
    run_as: Option<String>,
    /// Take no new work while the work dir's file system has less free
    /// space than this (e.g. 512MiB, 10GiB; 0: never): the agent reports not
    /// ready (`/readyz` 503, `drover agents` says why) until space returns.
    /// Raise it on build hosts to what a build needs.
    #[arg(long, default_value = "100MiB", value_parser = drover_agent::size::parse)]
    min_free_space: u64,
    /// How long checking out a run's commit (runs from git) may take before
    /// the attempt fails, naming the repository (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    git_timeout: Duration,
    /// The most bytes this agent keeps of the caches its jobs restored or
    /// saved, in WORK_DIR/.caches (e.g. 10GiB); past it the least recently
    /// used go. The shared copy is the coordinator's.
    #[arg(long, default_value = "10GiB", value_parser = drover_agent::size::parse)]
    cache_budget: u64,
    /// Where deployed services keep their releases, supervisors' state and
    /// the record of what is live, one directory per service. Default:
    /// WORK_DIR/.services (never taken for a leftover workspace). Services
    /// outlive the agent; a restarted agent adopts them from here.
    #[arg(long, value_name = "DIR")]
    services_dir: Option<PathBuf>,
    /// The address the proxies of deployed services listen on, each on its
    /// service's port (e.g. 0.0.0.0 for every interface, 127.0.0.1 for this
    /// host only).
    #[arg(long, default_value = "0.0.0.0")]
    service_address: std::net::IpAddr,
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

/// Parses a duration flag as the coordinator's flags take them: whole
/// numbers each followed by a unit from d, h, m, s and ms, largest unit
/// first and each at most once (`500ms`, `10m`, `1h30m`); the grammar is
/// `drover_client::duration`'s, shared with the coordinator and the CLI.
fn parse_duration(text: &str) -> Result<Duration, String> {
    drover_client::duration::parse(text, drover_client::duration::FLAG_UNITS).ok_or_else(|| {
        format!(
            "{text:?} is not a duration: write whole numbers with units d, h, m, s or ms, largest first \
             (500ms, 10s, 1m30s, 12h)"
        )
    })
}

/// The exit code of an agent that the coordinator refused for good.
const REFUSED: u8 = 2;

fn main() -> anyhow::Result<ExitCode> {
    // The step watcher, a service's supervisor and its proxy are this binary in hidden
    // modes, recognised before any flag parsing, runtime or logging setup
    // of the agent (the supervisor forks, which wants one thread).
    let mut argv = std::env::args_os();
    let mode = argv.nth(1);
    if mode.as_deref() == Some(OsStr::new(watch::MODE_ARG)) {
        return Ok(watch::main(argv.collect()));
    }
    if mode.as_deref() == Some(OsStr::new(supervise::MODE_ARG)) {
        return Ok(supervise::main(argv.collect()));
    }
    if mode.as_deref() == Some(OsStr::new(proxy::MODE_ARG)) {
        return Ok(proxy::main(argv.collect()));
    }
    agent_main()
}

/// The agent runs on one thread. Its async work is orchestration (the
/// session, the steps' pipes, uploads); whatever blocks or burns CPU goes to
/// the blocking pool. On 2 cores a second worker cost about a fifth of the
/// agent's CPU per trivial job in cross-thread wake-ups (`fleet-bench --mode
/// throughput`), and the steps need those cores.
#[tokio::main(flavor = "current_thread")]
async fn agent_main() -> anyhow::Result<ExitCode> {
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
    let coordinators: Vec<String> =
        args.coordinator.into_iter().map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
    if let (Some(token), Some(pin)) = (args.join_token, args.ca_pin) {
        let enrollment = Enrollment {
            coordinators: coordinators.clone(),
            name: args.name.clone(),
            tls_dir: args.tls_dir.clone(),
            token,
            pin,
        };
        enroll::enroll(&enrollment).await?;
    }
    let agent = Agent::new(Config {
        coordinators,
        name: args.name,
        labels: args.labels,
        slots: args.slots,
        work_dir: args.work_dir,
        tls_dir: args.tls_dir,
        run_as: args.run_as,
        min_free_space: args.min_free_space,
        git_timeout: args.git_timeout,
        cache_budget: args.cache_budget,
        services_dir: args.services_dir,
        service_address: args.service_address,
        watcher: Some(watch::Launch {
            program: PathBuf::from("/proc/self/exe"),
            log_format: match args.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        }),
    })?;
    let (stop_tx, stop) = tokio_watch::channel(Stop::Run);
    tokio::spawn(signals(stop_tx, args.drain_timeout));
    match agent.run(stop).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ AgentError::Refused { .. }) => {
            tracing::error!("{e}");
            Ok(ExitCode::from(REFUSED))
        }
        Err(e) => Err(e.into()),
    }
}

/// The first SIGTERM or SIGINT drains; a second one, or the drain timeout,
/// stops at once.
async fn signals(stop: tokio_watch::Sender<Stop>, drain_timeout: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!(timeout = ?drain_timeout, "signal received: draining (a second signal stops at once)");
    let _ = stop.send(Stop::Drain);
    tokio::select! {
        _ = term.recv() => tracing::warn!("second signal: stopping at once"),
        _ = int.recv() => tracing::warn!("second signal: stopping at once"),
        _ = tokio::time::sleep(drain_timeout) => tracing::warn!("drain timeout reached: stopping at once"),
    }
    let _ = stop.send(Stop::Now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_token_needs_a_well_formed_ca_pin() {
        let base = ["drover-agent", "--coordinator", "https://c:1", "--name", "a1"];
        let parse = |more: &[&str]| Args::try_parse_from(base.iter().chain(more));
        let pin = format!("sha256:{}", "ab".repeat(32));
        let args = parse(&["--join-token", "djt_1_s", "--ca-pin", &pin]).unwrap();
        assert_eq!(args.join_token.as_deref(), Some("djt_1_s"));
        assert_eq!(args.ca_pin.unwrap().to_string(), pin);
        let Err(err) = parse(&["--join-token", "djt_1_s"]) else { panic!("a token without a pin") };
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{err}");
        assert!(err.to_string().contains("--ca-pin"), "{err}");
        let Err(err) = parse(&["--join-token", "djt_1_s", "--ca-pin", "sha256:AB"]) else { panic!("a bad pin") };
        let err = err.to_string();
        assert!(err.contains("\"sha256:AB\" is not a CA pin: it has 2 hex digits after sha256:, not 64"), "{err}");
        // Without a token the pin changes nothing, so a unit file may keep it.
        assert!(parse(&["--ca-pin", &pin]).unwrap().join_token.is_none());
    }

    #[test]
    fn durations_are_written_like_the_coordinators_flags() {
        let s = Duration::from_secs;
        let ok: &[(&str, Duration)] = &[
            ("0s", s(0)),
            ("90s", s(90)),
            ("10m", s(600)),
            ("2h", s(7200)),
            ("1h30m", s(5400)),
            ("30d", s(30 * 24 * 3600)),
            ("1d12h", s(36 * 3600)),
            ("500ms", Duration::from_millis(500)),
            ("1s500ms", Duration::from_millis(1500)),
            ("1h0m5s", s(3605)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(*want), "{text}");
        }
        let bad = [
            "",
            "10",
            "m",
            "10 m",
            " 10m",
            "1.5h",
            "30m1h",
            "1m1m",
            "500ms1s",
            "-1m",
            "+1m",
            "1H",
            "10x",
            "10sec",
            "99999999999999999999s",
            "4294967296s",
        ];
        for text in bad {
            let err = parse_duration(text).unwrap_err();
            assert!(err.starts_with(&format!("{text:?} is not a duration: write whole numbers")), "{err}");
        }
    }
}
