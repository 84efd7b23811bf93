//! Who sent a webhook, and whether they knew the repository's secret. Pure:
//! the listener hands in the headers and the raw body.
//!
//! - **GitHub** signs the raw body with HMAC-SHA256 under the secret and
//!   sends `X-Hub-Signature-256: sha256=HEX`, with the event in
//!   `X-GitHub-Event` and a delivery id in `X-GitHub-Delivery`.
//! - **Gitea** (and Forgejo) sends the same signature, hex only, in
//!   `X-Gitea-Signature` (newer versions add `X-Hub-Signature-256` too),
//!   with `X-Gitea-Event` and `X-Gitea-Delivery`.
//! - **GitLab** sends the secret itself in `X-Gitlab-Token`, with the event
//!   in `X-Gitlab-Event` and a delivery id in `X-Gitlab-Event-UUID`.
//!
//! Signatures are checked by `ring::hmac::verify`, and tokens compared as
//! HMACs through it, so the time a refusal takes does not tell how much of
//! a guess was right.

use ring::hmac;

/// The most characters of a delivery id kept; ids are UUIDs in practice.
pub const MAX_DELIVERY_LEN: usize = 100;

/// Who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    Gitea,
    GitLab,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "GitHub",
            Provider::Gitea => "Gitea",
            Provider::GitLab => "GitLab",
        }
    }
}

/// What the headers say: the sender, its event name and its delivery id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub provider: Provider,
    pub event: String,
    pub id: String,
}

/// Why a webhook was refused before its body was read as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "no X-GitHub-Event, X-Gitea-Event or X-Gitlab-Event header: this endpoint takes push and pull-request webhooks \
         from GitHub, Gitea and GitLab"
    )]
    UnknownSender,
    #[error("no delivery id ({0}): the sender must name each delivery, so that a replay starts nothing")]
    NoDeliveryId(&'static str),
    #[error("the delivery id is not 1 to {MAX_DELIVERY_LEN} letters, digits, `-`, `_` or `.`")]
    BadDeliveryId,
    #[error(
        "no signature: {0} is missing; set the webhook's secret to the repository's (drover repo add --webhook-secret-file)"
    )]
    NoSignature(&'static str),
    #[error("bad signature: the body was not signed with the repository's webhook secret")]
    BadSignature,
}

/// Reads who sent the webhook from its headers; `header` looks one up by
/// name, case-insensitively.
pub fn delivery(header: &dyn Fn(&str) -> Option<String>) -> Result<Delivery, Refused> {
    let (provider, event, id_header) = if let Some(event) = header("x-github-event") {
        (Provider::GitHub, event, "X-GitHub-Delivery")
    } else if let Some(event) = header("x-gitea-event") {
        (Provider::Gitea, event, "X-Gitea-Delivery")
    } else if let Some(event) = header("x-gitlab-event") {
        (Provider::GitLab, event, "X-Gitlab-Event-UUID")
    } else {
        return Err(Refused::UnknownSender);
    };
    let id = header(&id_header.to_ascii_lowercase()).ok_or(Refused::NoDeliveryId(id_header))?;
    let id = id.trim().to_string();
    let valid = (1..=MAX_DELIVERY_LEN).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(Refused::BadDeliveryId);
    }
    Ok(Delivery { provider, event: event.trim().to_string(), id })
}

/// Checks that whoever sent `body` knew `secret`.
pub fn authenticate(
    provider: Provider,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    secret: &[u8],
) -> Result<(), Refused> {
    match provider {
        Provider::GitLab => {
            let token = header("x-gitlab-token").ok_or(Refused::NoSignature("X-Gitlab-Token"))?;
            // Compared as HMACs under a fresh key: `hmac::verify` takes the
            // same time however much of the token is right.
            let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| Refused::BadSignature)?;
            let expected = hmac::sign(&key, secret);
            hmac::verify(&key, token.as_bytes(), expected.as_ref()).map_err(|_| Refused::BadSignature)
        }
        Provider::GitHub | Provider::Gitea => {
            let hex = match header("x-hub-signature-256") {
                Some(sig) => sig.trim().strip_prefix("sha256=").map(str::to_string).ok_or(Refused::BadSignature)?,
                None if provider == Provider::Gitea => {
                    header("x-gitea-signature").ok_or(Refused::NoSignature("X-Gitea-Signature"))?
                }
                None => return Err(Refused::NoSignature("X-Hub-Signature-256")),
            };
            let tag = decode_hex(hex.trim()).ok_or(Refused::BadSignature)?;
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
            hmac::verify(&key, body, &tag).map_err(|_| Refused::BadSignature)
        }
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// `X-Hub-Signature-256` for `body` under `secret`, as GitHub computes it
/// (for tests and for senders written in Rust).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        move |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn senders_are_told_apart_by_their_headers() {
        // (case, headers, what is read)
        type Case = (&'static str, Vec<(&'static str, &'static str)>, Result<Delivery, Refused>);
        let cases: Vec<Case> = vec![
            (
                "GitHub",
                vec![("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")],
                Ok(Delivery {
                    provider: Provider::GitHub,
                    event: "push".into(),
                    id: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
                }),
            ),
            (
                "GitLab",
                vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Event-UUID", "u1")],
                Ok(Delivery { provider: Provider::GitLab, event: "Push Hook".into(), id: "u1".into() }),
            ),
            (
                "Gitea",
                vec![("X-Gitea-Event", "pull_request"), ("X-Gitea-Delivery", "d1")],
                Ok(Delivery { provider: Provider::Gitea, event: "pull_request".into(), id: "d1".into() }),
            ),
            ("nobody we know", vec![("X-Other-Event", "push")], Err(Refused::UnknownSender)),
            ("no delivery id", vec![("X-GitHub-Event", "push")], Err(Refused::NoDeliveryId("X-GitHub-Delivery"))),
            (
                "a delivery id that could not be a key",
                vec![("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "../../x")],
                Err(Refused::BadDeliveryId),
            ),
        ];
        for (case, pairs, want) in cases {
            assert_eq!(delivery(&headers(&pairs)), want, "{case}");
        }
    }

    #[test]
    fn only_a_sender_that_knows_the_secret_gets_in() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"s3cret", body);
        let other = sign(b"guess", body);
        let hex = good.trim_start_matches("sha256=").to_string();
        // (case, provider, headers, accepted)
        type Case<'a> = (&'static str, Provider, Vec<(&'static str, &'a str)>, Result<(), Refused>);
        let cases: Vec<Case<'_>> = vec![
            ("GitHub, signed", Provider::GitHub, vec![("X-Hub-Signature-256", &good)], Ok(())),
            (
                "GitHub, signed with another secret",
                Provider::GitHub,
                vec![("X-Hub-Signature-256", &other)],
                Err(Refused::BadSignature),
            ),
            ("GitHub, unsigned", Provider::GitHub, vec![], Err(Refused::NoSignature("X-Hub-Signature-256"))),
            (
                "GitHub, not hex",
                Provider::GitHub,
                vec![("X-Hub-Signature-256", "sha256=zz")],
                Err(Refused::BadSignature),
            ),
            (
                "GitHub, sha1 only",
                Provider::GitHub,
                vec![("X-Hub-Signature-256", "sha1=abc")],
                Err(Refused::BadSignature),
            ),
            ("Gitea, its own header", Provider::Gitea, vec![("X-Gitea-Signature", &hex)], Ok(())),
            ("Gitea, GitHub's header", Provider::Gitea, vec![("X-Hub-Signature-256", &good)], Ok(())),
            ("Gitea, unsigned", Provider::Gitea, vec![], Err(Refused::NoSignature("X-Gitea-Signature"))),
            ("GitLab, the token", Provider::GitLab, vec![("X-Gitlab-Token", "s3cret")], Ok(())),
            ("GitLab, a wrong token", Provider::GitLab, vec![("X-Gitlab-Token", "s3cres")], Err(Refused::BadSignature)),
            ("GitLab, a prefix of it", Provider::GitLab, vec![("X-Gitlab-Token", "s3c")], Err(Refused::BadSignature)),
            ("GitLab, no token", Provider::GitLab, vec![], Err(Refused::NoSignature("X-Gitlab-Token"))),
        ];
        for (case, provider, pairs, want) in cases {
            assert_eq!(authenticate(provider, &headers(&pairs), body, b"s3cret"), want, "{case}");
        }
        // A body changed after signing is refused.
        let tampered = br#"{"ref":"refs/heads/evil"}"#;
        let pairs = [("X-Hub-Signature-256", good.as_str())];
        assert_eq!(authenticate(Provider::GitHub, &headers(&pairs), tampered, b"s3cret"), Err(Refused::BadSignature));
    }
}
