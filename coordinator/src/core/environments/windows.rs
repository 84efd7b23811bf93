//! Recurring deploy windows (issue 17): when an environment takes new
//! releases. An environment's `windows:` each open at a cron's ticks, in
//! an IANA time zone, for a while:
//!
//! ```yaml
//! windows:
//!   - allow: "0 9 * * 1-5"      # opens at 09:00 on weekdays
//!     for: 8h                   # and stays open 8 hours
//!     timezone: Europe/Berlin   # the cron's zone; default UTC
//!   - deny: "0 0 24 12 *"
//!     for: 48h
//!     reason: christmas         # shown to the rollouts that wait
//! ```
//!
//! [`closed`] says whether deploys must wait at a given time, why, and
//! when they may go ahead: a deny window that holds closes the
//! environment, whatever else holds; when there is at least one allow
//! window, the environment is closed whenever none of them holds; with no
//! windows it is always open. A window holds at `t` when its latest tick
//! at or before `t` is within its `for` (`tick <= t < tick + for`): at
//! `tick + for` it is over. The `*_problem` functions are the limits, each
//! with its fix; [`super::check`] applies them. Pure: the time is an
//! argument, and every search is bounded (croner's own searches are, and
//! the search for the time it opens again takes [`MAX_REOPEN_STEPS`]).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The most windows one environment may have.
pub const MAX_WINDOWS: usize = 16;
/// The shortest `for`: a cron ticks at most once a minute.
pub const MIN_WINDOW_MS: u64 = 60 * 1000;
/// The longest `for`: a month. Longer, and the window is no schedule;
/// freeze the environment (`drover env freeze`) instead.
pub const MAX_WINDOW_MS: u64 = 31 * 24 * 3600 * 1000;
/// The longest reason, in characters.
pub const MAX_REASON_LEN: usize = 200;
/// The time zone of a window that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// How many closing windows [`closed`] looks past for the time the
/// environment opens again, before it gives up (`reopens_ms: None`):
/// an allow tick covered by a deny window, then the next, and so on.
pub const MAX_REOPEN_STEPS: usize = 32;

/// Whether deploys may go ahead while a window holds (allow) or must not
/// (deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    Allow,
    Deny,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Allow => "allow",
            WindowKind::Deny => "deny",
        }
    }
}

/// One recurring window, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub kind: WindowKind,
    /// When it opens: five-field cron, in `timezone`.
    pub cron: String,
    /// How long it stays open after each tick.
    pub for_ms: u64,
    /// An IANA name (`Europe/Berlin`); [`DEFAULT_TIMEZONE`] when the file
    /// gives none.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// What the waiting rollouts are told; may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_owned()
}

/// Why deploys must wait now, and when they may go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub why: String,
    /// The earliest time the environment is open again, best effort: the
    /// end of the deny windows that hold, or the next allow tick, looked
    /// past each other at most [`MAX_REOPEN_STEPS`] times; `None` when
    /// that finds no open time (or a window cannot be read).
    pub reopens_ms: Option<u64>,
}

/// Why `count` windows are too many, if they are.
pub fn windows_size_problem(count: usize) -> Option<String> {
    (count > MAX_WINDOWS).then(|| {
        format!(
            "{count} deploy windows, over the limit of {MAX_WINDOWS}; one cron covers many times (`0 9 * * 1-5` is \
             every weekday at 09:00)"
        )
    })
}

/// Why a window is not exactly one of `allow` and `deny`, if it is not.
pub fn window_kind_problem(allow: bool, deny: bool) -> Option<String> {
    let why = match (allow, deny) {
        (true, true) => "a deploy window has both `allow` and `deny`",
        (false, false) => "a deploy window has neither `allow` nor `deny`",
        _ => return None,
    };
    Some(format!(
        "{why}; give exactly one: `allow: \"0 9 * * 1-5\"` opens it for deploys, `deny: \"0 0 24 12 *\"` closes it"
    ))
}

/// Why `cron` cannot say when a window opens, if it cannot: the grammar of
/// `on: schedule`, and it must tick at all.
pub fn window_cron_problem(cron: &str) -> Option<String> {
    let why = match parse_cron(cron) {
        Err(why) => format!("does not parse: {why}"),
        // A date that never comes (`0 0 30 2 *`): croner gives up after a
        // bounded search.
        Ok(parsed) if parsed.find_next_occurrence(&reference(), true).is_err() => {
            "never ticks (no date has those fields)".to_owned()
        }
        Ok(_) => return None,
    };
    Some(format!(
        "deploy window cron {cron:?} {why}; write five fields, minute hour day-of-month month day-of-week, e.g. \
         `0 9 * * 1-5` (09:00 on weekdays)"
    ))
}

/// A window's `for` as the file writes it (`30m`, `8h`, `1h30m`: the
/// pipeline language's durations), in milliseconds, or why not.
pub fn parse_for(text: &str) -> Result<u64, String> {
    let Some(length) = drover_client::duration::parse(text, drover_client::duration::PIPELINE_UNITS) else {
        return Err(format!(
            "`for` {text:?} is not a duration: write whole numbers with units `h`, `m`, `s`, largest first \
             (`30m`, `8h`, `1h30m`)"
        ));
    };
    let ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
    match window_for_problem(ms) {
        Some(why) => Err(why),
        None => Ok(ms),
    }
}

/// Why a window open `for_ms` after each tick is refused, if it is.
pub fn window_for_problem(for_ms: u64) -> Option<String> {
    (!(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&for_ms)).then(|| {
        format!(
            "a deploy window open for {} is refused: `for` is 1m to {} (31 days); for longer, freeze the \
             environment (`drover env freeze ENV --reason TEXT`)",
            hours(for_ms),
            hours(MAX_WINDOW_MS)
        )
    })
}

/// Why `name` is not a time zone, if it is not: an IANA name, as written
/// (`Europe/Berlin`, not `europe/berlin` or `CET+1`).
pub fn timezone_problem(name: &str) -> Option<String> {
    if name.parse::<Tz>().is_ok() {
        return None;
    }
    let near = chrono_tz::TZ_VARIANTS.iter().find(|tz| tz.name().eq_ignore_ascii_case(name));
    let hint = near.map(|tz| format!("did you mean `{}`? ", tz.name())).unwrap_or_default();
    Some(format!(
        "unknown time zone {name:?}; {hint}give an IANA name such as `UTC` or `Europe/Berlin` (the zone whose wall \
         clock the cron reads)"
    ))
}

/// Why a window's reason is refused, if it is.
pub fn window_reason_problem(text: &str) -> Option<String> {
    let count = text.chars().count();
    if count > MAX_REASON_LEN {
        return Some(format!(
            "the reason has {count} characters, over the limit of {MAX_REASON_LEN}; say it in a line"
        ));
    }
    text.chars()
        .any(char::is_control)
        .then(|| "the reason has control characters (a line break?); write it on one line".to_owned())
}

/// Every problem of one window.
pub fn window_problems(window: &Window) -> Vec<String> {
    let mut problems = Vec::new();
    problems.extend(window_cron_problem(&window.cron));
    problems.extend(window_for_problem(window.for_ms));
    problems.extend(timezone_problem(&window.timezone));
    problems.extend(window_reason_problem(&window.reason));
    problems
}

/// `window` tidied as [`super::check`] stores it: text trimmed, no time
/// zone the default.
pub fn tidy(mut window: Window) -> Window {
    window.cron = window.cron.trim().to_owned();
    window.timezone = window.timezone.trim().to_owned();
    if window.timezone.is_empty() {
        window.timezone = default_timezone();
    }
    window.reason = window.reason.trim().to_owned();
    window
}

/// Why deploys must wait at `now_ms` under `windows`, or `None` when they
/// may go ahead. The caller names the environment; see
/// [`super::Spec::closed`] for a `why` that does.
pub fn closed(windows: &[Window], now_ms: u64) -> Option<Closed> {
    judge(None, windows, now_ms)
}

/// [`closed`], with `env` named in `why` when given.
pub(super) fn judge(env: Option<&str>, windows: &[Window], now_ms: u64) -> Option<Closed> {
    if windows.is_empty() {
        return None;
    }
    let of = env.map(|name| format!(" of {name}")).unwrap_or_default();
    let mut ready = Vec::with_capacity(windows.len());
    for (i, window) in windows.iter().enumerate() {
        match Ready::new(window) {
            Ok(r) => ready.push(r),
            // Every window is checked before it is stored, so this one was
            // stored under other rules (an older coordinator, an older
            // time zone database): wait rather than deploy against a
            // schedule nobody can read.
            Err(why) => {
                return Some(Closed {
                    why: format!(
                        "deploy window {} {}{of} cannot be read ({why}); deploys wait until the environment is \
                         applied again with it fixed",
                        i + 1,
                        spelled(window)
                    ),
                    reopens_ms: None,
                });
            }
        }
    }
    let first = blocker(&ready, now_ms)?;
    let why = match &first {
        Blocker::Deny { window, until } => {
            let name =
                if window.window.reason.is_empty() { String::new() } else { format!(" {:?}", window.window.reason) };
            format!("deny window{name}{of} ({}) holds until {}", window.described(), window.at(*until))
        }
        Blocker::Outside { next: Some((at, window)) } => {
            format!("outside the deploy windows{of} (allow {}); the next opens {}", window.described(), window.at(*at))
        }
        Blocker::Outside { next: None } => {
            let allows: Vec<String> =
                ready.iter().filter(|r| r.window.kind == WindowKind::Allow).map(Ready::described).collect();
            format!("outside the deploy windows{of} (allow {}), and none of them ever opens again", allows.join("; "))
        }
    };
    Some(Closed { why, reopens_ms: reopens(&ready, first) })
}

/// The earliest time from `first`'s on at which nothing closes the
/// environment, looking past at most [`MAX_REOPEN_STEPS`] closing windows.
fn reopens(ready: &[Ready<'_>], first: Blocker<'_, '_>) -> Option<u64> {
    let mut blocking = first;
    for _ in 0..MAX_REOPEN_STEPS {
        let t = match blocking {
            Blocker::Deny { until, .. } => until,
            Blocker::Outside { next: Some((at, _)) } => at,
            Blocker::Outside { next: None } => return None,
        };
        match blocker(ready, t) {
            None => return Some(t),
            Some(next) => blocking = next,
        }
    }
    None
}

/// What keeps deploys out at a time.
enum Blocker<'r, 'w> {
    /// A deny window holds until `until` (of those that hold, the one that
    /// ends last).
    Deny { window: &'r Ready<'w>, until: u64 },
    /// No allow window holds; the one that opens next, and when.
    Outside { next: Option<(u64, &'r Ready<'w>)> },
}

fn blocker<'r, 'w>(ready: &'r [Ready<'w>], t: u64) -> Option<Blocker<'r, 'w>> {
    let deny = ready
        .iter()
        .filter(|r| r.window.kind == WindowKind::Deny)
        .filter_map(|r| r.holds(t).map(|until| (until, r)))
        .max_by_key(|(until, _)| *until);
    if let Some((until, window)) = deny {
        return Some(Blocker::Deny { window, until });
    }
    let mut allows = ready.iter().filter(|r| r.window.kind == WindowKind::Allow).peekable();
    allows.peek()?;
    let allows: Vec<&Ready<'_>> = allows.collect();
    if allows.iter().any(|r| r.holds(t).is_some()) {
        return None;
    }
    let next = allows.into_iter().filter_map(|r| r.next_tick(t).map(|at| (at, r))).min_by_key(|(at, _)| *at);
    Some(Blocker::Outside { next })
}

/// A window with its cron parsed and its zone found.
struct Ready<'w> {
    window: &'w Window,
    cron: croner::Cron,
    tz: Tz,
}

impl<'w> Ready<'w> {
    fn new(window: &'w Window) -> Result<Ready<'w>, String> {
        let cron = parse_cron(&window.cron)?;
        let tz = window.timezone.parse::<Tz>().map_err(|_| format!("unknown time zone {:?}", window.timezone))?;
        Ok(Ready { window, cron, tz })
    }

    /// When the window that holds at `t` ends, if one does.
    fn holds(&self, t: u64) -> Option<u64> {
        let tick = self.cron.find_previous_occurrence(&self.instant(t)?, true).ok()?;
        let tick = u64::try_from(tick.timestamp_millis()).ok()?;
        let end = tick.saturating_add(self.window.for_ms);
        (tick <= t && t < end).then_some(end)
    }

    /// The first tick after `t`.
    fn next_tick(&self, t: u64) -> Option<u64> {
        let tick = self.cron.find_next_occurrence(&self.instant(t)?, false).ok()?;
        u64::try_from(tick.timestamp_millis()).ok().filter(|tick| *tick > t)
    }

    /// `t` on the window's wall clock, to the second (cron ticks are whole
    /// minutes, so nothing between is lost).
    fn instant(&self, t: u64) -> Option<DateTime<Tz>> {
        let secs = i64::try_from(t / 1000).ok()?;
        Some(Utc.timestamp_opt(secs, 0).single()?.with_timezone(&self.tz))
    }

    /// `t` as people read it in the window's zone: `2026-12-03 09:00
    /// Europe/Berlin`.
    fn at(&self, t: u64) -> String {
        let Some(at) = i64::try_from(t).ok().and_then(|t| Utc.timestamp_millis_opt(t).single()) else {
            return format!("{t} ms");
        };
        let at = at.with_timezone(&self.tz);
        let clock = if t.is_multiple_of(60_000) { "%Y-%m-%d %H:%M" } else { "%Y-%m-%d %H:%M:%S" };
        format!("{} {}", at.format(clock), self.tz.name())
    }

    /// `"0 9 * * 1-5" for 8h, Europe/Berlin`.
    fn described(&self) -> String {
        format!("{:?} for {}, {}", self.window.cron, hours(self.window.for_ms), self.window.timezone)
    }
}

/// A window as the file writes it, for a message about a window that cannot
/// be read.
fn spelled(window: &Window) -> String {
    format!("({} {:?} for {}, {})", window.kind.as_str(), window.cron, hours(window.for_ms), window.timezone)
}

/// A length in the units a window's `for` is written in (`48h`, `1h30m`,
/// `90s` as `1m30s`): no days, which `for` does not take.
pub fn hours(ms: u64) -> String {
    drover_client::duration::format_in(Duration::from_millis(ms), drover_client::duration::PIPELINE_UNITS)
}

/// A cron as `on: schedule` reads it: five fields, no seconds or years.
fn parse_cron(cron: &str) -> Result<croner::Cron, String> {
    drover_pipeline::triggers::parse_cron(cron)
}

/// Where the search for a cron's first tick starts, so that whether it
/// ticks at all does not depend on the clock: 2000-01-01 00:00 UTC.
fn reference() -> DateTime<Utc> {
    DateTime::from_timestamp(946_684_800, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests;
