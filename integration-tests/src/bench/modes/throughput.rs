//! The throughput mode: agents with many slots and pipelines of trivial
//! independent jobs; jobs per second from the first submit until the last
//! result is acknowledged, the same from the first assignment (without the
//! submit), and the coordinator's peak RSS and CPU seconds.

use drover_proto::v1 as pb;
use tokio::runtime::Runtime;

use super::super::BenchError;
use super::super::report::{figure, millis};
use super::super::sim_agent::Observed;
use super::{Args, Store, coordinator_stats, deadline, fleet_with_agents};

const THROUGHPUT_AGENTS: usize = 16;
const THROUGHPUT_SLOTS: u32 = 16;

/// Pipelines of `jobs` independent trivial jobs in all, at most `per` in
/// each.
pub(super) fn throughput_pipelines(jobs: usize, per: usize) -> Vec<String> {
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

pub fn throughput(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
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
    // The same jobs without the submit: a pipeline of thousands of jobs
    // takes the coordinator tens of milliseconds to parse and write before
    // the first can run, which the figure above includes.
    let running = done.saturating_sub(first_assign).as_secs_f64().max(1e-6);
    figure(
        "jobs_per_second_from_first_assignment",
        args.jobs as f64 / running,
        "jobs/s",
        store.name,
        THROUGHPUT_AGENTS,
    );
    figure("coordinator_peak_rss_mib", after.peak_rss_kib as f64 / 1024.0, "MiB", store.name, THROUGHPUT_AGENTS);
    figure("coordinator_cpu_seconds", after.cpu_seconds - before.cpu_seconds, "s", store.name, THROUGHPUT_AGENTS);
    Ok(())
}
