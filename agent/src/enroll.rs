//! Enrollment: an agent started with a join token (`--join-token`) and the
//! CA's pin (`--ca-pin`) but no certificates gets them from the
//! coordinator before it connects for work.
//!
//! The work is [`drover_client::enroll`]'s, which `drover login` shares:
//! the agent's own key, which never leaves `--tls-dir`, a certificate
//! signing request sent with the token, a coordinator trusted by the pin
//! alone, and `ca.pem`, `agent-NAME.pem` and `agent-NAME-key.pem` written
//! whole ([`crate::identity`]). What is the agent's here: an agent whose
//! bundle is already there skips all of this (the token is single-use,
//! and the bundle is what it bought), and the tries are logged.
//!
//! A refusal (`PERMISSION_DENIED`: the token or the name;
//! `INVALID_ARGUMENT`: the request) is final, with the coordinator's words.
//! A coordinator that cannot be reached, or is between leaders, is retried,
//! the next URL each time, with backoff, for about a minute
//! ([`PATIENCE`]). The token is never logged.

use std::path::PathBuf;

use drover_client::enroll::{self as shared, Holder, Progress};
use tracing::{info, warn};

use crate::identity;
pub use drover_client::enroll::{CaPin, EnrollError, PATIENCE};

/// What enrollment needs: the flags.
#[derive(Clone)]
pub struct Enrollment {
    /// The coordinators' URLs (`--coordinator`), tried in turn.
    pub coordinators: Vec<String>,
    /// The agent's name (`--name`): its certificate's common name.
    pub name: String,
    /// Where the bundle goes (`--tls-dir`).
    pub tls_dir: PathBuf,
    /// The join token; never logged (not even by `Debug`).
    pub token: String,
    pub pin: CaPin,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("coordinators", &self.coordinators)
            .field("name", &self.name)
            .field("tls_dir", &self.tls_dir)
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// What [`enroll`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolled {
    /// The bundle was there already; nothing was asked.
    Already,
    /// Enrolled: the new certificate is valid until then (ms since the
    /// epoch).
    Now { not_after_ms: i64 },
}

/// Whether `tls_dir` already holds agent `name`'s bundle.
pub fn is_enrolled(tls_dir: &std::path::Path, name: &str) -> bool {
    identity::bundle_present(tls_dir, name)
}

/// Enrolls the agent unless its bundle is already in `--tls-dir`; see the
/// module header. On success the whole bundle is on disk.
pub async fn enroll(e: &Enrollment) -> Result<Enrolled, EnrollError> {
    if is_enrolled(&e.tls_dir, &e.name) {
        info!(tls_dir = %e.tls_dir.display(), "already enrolled; --join-token is not needed");
        return Ok(Enrolled::Already);
    }
    let shared = shared::Enrollment {
        holder: Holder::Agent,
        coordinators: e.coordinators.clone(),
        name: e.name.clone(),
        tls_dir: e.tls_dir.clone(),
        token: e.token.clone(),
        pin: e.pin,
        patience: PATIENCE,
    };
    let done = shared::enroll(&shared, |progress| match progress {
        Progress::Redirected { url, leader } => info!(%url, %leader, "redirected to the leader to enroll"),
        Progress::Retrying { error } => warn!(%error, "enrollment failed; trying again"),
    })
    .await?;
    info!(
        coordinator = %done.url,
        tls_dir = %e.tls_dir.display(),
        not_after = %identity::utc(done.not_after_ms),
        "enrolled: the agent's certificate and key are in its TLS directory"
    );
    Ok(Enrolled::Now { not_after_ms: done.not_after_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[tokio::test]
    async fn an_agent_with_its_bundle_asks_nobody() {
        let dir = TestDir::new("enroll-already");
        let files = identity::Files { base: "agent-a1", cert_pem: "CERT", key_pem: "KEY", ca_pem: Some("CA") };
        identity::install(&dir.0, files).unwrap();
        // No coordinator listens there: it is never dialled.
        let e = Enrollment {
            coordinators: vec!["https://127.0.0.1:1".into()],
            name: "a1".into(),
            tls_dir: dir.0.clone(),
            token: "djt_1_secret".into(),
            pin: CaPin::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
        };
        assert!(!format!("{e:?}").contains("secret"), "the token stays out of Debug");
        assert_eq!(enroll(&e).await.unwrap(), Enrolled::Already);
        // Without it, the agent enrolls (and here fails at once: a bad URL).
        let elsewhere = Enrollment { tls_dir: dir.0.join("empty"), coordinators: vec!["http://x:1".into()], ..e };
        let err = enroll(&elsewhere).await.unwrap_err();
        assert!(matches!(err, EnrollError::Url(_)), "{err:?}");
    }
}
