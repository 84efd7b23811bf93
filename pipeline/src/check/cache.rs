//! A job's `cache`: what the agent restores before the job's steps and
//! saves after they succeed, under a key, for later runs.
//!
//! ```yaml
//! cache:
//!   key: "cargo-{{ hashFiles('Cargo.lock') }}"   # a template (see `cache_key`)
//!   paths: [target, ~/.cargo/registry]            # in the workspace, or under the step's home
//!   restore-keys: [cargo-]                        # optional: prefixes tried when the key has no entry
//! ```
//!
//! The key template is read by [`crate::cache_key`]; a mistake in it is
//! reported at the very character when the key is written on one line as
//! it is (quoted or not), else where the key starts. Paths stay inside the
//! workspace or the step's home (`~/...`): other absolute paths, another
//! user's home (`~user`) and `..` are refused here, before any agent sees
//! them. Restore keys are plain prefixes, held to the characters of a key.

use super::{Checker, Entry, find};
use crate::cache_key::{self, key_problem_at};
use crate::yaml::{Kind, abbreviate};
use crate::{CacheSpec, KeyTemplate, MAX_CACHE_PATHS, MAX_RESTORE_KEYS};

const CACHE_KEYS: &[&str] = &["key", "paths", "restore-keys"];

const EXAMPLE: &str = "e.g. `cache: {key: \"cargo-{{ hashFiles('Cargo.lock') }}\", paths: [target]}`";
const PATH_HINT: &str = "write it relative to the workspace, e.g. `target`, or under the step's home as `~/...`, \
     e.g. `~/.cargo/registry`";

impl Checker<'_> {
    /// Reads the `cache` of job `job`. Every part is checked, so that one
    /// mistake does not hide the next; the cache is left out if any is wrong.
    pub(super) fn cache(&mut self, entry: &Entry<'_>, job: &str) -> Option<CacheSpec> {
        let node = entry.value;
        let map = match &node.kind {
            Kind::Map(map) => map,
            _ => {
                self.error(
                    entry.value_pos(),
                    format!(
                        "`cache` in job `{job}` must be a mapping with `key` and `paths`, found {}",
                        node.describe()
                    ),
                    Some(EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        let context = format!("in the cache of job `{job}`");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, CACHE_KEYS, &context);
        let key = match find(&entries, "key") {
            Some(key) => self.cache_key(key, job),
            None => {
                self.error(entry.key_pos, format!("`cache` in job `{job}` has no `key`"), Some(EXAMPLE.to_owned()));
                None
            }
        };
        let paths = match find(&entries, "paths") {
            Some(paths) => self.cache_paths(paths, job),
            None => {
                self.error(entry.key_pos, format!("`cache` in job `{job}` has no `paths`"), Some(EXAMPLE.to_owned()));
                None
            }
        };
        let restore_keys = match find(&entries, "restore-keys") {
            Some(restore_keys) => self.restore_keys(restore_keys, job),
            None => Some(Vec::new()),
        };
        Some(CacheSpec { key: key?, paths: paths?, restore_keys: restore_keys? })
    }

    /// The `key` template, a problem in it reported at its character.
    fn cache_key(&mut self, entry: &Entry<'_>, job: &str) -> Option<KeyTemplate> {
        let Some(text) = entry.value.scalar_text() else {
            self.error(
                entry.value_pos(),
                format!("`key` in the cache of job `{job}` must be a string, found {}", entry.value.describe()),
                Some(EXAMPLE.to_owned()),
            );
            return None;
        };
        match cache_key::parse_template(text) {
            Ok(template) => Some(template),
            Err(err) => {
                self.error(
                    entry.value.pos_at(err.offset),
                    format!("cache key of job `{job}`: {}", err.message),
                    err.hint,
                );
                None
            }
        }
    }

    fn cache_paths(&mut self, entry: &Entry<'_>, job: &str) -> Option<Vec<String>> {
        let items = match &entry.value.kind {
            Kind::Seq(items) if !items.is_empty() => items,
            _ => {
                self.error(
                    entry.value_pos(),
                    format!(
                        "`paths` in the cache of job `{job}` must be a non-empty list of paths, found {}",
                        entry.value.describe()
                    ),
                    Some("e.g. `paths: [target, ~/.cargo/registry]`".to_owned()),
                );
                return None;
            }
        };
        if items.len() > MAX_CACHE_PATHS {
            self.error(
                items[MAX_CACHE_PATHS].pos,
                format!("job `{job}` lists {} cache paths, over the limit of {MAX_CACHE_PATHS}", items.len()),
                Some("cache a directory to take all of it".to_owned()),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(path) = item.scalar_text().filter(|p| !p.trim().is_empty()) else {
                self.error(
                    item.pos,
                    format!("cache paths of job `{job}` must be non-empty text, found {}", item.describe()),
                    Some(PATH_HINT.to_owned()),
                );
                ok = false;
                continue;
            };
            match cache_path_problem(path) {
                Some((problem, hint)) => {
                    self.error(
                        item.pos,
                        format!("cache path `{}` of job `{job}` {problem}", abbreviate(path)),
                        Some(hint),
                    );
                    ok = false;
                }
                None => out.push(path.to_owned()),
            }
        }
        ok.then_some(out)
    }

    fn restore_keys(&mut self, entry: &Entry<'_>, job: &str) -> Option<Vec<String>> {
        let example = || Some("e.g. `restore-keys: [cargo-]`: the newest entry whose key starts with it".to_owned());
        let items = match &entry.value.kind {
            Kind::Null => return Some(Vec::new()),
            Kind::Seq(items) => items,
            _ => {
                self.error(
                    entry.value_pos(),
                    format!(
                        "`restore-keys` in the cache of job `{job}` must be a list of key prefixes, found {}",
                        entry.value.describe()
                    ),
                    example(),
                );
                return None;
            }
        };
        if items.len() > MAX_RESTORE_KEYS {
            self.error(
                items[MAX_RESTORE_KEYS].pos,
                format!("job `{job}` lists {} restore keys, over the limit of {MAX_RESTORE_KEYS}", items.len()),
                Some("a shorter prefix matches more keys".to_owned()),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(prefix) = item.scalar_text() else {
                self.error(
                    item.pos,
                    format!("restore keys of job `{job}` must be text, found {}", item.describe()),
                    example(),
                );
                ok = false;
                continue;
            };
            if let Some((offset, problem)) = key_problem_at(prefix) {
                let hint = if prefix.contains("{{") {
                    "restore keys are plain prefixes of cache keys, without `{{ }}` expressions".to_owned()
                } else {
                    "a restore key is a prefix of cache keys: letters, digits, `.`, `_` and `-`, e.g. `cargo-`"
                        .to_owned()
                };
                self.error(
                    item.pos_at(offset),
                    format!("invalid restore key `{}` in job `{job}`: {problem}", abbreviate(prefix)),
                    Some(hint),
                );
                ok = false;
                continue;
            }
            out.push(prefix.to_owned());
        }
        ok.then_some(out)
    }
}

/// What is wrong with the cache path `path`, if anything, and a hint.
fn cache_path_problem(path: &str) -> Option<(String, String)> {
    if path.starts_with('/') {
        return Some(("is absolute".to_owned(), PATH_HINT.to_owned()));
    }
    if let Some(rest) = path.strip_prefix('~') {
        let Some(under_home) = rest.strip_prefix('/') else {
            let problem = if rest.is_empty() { "names the whole home directory" } else { "names another user's home" };
            return Some((
                problem.to_owned(),
                "name a directory under the step's own home, e.g. `~/.cargo/registry`".to_owned(),
            ));
        };
        if under_home.trim_matches('/').is_empty() {
            return Some((
                "names the whole home directory".to_owned(),
                "name a directory under it, e.g. `~/.cargo/registry`".to_owned(),
            ));
        }
    }
    if path.split('/').any(|part| part == "..") {
        return Some((
            "uses `..`".to_owned(),
            "paths stay inside the workspace or the step's home: write them without `..`".to_owned(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths() {
        for path in ["target", "./target", "a/b/", "~/.cargo/registry", "~/x", ".", "dist/*.tar.gz", "a..b"] {
            assert_eq!(cache_path_problem(path), None, "{path}");
        }
        let cases = [
            ("/abs", "is absolute"),
            ("/", "is absolute"),
            ("~", "names the whole home directory"),
            ("~/", "names the whole home directory"),
            ("~//", "names the whole home directory"),
            ("~user/x", "names another user's home"),
            ("..", "uses `..`"),
            ("a/../../b", "uses `..`"),
            ("~/../x", "uses `..`"),
            ("a/..", "uses `..`"),
        ];
        for (path, problem) in cases {
            let got = cache_path_problem(path).map(|(p, _)| p);
            assert_eq!(got.as_deref(), Some(problem), "{path}");
        }
    }
}
