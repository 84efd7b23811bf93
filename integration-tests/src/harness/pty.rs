//! Commands on a pseudo-terminal, as a person runs them: the CLI decides
//! on following, colour and its status bar by whether stdout is a
//! terminal, so what a person sees is only tested on one.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{text, wait_for};

/// Runs `cmd` with a new pseudo-terminal as its stdin, stdout and stderr,
/// for at most `timeout`; returns its exit code and everything it wrote.
pub fn on_a_terminal(mut cmd: Command, timeout: Duration) -> (Option<i32>, String) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the pointers it is given;
    // the name, termios and winsize arguments may be null.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened, and each is owned once.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cmd.stdin(Stdio::from(slave.try_clone().expect("dup the terminal")))
        .stdout(Stdio::from(slave.try_clone().expect("dup the terminal")))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("start the command");
    // The parent's copies of the terminal go with `cmd`, so that reading
    // ends when the child and its children are gone.
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        // EIO once no process holds the terminal any more.
        while let Ok(n @ 1..) = file.read(&mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let status = wait_for("the command on a terminal to finish", timeout, || child.try_wait().expect("wait"));
    (status.code(), text(&reader.join().expect("the reader")))
}

/// What a terminal shows as lines: SGR and other CSI sequences removed,
/// and carriage returns (a status bar redrawn) taken as line ends.
pub fn lines(out: &str) -> Vec<String> {
    let mut s = String::new();
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
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
