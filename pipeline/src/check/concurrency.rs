//! `concurrency:`, on the pipeline or on a job: one active run (or job) per
//! group at a time; later ones wait in order, or, with
//! `cancel-in-progress: true`, a newer one cancels the older run.
//!
//! ```yaml
//! concurrency: {group: "deploy-${{ drover.branch }}", cancel-in-progress: false}
//! ```
//!
//! The group may hold `${{ }}` (checked here as `env` values are; filled
//! in when the run is submitted); it is at most [`MAX_GROUP_LEN`]
//! characters.

use super::{Checker, find};
use crate::expr::Scope;
use crate::yaml::{Kind, Node};
use crate::{ConcurrencySpec, MAX_GROUP_LEN};

const EXAMPLE: &str = "e.g. `concurrency: {group: deploy-prod, cancel-in-progress: false}`";

impl Checker<'_> {
    /// Reads a `concurrency` mapping; `whose` names its owner in messages
    /// ("the pipeline", "job `a`").
    pub(super) fn concurrency(&mut self, node: &Node, scope: &Scope<'_>, whose: &str) -> Option<ConcurrencySpec> {
        let (group_node, cancel) = match &node.kind {
            // The short form: `concurrency: deploy-prod`.
            Kind::Scalar(_) => (node, None),
            Kind::Map(map) => {
                let context = format!("in the concurrency of {whose}");
                let entries = self.entries(map, "key", &context);
                self.unknown_keys(&entries, &["group", "cancel-in-progress"], &context);
                let Some(group) = find(&entries, "group") else {
                    self.error(
                        node.pos,
                        format!("the concurrency of {whose} has no `group`"),
                        Some(EXAMPLE.to_owned()),
                    );
                    return None;
                };
                (group.value, find(&entries, "cancel-in-progress").map(|e| e.value))
            }
            _ => {
                self.error(
                    node.pos,
                    format!("`concurrency` of {whose} must be a group name or a mapping, found {}", node.describe()),
                    Some(EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        let Some(group) = group_node.scalar_text().filter(|g| !g.trim().is_empty()) else {
            self.error(
                group_node.pos,
                format!("the concurrency group of {whose} must be non-empty text, found {}", group_node.describe()),
                Some(EXAMPLE.to_owned()),
            );
            return None;
        };
        if group.chars().count() > MAX_GROUP_LEN || group.chars().any(char::is_control) {
            self.error(
                group_node.pos,
                format!("the concurrency group of {whose} must be one line of at most {MAX_GROUP_LEN} characters"),
                None,
            );
            return None;
        }
        self.interpolated(group_node, scope, &format!("the concurrency group of {whose}"));
        let cancel_in_progress = match cancel.map(|c| (c, c.scalar_text())) {
            None | Some((_, Some("false"))) => false,
            Some((_, Some("true"))) => true,
            Some((c, _)) => {
                self.error(c.pos, format!("`cancel-in-progress` of {whose} must be true or false"), None);
                return None;
            }
        };
        Some(ConcurrencySpec { group: group.to_owned(), cancel_in_progress })
    }
}
