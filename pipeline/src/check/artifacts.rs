//! A job's `artifacts`: what the agent packs after the job's steps succeed
//! and hands to the jobs that need it.
//!
//! ```yaml
//! artifacts:
//!   paths: ["dist/*.tar.gz", "reports/"]   # globs, relative to the workspace
//!   expire: 7d                             # optional; the coordinator's default otherwise
//!   if-no-files: ignore                    # optional; `error` (the default) fails the job
//! ```
//!
//! Paths stay inside the workspace: absolute paths and `..` are refused
//! here, before any agent sees them. The glob syntax itself is checked by
//! the agent's glob matcher when it packs.

use std::time::Duration;

use super::{Checker, find};
use crate::yaml::{Kind, Node, abbreviate};
use crate::{ArtifactsSpec, IfNoFiles, MAX_ARTIFACT_PATHS, MAX_EXPIRE};
use drover_client::duration;

const ARTIFACTS_KEYS: &[&str] = &["paths", "expire", "if-no-files"];

/// `expire` takes days too.
const EXPIRE_UNITS: &duration::Units = &[
    ("d", Duration::from_secs(24 * 3600)),
    ("h", Duration::from_secs(3600)),
    ("m", Duration::from_secs(60)),
    ("s", Duration::from_secs(1)),
];

const EXAMPLE: &str = "e.g. `artifacts: {paths: [\"dist/*.tar.gz\", reports/]}`";

impl Checker<'_> {
    pub(super) fn artifacts(&mut self, node: &Node, job: &str) -> Option<ArtifactsSpec> {
        let map = match &node.kind {
            Kind::Map(map) => map,
            _ => {
                self.error(
                    node.pos,
                    format!("`artifacts` in job `{job}` must be a mapping with `paths`, found {}", node.describe()),
                    Some(EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        let context = format!("in the artifacts of job `{job}`");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, ARTIFACTS_KEYS, &context);
        let Some(paths) = find(&entries, "paths") else {
            self.error(node.pos, format!("`artifacts` in job `{job}` has no `paths`"), Some(EXAMPLE.to_owned()));
            return None;
        };
        let paths = self.artifact_paths(paths.value, job)?;
        let expire = match find(&entries, "expire") {
            Some(e) => Some(self.expire(e.value, job)?),
            None => None,
        };
        let if_no_files = match find(&entries, "if-no-files") {
            None => IfNoFiles::Error,
            Some(e) => match e.value.scalar_text() {
                Some("error") => IfNoFiles::Error,
                Some("ignore") => IfNoFiles::Ignore,
                _ => {
                    self.error(
                        e.value.pos,
                        format!(
                            "`if-no-files` in job `{job}` must be `error` or `ignore`, found {}",
                            e.value.describe()
                        ),
                        None,
                    );
                    return None;
                }
            },
        };
        Some(ArtifactsSpec { paths, expire, if_no_files })
    }

    fn artifact_paths(&mut self, node: &Node, job: &str) -> Option<Vec<String>> {
        let items: Vec<&Node> = match &node.kind {
            Kind::Scalar(_) => vec![node],
            Kind::Seq(items) if !items.is_empty() => items.iter().collect(),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "`paths` in the artifacts of job `{job}` must be a list of paths, found {}",
                        node.describe()
                    ),
                    Some(EXAMPLE.to_owned()),
                );
                return None;
            }
        };
        if items.len() > MAX_ARTIFACT_PATHS {
            self.error(
                items[MAX_ARTIFACT_PATHS].pos,
                format!("job `{job}` lists {} artifact paths, over the limit of {MAX_ARTIFACT_PATHS}", items.len()),
                Some("use globs, or a directory, to name many files at once".to_owned()),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(path) = item.scalar_text().filter(|p| !p.trim().is_empty()) else {
                self.error(
                    item.pos,
                    format!("artifact paths of job `{job}` must be non-empty text, found {}", item.describe()),
                    Some(EXAMPLE.to_owned()),
                );
                ok = false;
                continue;
            };
            let shown = abbreviate(path);
            if path.starts_with('/') || path.starts_with('~') {
                self.error(
                    item.pos,
                    format!("artifact path `{shown}` of job `{job}` is not inside the workspace"),
                    Some("write it relative to the workspace, e.g. `dist/app`".to_owned()),
                );
                ok = false;
            } else if path.split('/').any(|part| part == "..") {
                self.error(
                    item.pos,
                    format!("artifact path `{shown}` of job `{job}` leaves the workspace with `..`"),
                    Some("artifacts come from the job's workspace; copy files there first".to_owned()),
                );
                ok = false;
            } else {
                out.push(path.to_string());
            }
        }
        ok.then_some(out)
    }

    fn expire(&mut self, node: &Node, job: &str) -> Option<Duration> {
        let hint = || Some("a whole number with d, h, m or s, e.g. 7d or 12h".to_owned());
        let Some(text) = node.scalar_text() else {
            self.error(node.pos, format!("`expire` in the artifacts of job `{job}` must be a duration"), hint());
            return None;
        };
        match duration::parse(text, EXPIRE_UNITS) {
            Some(d) if d.is_zero() => {
                self.error(node.pos, format!("`expire` `{text}` in job `{job}` must be longer than zero"), hint());
                None
            }
            Some(d) if d > MAX_EXPIRE => {
                self.error(
                    node.pos,
                    format!("`expire` `{text}` in job `{job}` is over the limit of 365 days"),
                    Some("keep long-lived files in a release store, not as artifacts".to_owned()),
                );
                None
            }
            Some(d) => Some(d),
            None => {
                self.error(node.pos, format!("invalid `expire` `{}` in job `{job}`", abbreviate(text)), hint());
                None
            }
        }
    }
}
