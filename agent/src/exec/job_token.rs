//! An attempt's job token: the short-lived credential its `Assign` brings
//! (`JobWork.job_token`), good only while this agent holds the attempt's
//! lease. The attempt's own transfers carry it, and nothing else: a need's
//! artifacts downloaded, its artifacts and cache archives uploaded (the
//! resumable upload's query too), its cache looked up, downloaded and
//! saved, each naming the attempt ([`JobAuth`]).
//!
//! It is a secret. It never goes into a step's environment, the job's log,
//! the agent's log or a file: [`JobToken`] has no `Display`, its `Debug`
//! prints `(job token)`, and the one way to its text is
//! [`JobToken::expose`], which only the transfer code calls, to put it in
//! a request.

use std::fmt;

/// The token of one attempt. Empty from a coordinator that issues none.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct JobToken(String);

impl JobToken {
    pub fn new(token: String) -> JobToken {
        JobToken(token)
    }

    /// The token's text, for a request to the coordinator and nothing
    /// else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JobToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(job token)")
    }
}

/// Who a job's transfer is for: the attempt, and its token.
#[derive(Debug, Clone, Copy)]
pub struct JobAuth<'a> {
    pub attempt: &'a str,
    pub token: &'a JobToken,
}

impl super::Attempt {
    /// What this attempt's transfers name and carry.
    pub fn auth(&self) -> JobAuth<'_> {
        JobAuth { attempt: &self.id, token: &self.job_token }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_never_printed() {
        let token = JobToken::new("djb_secret-value".into());
        let auth = JobAuth { attempt: "1/a/1", token: &token };
        for shown in [format!("{token:?}"), format!("{auth:?}"), format!("{auth:#?}")] {
            assert!(!shown.contains("secret-value"), "{shown}");
            assert!(shown.contains("(job token)"), "{shown}");
        }
        assert_eq!(token.expose(), "djb_secret-value");
    }
}
