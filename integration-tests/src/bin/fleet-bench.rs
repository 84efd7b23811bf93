//! `fleet-bench`: measures the fleet on the real binaries and prints one
//! JSON line per figure, for each store.
//!
//! - latency: the time from starting `drover run` until the first step of
//!   the run starts on an idle agent (the step records its own start time),
//!   over N runs; prints p50, p99 and max.
//! - throughput: one pipeline of M trivial jobs over 4 agents with 4 slots
//!   each, from submit until the run has finished; prints jobs/s, and on
//!   etcd the write transactions per job attempt (etcd revisions used).
//!   Just before, in the same run, the machine's spawn limit: how many
//!   `bash -eo pipefail -c true` one process per core can start and reap
//!   per second (what each step costs at least), and the throughput as a
//!   share of it, so that the ratio comes from one run.
//! - failover (etcd): three coordinators; SIGKILL the leader, submit at
//!   once, and time from the kill to the first step of that run; K times.
//! - freeze (etcd): three coordinators; SIGSTOP the leader while a job runs
//!   whose dependent is next, and time from the freeze to the dependent's
//!   first step (the agent must notice the frozen leader by its missing
//!   heartbeat acknowledgements, find the new one and report there); K
//!   times, each frozen leader woken afterwards to step down.
//! - critical path (embedded): a DAG of one long chain and many short side
//!   jobs (listed first) on a busy fleet of 2 agents with 2 slots; the
//!   makespan with `--dispatch critical-path` and with `--dispatch fifo`.
//! - affinity (embedded): warm-cache affinity's gain. Four projects (four
//!   pipelines, so four cache scopes) each with a cache of C MB, over four
//!   agents with one slot and a local cache budget that holds about one
//!   project's; R waves of one run per project, submitted in a shuffled
//!   (seeded) order. Prints the makespan of all the runs and how many
//!   restores had to download, with `--no-cache-affinity` and without.
//!
//! Build everything in release first, then run it:
//! `cargo build --release --workspace --bins && target/release/fleet-bench`.
//! Flags: `--smoke` (a few seconds' worth, for the test suite), `--store
//! embedded|etcd|both` (default both), `--mode MODE` (one of the above:
//! latency, throughput, affinity, critical-path, failover or freeze;
//! default all), `--jobs N` (the throughput pipeline's jobs; 1,000, at most
//! a pipeline's limit of 5,000), and
//! `--no-fsync` with `--store embedded --mode throughput`: the coordinator
//! runs with `--no-fsync`, so that the difference is what the disk's syncs
//! cost (never a setting for production).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover_integration_tests::harness::{AgentSpec, Etcd, Fleet, text, wait_for};

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos()
}

fn figure(metric: &str, value: f64, unit: &str, store: &str, agents: u32) {
    println!(
        "{}",
        serde_json::json!({"metric": metric, "value": (value * 1000.0).round() / 1000.0, "unit": unit, "store": store, "agents": agents})
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

/// A fleet on the given store: embedded, or etcd with `coordinators`
/// coordinators.
fn fleet(tag: &str, store: &str, etcd: Option<&Etcd>, coordinators: usize) -> Fleet {
    match (store, etcd) {
        ("etcd", Some(etcd)) => Fleet::start_ha(tag, etcd, coordinators),
        _ => Fleet::start(tag),
    }
}

/// Submits a pipeline whose one step writes its start time; returns the run
/// id and the step's start time in ns. Retries the submit while no leader
/// answers (during a failover).
fn timed_run(fleet: &Fleet, path: &Path, out: &Path) -> (String, u128) {
    let run = wait_for("a coordinator to take the run", Duration::from_secs(30), || {
        let cli = fleet.drover(&["run", path.to_str().expect("utf-8")]);
        cli.status.success().then(|| text(&cli.stdout).trim().to_string())
    });
    let started = wait_for("the step to start", Duration::from_secs(30), || {
        std::fs::read_to_string(out.join(&run)).ok().and_then(|s| s.trim().parse().ok())
    });
    (run, started)
}

fn one_step_pipeline(fleet: &Fleet) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = fleet.dir.path().join("starts");
    std::fs::create_dir_all(&out).expect("out dir");
    let path = fleet.dir.path().join("one.yml");
    std::fs::write(
        &path,
        format!(
            "name: latency\njobs:\n  one:\n    steps:\n      - run: date +%s%N > {}/$DROVER_RUN_ID\n",
            out.display()
        ),
    )
    .expect("write pipeline");
    (path, out)
}

fn latency(store: &str, etcd: Option<&Etcd>, runs: usize) {
    let mut fleet = fleet(&format!("bench-latency-{store}"), store, etcd, 1);
    fleet.wait_leader();
    fleet.agent("idle", "", 1);
    fleet.wait_agents(1);
    let (path, out) = one_step_pipeline(&fleet);
    let mut samples = Vec::with_capacity(runs);
    let rev0 = etcd.map(Etcd::revision);
    for _ in 0..runs {
        let t0 = now_ns();
        let (run, started) = timed_run(&fleet, &path, &out);
        samples.push(started.saturating_sub(t0) as f64 / 1e6);
        // Wait for the run to finish so the agent is idle for the next one.
        let status = fleet.wait_run(&run, Duration::from_secs(30));
        assert_eq!(status["state"], "succeeded");
    }
    if let (Some(etcd), Some(rev0)) = (etcd, rev0) {
        // One job at a time: nothing to group-commit with.
        let txns = etcd.revision() - rev0;
        figure("etcd_write_txns_per_lone_job", txns as f64 / runs as f64, "txns", store, 1);
    }
    let samples = sorted(samples);
    figure("run_to_first_step_ms_p50", percentile(&samples, 0.5), "ms", store, 1);
    figure("run_to_first_step_ms_p99", percentile(&samples, 0.99), "ms", store, 1);
    figure("run_to_first_step_ms_max", samples[samples.len() - 1], "ms", store, 1);
}

/// How many `bash -eo pipefail -c true` the machine starts and reaps per
/// second, one spawning thread per core, `n` in all.
fn spawn_limit(n: usize) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
    let t0 = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let count = n / threads + usize::from(i < n % threads);
            std::thread::spawn(move || {
                for _ in 0..count {
                    let status = std::process::Command::new("bash")
                        .args(["-eo", "pipefail", "-c", "true"])
                        .env_clear()
                        .env("PATH", "/usr/bin:/bin")
                        .status()
                        .expect("spawn bash");
                    assert!(status.success(), "bash -c true failed: {status}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a spawning thread");
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// `no_fsync`: the coordinator runs with `--no-fsync` (embedded only), to
/// show what the disk's syncs cost; the figures' store is then
/// `embedded+no-fsync`.
fn throughput(store: &str, etcd: Option<&Etcd>, jobs: usize, no_fsync: bool) {
    let label = if no_fsync { format!("{store}+no-fsync") } else { store.to_string() };
    let store = label.as_str();
    let limit = spawn_limit(jobs.max(100));
    figure("spawn_limit_per_second", limit, "spawns/s", store, 4);
    let mut fleet = if no_fsync {
        Fleet::start_with(&format!("bench-throughput-{store}"), &["--no-fsync"])
    } else {
        fleet(&format!("bench-throughput-{store}"), store, etcd, 1)
    };
    fleet.wait_leader();
    for i in 0..4 {
        fleet.agent(&format!("worker{i}"), "", 4);
    }
    fleet.wait_agents(4);
    let mut yaml = String::from("name: throughput\njobs:\n");
    for i in 0..jobs {
        yaml.push_str(&format!("  j{i}:\n    steps:\n      - run: \"true\"\n"));
    }
    let path = fleet.dir.path().join("many.yml");
    std::fs::write(&path, yaml).expect("write pipeline");
    let rev0 = etcd.map(Etcd::revision);
    let t0 = Instant::now();
    let cli = fleet.drover(&["run", path.to_str().expect("utf-8")]);
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    let run = text(&cli.stdout).trim().to_string();
    // Followed to its end on one stream, as `drover run` follows it for a
    // user. Polling `drover status` (every job, each time) twenty times a
    // second took a fifth of the machine from what is measured.
    let mut watch = fleet
        .drover_command(&["watch", &run, "-o", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run drover watch");
    let ended = wait_for("the run to end", Duration::from_secs(600), || watch.try_wait().expect("drover watch"));
    let elapsed = t0.elapsed().as_secs_f64();
    let status = fleet.status(&run);
    assert!(ended.success() && status["state"] == "succeeded", "drover watch: {ended}; {status}");
    figure("trivial_jobs_per_second", jobs as f64 / elapsed, "jobs/s", store, 4);
    figure("trivial_jobs_share_of_spawn_limit_percent", 100.0 * jobs as f64 / elapsed / limit, "%", store, 4);
    if let (Some(etcd), Some(rev0)) = (etcd, rev0) {
        // Leases renewals and reads do not create revisions; every write
        // transaction does.
        let txns = etcd.revision() - rev0;
        figure("etcd_write_txns_per_job_attempt", txns as f64 / jobs as f64, "txns", store, 4);
    }
}

fn failover(etcd: &Etcd, kills: usize) {
    let mut fleet = Fleet::start_ha("bench-failover", etcd, 3);
    fleet.wait_leader();
    fleet.agent("survivor", "", 1);
    fleet.wait_agents(1);
    let (path, out) = one_step_pipeline(&fleet);
    let mut samples = Vec::with_capacity(kills);
    for _ in 0..kills {
        let leader = fleet.wait_leader();
        let addr = fleet.addrs[leader].clone();
        fleet.kill_coordinator(leader);
        let t0 = now_ns();
        let (run, started) = timed_run(&fleet, &path, &out);
        samples.push(started.saturating_sub(t0) as f64 / 1e9);
        fleet.wait_run(&run, Duration::from_secs(30));
        // Bring the killed coordinator back as a follower for the next round.
        fleet.start_coordinator(leader, &addr);
    }
    let samples = sorted(samples);
    figure("failover_kill_to_first_step_s_p50", percentile(&samples, 0.5), "s", "etcd", 1);
    figure("failover_kill_to_first_step_s_max", samples[samples.len() - 1], "s", "etcd", 1);
}

fn freeze(etcd: &Etcd, freezes: usize) {
    let mut fleet = Fleet::start_ha("bench-freeze", etcd, 3);
    fleet.wait_leader();
    fleet.agent("survivor", "", 1);
    fleet.wait_agents(1);
    let marks = fleet.dir.path().join("freeze-marks");
    let yaml = format!(
        "name: freeze\njobs:\n  j0:\n    steps: [{{run: 'echo \"j0 $(date +%s%N)\" >> {m}; sleep 0.2'}}]\n  \
         j1:\n    needs: [j0]\n    steps: [{{run: 'echo \"j1 $(date +%s%N)\" >> {m}'}}]\n",
        m = marks.display()
    );
    let path = fleet.dir.path().join("freeze.yml");
    std::fs::write(&path, yaml).expect("write pipeline");
    let stamps = |job: &str| -> Vec<u128> {
        std::fs::read_to_string(&marks)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{job} ")).and_then(|n| n.trim().parse().ok()))
            .collect()
    };
    let mut samples = Vec::with_capacity(freezes);
    for round in 0..freezes {
        let leader = fleet.wait_leader();
        let cli = fleet.drover(&["run", path.to_str().expect("utf-8")]);
        assert!(cli.status.success(), "submit: {}", text(&cli.stderr));
        let run = text(&cli.stdout).trim().to_string();
        wait_for("j0 to start", Duration::from_secs(30), || (stamps("j0").len() > round).then_some(()));
        let t0 = now_ns();
        fleet.coordinator(leader).signal(libc::SIGSTOP);
        let started = wait_for("j1 to start", Duration::from_secs(60), || stamps("j1").get(round).copied());
        samples.push(started.saturating_sub(t0) as f64 / 1e9);
        fleet.coordinator(leader).signal(libc::SIGCONT);
        fleet.wait_run(&run, Duration::from_secs(30));
        // The woken leader finds itself deposed and steps down.
        wait_for("the woken leader to step down", Duration::from_secs(30), || {
            (fleet.leader().is_some_and(|l| l != leader)).then_some(())
        });
    }
    let samples = sorted(samples);
    figure("freeze_to_next_job_s_p50", percentile(&samples, 0.5), "s", "etcd", 1);
    figure("freeze_to_next_job_s_max", samples[samples.len() - 1], "s", "etcd", 1);
}

/// The makespan (s) of one DAG run: `chain` jobs in a chain and `sides`
/// side jobs, each sleeping `secs`, on a fleet started with `flags`.
fn dag_makespan(flags: &[&str], chain: usize, sides: usize, secs: f64) -> f64 {
    let mut fleet = Fleet::start_with(&format!("bench-dag-{}", flags.len()), flags);
    fleet.wait_leader();
    fleet.agent("worker0", "", 2);
    fleet.agent("worker1", "", 2);
    fleet.wait_agents(2);
    let mut yaml = String::from("name: dag\njobs:\n");
    for i in 0..sides {
        yaml.push_str(&format!("  side{i}: {{steps: [{{run: 'sleep {secs}'}}]}}\n"));
    }
    for i in 0..chain {
        let needs = if i == 0 { String::new() } else { format!("needs: [chain{}], ", i - 1) };
        yaml.push_str(&format!("  chain{i}: {{{needs}steps: [{{run: 'sleep {secs}'}}]}}\n"));
    }
    let path = fleet.dir.path().join("dag.yml");
    std::fs::write(&path, yaml).expect("write pipeline");
    let t0 = Instant::now();
    let cli = fleet.drover(&["run", "--detach", path.to_str().expect("utf-8")]);
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    let run = text(&cli.stdout).trim().to_string();
    let status = fleet.wait_run(&run, Duration::from_secs(600));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    t0.elapsed().as_secs_f64()
}

fn critical_path(chain: usize, sides: usize, secs: f64) {
    for (name, flags) in [("fifo", &["--dispatch", "fifo"][..]), ("critical_path", &[][..])] {
        let makespan = dag_makespan(flags, chain, sides, secs);
        println!(
            "{}",
            serde_json::json!({"metric": format!("dag_makespan_{name}_s"), "value": (makespan * 1000.0).round() / 1000.0,
                "unit": "s", "store": "embedded", "agents": 2, "slots": 4, "chain": chain, "sides": sides, "job_s": secs})
        );
    }
}

/// One side of the affinity benchmark: (makespan in s, restores that
/// downloaded, restores from the agent's own copy).
fn affinity_side(affinity: bool, waves: usize, cache_mb: usize) -> (f64, usize, usize) {
    let flags: &[&str] = if affinity { &[] } else { &["--no-cache-affinity"] };
    let mut fleet = Fleet::start_with(&format!("bench-affinity-{affinity}"), flags);
    fleet.wait_leader();
    // About one project's cache fits: an agent that serves another project
    // evicts the one it had.
    let budget = format!("{}MiB", cache_mb * 3 / 2);
    for i in 0..4 {
        let spec = AgentSpec { slots: 1, extra: &["--cache-budget", &budget], ..AgentSpec::default() };
        fleet.start_agent(&format!("worker{i}"), spec);
    }
    fleet.wait_agents(4);
    let files: Vec<std::path::PathBuf> = (0..4)
        .map(|p| {
            let path = fleet.dir.path().join(format!("project{p}.yml"));
            let yaml = format!(
                "name: project{p}\njobs:\n  build:\n    cache: {{key: deps-v1, paths: [deps]}}\n    steps:\n      - run: |\n          \
                 test -f deps/blob || {{ mkdir -p deps && head -c {bytes} /dev/urandom > deps/blob; }}\n          \
                 sha256sum deps/blob > /dev/null\n",
                bytes = cache_mb * 1_000_000
            );
            std::fs::write(&path, yaml).expect("write pipeline");
            path
        })
        .collect();
    // A fixed xorshift sequence: both sides see the same orders.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let t0 = Instant::now();
    let mut runs = Vec::new();
    for _ in 0..waves {
        let mut order: Vec<usize> = (0..4).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        let wave: Vec<String> = order
            .iter()
            .map(|&p| {
                let cli = fleet.drover(&["run", "--detach", files[p].to_str().expect("utf-8")]);
                assert!(cli.status.success(), "{}", text(&cli.stderr));
                text(&cli.stdout).trim().to_string()
            })
            .collect();
        for run in &wave {
            let status = fleet.wait_run(run, Duration::from_secs(300));
            assert_eq!(status["state"], "succeeded", "{status:#}");
        }
        runs.extend(wave);
    }
    let makespan = t0.elapsed().as_secs_f64();
    let (mut downloads, mut local) = (0, 0);
    for run in &runs {
        let log = text(&fleet.drover(&["logs", run, "build"]).stdout);
        downloads += usize::from(log.contains(", downloaded "));
        local += usize::from(log.contains("from this agent's copy"));
    }
    (makespan, downloads, local)
}

fn affinity(waves: usize, cache_mb: usize) {
    for on in [false, true] {
        let (makespan, downloads, local) = affinity_side(on, waves, cache_mb);
        let side = if on { "on" } else { "off" };
        println!(
            "{}",
            serde_json::json!({"metric": format!("cache_affinity_{side}_makespan_s"), "value": (makespan * 1000.0).round() / 1000.0,
                "unit": "s", "store": "embedded", "agents": 4, "runs": waves * 4, "cache_mb": cache_mb,
                "restores_downloaded": downloads, "restores_local": local})
        );
    }
}

/// The modes `--mode` takes, each on its own.
const MODES: [&str; 6] = ["latency", "throughput", "affinity", "critical-path", "failover", "freeze"];

const USAGE: &str = "usage: fleet-bench [--mode latency|throughput|affinity|critical-path|failover|freeze|all] \
[--store embedded|etcd|both] [--smoke] [--jobs N] [--no-fsync]";

/// Refuses what fleet-bench does not take, before anything starts: a
/// mistyped flag would otherwise run every mode with the defaults.
fn check_args(args: &[String]) -> Result<(), String> {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" | "--no-fsync" => {}
            "--mode" | "--store" | "--jobs" => {
                it.next().ok_or_else(|| format!("{arg} needs a value"))?;
            }
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match check_args(&args) {
        Ok(()) => {}
        Err(e) if e == "help" => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("fleet-bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    }
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str);
    let smoke = args.iter().any(|a| a == "--smoke");
    let store = flag("--store").unwrap_or("both");
    let mode = flag("--mode").unwrap_or("all");
    if !matches!(store, "embedded" | "etcd" | "both") {
        eprintln!("fleet-bench: --store {store:?}: use embedded, etcd or both");
        std::process::exit(2);
    }
    if mode != "all" && !MODES.contains(&mode) {
        eprintln!("fleet-bench: --mode {mode:?}: use {} or all", MODES.join(", "));
        std::process::exit(2);
    }
    let no_fsync = args.iter().any(|a| a == "--no-fsync");
    if no_fsync && (store != "embedded" || mode != "throughput") {
        eprintln!("fleet-bench: --no-fsync goes with --store embedded --mode throughput only");
        std::process::exit(2);
    }
    let on = |m: &str| mode == "all" || mode == m;
    let (runs, jobs, kills) = if smoke { (5, 40, 1) } else { (100, 1000, 10) };
    let jobs = match flag("--jobs").map(str::parse::<usize>) {
        None => jobs,
        Some(Ok(n)) if (1..=drover_pipeline::MAX_JOBS).contains(&n) => n,
        Some(_) => {
            eprintln!(
                "fleet-bench: --jobs takes a whole number from 1 to {} (the most jobs one pipeline may have)",
                drover_pipeline::MAX_JOBS
            );
            std::process::exit(2);
        }
    };
    let (waves, cache_mb) = if smoke { (2, 2) } else { (5, 200) };
    let (chain, sides, secs) = if smoke { (3, 6, 0.1) } else { (8, 40, 0.5) };
    if matches!(store, "embedded" | "both") {
        if on("latency") {
            latency("embedded", None, runs);
        }
        if on("throughput") {
            throughput("embedded", None, jobs, no_fsync);
        }
        if on("affinity") {
            affinity(waves, cache_mb);
        }
        if on("critical-path") {
            critical_path(chain, sides, secs);
        }
    }
    if matches!(store, "etcd" | "both") && ["latency", "throughput", "failover", "freeze"].iter().any(|m| on(m)) {
        let etcd = Etcd::start("bench", 1);
        if on("latency") {
            latency("etcd", Some(&etcd), runs);
        }
        if on("throughput") {
            throughput("etcd", Some(&etcd), jobs, false);
        }
        if on("failover") {
            failover(&etcd, kills);
        }
        if on("freeze") {
            freeze(&etcd, kills);
        }
    }
}
