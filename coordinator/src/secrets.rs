//! Secrets: values set with `drover secret set`, sealed at rest, opened
//! only to go into the `Assign` of an attempt whose job declares them.
//!
//! - **At rest.** Each value is sealed with ChaCha20-Poly1305 under the
//!   key file (`--secrets-key-file`, by default `secrets.key` in
//!   `--tls-dir`; see [`drover_pki::secrets_key`]) and stored under
//!   `/secrets/{name}` with who set it and when. The nonce is 96 random
//!   bits drawn for each write, and the secret's name is the associated
//!   data, so a sealed value moved to another name does not open.
//! - **Never returned.** No RPC returns a value: listing gives names, sizes,
//!   times and who set them. The only way out is [`Vault::resolve`], which
//!   the agent edge calls while it converts an `Assign`.
//! - **Resolved late.** A run's record holds only the names. Values are
//!   read when an attempt is sent, so a secret changed after submit reaches
//!   the next attempt, and one deleted fails it with a message naming it.
//! - **Any coordinator.** Reads and writes go straight to the store, so a
//!   follower serves `drover secret` as the leader does. Every coordinator
//!   of a cluster needs the same key file.
//!
//! Limits: [`MAX_SECRET_BYTES`] per value, [`MAX_SECRETS`] in all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::core::keys;
use crate::store::{Op, Store, StoreError, Txn};

/// The largest secret value, in bytes: a TLS key with its chain fits; a
/// file of data belongs in an artifact.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// The most secrets a cluster holds.
pub const MAX_SECRETS: usize = 1000;

/// The format of a sealed record; a new cipher or key rotation would be 2.
const VERSION: u32 = 1;

/// What `/secrets/{name}` holds.
#[derive(Serialize, Deserialize)]
struct SealedRecord {
    v: u32,
    /// Base64 of the 12-byte nonce.
    nonce: String,
    /// Base64 of the ciphertext and its 16-byte tag.
    sealed: String,
    /// The value's length in bytes.
    size: u64,
    updated_ms: u64,
    updated_by: String,
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub updated_ms: u64,
    pub updated_by: String,
    pub size: u64,
}

/// Why a secrets call failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("this coordinator cannot seal or open secrets: {0}")]
    NoKey(String),
    #[error(
        "secret {name:?} is {size} bytes, over the limit of {MAX_SECRET_BYTES} bytes (64 KiB); keep large \
         files in an artifact or a file the job fetches, and put only its key or token in a secret"
    )]
    TooLarge { name: String, size: usize },
    #[error("secret {0:?} is empty; a secret needs a value (pipe it in, or use --from-file)")]
    Empty(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("there are {MAX_SECRETS} secrets already, the limit; remove unused ones with `drover secret rm NAME`")]
    TooMany,
    #[error("secret {0:?} does not exist; `drover secret ls` lists them")]
    NotFound(String),
    #[error(
        "secret {name:?} cannot be opened ({why}): it was sealed under another key, or the store was \
         changed; set it again with `drover secret set {name}`"
    )]
    Corrupt { name: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sealing key and the store the sealed values live in.
pub struct Vault {
    /// The key, or why there is none (the key file's error, said on use).
    key: Result<LessSafeKey, String>,
    store: Arc<dyn Store>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("key", &self.key.as_ref().map(|_| "(set)")).finish_non_exhaustive()
    }
}

impl Vault {
    /// A vault with the key in `key_file`; when the file cannot be read,
    /// the vault works for listing and deleting, and says why on any call
    /// that needs the key (a coordinator without secrets still runs).
    pub fn open(store: Arc<dyn Store>, key_file: &Path) -> Vault {
        let key = drover_pki::secrets_key::load(key_file).map_err(|e| e.to_string()).map(|bytes| {
            LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte ChaCha20-Poly1305 key"))
        });
        Vault { key, store, rng: SystemRandom::new() }
    }

    /// Why there is no key, if there is none.
    pub fn key_problem(&self) -> Option<&str> {
        self.key.as_ref().err().map(String::as_str)
    }

    fn key(&self) -> Result<&LessSafeKey, SecretsError> {
        self.key.as_ref().map_err(|why| SecretsError::NoKey(why.clone()))
    }

    /// Creates or replaces secret `name`, set by `by` at `now_ms`.
    pub async fn set(&self, name: &str, value: &[u8], by: &str, now_ms: u64) -> Result<SecretInfo, SecretsError> {
        if let Some(problem) = drover_pipeline::secret_name_problem(name) {
            return Err(SecretsError::InvalidName(problem));
        }
        if value.is_empty() {
            return Err(SecretsError::Empty(name.to_owned()));
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretsError::TooLarge { name: name.to_owned(), size: value.len() });
        }
        let key = self.key()?;
        if self.store.get(&keys::secret(name)).await?.is_none() && self.list().await?.len() >= MAX_SECRETS {
            return Err(SecretsError::TooMany);
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretsError::NoKey("the system's random source failed".into()))?;
        let mut sealed = value.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad(name), &mut sealed)
            .map_err(|_| SecretsError::NoKey("sealing failed".into()))?;
        let record = SealedRecord {
            v: VERSION,
            nonce: STANDARD.encode(nonce),
            sealed: STANDARD.encode(&sealed),
            size: value.len() as u64,
            updated_ms: now_ms,
            updated_by: by.to_owned(),
        };
        let bytes = serde_json::to_vec(&record).expect("a sealed record serializes");
        self.store.txn(Txn::ops(vec![Op::put(keys::secret(name), bytes)])).await?;
        Ok(SecretInfo {
            name: name.to_owned(),
            updated_ms: now_ms,
            updated_by: by.to_owned(),
            size: value.len() as u64,
        })
    }

    /// Every secret, by name: never a value.
    pub async fn list(&self) -> Result<Vec<SecretInfo>, SecretsError> {
        let (kvs, _) = self.store.range(keys::SECRETS).await?;
        kvs.iter()
            .map(|kv| {
                let name = kv.key.strip_prefix(keys::SECRETS).unwrap_or(&kv.key).to_owned();
                let record = decode_record(&name, &kv.value)?;
                Ok(SecretInfo { name, updated_ms: record.updated_ms, updated_by: record.updated_by, size: record.size })
            })
            .collect()
    }

    /// The names of every secret, for the submit-time check of `secrets:`.
    pub async fn names(&self) -> Result<BTreeSet<String>, SecretsError> {
        let (kvs, _) = self.store.range(keys::SECRETS).await?;
        Ok(kvs.iter().map(|kv| kv.key.strip_prefix(keys::SECRETS).unwrap_or(&kv.key).to_owned()).collect())
    }

    /// Deletes secret `name`.
    pub async fn delete(&self, name: &str) -> Result<(), SecretsError> {
        let key = keys::secret(name);
        if self.store.get(&key).await?.is_none() {
            return Err(SecretsError::NotFound(name.to_owned()));
        }
        self.store.txn(Txn::ops(vec![Op::delete(key)])).await?;
        Ok(())
    }

    /// The values of the secrets `names`, and the names that do not exist.
    /// Only the agent edge calls this, for the `Assign` it is sending, and
    /// the apps controller, for an app's deploy key (`apps::access`).
    pub async fn resolve(&self, names: &[String]) -> Result<(BTreeMap<String, Vec<u8>>, Vec<String>), SecretsError> {
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        for name in names {
            let Some(kv) = self.store.get(&keys::secret(name)).await? else {
                missing.push(name.clone());
                continue;
            };
            values.insert(name.clone(), self.open_value(name, &kv.value)?);
        }
        Ok((values, missing))
    }

    fn open_value(&self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let key = self.key()?;
        let record = decode_record(name, bytes)?;
        let corrupt = |why: &str| SecretsError::Corrupt { name: name.to_owned(), why: why.to_owned() };
        if record.v != VERSION {
            return Err(corrupt(&format!("format version {} is not {VERSION}", record.v)));
        }
        let nonce: [u8; NONCE_LEN] = STANDARD
            .decode(&record.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| corrupt("its nonce is damaged"))?;
        let mut sealed = STANDARD.decode(&record.sealed).map_err(|_| corrupt("its ciphertext is not base64"))?;
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), aad(name), &mut sealed)
            .map_err(|_| corrupt("authentication failed"))?;
        Ok(plain.to_vec())
    }
}

/// A value sealed by [`Vault::seal`] for a record of its own (a
/// repository's webhook secret): only ciphertext, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Base64 of the 12-byte nonce.
    pub nonce: String,
    /// Base64 of the ciphertext and its 16-byte tag.
    pub sealed: String,
}

impl Vault {
    /// Seals `value` for the record `owner` (`repo:NAME`): the same cipher
    /// and key as secrets, with `owner` in the associated data, so it opens
    /// only as what it was sealed for. Such values are not secrets: `drover
    /// secret ls` never lists them, and no pipeline can ask for one.
    pub fn seal(&self, owner: &str, value: &[u8]) -> Result<Sealed, SecretsError> {
        let key = self.key()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretsError::NoKey("the system's random source failed".into()))?;
        let mut sealed = value.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), owned_aad(owner), &mut sealed)
            .map_err(|_| SecretsError::NoKey("sealing failed".into()))?;
        Ok(Sealed { nonce: STANDARD.encode(nonce), sealed: STANDARD.encode(&sealed) })
    }

    /// Opens what [`Vault::seal`] sealed for `owner`.
    pub fn open_sealed(&self, owner: &str, sealed: &Sealed) -> Result<Vec<u8>, SecretsError> {
        let key = self.key()?;
        let corrupt = |why: &str| SecretsError::Corrupt { name: owner.to_owned(), why: why.to_owned() };
        let nonce: [u8; NONCE_LEN] = STANDARD
            .decode(&sealed.nonce)
            .map_err(|_| corrupt("its nonce is not base64"))?
            .try_into()
            .map_err(|_| corrupt("its nonce is not 12 bytes"))?;
        let mut bytes = STANDARD.decode(&sealed.sealed).map_err(|_| corrupt("its ciphertext is not base64"))?;
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), owned_aad(owner), &mut bytes)
            .map_err(|_| corrupt("authentication failed"))?;
        Ok(plain.to_vec())
    }
}

/// The associated data of a value sealed for a record: never that of a
/// secret, so neither opens as the other.
fn owned_aad(owner: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("drover sealed v{VERSION} {owner}").into_bytes())
}

/// The associated data: the name, so a sealed value only opens as itself.
fn aad(name: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("drover secret v{VERSION} {name}").into_bytes())
}

fn decode_record(name: &str, bytes: &[u8]) -> Result<SealedRecord, SecretsError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SecretsError::Corrupt { name: name.to_owned(), why: format!("its record is not valid: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};

    async fn vault(name: &str) -> (Vault, Arc<dyn Store>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("drover-vault-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("secrets.key");
        drover_pki::secrets_key::generate(&key).unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.join("store"), EmbeddedOptions::default()).await.unwrap();
        (Vault::open(store.clone(), &key), store, dir)
    }

    #[tokio::test]
    async fn values_are_sealed_with_a_fresh_nonce_and_open_only_under_their_name_and_key() {
        let (vault, store, dir) = vault("roundtrip").await;
        let value = b"hunter2-the-password";
        let info = vault.set("TOKEN", value, "alice", 1000).await.unwrap();
        assert_eq!(info, SecretInfo { name: "TOKEN".into(), updated_ms: 1000, updated_by: "alice".into(), size: 20 });
        let stored = store.get(&keys::secret("TOKEN")).await.unwrap().unwrap().value;
        assert!(!stored.windows(value.len()).any(|w| w == value), "the store holds no plaintext");
        let (values, missing) = vault.resolve(&["TOKEN".into(), "GONE".into()]).await.unwrap();
        assert_eq!(values["TOKEN"], value);
        assert_eq!(missing, ["GONE"]);

        // The same value again: a new nonce, so a new ciphertext.
        vault.set("TOKEN", value, "bob", 2000).await.unwrap();
        let again = store.get(&keys::secret("TOKEN")).await.unwrap().unwrap().value;
        let nonce = |bytes: &[u8]| serde_json::from_slice::<SealedRecord>(bytes).unwrap().nonce;
        assert_ne!(nonce(&stored), nonce(&again));
        assert_eq!(vault.list().await.unwrap()[0].updated_by, "bob");

        // Moved to another name, it does not open.
        store.txn(Txn::ops(vec![Op::put(keys::secret("OTHER"), again.clone())])).await.unwrap();
        let err = vault.resolve(&["OTHER".into()]).await.unwrap_err().to_string();
        assert!(err.contains("authentication failed") && err.contains("drover secret set OTHER"), "{err}");

        // Under another key, it does not open either.
        let other_key = dir.join("other.key");
        drover_pki::secrets_key::generate(&other_key).unwrap();
        let other = Vault::open(store.clone(), &other_key);
        assert!(matches!(other.resolve(&["TOKEN".into()]).await, Err(SecretsError::Corrupt { .. })));
    }

    #[tokio::test]
    async fn bad_names_sizes_and_a_missing_key_are_refused_and_write_nothing() {
        let (vault, store, dir) = vault("bad").await;
        for (name, value, expect) in [
            ("my-token", &b"value"[..], "invalid secret name"),
            ("DROVER_X", b"value", "reserved prefix"),
            ("LD_PRELOAD", b"value", "may not be used"),
            ("EMPTY", b"", "is empty"),
        ] {
            let err = vault.set(name, value, "a", 1).await.unwrap_err().to_string();
            assert!(err.contains(expect), "{name}: {err}");
        }
        let big = vec![b'x'; 1024 * 1024];
        let err = vault.set("BIG", &big, "a", 1).await.unwrap_err().to_string();
        assert!(err.contains("1048576 bytes, over the limit of 65536 bytes"), "{err}");
        vault.set("EXACT", &big[..MAX_SECRET_BYTES], "a", 1).await.unwrap();
        assert_eq!(vault.names().await.unwrap(), ["EXACT".to_owned()].into());
        assert!(matches!(vault.delete("NOPE").await, Err(SecretsError::NotFound(_))));
        vault.delete("EXACT").await.unwrap();
        assert!(store.range(keys::SECRETS).await.unwrap().0.is_empty());

        let keyless = Vault::open(store.clone(), &dir.join("missing.key"));
        let err = keyless.set("TOKEN", b"value", "a", 1).await.unwrap_err().to_string();
        assert!(err.contains("cannot seal or open secrets") && err.contains("drover certs secrets-key"), "{err}");
        assert!(keyless.list().await.unwrap().is_empty(), "listing needs no key");
    }

    #[tokio::test]
    async fn values_sealed_for_a_record_open_only_for_it_and_are_not_secrets() {
        let (vault, _store, _dir) = vault("owned").await;
        let sealed = vault.seal("repo:web", b"hook-secret").unwrap();
        assert!(!sealed.sealed.contains("hook-secret"));
        assert_eq!(vault.open_sealed("repo:web", &sealed).unwrap(), b"hook-secret");
        let err = vault.open_sealed("repo:other", &sealed).unwrap_err().to_string();
        assert!(err.contains("authentication failed"), "{err}");
        assert!(vault.names().await.unwrap().is_empty(), "not listed as a secret");
    }
}
