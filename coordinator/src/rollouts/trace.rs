//! A rollout's trace: `rollout` → `step N` (or `rollback`) → one span per
//! node action (`install web on web-1`), with the action's health check as
//! its child (`health web-1`, from installed to healthy or failed). A
//! deploy job's rollout is a child of the job's span, in the run's trace,
//! so one trace follows a commit from its pipeline to the nodes; a rollback
//! asked for by hand starts a trace of its own.
//!
//! As with runs (`crate::spans`), nothing is held open: the ids and start
//! times are kept in the record ([`RolloutTrace`]), so a new leader
//! finishes the spans of a rollout it inherited, and each span is staged
//! ([`Driver::spans`]) when what it covers has ended, then emitted after the
//! commit.

use std::collections::BTreeMap;

use drover_telemetry::trace::{Recorded, new_span_id, new_trace_id, record};
use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize};

use super::drive::Driver;
use super::records::RolloutRecord;
use crate::core::fleet::DeployState;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RolloutTrace {
    pub trace_id: String,
    pub span_id: String,
    /// The deploy job's span, or empty.
    #[serde(default)]
    pub parent_span_id: String,
    /// The current step's span and when it began.
    #[serde(default)]
    pub step_span_id: String,
    #[serde(default)]
    pub step_started_ms: u64,
    #[serde(default)]
    pub step_name: String,
    /// Each node's action in flight.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionTrace>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionTrace {
    pub span_id: String,
    pub kind: String,
    pub started_ms: u64,
    #[serde(default)]
    pub installed_ms: Option<u64>,
}

/// A span staged for emission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub attributes: Vec<(&'static str, String)>,
    pub error: Option<String>,
}

impl Span {
    pub fn emit(self) {
        record(|| Recorded {
            name: self.name,
            trace_id: &self.trace_id,
            span_id: Some(&self.span_id),
            parent_span_id: &self.parent_span_id,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            attributes: self.attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
            error: self.error,
        });
    }
}

/// A new rollout's trace: under the deploy job's span when there is one.
pub fn begin(parent: Option<(String, String)>, now_ms: u64) -> RolloutTrace {
    let (trace_id, parent_span_id) = parent.unwrap_or_else(|| (new_trace_id(), String::new()));
    RolloutTrace {
        trace_id,
        span_id: new_span_id(),
        parent_span_id,
        step_span_id: new_span_id(),
        step_started_ms: now_ms,
        step_name: "step 0".into(),
        actions: BTreeMap::new(),
    }
}

fn attrs(rec: &RolloutRecord) -> Vec<(&'static str, String)> {
    let mut a = vec![
        ("drover.rollout.id", rec.id.to_string()),
        ("drover.environment", rec.env.clone()),
        ("drover.service", rec.service.clone()),
        ("drover.release.version", rec.release.version.clone()),
        ("drover.release.sha256", rec.release.sha256.clone()),
    ];
    if let Some(job) = &rec.job {
        a.push(("cicd.pipeline.run.id", job.run.to_string()));
        a.push(("cicd.pipeline.task.name", job.job.clone()));
    }
    a
}

impl Driver {
    /// An action was sent to `node`.
    pub(super) fn trace_action(&mut self, id: u64, node: &str, kind: &str, now_ms: u64) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        let t = ActionTrace { span_id: new_span_id(), kind: kind.to_string(), started_ms: now_ms, installed_ms: None };
        rec.trace.actions.insert(node.to_string(), t);
    }

    /// A node reported on its action: an install's start, or its end.
    pub(super) fn trace_report(&mut self, id: u64, node: &str, state: DeployState, message: &str, now_ms: u64) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        if state == DeployState::Installed {
            if let Some(a) = rec.trace.actions.get_mut(node) {
                a.installed_ms.get_or_insert(now_ms);
            }
            return;
        }
        let Some(action) = rec.trace.actions.remove(node) else { return };
        let mut a = attrs(rec);
        a.push(("drover.node", node.to_string()));
        a.push(("drover.result", format!("{state:?}").to_lowercase()));
        let error = (state == DeployState::Failed).then(|| message.to_string());
        if let Some(installed) = action.installed_ms {
            self.spans.push(Span {
                name: format!("health {node}"),
                trace_id: rec.trace.trace_id.clone(),
                span_id: new_span_id(),
                parent_span_id: action.span_id.clone(),
                start_ms: installed,
                end_ms: now_ms,
                attributes: a.clone(),
                error: error.clone(),
            });
        }
        self.spans.push(Span {
            name: format!("{} {} on {node}", action.kind, rec.service),
            trace_id: rec.trace.trace_id.clone(),
            span_id: action.span_id,
            parent_span_id: rec.trace.step_span_id.clone(),
            start_ms: action.started_ms,
            end_ms: now_ms,
            attributes: a,
            error,
        });
    }

    /// The rollout moved to `step_name` (`step 1`, `rollback`): the
    /// current step's span ends.
    pub(super) fn trace_step(&mut self, id: u64, step_name: String, now_ms: u64) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        if rec.trace.step_name == step_name {
            return;
        }
        let span = Span {
            name: rec.trace.step_name.clone(),
            trace_id: rec.trace.trace_id.clone(),
            span_id: std::mem::replace(&mut rec.trace.step_span_id, new_span_id()),
            parent_span_id: rec.trace.span_id.clone(),
            start_ms: rec.trace.step_started_ms,
            end_ms: now_ms,
            attributes: attrs(rec),
            error: None,
        };
        rec.trace.step_started_ms = now_ms;
        rec.trace.step_name = step_name;
        self.spans.push(span);
    }

    /// The rollout ended: its last step's span and its own.
    pub(super) fn trace_end(&mut self, id: u64, now_ms: u64) {
        let Some(rec) = self.records.get(&id) else { return };
        if rec.trace.span_id.is_empty() {
            return;
        }
        let phase = rec.phase().to_string();
        let mut a = attrs(rec);
        a.push(("drover.rollout.phase", phase.clone()));
        let error = (phase != "succeeded").then(|| rec.message.clone());
        let span = Span {
            name: format!("rollout {} to {}", rec.service, rec.env),
            trace_id: rec.trace.trace_id.clone(),
            span_id: rec.trace.span_id.clone(),
            parent_span_id: rec.trace.parent_span_id.clone(),
            start_ms: rec.started_ms.unwrap_or(rec.created_ms),
            end_ms: now_ms,
            attributes: a,
            error,
        };
        self.trace_step(id, String::new(), now_ms);
        self.spans.push(span);
    }
}
