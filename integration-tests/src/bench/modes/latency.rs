//! The latency mode: one run of one job at a time to an idle agent with one
//! slot, after a few unmeasured warm-up runs; p50, p99 and max of the time
//! from just before the submit until the agent receives the Assign.

use tokio::runtime::Runtime;

use super::super::BenchError;
use super::super::report::{figure, millis, percentile, sorted};
use super::{Args, Store, fleet_with_agents, one_run};

/// Unmeasured runs before the latency samples, so that lazily built state
/// (channels, allocator pools, the store's first log segment) is warm.
const WARMUP_RUNS: usize = 5;

pub fn latency(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
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
