//! What a process costs, read from /proc: resident memory now and at its
//! peak (`VmRSS`, `VmHWM` in /proc/PID/status) and CPU time (utime + stime
//! in /proc/PID/stat). Also raises this process's open-file limit, which
//! thousands of simulated agents (and the coordinator, which inherits it)
//! need, and finds this process's children, so that a benchmark stopped by a
//! signal (when no destructor runs) does not leave coordinators behind.

use super::BenchError;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStats {
    /// Resident set size now, in KiB.
    pub rss_kib: u64,
    /// The highest resident set size so far (high-water mark), in KiB.
    pub peak_rss_kib: u64,
    /// User plus system CPU time so far, in seconds.
    pub cpu_seconds: f64,
    /// The same of its children that it has waited for (the git processes
    /// a coordinator runs), in seconds.
    pub children_cpu_seconds: f64,
}

/// Reads the process's memory and CPU time.
pub fn sample(pid: u32) -> Result<ProcStats, BenchError> {
    let read = |file: &str| {
        let path = format!("/proc/{pid}/{file}");
        std::fs::read_to_string(&path).map_err(|e| BenchError::new(format!("cannot read {path}: {e}")))
    };
    let status = read("status")?;
    let kib = |field: &str| -> Result<u64, BenchError> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .ok_or_else(|| BenchError::new(format!("/proc/{pid}/status has no {field} line in kB")))
    };
    let (rss_kib, peak_rss_kib) = (kib("VmRSS:")?, kib("VmHWM:")?);
    let stat = read("stat")?;
    let (cpu_seconds, children_cpu_seconds) =
        cpu_seconds(&stat).ok_or_else(|| BenchError::new(format!("cannot parse the CPU times in /proc/{pid}/stat")))?;
    Ok(ProcStats { rss_kib, peak_rss_kib, cpu_seconds, children_cpu_seconds })
}

/// utime + stime, and cutime + cstime (its waited-for children's), from
/// the text of /proc/PID/stat, in seconds. The command name (field 2) is in
/// parentheses and may contain spaces, so the fields are counted from the
/// last ')': utime, stime, cutime and cstime are fields 14 to 17.
fn cpu_seconds(stat: &str) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let own = field(14)? + field(15)?;
    let children = field(16)? + field(17)?;
    Some((own as f64 / clock_ticks(), children as f64 / clock_ticks()))
}

/// Clock ticks per second for /proc's CPU times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // Linux has used 100 on every common platform; fall back to it if
    // sysconf cannot say.
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Raises the soft limit on open files to the hard limit and returns the new
/// soft limit. Child processes started afterwards inherit it.
pub fn raise_fd_limit() -> Result<u64, BenchError> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(BenchError::new(format!("getrlimit(NOFILE): {}", std::io::Error::last_os_error())));
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(BenchError::new(format!("setrlimit(NOFILE): {}", std::io::Error::last_os_error())));
        }
    }
    // rlim_t is u64 here but not on every target.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}

/// SIGKILLs every process whose parent is this one: the coordinators and
/// etcd members the harness started, and any CLI call in flight.
pub fn kill_children() {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The parent's pid is field 4, the second after the command name.
        let ppid = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(me) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces() {
        let stat = "42 (tokio runtime) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 3 0 1000 0 0";
        assert_eq!(cpu_seconds(stat), Some((300.0 / clock_ticks(), 10.0 / clock_ticks())));
        assert_eq!(cpu_seconds("garbage"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).expect("read our own /proc entry");
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib, "{s:?}");
    }
}
