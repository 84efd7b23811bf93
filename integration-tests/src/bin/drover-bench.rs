//! `drover-bench`: measures the coordinator with simulated agents (tokio
//! tasks in this process that speak the real agent protocol over mutual TLS
//! and execute nothing, see `bench::sim_agent`), so that what it measures is
//! the coordinator and its store, not process start-up or bash. It prints
//! one JSON line per figure on stdout and its progress on stderr.
//!
//! Modes (`--mode`, default all), each on a fresh fleet, for each store
//! (`--store embedded|etcd|both`, default both; etcd is a local one it
//! starts):
//!
//! - latency: one run of one job at a time to an idle agent with one slot;
//!   the dispatch latency is the time from just before the SubmitRun call
//!   until the agent receives the Assign. p50, p99, max over 1,000 runs
//!   (after 5 unmeasured warm-up runs).
//! - throughput: 16 agents with 16 slots each and pipelines of trivial
//!   independent jobs (5,000 in all, at most 5,000 per pipeline or
//!   `--jobs-per-pipeline`); jobs per second from the first submit until
//!   the last result is acknowledged (which the coordinator does only after
//!   committing the run's end), and the coordinator's peak RSS and CPU
//!   seconds over that time.
//! - scale: 10,000 idle agents connected 200 at a time; the coordinator's
//!   peak RSS, RSS per agent ((after - before) / N) and CPU seconds for
//!   connecting them all; then its CPU while they stay idle for the
//!   longest idle heartbeat period any of them was told (30 s at 10,000;
//!   three times that and 5 s with followers). On etcd there are three
//!   coordinators (`--coordinators N`: more of them hold a fleet larger
//!   than the open-file limit allows three), and the agents spread over
//!   them by name; a run whose leader changes while they connect fails. The
//!   figures above are the leader's, and the followers' (the largest of
//!   them) are `follower_peak_rss_mib`, `follower_rss_per_agent_kib` (per
//!   agent it carries) and `follower_idle_cpu_percent`, with the share
//!   carried (`carried_agents_percent`) and, under that load, the dispatch
//!   p50 to an agent on the leader and to one a follower carries. The idle
//!   agents run in child processes of this one (`--swarm-child`, see
//!   `bench::sim_agent::procs`), at most 15,000 in each
//!   (`--agents-per-process`); each child and each coordinator holds a
//!   socket per agent (the open-file limit is raised to its hard limit, with
//!   a warning when that is too low), and the agents connect from 16
//!   loopback addresses, since one has about 28,000 ports to a coordinator.
//! - retention: 10,000 finished runs of one job each with a 1 KiB log
//!   (`--runs`, `--log-bytes`); the coordinator's RSS growth per finished
//!   run it keeps, then a restart with `--keep-runs` a tenth of that: how
//!   many runs per second the leader prunes (timed from the restart, so an
//!   upper bound on the time) and the RSS once it has. Then, on a fresh
//!   fleet, runs whose one job has a 16 MiB log (the default cap; 50 runs,
//!   `--big-log-runs`): the coordinator's RSS growth per MiB of log it
//!   keeps, after one unmeasured run. Log bytes live in segment files, not
//!   in the store, so this should be close to nothing.
//! - apps: 1,000 GitOps apps (`--apps`) of one service each over three
//!   simulated nodes, polled every 10 s (a real agent builds the one
//!   artifact they deploy); how long the first pass over every app takes,
//!   and the coordinator's CPU, its own and its git processes', per app
//!   per poll interval over 60 s.
//! - renew: certificate renewal under load (issue 18). 1,000 agents
//!   (`--renew-agents`) enroll with join tokens (`CreateAgentToken`, then
//!   `EnrollService.Enroll`, 8 at a time) and connect; while a steady
//!   stream of runs (a pipeline of 10 trivial jobs every 100 ms) flows
//!   through them, all of them renew their certificates at once, each over
//!   its session's channel. Enrollment time (total, p50 and p99 per
//!   agent), renewal latency p50/p99/max, renewals failed, sessions lost,
//!   jobs completed and failed (must be none), and the coordinator's CPU
//!   seconds for the burst. The coordinator runs with `--agent-cert-ttl
//!   1h`, so that no renewal falls due by itself.
//! - ui: the web UI (issue 19) on one real agent: the page of a 500-job
//!   run rendered by the coordinator (p50, p99, max over `--samples`
//!   requests, 5 with `--smoke`), its graph laid out in headless Chromium
//!   (p50, max of 5 loads), and a log line's time from the step's echo to
//!   the browser's page (p50, p99, max over 40 lines).
//! - failover (etcd only): three coordinators and three agents that know
//!   them all; SIGKILL the leader, submit at once, and time until an agent
//!   receives the Assign; 10 times, restarting the killed coordinator.
//!
//! `--no-fsync` (with `--store embedded` only) runs the coordinator with
//! `--no-fsync`, so that the difference is what the disk's syncs cost; the
//! figures' store is then labelled `embedded+no-fsync`.
//!
//! `--otlp-blackhole` points the coordinators' trace export at a collector
//! that accepts connections and never answers (the worst kind of dead
//! collector), to show that exporting never slows scheduling; the figures'
//! store is then labelled `embedded+otlp-blackhole` (or etcd+...).
//!
//! The coordinators run with the default lease TTL of 10s (heartbeats every
//! 2.5s), not the test harness's 3s, so the load per idle agent is that of a
//! default deployment.
//!
//! Build in release first, then run it:
//! `cargo build --release --workspace --bins && target/release/drover-bench`.
//! `--smoke` runs a few seconds' worth, for the test suite.
//!
//! The modes themselves live in `bench::modes`, one module each; this
//! binary parses the command line and calls them for each store.

use std::time::Duration;

use drover_client::chain::error_chain;
use drover_integration_tests::bench::BenchError;
use drover_integration_tests::bench::modes::{
    AGENTS_PER_PROCESS, Args, COORDINATORS, MAX_JOBS_PER_PIPELINE, Mode, Store, apps, failover, latency, renew,
    retention, scale, throughput, ui,
};
use drover_integration_tests::bench::proc_stats;
use drover_integration_tests::bench::sim_agent::procs;
use drover_integration_tests::harness::Etcd;
use tokio::runtime::Runtime;

const USAGE: &str = "usage: drover-bench [--mode latency|throughput|scale|retention|failover|apps|renew|ui|all] \
[--store embedded|etcd|both] [--smoke] [--samples N] [--jobs N] [--jobs-per-pipeline N] [--scale-agents N] [--kills N] \
[--agents-per-process N] [--coordinators N] [--log-bytes N] [--runs N] [--big-log-runs N] [--apps N] [--renew-agents N] [--otlp-blackhole] \
[--no-fsync]";

fn parse_args(raw: &[String]) -> Result<Args, String> {
    let mut mode = "all".to_string();
    let mut store = "both".to_string();
    let mut smoke = false;
    let mut otlp_blackhole = false;
    let mut no_fsync = false;
    let mut overrides: [Option<usize>; 12] = [None; 12];
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        let number =
            |name: &str, v: String| v.parse::<usize>().map_err(|_| format!("{name} takes a whole number, not {v:?}"));
        match arg.as_str() {
            "--smoke" => smoke = true,
            "--otlp-blackhole" => otlp_blackhole = true,
            "--no-fsync" => no_fsync = true,
            "--mode" => mode = value("--mode")?,
            "--store" => store = value("--store")?,
            "--samples" => overrides[0] = Some(number("--samples", value("--samples")?)?),
            "--jobs" => overrides[1] = Some(number("--jobs", value("--jobs")?)?),
            "--scale-agents" => overrides[2] = Some(number("--scale-agents", value("--scale-agents")?)?),
            "--kills" => overrides[3] = Some(number("--kills", value("--kills")?)?),
            "--log-bytes" => overrides[4] = Some(number("--log-bytes", value("--log-bytes")?)?),
            "--jobs-per-pipeline" => overrides[5] = Some(number("--jobs-per-pipeline", value("--jobs-per-pipeline")?)?),
            "--runs" => overrides[6] = Some(number("--runs", value("--runs")?)?),
            "--big-log-runs" => overrides[7] = Some(number("--big-log-runs", value("--big-log-runs")?)?),
            "--apps" => overrides[8] = Some(number("--apps", value("--apps")?)?),
            "--renew-agents" => overrides[9] = Some(number("--renew-agents", value("--renew-agents")?)?),
            "--agents-per-process" => {
                overrides[10] = Some(number("--agents-per-process", value("--agents-per-process")?)?)
            }
            "--coordinators" => overrides[11] = Some(number("--coordinators", value("--coordinators")?)?),
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let modes = match mode.as_str() {
        "latency" => vec![Mode::Latency],
        "throughput" => vec![Mode::Throughput],
        "scale" => vec![Mode::Scale],
        "retention" => vec![Mode::Retention],
        "failover" => vec![Mode::Failover],
        "apps" => vec![Mode::Apps],
        "renew" => vec![Mode::Renew],
        "ui" => vec![Mode::Ui],
        "all" => vec![
            Mode::Latency,
            Mode::Throughput,
            Mode::Scale,
            Mode::Retention,
            Mode::Failover,
            Mode::Apps,
            Mode::Renew,
            Mode::Ui,
        ],
        other => {
            return Err(format!(
                "--mode {other:?}: use latency, throughput, scale, retention, failover, apps, renew, ui or all"
            ));
        }
    };
    let (embedded, etcd) = match store.as_str() {
        "embedded" => (true, false),
        "etcd" => (false, true),
        "both" => (true, true),
        other => return Err(format!("--store {other:?}: use embedded, etcd or both")),
    };
    if no_fsync && etcd {
        return Err("--no-fsync is the embedded store's; use it with --store embedded".into());
    }
    if overrides[11].is_some() && !etcd {
        return Err("--coordinators is the scale mode's on etcd (the embedded store has one coordinator); use it \
             with --store etcd"
            .into());
    }
    if modes == [Mode::Failover] && !etcd {
        return Err("failover needs etcd (several coordinators); use --store etcd or both".into());
    }
    let (samples, jobs, scale_agents, kills, runs, big_log_runs, apps, renew_agents) =
        if smoke { (20, 200, 200, 1, 100, 3, 20, 50) } else { (1000, 5000, 10_000, 10, 10_000, 50, 1000, 1000) };
    let args = Args {
        modes,
        embedded,
        etcd,
        smoke,
        samples: overrides[0].unwrap_or(samples),
        jobs: overrides[1].unwrap_or(jobs),
        jobs_per_pipeline: overrides[5].unwrap_or(MAX_JOBS_PER_PIPELINE),
        scale_agents: overrides[2].unwrap_or(scale_agents),
        // The smoke run's 200 agents in two processes, so that the test
        // suite runs the path a large fleet takes.
        agents_per_process: overrides[10].unwrap_or(if smoke { scale_agents / 2 } else { AGENTS_PER_PROCESS }),
        coordinators: overrides[11].unwrap_or(COORDINATORS),
        kills: overrides[3].unwrap_or(kills),
        log_bytes: overrides[4].unwrap_or(0),
        runs: overrides[6].unwrap_or(runs),
        big_log_runs: overrides[7].unwrap_or(big_log_runs),
        otlp_blackhole,
        no_fsync,
        apps: overrides[8].unwrap_or(apps),
        renew_agents: overrides[9].unwrap_or(renew_agents),
    };
    if args.samples == 0
        || args.jobs == 0
        || args.scale_agents == 0
        || args.agents_per_process == 0
        || args.coordinators == 0
        || args.kills == 0
        || args.big_log_runs == 0
        || args.apps == 0
        || args.renew_agents == 0
        || args.runs < 10
    {
        return Err(
            "--samples, --jobs, --scale-agents, --agents-per-process, --coordinators, --kills, --big-log-runs, \
             --apps and --renew-agents must be at least 1, --runs at least 10"
                .into(),
        );
    }
    if !(1..=MAX_JOBS_PER_PIPELINE).contains(&args.jobs_per_pipeline) {
        return Err(format!("--jobs-per-pipeline must be between 1 and {MAX_JOBS_PER_PIPELINE}"));
    }
    Ok(args)
}

/// Progress and diagnostics, on stderr.
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("drover-bench: {}", format!($($arg)*)) };
}

fn run_store(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    for mode in &args.modes {
        match mode {
            Mode::Latency => latency(rt, store, args)?,
            Mode::Throughput => throughput(rt, store, args)?,
            Mode::Scale => scale(rt, store, args)?,
            Mode::Retention => retention(rt, store, args)?,
            Mode::Apps => apps(rt, store, args)?,
            Mode::Renew => renew(rt, store, args)?,
            Mode::Ui => ui(rt, store, args)?,
            Mode::Failover => match store.etcd {
                Some(etcd) => failover(rt, etcd, args)?,
                None if args.modes.len() == 1 => say!("failover needs etcd; skipped on the embedded store"),
                None => {}
            },
        }
    }
    Ok(())
}

/// A collector that takes connections and never reads or answers them: the
/// exporter's requests hang until its own timeout.
fn start_blackhole() -> Result<String, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::new(format!("cannot bind the blackhole collector: {e}")))?;
    let addr = listener.local_addr().map_err(|e| BenchError::new(format!("blackhole address: {e}")))?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    Ok(format!("http://{addr}"))
}

fn run(rt: &Runtime, args: &Args) -> Result<(), BenchError> {
    let (mut suffix, mut extra) = if args.otlp_blackhole {
        let endpoint = start_blackhole()?;
        say!("exporting traces to a blackhole collector at {endpoint}");
        ("+otlp-blackhole".to_string(), vec!["--otlp-endpoint".to_string(), endpoint])
    } else {
        (String::new(), Vec::new())
    };
    if args.no_fsync {
        suffix.push_str("+no-fsync");
        extra.push("--no-fsync".to_string());
    }
    if args.embedded {
        let name = format!("embedded{suffix}");
        run_store(rt, Store { name: &name, etcd: None, extra: &extra }, args)?;
    }
    if args.etcd {
        let etcd = Etcd::start("bench", 1);
        let name = format!("etcd{suffix}");
        run_store(rt, Store { name: &name, etcd: Some(&etcd), extra: &extra }, args)?;
    }
    Ok(())
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    // A child process of the scale mode, running a slice of its agents.
    if raw.first().map(String::as_str) == Some(procs::CHILD_FLAG) {
        if let Err(e) = procs::child_main(&raw[1..]) {
            eprintln!("drover-bench: child swarm: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = match parse_args(&raw) {
        Ok(args) => args,
        Err(e) if e == "help" => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("drover-bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Each process holds one socket per agent it runs or serves, plus
    // files, etcd connections and the like: in the scale mode, a child
    // swarm its share and one coordinator all of them (on etcd, about a
    // third); in the renew mode this process and the coordinator all.
    let scale_per_process = match args.embedded {
        true => args.scale_agents,
        false => args.scale_agents.div_ceil(args.coordinators),
    }
    .max(args.scale_agents.min(args.agents_per_process));
    let agents = [(Mode::Scale, scale_per_process), (Mode::Renew, args.renew_agents)]
        .iter()
        .filter(|(mode, _)| args.modes.contains(mode))
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    match proc_stats::raise_fd_limit() {
        Ok(limit) if agents > 0 && limit < agents as u64 + 1000 => {
            say!("the open-file limit is {limit}, which may be too low for {agents} agents")
        }
        Ok(_) => {}
        Err(e) => say!("{e}; keeping the current open-file limit"),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drover-bench: cannot start the tokio runtime: {}", error_chain(&e));
            std::process::exit(1);
        }
    };
    // On SIGINT or SIGTERM no destructor runs, so kill the coordinators and
    // etcd here rather than leave them behind.
    rt.spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("drover-bench: interrupted; killing the coordinators and etcd");
        proc_stats::kill_children();
        std::process::exit(130);
    });
    let result = run(&rt, &args);
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = result {
        eprintln!("drover-bench: {e}");
        std::process::exit(1);
    }
}
