//! A fleet of the real binaries: certificates as `drover certs init` and
//! `drover certs issue-agent` make them, coordinators (on the embedded store
//! or a shared etcd) and agents started as child processes, and the CLI run
//! against them, with waits for runs, agents and leaders.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Etcd, Proc, TempDir, bin, text, wait_for};

/// How to start an agent ([`Fleet::start_agent`]); the defaults are no
/// labels, one slot, every coordinator, and work/NAME in the test directory.
#[derive(Default)]
pub struct AgentSpec<'a> {
    pub labels: &'a str,
    pub slots: u32,
    /// Coordinator URLs, comma-separated.
    pub urls: Option<&'a str>,
    pub work_dir: Option<&'a Path>,
    /// Flags after the harness' own.
    pub extra: &'a [&'a str],
    pub envs: &'a [(&'a str, &'a str)],
}

pub struct Fleet {
    pub dir: TempDir,
    /// What `drover certs init --dir` was given: ca/, coordinator/, admin/
    /// and agents/NAME/.
    pub certs: PathBuf,
    /// The admin's TLS directory (certs/admin), which the CLI uses.
    pub tls: PathBuf,
    /// The labels of each agent certificate the harness issued, by name.
    issued: Mutex<HashMap<String, String>>,
    /// Each coordinator's address (host:port), by index.
    pub addrs: Vec<String>,
    pub coordinators: Vec<Option<Proc>>,
    /// Each coordinator's metrics address, when started with
    /// `--metrics-listen`.
    pub metrics: Vec<Option<String>>,
    /// Each coordinator's webhook address, when started with
    /// `--webhook-listen`.
    pub webhooks: Vec<Option<String>>,
    /// Each coordinator's web UI address, when started with --ui-listen.
    pub ui: Vec<Option<String>>,
    pub agents: Vec<Proc>,
    /// Extra flags for every coordinator start.
    pub coordinator_args: Vec<String>,
    /// Environment variables of the coordinators (an S3 endpoint's).
    pub coordinator_env: Vec<(String, String)>,
}

impl Fleet {
    /// Certificates and a coordinator on the embedded store, port 0, with a
    /// short lease.
    pub fn start(tag: &str) -> Fleet {
        Fleet::start_with(tag, &[])
    }

    /// Like [`Fleet::start`], with extra coordinator flags.
    pub fn start_with(tag: &str, coordinator_args: &[&str]) -> Fleet {
        Fleet::start_with_env(tag, coordinator_args, &[])
    }

    /// Like [`Fleet::start_with`], with environment variables for the
    /// coordinator too.
    pub fn start_with_env(tag: &str, coordinator_args: &[&str], env: &[(&str, &str)]) -> Fleet {
        let mut fleet = Fleet::empty(tag, coordinator_args);
        fleet.coordinator_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        fleet.start_coordinator(0, "127.0.0.1:0");
        fleet
    }

    /// `n` coordinators sharing one etcd and one `--blob-dir` (blobs in the
    /// test directory).
    pub fn start_ha(tag: &str, etcd: &Etcd, n: usize) -> Fleet {
        Fleet::start_ha_with(tag, etcd, n, &[])
    }

    /// Like [`Fleet::start_ha`], with extra coordinator flags after the etcd
    /// ones.
    pub fn start_ha_with(tag: &str, etcd: &Etcd, n: usize, coordinator_args: &[&str]) -> Fleet {
        let endpoints = etcd.endpoints();
        let prefix = format!("/drover-{tag}");
        let mut args = vec!["--etcd", &endpoints, "--etcd-prefix", &prefix];
        args.extend_from_slice(coordinator_args);
        let mut fleet = Fleet::empty(tag, &args);
        // Coordinators on one etcd share one blob directory, as they must
        // in production, so any of them serves any log (unless the test
        // gives its own).
        if !fleet.coordinator_args.iter().any(|a| a == "--blob-dir") {
            let blobs = fleet.dir.path().join("blobs").to_str().expect("utf-8 path").to_string();
            fleet.coordinator_args.extend(["--blob-dir".to_string(), blobs]);
        }
        for i in 0..n {
            fleet.start_coordinator(i, "127.0.0.1:0");
        }
        fleet
    }

    fn empty(tag: &str, coordinator_args: &[&str]) -> Fleet {
        let dir = TempDir::new(tag);
        let certs = dir.path().join("certs");
        let out = Command::new(bin("drover"))
            .args(["certs", "init", "--dir"])
            .arg(&certs)
            .output()
            .expect("run drover certs init");
        assert!(out.status.success(), "certs init: {}", String::from_utf8_lossy(&out.stderr));
        let coordinator_args = coordinator_args.iter().map(|s| s.to_string()).collect();
        Fleet {
            dir,
            tls: certs.join("admin"),
            certs,
            issued: Mutex::new(HashMap::new()),
            addrs: Vec::new(),
            coordinators: Vec::new(),
            metrics: Vec::new(),
            webhooks: Vec::new(),
            ui: Vec::new(),
            agents: Vec::new(),
            coordinator_args,
            coordinator_env: Vec::new(),
        }
    }

    /// Every coordinator's URL, comma-separated, as agents and the CLI take
    /// them.
    pub fn url(&self) -> String {
        self.addrs.iter().map(|a| format!("https://{a}")).collect::<Vec<_>>().join(",")
    }

    /// One coordinator's URL.
    pub fn url_of(&self, i: usize) -> String {
        format!("https://{}", self.addrs[i])
    }

    /// Starts coordinator `i` on `listen` (its data in data-{i}) and waits
    /// for its address line.
    pub fn start_coordinator(&mut self, i: usize, listen: &str) {
        let name = format!("coordinator-{i}");
        let log = self.dir.path().join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        // A short lease keeps the tests quick; a fleet whose extra flags set
        // its own (the benchmarks use the default) gets only that one, since
        // the coordinator refuses a flag given twice.
        let lease: &[&str] =
            if self.coordinator_args.iter().any(|a| a == "--lease-ttl") { &[] } else { &["--lease-ttl", "3s"] };
        let mut child = Command::new(bin("drover-coordinator"))
            .args(["--listen", listen])
            .args(lease)
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("data-{i}")))
            .arg("--tls-dir")
            .arg(self.coordinator_tls())
            .args(&self.coordinator_args)
            .envs(self.coordinator_env.iter().map(|(k, v)| (k, v)))
            .env("DROVER_LOG", "info,drover_coordinator=debug")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read coordinator stdout");
        let addr = line
            .trim()
            .strip_prefix("drover-coordinator listening on ")
            .unwrap_or_else(|| {
                panic!("unexpected coordinator output {line:?}: {}", std::fs::read_to_string(&log).unwrap_or_default())
            })
            .to_string();
        let metrics = self.coordinator_args.iter().any(|a| a == "--metrics-listen").then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read coordinator stdout");
            line.trim()
                .strip_prefix("metrics on http://")
                .and_then(|a| a.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("unexpected coordinator output {line:?}"))
                .to_string()
        });
        let webhooks = self.coordinator_args.iter().any(|a| a == "--webhook-listen").then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read coordinator stdout");
            line.trim()
                .strip_prefix("webhooks on https://")
                .and_then(|a| a.strip_suffix("/hooks/"))
                .unwrap_or_else(|| panic!("unexpected coordinator output {line:?}"))
                .to_string()
        });
        let ui = self.coordinator_args.iter().any(|a| a == "--ui-listen").then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read coordinator stdout");
            line.trim()
                .strip_prefix("web UI on https://")
                .and_then(|a| a.strip_suffix('/'))
                .unwrap_or_else(|| panic!("unexpected coordinator output {line:?}"))
                .to_string()
        });
        if self.addrs.len() <= i {
            self.addrs.resize(i + 1, String::new());
            self.coordinators.resize_with(i + 1, || None);
            self.metrics.resize(i + 1, None);
            self.webhooks.resize(i + 1, None);
            self.ui.resize(i + 1, None);
        }
        self.addrs[i] = addr;
        self.metrics[i] = metrics;
        self.webhooks[i] = webhooks;
        self.ui[i] = ui;
        self.coordinators[i] = Some(Proc { child, name, log });
    }

    /// The index of the coordinator that leads, per `drover cluster`.
    pub fn leader(&self) -> Option<usize> {
        let out = self.drover(&["cluster"]);
        let text = text(&out.stdout);
        let url = text.lines().find(|l| l.split_whitespace().nth(2) == Some("leader"))?.split_whitespace().nth(1)?;
        self.addrs.iter().position(|a| format!("https://{a}") == url)
    }

    pub fn wait_leader(&self) -> usize {
        wait_for("a leader", Duration::from_secs(30), || self.leader())
    }

    /// SIGKILLs coordinator `i`.
    pub fn kill_coordinator(&mut self, i: usize) {
        if let Some(mut p) = self.coordinators[i].take() {
            p.kill();
        }
    }

    pub fn coordinator(&self, i: usize) -> &Proc {
        self.coordinators[i].as_ref().expect("coordinator running")
    }

    /// Issues a certificate and starts an agent that knows every
    /// coordinator.
    /// A name starting with `prefix` that puts an agent given every
    /// coordinator's URL on coordinator `i` first: agents spread over the
    /// coordinators by name (`Targets::spread`).
    pub fn name_on(&self, i: usize, prefix: &str) -> String {
        let urls: Vec<String> = (0..self.addrs.len()).map(|k| self.url_of(k)).collect();
        (1..)
            .map(|k| format!("{prefix}{k}"))
            .find(|name| drover_client::targets::Targets::spread(urls.clone(), name).unwrap().in_turn() == urls[i])
            .unwrap()
    }

    pub fn agent(&mut self, name: &str, labels: &str, slots: u32) -> usize {
        self.start_agent(name, AgentSpec { labels, slots, ..AgentSpec::default() }).0
    }

    /// Starts an agent as `spec` says. With `--metrics-listen` among its
    /// extra flags (give it port 0) it also returns the metrics address the
    /// agent printed.
    pub fn start_agent(&mut self, name: &str, spec: AgentSpec<'_>) -> (usize, Option<String>) {
        let urls = spec.urls.map_or_else(|| self.url(), str::to_string);
        let work_dir = spec.work_dir.map_or_else(|| self.dir.path().join("work").join(name), Path::to_path_buf);
        let (labels, slots, extra, envs) = (spec.labels, spec.slots.max(1), spec.extra, spec.envs);
        self.ensure_agent_cert(name, labels);
        let log = self.dir.path().join(format!("agent-{name}.log"));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let with_metrics = extra.contains(&"--metrics-listen");
        let mut child = Command::new(bin("drover-agent"))
            .args(["--coordinator", &urls, "--name", name, "--labels", labels, "--slots", &slots.to_string()])
            .arg("--work-dir")
            .arg(&work_dir)
            .arg("--tls-dir")
            .arg(self.agent_tls(name))
            .args(extra)
            .env("DROVER_LOG", "info,drover_agent=debug")
            .envs(envs.iter().copied())
            .stdout(if with_metrics { Stdio::piped() } else { Stdio::null() })
            .stderr(stderr)
            .spawn()
            .expect("start agent");
        let stdout = child.stdout.take();
        let proc = Proc { child, name: name.to_string(), log };
        // The agent prints only this line on stdout; the pipe may close after.
        let metrics = stdout.map(|stdout| {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            line.trim()
                .strip_prefix("metrics on http://")
                .and_then(|a| a.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("unexpected agent output {line:?}: {}", proc.log_tail()))
                .to_string()
        });
        self.agents.push(proc);
        (self.agents.len() - 1, metrics)
    }

    /// Starts an agent that enrolls with a join token: it makes its own key
    /// in `tls_dir` (which the harness never touches) and asks the
    /// coordinator for a certificate, pinning its CA.
    pub fn start_enrolling_agent(&mut self, name: &str, tls_dir: &Path, token: &str, pin: &str) -> usize {
        let log = self.dir.path().join(format!("agent-{name}-{}.log", self.agents.len()));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let work_dir = self.dir.path().join("work").join(format!("{name}-{}", self.agents.len()));
        let child = Command::new(bin("drover-agent"))
            .args(["--coordinator", &self.url(), "--name", name, "--join-token", token, "--ca-pin", pin])
            .arg("--work-dir")
            .arg(&work_dir)
            .arg("--tls-dir")
            .arg(tls_dir)
            .env("DROVER_LOG", "info,drover_agent=debug")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start agent");
        self.agents.push(Proc { child, name: name.to_string(), log });
        self.agents.len() - 1
    }

    /// The coordinators' TLS directory (certs/coordinator).
    pub fn coordinator_tls(&self) -> PathBuf {
        self.certs.join("coordinator")
    }

    /// Agent `name`'s TLS directory, the bundle `drover certs issue-agent`
    /// made (certs/agents/NAME).
    pub fn agent_tls(&self, name: &str) -> PathBuf {
        self.certs.join("agents").join(name)
    }

    /// Makes sure agent `name` has a certificate with exactly `labels`, as
    /// the coordinator wants an agent's `--labels` within its certificate's:
    /// issued at the name's first start, and again when a later start asks
    /// for other labels. A bundle the harness did not issue (a test put it
    /// there) is used as it is.
    fn ensure_agent_cert(&self, name: &str, labels: &str) {
        let issued = self.issued.lock().expect("issued lock").get(name).cloned();
        match issued {
            Some(l) if l == labels => return,
            Some(_) => std::fs::remove_dir_all(self.agent_tls(name)).expect("remove the agent's old bundle"),
            None if self.agent_tls(name).exists() => return,
            None => {}
        }
        self.issue_agent_certs_with_labels(&[name.to_string()], labels);
        self.issued.lock().expect("issued lock").insert(name.to_string(), labels.to_string());
    }

    /// Issues agent certificates without labels for every name that has
    /// none yet; see [`Fleet::issue_agent_certs_with_labels`].
    pub fn issue_agent_certs(&self, names: &[String]) {
        self.issue_agent_certs_with_labels(names, "");
    }

    /// Issues agent certificates with `labels` (k=v,k=v) for every name
    /// that has none yet, each in its bundle ([`Fleet::agent_tls`]); agents
    /// started later under these names use them as they are, whatever
    /// labels they claim. One `drover certs issue-agent` per batch of 500
    /// names (thousands of names would overflow a command line).
    pub fn issue_agent_certs_with_labels(&self, names: &[String], labels: &str) {
        let missing: Vec<&String> = names.iter().filter(|n| !self.agent_tls(n).exists()).collect();
        for batch in missing.chunks(500) {
            let out = Command::new(bin("drover"))
                .args(["certs", "issue-agent"])
                .args(batch.iter().map(|n| n.as_str()))
                .arg("--dir")
                .arg(&self.certs)
                .args(["--labels", labels])
                .stdout(Stdio::null())
                .output()
                .expect("run drover certs issue-agent");
            assert!(out.status.success(), "issue-agent: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    /// Runs the CLI against this fleet.
    pub fn drover(&self, args: &[&str]) -> Output {
        self.drover_with_tls(&self.tls, args)
    }

    pub fn drover_with_tls(&self, tls: &Path, args: &[&str]) -> Output {
        let mut cmd = self.drover_command(args);
        cmd.env("DROVER_TLS_DIR", tls).stdin(Stdio::null()).output().expect("run drover")
    }

    /// The CLI against this fleet, to start as the test needs (in the
    /// background, on a terminal, in another directory).
    pub fn drover_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("drover"));
        cmd.args(args).env("DROVER_COORDINATOR", self.url()).env("DROVER_TLS_DIR", &self.tls);
        cmd
    }

    /// Writes a pipeline file into the test directory and submits it. A
    /// submit refused as unavailable (exit 3: the leader lost its 2 s
    /// election lease on a starved machine, and nothing was committed) is
    /// made again for up to 30 s, as an operator would.
    pub fn submit(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write pipeline");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = self.drover(&["run", path.to_str().expect("utf-8 path")]);
        while out.status.code() == Some(3) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            out = self.drover(&["run", path.to_str().expect("utf-8 path")]);
        }
        assert!(out.status.success(), "submit failed: {}{}", text(&out.stderr), self.logs());
        text(&out.stdout).trim().to_string()
    }

    pub fn status(&self, run: &str) -> serde_json::Value {
        let out = self.drover(&["status", run, "--json"]);
        assert!(out.status.success(), "status failed: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    pub fn job(&self, run: &str, job: &str) -> serde_json::Value {
        let status = self.status(run);
        status["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .find(|j| j["name"] == job)
            .cloned()
            .unwrap_or_else(|| panic!("no job {job} in {status}"))
    }

    /// Waits until the run has finished and returns its final status.
    pub fn wait_run(&self, run: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(run);
            if status["state"] != "running" {
                return status;
            }
            if Instant::now() > deadline {
                panic!("run {run} still running after {timeout:?}: {status:#}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `n` agents are connected.
    pub fn wait_agents(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.drover(&["agents"]);
            let listing = text(&out.stdout);
            let connected = listing.lines().filter(|l| l.split_whitespace().any(|w| w == "connected")).count();
            if connected >= n {
                return;
            }
            // An agent that exited on its own (not one a test killed) will
            // never connect: say why now.
            for a in &mut self.agents {
                if let Ok(Some(status)) = a.child.try_wait()
                    && status.code().is_some()
                {
                    panic!("agent {} exited ({status}) before connecting:\n{}", a.name, a.log_tail());
                }
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {n} connected agents; `drover agents`:\n{listing}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `drover agents` shows the agent as draining.
    pub fn wait_draining(&self, name: &str) {
        wait_for(&format!("{name} to show as draining"), Duration::from_secs(10), || {
            let out = self.drover(&["agents"]);
            text(&out.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name) && l.contains("draining"))
                .then_some(())
        });
    }

    /// Tails of every process log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in self.coordinators.iter().flatten().chain(self.agents.iter()) {
            s.push_str(&format!("\n--- {} ---\n{}\n", p.name, p.log_tail()));
        }
        s
    }
}
