//! `drover validate FILE…`: checks pipeline files offline, with the very
//! parser and checker the coordinator runs at submit (`drover-pipeline`),
//! so a file that passes here is refused there only for what depends on
//! the fleet. Each problem is printed as `file:line:column: message` with
//! its hint, as a compiler prints errors; any problem exits 2.

use std::path::PathBuf;

use crate::client::{EXIT_INVALID, Exit};
use crate::out::outln;

/// What one file came to.
pub enum Checked {
    /// The pipeline's name and its job count.
    Valid { name: String, jobs: usize },
    /// Everything wrong with it, each problem on its own line(s).
    Invalid(String),
}

/// Reads and checks one file; a file that cannot be read is a problem like
/// any other.
pub fn check(file: &std::path::Path) -> Checked {
    let text = match crate::read_pipeline(file) {
        Ok(text) => text,
        Err(e) => return Checked::Invalid(e.message),
    };
    match drover_pipeline::parse(&file.to_string_lossy(), &text) {
        Ok(p) => Checked::Valid { jobs: p.jobs.len(), name: p.name },
        Err(e) => Checked::Invalid(e.to_string()),
    }
}

/// `drover validate`: every file is checked, whatever the ones before it
/// came to.
pub fn run(files: &[PathBuf]) -> Result<(), Exit> {
    let mut bad = 0;
    for file in files {
        match check(file) {
            Checked::Valid { name, jobs } => {
                let s = if jobs == 1 { "" } else { "s" };
                outln!("{}: ok, pipeline {name:?} with {jobs} job{s}", file.display());
            }
            Checked::Invalid(problems) => {
                eprintln!("{problems}");
                bad += 1;
            }
        }
    }
    match bad {
        0 => Ok(()),
        _ if files.len() == 1 => {
            Err(Exit::new(EXIT_INVALID, format!("{} is not a valid pipeline", files[0].display())))
        }
        _ => Err(Exit::new(EXIT_INVALID, format!("{bad} of {} files are not valid pipelines", files.len()))),
    }
}
