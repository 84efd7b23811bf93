//! What the pages show: the templates (`coordinator/templates/`, askama, compiled in
//! and HTML-escaping every value), and the rows they show, built from the
//! API's answers, the same messages the CLI prints.

use askama::Template;
use drover_proto::v1 as pb;
use serde::Serialize;

use super::Who;
use crate::core::authz::{self, Action, Caller};

/// The frame of every page: who is logged in, the form token, the menu.
pub struct Chrome {
    /// The page's key (`runs`, `run`, `log`, …), for the menu and scripts.
    pub page: &'static str,
    /// "otto · operator"; empty on pages without a session.
    pub who: String,
    pub csrf: String,
    /// Where this coordinator stands, when it is not the leader.
    pub note: String,
}

pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    pub key: &'static str,
}

const NAV: [NavLink; 6] = [
    NavLink { href: "/runs", label: "Runs", key: "runs" },
    NavLink { href: "/agents", label: "Agents", key: "agents" },
    NavLink { href: "/envs", label: "Environments", key: "envs" },
    NavLink { href: "/rollouts", label: "Rollouts", key: "rollouts" },
    NavLink { href: "/apps", label: "Apps", key: "apps" },
    NavLink { href: "/audit", label: "Audit", key: "audit" },
];

impl Chrome {
    pub fn anonymous(page: &'static str) -> Chrome {
        Chrome { page, who: String::new(), csrf: String::new(), note: String::new() }
    }

    pub fn of(who: &Who, page: &'static str, note: String) -> Chrome {
        Chrome { page, who: who.label(), csrf: who.session.csrf.clone(), note }
    }

    pub fn nav(&self) -> &'static [NavLink] {
        &NAV
    }

    /// Whether `key` is this page's section (a run's page is under Runs).
    pub fn current(&self, key: &str) -> bool {
        let section = match self.page {
            "run" | "log" => "runs",
            "rollout" => "rollouts",
            "app" => "apps",
            page => page,
        };
        section == key
    }
}

/// Whether the caller may do an action, and if not, why, in the words of
/// the one decision (`core::authz`).
pub struct Permit {
    pub allowed: bool,
    pub why_not: String,
}

impl Permit {
    pub fn of(caller: &Caller, action: Action, what: &str) -> Permit {
        match authz::authorize(caller, action) {
            Ok(()) => Permit { allowed: true, why_not: String::new() },
            Err(why) => Permit {
                allowed: false,
                why_not: format!("{what} needs the {} role or above: {why}.", action.needs().as_str()),
            },
        }
    }
}

/// A time as UTC, to the second; "-" for none.
pub fn when(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `45s`, `3m 05s`, `1h 02m`; "-" for none.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms == 0 => "-".into(),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn run_state(state: i32) -> &'static str {
    match pb::RunState::try_from(state) {
        Ok(pb::RunState::Running) => "running",
        Ok(pb::RunState::Succeeded) => "succeeded",
        Ok(pb::RunState::Failed) => "failed",
        Ok(pb::RunState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

pub fn job_state(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Pending) => "pending",
        Ok(pb::JobState::Queued) => "queued",
        Ok(pb::JobState::Assigned) => "assigned",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Cancelling) => "cancelling",
        Ok(pb::JobState::Succeeded) => "succeeded",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Skipped) => "skipped",
        Ok(pb::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// A path segment, escaped.
pub fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A run in the runs list.
pub struct RunRow {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    /// What started it: "push to main", "manual", "schedule".
    pub event: String,
    pub commit: String,
    pub by: String,
    pub created: String,
    pub took: String,
}

impl RunRow {
    pub fn of(run: &pb::Run, now_ms: u64) -> RunRow {
        let place = match (run.branch.as_str(), run.tag.as_str()) {
            ("", "") => String::new(),
            (branch, "") => format!(" to {branch}"),
            (_, tag) => format!(" of tag {tag}"),
        };
        let event = if run.event.is_empty() { "manual".to_owned() } else { run.event.clone() };
        let end = if run.finished_ms > 0 { run.finished_ms } else { now_ms };
        RunRow {
            id: run.id.clone(),
            name: run.name.clone(),
            state: run_state(run.state),
            event: format!("{event}{place}"),
            commit: run.commit.chars().take(10).collect(),
            by: if run.submitted_by.is_empty() { "-".into() } else { run.submitted_by.clone() },
            created: when(run.created_ms),
            took: duration(end.saturating_sub(run.created_ms)),
        }
    }
}

/// A job, as the run page's table shows it and its script reads it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub name: String,
    /// The matrix job it expands (the name before ` (`), else its name.
    pub group: String,
    pub state: &'static str,
    pub needs: Vec<String>,
    pub attempt: u32,
    pub agent: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub waiting_for: String,
    pub approval: String,
    pub message: String,
    /// The job's log page.
    pub log: String,
    /// "sha256:abcd… (3 files, 12 KiB)", or empty.
    pub artifact: String,
    /// How long it ran, or has been running.
    pub took: String,
    /// Where its artifacts download from (when it has some).
    pub artifact_href: String,
}

impl JobView {
    pub fn of(run: &str, job: &pb::Job, now_ms: u64) -> JobView {
        let group = job.name.split_once(" (").map_or(job.name.as_str(), |(g, _)| g).to_owned();
        JobView {
            name: job.name.clone(),
            group,
            state: job_state(job.state),
            needs: job.needs.clone(),
            attempt: job.attempt,
            agent: job.agent.clone(),
            started_ms: job.started_ms,
            finished_ms: job.finished_ms,
            waiting_for: job.waiting_for.clone(),
            approval: job.approval.clone(),
            message: job.message.clone(),
            log: format!("/runs/{}/jobs/{}/log", segment(run), segment(&job.name)),
            artifact_href: format!("/runs/{}/jobs/{}/artifact", segment(run), segment(&job.name)),
            artifact: job
                .artifact
                .as_ref()
                .map(|a| {
                    format!("sha256:{}… ({} files, {} bytes)", &a.sha256[..a.sha256.len().min(12)], a.files, a.size)
                })
                .unwrap_or_default(),
            took: match (job.started_ms, job.finished_ms) {
                (0, _) => "-".into(),
                (s, 0) => duration(now_ms.saturating_sub(s)),
                (s, f) => duration(f.saturating_sub(s)),
            },
        }
    }

    /// Waiting for someone to approve it.
    pub fn awaits_approval(&self) -> bool {
        self.state == "pending" && self.waiting_for.starts_with("approval")
    }

    /// Where its decide form posts.
    pub fn decide(&self, run: &str) -> String {
        format!("/runs/{}/jobs/{}/decide", segment(run), segment(&self.name))
    }
}

/// JSON for a `<script type="application/json">`: what could end the
/// script element or start markup is escaped.
pub fn script_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .expect("views serialise")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[derive(Template)]
#[template(path = "runs.html")]
pub struct RunsPage {
    pub chrome: Chrome,
    pub runs: Vec<RunRow>,
    pub state: String,
    pub name: String,
    /// The live rows' address: this list's filters as a fragment.
    pub refresh: String,
}

#[derive(Template)]
#[template(path = "runs_rows.html")]
pub struct RunsRows {
    pub runs: Vec<RunRow>,
}

pub struct RunFacts {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub event: String,
    pub commit: String,
    pub repo: String,
    pub file: String,
    pub by: String,
    pub created: String,
    pub took: String,
    pub rerun_of: String,
}

#[derive(Template)]
#[template(path = "run.html")]
pub struct RunPage {
    pub chrome: Chrome,
    pub run: RunFacts,
    pub jobs: Vec<JobView>,
    /// `#run-data` for the script.
    pub data: String,
    pub finished: bool,
    pub cancel: Permit,
    pub rerun: Permit,
    pub approve: Permit,
    pub flash: String,
}

impl RunPage {
    pub fn waiting(&self) -> Vec<&JobView> {
        self.jobs.iter().filter(|j| j.awaits_approval()).collect()
    }
}

#[derive(Template)]
#[template(path = "log.html")]
pub struct LogPage {
    pub chrome: Chrome,
    pub run: String,
    pub job: String,
    pub state: &'static str,
    pub attempts: u32,
    pub events: String,
    pub raw: String,
    pub back: String,
}

pub struct AgentRow {
    pub name: String,
    pub version: String,
    pub labels: String,
    pub slots: String,
    pub status: &'static str,
    pub seen: String,
    pub note: String,
    /// Its certificate's end and access ("allowed", "revoked", "banned"),
    /// when the viewer may see identities.
    pub cert_until: String,
    pub access: String,
}

#[derive(Template)]
#[template(path = "agents.html")]
pub struct AgentsPage {
    pub chrome: Chrome,
    pub agents: Vec<AgentRow>,
    /// Why certificates and access are not shown, when they are not.
    pub identities_hidden: String,
}

pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub warning: bool,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub entries: Vec<AuditRow>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub chrome: Chrome,
    pub title: &'a str,
    pub message: &'a str,
}

/// Renders a page; a template that fails (it cannot, for these types) is
/// a plain error.
pub trait RenderPage {
    fn render_page(&self) -> String;
}

impl<T: Template> RenderPage for T {
    fn render_page(&self) -> String {
        self.render().unwrap_or_else(|e| format!("cannot render the page: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_read_as_people_write_them() {
        let cases = [(0, "-"), (999, "0s"), (45_000, "45s"), (185_000, "3m 05s"), (3_720_000, "1h 02m")];
        for (ms, want) in cases {
            assert_eq!(duration(ms), want, "{ms}");
        }
        assert_eq!(when(0), "-");
        assert_eq!(when(1_700_000_000_000), "2023-11-14 22:13:20Z");
    }

    #[test]
    fn json_in_a_script_cannot_end_it() {
        let text = script_json(&serde_json::json!({"name": "</script><b>&"}));
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["name"], "</script><b>&");
    }

    #[test]
    fn a_matrix_expansion_is_grouped_under_its_job() {
        let job = pb::Job { name: "test (os=linux, rust=beta)".into(), ..Default::default() };
        let view = JobView::of("7", &job, 0);
        assert_eq!(view.group, "test");
        assert_eq!(view.log, "/runs/7/jobs/test%20%28os%3Dlinux%2C%20rust%3Dbeta%29/log");
    }

    #[test]
    fn an_action_says_who_may_do_it_and_why_not() {
        let vera = Caller::User { name: "vera".into(), role: Ok(authz::Role::Viewer) };
        let permit = Permit::of(&vera, Action::Cancel, "Cancelling");
        assert!(!permit.allowed);
        assert!(permit.why_not.starts_with("Cancelling needs the operator role or above: "), "{}", permit.why_not);
        assert!(Permit::of(&Caller::Admin("root".into()), Action::Cancel, "Cancelling").allowed);
    }
}
