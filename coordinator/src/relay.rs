//! A follower's link to the leader, over which it carries the agents
//! connected to it (`api::agent::relay`): one HTTP/2 connection per
//! follower, each agent's session and transfers a stream on it. The
//! follower presents a client certificate of its own,
//! `drover-coordinators`/its id, which it signs with the CA key
//! (`Authority::sign_coordinator_client`) and makes again, with a new
//! connection, at half its life or when the CAs change; streams open on the
//! old connection go on. The leader reads the relayed agent's certificate
//! from the call's metadata, and only from a coordinator's call
//! (`api::relayed`).
//!
//! A coordinator without the CA key cannot make one, and so relays nothing:
//! its agents are sent to the leader, as before relaying.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_client::endpoint::Transport;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::identity::ca::Keyring;

/// How long a follower's client certificate lasts; it is made again, with
/// a new connection, at half of it.
pub const CERT_TTL: Duration = Duration::from_secs(3600);

/// Why a link to the leader cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot sign this coordinator's client certificate: {0}")]
    Sign(String),
    #[error("cannot reach the leader at {url}: {detail}")]
    Endpoint { url: String, detail: String },
}

/// One follower's links to the leader.
pub struct Relay {
    /// This coordinator's id, the name in its client certificate.
    id: String,
    keyring: Arc<Keyring>,
    /// The election TTL: how soon a frozen leader must be noticed, and for
    /// how long one is passed over.
    election_ttl: Duration,
    link: Mutex<Option<Link>>,
    /// A leader whose link broke under carried sessions, and until when it
    /// is passed over: a frozen leader is still named until its election
    /// lease lapses.
    suspect: Mutex<Option<(String, std::time::Instant)>>,
}

struct Link {
    leader: String,
    /// The CAs the leader's certificate is checked against, as they were.
    bundle: String,
    made: std::time::Instant,
    channel: Channel,
}

impl Relay {
    pub fn new(id: String, keyring: Arc<Keyring>, election_ttl: Duration) -> Arc<Relay> {
        let (link, suspect) = (Mutex::new(None), Mutex::new(None));
        Arc::new(Relay { id, keyring, election_ttl, link, suspect })
    }

    /// The leader at `url` stopped answering under carried sessions: pass it
    /// over for an election TTL, by when its lease has lapsed if it froze.
    pub fn suspect(&self, url: &str) {
        let until = std::time::Instant::now() + self.election_ttl;
        *self.suspect.lock().expect("relay lock") = Some((url.to_string(), until));
        // Its connection is dead; the next call makes a new one.
        let mut link = self.link.lock().expect("relay lock");
        if link.as_ref().is_some_and(|l| l.leader == url) {
            *link = None;
        }
    }

    /// Whether the leader at `url` is passed over now.
    pub fn is_suspect(&self, url: &str) -> bool {
        let suspect = self.suspect.lock().expect("relay lock");
        suspect.as_ref().is_some_and(|(s, until)| s == url && *until > std::time::Instant::now())
    }

    /// The connection to the leader at `url`: the one there is, or a new one
    /// (connected on first use) when there is none, the leader is another,
    /// the CAs changed or the certificate is half through its life. None
    /// when this coordinator cannot sign (it has no CA key).
    pub fn channel(&self, url: &str) -> Result<Option<Channel>, RelayError> {
        let trust = self.keyring.trust();
        let Some(signer) = trust.signer.clone() else {
            return Ok(None);
        };
        let bundle = trust.bundle();
        let mut link = self.link.lock().expect("relay lock");
        if let Some(l) = link.as_ref()
            && l.leader == url
            && l.bundle == bundle
            && l.made.elapsed() < CERT_TTL / 2
        {
            return Ok(Some(l.channel.clone()));
        }
        let now = drover_telemetry::trace::now_ms() as i64;
        let cert =
            signer.sign_coordinator_client(&self.id, now, CERT_TTL).map_err(|e| RelayError::Sign(e.to_string()))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(bundle.as_bytes()))
            .identity(Identity::from_pem(cert.cert_pem, cert.key_pem));
        let bad = |detail: String| RelayError::Endpoint { url: url.to_string(), detail };
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| bad(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| bad(drover_client::chain::error_chain(&e)))?;
        // One connection, so PINGs are cheap: one that goes unanswered finds
        // a frozen leader within 3/8 of the election TTL, before the
        // carried agents' own heartbeats would (half of it), and the
        // follower carries them on once the next leader is named.
        let transport = Transport {
            keep_alive_interval: self.election_ttl / 8,
            keep_alive_timeout: self.election_ttl / 4,
            keep_alive_while_idle: true,
            ..Transport::AGENT
        };
        let channel = transport.apply(endpoint).connect_lazy();
        *link =
            Some(Link { leader: url.to_string(), bundle, made: std::time::Instant::now(), channel: channel.clone() });
        Ok(Some(channel))
    }
}
