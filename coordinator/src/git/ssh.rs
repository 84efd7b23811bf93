//! Git over ssh with a key of the caller's (an app's deploy key), never
//! the coordinator's own ssh setup: the key, the host keys it trusts and
//! nothing else (`-F /dev/null`, no agent, no other identity), with a host
//! key that is not listed refused rather than trusted on first use.

use std::path::{Path, PathBuf};

/// A private key and the known_hosts file ssh checks the server against,
/// as files the caller wrote (mode 0600).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAccess {
    pub key: PathBuf,
    pub known_hosts: PathBuf,
}

impl SshAccess {
    /// `GIT_SSH_COMMAND`, which git runs through the shell.
    pub fn command(&self) -> String {
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o UserKnownHostsFile={} \
             -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=30",
            quote(&self.key),
            quote(&self.known_hosts)
        )
    }
}

/// `path` as one shell word.
fn quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_quotes_its_paths_and_trusts_only_the_hosts_given() {
        let access = SshAccess { key: "/data/app keys/it's/key".into(), known_hosts: "/data/kh".into() };
        let command = access.command();
        assert!(command.contains(r"-i '/data/app keys/it'\''s/key'"), "{command}");
        assert!(command.contains("UserKnownHostsFile='/data/kh'"), "{command}");
        assert!(command.contains("StrictHostKeyChecking=yes"), "{command}");
    }
}
