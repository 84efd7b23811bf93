//! The agent's side of deployments (issue 15): what a node does to run a
//! service it was told to deploy.
//!
//! [`executor`] carries out the coordinator's deploy actions (install a
//! release, switch to it, roll back, run a deploy hook's steps from a
//! release's root), one task and queue per service, and reports what
//! became of each (a hook's output streamed back before its report); it keeps checking each live release's
//! health, reporting every change, and reads a live release's output when
//! the coordinator asks. Its header has the report sequences, the health
//! monitor's rules, the output's ranges, the services dir's layout and how
//! a restarted agent adopts what runs. It is built on the parts beside it:
//!
//! - [`releases`]: the releases on disk, checked by digest, with the atomic
//!   `current` switch and what a rollback finds without downloading;
//! - [`supervise`]: each release runs under a supervisor process of its own
//!   (`drover-agent --supervise STATE_DIR`) that restarts it with backoff,
//!   keeps its output and outlives the agent, which adopts it again after
//!   a restart;
//! - [`health`]: the probes (HTTP, TCP, a command) and the rule that turns
//!   results in a row into healthy or unhealthy, for the install's gate and
//!   the continuous monitor alike;
//! - [`proxy`]: the node-local TCP proxy that owns a service's port and
//!   switches it between releases (blue-green) without cutting a
//!   connection. It runs in a process of its own per service
//!   (`drover-agent --proxy STATE_DIR`, detached as a supervisor is), which
//!   the agent steers through `desired.json` and SIGHUP and reads through
//!   `state.json`; so the port keeps answering while the agent is down,
//!   and a restarted agent adopts the proxy as it adopts supervisors.

pub mod executor;
pub mod health;
pub mod proxy;
pub mod releases;
pub mod supervise;
