//! Every coordinator's view of who may hold an agent session: the deny list
//! and each enrolled agent's current certificates, read from the store and
//! then followed with a watch on `/identity/`, so a session is checked in
//! memory and a revocation written on any coordinator reaches every other
//! within a watch event. A name put on the deny list is broadcast to the
//! sessions ([`Gate::subscribe`]), which close themselves.
//!
//! The CA ring (`/identity/ca`) is read and followed with the rest, and
//! handed to the coordinator's [`Keyring`] as it changes.
//!
//! Until the first read has succeeded every session is refused as
//! unavailable (agents retry): admitting agents before the deny list is
//! known would let a revoked one in after a restart.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::broadcast;
use tracing::warn;

use super::ca::Keyring;
use crate::core::authz::Caller;
use crate::core::ca::{CaRing, renew_soon};
use crate::core::identity::{Denial, IdentityRecord, Refusal, UserRecord, admit, user_role};
use crate::core::keys;
use crate::store::{EventKind, Store, StoreError, WatchMessage, decode};
use drover_pki::peer::{Peer, Presented};

#[derive(Debug, Default)]
struct Known {
    loaded: bool,
    identities: HashMap<String, IdentityRecord>,
    denied: HashMap<String, Denial>,
    users: HashMap<String, UserRecord>,
}

#[derive(Debug)]
pub struct Gate {
    known: RwLock<Known>,
    denied_tx: broadcast::Sender<String>,
    /// Bumped at every change of a user's record, for the streams a user
    /// holds open (`api::streams::while_allowed`).
    users_tx: tokio::sync::watch::Sender<u64>,
    /// Where the CA ring goes (none in tests of the rest).
    keyring: Option<Arc<Keyring>>,
}

/// Why a session was not let in.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("this coordinator has not read the agents' deny list yet; retry shortly")]
    NotLoaded,
}

impl Gate {
    /// A gate that follows `store` from now on, in a task of its own that
    /// ends when the store's watch cannot be had for good (never, in
    /// practice: it retries every second).
    pub fn spawn(store: Arc<dyn Store>, keyring: Arc<Keyring>) -> Arc<Gate> {
        let gate = Arc::new(Gate { keyring: Some(keyring), ..Gate::empty() });
        tokio::spawn(follow(store, gate.clone()));
        gate
    }

    fn empty() -> Gate {
        let (denied_tx, _) = broadcast::channel(1024);
        let (users_tx, _) = tokio::sync::watch::channel(0);
        Gate { known: RwLock::new(Known::default()), denied_tx, users_tx, keyring: None }
    }

    /// The coordinator's CAs (none in tests of the rest).
    pub fn keyring(&self) -> Option<&Arc<Keyring>> {
        self.keyring.as_ref()
    }

    /// Whether agent `name` presenting certificate `serial` may hold a
    /// session (see `core::identity::admit`).
    pub fn admit(&self, name: &str, serial: &str) -> Result<(), GateError> {
        let known = self.known.read().expect("gate lock");
        if !known.loaded {
            return Err(GateError::NotLoaded);
        }
        Ok(admit(name, serial, known.identities.get(name), known.denied.get(name))?)
    }

    /// Who presents `cert` on the control API: an administrator, a user
    /// with its role now (none when removed or replaced), an agent.
    pub fn caller(&self, cert: &Presented) -> Caller {
        match &cert.peer {
            Peer::Admin(name) => Caller::Admin(name.clone()),
            Peer::Agent(name) => Caller::Agent(name.clone()),
            Peer::Other { org, name } => Caller::Other { org: org.clone(), name: name.clone() },
            // A coordinator may only relay agents' calls (`api::guard`):
            // on its own it may do nothing.
            Peer::Coordinator(name) => {
                Caller::Other { org: drover_pki::COORDINATORS_ORG.to_string(), name: name.clone() }
            }
            Peer::User(name) => self.user(name, &cert.serial),
        }
    }

    fn user(&self, name: &str, serial: &str) -> Caller {
        let known = self.known.read().expect("gate lock");
        let role = if known.loaded {
            user_role(name, serial, known.users.get(name))
        } else {
            Err(GateError::NotLoaded.to_string())
        };
        Caller::User { name: name.to_owned(), role }
    }

    /// When the holder of `serial` should renew (its current certificate's
    /// half life, or within half a minute when its CA is retiring; at once
    /// for the one before); 0 for a hand-issued one.
    pub fn renew_at_ms(&self, name: &str, serial: &str, now_ms: i64) -> i64 {
        let ring = self.keyring.as_ref().and_then(|k| k.trust().ring.clone());
        let known = self.known.read().expect("gate lock");
        match known.identities.get(name) {
            Some(i) if i.serial == serial => match ring {
                Some(ring) if ring.must_renew(&i.ca) => i.renew_at_ms().min(renew_soon(name, now_ms)),
                _ => i.renew_at_ms(),
            },
            Some(i) if i.previous_serial == serial => 1,
            _ => 0,
        }
    }

    /// A change to users' records (added, removed, a role or certificate
    /// changed): look the caller up again with [`Gate::caller`].
    pub fn users_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.users_tx.subscribe()
    }

    /// Names as they are put on the deny list. A receiver that lags must
    /// check its own name again with [`Gate::admit`].
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.denied_tx.subscribe()
    }

    /// Replaces what is known with a full read.
    fn load(&self, mut read: Known) {
        let newly: Vec<String> = {
            let mut known = self.known.write().expect("gate lock");
            let newly = read.denied.keys().filter(|n| !known.denied.contains_key(*n)).cloned().collect();
            read.loaded = true;
            *known = read;
            newly
        };
        for name in newly {
            let _ = self.denied_tx.send(name);
        }
        self.users_tx.send_modify(|n| *n += 1);
    }

    fn apply(&self, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        if key == keys::CA_RING {
            let ring = value.map(|v| decode::<CaRing>(key, v)).transpose()?;
            if let Some(keyring) = &self.keyring {
                keyring.apply(ring);
            }
        } else if let Some(name) = key.strip_prefix(keys::DENIED) {
            let denial = value.map(|v| decode::<Denial>(key, v)).transpose()?;
            let mut known = self.known.write().expect("gate lock");
            match denial {
                Some(d) => {
                    known.denied.insert(name.to_owned(), d);
                    drop(known);
                    let _ = self.denied_tx.send(name.to_owned());
                }
                None => {
                    known.denied.remove(name);
                }
            }
        } else if let Some(name) = key.strip_prefix(keys::IDENTITIES) {
            let identity = value.map(|v| decode::<IdentityRecord>(key, v)).transpose()?;
            let mut known = self.known.write().expect("gate lock");
            match identity {
                Some(i) => known.identities.insert(name.to_owned(), i),
                None => known.identities.remove(name),
            };
        } else if let Some(name) = key.strip_prefix(keys::USERS) {
            let user = value.map(|v| decode::<UserRecord>(key, v)).transpose()?;
            let mut known = self.known.write().expect("gate lock");
            match user {
                Some(u) => known.users.insert(name.to_owned(), u),
                None => known.users.remove(name),
            };
            drop(known);
            self.users_tx.send_modify(|n| *n += 1);
        }
        Ok(())
    }
}

/// Reads `/identity/` whole, then follows it; starts over on a compaction,
/// a broken watch or an unreadable record, a second later.
async fn follow(store: Arc<dyn Store>, gate: Arc<Gate>) {
    loop {
        if let Err(e) = follow_once(store.as_ref(), &gate).await {
            warn!(error = %e, "cannot follow the agents' deny list; reading it again in 1s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_once(store: &dyn Store, gate: &Gate) -> Result<(), StoreError> {
    let (kvs, revision) = store.range(keys::IDENTITY).await?;
    let mut read = Known::default();
    let mut ring = None;
    for kv in &kvs {
        if kv.key == keys::CA_RING {
            ring = Some(decode::<CaRing>(&kv.key, &kv.value)?);
        } else if let Some(name) = kv.key.strip_prefix(keys::DENIED) {
            read.denied.insert(name.to_owned(), decode::<Denial>(&kv.key, &kv.value)?);
        } else if let Some(name) = kv.key.strip_prefix(keys::IDENTITIES) {
            read.identities.insert(name.to_owned(), decode::<IdentityRecord>(&kv.key, &kv.value)?);
        } else if let Some(name) = kv.key.strip_prefix(keys::USERS) {
            read.users.insert(name.to_owned(), decode::<UserRecord>(&kv.key, &kv.value)?);
        }
    }
    if let Some(keyring) = &gate.keyring {
        keyring.apply(ring);
    }
    gate.load(read);
    let mut watch = store.watch(keys::IDENTITY, revision + 1).await?;
    while let Some(message) = watch.recv().await {
        match message {
            WatchMessage::Events(events) => {
                for event in events {
                    let value = (event.kind == EventKind::Put).then_some(event.kv.value.as_slice());
                    gate.apply(&event.kv.key, value)?;
                }
            }
            WatchMessage::Compacted { .. } => return Ok(()),
        }
    }
    Err(StoreError::Unavailable("the watch on /identity/ ended".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_put_on_the_deny_list_is_broadcast_and_refused() {
        let gate = Gate::empty();
        assert!(matches!(gate.admit("a1", "01"), Err(GateError::NotLoaded)));
        gate.load(Known::default());
        assert!(gate.admit("a1", "01").is_ok());
        let mut rx = gate.subscribe();
        let denial = Denial { ban: false, by: "admin:root".into(), at_ms: 1 };
        gate.apply(&keys::denied("a1"), Some(&serde_json::to_vec(&denial).unwrap())).unwrap();
        assert_eq!(rx.try_recv().unwrap(), "a1");
        let err = gate.admit("a1", "01").unwrap_err().to_string();
        assert!(err.contains("agent \"a1\" was revoked"), "{err}");
        assert!(gate.admit("a2", "01").is_ok());
        gate.apply(&keys::denied("a1"), None).unwrap();
        assert!(gate.admit("a1", "01").is_ok());
        // A full read that finds a new denial broadcasts it too.
        gate.load(Known { denied: HashMap::from([("a3".to_owned(), denial)]), ..Known::default() });
        assert_eq!(rx.try_recv().unwrap(), "a3");
        assert!(gate.apply(&keys::denied("a4"), Some(b"junk")).is_err());
    }

    #[test]
    fn a_user_is_its_role_with_its_current_certificate_and_nothing_once_removed() {
        use crate::core::authz::Role;
        let gate = Gate::empty();
        let cert = |serial: &str| Presented {
            peer: Peer::User("bob".into()),
            serial: serial.into(),
            not_before_ms: 0,
            not_after_ms: 1,
            sans: 0,
            issuer: Vec::new(),
        };
        assert!(matches!(gate.caller(&cert("0a")), Caller::User { role: Err(_), .. }), "before the first read");
        gate.load(Known::default());
        let user = UserRecord {
            role: Role::Operator,
            created_by: "admin:root".into(),
            created_ms: 1,
            updated_by: String::new(),
            updated_ms: 0,
            serial: "0a".into(),
            not_after_ms: 10,
            ca: String::new(),
        };
        gate.apply(&keys::user("bob"), Some(&serde_json::to_vec(&user).unwrap())).unwrap();
        assert_eq!(gate.caller(&cert("0a")).role(), Some(Role::Operator));
        assert_eq!(gate.caller(&cert("0b")).role(), None);
        gate.apply(&keys::user("bob"), None).unwrap();
        assert_eq!(gate.caller(&cert("0a")).role(), None);
        let admin = Presented { peer: Peer::Admin("root".into()), ..cert("") };
        assert_eq!(gate.caller(&admin), Caller::Admin("root".into()));
    }
}
