//! The apps mode: what GitOps costs the leader. One real agent builds a
//! real artifact; three simulated agents are an environment's nodes; a git
//! repository holds one directory per app, each declaring one service of
//! that artifact; and 1,000 apps (`--apps`) follow it, polled every 10 s,
//! without auto-sync (the simulated agents run no services, so every app
//! stays out of sync, its services missing: each reconcile fetches, reads
//! and checks the files, resolves the release and diffs it against every
//! node). Reported: how long the first pass over every app takes, and the
//! coordinator's CPU (its own and its git processes') per app per poll
//! interval over a measured window, and its RSS.

use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use super::super::BenchError;
use super::super::report::figure;
use super::super::sim_agent::{SimConfig, Swarm};
use super::{Args, CONNECT_CONCURRENCY, Store, coordinator_stats, deadline, names, urls};
use crate::harness::text;

/// How often each app is fetched.
const POLL: Duration = Duration::from_secs(10);
/// How long the cost is measured: several poll intervals.
const WINDOW: Duration = Duration::from_secs(60);

pub fn apps(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    let n = args.apps;
    let (poll, window) = if args.smoke { (Duration::from_secs(2), Duration::from_secs(4)) } else { (POLL, WINDOW) };
    say!("[{}] apps: {n} apps of 3 nodes, polled every {} s", store.name, poll.as_secs());
    let mut fleet = store.fleet("apps");
    // One real artifact, built by a real agent.
    fleet.agent("builder", "role=builder", 1);
    fleet.wait_agents(1);
    let drover = |args: &[&str]| -> Result<String, BenchError> {
        let out = fleet.drover(args);
        if !out.status.success() {
            return Err(BenchError::new(format!("drover {args:?}: {}", text(&out.stderr))));
        }
        Ok(text(&out.stdout))
    };
    drover(&["env", "create", "bench", "--selector", "role=web"])?;
    let build = "name: build\njobs:\n  build:\n    runs-on: {role: builder}\n    artifacts: {paths: [dist]}\n    steps:\n      - run: mkdir -p dist && echo v1 > dist/VERSION\n";
    let run = fleet.submit("build.yml", build);
    let status = fleet.wait_run(&run, Duration::from_secs(120));
    if status["state"] != "succeeded" {
        return Err(BenchError::new(format!("the build failed: {status}")));
    }
    // Three simulated nodes.
    let nodes = names("node", 3);
    let config = SimConfig {
        urls: urls(&fleet),
        slots: 1,
        log_bytes: 0,
        labels: [("role".to_string(), "web".to_string())].into_iter().collect(),
    };
    fleet.issue_agent_certs_with_labels(&nodes, &config.labels_arg());
    let mut swarm = Swarm::new(rt.handle().clone(), &fleet.certs, config, CONNECT_CONCURRENCY)?;
    for name in &nodes {
        swarm.spawn(name)?;
    }
    rt.block_on(swarm.wait_connected(3, deadline(60), |_| {}))?;
    // The repository: a directory per app.
    let repo = fleet.dir.path().join("desired");
    let git = |args: &[&str]| -> Result<(), BenchError> {
        let out = std::process::Command::new("git")
            .current_dir(&repo)
            .args(args)
            .env("GIT_AUTHOR_NAME", "bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com")
            .output()
            .map_err(|e| BenchError::new(format!("cannot run git: {e}")))?;
        if !out.status.success() {
            return Err(BenchError::new(format!("git {args:?}: {}", text(&out.stderr))));
        }
        Ok(())
    };
    for i in 0..n {
        let dir = repo.join(format!("apps/a{i:05}"));
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::new(e.to_string()))?;
        let file = format!(
            "artifact: {{run: {run}, job: build, path: dist}}\nservice:\n  name: s{i}\n  command: ./serve\n  port: \
             {port}\n  health: {{tcp: true, interval: 5s, healthy_after: 1, timeout: 60s}}\n",
            port = 10_000 + i % 50_000
        );
        std::fs::write(dir.join("service.yaml"), file).map_err(|e| BenchError::new(e.to_string()))?;
    }
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "."])?;
    git(&["commit", "-q", "-m", "apps"])?;
    let url = format!("file://{}", repo.display());
    let poll_arg = format!("{}s", poll.as_secs());
    let registered = Instant::now();
    for i in 0..n {
        let (name, path) = (format!("a{i:05}"), format!("apps/a{i:05}"));
        drover(&["app", "create", &name, "--repo", &url, "--path", &path, "--env", "bench", "--poll", &poll_arg])?;
    }
    say!("[{}] apps: registered {n} apps in {:.1} s", store.name, registered.elapsed().as_secs_f64());
    // The first pass: every app fetched, checked and compared once.
    let started = Instant::now();
    let fetched = |listing: &str| -> Result<usize, BenchError> {
        let apps: serde_json::Value =
            serde_json::from_str(listing).map_err(|e| BenchError::new(format!("drover apps -o json: {e}")))?;
        let apps = apps.as_array().cloned().unwrap_or_default();
        let errors: Vec<&serde_json::Value> = apps.iter().filter(|a| a["last_error"] != "").collect();
        if let Some(a) = errors.first() {
            return Err(BenchError::new(format!("app {} has an error: {}", a["name"], a["last_error"])));
        }
        Ok(apps.iter().filter(|a| a["last_fetch_ms"].as_u64() > Some(0)).count())
    };
    loop {
        let done = fetched(&drover(&["apps", "-o", "json"])?)?;
        if done == n {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(BenchError::new(format!("after 600 s only {done} of {n} apps were fetched")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let first_pass = started.elapsed();
    let before = coordinator_stats(&fleet, 0)?;
    std::thread::sleep(window);
    let after = coordinator_stats(&fleet, 0)?;
    let intervals = window.as_secs_f64() / poll.as_secs_f64();
    let own = after.cpu_seconds - before.cpu_seconds;
    let git_cpu = after.children_cpu_seconds - before.children_cpu_seconds;
    let per_app_ms = 1000.0 * (own + git_cpu) / (n as f64 * intervals);
    say!(
        "[{}] apps: first pass over {n} apps in {:.1} s; over {:.0} s: coordinator {:.2} s CPU, its git {:.2} s, \
         {:.2} ms per app per interval, {:.0}% of a core",
        store.name,
        first_pass.as_secs_f64(),
        window.as_secs_f64(),
        own,
        git_cpu,
        per_app_ms,
        100.0 * (own + git_cpu) / window.as_secs_f64()
    );
    figure("apps_first_pass_seconds", first_pass.as_secs_f64(), "s", store.name, n);
    figure("app_reconcile_cpu_ms_per_interval", per_app_ms, "ms", store.name, n);
    figure("apps_coordinator_rss_mib", after.rss_kib as f64 / 1024.0, "MiB", store.name, n);
    drop(swarm);
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}
