//! The Drover agent as a library: [`client`] talks to the coordinator,
//! [`exec`] runs attempts as real processes, [`logbuf`] keeps each attempt's
//! log until the coordinator has stored it, [`leftovers`] kills what a dead
//! agent left running on its work dir. The binary (`main.rs`) parses flags,
//! serves the metrics endpoint, and maps signals to [`client::Stop`].

pub mod client;
pub mod exec;
pub mod leftovers;
pub mod logbuf;
pub mod metrics;
