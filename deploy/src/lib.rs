//! The delivery half's decisions, with none of its doing: how a release
//! spreads over an environment's nodes, when it stops, and how it goes back.
//!
//! Everything here is pure. It never touches the store, the network, the
//! clock or processes; the time is an argument, and what must happen in the
//! world comes back as effects for a driver (the coordinator's rollout
//! controller, under the leader) to carry out. That keeps every transition
//! testable with a table of cases, and it is why this crate depends on no
//! other Drover crate: it knows nodes only by name and releases only by
//! digest.
//!
//! It holds [`rollout`], the state machine of rolling, canary and
//! blue-green rollouts and of fast-track rollbacks, and [`analysis`], how
//! metric measurements judge a step's gate, and [`compare`], the baseline
//! judge (a Mann-Whitney U test per metric, and a score). The rest
//! of deployments (environments, the agent's deploy executor, traffic,
//! promotion) lives where its IO is, and comes with the deployments issue.

pub mod analysis;
pub mod compare;
pub mod rollout;
