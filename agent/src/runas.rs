//! Running steps as another user (`--run-as USER`), and the file modes that
//! keep the agent's secrets from that user.
//!
//! Steps of an agent without `--run-as` run as the agent's own user, and
//! can read whatever the agent can: its TLS key above all, which would let
//! a job speak to the coordinator as the agent. With `--run-as`, the agent
//! (which must then be root, the only user that can switch to another)
//! starts every step with the user's uid, primary gid and supplementary
//! groups, and keeps from it:
//!
//! - the TLS directory: mode 0700, owned by the agent's user. Its path is no
//!   secret: `/proc/PID/cmdline` is world-readable by design, and a step
//!   finds `--tls-dir` there. What protects the keys is that the user cannot
//!   enter the directory.
//! - the agent's environment: `/proc/PID/environ` of another user's process
//!   is readable only by root, and steps start with a cleared environment
//!   anyway (see [`crate::exec`]).
//! - the work dir: owned by the agent's user, mode 0711, so the user can
//!   pass through it to its workspace (each 0700 and owned by the user) but
//!   cannot list it, create entries in it (a symlink where the agent will
//!   make the next workspace) or open the lock file (0600), which would
//!   let it hold the lock and block the agent's restart.
//!
//! Every step of the agent runs as the same user, so steps of concurrent
//! attempts can reach each other's workspaces and processes. One user per
//! slot would close that; it is not done yet.

use std::ffi::{CStr, CString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The user steps run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group the user is in (initgroups' list), the primary one
    /// included.
    pub groups: Vec<u32>,
    /// From the passwd database; steps get it as HOME.
    pub home: PathBuf,
}

/// Switches the calling process to `uid`, `gid` and `groups`, in the only
/// order that works: supplementary groups while still root, then the gid,
/// the uid last. For a forked child before exec (`pre_exec`), so it makes
/// only async-signal-safe syscalls on memory the caller owns. std sets a
/// uid and gid but not (on stable) supplementary groups, and runs
/// `pre_exec` only after its own setuid, when setgroups is no longer
/// allowed: so steps and services do all three here.
pub fn become_user(uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<()> {
    // SAFETY: setgroups reads `groups.len()` ids from a live slice; setgid
    // and setuid take plain integers.
    let failed = unsafe {
        libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0
    };
    if failed { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    #[error(
        "--run-as {spec:?}: no such user in the passwd database (give a user name or a numeric uid that has an entry)"
    )]
    NoSuchUser { spec: String },
    #[error("--run-as {spec:?}: cannot look the user up: {source}")]
    Lookup { spec: String, source: std::io::Error },
    #[error("--run-as {spec:?} names root: steps would run with every privilege; name an unprivileged user")]
    Root { spec: String },
    #[error(
        "--run-as {spec:?} is the agent's own user (uid {uid}): steps could read the agent's TLS key; name \
         another, unprivileged user"
    )]
    OwnUser { spec: String, uid: u32 },
    #[error(
        "--run-as needs the agent to run as root: only root can start steps as another user, and this agent \
         runs as uid {euid}; start it as root, or drop --run-as (steps then run as the agent's user)"
    )]
    NotRoot { euid: u32 },
    #[error("cannot make {} private (mode {mode:o}): {detail}", .path.display())]
    NotPrivate { path: PathBuf, mode: u32, detail: String },
    #[error(
        "the run-as user {user} cannot reach the work dir {}: {} (mode {mode:o}, owner uid {owner}, group \
         {group}) is not searchable for it; make it so (e.g. chmod o+x) or choose a --work-dir under \
         searchable directories",
        .work_dir.display(),
        .blocked.display()
    )]
    Unreachable { user: String, work_dir: PathBuf, blocked: PathBuf, mode: u32, owner: u32, group: u32 },
}

/// Looks a user up by name, or by uid when `spec` is a number.
pub fn lookup(spec: &str) -> Result<StepUser, RunAsError> {
    let lookup_err = |source| RunAsError::Lookup { spec: spec.to_string(), source };
    let by_uid = spec.parse::<u32>().ok();
    let name = CString::new(spec).map_err(|_| RunAsError::NoSuchUser { spec: spec.to_string() })?;
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        // SAFETY: an all-zero passwd is a valid value of a C struct of
        // pointers and integers; getpw*_r fills it, pointing into `buf`,
        // which outlives every use below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the length given.
        let rc = unsafe {
            match by_uid {
                Some(uid) => libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found),
                None => libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found),
            }
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(lookup_err(std::io::Error::from_raw_os_error(rc)));
        }
        if found.is_null() {
            return Err(RunAsError::NoSuchUser { spec: spec.to_string() });
        }
        // SAFETY: on success the strings are NUL-terminated in `buf`.
        let (user_name, home) = unsafe { (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_dir)) };
        let groups = group_list(user_name, pwd.pw_gid).map_err(lookup_err)?;
        use std::os::unix::ffi::OsStrExt;
        return Ok(StepUser {
            name: user_name.to_string_lossy().into_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            groups,
            home: PathBuf::from(std::ffi::OsStr::from_bytes(home.to_bytes())),
        });
    }
}

/// The user's groups as initgroups(3) would set them.
fn group_list(user: &CStr, gid: u32) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..8 {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` holds `n` entries.
        let rc = unsafe { libc::getgrouplist(user.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n as usize);
            return Ok(groups);
        }
        // Too small: n now says how many there are.
        groups.resize((n as usize).max(groups.len() * 2), 0);
    }
    Err(std::io::Error::other("the user's group list keeps growing"))
}

/// Whether an agent running as `euid` may run steps as `user`.
pub fn check_allowed(spec: &str, user: &StepUser, euid: u32) -> Result<(), RunAsError> {
    if user.uid == 0 {
        return Err(RunAsError::Root { spec: spec.to_string() });
    }
    if user.uid == euid {
        return Err(RunAsError::OwnUser { spec: spec.to_string(), uid: euid });
    }
    if euid != 0 {
        return Err(RunAsError::NotRoot { euid });
    }
    Ok(())
}

/// Whether a process with `uid` and `gids` may search (pass through) a
/// directory. As the kernel does, only the first class that applies
/// counts: the owner's bits for the owner, else the group's for a member.
/// (Not for root, which may always.)
pub fn can_search(mode: u32, owner: u32, group: u32, uid: u32, gids: &[u32]) -> bool {
    if uid == owner {
        mode & 0o100 != 0
    } else if gids.contains(&group) {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Checks that `user` can pass through every directory above `work_dir`
/// (canonical) down to it.
pub fn check_reachable(work_dir: &Path, user: &StepUser) -> Result<(), RunAsError> {
    for dir in work_dir.ancestors() {
        let Ok(meta) = std::fs::metadata(dir) else { continue };
        let mode = meta.mode() & 0o7777;
        if !can_search(mode, meta.uid(), meta.gid(), user.uid, &user.groups) {
            return Err(RunAsError::Unreachable {
                user: user.name.clone(),
                work_dir: work_dir.to_path_buf(),
                blocked: dir.to_path_buf(),
                mode,
                owner: meta.uid(),
                group: meta.gid(),
            });
        }
    }
    Ok(())
}

/// Sets `path`'s mode and checks that it belongs to `euid`: a directory
/// owned by someone else stays open to them whatever its mode.
pub fn set_private_mode(path: &Path, mode: u32, euid: u32) -> Result<(), RunAsError> {
    let not_private = |detail: String| RunAsError::NotPrivate { path: path.to_path_buf(), mode, detail };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| not_private(e.to_string()))?;
    let meta = std::fs::metadata(path).map_err(|e| not_private(e.to_string()))?;
    if meta.uid() != euid {
        return Err(not_private(format!(
            "it belongs to uid {}, not to the agent's user (uid {euid}); chown it to the agent's user",
            meta.uid()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> StepUser {
        StepUser { name: "builder".into(), uid, gid: 2000, groups: vec![2000, 27], home: "/home/builder".into() }
    }

    #[test]
    fn who_may_run_steps_as_whom() {
        assert!(check_allowed("builder", &user(1500), 0).is_ok());
        let cases: &[(u32, u32, &str)] = &[
            (0, 0, "--run-as \"x\" names root"),
            (0, 1000, "--run-as \"x\" names root"),
            (1000, 1000, "--run-as \"x\" is the agent's own user (uid 1000)"),
            (1500, 1000, "--run-as needs the agent to run as root: only root can start steps as another user"),
        ];
        for (uid, euid, want) in cases {
            let err = check_allowed("x", &user(*uid), *euid).unwrap_err().to_string();
            assert!(err.starts_with(want), "uid {uid}, euid {euid}: {err}");
        }
    }

    #[test]
    fn search_permission_takes_the_first_class_that_applies() {
        let gids = [2000, 27];
        let cases: &[(u32, u32, u32, bool)] = &[
            // (mode, owner, group, searchable by uid 1500)
            (0o755, 0, 0, true),
            (0o711, 0, 0, true),
            (0o700, 0, 0, false),
            (0o750, 0, 0, false),
            (0o750, 0, 27, true),
            (0o700, 1500, 0, true),
            // The owner's bits decide for the owner, even if others may.
            (0o011, 1500, 0, false),
            // The group's bits decide for a member, even if others may.
            (0o701, 0, 2000, false),
            (0o1777, 0, 0, true),
        ];
        for (mode, owner, group, want) in cases {
            assert_eq!(can_search(*mode, *owner, *group, 1500, &gids), *want, "{mode:o} {owner}:{group}");
        }
    }

    #[test]
    fn users_are_found_by_name_and_uid() {
        let root = lookup("root").unwrap();
        assert_eq!((root.uid, root.gid, root.name.as_str()), (0, 0, "root"));
        assert!(root.groups.contains(&0), "{root:?}");
        assert_eq!(lookup("0").unwrap(), root);
        let err = lookup("no-such-user-drover-test").unwrap_err();
        assert!(matches!(err, RunAsError::NoSuchUser { .. }), "{err:?}");
        assert!(err.to_string().contains("no such user in the passwd database"), "{err}");
    }

    #[test]
    fn private_modes_are_set_and_a_foreign_owner_is_refused() {
        let dir = std::env::temp_dir().join(format!("drover-agent-private-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        set_private_mode(&dir, 0o700, euid).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let err = set_private_mode(&dir, 0o700, euid + 1).unwrap_err().to_string();
        assert!(err.contains(&format!("it belongs to uid {euid}, not to the agent's user")), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
