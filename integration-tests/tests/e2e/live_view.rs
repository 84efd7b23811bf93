//! The live view as a person sees it, captured through a pseudo-terminal:
//! on a 4-job DAG with a retry, each state line comes in the order it
//! happened, a job's output only after its `running` line, the retry is
//! said, colour is on (and off with NO_COLOR), and a summary table ends it.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Fleet, bin, text, wait_for};

/// Runs `drover args` with a pseudo-terminal as its stdin, stdout and
/// stderr; returns its exit code and everything it wrote.
fn on_a_terminal(fleet: &Fleet, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the pointers it is given;
    // the name, termios and winsize arguments may be null.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened, and each is owned once.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = Command::new(bin("drover"));
    cmd.args(args)
        .env("DROVER_COORDINATOR", fleet.url())
        .env("DROVER_TLS_DIR", &fleet.tls)
        .env_remove("NO_COLOR")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    // Read until the terminal closes (EIO once no process holds it).
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    });
    let status = wait_for("drover to finish", Duration::from_secs(90), || child.try_wait().unwrap());
    (status.code(), text(&reader.join().unwrap()))
}

/// The text without SGR sequences and the bar's redraws: only whole lines
/// that a state or a log wrote.
fn plain(out: &str) -> Vec<String> {
    let mut s = String::new();
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ params final-byte.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        s.push(c);
    }
    s.split(['\n', '\r']).map(str::trim_end).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[test]
fn a_dag_with_a_retry_is_shown_in_order_with_colour_and_a_summary() {
    let mut fleet = Fleet::start("live-view");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let marks = fleet.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // prepare → (build-a with one retry, build-b) → publish; build-a fails
    // its first attempt.
    let pipeline = format!(
        "name: dag
jobs:
  prepare:
    steps: [{{run: 'echo preparing'}}]
  build-a:
    needs: [prepare]
    retries: 2
    steps: [{{run: 'echo building a; if [ ! -e {m}/again ]; then touch {m}/again; exit 3; fi'}}]
  build-b:
    needs: [prepare]
    steps: [{{run: 'echo building b'}}]
  publish:
    needs: [build-a, build-b]
    steps: [{{run: 'echo publishing'}}]
",
        m = marks.display()
    );
    let file = fleet.dir.path().join("dag.yml");
    std::fs::write(&file, pipeline).unwrap();

    // On a terminal, `drover run` follows without being asked.
    let (code, out) = on_a_terminal(&fleet, &["run", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{out}{}", fleet.logs());
    assert!(out.contains("\x1b[32msucceeded\x1b[0m"), "colour on a terminal: {out:?}");
    let lines = plain(&out);
    let at = |want: &str| -> usize {
        lines.iter().position(|l| l.contains(want)).unwrap_or_else(|| panic!("no line with {want:?} in {lines:#?}"))
    };
    // Each job's output after its running line, and before its end.
    for (job, said) in [("prepare", "preparing"), ("build-b", "building b"), ("publish", "publishing")] {
        let (running, output, ended) =
            (at(&format!("[{job}] running")), at(&format!("{job} | {said}")), at(&format!("[{job}] succeeded")));
        assert!(
            running < output && output < ended,
            "{job}: running {running}, output {output}, end {ended}: {lines:#?}"
        );
    }
    // Nothing is said of jobs that only wait for others.
    assert!(!lines.iter().any(|l| l.contains("] pending")), "{lines:#?}");
    // Dependents after what they need.
    assert!(at("[prepare] succeeded") < at("[build-a] assigned"), "{lines:#?}");
    assert!(at("[prepare] succeeded") < at("[build-b] assigned"), "{lines:#?}");
    assert!(at("[build-a] succeeded") < at("[publish] assigned"), "{lines:#?}");
    // The retry, said, between the two attempts.
    let retry = at("[build-a] attempt 1 failed (exit 3)");
    assert!(lines[retry].ends_with(", retrying: attempt 2 of 3"), "{}", lines[retry]);
    assert!(at("[build-a] running on a1 (attempt 1)") < retry, "{lines:#?}");
    assert!(retry < at("[build-a] running on a1 (attempt 2)"), "{lines:#?}");
    // Each state line carries the time since the run began.
    let line = &lines[at("[prepare] succeeded")];
    assert!(line.trim_start().split(' ').next().is_some_and(|t| t.ends_with('s')), "{line}");
    // The summary, then the verdict.
    let table = at("JOB");
    assert!(lines[table].contains("AGENT") && lines[table].contains("ATTEMPTS") && lines[table].contains("RESULT"));
    let row = lines[table..].iter().find(|l| l.starts_with("build-a ")).expect("a summary row for build-a");
    assert!(row.contains(" 2 ") && row.ends_with("succeeded"), "{row}");
    assert!(lines.last().is_some_and(|l| l.starts_with("run 1 succeeded (")), "{lines:#?}");

    // NO_COLOR: no colour, even on a terminal.
    let (code, out) = on_a_terminal(&fleet, &["watch", "1"], &[("NO_COLOR", "1")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("\x1b[32m") && !out.contains("\x1b[31m"), "no colour: {out:?}");
}
