//! A desired-state file's `update:` ([`crate::app::UpdateSpec`]): the
//! pipeline whose builds Drover writes into the file's `artifact`.
//!
//! `pipeline` is read by the rule of a pipeline file's `name:`, `job` by
//! that of a job's (the artifact's when not written), `branches` as the
//! globs of `on:` are (`triggers`), and `write` is one of two words. Only
//! a run's artifact can be followed: with a `url` artifact, `update` is
//! refused.

use super::super::{Checker, Entry, closest, find, is_pipeline_name};
use crate::MAX_NAME_LEN;
use crate::app::{AppArtifact, UpdateSpec, UpdateWrite};
use crate::yaml::abbreviate;

const UPDATE_KEYS: &[&str] = &["pipeline", "job", "branches", "write"];
const UPDATE_EXAMPLE: &str = "e.g. `update: {pipeline: web-build, branches: [main]}`: each successful run of \
     pipeline `web-build` on `main` writes its artifact into the file";
/// `write`'s words, and what each reads as.
const WRITES: &[(&str, UpdateWrite)] = &[("commit", UpdateWrite::Commit), ("branch", UpdateWrite::Branch)];
const WRITE_HINT: &str = "`commit` (the default) commits each update to the branch the app tracks; `branch` \
     pushes a branch per update, for review";

impl Checker<'_> {
    /// Reads `update`, given the file's `artifact` as read (`None` when it
    /// is missing or wrong, which is told elsewhere): the job defaults to
    /// the artifact's.
    pub(super) fn app_update(
        &mut self,
        entry: &Entry<'_>,
        owner: &str,
        artifact: Option<&AppArtifact>,
    ) -> Option<UpdateSpec> {
        let entries = self.app_entries(entry, owner, UPDATE_KEYS, |written| match written {
            Some(name) => format!("name the pipeline in a mapping: `update: {{pipeline: {}}}`", abbreviate(name)),
            None => UPDATE_EXAMPLE.to_owned(),
        })?;
        let place = format!("the update of {owner}");
        let pipeline = match find(&entries, "pipeline") {
            Some(e) => self.update_pipeline(e, &place),
            None => {
                self.error(entry.key_pos, format!("{place} names no `pipeline`"), Some(UPDATE_EXAMPLE.to_owned()));
                None
            }
        };
        let job = find(&entries, "job").map(|e| self.job_name(e, &place));
        let branches = find(&entries, "branches").map_or_else(Vec::new, |e| self.patterns(e, &place));
        let write = match find(&entries, "write") {
            Some(e) => self.update_write(e, &place),
            None => Some(UpdateWrite::default()),
        };
        let job = match (job, artifact) {
            (_, Some(AppArtifact::Url { .. })) => {
                self.error(
                    entry.key_pos,
                    format!("`update` of {owner} follows a pipeline's builds, but its artifact is a `url`"),
                    Some(
                        "updates follow a pipeline's run artifacts: use `artifact: {run: .., job: .., path: ..}`, \
                         or leave `update` out"
                            .to_owned(),
                    ),
                );
                None
            }
            (Some(job), _) => job,
            (None, Some(AppArtifact::Run { job, .. })) => Some(job.clone()),
            (None, None) => None,
        };
        Some(UpdateSpec { pipeline: pipeline?, job: job?, branches, write: write? })
    }

    fn update_pipeline(&mut self, entry: &Entry<'_>, place: &str) -> Option<String> {
        let hint = format!(
            "the `name:` of the pipeline whose runs build the release, one line of at most {MAX_NAME_LEN} \
             characters, e.g. `pipeline: web-build`"
        );
        self.name_of("pipeline", is_pipeline_name, entry, place, &hint)
    }

    fn update_write(&mut self, entry: &Entry<'_>, place: &str) -> Option<UpdateWrite> {
        let word = entry.value.scalar_text();
        if let Some(write) = WRITES.iter().find(|(w, _)| Some(*w) == word).map(|(_, write)| *write) {
            return Some(write);
        }
        let words: Vec<&str> = WRITES.iter().map(|(w, _)| *w).collect();
        let hint = match word.and_then(|word| closest(word, &words, &mut self.suggestion_budget)) {
            Some(close) => format!("did you mean `{close}`? {WRITE_HINT}"),
            None => WRITE_HINT.to_owned(),
        };
        let found = word.map_or_else(|| entry.value.describe(), |word| format!("`{}`", abbreviate(word)));
        self.error(
            entry.value_pos(),
            format!("`write` of {place} must be `commit` or `branch`, found {found}"),
            Some(hint),
        );
        None
    }
}
