//! The renew mode (issue 18): certificate renewal under load, with no
//! failed job. N agents (1,000; `--renew-agents`) enroll with single-use
//! join tokens made by `IdentityService.CreateAgentToken` and connect; a
//! steady stream of runs flows through them (a pipeline of `LOAD_JOBS`
//! trivial jobs every `LOAD_PERIOD`, the throughput mode's pipelines); and
//! then all N renew their certificates at once, each over its session's
//! channel, keeping its session.
//!
//! The window: the load runs for `lead` before the signal, through the
//! burst (until every renewal has ended) and for `lead` after it; every job
//! submitted in it is followed to its end. Figures: enrollment (the whole
//! fleet, 8 at a time as the coordinator allows, and p50/p99 per agent,
//! from the new key to the bundle on disk); renewal latency (from the
//! signal until the new certificate and key are on disk) p50/p99/max;
//! renewals failed; sessions lost (reconnects) from the signal to the end
//! of the window; jobs completed during the burst, and jobs completed and
//! failed among those submitted in the window; the coordinator's CPU
//! seconds from the signal until the last renewal ended. A failed job or
//! renewal fails the mode, after the figures.
//!
//! The coordinator runs with `--agent-cert-ttl 1h`, so no renewal falls
//! due by itself (at half life) during the benchmark: every renewal is the
//! signal's. Simulated agents never renew on their own anyway.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1 as pb;
use tokio::runtime::Runtime;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::super::BenchError;
use super::super::control::Control;
use super::super::proc_stats;
use super::super::report::{figure, millis, percentile, sorted};
use super::super::sim_agent::{self, Enrolled, Observed, SimConfig, Swarm};
use super::throughput::throughput_pipelines;
use super::{Args, CONNECT_CONCURRENCY, Store, coordinator_stats, deadline, names, urls};
use crate::harness::Fleet;

/// Long enough that no renewal falls due during the benchmark.
const CERT_TTL: &str = "1h";
/// How many agents enroll at the same moment: the coordinator's limit on
/// concurrent enrollments (`MAX_CONCURRENT_ENROLLMENTS`), beyond which it
/// answers "busy" and the agents back off.
const ENROLL_CONCURRENCY: usize = 8;
/// The steady load: a pipeline of `LOAD_JOBS` jobs every `LOAD_PERIOD`,
/// 100 jobs a second when the coordinator keeps up.
const LOAD_JOBS: usize = 10;
const LOAD_PERIOD: Duration = Duration::from_millis(100);
/// Agents whose renewed bundle opens a new connection afterwards.
const WHOAMI_SAMPLE: usize = 3;

pub fn renew(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    let n = args.renew_agents;
    let lead = Duration::from_secs(if args.smoke { 1 } else { 3 });
    say!("[{}] renew: {n} enrolled agents renewing at once under a steady load", store.name);
    let fleet = store.fleet_with("renew", &["--agent-cert-ttl", CERT_TTL]);
    let mut control = Control::new(&fleet.tls, urls(&fleet))?;
    rt.block_on(control.wait_leader(deadline(30)))?;
    let names = names("rn", n);
    let config = SimConfig { urls: urls(&fleet), slots: 1, log_bytes: args.log_bytes, labels: Default::default() };
    let mut swarm = Swarm::new(rt.handle().clone(), &fleet.certs, config, CONNECT_CONCURRENCY)?;

    let made = std::time::Instant::now();
    let (tokens, pin) = rt.block_on(tokens(&mut control, &names))?;
    say!("[{}] renew: {n} join tokens made in {:.1} s", store.name, made.elapsed().as_secs_f64());
    let (took, enrolled) = rt.block_on(enroll_all(&swarm, &urls(&fleet), tokens, &pin))?;
    let per_agent = sorted(enrolled.iter().map(|e| millis(e.took)).collect());
    let retries: u32 = enrolled.iter().map(|e| e.retries).sum();
    say!(
        "[{}] renew: {n} agents enrolled in {:.1} s ({:.0}/s), {retries} retries",
        store.name,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    figure("enroll_seconds_total", took.as_secs_f64(), "s", store.name, n);
    figure("enroll_ms_p50", percentile(&per_agent, 0.5), "ms", store.name, n);
    figure("enroll_ms_p99", percentile(&per_agent, 0.99), "ms", store.name, n);

    for name in &names {
        swarm.spawn_enrolled(name)?;
    }
    let connecting = std::time::Instant::now();
    let until = deadline((n as u64 / 20).max(60));
    rt.block_on(swarm.wait_connected(n, until, |c| say!("[{}] renew: {c} of {n} connected", store.name)))?;
    say!("[{}] renew: {n} agents connected in {:.1} s", store.name, connecting.elapsed().as_secs_f64());

    let (control, w) = rt.block_on(window(control, &mut swarm, &fleet, n, lead))?;
    report(rt, control, &swarm, &fleet, store.name, n, w)
}

/// A join token for each agent, and the CA's pin.
async fn tokens(control: &mut Control, names: &[String]) -> Result<(Vec<(String, String)>, String), BenchError> {
    let mut tokens = Vec::with_capacity(names.len());
    let mut pin = String::new();
    for name in names {
        let (secret, ca_pin) = control.create_agent_token(name, deadline(60)).await?;
        tokens.push((name.clone(), secret));
        pin = ca_pin;
    }
    Ok((tokens, pin))
}

/// Enrolls every agent into its bundle directory, [`ENROLL_CONCURRENCY`]
/// at a time; returns the time it all took and each enrollment.
async fn enroll_all(
    swarm: &Swarm,
    urls: &[String],
    tokens: Vec<(String, String)>,
    pin: &str,
) -> Result<(Duration, Vec<Enrolled>), BenchError> {
    let gate = Arc::new(Semaphore::new(ENROLL_CONCURRENCY));
    let mut set = JoinSet::new();
    let started = std::time::Instant::now();
    for (name, token) in tokens {
        let permit = gate.clone().acquire_owned().await.map_err(|e| BenchError::new(e.to_string()))?;
        let (urls, dir, pin) = (urls.to_vec(), swarm.bundle_dir(&name), pin.to_string());
        set.spawn(async move {
            let enrolled = sim_agent::enroll(urls, dir, name, token, &pin).await;
            drop(permit);
            enrolled
        });
    }
    let mut enrolled = Vec::new();
    while let Some(joined) = set.join_next().await {
        enrolled.push(joined.map_err(|e| BenchError::new(format!("an enrollment task failed: {e}")))??);
    }
    Ok((started.elapsed(), enrolled))
}

/// What happened in the window.
struct Window {
    /// From the signal until the last renewal ended.
    burst: Duration,
    /// The coordinator's CPU seconds over the burst, and its rate under
    /// the load alone before it (CPU seconds per second).
    burst_cpu: f64,
    load_cpu_rate: f64,
    /// This process's CPU seconds over the burst (new keys, TLS, the
    /// simulated agents), which share the machine with the coordinator.
    bench_cpu: f64,
    /// Sessions welcomed and connections failed from the signal to the end
    /// of the window.
    reconnects: u64,
    failures: u64,
    /// How long the load ran.
    span: Duration,
    /// The load's runs, the jobs in them, and results acknowledged.
    runs: Vec<String>,
    jobs: usize,
    acked: Acked,
}

#[derive(Default)]
struct Acked {
    accepted: usize,
    /// Accepted between the signal and the end of the burst.
    in_burst: usize,
    /// Attempts whose result the coordinator refused.
    refused: Vec<String>,
}

/// The load, the signal, the burst and the load after it; then every job
/// submitted is followed to its end.
async fn window(
    control: Control,
    swarm: &mut Swarm,
    fleet: &Fleet,
    n: usize,
    lead: Duration,
) -> Result<(Control, Window), BenchError> {
    swarm.drain_events();
    let (stop, stopped) = watch::channel(false);
    let loaded = std::time::Instant::now();
    let submitter = tokio::spawn(submit_steadily(control, stopped));
    let mut acked = Acked::default();
    let load_cpu = coordinator_stats(fleet, 0)?.cpu_seconds;
    let led = std::time::Instant::now();
    pump(swarm, &mut acked, None, deadline(lead.as_secs()), |_, _| false).await?;
    let (sessions, failures) = (swarm.sessions(), swarm.failures().0);
    let cpu = coordinator_stats(fleet, 0)?.cpu_seconds;
    let load_cpu_rate = (cpu - load_cpu) / led.elapsed().as_secs_f64();
    let bench_cpu = proc_stats::sample(std::process::id())?.cpu_seconds;
    let signal = swarm.renew_all();
    let until = deadline(60 + n as u64 / 10);
    let ended = pump(swarm, &mut acked, Some(signal), until, |s, _| s.renewals_ended() >= n).await?;
    let burst = signal.elapsed();
    let burst_cpu = coordinator_stats(fleet, 0)?.cpu_seconds - cpu;
    let bench_cpu = proc_stats::sample(std::process::id())?.cpu_seconds - bench_cpu;
    if !ended {
        return Err(BenchError::new(format!(
            "only {} of {n} renewals ended within {:.0} s of the signal",
            swarm.renewals_ended(),
            burst.as_secs_f64()
        )));
    }
    pump(swarm, &mut acked, None, deadline(lead.as_secs()), |_, _| false).await?;
    let (reconnects, failures) = (swarm.sessions() - sessions, swarm.failures().0 - failures);
    stop.send_replace(true);
    let span = loaded.elapsed();
    let (control, runs) =
        submitter.await.map_err(|e| BenchError::new(format!("the load's submitter failed: {e}")))??;
    let jobs = runs.len() * LOAD_JOBS;
    // Every job ends with a result, acknowledged or refused; waits for the
    // last ones.
    pump(swarm, &mut acked, None, deadline(120), |_, a| a.accepted + a.refused.len() >= jobs).await?;
    let w = Window { burst, burst_cpu, load_cpu_rate, bench_cpu, reconnects, failures, span, runs, jobs, acked };
    Ok((control, w))
}

/// Submits a pipeline of [`LOAD_JOBS`] jobs every [`LOAD_PERIOD`] (later
/// when a submit takes longer) until told to stop; returns the runs.
async fn submit_steadily(
    mut control: Control,
    mut stop: watch::Receiver<bool>,
) -> Result<(Control, Vec<String>), BenchError> {
    let yaml = throughput_pipelines(LOAD_JOBS, LOAD_JOBS).remove(0);
    let mut runs = Vec::new();
    let mut every = tokio::time::interval(LOAD_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => runs.push(control.submit(&yaml, deadline(60)).await?),
            _ = stop.changed() => return Ok((control, runs)),
        }
    }
}

/// Counts the results the agents see until `done` or `until`; returns
/// whether `done` came. Results after `burst_from` count as in the burst.
async fn pump(
    swarm: &mut Swarm,
    acked: &mut Acked,
    burst_from: Option<std::time::Instant>,
    until: tokio::time::Instant,
    done: impl Fn(&Swarm, &Acked) -> bool,
) -> Result<bool, BenchError> {
    loop {
        if done(swarm, acked) {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return Ok(false);
        }
        // Short turns, so `done` is looked at even when no result comes;
        // the end of a turn is no error, so the swarm's own wait is longer.
        let turn = until.min(now + Duration::from_millis(20));
        let Ok(event) = tokio::time::timeout_at(turn, swarm.next_event(turn + Duration::from_secs(60))).await else {
            continue;
        };
        match event? {
            Observed::ResultAcked { accepted: true, at, .. } => {
                acked.accepted += 1;
                if burst_from.is_some_and(|from| at >= from) {
                    acked.in_burst += 1;
                }
            }
            Observed::ResultAcked { accepted: false, attempt_id, .. } => acked.refused.push(attempt_id),
            Observed::Assigned { .. } => {}
        }
    }
}

/// Checks and prints what the window measured; fails on a failed job or
/// renewal, after the figures.
fn report(
    rt: &Runtime,
    mut control: Control,
    swarm: &Swarm,
    fleet: &Fleet,
    store: &str,
    n: usize,
    w: Window,
) -> Result<(), BenchError> {
    let renewals = swarm.renewals();
    let failed: Vec<String> =
        renewals.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.agent))).collect();
    let latencies = sorted(renewals.iter().filter(|r| r.error.is_none()).map(|r| millis(r.latency)).collect());
    let (completed, job_failures, retried) = rt.block_on(job_outcomes(&mut control, &w.runs))?;
    let job_failures: Vec<String> =
        w.acked.refused.iter().map(|a| format!("{a}: result refused")).chain(job_failures).collect();
    say!(
        "[{store}] renew: {} renewals in {:.2} s, {} failed; {} reconnects and {} connection failures since the signal, {} of {n} connected",
        renewals.len(),
        w.burst.as_secs_f64(),
        failed.len(),
        w.reconnects,
        w.failures,
        swarm.connected()
    );
    say!(
        "[{store}] renew: {} runs of {LOAD_JOBS} jobs submitted over {:.1} s ({:.0} jobs/s), {} results acknowledged during the burst; {completed} jobs succeeded, {} failed, {retried} ran more than once",
        w.runs.len(),
        w.span.as_secs_f64(),
        w.jobs as f64 / w.span.as_secs_f64(),
        w.acked.in_burst,
        job_failures.len()
    );
    say!(
        "[{store}] renew: over the {:.2} s burst, coordinator CPU {:.2} s (before the signal the load alone took {:.2} s a second), drover-bench's own {:.2} s",
        w.burst.as_secs_f64(),
        w.burst_cpu,
        w.load_cpu_rate,
        w.bench_cpu
    );
    figure("renewal_latency_ms_p50", percentile(&latencies, 0.5), "ms", store, n);
    figure("renewal_latency_ms_p99", percentile(&latencies, 0.99), "ms", store, n);
    figure("renewal_latency_ms_max", latencies.last().copied().unwrap_or_default(), "ms", store, n);
    figure("renewals_failed", failed.len() as f64, "renewals", store, n);
    figure("renewal_sessions_lost", w.reconnects as f64, "sessions", store, n);
    figure("renewal_burst_jobs_completed", w.acked.in_burst as f64, "jobs", store, n);
    figure("renewal_window_jobs_completed", completed as f64, "jobs", store, n);
    figure("renewal_window_jobs_failed", job_failures.len() as f64, "jobs", store, n);
    figure("renewal_burst_coordinator_cpu_seconds", w.burst_cpu, "s", store, n);

    let renewed: HashSet<&str> = renewals.iter().filter(|r| r.error.is_none()).map(|r| r.agent.as_str()).collect();
    check_coordinator(rt, &mut control, fleet, swarm, &renewed)?;
    if !job_failures.is_empty() || !failed.is_empty() {
        let shown = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        return Err(BenchError::new(format!(
            "renewal under load: {} of {} jobs failed (first: {}), {} of {n} renewals failed (first: {})",
            job_failures.len(),
            w.jobs,
            shown(&job_failures),
            failed.len(),
            shown(&failed)
        )));
    }
    if w.reconnects > 0 {
        say!("[{store}] renew: warning: {} sessions were lost during the renewals", w.reconnects);
    }
    Ok(())
}

/// The jobs of `runs` that succeeded, the others in words, and how many ran
/// more than one attempt; waits for each run to end.
async fn job_outcomes(control: &mut Control, runs: &[String]) -> Result<(usize, Vec<String>, usize), BenchError> {
    let (mut completed, mut failed, mut retried) = (0, Vec::new(), 0);
    let until = deadline(120);
    for run_id in runs {
        let run = loop {
            let run = control.get_run(run_id, until).await?;
            if run.state != pb::RunState::Running as i32 || tokio::time::Instant::now() >= until {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for job in &run.jobs {
            retried += usize::from(job.attempt > 1);
            match pb::JobState::try_from(job.state) {
                Ok(pb::JobState::Succeeded) => completed += 1,
                Ok(state) => failed.push(format!("{run_id}/{}: {} {}", job.name, state.as_str_name(), job.message)),
                Err(e) => failed.push(format!("{run_id}/{}: {e}", job.name)),
            }
        }
    }
    Ok((completed, failed, retried))
}

/// What the coordinator says agrees: it counts a renewal for each agent
/// whose renewal went through, and a renewed bundle opens a new connection
/// as that agent.
fn check_coordinator(
    rt: &Runtime,
    control: &mut Control,
    fleet: &Fleet,
    swarm: &Swarm,
    renewed: &HashSet<&str>,
) -> Result<(), BenchError> {
    let identities = rt.block_on(control.list_agent_identities(deadline(60)))?;
    let missing: Vec<&str> = identities
        .iter()
        .filter(|i| renewed.contains(i.name.as_str()) && i.renewals == 0)
        .map(|i| i.name.as_str())
        .collect();
    let listed = identities.iter().filter(|i| renewed.contains(i.name.as_str())).count();
    if !missing.is_empty() || listed < renewed.len() {
        return Err(BenchError::new(format!(
            "the coordinator lists {listed} of the {} renewed agents, and no renewal for {} of them (e.g. {:?})",
            renewed.len(),
            missing.len(),
            missing.first()
        )));
    }
    let url = fleet.url_of(0);
    for name in renewed.iter().take(WHOAMI_SAMPLE) {
        let me = rt.block_on(sim_agent::whoami(&url, &swarm.bundle_dir(name), name))?;
        if me.kind != "agent" || me.name != *name {
            return Err(BenchError::new(format!(
                "agent {name}'s renewed certificate is taken for {} {:?}",
                me.kind, me.name
            )));
        }
    }
    Ok(())
}
