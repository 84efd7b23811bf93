//! Metric analysis (issue 17), end to end: a real Prometheus (Debian's
//! `prometheus`) scrapes the real service's `/metrics` through each node's
//! proxy while the test sends it traffic; a canary whose error rate stays
//! low passes its analysis and promotes on its own, one whose error rate
//! rises fails it and goes back on its own, and one whose Prometheus
//! cannot be reached is inconclusive and pauses for a person. An `exec`
//! metric's command runs on the canary's node, and its exit code decides.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deploys::{Web, json};
use crate::harness::{text, wait_for, wait_for_or_report};

/// The service: `/` answers 500 when its version starts with `errors`,
/// else 200, and counts both in `/metrics` (Prometheus's text format),
/// with the time it took (20 ms, or 60 ms when its version starts with
/// `slow`); `/healthz` always passes, so only the metrics tell a bad
/// release.
const SERVER: &str = r##"import http.server, os, threading, time
here = os.path.dirname(os.path.abspath(__file__))
version = open(os.path.join(here, "VERSION")).read().strip()
counts = {"200": 0, "500": 0}
took = [0.0, 0]
lock = threading.Lock()
print("started", version, flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body):
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body.encode())
    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200, "ok")
        elif self.path == "/version":
            self.reply(200, version)
        elif self.path == "/metrics":
            with lock:
                lines = ['web_requests_total{code="%s"} %d' % (c, n) for c, n in counts.items()]
                lines += ["web_request_seconds_sum %f" % took[0], "web_request_seconds_count %d" % took[1]]
            self.reply(200, "# TYPE web_requests_total counter\n" + "\n".join(lines) + "\n")
        else:
            start = time.monotonic()
            time.sleep(0.06 if version.startswith("slow") else 0.02)
            code = "500" if version.startswith("errors") else "200"
            with lock:
                counts[code] += 1
                took[0] += time.monotonic() - start
                took[1] += 1
            self.reply(int(code), code)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"##;

/// A Prometheus scraping `targets` every second, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    /// `targets` are (address, node): each target's series carry a `node`
    /// label with its node's name, as a file_sd of hosts would give them.
    fn start(dir: &std::path::Path, targets: &[(String, String)]) -> Prometheus {
        let port = crate::harness::free_port();
        let config = dir.join("prometheus.yml");
        let list = targets
            .iter()
            .map(|(t, node)| format!("{{targets: ['{t}'], labels: {{node: '{node}'}}}}"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: web\n    \
                 static_configs: [{list}]\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus runs (Debian's prometheus package; scripts/test.sh installs it)");
        let p = Prometheus { child, port };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            http(&format!("127.0.0.1:{port}"), "/-/ready").filter(|(code, _)| *code == 200)
        });
        p
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` of `addr`: the status code and the body.
fn http(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// Traffic to every node's service, 20 requests a second each, until
/// dropped.
struct Load {
    stop: Arc<AtomicBool>,
}

impl Load {
    fn start(web: &Web) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let targets: Vec<String> = web.nodes.iter().map(|(_, addr)| format!("{addr}:{}", web.port)).collect();
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                for t in &targets {
                    let _ = http(t, "/");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Load { stop }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Two nodes serving the metrics service, a Prometheus scraping them, and
/// traffic.
struct Setup {
    web: Web,
    prometheus: Prometheus,
    _load: Load,
}

impl Setup {
    fn start(tag: &str) -> Setup {
        let web = Web::start(tag, 2);
        std::fs::write(&web.script, SERVER).unwrap();
        let targets: Vec<(String, String)> =
            web.nodes.iter().map(|(name, addr)| (format!("{addr}:{}", web.port), name.clone())).collect();
        let prometheus = Prometheus::start(web.fleet.dir.path(), &targets);
        let load = Load::start(&web);
        Setup { web, prometheus, _load: load }
    }

    /// Builds `version` and deploys it: with a canary judged by the error
    /// rate Prometheus at `address` measures, or rolling without analysis.
    fn deploy(&self, version: &str, address: Option<&str>) -> (String, Value) {
        self.deploy_every(version, address, "2s")
    }

    /// As [`Setup::deploy`], measuring every `interval`.
    fn deploy_every(&self, version: &str, address: Option<&str>, interval: &str) -> (String, Value) {
        let query = "sum(rate(web_requests_total{code=\"500\"}[5s])) / sum(rate(web_requests_total[5s]))";
        self.deploy_query(version, address.map(|a| (a, query)), interval)
    }

    /// As [`Setup::deploy`], judging `query` at `address`.
    fn deploy_query(&self, version: &str, measured: Option<(&str, &str)>, interval: &str) -> (String, Value) {
        self.deploy_analysed(version, measured, interval, "[{nodes: 1}, {nodes: 100%}]", "steps")
    }

    /// As [`Setup::deploy_query`], with canary steps `steps` and the
    /// analysis' `run`.
    fn deploy_analysed(
        &self,
        version: &str,
        measured: Option<(&str, &str)>,
        interval: &str,
        steps: &str,
        run: &str,
    ) -> (String, Value) {
        let analysis = match measured {
            Some((address, query)) => format!(
                "      strategy: {{canary: {{steps: {steps}}}}}\n      analysis:\n        run: {run}\n        \
                 metrics:\n          - name: error-rate\n            prometheus:\n              address: \
                 \"{address}\"\n              query: '{query}'\n            initial_delay: 5s\n            interval: {interval}\n            \
                 count: 3\n            inconclusive_limit: 1\n            success: result < 0.1\n            failure: result >= 0.1\n"
            ),
            None => "      strategy: {rolling: {max_parallel: 2}}\n".to_owned(),
        };
        self.deploy_with(version, &analysis)
    }

    /// Builds `version` and deploys it with `analysis` (the strategy and
    /// the analysis, as a deploy's keys), waiting for the run to end.
    fn deploy_with(&self, version: &str, analysis: &str) -> (String, Value) {
        deploy_with(&self.web, version, analysis, || {
            let log = std::fs::read_to_string(self.web.fleet.dir.path().join("prometheus.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            let addr = format!("127.0.0.1:{}", self.prometheus.port);
            let targets = http(&addr, "/api/v1/targets").map(|(_, b)| b).unwrap_or_default();
            let series = http(&addr, "/api/v1/query?query=web_requests_total").map(|(_, b)| b).unwrap_or_default();
            format!("prometheus: {tail:#?}\ntargets: {targets}\nseries: {series}")
        })
    }

    /// Waits until Prometheus has a rate of the service's requests, as it
    /// will once it has scraped v1 a few times.
    fn wait_for_data(&self) {
        let addr = format!("127.0.0.1:{}", self.prometheus.port);
        wait_for("Prometheus to have a request rate", Duration::from_secs(60), || {
            let (_, body) = http(&addr, "/api/v1/query?query=sum(rate(web_requests_total%5B5s%5D))")?;
            let doc: Value = serde_json::from_str(&body).ok()?;
            doc["data"]["result"].as_array().filter(|r| !r.is_empty()).map(|_| ())
        });
    }

    fn rollout(&self) -> Value {
        newest_rollout(&self.web)
    }
}

/// The newest rollout of `web`'s fleet, as `rollout status -o json` shows it.
fn newest_rollout(web: &Web) -> Value {
    let list = json(&web.fleet, &["rollouts", "-o", "json"]);
    let id = list[0]["id"].as_u64().unwrap().to_string();
    json(&web.fleet, &["rollout", "status", &id, "-o", "json"])
}

/// Builds `version` of [`SERVER`] and deploys it over `web` with
/// `analysis` (the strategy and the analysis, as a deploy's keys), waiting
/// for the run to end; a run that does not end reports the rollout and
/// what `more` says.
fn deploy_with(web: &Web, version: &str, analysis: &str, more: impl Fn() -> String) -> (String, Value) {
    let pipeline = format!(
        "name: web\njobs:\n  build:\n    artifacts: {{paths: [dist]}}\n    steps:\n      - run: mkdir -p dist && cp \
         {script} dist/server.py && echo {version} > dist/VERSION\n  deploy:\n    needs: [build]\n    deploy:\n      \
         environment: staging\n      artifact: build:dist\n      service:\n        name: web\n        command: \
         python3 server.py\n        port: {port}\n        health: {{http: /healthz, interval: 1s, healthy_after: 1, \
         timeout: 8s}}\n{analysis}      progress_deadline: 3m\n",
        script = web.script,
        port = web.port,
    );
    let run = web.fleet.submit(&format!("{version}.yml"), &pipeline);
    let status = wait_for_or_report(
        &format!("run {run} ({version}) to end"),
        Duration::from_secs(180),
        || {
            let status = json(&web.fleet, &["status", &run, "-o", "json"]);
            matches!(status["state"].as_str(), Some("succeeded" | "failed" | "cancelled")).then_some(status)
        },
        || format!("{:#}\n{}", newest_rollout(web), more()),
    );
    (run, status)
}

#[test]
fn a_canary_that_passes_its_analysis_promotes_on_its_own() {
    let s = Setup::start("analysis-pass");
    let (_, status) = s.deploy("v1", None);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    s.wait_for_data();
    let (_, status) = s.deploy("v2", Some(&s.prometheus.address()));
    let r = s.rollout();
    assert_eq!(status["state"], "succeeded", "{status:#}\n{r:#}");
    assert_eq!(s.web.versions(), vec![Some("v2".to_string()); 2]);
    // Both steps measured three times, none a failure (one may find no
    // data yet, which its inconclusive_limit of 1 allows).
    let m = r["measurements"].as_array().unwrap();
    for step in [0, 1] {
        let of_step: Vec<&Value> = m.iter().filter(|m| m["step"] == step).collect();
        assert_eq!(of_step.len(), 3, "step {step}: {r:#}");
        let good = of_step.iter().filter(|m| m["outcome"] == "successful" && m["value"] == "0").count();
        assert!(good >= 2 && of_step.iter().all(|m| m["outcome"] != "failed"), "{r:#}");
    }
    let shown = text(&s.web.fleet.drover(&["rollout", "status", &r["id"].to_string()]).stdout);
    assert!(shown.contains("analysis:") && shown.contains("error-rate"), "{shown}");
}

#[test]
fn a_canary_whose_error_rate_rises_fails_its_analysis_and_goes_back() {
    let s = Setup::start("analysis-fail");
    let (_, status) = s.deploy("v1", None);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    s.wait_for_data();
    // The figure: from the canary serving its errors to every node back on
    // v1, measuring every 5s.
    let (status, r, took) = std::thread::scope(|scope| {
        let watch = scope.spawn(|| {
            let bad = wait_for("the canary to serve", Duration::from_secs(120), || {
                s.web.versions().iter().any(|v| v.as_deref() == Some("errors-v2")).then(Instant::now)
            });
            wait_for("every node back on v1", Duration::from_secs(120), || {
                (s.web.versions() == vec![Some("v1".to_string()); 2]).then_some(())
            });
            bad.elapsed()
        });
        let (_, status) = s.deploy_every("errors-v2", Some(&s.prometheus.address()), "5s");
        let r = s.rollout();
        (status, r, watch.join().unwrap())
    });
    assert_eq!(status["state"], "failed", "{status:#}\n{r:#}");
    assert_eq!(r["phase"], "rolled_back", "{r:#}");
    assert!(r["message"].as_str().unwrap().contains("metric error-rate:"), "{r:#}");
    assert!(r["measurements"].as_array().unwrap().iter().any(|m| m["outcome"] == "failed"), "{r:#}");
    assert_eq!(s.web.versions(), vec![Some("v1".to_string()); 2], "every node back on v1");
    eprintln!(
        "analysis: the canary's errors -> every node back on v1 in {:.1}s (initial delay 5s, interval 5s)",
        took.as_secs_f64()
    );
}

#[test]
fn an_analysis_whose_prometheus_cannot_be_reached_pauses_for_a_person() {
    let s = Setup::start("analysis-unreachable");
    let (_, status) = s.deploy("v1", None);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let gone = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let fleet = &s.web.fleet;
    let run = {
        let s2 = &s;
        let address = gone.clone();
        std::thread::scope(|scope| {
            let waiting = scope.spawn(move || s2.deploy("v2", Some(&address)));
            let r = wait_for_or_report(
                "the rollout to pause on an inconclusive analysis",
                Duration::from_secs(60),
                || Some(s.rollout()).filter(|r| r["phase"] == "paused"),
                || format!("{:#}", s.rollout()),
            );
            assert!(r["message"].as_str().unwrap().contains("inconclusive"), "{r:#}");
            let m = r["measurements"].as_array().unwrap();
            assert!(m.iter().all(|m| m["outcome"] == "error"), "{r:#}");
            assert!(m[0]["message"].as_str().unwrap().contains("cannot reach"), "{r:#}");
            assert_eq!(s.web.versions().iter().filter(|v| v.as_deref() == Some("v2")).count(), 1, "the canary holds");
            let out = fleet.drover(&["rollout", "abort", &r["id"].to_string()]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            waiting.join().unwrap()
        })
    };
    assert_eq!(run.1["state"], "failed", "{:#}", run.1);
    wait_for("every node back on v1", Duration::from_secs(60), || {
        (s.web.versions() == vec![Some("v1".to_string()); 2]).then_some(())
    });
}

#[test]
fn a_query_with_no_data_is_inconclusive_not_a_failure() {
    let s = Setup::start("analysis-no-data");
    let (_, status) = s.deploy("v1", None);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let address = s.prometheus.address();
    let run = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| s.deploy_query("v2", Some((&address, "sum(no_such_metric_total)")), "1s"));
        let r = wait_for_or_report(
            "the rollout to pause on an inconclusive analysis",
            Duration::from_secs(60),
            || Some(s.rollout()).filter(|r| r["phase"] == "paused"),
            || format!("{:#}", s.rollout()),
        );
        let m = r["measurements"].as_array().unwrap();
        // Each measurement could not be taken (no data), which counts
        // toward the inconclusive limit, never as a failure.
        assert!(!m.is_empty() && m.iter().all(|m| m["outcome"] == "error"), "{r:#}");
        assert!(m.iter().all(|m| m["message"].as_str().unwrap().contains("returned no data")), "{r:#}");
        assert_eq!(s.web.versions().iter().filter(|v| v.as_deref() == Some("v2")).count(), 1, "the canary holds");
        assert!(r["message"].as_str().unwrap().contains("inconclusive"), "{r:#}");
        let out = s.web.fleet.drover(&["rollout", "abort", &r["id"].to_string()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        waiting.join().unwrap()
    });
    assert_eq!(run.1["state"], "failed", "{:#}", run.1);
}

#[test]
fn a_background_analysis_sends_a_canary_back_during_its_pause() {
    let s = Setup::start("analysis-background");
    let (_, status) = s.deploy("v1", None);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    s.wait_for_data();
    let query = "sum(rate(web_requests_total{code=\"500\"}[5s])) / sum(rate(web_requests_total[5s]))";
    let address = s.prometheus.address();
    // The canary pauses for ten minutes; only the background analysis can
    // end it sooner.
    let steps = "[{nodes: 1}, {pause: 10m}, {nodes: 100%}]";
    let (_, status) = s.deploy_analysed("errors-v2", Some((&address, query)), "2s", steps, "background");
    let r = s.rollout();
    assert_eq!(status["state"], "failed", "{status:#}\n{r:#}");
    assert!(r["message"].as_str().unwrap().contains("the background analysis failed: metric error-rate"), "{r:#}");
    let m = r["measurements"].as_array().unwrap();
    assert!(m.iter().all(|m| m["background"] == true) && m.iter().any(|m| m["outcome"] == "failed"), "{r:#}");
    assert_eq!(s.web.versions(), vec![Some("v1".to_string()); 2], "every node back on v1");
    let shown = text(&s.web.fleet.drover(&["rollout", "status", &r["id"].to_string()]).stdout);
    assert!(shown.contains("in the background (run 1):"), "{shown}");
}

#[test]
fn an_analysis_that_names_instance_metadata_is_refused_and_pauses() {
    let s = Setup::start("analysis-metadata");
    let (_, status) = s.deploy("v1", None);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| s.deploy_query("v2", Some(("http://169.254.169.254", "up")), "1s"));
        let r = wait_for_or_report(
            "the rollout to pause on a refused provider",
            Duration::from_secs(60),
            || Some(s.rollout()).filter(|r| r["phase"] == "paused"),
            || format!("{:#}", s.rollout()),
        );
        let m = r["measurements"].as_array().unwrap();
        assert!(!m.is_empty() && m.iter().all(|m| m["outcome"] == "error"), "{r:#}");
        let why = m[0]["message"].as_str().unwrap();
        assert!(why.contains("refused to call http://169.254.169.254") && why.contains("link-local"), "{r:#}");
        let out = s.web.fleet.drover(&["rollout", "abort", &r["id"].to_string()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        waiting.join().unwrap()
    });
}

#[test]
fn a_baseline_comparison_tells_a_slower_canary_from_noise() {
    let s = Setup::start("analysis-baseline");
    let (_, status) = s.deploy("v1", None);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    s.wait_for_data();
    let compared = format!(
        "      strategy: {{canary: {{steps: [{{nodes: 1}}, {{nodes: 100%}}]}}}}\n      analysis:\n        metrics:\n          \
         - name: latency\n            prometheus:\n              address: \"{}\"\n              query: 'sum by (node) \
         (rate(web_request_seconds_sum[5s])) / sum by (node) (rate(web_request_seconds_count[5s]))'\n            \
         compare: {{baseline: {{node_label: node, worse: higher}}}}\n            initial_delay: 6s\n            interval: \
         1s\n            count: 8\n",
        s.prometheus.address()
    );
    // As fast as v1: the noise between two nodes passes.
    let (run, status) = s.deploy_with("v2", &compared);
    let r = s.rollout();
    assert_eq!(status["state"], "succeeded", "{status:#}\n{r:#}");
    // The baseline, web-2, started v1 afresh as the canary started v2.
    let log = text(&s.web.fleet.drover(&["logs", &run, "deploy"]).stdout);
    let v1 = r["nodes"][1]["rollback_to"].as_str().unwrap().to_owned();
    assert!(log.contains(&format!("── baseline: web-2 starts {v1} afresh ──")), "{log}");
    assert!(log.contains(&format!("── baseline: web-2 started {v1} afresh ──")), "{log}");
    let fresh = s.web.fleet.dir.path().join(format!("services/web-2/web/supervisors/{v1}.1"));
    assert!(fresh.is_dir(), "a start of its own: {}", fresh.display());
    let step0: Vec<&Value> = r["measurements"].as_array().unwrap().iter().filter(|m| m["step"] == 0).collect();
    assert_eq!(step0.len(), 8, "{r:#}");
    assert!(step0.iter().all(|m| m["value"].as_str().unwrap().starts_with("canary ")), "{r:#}");

    // Slower by 40 ms a request: worse than its baseline, and back.
    let (_, status) = s.deploy_with("slow-v3", &compared);
    let r = s.rollout();
    assert_eq!(status["state"], "failed", "{status:#}\n{r:#}");
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("metric latency: worse than its baseline"), "{r:#}");
    assert_eq!(s.web.versions(), vec![Some("v2".to_string()); 2], "back on v2");
}

#[test]
fn an_exec_metric_runs_on_a_canary_node_and_its_exit_code_decides() {
    let web = Web::start("analysis-exec", 2);
    std::fs::write(&web.script, SERVER).unwrap();
    let dir = web.fleet.dir.path();
    let (exit_code, ran) = (dir.join("exit-code"), dir.join("probes"));
    std::fs::write(&exit_code, "0").unwrap();
    let (_, status) = deploy_with(&web, "v1", "      strategy: {rolling: {max_parallel: 2}}\n", String::new);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    // The command says where it ran (the agent sets DROVER_NODE in a clean
    // environment) and from which release, and exits as the test says.
    let analysis = format!(
        "      strategy: {{canary: {{steps: [{{nodes: 1}}, {{nodes: 100%}}]}}}}\n      analysis:\n        metrics:\n          \
         - name: smoke\n            exec: {{command: 'echo \"$DROVER_NODE $DROVER_HOOK $(cat VERSION)\" >> {ran}; exit \
         $(cat {code})', timeout: 20s}}\n            interval: 1s\n            count: 2\n",
        ran = ran.display(),
        code = exit_code.display(),
    );
    let (run, status) = deploy_with(&web, "v2", &analysis, String::new);
    let r = newest_rollout(&web);
    assert_eq!(status["state"], "succeeded", "{status:#}\n{r:#}");
    assert_eq!(web.versions(), vec![Some("v2".to_string()); 2]);
    let measured: Vec<&Value> = r["measurements"].as_array().unwrap().iter().collect();
    assert!(measured.len() >= 2 && measured.iter().all(|m| m["value"] == "0" && m["outcome"] == "successful"), "{r:#}");
    let lines = std::fs::read_to_string(&ran).unwrap();
    let canary = r["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).next();
    let first = lines.lines().next().unwrap_or_default().to_owned();
    assert_eq!(Some(first), canary.map(|node| format!("{node} analysis v2")), "ran on the canary, from v2:\n{lines}");
    let log = text(&web.fleet.drover(&["logs", &run, "deploy"]).stdout);
    assert!(log.contains("── analysis smoke on ") && log.contains(": exit code 0 ──"), "{log}");

    // A command that exits 3 fails the canary, which goes back.
    std::fs::write(&exit_code, "3").unwrap();
    let (_, status) = deploy_with(&web, "v3", &analysis, String::new);
    let r = newest_rollout(&web);
    assert_eq!(status["state"], "failed", "{status:#}\n{r:#}");
    assert_eq!(r["phase"], "rolled_back", "{r:#}");
    let failed = r["measurements"].as_array().unwrap().iter().find(|m| m["outcome"] == "failed");
    assert_eq!(failed.map(|m| m["value"].clone()), Some(Value::from("3")), "{r:#}");
    assert_eq!(web.versions(), vec![Some("v2".to_string()); 2], "every node back on v2");
}
