//! The agent's side of deployments (issue 15): what a node does to run a
//! service it was told to deploy. Now: [`proxy`], the node-local TCP proxy
//! that owns a service's port and switches it between releases (blue-green)
//! without cutting a connection; and [`releases`], the releases on disk,
//! checked by digest, with the atomic `current` switch and what a rollback
//! finds without downloading. Later: the supervision of each service
//! (restarts with backoff, adoption after an agent restart), and its health
//! checks.

pub mod proxy;
pub mod releases;
