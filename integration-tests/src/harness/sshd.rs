//! A real OpenSSH server for the tests of git over ssh with a deploy key:
//! `sshd` on 127.0.0.1 and a free port, with its own host key, config, pid
//! file and log in a directory of its own, letting in only the holder of one
//! key, as the user the tests run as. Nothing of the system's sshd (its
//! config, host keys, service) is used.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Proc, free_port, text, wait_for_or_report};

/// A real sshd on 127.0.0.1 (a free port), in a directory of its own, that
/// lets in only the holder of one key, as the current user. Killed on drop.
pub struct Sshd {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// The user it lets in: the one the tests run as.
    pub user: String,
    dir: PathBuf,
    proc: Proc,
}

impl Sshd {
    /// Starts sshd under `dir` (host key made with ssh-keygen, its own
    /// sshd_config, pid file, log file), accepting only the public key
    /// `authorized` (one line of OpenSSH public key text). Waits until it
    /// accepts connections; on failure panics with sshd's log.
    pub fn start(dir: &Path, authorized: &str) -> Sshd {
        let sshd = sshd_path();
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let dir = std::path::absolute(dir).expect("absolute sshd dir");
        let host_key = dir.join("ssh_host_ed25519_key");
        keypair(&host_key);
        let authorized_keys = dir.join("authorized_keys");
        std::fs::write(&authorized_keys, format!("{}\n", authorized.trim()))
            .unwrap_or_else(|e| panic!("write {}: {e}", authorized_keys.display()));
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // As root, sshd's privilege-separated child chroots into
            // this directory; the package leaves its creation to the init
            // system, so a container without one has none.
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd, sshd's privilege separation directory");
        }
        let user = current_user();
        let port = free_port();
        // The sessions' PATH: sshd's compiled-in one plus where this git
        // lives, so that the shell finds git-receive-pack and git-upload-pack.
        let mut path = vec!["/usr/local/bin", "/usr/bin", "/bin"].into_iter().map(PathBuf::from).collect::<Vec<_>>();
        if let Some(git_dir) = which("git").and_then(|git| Some(git.parent()?.to_path_buf()))
            && !path.contains(&git_dir)
        {
            path.insert(0, git_dir);
        }
        let path = std::env::join_paths(path).expect("a PATH for the sessions");
        let quoted = |p: &Path| format!("\"{}\"", p.display());
        let config = [
            format!("ListenAddress 127.0.0.1:{port}"),
            format!("HostKey {}", quoted(&host_key)),
            format!("PidFile {}", quoted(&dir.join("sshd.pid"))),
            format!("AuthorizedKeysFile {}", quoted(&authorized_keys)),
            format!("AllowUsers {user}"),
            "AuthenticationMethods publickey".into(),
            "PubkeyAuthentication yes".into(),
            "PasswordAuthentication no".into(),
            "KbdInteractiveAuthentication no".into(),
            "PermitRootLogin prohibit-password".into(),
            "UsePAM no".into(),
            "StrictModes no".into(),
            "PermitUserEnvironment no".into(),
            "AllowTcpForwarding no".into(),
            "X11Forwarding no".into(),
            "PrintMotd no".into(),
            "LogLevel VERBOSE".into(),
            format!("SetEnv PATH={}", path.to_string_lossy()),
        ];
        let config_file = dir.join("sshd_config");
        std::fs::write(&config_file, config.join("\n") + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", config_file.display()));

        let log = dir.join("sshd.log");
        let stderr = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        // -D: stay in the foreground; -e: log to stderr (the log file).
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config_file)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", sshd.display()));
        let mut proc = Proc { child, name: "sshd".into(), log: log.clone() };
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_for_or_report(
            &format!("sshd to accept connections on 127.0.0.1:{port}"),
            Duration::from_secs(20),
            || {
                if let Some(status) = proc.child.try_wait().expect("wait for sshd") {
                    panic!("sshd exited ({status}) before accepting connections; its log:\n{}", read_log());
                }
                banner(port).then_some(())
            },
            || format!("sshd's log:\n{}", read_log()),
        );
        Sshd { port, user, dir, proc }
    }

    /// The `known_hosts` text that pins this server's host key for
    /// 127.0.0.1:port (`[127.0.0.1]:PORT ssh-ed25519 AAAA...`).
    pub fn known_hosts(&self) -> String {
        let public = self.dir.join("ssh_host_ed25519_key.pub");
        let key = std::fs::read_to_string(&public).unwrap_or_else(|e| panic!("read {}: {e}", public.display()));
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        format!("[127.0.0.1]:{} {}\n", self.port, key.join(" "))
    }

    /// An ssh URL of a repository at the absolute path `repo`:
    /// `ssh://USER@127.0.0.1:PORT/abs/path`.
    pub fn url(&self, repo: &Path) -> String {
        assert!(repo.is_absolute(), "a repository served over ssh needs an absolute path, not {}", repo.display());
        format!("ssh://{}@127.0.0.1:{}{}", self.user, self.port, repo.display())
    }

    /// The last lines of sshd's log (authentication failures, the commands
    /// sessions ran).
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }
}

/// Makes an ed25519 key pair with ssh-keygen (no passphrase) at `path` and
/// `path.pub`, replacing any there; returns (private key text, public key
/// text).
pub fn keypair(path: &Path) -> (String, String) {
    let public = path.with_file_name(format!("{}.pub", path.file_name().expect("a key file name").to_string_lossy()));
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(&public);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "drover-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run ssh-keygen (apt-get install openssh-client): {e}"));
    assert!(out.status.success(), "ssh-keygen for {} failed: {}", path.display(), text(&out.stderr));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    (read(path), read(&public))
}

/// The sshd binary: it must be started by its absolute path (it re-executes
/// itself), and /usr/sbin may not be on a normal user's PATH.
fn sshd_path() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/sshd");
    if sbin.exists() {
        return sbin;
    }
    which("sshd").unwrap_or_else(|| {
        panic!("sshd is not installed: `apt-get install openssh-server` (the README's test command does)")
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// The name of the user this process runs as.
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run `id -un`");
    assert!(out.status.success(), "`id -un` failed (no passwd entry for this uid?): {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// Whether an SSH server answers on 127.0.0.1:`port` with its banner.
fn banner(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::TempDir;

    /// Runs git in `cwd`, with `ssh` as its GIT_SSH_COMMAND; returns its output.
    fn git(cwd: &Path, ssh: &str, args: &[&str]) -> std::process::Output {
        Command::new("git")
            .current_dir(cwd)
            .args(["-c", "user.name=Drover Test", "-c", "user.email=test@drover.invalid"])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .env("GIT_SSH_COMMAND", ssh)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .output()
            .expect("run git")
    }

    #[test]
    fn sshd_lets_in_the_deploy_key_only() {
        let tmp = TempDir::new("sshd");
        let dir = tmp.path();
        let bare = dir.join("repo.git");
        let ssh = |key: &Path| {
            format!(
                "ssh -i '{}' -o IdentitiesOnly=yes -o UserKnownHostsFile='{}' -o StrictHostKeyChecking=yes -o BatchMode=yes",
                key.display(),
                dir.join("known_hosts").display()
            )
        };
        let ok = |out: std::process::Output, what: &str| {
            assert!(out.status.success(), "{what} failed: {}", text(&out.stderr));
            text(&out.stdout)
        };
        ok(git(dir, "false", &["init", "-q", "--bare", bare.to_str().unwrap()]), "git init --bare");
        let (_, public) = keypair(&dir.join("deploy_key"));
        let sshd = Sshd::start(&dir.join("sshd"), &public);
        std::fs::write(dir.join("known_hosts"), sshd.known_hosts()).expect("write known_hosts");
        let url = sshd.url(&bare);
        let deploy = ssh(&dir.join("deploy_key"));

        ok(git(dir, "false", &["init", "-q", "work"]), "git init");
        let work = dir.join("work");
        ok(git(&work, "false", &["commit", "-q", "--allow-empty", "-m", "over ssh"]), "git commit");
        let commit = ok(git(&work, "false", &["rev-parse", "HEAD"]), "git rev-parse");
        let out = git(&work, &deploy, &["push", &url, "HEAD:refs/heads/main"]);
        assert!(out.status.success(), "push failed: {}\nsshd's log:\n{}", text(&out.stderr), sshd.log_tail());

        ok(git(dir, &deploy, &["clone", "-q", "--branch", "main", &url, "clone"]), "git clone over ssh");
        let cloned = ok(git(&dir.join("clone"), "false", &["rev-parse", "HEAD"]), "git rev-parse in the clone");
        assert_eq!(cloned, commit, "the clone has the pushed commit");

        keypair(&dir.join("other_key"));
        let out = git(&work, &ssh(&dir.join("other_key")), &["push", &url, "HEAD:refs/heads/other"]);
        assert!(!out.status.success(), "a push with a key that is not authorized succeeded");
        assert!(
            text(&out.stderr).contains("Permission denied (publickey)"),
            "the push failed for another reason than the key: {}",
            text(&out.stderr)
        );
    }
}
