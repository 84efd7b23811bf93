//! A service's health on one node: probes (HTTP, TCP, a command) and the
//! rule that turns their results into healthy or unhealthy.
//!
//! **The rule** ([`Tracker`], pure): a service becomes healthy after
//! `healthy_after` passes in a row, and unhealthy after `unhealthy_after`
//! failures in a row; anything in between changes nothing. So a check that
//! flaps (pass, fail, pass, ...) neither promotes a release nor rolls it
//! back: the gate's own deadline decides ([`until_healthy`]), and a healthy
//! service that flaps stays healthy.
//!
//! **The probes** ([`Probe`]), each bounded by the policy's `timeout`:
//!
//! - `Http { port, path }`: `GET path` on 127.0.0.1:port, HTTP/1.1 with
//!   `Connection: close`; a 2xx or 3xx status passes. The path is the
//!   pipeline's (checked there to start with `/`); one with a control
//!   character or a space is refused here too, so it can never split the
//!   request.
//! - `Tcp { port }`: a connection to 127.0.0.1:port is accepted.
//! - `Exec { command, dir }`: `bash -c command` in `dir`, with a cleared
//!   environment but for `PATH`, `PORT` and what the caller gives, in a
//!   process group of its own that is killed at the timeout; exit 0 passes.
//!   With a `user` (the agent's `--run-as`) it runs as that user, as the
//!   service does.
//!
//! Nothing here knows about rollouts: the deploy executor's health gate
//! ([`until_healthy`]) decides an install, and its continuous monitor of
//! each live release reports the transitions a [`Tracker`] finds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::runas::StepUser;

/// The most bytes of an HTTP answer read to find its status line.
const MAX_STATUS_BYTES: usize = 1024;
/// The `PATH` of an exec probe.
const PROBE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Http { port: u16, path: String },
    Tcp { port: u16 },
    Exec { command: String, dir: PathBuf, env: BTreeMap<String, String>, port: u16, user: Option<StepUser> },
}

/// How often, how long each probe may take, and how many results in a row
/// count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub interval: Duration,
    pub timeout: Duration,
    /// Passes in a row that make it healthy; at least 1.
    pub healthy_after: u32,
    /// Failures in a row that make it unhealthy; at least 1.
    pub unhealthy_after: u32,
}

/// What the results so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not enough results in a row either way yet.
    Unknown,
    Healthy,
    Unhealthy,
}

/// Consecutive results, and what they have made of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    policy: Policy,
    passes: u32,
    failures: u32,
    health: Health,
}

impl Tracker {
    pub fn new(policy: Policy) -> Tracker {
        Tracker { policy, passes: 0, failures: 0, health: Health::Unknown }
    }

    /// One that starts healthy: the release has just passed its health
    /// gate, so it takes `unhealthy_after` failures in a row to change it.
    pub fn healthy(policy: Policy) -> Tracker {
        Tracker { policy, passes: 0, failures: 0, health: Health::Healthy }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Takes one result; returns the new health when it changed.
    pub fn observe(&mut self, passed: bool) -> Option<Health> {
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
        }
        let next = if self.passes >= self.policy.healthy_after.max(1) {
            Health::Healthy
        } else if self.failures >= self.policy.unhealthy_after.max(1) {
            Health::Unhealthy
        } else {
            self.health
        };
        (next != self.health).then(|| {
            self.health = next;
            next
        })
    }
}

/// Runs `probe` once: `Ok` when it passed, else why not.
pub async fn probe(probe: &Probe, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(probe)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}", drover_client::duration::format(timeout))),
    }
}

async fn run(probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Tcp { port } => {
            TcpStream::connect(("127.0.0.1", *port)).await.map(drop).map_err(|e| format!("connect to port {port}: {e}"))
        }
        Probe::Http { port, path } => http(*port, path).await,
        Probe::Exec { command, dir, env, port, user } => exec(command, dir, env, *port, user.as_ref()).await,
    }
}

async fn http(port: u16, path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{path:?} is not a path a health check can ask for"));
    }
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect to port {port}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: drover-agent\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send to port {port}: {e}"))?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_STATUS_BYTES {
        let n = stream.read(&mut buf).await.map_err(|e| format!("read from port {port}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let status = line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {path} on port {port}: not an HTTP answer"))?;
    if (200..400).contains(&status) { Ok(()) } else { Err(format!("GET {path} on port {port}: status {status}")) }
}

async fn exec(
    command: &str,
    dir: &std::path::Path,
    env: &BTreeMap<String, String>,
    port: u16,
    user: Option<&StepUser>,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .env_clear()
        .env("PATH", PROBE_PATH)
        .envs(env)
        .env("PORT", port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = user {
        let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
        // SAFETY: the closure only makes async-signal-safe syscalls on
        // memory it owns (`runas::become_user`).
        unsafe {
            cmd.pre_exec(move || crate::runas::become_user(uid, gid, &groups));
        }
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start bash for the health command: {e}"))?;
    let pid = child.id();
    // Dropped at the timeout: the whole group goes, not only bash.
    struct Group(Option<u32>);
    impl Drop for Group {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                // SAFETY: kill(2) has no memory-safety preconditions; the
                // group is the probe's own (process_group(0)).
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
        }
    }
    let mut group = Group(pid);
    let status = child.wait().await.map_err(|e| format!("waiting for the health command: {e}"))?;
    group.0 = None;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(format!("the health command exited with {code}")),
        None => Err("the health command was killed by a signal".to_string()),
    }
}

/// Probes every `interval` until the service is healthy, or fails at
/// `deadline` with the last probe's error: the health gate of one node.
/// Returns how long it took.
pub async fn until_healthy(probe_: &Probe, policy: Policy, deadline: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let end = started + deadline;
    let mut tracker = Tracker::new(policy);
    let mut last = String::from("no probe finished");
    loop {
        let result = probe(probe_, policy.timeout).await;
        if let Err(why) = &result {
            last.clone_from(why);
        }
        if tracker.observe(result.is_ok()) == Some(Health::Healthy) {
            return Ok(started.elapsed());
        }
        let next = Instant::now() + policy.interval;
        if next >= end {
            return Err(format!(
                "not healthy within {} ({} passes in a row needed): {last}",
                drover_client::duration::format(deadline),
                policy.healthy_after
            ));
        }
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests;
