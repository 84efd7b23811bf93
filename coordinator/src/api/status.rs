//! The one place where errors become gRPC `Status` codes. The CLI maps the
//! codes back to exit codes: `InvalidArgument`, `NotFound` and
//! `FailedPrecondition` mean the user's input was wrong (exit 2);
//! `Unavailable`, `Unauthenticated` and `PermissionDenied` mean the
//! coordinator could not be used (exit 3).

use tonic::Status;

use crate::core::rerun::RerunError;
use crate::environments::EnvironmentsError;
use crate::git::GitError;
use crate::scheduler::SchedError;
use crate::secrets::SecretsError;
use crate::store::StoreError;
use crate::submit::SubmitError;
use crate::triggers::TriggersError;
use drover_pipeline::PipelineError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String),
    #[error("invalid pipeline:\n{0}")]
    Pipeline(#[from] PipelineError),
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but does not apply to the state of what
    /// it names (a rerun of a run that has not finished).
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// Another live session holds this agent name.
    #[error("{0}")]
    AlreadyConnected(String),
    /// What the request would create exists already (a repository's name).
    #[error("{0}")]
    AlreadyExists(String),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scheduler's own errors; its store errors become [`ApiError::Store`].
    #[error(transparent)]
    Sched(SchedError),
    /// Too much at once (enrollments): retry shortly.
    #[error("{0}")]
    Busy(String),
    /// No client certificate where one is required.
    #[error("{0}")]
    Unauthenticated(String),
    /// This coordinator is shutting down: a stream it served ends so that
    /// shutdown need not wait for its client, which may go on elsewhere.
    #[error("this coordinator is shutting down; reconnect to another (or to it once it is back)")]
    ShuttingDown,
    /// This coordinator is a follower; the leader's URL when known.
    #[error("{}", match .0 {
        Some(url) => format!("this coordinator does not lead; the leader is {url}"),
        None => "no coordinator leads at the moment (an election is under way); retry shortly".to_string(),
    })]
    NotLeader(Option<String>),
    /// A follower that carried an agent's session to the leader
    /// (`api::agent::relay`) lost it (`why`): the agent comes back to
    /// `here`, over the connection it has, and is carried to the leader
    /// there is then.
    #[error("{why}; reconnect to {here}, which carries the session to the leader")]
    ComeBack { here: String, why: String },
}

impl From<SchedError> for ApiError {
    fn from(e: SchedError) -> ApiError {
        match e {
            SchedError::Store(e) => ApiError::Store(e),
            e => ApiError::Sched(e),
        }
    }
}

/// Each of submit's errors as the error it was before submit left the
/// handler, so codes and messages stay as they were.
impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::EmptyRepo => ApiError::Invalid(e.to_string()),
            SubmitError::Git(e) => ApiError::Git(e),
            SubmitError::Pipeline(e) => ApiError::Pipeline(e),
            SubmitError::Sched(e) => e.into(),
            SubmitError::RunNotFound(_) => ApiError::NotFound(e.to_string()),
            SubmitError::Rerun(RerunError::NoSuchJob { .. }) => ApiError::NotFound(e.to_string()),
            SubmitError::Rerun(RerunError::NotFinished(_) | RerunError::NothingFailed(_)) => {
                ApiError::Precondition(e.to_string())
            }
            SubmitError::Store(e) => ApiError::Store(e),
            SubmitError::Secrets(e) => e.into(),
            SubmitError::Approvals(e) => ApiError::Invalid(e.to_string()),
        }
    }
}

impl From<SecretsError> for ApiError {
    fn from(e: SecretsError) -> ApiError {
        match e {
            SecretsError::Store(e) => ApiError::Store(e),
            SecretsError::TooLarge { .. } | SecretsError::Empty(_) | SecretsError::InvalidName(_) => {
                ApiError::Invalid(e.to_string())
            }
            SecretsError::NotFound(_) => ApiError::NotFound(e.to_string()),
            SecretsError::NoKey(_) | SecretsError::TooMany | SecretsError::Corrupt { .. } => {
                ApiError::Precondition(e.to_string())
            }
        }
    }
}

impl From<TriggersError> for ApiError {
    fn from(e: TriggersError) -> ApiError {
        match e {
            TriggersError::Invalid(_) => ApiError::Invalid(e.to_string()),
            TriggersError::Exists(_) => ApiError::AlreadyExists(e.to_string()),
            TriggersError::NotFound(_) => ApiError::NotFound(e.to_string()),
            TriggersError::TooMany | TriggersError::Full(_) => ApiError::Precondition(e.to_string()),
            TriggersError::Secrets(e) => e.into(),
            TriggersError::Store(e) => ApiError::Store(e),
        }
    }
}

impl From<crate::apps::records::AppsError> for ApiError {
    fn from(e: crate::apps::records::AppsError) -> ApiError {
        use crate::apps::records::AppsError;
        match e {
            AppsError::Invalid(_) => ApiError::Invalid(e.to_string()),
            AppsError::Exists(_) => ApiError::AlreadyExists(e.to_string()),
            AppsError::NotFound(_) => ApiError::NotFound(e.to_string()),
            AppsError::TooMany | AppsError::Precondition(_) => ApiError::Precondition(e.to_string()),
            AppsError::Cycle(_) => ApiError::Invalid(e.to_string()),
            AppsError::Store(e) => ApiError::Store(e),
        }
    }
}

impl From<crate::releases::ReleasesError> for ApiError {
    fn from(e: crate::releases::ReleasesError) -> ApiError {
        use crate::releases::ReleasesError;
        match e {
            ReleasesError::Invalid(_) => ApiError::Invalid(e.to_string()),
            ReleasesError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            ReleasesError::TooMany => ApiError::Precondition(e.to_string()),
            ReleasesError::Store(e) => ApiError::Store(e),
        }
    }
}

impl From<crate::notifications::NotificationsError> for ApiError {
    fn from(e: crate::notifications::NotificationsError) -> ApiError {
        use crate::notifications::NotificationsError;
        match e {
            NotificationsError::Invalid(_) => ApiError::Invalid(e.to_string()),
            NotificationsError::NotFound(_) => ApiError::NotFound(e.to_string()),
            NotificationsError::TooMany => ApiError::Precondition(e.to_string()),
            NotificationsError::Store(e) => ApiError::Store(e),
        }
    }
}

impl From<EnvironmentsError> for ApiError {
    fn from(e: EnvironmentsError) -> ApiError {
        match e {
            EnvironmentsError::Invalid(_) | EnvironmentsError::File(_) => ApiError::Invalid(e.to_string()),
            EnvironmentsError::Exists(_) => ApiError::AlreadyExists(e.to_string()),
            EnvironmentsError::NotFound(_) => ApiError::NotFound(e.to_string()),
            EnvironmentsError::TooMany(_) | EnvironmentsError::Contended => ApiError::Precondition(e.to_string()),
            EnvironmentsError::Store(e) => ApiError::Store(e),
        }
    }
}

impl From<crate::identity::IdentityError> for ApiError {
    fn from(e: crate::identity::IdentityError) -> ApiError {
        use crate::identity::IdentityError;
        match e {
            IdentityError::Invalid(_) | IdentityError::Csr(_) => ApiError::Invalid(e.to_string()),
            IdentityError::NotFound(_) => ApiError::NotFound(e.to_string()),
            IdentityError::Refused(_) => ApiError::PermissionDenied(e.to_string()),
            IdentityError::NoAuthority | IdentityError::Precondition(_) => ApiError::Precondition(e.to_string()),
            IdentityError::Store(e) => ApiError::Store(e),
        }
    }
}

impl From<crate::identity::gate::GateError> for ApiError {
    fn from(e: crate::identity::gate::GateError) -> ApiError {
        use crate::identity::gate::GateError;
        match e {
            GateError::Refused(_) => ApiError::PermissionDenied(e.to_string()),
            GateError::NotLoaded => ApiError::Store(StoreError::Unavailable(e.to_string())),
        }
    }
}

impl ApiError {
    /// The status `self` becomes, saying `msg` instead.
    fn with_message(self, msg: String) -> Status {
        let status = Status::from(self);
        Status::with_metadata(status.code(), msg, status.metadata().clone())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let msg = e.to_string();
        match e {
            ApiError::Invalid(_) | ApiError::Pipeline(_) => Status::invalid_argument(msg),
            ApiError::NotFound(_) => Status::not_found(msg),
            ApiError::Precondition(_) => Status::failed_precondition(msg),
            ApiError::PermissionDenied(_) => Status::permission_denied(msg),
            ApiError::Unauthenticated(_) => Status::unauthenticated(msg),
            ApiError::Busy(_) => Status::resource_exhausted(msg),
            ApiError::AlreadyConnected(_) | ApiError::AlreadyExists(_) => Status::already_exists(msg),
            ApiError::Git(GitError::Spawn(_) | GitError::Other(_)) => Status::internal(msg),
            ApiError::Git(_) => Status::invalid_argument(msg),
            ApiError::Store(StoreError::Unavailable(_) | StoreError::Fenced { .. }) => Status::unavailable(msg),
            ApiError::Store(StoreError::Rejected(_)) => Status::failed_precondition(msg),
            ApiError::Store(_) => Status::internal(msg),
            ApiError::Sched(SchedError::Stopped) => Status::unavailable(msg),
            ApiError::Sched(SchedError::TooLarge { .. }) => Status::invalid_argument(msg),
            ApiError::Sched(SchedError::NotFound(_)) => Status::not_found(msg),
            ApiError::Sched(SchedError::NotWaiting(_)) => Status::failed_precondition(msg),
            // Not "use an admin certificate", which PermissionDenied tells the CLI user.
            ApiError::Sched(SchedError::NotApprover(_)) => Status::failed_precondition(msg),
            ApiError::Sched(SchedError::TooManyRuns { .. } | SchedError::TooManyJobs { .. }) => {
                Status::resource_exhausted(msg)
            }
            // `From<SchedError>` makes these `ApiError::Store`; one built
            // by hand gets the same treatment.
            ApiError::Sched(SchedError::Store(e)) => ApiError::Store(e).into(),
            // The refusal's metadata keys are part of the wire contract,
            // defined in the proto crate.
            // Like a follower's refusal: nothing was lost, and the client may
            // go on with another coordinator.
            ApiError::ShuttingDown => {
                let mut status = Status::unavailable(msg);
                status
                    .metadata_mut()
                    .insert(drover_proto::metadata::NOT_LEADER, tonic::metadata::MetadataValue::from_static("1"));
                status
            }
            // A redirect to itself, marked so that the agent need not
            // compare URLs: it stays where it is.
            ApiError::ComeBack { here, .. } => {
                let mut status = ApiError::NotLeader(Some(here)).with_message(msg);
                status
                    .metadata_mut()
                    .insert(drover_proto::metadata::COME_BACK, tonic::metadata::MetadataValue::from_static("1"));
                status
            }
            ApiError::NotLeader(leader) => {
                let mut status = Status::unavailable(msg);
                status
                    .metadata_mut()
                    .insert(drover_proto::metadata::NOT_LEADER, tonic::metadata::MetadataValue::from_static("1"));
                if let Some(value) = leader.and_then(|url| url.parse().ok()) {
                    status.metadata_mut().insert(drover_proto::metadata::LEADER, value);
                }
                status
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;

    use super::*;

    #[test]
    fn environment_errors_have_the_codes_the_cli_maps_to_exit_2_and_4() {
        let cases = [
            (EnvironmentsError::Invalid(vec!["a".into(), "b".into()]), Code::InvalidArgument, "a\nb"),
            (
                EnvironmentsError::File(vec!["f:1:1: x".into()]),
                Code::InvalidArgument,
                "invalid environments file:\nf:1:1: x",
            ),
            (EnvironmentsError::Exists("web".into()), Code::AlreadyExists, "environment \"web\" exists already"),
            (EnvironmentsError::NotFound("web".into()), Code::NotFound, "environment \"web\" does not exist"),
            (EnvironmentsError::TooMany("too many".into()), Code::FailedPrecondition, "too many"),
            (EnvironmentsError::Contended, Code::FailedPrecondition, "the environments changed"),
        ];
        for (error, code, message) in cases {
            let status = Status::from(ApiError::from(error));
            assert_eq!(status.code(), code, "{message}");
            assert!(status.message().starts_with(message), "{}", status.message());
        }
    }

    #[test]
    fn submit_errors_keep_their_codes_and_messages() {
        let bad_pipeline = || drover_pipeline::parse("p.yml", "name: p\n").unwrap_err();
        // (submit's error, the code, the start of the message)
        let cases: Vec<(SubmitError, Code, String)> = vec![
            (SubmitError::EmptyRepo, Code::InvalidArgument, "--repo is empty".into()),
            (SubmitError::RunNotFound(9), Code::NotFound, "run 9 not found".into()),
            (
                SubmitError::Rerun(RerunError::NotFinished(9)),
                Code::FailedPrecondition,
                "run 9 has not finished; wait for it, or cancel it first".into(),
            ),
            (
                SubmitError::Rerun(RerunError::NothingFailed(9)),
                Code::FailedPrecondition,
                "run 9 has no failed jobs".into(),
            ),
            (
                SubmitError::Rerun(RerunError::NoSuchJob { run: 9, job: "x".into(), jobs: "a, b".into() }),
                Code::NotFound,
                "run 9 has no job `x`; its jobs are: a, b".into(),
            ),
            (SubmitError::Pipeline(bad_pipeline()), Code::InvalidArgument, "invalid pipeline:\np.yml:".into()),
            (
                SubmitError::Git(GitError::RefNotFound { repo: "r".into(), reference: "x".into() }),
                Code::InvalidArgument,
                "ref \"x\" not found in r".into(),
            ),
            (
                SubmitError::Git(GitError::Timeout { repo: "r".into(), timeout: Duration::from_secs(2) }),
                Code::InvalidArgument,
                "git did not finish within 2s".into(),
            ),
            (SubmitError::Git(GitError::Other("odd".into())), Code::Internal, "odd".into()),
            (SubmitError::Sched(SchedError::Stopped), Code::Unavailable, "the scheduler has stopped".into()),
            (
                SubmitError::Sched(SchedError::TooManyRuns { active: 3, limit: 3 }),
                Code::ResourceExhausted,
                "the coordinator already has 3 unfinished runs".into(),
            ),
            (
                SubmitError::Sched(SchedError::TooLarge { size: 2, limit: 1 }),
                Code::InvalidArgument,
                "the pipeline is too large to store".into(),
            ),
            (
                SubmitError::Sched(SchedError::Store(StoreError::Fenced { epoch: 4 })),
                Code::Unavailable,
                "this coordinator is no longer the leader".into(),
            ),
        ];
        for (error, code, message) in cases {
            let case = format!("{error:?}");
            let status = Status::from(ApiError::from(error));
            assert_eq!(status.code(), code, "{case}");
            assert!(status.message().starts_with(&message), "{case}: {}", status.message());
        }
    }
}
