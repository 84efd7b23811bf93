//! A deploy's `artifact: JOB:PATH`: read where it is written (each
//! mistake pointed at inside the string), and checked against the job it
//! names once every job has been read: that job is in `needs` (without
//! `artifacts: false`), is not a matrix job, has `artifacts:`, and one of
//! its paths packs the file.

use super::super::jobs::JobDraft;
use super::super::suggest::closest;
use super::super::{Checker, Entry};
use super::ARTIFACT_EXAMPLE;
use crate::deploy::ArtifactRef;
use crate::yaml::{Node, Pos, abbreviate};

/// A deploy's `artifact:` as read, with where its parts are: checked
/// against the job it names once every job has been read.
pub(in crate::check) struct ArtifactUse {
    job: String,
    job_pos: Pos,
    /// In its normal form ([`ArtifactRef::path`]).
    path: String,
    path_pos: Pos,
}

impl ArtifactUse {
    /// What the deploy keeps of it.
    pub(super) fn reference(&self) -> ArtifactRef {
        ArtifactRef { job: self.job.clone(), path: self.path.clone() }
    }
}

impl Checker<'_> {
    /// Reads `artifact: JOB:PATH`, each mistake pointed at inside the string.
    pub(super) fn artifact(&mut self, entry: &Entry<'_>, job: &str) -> Option<ArtifactUse> {
        let node = entry.value;
        let Some(text) = node.scalar_text() else {
            self.error(
                entry.value_pos(),
                format!("`artifact` in the deploy of job `{job}` must be `JOB:PATH`, found {}", node.describe()),
                Some(ARTIFACT_EXAMPLE.to_owned()),
            );
            return None;
        };
        let shown = abbreviate(text);
        let Some((from, path)) = text.split_once(':').filter(|(from, _)| !from.is_empty()) else {
            self.error(
                node.pos,
                format!("`artifact` `{shown}` in the deploy of job `{job}` names no job: write `JOB:PATH`"),
                Some(ARTIFACT_EXAMPLE.to_owned()),
            );
            return None;
        };
        let path_offset = from.chars().count() + 1;
        let path_pos = node.pos_at(path_offset);
        let owner = format!("job `{job}`");
        let parts = self.artifact_path(node, path, path_offset, &owner, "`build:dist/app.tar.gz`")?;
        if parts.is_empty() {
            self.error(
                path_pos,
                format!(
                    "`artifact` `{shown}` in the deploy of job `{job}` names no file after `{}:`",
                    abbreviate(from)
                ),
                Some(ARTIFACT_EXAMPLE.to_owned()),
            );
            return None;
        }
        Some(ArtifactUse { job: from.to_owned(), job_pos: node.pos_at(0), path: parts.join("/"), path_pos })
    }

    /// Checks `path`, the path of a file inside an artifact, which starts
    /// at character `path_offset` of the string `node`: relative, without
    /// `..` or glob characters. Its parts, without `.` and empty ones (none
    /// when it names no file); `None` when it is wrong, which is reported
    /// with `owner` ("job `d`") and `example`, a way to write one.
    pub(in crate::check) fn artifact_path<'p>(
        &mut self,
        node: &Node,
        path: &'p str,
        path_offset: usize,
        owner: &str,
        example: &str,
    ) -> Option<Vec<&'p str>> {
        let mut parts: Vec<&str> = Vec::new();
        let mut offset = path_offset;
        for part in path.split('/') {
            let start = offset;
            offset += part.chars().count() + 1;
            match part {
                "" | "." => {}
                ".." => {
                    self.error(
                        node.pos_at(start),
                        format!("the artifact path `{}` of {owner} leaves the artifact with `..`", abbreviate(path)),
                        Some("name a file inside the artifact, as its job's `artifacts: paths` name it".to_owned()),
                    );
                    return None;
                }
                _ => {
                    if let Some(i) = part.find(['*', '?', '[', ']', '{', '}']) {
                        self.error(
                            node.pos_at(start + part[..i].chars().count()),
                            format!("the artifact path `{}` of {owner} is a glob", abbreviate(path)),
                            Some(format!("a deploy's release is one file: name it, e.g. {example}")),
                        );
                        return None;
                    }
                    parts.push(part);
                }
            }
        }
        if path.starts_with('/') {
            self.error(
                node.pos_at(path_offset),
                format!("the artifact path `{}` of {owner} is absolute", abbreviate(path)),
                Some("write it as its job's `artifacts: paths` do, relative to the workspace".to_owned()),
            );
            return None;
        }
        Some(parts)
    }

    /// Checks the `artifact:` of each deploy job against the job it names,
    /// once every job has been read: that job is in `needs` (with its
    /// artifacts), is not a matrix job, has `artifacts:`, and one of its
    /// paths packs the file.
    pub(in crate::check) fn deploy_artifacts(&mut self, drafts: &[JobDraft]) {
        for draft in drafts {
            // A deploy job with a matrix was refused already.
            let Some(used) = draft.deploy_artifact.as_ref().filter(|_| draft.spec.matrix.is_none()) else {
                continue;
            };
            let (job, from) = (abbreviate(&draft.spec.name), abbreviate(&used.job));
            let written = |d: &JobDraft| d.spec.matrix.as_ref().map_or(d.spec.name.clone(), |m| m.of.clone());
            let targets: Vec<&JobDraft> = drafts.iter().filter(|d| written(d) == used.job).collect();
            if !draft.needs.iter().any(|(need, _)| *need == used.job) {
                let (message, hint) = if targets.is_empty() {
                    let needs: Vec<&str> = draft.needs.iter().map(|(need, _)| need.as_str()).collect();
                    let hint = match closest(&used.job, &needs, &mut self.suggestion_budget) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => "name a job in `needs`, one that packs `artifacts:`".to_owned(),
                    };
                    (format!("the artifact of job `{job}` comes from `{from}`, which is not defined"), hint)
                } else {
                    (
                        format!("the artifact of job `{job}` comes from `{from}`, which is not in its `needs`"),
                        format!(
                            "add `{from}` to the `needs` of job `{job}`: a deploy takes its release from a job \
                             that finished before it"
                        ),
                    )
                };
                self.error(used.job_pos, message, Some(hint));
                continue;
            }
            if draft.spec.skip_artifacts_of.contains(&used.job) {
                self.error(
                    used.job_pos,
                    format!("job `{job}` deploys an artifact of `{from}`, but its `needs` leaves those artifacts out"),
                    Some(format!("remove `artifacts: false` from `{from}` in the `needs` of job `{job}`")),
                );
                continue;
            }
            let target = match targets.as_slice() {
                // `graph` reported a need of a job that is not defined.
                [] => continue,
                [one] if one.spec.matrix.is_none() => one,
                _ => {
                    self.error(
                        used.job_pos,
                        format!(
                            "job `{job}` deploys an artifact of `{from}`, a matrix job: each of its {} expansions \
                             packs its own",
                            targets.len()
                        ),
                        Some("build the release in a job without a matrix, or in one that needs the matrix".to_owned()),
                    );
                    continue;
                }
            };
            let Some(artifacts) = &target.spec.artifacts else {
                if !target.artifacts_written {
                    self.error(
                        used.job_pos,
                        format!("job `{from}` has no `artifacts:`, so job `{job}` has nothing to deploy"),
                        Some(format!("pack the release in job `{from}`, e.g. `artifacts: {{paths: [{}]}}`", used.path)),
                    );
                }
                continue;
            };
            if !produces(&artifacts.paths, &used.path) {
                let paths: Vec<String> = artifacts.paths.iter().map(|p| format!("`{}`", abbreviate(p))).collect();
                self.error(
                    used.path_pos,
                    format!("`{}` is not among the artifacts of job `{from}`", abbreviate(&used.path)),
                    Some(format!("job `{from}` packs {}: name a file one of them matches or holds", paths.join(", "))),
                );
            }
        }
    }
}

/// Whether an artifact packed from `patterns` (a job's `artifacts: paths`)
/// can hold `path` (in its normal form): a pattern matches it, or a
/// directory above it, which the packer takes whole. The patterns are read
/// as the packer reads them (`drover_archive`: `*` stops at `/`, `**`
/// crosses it); one that is not a glob the packer could read says nothing
/// against the path, since packing it fails on its own.
fn produces(patterns: &[String], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    patterns.iter().any(|pattern| {
        let normal: Vec<&str> = pattern.split('/').filter(|part| !part.is_empty() && *part != ".").collect();
        let Ok(glob) =
            globset::GlobBuilder::new(&normal.join("/")).literal_separator(true).backslash_escape(true).build()
        else {
            return true;
        };
        let matcher = glob.compile_matcher();
        (1..=parts.len()).any(|n| matcher.is_match(parts[..n].join("/")))
    })
}
