//! The Drover coordinator as a library: the binary in `main.rs` only parses
//! flags and calls [`server::run`]. See ARCHITECTURE.md for the map.

pub mod api;
pub mod controller;
pub mod dispatch;
pub mod fleet;
pub mod git;
pub mod housekeeping;
pub mod keys;
pub mod leader;
pub mod logs;
pub mod machine;
pub mod metrics;
pub mod pipeline;
pub mod records;
pub mod scheduler;
pub mod segments;
pub mod server;
pub mod spans;
pub mod store;
pub mod submit;
pub mod tls;
