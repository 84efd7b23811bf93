//! Metric analysis at a rollout's gates (issue 17): a deploy with
//! `analysis:` rolls out with `Spec::await_verdict`, so each step, once its
//! nodes are healthy, asks for a verdict (`Effect::AwaitVerdict`). The
//! driver then marks the record as analysing that step (a new run of it
//! each time: a resumed pause asks again), and the controller keeps one
//! task measuring each such record ([`analyse`]; a new leader starts them
//! again from the records). Each measurement comes back here
//! ([`Driver::measured`]), is kept with the rollout, and is judged with the
//! others of its run (`drover_deploy::analysis`); the first verdict goes to
//! the machine, which goes on, goes back, or pauses for a person.

use drover_deploy::analysis::{self, Limits, Outcome, Standing};
use drover_deploy::rollout::{Input, NodeState, Verdict};
use drover_pipeline::deploy::Analysis;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::drive::Driver;
use super::measure;
use super::trace::Span;

/// The most measurements a rollout keeps (the oldest go first).
pub const MAX_MEASUREMENTS: usize = 1000;
/// The step of a background analysis' measurements: not a step, the whole
/// rollout (`run: background` or `both`).
pub const BACKGROUND: u32 = u32::MAX;

/// A step being analysed: which, and which run of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysing {
    pub step: u32,
    pub run: u32,
    pub started_ms: u64,
}

/// The nodes a step's metrics compared with a baseline split the
/// samples into: the canary's (updated so far) and as many still on the
/// current version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub canary: Vec<String>,
    pub baseline: Vec<String>,
}

/// One measurement, as kept with the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub step: u32,
    pub run: u32,
    pub metric: String,
    /// When it was taken, and when its answer came.
    pub at_ms: u64,
    #[serde(default)]
    pub took_ms: u64,
    /// The value as text (`null` for none); empty when it could not be
    /// taken.
    pub value: String,
    pub outcome: Outcome,
    /// Why it could not be taken.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// A metric compared with a baseline: the canary's nodes' values and
    /// the baseline's, judged together once the run has `count`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline: Vec<f64>,
}

impl Driver {
    /// The machine asks for step `step`'s verdict: a new analysis run of it.
    pub(super) fn begin_analysis(&mut self, id: u64, step: u32, now_ms: u64) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        if !rec.deploy.analysis.as_ref().is_some_and(|a| a.run.at_steps()) {
            self.pass_or_hold(id, step, now_ms);
            return;
        }
        rec.analysis_runs += 1;
        rec.analysing = Some(Analysing { step, run: rec.analysis_runs, started_ms: now_ms });
        rec.split = rec.deploy.analysis.as_ref().filter(|a| a.metrics.iter().any(|m| m.compare.is_some())).map(|_| {
            let machine = rec.rollout.as_ref();
            let nodes = machine.map(|m| m.nodes.as_slice()).unwrap_or_default();
            let canary: Vec<String> =
                nodes.iter().filter(|n| n.state == NodeState::Healthy).map(|n| n.name.clone()).collect();
            let waiting: Vec<String> =
                nodes.iter().filter(|n| n.state == NodeState::Waiting).map(|n| n.name.clone()).collect();
            let baseline = waiting[waiting.len().saturating_sub(canary.len())..].to_vec();
            Split { canary, baseline }
        });
        // A step with only metrics compared with a baseline, and none left
        // to compare with, has nothing to measure.
        let unsplit = rec.split.as_ref().is_some_and(|s| s.baseline.is_empty());
        if unsplit && rec.deploy.analysis.as_ref().is_some_and(|a| a.metrics.iter().all(|m| m.compare.is_some())) {
            rec.analysing = None;
            self.pass_or_hold(id, step, now_ms);
            return;
        }
        if let Some(m) = rec.rollout.as_mut() {
            m.message = format!("step {step}: analysing its metrics (run {})", rec.analysis_runs);
        }
        self.stage(id);
    }

    /// Rollout `id` started: its background analysis, if it has one, begins
    /// (again, when a resume asks for it after a pause).
    pub(super) fn begin_background(&mut self, id: u64, now_ms: u64) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        if rec.fast_track || rec.remove || !rec.deploy.analysis.as_ref().is_some_and(|a| a.run.in_background()) {
            return;
        }
        rec.analysis_runs += 1;
        rec.background = Some(Analysing { step: BACKGROUND, run: rec.analysis_runs, started_ms: now_ms });
        self.stage(id);
    }

    /// A new term: each step being analysed, and each background analysis,
    /// starts a new run, measured afresh (what the last leader measured
    /// stays with the rollout).
    pub(super) fn resume_analyses(&mut self, now_ms: u64) {
        let ids: Vec<u64> = self
            .records
            .values()
            .filter(|r| (r.analysing.is_some() || r.background.is_some()) && !r.is_finished())
            .map(|r| r.id)
            .collect();
        for id in ids {
            let rec = self.records.get_mut(&id).expect("listed");
            for run in [&mut rec.analysing, &mut rec.background] {
                if let Some(a) = run.as_mut() {
                    rec.analysis_runs += 1;
                    *a = Analysing { run: rec.analysis_runs, started_ms: now_ms, ..*a };
                }
            }
            self.stage(id);
        }
    }

    /// A measurement of rollout `id`'s analysis came in: kept, and judged
    /// with the others of its run. One of a run that is over is dropped.
    pub fn measured(&mut self, id: u64, m: Measurement, now_ms: u64) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        let background = m.step == BACKGROUND;
        let current = if background { rec.background } else { rec.analysing };
        let Some(run) = current.filter(|a| a.step == m.step && a.run == m.run) else { return };
        let Some(analysis) = rec.deploy.analysis.clone() else { return };
        self.spans.push(measurement_span(rec, &m, now_ms));
        rec.measurements.push(m);
        if rec.measurements.len() > MAX_MEASUREMENTS {
            let extra = rec.measurements.len() - MAX_MEASUREMENTS;
            rec.measurements.drain(..extra);
        }
        let unsplit = rec.split.as_ref().is_some_and(|s| s.baseline.is_empty());
        let standings = standings(&analysis, &rec.measurements, run, unsplit);
        let verdict = analysis::verdict(standings.iter().map(|(name, s)| (name.as_str(), s)));
        self.stage(id);
        if background {
            self.judged_in_background(id, verdict, now_ms);
            return;
        }
        if let Some(verdict) = verdict {
            self.records.get_mut(&id).expect("exists").analysing = None;
            self.notify_verdict(id, &verdict, &format!("step {}", run.step), now_ms);
            match verdict {
                Verdict::Pass => self.pass_or_hold(id, run.step, now_ms),
                verdict => drop(self.apply(id, Input::Verdict { step: run.step, verdict }, now_ms)),
            }
        }
    }
}

impl Driver {
    /// A background analysis' verdict so far: a failure sends the rollout
    /// back (a one-way door freezes), an inconclusive one pauses it for a
    /// person (resuming measures again); a pass cannot come, as a
    /// background analysis measures until the rollout ends.
    fn judged_in_background(&mut self, id: u64, verdict: Option<Verdict>, now_ms: u64) {
        if let Some(verdict) = &verdict {
            self.notify_verdict(id, verdict, "the background analysis", now_ms);
        }
        let rec = self.records.get_mut(&id).expect("exists");
        match verdict {
            Some(Verdict::Fail { reason }) => {
                rec.background = None;
                self.abort(id, format!("the background analysis failed: {reason}"), now_ms);
            }
            Some(Verdict::Inconclusive { reason }) => {
                rec.background = None;
                self.apply(id, Input::Pause, now_ms);
                if let Some(m) = self.records.get_mut(&id).and_then(|r| r.rollout.as_mut()) {
                    m.message = format!(
                        "paused: the background analysis is inconclusive: {reason}; `drover rollout resume` measures \
                         again, `abort` goes back"
                    );
                }
                self.stage(id);
            }
            Some(Verdict::Pass) | None => {}
        }
    }
}

impl Driver {
    /// An analysis' failing or inconclusive verdict, told.
    fn notify_verdict(&mut self, id: u64, verdict: &Verdict, what: &str, now_ms: u64) {
        use crate::notifications::Kind;
        match verdict {
            Verdict::Fail { reason } => {
                self.notify(id, Kind::AnalysisFailed, format!("{what} failed its analysis: {reason}"), now_ms)
            }
            Verdict::Inconclusive { reason } => self.notify(
                id,
                Kind::AnalysisInconclusive,
                format!("{what}'s analysis is inconclusive: {reason}"),
                now_ms,
            ),
            Verdict::Pass => {}
        }
    }
}

/// Each metric of `analysis` with its standing in run `run` (a background
/// run's metrics have no `count`: they measure until the rollout ends).
///
/// At a step that leaves no node on the current version (`unsplit`: the
/// last), a metric compared with a baseline has nothing to compare with:
/// it is not measured, and passes (the steps before it were compared).
pub fn standings(
    analysis: &Analysis,
    measurements: &[Measurement],
    run: Analysing,
    unsplit: bool,
) -> Vec<(String, Standing)> {
    analysis
        .metrics
        .iter()
        .map(|metric| {
            let outcomes: Vec<Outcome> = measurements
                .iter()
                .filter(|m| m.step == run.step && m.run == run.run && m.metric == metric.name)
                .map(|m| m.outcome)
                .collect();
            let limits = Limits {
                count: if run.step == BACKGROUND { u32::MAX } else { metric.count },
                failure_limit: metric.failure_limit,
                inconclusive_limit: metric.inconclusive_limit,
            };
            let standing = match (&metric.compare, analysis::standing(limits, &outcomes)) {
                (Some(_), _) if unsplit && run.step != BACKGROUND => Standing::Passed,
                (Some(compare), Standing::Passed) => {
                    let of_run = measurements
                        .iter()
                        .filter(|m| m.step == run.step && m.run == run.run && m.metric == metric.name);
                    let (canary, baseline): (Vec<f64>, Vec<f64>) =
                        of_run.fold((vec![], vec![]), |(mut c, mut b), m| {
                            c.extend(&m.canary);
                            b.extend(&m.baseline);
                            (c, b)
                        });
                    judge_baseline(compare, &canary, &baseline)
                }
                (_, standing) => standing,
            };
            (metric.name.clone(), standing)
        })
        .collect()
}

/// A metric compared with a baseline, once its measurements are in: the
/// judge's word on the canary's samples against the baseline's.
fn judge_baseline(compare: &drover_pipeline::deploy::Compare, canary: &[f64], baseline: &[f64]) -> Standing {
    use drover_deploy::compare::{self, Compared, Judge, Worse};
    let worse = match compare.worse {
        drover_pipeline::deploy::Worse::Higher => Worse::Higher,
        drover_pipeline::deploy::Worse::Lower => Worse::Lower,
    };
    let c = compare::compare(canary, baseline, worse, &Judge::default());
    let said = format!(
        "the canary's median {:.4} against the baseline's {:.4} (Mann-Whitney U over {}+{} samples, p={:.4})",
        c.canary_median,
        c.baseline_median,
        canary.len(),
        baseline.len(),
        c.p
    );
    match c.outcome {
        Compared::Pass => Standing::Passed,
        Compared::Worse => Standing::Failed(format!("worse than its baseline: {said}")),
        Compared::TooFew => Standing::Inconclusive(format!(
            "too few samples to compare with its baseline (at least {} a side): {said}",
            compare::MIN_SAMPLES
        )),
    }
}

fn measurement_span(rec: &super::records::RolloutRecord, m: &Measurement, now_ms: u64) -> Span {
    Span {
        name: format!("measure {}", m.metric),
        trace_id: rec.trace.trace_id.clone(),
        span_id: drover_telemetry::trace::new_span_id(),
        parent_span_id: rec.trace.step_span_id.clone(),
        start_ms: m.at_ms,
        end_ms: now_ms.max(m.at_ms),
        attributes: vec![
            ("drover.metric", m.metric.clone()),
            ("drover.value", m.value.clone()),
            ("drover.outcome", m.outcome.as_str().to_owned()),
            ("drover.step", m.step.to_string()),
        ],
        error: (m.outcome == Outcome::Failed).then(|| format!("{} measured {}", m.metric, m.value)),
    }
}

/// Measures every metric of `analysis` for run `run` of rollout `id`'s
/// step, each on its own schedule (`initial_delay`, then `count` times
/// every `interval`), sending each measurement to `tx`. The controller
/// aborts it once the run is decided.
pub async fn analyse(
    id: u64,
    run: Analysing,
    analysis: Analysis,
    split: Option<Split>,
    caller: measure::Caller,
    tx: mpsc::UnboundedSender<(u64, Measurement)>,
) {
    let split = split.unwrap_or_default();
    let unsplit = split.baseline.is_empty();
    let metrics = analysis.metrics.into_iter().map(|metric| {
        let (caller, tx, split) = (caller.clone(), tx.clone(), split.clone());
        async move {
            // Nothing to compare with at this step (see `standings`).
            if metric.compare.is_some() && unsplit {
                return;
            }
            tokio::time::sleep(metric.initial_delay).await;
            let count = if run.step == BACKGROUND { u32::MAX } else { metric.count.max(1) };
            for i in 0..count {
                if i > 0 {
                    tokio::time::sleep(metric.interval).await;
                }
                let at_ms = drover_telemetry::trace::now_ms();
                let (mut canary, mut baseline) = (Vec::new(), Vec::new());
                let measured = match &metric.compare {
                    Some(compare) => measure::measure_split(&caller, &metric, compare, &split).await.map(|(c, b)| {
                        let shown = format!("canary {} · baseline {}", list(&c), list(&b));
                        (canary, baseline) = (c, b);
                        // Judged with the rest of the run's once they are in.
                        (shown, Outcome::Successful)
                    }),
                    None => measure::measure(&caller, id, &metric).await.map(|value| {
                        let shown =
                            if value == drover_pipeline::expr::Value::Null { "null".into() } else { value.to_string() };
                        (shown, measure::judge(&metric, &value))
                    }),
                };
                let (value, outcome, message) = match measured {
                    Ok((shown, outcome)) => (shown, outcome, String::new()),
                    Err(why) => (String::new(), Outcome::Error, why),
                };
                let took_ms = drover_telemetry::trace::now_ms().saturating_sub(at_ms);
                let m = Measurement {
                    step: run.step,
                    run: run.run,
                    metric: metric.name.clone(),
                    at_ms,
                    took_ms,
                    value,
                    outcome,
                    message,
                    canary,
                    baseline,
                };
                if tx.send((id, m)).is_err() {
                    return;
                }
            }
        }
    });
    futures_util::future::join_all(metrics).await;
}

/// Values as a short list: `0.021, 0.019`.
fn list(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", ")
}
