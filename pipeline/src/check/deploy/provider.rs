//! A metric's provider, where its value comes from
//! ([`crate::deploy::Provider`]):
//!
//! ```yaml
//! prometheus: {address: "http://prometheus:9090", query: "sum(rate(errors_total[1m]))"}
//! http: {url: "http://10.0.0.5:9000/stats", json_path: "$.ready"}
//! exec: {command: "./check-canary", timeout: 30s}   # timeout: 1s to 10m; 30s
//! ```
//!
//! The coordinator calls a `prometheus` address or an `http` URL; an
//! `exec` command runs on a node of the rollout, from the release's root,
//! as its hooks do, and its exit code is the value.

use std::time::Duration;

use super::super::{Checker, Entry, find};
use crate::deploy::Provider;
use crate::yaml::{Kind, Node, abbreviate};

/// The keys that name a provider.
pub(super) const PROVIDERS: &[&str] = &["prometheus", "http", "exec"];
/// The longest Prometheus `address` and `http` `url`, in characters.
const MAX_URL_LEN: usize = 2048;
/// The longest Prometheus `query`, in bytes.
const MAX_QUERY_BYTES: usize = 4096;
/// The longest `json_path`, in characters.
const MAX_JSON_PATH_LEN: usize = 256;
/// The longest `exec` `command`, in bytes.
const MAX_COMMAND_BYTES: usize = 4096;
/// An `exec` command's `timeout`: when left out, and the longest.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(10 * 60);

pub(super) const PROVIDER_HINT: &str = "give one of `prometheus: {address: \"http://prometheus:9090\", query: ...}` \
     (a PromQL query), `http: {url: \"http://...\", json_path: $.value}` (a GET whose answer holds the value) and \
     `exec: {command: ./check}` (a command on a node, judged by its exit code)";
const PROMETHEUS_EXAMPLE: &str =
    "e.g. `prometheus: {address: \"http://prometheus:9090\", query: \"sum(rate(errors_total[1m]))\"}`";
const HTTP_EXAMPLE: &str = "e.g. `http: {url: \"http://10.0.0.5:9000/stats\", json_path: $.ready}`";
const EXEC_EXAMPLE: &str = "e.g. `exec: {command: ./check-canary, timeout: 30s}`";
const URL_HINT: &str =
    "an `http://` or `https://` URL with a host the coordinator reaches, e.g. \"http://prometheus:9090\"";
const MEASURED_AS_WRITTEN: &str = "write the value itself: the coordinator measures with the text of the file";
const JSON_PATH_HINT: &str = "a simple JSONPath: `$` (the whole answer), then parts `.name`, `[0]` or `['a key']`, \
     e.g. `$.data.ready` or `$.items[0].value`";

impl Checker<'_> {
    /// Reads a metric's provider, `prometheus`, `http` or `exec` (`entry`).
    pub(super) fn provider(&mut self, entry: &Entry<'_>, subject: &str) -> Option<Provider> {
        let (keys, example): (&[&str], _) = match entry.key {
            "prometheus" => (&["address", "query"], PROMETHEUS_EXAMPLE),
            "exec" => (&["command", "timeout"], EXEC_EXAMPLE),
            _ => (&["url", "json_path"], HTTP_EXAMPLE),
        };
        let Kind::Map(map) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!("`{}` of {subject} must be a mapping, found {}", entry.key, entry.value.describe()),
                Some(example.to_owned()),
            );
            return None;
        };
        let context = format!("in `{}` of {subject}", entry.key);
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, keys, &context);
        let required =
            |checker: &mut Self, key: &str, read: fn(&mut Self, &Entry<'_>, &str) -> Option<String>| match find(
                &entries, key,
            ) {
                Some(e) => read(checker, e, &format!("`{key}` of {subject}")),
                None => {
                    checker.error(
                        entry.key_pos,
                        format!("`{}` of {subject} has no `{key}`", entry.key),
                        Some(example.to_owned()),
                    );
                    None
                }
            };
        if entry.key == "exec" {
            let command = required(self, "command", Self::exec_command);
            let timeout = match find(&entries, "timeout") {
                Some(e) => self.bounded_duration(e, "timeout", &format!("`exec` of {subject}"), MAX_EXEC_TIMEOUT),
                None => Some(DEFAULT_EXEC_TIMEOUT),
            };
            return Some(Provider::Exec { command: command?, timeout: timeout? });
        }
        if entry.key == "prometheus" {
            let address = required(self, "address", Self::endpoint);
            let query = required(self, "query", Self::query);
            return Some(Provider::Prometheus { address: address?, query: query? });
        }
        let url = required(self, "url", Self::endpoint);
        let json_path = match find(&entries, "json_path") {
            Some(e) => self.json_path(e, &format!("`json_path` of {subject}")).map(Some),
            None => Some(None),
        };
        Some(Provider::Http { url: url?, json_path: json_path? })
    }

    /// An `exec` provider's `command`; `subject` names it.
    fn exec_command(&mut self, entry: &Entry<'_>, subject: &str) -> Option<String> {
        let node = entry.value;
        let problem = match node.scalar_text() {
            None => format!("{subject} must be a command, found {}", node.describe()),
            Some(command) if command.trim().is_empty() => format!("{subject} is empty"),
            Some(command) if command.contains("${{") => {
                self.unfilled(node, command, subject, "write the command itself; it runs as it is written");
                return None;
            }
            Some(command) if command.len() > MAX_COMMAND_BYTES => {
                format!("{subject} has {} bytes, over the limit of {MAX_COMMAND_BYTES}", command.len())
            }
            Some(command) => return Some(command.to_owned()),
        };
        self.error(
            entry.value_pos(),
            problem,
            Some("a bash command run from the release's root on a node, e.g. `./check-canary --max-errors 1`".into()),
        );
        None
    }

    /// A Prometheus `address` or an `http` `url`; `subject` names it.
    fn endpoint(&mut self, entry: &Entry<'_>, subject: &str) -> Option<String> {
        self.called_url(entry, subject, "an analysis", (URL_HINT, MEASURED_AS_WRITTEN), MAX_URL_LEN)
    }

    /// A Prometheus `query`; `subject` names it.
    fn query(&mut self, entry: &Entry<'_>, subject: &str) -> Option<String> {
        let node = entry.value;
        let hint = || Some("a PromQL query whose answer is one number, e.g. `sum(rate(errors_total[1m]))`".to_owned());
        let problem = match node.scalar_text() {
            None => format!("{subject} must be a PromQL query, found {}", node.describe()),
            Some(query) if query.trim().is_empty() => format!("{subject} is empty"),
            Some(query) if query.contains("${{") => {
                self.unfilled(node, query, subject, MEASURED_AS_WRITTEN);
                return None;
            }
            Some(query) if query.len() > MAX_QUERY_BYTES => {
                format!("{subject} has {} bytes, over the limit of {MAX_QUERY_BYTES}", query.len())
            }
            Some(query) => return Some(query.to_owned()),
        };
        self.error(entry.value_pos(), problem, hint());
        None
    }

    /// An `http` provider's `json_path`; `subject` names it.
    fn json_path(&mut self, entry: &Entry<'_>, subject: &str) -> Option<String> {
        let node = entry.value;
        let Some(path) = node.scalar_text() else {
            self.error(
                entry.value_pos(),
                format!("{subject} must be a JSONPath, found {}", node.describe()),
                Some(JSON_PATH_HINT.to_owned()),
            );
            return None;
        };
        if path.contains("${{") {
            self.unfilled(node, path, subject, MEASURED_AS_WRITTEN);
            return None;
        }
        let problem = if path.chars().count() > MAX_JSON_PATH_LEN {
            Some((0, format!("{subject} is over the limit of {MAX_JSON_PATH_LEN} characters")))
        } else {
            json_path_problem(path)
                .map(|(at, what)| (at, format!("{subject}, `{}`, is not a simple JSONPath: {what}", abbreviate(path))))
        };
        if let Some((at, message)) = problem {
            self.error(node.pos_at(at), message, Some(JSON_PATH_HINT.to_owned()));
            return None;
        }
        Some(path.to_owned())
    }

    /// Reports the first `${{` in `text`, the string `node` of an analysis,
    /// which nothing fills in; `subject` names it, `hint` says what to
    /// write instead.
    pub(super) fn unfilled(&mut self, node: &Node, text: &str, subject: &str, hint: &str) {
        let offset = text.find("${{").map_or(0, |at| text[..at].chars().count());
        self.error(
            node.pos_at(offset),
            format!("{subject} has `${{{{ }}}}`, but an analysis is used as it is written, with nothing filled in"),
            Some(hint.to_owned()),
        );
    }
}

/// Where `path` leaves the grammar of a simple JSONPath (see
/// [`Provider::Http`]), and how: the offset of the character, in
/// characters.
fn json_path_problem(path: &str) -> Option<(usize, String)> {
    let chars: Vec<char> = path.chars().collect();
    if let Some(at) = chars.iter().position(|c| c.is_control()) {
        return Some((at, "it has a control character".to_owned()));
    }
    if chars.first() != Some(&'$') {
        return Some((0, "it must start with `$`, the whole answer".to_owned()));
    }
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    let mut at = 1;
    while at < chars.len() {
        let start = at + 1;
        match chars[at] {
            '.' => {
                let length = chars[start..].iter().take_while(|&&c| is_name(c)).count();
                if length == 0 {
                    return Some((start, "expected a name after `.` (letters, digits, `_` or `-`)".to_owned()));
                }
                at = start + length;
            }
            '[' if chars.get(start) == Some(&'\'') => {
                let length = chars[start + 1..].iter().take_while(|&&c| c != '\'').count();
                let close = start + 1 + length;
                if close == chars.len() {
                    return Some((start, "this key's quote is never closed".to_owned()));
                }
                if length == 0 {
                    return Some((start, "a key in quotes is not empty".to_owned()));
                }
                if chars.get(close + 1) != Some(&']') {
                    return Some((close + 1, "expected `]` after the key".to_owned()));
                }
                at = close + 2;
            }
            '[' if chars.get(start).is_some_and(char::is_ascii_digit) => {
                let length = chars[start..].iter().take_while(|c| c.is_ascii_digit()).count();
                let digits: String = chars[start..start + length].iter().collect();
                if digits.parse::<u32>().is_err() {
                    return Some((start, format!("the index is over {}", u32::MAX)));
                }
                if chars.get(start + length) != Some(&']') {
                    return Some((start + length, "expected `]` after the index".to_owned()));
                }
                at = start + length + 1;
            }
            '[' => {
                return Some((
                    start,
                    "expected an index, as in `[0]`, or a key in quotes, as in `['a key']`".to_owned(),
                ));
            }
            c => {
                let shown = if c.is_whitespace() { "a space".to_owned() } else { format!("`{c}`") };
                return Some((at, format!("expected `.` or `[`, found {shown}")));
            }
        }
    }
    None
}
