//! Steps' `if:` conditions on the agent. A step runs when its condition
//! passes ([`drover_pipeline::expr::passes`]), against what the agent knows
//! of the attempt: the job's `env`, the commit, the branch, the tag, the
//! event, its matrix values, how each job it needs ended (from the
//! assignment), and a status that turns to failed once a step before it
//! failed, and to cancelled once the job is cancelled (then only
//! `cancelled()` and `always()` steps run, each within `CANCEL_CLEANUP`).
//! Without a condition a step runs only while no step has failed
//! (`success()`), so `if: failure()` or `if: always()` is how a cleanup
//! step still runs after a failure. The conditions were checked
//! when the pipeline was submitted; one that cannot be read here (an older
//! coordinator's) counts as `success()`.

use std::collections::BTreeMap;

use drover_pipeline::expr::{self, Context, DroverField, Expr, JobResult, Status};

use super::Attempt;

struct StepContext<'a> {
    attempt: &'a Attempt,
    status: Status,
}

impl Context for StepContext<'_> {
    fn drover(&self, field: DroverField) -> Option<String> {
        match field {
            DroverField::Commit => self.attempt.checkout.as_ref().map(|(_, commit)| commit.clone()),
            DroverField::Event => Some(self.attempt.event.clone().unwrap_or_else(|| "manual".to_string())),
            DroverField::Branch => self.attempt.branch.clone(),
            DroverField::Tag => self.attempt.tag.clone(),
        }
    }

    fn env(&self, name: &str) -> Option<String> {
        self.attempt.env.get(name).cloned()
    }

    fn matrix(&self, name: &str) -> Option<String> {
        self.attempt.matrix.get(name).cloned()
    }

    fn need_result(&self, job: &str) -> Option<JobResult> {
        let text = self.attempt.need_results.get(job)?;
        JobResult::ALL.into_iter().find(|r| r.as_str() == text)
    }

    fn status(&self) -> Status {
        self.status
    }
}

/// Whether own step `index` runs, given whether a step before it failed.
/// Once the job is cancelled, only steps whose condition reads
/// `cancelled()` or `always()` can pass.
pub(super) fn step_runs(attempt: &Attempt, index: usize, failed: bool, cancelled: bool) -> bool {
    let condition = attempt.step_conditions.get(index).filter(|c| !c.is_empty()).and_then(|c| Expr::reread(c).ok());
    let status = match (cancelled, failed) {
        (true, _) => Status::Cancelled,
        (false, true) => Status::Failed,
        (false, false) => Status::Succeeded,
    };
    expr::passes(condition.as_ref(), &StepContext { attempt, status })
}

/// The results the assignment carries, by job.
pub(super) type NeedResults = BTreeMap<String, String>;
