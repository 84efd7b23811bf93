//! Desired-state files ([`crate::app`]): one file read into a
//! [`ServiceFile`], and the files of an app's directory checked together.
//!
//! A file's top-level keys are a deploy's, but for `environment` and
//! `on_newer`, with `artifact` written otherwise and `nodes` and `update`
//! added. The service, strategy, hooks, analysis and durations are read by
//! `deploy`'s checks, which name the file as their owner ("the service of
//! `deploy/web.yaml` has no `port`"); the checker has no run
//! (`Checker::has_run`), so `${{ }}` and `if:` are refused where a
//! pipeline would read them. This file reads the top level, `artifact` and
//! `nodes`, and `update` reads `update`; `desired` then checks that no two
//! files name the same service or port.

#[cfg(test)]
mod tests;
mod update;

use std::collections::BTreeMap;

use super::deploy::{SERVICE_EXAMPLE, is_name};
use super::jobs::{JOB_NAME_HINT, is_valid_job_name};
use super::url::http_url_problem;
use super::{Checker, Entry, capped, find, sorted};
use crate::app::{AppArtifact, DesiredState, NodeSelection, ServiceFile, url_file_name};
use crate::expr::Scope;
use crate::yaml::{Kind, Node, Pos, Scalar, ScalarType, abbreviate};
use crate::{Diagnostic, Known, MAX_APP_NODE_COUNT, MAX_ARTIFACT_URL_LEN, MAX_SERVICE_NAME_LEN};

const APP_KEYS: &[&str] = &[
    "artifact",
    "update",
    "service",
    "nodes",
    "strategy",
    "progress_deadline",
    "auto_rollback",
    "irreversible",
    "hooks",
    "analysis",
    "gates",
    "waves",
];
/// Keys of a deploy a desired-state file does not take: the key, why, and
/// what to do.
const NOT_IN_APP: &[(&str, &str, &str)] = &[
    (
        "environment",
        "the app's environment is where all its files deploy",
        "leave it out: the environment is named where the app is defined",
    ),
    ("on_newer", "a newer commit always replaces a sync in flight", "leave it out"),
];
const ARTIFACT_KEYS: &[&str] = &["run", "job", "path", "url", "sha256"];
const FILE_HINT: &str = "a desired-state file describes one service: at least `artifact:` and `service:`, e.g. \
     `artifact: {run: 42, job: build, path: dist/app.tar.gz}`";
const ARTIFACT_FORMS: &str = "e.g. `artifact: {run: 42, job: build, path: dist/app.tar.gz}` (the file \
     dist/app.tar.gz of the artifacts of job `build` of run 42), or `artifact: {url: \
     https://example.com/app-1.2.tar.gz, sha256: ...}`";
const SHA256_HINT: &str = "64 lower-case hex digits, what `sha256sum FILE` prints for the release's file";
const URL_HINT: &str =
    "an `http://` or `https://` URL whose path ends in the file's name, e.g. https://example.com/app-1.2.tar.gz";
const NODES_EXAMPLE: &str = "e.g. `nodes: {selector: {role: web}, count: 2}`";

/// One desired-state file as checked: the file when it is right, its
/// diagnostics, and its service's name and port where they are written
/// (when they are right), for the checks across files.
pub(crate) struct Checked {
    pub(crate) file: Option<ServiceFile>,
    pub(crate) diagnostics: Vec<Diagnostic>,
    name: Mark<String>,
    port: Mark<u16>,
}

/// A value as written, and where.
type Mark<T> = Option<(T, Pos)>;

/// Reads and checks the desired-state file `file` whose contents are `text`.
pub(crate) fn service_file(file: &str, text: &str) -> Checked {
    let hint = "one service's file is small: move long scripts into the release, and run them from the hooks";
    let root = match crate::load(file, text, "desired-state file", hint) {
        Ok(root) => root,
        Err(d) => return Checked { file: None, diagnostics: vec![d], name: None, port: None },
    };
    let mut checker = Checker::new(file, Known::default(), false);
    let service = checker.app_file(&root);
    let (name, port) = service_marks(&root);
    Checked { file: service, diagnostics: checker.diagnostics, name, port }
}

/// Every file of an app's directory (1 to `MAX_APP_SERVICES` of them, which
/// the caller checked), and them together.
pub(crate) fn desired(files: &[(String, String)]) -> Result<DesiredState, Vec<Diagnostic>> {
    let mut checked: Vec<Checked> = files.iter().map(|(file, text)| service_file(file, text)).collect();
    // The first file to name each service, and to use each port.
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut ports: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..checked.len() {
        let (name, port) = (checked[i].name.clone(), checked[i].port);
        let file = &files[i].0;
        if let Some((name, pos)) = &name {
            match names.get(name) {
                Some(&first) => {
                    let first = abbreviate(&files[first].0);
                    let d = diagnostic(
                        file,
                        *pos,
                        format!("service `{name}` of `{}` is already the service of `{first}`", abbreviate(file)),
                        "each service of an app has one file: rename this service, or remove one of the files",
                    );
                    checked[i].diagnostics.push(d);
                }
                None => {
                    names.insert(name.clone(), i);
                }
            }
        }
        if let Some((port, pos)) = port {
            match ports.get(&port) {
                Some(&first) => {
                    let first_name = checked[first].name.as_ref().map_or("?", |(name, _)| name.as_str());
                    let first = abbreviate(&files[first].0);
                    let shown = name.as_ref().map_or("?", |(name, _)| name.as_str());
                    let d = diagnostic(
                        file,
                        pos,
                        format!(
                            "`port` {port} of service `{shown}` in `{}` is also the port of service `{first_name}` \
                             in `{first}`",
                            abbreviate(file)
                        ),
                        "a node's proxy owns each service's port, so two services cannot share one: give each its \
                         own `port`",
                    );
                    checked[i].diagnostics.push(d);
                }
                None => {
                    ports.insert(port, i);
                }
            }
        }
    }
    if checked.iter().any(|c| c.file.is_none() || !c.diagnostics.is_empty()) {
        return Err(shown(checked.into_iter().map(|c| c.diagnostics).collect()));
    }
    let services = checked.into_iter().filter_map(|c| c.file).map(|file| (file.service.name.clone(), file)).collect();
    Ok(DesiredState { services })
}

/// The diagnostics of several files as they are shown: each file's sorted,
/// file by file, and at most `MAX_DIAGNOSTICS` in all.
pub(crate) fn shown(per_file: Vec<Vec<Diagnostic>>) -> Vec<Diagnostic> {
    capped(per_file.into_iter().flat_map(sorted).collect())
}

fn diagnostic(file: &str, pos: Pos, message: String, hint: &str) -> Diagnostic {
    Diagnostic { file: file.to_owned(), line: pos.line, column: pos.column, message, hint: Some(hint.to_owned()) }
}

/// The service's name and port as written in the document `root`, where
/// they are, when they are right: what the checks across files compare.
fn service_marks(root: &Node) -> (Mark<String>, Mark<u16>) {
    fn value<'n>(map: &'n [(Node, Node)], key: &str) -> Option<&'n Node> {
        map.iter().find(|(k, _)| k.scalar_text() == Some(key)).map(|(_, v)| v)
    }
    let Kind::Map(top) = &root.kind else { return (None, None) };
    let Some(Kind::Map(service)) = value(top, "service").map(|node| &node.kind) else { return (None, None) };
    let name = value(service, "name")
        .and_then(|node| node.scalar_text().filter(|name| is_name(name, MAX_SERVICE_NAME_LEN)).map(|n| (n, node.pos)))
        .map(|(name, pos)| (name.to_owned(), pos));
    let port = value(service, "port").and_then(|node| match &node.kind {
        Kind::Scalar(Scalar { ty: ScalarType::Int(n), .. }) => {
            u16::try_from(*n).ok().filter(|port| *port >= 1).map(|port| (port, node.pos))
        }
        _ => None,
    });
    (name, port)
}

impl Checker<'_> {
    /// Reads one desired-state file, the document `root`.
    fn app_file(&mut self, root: &Node) -> Option<ServiceFile> {
        let owner = &format!("`{}`", abbreviate(self.file));
        let map = match &root.kind {
            Kind::Map(map) => map,
            Kind::Null => {
                // A document with only comments "starts" after them.
                self.error(Pos::START, format!("{owner} is empty"), Some(FILE_HINT.to_owned()));
                return None;
            }
            _ => {
                self.error(
                    root.pos,
                    format!("a desired-state file must be a mapping, found {}", root.describe()),
                    Some(FILE_HINT.to_owned()),
                );
                return None;
            }
        };
        let context = format!("in {owner}");
        let entries = self.entries(map, "key", &context);
        for (key, why, hint) in NOT_IN_APP {
            if let Some(entry) = find(&entries, key) {
                self.error(
                    entry.key_pos,
                    format!("{owner} is a desired-state file, which has no `{key}`: {why}"),
                    Some((*hint).to_owned()),
                );
            }
        }
        let others: Vec<Entry<'_>> =
            entries.iter().filter(|e| !NOT_IN_APP.iter().any(|(key, _, _)| *key == e.key)).copied().collect();
        self.unknown_keys(&others, APP_KEYS, &context);
        // There is no run: `has_run` refuses every `${{ }}` and `if:`
        // before the scope would be asked about their names.
        let scope = Scope::default();

        let artifact = match find(&entries, "artifact") {
            Some(e) => self.app_artifact(e, owner),
            None => {
                self.error(root.pos, format!("{owner} has no `artifact`"), Some(ARTIFACT_FORMS.to_owned()));
                None
            }
        };
        let update = match find(&entries, "update") {
            Some(e) => self.app_update(e, owner, artifact.as_ref()).map(Some),
            None => Some(None),
        };
        let service = match find(&entries, "service") {
            Some(e) => self.service(e, owner, &scope),
            None => {
                self.error(root.pos, format!("{owner} has no `service`"), Some(SERVICE_EXAMPLE.to_owned()));
                None
            }
        };
        let nodes = match find(&entries, "nodes") {
            Some(e) => self.nodes(e, owner),
            None => Some(NodeSelection::default()),
        };
        let rollout = self.rollout_settings(&entries, owner, &context, &scope, false)?;
        Some(ServiceFile {
            file: self.file.to_owned(),
            artifact: artifact?,
            update: update?,
            service: service?,
            nodes: nodes?,
            strategy: rollout.strategy,
            progress_deadline: rollout.progress_deadline,
            auto_rollback: rollout.auto_rollback,
            irreversible: rollout.irreversible,
            hooks: rollout.hooks,
            analysis: rollout.analysis,
            gates: rollout.gates,
            waves: rollout.waves,
        })
    }

    /// The entries of the mapping `entry` of `owner` holds (nothing, as in
    /// `nodes:`, is an empty one), keys not in `keys` told; `None` when it
    /// is not a mapping, told with the hint `hint` gives for the scalar
    /// written, if one is.
    fn app_entries<'n>(
        &mut self,
        entry: &Entry<'n>,
        owner: &str,
        keys: &[&str],
        hint: impl FnOnce(Option<&str>) -> String,
    ) -> Option<Vec<Entry<'n>>> {
        let map: &[(Node, Node)] = match &entry.value.kind {
            Kind::Null => &[],
            Kind::Map(map) => map,
            _ => {
                let key = entry.key;
                self.error(
                    entry.value_pos(),
                    format!("`{key}` of {owner} must be a mapping, found {}", entry.value.describe()),
                    Some(hint(entry.value.scalar_text())),
                );
                return None;
            }
        };
        let context = format!("in the {} of {owner}", entry.key);
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, keys, &context);
        Some(entries)
    }

    /// Reads `artifact`: exactly one of `run` (with `job` and `path`) or
    /// `url` (with `sha256`).
    fn app_artifact(&mut self, entry: &Entry<'_>, owner: &str) -> Option<AppArtifact> {
        let entries = self.app_entries(entry, owner, ARTIFACT_KEYS, |written| match written {
            // `JOB:PATH` is a deploy job's, which names a job of its own run.
            Some(text) if text.contains(':') && !text.contains("://") => {
                "a desired-state file has no run of its own: name the run too, e.g. `artifact: {run: 42, job: \
                 build, path: dist/app.tar.gz}`"
                    .to_owned()
            }
            _ => ARTIFACT_FORMS.to_owned(),
        })?;
        let sha256 = find(&entries, "sha256").map(|e| self.sha256(e, owner));
        match (find(&entries, "run"), find(&entries, "url")) {
            (None, None) => {
                self.error(
                    entry.key_pos,
                    format!("the artifact of {owner} names neither a `run` nor a `url`"),
                    Some(ARTIFACT_FORMS.to_owned()),
                );
                None
            }
            (Some(run), Some(url)) => {
                let second = if run.key_pos > url.key_pos { run } else { url };
                self.error(
                    second.key_pos,
                    format!("the artifact of {owner} has both `run` and `url`"),
                    Some("a release comes from a run's artifacts or from a URL: keep one of them".to_owned()),
                );
                None
            }
            (Some(run), None) => {
                let run = self.run_number(run, owner);
                let job = match find(&entries, "job") {
                    Some(e) => self.job_name(e, &format!("the artifact of {owner}")),
                    None => {
                        self.error(
                            entry.key_pos,
                            format!("the artifact of {owner} names a run but no `job`"),
                            Some("name the job of the run that packed the file, e.g. `job: build`".to_owned()),
                        );
                        None
                    }
                };
                let path = match find(&entries, "path") {
                    Some(e) => self.app_artifact_path(e, owner),
                    None => {
                        self.error(
                            entry.key_pos,
                            format!("the artifact of {owner} names a run but no `path`"),
                            Some("name the file among the job's artifacts, e.g. `path: dist/app.tar.gz`".to_owned()),
                        );
                        None
                    }
                };
                let sha256 = match sha256 {
                    Some(sha256) => Some(sha256?),
                    None => None,
                };
                Some(AppArtifact::Run { run: run?, job: job?, path: path?, sha256 })
            }
            (None, Some(url_entry)) => {
                for key in ["job", "path"] {
                    if let Some(e) = find(&entries, key) {
                        self.error(
                            e.key_pos,
                            format!("the artifact of {owner} is the file at its `url`, so it has no `{key}`"),
                            Some(format!("leave `{key}` out, or name a `run` instead of a `url`")),
                        );
                    }
                }
                let url = self.artifact_url(url_entry, owner);
                let sha256 = match sha256 {
                    Some(sha256) => sha256,
                    None => {
                        self.error(
                            url_entry.key_pos,
                            format!("the artifact of {owner} has a `url` but no `sha256`"),
                            Some(
                                "pin what the URL serves: download the file and write `sha256:` with what \
                                 `sha256sum FILE` prints; a download with another digest is refused"
                                    .to_owned(),
                            ),
                        );
                        None
                    }
                };
                Some(AppArtifact::Url { url: url?, sha256: sha256? })
            }
        }
    }

    fn run_number(&mut self, entry: &Entry<'_>, owner: &str) -> Option<u64> {
        let number = match &entry.value.kind {
            Kind::Scalar(Scalar { ty: ScalarType::Int(n), .. }) => Some(*n),
            _ => None,
        };
        if let Some(run) = number.and_then(|n| u64::try_from(n).ok()).filter(|run| *run >= 1) {
            return Some(run);
        }
        self.error(
            entry.value_pos(),
            format!(
                "`run` of the artifact of {owner} must be a run number, 1 or more, found {}",
                entry.value.describe()
            ),
            Some("the run whose job packed the release, as `drover runs` lists it, e.g. `run: 42`".to_owned()),
        );
        None
    }

    /// A job name, `entry`'s value, in `place` (`the artifact of ...`).
    fn job_name(&mut self, entry: &Entry<'_>, place: &str) -> Option<String> {
        self.name_of("job", is_valid_job_name, entry, place, JOB_NAME_HINT)
    }

    /// The name of a `what` (`job`), `entry`'s value, in `place`: one that
    /// `valid` takes, else told with `hint`.
    fn name_of(
        &mut self,
        what: &str,
        valid: fn(&str) -> bool,
        entry: &Entry<'_>,
        place: &str,
        hint: &str,
    ) -> Option<String> {
        match entry.value.scalar_text() {
            Some(name) if valid(name) => Some(name.to_owned()),
            found => {
                let found = found.map_or_else(|| entry.value.describe(), |name| format!("`{}`", abbreviate(name)));
                self.error(entry.value_pos(), format!("invalid {what} name {found} in {place}"), Some(hint.to_owned()));
                None
            }
        }
    }

    fn app_artifact_path(&mut self, entry: &Entry<'_>, owner: &str) -> Option<String> {
        let node = entry.value;
        let Some(path) = node.scalar_text() else {
            self.error(
                entry.value_pos(),
                format!("`path` of the artifact of {owner} must be a path, found {}", node.describe()),
                Some("the file among the job's artifacts, e.g. `path: dist/app.tar.gz`".to_owned()),
            );
            return None;
        };
        if path.contains("${{") {
            self.no_run(node, path, &format!("`path` of the artifact of {owner}"));
            return None;
        }
        let parts = self.artifact_path(node, path, 0, owner, "`path: dist/app.tar.gz`")?;
        if parts.is_empty() {
            self.error(
                node.pos,
                format!("`path` `{}` of the artifact of {owner} names no file", abbreviate(path)),
                Some("the file among the job's artifacts, e.g. `path: dist/app.tar.gz`".to_owned()),
            );
            return None;
        }
        Some(parts.join("/"))
    }

    fn sha256(&mut self, entry: &Entry<'_>, owner: &str) -> Option<String> {
        match entry.value.scalar_text() {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
                Some(hex.to_owned())
            }
            found => {
                let upper = found.is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
                let found = found.map_or_else(|| entry.value.describe(), |hex| format!("`{}`", abbreviate(hex)));
                let hint =
                    if upper { format!("write it in lower case: {SHA256_HINT}") } else { SHA256_HINT.to_owned() };
                self.error(
                    entry.value_pos(),
                    format!("`sha256` of the artifact of {owner} must be 64 lower-case hex digits, found {found}"),
                    Some(hint),
                );
                None
            }
        }
    }

    fn artifact_url(&mut self, entry: &Entry<'_>, owner: &str) -> Option<String> {
        let node = entry.value;
        let subject = format!("the `url` of the artifact of {owner}");
        let Some(url) = node.scalar_text() else {
            self.error(
                entry.value_pos(),
                format!("{subject} must be a URL, found {}", node.describe()),
                Some(URL_HINT.to_owned()),
            );
            return None;
        };
        if url.contains("${{") {
            self.no_run(node, url, &subject);
            return None;
        }
        let problem = if let Some(problem) = http_url_problem(url, &subject, MAX_ARTIFACT_URL_LEN) {
            Some(problem)
        } else if matches!(url_file_name(url), "" | "." | "..") {
            Some((0, format!("{subject} names no file: its path must end in the file's name")))
        } else {
            None
        };
        if let Some((at, message)) = problem {
            self.error(node.pos_at(at), message, Some(URL_HINT.to_owned()));
            return None;
        }
        Some(url.to_owned())
    }

    /// Reads `nodes`: an optional `selector` of agent labels and `count`.
    fn nodes(&mut self, entry: &Entry<'_>, owner: &str) -> Option<NodeSelection> {
        let entries = self.app_entries(entry, owner, &["selector", "count"], |_| NODES_EXAMPLE.to_owned())?;
        let selector = match find(&entries, "selector") {
            Some(e) => self.labels(e.value, &format!("`nodes: selector` of {owner}"), "e.g. `selector: {role: web}`"),
            None => BTreeMap::new(),
        };
        let count = match find(&entries, "count") {
            Some(e) => Some(self.whole(
                e,
                &format!("`nodes: count` of {owner}"),
                1,
                MAX_APP_NODE_COUNT,
                "how many of the environment's nodes (those the selector picks) run the service; leave it out for \
                 all of them",
            )?),
            None => None,
        };
        Some(NodeSelection { selector, count })
    }
}
