//! A deploy's `strategy:`: exactly one of
//!
//! ```yaml
//! strategy: {rolling: {max_parallel: 1, max_unavailable: 0}}   # both optional: 1 and 0
//! strategy: {canary: {steps: [{nodes: 10%}, {pause: 30s}, {nodes: 50%}, {pause: manual}, {nodes: 100%}]}}
//! strategy: {blue_green: {}}
//! ```
//!
//! A canary starts with a share of the nodes (`N%`, 1 to 100, or a count of
//! at least one); a pause, timed or `manual`, waits after a step. These are
//! the rules `drover_deploy`'s plan holds a canary to, told here with the
//! step's place in the file.

use super::super::{Checker, Entry, find};
use crate::deploy::{Canary, CanaryStep, Pause, Rolling, Share, Strategy};
use crate::yaml::{Kind, Node, Scalar, ScalarType, abbreviate};
use crate::{MAX_CANARY_STEPS, MAX_ROLLING_PARALLEL};

const STRATEGIES: &[&str] = &["rolling", "canary", "blue_green"];
const STRATEGY_HINT: &str = "give one of `{rolling: {max_parallel: 1}}`, `{canary: {steps: [{nodes: 10%}, \
     {pause: manual}, {nodes: 100%}]}}` and `{blue_green: {}}`";
const CANARY_EXAMPLE: &str = "e.g. `canary: {steps: [{nodes: 10%}, {pause: 30s}, {nodes: 50%}, {pause: manual}]}`";
const STEP_HINT: &str = "a step is `{nodes: 10%}` (a share of the nodes, or a count such as `{nodes: 2}`), or a pause \
     after one: `{pause: 30s}` or `{pause: manual}` (until `drover rollout promote`)";

impl Checker<'_> {
    /// Reads the `strategy` of the deploy of `owner` ("job `d`").
    pub(super) fn strategy(&mut self, entry: &Entry<'_>, owner: &str) -> Option<Strategy> {
        let Kind::Map(map) = &entry.value.kind else {
            let hint = match entry.value.scalar_text().filter(|text| STRATEGIES.contains(text)) {
                Some(name) => format!("write `strategy: {{{name}: {{}}}}`"),
                None => STRATEGY_HINT.to_owned(),
            };
            self.error(
                entry.value_pos(),
                format!("`strategy` in the deploy of {owner} must be a mapping, found {}", entry.value.describe()),
                Some(hint),
            );
            return None;
        };
        let context = format!("in the strategy of {owner}");
        let entries = self.entries(map, "strategy", &context);
        self.unknown_keys(&entries, STRATEGIES, &context);
        let known: Vec<&Entry<'_>> = entries.iter().filter(|e| STRATEGIES.contains(&e.key)).collect();
        match known.as_slice() {
            [] if entries.is_empty() => {
                self.error(
                    entry.value_pos(),
                    format!("the strategy of {owner} names no strategy"),
                    Some(STRATEGY_HINT.to_owned()),
                );
                None
            }
            // An unknown one was reported as such.
            [] => None,
            [one] => match one.key {
                "rolling" => self.rolling(one, owner).map(Strategy::Rolling),
                "canary" => self.canary(one, owner).map(Strategy::Canary),
                _ => self.blue_green(one, owner).then_some(Strategy::BlueGreen),
            },
            [first, second, ..] => {
                self.error(
                    second.key_pos,
                    format!("the strategy of {owner} names both `{}` and `{}`", first.key, second.key),
                    Some(format!("a deploy has one strategy: {STRATEGY_HINT}")),
                );
                None
            }
        }
    }

    fn rolling(&mut self, entry: &Entry<'_>, owner: &str) -> Option<Rolling> {
        let map: &[(Node, Node)] = match &entry.value.kind {
            Kind::Null => &[],
            Kind::Map(map) => map,
            _ => {
                self.error(
                    entry.value_pos(),
                    format!("`rolling` in the deploy of {owner} must be a mapping, found {}", entry.value.describe()),
                    Some("e.g. `rolling: {max_parallel: 2, max_unavailable: 1}`".to_owned()),
                );
                return None;
            }
        };
        let context = format!("in the rolling strategy of {owner}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, &["max_parallel", "max_unavailable"], &context);
        let max_parallel = match find(&entries, "max_parallel") {
            Some(e) => self.whole(
                e,
                &format!("`max_parallel` of the rolling strategy of {owner}"),
                1,
                MAX_ROLLING_PARALLEL,
                "how many nodes are updated at once, e.g. `max_parallel: 2`",
            )?,
            None => 1,
        };
        let max_unavailable = match find(&entries, "max_unavailable") {
            Some(e) => self.whole(
                e,
                &format!("`max_unavailable` of the rolling strategy of {owner}"),
                0,
                max_parallel,
                "how many of the nodes updated at once may be out of service, at most `max_parallel`",
            )?,
            None => 0,
        };
        Some(Rolling { max_parallel, max_unavailable })
    }

    fn blue_green(&mut self, entry: &Entry<'_>, owner: &str) -> bool {
        match &entry.value.kind {
            Kind::Null => true,
            Kind::Map(map) if map.is_empty() => true,
            _ => {
                self.error(
                    entry.value_pos(),
                    format!(
                        "`blue_green` in the deploy of {owner} takes no settings, found {}",
                        entry.value.describe()
                    ),
                    Some(
                        "write `blue_green: {}`: every node starts the new release beside the old, and traffic \
                          switches on all of them once all are healthy"
                            .to_owned(),
                    ),
                );
                false
            }
        }
    }

    fn canary(&mut self, entry: &Entry<'_>, owner: &str) -> Option<Canary> {
        let Kind::Map(map) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!(
                    "`canary` in the deploy of {owner} must be a mapping with `steps`, found {}",
                    entry.value.describe()
                ),
                Some(CANARY_EXAMPLE.to_owned()),
            );
            return None;
        };
        let context = format!("in the canary of {owner}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, &["steps"], &context);
        let Some(steps) = find(&entries, "steps") else {
            self.error(entry.key_pos, format!("the canary of {owner} has no `steps`"), Some(CANARY_EXAMPLE.to_owned()));
            return None;
        };
        let items = match &steps.value.kind {
            Kind::Seq(items) if !items.is_empty() => items,
            _ => {
                self.error(
                    steps.value_pos(),
                    format!("the canary steps of {owner} must be a non-empty list, found {}", steps.value.describe()),
                    Some(CANARY_EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        if items.len() > MAX_CANARY_STEPS {
            self.error(
                items[MAX_CANARY_STEPS].pos,
                format!("the canary of {owner} has {} steps, over the limit of {MAX_CANARY_STEPS}", items.len()),
                Some("fewer, larger steps: a canary's point is its first few".to_owned()),
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.canary_step(item, i + 1, owner) {
                Some(step @ CanaryStep::Pause(_)) if i == 0 => {
                    self.error(
                        item.pos,
                        format!("the canary of {owner} starts with a pause"),
                        Some(
                            "start with a share of the nodes, e.g. `{nodes: 10%}`: a pause waits after a step"
                                .to_owned(),
                        ),
                    );
                    out.push(step);
                    ok = false;
                }
                Some(step) => out.push(step),
                None => ok = false,
            }
        }
        ok.then_some(Canary { steps: out })
    }

    fn canary_step(&mut self, item: &Node, number: usize, owner: &str) -> Option<CanaryStep> {
        let Kind::Map(map) = &item.kind else {
            self.error(
                item.pos,
                format!("canary step {number} of {owner} must be a mapping, found {}", item.describe()),
                Some(STEP_HINT.to_owned()),
            );
            return None;
        };
        let context = format!("in canary step {number} of {owner}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, &["nodes", "pause"], &context);
        let known: Vec<&Entry<'_>> = entries.iter().filter(|e| matches!(e.key, "nodes" | "pause")).collect();
        let entry = match known.as_slice() {
            [one] => *one,
            [] if entries.is_empty() => {
                self.error(item.pos, format!("canary step {number} of {owner} is empty"), Some(STEP_HINT.to_owned()));
                return None;
            }
            [] => return None,
            [_, second, ..] => {
                self.error(
                    second.key_pos,
                    format!("canary step {number} of {owner} has both `nodes` and `pause`"),
                    Some(format!("write them as two steps; {STEP_HINT}")),
                );
                return None;
            }
        };
        if entry.key == "pause" {
            if entry.value.scalar_text() == Some("manual") {
                return Some(CanaryStep::Pause(Pause::Manual));
            }
            if matches!(entry.value.kind, Kind::Null) {
                self.error(entry.key_pos, format!("the pause {context} has no value"), Some(STEP_HINT.to_owned()));
                return None;
            }
            return self.duration(entry.value, "pause", owner).map(|d| CanaryStep::Pause(Pause::For(d)));
        }
        self.share(entry, &context).map(CanaryStep::Nodes)
    }

    fn share(&mut self, entry: &Entry<'_>, context: &str) -> Option<Share> {
        let value = entry.value;
        let hint = || Some("a share of the nodes from `1%` to `100%`, or a number of nodes of at least 1".to_owned());
        match &value.kind {
            Kind::Scalar(Scalar { ty: ScalarType::Int(n), .. }) => {
                let n = *n;
                match u32::try_from(n) {
                    Ok(n) if n >= 1 => Some(Share::Count(n)),
                    _ => {
                        self.error(value.pos, format!("`nodes: {n}` {context} must be at least 1"), hint());
                        None
                    }
                }
            }
            Kind::Scalar(s) if s.ty == ScalarType::Str && s.text.ends_with('%') => {
                let digits = &s.text[..s.text.len() - 1];
                match digits.parse::<u32>() {
                    Ok(p) if (1..=100).contains(&p) && digits.bytes().all(|b| b.is_ascii_digit()) => {
                        Some(Share::Percent(p))
                    }
                    _ => {
                        self.error(
                            value.pos,
                            format!("`nodes: {}` {context} must be from 1% to 100%", abbreviate(&s.text)),
                            hint(),
                        );
                        None
                    }
                }
            }
            _ => {
                self.error(
                    entry.value_pos(),
                    format!(
                        "`nodes` {context} must be a share such as `10%` or a number of nodes, found {}",
                        value.describe()
                    ),
                    hint(),
                );
                None
            }
        }
    }
}
