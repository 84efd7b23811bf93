//! The test harness: temporary directories, the real binaries started as
//! child processes on port 0, and waiting for conditions with a deadline.
//!
//! Every process is killed when its handle drops, so a failing test leaves
//! nothing running. Each process's stderr goes to a file in the test's
//! directory, and the file's tail is printed when a wait times out.
//!
//! Certificates are laid out as `drover certs init` makes them for a real
//! deployment: the coordinator, the CLI and each agent get their own
//! directory, and each agent's certificate carries the labels it is started
//! with.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A binary of the workspace. A test executable lives in
/// target/<profile>/deps and a binary such as the benchmark in
/// target/<profile>; the binaries it needs are in target/<profile>.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let here = exe.parent().expect("exe dir");
    let dir = if here.ends_with("deps") { here.parent().expect("target dir") } else { here };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (the README's test command does)",
        path.display()
    );
    path
}

/// A directory removed when dropped (unless DROVER_KEEP_TEST_DIRS is set).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "drover-e2e-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("DROVER_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    /// Sends a signal, e.g. SIGSTOP to simulate a partition.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every 20 ms until it returns Some, or panics after `timeout`
/// with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, cond: impl FnMut() -> Option<T>) -> T {
    wait_for_or_report(what, timeout, cond, String::new)
}

/// Like [`wait_for`]; on timeout the panic also carries what `report`
/// returns then (e.g. what is still running, or a process's stderr).
pub fn wait_for_or_report<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Option<T>,
    report: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", report());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a program that ran to its end left.
pub struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the workspace binary `name` with `args` to its end, its output in
/// files in `dir`; kills it and fails the test (with its stderr) if it runs
/// past `timeout`, so a regression cannot hang the suite.
pub fn run_to_end(dir: &Path, name: &str, args: &[&std::ffi::OsStr], timeout: Duration) -> Finished {
    let (out, err) = (dir.join(format!("{name}.stdout")), dir.join(format!("{name}.stderr")));
    let child = Command::new(bin(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create stdout file"))
        .stderr(std::fs::File::create(&err).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    // Killed when this returns or panics.
    let mut proc = Proc { child, name: name.into(), log: err.clone() };
    let status = wait_for_or_report(
        &format!("{name} to finish"),
        timeout,
        || proc.child.try_wait().expect("wait for the child"),
        || std::fs::read_to_string(&err).unwrap_or_default(),
    );
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    Finished { status, stdout: read(&out), stderr: read(&err) }
}

/// GET over plain HTTP/1.1 (a metrics endpoint); returns (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Picks a free TCP port on 127.0.0.1 for a program that cannot bind port 0
/// and report it (etcd), or for a port that must stay dead.
///
/// The port comes from below the kernel's ephemeral range, so no outgoing
/// connection and no `bind(0)` of a parallel test can take it between this
/// call and the program's bind, nor while a member is down for a restart.
/// Each port is handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Start at a spot that differs between test processes.
    let floor = 10_000u16.min(low / 2);
    let span = low - floor;
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let mut port = next.unwrap_or_else(|| floor + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        let candidate = port;
        port = if port + 1 >= low { floor } else { port + 1 };
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            *next = Some(port);
            return candidate;
        }
    }
    panic!("no free port between {floor} and {low}");
}

/// A real etcd cluster of one or more members on free ports, each with its
/// own data directory. Members can be killed and restarted on the same ports
/// and data.
pub struct Etcd {
    dir: TempDir,
    members: Vec<EtcdMember>,
}

struct EtcdMember {
    name: String,
    client: u16,
    peer: u16,
    proc: Option<Proc>,
}

impl Etcd {
    pub fn start(tag: &str, n: usize) -> Etcd {
        let etcd = which("etcd").unwrap_or_else(|| {
            panic!("etcd is not installed: `apt-get install etcd-server` (the README's test command does)")
        });
        let dir = TempDir::new(&format!("etcd-{tag}"));
        let members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember { name: format!("m{i}"), client: free_port(), peer: free_port(), proc: None })
            .collect();
        let mut etcd_cluster = Etcd { dir, members };
        for i in 0..n {
            etcd_cluster.spawn(i, &etcd);
        }
        for i in 0..n {
            etcd_cluster.wait_healthy(i);
        }
        etcd_cluster
    }

    fn spawn(&mut self, i: usize, etcd: &Path) {
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect();
        let m = &self.members[i];
        let log = self.dir.path().join(format!("{}.log", m.name));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("etcd log");
        let child = Command::new(etcd)
            .args(["--name", &m.name, "--data-dir"])
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", m.client)])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", m.client)])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-token", "drover-test"])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start etcd");
        let name = m.name.clone();
        self.members[i].proc = Some(Proc { child, name, log });
    }

    fn wait_healthy(&self, i: usize) {
        let port = self.members[i].client;
        wait_for(&format!("etcd member {i} to be healthy"), Duration::from_secs(30), || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            body.contains("\"health\":\"true\"").then_some(())
        });
    }

    /// The client URLs, comma-separated, for `--etcd`.
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client)).collect::<Vec<_>>().join(",")
    }

    /// Calls etcd's JSON gateway on the first member that answers.
    fn gateway(&self, path: &str, body: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        for m in &self.members {
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", m.client)) else { continue };
            let request = format!(
                "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut resp = String::new();
            if s.write_all(request.as_bytes()).is_err() || s.read_to_string(&mut resp).is_err() {
                continue;
            }
            if let Some(start) = resp.find('{') {
                return serde_json::from_str(&resp[start..]).expect("etcd answers JSON");
            }
        }
        panic!("no etcd member answered {path}");
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        let v = self.gateway("/v3/kv/range", r#"{"key":"AA=="}"#);
        v["header"]["revision"].as_str().and_then(|r| r.parse().ok()).expect("a revision")
    }

    /// The size of the database file of the first member that answers, in
    /// bytes.
    pub fn db_size(&self) -> u64 {
        let v = self.gateway("/v3/maintenance/status", "{}");
        v["dbSize"].as_str().and_then(|s| s.parse().ok()).expect("a dbSize")
    }

    /// Whether the history at `revision` is gone (compacted).
    pub fn is_compacted(&self, revision: u64) -> bool {
        let v = self.gateway("/v3/kv/range", &format!(r#"{{"key":"AA==","revision":"{revision}"}}"#));
        v.to_string().contains("compacted")
    }

    /// Compacts the history up to the current revision.
    pub fn compact(&self) {
        let rev = self.revision();
        self.gateway("/v3/kv/compaction", &format!(r#"{{"revision":"{rev}","physical":true}}"#));
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill();
        }
    }

    /// Starts member `i` again on its ports and data, and waits for it.
    pub fn restart(&mut self, i: usize) {
        let etcd = which("etcd").expect("etcd");
        self.spawn(i, &etcd);
        self.wait_healthy(i);
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

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
    pub agents: Vec<Proc>,
    /// Extra flags for every coordinator start.
    pub coordinator_args: Vec<String>,
}

impl Fleet {
    /// Certificates and a coordinator on the embedded store, port 0, with a
    /// short lease.
    pub fn start(tag: &str) -> Fleet {
        Fleet::start_with(tag, &[])
    }

    /// Like [`Fleet::start`], with extra coordinator flags.
    pub fn start_with(tag: &str, coordinator_args: &[&str]) -> Fleet {
        let mut fleet = Fleet::empty(tag, coordinator_args);
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
            agents: Vec::new(),
            coordinator_args,
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
        if self.addrs.len() <= i {
            self.addrs.resize(i + 1, String::new());
            self.coordinators.resize_with(i + 1, || None);
            self.metrics.resize(i + 1, None);
        }
        self.addrs[i] = addr;
        self.metrics[i] = metrics;
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
        Command::new(bin("drover"))
            .args(args)
            .env("DROVER_COORDINATOR", self.url())
            .env("DROVER_TLS_DIR", tls)
            .stdin(Stdio::null())
            .output()
            .expect("run drover")
    }

    /// Writes a pipeline file into the test directory and submits it.
    pub fn submit(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write pipeline");
        let out = self.drover(&["run", path.to_str().expect("utf-8 path")]);
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

/// Whether a process runs. A zombie counts as gone: it has exited, and
/// whoever adopted it may not have reaped it yet.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// The pid of an agent's step watcher: its child started as
/// `drover-agent __watch-steps` (see drover_agent::watch). Tests that need
/// an agent's steps to outlive it (leftovers) stop it first.
pub fn step_watcher(agent: &Proc) -> Option<i32> {
    let agent = agent.child.id().to_string();
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).find(|pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        ppid.as_deref() == Some(agent.as_str())
            && cmdline.split(|b| *b == 0).nth(1) == Some(b"__watch-steps".as_slice())
    })
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads a marker file that steps append lines to.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// A tmpfs of `size` (as mount takes it: `5m`) mounted at `path`, for tests
/// of full disks; unmounted when dropped. Mounting needs root
/// (CAP_SYS_ADMIN): the error says why it failed, for a test to skip.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("cannot make {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() { Ok(Tmpfs(path.to_path_buf())) } else { Err(text(&out.stderr)) }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
