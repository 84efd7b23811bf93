//! Outgoing notifications (issue 17 item 9): webhooks told when a rollout
//! starts, succeeds, rolls back or fails, when an analysis fails, when a
//! gate waits or is decided, when a freeze starts or ends, and when an
//! app's sync ends. Any coordinator keeps the targets
//! (`drover notify add|rm|list|test`, `crate::api::notifications`):
//!
//! ```text
//! /notifications/{name}   Target
//! ```
//!
//! The parts, each in its own file:
//!
//! - [`Notice`], [`Kind`] and [`Severity`] (here): what the code that
//!   watches rollouts, gates, freezes and syncs says happened.
//! - `targets.rs`: a [`Target`] in the store, checked whole ([`check`]) with
//!   its limits, and `add`/`remove`/`list`/`get`/`load`.
//! - `render.rs`, pure and table-tested: which targets want a notice
//!   ([`wants`]) and what each is sent ([`body`]: the notice as JSON, or a
//!   Slack incoming-webhook message).
//! - `deliver.rs`: the [`Notifier`], which sends without ever making its
//!   caller wait.
//!
//! **Nothing waits for a notification.** [`Notifier::send`] puts the
//! notice in a bounded queue and returns; when the queue is full the
//! notice is dropped and counted (`drover_notifications_total{outcome=
//! "dropped"}`), never the caller held up. A task reads the targets from
//! the store once per batch of notices (one range read of at most
//! [`MAX_TARGETS`] small keys) and hands each notice to a task per target,
//! which posts its notices in order, each tried up to 5 times with
//! jittered exponential backoff (0.5 s, 1 s, 2 s, 4 s) within a minute, 10 s
//! a call: a dead target holds up only its own queue.
//!
//! **One notifier per process.** `crate::server` starts it once with the
//! store, and the election hands it to every term (`Term::notifier`), so
//! the leader's controllers send through it. Rather than per term:
//! notices a term sent just before it ended are still delivered, and a
//! follower's notifier costs one idle task. Only the leader's controllers
//! send (and `drover notify test`, which posts straight from the
//! coordinator that answers). Notifications are best effort, and the
//! store's records stay the truth: a failover loses the notices queued in
//! the old leader, and a notice whose answer was lost is tried again, so a
//! receiver may see it twice (the same `kind`, `rollout` and `at_ms`).
//!
//! Only an admin's certificate adds a target, so its URL is not held to
//! `--outbound-allow` (`crate::outbound`), which limits the URLs that
//! pipelines and their repositories name. Redirects are not followed, and
//! the URL, whose path may be a token, is never logged nor listed whole.

mod deliver;
mod render;
mod targets;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use deliver::{CALL_TIMEOUT, Counts, Notifier, Settings, Tried, send_test};
pub use render::{body, summary, wants};
pub use targets::{
    Format, MAX_TARGET_ENVIRONMENTS, MAX_TARGETS, MAX_URL_CHARS, NOTIFICATIONS, NotificationsError, Target, add, check,
    get, list, load, remove,
};

/// What happened. Its name in JSON, and in a target's `kinds`, is
/// [`Kind::as_str`]: `rollout_rolled_back`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    RolloutStarted,
    RolloutSucceeded,
    RolloutRolledBack,
    RolloutFailed,
    /// A rollout stopped where it stood and waits for a person (a one-way
    /// door that failed).
    RolloutFrozen,
    AnalysisFailed,
    AnalysisInconclusive,
    GateWaiting,
    GateDecided,
    FreezeStarted,
    FreezeEnded,
    SyncFailed,
    SyncSucceeded,
    /// Only `drover notify test` sends it, whatever the target's filters;
    /// a target's `kinds` cannot name it.
    Test,
}

impl Kind {
    /// Every kind a target may ask for, in the order the docs list them.
    pub const ALL: [Kind; 13] = [
        Kind::RolloutStarted,
        Kind::RolloutSucceeded,
        Kind::RolloutRolledBack,
        Kind::RolloutFailed,
        Kind::RolloutFrozen,
        Kind::AnalysisFailed,
        Kind::AnalysisInconclusive,
        Kind::GateWaiting,
        Kind::GateDecided,
        Kind::FreezeStarted,
        Kind::FreezeEnded,
        Kind::SyncFailed,
        Kind::SyncSucceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RolloutStarted => "rollout_started",
            Kind::RolloutSucceeded => "rollout_succeeded",
            Kind::RolloutRolledBack => "rollout_rolled_back",
            Kind::RolloutFailed => "rollout_failed",
            Kind::RolloutFrozen => "rollout_frozen",
            Kind::AnalysisFailed => "analysis_failed",
            Kind::AnalysisInconclusive => "analysis_inconclusive",
            Kind::GateWaiting => "gate_waiting",
            Kind::GateDecided => "gate_decided",
            Kind::FreezeStarted => "freeze_started",
            Kind::FreezeEnded => "freeze_ended",
            Kind::SyncFailed => "sync_failed",
            Kind::SyncSucceeded => "sync_succeeded",
            Kind::Test => "test",
        }
    }

    /// The kind a target's `kinds` names (never [`Kind::Test`]).
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// How much it usually matters, which [`Notice::new`] gives a notice of
    /// this kind: a failure that needs a person is critical, one that Drover
    /// has handled (a rollback) a warning, and the rest information.
    pub fn severity(self) -> Severity {
        match self {
            Kind::RolloutFailed | Kind::RolloutFrozen => Severity::Critical,
            Kind::RolloutRolledBack | Kind::AnalysisFailed | Kind::AnalysisInconclusive | Kind::SyncFailed => {
                Severity::Warning
            }
            Kind::RolloutStarted
            | Kind::RolloutSucceeded
            | Kind::GateWaiting
            | Kind::GateDecided
            | Kind::FreezeStarted
            | Kind::FreezeEnded
            | Kind::SyncSucceeded
            | Kind::Test => Severity::Info,
        }
    }
}

/// How much a notice matters; a target takes those at or above its
/// `min_severity`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The severity `text` names; empty is [`Severity::Info`]. The error
    /// lists the names.
    pub fn parse(text: &str) -> Result<Severity, String> {
        if text.is_empty() {
            return Ok(Severity::default());
        }
        Severity::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| {
            format!("unknown severity {text:?}: use info, warning or critical (a target takes that and above)")
        })
    }
}

/// One thing that happened, as the leader's controllers send it with
/// [`Notifier::send`]:
///
/// ```ignore
/// term.notifier.send(
///     Notice::new(Kind::RolloutFailed, "production", "web", "node web-1 failed its health check", now_ms)
///         .with_rollout(42)
///         .with_field("version", "3f9a1c2b7d4e"),
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: Kind,
    pub severity: Severity,
    /// Empty when it concerns no environment.
    pub environment: String,
    /// Empty when it concerns no service (a freeze).
    pub service: String,
    pub rollout: Option<u64>,
    pub app: Option<String>,
    /// One line or a few, for people.
    pub message: String,
    pub at_ms: u64,
    /// Anything more worth telling (a version, a gate's name, who decided).
    pub fields: BTreeMap<String, String>,
}

impl Notice {
    /// A notice of `kind`, with the kind's usual severity
    /// ([`Kind::severity`]), no rollout, app or fields.
    pub fn new(
        kind: Kind,
        environment: impl Into<String>,
        service: impl Into<String>,
        message: impl Into<String>,
        at_ms: u64,
    ) -> Notice {
        Notice {
            kind,
            severity: kind.severity(),
            environment: environment.into(),
            service: service.into(),
            rollout: None,
            app: None,
            message: message.into(),
            at_ms,
            fields: BTreeMap::new(),
        }
    }

    pub fn with_severity(self, severity: Severity) -> Notice {
        Notice { severity, ..self }
    }

    pub fn with_rollout(self, rollout: u64) -> Notice {
        Notice { rollout: Some(rollout), ..self }
    }

    pub fn with_app(self, app: impl Into<String>) -> Notice {
        Notice { app: Some(app.into()), ..self }
    }

    pub fn with_field(mut self, name: impl Into<String>, value: impl Into<String>) -> Notice {
        self.fields.insert(name.into(), value.into());
        self
    }
}
