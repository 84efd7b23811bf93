//! CA rotation, as a pure machine over the CA ring (`/identity/ca`).
//!
//! Until the first rotation there is no ring: the coordinators trust and
//! sign with the CA of their files (`ca.pem`, `ca-key.pem`). A rotation
//! goes in three phases, each a `drover ca rotate --phase`:
//!
//! ```text
//! steady    [A signing]                  add      -> a new CA B, trusted
//! added     [A signing, B trusted]       reissue  -> B signs; A retires
//! reissuing [B signing, A retiring]      remove   -> A is dropped
//! steady    [B signing]
//! ```
//!
//! Every phase keeps every live certificate valid: B is trusted everywhere
//! before anything it signs is shown, and A is dropped only once nothing
//! enrolled still holds a certificate A signed ([`step`] refuses `remove`
//! while any does, unless forced). The keys in the ring are sealed under
//! the secrets key, so every coordinator can sign with them; sealing is the
//! driver's business (`identity::ca`), this module only moves records.

use serde::{Deserialize, Serialize};

/// The phase of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// One CA, which signs.
    Steady,
    /// The new CA is trusted; the old one still signs.
    Added,
    /// The new CA signs; the old one is trusted until `remove`.
    Reissuing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Steady => "steady",
            Phase::Added => "added",
            Phase::Reissuing => "reissuing",
        }
    }
}

/// What one CA of the ring does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaState {
    Signing,
    Trusted,
    Retiring,
}

impl CaState {
    pub fn as_str(self) -> &'static str {
        match self {
            CaState::Signing => "signing",
            CaState::Trusted => "trusted",
            CaState::Retiring => "retiring",
        }
    }
}

/// One CA of the ring: its certificate, and its key sealed under the
/// secrets key (owner `ca:{pin}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingCa {
    pub pin: String,
    pub cert_pem: String,
    /// Base64 of the sealing nonce and of the sealed key.
    pub key_nonce: String,
    pub sealed_key: String,
    pub state: CaState,
    pub created_ms: i64,
}

/// `/identity/ca`: the CAs every coordinator trusts, and which one signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRing {
    pub phase: Phase,
    /// The signing CA first.
    pub cas: Vec<RingCa>,
    /// The pin of the CA of the files, which signed every certificate
    /// recorded before the first rotation (their records name no CA).
    pub original_pin: String,
    pub changed_ms: i64,
    pub changed_by: String,
}

/// A phase asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Trust a new CA (made and sealed by the driver).
    Add(RingCa),
    Reissue,
    /// Drop the retiring CA; `pending` identities still hold a
    /// certificate it signed.
    Remove {
        pending: usize,
        force: bool,
    },
}

/// Why a phase was refused; each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    #[error("a rotation is under way (phase {phase}); {next}")]
    Underway { phase: &'static str, next: &'static str },
    #[error("there is no rotation to {asked}: the phase is {phase}; {next}")]
    OutOfOrder { asked: &'static str, phase: &'static str, next: &'static str },
    #[error(
        "{pending} enrolled identities still hold a certificate of the retiring CA; wait for them to renew \
         (agents renew within a minute of `reissue`, users with `drover ca refresh`; see `drover ca status`), \
         revoke them, or give --force to cut them off"
    )]
    Pending { pending: usize },
}

/// What to run after `phase`.
fn next(phase: Phase) -> &'static str {
    match phase {
        Phase::Steady => "start one with `drover ca rotate --phase add`",
        Phase::Added => "run `drover ca rotate --phase reissue` next",
        Phase::Reissuing => "run `drover ca rotate --phase remove` once `drover ca status` shows nothing left to renew",
    }
}

impl CaRing {
    /// The ring of one CA, the files' (before the first rotation).
    pub fn steady(ca: RingCa, now_ms: i64, by: &str) -> CaRing {
        let original_pin = ca.pin.clone();
        CaRing {
            phase: Phase::Steady,
            cas: vec![RingCa { state: CaState::Signing, ..ca }],
            original_pin,
            changed_ms: now_ms,
            changed_by: by.to_owned(),
        }
    }

    /// The CA that signs.
    pub fn signing(&self) -> Option<&RingCa> {
        self.cas.iter().find(|c| c.state == CaState::Signing)
    }

    /// The CA a record's `ca` names (empty: the original one).
    pub fn resolve<'a>(&'a self, ca: &'a str) -> &'a str {
        if ca.is_empty() { &self.original_pin } else { ca }
    }

    /// Whether a certificate signed by `ca` (a record's) must be renewed
    /// soon: its CA is retiring.
    pub fn must_renew(&self, ca: &str) -> bool {
        self.phase == Phase::Reissuing && self.signing().is_some_and(|s| s.pin != self.resolve(ca))
    }

    /// Every CA's certificate, the signing one first: what clients trust.
    pub fn bundle(&self) -> String {
        let mut cas: Vec<&RingCa> = self.cas.iter().collect();
        cas.sort_by_key(|c| c.state != CaState::Signing);
        let mut out = String::new();
        for c in cas {
            out.push_str(c.cert_pem.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One phase of a rotation: the ring after it, or why not.
pub fn step(ring: &CaRing, input: Input, now_ms: i64, by: &str) -> Result<CaRing, RotateError> {
    let mut out = ring.clone();
    match (ring.phase, input) {
        (Phase::Steady, Input::Add(ca)) => {
            out.cas.push(RingCa { state: CaState::Trusted, ..ca });
            out.phase = Phase::Added;
        }
        (Phase::Added, Input::Reissue) => {
            for c in &mut out.cas {
                c.state = match c.state {
                    CaState::Signing => CaState::Retiring,
                    CaState::Trusted | CaState::Retiring => CaState::Signing,
                };
            }
            out.phase = Phase::Reissuing;
        }
        (Phase::Reissuing, Input::Remove { pending, force }) => {
            if pending > 0 && !force {
                return Err(RotateError::Pending { pending });
            }
            out.cas.retain(|c| c.state == CaState::Signing);
            out.phase = Phase::Steady;
        }
        (phase @ (Phase::Added | Phase::Reissuing), Input::Add(_)) => {
            return Err(RotateError::Underway { phase: phase.as_str(), next: next(phase) });
        }
        (phase, input) => {
            let asked = match input {
                Input::Add(_) => "add",
                Input::Reissue => "reissue",
                Input::Remove { .. } => "remove",
            };
            return Err(RotateError::OutOfOrder { asked, phase: phase.as_str(), next: next(phase) });
        }
    }
    out.cas.sort_by_key(|c| c.state != CaState::Signing);
    out.changed_ms = now_ms;
    out.changed_by = by.to_owned();
    Ok(out)
}

/// How far apart the agents told to renew at once are spread, so that a
/// `reissue` does not bring every renewal into the same second.
pub const RENEW_SPREAD_MS: i64 = 30_000;

/// When an identity whose CA is retiring should renew: within
/// [`RENEW_SPREAD_MS`] of `now_ms`, at a point its name picks.
pub fn renew_soon(name: &str, now_ms: i64) -> i64 {
    // FNV-1a: stable across processes, unlike the standard hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    now_ms + 1 + (hash % RENEW_SPREAD_MS as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(pin: &str) -> RingCa {
        RingCa {
            pin: pin.into(),
            cert_pem: format!("CERT {pin}\n"),
            key_nonce: String::new(),
            sealed_key: String::new(),
            state: CaState::Trusted,
            created_ms: 1,
        }
    }

    fn states(ring: &CaRing) -> Vec<(String, CaState)> {
        ring.cas.iter().map(|c| (c.pin.clone(), c.state)).collect()
    }

    #[test]
    fn a_rotation_adds_then_signs_with_then_keeps_only_the_new_ca() {
        let start = CaRing::steady(ca("A"), 0, "admin:root");
        assert_eq!(start.original_pin, "A");
        let added = step(&start, Input::Add(ca("B")), 10, "admin:root").unwrap();
        assert_eq!(added.phase, Phase::Added);
        assert_eq!(states(&added), [("A".into(), CaState::Signing), ("B".into(), CaState::Trusted)]);
        assert_eq!(added.bundle(), "CERT A\nCERT B\n");
        assert!(!added.must_renew(""), "nothing renews before reissue");
        let reissuing = step(&added, Input::Reissue, 20, "user:ops").unwrap();
        assert_eq!(states(&reissuing), [("B".into(), CaState::Signing), ("A".into(), CaState::Retiring)]);
        assert_eq!(reissuing.bundle(), "CERT B\nCERT A\n");
        assert_eq!((reissuing.changed_ms, reissuing.changed_by.as_str()), (20, "user:ops"));
        assert!(reissuing.must_renew(""), "a record from before the first rotation is the original CA's");
        assert!(reissuing.must_renew("A"));
        assert!(!reissuing.must_renew("B"));
        let done = step(&reissuing, Input::Remove { pending: 0, force: false }, 30, "admin:root").unwrap();
        assert_eq!(done.phase, Phase::Steady);
        assert_eq!(states(&done), [("B".into(), CaState::Signing)]);
        assert!(!done.must_renew(""));
        // And the next rotation starts from there.
        let again = step(&done, Input::Add(ca("C")), 40, "admin:root").unwrap();
        assert_eq!(states(&again), [("B".into(), CaState::Signing), ("C".into(), CaState::Trusted)]);
        assert_eq!(again.original_pin, "A");
    }

    #[test]
    fn a_phase_out_of_order_or_a_remove_with_identities_left_is_refused_with_what_to_do() {
        let steady = CaRing::steady(ca("A"), 0, "x");
        let added = step(&steady, Input::Add(ca("B")), 1, "x").unwrap();
        let reissuing = step(&added, Input::Reissue, 2, "x").unwrap();
        let remove = Input::Remove { pending: 0, force: false };
        let cases: [(&CaRing, Input, &str); 7] = [
            (&steady, Input::Reissue, "there is no rotation to reissue: the phase is steady; start one with"),
            (&steady, remove.clone(), "there is no rotation to remove: the phase is steady"),
            (
                &added,
                Input::Add(ca("C")),
                "a rotation is under way (phase added); run `drover ca rotate --phase reissue`",
            ),
            (
                &added,
                remove,
                "there is no rotation to remove: the phase is added; run `drover ca rotate --phase reissue`",
            ),
            (
                &reissuing,
                Input::Reissue,
                "there is no rotation to reissue: the phase is reissuing; run `drover ca rotate --phase remove`",
            ),
            (&reissuing, Input::Add(ca("C")), "a rotation is under way (phase reissuing)"),
            (
                &reissuing,
                Input::Remove { pending: 3, force: false },
                "3 enrolled identities still hold a certificate of the retiring CA",
            ),
        ];
        for (ring, input, want) in cases {
            let err = step(ring, input.clone(), 5, "x").unwrap_err().to_string();
            assert!(err.starts_with(want), "{input:?} in {:?}: {err}", ring.phase);
        }
        let forced = step(&reissuing, Input::Remove { pending: 3, force: true }, 5, "x").unwrap();
        assert_eq!(states(&forced), [("B".into(), CaState::Signing)]);
    }

    #[test]
    fn renewals_after_a_reissue_are_spread_by_name_over_thirty_seconds() {
        let at: Vec<i64> = (0..200).map(|i| renew_soon(&format!("agent-{i}"), 1_000)).collect();
        assert!(at.iter().all(|t| (1_001..=1_000 + RENEW_SPREAD_MS).contains(t)));
        assert_eq!(renew_soon("agent-7", 1_000), at[7], "the same name, the same moment");
        let distinct: std::collections::BTreeSet<i64> = at.iter().map(|t| t / 1000).collect();
        assert!(distinct.len() > 20, "spread over the window: {distinct:?}");
    }
}
