//! OpenTelemetry traces, exported with OTLP over gRPC when an endpoint is
//! configured (`--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`).
//!
//! Two kinds of spans go out:
//!
//! - Ordinary `tracing` spans (a step on an agent, a store transaction on
//!   the coordinator), through `tracing-opentelemetry`.
//! - **Recorded spans** ([`record`]): the run, job, attempt and dispatch
//!   spans of a pipeline run. A run can outlive the coordinator that started
//!   it (failover, restart), so these spans are not held open in memory.
//!   Their ids are made up front and kept in the store with the run, and
//!   each span is emitted once, when what it covers has ended, with its real
//!   start and end times. Any leader can therefore finish any run's trace,
//!   and the parent links stay whole.
//!
//! Both go through batch processors that export on their own thread with a
//! bounded queue: exporting never blocks the scheduler, and a dead collector
//! only costs dropped spans.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracerProvider, SpanData, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::logging::LogFormat;

/// The processor that recorded spans go through; set when exporting.
static RECORDED: OnceLock<BatchSpanProcessor> = OnceLock::new();

/// Flushes and stops the exporters when dropped (at the end of `main`).
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

/// How long the exit waits for each exporter to flush: a collector that
/// does not answer must not hold up a shutdown (systemd, a deploy).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = RECORDED.get() {
            // force_flush blocks for as long as the exporter's own timeout;
            // wait for it on another thread, and only so long.
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = p.force_flush();
                let _ = done_tx.send(());
            });
            let _ = done_rx.recv_timeout(FLUSH_TIMEOUT);
        }
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown_with_timeout(FLUSH_TIMEOUT);
        }
    }
}

/// Installs logging and, with an OTLP endpoint, trace export. Must be called
/// inside the tokio runtime: the gRPC exporter's connection lives on it.
pub fn init(format: LogFormat, service: &'static str, otlp_endpoint: Option<&str>) -> Result<Guard, String> {
    let filter = EnvFilter::try_from_env("DROVER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let (fmt_text, fmt_json) = match format {
        LogFormat::Text => (Some(fmt), None),
        LogFormat::Json => (None, Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).json())),
    };
    let mut provider = None;
    let otel_layer = match otlp_endpoint.filter(|e| !e.is_empty()) {
        None => None,
        Some(endpoint) => {
            let resource = Resource::builder().with_service_name(service).build();
            let exporter = || {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .build()
                    .map_err(|e| format!("cannot set up OTLP export to {endpoint}: {e}"))
            };
            let p =
                SdkTracerProvider::builder().with_batch_exporter(exporter()?).with_resource(resource.clone()).build();
            let mut recorded = BatchSpanProcessor::builder(exporter()?).build();
            recorded.set_resource(&resource);
            let _ = RECORDED.set(recorded);
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            let tracer = p.tracer(service);
            provider = Some(p);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_text)
        .with(fmt_json)
        .with(otel_layer)
        .try_init()
        .map_err(|e| format!("cannot install logging: {e}"))?;
    Ok(Guard { provider })
}

/// A new random trace id, as 32 hex digits.
pub fn new_trace_id() -> String {
    RandomIdGenerator::default().new_trace_id().to_string()
}

/// A new random span id, as 16 hex digits.
pub fn new_span_id() -> String {
    RandomIdGenerator::default().new_span_id().to_string()
}

/// The W3C `traceparent` header value for a (sampled) span.
pub fn traceparent(trace_id: &str, span_id: &str) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

/// Splits a W3C `traceparent` into (trace id, span id), if it is valid.
pub fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, _flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let valid = version.len() == 2
        && trace.len() == 32
        && span.len() == 16
        && TraceId::from_hex(trace).is_ok_and(|t| t != TraceId::INVALID)
        && SpanId::from_hex(span).is_ok_and(|s| s != SpanId::INVALID);
    valid.then(|| (trace.to_string(), span.to_string()))
}

/// Makes a `tracing` span a child of the span named by `traceparent`.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    let Some((trace, parent)) = parse_traceparent(traceparent) else { return };
    let (Ok(trace), Ok(parent)) = (TraceId::from_hex(&trace), SpanId::from_hex(&parent)) else { return };
    let sc = SpanContext::new(trace, parent, TraceFlags::SAMPLED, true, TraceState::default());
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
}

/// The `traceparent` of a `tracing` span, when traces are exported.
pub fn span_traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| traceparent(&sc.trace_id().to_string(), &sc.span_id().to_string()))
}

/// A span whose ids and times are known, emitted after the fact.
pub struct Recorded<'a> {
    pub name: String,
    pub trace_id: &'a str,
    /// `None` for a span that nothing refers to: it is given a new id.
    pub span_id: Option<&'a str>,
    /// Empty for a root span.
    pub parent_span_id: &'a str,
    pub start_ms: u64,
    pub end_ms: u64,
    pub attributes: Vec<KeyValue>,
    /// An error description marks the span as failed.
    pub error: Option<String>,
}

/// Whether traces are exported: `init` was given an OTLP endpoint, and
/// installed the layer that turns `tracing` spans into OpenTelemetry ones.
/// A span made only for export can be skipped otherwise.
pub fn exporting() -> bool {
    RECORDED.get().is_some()
}

/// Emits the span `build` makes; does nothing unless traces are exported.
/// The span is built only then: its attributes are a dozen allocations, and
/// the scheduler records three spans per job, whether or not anything
/// collects them.
pub fn record<'a>(build: impl FnOnce() -> Recorded<'a>) {
    let Some(processor) = RECORDED.get() else { return };
    let span = build();
    let id = match span.span_id {
        Some(hex) => SpanId::from_hex(hex),
        None => Ok(RandomIdGenerator::default().new_span_id()),
    };
    let (Ok(trace), Ok(id)) = (TraceId::from_hex(span.trace_id), id) else { return };
    let parent = SpanId::from_hex(span.parent_span_id).unwrap_or(SpanId::INVALID);
    let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    let data = SpanData {
        span_context: SpanContext::new(trace, id, TraceFlags::SAMPLED, false, TraceState::default()),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: span.name.into(),
        start_time: at(span.start_ms),
        end_time: at(span.end_ms.max(span.start_ms)),
        attributes: span.attributes,
        dropped_attributes_count: 0,
        events: Default::default(),
        links: Default::default(),
        status: match span.error {
            Some(e) => Status::error(e),
            None => Status::Ok,
        },
        instrumentation_scope: InstrumentationScope::builder("drover").build(),
    };
    processor.on_end(data);
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_not_built_unless_traces_are_exported() {
        // Nothing in this crate's tests installs an exporter.
        assert!(!exporting());
        let mut built = false;
        record(|| {
            built = true;
            Recorded {
                name: "x".into(),
                trace_id: "",
                span_id: None,
                parent_span_id: "",
                start_ms: 0,
                end_ms: 0,
                attributes: Vec::new(),
                error: None,
            }
        });
        assert!(!built);
    }

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let (t, s) = (new_trace_id(), new_span_id());
        assert_eq!(t.len(), 32);
        assert_eq!(s.len(), 16);
        assert_eq!(parse_traceparent(&traceparent(&t, &s)), Some((t, s)));
        for bad in ["", "00-abc-def-01", "00-00000000000000000000000000000000-0000000000000001-01", "garbage"] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }
}
