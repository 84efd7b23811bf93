//! Warm caches: what makes an agent warm for a job with a `cache:` (see
//! the module above for how warmth orders the free agents), and the reason
//! a warm agent's assignment gives.

use std::collections::BTreeSet;

/// What makes an agent warm for a job with a cache, as "SCOPE_ID/KEY".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Warm {
    /// The key its job saved or restored last: an agent holding it restores
    /// the very entry.
    pub exact: Option<String>,
    /// Its restore-keys: an agent holding an entry that starts with one
    /// restores that.
    pub prefixes: Vec<String>,
}

impl Warm {
    /// How warm an agent holding `caches` is: 2 for the exact entry, 1 for
    /// one a restore-key matches (the first prefix that matches, newest
    /// not known here), 0 for none; with the entry.
    pub(super) fn level<'c>(&self, caches: Option<&'c BTreeSet<String>>) -> (u8, Option<&'c str>) {
        let Some(caches) = caches else { return (0, None) };
        if let Some(exact) = self.exact.as_ref().and_then(|k| caches.get(k)) {
            return (2, Some(exact));
        }
        for prefix in &self.prefixes {
            if let Some(hit) = caches.range(prefix.clone()..).next().filter(|k| k.starts_with(prefix.as_str())) {
                return (1, Some(hit));
            }
        }
        (0, None)
    }
}

/// "warm cache KEY": why a warm agent was chosen (the scope id left out).
pub(super) fn warm_reason(entry: &str) -> String {
    let key = entry.split_once('/').map_or(entry, |(_, key)| key);
    format!("warm cache {key}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::*;
    use super::*;

    /// Warm-cache affinity: which of the free agents a job with a cache
    /// goes to, and the reason given.
    #[test]
    fn a_job_goes_to_the_warmest_free_agent_and_never_waits_for_one() {
        let none = BTreeMap::new();
        let set = |keys: &[&str]| -> BTreeSet<String> { keys.iter().map(|k| k.to_string()).collect() };
        let warm = Warm { exact: Some("s1/cargo-ab12".into()), prefixes: vec!["s1/cargo-".into()] };
        let cold = set(&[]);
        let exact = set(&["s1/cargo-ab12", "s1/npm-1"]);
        let prefix = set(&["s1/cargo-0001"]);
        let other_scope = set(&["s2/cargo-ab12"]);
        // (what, the job's warm hints, each agent's (caches, free slots), the agent chosen, the reason)
        type Agents<'a> = Vec<(&'a BTreeSet<String>, u32)>;
        type Case<'a> = (&'a str, Option<&'a Warm>, Agents<'a>, Option<usize>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "the agent with the exact entry, though it has fewer free slots",
                Some(&warm),
                vec![(&cold, 4), (&exact, 1)],
                Some(1),
                Some("warm cache cargo-ab12"),
            ),
            (
                "the exact entry beats a restore-key match",
                Some(&warm),
                vec![(&prefix, 4), (&exact, 1)],
                Some(1),
                Some("warm cache cargo-ab12"),
            ),
            (
                "a restore-key match beats a cold agent",
                Some(&warm),
                vec![(&cold, 4), (&prefix, 1)],
                Some(1),
                Some("warm cache cargo-0001"),
            ),
            ("another scope's entry is not warm", Some(&warm), vec![(&cold, 4), (&other_scope, 1)], Some(0), None),
            ("a busy warm agent is not waited for", Some(&warm), vec![(&cold, 1), (&exact, 0)], Some(0), None),
            ("a job without a cache goes by free slots", None, vec![(&cold, 4), (&exact, 1)], Some(0), None),
            ("nothing free", Some(&warm), vec![(&cold, 0), (&exact, 0)], None, None),
        ];
        for (what, warm, agents, want, why) in cases {
            let names = ["a1", "a2"];
            let mut slots: Vec<AgentSlots> = agents
                .iter()
                .enumerate()
                .map(|(i, (caches, free))| AgentSlots {
                    name: names[i],
                    labels: &none,
                    free: *free,
                    draining: false,
                    unready: "",
                    caches: Some(*caches),
                })
                .collect();
            let queue = [Ready { runs_on: &none, avoid: None, warm, group: None, gate: None }];
            let plan = plan(&queue, &mut slots);
            assert_eq!(plan.assign.first().map(|(_, a)| *a), want, "{what}");
            assert_eq!(plan.warm.first().map(|(_, r)| r.as_str()), why, "{what}");
        }
    }

    #[test]
    fn a_retry_still_avoids_its_last_agent_before_warmth() {
        let none = BTreeMap::new();
        let warm = Warm { exact: Some("s1/k".into()), prefixes: vec![] };
        let hot: BTreeSet<String> = ["s1/k".to_string()].into();
        let mut slots = vec![
            AgentSlots { name: "a1", labels: &none, free: 1, draining: false, unready: "", caches: Some(&hot) },
            AgentSlots { name: "a2", labels: &none, free: 1, draining: false, unready: "", caches: None },
        ];
        let queue = [Ready { runs_on: &none, avoid: Some("a1"), warm: Some(&warm), group: None, gate: None }];
        assert_eq!(plan(&queue, &mut slots).assign, vec![(0, 1)]);
    }
}
