//! The run machine's records: the run and job states, and what the store
//! keeps of a run and of each job (`RunRecord`, `JobRecord`, with their
//! trace fields). The rules that change them are in the module above.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use drover_pipeline::Pipeline;
use drover_pipeline::triggers::EventKind;

pub type RunId = u64;

/// How long a job waits for an agent with its labels, when no connected
/// agent has them, unless its file or its run says otherwise.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        self != RunState::Running
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Some of its needs have not succeeded yet.
    Pending,
    /// Ready, waiting for an agent with matching labels and a free slot.
    Queued,
    /// Sent to an agent that has not confirmed it yet.
    Assigned,
    Running,
    /// Cancel was sent to the agent; waiting for it to confirm the kill.
    Cancelling,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Skipped | JobState::Cancelled)
    }
    /// Where the state comes in a job's life, for showing the changes of
    /// one moment in the order they follow from each other.
    pub fn order(self) -> u8 {
        match self {
            JobState::Pending => 0,
            JobState::Queued => 1,
            JobState::Assigned => 2,
            JobState::Running => 3,
            JobState::Cancelling => 4,
            JobState::Succeeded | JobState::Failed | JobState::Skipped | JobState::Cancelled => 5,
        }
    }
    /// Whether an attempt of the job occupies a slot on an agent.
    pub fn holds_slot(self) -> bool {
        matches!(self, JobState::Assigned | JobState::Running | JobState::Cancelling)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Queued => "queued",
            JobState::Assigned => "assigned",
            JobState::Running => "running",
            JobState::Cancelling => "cancelling",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Skipped => "skipped",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// Where a run's pipeline came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Source {
    /// The repository URL or absolute path, for runs from git.
    pub repo: Option<String>,
    /// The commit the run is pinned to, for runs from git.
    pub commit: Option<String>,
    /// The pipeline file's name (its path in the repository for runs from git).
    pub file: String,
    /// The branch or tag the run's ref named, for runs from git
    /// (`drover.branch`, `drover.tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// What started the run (`drover.event`).
    #[serde(default, skip_serializing_if = "is_manual")]
    pub event: EventKind,
    /// The trigger that started it, for runs a trigger started: the key
    /// that makes it start one run per push, tag, pull request update or
    /// cron tick, even across a failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Who submitted it (`admin:NAME`, `user:NAME`), for runs submitted
    /// through the API (`drover run`, `drover rerun`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// A pull-request run of a repository not marked trusted (`drover repo
    /// add --trusted`): the agent edge withholds its secrets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untrusted: bool,
}

fn is_manual(event: &EventKind) -> bool {
    *event == EventKind::Manual
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub pipeline: Pipeline,
    pub source: Source,
    pub state: RunState,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub cancel_requested: bool,
    /// The run this one reruns (`drover rerun`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<RunId>,
    /// The queue timeout of the run's jobs that do not set their own; 0
    /// for [`DEFAULT_QUEUE_TIMEOUT`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub queue_timeout_ms: u64,
    /// Trace ids, filled in by the driver; the machine never reads them.
    #[serde(default)]
    pub trace: RunTrace,
    /// Its pipeline's concurrency group, `${{ }}` filled in at submit: one
    /// run of the group is active at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The run's span in its trace (see `drover_telemetry::trace`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunTrace {
    pub trace_id: String,
    pub span_id: String,
    /// The submitter's span, when it sent a `traceparent`.
    pub parent_span_id: String,
}

/// A job's spans and the times they start at, filled in by the driver; the
/// machine never reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobTrace {
    pub span_id: String,
    /// When the job first became ready (the job span's start).
    pub first_ready_ms: Option<u64>,
    /// When the job last became ready (the dispatch span's start).
    pub ready_ms: Option<u64>,
    /// The current attempt's span and when it was assigned.
    pub attempt_span_id: String,
    pub assigned_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub state: JobState,
    /// The number of the current or last attempt; 0 before the first.
    pub attempt: u32,
    pub retries_left: u32,
    pub agent: Option<String>,
    /// The agent of the previous attempt, while the job waits for another:
    /// a retry goes elsewhere when another matching agent is free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_agent: Option<String>,
    pub exit_code: Option<i32>,
    /// What happened last, in words: why it failed, was skipped or retried.
    pub message: String,
    /// For a queued job: what it waits for.
    pub waiting_for: String,
    /// A succeeded job's artifacts (or, in a rerun, the reused job's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRef>,
    /// For a job of a rerun that was not run again: the run whose result it
    /// reuses (it succeeded there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<RunId>,
    /// For a blocked job (no connected agent has its labels): when it fails
    /// unless one connects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_until_ms: Option<u64>,
    /// What its cache did in its last succeeded attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheNote>,
    /// Why the dispatcher chose its agent among several free ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// Its approval gate (`approval:`), once its needs let it run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    #[serde(default)]
    pub trace: JobTrace,
}

/// Where a job's approval gate stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// `None` while it waits for someone to decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    /// Who decided, when, and what they said.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// When it fails unless someone decides (`timeout:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

impl Approval {
    /// The decision in words, as `drover status` shows it; empty while
    /// nobody has decided.
    pub fn text(&self) -> String {
        match self.approved {
            Some(true) if self.comment.is_empty() => format!("approved by {}", self.by),
            Some(true) => format!("approved by {}: {}", self.by, self.comment),
            Some(false) => format!("rejected by {}: {}", self.by, self.comment),
            None => String::new(),
        }
    }
}

/// What a job's cache did: the key it rendered, the entry it restored (the
/// key itself, another that a restore-key matched, or none), and whether it
/// saved one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheNote {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<String>,
    #[serde(default)]
    pub saved: bool,
}

impl CacheNote {
    /// In words, as `drover status` shows it: "hit KEY", "restored OTHER
    /// for KEY", "miss KEY", with ", saved" when it saved.
    pub fn text(&self) -> String {
        let what = match &self.restored {
            Some(r) if *r == self.key => format!("hit {}", self.key),
            Some(r) => format!("restored {r} for {}", self.key),
            None => format!("miss {}", self.key),
        };
        if self.saved { format!("{what}, saved") } else { what }
    }
}

/// A job's artifacts: one tar archive in the blob store, by its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub sha256: String,
    pub size: u64,
    /// How many files it holds.
    pub files: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
