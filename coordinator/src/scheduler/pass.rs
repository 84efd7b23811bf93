//! A dispatch pass: matching queued jobs to the fleet's free slots, walking
//! the queue (`queue.rs`) only as far as slots last, and saying what the
//! rest wait for. Synchronous, like the rest of the burst logic.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::info;

use super::queue::Slot;
use super::state::State;
use crate::core::dispatch::{self, Ready, Warm};
use crate::core::fleet::Now;
use crate::core::machine::{self, Input, JobState, Run, RunId};
use crate::metrics::METRICS;

impl State {
    /// What the dispatcher needs of queued job `job` of `run`.
    fn hint<'r>(&self, run: &'r Run, job: &str) -> Hint<'r> {
        let spec = run.spec(job).expect("queued job exists");
        Hint {
            runs_on: &spec.runs_on,
            avoid: run.jobs[job].last_agent.as_deref(),
            warm: spec
                .cache
                .as_ref()
                .filter(|_| self.config.cache_affinity)
                .map(|cache| self.warm_for(run, job, cache)),
            // Concurrency groups, filled in, for the jobs that have one.
            group: spec.concurrency.as_ref().map(|c| machine::expand(run, spec, &c.group)),
            gate: run.record.group.as_ref().and_then(|_| self.gate(run)),
        }
    }

    /// The run of a queue entry whose job is still queued.
    fn queued(&self, (run, job): &(RunId, String)) -> Option<&Run> {
        self.runs.get(run).filter(|r| r.jobs.get(job).is_some_and(|j| j.state == JobState::Queued))
    }

    /// Matches queued jobs to the fleet's free slots ([`dispatch::Planner`]),
    /// assigns what fits and says what the rest wait for. It walks the
    /// queue only until every slot is taken, and works out wait reasons
    /// only for the jobs whose reason may have changed: those it looked at,
    /// those queued since the last pass, and every one when the fleet
    /// changed.
    pub(super) fn dispatch(&mut self, now: Now) {
        let fresh = self.queue.take_fresh();
        if self.queue.is_empty() {
            return;
        }
        // The agents that can take a job, lent by the fleet: a pass looks
        // at each label set, not at each agent (`dispatch::FreeIndex`).
        let mut index = self.fleet.lend_index();
        let (assign, reasons, held, gone, looked_at) = {
            let mut groups = if self.grouped_runs.is_empty() { dispatch::Groups::new() } else { self.held_groups() };
            let mut planner = dispatch::Planner::over(&index, &mut groups);
            let caches = |agent: &str| self.warm.get(agent);
            // The agents assigned to, numbered for the plan.
            let mut chosen: Vec<String> = Vec::new();
            // The entries offered, in order; those whose job is no longer
            // queued (cancelled, run gone), to drop.
            let mut window: Vec<Slot> = Vec::new();
            let mut gone: Vec<Slot> = Vec::new();
            let mut last = None;
            for (slot, entry) in self.queue.iter() {
                if planner.full() {
                    break;
                }
                last = Some(slot);
                let Some(run) = self.queued(entry) else {
                    gone.push(slot);
                    continue;
                };
                let hint = self.hint(run, &entry.1);
                let at = |name: &str| {
                    chosen.push(name.to_string());
                    chosen.len() - 1
                };
                planner.offer_indexed(window.len(), &hint.ready(), entry.0, &mut index, &caches, at);
                window.push(slot);
            }
            let plan = planner.finish(window.len());
            let held: Vec<(Slot, String, u64)> =
                plan.held.iter().map(|(i, why, holder)| (window[*i], why.clone(), *holder)).collect();
            let mut why: HashMap<usize, String> = plan.warm.iter().cloned().collect();
            // Say what a job waits for when it has no reason yet, or when
            // the fleet changed; otherwise the reason it has still holds.
            let is_held: HashSet<usize> = plan.held.iter().map(|(i, _, _)| *i).collect();
            let mut explain: Vec<Slot> =
                plan.waiting.iter().filter(|i| !is_held.contains(i)).map(|i| window[*i]).collect();
            if self.reasons_stale {
                explain.extend(self.queue.after(last).map(|(slot, _)| slot));
            } else {
                explain.extend(fresh.into_iter().filter(|slot| last.is_none_or(|last| *slot > last)));
            }
            let looked_at = (window.len() + gone.len() + explain.len()) as u64;
            // The jobs whose reason is due: those without one, or all when
            // the fleet changed.
            let due: Vec<(Slot, Hint<'_>)> = explain
                .into_iter()
                .filter_map(|slot| {
                    let entry = self.queue.get(slot)?;
                    let run = self.queued(entry)?;
                    let job = &entry.1;
                    if !self.reasons_stale && !run.jobs[job].waiting_for.is_empty() {
                        return None;
                    }
                    Some((slot, self.hint(run, job)))
                })
                .collect();
            // A reason looks at every agent, busy or not, so the list is
            // made only when one is due, less the slots this pass took.
            let mut agents = Vec::new();
            if !due.is_empty() {
                agents = self.fleet.slots();
                for &(_, c) in &plan.assign {
                    if let Ok(k) = agents.binary_search_by(|a| a.name.cmp(chosen[c].as_str())) {
                        agents[k].free = agents[k].free.saturating_sub(1);
                    }
                }
            }
            let reasons: Vec<(Slot, String, bool)> = due
                .iter()
                .map(|(slot, hint)| {
                    let ready = hint.ready();
                    (*slot, dispatch::wait_reason(&ready, &agents), dispatch::blocked(&ready, &agents))
                })
                .collect();
            let assign: Vec<(Slot, String, Option<String>)> =
                plan.assign.iter().map(|&(i, agent)| (window[i], chosen[agent].clone(), why.remove(&i))).collect();
            (assign, reasons, held, gone, looked_at)
        };
        self.fleet.return_index(index, assign.iter().map(|(_, agent, _)| agent.as_str()));
        self.reasons_stale = false;
        self.looked_at += looked_at;
        METRICS.dispatch_looked_at.add(looked_at);
        for slot in gone {
            self.queue.remove_slot(slot);
        }
        // An assigned job leaves the queue as its record changes (`apply`),
        // so each entry is read before its input is applied.
        for (slot, agent, why) in assign {
            let Some((run, job)) = self.queue.get(slot).cloned() else { continue };
            self.apply(run, Input::Assign { job, agent, why }, now);
        }
        for (slot, reason, blocked) in reasons {
            let Some((run, job)) = self.queue.get(slot).cloned() else { continue };
            if blocked {
                self.blocked.insert(run);
            }
            self.apply(run, Input::Waiting { job, reason, blocked }, now);
        }
        // Jobs a concurrency group holds; one whose group cancels in
        // progress cancels the older run that holds it.
        for (slot, reason, holder) in held {
            let Some((run, job)) = self.queue.get(slot).cloned() else { continue };
            let cancels = self
                .runs
                .get(&run)
                .and_then(|r| r.spec(&job)?.concurrency.as_ref())
                .is_some_and(|c| c.cancel_in_progress);
            if cancels && holder != 0 && holder < run && self.runs.contains_key(&holder) {
                info!(run = holder, by = run, "cancelled by a newer job of its concurrency group");
                self.apply(holder, Input::Cancel, now);
            }
            self.apply(run, Input::Waiting { job, reason, blocked: false }, now);
        }
        METRICS.queue_depth.set(self.queue.len() as i64);
    }

    /// Queues job `job` of run `run` for dispatch, in critical-path order.
    pub(super) fn enqueue(&mut self, run: RunId, job: String) {
        let rank = self.ranks.get(&run).and_then(|r| r.get(&job)).copied().unwrap_or(0);
        self.queue.push(run, job, rank);
        self.dispatch_needed = true;
    }
}

/// What the dispatcher needs of one queued job; [`Ready`] borrows it.
struct Hint<'r> {
    runs_on: &'r BTreeMap<String, String>,
    avoid: Option<&'r str>,
    warm: Option<Warm>,
    group: Option<String>,
    gate: Option<String>,
}

impl Hint<'_> {
    fn ready(&self) -> Ready<'_> {
        Ready {
            runs_on: self.runs_on,
            avoid: self.avoid,
            warm: self.warm.as_ref(),
            group: self.group.as_deref(),
            gate: self.gate.as_deref(),
        }
    }
}
