//! End-to-end tests: the real `drover-coordinator`, `drover-agent` and
//! `drover` binaries, real git, real processes, all on port 0. They live in
//! one test binary so the workspace links one executable for all of them.

use drover_integration_tests::harness;

mod analysis;
mod artifacts;
mod bench;
mod blocked;
mod caches;
mod cli;
mod cli_safety;
mod conditions;
mod contexts;
mod critical_path;
mod deploy_executor;
mod deploys;
mod dev;
mod downgrade;
mod drover_bench;
mod edge;
mod environments;
mod exit_codes;
mod fleet;
mod freeze;
mod gates;
mod git;
mod gitops;
mod gitops_sources;
mod ha;
mod isolation;
mod leftovers;
mod live_view;
mod liveness;
mod logs_store;
mod matrix;
mod notify;
mod observability;
mod one_way;
mod output;
mod readme;
mod reconnect;
mod rejects;
mod rerun;
mod retention;
mod secrets;
mod security;
mod store_faults;
mod supervise;
mod tidy;
mod traces;
mod triggers;
mod validation;
mod watch;
mod waves;
mod webhooks;
