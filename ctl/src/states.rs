//! Run and job states as the coordinator sends them (proto enums), checked
//! where a message is read, and the words the CLI prints for them. The words
//! are those the CLI has always printed (`drover status --json` included):
//! scripts and tests read them.

use drover_proto::v1 as pb;

use crate::client::{EXIT_UNREACHABLE, Exit};

/// A run's state; one this CLI does not know (or none) is an error, since
/// the coordinator and the CLI ship together.
pub fn run(state: i32) -> Result<pb::RunState, Exit> {
    match pb::RunState::try_from(state) {
        Ok(pb::RunState::Unspecified) | Err(_) => Err(unknown("run", state)),
        Ok(state) => Ok(state),
    }
}

/// A job's state; as [`run`].
pub fn job(state: i32) -> Result<pb::JobState, Exit> {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Unspecified) | Err(_) => Err(unknown("job", state)),
        Ok(state) => Ok(state),
    }
}

fn unknown(what: &str, state: i32) -> Exit {
    Exit::new(
        EXIT_UNREACHABLE,
        format!(
            "the coordinator sent a {what} state this drover does not know ({state}); use the coordinator's version"
        ),
    )
}

pub fn run_word(state: pb::RunState) -> &'static str {
    match state {
        pb::RunState::Unspecified => "unspecified",
        pb::RunState::Running => "running",
        pb::RunState::Succeeded => "succeeded",
        pb::RunState::Failed => "failed",
        pb::RunState::Cancelled => "cancelled",
    }
}

pub fn job_word(state: pb::JobState) -> &'static str {
    match state {
        pb::JobState::Unspecified => "unspecified",
        pb::JobState::Pending => "pending",
        pb::JobState::Queued => "queued",
        pb::JobState::Assigned => "assigned",
        pb::JobState::Running => "running",
        pb::JobState::Cancelling => "cancelling",
        pb::JobState::Succeeded => "succeeded",
        pb::JobState::Failed => "failed",
        pb::JobState::Skipped => "skipped",
        pb::JobState::Cancelled => "cancelled",
    }
}

/// For a blocked job (no connected agent has its labels): how long until
/// it fails unless one connects, in whole seconds as a duration is written
/// (`9m59s`), by this machine's clock; `None` for a job that is not blocked.
pub fn blocked_for(job: &pb::Job) -> Option<String> {
    if job.blocked_until_ms == 0 {
        return None;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let left = job.blocked_until_ms.saturating_sub(now).div_ceil(1000);
    Some(drover_client::duration::format(std::time::Duration::from_secs(left)))
}

/// Whether a job in this state is done for good.
pub fn job_is_terminal(state: pb::JobState) -> bool {
    matches!(state, pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Skipped | pb::JobState::Cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_printed_as_before_and_unknown_ones_are_errors() {
        let runs = [
            (pb::RunState::Running, "running"),
            (pb::RunState::Succeeded, "succeeded"),
            (pb::RunState::Failed, "failed"),
            (pb::RunState::Cancelled, "cancelled"),
        ];
        for (state, word) in runs {
            assert_eq!(run(state as i32).map(run_word).map_err(|e| e.message), Ok(word));
        }
        let jobs = [
            (pb::JobState::Pending, "pending"),
            (pb::JobState::Queued, "queued"),
            (pb::JobState::Assigned, "assigned"),
            (pb::JobState::Running, "running"),
            (pb::JobState::Cancelling, "cancelling"),
            (pb::JobState::Succeeded, "succeeded"),
            (pb::JobState::Failed, "failed"),
            (pb::JobState::Skipped, "skipped"),
            (pb::JobState::Cancelled, "cancelled"),
        ];
        for (state, word) in jobs {
            assert_eq!(job(state as i32).map(job_word).map_err(|e| e.message), Ok(word));
        }
        for bad in [0, 99, -1] {
            let err = run(bad).unwrap_err();
            assert_eq!(err.code, EXIT_UNREACHABLE);
            assert!(err.message.contains(&format!("run state this drover does not know ({bad})")), "{}", err.message);
            assert!(job(bad).unwrap_err().message.contains("job state"));
        }
    }
}
