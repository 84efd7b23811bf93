//! The scale mode: thousands of idle simulated agents connected a few
//! hundred at a time; the coordinator's peak RSS, RSS per agent and CPU
//! seconds for connecting them, then what an idle connected fleet costs.

use std::time::Duration;

use tokio::runtime::Runtime;

use super::super::BenchError;
use super::super::control::Control;
use super::super::report::figure;
use super::super::sim_agent::{SimConfig, Swarm};
use super::{Args, CONNECT_CONCURRENCY, Store, coordinator_stats, deadline, names, urls};

pub fn scale(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
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
    let idle_cpu = 100.0 * (idle_end.cpu_seconds - after.cpu_seconds) / idle.as_secs_f64();
    say!(
        "[{}] scale: idle for {:.0} s with {} of {n} connected: coordinator CPU {idle_cpu:.1}% of one core, RSS {} KiB",
        store.name,
        idle.as_secs_f64(),
        swarm.connected(),
        idle_end.rss_kib
    );
    figure("coordinator_idle_cpu_percent", idle_cpu, "% of a core", store.name, n);
    // Close the sessions before the coordinator goes, so that neither side
    // spends the teardown on reconnects.
    drop(swarm);
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}
