//! `on:`: which events start a pipeline. Read at submit (by `check`), and
//! asked by the coordinator's triggers ([`Triggers::wants`]) before a push,
//! a tag, a pull request or a cron tick starts a run.
//!
//! ```yaml
//! on:
//!   push:
//!     branches: [main, 'release/*']    # globs: `*` stops at `/`, `**` does not
//!     branches-ignore: ['wip/**']
//!     paths: ['src/**', Cargo.lock]    # some changed file must match (and not only ignored ones)
//!     paths-ignore: ['docs/**']
//!   tag:
//!     tags: ['v*']
//!   pull_request:
//!     branches: [main]                 # the branch it would merge into
//!     paths: ['src/**']
//!   schedule:
//!     - cron: '0 3 * * *'              # five fields, in UTC, on the repository's default branch
//!   manual: true                       # `drover run`
//! ```
//!
//! Each event is written as a key (`push: {...}`), or, with no filters, as
//! a name in a list (`on: [push, tag, manual]`) or alone (`on: push`).
//!
//! **Without `on:`** a pipeline runs on a push to any branch, on any tag,
//! and by hand: what GitLab does, and what a file written before triggers
//! existed expects. Pull requests and schedules are only ever asked for.
//! A pipeline with `on:` but without `manual` is still run by
//! `drover run`: the person asking is the event.

use serde::{Deserialize, Serialize};

/// The most patterns one filter may list.
pub const MAX_PATTERNS: usize = 50;
/// The most schedules one pipeline may have.
pub const MAX_SCHEDULES: usize = 10;
/// The longest pattern, in characters.
pub const MAX_PATTERN_LEN: usize = 200;

/// What started a run: `drover.event` in expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// By hand: `drover run`, `drover rerun`.
    #[default]
    Manual,
    /// A new head of a branch.
    Push,
    /// A new tag.
    Tag,
    /// A pull (merge) request opened or updated.
    PullRequest,
    /// A cron tick of `on: schedule`.
    Schedule,
}

impl EventKind {
    /// As `drover.event` reads it: `'push'`, `'pull_request'`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Manual => "manual",
            EventKind::Push => "push",
            EventKind::Tag => "tag",
            EventKind::PullRequest => "pull_request",
            EventKind::Schedule => "schedule",
        }
    }
}

/// An event a trigger asks a pipeline about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// `branch` moved. `changed`: the files the push changed, when known
    /// (a new branch, or a push git could not compare, is `None`, and
    /// passes every path filter).
    Push { branch: &'a str, changed: Option<&'a [String]> },
    /// `tag` was pushed.
    Tag { tag: &'a str },
    /// A pull request into `target` was opened or updated.
    PullRequest { target: &'a str, changed: Option<&'a [String]> },
    /// A tick of the schedule `cron` (as written in the file).
    Schedule { cron: &'a str },
    /// By hand.
    Manual,
}

/// A pipeline's `on:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triggers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<RefFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<TagFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<RefFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Schedule>,
    #[serde(default)]
    pub manual: bool,
}

impl Default for Triggers {
    /// What a pipeline without `on:` runs on: pushes to any branch, tags,
    /// and by hand.
    fn default() -> Triggers {
        Triggers {
            push: Some(RefFilter::default()),
            tag: Some(TagFilter::default()),
            pull_request: None,
            schedule: Vec::new(),
            manual: true,
        }
    }
}

/// Filters of `push` and `pull_request`; an empty list filters nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches_ignore: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths_ignore: Vec<String>,
}

/// Filters of `tag`; an empty list takes every tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// One `schedule:` entry: a standard five-field cron expression, in UTC,
/// checked at submit ([`cron_problem`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub cron: String,
}

impl Triggers {
    /// Whether `event` starts this pipeline. `Manual` always does.
    pub fn wants(&self, event: &Event<'_>) -> bool {
        match *event {
            Event::Manual => true,
            Event::Push { branch, changed } => self.push.as_ref().is_some_and(|f| f.takes(branch, changed)),
            Event::PullRequest { target, changed } => {
                self.pull_request.as_ref().is_some_and(|f| f.takes(target, changed))
            }
            Event::Tag { tag } => {
                self.tag.as_ref().is_some_and(|f| f.tags.is_empty() || f.tags.iter().any(|p| matches(p, tag)))
            }
            Event::Schedule { cron } => self.schedule.iter().any(|s| s.cron == cron),
        }
    }
}

impl RefFilter {
    fn takes(&self, branch: &str, changed: Option<&[String]>) -> bool {
        let branch_ok = (self.branches.is_empty() || self.branches.iter().any(|p| matches(p, branch)))
            && !self.branches_ignore.iter().any(|p| matches(p, branch));
        if !branch_ok {
            return false;
        }
        let Some(changed) = changed else { return true };
        if self.paths.is_empty() && self.paths_ignore.is_empty() {
            return true;
        }
        // Some changed file is wanted: matched by `paths` (or there are
        // none) and not by `paths-ignore`.
        changed.iter().any(|file| {
            (self.paths.is_empty() || self.paths.iter().any(|p| matches(p, file)))
                && !self.paths_ignore.iter().any(|p| matches(p, file))
        })
    }
}

/// Why `pattern` is not a branch, tag or path glob, if it is not. Globs
/// are GitHub's: `*` matches within one path segment, `**` across
/// segments, `?` one character, `[abc]` and `[a-z]` a class, `{a,b}` a
/// choice.
pub fn pattern_problem(pattern: &str) -> Option<String> {
    if pattern.is_empty() {
        return Some("a pattern is empty".to_owned());
    }
    if pattern.chars().count() > MAX_PATTERN_LEN {
        return Some(format!("a pattern has at most {MAX_PATTERN_LEN} characters"));
    }
    if pattern.chars().any(char::is_control) {
        return Some("a pattern has no control characters".to_owned());
    }
    glob(pattern).err()
}

/// Whether `text` matches the glob `pattern` (a bad pattern matches nothing;
/// patterns were checked at submit).
pub fn matches(pattern: &str, text: &str) -> bool {
    glob(pattern).is_ok_and(|g| g.is_match(text))
}

fn glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|err| err.kind().to_string())
}

/// Why `cron` is not a standard five-field cron expression, if it is not.
pub fn cron_problem(cron: &str) -> Option<String> {
    parse_cron(cron).err()
}

/// `cron` read as `on: schedule` reads it: five fields, no seconds or
/// years; the error says what is wrong. Deploy windows read theirs so too.
pub fn parse_cron(cron: &str) -> Result<croner::Cron, String> {
    let fields = cron.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "a cron expression has five fields (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(cron)
        .map_err(|err| err.to_string())
}

impl Schedule {
    /// The last tick at or before `now_ms`, if it is after `after_ms`:
    /// the one tick a trigger fires to catch up after it was away (a
    /// failover), never one per missed tick.
    pub fn due(&self, after_ms: u64, now_ms: u64) -> Option<u64> {
        let cron = parse_cron(&self.cron).ok()?;
        let now = chrono::DateTime::from_timestamp_millis(i64::try_from(now_ms).ok()?)?;
        let last = cron.find_previous_occurrence(&now, true).ok()?;
        u64::try_from(last.timestamp_millis()).ok().filter(|tick| *tick > after_ms)
    }
}

#[cfg(test)]
mod tests;
