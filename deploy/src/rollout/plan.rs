//! A strategy as steps over `n` nodes: where each step ends (how many nodes
//! run the release once it is done), what pause follows it, and how many
//! nodes go back at once after a failure.

use super::{CanaryStep, Pause, Share, SpecError, Strategy};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// For each step, the index just past its last node; increasing, the
    /// last is `n`.
    pub(super) ends: Vec<usize>,
    /// For each step, the pause after it.
    pub(super) pauses: Vec<Option<Pause>>,
    /// How many nodes go back at once.
    pub(super) back: usize,
    /// Whether the step's nodes switch traffic once all are healthy.
    pub(super) switch: bool,
    /// For each step, the wave it belongs to (from 0).
    pub(super) waves: Vec<u32>,
}

impl Plan {
    /// The index just past the last node of `step`.
    pub(super) fn end(&self, step: u32) -> usize {
        self.ends.get(step as usize).or(self.ends.last()).copied().unwrap_or(0)
    }
}

/// The plan of `strategy` over `n` nodes (at least one) in `waves`: the
/// nodes in order, this many in each wave (none: one wave of all). Each
/// wave is planned as the strategy says over its own nodes, one after the
/// other; nodes go back as many at once as the largest wave's plan moves.
pub(super) fn plan(strategy: &Strategy, waves: &[u32], n: usize) -> Result<Plan, SpecError> {
    if waves.is_empty() {
        let mut plan = one(strategy, n)?;
        plan.waves = vec![0; plan.ends.len()];
        return Ok(plan);
    }
    if matches!(strategy, Strategy::BlueGreen) {
        return Err(SpecError::WavedBlueGreen);
    }
    if waves.contains(&0) || waves.iter().map(|w| *w as usize).sum::<usize>() != n {
        return Err(SpecError::BadWaves);
    }
    let mut plan = Plan { ends: Vec::new(), pauses: Vec::new(), back: 1, switch: false, waves: Vec::new() };
    let mut offset = 0;
    for (i, size) in waves.iter().enumerate() {
        let wave = one(strategy, *size as usize)?;
        plan.ends.extend(wave.ends.iter().map(|end| end + offset));
        plan.waves.extend(std::iter::repeat_n(i as u32, wave.ends.len()));
        plan.pauses.extend(wave.pauses);
        plan.back = plan.back.max(wave.back);
        offset += *size as usize;
    }
    Ok(plan)
}

/// The plan of `strategy` over `n` nodes in one wave.
fn one(strategy: &Strategy, n: usize) -> Result<Plan, SpecError> {
    match strategy {
        Strategy::Rolling(r) => {
            if r.max_parallel == 0 {
                return Err(SpecError::NoParallelism);
            }
            let batch = r.max_parallel as usize;
            let ends: Vec<usize> = (1..=n.div_ceil(batch)).map(|i| (i * batch).min(n)).collect();
            Ok(Plan { pauses: vec![None; ends.len()], ends, back: batch, switch: false, waves: Vec::new() })
        }
        Strategy::BlueGreen => Ok(Plan { ends: vec![n], pauses: vec![None], back: n, switch: true, waves: Vec::new() }),
        Strategy::Canary(canary) => {
            if !matches!(canary.steps.first(), Some(CanaryStep::Nodes(_))) {
                return Err(SpecError::CanaryStart);
            }
            let (mut ends, mut pauses): (Vec<usize>, Vec<Option<Pause>>) = (Vec::new(), Vec::new());
            for (i, s) in canary.steps.iter().enumerate() {
                match *s {
                    CanaryStep::Nodes(share) => {
                        let upto = match share {
                            Share::Percent(p) if (1..=100).contains(&p) => (n * p as usize).div_ceil(100).max(1),
                            Share::Count(c) if c >= 1 => (c as usize).min(n),
                            _ => return Err(SpecError::BadShare(i + 1)),
                        };
                        // A share no larger than the last adds no step; a
                        // pause after it belongs to the step before.
                        if ends.last().is_none_or(|last| upto > *last) {
                            ends.push(upto);
                            pauses.push(None);
                        }
                    }
                    CanaryStep::Pause(p) => {
                        // Pauses in a row add up; a manual one wins.
                        let last = pauses.last_mut().expect("the first step is a share");
                        *last = Some(match (*last, p) {
                            (Some(Pause::Manual), _) | (_, Pause::Manual) => Pause::Manual,
                            (Some(Pause::For(a)), Pause::For(b)) => Pause::For(a.saturating_add(b)),
                            (None, p) => p,
                        });
                    }
                }
            }
            if ends.last().is_some_and(|last| *last < n) {
                ends.push(n);
                pauses.push(None);
            }
            // The last step's pause would only delay the end.
            if let Some(last) = pauses.last_mut() {
                *last = None;
            }
            let back = ends.iter().scan(0, |prev, end| Some(end - std::mem::replace(prev, *end))).max().unwrap_or(1);
            Ok(Plan { ends, pauses, back, switch: false, waves: Vec::new() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Canary, Rolling};
    use super::*;

    #[test]
    fn strategies_become_steps() {
        let canary = |steps: Vec<CanaryStep>| Strategy::Canary(Canary { steps });
        let pct = |p| CanaryStep::Nodes(Share::Percent(p));
        let wait = |ms| CanaryStep::Pause(Pause::For(ms));
        let manual = CanaryStep::Pause(Pause::Manual);
        // (case, strategy, nodes, ends, pauses, back at once)
        type Case = (&'static str, Strategy, usize, Vec<usize>, Vec<Option<Pause>>, usize);
        let cases: Vec<Case> = vec![
            ("rolling by two", Strategy::Rolling(Rolling { max_parallel: 2 }), 5, vec![2, 4, 5], vec![None; 3], 2),
            ("blue-green: one step of all", Strategy::BlueGreen, 4, vec![4], vec![None], 4),
            (
                "the issue's canary over ten nodes",
                canary(vec![pct(10), wait(30_000), pct(50), manual, pct(100)]),
                10,
                vec![1, 5, 10],
                vec![Some(Pause::For(30_000)), Some(Pause::Manual), None],
                5,
            ),
            (
                "over three nodes 10% and 20% are one node: one step, the pauses add up",
                canary(vec![pct(10), wait(1000), pct(20), wait(2000), pct(50)]),
                3,
                vec![1, 2, 3],
                vec![Some(Pause::For(3000)), None, None],
                1,
            ),
            (
                "a canary that stops short goes on to every node",
                canary(vec![CanaryStep::Nodes(Share::Count(1)), manual]),
                4,
                vec![1, 4],
                vec![Some(Pause::Manual), None],
                3,
            ),
        ];
        for (case, strategy, n, ends, pauses, back) in cases {
            let plan = plan(&strategy, &[], n).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!((plan.ends, plan.pauses, plan.back), (ends, pauses, back), "{case}");
        }
        // (case, strategy, error)
        let bad = [
            ("no parallelism", Strategy::Rolling(Rolling { max_parallel: 0 }), SpecError::NoParallelism),
            ("a pause first", canary(vec![manual, pct(50)]), SpecError::CanaryStart),
            ("no steps", canary(vec![]), SpecError::CanaryStart),
            ("0%", canary(vec![pct(0)]), SpecError::BadShare(1)),
            ("101%", canary(vec![pct(10), pct(101)]), SpecError::BadShare(2)),
            ("0 nodes", canary(vec![CanaryStep::Nodes(Share::Count(0))]), SpecError::BadShare(1)),
        ];
        for (case, strategy, want) in bad {
            assert_eq!(plan(&strategy, &[], 3), Err(want), "{case}");
        }
    }

    #[test]
    fn waves_are_planned_one_after_the_other() {
        let canary = Strategy::Canary(Canary {
            steps: vec![CanaryStep::Nodes(Share::Percent(50)), CanaryStep::Pause(Pause::Manual)],
        });
        let rolling = Strategy::Rolling(Rolling { max_parallel: 2 });
        // (case, strategy, waves, nodes, ends, pauses, waves of the steps, back at once)
        type Case = (&'static str, Strategy, Vec<u32>, usize, Vec<usize>, Vec<Option<Pause>>, Vec<u32>, usize);
        let cases: Vec<Case> = vec![
            ("no waves: one of all", rolling.clone(), vec![], 3, vec![2, 3], vec![None; 2], vec![0, 0], 2),
            (
                "rolling by two over waves of 1, 3 and 2",
                rolling.clone(),
                vec![1, 3, 2],
                6,
                vec![1, 3, 4, 6],
                vec![None; 4],
                vec![0, 1, 1, 2],
                2,
            ),
            (
                "a canary in each wave; no pause at a wave's end",
                canary,
                vec![2, 4],
                6,
                vec![1, 2, 4, 6],
                vec![Some(Pause::Manual), None, Some(Pause::Manual), None],
                vec![0, 0, 1, 1],
                2,
            ),
        ];
        for (case, strategy, waves, n, ends, pauses, of, back) in cases {
            let plan = plan(&strategy, &waves, n).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!((plan.ends, plan.pauses, plan.waves, plan.back), (ends, pauses, of, back), "{case}");
        }
        assert_eq!(plan(&rolling, &[1, 1], 3), Err(SpecError::BadWaves), "the waves must hold every node");
        assert_eq!(plan(&rolling, &[0, 3], 3), Err(SpecError::BadWaves), "no empty wave");
        assert_eq!(plan(&Strategy::BlueGreen, &[1, 2], 3), Err(SpecError::WavedBlueGreen));
    }
}
