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

/// An error with every cause in its chain, `a: b: c`, for logs and
/// messages: tonic's transport errors say only "transport error" at the top
/// and the reason further down. A cause whose text is already there is
/// left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
