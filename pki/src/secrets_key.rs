//! The key that seals secrets at rest: 32 random bytes, written as 64 hex
//! digits to `DIR/coordinator/secrets.key` by `drover certs init` (or
//! `drover certs secrets-key` for a directory made before it existed),
//! mode 0600, and read only by coordinators (`--secrets-key-file`, which
//! defaults to `secrets.key` in `--tls-dir`).
//!
//! Every coordinator of a cluster needs the same key: copy the file with the
//! coordinator's other keys. Losing it loses every secret (set them again);
//! a key file readable by group or others is refused, as ssh refuses such
//! a private key.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

/// The key file's name in the coordinator's directory.
pub const FILE: &str = "secrets.key";
/// The key's length in bytes.
pub const KEY_LEN: usize = 32;

/// Why the key file could not be made or read; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretsKeyError {
    #[error("{} already exists; it seals every stored secret, so it is never replaced", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot make a random key: the system's random source failed")]
    Random,
    #[error(
        "cannot read the secrets key {}: {source}; make one with `drover certs secrets-key --dir DIR` \
         (or point --secrets-key-file at the file)",
        .path.display()
    )]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "the secrets key {} may be read by others (mode {mode:o}); run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the secrets key {} is not {} hex digits; it may be damaged (make it again and set every secret again)", .path.display(), KEY_LEN * 2)]
    Invalid { path: PathBuf },
}

/// Writes a new random key to `path`, mode 0600; never replaces a file.
pub fn generate(path: &Path) -> Result<(), SecretsKeyError> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new().fill(&mut key).map_err(|_| SecretsKeyError::Random)?;
    let text: String = key.iter().map(|b| format!("{b:02x}")).chain(std::iter::once("\n".to_owned())).collect();
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            SecretsKeyError::Exists(path.to_path_buf())
        } else {
            SecretsKeyError::Write { path: path.to_path_buf(), source }
        }
    })?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|source| {
        let _ = std::fs::remove_file(path);
        SecretsKeyError::Write { path: path.to_path_buf(), source }
    })
}

/// Reads the key at `path`, refusing one that group or others may read.
pub fn load(path: &Path) -> Result<[u8; KEY_LEN], SecretsKeyError> {
    let read = |source| SecretsKeyError::Read { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(read)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretsKeyError::Permissions { path: path.to_path_buf(), mode });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let hex = text.trim();
    let invalid = || SecretsKeyError::Invalid { path: path.to_path_buf() };
    if hex.len() != KEY_LEN * 2 || !hex.is_ascii() {
        return Err(invalid());
    }
    let mut key = [0u8; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("drover-secrets-key-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_key_is_made_once_private_and_read_back() {
        let dir = temp("roundtrip");
        let path = dir.join(FILE);
        generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let key = load(&path).unwrap();
        assert_ne!(key, [0u8; KEY_LEN]);
        assert!(matches!(generate(&path), Err(SecretsKeyError::Exists(_))));
        assert_eq!(load(&path).unwrap(), key, "an existing key is never replaced");

        let other = dir.join("other.key");
        generate(&other).unwrap();
        assert_ne!(load(&other).unwrap(), key, "each key is random");
    }

    #[test]
    fn a_readable_missing_or_damaged_key_is_refused_with_what_to_do() {
        let dir = temp("bad");
        let path = dir.join(FILE);
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("drover certs secrets-key"), "{err}");

        generate(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("mode 644") && err.contains("chmod 600"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "abc\n").unwrap();
        assert!(matches!(load(&path), Err(SecretsKeyError::Invalid { .. })));
        std::fs::write(&path, "zz".repeat(KEY_LEN)).unwrap();
        assert!(matches!(load(&path), Err(SecretsKeyError::Invalid { .. })));
    }
}
