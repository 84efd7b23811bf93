//! End-to-end tests: the real `drover-coordinator`, `drover-agent` and
//! `drover` binaries, real git, real processes, all on port 0. They live in
//! one test binary so the workspace links one executable for all of them.

use drover_integration_tests::harness;

mod bench;
mod dev;
mod drover_bench;
mod fleet;
mod git;
mod ha;
mod leftovers;
mod observability;
mod retention;
mod security;
mod traces;
mod validation;
