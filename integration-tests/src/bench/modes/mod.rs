//! The modes of `drover-bench` (see the binary's header for what each
//! measures), one module each: [`latency`], [`throughput`], [`scale`],
//! [`retention`], [`failover`], [`apps`], [`renew`] and [`ui`]. The binary parses its command line into
//! [`Args`] and calls them for each [`Store`]; this module holds what they
//! share: fleets of simulated agents, one-job runs, and the benchmark's
//! constants.

use std::time::Duration;

use tokio::runtime::Runtime;

use super::BenchError;
use super::control::Control;
use super::proc_stats::{self, ProcStats};
use super::sim_agent::{Observed, SimConfig, Swarm};
use crate::harness::{Etcd, Fleet};

/// Progress and diagnostics, on stderr.
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("drover-bench: {}", format!($($arg)*)) };
}

mod apps;
mod failover;
mod latency;
mod renew;
mod retention;
mod scale;
mod throughput;
mod ui;

pub use apps::apps;
pub use failover::failover;
pub use latency::latency;
pub use renew::renew;
pub use retention::retention;
pub use scale::{COORDINATORS, scale};
pub use throughput::throughput;
pub use ui::ui;

/// The coordinator's lease TTL in the benchmark: its default.
const LEASE_ARGS: &[&str] = &["--lease-ttl", "10s"];
/// The most jobs one pipeline may have (README, "Limits").
pub const MAX_JOBS_PER_PIPELINE: usize = 5000;
/// How many simulated agents dial and shake hands at the same moment.
const CONNECT_CONCURRENCY: usize = 200;
/// The scale mode's agents in one child process at most: each holds a
/// socket, and this container's open-file limit is 20,000 a process.
pub const AGENTS_PER_PROCESS: usize = 15_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Latency,
    Throughput,
    Scale,
    Retention,
    Failover,
    Apps,
    Renew,
    Ui,
}

#[derive(Debug)]
pub struct Args {
    pub modes: Vec<Mode>,
    pub embedded: bool,
    pub etcd: bool,
    pub smoke: bool,
    pub samples: usize,
    pub jobs: usize,
    /// Jobs per pipeline in the throughput mode: the per-pipeline limit
    /// unless told otherwise, to see how the size of one run matters.
    pub jobs_per_pipeline: usize,
    pub scale_agents: usize,
    /// The scale mode's simulated agents in one child process at most.
    pub agents_per_process: usize,
    /// Coordinators in the scale mode on etcd ([`COORDINATORS`] unless told
    /// otherwise): where the open-file limit caps a coordinator's agents,
    /// more of them hold a larger fleet.
    pub coordinators: usize,
    pub kills: usize,
    pub log_bytes: usize,
    /// Finished runs in the retention mode.
    pub runs: usize,
    /// Runs with a log of `BIG_LOG_BYTES` in the retention mode.
    pub big_log_runs: usize,
    pub otlp_blackhole: bool,
    /// The coordinator runs with `--no-fsync` (embedded only).
    pub no_fsync: bool,
    /// Apps in the apps mode.
    pub apps: usize,
    /// Enrolled agents that renew at once in the renew mode.
    pub renew_agents: usize,
}

/// A deadline `secs` seconds from now, for the async waits.
fn deadline(secs: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(secs)
}

/// Which store a fleet keeps its state in.
#[derive(Clone, Copy)]
pub struct Store<'a> {
    pub name: &'a str,
    pub etcd: Option<&'a Etcd>,
    /// Extra coordinator flags.
    pub extra: &'a [String],
}

impl Store<'_> {
    /// A fresh fleet with one coordinator on this store. The harness panics
    /// with the coordinator's log when one does not start.
    fn fleet(&self, mode: &str) -> Fleet {
        self.fleet_with(mode, &[])
    }

    /// Like [`Store::fleet`], with the mode's own coordinator flags too.
    fn fleet_with(&self, mode: &str, flags_of_mode: &[&str]) -> Fleet {
        self.fleet_of(mode, 1, flags_of_mode)
    }

    /// A fresh fleet with `coordinators` coordinators (more than one only
    /// on etcd).
    fn fleet_of(&self, mode: &str, coordinators: usize, flags_of_mode: &[&str]) -> Fleet {
        let tag = format!("bench-{mode}-{}", self.name.replace('+', "-"));
        let mut flags: Vec<&str> = LEASE_ARGS.to_vec();
        flags.extend(self.extra.iter().map(String::as_str));
        flags.extend_from_slice(flags_of_mode);
        match self.etcd {
            Some(etcd) => Fleet::start_ha_with(&tag, etcd, coordinators, &flags),
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
    one_run_of(control, swarm, ONE_JOB).await
}

/// [`one_run`] of the one-job pipeline `yaml`.
async fn one_run_of(control: &mut Control, swarm: &mut Swarm, yaml: &str) -> Result<Duration, BenchError> {
    let until = deadline(30);
    let t0 = std::time::Instant::now();
    let run = control.submit(yaml, until).await?;
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
