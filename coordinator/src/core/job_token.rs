//! Per-job credentials: each attempt's job token, with which its agent
//! downloads the artifacts of its needs and its cache, and uploads its
//! artifacts and cache (`GetBlob`, `PutBlob`, `RestoreCache`,
//! `SaveCache` name the attempt and carry the token).
//!
//! A token is an HMAC-SHA256, under the cluster's job-token key
//! (`/identity/job-key`, made once by the first coordinator that needs
//! it), of the agent's name and the attempt's id: it is good for that
//! attempt on that agent alone, so a token seen elsewhere (another job's
//! attempt, another agent's certificate) opens nothing. It is not stored:
//! every coordinator recomputes it to check it, so it survives a failover
//! as the attempt does. It is good only while the agent holds the
//! attempt's lease: the edge checks the token here, then the scheduler
//! that the agent holds the attempt and that the attempt needs what it
//! asks for.

use ring::hmac;

/// What every job token starts with.
pub const PREFIX: &str = "djob_";

/// The token of attempt `attempt` on agent `agent`.
pub fn mint(key: &[u8], agent: &str, attempt: &str) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), &message(agent, attempt));
    let mut token = String::with_capacity(PREFIX.len() + 64);
    token.push_str(PREFIX);
    for b in tag.as_ref() {
        token.push_str(&format!("{b:02x}"));
    }
    token
}

/// Why a job token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobTokenError {
    #[error(
        "a request for attempt {attempt} carries no job token; every download and upload of a job names its \
         attempt and carries the token its Assign gave (an agent older than the coordinator sends none: upgrade it)"
    )]
    Missing { attempt: String },
    #[error("the job token is not attempt {attempt}'s on agent {agent}: a job's token opens its own attempt alone")]
    Wrong { attempt: String, agent: String },
}

/// Whether `token` is attempt `attempt`'s on agent `agent`, compared in
/// constant time.
pub fn check(key: &[u8], agent: &str, attempt: &str, token: &str) -> Result<(), JobTokenError> {
    if token.is_empty() {
        return Err(JobTokenError::Missing { attempt: attempt.to_owned() });
    }
    let wrong = || JobTokenError::Wrong { attempt: attempt.to_owned(), agent: agent.to_owned() };
    let hex = token.strip_prefix(PREFIX).ok_or_else(wrong)?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(wrong());
    }
    let tag: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex checked")).collect();
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), &message(agent, attempt), &tag).map_err(|_| wrong())
}

/// What is signed: a version, the agent and the attempt, apart by NULs
/// (neither names nor attempt ids hold one).
fn message(agent: &str, attempt: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + agent.len() + attempt.len());
    m.extend_from_slice(b"drover-job-token-v1\0");
    m.extend_from_slice(agent.as_bytes());
    m.push(0);
    m.extend_from_slice(attempt.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_its_own_attempt_on_its_own_agent_and_nothing_else() {
        let key = [7u8; 32];
        let token = mint(&key, "a1", "12/build/1");
        assert!(token.starts_with(PREFIX) && token.len() == PREFIX.len() + 64, "{token}");
        assert_eq!(token, mint(&key, "a1", "12/build/1"), "every coordinator computes the same");
        let forged = format!("{PREFIX}{}", "0".repeat(64));
        let upper = token.to_uppercase().replace("DJOB_", PREFIX);
        // (what, key, agent, attempt, token, the refusal or none)
        let other_key = [8u8; 32];
        type Case<'a> = (&'a str, &'a [u8], &'a str, &'a str, &'a str, Option<&'a str>);
        let cases: [Case; 8] = [
            ("its own", &key, "a1", "12/build/1", &token, None),
            ("another attempt", &key, "a1", "12/build/2", &token, Some("not attempt 12/build/2's on agent a1")),
            ("another agent", &key, "a2", "12/build/1", &token, Some("not attempt 12/build/1's on agent a2")),
            ("another cluster's key", &other_key, "a1", "12/build/1", &token, Some("not attempt")),
            ("none", &key, "a1", "12/build/1", "", Some("carries no job token")),
            ("forged", &key, "a1", "12/build/1", &forged, Some("not attempt")),
            ("no prefix", &key, "a1", "12/build/1", &token[PREFIX.len()..], Some("not attempt")),
            ("upper-case hex reads the same", &key, "a1", "12/build/1", &upper, None),
        ];
        for (what, key, agent, attempt, token, want) in cases {
            let got = check(key, agent, attempt, token).map_err(|e| e.to_string());
            match (got, want) {
                (Ok(()), None) => {}
                (Err(e), Some(want)) => assert!(e.contains(want), "{what}: {e}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
        // A name and an attempt that run together differently are apart.
        assert_ne!(mint(&key, "a1", "2/b/1"), mint(&key, "a12", "/b/1"));
    }
}
