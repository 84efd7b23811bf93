//! The agent's metrics, served at `/metrics` with `--metrics-listen`, and
//! its readiness: connected to a coordinator that leads.

use std::sync::LazyLock;

use drover_telemetry::http::Reply;
use drover_telemetry::metrics::{Counter, Gauge, Text};

/// Attempt outcomes, as label values.
pub const OUTCOMES: [&str; 5] = ["succeeded", "failed", "timed_out", "cancelled", "fenced"];

#[derive(Default)]
pub struct Metrics {
    pub attempts_running: Gauge,
    pub attempts_finished: [Counter; 5],
    pub log_bytes: Counter,
    /// 1 while a session with the leader is open.
    pub connected: Gauge,
    pub sessions: Counter,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// Why the agent takes no new work (low disk), for `/readyz`; empty when
/// it is ready.
static UNREADY: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

pub fn set_unready(reason: &str) {
    *UNREADY.lock().unwrap_or_else(|e| e.into_inner()) = reason.to_string();
}

pub fn render() -> String {
    let m = &*METRICS;
    let mut t = Text::default();
    t.gauge("drover_agent_attempts_running", "Attempts executing on this agent.", m.attempts_running.get());
    let finished: Vec<(&str, u64)> =
        OUTCOMES.iter().copied().zip(m.attempts_finished.iter().map(Counter::get)).collect();
    t.counters(
        "drover_agent_attempts_finished_total",
        "Attempts this agent finished, by outcome.",
        "outcome",
        &finished,
    );
    t.counter("drover_agent_log_bytes_total", "Log bytes this agent produced.", m.log_bytes.get());
    t.gauge("drover_agent_connected", "1 while a session with the leader is open.", m.connected.get());
    t.counter("drover_agent_sessions_total", "Sessions opened with a coordinator.", m.sessions.get());
    t.finish()
}

pub async fn observe(path: String) -> Reply {
    match path.as_str() {
        "/metrics" => Reply::metrics(render()),
        "/healthz" => Reply::text(200, "ok\n"),
        "/readyz" => {
            let unready = UNREADY.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match (METRICS.connected.get() == 1, unready.is_empty()) {
                (_, false) => Reply::text(503, format!("not ready: {unready}\n")),
                (true, true) => Reply::text(200, "ready: connected to the leader\n"),
                (false, true) => Reply::text(503, "not ready: not connected to a leading coordinator\n"),
            }
        }
        _ => Reply::text(404, "try /metrics, /healthz or /readyz\n"),
    }
}
