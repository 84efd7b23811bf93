//! What a run keeps beside its records, derived from them and never
//! stored: the needs graph ([`Graph`]) and where an unfinished job was last
//! seen ([`Hint`]), which [`complete_if_done`] uses to find a run's end
//! without looking at every job after each input.

use std::collections::HashMap;

use drover_pipeline::Pipeline;

use super::{Effect, JobState, Run, RunState};

/// A position in `pipeline.jobs`, kept only to make a look faster: not
/// part of a run's state, so two runs are equal whatever their hints.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Hint(pub(super) usize);

impl PartialEq for Hint {
    fn eq(&self, _: &Hint) -> bool {
        true
    }
}

impl Eq for Hint {}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Graph {
    /// Each job's index in `pipeline.jobs`.
    pub(super) position: HashMap<String, usize>,
    /// For each job, the indices of the jobs that need it, in file order.
    pub(super) dependents: HashMap<String, Vec<usize>>,
}

impl Graph {
    pub(super) fn of(pipeline: &Pipeline) -> Graph {
        let mut g = Graph::default();
        for (i, spec) in pipeline.jobs.iter().enumerate() {
            g.position.insert(spec.name.clone(), i);
            for need in &spec.needs {
                g.dependents.entry(need.clone()).or_default().push(i);
            }
        }
        g
    }
}

/// Finishes the run once every job has finished.
///
/// Called after every input, so looking at every job each time would make
/// a run of n jobs cost n² (the jobs of a wide run finish roughly in file
/// order). It looks first where it last found an unfinished job, and from
/// there on round the pipeline: the whole run is looked at only once more
/// each time that job finishes.
pub(super) fn complete_if_done(run: &mut Run, now_ms: u64, fx: &mut Vec<Effect>) {
    let specs = &run.record.pipeline.jobs;
    let n = specs.len();
    let start = run.unfinished.0.min(n.saturating_sub(1));
    let unfinished =
        (0..n).map(|k| (start + k) % n).find(|&i| run.jobs.get(&specs[i].name).is_some_and(|j| !j.state.is_terminal()));
    if let Some(i) = unfinished {
        run.unfinished = Hint(i);
        return;
    }
    // Jobs are the pipeline's, but a record the pipeline does not name
    // (none today) would count too.
    if !run.jobs.values().all(|j| j.state.is_terminal()) {
        return;
    }
    // A job skipped by its own condition fails nothing; one skipped for a
    // failed need comes with that failure.
    let state = if run.record.cancel_requested {
        RunState::Cancelled
    } else if run.jobs.values().all(|j| matches!(j.state, JobState::Succeeded | JobState::Skipped)) {
        RunState::Succeeded
    } else {
        RunState::Failed
    };
    run.record.state = state;
    run.record.finished_ms = Some(now_ms);
    fx.push(Effect::PersistRun);
    fx.push(Effect::RunFinished(state));
}
