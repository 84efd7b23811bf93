//! A deploy's `waves:`, nodes in groups rolled out one after the other
//! ([`crate::deploy::Wave`]):
//!
//! ```yaml
//! waves:                              # 2 to MAX_WAVES, names unique
//!   - {name: canary, selector: {group: canary}}
//!   - {name: region-a, selector: {region: a}}
//!   - {name: rest}                    # only the last may leave out its selector...
//!   - {name: eu, environment: production-eu}   # ...or one that names an environment
//! ```

use std::collections::BTreeMap;

use super::super::{Checker, Entry, find};
use super::Listed;
use crate::deploy::Wave;
use crate::yaml::{Kind, Pos, abbreviate};
use crate::{MAX_ENVIRONMENT_NAME_LEN, MAX_WAVES};

const EXAMPLE: &str = "e.g. `waves: [{name: canary, selector: {group: canary}}, {name: rest}]`";
const SELECTOR_EXAMPLE: &str = "e.g. `selector: {region: eu}`: the agent labels each node of the wave has";

impl Checker<'_> {
    /// Reads the `waves` of the deploy of `owner` ("job `d`"); a wave may
    /// name an environment only if `environments` (not in an app's file).
    pub(super) fn waves(&mut self, entry: &Entry<'_>, owner: &str, environments: bool) -> Option<Vec<Wave>> {
        let items = match &entry.value.kind {
            Kind::Seq(items) if items.len() >= 2 => items,
            Kind::Seq(_) => {
                self.error(
                    entry.value_pos(),
                    format!("`waves` of {owner} must list at least two waves"),
                    Some(format!("one wave is every node: leave `waves` out, or {EXAMPLE}")),
                );
                return None;
            }
            _ => {
                self.error(
                    entry.value_pos(),
                    format!("`waves` of {owner} must be a list of waves, found {}", entry.value.describe()),
                    Some(EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        if items.len() > MAX_WAVES {
            self.error(
                items[MAX_WAVES].pos,
                format!("{owner} has {} waves, over the limit of {MAX_WAVES}", items.len()),
                Some("give the nodes of several waves one label and select them together".to_owned()),
            );
            return None;
        }
        let mut names: Vec<(String, Pos)> = Vec::new();
        let mut waves = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let number = i + 1;
            let last = number == items.len();
            let listed = Listed { noun: "wave", within: owner, example: "region-a" };
            let keys = &["name", "selector", "environment"];
            let Some((subject, entries)) = self.list_item(item, number, &listed, keys, EXAMPLE) else {
                ok = false;
                continue;
            };
            let name = self.item_name(find(&entries, "name"), item.pos, &subject, &listed, &mut names);
            let environment = match find(&entries, "environment") {
                None => None,
                Some(e) if !environments => {
                    self.error(
                        e.key_pos,
                        format!("{subject} names an environment, but an app deploys to its own environment only"),
                        Some(
                            "group the app's nodes by `selector`, or deploy to several environments from a pipeline"
                                .into(),
                        ),
                    );
                    ok = false;
                    None
                }
                Some(e) => match e.value.scalar_text() {
                    Some(env) if super::is_name(env, MAX_ENVIRONMENT_NAME_LEN) => Some(env.to_owned()),
                    found => {
                        let found = found.map_or_else(|| e.value.describe(), |env| format!("`{}`", abbreviate(env)));
                        self.error(
                            e.value_pos(),
                            format!("`environment` of {subject} must be an environment's name, found {found}"),
                            Some(format!(
                                "an environment's name is 1 to {MAX_ENVIRONMENT_NAME_LEN} letters, digits, `_`, `.` \
                                 or `-`, e.g. `production-eu` (`drover envs` lists them)"
                            )),
                        );
                        ok = false;
                        None
                    }
                },
            };
            // A wave that names an environment may take all of its nodes.
            let whole = last || find(&entries, "environment").is_some();
            let selector = match find(&entries, "selector") {
                Some(e) => {
                    let labels = self.labels(e.value, &format!("the selector of {subject}"), SELECTOR_EXAMPLE);
                    if labels.is_empty() && !whole {
                        self.error(
                            e.value_pos(),
                            format!("the selector of {subject} is empty"),
                            Some(format!(
                                "only the last wave, or one that names an environment, takes every node left; \
                                 {SELECTOR_EXAMPLE}"
                            )),
                        );
                        ok = false;
                    }
                    labels
                }
                None if whole => BTreeMap::new(),
                None => {
                    self.error(
                        item.pos,
                        format!(
                            "{subject} has no `selector`, but only the last wave, or one that names an \
                             environment, takes every node left"
                        ),
                        Some(SELECTOR_EXAMPLE.to_owned()),
                    );
                    ok = false;
                    BTreeMap::new()
                }
            };
            match name {
                Some(name) => waves.push(Wave { name, selector, environment }),
                None => ok = false,
            }
        }
        ok.then_some(waves)
    }
}
