//! Deployments (issue 15), end to end: a pipeline builds a real small HTTP
//! service (Python's `http.server`, with a health endpoint and a version
//! endpoint), and its deploy job rolls it out over real agents, each
//! serving the service's port through its own proxy on an address of its
//! own (127.0.0.2 and up). Rolling, canary with a manual promote,
//! blue-green under a client loop, a release whose health fails going
//! back on its own, fast-track rollback, an agent restart, a leader
//! failover mid-rollout on etcd, and a pipeline promoting one digest from
//! staging to production behind an approval.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{AgentSpec, Etcd, Fleet, text, wait_for_or_report};

/// The service: `/healthz` passes unless its version starts with `bad` or
/// a file `sick` lies beside it; it prints `started VERSION`;
/// `/version` says the version, from the release's VERSION file.
const SERVER: &str = r#"import http.server, os
here = os.path.dirname(os.path.abspath(__file__))
version = open(os.path.join(here, "VERSION")).read().strip()
print("started", version, flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            ok = not version.startswith("bad") and not os.path.exists(os.path.join(here, "sick"))
            self.send_response(200 if ok else 500)
            self.end_headers()
            self.wfile.write(b"ok" if ok else b"sick")
        elif self.path == "/version":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(version.encode())
        else:
            self.send_response(404)
            self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const ROLLING: &str = "{rolling: {max_parallel: 1}}";
const CANARY: &str = "{canary: {steps: [{nodes: 1}, {pause: manual}, {nodes: 100%}]}}";
const BLUE_GREEN: &str = "{blue_green: {}}";

/// `GET path` on addr:port, HTTP/1.0; the body of a 200, else None.
pub(crate) fn get(addr: &str, port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&format!("{addr}:{port}").parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.trim().to_string())
}

pub(crate) fn json(fleet: &Fleet, args: &[&str]) -> Value {
    let out = fleet.drover(args);
    assert!(out.status.success(), "drover {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("drover {args:?}: {e}: {}", text(&out.stdout)))
}

/// A fleet whose agents are an environment's nodes, and the service's port.
pub(crate) struct Web {
    pub(crate) fleet: Fleet,
    pub(crate) port: u16,
    pub(crate) script: String,
    /// (agent name, the address its proxy listens on).
    pub(crate) nodes: Vec<(String, String)>,
}

/// Services and their proxies outlive agents by design: a test stops its
/// own when it ends (a supervisor SIGKILLed takes its service with it).
impl Drop for Web {
    fn drop(&mut self) {
        let dir = self.fleet.dir.path().display().to_string();
        for mode in ["--supervise", "--proxy"] {
            let _ = std::process::Command::new("pkill").args(["-KILL", "-f", "--", &format!("{mode} {dir}")]).status();
        }
    }
}

impl Web {
    /// `n` agents labelled role=web, the environment `staging` over them.
    pub(crate) fn start(tag: &str, n: usize) -> Web {
        Web::on(Fleet::start(tag), n, "role=web", "staging")
    }

    /// As [`Web::start`], exporting traces to an OTLP endpoint.
    fn traced(tag: &str, n: usize, endpoint: &str) -> Web {
        Web::on(Fleet::start_with(tag, &["--otlp-endpoint", endpoint]), n, "role=web", "staging")
    }

    pub(crate) fn on(fleet: Fleet, n: usize, labels: &str, env: &str) -> Web {
        let port = crate::harness::free_port();
        let script = fleet.dir.path().join("server.py");
        std::fs::write(&script, SERVER).unwrap();
        let mut web = Web { fleet, port, script: script.to_str().unwrap().to_string(), nodes: Vec::new() };
        web.add_nodes(n, labels);
        web.environment(env, labels);
        web
    }

    pub(crate) fn add_nodes(&mut self, n: usize, labels: &str) {
        let first = self.nodes.len();
        for i in first..first + n {
            let name = format!("web-{}", i + 1);
            let addr = format!("127.0.0.{}", i + 2);
            self.start_node(&name, &addr, labels);
            self.nodes.push((name, addr));
        }
        let total = self.nodes.len();
        self.fleet.wait_agents(total);
    }

    fn start_node(&mut self, name: &str, addr: &str, labels: &str) -> usize {
        let services = self.fleet.dir.path().join("services").join(name);
        let services = services.to_str().unwrap().to_string();
        let extra = ["--service-address", addr, "--services-dir", &services];
        self.fleet.start_agent(name, AgentSpec { labels, slots: 1, extra: &extra, ..AgentSpec::default() }).0
    }

    fn environment(&self, env: &str, labels: &str) {
        let out = self.fleet.drover(&["env", "create", env, "--selector", labels]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    /// The pipeline that builds `version` and deploys it with `strategy`.
    pub(crate) fn pipeline(&self, version: &str, strategy: &str) -> String {
        format!(
            "name: web\njobs:\n  build:\n    artifacts: {{paths: [dist]}}\n    steps:\n      - run: mkdir -p dist && cp \
             {script} dist/server.py && echo {version} > dist/VERSION\n  deploy:\n    needs: [build]\n{deploy}",
            script = self.script,
            deploy = self.deploy("staging", strategy),
        )
    }

    /// A `deploy:` of the build's dist to `env`.
    fn deploy(&self, env: &str, strategy: &str) -> String {
        format!(
            "    deploy:\n      environment: {env}\n      artifact: build:dist\n      service:\n        name: web\n        \
             command: python3 server.py\n        port: {port}\n        health: {{http: /healthz, interval: 1s, \
             healthy_after: 2, timeout: 8s}}\n      strategy: {strategy}\n      progress_deadline: 2m\n",
            port = self.port
        )
    }

    /// Submits `version` with `strategy` and waits for the run to end.
    pub(crate) fn run(&self, version: &str, strategy: &str) -> (String, Value) {
        let run = self.fleet.submit(&format!("{version}.yml"), &self.pipeline(version, strategy));
        let status = self.fleet.wait_run(&run, Duration::from_secs(120));
        (run, status)
    }

    pub(crate) fn deployed(&self, version: &str, strategy: &str) {
        let (_, status) = self.run(version, strategy);
        assert_eq!(status["state"], "succeeded", "{version}: {status:#}\n{}", self.fleet.logs());
        assert_eq!(self.versions(), vec![Some(version.to_string()); self.nodes.len()], "{version} on every node");
    }

    /// What every node answers on /version.
    pub(crate) fn versions(&self) -> Vec<Option<String>> {
        self.nodes.iter().map(|(_, addr)| get(addr, self.port, "/version")).collect()
    }

    /// The newest rollout, once it waits for `drover rollout promote`.
    fn wait_for_promote(&self) -> Value {
        wait_for_or_report(
            "the canary to wait for a promotion",
            Duration::from_secs(60),
            || {
                let r = json(&self.fleet, &["rollouts", "-o", "json"]).get(0).cloned()?;
                (r["hold"] == "promote").then_some(r)
            },
            || self.fleet.logs(),
        )
    }

    fn newest_rollout(&self) -> Value {
        json(&self.fleet, &["rollouts", "-o", "json"])[0].clone()
    }
}

#[test]
fn a_rolling_deploy_moves_every_node_and_a_failing_release_goes_back_on_its_own() {
    let web = Web::start("deploys-rolling", 3);
    let mut took = Vec::new();
    for version in ["v1", "v2"] {
        let started = Instant::now();
        web.deployed(version, ROLLING);
        took.push(started.elapsed());
    }
    let rollouts = json(&web.fleet, &["rollouts", "-o", "json"]);
    let newest = &rollouts[0];
    let spans: Vec<u64> = rollouts
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["finished_ms"].as_u64().unwrap() - r["started_ms"].as_u64().unwrap())
        .collect();
    eprintln!("rolling deploys over 3 nodes: runs {took:?}, rollouts {spans:?} ms");
    assert_eq!((newest["phase"].as_str(), newest["strategy"].as_str()), (Some("succeeded"), Some("rolling")));
    let nodes: Vec<(&str, &str)> = newest["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(nodes, [("web-1", "healthy"), ("web-2", "healthy"), ("web-3", "healthy")]);
    let (v1, v2) =
        (rollouts[1]["version"].as_str().unwrap().to_string(), newest["version"].as_str().unwrap().to_string());
    for n in newest["nodes"].as_array().unwrap() {
        assert_eq!(n["rollback_to"], v1.as_str(), "each node's way back is v1: {n}");
    }
    let services = json(&web.fleet, &["services", "--env", "staging", "-o", "json"]);
    let services = services.as_array().unwrap();
    assert_eq!(services.len(), 3, "{services:?}");
    for s in services {
        assert_eq!((s["version"].as_str(), s["healthy"].as_bool()), (Some(v2.as_str()), Some(true)), "{s}");
        assert_eq!(s["sha256"], newest["sha256"], "{s}");
    }

    // v3 fails its health check on the first node: the rollout goes back,
    // the deploy job fails saying why, and every node serves v2.
    let (run, status) = web.run("bad-3", ROLLING);
    assert_eq!(status["state"], "failed", "{status:#}");
    let job = web.fleet.job(&run, "deploy");
    let message = job["message"].as_str().unwrap_or_default();
    assert!(message.contains("rolled back") && message.contains("web-1"), "{job:#}");
    assert_eq!(web.versions(), vec![Some("v2".to_string()); 3], "no node ends on v3");
    let bad = web.newest_rollout();
    assert_eq!(bad["phase"], "rolled_back", "{bad:#}");
    eprintln!(
        "a failed health gate to every node back: rollout of {} ms (the health check's own verdict included)",
        bad["finished_ms"].as_u64().unwrap() - bad["started_ms"].as_u64().unwrap()
    );
    let shown = text(&web.fleet.drover(&["rollout", "status", &bad["id"].to_string()]).stdout);
    assert!(shown.contains("rolled_back") && shown.contains("web-1") && shown.contains("failed"), "{shown}");
    let after = json(&web.fleet, &["services", "--env", "staging", "-o", "json"]);
    assert!(after.as_array().unwrap().iter().all(|s| s["version"] == v2.as_str()), "{after:#}");

    // A finished rollout takes no command, and says why.
    let out = web.fleet.drover(&["rollout", "promote", &bad["id"].to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("has finished (rolled_back)"), "{}", text(&out.stderr));

    // A fast-track rollback: back to v1 on every node at once.
    let started = Instant::now();
    let out = web.fleet.drover(&["rollback", "web", "--env", "staging", "--follow"]);
    assert!(out.status.success(), "{}{}", text(&out.stderr), text(&out.stdout));
    eprintln!("fast-track rollback of 3 nodes: {:?}", started.elapsed());
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 3]);
    let back = web.newest_rollout();
    assert_eq!((back["version"].as_str(), back["steps"].as_u64()), (Some(v1.as_str()), Some(1)), "{back:#}");
    let out = web.fleet.drover(&["rollback", "web", "--env", "staging", "--to", "nope"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("has no release nope; its releases are:"), "{}", text(&out.stderr));
}

#[test]
fn a_canary_waits_for_a_promote_and_blue_green_switches_two_hosts_without_a_failed_request() {
    let web = Web::start("deploys-canary", 2);
    let run = web.fleet.submit("c1.yml", &web.pipeline("v1", CANARY));
    let rollout = web.wait_for_promote();
    assert_eq!(web.versions(), [Some("v1".to_string()), None], "one node of two");
    let shown = text(&web.fleet.drover(&["rollout", "status", &rollout["id"].to_string()]).stdout);
    assert!(shown.contains(&format!("drover rollout promote {}", rollout["id"])), "{shown}");
    let out = web.fleet.drover(&["rollout", "promote", &rollout["id"].to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = web.fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2]);
    // The promote is in the audit log, with who and on what.
    let audit = text(&web.fleet.drover(&["audit", "-o", "json"]).stdout);
    let audit: Value = serde_json::from_str(&audit).unwrap();
    let promoted = audit.as_array().unwrap().iter().any(|e| {
        e["action"] == "rollout.promote"
            && e["actor"] == "admin:admin"
            && e["target"].as_str() == Some(&*rollout["id"].to_string())
    });
    assert!(promoted, "{audit}");

    // Blue-green v2 while clients hammer both hosts: no request fails, and
    // both switch.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = web
        .nodes
        .iter()
        .map(|(_, addr)| {
            let (addr, port, stop, failed) = (addr.clone(), web.port, stop.clone(), failed.clone());
            std::thread::spawn(move || {
                let (mut ok, mut worst, mut seen) = (0u64, Duration::ZERO, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match get(&addr, port, "/version") {
                        Some(v) => {
                            ok += 1;
                            if seen.last() != Some(&v) {
                                seen.push(v);
                            }
                        }
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    worst = worst.max(t.elapsed());
                }
                (ok, worst, seen)
            })
        })
        .collect();
    let (_, status) = web.run("v2", BLUE_GREEN);
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", web.fleet.logs());
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no failed request: {results:?}");
    for (ok, worst, seen) in &results {
        assert!(*ok > 10, "{results:?}");
        assert_eq!(seen, &["v1", "v2"], "each host switched once, from v1 to v2: {results:?}");
        eprintln!("blue-green: {ok} requests, the slowest {worst:?}");
    }
    let bg = web.newest_rollout();
    assert_eq!((bg["strategy"].as_str(), bg["phase"].as_str()), (Some("blue_green"), Some("succeeded")));
    assert!(bg["nodes"].as_array().unwrap().iter().all(|n| n["state"] == "switched"), "{bg:#}");
}

#[test]
fn a_service_answers_while_its_agent_is_down_and_the_restarted_agent_adopts_it() {
    let mut web = Web::start("deploys-restart", 1);
    web.deployed("v1", ROLLING);
    let services = web.fleet.dir.path().join("services").join("web-1");
    let pids = |mode: &str| -> Vec<String> {
        let out = std::process::Command::new("pgrep")
            .args(["-f", "--", &format!("{mode} {}", services.display())])
            .output()
            .unwrap();
        text(&out.stdout).lines().map(str::to_string).collect()
    };
    let (supervisors, proxies) = (pids("supervise"), pids("proxy"));
    assert_eq!((supervisors.len(), proxies.len()), (1, 1), "one supervisor and one proxy: {supervisors:?} {proxies:?}");
    web.fleet.agents[0].kill();
    // The agent is gone; its service and the proxy on its port are not.
    let (name, addr) = web.nodes[0].clone();
    assert_eq!(get(&addr, web.port, "/version").as_deref(), Some("v1"), "served while the agent is down");
    assert_eq!((pids("supervise"), pids("proxy")), (supervisors.clone(), proxies.clone()));
    web.start_node(&name, &addr, "role=web");
    web.fleet.wait_agents(1);
    assert_eq!(get(&addr, web.port, "/version").as_deref(), Some("v1"));
    assert_eq!((pids("supervise"), pids("proxy")), (supervisors, proxies), "adopted, not started again");
    assert_eq!(json(&web.fleet, &["rollouts", "-o", "json"]).as_array().unwrap().len(), 1, "no new rollout");
    // The adopted service takes the next deploy.
    web.deployed("v2", ROLLING);
}

#[test]
fn a_rollout_survives_a_leader_failover_on_etcd() {
    let etcd = Etcd::start("deploys-ha", 1);
    let fleet = Fleet::start_ha("deploys-ha", &etcd, 2);
    let mut web = Web::on(fleet, 2, "role=web", "staging");
    let run = web.fleet.submit("c1.yml", &web.pipeline("v1", CANARY));
    let rollout = web.wait_for_promote();
    let leader = web.fleet.wait_leader();
    web.fleet.kill_coordinator(leader);
    let new = wait_for_or_report(
        "another leader",
        Duration::from_secs(60),
        || web.fleet.leader().filter(|l| *l != leader),
        || web.fleet.logs(),
    );
    assert_ne!(new, leader);
    // The new leader holds the rollout where it was: promote goes on.
    wait_for_or_report(
        "the new leader to take the promotion",
        Duration::from_secs(60),
        || web.fleet.drover(&["rollout", "promote", &rollout["id"].to_string()]).status.success().then_some(()),
        || web.fleet.logs(),
    );
    let status = web.fleet.wait_run(&run, Duration::from_secs(90));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", web.fleet.logs());
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2]);
    let r = web.newest_rollout();
    assert_eq!(r["id"], rollout["id"], "the same rollout, resumed");
    assert!(r["nodes"].as_array().unwrap().iter().all(|n| n["state"] == "healthy"), "{r:#}");
}

#[test]
fn a_pipeline_promotes_one_digest_from_staging_to_production_behind_the_environments_approval() {
    let mut web = Web::on(Fleet::start("deploys-promote"), 1, "role=web,env=staging", "staging");
    web.add_nodes(1, "role=web,env=prod");
    // Production asks for an approval; the pipeline does not.
    let args = [
        "env",
        "create",
        "production",
        "--selector",
        "role=web,env=prod",
        "--require-approval",
        "--approvers",
        "admin",
    ];
    let out = web.fleet.drover(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let text_of = format!(
        "name: web\njobs:\n  build:\n    artifacts: {{paths: [dist]}}\n    steps:\n      - run: mkdir -p dist && cp \
         {script} dist/server.py && echo v1 > dist/VERSION\n  deploy-staging:\n    needs: [build]\n{staging}  \
         deploy-production:\n    needs: [build, deploy-staging]\n{production}",
        script = web.script,
        staging = web.deploy("staging", ROLLING),
        production = web.deploy("production", ROLLING),
    );
    let run = web.fleet.submit("promote.yml", &text_of);
    wait_for_or_report(
        "production to wait for its approval",
        Duration::from_secs(60),
        || (web.fleet.job(&run, "deploy-staging")["state"] == "succeeded").then_some(()),
        || web.fleet.logs(),
    );
    assert_eq!(web.versions(), [Some("v1".to_string()), None], "staging only");
    assert_eq!(web.fleet.job(&run, "deploy-production")["state"], "pending");
    let out = web.fleet.drover(&["approve", &run, "deploy-production", "--comment", "staging looks good"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = web.fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2]);
    let services = json(&web.fleet, &["services", "-o", "json"]);
    let services = services.as_array().unwrap();
    let envs: Vec<&str> = services.iter().map(|s| s["environment"].as_str().unwrap()).collect();
    assert_eq!(envs, ["production", "staging"]);
    assert_eq!(services[0]["sha256"], services[1]["sha256"], "one digest, never rebuilt: {services:#?}");
    assert_eq!(services[0]["version"], services[1]["version"]);
    assert_eq!(services[0]["run_id"], run.as_str());
}

#[test]
fn a_deploy_is_one_trace_from_the_pipeline_to_the_nodes() {
    let (addr, collector, _rt) = crate::traces::start_collector();
    let web = Web::traced("deploys-trace", 2, &format!("http://{addr}"));
    let (run, status) = web.run("v1", ROLLING);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let spans = wait_for_or_report(
        "the rollout's spans",
        Duration::from_secs(30),
        || {
            let seen = collector.0.lock().unwrap().clone();
            let done =
                seen.iter().any(|s| s.name == "rollout web to staging") && seen.iter().any(|s| s.name == "run web");
            done.then_some(seen)
        },
        || web.fleet.logs(),
    );
    let of_run: Vec<_> = spans
        .iter()
        .filter(|s| s.attrs.get("cicd.pipeline.run.id").map(String::as_str) == Some(run.as_str()))
        .collect();
    let find =
        |name: &str| *of_run.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name:?}: {of_run:#?}"));
    let run_span = find("run web");
    assert!(of_run.iter().all(|s| s.trace_id == run_span.trace_id), "one trace: {of_run:#?}");
    let job = find("job deploy");
    let rollout = find("rollout web to staging");
    assert_eq!(rollout.parent, job.span_id, "the rollout is the deploy job's child");
    assert_eq!(rollout.attrs.get("drover.rollout.phase").map(String::as_str), Some("succeeded"));
    for (i, node) in ["web-1", "web-2"].iter().enumerate() {
        let step = find(&format!("step {i}"));
        assert_eq!(step.parent, rollout.span_id, "each batch is the rollout's child");
        let action = find(&format!("install web on {node}"));
        assert_eq!(action.parent, step.span_id, "{node}'s install is its batch's child");
        let health = find(&format!("health {node}"));
        assert_eq!(health.parent, action.span_id, "{node}'s health check is its install's child");
        assert_eq!(health.attrs.get("drover.result").map(String::as_str), Some("healthy"));
    }
}

#[test]
fn hooks_log_to_the_deploy_job_and_a_services_output_and_health_are_seen_from_the_cli() {
    let web = Web::start("deploys-hooks", 2);
    let hooks = "      hooks:\n        before: [{run: echo migrating to $(cat VERSION) on $DROVER_NODE}]\n        \
                 after_batch: [{run: test -f server.py && echo smoke passed on $DROVER_NODE}]\n";
    let yaml = format!("{}{hooks}", web.pipeline("v1", ROLLING));
    let run = web.fleet.submit("hooked.yml", &yaml);
    let status = web.fleet.wait_run(&run, Duration::from_secs(120));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", web.fleet.logs());
    let out = web.fleet.drover(&["logs", &run, "deploy"]);
    let log = text(&out.stdout);
    for line in [
        "── hook before on web-1 ──",
        "migrating to v1 on web-1",
        "── hook before on web-1: passed ──",
        "smoke passed on web-1",
        "smoke passed on web-2",
        "── hook after_batch on web-2: passed ──",
    ] {
        assert!(log.contains(line), "{line:?} in the deploy job's log:\n{log}{}", text(&out.stderr));
    }

    // The service's own output, from each node.
    let out = web.fleet.drover(&["service", "logs", "web", "--env", "staging"]);
    let logs = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(logs.contains("web-1: started v1") && logs.contains("web-2: started v1"), "{logs}");
    let out = web.fleet.drover(&["service", "logs", "web", "--env", "staging", "--node", "nope"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = web.fleet.drover(&["service", "logs", "web", "--env", "staging", "--node", "web-1", "-o", "json"]);
    let lines: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(lines.iter().any(|l| l["node"] == "web-1" && l["line"] == "started v1"), "{lines:?}");
    let out = web.fleet.drover(&["service", "logs", "web", "--env", "staging", "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(2), "a stream is JSON lines, not YAML: {}", text(&out.stderr));

    // A node whose service turns sick shows as unhealthy, then healthy again.
    let release = web.fleet.dir.path().join("services/web-2/web/current/sick");
    std::fs::write(&release, "").unwrap();
    let health = |want: bool| {
        wait_for_or_report(
            &format!("web-2 to show healthy={want}"),
            Duration::from_secs(30),
            || {
                let services = json(&web.fleet, &["services", "-o", "json"]);
                let s = services.as_array()?.iter().find(|s| s["node"] == "web-2")?.clone();
                (s["healthy"] == want).then_some(s)
            },
            || web.fleet.logs(),
        )
    };
    let sick = health(false);
    assert!(sick["health_message"].as_str().unwrap_or_default().contains("status 500"), "{sick:#}");
    std::fs::remove_file(&release).unwrap();
    health(true);
}

#[test]
fn an_agent_killed_mid_deploy_fails_its_node_and_the_rollout_goes_back() {
    let mut web = Web::start("deploys-killed", 2);
    web.deployed("v1", ROLLING);
    let run = web.fleet.submit("v2.yml", &web.pipeline("v2", ROLLING));
    wait_for_or_report(
        "v2's rollout to start",
        Duration::from_secs(60),
        || {
            let r = web.newest_rollout();
            (r["id"] == 2 && r["phase"] == "progressing").then_some(())
        },
        || web.fleet.logs(),
    );
    // web-2's agent dies before its turn: its node fails once it has been
    // away for 15 s, and the rollout goes back.
    web.fleet.agents[1].kill();
    let failed = wait_for_or_report(
        "web-2 to count as failed",
        Duration::from_secs(60),
        || {
            let r = web.newest_rollout();
            let n = r["nodes"].as_array()?.iter().find(|n| n["name"] == "web-2")?.clone();
            (n["reason"].as_str()?.contains("away")).then_some(n)
        },
        || web.fleet.logs(),
    );
    assert!(failed["reason"].as_str().unwrap().contains("its agent has been away for 15s"), "{failed}");
    // Back, it takes its way back like the others.
    let (name, addr) = web.nodes[1].clone();
    web.start_node(&name, &addr, "role=web");
    let status = web.fleet.wait_run(&run, Duration::from_secs(90));
    assert_eq!(status["state"], "failed", "{status:#}");
    let r = web.newest_rollout();
    assert_eq!(r["phase"], "rolled_back", "{r:#}");
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2], "every node back on v1");
}
