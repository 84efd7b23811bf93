//! The CAs a coordinator trusts and signs with, and their rotation
//! (`drover ca rotate`, `drover ca status`).
//!
//! Before the first rotation they are the files': `ca.pem` in `--tls-dir`
//! to trust, and `ca-key.pem` (or `--ca-key`) to sign. The first `add`
//! writes the ring (`core::ca::CaRing`, under `/identity/ca`) with both the
//! files' CA and a new one, each key sealed under the secrets key, so every
//! coordinator with the same `--secrets-key-file` can sign with either;
//! from then on the ring is the truth and the files only a start.
//!
//! [`Keyring`] is one coordinator's view: the gate (`gate.rs`) hands it
//! every version of the ring it reads, and it opens the signing CA's key
//! and publishes a [`Trust`] (the signer, the CAs trusted, the bundle)
//! that the TLS listener (its client roots and its own certificate,
//! `crate::tls::renew_forever`), the enrollments and renewals
//! ([`super::Signing`]) and the agents' sessions (a `Trust` message) follow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use drover_pki::enroll::{Authority, CaCert};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{IdentityError, encode, get, unchanged};
use crate::audit::{self, Entry};
use crate::core::ca::{CaRing, CaState, Input, Phase, RingCa, step};
use crate::core::identity::{IdentityRecord, UserRecord};
use crate::core::keys;
use crate::secrets::{Sealed, Vault};
use crate::store::{KeyValue, Op, Store, Txn, decode};

/// One trusted CA as this coordinator sees it.
#[derive(Debug, Clone)]
pub struct TrustedCa {
    pub cert: CaCert,
    pub state: CaState,
}

/// What this coordinator trusts and signs with now.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The ring, once a rotation has begun.
    pub ring: Option<Arc<CaRing>>,
    /// The CA that signs (none: no key, or it could not be opened).
    pub signer: Option<Arc<Authority>>,
    /// The signing CA first.
    pub cas: Vec<TrustedCa>,
    /// Why the signing CA's key could not be opened, if it could not.
    pub problem: Option<String>,
}

impl Trust {
    /// Before any rotation: the files' CA, which signs when the
    /// coordinator has its key.
    fn from_files(signer: Option<Arc<Authority>>, ca: &CaCert) -> Trust {
        let cas = vec![TrustedCa { cert: ca.clone(), state: CaState::Signing }];
        Trust { ring: None, signer, cas, problem: None }
    }
    /// The phase (steady before any rotation).
    pub fn phase(&self) -> Phase {
        self.ring.as_ref().map_or(Phase::Steady, |r| r.phase)
    }

    /// The CA that signed records that name none.
    pub fn original_pin(&self) -> &str {
        match &self.ring {
            Some(ring) => &ring.original_pin,
            None => self.cas.first().map_or("", |c| c.cert.pin.as_str()),
        }
    }

    /// Every trusted CA's certificate, PEM, the signing one first.
    pub fn bundle(&self) -> String {
        let mut out = String::new();
        for ca in &self.cas {
            out.push_str(ca.cert.pem.trim_end());
            out.push('\n');
        }
        out
    }

    /// What to send agents as their trust: the bundle once a ring exists
    /// (before, their `ca.pem` is left as the operator made it).
    pub fn agents_bundle(&self) -> String {
        if self.ring.is_some() { self.bundle() } else { String::new() }
    }

    /// The pin of the signing CA.
    pub fn signing_pin(&self) -> Option<&str> {
        self.signer.as_ref().map(|a| a.pin())
    }
}

/// The CAs of one coordinator, and the agents connected to it by the CA of
/// their certificates (for `drover ca status`).
pub struct Keyring {
    files: Option<Arc<Authority>>,
    files_ca: CaCert,
    vault: Arc<Vault>,
    tx: watch::Sender<Arc<Trust>>,
    connected: Mutex<HashMap<u64, Vec<u8>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("trust", &self.trust()).finish_non_exhaustive()
    }
}

/// A session counted as connected until this is dropped.
pub struct Connected {
    keyring: Arc<Keyring>,
    conn: u64,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.keyring.connected.lock().expect("keyring lock").remove(&self.conn);
    }
}

/// The owner a CA's key is sealed for.
fn owner(pin: &str) -> String {
    format!("ca:{pin}")
}

impl Keyring {
    /// The files' CA (`ca.pem` in the TLS directory) and, when the
    /// coordinator has its key, the authority made of it and the key.
    pub fn new(files: Option<Arc<Authority>>, files_ca: CaCert, vault: Arc<Vault>) -> Arc<Keyring> {
        let trust = Trust::from_files(files.clone(), &files_ca);
        let (tx, _) = watch::channel(Arc::new(trust));
        Arc::new(Keyring { files, files_ca, vault, tx, connected: Mutex::default() })
    }

    pub fn trust(&self) -> Arc<Trust> {
        self.tx.borrow().clone()
    }

    pub fn signer(&self) -> Option<Arc<Authority>> {
        self.trust().signer.clone()
    }

    /// Every change of trust from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Trust>> {
        self.tx.subscribe()
    }

    /// Counts an agent's session (`conn`, its certificate's issuer) until
    /// the guard is dropped.
    pub fn connected(self: &Arc<Self>, conn: u64, issuer: Vec<u8>) -> Connected {
        self.connected.lock().expect("keyring lock").insert(conn, issuer);
        Connected { keyring: self.clone(), conn }
    }

    /// How many sessions present a certificate `ca` signed.
    pub fn connected_to(&self, ca: &CaCert) -> usize {
        self.connected.lock().expect("keyring lock").values().filter(|issuer| ca.signed(issuer)).count()
    }

    /// A version of the ring read from the store (none: no rotation yet).
    pub fn apply(&self, ring: Option<CaRing>) {
        let trust = match ring {
            None => Trust::from_files(self.files.clone(), &self.files_ca),
            Some(ring) => self.open(ring),
        };
        let before = self.trust();
        let changed = before.ring.as_deref() != trust.ring.as_deref()
            || before.signing_pin() != trust.signing_pin()
            || before.problem != trust.problem;
        if !changed {
            return;
        }
        match (&trust.ring, &trust.problem) {
            (_, Some(problem)) => warn!(%problem, "cannot sign with the CA ring's signing CA"),
            (Some(ring), None) => info!(
                phase = ring.phase.as_str(),
                signing = trust.signing_pin().unwrap_or(""),
                trusted = trust.cas.len(),
                "the CA ring changed"
            ),
            (None, None) => {}
        }
        self.tx.send_replace(Arc::new(trust));
    }

    fn open(&self, ring: CaRing) -> Trust {
        let mut cas = Vec::new();
        let mut signer = None;
        let mut problem = None;
        for ca in &ring.cas {
            let cert = match CaCert::parse(&ca.cert_pem) {
                Ok(cert) => cert,
                Err(e) => {
                    problem = Some(format!("CA {} in the ring is not a certificate: {e}", ca.pin));
                    continue;
                }
            };
            if ca.state == CaState::Signing {
                match self.open_key(ca) {
                    Ok(authority) => signer = Some(Arc::new(authority)),
                    Err(e) => problem = Some(e),
                }
            }
            cas.push(TrustedCa { cert, state: ca.state });
        }
        cas.sort_by_key(|c| c.state != CaState::Signing);
        Trust { ring: Some(Arc::new(ring)), signer, cas, problem }
    }

    fn open_key(&self, ca: &RingCa) -> Result<Authority, String> {
        let sealed = Sealed { nonce: ca.key_nonce.clone(), sealed: ca.sealed_key.clone() };
        let key = self.vault.open_sealed(&owner(&ca.pin), &sealed).map_err(|e| {
            format!(
                "the key of CA {} cannot be opened ({e}); every coordinator needs the same secrets key \
                 (--secrets-key-file) to sign with a rotated CA",
                ca.pin
            )
        })?;
        let key = String::from_utf8(key).map_err(|_| format!("the key of CA {} is not PEM", ca.pin))?;
        Authority::from_pem(&ca.cert_pem, &key).map_err(|e| format!("CA {}: {e}", ca.pin))
    }

    fn seal(&self, authority: &Authority, state: CaState, now_ms: i64) -> Result<RingCa, IdentityError> {
        let sealed = self.vault.seal(&owner(authority.pin()), authority.key_pem().as_bytes()).map_err(|e| {
            IdentityError::Precondition(format!(
                "a CA rotation keeps the CA keys in the store, sealed under the secrets key, and this \
                 coordinator cannot seal: {e}; give every coordinator the same --secrets-key-file"
            ))
        })?;
        Ok(RingCa {
            pin: authority.pin().to_owned(),
            cert_pem: authority.ca_pem().to_owned(),
            key_nonce: sealed.nonce,
            sealed_key: sealed.sealed,
            state,
            created_ms: now_ms,
        })
    }

    /// One phase of a rotation, by `by` from `source`: the ring read, the
    /// phase checked by `core::ca::step`, the new ring and its audit entry
    /// written in one transaction that holds the ring as it was read.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        phase: &str,
        force: bool,
        (by, source): (&str, Option<std::net::SocketAddr>),
        now_ms: i64,
    ) -> Result<CaRing, IdentityError> {
        let seen: Option<(CaRing, KeyValue)> = get(store, keys::CA_RING).await?;
        let ring = match &seen {
            Some((ring, _)) => ring.clone(),
            None => {
                let files = self.files.as_deref().ok_or(IdentityError::NoAuthority)?;
                CaRing::steady(self.seal(files, CaState::Signing, now_ms)?, now_ms, by)
            }
        };
        let input = match phase {
            "add" => {
                let new = Authority::generate(now_ms)?;
                Input::Add(self.seal(&new, CaState::Trusted, now_ms)?)
            }
            "reissue" => Input::Reissue,
            "remove" => Input::Remove { pending: pending(store, &ring, now_ms).await?, force },
            other => {
                return Err(IdentityError::Invalid(format!(
                    "unknown phase {other:?}: a rotation goes add, then reissue, then remove"
                )));
            }
        };
        let result = step(&ring, input, now_ms, by);
        let next = match result {
            Ok(next) => next,
            Err(e) => {
                let entry = Entry::refused(now_ms, by, "ca.rotate", phase, &e.to_string()).source(source);
                audit::record(store, entry).await;
                return Err(IdentityError::Precondition(e.to_string()));
            }
        };
        let detail = format!(
            "phase {}; signing {}; trusted {}",
            next.phase.as_str(),
            next.signing().map_or("none", |c| c.pin.as_str()),
            next.cas.len()
        );
        let entry = Entry::ok(now_ms, by, "ca.rotate", phase).source(source).detail(&detail);
        let txn = Txn {
            compare: vec![unchanged(keys::CA_RING, &seen)],
            success: vec![Op::put(keys::CA_RING.to_owned(), encode(&next)), audit::op(&entry)],
            failure: Vec::new(),
        };
        if !store.txn(txn).await?.succeeded {
            return Err(IdentityError::Precondition(
                "the CA ring changed while this phase was being written (another rotation?); see `drover ca status`"
                    .into(),
            ));
        }
        // At once here; the other coordinators follow through the gate.
        self.apply(Some(next.clone()));
        Ok(next)
    }
}

/// Who holds a certificate of each CA: enrolled agents (not on the deny
/// list) and users whose certificate is still valid, by the pin of its CA (`original` for a
/// record from before CAs were recorded).
pub async fn holders(store: &dyn Store, original: &str, now_ms: i64) -> Result<Holders, IdentityError> {
    let resolve = |ca: &str| -> String { if ca.is_empty() { original } else { ca }.to_owned() };
    let mut holders = Holders::default();
    // A revoked or banned agent renews nothing, and none of its
    // certificates is accepted: it holds nothing up.
    let (denied, _) = store.range(keys::DENIED).await?;
    let denied: std::collections::HashSet<&str> = denied.iter().map(|kv| &kv.key[keys::DENIED.len()..]).collect();
    let (agents, _) = store.range(keys::IDENTITIES).await?;
    for kv in &agents {
        let i: IdentityRecord = decode(&kv.key, &kv.value)?;
        if i.not_after_ms > now_ms && !denied.contains(&kv.key[keys::IDENTITIES.len()..]) {
            *holders.agents.entry(resolve(&i.ca)).or_default() += 1;
        }
    }
    let (users, _) = store.range(keys::USERS).await?;
    for kv in &users {
        let u: UserRecord = decode(&kv.key, &kv.value)?;
        if !u.serial.is_empty() && u.not_after_ms > now_ms {
            *holders.users.entry(resolve(&u.ca)).or_default() += 1;
        }
    }
    Ok(holders)
}

/// Enrolled holders by the pin of their certificate's CA.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holders {
    pub agents: HashMap<String, u32>,
    pub users: HashMap<String, u32>,
}

/// How many enrolled identities hold a certificate of a CA that is not the
/// ring's signing one.
async fn pending(store: &dyn Store, ring: &CaRing, now_ms: i64) -> Result<usize, IdentityError> {
    let signing = ring.signing().map(|c| c.pin.clone()).unwrap_or_default();
    let holders = holders(store, &ring.original_pin, now_ms).await?;
    let left = |m: &HashMap<String, u32>| {
        m.iter().filter(|(pin, _)| **pin != signing).map(|(_, n)| *n as usize).sum::<usize>()
    };
    Ok(left(&holders.agents) + left(&holders.users))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};

    struct Setup {
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        /// A second coordinator's view, with the same secrets key and no
        /// CA key of its own.
        other: Arc<Keyring>,
        dir: std::path::PathBuf,
    }

    async fn setup(tag: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("drover-keyring-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        drover_pki::ca::init(&dir, &[]).unwrap();
        let tls = drover_pki::ca::coordinator_dir(&dir);
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.join("store"), EmbeddedOptions::default()).await.unwrap();
        let vault = Arc::new(Vault::open(store.clone(), &tls.join(drover_pki::secrets_key::FILE)));
        let files = Authority::load(&tls.join("ca.pem"), &tls.join("ca-key.pem")).unwrap();
        let files_ca = files.cert().clone();
        let keyring = Keyring::new(Some(Arc::new(files)), files_ca.clone(), vault.clone());
        let ca_pem = std::fs::read_to_string(tls.join("ca.pem")).unwrap();
        let other = Keyring::new(None, CaCert::parse(&ca_pem).unwrap(), vault);
        Setup { store, keyring, other, dir }
    }

    fn identity(ca: &str, not_after_ms: i64) -> Vec<u8> {
        encode(&IdentityRecord {
            name: "a1".into(),
            labels: Default::default(),
            serial: "01".into(),
            previous_serial: String::new(),
            not_before_ms: 0,
            not_after_ms,
            signed_ms: 0,
            enrolled_ms: 0,
            renewals: 0,
            token: "t".into(),
            ca: ca.into(),
        })
    }

    #[tokio::test]
    async fn a_rotation_moves_signing_to_a_new_ca_that_every_coordinator_with_the_secrets_key_opens() {
        let s = setup("rotate").await;
        let old = s.keyring.signer().unwrap().pin().to_owned();
        assert!(s.other.signer().is_none(), "no CA key, no ring: it cannot sign");
        assert_eq!(s.keyring.trust().agents_bundle(), "", "agents are sent nothing before a rotation");
        // An agent enrolled before CAs were recorded.
        s.store.txn(Txn::ops(vec![Op::put(keys::identity("a1"), identity("", 10_000))])).await.unwrap();

        let added = s.keyring.rotate(s.store.as_ref(), "add", false, ("admin:root", None), 1_000).await.unwrap();
        assert_eq!(added.phase, Phase::Added);
        assert_eq!(s.keyring.signer().unwrap().pin(), old, "the old CA signs until reissue");
        let trust = s.keyring.trust();
        assert_eq!(trust.cas.len(), 2);
        assert_eq!(trust.agents_bundle().matches("BEGIN CERTIFICATE").count(), 2);
        let stored = s.store.get(keys::CA_RING).await.unwrap().unwrap().value;
        assert!(!String::from_utf8_lossy(&stored).contains("PRIVATE KEY"), "the keys are sealed in the store");

        let reissuing =
            s.keyring.rotate(s.store.as_ref(), "reissue", false, ("admin:root", None), 2_000).await.unwrap();
        let new = reissuing.signing().unwrap().pin.clone();
        assert_ne!(new, old);
        assert_eq!(s.keyring.signer().unwrap().pin(), new);
        // The other coordinator, handed the ring, signs with the new CA too.
        s.other.apply(Some(reissuing.clone()));
        assert_eq!(s.other.signer().unwrap().pin(), new);
        assert!(reissuing.must_renew(""), "the agent from before must renew");

        // The agent still holds the old CA's certificate: remove waits.
        let err = s.keyring.rotate(s.store.as_ref(), "remove", false, ("admin:root", None), 3_000).await.unwrap_err();
        assert!(err.to_string().starts_with("1 enrolled identities still hold"), "{err}");
        let holders = holders(s.store.as_ref(), &reissuing.original_pin, 3_000).await.unwrap();
        assert_eq!(holders.agents.get(&old), Some(&1));
        // Renewed by the new CA, it holds nothing up.
        s.store.txn(Txn::ops(vec![Op::put(keys::identity("a1"), identity(&new, 10_000))])).await.unwrap();
        let steady = s.keyring.rotate(s.store.as_ref(), "remove", false, ("admin:root", None), 4_000).await.unwrap();
        assert_eq!(steady.phase, Phase::Steady);
        assert_eq!(s.keyring.trust().cas.len(), 1);
        assert_eq!(s.keyring.signer().unwrap().pin(), new);

        let err = s.keyring.rotate(s.store.as_ref(), "swap", false, ("admin:root", None), 5_000).await.unwrap_err();
        assert!(err.to_string().contains("a rotation goes add, then reissue, then remove"), "{err}");
        let (entries, _) = s.store.range(keys::AUDIT).await.unwrap();
        let text: String = entries.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect();
        assert_eq!(text.matches("\"ca.rotate\"").count(), 4, "three phases and one refusal: {text}");
        std::fs::remove_dir_all(&s.dir).unwrap();
    }

    #[tokio::test]
    async fn a_coordinator_that_cannot_open_the_signing_key_says_why_and_signs_nothing() {
        let s = setup("nokey").await;
        let ring = s.keyring.rotate(s.store.as_ref(), "add", false, ("admin:root", None), 1_000).await.unwrap();
        let dir = std::env::temp_dir().join(format!("drover-keyring-nokey-other-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let wrong = dir.join("secrets.key");
        drover_pki::secrets_key::generate(&wrong).unwrap();
        let files_ca = s.keyring.trust().cas[0].cert.clone();
        let stranger = Keyring::new(None, files_ca, Arc::new(Vault::open(s.store.clone(), &wrong)));
        stranger.apply(Some(ring));
        let trust = stranger.trust();
        assert!(trust.signer.is_none());
        assert_eq!(trust.cas.len(), 2, "it still trusts the ring's CAs");
        let problem = trust.problem.clone().unwrap();
        assert!(problem.contains("every coordinator needs the same secrets key"), "{problem}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&s.dir).unwrap();
    }
}
