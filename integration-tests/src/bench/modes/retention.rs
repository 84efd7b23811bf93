//! The retention mode: the coordinator's memory per finished run it keeps,
//! how fast a restarted leader prunes down to `--keep-runs`, and its memory
//! per MiB of job log it keeps (which lives in segment files, not the
//! store).

use std::time::Duration;

use tokio::runtime::Runtime;

use super::super::BenchError;
use super::super::report::figure;
use super::super::sim_agent::Observed;
use super::{Args, Store, coordinator_stats, deadline, fleet_with_agents, one_run};

/// Each job's log in the large-log half of the retention mode: the default
/// log cap, so all of it is kept.
const BIG_LOG_BYTES: usize = 16 << 20;

pub fn retention(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
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
