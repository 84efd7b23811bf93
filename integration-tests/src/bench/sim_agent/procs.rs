//! Simulated agents in child processes of `drover-bench`, for a fleet
//! larger than one process may hold sockets for (each agent holds one, and
//! a process's open-file limit is a hard limit that only a privileged user
//! raises). [`Procs::start`] runs the agents' names in slices of at most
//! `per_process`, each slice a [`super::Swarm`] in `drover-bench
//! --swarm-child` ([`child_main`]); the parent only counts what the
//! children report.
//!
//! The protocol between them is lines on pipes. The parent writes the
//! child's agent names on its stdin, one a line, then an empty line, and
//! keeps stdin open: the child stops its agents (closing their sessions)
//! and exits when stdin reaches its end, so a parent that dies takes its
//! children with it. The child writes a status line on stdout every
//! [`STATUS_EVERY`]: `connected sessions failures last-failure`. Its
//! stderr is the parent's.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::BenchError;
use super::super::proc_stats;
use super::{ConnectWait, SimConfig, Swarm};

/// The hidden first argument that makes `drover-bench` a child swarm.
pub const CHILD_FLAG: &str = "--swarm-child";
/// How often a child reports.
const STATUS_EVERY: Duration = Duration::from_millis(200);
/// How long a child may take to close its sessions and exit once told.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What one child last reported, and whether it is gone.
#[derive(Debug, Default, Clone)]
struct Status {
    connected: usize,
    sessions: u64,
    failures: u64,
    last_failure: String,
    /// Its stdout ended: it exited (or closed it), which it must not do
    /// while the parent holds its stdin.
    gone: bool,
}

struct ChildSwarm {
    child: Child,
    /// Held open for as long as the child should run.
    stdin: Option<ChildStdin>,
    status: Arc<Mutex<Status>>,
}

/// Simulated agents spread over child processes; they run until this is
/// dropped.
pub struct Procs {
    children: Vec<ChildSwarm>,
}

impl Procs {
    /// Starts `names` as simulated agents like `config` with their bundles
    /// under `certs` (as [`Swarm::new`]), in `ceil(len / per_process)`
    /// children of equal share, which together connect at most
    /// `concurrent_connects` at a time.
    pub fn start(
        certs: &Path,
        config: &SimConfig,
        names: &[String],
        per_process: usize,
        concurrent_connects: usize,
    ) -> Result<Procs, BenchError> {
        if names.is_empty() || per_process == 0 {
            return Err(BenchError::new("a swarm of processes needs agents, and at least one agent a process"));
        }
        let count = names.len().div_ceil(per_process);
        let share = names.len().div_ceil(count);
        let exe =
            std::env::current_exe().map_err(|e| BenchError::new(format!("cannot find drover-bench itself: {e}")))?;
        let mut procs = Procs { children: Vec::with_capacity(count) };
        for slice in names.chunks(share) {
            let mut cmd = Command::new(&exe);
            cmd.arg(CHILD_FLAG)
                .arg("--certs")
                .arg(certs)
                .args(["--concurrency", &(concurrent_connects / count).max(1).to_string()])
                .args(["--slots", &config.slots.to_string()])
                .args(["--log-bytes", &config.log_bytes.to_string()])
                .args(["--labels", &config.labels_arg()]);
            for url in &config.urls {
                cmd.args(["--url", url]);
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| BenchError::new(format!("cannot start a child swarm {}: {e}", exe.display())))?;
            let mut stdin = child.stdin.take().ok_or_else(|| BenchError::new("a child swarm without stdin"))?;
            let stdout = child.stdout.take().ok_or_else(|| BenchError::new("a child swarm without stdout"))?;
            let status = Arc::new(Mutex::new(Status::default()));
            let seen = status.clone();
            std::thread::spawn(move || read_status(stdout, &seen));
            // Kept in `procs` before anything can fail, so that Drop stops it.
            procs.children.push(ChildSwarm { child, stdin: None, status });
            let mut list = slice.join("\n");
            list.push_str("\n\n");
            stdin
                .write_all(list.as_bytes())
                .map_err(|e| BenchError::new(format!("cannot tell a child swarm its agents: {e}")))?;
            if let Some(last) = procs.children.last_mut() {
                last.stdin = Some(stdin);
            }
        }
        Ok(procs)
    }

    /// How many child processes run the agents.
    pub fn processes(&self) -> usize {
        self.children.len()
    }

    fn statuses(&self) -> Vec<Status> {
        self.children.iter().map(|c| c.status.lock().map(|s| s.clone()).unwrap_or_default()).collect()
    }

    /// Agents whose current session has been welcomed, in all children.
    pub fn connected(&self) -> usize {
        self.statuses().iter().map(|s| s.connected).sum()
    }

    /// Sessions welcomed so far, reconnects included.
    pub fn sessions(&self) -> u64 {
        self.statuses().iter().map(|s| s.sessions).sum()
    }

    /// Failed connection attempts and broken sessions so far, and the latest
    /// reason any child gave.
    pub fn failures(&self) -> (u64, String) {
        let statuses = self.statuses();
        let last = statuses.iter().rev().find(|s| !s.last_failure.is_empty()).map(|s| s.last_failure.clone());
        (statuses.iter().map(|s| s.failures).sum(), last.unwrap_or_default())
    }

    /// Waits until at least `n` agents are connected; `progress` is called
    /// about every 5 seconds with the count so far. A child that exits
    /// fails the wait at once.
    pub fn wait_connected(
        &self,
        n: usize,
        deadline: Instant,
        mut progress: impl FnMut(usize),
    ) -> Result<(), BenchError> {
        let mut wait = ConnectWait::new(n, deadline, &format!(" in {} processes", self.processes()));
        loop {
            if let Some(i) = self.statuses().iter().position(|s| s.gone) {
                return Err(BenchError::new(format!("child swarm {i} exited early (its stderr is above)")));
            }
            if let Some(done) = wait.look(self.connected(), || self.failures(), &mut progress) {
                return done;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        // Closing stdin tells every child to close its sessions and exit.
        for c in &mut self.children {
            c.stdin = None;
        }
        let until = Instant::now() + STOP_GRACE;
        for c in &mut self.children {
            while Instant::now() < until && matches!(c.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }
}

/// Keeps `status` up to date with a child's status lines until its stdout
/// ends.
fn read_status(stdout: std::process::ChildStdout, status: &Mutex<Status>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let mut fields = line.splitn(4, ' ');
        let mut number = || fields.next().and_then(|f| f.parse::<u64>().ok());
        let (Some(connected), Some(sessions), Some(failures)) = (number(), number(), number()) else {
            eprintln!("drover-bench: a child swarm said {line:?}, not a status line");
            continue;
        };
        let last_failure = fields.next().unwrap_or_default().to_string();
        if let Ok(mut s) = status.lock() {
            *s = Status { connected: connected as usize, sessions, failures, last_failure, gone: false };
        }
    }
    if let Ok(mut s) = status.lock() {
        s.gone = true;
    }
}

/// What a child is told on its command line.
struct ChildArgs {
    certs: PathBuf,
    concurrency: usize,
    config: SimConfig,
}

fn parse_child(args: &[String]) -> Result<ChildArgs, BenchError> {
    let mut certs = None;
    let mut concurrency = 1;
    let mut config = SimConfig { urls: Vec::new(), slots: 1, log_bytes: 0, labels: Default::default() };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| BenchError::new(format!("{CHILD_FLAG}: {flag} needs a value")))?;
        let number = || value.parse::<usize>().map_err(|_| BenchError::new(format!("{CHILD_FLAG}: {flag} {value:?}")));
        match flag.as_str() {
            "--certs" => certs = Some(PathBuf::from(value)),
            "--concurrency" => concurrency = number()?,
            "--slots" => config.slots = number()? as u32,
            "--log-bytes" => config.log_bytes = number()?,
            "--url" => config.urls.push(value.clone()),
            "--labels" => {
                for pair in value.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| BenchError::new(format!("{CHILD_FLAG}: label {pair:?} is not k=v")))?;
                    config.labels.insert(k.to_string(), v.to_string());
                }
            }
            other => return Err(BenchError::new(format!("{CHILD_FLAG}: unknown argument {other:?}"))),
        }
    }
    let certs = certs.ok_or_else(|| BenchError::new(format!("{CHILD_FLAG} needs --certs")))?;
    Ok(ChildArgs { certs, concurrency, config })
}

/// `drover-bench --swarm-child ...`: runs the agents named on stdin until
/// stdin ends, reporting on stdout (see the module's header).
pub fn child_main(args: &[String]) -> Result<(), BenchError> {
    let ChildArgs { certs, concurrency, config } = parse_child(args)?;
    if let Err(e) = proc_stats::raise_fd_limit() {
        eprintln!("drover-bench: child swarm: {e}; keeping the current open-file limit");
    }
    let mut input = std::io::stdin().lock();
    let mut names = Vec::new();
    loop {
        let mut line = String::new();
        let read = input.read_line(&mut line).map_err(|e| BenchError::new(format!("child swarm stdin: {e}")))?;
        let name = line.trim();
        if read == 0 || name.is_empty() {
            break;
        }
        names.push(name.to_string());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::new(format!("child swarm: cannot start the tokio runtime: {e}")))?;
    let mut swarm = Swarm::new(rt.handle().clone(), &certs, config, concurrency)?;
    for name in &names {
        swarm.spawn(name)?;
    }
    // The parent closes stdin to stop us (or dies, which closes it too).
    // Stdin's buffer is the process's, so what `input` read ahead is not lost.
    drop(input);
    let (stop_tx, stop) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = stop_tx.send(());
    });
    let mut out = std::io::stdout().lock();
    loop {
        let (failures, last) = swarm.failures();
        let last = last.replace(['\n', '\r'], " ");
        let line = format!("{} {} {failures} {last}\n", swarm.connected(), swarm.sessions());
        if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
            break;
        }
        match stop.recv_timeout(STATUS_EVERY) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(swarm);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
