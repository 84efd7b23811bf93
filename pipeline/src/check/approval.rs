//! A job's `approval`: a person must approve it (`drover approve RUN JOB`)
//! before it runs, once its needs have finished; or reject it (`drover
//! reject RUN JOB --reason ...`), which fails it.
//!
//! ```yaml
//! deploy:
//!   approval: {required: true, approvers: [alice, ops-team]}
//! ```
//!
//! `approvers` names who may decide (the names of their certificates);
//! `timeout: 24h` fails the job when nobody decides in time;
//! `required: false` turns the gate off without deleting it. A required
//! approval with no approver is refused: nobody could ever let it run.

use super::{Checker, find};
use crate::yaml::{Kind, Node, abbreviate};
use crate::{ApprovalSpec, MAX_APPROVERS};

const EXAMPLE: &str = "e.g. `approval: {required: true, approvers: [alice, ops-team]}`";

impl Checker<'_> {
    /// Reads the `approval` of job `job`; `None` when there is none, or it
    /// is not required.
    pub(super) fn approval(&mut self, node: &Node, job: &str) -> Option<ApprovalSpec> {
        let Kind::Map(map) = &node.kind else {
            self.error(
                node.pos,
                format!("`approval` in job `{job}` must be a mapping, found {}", node.describe()),
                Some(EXAMPLE.to_owned()),
            );
            return None;
        };
        let context = format!("in the approval of job `{job}`");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, &["required", "approvers", "timeout"], &context);
        let timeout = match find(&entries, "timeout") {
            Some(e) => Some(self.duration(e.value, "timeout of the approval", &format!("job `{job}`"))?),
            None => None,
        };
        let required = match find(&entries, "required").map(|e| (e, e.value.scalar_text())) {
            None | Some((_, Some("true"))) => true,
            Some((_, Some("false"))) => false,
            Some((e, _)) => {
                self.error(
                    e.value_pos(),
                    format!("`required` in the approval of job `{job}` must be true or false"),
                    Some(EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        let Some(entry) = find(&entries, "approvers") else {
            if required {
                self.error(
                    node.pos,
                    format!("the approval of job `{job}` names no approvers, so nobody could ever let it run"),
                    Some(EXAMPLE.to_owned()),
                );
            }
            return None;
        };
        let items: &[Node] = match &entry.value.kind {
            Kind::Seq(items) => items,
            _ => {
                self.error(
                    entry.value_pos(),
                    format!("`approvers` of job `{job}` must be a list of names, found {}", entry.value.describe()),
                    Some(EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        if items.is_empty() && required {
            self.error(
                entry.value_pos(),
                format!("the approval of job `{job}` names no approvers, so nobody could ever let it run"),
                Some(EXAMPLE.to_owned()),
            );
            return None;
        }
        let approvers = self.approver_names(items, &format!("job `{job}`"))?;
        required.then_some(ApprovalSpec { approvers, timeout })
    }
}

impl Checker<'_> {
    /// The approvers `items` of `owner` ("job `d`"), each a certificate's
    /// name, at most [`MAX_APPROVERS`], repeats dropped; `None` when one is
    /// wrong, which is reported.
    pub(super) fn approver_names(&mut self, items: &[Node], owner: &str) -> Option<Vec<String>> {
        if items.len() > MAX_APPROVERS {
            self.error(
                items[MAX_APPROVERS].pos,
                format!("{owner} lists {} approvers, over the limit of {MAX_APPROVERS}", items.len()),
                Some("name a team instead of its members".to_owned()),
            );
            return None;
        }
        let mut approvers: Vec<String> = Vec::new();
        let mut ok = true;
        for item in items {
            let name = item.scalar_text().filter(|_| matches!(item.kind, Kind::Scalar(_)));
            match name {
                Some(name) if valid_name(name) => {
                    if !approvers.iter().any(|a| a == name) {
                        approvers.push(name.to_owned());
                    }
                }
                _ => {
                    ok = false;
                    self.error(
                        item.pos,
                        format!("invalid approver `{}` in {owner}", abbreviate(item.scalar_text().unwrap_or("?"))),
                        Some(
                            "an approver is a certificate's name: 1 to 64 letters, digits, `.`, `_` or `-`".to_owned(),
                        ),
                    )
                }
            }
        }
        ok.then_some(approvers)
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
