//! `on:`, the events that start the pipeline ([`crate::triggers`] holds the
//! format and what each filter means). Every pattern is checked as a glob
//! and every cron expression read, so a filter that could never match as
//! meant is refused at submit rather than silently starting nothing.

use super::{Checker, Entry, find};
use crate::triggers::{
    MAX_PATTERNS, MAX_SCHEDULES, RefFilter, Schedule, TagFilter, Triggers, cron_problem, pattern_problem,
};
use crate::yaml::{Kind, Node, abbreviate};

const EVENTS: &[&str] = &["push", "tag", "pull_request", "schedule", "manual"];
const EXAMPLE: &str = "e.g. `on: {push: {branches: [main]}, schedule: [{cron: '0 3 * * *'}], manual: true}`";
const CRON_HINT: &str = "five fields in UTC: minute hour day-of-month month day-of-week, e.g. '0 3 * * *' \
     (03:00 every day) or '*/15 * * * 1-5' (every 15 minutes on weekdays)";

impl Checker<'_> {
    /// Reads `on:`; what it cannot read starts nothing.
    pub(super) fn triggers(&mut self, entry: &Entry<'_>) -> Triggers {
        let none = Triggers { push: None, tag: None, pull_request: None, schedule: Vec::new(), manual: false };
        let node = entry.value;
        match &node.kind {
            // `on: push`, `on: [push, manual]`: events without filters.
            Kind::Scalar(_) => self.event_names(std::slice::from_ref(node), none),
            Kind::Seq(items) => self.event_names(items, none),
            Kind::Map(map) => {
                let entries = self.entries(map, "event", "in `on`");
                self.unknown_keys(&entries, EVENTS, "in `on`");
                let mut on = none;
                for entry in &entries {
                    self.event(entry, &mut on);
                }
                on
            }
            Kind::Null => {
                self.error(entry.key_pos, "`on` is empty, so nothing would ever start the pipeline", hint());
                none
            }
        }
    }

    fn event_names(&mut self, items: &[Node], mut on: Triggers) -> Triggers {
        for item in items {
            let name = item.scalar_text().filter(|_| matches!(item.kind, Kind::Scalar(_)));
            match name {
                Some("push") => on.push = Some(RefFilter::default()),
                Some("tag") => on.tag = Some(TagFilter::default()),
                Some("pull_request") => on.pull_request = Some(RefFilter::default()),
                Some("manual") => on.manual = true,
                Some("schedule") => self.error(
                    item.pos,
                    "`schedule` needs its cron expressions",
                    Some("e.g. `on: {schedule: [{cron: '0 3 * * *'}]}`".to_owned()),
                ),
                Some(other) => self.unknown_event(item, other),
                None => self.error(
                    item.pos,
                    format!("events in `on` are names, found {}", item.describe()),
                    Some(format!("the events are {}", EVENTS.join(", "))),
                ),
            }
        }
        on
    }

    fn unknown_event(&mut self, node: &Node, name: &str) {
        let list = format!("the events are {}", EVENTS.join(", "));
        let hint = match name {
            "merge_request" | "pull-request" | "pr" => format!("did you mean `pull_request`? {list}"),
            "tags" => format!("did you mean `tag`? {list}"),
            "cron" => format!("cron expressions go under `schedule`: `schedule: [{{cron: '0 3 * * *'}}]`; {list}"),
            _ => match super::closest(name, EVENTS, &mut self.suggestion_budget) {
                Some(close) => format!("did you mean `{close}`? {list}"),
                None => list,
            },
        };
        self.error(node.pos, format!("unknown event `{}` in `on`", abbreviate(name)), Some(hint));
    }

    fn event(&mut self, entry: &Entry<'_>, on: &mut Triggers) {
        let value = entry.value;
        match entry.key {
            "push" => on.push = Some(self.ref_filter(value, "push")),
            "pull_request" => on.pull_request = Some(self.ref_filter(value, "pull_request")),
            "tag" => on.tag = Some(self.tag_filter(value)),
            "schedule" => on.schedule = self.schedules(entry),
            "manual" => match (&value.kind, value.scalar_text()) {
                (Kind::Null, _) | (Kind::Scalar(_), Some("true")) => on.manual = true,
                (Kind::Scalar(_), Some("false")) => on.manual = false,
                _ => self.error(
                    value.pos,
                    "`manual` in `on` must be true or false",
                    Some("`manual: true` lets `drover run` start the pipeline".to_owned()),
                ),
            },
            _ => {} // reported by `unknown_keys`
        }
    }

    /// `push:` or `pull_request:`: `branches`, `branches-ignore`, `paths`,
    /// `paths-ignore`; nothing (`push:`) filters nothing.
    fn ref_filter(&mut self, node: &Node, event: &str) -> RefFilter {
        let mut filter = RefFilter::default();
        let map = match &node.kind {
            Kind::Null => return filter,
            Kind::Map(map) => map,
            _ => {
                self.error(
                    node.pos,
                    format!("`{event}` in `on` must be a mapping of filters, found {}", node.describe()),
                    Some(format!("e.g. `{event}: {{branches: [main], paths: ['src/**']}}`, or `{event}:` for all")),
                );
                return filter;
            }
        };
        let context = format!("in `on.{event}`");
        let entries = self.entries(map, "filter", &context);
        self.unknown_keys(&entries, &["branches", "branches-ignore", "paths", "paths-ignore"], &context);
        let place = format!("`on.{event}`");
        for entry in &entries {
            let patterns = self.patterns(entry, &place);
            match entry.key {
                "branches" => filter.branches = patterns,
                "branches-ignore" => filter.branches_ignore = patterns,
                "paths" => filter.paths = patterns,
                "paths-ignore" => filter.paths_ignore = patterns,
                _ => {}
            }
        }
        filter
    }

    fn tag_filter(&mut self, node: &Node) -> TagFilter {
        let map = match &node.kind {
            Kind::Null => return TagFilter::default(),
            Kind::Map(map) => map,
            _ => {
                self.error(
                    node.pos,
                    format!("`tag` in `on` must be a mapping, found {}", node.describe()),
                    Some("e.g. `tag: {tags: ['v*']}`, or `tag:` for every tag".to_owned()),
                );
                return TagFilter::default();
            }
        };
        let entries = self.entries(map, "filter", "in `on.tag`");
        self.unknown_keys(&entries, &["tags"], "in `on.tag`");
        TagFilter { tags: find(&entries, "tags").map(|e| self.patterns(e, "`on.tag`")).unwrap_or_default() }
    }

    /// A list of globs (or one on its own), each checked; `place` names
    /// the mapping of `entry` for the messages (`` `on.push` ``).
    pub(super) fn patterns(&mut self, entry: &Entry<'_>, place: &str) -> Vec<String> {
        let key = entry.key;
        let items: Vec<&Node> = match &entry.value.kind {
            Kind::Scalar(_) => vec![entry.value],
            Kind::Seq(items) if !items.is_empty() => items.iter().collect(),
            Kind::Seq(_) => {
                self.error(
                    entry.value_pos(),
                    format!("`{key}` in {place} lists no patterns"),
                    Some(format!("list at least one, e.g. `{key}: [main, 'release/*']`, or leave `{key}` out")),
                );
                return Vec::new();
            }
            _ => {
                self.error(
                    entry.value_pos(),
                    format!("`{key}` in {place} must be a list of patterns, found {}", entry.value.describe()),
                    Some(format!("e.g. `{key}: [main, 'release/*']`")),
                );
                return Vec::new();
            }
        };
        if items.len() > MAX_PATTERNS {
            self.error(
                items[MAX_PATTERNS].pos,
                format!("`{key}` in {place} lists {} patterns, over the limit of {MAX_PATTERNS}", items.len()),
                Some("use globs that cover several, e.g. 'release/*'".to_owned()),
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for item in items {
            let Some(text) = item.scalar_text().filter(|_| matches!(item.kind, Kind::Scalar(_))) else {
                self.error(
                    item.pos,
                    format!("entries of `{key}` must be patterns, found {}", item.describe()),
                    Some(format!("e.g. `{key}: [main, 'release/*']`")),
                );
                continue;
            };
            match pattern_problem(text) {
                None => out.push(text.to_owned()),
                Some(problem) => self.error(
                    item.pos,
                    format!("invalid pattern `{}` in `{key}` of {place}: {problem}", abbreviate(text)),
                    Some(
                        "patterns are globs: `*` matches within one `/`-separated part, `**` across parts, `?` \
                         one character, `[a-z]` a class; quote a pattern that starts with `*`"
                            .to_owned(),
                    ),
                ),
            }
        }
        out
    }

    fn schedules(&mut self, entry: &Entry<'_>) -> Vec<Schedule> {
        let items = match &entry.value.kind {
            Kind::Seq(items) if !items.is_empty() => items,
            _ => {
                self.error(
                    entry.value_pos(),
                    format!("`schedule` in `on` must be a list of crons, found {}", entry.value.describe()),
                    Some("e.g. `schedule: [{cron: '0 3 * * *'}]`".to_owned()),
                );
                return Vec::new();
            }
        };
        if items.len() > MAX_SCHEDULES {
            self.error(
                items[MAX_SCHEDULES].pos,
                format!("`schedule` lists {} crons, over the limit of {MAX_SCHEDULES}", items.len()),
                Some("one cron expression can name several times, e.g. '0 3,15 * * *'".to_owned()),
            );
            return Vec::new();
        }
        let mut out: Vec<Schedule> = Vec::new();
        for item in items {
            let Kind::Map(map) = &item.kind else {
                self.error(
                    item.pos,
                    format!("entries of `schedule` are `{{cron: ...}}`, found {}", item.describe()),
                    Some("e.g. `- cron: '0 3 * * *'`".to_owned()),
                );
                continue;
            };
            let entries = self.entries(map, "key", "in a schedule");
            self.unknown_keys(&entries, &["cron"], "in a schedule");
            let Some(cron) = find(&entries, "cron") else {
                self.error(item.pos, "a schedule has no `cron`", Some(CRON_HINT.to_owned()));
                continue;
            };
            let Some(text) = cron.value.scalar_text().filter(|_| matches!(cron.value.kind, Kind::Scalar(_))) else {
                self.error(cron.value_pos(), "`cron` must be a string", Some(CRON_HINT.to_owned()));
                continue;
            };
            if let Some(problem) = cron_problem(text) {
                self.error(
                    cron.value.pos,
                    format!("invalid cron `{}`: {problem}", abbreviate(text)),
                    Some(CRON_HINT.to_owned()),
                );
                continue;
            }
            if out.iter().any(|s| s.cron == text) {
                self.error(
                    cron.value.pos,
                    format!("cron `{}` is listed twice", abbreviate(text)),
                    Some("remove one of them: each tick starts one run".to_owned()),
                );
                continue;
            }
            out.push(Schedule { cron: text.to_owned() });
        }
        out
    }
}

fn hint() -> Option<String> {
    Some(EXAMPLE.to_owned())
}
