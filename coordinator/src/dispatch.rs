//! Matching queued jobs to agents: a pure function over the queue and the
//! connected agents. It decides which job goes where, and for each job it
//! cannot place, says in words what the job waits for.
//!
//! The queue is served in order (oldest run first, then file order within a
//! run). A job goes to the matching agent with the most free slots, which
//! spreads parallel jobs across agents instead of filling one first.

use std::collections::BTreeMap;

/// An agent as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSlots<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub free: u32,
}

/// A queued job as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready<'a> {
    pub runs_on: &'a BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Assign queue entry `job` to agent number `agent`.
    Assign { job: usize, agent: usize },
    /// Queue entry `job` stays queued, waiting for `reason`.
    Wait { job: usize, reason: String },
}

/// Whether an agent's labels satisfy a job's `runs-on`.
pub fn matches(runs_on: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    runs_on.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Decides for every queue entry. `agents[i].free` is decremented for each
/// assignment made, so the caller can apply the decisions in order.
pub fn plan(queue: &[Ready<'_>], agents: &mut [AgentSlots<'_>]) -> Vec<Decision> {
    let mut out = Vec::with_capacity(queue.len());
    let mut total_free: u32 = agents.iter().map(|a| a.free).sum();
    for (i, job) in queue.iter().enumerate() {
        if total_free == 0 {
            // Nothing can be placed; still explain every job's wait.
            out.push(Decision::Wait { job: i, reason: wait_reason(job, agents) });
            continue;
        }
        let best = agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.free > 0 && matches(job.runs_on, a.labels))
            .max_by_key(|(idx, a)| (a.free, std::cmp::Reverse(*idx)))
            .map(|(idx, _)| idx);
        match best {
            Some(a) => {
                agents[a].free -= 1;
                total_free -= 1;
                out.push(Decision::Assign { job: i, agent: a });
            }
            None => out.push(Decision::Wait { job: i, reason: wait_reason(job, agents) }),
        }
    }
    out
}

fn wait_reason(job: &Ready<'_>, agents: &[AgentSlots<'_>]) -> String {
    let labels = if job.runs_on.is_empty() {
        "any agent".to_string()
    } else {
        let wanted: Vec<String> = job.runs_on.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("an agent with labels {}", wanted.join(","))
    };
    let matching: Vec<&str> = agents.iter().filter(|a| matches(job.runs_on, a.labels)).map(|a| a.name).collect();
    if matching.is_empty() {
        format!("{labels} (no connected agent matches)")
    } else {
        format!("a free slot on {labels} (busy: {})", matching.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            agents: Vec<(&'a str, &'a BTreeMap<String, String>, u32)>,
            expect: Vec<Decision>,
        }
        let cases = vec![
            Case {
                name: "spread across agents by free slots",
                queue: vec![&none, &none],
                agents: vec![("a1", &linux, 2), ("a2", &mac, 2)],
                expect: vec![Decision::Assign { job: 0, agent: 0 }, Decision::Assign { job: 1, agent: 1 }],
            },
            Case {
                name: "labels route the job",
                queue: vec![&mac],
                agents: vec![("a1", &linux, 4), ("a2", &mac, 1)],
                expect: vec![Decision::Assign { job: 0, agent: 1 }],
            },
            Case {
                name: "every runs-on label must match; extra agent labels are fine",
                queue: vec![&gpu_linux, &linux],
                agents: vec![("a1", &linux, 1), ("a2", &gpu_linux, 1)],
                expect: vec![Decision::Assign { job: 0, agent: 1 }, Decision::Assign { job: 1, agent: 0 }],
            },
            Case {
                name: "no matching agent",
                queue: vec![&gpu_linux],
                agents: vec![("a1", &linux, 1)],
                expect: vec![Decision::Wait {
                    job: 0,
                    reason: "an agent with labels gpu=yes,os=linux (no connected agent matches)".into(),
                }],
            },
            Case {
                name: "matching agent is busy; later jobs may still go elsewhere",
                queue: vec![&mac, &mac, &linux],
                agents: vec![("a1", &linux, 1), ("a2", &mac, 1)],
                expect: vec![
                    Decision::Assign { job: 0, agent: 1 },
                    Decision::Wait { job: 1, reason: "a free slot on an agent with labels os=mac (busy: a2)".into() },
                    Decision::Assign { job: 2, agent: 0 },
                ],
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
            let mut agents: Vec<AgentSlots> =
                case.agents.iter().map(|(n, l, f)| AgentSlots { name: n, labels: l, free: *f }).collect();
            assert_eq!(plan(&queue, &mut agents), case.expect, "case {:?}", case.name);
        }
    }
}
