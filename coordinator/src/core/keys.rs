//! The store's key layout, in one place. Everything Drover keeps lives under
//! a handful of prefixes, chosen so that one prefix watch sees a whole run
//! (its record, its jobs and its logs) in revision order, and so that later
//! kinds of state (rollouts, apps) get prefixes of their own.
//!
//! ```text
//! /meta/run-seq                                   last run number handed out
//! /index/runs/{run}                               RunSummary, for listings
//! /runs/{run}                                     RunRecord
//! /runs/{run}/jobs/{job}                          JobRecord
//! /runs/{run}/logs/{job}/{attempt}/{offset}       ChunkMeta: the chunk's length, checksum and place in its run's segment file
//! /artifacts/{run}/{job}                          the sha256 of the job's artifacts, for the blob sweep
//! /agents/{name}                                  AgentRecord, for `drover agents`
//! /repos/{name}                                   RepoRecord: a repository that triggers runs (`drover repo add`)
//! /triggers/repos/{name}                          RepoState: its heads, schedules and last error (the leader's)
//! /triggers/intents/{key}                         Intent: a start about to happen, or done, by trigger key
//! /triggers/deliveries/{repo}/{id}                a webhook delivery seen (replays start nothing)
//! /triggers/inbox/{repo}/{id}                     a webhook delivery the leader has yet to handle
//! /environments/{name}                            EnvironmentRecord: the nodes a deploy goes to, by selector (`drover env create`)
//! /identity/tokens/{id}                           TokenRecord: a join token, by its public id (only the secret's SHA-256)
//! /identity/agents/{name}                         IdentityRecord: an enrolled agent's current certificate
//! /identity/denied/{name}                         Denial: a revoked or banned agent name
//! /identity/users/{name}                          UserRecord: a user's role and current certificate
//! /ui/logins/{sha256}                            ui::session::Grant: a single-use web UI login link, leased for its life
//! /ui/sessions/{sha256}                          ui::session::Session: a browser's session, leased for its life
//! /audit/{day}/{ms}-{rand}                        audit::Entry, by UTC day (6 digits) and time (13 digits)
//! /cluster/leader                                 LeaderInfo; its create revision is the epoch
//! /cluster/members/{id}                           MemberInfo, one per live coordinator
//! ```
//!
//! A log chunk's bytes are not in the store: they lie at the same offset in
//! the attempt's segment file (`crate::segments`), outside the key space.
//! Its key stays, so one prefix watch still sees every chunk, in revision
//! order, and a reader then fetches the bytes.
//!
//! Run ids are decimal numbers; in keys they are zero-padded to ten digits
//! so that keys sort in numeric order and `/runs/{run}` is never a prefix of
//! another run's keys. Attempt numbers have four digits and log offsets
//! sixteen hex digits, for the same reason.

pub const RUN_SEQ: &str = "/meta/run-seq";
pub const RUN_INDEX: &str = "/index/runs/";
pub const AGENTS: &str = "/agents/";
/// Every artifact a run still holds, by run: what the retention
/// controller's blob sweep keeps (`crate::retention`).
pub const ARTIFACTS: &str = "/artifacts/";

pub fn artifact(run: u64, job: &str) -> String {
    format!("{ARTIFACTS}{run:010}/{job}")
}

/// The prefix of a run's artifact references, deleted with the run.
pub fn artifacts_of(run: u64) -> String {
    format!("{ARTIFACTS}{run:010}/")
}
/// Finished runs' logs, sealed into the blob store (`crate::sealing`).
pub const SEALED_LOGS: &str = "/sealed-logs/";

pub fn sealed_log(run: u64, job: &str, attempt: u32) -> String {
    format!("{SEALED_LOGS}{run:010}/{job}@{attempt:04}")
}

/// The prefix of a run's sealed logs, deleted with the run.
pub fn sealed_logs_of(run: u64) -> String {
    format!("{SEALED_LOGS}{run:010}/")
}

/// Caches by scope id and key (`crate::caches`).
pub const CACHES: &str = "/caches/";

pub fn cache(scope_id: &str, key: &str) -> String {
    format!("{CACHES}{scope_id}/{key}")
}

/// Sealed secrets by name (`crate::secrets`): only ciphertext.
pub const SECRETS: &str = "/secrets/";

pub fn secret(name: &str) -> String {
    format!("{SECRETS}{name}")
}

/// Repositories that start runs (`crate::triggers`), by name.
pub const REPOS: &str = "/repos/";

pub fn repo(name: &str) -> String {
    format!("{REPOS}{name}")
}

/// Environments (`crate::environments`), by name.
pub const IDENTITY: &str = "/identity/";
pub const TOKENS: &str = "/identity/tokens/";
pub const IDENTITIES: &str = "/identity/agents/";
pub const DENIED: &str = "/identity/denied/";
pub const USERS: &str = "/identity/users/";
/// The CA ring (`core::ca`), once a rotation has begun.
pub const CA_RING: &str = "/identity/ca";
/// The cluster's job-token key (`identity::job_key`).
pub const JOB_KEY: &str = "/identity/job-key";

/// The web UI's login links and sessions (`crate::ui::session`), by the
/// SHA-256 of their secret, each under a lease that ends it.
pub const UI_LOGINS: &str = "/ui/logins/";
pub const UI_SESSIONS: &str = "/ui/sessions/";

pub fn user(name: &str) -> String {
    format!("{USERS}{name}")
}

pub fn token(id: &str) -> String {
    format!("{TOKENS}{id}")
}

pub fn identity(name: &str) -> String {
    format!("{IDENTITIES}{name}")
}

pub fn denied(name: &str) -> String {
    format!("{DENIED}{name}")
}

/// The audit log (`crate::audit`), one prefix per UTC day so that listing
/// from a time and pruning a day are prefix operations.
pub const AUDIT: &str = "/audit/";
const DAY_MS: i64 = 86_400_000;

pub fn audit_day(at_ms: i64) -> String {
    format!("{AUDIT}{:06}/", at_ms.max(0) / DAY_MS)
}

pub fn audit_entry(at_ms: i64, suffix: &str) -> String {
    format!("{}{:013}-{suffix}", audit_day(at_ms), at_ms.max(0))
}

pub const ENVIRONMENTS: &str = "/environments/";

pub fn environment(name: &str) -> String {
    format!("{ENVIRONMENTS}{name}")
}

/// Everything the triggers controller writes.
pub const TRIGGERS: &str = "/triggers/";
/// What the leader saw of each repository.
pub const REPO_STATES: &str = "/triggers/repos/";

pub fn repo_state(name: &str) -> String {
    format!("{REPO_STATES}{name}")
}

/// Starts by trigger key (`crate::core::triggers::push_key` and its
/// siblings; the keys are escaped to be one path segment per part).
pub const INTENTS: &str = "/triggers/intents/";

pub fn intent(key: &str) -> String {
    format!("{INTENTS}{key}")
}

/// Webhook deliveries seen, by repository and delivery id (escaped).
pub const DELIVERIES: &str = "/triggers/deliveries/";

pub fn delivery(repo: &str, id: &str) -> String {
    format!("{DELIVERIES}{repo}/{id}")
}

/// Webhook deliveries the leader has not handled yet.
pub const INBOX: &str = "/triggers/inbox/";

pub fn inbox(repo: &str, id: &str) -> String {
    format!("{INBOX}{repo}/{id}")
}

/// Held by the leader, with its lease (see `leader`).
pub const LEADER: &str = "/cluster/leader";
pub const MEMBERS: &str = "/cluster/members/";

pub fn member(id: &str) -> String {
    format!("{MEMBERS}{id}")
}

pub fn agent(name: &str) -> String {
    format!("{AGENTS}{name}")
}

pub fn run_index(run: u64) -> String {
    format!("{RUN_INDEX}{run:010}")
}

/// The prefix that covers a run's record, jobs and logs.
pub fn run(run: u64) -> String {
    format!("/runs/{run:010}")
}

pub fn jobs(run: u64) -> String {
    format!("/runs/{run:010}/jobs/")
}

pub fn job(run: u64, job: &str) -> String {
    format!("/runs/{run:010}/jobs/{job}")
}

pub fn logs(run: u64) -> String {
    format!("/runs/{run:010}/logs/")
}

pub fn job_logs(run: u64, job: &str) -> String {
    format!("/runs/{run:010}/logs/{job}/")
}

pub fn attempt_logs(run: u64, job: &str, attempt: u32) -> String {
    format!("/runs/{run:010}/logs/{job}/{attempt:04}/")
}

pub fn log_chunk(run: u64, job: &str, attempt: u32, offset: u64) -> String {
    format!("/runs/{run:010}/logs/{job}/{attempt:04}/{offset:016x}")
}

/// What a key under `/runs/{run}` is.
#[derive(Debug, PartialEq, Eq)]
pub enum RunKey<'a> {
    Run,
    Job(&'a str),
    Log { job: &'a str, attempt: u32, offset: u64 },
}

/// Parses a key under the prefix [`run`]`(run_id)`.
pub fn parse_run_key(run_id: u64, key: &str) -> Option<RunKey<'_>> {
    let rest = key.strip_prefix(&run(run_id))?;
    if rest.is_empty() {
        return Some(RunKey::Run);
    }
    if let Some(job) = rest.strip_prefix("/jobs/") {
        return Some(RunKey::Job(job));
    }
    let log = rest.strip_prefix("/logs/")?;
    let mut parts = log.rsplitn(3, '/');
    let offset = u64::from_str_radix(parts.next()?, 16).ok()?;
    let attempt = parts.next()?.parse().ok()?;
    let job = parts.next()?;
    Some(RunKey::Log { job, attempt, offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_keys_round_trip() {
        assert_eq!(parse_run_key(7, &run(7)), Some(RunKey::Run));
        assert_eq!(parse_run_key(7, &job(7, "build")), Some(RunKey::Job("build")));
        assert_eq!(
            parse_run_key(7, &log_chunk(7, "a.b-c", 2, 4096)),
            Some(RunKey::Log { job: "a.b-c", attempt: 2, offset: 4096 })
        );
        assert_eq!(parse_run_key(7, &run(8)), None);
        assert!(run(1) < run(10), "zero padding keeps numeric order");
    }
}
