//! What a deploy's named lists (an analysis' metrics, gates, waves) share:
//! each item a mapping, told of by its name once it has a good one, its
//! name in a job's grammar and not given twice; and, for the tests, the
//! check that a bad deploy is refused once, where it should be.

use super::super::jobs::is_valid_job_name;
use super::super::{Checker, Entry};
use crate::MAX_NAME_LEN;
use crate::yaml::{Kind, Node, Pos, abbreviate};

/// Why `text` (a pipeline file) is not refused with exactly one
/// diagnostic at `line`:`column` whose message has `message`, with a hint:
/// the tables of bad deploys check each case with it.
#[cfg(test)]
pub(in crate::check::deploy) fn refused_once(
    text: &str,
    line: usize,
    column: usize,
    message: &str,
) -> Result<(), String> {
    let err = match crate::parse("ci.yml", text) {
        Ok(_) => return Err("parsed".to_owned()),
        Err(err) => err,
    };
    match err.diagnostics.as_slice() {
        [d] if (d.line, d.column) == (line, column) && d.message.contains(message) && d.hint.is_some() => Ok(()),
        _ => Err(format!("expected {line}:{column} `{message}` with a hint, got:\n{err}")),
    }
}

/// How the items of a named list (an analysis' metrics, gates, waves) are
/// told of in messages: `noun` ("gate"), `within` where the list is ("job
/// `d`", "the analysis of job `d`"), `example` a good name.
pub(in crate::check::deploy) struct Listed<'a> {
    pub(in crate::check::deploy) noun: &'a str,
    pub(in crate::check::deploy) within: &'a str,
    pub(in crate::check::deploy) example: &'a str,
}

impl Checker<'_> {
    /// Opens item `number` (from 1) of a named list: a mapping whose keys
    /// must be among `keys`, told of as `{noun} `{name}` of {within}` once
    /// it has a good name (`{noun} {number} of {within}` before); the
    /// subject and the entries, or `None` when it is no mapping (told,
    /// with `example`).
    pub(in crate::check::deploy) fn list_item<'n>(
        &mut self,
        item: &'n Node,
        number: usize,
        listed: &Listed<'_>,
        keys: &[&str],
        example: &str,
    ) -> Option<(String, Vec<Entry<'n>>)> {
        let Listed { noun, within, .. } = listed;
        let Kind::Map(map) = &item.kind else {
            self.error(
                item.pos,
                format!("{noun} {number} of {within} must be a mapping, found {}", item.describe()),
                Some(example.to_owned()),
            );
            return None;
        };
        // Messages name the item by its name when it has a good one.
        let written = map
            .iter()
            .find(|(key, _)| key.scalar_text() == Some("name"))
            .and_then(|(_, value)| value.scalar_text())
            .filter(|name| is_valid_job_name(name));
        let subject = match written {
            Some(name) => format!("{noun} `{name}` of {within}"),
            None => format!("{noun} {number} of {within}"),
        };
        let context = format!("in {subject}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, keys, &context);
        Some((subject, entries))
    }

    /// Reads the `name` (`entry`) of an item of a named list: `subject`
    /// names the item when the name is missing (`item_pos`), `names` holds
    /// the names seen so far and where, so that one given twice is told.
    pub(in crate::check::deploy) fn item_name(
        &mut self,
        entry: Option<&Entry<'_>>,
        item_pos: Pos,
        subject: &str,
        listed: &Listed<'_>,
        names: &mut Vec<(String, Pos)>,
    ) -> Option<String> {
        let Listed { noun, within, example } = listed;
        let Some(entry) = entry else {
            self.error(item_pos, format!("{subject} has no `name`"), Some(format!("name it, e.g. `name: {example}`")));
            return None;
        };
        let name = match entry.value.scalar_text() {
            Some(name) if is_valid_job_name(name) => name,
            found => {
                let found = found.map_or_else(|| entry.value.describe(), |name| format!("`{}`", abbreviate(name)));
                self.error(
                    entry.value_pos(),
                    format!("invalid {noun} name {found} in {within}"),
                    Some(format!(
                        "a {noun} is named as a job is: 1 to {MAX_NAME_LEN} letters, digits, `_`, `.` or `-`, \
                         starting with a letter or digit, e.g. `{example}`"
                    )),
                );
                return None;
            }
        };
        if let Some((_, first)) = names.iter().find(|(seen, _)| seen == name) {
            self.error(
                entry.value.pos,
                format!(
                    "{noun} `{name}` is named twice in {within} (first at line {}, column {})",
                    first.line, first.column
                ),
                Some(format!("each {noun} has a name of its own: rename one of them")),
            );
            return None;
        }
        names.push((name.to_owned(), entry.value.pos));
        Some(name.to_owned())
    }
}
