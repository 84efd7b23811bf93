//! The parts of `drover-bench` that are not its command line: its modes
//! ([`modes`]), simulated agents that speak the real agent protocol
//! ([`sim_agent`]), an in-process control client that follows the leader
//! ([`control`]), readings of a process's memory and CPU time
//! ([`proc_stats`]), and the JSON figures it prints ([`report`]).
//!
//! They live in the library rather than in the binary so that each piece
//! has its own module with its own header, and so that tests can use them.

pub mod control;
pub mod modes;
pub mod proc_stats;
pub mod report;
pub mod sim_agent;

use std::fmt;

/// Why a benchmark step failed, in words: the binary prints it and exits 1.
#[derive(Debug)]
pub struct BenchError(pub String);

impl BenchError {
    pub fn new(message: impl Into<String>) -> BenchError {
        BenchError(message.into())
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// A TLS directory the benchmark made with `drover certs` before it
/// started: `ca.pem`, `{cert}.pem` and `{cert}-key.pem`.
pub fn tls_bundle(dir: &std::path::Path, cert: &str, shown: &str) -> drover_client::tls::Bundle {
    drover_client::tls::Bundle {
        dir: dir.to_path_buf(),
        cert: cert.to_string(),
        shown: shown.to_string(),
        fix: "drover-bench issues it with `drover certs` before it starts: did that fail?".into(),
    }
}
