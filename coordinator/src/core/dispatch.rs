//! Matching queued jobs to agents: a pure function over the queue and the
//! connected agents. It decides which job goes where, and for each job it
//! cannot place, says in words what the job waits for.
//!
//! The queue is served in order (oldest run first, then file order within a
//! run). A job goes to the matching agent with the most free slots, which
//! spreads parallel jobs across agents instead of filling one first; a
//! retry prefers any other matching agent to the one its previous attempt
//! ran on. A draining agent (shutting down gracefully) gets nothing new.
//!
//! **Warm caches.** Among the free agents that match, a job with a `cache:`
//! goes first to one that holds its cache's entry locally (the key its job
//! saved or restored last time), then to one that holds an entry one of its
//! restore-keys would match, and only then by free slots: restoring from
//! the agent's own disk skips the download. It never waits for a warm agent
//! while another is free: warmth only orders the agents free now. (A
//! checkout of the same repository would be the next hint; agents keep no
//! checkouts between jobs yet, so there is none to prefer.)

use std::collections::{BTreeMap, BTreeSet};

pub mod critical;
mod index;
mod reasons;
mod warm;

pub use index::FreeIndex;
pub use reasons::{blocked, wait_reason};
pub use warm::Warm;
use warm::warm_reason;

/// An agent as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSlots<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub free: u32,
    /// Finishing what it runs before it exits: takes no new work.
    pub draining: bool,
    /// Why it takes no new work for now (e.g. low disk), or empty.
    pub unready: &'a str,
    /// The cache entries it holds locally, as "SCOPE_ID/KEY".
    pub caches: Option<&'a BTreeSet<String>>,
}

impl AgentSlots<'_> {
    /// Takes new work (whether or not it has a free slot).
    fn open(&self) -> bool {
        !self.draining && self.unready.is_empty()
    }
}

/// A queued job as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready<'a> {
    pub runs_on: &'a BTreeMap<String, String>,
    /// The agent where the job's previous attempt ran (and failed, or was
    /// lost): another free matching agent is preferred, so a retry does not
    /// land on the same broken disk or host while a healthy agent idles.
    pub avoid: Option<&'a str>,
    /// The cache entries that would make an agent warm for it.
    pub warm: Option<&'a Warm>,
    /// Its job-level concurrency group (`concurrency:`), filled in: while
    /// another job of the group holds a slot, it waits.
    pub group: Option<&'a str>,
    /// Why it may not start at all yet, when its run waits for an older
    /// run of its pipeline's concurrency group ("concurrency group X (run
    /// N)").
    pub gate: Option<&'a str>,
}

/// The job-level concurrency groups that a job holding a slot occupies, and
/// by which run: "concurrency group X (run N)" is what a job of the group
/// waits for.
pub type Groups = BTreeMap<String, u64>;

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// (queue entry, agent number) for every job to assign, in queue order.
    pub assign: Vec<(usize, usize)>,
    /// Queue entries that stay queued. Entries from `rest_from` on were not
    /// looked at, because no slot was left: they stay queued too.
    pub waiting: Vec<usize>,
    pub rest_from: usize,
    /// (queue entry, why) for the jobs that went to a warm agent.
    pub warm: Vec<(usize, String)>,
    /// (queue entry, what it waits for) for the jobs held by a concurrency
    /// group (also in `waiting`); with the run that holds the group.
    pub held: Vec<(usize, String, u64)>,
}

impl Plan {
    /// Every queue entry that stays queued.
    pub fn all_waiting(&self, queue_len: usize) -> impl Iterator<Item = usize> + '_ {
        self.waiting.iter().copied().chain(self.rest_from..queue_len)
    }
}

/// Whether an agent's labels satisfy a job's `runs-on`.
pub fn matches(runs_on: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    runs_on.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Decides which queued jobs go to which agents. `agents[i].free` is
/// decremented for each assignment. It stops looking once every slot is
/// taken, so a long queue on a busy fleet costs little; reasons for the
/// jobs that wait are the caller's to ask for ([`wait_reason`]), only for
/// the jobs whose reason may have changed.
pub fn plan(queue: &[Ready<'_>], agents: &mut [AgentSlots<'_>]) -> Plan {
    plan_with(queue, agents, &mut Groups::new(), &[])
}

/// [`plan`], with the job-level concurrency groups held now (`groups`,
/// updated as jobs of a group are assigned) and each entry's run number
/// (`runs`, parallel to `queue`; may be empty when no job has a group).
pub fn plan_with(queue: &[Ready<'_>], agents: &mut [AgentSlots<'_>], groups: &mut Groups, runs: &[u64]) -> Plan {
    let mut planner = Planner::new(agents, groups);
    for (i, job) in queue.iter().enumerate() {
        if planner.full() {
            return planner.finish(i);
        }
        planner.offer(i, job, runs.get(i).copied().unwrap_or_default(), agents);
    }
    planner.finish(queue.len())
}

/// [`plan_with`] one entry at a time, for a caller that works out each
/// entry's [`Ready`] only when the planner gets to it: offer entries in
/// queue order while the planner is not [`full`](Planner::full), then
/// [`finish`](Planner::finish) with the number offered. A burst then costs
/// what it looks at, not the length of the queue.
pub struct Planner<'g> {
    plan: Plan,
    total_free: u64,
    groups: &'g mut Groups,
}

impl<'g> Planner<'g> {
    pub fn new(agents: &[AgentSlots<'_>], groups: &'g mut Groups) -> Planner<'g> {
        let total_free = agents.iter().filter(|a| a.open()).map(|a| u64::from(a.free)).sum();
        Planner { plan: Plan::default(), total_free, groups }
    }

    /// A planner over the agents of `index` ([`Planner::offer_indexed`]).
    pub fn over(index: &FreeIndex, groups: &'g mut Groups) -> Planner<'g> {
        Planner { plan: Plan::default(), total_free: index.total_free(), groups }
    }

    /// Every slot is taken: the entries not offered yet stay queued.
    pub fn full(&self) -> bool {
        self.total_free == 0
    }

    /// Decides entry `i` (of run `run`), taking a slot of `agents` if it
    /// goes to one: the matching agent with a free slot that is best by
    /// (not the one to avoid, warmth, free slots, first in `agents`).
    pub fn offer(&mut self, i: usize, job: &Ready<'_>, run: u64, agents: &mut [AgentSlots<'_>]) {
        if self.held(i, job) {
            return;
        }
        let warmth = |a: &AgentSlots<'_>| job.warm.map_or(0, |w| w.level(a.caches).0);
        let best = agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.free > 0 && a.open() && matches(job.runs_on, a.labels))
            .max_by_key(|(idx, a)| (job.avoid != Some(a.name), warmth(a), a.free, std::cmp::Reverse(*idx)))
            .map(|(idx, _)| idx);
        match best {
            Some(a) => {
                let entry = job.warm.and_then(|w| w.level(agents[a].caches).1);
                agents[a].free -= 1;
                self.assigned(i, job, run, a, entry);
            }
            None => self.plan.waiting.push(i),
        }
    }

    /// [`Planner::offer`] over the agents of `index` (in name order: the
    /// same choice), which the slot taken leaves; `at` numbers the chosen
    /// agent for [`Plan::assign`], and `caches` says what an agent holds,
    /// for a job with a cache.
    pub fn offer_indexed<'c>(
        &mut self,
        i: usize,
        job: &Ready<'_>,
        run: u64,
        index: &mut FreeIndex,
        caches: &dyn Fn(&str) -> Option<&'c BTreeSet<String>>,
        mut at: impl FnMut(&str) -> usize,
    ) {
        if self.held(i, job) {
            return;
        }
        match index.best(job, caches).map(|(name, entry)| (name.to_string(), entry)) {
            Some((name, entry)) => {
                index.take(&name);
                self.assigned(i, job, run, at(&name), entry);
            }
            None => self.plan.waiting.push(i),
        }
    }

    /// Concurrency: whether entry `i` is held because its run waits for an
    /// older one of its group, or another job of its group holds a slot.
    fn held(&mut self, i: usize, job: &Ready<'_>) -> bool {
        let plan = &mut self.plan;
        if let Some(gate) = job.gate {
            plan.held.push((i, gate.to_string(), 0));
            plan.waiting.push(i);
            return true;
        }
        if let Some((group, holder)) = job.group.and_then(|g| Some((g, *self.groups.get(g)?))) {
            plan.held.push((i, format!("concurrency group {group} (run {holder})"), holder));
            plan.waiting.push(i);
            return true;
        }
        false
    }

    /// Entry `i` goes to agent `agent`, warm with cache `entry` if any.
    fn assigned(&mut self, i: usize, job: &Ready<'_>, run: u64, agent: usize, entry: Option<&str>) {
        if let Some(entry) = entry {
            self.plan.warm.push((i, warm_reason(entry)));
        }
        self.total_free -= 1;
        self.plan.assign.push((i, agent));
        if let Some(group) = job.group {
            self.groups.insert(group.to_string(), run);
        }
    }

    /// The plan, `offered` entries having been offered (the rest stay
    /// queued, unlooked at).
    pub fn finish(mut self, offered: usize) -> Plan {
        self.plan.rest_from = offered;
        self.plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Decision {
        Assign { job: usize, agent: usize },
        Wait { job: usize, reason: String },
    }

    /// The plan as one decision per queue entry, with reasons for waits.
    fn decide(queue: &[Ready<'_>], agents: &mut [AgentSlots<'_>]) -> Vec<Decision> {
        let plan = plan(queue, agents);
        let mut out: Vec<Decision> =
            plan.assign.iter().map(|(job, agent)| Decision::Assign { job: *job, agent: *agent }).collect();
        for job in plan.all_waiting(queue.len()) {
            out.push(Decision::Wait { job, reason: wait_reason(&queue[job], agents) });
        }
        out.sort_by_key(|d| match d {
            Decision::Assign { job, .. } | Decision::Wait { job, .. } => *job,
        });
        out
    }

    #[test]
    fn planning_stops_when_every_slot_is_taken() {
        let none = labels(&[]);
        let queue: Vec<Ready> =
            (0..5).map(|_| Ready { runs_on: &none, avoid: None, warm: None, group: None, gate: None }).collect();
        let mut agents =
            vec![AgentSlots { name: "a1", labels: &none, free: 2, draining: false, unready: "", caches: None }];
        let p = plan(&queue, &mut agents);
        assert_eq!(p.assign, vec![(0, 0), (1, 0)]);
        assert_eq!((p.waiting.clone(), p.rest_from), (vec![], 2));
        assert_eq!(p.all_waiting(queue.len()).collect::<Vec<_>>(), vec![2, 3, 4]);
    }

    #[test]
    fn an_agent_that_is_not_ready_gets_nothing_and_waits_say_why() {
        let linux = labels(&[("os", "linux")]);
        let low = "the work directory has 10 MiB free, under --min-free-space 1 GiB";
        let mut agents = vec![
            AgentSlots { name: "a1", labels: &linux, free: 4, draining: false, unready: low, caches: None },
            AgentSlots { name: "a2", labels: &linux, free: 1, draining: false, unready: "", caches: None },
            AgentSlots { name: "a3", labels: &linux, free: 1, draining: true, unready: "", caches: None },
        ];
        let queue = [
            Ready { runs_on: &linux, avoid: None, warm: None, group: None, gate: None },
            Ready { runs_on: &linux, avoid: None, warm: None, group: None, gate: None },
        ];
        assert_eq!(
            decide(&queue, &mut agents),
            vec![
                Decision::Assign { job: 0, agent: 1 },
                Decision::Wait {
                    job: 1,
                    reason: format!(
                        "a free slot on an agent with labels os=linux (busy: a2; draining: a3; not ready: a1 ({low}))"
                    ),
                },
            ]
        );
        let mut alone =
            vec![AgentSlots { name: "a1", labels: &linux, free: 4, draining: false, unready: low, caches: None }];
        assert_eq!(
            decide(&queue[..1], &mut alone),
            vec![Decision::Wait {
                job: 0,
                reason: format!(
                    "an agent with labels os=linux (the matching agents take no work: not ready: a1 ({low}))"
                ),
            }]
        );
    }

    #[test]
    fn a_retry_goes_elsewhere_when_another_matching_agent_is_free() {
        let linux = labels(&[("os", "linux")]);
        let mac = labels(&[("os", "mac")]);
        let slots = |a1: u32, a2: u32| {
            vec![
                AgentSlots { name: "a1", labels: &linux, free: a1, draining: false, unready: "", caches: None },
                AgentSlots { name: "a2", labels: &linux, free: a2, draining: false, unready: "", caches: None },
                AgentSlots { name: "m1", labels: &mac, free: 4, draining: false, unready: "", caches: None },
            ]
        };
        // (what, avoid, free slots of a1 and a2, the agent chosen)
        let cases = [
            ("a first attempt goes to the freest agent", None, (4, 1), Some(0)),
            ("a retry avoids its last agent, though it is the freest", Some("a1"), (4, 1), Some(1)),
            ("a retry goes back when no other matching agent is free", Some("a1"), (4, 0), Some(0)),
            ("avoiding an agent that does not match changes nothing", Some("m1"), (4, 1), Some(0)),
            ("nothing free", Some("a1"), (0, 0), None),
        ];
        for (what, avoid, (a1, a2), want) in cases {
            let queue = [Ready { runs_on: &linux, avoid, warm: None, group: None, gate: None }];
            let mut agents = slots(a1, a2);
            let got = plan(&queue, &mut agents).assign.first().map(|(_, agent)| *agent);
            assert_eq!(got, want, "{what}");
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn plan_table() {
        let linux = labels(&[("os", "linux")]);
        let mac = labels(&[("os", "mac")]);
        let gpu_linux = labels(&[("os", "linux"), ("gpu", "yes")]);
        let none = labels(&[]);
        struct Case<'a> {
            name: &'a str,
            queue: Vec<&'a BTreeMap<String, String>>,
            /// (name, labels, free slots, draining)
            agents: Vec<(&'a str, &'a BTreeMap<String, String>, u32, bool)>,
            expect: Vec<Decision>,
        }
        let cases = vec![
            Case {
                name: "spread across agents by free slots",
                queue: vec![&none, &none],
                agents: vec![("a1", &linux, 2, false), ("a2", &mac, 2, false)],
                expect: vec![Decision::Assign { job: 0, agent: 0 }, Decision::Assign { job: 1, agent: 1 }],
            },
            Case {
                name: "labels route the job",
                queue: vec![&mac],
                agents: vec![("a1", &linux, 4, false), ("a2", &mac, 1, false)],
                expect: vec![Decision::Assign { job: 0, agent: 1 }],
            },
            Case {
                name: "every runs-on label must match; extra agent labels are fine",
                queue: vec![&gpu_linux, &linux],
                agents: vec![("a1", &linux, 1, false), ("a2", &gpu_linux, 1, false)],
                expect: vec![Decision::Assign { job: 0, agent: 1 }, Decision::Assign { job: 1, agent: 0 }],
            },
            Case {
                name: "no matching agent",
                queue: vec![&gpu_linux],
                agents: vec![("a1", &linux, 1, false)],
                expect: vec![Decision::Wait {
                    job: 0,
                    reason: "an agent with labels gpu=yes,os=linux (no connected agent matches)".into(),
                }],
            },
            Case {
                name: "matching agent is busy; later jobs may still go elsewhere",
                queue: vec![&mac, &mac, &linux],
                agents: vec![("a1", &linux, 1, false), ("a2", &mac, 1, false)],
                expect: vec![
                    Decision::Assign { job: 0, agent: 1 },
                    Decision::Wait { job: 1, reason: "a free slot on an agent with labels os=mac (busy: a2)".into() },
                    Decision::Assign { job: 2, agent: 0 },
                ],
            },
            Case {
                name: "a draining agent gets nothing, though it has free slots",
                queue: vec![&none, &none],
                agents: vec![("a1", &linux, 4, true), ("a2", &mac, 1, false)],
                expect: vec![
                    Decision::Assign { job: 0, agent: 1 },
                    Decision::Wait { job: 1, reason: "a free slot on any agent (busy: a2; draining: a1)".into() },
                ],
            },
            Case {
                name: "only draining agents match",
                queue: vec![&linux],
                agents: vec![("a1", &linux, 4, true), ("a2", &mac, 1, false)],
                expect: vec![Decision::Wait {
                    job: 0,
                    reason: "an agent with labels os=linux (the matching agents are draining: a1)".into(),
                }],
            },
            Case {
                name: "no agents at all",
                queue: vec![&none],
                agents: vec![],
                expect: vec![Decision::Wait { job: 0, reason: "any agent (no connected agent matches)".into() }],
            },
        ];
        for case in cases {
            let queue: Vec<Ready> = case
                .queue
                .iter()
                .map(|r| Ready { runs_on: r, avoid: None, warm: None, group: None, gate: None })
                .collect();
            let mut agents: Vec<AgentSlots> = case
                .agents
                .iter()
                .map(|(n, l, f, d)| AgentSlots {
                    name: n,
                    labels: l,
                    free: *f,
                    draining: *d,
                    unready: "",
                    caches: None,
                })
                .collect();
            assert_eq!(decide(&queue, &mut agents), case.expect, "case {:?}", case.name);
        }
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;

    /// Concurrency groups: one job of a group holds a slot at a time, in
    /// queue order; a run gated behind an older one of its group waits;
    /// other jobs go on.
    #[test]
    fn one_job_of_a_group_at_a_time_and_gated_runs_wait() {
        let none = BTreeMap::new();
        let gate = "concurrency group deploy (run 3)";
        // (what, each queued job's (group, gate), groups held before, the entries assigned, the reasons held)
        type Job<'a> = (Option<&'a str>, Option<&'a str>);
        type Case<'a> = (&'a str, Vec<Job<'a>>, Vec<(&'a str, u64)>, Vec<usize>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("no groups: all go", vec![(None, None), (None, None)], vec![], vec![0, 1], vec![]),
            (
                "two of one group: the first goes, the second waits for it",
                vec![(Some("db"), None), (Some("db"), None), (None, None)],
                vec![],
                vec![0, 2],
                vec!["concurrency group db (run 10)"],
            ),
            (
                "a group held by a running job: its jobs wait, others go",
                vec![(Some("db"), None), (Some("web"), None)],
                vec![("db", 7)],
                vec![1],
                vec!["concurrency group db (run 7)"],
            ),
            (
                "a gated run's job waits, with the gate's reason",
                vec![(None, Some(gate)), (None, None)],
                vec![],
                vec![1],
                vec![gate],
            ),
        ];
        for (what, jobs, held, want, reasons) in cases {
            let queue: Vec<Ready> = jobs
                .iter()
                .map(|(group, gate)| Ready { runs_on: &none, avoid: None, warm: None, group: *group, gate: *gate })
                .collect();
            let runs: Vec<u64> = (0..queue.len() as u64).map(|i| 10 + i).collect();
            let mut agents =
                vec![AgentSlots { name: "a1", labels: &none, free: 8, draining: false, unready: "", caches: None }];
            let mut groups: Groups = held.iter().map(|(g, r)| (g.to_string(), *r)).collect();
            let plan = plan_with(&queue, &mut agents, &mut groups, &runs);
            let got: Vec<usize> = plan.assign.iter().map(|(i, _)| *i).collect();
            assert_eq!(got, want, "{what}");
            let got: Vec<&str> = plan.held.iter().map(|(_, r, _)| r.as_str()).collect();
            assert_eq!(got, reasons, "{what}");
        }
    }
}
