//! A deploy's `gates:`, points of a rollout it may not pass until a person
//! or a webhook opens them ([`crate::deploy::Gate`]):
//!
//! ```yaml
//! gates:                             # at most MAX_GATES, names unique
//!   - name: qa-sign-off              # a job's name grammar
//!     at: before_rollout             # before_rollout | before_step | before_wave | before_promotion
//!     approval: {approvers: [alice, ops-team]}
//!   - name: change-ticket
//!     at: before_promotion
//!     confirm: {url: "https://change.example.com/drover", timeout: 10m, interval: 15s}
//! ```
//!
//! A gate is exactly one of `approval` and `confirm`. Its strings are used
//! as written: `${{ }}` is refused in them.

use std::time::Duration;

use super::super::suggest::closest;
use super::super::{Checker, Entry, find};
use super::Listed;
use crate::deploy::{Gate, GateAt, GateKind};
use crate::yaml::{Kind, Node, Pos};
use crate::{MAX_GATE_TIMEOUT, MAX_GATES};

const GATE_KEYS: &[&str] = &["name", "at", "approval", "confirm"];
const POINTS: &[&str] = &["before_rollout", "before_step", "before_wave", "before_promotion"];
const KINDS: &[&str] = &["approval", "confirm"];
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const MAX_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// The longest `confirm` `url`, in characters.
const MAX_URL_LEN: usize = 2048;

const EXAMPLE: &str = "e.g. `gates: [{name: qa, at: before_promotion, approval: {approvers: [alice]}}]`";
const AT_HINT: &str = "`before_rollout` (before any node is touched), `before_step` (before each step after the \
     first, within a wave), `before_wave` (before each wave after the first) or `before_promotion` (once every node \
     is healthy, before the rollout counts as done)";
const KIND_HINT: &str = "give one of `approval: {approvers: [alice, ops-team]}` (`drover rollout approve ID` opens \
     it) and `confirm: {url: \"https://...\", timeout: 5m}` (a webhook that must answer 2xx)";
const URL_HINT: &str = "an `http://` or `https://` URL the coordinator reaches, e.g. \"https://change.example.com/ok\"";

impl Checker<'_> {
    /// Reads the `gates` of the deploy of `owner` ("job `d`").
    pub(super) fn gates(&mut self, entry: &Entry<'_>, owner: &str) -> Option<Vec<Gate>> {
        let items = match &entry.value.kind {
            Kind::Seq(items) if !items.is_empty() => items,
            _ => {
                self.error(
                    entry.value_pos(),
                    format!("`gates` of {owner} must be a list of gates, found {}", entry.value.describe()),
                    Some(EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        if items.len() > MAX_GATES {
            self.error(
                items[MAX_GATES].pos,
                format!("{owner} has {} gates, over the limit of {MAX_GATES}", items.len()),
                Some("one gate can have many approvers; put them in one".to_owned()),
            );
            return None;
        }
        let mut names: Vec<(String, Pos)> = Vec::new();
        let mut gates = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.gate(item, i + 1, owner, &mut names) {
                Some(gate) => gates.push(gate),
                None => ok = false,
            }
        }
        ok.then_some(gates)
    }

    fn gate(&mut self, item: &Node, number: usize, owner: &str, names: &mut Vec<(String, Pos)>) -> Option<Gate> {
        let listed = Listed { noun: "gate", within: owner, example: "qa-sign-off" };
        let (subject, entries) = self.list_item(item, number, &listed, GATE_KEYS, EXAMPLE)?;
        let name = self.item_name(find(&entries, "name"), item.pos, &subject, &listed, names);
        let at = match find(&entries, "at") {
            Some(e) => self.gate_at(e, &subject),
            None => {
                self.error(item.pos, format!("{subject} has no `at`"), Some(format!("say where it stands: {AT_HINT}")));
                None
            }
        };
        let kinds: Vec<&Entry<'_>> = entries.iter().filter(|e| KINDS.contains(&e.key)).collect();
        let kind = match kinds.as_slice() {
            [] => {
                self.error(item.pos, format!("{subject} says neither who nor what opens it"), Some(KIND_HINT.into()));
                None
            }
            [one] if one.key == "approval" => self.gate_approval(one, &subject),
            [one] => self.gate_confirm(one, &subject),
            [first, second, ..] => {
                self.error(
                    second.key_pos,
                    format!("{subject} has both `{}` and `{}`", first.key, second.key),
                    Some(format!("a gate is opened one way; write two gates for both: {KIND_HINT}")),
                );
                None
            }
        };
        Some(Gate { name: name?, at: at?, kind: kind? })
    }

    fn gate_at(&mut self, entry: &Entry<'_>, subject: &str) -> Option<GateAt> {
        match entry.value.scalar_text() {
            Some("before_rollout") => Some(GateAt::BeforeRollout),
            Some("before_step") => Some(GateAt::BeforeStep),
            Some("before_wave") => Some(GateAt::BeforeWave),
            Some("before_promotion") => Some(GateAt::BeforePromotion),
            found => {
                let close = found.and_then(|text| closest(text, POINTS, &mut self.suggestion_budget));
                let hint = match close {
                    Some(close) => format!("did you mean `{close}`? {AT_HINT}"),
                    None => AT_HINT.to_owned(),
                };
                self.error(
                    entry.value_pos(),
                    format!("`at` of {subject} must be a point of the rollout, found {}", entry.value.describe()),
                    Some(hint),
                );
                None
            }
        }
    }

    fn gate_approval(&mut self, entry: &Entry<'_>, subject: &str) -> Option<GateKind> {
        let example = "e.g. `approval: {approvers: [alice, ops-team]}`";
        let Kind::Map(map) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!("`approval` of {subject} must be a mapping, found {}", entry.value.describe()),
                Some(example.to_owned()),
            );
            return None;
        };
        let context = format!("in the approval of {subject}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, &["approvers"], &context);
        let items = match find(&entries, "approvers").map(|e| (e, &e.value.kind)) {
            Some((_, Kind::Seq(items))) if !items.is_empty() => items,
            found => {
                let pos = found.map_or(entry.value.pos, |(e, _)| e.value_pos());
                self.error(
                    pos,
                    format!("the approval of {subject} names no approvers, so nobody could ever open it"),
                    Some(format!("name who may, by their certificates' names: {example}")),
                );
                return None;
            }
        };
        let approvers = self.approver_names(items, subject)?;
        Some(GateKind::Approval { approvers })
    }

    fn gate_confirm(&mut self, entry: &Entry<'_>, subject: &str) -> Option<GateKind> {
        let example = "e.g. `confirm: {url: \"https://change.example.com/ok\", timeout: 10m}`";
        let Kind::Map(map) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!("`confirm` of {subject} must be a mapping, found {}", entry.value.describe()),
                Some(example.to_owned()),
            );
            return None;
        };
        let context = format!("in the confirm of {subject}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, &["url", "timeout", "interval"], &context);
        let url = match find(&entries, "url") {
            Some(e) => self.gate_url(e, &format!("the `url` of {subject}")),
            None => {
                self.error(entry.key_pos, format!("the confirm of {subject} has no `url`"), Some(example.to_owned()));
                None
            }
        };
        let timeout = match find(&entries, "timeout") {
            Some(e) => self.bounded_duration(e, "timeout", subject, MAX_GATE_TIMEOUT),
            None => Some(DEFAULT_TIMEOUT),
        };
        let interval = match find(&entries, "interval") {
            Some(e) => self.bounded_duration(e, "interval", subject, MAX_INTERVAL),
            None => Some(DEFAULT_INTERVAL),
        };
        Some(GateKind::Confirm { url: url?, timeout: timeout?, interval: interval? })
    }

    fn gate_url(&mut self, entry: &Entry<'_>, subject: &str) -> Option<String> {
        self.called_url(entry, subject, "a gate", (URL_HINT, URL_HINT), MAX_URL_LEN)
    }
}
