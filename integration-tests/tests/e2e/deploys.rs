//! Deployments (issue 15), end to end: a pipeline builds a real small HTTP
//! service (Python's `http.server`, with a health endpoint and a version
//! endpoint), and its deploy job rolls it out over three real agents, each
//! serving the service's port through its own proxy on an address of its
//! own (127.0.0.2-4). A rolling deploy of v1 then v2 moves every node; a v3
//! whose health check fails goes back on its own, and no node ends on v3;
//! `drover rollouts`, `drover rollout status` and `drover services` show it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{AgentSpec, Fleet, text};

/// The service: `/healthz` passes unless its version starts with `bad`,
/// `/version` says the version, from the release's VERSION file.
const SERVER: &str = r#"import http.server, os
here = os.path.dirname(os.path.abspath(__file__))
version = open(os.path.join(here, "VERSION")).read().strip()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            ok = not version.startswith("bad")
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

const NODES: [(&str, &str); 3] = [("web-1", "127.0.0.2"), ("web-2", "127.0.0.3"), ("web-3", "127.0.0.4")];

/// `GET path` on addr:port, HTTP/1.0; the body of a 200, else None.
fn get(addr: &str, port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&format!("{addr}:{port}").parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}

fn pipeline(script: &str, version: &str, port: u16) -> String {
    format!(
        "name: web\njobs:\n  build:\n    artifacts: {{paths: [dist]}}\n    steps:\n      - run: mkdir -p dist && cp \
         {script} dist/server.py && echo {version} > dist/VERSION\n  deploy:\n    needs: [build]\n    deploy:\n      \
         environment: staging\n      artifact: build:dist\n      service:\n        name: web\n        command: python3 \
         server.py\n        port: {port}\n        health: {{http: /healthz, interval: 1s, healthy_after: 2, timeout: \
         8s}}\n      strategy: {{rolling: {{max_parallel: 1}}}}\n      progress_deadline: 2m\n"
    )
}

fn json(fleet: &Fleet, args: &[&str]) -> Value {
    let out = fleet.drover(args);
    assert!(out.status.success(), "drover {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("drover {args:?}: {e}: {}", text(&out.stdout)))
}

/// What every node answers on /version.
fn versions(port: u16) -> Vec<Option<String>> {
    NODES.iter().map(|(_, addr)| get(addr, port, "/version").map(|v| v.trim().to_string())).collect()
}

#[test]
fn a_rolling_deploy_moves_every_node_and_a_failing_release_goes_back_on_its_own() {
    let mut fleet = Fleet::start("deploys-rolling");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for (name, addr) in NODES {
        let services = fleet.dir.path().join("services").join(name);
        let services = services.to_str().unwrap().to_string();
        let extra = ["--service-address", addr, "--services-dir", &services];
        fleet.start_agent(name, AgentSpec { labels: "role=web", slots: 1, extra: &extra, ..AgentSpec::default() });
    }
    fleet.wait_agents(3);
    let out = fleet.drover(&["env", "create", "staging", "--selector", "role=web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = fleet.dir.path().join("server.py");
    std::fs::write(&script, SERVER).unwrap();
    let script = script.to_str().unwrap().to_string();

    let mut took = Vec::new();
    for version in ["v1", "v2"] {
        let run = fleet.submit(&format!("{version}.yml"), &pipeline(&script, version, port));
        let started = Instant::now();
        let status = fleet.wait_run(&run, Duration::from_secs(120));
        assert_eq!(status["state"], "succeeded", "{version}: {status:#}\n{}", fleet.logs());
        took.push(started.elapsed());
        let want: Vec<Option<String>> = NODES.iter().map(|_| Some(version.to_string())).collect();
        assert_eq!(versions(port), want, "{version} on every node");
    }
    eprintln!("rolling deploys over 3 nodes (run submit to end, build included): {took:?}");

    let rollouts = json(&fleet, &["rollouts", "-o", "json"]);
    let newest = &rollouts[0];
    assert_eq!((newest["phase"].as_str(), newest["strategy"].as_str()), (Some("succeeded"), Some("rolling")));
    let nodes: Vec<(&str, &str)> = newest["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(nodes, [("web-1", "healthy"), ("web-2", "healthy"), ("web-3", "healthy")]);
    let v2 = newest["version"].as_str().unwrap().to_string();
    for n in newest["nodes"].as_array().unwrap() {
        assert_eq!(n["rollback_to"], rollouts[1]["version"], "each node's way back is v1: {n}");
    }
    let services = json(&fleet, &["services", "--env", "staging", "-o", "json"]);
    let services = services.as_array().unwrap();
    assert_eq!(services.len(), 3, "{services:?}");
    for s in services {
        assert_eq!((s["version"].as_str(), s["healthy"].as_bool()), (Some(v2.as_str()), Some(true)), "{s}");
        assert_eq!(s["sha256"], newest["sha256"], "{s}");
    }

    // v3 fails its health check on the first node: the rollout goes back,
    // the deploy job fails saying why, and every node serves v2.
    let run = fleet.submit("bad.yml", &pipeline(&script, "bad-3", port));
    let status = fleet.wait_run(&run, Duration::from_secs(120));
    assert_eq!(status["state"], "failed", "{status:#}");
    let job = fleet.job(&run, "deploy");
    let message = job["message"].as_str().unwrap_or_default();
    assert!(message.contains("rolled back") && message.contains("web-1"), "{job:#}");
    assert_eq!(versions(port), vec![Some("v2".to_string()); 3], "no node ends on v3");
    let bad = &json(&fleet, &["rollouts", "-o", "json"])[0];
    assert_eq!(bad["phase"], "rolled_back", "{bad:#}");
    let shown = text(&fleet.drover(&["rollout", "status", &bad["id"].to_string()]).stdout);
    assert!(shown.contains("rolled_back") && shown.contains("web-1") && shown.contains("failed"), "{shown}");
    let after = json(&fleet, &["services", "--env", "staging", "-o", "json"]);
    assert!(after.as_array().unwrap().iter().all(|s| s["version"] == v2.as_str()), "{after:#}");

    // A finished rollout takes no command, and says why.
    let out = fleet.drover(&["rollout", "promote", &bad["id"].to_string()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("has finished (rolled_back)"), "{}", text(&out.stderr));
}
