//! The step watcher: one small process per agent that kills the agent's
//! running steps when the agent dies, however it dies (SIGKILL included).
//!
//! Steps run in process groups of their own, so that an attempt can kill
//! every process it started without touching the agent. The price is that
//! nothing the kernel does when the agent dies reaches them, and a process
//! that has been SIGKILLed runs no code of its own. So another process
//! must do it: the agent binary again, started at agent startup in a hidden
//! mode ([`MODE_ARG`], recognised before flag parsing), in a process group
//! of its own and ignoring SIGINT, SIGTERM and SIGHUP, so that a signal
//! meant for the agent (a terminal's Ctrl-C, systemd's stop) does not take
//! it away while the agent drains. `PR_SET_PDEATHSIG` would not do: it
//! fires when the *thread* that spawned the process ends (tokio's blocking
//! threads come and go), and only for a direct child, not for the daemons a
//! step leaves in its group.
//!
//! The watcher's stdin is the read end of a pipe from the agent. The agent
//! writes a line per change, each far below `PIPE_BUF` so that writes from
//! concurrent attempts never interleave:
//!
//! - `+PGID`: a step's process group has started;
//! - `-PGID`: the attempt has killed the group, or seen it gone;
//! - `exit`: the agent ends on purpose.
//!
//! When the pipe reaches its end (the kernel closes the agent's end when the
//! agent dies, by any signal) or says `exit`, the watcher SIGKILLs every
//! group still listed and exits. After a clean exit the list is normally
//! empty, since the agent kills its attempts itself first; whatever is left
//! (an attempt that outlived the agent's own kill deadline) must not outlive
//! the agent either. The write end is close-on-exec, as every descriptor
//! Rust opens, so no step holds it open and the end of the pipe comes
//! exactly when the agent is gone.
//!
//! One watcher per agent, not per attempt: a step costs two pipe writes
//! more, not a process (the per-job spawn cost is benchmarked).
//!
//! Gaps: a group is listed just after its step is spawned, so an agent that
//! dies between the spawn and the write leaves that step to
//! [`crate::leftovers`] (the next agent on the same work dir). A process
//! that leaves its group (`setsid`) escapes the watcher as it escapes the
//! agent's own kill; systemd's `KillMode` catches it in production. A group
//! id is delisted as soon as the agent knows the group is gone, and the
//! kernel cannot reuse it while any process of the group (a zombie leader
//! included) exists, so the watcher does not signal a reused id in practice.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

use crate::exec::signal_group;

/// The first argument that starts the agent binary as a watcher.
pub const MODE_ARG: &str = "__watch-steps";

/// One line from the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Add(i32),
    Remove(i32),
    Exit,
}

/// Parses a line of the protocol; `None` for anything else (ignored, so
/// that a newer agent's additions do not kill an older watcher).
fn parse_line(line: &str) -> Option<Line> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line == "exit" {
        return Some(Line::Exit);
    }
    let group = |s: &str| s.parse::<i32>().ok().filter(|g| *g > 1);
    match line.split_at_checked(1)? {
        ("+", g) => group(g).map(Line::Add),
        ("-", g) => group(g).map(Line::Remove),
        _ => None,
    }
}

/// What the watcher saw before it killed.
#[derive(Debug, PartialEq, Eq)]
pub struct Ended {
    /// The agent said `exit` (as opposed to dying).
    pub clean: bool,
    /// The groups still listed, each sent SIGKILL.
    pub killed: Vec<i32>,
}

/// The watcher's work: follows the agent's lines until `exit` or the end of
/// the input, then SIGKILLs every group still listed. Never signals its own
/// group (or init's: ids at most 1 are not taken).
pub fn serve(input: impl BufRead) -> Ended {
    // SAFETY: getpgrp has no preconditions.
    let own_group = unsafe { libc::getpgrp() };
    let mut groups = BTreeSet::new();
    let mut clean = false;
    for line in input.lines() {
        // A read error is as final as the end of the pipe.
        let Ok(line) = line else { break };
        match parse_line(&line) {
            Some(Line::Add(g)) if g != own_group => {
                groups.insert(g);
            }
            Some(Line::Remove(g)) => {
                groups.remove(&g);
            }
            Some(Line::Exit) => {
                clean = true;
                break;
            }
            Some(Line::Add(_)) | None => debug!(line, "step watcher: ignored a line it does not know"),
        }
    }
    let killed: Vec<i32> = groups.into_iter().collect();
    for g in &killed {
        signal_group(*g, libc::SIGKILL);
    }
    Ended { clean, killed }
}

/// Closes every descriptor above stderr: the watcher may have inherited
/// some the agent itself was given without close-on-exec, and must keep
/// none open (a pipe a test or supervisor waits on, say) past the agent.
fn close_other_fds() {
    // SAFETY: close_range(2) on descriptors this process does not use;
    // there is no memory involved.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0 {
        return;
    }
    // Kernels before 5.9: close what /proc lists. Collect first, since the
    // directory listing holds a descriptor of its own.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|fd| *fd > 2).collect())
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: as above; an fd that is already closed only fails.
        unsafe { libc::close(fd) };
    }
}

/// The watcher process's `main`: `args` are those after [`MODE_ARG`], the
/// agent's log format first.
pub fn main(args: Vec<OsString>) -> ExitCode {
    // SAFETY: setting signal dispositions to SIG_IGN before any thread
    // exists; no handler code is involved.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    close_other_fds();
    let format = args.first().and_then(|a| a.to_str()?.parse().ok()).unwrap_or_default();
    // Logging only: no OTLP, so no runtime is needed.
    let _telemetry = drover_telemetry::trace::init(format, "drover-agent", None);
    // SAFETY: getppid has no preconditions.
    let agent = unsafe { libc::getppid() };
    let ended = serve(std::io::stdin().lock());
    match ended {
        Ended { clean: false, killed } => warn!(
            agent_pid = agent,
            groups = ?killed,
            "the agent died: killed the process groups of the steps it was running"
        ),
        Ended { clean: true, killed } if !killed.is_empty() => warn!(
            agent_pid = agent,
            groups = ?killed,
            "the agent exited with steps still running: killed their process groups"
        ),
        Ended { clean: true, .. } => {}
    }
    ExitCode::SUCCESS
}

/// How to start the watcher.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The agent binary. `/proc/self/exe` is that even after the file on
    /// disk was replaced (an upgrade) or removed.
    pub program: PathBuf,
    /// The agent's `--log-format`, so the watcher's lines look alike.
    pub log_format: &'static str,
}

/// The agent's side: registers and delists step groups with its watcher.
/// Cheap to call from any attempt: a mutex and one small pipe write.
pub struct StepWatch {
    inner: Mutex<Inner>,
}

struct Inner {
    /// None: no watcher (library use without the binary, unit tests).
    launch: Option<Launch>,
    child: Option<Child>,
    pipe: Option<ChildStdin>,
    /// What the watcher should hold, to restart it with.
    groups: BTreeSet<i32>,
    /// `exit` was said; nothing more is written.
    closed: bool,
}

fn spawn(launch: &Launch) -> std::io::Result<(Child, ChildStdin)> {
    let mut child = Command::new(&launch.program)
        .arg0("drover-agent")
        .arg(MODE_ARG)
        .arg(launch.log_format)
        .stdin(Stdio::piped())
        // Its stdout stays null: a parent reading the agent's stdout to
        // its end (the metrics address line) must not wait for the watcher.
        // Its log lines go to the agent's stderr.
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()?;
    let pipe = child.stdin.take().expect("stdin was piped");
    Ok((child, pipe))
}

impl StepWatch {
    /// Starts the watcher.
    pub fn start(launch: Launch) -> std::io::Result<StepWatch> {
        let (child, pipe) = spawn(&launch)?;
        debug!(pid = child.id(), "started the step watcher");
        Ok(StepWatch {
            inner: Mutex::new(Inner {
                launch: Some(launch),
                child: Some(child),
                pipe: Some(pipe),
                groups: BTreeSet::new(),
                closed: false,
            }),
        })
    }

    /// No watcher: steps of an agent that dies are left to
    /// [`crate::leftovers`].
    pub fn disabled() -> StepWatch {
        StepWatch {
            inner: Mutex::new(Inner { launch: None, child: None, pipe: None, groups: BTreeSet::new(), closed: false }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A step's process group started.
    pub fn add(&self, group: i32) {
        let mut inner = self.lock();
        if inner.groups.insert(group) {
            inner.write(&format!("+{group}\n"));
        }
    }

    /// A step's process group was killed or is gone.
    pub fn remove(&self, group: i32) {
        let mut inner = self.lock();
        if inner.groups.remove(&group) {
            inner.write(&format!("-{group}\n"));
        }
    }

    /// The agent ends: says `exit` (the watcher kills whatever is still
    /// listed) and waits briefly for the watcher to go.
    pub fn exit(&self) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        inner.write("exit\n");
        inner.closed = true;
        inner.pipe = None;
        if let Some(mut child) = inner.child.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for StepWatch {
    fn drop(&mut self) {
        self.exit();
    }
}

impl Inner {
    /// Writes a line; if the watcher has gone (someone killed it), starts
    /// another and gives it the whole list.
    fn write(&mut self, line: &str) {
        if self.closed {
            return;
        }
        let Some(pipe) = &mut self.pipe else { return };
        let Err(e) = pipe.write_all(line.as_bytes()) else { return };
        let Some(launch) = &self.launch else { return };
        warn!(error = %e, "the step watcher is gone; starting another");
        if let Some(mut old) = self.child.take() {
            let _ = old.try_wait();
        }
        self.pipe = None;
        match spawn(launch) {
            Ok((child, mut pipe)) => {
                let list: String = self.groups.iter().map(|g| format!("+{g}\n")).collect();
                if let Err(e) = pipe.write_all(list.as_bytes()) {
                    error!(error = %e, "cannot talk to the new step watcher: steps of this agent outlive it if it dies");
                    return;
                }
                self.child = Some(child);
                self.pipe = Some(pipe);
            }
            Err(e) => {
                error!(error = %e, "cannot start a step watcher: steps of this agent outlive it if it dies");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_the_protocol() {
        let cases: &[(&str, Option<Line>)] = &[
            ("+123\n", Some(Line::Add(123))),
            ("-123\n", Some(Line::Remove(123))),
            ("+42", Some(Line::Add(42))),
            ("exit\n", Some(Line::Exit)),
            ("exit", Some(Line::Exit)),
            // Never init, never "every process" (kill(-1)), never garbage.
            ("+1\n", None),
            ("+0\n", None),
            ("+-5\n", None),
            ("+\n", None),
            ("+12x\n", None),
            ("*12\n", None),
            ("", None),
            ("exit now\n", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line), *want, "{line:?}");
        }
    }

    /// A real process group, killed because the input ended while it was
    /// listed; a delisted one is left alone.
    #[test]
    fn groups_still_listed_at_the_end_are_killed() {
        let start = || Command::new("sleep").arg("100").process_group(0).spawn().unwrap();
        let (mut listed, mut delisted) = (start(), start());
        let (a, b) = (listed.id() as i32, delisted.id() as i32);
        let input = format!("+{a}\n+{b}\nnonsense\n-{b}\n");
        let ended = serve(std::io::Cursor::new(input));
        assert_eq!(ended, Ended { clean: false, killed: vec![a] });
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(listed.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(delisted.try_wait().unwrap(), None, "the delisted group still runs");
        delisted.kill().unwrap();
        delisted.wait().unwrap();

        let ended = serve(std::io::Cursor::new("exit\n+77777\n"));
        assert_eq!(ended, Ended { clean: true, killed: vec![] }, "nothing after exit is read");
    }
}
