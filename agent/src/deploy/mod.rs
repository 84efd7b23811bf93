//! The agent's side of deployments (issue 15): what a node does to run a
//! service it was told to deploy. Now: [`proxy`], the node-local TCP proxy
//! that owns a service's port and switches it between releases (blue-green)
//! without cutting a connection; and [`releases`], the releases on disk,
//! checked by digest, with the atomic `current` switch and what a rollback
//! finds without downloading; and [`health`], the probes (HTTP, TCP, a
//! command) and the rule that turns results in a row into healthy or
//! unhealthy. And [`supervise`]: each service runs under a supervisor
//! process of its own (`drover-agent --supervise STATE_DIR`) that restarts
//! it with backoff, keeps its output and outlives the agent, which adopts
//! it again after a restart.

pub mod health;
pub mod proxy;
pub mod releases;
pub mod supervise;
