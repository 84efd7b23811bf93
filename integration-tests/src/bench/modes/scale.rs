//! The scale mode: thousands of idle simulated agents connected a few
//! hundred at a time; the coordinator's peak RSS, RSS per agent and CPU
//! seconds for connecting them, then what an idle connected fleet costs.
//! The idle agents run in child processes of the benchmark, at most
//! `--agents-per-process` in each ([`super::AGENTS_PER_PROCESS`], for the
//! open-file limit of one process; `sim_agent::procs`), so a fleet may be
//! larger than one process could hold; the probes run in this one.
//!
//! On etcd there are [`COORDINATORS`] coordinators (`--coordinators`), and
//! the agents spread over them by name, as real agents do: the followers
//! carry theirs to the leader. The leader's figures keep the names they
//! have on one coordinator; each `follower_` figure is the larger of the
//! followers'.
//! Then, with the fleet still connected, dispatch latency to an agent on
//! the leader and (on etcd) to one a follower carries (`--samples`, at
//! most [`MAX_PROBES`]).

use std::collections::HashMap;
use std::time::Duration;

use tokio::runtime::Runtime;

use super::super::BenchError;
use super::super::control::Control;
use super::super::proc_stats::ProcStats;
use super::super::report::{figure, millis, percentile, sorted};
use super::super::sim_agent::procs::Procs;
use super::super::sim_agent::{SimConfig, Swarm};
use super::{Args, CONNECT_CONCURRENCY, Store, coordinator_stats, deadline, names, one_run_of, urls};

/// Coordinators on etcd, unless `--coordinators` says otherwise.
pub const COORDINATORS: usize = 3;
/// How long an idle fleet of `n` agents is watched: the longest idle
/// heartbeat period the coordinator tells one of its sessions (its
/// `core::fleet::idle_period`: the lease TTL, 10 s, or one second per 100
/// connected agents, at most 30 s), so that every agent heartbeats in the
/// window; with followers, a carried agent's (three times that, the
/// coordinator's `CARRIED_IDLE_FACTOR`) and a margin.
pub fn idle_window_secs(n: usize, followers: bool) -> u64 {
    let direct = (n as u64).div_ceil(100).clamp(10, 30);
    if followers { direct * 3 + 5 } else { direct }
}
/// The most dispatch samples per probe agent.
pub const MAX_PROBES: usize = 200;

pub fn scale(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    let n = args.scale_agents;
    let coordinators = if store.etcd.is_some() { args.coordinators } else { 1 };
    say!(
        "[{}] scale: {n} idle agents over {coordinators} coordinator(s), connecting {CONNECT_CONCURRENCY} at a time",
        store.name
    );
    let fleet = store.fleet_of("scale", coordinators, &[]);
    let names = names("sim", n);
    let config = SimConfig { urls: urls(&fleet), slots: 1, log_bytes: args.log_bytes, labels: Default::default() };
    let issued = std::time::Instant::now();
    fleet.issue_agent_certs_with_labels(&names, &config.labels_arg());
    say!("[{}] scale: issued {n} agent certificates in {:.1} s", store.name, issued.elapsed().as_secs_f64());
    let mut control = Control::new(&fleet.tls, urls(&fleet))?;
    let leader_url = rt.block_on(control.wait_leader(deadline(30)))?;
    let leader = (0..coordinators)
        .find(|i| fleet.url_of(*i) == leader_url)
        .ok_or_else(|| BenchError::new(format!("the leader {leader_url} is none of the fleet's coordinators")))?;
    // Let the coordinators finish starting (store replay, election) before
    // the baseline reading.
    std::thread::sleep(Duration::from_secs(1));
    let stats = || (0..coordinators).map(|i| coordinator_stats(&fleet, i)).collect::<Result<Vec<ProcStats>, _>>();
    let before = stats()?;
    let started = std::time::Instant::now();
    let swarm = Procs::start(&fleet.certs, &config, &names, args.agents_per_process, CONNECT_CONCURRENCY)?;
    say!(
        "[{}] scale: the agents run in {} processes of this benchmark, at most {} in each",
        store.name,
        swarm.processes(),
        args.agents_per_process
    );
    // A generous bound: about 20 agents a second would be very slow.
    let until = std::time::Instant::now() + Duration::from_secs((n as u64 / 20).max(60));
    swarm.wait_connected(n, until, |c| say!("[{}] scale: {c} of {n} connected", store.name))?;
    let connect_time = started.elapsed();
    // A leader change while the fleet connected (a machine this loaded can
    // starve the leader's election lease) would credit the new leader's
    // agents and figures to the old one.
    let leader_now = rt.block_on(control.wait_leader(deadline(30)))?;
    if leader_now != leader_url {
        return Err(BenchError::new(format!(
            "the leader changed from {leader_url} to {leader_now} while the agents connected (a machine this \
             loaded can starve the leader's election lease), so the figures would be credited to the wrong \
             coordinators; run again, with fewer agents or more coordinators"
        )));
    }
    let listed = rt.block_on(control.list_agents(deadline(60)))?;
    let connected = listed.iter().filter(|a| a.connected).count();
    if connected < n {
        return Err(BenchError::new(format!("the leader lists {connected} connected agents, not {n}")));
    }
    // Agents by the coordinator they are connected to: by the follower that
    // carries them, or the leader.
    let ids = rt.block_on(control.coordinator_ids(deadline(30)))?;
    let mut on: HashMap<usize, usize> = HashMap::new();
    for a in listed.iter().filter(|a| a.connected) {
        let at = if a.via.is_empty() { Some(leader) } else { ids.iter().position(|id| *id == a.via) };
        let at = at.ok_or_else(|| BenchError::new(format!("agent {} is carried by unknown {:?}", a.name, a.via)))?;
        *on.entry(at).or_default() += 1;
    }
    let after = stats()?;
    let grew = |i: usize| after[i].rss_kib.saturating_sub(before[i].rss_kib) as f64;
    say!(
        "[{}] scale: {n} agents connected in {:.1} s ({:.0}/s); {} sessions, {} connection failures",
        store.name,
        connect_time.as_secs_f64(),
        n as f64 / connect_time.as_secs_f64(),
        swarm.sessions(),
        swarm.failures().0
    );
    for i in 0..coordinators {
        say!(
            "[{}] scale: coordinator {i} ({}): {} agents connected to it; RSS {} -> {} KiB (peak {} KiB); {:.1} CPU s",
            store.name,
            if i == leader { "leader" } else { "follower" },
            on.get(&i).copied().unwrap_or(0),
            before[i].rss_kib,
            after[i].rss_kib,
            after[i].peak_rss_kib,
            after[i].cpu_seconds - before[i].cpu_seconds
        );
    }
    figure("coordinator_peak_rss_mib", after[leader].peak_rss_kib as f64 / 1024.0, "MiB", store.name, n);
    figure("rss_per_agent_kib", grew(leader) / n as f64, "KiB", store.name, n);
    figure("coordinator_cpu_seconds", after[leader].cpu_seconds - before[leader].cpu_seconds, "s", store.name, n);
    let followers: Vec<usize> = (0..coordinators).filter(|i| *i != leader).collect();
    let most = |f: &dyn Fn(usize) -> f64| followers.iter().map(|i| f(*i)).fold(0.0, f64::max);
    if !followers.is_empty() {
        let carried = followers.iter().map(|i| on.get(i).copied().unwrap_or(0)).sum::<usize>();
        figure("carried_agents_percent", 100.0 * carried as f64 / n as f64, "%", store.name, n);
        figure("follower_peak_rss_mib", most(&|i| after[i].peak_rss_kib as f64 / 1024.0), "MiB", store.name, n);
        // Of the followers that carry agents.
        let per_carried = |i: usize| match on.get(&i) {
            Some(&carried) if carried > 0 => grew(i) / carried as f64,
            _ => 0.0,
        };
        figure("follower_rss_per_agent_kib", most(&per_carried), "KiB", store.name, n);
    }
    // What the connected fleet costs when nothing happens: heartbeats and
    // keepalives only, over one idle heartbeat period of every agent.
    let idle = Duration::from_secs(match args.smoke {
        true => 2,
        false => idle_window_secs(n, coordinators > 1),
    });
    std::thread::sleep(idle);
    let idle_end = stats()?;
    let idle_cpu = |i: usize| 100.0 * (idle_end[i].cpu_seconds - after[i].cpu_seconds) / idle.as_secs_f64();
    say!(
        "[{}] scale: idle for {:.0} s with {} of {n} connected: CPU of one core {}",
        store.name,
        idle.as_secs_f64(),
        swarm.connected(),
        (0..coordinators).map(|i| format!("{:.1}%", idle_cpu(i))).collect::<Vec<_>>().join(", ")
    );
    figure("coordinator_idle_cpu_percent", idle_cpu(leader), "% of a core", store.name, n);
    // Dispatch under this load, to an agent on the leader and (with
    // followers) to one a follower carries.
    let mut probes = vec![("direct", leader_url.clone())];
    if let Some(follower) = followers.first() {
        figure("follower_idle_cpu_percent", most(&idle_cpu), "% of a core", store.name, n);
        probes.push(("carried", fleet.url_of(*follower)));
    }
    let samples = args.samples.min(MAX_PROBES);
    for (probe, url) in probes {
        let p50 = probe_dispatch(rt, &fleet, &mut control, probe, url, samples)?;
        say!("[{}] scale: dispatch to an agent {probe}: p50 {p50:.2} ms over {samples} runs", store.name);
        let metric = if probe == "direct" { "scale_dispatch_direct_ms_p50" } else { "scale_dispatch_carried_ms_p50" };
        figure(metric, p50, "ms", store.name, n);
    }
    // Close the sessions before the coordinators go, so that neither side
    // spends the teardown on reconnects.
    drop(swarm);
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// The p50 of `samples` one-job runs for one agent `probe-{probe}`,
/// connected to `url` alone and the only one with its label.
fn probe_dispatch(
    rt: &Runtime,
    fleet: &crate::harness::Fleet,
    control: &mut Control,
    probe: &str,
    url: String,
    samples: usize,
) -> Result<f64, BenchError> {
    let name = format!("probe-{probe}");
    let labels = HashMap::from([("probe".to_string(), probe.to_string())]);
    let config = SimConfig { urls: vec![url], slots: 1, log_bytes: 0, labels };
    fleet.issue_agent_certs_with_labels(std::slice::from_ref(&name), &config.labels_arg());
    let mut swarm = Swarm::new(rt.handle().clone(), &fleet.certs, config, 1)?;
    swarm.spawn(&name)?;
    rt.block_on(swarm.wait_connected(1, deadline(60), |_| {}))?;
    let yaml =
        format!("name: probe\njobs:\n  one:\n    runs-on: {{probe: {probe}}}\n    steps:\n      - run: \"true\"\n");
    let mut took = Vec::with_capacity(samples);
    for i in 0..samples + 3 {
        let t = rt.block_on(one_run_of(control, &mut swarm, &yaml))?;
        // The first few warm the path up.
        if i >= 3 {
            took.push(millis(t));
        }
    }
    Ok(percentile(&sorted(took), 0.5))
}
