//! What an earlier agent process on the same work dir left behind.
//!
//! An agent that is SIGKILLed (or crashes) cannot kill its steps; its step
//! watcher ([`crate::watch`]) does, at once. What the watcher misses keeps
//! running: a step spawned in the instant the agent died, or every step
//! when the watcher died too. The next agent on that work dir finds them at
//! startup: every step runs with `DROVER_WORKSPACE` set to its workspace, a
//! direct child of the (canonical) work dir, even in its cleared
//! environment, and the work-dir lock guarantees that no live agent owns
//! such a process. They get SIGTERM, with their process groups, and SIGKILL
//! after [`KILL_GRACE`]; then the leftover workspaces are removed.
//!
//! With `--run-as` the steps belong to another user; the agent is root then,
//! and root reads every process's environment.
//!
//! A deployed service and its supervisor
//! ([`crate::deploy::supervise`]) are meant to outlive the agent, and are
//! never taken for leftovers: the supervisor starts with a cleared
//! environment and builds its service's without `DROVER_WORKSPACE` (a spec
//! that sets it is refused). Their releases and state live in the services
//! dir, `WORK_DIR/.services` by default, which is no workspace name and so
//! never removed ([`crate::deploy::executor`]).
//!
//! A process that cleared its environment and left its step's process group
//! escapes; in production systemd's `KillMode` kills the whole cgroup when
//! the agent dies (packaging/systemd/drover-agent.service).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::exec::{KILL_GRACE, signal_group};

/// The value of `key` in a process environment as /proc/PID/environ holds
/// it: `KEY=VAL\0KEY=VAL\0`. Entries without `=` are ignored.
pub fn env_value<'a>(environ: &'a [u8], key: &str) -> Option<&'a [u8]> {
    environ.split(|b| *b == 0).find_map(|entry| {
        let eq = entry.iter().position(|b| *b == b'=')?;
        (&entry[..eq] == key.as_bytes()).then(|| &entry[eq + 1..])
    })
}

/// Whether a process with this environment is a step (or a descendant that
/// kept its environment) of an attempt on `work_dir`, which must be
/// canonical: its `DROVER_WORKSPACE` is a direct child of `work_dir`.
pub fn belongs_to(environ: &[u8], work_dir: &Path) -> bool {
    env_value(environ, "DROVER_WORKSPACE").is_some_and(|ws| Path::new(OsStr::from_bytes(ws)).parent() == Some(work_dir))
}

/// Whether a work-dir entry looks like an attempt workspace: an attempt id
/// `RUN/JOB/ATTEMPT` with `/` replaced, so `12-build.x-1-3`. Only those are
/// removed, so an agent pointed at the wrong directory (a home directory)
/// deletes nothing else.
pub fn is_workspace_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (name.split_once('-'), name.rsplit_once('-')) {
        (Some((run, rest)), Some((_, attempt))) => digits(run) && digits(attempt) && rest.len() > attempt.len() + 1,
        _ => false,
    }
}

/// The state letter and process group from /proc/PID/stat. The command
/// name, in parentheses, may itself hold spaces and parentheses.
pub fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Every process id in /proc.
fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// The processes that still run (zombies have ended) and are in `pids` or
/// in one of `groups`.
fn alive(pids: &BTreeSet<i32>, groups: &BTreeSet<i32>) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            let Some((state, pgrp)) =
                std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(parse_stat)
            else {
                return false;
            };
            state != 'Z' && (pids.contains(pid) || groups.contains(&pgrp))
        })
        .collect()
}

/// Signals every process group in `groups` and every process in `pids`.
fn signal(pids: &[i32], groups: &BTreeSet<i32>, sig: i32) {
    for &pgid in groups {
        signal_group(pgid, sig);
    }
    for pid in pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(*pid, sig) };
    }
}

/// Kills the processes left by an earlier agent on `work_dir` (canonical,
/// locked by the caller) and removes the leftover workspaces. Blocks for up
/// to [`KILL_GRACE`] and a moment.
pub fn clean_up(work_dir: &Path) {
    // SAFETY: getpid and getpgrp have no preconditions.
    let (me, my_group) = unsafe { (libc::getpid(), libc::getpgrp()) };
    let mut found = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for pid in all_pids() {
        if pid == me {
            continue;
        }
        // A process whose environment we cannot read belongs to another
        // user than ours, and an agent that is not root runs no steps as
        // another user: it is not ours.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if !belongs_to(&environ, work_dir) {
            continue;
        }
        found.insert(pid);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Steps run in groups of their own; never signal ours or init's.
        if let Some((_, pgrp)) = parse_stat(&stat)
            && pgrp > 1
            && pgrp != my_group
        {
            groups.insert(pgrp);
        }
    }
    let killed = alive(&found, &groups);
    if !killed.is_empty() {
        signal(&killed, &groups, libc::SIGTERM);
        let deadline = Instant::now() + KILL_GRACE;
        let mut left = killed.clone();
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = alive(&found, &groups);
        }
        signal(&left, &groups, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(1);
        while !alive(&found, &groups).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        warn!(
            count = killed.len(),
            pids = ?killed,
            work_dir = %work_dir.display(),
            "killed processes that an earlier agent on this work dir left running"
        );
    }
    let Ok(entries) = std::fs::read_dir(work_dir) else { return };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !is_workspace_name(&entry.file_name()) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(e) => warn!(path = %path.display(), error = %e, "cannot remove a leftover workspace"),
        }
    }
    if removed > 0 {
        info!(count = removed, work_dir = %work_dir.display(), "removed leftover workspaces");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_value_finds_exact_keys() {
        let env = b"PATH=/bin\0DROVER_WORKSPACE_X=no\0NOEQUALS\0DROVER_WORKSPACE=/w/1-a-1\0EMPTY=\0Q=a=b";
        assert_eq!(env_value(env, "DROVER_WORKSPACE"), Some(&b"/w/1-a-1"[..]));
        assert_eq!(env_value(env, "PATH"), Some(&b"/bin"[..]));
        assert_eq!(env_value(env, "EMPTY"), Some(&b""[..]));
        // The value may hold `=`, and the last entry need not end in NUL.
        assert_eq!(env_value(env, "Q"), Some(&b"a=b"[..]));
        assert_eq!(env_value(env, "NOEQUALS"), None);
        assert_eq!(env_value(env, "DROVER"), None);
        assert_eq!(env_value(b"", "PATH"), None);
    }

    #[test]
    fn a_process_belongs_to_a_work_dir_when_its_workspace_is_a_direct_child() {
        let work = Path::new("/var/lib/drover/work");
        let env = |ws: &str| format!("HOME=/root\0DROVER_WORKSPACE={ws}\0").into_bytes();
        assert!(belongs_to(&env("/var/lib/drover/work/12-build-1"), work));
        assert!(belongs_to(&env("/var/lib/drover/work/12-build-1/"), work));
        for other in [
            "/var/lib/drover/work",
            "/var/lib/drover/work/12-build-1/sub",
            "/var/lib/drover/other/12-build-1",
            "/var/lib/drover/work2/12-build-1",
            "work/12-build-1",
            "",
        ] {
            assert!(!belongs_to(&env(other), work), "{other:?}");
        }
        assert!(!belongs_to(b"HOME=/root\0", work));
        assert!(!belongs_to(b"", work));
    }

    #[test]
    fn only_attempt_workspaces_are_workspace_names() {
        for good in ["12-build-1", "7-build.x-1-30", "1-a_b-2"] {
            assert!(is_workspace_name(OsStr::new(good)), "{good}");
        }
        // The agent's own: the lock, the caches, the deployed services.
        for bad in [
            ".drover-agent.lock",
            ".caches",
            ".services",
            "Documents",
            "12-1",
            "12--1",
            "x-build-1",
            "12-build-x",
            "12-build",
            "",
        ] {
            assert!(!is_workspace_name(OsStr::new(bad)), "{bad}");
        }
    }

    #[test]
    fn a_matrix_job_gets_a_workspace_name_without_spaces_that_is_still_found() {
        let plain = crate::exec::workspace_name("12/build/3");
        assert_eq!(plain, "12-build-3");
        let cell = crate::exec::workspace_name("12/test (rust=beta, os=linux)/3");
        assert!(cell.starts_with("12-test__rust_beta__os_linux_~") && cell.ends_with("-3"), "{cell}");
        assert!(cell.chars().all(|c| c.is_ascii_alphanumeric() || "_.-~".contains(c)), "{cell}");
        assert_ne!(
            cell,
            crate::exec::workspace_name("12/test__rust_beta__os_linux_/3"),
            "a plain name that reads alike"
        );
        for name in [plain, cell] {
            assert!(is_workspace_name(OsStr::new(&name)), "{name}");
        }
    }

    #[test]
    fn stat_gives_state_and_group_even_with_odd_command_names() {
        assert_eq!(parse_stat("4242 (bash) S 1 4242 4242 0 -1 4194560"), Some(('S', 4242)));
        assert_eq!(parse_stat("17 (a) b (c) Z 1 9 9 0"), Some(('Z', 9)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R 0"), None);
    }
}
