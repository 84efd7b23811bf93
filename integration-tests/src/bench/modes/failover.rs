//! The failover mode (etcd only): three coordinators and agents that know
//! them all; SIGKILL the leader, submit at once, and time until an agent
//! receives the Assign, restarting the killed coordinator each round.

use tokio::runtime::Runtime;

use super::super::BenchError;
use super::super::report::{figure, percentile, sorted};
use super::super::sim_agent::Observed;
use super::{Args, LEASE_ARGS, ONE_JOB, deadline, fleet_with_agents};
use crate::harness::{Etcd, Fleet};

const FAILOVER_AGENTS: usize = 3;

pub fn failover(rt: &Runtime, etcd: &Etcd, args: &Args) -> Result<(), BenchError> {
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
