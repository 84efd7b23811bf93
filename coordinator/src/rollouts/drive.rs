//! The rollout controller's synchronous core: the rollouts in memory, each
//! input applied to its machine (`drover_deploy::rollout::step`), and what
//! that asks for staged: store writes ([`Driver::ops`]), then actions to
//! send ([`Driver::unsent`]), then runs to tell ([`Driver::finished`]). The
//! loop in `mod.rs` commits the writes before it sends anything, so an
//! action that reaches a node is always in the store first.
//!
//! - **Queueing.** Only one rollout of a service in an environment runs at
//!   a time. A newer one waits (`on_newer: queue`) or aborts the running one
//!   and waits for it to have gone back (`supersede`); the oldest waiting
//!   one starts when the service is free. Its nodes are chosen when it
//!   starts, not when it was asked for.
//! - **Reports.** A node's report counts when it answers the action in
//!   flight on that node ([`RolloutRecord::inflight`]); anything else is
//!   stale (an action sent again after a failover has a new number).
//! - **Nodes away.** An action to an agent that is not connected waits and
//!   is sent when it connects. A node whose agent stays away for
//!   [`NODE_AWAY_GRACE`] while an action is in flight has failed, and the
//!   rollout follows its policy; an agent that comes back gets its actions
//!   again (an install of the release it already serves answers at once).
//! - **Deadlines.** Past its progress deadline a rollout is aborted, and
//!   goes back. Timed canary pauses end on the tick (`tick.rs`, with a new
//!   term's resume).
//! - **Guards.** A one-way door freezes rather than go back, an automatic
//!   rollback skips rejected releases, and an automatic change never
//!   installs an older build (`guards.rs`); a frozen environment holds
//!   what would start or go on (`freeze.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drover_deploy::rollout::{self, Input, NodeState, Phase};

use super::records::{self, Catalogued, Deployed, JobRef, RolloutRecord};
use crate::core::fleet::{DeployAction, DeployKind, DeployReport, DeployState, ReleaseRef};
use crate::scheduler::{DeployJob, Verb};
use crate::store::Op;

/// How long a node's agent may be away, with an action in flight, before
/// the node counts as failed.
pub const NODE_AWAY_GRACE: Duration = Duration::from_secs(15);

/// A run to tell how its deploy job's rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub job: JobRef,
    pub succeeded: bool,
    pub message: String,
}

#[derive(Default)]
pub struct Driver {
    pub records: BTreeMap<u64, RolloutRecord>,
    pub last_id: u64,
    pub catalog: BTreeMap<(String, String, String), Catalogued>,
    /// What each node of each (environment, service) serves.
    pub deployed: BTreeMap<(String, String, String), Deployed>,
    /// Staged writes, for the next commit.
    pub ops: Vec<Op>,
    /// Actions to send once committed, by (rollout, node); kept until the
    /// node's agent takes them.
    pub unsent: BTreeMap<(u64, String), DeployAction>,
    pub finished: Vec<Finished>,
    /// Rollouts that may start now that their service is free.
    pub startable: BTreeSet<u64>,
    /// Since when each node with an action in flight has been away (ms).
    pub(super) away: BTreeMap<String, u64>,
    /// Spans to emit once committed (`super::trace`).
    pub spans: Vec<super::trace::Span>,
    /// Hook output for deploy jobs' logs, once committed.
    pub logs: Vec<super::hooks::LogOut>,
    /// Each environment's freeze, as the loop last read them.
    pub freezes: BTreeMap<String, crate::freezes::Freeze>,
    /// Each environment with deploy windows, as the loop last read them.
    pub windows: BTreeMap<String, crate::core::environments::Spec>,
    /// The environments frozen at the last read, to tell when a freeze
    /// begins or ends.
    pub frozen_envs: BTreeSet<String>,
    /// Notices for the notification targets, once committed
    /// (`super::notices`).
    pub notices: Vec<crate::notifications::Notice>,
    /// Rollouts that did not start because their environment is frozen or
    /// its windows are closed.
    pub(super) waiting_thaw: BTreeSet<u64>,
    /// `exec` metrics' measurements on nodes (`super::probe`).
    pub(super) probes: super::probe::Probes,
}

/// A release's version: the same bits at the same path, run the same way
/// (command, environment, port, health), are the same version in every
/// environment; a change to any of them is a new version, which a node
/// installs as one (an install of the version a node serves does nothing).
pub fn version_of(sha256: &str, path: &str, def: &drover_pipeline::deploy::ServiceSpec) -> String {
    use sha2::{Digest, Sha256};
    let def = serde_json::to_string(def).expect("a service definition serialises");
    let digest = Sha256::digest(format!("{sha256}:{path}:{def}").as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

impl Driver {
    pub(super) fn stage(&mut self, id: u64) {
        if let Some(rec) = self.records.get(&id) {
            self.ops.push(Op::put(records::record(id), serde_json::to_vec(rec).expect("a record serialises")));
        }
    }

    /// A deploy job to roll out (again, after a failover: then its record
    /// exists, and only its end is told again if it has one).
    pub fn start_job(&mut self, job: DeployJob, now_ms: u64) {
        let job_ref = JobRef { run: job.run, job: job.job.clone(), attempt: job.attempt };
        if let Some(rec) = self.records.values().find(|r| r.job.as_ref() == Some(&job_ref)) {
            let id = rec.id;
            if rec.is_finished() {
                self.tell(id);
            } else if job.cancelling {
                self.abort(id, "the run was cancelled".into(), now_ms);
            }
            return;
        }
        let spec = job.spec;
        let release = match &job.artifact {
            Some(a) => ReleaseRef {
                version: version_of(&a.sha256, &spec.artifact.path, &spec.service),
                sha256: a.sha256.clone(),
                size: a.size,
                path: spec.artifact.path.clone(),
                run: job.run.to_string(),
                commit: job.commit.clone().unwrap_or_default(),
                url: String::new(),
            },
            None => ReleaseRef {
                version: String::new(),
                sha256: String::new(),
                size: 0,
                path: spec.artifact.path.clone(),
                run: job.run.to_string(),
                commit: job.commit.clone().unwrap_or_default(),
                url: String::new(),
            },
        };
        self.last_id += 1;
        let id = self.last_id;
        self.ops.push(Op::put(records::SEQ, id.to_string()));
        let rec = RolloutRecord {
            id,
            env: spec.environment.clone(),
            service: spec.service.name.clone(),
            job: Some(job_ref),
            branch: job.branch.clone(),
            release: release.clone(),
            deploy: spec,
            rollout: None,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            message: String::new(),
            inflight: BTreeMap::new(),
            seq: 0,
            by: format!("run {} job {}", job.run, job.job),
            fast_track: false,
            trace: super::trace::begin(job.trace.clone(), now_ms),
            hook: None,
            batch_hooks: Default::default(),
            hook_failed: None,
            select: None,
            remove: false,
            hook_log: String::new(),
            analysing: None,
            held_by_freeze: None,
            guard_downgrade: true,
            analysis_runs: 0,
            background: None,
            split: None,
            measurements: Vec::new(),
            gates: Vec::new(),
            overridden: None,
            node_envs: BTreeMap::new(),
        };
        self.records.insert(id, rec);
        if job.artifact.is_none() {
            let from = self.records[&id].deploy.artifact.job.clone();
            self.end_unstarted(id, format!("job {from} packed no artifacts, so there is no release to deploy"), now_ms);
            return;
        }
        if job.cancelling {
            self.end_unstarted(id, "the run was cancelled before the rollout started".into(), now_ms);
            return;
        }
        self.admit(id, now_ms);
    }

    /// Marks `id` as startable when no older rollout of its service is
    /// unfinished; otherwise says what it waits for.
    pub(super) fn queue_or_start(&mut self, id: u64) {
        let Some(rec) = self.records.get(&id) else { return };
        let blocker = self.records.values().find(|r| r.id < id && r.shares(rec) && !r.is_finished()).map(|r| r.id);
        match blocker {
            None => {
                self.startable.insert(id);
            }
            Some(older) => {
                let rec = self.records.get_mut(&id).expect("checked");
                rec.message = format!("waiting for rollout {older} of {} in {} to finish", rec.service, rec.env);
            }
        }
    }

    /// Starts rollout `id` with the machine the plan made, or ends it with
    /// the plan's refusal.
    pub fn begin(&mut self, id: u64, planned: Result<rollout::Rollout, String>, now_ms: u64) {
        self.startable.remove(&id);
        let Some(rec) = self.records.get_mut(&id).filter(|r| r.rollout.is_none() && !r.is_finished()) else {
            return;
        };
        match planned {
            Err(why) => self.end_unstarted(id, why, now_ms),
            Ok(machine) => {
                rec.rollout = Some(machine);
                rec.started_ms = Some(now_ms);
                rec.message.clear();
                self.start_or_hook(id, now_ms);
            }
        }
    }

    /// The release each node of `env` serves of `service`, to go back to.
    pub fn previous(&self, env: &str, service: &str) -> BTreeMap<String, String> {
        self.deployed
            .iter()
            .filter(|((e, s, _), _)| e == env && s == service)
            .map(|((_, _, node), d)| (node.clone(), d.release.version.clone()))
            .collect()
    }

    /// Ends a rollout that never started (refused, or aborted while queued).
    pub(super) fn end_unstarted(&mut self, id: u64, why: String, now_ms: u64) {
        let Some(rec) = self.records.get_mut(&id) else { return };
        rec.finished_ms = Some(now_ms);
        rec.message = why;
        self.stage(id);
        self.tell(id);
        self.free(id);
    }

    /// Tells the run how rollout `id` ended.
    pub(super) fn tell(&mut self, id: u64) {
        let Some(rec) = self.records.get(&id) else { return };
        let Some(job) = rec.job.clone() else { return };
        let succeeded = rec.rollout.as_ref().is_some_and(|r| r.phase == Phase::Succeeded) && rec.hook_failed.is_none();
        let message = match &rec.hook_failed {
            Some(why) => format!("{}, but {why}", rec.message),
            None => rec.message.clone(),
        };
        self.finished.push(Finished { job, succeeded, message });
    }

    /// Rollout `id` ended: the next one of its service may start, in each
    /// of its environments.
    pub(super) fn free(&mut self, id: u64) {
        let Some(rec) = self.records.get(&id) else { return };
        let waiting: Vec<u64> = self
            .records
            .values()
            .filter(|r| r.shares(rec) && !r.is_finished() && r.rollout.is_none())
            .map(|r| r.id)
            .collect();
        // Each starts only if nothing older of its own waits too.
        for next in waiting {
            self.queue_or_start(next);
        }
        self.prune();
    }

    /// Stops rollout `id` and sends it back, whatever it is.
    pub(super) fn abort_back(&mut self, id: u64, reason: String, now_ms: u64) {
        match self.records.get(&id) {
            Some(r) if r.is_finished() => {}
            Some(r) if r.rollout.is_none() => {
                self.end_unstarted(id, format!("aborted before it started: {reason}"), now_ms)
            }
            Some(_) => {
                self.apply(id, Input::Abort { reason }, now_ms);
            }
            None => {}
        }
    }

    /// Applies one input to rollout `id` and carries out what it asks.
    /// Returns whether anything changed.
    pub fn apply(&mut self, id: u64, input: Input, now_ms: u64) -> bool {
        let Some(rec) = self.records.get_mut(&id) else { return false };
        let Some(machine) = rec.rollout.take() else { return false };
        let (phase_before, step_before) = (machine.phase, machine.step);
        let operator_pause = matches!(input, Input::Pause);
        let (machine, fx) = rollout::step(machine, input, now_ms);
        let (phase_after, step_after) = (machine.phase, machine.step);
        // A one-way door that fails pauses (its on_failure): it froze.
        let froze = (rec.deploy.irreversible
            && !operator_pause
            && phase_before == Phase::Progressing
            && phase_after == Phase::Paused
            && machine.nodes.iter().any(|n| n.state == NodeState::Failed))
        .then(|| machine.message.clone());
        rec.rollout = Some(machine);
        let changed = !fx.is_empty();
        let beside = matches!(rec.deploy.strategy, drover_pipeline::deploy::Strategy::BlueGreen);
        let mut sends = Vec::new();
        let mut ended = None;
        let mut verdict_asked = None;
        // An analysis under way ends with the step's progress: a pause, a
        // rollback or the end (resuming asks again).
        if phase_after != Phase::Progressing {
            rec.analysing = None;
        }
        // A background analysis measures while the rollout goes forward.
        if !matches!(phase_after, Phase::Progressing | Phase::Paused) {
            rec.background = None;
        }
        let started = phase_before == Phase::Pending && phase_after == Phase::Progressing;
        for effect in fx {
            let kind = match effect {
                rollout::Effect::Install { node, .. } if rec.remove => {
                    Some((node, DeployKind::Rollback { to: None, def: None }))
                }
                rollout::Effect::Install { node, .. } => Some((
                    node,
                    DeployKind::Install { release: rec.release.clone(), def: rec.deploy.service.clone(), beside },
                )),
                rollout::Effect::Rollback { node, to } => {
                    let env = rec.env_of(&node).to_owned();
                    let def = to
                        .as_ref()
                        .and_then(|v| self.catalog.get(&(env, rec.service.clone(), v.clone())))
                        .map(|c| c.def.clone());
                    Some((node, DeployKind::Rollback { to, def }))
                }
                rollout::Effect::Switch { node } => {
                    Some((node, DeployKind::Switch { version: rec.release.version.clone() }))
                }
                rollout::Effect::Finished(phase) => {
                    ended = Some(phase);
                    None
                }
                rollout::Effect::AwaitVerdict { step } => {
                    verdict_asked = Some(step);
                    None
                }
                _ => None,
            };
            if let Some((node, kind)) = kind {
                rec.seq += 1;
                rec.inflight.insert(node.clone(), rec.seq);
                sends.push((
                    node.clone(),
                    DeployAction { id: format!("{id}/{}", rec.seq), service: rec.service.clone(), kind },
                ));
            }
        }
        if phase_after == Phase::RollingBack && phase_before != Phase::RollingBack {
            self.trace_step(id, "rollback".into(), now_ms);
        } else if step_after != step_before {
            self.trace_step(id, format!("step {step_after}"), now_ms);
        }
        let installs = phase_after == Phase::Progressing
            && (started || step_after != step_before)
            && sends.iter().any(|(_, a)| matches!(a.kind, DeployKind::Install { .. }));
        for (node, action) in sends {
            self.trace_action(id, &node, action.kind.verb(), now_ms);
            self.unsent.insert((id, node), action);
        }
        if installs {
            self.restart_baseline(id);
        }
        if started {
            self.begin_background(id, now_ms);
            let nodes = self.records[&id].rollout.as_ref().map_or(0, |m| m.nodes.len());
            let release = self.records[&id].release.version.clone();
            self.notify(
                id,
                crate::notifications::Kind::RolloutStarted,
                format!("rolling {release} out to {nodes} node(s)"),
                now_ms,
            );
        }
        if let Some(step) = verdict_asked {
            self.begin_analysis(id, step, now_ms);
        }
        if let Some(why) = froze {
            self.freeze(id, &why);
        }
        if let Some(phase) = ended {
            let rec = self.records.get_mut(&id).expect("exists");
            rec.finished_ms = Some(now_ms);
            let machine_message = rec.rollout.as_ref().map(|r| r.message.clone()).unwrap_or_default();
            let nodes = rec.rollout.as_ref().map_or(0, |r| r.nodes.len());
            rec.message = match phase {
                Phase::Succeeded if rec.remove => format!("stopped on {nodes} node(s)"),
                Phase::Succeeded => format!("rolled out {} to {nodes} node(s)", rec.release.version),
                Phase::RolledBack => format!("rolled back: {machine_message}"),
                Phase::Aborted if rec.rollout.as_ref().is_some_and(|m| m.started_ms.is_none()) => {
                    format!("aborted before any node was touched: {machine_message}")
                }
                Phase::Aborted => format!("aborted and rolled back: {machine_message}"),
                _ => format!("failed: {machine_message}; some node could not go back"),
            };
            self.unsent.retain(|(r, _), _| *r != id);
            self.trace_end(id, now_ms);
            self.notify_end(id, phase, now_ms);
            if !self.end_hook(id, phase, now_ms) {
                self.tell(id);
                self.free(id);
            }
        }
        if changed {
            self.stage(id);
        }
        changed
    }

    /// A node's report on an action.
    pub fn report(&mut self, r: DeployReport, now_ms: u64) {
        if self.probe_report(&r) || self.restart_report(&r) {
            return;
        }
        let Some(rec) = self.records.get(&r.rollout) else { return };
        let answers_hook = rec.hook.as_ref().is_some_and(|h| h.seq == r.seq && h.node == r.node);
        if (rec.inflight.get(&r.node) != Some(&r.seq) && !answers_hook) || rec.service != r.service {
            return;
        }
        if self.hook_report(&r, now_ms) {
            return;
        }
        self.feed(r, now_ms);
    }

    /// A report that answers a node's action, into the machine.
    pub(super) fn feed(&mut self, r: DeployReport, now_ms: u64) {
        let Some(rec) = self.records.get(&r.rollout) else { return };
        let node = r.node.clone();
        let input = match r.state {
            DeployState::Installed => Input::NodeInstalled { node: node.clone() },
            DeployState::Healthy => Input::NodeHealthy { node: node.clone() },
            DeployState::Switched => Input::NodeSwitched { node: node.clone() },
            DeployState::RolledBack => Input::NodeRolledBack { node: node.clone() },
            DeployState::Failed => Input::NodeFailed { node: node.clone(), reason: r.message.clone() },
            DeployState::HookPassed | DeployState::HookFailed => return,
        };
        let before = rec.rollout.as_ref().and_then(|m| m.node(&node)).map(|n| n.state);
        self.unsent.remove(&(r.rollout, node.clone()));
        self.trace_report(r.rollout, &node, r.state, &r.message, now_ms);
        match self.removal_inputs(r.rollout, &node).filter(|_| r.state == DeployState::RolledBack) {
            Some(inputs) => inputs.into_iter().for_each(|input| {
                self.apply(r.rollout, input, now_ms);
            }),
            None => {
                self.apply(r.rollout, input, now_ms);
            }
        }
        let rec = &self.records[&r.rollout];
        let after = rec.rollout.as_ref().and_then(|m| m.node(&node)).map(|n| n.state);
        if before == after {
            return;
        }
        let beside = matches!(rec.deploy.strategy, drover_pipeline::deploy::Strategy::BlueGreen);
        let serves = match after {
            Some(NodeState::Healthy) if rec.remove => Some(None),
            Some(NodeState::Healthy) if !beside => Some(Some(rec.release.clone())),
            Some(NodeState::Switched) => Some(Some(rec.release.clone())),
            Some(NodeState::RolledBack) => {
                let to = rec.rollout.as_ref().and_then(|m| m.node(&node)).and_then(|n| n.rollback_to.clone());
                Some(
                    to.and_then(|v| self.catalog.get(&(rec.env_of(&node).to_owned(), rec.service.clone(), v)))
                        .map(|c| c.release.clone()),
                )
            }
            _ => None,
        };
        let (env, service, id) = (rec.env_of(&node).to_owned(), rec.service.clone(), rec.id);
        let key = records::deployed(&env, &service, &node);
        match serves {
            Some(Some(release)) => {
                let d = Deployed {
                    node: node.clone(),
                    release,
                    rollout: id,
                    healthy: true,
                    since_ms: now_ms,
                    health_message: String::new(),
                    health_ms: now_ms,
                };
                self.ops.push(Op::put(key, serde_json::to_vec(&d).expect("serialises")));
                self.deployed.insert((env, service, node), d);
            }
            Some(None) => {
                self.ops.push(Op::delete(key));
                self.deployed.remove(&(env, service, node));
            }
            None => {}
        }
    }

    /// A node says how its live release of a service is: what `drover
    /// services` shows changes with it (in every environment where the node
    /// serves that release).
    pub fn health(&mut self, h: crate::core::fleet::ServiceHealth, now_ms: u64) {
        let keys: Vec<(String, String, String)> = self
            .deployed
            .iter()
            .filter(|((_, s, n), d)| *s == h.service && *n == h.node && d.release.version == h.version)
            .filter(|(_, d)| d.healthy != h.healthy || d.health_message != h.message)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let d = self.deployed.get_mut(&key).expect("listed above");
            d.healthy = h.healthy;
            d.health_message.clone_from(&h.message);
            d.health_ms = now_ms;
            let op = Op::put(records::deployed(&key.0, &key.1, &key.2), serde_json::to_vec(&*d).expect("serialises"));
            self.ops.push(op);
        }
    }

    /// An operator's command, by `by`; an error says why it does not apply.
    pub fn command(&mut self, id: u64, verb: Verb, by: &str, now_ms: u64) -> Result<(), String> {
        let rec = self.records.get(&id).ok_or_else(|| format!("there is no rollout {id}"))?;
        if rec.is_finished() {
            return Err(format!("rollout {id} has finished ({}): {}", rec.phase(), rec.message));
        }
        let phase = rec.phase();
        let input = match verb {
            Verb::Abort => {
                self.abort(id, format!("aborted by {by}"), now_ms);
                return Ok(());
            }
            Verb::Approve { gate, comment } => {
                return self.decide_gate(id, gate.as_deref(), by, true, &comment, now_ms);
            }
            Verb::Reject { gate, reason } => return self.decide_gate(id, gate.as_deref(), by, false, &reason, now_ms),
            Verb::Override { reason } => return self.override_hold(id, by, &reason, now_ms),
            Verb::Promote { full } => Input::Promote { full },
            Verb::Pause => Input::Pause,
            Verb::Resume => Input::Resume,
        };
        if rec.rollout.is_none() {
            return Err(format!("rollout {id} has not started: {}", rec.message));
        }
        let resume = matches!(input, Input::Resume);
        if self.apply(id, input, now_ms) {
            // A background analysis that paused it measures again.
            if resume && self.records.get(&id).is_some_and(|r| r.background.is_none()) {
                self.begin_background(id, now_ms);
            }
            Ok(())
        } else {
            let what = match verb {
                Verb::Promote { .. } => "it is not waiting for a promotion",
                Verb::Pause => "it is not progressing",
                Verb::Resume => "it is not paused",
                Verb::Abort | Verb::Approve { .. } | Verb::Reject { .. } | Verb::Override { .. } => {
                    unreachable!("handled above")
                }
            };
            Err(format!("rollout {id} is {phase}: {what}"))
        }
    }
}

#[cfg(test)]
mod tests;
