//! What the agent, the CLI, the benchmark's clients and the coordinator
//! share as clients of each other, beyond the wire contract
//! (`drover-proto`) and observability (`drover-telemetry`):
//!
//! - [`tls`]: a client's certificates loaded from its `--tls-dir`, with
//!   errors that name the file and say how to fix it;
//! - [`endpoint`]: a coordinator URL made a tonic endpoint, with the shared
//!   transport settings (timeouts, keepalives);
//! - [`targets`]: which coordinator to try next (the leader a follower
//!   named, else the next URL, passing over one that seemed frozen), how a
//!   follower's refusal reads, and jittered backoff;
//! - [`chain`]: an error with its causes, each printed once;
//! - [`labels`]: the one grammar of agent labels, `k=v,k=v`;
//! - [`duration`]: the one grammar of durations in flags and pipeline files;
//! - [`enroll`]: enrollment with a join token, for an agent
//!   (`drover-agent --join-token`) and a user (`drover login`): the
//!   client's own key and CSR, the connection that trusts the coordinator
//!   by the CA's pin alone, the answer's checks, and the bundle written
//!   whole (`enroll::files`, which an agent's renewal uses too);
//! - [`term`]: job output made safe for a terminal (colours pass, every
//!   other control sequence is shown as text), for the CLI and the
//!   coordinator's web UI alike; [`term::field`] the stricter rule for one
//!   line of text.
//!
//! The pure parts (`targets`' choices, `chain`, `labels`, `duration`, `term`) are tested with
//! tables; `tls` and `endpoint` only wrap tonic; `enroll` is tested against
//! a TLS server on 127.0.0.1 with a test CA.

pub mod chain;
pub mod duration;
pub mod endpoint;
pub mod enroll;
pub mod labels;
pub mod targets;
pub mod term;
#[cfg(test)]
mod test_pki;
pub mod tls;
