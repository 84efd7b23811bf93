//! Standard output that behaves like a Unix tool's when its reader goes
//! away (`drover logs 1 build | head`): the process ends quietly with the
//! status of a SIGPIPE death (141), instead of panicking in `println!`.
//! SIGPIPE itself stays ignored, so a broken connection to a coordinator is
//! an error the client fails over from, not a silent death.

use std::io::Write;

/// What a shell reports for a process killed by SIGPIPE.
pub const EXIT_BROKEN_PIPE: i32 = 128 + libc::SIGPIPE;

/// Writes one line to stdout; see the module docs.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        exit_if_broken_pipe(&e);
    }
}

/// Ends the process quietly when `e` says the reader of stdout has gone.
pub fn exit_if_broken_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(EXIT_BROKEN_PIPE);
    }
}

/// `println!` for the CLI's output.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::out::line(format_args!($($arg)*)) };
}
pub(crate) use outln;
