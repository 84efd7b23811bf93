//! Metric analysis, the judging: how a metric's measurements so far stand
//! against its limits, and what a step's metrics together say to the
//! rollout's gate (a [`Verdict`]). Measuring (querying Prometheus, reading
//! a URL) and judging one value against its conditions are the driver's;
//! here a measurement is only its [`Outcome`].
//!
//! A metric, after each measurement ([`standing`]):
//!
//! - **fails** once more than `failure_limit` of its measurements failed;
//! - is **inconclusive** once more than `inconclusive_limit` of them were
//!   inconclusive or could not be taken ([`Outcome::Error`]: a provider
//!   that did not answer, a query with no data; never a failure);
//! - **passes** once `count` measurements are in without either;
//! - else is still **measuring**.
//!
//! A step's verdict ([`verdict`]) is a fail as soon as one metric fails, an
//! inconclusive as soon as one is (the rollout then pauses for a person),
//! and a pass once every metric passed. A metric that fails or is
//! inconclusive decides at once, without waiting for the others.

use serde::{Deserialize, Serialize};

use crate::rollout::Verdict;

/// How one measurement was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Successful,
    Failed,
    /// The value met neither condition.
    Inconclusive,
    /// No value: the provider did not answer, or had no data.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Successful => "successful",
            Outcome::Failed => "failed",
            Outcome::Inconclusive => "inconclusive",
            Outcome::Error => "error",
        }
    }
}

/// A metric's limits, as its analysis says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Measurements to take; at least 1.
    pub count: u32,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
}

/// Where one metric stands after the measurements so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Measuring,
    Passed,
    Failed(String),
    Inconclusive(String),
}

/// How a metric with `limits` stands after `outcomes`, in the order taken.
pub fn standing(limits: Limits, outcomes: &[Outcome]) -> Standing {
    let failed = outcomes.iter().filter(|o| **o == Outcome::Failed).count();
    let unsure = outcomes.iter().filter(|o| matches!(o, Outcome::Inconclusive | Outcome::Error)).count();
    let errors = outcomes.iter().filter(|o| **o == Outcome::Error).count();
    let taken = outcomes.len();
    if failed > limits.failure_limit as usize {
        return Standing::Failed(format!(
            "{failed} of {taken} measurements failed, more than its failure_limit of {}",
            limits.failure_limit
        ));
    }
    if unsure > limits.inconclusive_limit as usize {
        let of_which = if errors > 0 { format!(" ({errors} could not be taken)") } else { String::new() };
        return Standing::Inconclusive(format!(
            "{unsure} of {taken} measurements were inconclusive{of_which}, more than its inconclusive_limit of {}",
            limits.inconclusive_limit
        ));
    }
    if taken >= limits.count.max(1) as usize { Standing::Passed } else { Standing::Measuring }
}

/// What a step's metrics, each by name with its standing, say to its gate;
/// `None` while it is not decided.
pub fn verdict<'a>(metrics: impl IntoIterator<Item = (&'a str, &'a Standing)>) -> Option<Verdict> {
    let mut measuring = false;
    let mut inconclusive = None;
    for (name, standing) in metrics {
        match standing {
            Standing::Failed(why) => return Some(Verdict::Fail { reason: format!("metric {name}: {why}") }),
            Standing::Inconclusive(why) => {
                inconclusive.get_or_insert_with(|| format!("metric {name}: {why}"));
            }
            Standing::Measuring => measuring = true,
            Standing::Passed => {}
        }
    }
    match inconclusive {
        Some(reason) => Some(Verdict::Inconclusive { reason }),
        None if measuring => None,
        None => Some(Verdict::Pass),
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome::{Error as E, Failed as F, Inconclusive as I, Successful as S};
    use super::*;

    #[test]
    fn a_metric_stands_by_its_limits() {
        let limits = |count, failure_limit, inconclusive_limit| Limits { count, failure_limit, inconclusive_limit };
        // (case, limits, outcomes, standing as a word)
        let cases: &[(&str, Limits, &[Outcome], &str)] = &[
            ("nothing yet", limits(3, 0, 0), &[], "measuring"),
            ("one good of three", limits(3, 0, 0), &[S], "measuring"),
            ("three good", limits(3, 0, 0), &[S, S, S], "passed"),
            ("a failure with no tolerance", limits(3, 0, 0), &[S, F], "failed"),
            ("a failure tolerated", limits(3, 1, 0), &[F, S, S], "passed"),
            ("two failures past a limit of one", limits(5, 1, 0), &[F, S, F], "failed"),
            ("an error is inconclusive, not a failure", limits(3, 0, 0), &[E], "inconclusive"),
            ("an error tolerated", limits(3, 0, 1), &[E, S], "measuring"),
            ("then passes: an error counts as taken", limits(3, 0, 1), &[E, S, S], "passed"),
            ("inconclusive past its limit", limits(3, 0, 1), &[I, E], "inconclusive"),
            ("a failure decides before the count", limits(10, 0, 5), &[I, F], "failed"),
            ("a count of 0 is read as 1", limits(0, 0, 0), &[S], "passed"),
        ];
        for (case, limits, outcomes, want) in cases {
            let got = match standing(*limits, outcomes) {
                Standing::Measuring => "measuring",
                Standing::Passed => "passed",
                Standing::Failed(_) => "failed",
                Standing::Inconclusive(_) => "inconclusive",
            };
            assert_eq!(got, *want, "{case}");
        }
        let why = standing(limits(5, 1, 0), &[F, S, F]);
        assert_eq!(why, Standing::Failed("2 of 3 measurements failed, more than its failure_limit of 1".into()));
        let why = standing(limits(3, 0, 1), &[I, E]);
        let want =
            "2 of 2 measurements were inconclusive (1 could not be taken), more than its inconclusive_limit of 1";
        assert_eq!(why, Standing::Inconclusive(want.into()));
    }

    #[test]
    fn a_step_is_decided_by_its_worst_metric() {
        let failed = Standing::Failed("1 of 1 measurements failed".into());
        let unsure = Standing::Inconclusive("no data".into());
        // (case, metrics, verdict as a word or None)
        type Case<'a> = (&'a str, Vec<(&'a str, &'a Standing)>, Option<&'a str>);
        let cases: &[Case<'_>] = &[
            ("all passed", vec![("a", &Standing::Passed), ("b", &Standing::Passed)], Some("pass")),
            ("one still measuring", vec![("a", &Standing::Passed), ("b", &Standing::Measuring)], None),
            ("a failure decides at once", vec![("a", &Standing::Measuring), ("b", &failed)], Some("fail")),
            ("a failure beats inconclusive", vec![("a", &unsure), ("b", &failed)], Some("fail")),
            ("inconclusive pauses", vec![("a", &unsure), ("b", &Standing::Passed)], Some("inconclusive")),
            (
                "inconclusive while another measures",
                vec![("a", &unsure), ("b", &Standing::Measuring)],
                Some("inconclusive"),
            ),
            ("no metrics pass", vec![], Some("pass")),
        ];
        for (case, metrics, want) in cases {
            let got = verdict(metrics.iter().copied()).map(|v| match v {
                Verdict::Pass => "pass",
                Verdict::Fail { .. } => "fail",
                Verdict::Inconclusive { .. } => "inconclusive",
            });
            assert_eq!(got, *want, "{case}");
        }
        let v = verdict([("error-rate", &failed)]);
        assert_eq!(v, Some(Verdict::Fail { reason: "metric error-rate: 1 of 1 measurements failed".into() }));
    }
}
