//! Reruns (`drover rerun RUN [--failed] [--job J]`): a new run of the same
//! pipeline at the same commit, which runs some jobs again and reuses the
//! results of the others, as GitLab's "retry failed jobs" and Buildkite's
//! "retry" do. Pure: [`plan`] decides which jobs run again, [`new_run`]
//! makes the run the scheduler then starts like any other.
//!
//! What runs again: every job (no option); or the jobs that did not
//! succeed (`--failed`), and with `--job J` also J, although it succeeded.
//! Then every job after one that runs again (its inputs change). Only a job
//! that succeeded in the original run has a result to reuse, so one that
//! did not always runs again. Every other job is reused: marked succeeded,
//! `reused_from` the original, and never dispatched. Once artifacts exist,
//! a reused job's artifacts are the original's.

use std::collections::{BTreeMap, BTreeSet};

use drover_pipeline::Pipeline;

use super::machine::{ArtifactRef, JobState, Run, RunId};

/// What a new run reruns: the original, and the jobs whose results it
/// reuses ([`plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rerun {
    pub of: RunId,
    /// The jobs reused, each with the original's artifacts.
    pub reuse: BTreeMap<String, Option<ArtifactRef>>,
}

/// Which jobs a rerun runs again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every job.
    All,
    /// The jobs that did not succeed, and those after them.
    Failed,
    /// These jobs (succeeded or not), the jobs that did not succeed, and
    /// those after them.
    Jobs(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RerunError {
    #[error("run {0} has not finished; wait for it, or cancel it first (`drover cancel {0}`)")]
    NotFinished(RunId),
    #[error("run {0} has no failed jobs: every job succeeded; rerun it whole without --failed")]
    NothingFailed(RunId),
    #[error("run {run} has no job `{job}`; its jobs are: {jobs}")]
    NoSuchJob { run: RunId, job: String, jobs: String },
}

/// What a rerun of `original` reuses: the jobs that do not run again.
pub fn plan(original: &Run, scope: &Scope) -> Result<BTreeSet<String>, RerunError> {
    let id = original.record.id;
    if !original.record.state.is_terminal() {
        return Err(RerunError::NotFinished(id));
    }
    let pipeline = &original.record.pipeline;
    let succeeded = |job: &str| original.jobs.get(job).is_some_and(|j| j.state == JobState::Succeeded);
    // Without a result to reuse, a job runs again whatever the scope.
    let mut again: BTreeSet<String> =
        pipeline.jobs.iter().filter(|j| !succeeded(&j.name)).map(|j| j.name.clone()).collect();
    match scope {
        Scope::All => return Ok(BTreeSet::new()),
        Scope::Failed if again.is_empty() => return Err(RerunError::NothingFailed(id)),
        Scope::Failed => {}
        Scope::Jobs(jobs) => {
            for job in jobs {
                if pipeline.job(job).is_none() {
                    let names: Vec<&str> = pipeline.jobs.iter().map(|j| j.name.as_str()).collect();
                    return Err(RerunError::NoSuchJob { run: id, job: job.clone(), jobs: names.join(", ") });
                }
                again.insert(job.clone());
            }
        }
    }
    // After: every dependent of a job that runs again, transitively.
    let dependents = dependents(pipeline);
    let mut frontier: Vec<String> = again.iter().cloned().collect();
    while let Some(job) = frontier.pop() {
        for next in dependents.get(job.as_str()).into_iter().flatten() {
            if again.insert(next.to_string()) {
                frontier.push(next.to_string());
            }
        }
    }
    Ok(pipeline.jobs.iter().map(|j| j.name.clone()).filter(|j| !again.contains(j)).collect())
}

/// Each job's dependents (the jobs that need it).
fn dependents(pipeline: &Pipeline) -> BTreeMap<&str, Vec<&str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for job in &pipeline.jobs {
        for need in &job.needs {
            out.entry(need.as_str()).or_default().push(job.name.as_str());
        }
    }
    out
}

/// Marks a new run (made with [`Run::new`] from the original's pipeline and
/// source) as a rerun of `of` that reuses `reuse`. Feed it `Input::Start`
/// next, as any new run.
pub fn mark(run: &mut Run, of: RunId, reuse: &BTreeMap<String, Option<ArtifactRef>>, now_ms: u64) {
    run.record.rerun_of = Some(of);
    for (name, artifact) in reuse {
        if let Some(job) = run.jobs.get_mut(name) {
            job.artifact = artifact.clone();
            job.state = JobState::Succeeded;
            job.reused_from = Some(of);
            job.exit_code = Some(0);
            job.finished_ms = Some(now_ms);
            job.message = format!("reused from run {of}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::machine::tests::pipeline;
    use crate::core::machine::{Input, RunState, Source, step};

    /// A finished run of a → b → c and d, with the given end states.
    fn finished(states: &[(&str, JobState)]) -> Run {
        let p = pipeline(&[("a", &[], 0), ("b", &["a"], 0), ("c", &["b"], 0), ("d", &[], 0)]);
        let mut run = Run::new(7, p, Source::default(), 0);
        for (job, state) in states {
            run.jobs.get_mut(*job).unwrap().state = *state;
        }
        run.record.state = RunState::Failed;
        run
    }

    fn set(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn what_a_rerun_reuses() {
        use JobState::*;
        const ALL_OK: &[(&str, JobState)] = &[("a", Succeeded), ("b", Succeeded), ("c", Succeeded), ("d", Succeeded)];
        const B_FAILED: &[(&str, JobState)] = &[("a", Succeeded), ("b", Failed), ("c", Skipped), ("d", Succeeded)];
        const A_FAILED: &[(&str, JobState)] = &[("a", Failed), ("b", Skipped), ("c", Skipped), ("d", Succeeded)];
        // (case, original's job states, scope, reused or the error)
        type Case =
            (&'static str, &'static [(&'static str, JobState)], Scope, Result<&'static [&'static str], RerunError>);
        let jobs = |list: &[&str]| Scope::Jobs(list.iter().map(|s| s.to_string()).collect());
        let cases: Vec<Case> = vec![
            ("everything runs again", B_FAILED, Scope::All, Ok(&[])),
            ("--failed: the failed job and those after it", B_FAILED, Scope::Failed, Ok(&["a", "d"])),
            ("--failed from the root", A_FAILED, Scope::Failed, Ok(&["d"])),
            ("--failed with nothing failed", ALL_OK, Scope::Failed, Err(RerunError::NothingFailed(7))),
            ("--job: it and those after it", ALL_OK, jobs(&["b"]), Ok(&["a", "d"])),
            ("--job: a leaf alone", ALL_OK, jobs(&["d"]), Ok(&["a", "b", "c"])),
            ("--job whose need failed: the need runs too", A_FAILED, jobs(&["c"]), Ok(&["d"])),
            ("--job elsewhere: what failed has no result, so it runs too", B_FAILED, jobs(&["d"]), Ok(&["a"])),
            (
                "--job that does not exist",
                ALL_OK,
                jobs(&["e"]),
                Err(RerunError::NoSuchJob { run: 7, job: "e".into(), jobs: "a, b, c, d".into() }),
            ),
        ];
        for (case, states, scope, want) in cases {
            let got = plan(&finished(states), &scope);
            assert_eq!(got, want.map(set), "{case}");
        }
        let mut running = finished(ALL_OK);
        running.record.state = RunState::Running;
        assert_eq!(plan(&running, &Scope::All), Err(RerunError::NotFinished(7)));
    }

    #[test]
    fn a_rerun_starts_after_the_reused_jobs_and_never_dispatches_them() {
        let original = finished(&[("a", JobState::Succeeded), ("b", JobState::Failed), ("d", JobState::Succeeded)]);
        let reuse = plan(&original, &Scope::Failed).unwrap().into_iter().map(|j| (j, None)).collect();
        let mut run = Run::new(8, original.record.pipeline.clone(), original.record.source.clone(), 100);
        mark(&mut run, 7, &reuse, 100);
        let (run, _) = step(run, Input::Start, 100);
        assert_eq!(run.record.rerun_of, Some(7));
        assert_eq!(run.jobs["a"].state, JobState::Succeeded);
        assert_eq!(run.jobs["a"].reused_from, Some(7));
        assert_eq!(run.jobs["a"].message, "reused from run 7");
        assert_eq!(run.jobs["b"].state, JobState::Queued, "after a reused job: queued at start");
        assert_eq!(run.jobs["c"].state, JobState::Pending);
        assert_eq!(run.jobs["d"].state, JobState::Succeeded);
        assert_eq!(run.record.state, RunState::Running);
    }
}
