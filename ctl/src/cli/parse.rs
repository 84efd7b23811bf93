//! The parsers of flag values that several commands share: durations,
//! run states, `--since` and `--queue-timeout`.

use std::time::Duration;

use drover_proto::v1 as pb;

/// Parses a duration flag: whole numbers each followed by h, m, s or ms,
/// largest unit first (`90s`, `1m30s`, `500ms`), as the coordinator's flags
/// take them (less days: nobody waits days for a coordinator).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    // The flags' grammar, less days: nobody waits days for a coordinator.
    const UNITS: &drover_client::duration::Units = &[
        ("h", Duration::from_secs(3600)),
        ("m", Duration::from_secs(60)),
        ("s", Duration::from_secs(1)),
        ("ms", Duration::from_millis(1)),
    ];
    drover_client::duration::parse(text, UNITS).ok_or_else(|| {
        format!(
            "{text:?} is not a duration: write whole numbers with units h, m, s or ms, largest first (500ms, 30s, 1m30s, 5m)"
        )
    })
}

/// A run state as `drover runs --status` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunStateArg {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStateArg {
    pub fn proto(self) -> pb::RunState {
        match self {
            RunStateArg::Running => pb::RunState::Running,
            RunStateArg::Succeeded => pb::RunState::Succeeded,
            RunStateArg::Failed => pb::RunState::Failed,
            RunStateArg::Cancelled => pb::RunState::Cancelled,
        }
    }
}

/// `--since`: a duration with days too (`7d`).
pub(super) fn parse_since(text: &str) -> Result<Duration, String> {
    drover_client::duration::parse(text, drover_client::duration::FLAG_UNITS).ok_or_else(|| {
        format!("{text:?} is not a duration: write whole numbers with units d, h, m or s, largest first (30m, 2h, 7d)")
    })
}

/// `--queue-timeout`: longer than zero, at most 7 days, as in files.
pub(super) fn parse_queue_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("a queue timeout must be longer than zero".to_string()),
        d if d > drover_pipeline::MAX_TIMEOUT => Err(format!("{text} is over the limit of 7 days (168h)")),
        d => Ok(d),
    }
}
