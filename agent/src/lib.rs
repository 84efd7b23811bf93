//! The Drover agent as a library: [`client`] talks to the coordinator,
//! [`exec`] runs attempts as real processes, [`logbuf`] keeps each attempt's
//! log until the coordinator has stored it, [`leftovers`] kills what a dead
//! agent left running on its work dir, [`watch`] kills the steps of an agent
//! the moment it dies, [`runas`] runs steps as another user, and [`deploy`]
//! is the node's side of deployments (the executor of deploy actions, and
//! what it is built on: the proxy that owns a service's port, the releases
//! on disk, health checks and the supervision of services), [`enroll`]
//! gets an agent its first certificate with a join token (through
//! `drover_client::enroll`, which `drover login` shares), and [`identity`]
//! names its key and certificate files, which enrollment writes and
//! renewal replaces. The binary (`main.rs`) parses flags, serves the metrics
//! endpoint, maps signals to [`client::Stop`], and is also the step watcher
//! and each service's supervisor.

pub mod client;
pub mod deploy;
pub mod enroll;
pub mod exec;
pub mod identity;
pub mod leftovers;
pub mod logbuf;
pub mod metrics;
pub mod runas;
pub mod size;
#[cfg(test)]
mod test_dir;
#[cfg(test)]
mod test_pki;
pub mod watch;
