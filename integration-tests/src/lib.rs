//! Shared by the end-to-end tests (tests/e2e) and the fleet benchmark
//! (src/bin/fleet-bench.rs): a harness that runs the real binaries.

pub mod harness;
