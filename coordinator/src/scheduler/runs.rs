//! Driving runs: submitting them, feeding inputs to their machines
//! ([`machine::step`]) and staging what changed, carrying out the machines'
//! effects through the fleet, and queueing jobs for dispatch (`pass.rs`
//! dispatches them). Synchronous: see `state.rs`.

use std::time::Duration;

use tracing::info;

use super::SchedError;
use super::state::{RUN_CANCELLED, State};
use crate::core::dispatch::{self, Warm};
use crate::core::fleet::{Assignment, AttemptId, Now, Work};
use crate::core::keys;
use crate::core::machine::{self, CacheNote, Effect, Input, JobRecord, JobState, Run, RunId, RunTrace, Source};
use crate::core::rerun::{self, Rerun};
use crate::metrics::{METRICS, result_index};
use crate::records::{ArtifactRecord, MAX_RECORD_BYTES, RunSummary, encode};
use crate::spans;
use drover_pipeline::Pipeline;
use drover_telemetry::trace;

impl State {
    pub(super) fn submit(
        &mut self,
        pipeline: Pipeline,
        source: Source,
        traceparent: Option<String>,
        queue_timeout: Option<Duration>,
        rerun: Option<Rerun>,
        now: Now,
    ) -> Result<RunId, SchedError> {
        let (max_runs, max_jobs) = (self.config.max_active_runs, self.config.max_queued_jobs);
        if self.runs.len() >= max_runs {
            return Err(SchedError::TooManyRuns { active: self.runs.len(), limit: max_runs });
        }
        let jobs = pipeline.jobs.len();
        if self.active_jobs + jobs > max_jobs {
            return Err(SchedError::TooManyJobs { jobs, total: self.active_jobs + jobs, limit: max_jobs });
        }
        let id = self.last_run_id + 1;
        let mut run = Run::new(id, pipeline, source, now.ms);
        run.record.queue_timeout_ms = queue_timeout.unwrap_or(self.config.queue_timeout).as_millis() as u64;
        if let Some(rerun) = &rerun {
            rerun::mark(&mut run, rerun.of, &rerun.reuse, now.ms);
        }
        // The run's trace continues the submitter's, when it sent one.
        let (trace_id, parent_span_id) = match traceparent.as_deref().and_then(trace::parse_traceparent) {
            Some((trace_id, parent)) => (trace_id, parent),
            None => (trace::new_trace_id(), String::new()),
        };
        run.record.trace = RunTrace { trace_id, span_id: trace::new_span_id(), parent_span_id };
        for job in run.jobs.values_mut() {
            job.trace.span_id = trace::new_span_id();
        }
        let size = encode(&run.record).len();
        if size > MAX_RECORD_BYTES {
            return Err(SchedError::TooLarge { size, limit: MAX_RECORD_BYTES });
        }
        self.last_run_id = id;
        self.pending.insert(keys::RUN_SEQ.to_string(), encode(&id));
        self.pending.insert(keys::run(id), encode(&run.record));
        self.pending.insert(keys::run_index(id), encode(&RunSummary::of(&run.record)));
        for (name, job) in &run.jobs {
            self.pending.insert(keys::job(id, name), encode(job));
            // A rerun's reused artifacts are this run's too, for as long as
            // this run's own would be.
            if let Some(a) = &job.artifact {
                let expire = run.spec(name).and_then(|s| s.artifacts.as_ref()?.expire);
                let expires_ms =
                    now.ms.saturating_add(expire.unwrap_or(self.config.artifact_expire).as_millis() as u64);
                let record = ArtifactRecord { sha256: a.sha256.clone(), expires_ms };
                self.pending.insert(keys::artifact(id, name), encode(&record));
            }
        }
        let trace_id = run.record.trace.trace_id.clone();
        info!(run = id, name = %run.record.pipeline.name, jobs = run.jobs.len(), %trace_id, "run submitted");
        METRICS.runs_submitted.inc();
        self.active_jobs += run.jobs.len();
        // A newer run of a group that cancels in progress cancels the
        // older ones (they finish cancelling on their own).
        let cancel_older = match (&run.record.group, &run.record.pipeline.concurrency) {
            (Some(group), Some(c)) if c.cancel_in_progress => self.run_groups.get(group).cloned().unwrap_or_default(),
            _ => Default::default(),
        };
        self.track_groups(&run);
        self.track_ranks(&run);
        self.runs.insert(id, run);
        for older in cancel_older {
            info!(run = older, by = id, "cancelled by a newer run of its concurrency group");
            self.apply(older, Input::Cancel, now);
        }
        self.apply(id, Input::Start, now);
        Ok(id)
    }

    /// Notes run `run`'s concurrency groups (at submit and recovery).
    pub(super) fn track_groups(&mut self, run: &Run) {
        if let Some(group) = &run.record.group {
            self.run_groups.entry(group.clone()).or_default().insert(run.record.id);
        }
        if run.record.pipeline.jobs.iter().any(|j| j.concurrency.is_some()) {
            self.grouped_runs.insert(run.record.id);
        }
    }

    /// Works out run `run`'s remaining paths for critical-path order, from
    /// what its jobs took before.
    pub(super) fn track_ranks(&mut self, run: &Run) {
        if !self.config.critical_path {
            return;
        }
        let pipeline = &run.record.pipeline;
        let estimate = |job: &str| {
            let samples = self.durations.get(&(pipeline.name.clone(), job.to_string()));
            dispatch::critical::median(samples.into_iter().flatten().copied())
        };
        let ranks = dispatch::critical::ranks(pipeline, estimate);
        self.ranks.insert(run.record.id, ranks);
    }

    /// Forgets a finished run's concurrency groups.
    fn untrack_groups(&mut self, id: RunId, group: Option<&str>) {
        if let Some(group) = group
            && let Some(runs) = self.run_groups.get_mut(group)
        {
            runs.remove(&id);
            if runs.is_empty() {
                self.run_groups.remove(group);
            }
        }
        self.grouped_runs.remove(&id);
    }

    /// The job-level concurrency groups held now (by jobs holding slots),
    /// by run.
    pub(super) fn held_groups(&self) -> dispatch::Groups {
        let mut groups = dispatch::Groups::new();
        for id in &self.grouped_runs {
            let Some(run) = self.runs.get(id) else { continue };
            for (name, job) in &run.jobs {
                if let (true, Some(spec)) = (job.state.holds_slot(), run.spec(name))
                    && let Some(c) = &spec.concurrency
                {
                    groups.insert(machine::expand(run, spec, &c.group), *id);
                }
            }
        }
        groups
    }

    /// Why run `run` may not start its jobs yet: an older run of its
    /// pipeline's concurrency group is unfinished.
    pub(super) fn gate(&self, run: &Run) -> Option<String> {
        let group = run.record.group.as_ref()?;
        let owner = *self.run_groups.get(group)?.first()?;
        (owner != run.record.id).then(|| format!("concurrency group {group} (run {owner})"))
    }

    /// Feeds one input to a run's machine, stages what changed for the
    /// burst's commit, then acts (deliveries wait for the commit).
    pub(super) fn apply(&mut self, run_id: RunId, input: Input, now: Now) {
        let Some(run) = self.runs.remove(&run_id) else { return };
        let (mut run, effects) = machine::step(run, input, now.ms);
        trace_effects(&mut run, &effects, now.ms);
        for effect in &effects {
            match effect {
                Effect::PersistRun => {
                    self.pending.insert(keys::run(run_id), encode(&run.record));
                    self.pending.insert(keys::run_index(run_id), encode(&RunSummary::of(&run.record)));
                }
                Effect::PersistJob(job) => {
                    let record = &run.jobs[job];
                    self.pending.insert(keys::job(run_id, job), encode(record));
                    // Assigned, cancelled, failed: out of the queue.
                    if record.state != JobState::Queued {
                        self.queue.remove(run_id, job);
                    }
                    if let Some(a) = &record.artifact {
                        let expire = run.spec(job).and_then(|s| s.artifacts.as_ref()?.expire);
                        let expire = expire.unwrap_or(self.config.artifact_expire);
                        let expires_ms = now.ms.saturating_add(expire.as_millis() as u64);
                        let record = ArtifactRecord { sha256: a.sha256.clone(), expires_ms };
                        self.pending.insert(keys::artifact(run_id, job), encode(&record));
                    }
                    if record.state == JobState::Succeeded
                        && let (Some(start), Some(end)) = (record.started_ms, record.finished_ms)
                    {
                        /// Successes remembered per job for its estimate.
                        const SAMPLES: usize = 10;
                        let key = (run.record.pipeline.name.clone(), job.clone());
                        let samples = self.durations.entry(key).or_default();
                        samples.push_back(end.saturating_sub(start));
                        if samples.len() > SAMPLES {
                            samples.pop_front();
                        }
                    }
                    if record.state.is_terminal() {
                        record_finished(record);
                        self.ready_at.remove(&(run_id, job.clone()));
                    }
                }
                _ => {}
            }
        }
        self.runs.insert(run_id, run);
        self.act(run_id, effects, now);
    }

    /// Carries out the effects other than persistence: the queue, the
    /// fleet (assignments, cancels, releases) and finished runs.
    fn act(&mut self, run_id: RunId, effects: Vec<Effect>, now: Now) {
        for effect in effects {
            match effect {
                Effect::PersistRun | Effect::PersistJob(_) => {}
                Effect::Enqueue(job) => {
                    self.ready_at.insert((run_id, job.clone()), now.at);
                    self.enqueue(run_id, job);
                }
                Effect::SendAssign { job, attempt, agent } => {
                    let id = AttemptId { run: run_id, job, attempt };
                    // A new attempt number: nothing of its log exists yet.
                    self.log_ends.insert(id.clone(), 0);
                    if let Some(assignment) = self.assignment(id) {
                        let fx = self.fleet.assign(agent, assignment, now.at);
                        self.fleet_effect(fx, now, false);
                    }
                }
                Effect::SendCancel { job, attempt, agent } => {
                    let id = AttemptId { run: run_id, job, attempt };
                    let fx = self.fleet.cancel(agent, &id, RUN_CANCELLED);
                    self.fleet_effect(fx, now, false);
                }
                Effect::Release { job, attempt, agent: _ } => {
                    let id = AttemptId { run: run_id, job, attempt };
                    self.fleet.release(&id);
                    self.log_ends.remove(&id);
                    self.dispatch_needed = true;
                }
                Effect::Deadline => {
                    self.blocked.insert(run_id);
                }
                Effect::StartDeploy { job, attempt: _ } => self.start_deploy(run_id, &job),
                Effect::CancelDeploy { job, attempt, reason } => self.cancel_deploy(run_id, job, attempt, reason),
                Effect::RunFinished(state) => {
                    info!(run = run_id, state = state.as_str(), "run finished");
                    self.queue.remove_run(run_id);
                    if let Some(run) = self.runs.remove(&run_id) {
                        self.active_jobs -= run.jobs.len();
                        self.untrack_groups(run_id, run.record.group.as_deref());
                        self.ranks.remove(&run_id);
                    }
                    // A run of its concurrency group may start now.
                    self.dispatch_needed = true;
                }
            }
        }
    }

    /// What the agent is sent for attempt `id` of a job of an active run.
    pub(super) fn assignment(&self, id: AttemptId) -> Option<Assignment> {
        let run = self.runs.get(&id.run)?;
        let spec = run.spec(&id.job)?;
        let mut env = run.record.pipeline.env.clone();
        env.extend(spec.env.clone());
        // `${{ }}` filled in, in env values and run strings.
        for value in env.values_mut() {
            *value = machine::expand(run, spec, value);
        }
        let steps = spec
            .steps
            .iter()
            .map(|s| drover_pipeline::StepSpec { run: machine::expand(run, spec, &s.run), ..s.clone() })
            .collect();
        let checkout = match (&run.record.source.repo, &run.record.source.commit) {
            (Some(repo), Some(commit)) => Some((repo.clone(), commit.clone())),
            _ => None,
        };
        let job = run.jobs.get(&id.job)?;
        let traceparent = (!run.record.trace.trace_id.is_empty() && !job.trace.attempt_span_id.is_empty())
            .then(|| trace::traceparent(&run.record.trace.trace_id, &job.trace.attempt_span_id));
        // The artifacts of the jobs it needs, which have all succeeded.
        // (`needs: [{job: build, artifacts: false}]` leaves one out.)
        let inputs = spec
            .needs
            .iter()
            .filter(|need| !spec.skip_artifacts_of.contains(need))
            .filter_map(|need| Some((need.clone(), run.jobs.get(need)?.artifact.clone()?)))
            .collect();
        Some(Assignment {
            id,
            log_cap: self.config.log_cap,
            traceparent,
            work: Work::Job {
                steps,
                env,
                timeout: spec.timeout,
                checkout,
                artifacts: spec.artifacts.clone(),
                inputs,
                secrets: spec.secrets.clone(),
                cache: spec.cache.clone(),
                need_results: machine::need_results(run, spec),
                branch: run.record.source.branch.clone(),
                tag: run.record.source.tag.clone(),
                matrix: spec.matrix.as_ref().map(|m| m.values.clone()).unwrap_or_default(),
                event: run.record.source.event,
                withhold_secrets: run.record.source.untrusted.then(|| withheld_from(&run.record.source)),
            },
        })
    }

    /// Whether blob `sha256` is an input of `attempt`, which agent `name`
    /// holds: a job downloads only what its own attempt needs.
    pub(super) fn may_fetch(&self, name: &str, attempt: &AttemptId, sha256: &str) -> bool {
        self.fleet.held_by(name).filter(|id| *id == attempt).any(|id| {
            let Some(run) = self.runs.get(&id.run) else { return false };
            let Some(spec) = run.spec(&id.job) else { return false };
            spec.needs
                .iter()
                .filter(|need| !spec.skip_artifacts_of.contains(need))
                .any(|need| run.jobs.get(need).and_then(|j| j.artifact.as_ref()).is_some_and(|a| a.sha256 == sha256))
        })
    }

    /// Whether `by` may approve or reject job `job` of run `run` now.
    pub(super) fn may_decide(&self, id: RunId, job: &str, by: &str) -> Result<(), SchedError> {
        let run = self
            .runs
            .get(&id)
            .ok_or_else(|| SchedError::NotFound(format!("run {id} is not running (finished, or never was)")))?;
        let (Some(spec), Some(record)) = (run.spec(job), run.jobs.get(job)) else {
            return Err(SchedError::NotFound(format!("run {id} has no job {job:?}")));
        };
        let Some(gate) = &spec.approval else {
            return Err(SchedError::NotWaiting(format!("job {job} of run {id} has no `approval:`; nothing to decide")));
        };
        if record.approval.as_ref().is_none_or(|a| a.approved.is_some()) || record.state != JobState::Pending {
            let now = match &record.approval {
                Some(a) if a.approved.is_some() => record.message.clone(),
                _ => format!("it is {}", record.state.as_str()),
            };
            return Err(SchedError::NotWaiting(format!("job {job} of run {id} is not waiting for approval ({now})")));
        }
        if !gate.approvers.iter().any(|a| a == by) {
            return Err(SchedError::NotApprover(format!(
                "{by} may not approve job {job} of run {id}; its approvers are {}",
                gate.approvers.join(", ")
            )));
        }
        Ok(())
    }

    /// Remembers what a job's cache did on agent `name`: the agent now
    /// keeps the entry it restored or saved, and the job's key is the one a
    /// warm agent should hold next time.
    pub(super) fn note_cache(&mut self, name: &str, id: &AttemptId, note: &CacheNote) {
        /// The most entries remembered per agent (as its Hello sends).
        const MAX_WARM: usize = 1000;
        let Some(run) = self.runs.get(&id.run) else { return };
        let sid = crate::caches::scope_id(&crate::caches::scope_of(&run.record.source, &run.record.pipeline.name));
        let held = self.warm.entry(name.to_string()).or_default();
        for key in note.restored.iter().chain(note.saved.then_some(&note.key)) {
            if held.len() < MAX_WARM {
                held.insert(format!("{sid}/{key}"));
            }
        }
        self.last_keys.insert((sid.clone(), id.job.clone()), format!("{sid}/{}", note.key));
    }

    /// What makes an agent warm for the queued job `job` of `run`, whose
    /// cache is `spec`.
    pub(super) fn warm_for(&self, run: &Run, job: &str, spec: &drover_pipeline::CacheSpec) -> Warm {
        let sid = crate::caches::scope_id(&crate::caches::scope_of(&run.record.source, &run.record.pipeline.name));
        Warm {
            exact: self.last_keys.get(&(sid.clone(), job.to_string())).cloned(),
            prefixes: spec.restore_keys.iter().map(|p| format!("{sid}/{p}")).collect(),
        }
    }

    /// The cache scope of attempt `id`, when agent `name` holds it and its
    /// job declares a cache.
    pub(super) fn cache_scope(&self, name: &str, id: &AttemptId) -> Option<String> {
        if !self.fleet.held_by(name).any(|held| held == id) {
            return None;
        }
        let run = self.runs.get(&id.run)?;
        run.spec(&id.job)?.cache.as_ref()?;
        Some(crate::caches::scope_of(&run.record.source, &run.record.pipeline.name))
    }

    /// Fails the blocked jobs whose queue timeout has passed
    /// ([`Input::Deadlines`]), and forgets runs with no blocked job left.
    pub(super) fn expire_blocked(&mut self, now: Now) {
        let runs = &self.runs;
        self.blocked.retain(|id| runs.get(id).is_some_and(|r| r.next_deadline().is_some()));
        let due: Vec<RunId> = self
            .blocked
            .iter()
            .filter(|id| self.runs[id].next_deadline().is_some_and(|t| t <= now.ms))
            .copied()
            .collect();
        for id in due {
            self.apply(id, Input::Deadlines, now);
        }
    }
}

/// Keeps the trace fields of the records up to date with what the step did,
/// and emits the spans of what it ended. Runs before the records are
/// staged, so the fields are written with the step.
/// The repository an untrusted pull-request run came from, as its trigger
/// names it (`pr/REPO/...`), else its URL.
fn withheld_from(source: &Source) -> String {
    let named = source.trigger.as_deref().and_then(crate::core::triggers::repo_of_key);
    named.map(str::to_owned).or_else(|| source.repo.clone()).unwrap_or_default()
}

fn trace_effects(run: &mut Run, effects: &[Effect], now: u64) {
    for effect in effects {
        match effect {
            Effect::Enqueue(job) | Effect::StartDeploy { job, .. } => {
                if let Some(j) = run.jobs.get_mut(job) {
                    j.trace.first_ready_ms.get_or_insert(now);
                    j.trace.ready_ms = Some(now);
                }
            }
            Effect::SendAssign { job, .. } => {
                if let Some(j) = run.jobs.get_mut(job) {
                    j.trace.attempt_span_id = trace::new_span_id();
                    j.trace.assigned_ms = Some(now);
                }
            }
            _ => {}
        }
    }
    for effect in effects {
        match effect {
            Effect::SendAssign { job, agent, .. } => spans::dispatch(&run.record, job, &run.jobs[job], agent, now),
            Effect::Release { job, attempt, agent } => {
                spans::attempt(&run.record, job, &run.jobs[job], *attempt, agent, now)
            }
            Effect::PersistJob(job) if run.jobs[job].state.is_terminal() => {
                spans::job(&run.record, job, &run.jobs[job], now)
            }
            Effect::RunFinished(state) => spans::run(&run.record, *state, now),
            _ => {}
        }
    }
}

/// Counts a job that reached a final state, and how long its last attempt
/// ran.
fn record_finished(job: &JobRecord) {
    let Some(i) = result_index(job.state.as_str()) else { return };
    METRICS.jobs_finished[i].inc();
    if let (Some(start), Some(end)) = (job.started_ms, job.finished_ms) {
        METRICS.job_duration[i].observe(end.saturating_sub(start) as f64 / 1000.0);
    }
}
