//! `-o text|wide|json|yaml`, the one output flag of every read command, as
//! kubectl has it. A command builds its answer once as a JSON value, with
//! the field names README.md documents (scripts rely on them: they only
//! ever gain fields), and prints it in the format asked: a table (`text`,
//! or `wide` with more columns), one JSON document, or YAML. Streams
//! (`logs`, `watch`) print JSON lines, one object per line, as they come.

use clap::ValueEnum;
use serde_json::Value;

use crate::client::{EXIT_INVALID, Exit};
use crate::out::outln;

/// How a read command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// A table for people.
    #[default]
    Text,
    /// The table with more columns.
    Wide,
    /// One JSON document (JSON lines for `logs` and `watch`).
    Json,
    /// One YAML document (not for `logs` and `watch`).
    Yaml,
}

impl Format {
    /// Whether this is for a program rather than for people.
    pub fn structured(self) -> bool {
        matches!(self, Format::Json | Format::Yaml)
    }

    /// For the streaming commands, which print JSON lines but no YAML.
    pub fn for_stream(self, command: &str) -> Result<Format, Exit> {
        match self {
            Format::Yaml => Err(Exit::new(
                EXIT_INVALID,
                format!("`{command}` streams: use -o json for JSON lines, one object per line"),
            )),
            f => Ok(f),
        }
    }
}

/// Prints `value` as one JSON or YAML document. Text formats are the
/// caller's (they are tables, not documents).
pub fn document(format: Format, value: &Value) -> Result<(), Exit> {
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(value).expect("JSON values serialize")),
        Format::Yaml => {
            let yaml = serde_saphyr::to_string(value)
                .map_err(|e| Exit::new(EXIT_INVALID, format!("cannot write YAML: {e}")))?;
            outln!("{}", yaml.trim_end());
        }
        Format::Text | Format::Wide => unreachable!("tables are printed by each command"),
    }
    Ok(())
}

/// Prints one JSON line.
pub fn line(value: &Value) {
    outln!("{}", serde_json::to_string(value).expect("JSON values serialize"));
}

/// A duration for a table: `45s`, `3m12s`, `2h5m`, `3d4h`, the two largest
/// units.
pub fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_tables() {
        let cases =
            [(0, "0s"), (999, "0s"), (45_000, "45s"), (192_000, "3m12s"), (7_500_000, "2h5m"), (273_600_000, "3d4h")];
        for (ms, want) in cases {
            assert_eq!(human(ms), want, "{ms}");
        }
    }

    #[test]
    fn yaml_is_refused_for_streams_only() {
        assert!(Format::Yaml.for_stream("logs").is_err());
        assert_eq!(Format::Json.for_stream("logs").unwrap(), Format::Json);
        assert!(Format::Yaml.structured() && Format::Json.structured() && !Format::Wide.structured());
    }
}
