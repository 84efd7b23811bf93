//! One trace per run, across the coordinator and the agent: an in-process
//! OTLP receiver collects what both export, and the test checks the trace
//! id, the parent links run → job → attempt → step, and TRACEPARENT inside a
//! step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use crate::harness::{AgentSpec, Fleet, bin, wait_for};

/// A span as the test sees it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) parent: String,
    pub(crate) attrs: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
pub(crate) struct Collector(pub(crate) Arc<Mutex<Vec<Seen>>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    seen.push(Seen {
                        service: service.clone(),
                        name: span.name.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        attrs: span.attributes.iter().map(|a| (a.key.clone(), text(&a.value))).collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Starts the receiver on a free port in a runtime of its own; returns its
/// address and what it collected.
pub(crate) fn start_collector() -> (String, Collector, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let collector = Collector::default();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = TraceServiceServer::new(collector.clone());
    rt.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (addr, collector, rt)
}

#[test]
fn one_trace_follows_a_run_from_submit_to_each_step() {
    let (addr, collector, _rt) = start_collector();
    let endpoint = format!("http://{addr}");
    let mut fleet = Fleet::start_with("traces", &["--otlp-endpoint", &endpoint]);
    // Export the agent's batches quickly.
    let extra = ["--otlp-endpoint", &endpoint];
    let envs = [("OTEL_BSP_SCHEDULE_DELAY", "200")];
    fleet.start_agent("tracer", AgentSpec { extra: &extra, envs: &envs, ..AgentSpec::default() });
    fleet.wait_agents(1);
    let marks = fleet.dir.path().join("traceparent");
    let yaml = format!(
        "name: traced\njobs:\n  build:\n    steps:\n      - run: echo \"$TRACEPARENT\" > {m}\n  test:\n    needs: [build]\n    steps:\n      - run: echo testing\n",
        m = marks.display()
    );
    let run = fleet.submit("traced.yml", &yaml);
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");

    // The coordinator exports the run span when the run ends, the agent each
    // step span when the step ends; both in batches.
    let spans = wait_for("the run's spans", Duration::from_secs(30), || {
        let seen = collector.0.lock().unwrap().clone();
        let run_span = seen.iter().any(|s| s.name == "run traced");
        let steps = seen.iter().filter(|s| s.name.starts_with("step ")).count();
        (run_span && steps >= 2).then_some(seen)
    });
    let of_run: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.attrs.get("cicd.pipeline.run.id").map(String::as_str) == Some(run.as_str()))
        .collect();
    let find = |name: &str| {
        of_run.iter().find(|s| s.name == name).copied().unwrap_or_else(|| panic!("no span {name:?} in {of_run:#?}"))
    };
    let run_span = find("run traced");
    let trace = &run_span.trace_id;
    assert!(of_run.iter().all(|s| &s.trace_id == trace), "one trace id: {of_run:#?}");
    assert_eq!(run_span.service, "drover-coordinator");
    assert_eq!(run_span.attrs.get("cicd.pipeline.name").map(String::as_str), Some("traced"));
    for job in ["build", "test"] {
        let job_span = find(&format!("job {job}"));
        assert_eq!(job_span.parent, run_span.span_id, "job {job} is a child of the run");
        assert_eq!(job_span.attrs.get("cicd.pipeline.task.name").map(String::as_str), Some(job));
        let attempt = find(&format!("attempt {job}#1"));
        assert_eq!(attempt.parent, job_span.span_id, "the attempt of {job} is a child of the job");
        let dispatch = find(&format!("dispatch {job}"));
        assert_eq!(dispatch.parent, job_span.span_id);
        let step = of_run
            .iter()
            .find(|s| {
                s.name.starts_with("step ") && s.attrs.get("cicd.pipeline.task.name").map(String::as_str) == Some(job)
            })
            .unwrap_or_else(|| panic!("no step span of {job}: {of_run:#?}"));
        assert_eq!(step.service, "drover-agent");
        assert_eq!(step.parent, attempt.span_id, "the step of {job} is a child of the attempt");
    }
    // TRACEPARENT inside the step names the step's span in the same trace.
    let tp = std::fs::read_to_string(&marks).unwrap();
    let parts: Vec<&str> = tp.trim().split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[1], trace, "TRACEPARENT carries the run's trace id");
    let build_step = of_run
        .iter()
        .find(|s| {
            s.name.starts_with("step ") && s.attrs.get("cicd.pipeline.task.name").map(String::as_str) == Some("build")
        })
        .unwrap();
    assert_eq!(parts[2], build_step.span_id, "TRACEPARENT names the step span");
}

#[test]
fn a_run_submitted_from_inside_a_trace_continues_it() {
    let (addr, collector, _rt) = start_collector();
    let endpoint = format!("http://{addr}");
    let mut fleet = Fleet::start_with("traceparent", &["--otlp-endpoint", &endpoint]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let path = fleet.dir.path().join("child.yml");
    std::fs::write(&path, "name: child\njobs:\n  a:\n    steps:\n      - run: \"true\"\n").unwrap();
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let out = std::process::Command::new(bin("drover"))
        .args(["run", path.to_str().unwrap()])
        .env("DROVER_COORDINATOR", fleet.url())
        .env("DROVER_TLS_DIR", &fleet.tls)
        .env("TRACEPARENT", format!("00-{trace}-{parent}-01"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(30))["state"], "succeeded");
    let run_span = wait_for("the run span", Duration::from_secs(30), || {
        collector.0.lock().unwrap().iter().find(|s| s.name == "run child").cloned()
    });
    assert_eq!(run_span.trace_id, trace);
    assert_eq!(run_span.parent, parent);
}

#[test]
fn a_collector_that_never_answers_holds_up_neither_runs_nor_shutdown() {
    // Takes connections and never reads or answers: every export hangs
    // until the exporter's own timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let mut fleet = Fleet::start_with("blackhole", &["--otlp-endpoint", &endpoint]);
    let extra = ["--otlp-endpoint", &endpoint];
    fleet.start_agent("a1", AgentSpec { slots: 2, extra: &extra, ..AgentSpec::default() });
    fleet.wait_agents(1);
    // A chain of jobs: each dispatch follows the previous job's end, so a
    // scheduler held up by exporting would stall the run.
    let mut yaml = String::from("name: chain\njobs:\n");
    for i in 0..10 {
        let needs = if i == 0 { String::new() } else { format!("    needs: [j{}]\n", i - 1) };
        yaml.push_str(&format!("  j{i}:\n{needs}    steps:\n      - run: echo {i}\n"));
    }
    let run = fleet.submit("chain.yml", &yaml);
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(60))["state"], "succeeded", "{}", fleet.logs());
    // SIGTERM: the coordinator steps down and exits although spans are
    // still waiting for the collector.
    let coordinator = fleet.coordinators[0].as_mut().unwrap();
    coordinator.signal(libc::SIGTERM);
    let status = wait_for("the coordinator to exit after SIGTERM", Duration::from_secs(20), || {
        coordinator.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status}");
}
