//! Shared by the end-to-end tests (tests/e2e) and the benchmarks
//! (src/bin/fleet-bench.rs, src/bin/drover-bench.rs): a harness that runs
//! the real binaries, and the simulated agents and in-process clients that
//! drover-bench drives them with.

pub mod bench;
pub mod harness;
