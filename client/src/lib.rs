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
//! - [`duration`]: the one grammar of durations in flags and pipeline files.
//!
//! The pure parts (`targets`' choices, `chain`, `labels`, `duration`) are tested with
//! tables; `tls` and `endpoint` only wrap tonic.

pub mod chain;
pub mod duration;
pub mod endpoint;
pub mod labels;
pub mod targets;
pub mod tls;
