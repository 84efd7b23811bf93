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

pub use drover_telemetry::logging::error_chain;

/// Reads a certificate or key file, naming the file when it cannot.
pub fn read_pem(dir: &std::path::Path, file: &str) -> Result<Vec<u8>, BenchError> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|e| BenchError::new(format!("cannot read {}: {e}", path.display())))
}
