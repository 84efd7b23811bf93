//! Matching queued jobs to agents: a pure function over the queue and the
//! connected agents. It decides which job goes where, and for each job it
//! cannot place, says in words what the job waits for.
//!
//! The queue is served in order (oldest run first, then file order within a
//! run). A job goes to the matching agent with the most free slots, which
//! spreads parallel jobs across agents instead of filling one first. A
//! draining agent (shutting down gracefully) gets nothing new.

use std::collections::BTreeMap;

/// An agent as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSlots<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub free: u32,
    /// Finishing what it runs before it exits: takes no new work.
    pub draining: bool,
}

/// A queued job as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready<'a> {
    pub runs_on: &'a BTreeMap<String, String>,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// (queue entry, agent number) for every job to assign, in queue order.
    pub assign: Vec<(usize, usize)>,
    /// Queue entries that stay queued. Entries from `rest_from` on were not
    /// looked at, because no slot was left: they stay queued too.
    pub waiting: Vec<usize>,
    pub rest_from: usize,
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
    let mut plan = Plan::default();
    let mut total_free: u32 = agents.iter().filter(|a| !a.draining).map(|a| a.free).sum();
    for (i, job) in queue.iter().enumerate() {
        if total_free == 0 {
            plan.rest_from = i;
            return plan;
        }
        let best = agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.free > 0 && !a.draining && matches(job.runs_on, a.labels))
            .max_by_key(|(idx, a)| (a.free, std::cmp::Reverse(*idx)))
            .map(|(idx, _)| idx);
        match best {
            Some(a) => {
                agents[a].free -= 1;
                total_free -= 1;
                plan.assign.push((i, a));
            }
            None => plan.waiting.push(i),
        }
    }
    plan.rest_from = queue.len();
    plan
}

/// What a queued job waits for, in words.
pub fn wait_reason(job: &Ready<'_>, agents: &[AgentSlots<'_>]) -> String {
    let labels = if job.runs_on.is_empty() {
        "any agent".to_string()
    } else {
        let wanted: Vec<String> = job.runs_on.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("an agent with labels {}", wanted.join(","))
    };
    let (draining, busy): (Vec<&AgentSlots>, Vec<&AgentSlots>) =
        agents.iter().filter(|a| matches(job.runs_on, a.labels)).partition(|a| a.draining);
    let names = |list: &[&AgentSlots]| list.iter().map(|a| a.name).collect::<Vec<_>>().join(", ");
    match (busy.is_empty(), draining.is_empty()) {
        (true, true) => format!("{labels} (no connected agent matches)"),
        (true, false) => format!("{labels} (the matching agents are draining: {})", names(&draining)),
        (false, true) => format!("a free slot on {labels} (busy: {})", names(&busy)),
        (false, false) => {
            format!("a free slot on {labels} (busy: {}; draining: {})", names(&busy), names(&draining))
        }
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
        let queue: Vec<Ready> = (0..5).map(|_| Ready { runs_on: &none }).collect();
        let mut agents = vec![AgentSlots { name: "a1", labels: &none, free: 2, draining: false }];
        let p = plan(&queue, &mut agents);
        assert_eq!(p.assign, vec![(0, 0), (1, 0)]);
        assert_eq!((p.waiting.clone(), p.rest_from), (vec![], 2));
        assert_eq!(p.all_waiting(queue.len()).collect::<Vec<_>>(), vec![2, 3, 4]);
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
            let queue: Vec<Ready> = case.queue.iter().map(|r| Ready { runs_on: r }).collect();
            let mut agents: Vec<AgentSlots> = case
                .agents
                .iter()
                .map(|(n, l, f, d)| AgentSlots { name: n, labels: l, free: *f, draining: *d })
                .collect();
            assert_eq!(decide(&queue, &mut agents), case.expect, "case {:?}", case.name);
        }
    }
}
