//! The agents that can take a job now, kept by the fleet as they change, so
//! that a dispatch pass costs what it places, not the size of the fleet.
//!
//! [`FreeIndex`] holds every connected agent that is open (not draining,
//! ready) and has a free slot, grouped by its label set, each group in the
//! order dispatch prefers: most free slots first, then by name. A job's
//! agent is then the first of each group whose labels satisfy its
//! `runs-on` (the first but the one to avoid, for a retry), best of those
//! firsts: the very agent the linear choice over every agent
//! ([`super::Planner::offer`]) makes, which the tests check on random
//! fleets. A pass costs a look at each label set, not at each agent; a
//! fleet whose agents all have different labels (a `host` label each) has
//! as many groups as agents, and costs what the linear choice did.
//!
//! A job with a cache looks at every agent that matches, as the linear
//! choice does, since any of them may hold its cache.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{AgentSlots, Ready, Warm, matches};

/// Labels, as agents claim them.
type Labels = BTreeMap<String, String>;

/// See the module docs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FreeIndex {
    /// Label set -> its agents that can take a job, most free slots first,
    /// then by name.
    groups: HashMap<Labels, BTreeSet<(Reverse<u32>, String)>>,
    /// Indexed agent -> its labels and free slots.
    agents: HashMap<String, (Labels, u32)>,
    total_free: u64,
}

impl FreeIndex {
    pub fn new() -> FreeIndex {
        FreeIndex::default()
    }

    /// Agent `name`, with `labels`, now has `free` slots it may fill (0 when
    /// it is away, draining, not ready or full: it leaves the index).
    pub fn set(&mut self, name: &str, labels: &Labels, free: u32) {
        if let Some((old_labels, old_free)) = self.agents.get(name) {
            if *old_free == free && old_labels == labels {
                return;
            }
            if let Some((old_labels, old_free)) = self.agents.remove(name) {
                self.total_free -= u64::from(old_free);
                if let Some(group) = self.groups.get_mut(&old_labels) {
                    group.remove(&(Reverse(old_free), name.to_string()));
                    if group.is_empty() {
                        self.groups.remove(&old_labels);
                    }
                }
            }
        }
        if free == 0 {
            return;
        }
        self.total_free += u64::from(free);
        self.groups.entry(labels.clone()).or_default().insert((Reverse(free), name.to_string()));
        self.agents.insert(name.to_string(), (labels.clone(), free));
    }

    /// Agent `name` takes one of its free slots.
    pub fn take(&mut self, name: &str) {
        if let Some((labels, free)) = self.agents.get(name).cloned() {
            self.set(name, &labels, free - 1);
        }
    }

    /// Free slots of every indexed agent.
    pub fn total_free(&self) -> u64 {
        self.total_free
    }

    /// Free slots of agent `name` (0 when it is not indexed).
    pub fn free(&self, name: &str) -> u32 {
        self.agents.get(name).map_or(0, |(_, free)| *free)
    }

    /// How many agents can take a job.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// The agent `job` goes to, and the warm cache entry that chose it, if
    /// any: the best that matches by (not the one to avoid, warmth, free
    /// slots, first by name). `caches` says which cache entries an agent
    /// holds; it is asked only for a job with a cache.
    pub fn best<'c>(
        &self,
        job: &Ready<'_>,
        caches: &dyn Fn(&str) -> Option<&'c BTreeSet<String>>,
    ) -> Option<(&str, Option<&'c str>)> {
        match job.warm {
            Some(warm) => self.best_warm(job, warm, caches),
            None => self.best_cold(job).map(|name| (name, None)),
        }
    }

    /// Without warmth, each group's first (or second, past the one to
    /// avoid) is its best.
    fn best_cold(&self, job: &Ready<'_>) -> Option<&str> {
        let avoided = |name: &str| job.avoid == Some(name);
        let mut best: Option<(u32, &str)> = None;
        let mut fallback = None;
        for (labels, group) in &self.groups {
            if !matches(job.runs_on, labels) {
                continue;
            }
            let mut firsts = group.iter().take(2);
            let pick = match firsts.next() {
                Some((_, name)) if avoided(name) => {
                    fallback = Some(name.as_str());
                    firsts.next()
                }
                first => first,
            };
            if let Some((Reverse(free), name)) = pick {
                let better = best.is_none_or(|(bf, bn)| (*free, Reverse(name.as_str())) > (bf, Reverse(bn)));
                if better {
                    best = Some((*free, name));
                }
            }
        }
        best.map(|(_, name)| name).or(fallback)
    }

    /// With warmth, every matching agent is a candidate.
    fn best_warm<'c>(
        &self,
        job: &Ready<'_>,
        warm: &Warm,
        caches: &dyn Fn(&str) -> Option<&'c BTreeSet<String>>,
    ) -> Option<(&str, Option<&'c str>)> {
        self.groups
            .iter()
            .filter(|(labels, _)| matches(job.runs_on, labels))
            .flat_map(|(_, group)| group.iter())
            .map(|(Reverse(free), name)| {
                let (level, entry) = warm.level(caches(name));
                ((job.avoid != Some(name.as_str()), level, *free, Reverse(name.as_str())), entry)
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|((_, _, _, Reverse(name)), entry)| (name, entry))
    }

    /// The index of the open agents with a free slot among `agents` (for
    /// tests and checks: the fleet keeps its own up to date).
    pub fn of(agents: &[AgentSlots<'_>]) -> FreeIndex {
        let mut index = FreeIndex::new();
        for a in agents.iter().filter(|a| a.open()) {
            index.set(a.name, a.labels, a.free);
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Groups, Planner};
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A tiny deterministic generator, so a failing case can be replayed.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn set_take_and_leave_keep_the_counts() {
        let (a, b) = (labels(&[("os", "linux")]), labels(&[]));
        let mut index = FreeIndex::new();
        index.set("x", &a, 2);
        index.set("y", &b, 1);
        assert_eq!((index.total_free(), index.len()), (3, 2));
        index.take("x");
        assert_eq!((index.free("x"), index.total_free()), (1, 2));
        index.take("y");
        assert_eq!((index.free("y"), index.len(), index.total_free()), (0, 1, 1));
        // New labels move the agent to another group.
        index.set("x", &b, 4);
        assert_eq!((index.total_free(), index.groups.len()), (4, 1));
        index.set("x", &b, 0);
        assert!(index.is_empty() && index.groups.is_empty() && index.total_free() == 0);
    }

    /// The index chooses what the linear choice over every agent chooses,
    /// on random fleets (labels, free slots, draining, not ready) and random
    /// jobs (runs-on, a previous agent to avoid, a cache), assignment after
    /// assignment until the slots run out.
    #[test]
    fn the_index_chooses_as_the_linear_choice_does() {
        let label_sets = [labels(&[]), labels(&[("os", "linux")]), labels(&[("os", "linux"), ("gpu", "yes")])];
        let runs_ons = [labels(&[]), labels(&[("os", "linux")]), labels(&[("gpu", "yes")]), labels(&[("os", "mac")])];
        let names: Vec<String> = (0..12).map(|i| format!("agent-{i:02}")).collect();
        let cache_sets: Vec<BTreeSet<String>> =
            vec![BTreeSet::new(), ["s/k1".to_string()].into(), ["s/k1".to_string(), "s/k2-old".to_string()].into()];
        let warm = Warm { exact: Some("s/k1".into()), prefixes: vec!["s/k2".into()] };
        let mut rng = Lcg(7);
        for case in 0..400 {
            let n = 1 + rng.below(names.len() as u64) as usize;
            let mut agents: Vec<AgentSlots> = names[..n]
                .iter()
                .map(|name| AgentSlots {
                    name,
                    labels: &label_sets[rng.below(3) as usize],
                    free: rng.below(3) as u32,
                    draining: rng.below(8) == 0,
                    unready: if rng.below(8) == 0 { "low disk" } else { "" },
                    caches: Some(&cache_sets[rng.below(3) as usize]),
                })
                .collect();
            let mut index = FreeIndex::of(&agents);
            let mut groups = Groups::new();
            let mut planner = Planner::new(&agents, &mut groups);
            assert_eq!(index.total_free(), planner.total_free, "case {case}");
            for i in 0..20 {
                let avoid = (rng.below(3) == 0).then(|| names[rng.below(n as u64) as usize].as_str());
                let job = Ready {
                    runs_on: &runs_ons[rng.below(4) as usize],
                    avoid,
                    warm: (rng.below(3) == 0).then_some(&warm),
                    group: None,
                    gate: None,
                };
                let caches = |name: &str| agents.iter().find(|a| a.name == name).and_then(|a| a.caches);
                let chosen =
                    index.best(&job, &caches).map(|(name, entry)| (name.to_string(), entry.map(str::to_string)));
                let before = planner.plan.assign.len();
                planner.offer(i, &job, 0, &mut agents);
                let linear = planner.plan.assign[before..].first().map(|(_, a)| {
                    let entry = job.warm.and_then(|w| w.level(agents[*a].caches).1).map(str::to_string);
                    (agents[*a].name.to_string(), entry)
                });
                assert_eq!(chosen, linear, "case {case}, job {i}: {job:?}");
                if let Some((name, _)) = chosen {
                    index.take(&name);
                }
                assert_eq!(index, FreeIndex::of(&agents), "case {case}, job {i}");
            }
        }
    }
}
