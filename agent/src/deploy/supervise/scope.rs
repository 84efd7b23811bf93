//! Detached processes under systemd. The packaged agent unit
//! (`packaging/systemd/drover-agent.service`) has `KillMode=mixed`: when
//! the agent's unit stops or restarts, systemd kills everything left in its
//! control group, which `setsid` does not leave. Services and their proxies
//! must outlive the agent, so where systemd runs the agent (its unit sets
//! `INVOCATION_ID`) and `systemd-run` is installed, each supervisor and
//! proxy starts in a transient scope unit of its own (`systemd-run --scope
//! --collect --unit drover-supervise-…`), a control group outside the
//! agent's unit. Elsewhere (no systemd, or a test), it starts directly, as
//! it does when `systemd-run` fails (a warning says why).
//!
//! What runs in the scope is the same command line (`drover-agent
//! --supervise DIR`: `systemd-run --scope` execs it in its own process), so
//! adoption by command line is unchanged. This path runs only under
//! systemd, which the CI machine does not have; the unit names and the
//! command line are table-tested here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `systemd-run`, when the agent runs in a systemd unit and it is on the
/// PATH.
pub fn systemd_run() -> Option<PathBuf> {
    // sd_booted(): systemd is the init; INVOCATION_ID: it runs us in a unit.
    if !Path::new("/run/systemd/system").is_dir() {
        return None;
    }
    std::env::var_os("INVOCATION_ID")?;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("systemd-run")).find(|p| p.is_file())
}

/// The scope's unit name for `mode` (`--supervise`, `--proxy`) and state
/// dir: stable for a state dir, and within systemd's grammar.
pub fn unit_name(mode: &str, dir: &Path) -> String {
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("drover-{}-{short}", mode.trim_start_matches('-'))
}

/// `systemd-run`'s arguments before the program and its own.
pub fn args(mode: &str, dir: &Path) -> Vec<OsString> {
    ["--scope", "--quiet", "--collect", "--unit"]
        .into_iter()
        .map(OsString::from)
        .chain([OsString::from(unit_name(mode, dir)), OsString::from("--")])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_is_named_for_its_state_dir_in_systemds_grammar() {
        let a = unit_name("--supervise", Path::new("/var/lib/drover-agent/.services/web/supervisors/v1"));
        let b = unit_name("--supervise", Path::new("/var/lib/drover-agent/.services/web/supervisors/v2"));
        let p = unit_name("--proxy", Path::new("/var/lib/drover-agent/.services/web/proxy"));
        assert!(a.starts_with("drover-supervise-") && p.starts_with("drover-proxy-"), "{a} {p}");
        assert_ne!(a, b, "one scope per state dir");
        for name in [&a, &b, &p] {
            assert!(name.len() < 256 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{name}");
        }
        let args: Vec<String> =
            args("--proxy", Path::new("/x")).into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(args[..4], ["--scope", "--quiet", "--collect", "--unit"]);
        assert_eq!(args[5], "--", "the program follows");
    }
}
