//! Observability shared by `drover-coordinator` and `drover-agent`: log
//! and trace setup ([`logging`], [`trace`]), a small metrics registry that renders the
//! Prometheus text format ([`metrics`]), and the HTTP endpoint that serves
//! `/metrics`, `/healthz` and `/readyz` ([`http`]).
//!
//! It is a crate of its own because both binaries need exactly the same
//! thing, and neither should depend on the other.

pub mod http;
pub mod logging;
pub mod metrics;
pub mod trace;
