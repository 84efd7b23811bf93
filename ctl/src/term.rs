//! Job output made safe for a terminal: the rule lives in `drover_client::term`
//! (shared with the coordinator's web UI); this re-export keeps `crate::term::…` working.

pub use drover_client::term::{Sanitizer, field};
