//! The Drover coordinator as a library: the binary in `main.rs` only parses
//! flags and calls [`server::run`]. See ARCHITECTURE.md for the map.

pub mod api;
pub mod apps;
pub mod audit;
pub mod blobs;
pub mod caches;
pub mod compaction;
pub mod controller;
pub mod core;
pub mod environments;
pub mod freezes;
pub mod git;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod notifications;
pub mod outbound;
pub mod records;
pub mod relay;
pub mod releases;
pub mod retention;
pub mod rollouts;
pub mod scheduler;
pub mod sealing;
pub mod secrets;
pub mod segments;
pub mod server;
pub mod spans;
pub mod store;
pub mod submit;
pub mod tls;
pub mod triggers;
pub mod ui;
pub mod webhooks;
