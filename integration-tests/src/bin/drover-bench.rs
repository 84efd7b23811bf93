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
//!   connecting them all. Then 10 idle seconds, reported on stderr.
//! - retention: 10,000 finished runs of one job each with a 1 KiB log
//!   (`--runs`, `--log-bytes`); the coordinator's RSS growth per finished
//!   run it keeps, then a restart with `--keep-runs` a tenth of that: how
//!   many runs per second the leader prunes (timed from the restart, so an
//!   upper bound on the time) and the RSS once it has. Then, on a fresh
//!   fleet, runs whose one job has a 16 MiB log (the default cap; 50 runs,
//!   `--big-log-runs`): the coordinator's RSS growth per MiB of log it
//!   keeps, after one unmeasured run. Log bytes live in segment files, not
//!   in the store, so this should be close to nothing.
//! - failover (etcd only): three coordinators and three agents that know
//!   them all; SIGKILL the leader, submit at once, and time until an agent
//!   receives the Assign; 10 times, restarting the killed coordinator.
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

use std::time::Duration;

use drover_integration_tests::bench::control::Control;
use drover_integration_tests::bench::proc_stats::{self, ProcStats};
use drover_integration_tests::bench::report::{figure, millis, percentile, sorted};
use drover_integration_tests::bench::sim_agent::{Observed, SimConfig, Swarm};
use drover_integration_tests::bench::{BenchError, error_chain};
use drover_integration_tests::harness::{Etcd, Fleet};
use drover_proto::v1 as pb;
use tokio::runtime::Runtime;

const USAGE: &str = "usage: drover-bench [--mode latency|throughput|scale|retention|failover|all] [--store embedded|etcd|both] \
[--smoke] [--samples N] [--jobs N] [--jobs-per-pipeline N] [--scale-agents N] [--kills N] [--log-bytes N] [--runs N] \
[--big-log-runs N] [--otlp-blackhole]";

/// The coordinator's lease TTL in the benchmark: its default.
const LEASE_ARGS: &[&str] = &["--lease-ttl", "10s"];
/// Unmeasured runs before the latency samples, so that lazily built state
/// (channels, allocator pools, the store's first log segment) is warm.
const WARMUP_RUNS: usize = 5;
/// The most jobs one pipeline may have (README, "Limits").
const MAX_JOBS_PER_PIPELINE: usize = 5000;
const THROUGHPUT_AGENTS: usize = 16;
const THROUGHPUT_SLOTS: u32 = 16;
const FAILOVER_AGENTS: usize = 3;
/// How many simulated agents dial and shake hands at the same moment.
const CONNECT_CONCURRENCY: usize = 200;
/// Each job's log in the large-log half of the retention mode: the default
/// log cap, so all of it is kept.
const BIG_LOG_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Latency,
    Throughput,
    Scale,
    Retention,
    Failover,
}

#[derive(Debug)]
struct Args {
    modes: Vec<Mode>,
    embedded: bool,
    etcd: bool,
    smoke: bool,
    samples: usize,
    jobs: usize,
    /// Jobs per pipeline in the throughput mode: the per-pipeline limit
    /// unless told otherwise, to see how the size of one run matters.
    jobs_per_pipeline: usize,
    scale_agents: usize,
    kills: usize,
    log_bytes: usize,
    /// Finished runs in the retention mode.
    runs: usize,
    /// Runs with a log of `BIG_LOG_BYTES` in the retention mode.
    big_log_runs: usize,
    otlp_blackhole: bool,
}

fn parse_args(raw: &[String]) -> Result<Args, String> {
    let mut mode = "all".to_string();
    let mut store = "both".to_string();
    let mut smoke = false;
    let mut otlp_blackhole = false;
    let mut overrides: [Option<usize>; 8] = [None; 8];
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        let number =
            |name: &str, v: String| v.parse::<usize>().map_err(|_| format!("{name} takes a whole number, not {v:?}"));
        match arg.as_str() {
            "--smoke" => smoke = true,
            "--otlp-blackhole" => otlp_blackhole = true,
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
        "all" => vec![Mode::Latency, Mode::Throughput, Mode::Scale, Mode::Retention, Mode::Failover],
        other => return Err(format!("--mode {other:?}: use latency, throughput, scale, retention, failover or all")),
    };
    let (embedded, etcd) = match store.as_str() {
        "embedded" => (true, false),
        "etcd" => (false, true),
        "both" => (true, true),
        other => return Err(format!("--store {other:?}: use embedded, etcd or both")),
    };
    if modes == [Mode::Failover] && !etcd {
        return Err("failover needs etcd (several coordinators); use --store etcd or both".into());
    }
    let (samples, jobs, scale_agents, kills, runs, big_log_runs) =
        if smoke { (20, 200, 200, 1, 100, 3) } else { (1000, 5000, 10_000, 10, 10_000, 50) };
    let args = Args {
        modes,
        embedded,
        etcd,
        smoke,
        samples: overrides[0].unwrap_or(samples),
        jobs: overrides[1].unwrap_or(jobs),
        jobs_per_pipeline: overrides[5].unwrap_or(MAX_JOBS_PER_PIPELINE),
        scale_agents: overrides[2].unwrap_or(scale_agents),
        kills: overrides[3].unwrap_or(kills),
        log_bytes: overrides[4].unwrap_or(0),
        runs: overrides[6].unwrap_or(runs),
        big_log_runs: overrides[7].unwrap_or(big_log_runs),
        otlp_blackhole,
    };
    if args.samples == 0
        || args.jobs == 0
        || args.scale_agents == 0
        || args.kills == 0
        || args.big_log_runs == 0
        || args.runs < 10
    {
        return Err(
            "--samples, --jobs, --scale-agents, --kills and --big-log-runs must be at least 1, --runs at least 10"
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

/// A deadline `secs` seconds from now, for the async waits.
fn deadline(secs: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(secs)
}

/// Which store a fleet keeps its state in.
#[derive(Clone, Copy)]
struct Store<'a> {
    name: &'a str,
    etcd: Option<&'a Etcd>,
    /// Extra coordinator flags.
    extra: &'a [String],
}

impl Store<'_> {
    /// A fresh fleet with one coordinator on this store. The harness panics
    /// with the coordinator's log when one does not start.
    fn fleet(&self, mode: &str) -> Fleet {
        let tag = format!("bench-{mode}-{}", self.name.replace('+', "-"));
        let mut flags: Vec<&str> = LEASE_ARGS.to_vec();
        flags.extend(self.extra.iter().map(String::as_str));
        match self.etcd {
            Some(etcd) => Fleet::start_ha_with(&tag, etcd, 1, &flags),
            None => Fleet::start_with(&tag, &flags),
        }
    }
}

fn urls(fleet: &Fleet) -> Vec<String> {
    (0..fleet.addrs.len()).map(|i| fleet.url_of(i)).collect()
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

fn coordinator_stats(fleet: &Fleet, i: usize) -> Result<ProcStats, BenchError> {
    proc_stats::sample(fleet.coordinator(i).child.id())
}

/// A fleet with a leader, the control client, and a swarm of `agents`
/// connected simulated agents with `slots` slots each.
fn fleet_with_agents(
    rt: &Runtime,
    fleet: &Fleet,
    prefix: &str,
    agents: usize,
    slots: u32,
    log_bytes: usize,
) -> Result<(Control, Swarm), BenchError> {
    let names = names(prefix, agents);
    let config = SimConfig { urls: urls(fleet), slots, log_bytes, labels: Default::default() };
    fleet.issue_agent_certs_with_labels(&names, &config.labels_arg());
    let mut control = Control::new(&fleet.tls, urls(fleet))?;
    rt.block_on(control.wait_leader(deadline(30)))?;
    let mut swarm = Swarm::new(rt.handle().clone(), &fleet.certs, config, CONNECT_CONCURRENCY)?;
    for name in &names {
        swarm.spawn(name)?;
    }
    rt.block_on(swarm.wait_connected(agents, deadline(60), |_| {}))?;
    Ok((control, swarm))
}

/// One trivial job; the simulated agents do not run it anyway.
const ONE_JOB: &str = "name: latency\njobs:\n  one:\n    steps:\n      - run: \"true\"\n";

/// Submits a run of one job and waits for it to be assigned and its result
/// acknowledged. Returns the time from just before the submit to the Assign.
async fn one_run(control: &mut Control, swarm: &mut Swarm) -> Result<Duration, BenchError> {
    let until = deadline(30);
    let t0 = std::time::Instant::now();
    let run = control.submit(ONE_JOB, until).await?;
    let mut assigned = None;
    loop {
        let event = swarm.next_event(until).await?;
        if event.run_id() != run {
            say!("ignored an event of another run: {event:?}");
            continue;
        }
        match event {
            Observed::Assigned { at, .. } => assigned = Some(at.duration_since(t0)),
            Observed::ResultAcked { accepted: true, .. } => {
                return assigned.ok_or_else(|| BenchError::new(format!("run {run}: a result before any assignment")));
            }
            Observed::ResultAcked { accepted: false, attempt_id, .. } => {
                return Err(BenchError::new(format!("the coordinator refused the result of {attempt_id}")));
            }
        }
    }
}

fn latency(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    say!("[{}] latency: {} runs of one job, one at a time, on 1 idle agent with 1 slot", store.name, args.samples);
    let fleet = store.fleet("latency");
    let (mut control, mut swarm) = fleet_with_agents(rt, &fleet, "lat", 1, 1, args.log_bytes)?;
    let mut samples = Vec::with_capacity(args.samples);
    for i in 0..WARMUP_RUNS + args.samples {
        let took = rt.block_on(one_run(&mut control, &mut swarm))?;
        if i >= WARMUP_RUNS {
            samples.push(millis(took));
        }
    }
    let samples = sorted(samples);
    figure("dispatch_latency_ms_p50", percentile(&samples, 0.5), "ms", store.name, 1);
    figure("dispatch_latency_ms_p99", percentile(&samples, 0.99), "ms", store.name, 1);
    figure("dispatch_latency_ms_max", samples[samples.len() - 1], "ms", store.name, 1);
    Ok(())
}

/// Pipelines of `jobs` independent trivial jobs in all, at most `per` in
/// each.
fn throughput_pipelines(jobs: usize, per: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < jobs {
        let end = (start + per).min(jobs);
        let mut yaml = format!("name: throughput-{}\njobs:\n", out.len());
        for i in start..end {
            yaml.push_str(&format!("  j{i}:\n    steps:\n      - run: \"true\"\n"));
        }
        out.push(yaml);
        start = end;
    }
    out
}

fn throughput(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    let pipelines = throughput_pipelines(args.jobs, args.jobs_per_pipeline);
    say!(
        "[{}] throughput: {} trivial jobs in {} pipeline(s) over {THROUGHPUT_AGENTS} agents with {THROUGHPUT_SLOTS} slots each",
        store.name,
        args.jobs,
        pipelines.len()
    );
    let fleet = store.fleet("throughput");
    let (mut control, mut swarm) =
        fleet_with_agents(rt, &fleet, "tp", THROUGHPUT_AGENTS, THROUGHPUT_SLOTS, args.log_bytes)?;
    let before = coordinator_stats(&fleet, 0)?;
    let t0 = std::time::Instant::now();
    let (runs, submitted) = rt.block_on(async {
        let mut runs = Vec::new();
        for yaml in &pipelines {
            runs.push(control.submit(yaml, deadline(300)).await?);
        }
        Ok::<_, BenchError>((runs, t0.elapsed()))
    })?;
    let (first_assign, done) = rt.block_on(async {
        let until = deadline(if args.smoke { 60 } else { 900 });
        let (mut acked, mut first_assign, mut done) = (0, None, t0);
        while acked < args.jobs {
            match swarm.next_event(until).await? {
                Observed::Assigned { at, .. } => {
                    first_assign.get_or_insert(at.duration_since(t0));
                }
                Observed::ResultAcked { accepted: true, at, .. } => {
                    acked += 1;
                    done = at;
                }
                Observed::ResultAcked { accepted: false, attempt_id, .. } => {
                    return Err(BenchError::new(format!("the coordinator refused the result of {attempt_id}")));
                }
            }
        }
        Ok((first_assign.unwrap_or_default(), done.duration_since(t0)))
    })?;
    let after = coordinator_stats(&fleet, 0)?;
    for run in &runs {
        let status = rt.block_on(control.get_run(run, deadline(60)))?;
        match pb::RunState::try_from(status.state) {
            Ok(pb::RunState::Succeeded) => {}
            Ok(state) => {
                let state = state.as_str_name();
                return Err(BenchError::new(format!("run {run} ended {state}, not succeeded")));
            }
            Err(e) => return Err(BenchError::new(format!("run {run}: {e}"))),
        }
    }
    say!(
        "[{}] throughput: submits answered after {:.0} ms, first assignment after {:.0} ms, all {} results acknowledged after {:.2} s; {} agent sessions",
        store.name,
        millis(submitted),
        millis(first_assign),
        args.jobs,
        done.as_secs_f64(),
        swarm.sessions()
    );
    figure("jobs_per_second", args.jobs as f64 / done.as_secs_f64(), "jobs/s", store.name, THROUGHPUT_AGENTS);
    figure("coordinator_peak_rss_mib", after.peak_rss_kib as f64 / 1024.0, "MiB", store.name, THROUGHPUT_AGENTS);
    figure("coordinator_cpu_seconds", after.cpu_seconds - before.cpu_seconds, "s", store.name, THROUGHPUT_AGENTS);
    Ok(())
}

fn scale(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    let n = args.scale_agents;
    say!("[{}] scale: {n} idle agents, connecting {CONNECT_CONCURRENCY} at a time", store.name);
    let fleet = store.fleet("scale");
    let names = names("sim", n);
    let config = SimConfig { urls: urls(&fleet), slots: 1, log_bytes: args.log_bytes, labels: Default::default() };
    let issued = std::time::Instant::now();
    fleet.issue_agent_certs_with_labels(&names, &config.labels_arg());
    say!("[{}] scale: issued {n} agent certificates in {:.1} s", store.name, issued.elapsed().as_secs_f64());
    let mut control = Control::new(&fleet.tls, urls(&fleet))?;
    rt.block_on(control.wait_leader(deadline(30)))?;
    // Let the coordinator finish starting (store replay, election) before
    // the baseline reading.
    std::thread::sleep(Duration::from_secs(1));
    let before = coordinator_stats(&fleet, 0)?;
    let mut swarm = Swarm::new(rt.handle().clone(), &fleet.certs, config, CONNECT_CONCURRENCY)?;
    let started = std::time::Instant::now();
    for name in &names {
        swarm.spawn(name)?;
    }
    // A generous bound: about 20 agents a second would be very slow.
    let until = deadline((n as u64 / 20).max(60));
    rt.block_on(swarm.wait_connected(n, until, |c| say!("[{}] scale: {c} of {n} connected", store.name)))?;
    let connect_time = started.elapsed();
    let listed = rt.block_on(control.list_agents(deadline(60)))?.iter().filter(|a| a.connected).count();
    if listed < n {
        return Err(BenchError::new(format!("the coordinator lists {listed} connected agents, not {n}")));
    }
    let after = coordinator_stats(&fleet, 0)?;
    let per_agent = after.rss_kib.saturating_sub(before.rss_kib) as f64 / n as f64;
    say!(
        "[{}] scale: {n} agents connected in {:.1} s ({:.0}/s); coordinator RSS {} -> {} KiB; {} sessions, {} connection failures",
        store.name,
        connect_time.as_secs_f64(),
        n as f64 / connect_time.as_secs_f64(),
        before.rss_kib,
        after.rss_kib,
        swarm.sessions(),
        swarm.failures().0
    );
    figure("coordinator_peak_rss_mib", after.peak_rss_kib as f64 / 1024.0, "MiB", store.name, n);
    figure("rss_per_agent_kib", per_agent, "KiB", store.name, n);
    figure("coordinator_cpu_seconds", after.cpu_seconds - before.cpu_seconds, "s", store.name, n);
    // What the connected fleet costs when nothing happens: heartbeats and
    // keepalives only.
    let idle = Duration::from_secs(if args.smoke { 2 } else { 10 });
    std::thread::sleep(idle);
    let idle_end = coordinator_stats(&fleet, 0)?;
    say!(
        "[{}] scale: idle for {:.0} s with {} of {n} connected: coordinator CPU {:.1}% of one core, RSS {} KiB",
        store.name,
        idle.as_secs_f64(),
        swarm.connected(),
        100.0 * (idle_end.cpu_seconds - after.cpu_seconds) / idle.as_secs_f64(),
        idle_end.rss_kib
    );
    // Close the sessions before the coordinator goes, so that neither side
    // spends the teardown on reconnects.
    drop(swarm);
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

fn retention(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    const AGENTS: usize = 4;
    let n = args.runs;
    let keep = n / 10;
    let log_bytes = if args.log_bytes > 0 { args.log_bytes } else { 1024 };
    say!("[{}] retention: {n} finished runs of one job with {log_bytes} log bytes each", store.name);
    let mut fleet = store.fleet("retention");
    let (mut control, mut swarm) = fleet_with_agents(rt, &fleet, "rt", AGENTS, 16, log_bytes)?;
    let before = coordinator_stats(&fleet, 0)?;
    let yaml = "name: kept\njobs:\n  a:\n    steps:\n      - run: 'true'\n";
    let runs = rt.block_on(async {
        let until = deadline(if args.smoke { 60 } else { 600 });
        let mut runs = Vec::with_capacity(n);
        for _ in 0..n {
            runs.push(control.submit(yaml, until).await?);
        }
        let mut acked = 0;
        while acked < n {
            if let Observed::ResultAcked { .. } = swarm.next_event(until).await? {
                acked += 1;
            }
        }
        Ok::<_, BenchError>(runs)
    })?;
    // Let the last commits and the agents' acknowledgements settle.
    std::thread::sleep(Duration::from_millis(500));
    let after = coordinator_stats(&fleet, 0)?;
    let per_run = after.rss_kib.saturating_sub(before.rss_kib) as f64 / n as f64;
    figure("rss_per_finished_run_kib", per_run, "KiB", store.name, AGENTS);
    drop(swarm);

    // Restart with a tenth of the runs to keep, and time the pruning.
    let addr = fleet.addrs[0].clone();
    fleet.kill_coordinator(0);
    let keep_flag = keep.to_string();
    fleet.coordinator_args.extend(["--keep-runs", &keep_flag, "--prune-interval", "1s"].map(String::from));
    let t0 = std::time::Instant::now();
    fleet.start_coordinator(0, &addr);
    // Pruning goes oldest first: when the newest of the runs past the limit
    // is gone, so are all before it.
    let last_pruned = &runs[n - keep - 1];
    let first_kept = &runs[n - keep];
    rt.block_on(async {
        let until = deadline(300);
        while control.run_exists(last_pruned, until).await? {
            if tokio::time::Instant::now() > until {
                return Err(BenchError::new(format!("run {last_pruned} still stored 300 s after the restart")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })?;
    let took = t0.elapsed();
    if !rt.block_on(control.run_exists(first_kept, deadline(30)))? {
        return Err(BenchError::new(format!("run {first_kept} was pruned, but it is within --keep-runs {keep}")));
    }
    let pruned = coordinator_stats(&fleet, 0)?;
    say!("[{}] retention: pruned {} runs in {:.2} s (from the restart)", store.name, n - keep, took.as_secs_f64());
    figure("prune_runs_per_second", (n - keep) as f64 / took.as_secs_f64(), "runs/s", store.name, AGENTS);
    figure("coordinator_rss_after_prune_mib", pruned.rss_kib as f64 / 1024.0, "MiB", store.name, AGENTS);
    retention_big_logs(rt, store, args)
}

/// The coordinator's memory against the logs it keeps: runs of one job
/// with a log of `BIG_LOG_BYTES` each, one at a time.
fn retention_big_logs(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    const AGENTS: usize = 1;
    let n = args.big_log_runs;
    let log_mib = BIG_LOG_BYTES as f64 / f64::from(1 << 20);
    say!("[{}] retention: {n} finished runs of one job with a {log_mib:.0} MiB log each", store.name);
    let fleet = store.fleet("retention-logs");
    let (mut control, mut swarm) = fleet_with_agents(rt, &fleet, "rl", AGENTS, 1, BIG_LOG_BYTES)?;
    // One run unmeasured: it warms the allocator's pools and the buffers of
    // the streams.
    rt.block_on(one_run(&mut control, &mut swarm))?;
    let before = coordinator_stats(&fleet, 0)?;
    for _ in 0..n {
        rt.block_on(one_run(&mut control, &mut swarm))?;
    }
    // Let the last commits and the agents' acknowledgements settle.
    std::thread::sleep(Duration::from_millis(500));
    let after = coordinator_stats(&fleet, 0)?;
    say!(
        "[{}] retention: coordinator RSS {} -> {} KiB (peak {} KiB) keeping {n} more logs of {log_mib:.0} MiB",
        store.name,
        before.rss_kib,
        after.rss_kib,
        after.peak_rss_kib
    );
    let per_mib = after.rss_kib.saturating_sub(before.rss_kib) as f64 / (n as f64 * log_mib);
    figure("rss_per_retained_log_mib_kib", per_mib, "KiB", store.name, AGENTS);
    Ok(())
}

fn failover(rt: &Runtime, etcd: &Etcd, args: &Args) -> Result<(), BenchError> {
    say!("[etcd] failover: 3 coordinators, {FAILOVER_AGENTS} agents, {} leader kills", args.kills);
    let mut fleet = Fleet::start_ha_with("bench-failover", etcd, 3, LEASE_ARGS);
    let (mut control, mut swarm) = fleet_with_agents(rt, &fleet, "fo", FAILOVER_AGENTS, 1, args.log_bytes)?;
    let mut samples = Vec::with_capacity(args.kills);
    for round in 1..=args.kills {
        let leader_url = rt.block_on(control.wait_leader(deadline(30)))?;
        let leader = (0..fleet.addrs.len())
            .find(|&i| fleet.url_of(i) == leader_url && fleet.coordinators[i].is_some())
            .ok_or_else(|| BenchError::new(format!("the leader {leader_url} is none of the running coordinators")))?;
        rt.block_on(swarm.wait_connected(FAILOVER_AGENTS, deadline(30), |_| {}))?;
        swarm.drain_events();
        let addr = fleet.addrs[leader].clone();
        let killed = std::time::Instant::now();
        fleet.kill_coordinator(leader);
        let took = rt.block_on(async {
            let until = deadline(30);
            let run = control.submit(ONE_JOB, until).await?;
            let mut assigned = None;
            loop {
                match swarm.next_event(until).await? {
                    Observed::Assigned { at, .. } => {
                        assigned.get_or_insert(at.duration_since(killed));
                    }
                    event @ Observed::ResultAcked { .. } if event.run_id() == run => {
                        return assigned
                            .ok_or_else(|| BenchError::new(format!("run {run}: a result before its Assign")));
                    }
                    Observed::ResultAcked { .. } => {}
                }
            }
        })?;
        say!(
            "[etcd] failover {round}: killed coordinator {leader}; an agent got the Assign {:.2} s later",
            took.as_secs_f64()
        );
        samples.push(took.as_secs_f64());
        // Back as a follower, on the same address the agents know.
        fleet.start_coordinator(leader, &addr);
    }
    let samples = sorted(samples);
    figure("failover_seconds_p50", percentile(&samples, 0.5), "s", "etcd", FAILOVER_AGENTS);
    figure("failover_seconds_max", samples[samples.len() - 1], "s", "etcd", FAILOVER_AGENTS);
    Ok(())
}

fn run_store(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    for mode in &args.modes {
        match mode {
            Mode::Latency => latency(rt, store, args)?,
            Mode::Throughput => throughput(rt, store, args)?,
            Mode::Scale => scale(rt, store, args)?,
            Mode::Retention => retention(rt, store, args)?,
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
    let (suffix, extra) = if args.otlp_blackhole {
        let endpoint = start_blackhole()?;
        say!("exporting traces to a blackhole collector at {endpoint}");
        ("+otlp-blackhole", vec!["--otlp-endpoint".to_string(), endpoint])
    } else {
        ("", Vec::new())
    };
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
    // This process and the coordinator each hold one socket per agent, plus
    // files, etcd connections and the like.
    match proc_stats::raise_fd_limit() {
        Ok(limit) if limit < args.scale_agents as u64 + 1000 && args.modes.contains(&Mode::Scale) => {
            say!("the open-file limit is {limit}, which may be too low for {} agents", args.scale_agents)
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
