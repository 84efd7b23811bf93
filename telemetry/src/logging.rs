//! Log formats: structured logs through `tracing`, as text for people or as
//! one JSON object per line for log pipelines (`--log-format json`). The
//! level comes from `DROVER_LOG` (e.g. `info,drover_coordinator=debug`);
//! [`crate::trace::init`] installs the subscriber.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {s:?}; use text or json")),
        }
    }
}
