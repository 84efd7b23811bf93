//! What the coordinator, the agent and the CLI share that is neither the
//! wire contract (`drover-proto`) nor observability (`drover-telemetry`):
//! for now, the one grammar of durations that flags and pipeline files use.
//! TLS loading, endpoints with failover and redirects, and error chains will
//! move here too (the reshaping issue), so the three stop keeping copies.

pub mod duration;
