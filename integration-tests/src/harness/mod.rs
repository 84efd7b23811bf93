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
//!
//! The pieces live in submodules, re-exported here: [`Etcd`] and
//! [`free_port`] in `etcd`, [`Fleet`] and [`AgentSpec`] in `fleet`, and
//! [`Tmpfs`] in `tmpfs`; `hook::Hook`, a webhook receiver; `browser::Browser`,
//! headless Chromium over WebDriver for the web UI. This module keeps what they all use: [`bin`],
//! [`TempDir`], [`Proc`], the waits, and small text helpers.

pub mod browser;
mod etcd;
mod fleet;
pub mod hook;
pub mod pty;
pub mod sshd;
mod tmpfs;

pub use etcd::{Etcd, free_port};
pub use fleet::{AgentSpec, Fleet};
pub use tmpfs::Tmpfs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

impl Finished {
    /// `key` of each JSON line on stdout (as JSON text: strings quoted),
    /// for the benchmarks, which print one figure per line.
    pub fn field(&self, key: &str) -> Vec<String> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")[key].to_string())
            .collect()
    }
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
